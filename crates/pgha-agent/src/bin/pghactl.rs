//! `pghactl`: look at and operate a pgha (or Patroni) cluster.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use pgha_agent::ctl::{CtlConfig, list};
use pgha_core::model::{KeyLayout, PGHA_VERSION, Timing};

#[derive(Parser, Debug)]
#[command(
    name = "pghactl",
    version,
    about = "Look at and operate a pgha cluster (patronictl-compatible)"
)]
struct Args {
    /// Configuration file: a node's YAML, or one with scope, namespace and
    /// the DCS section (patronictl's -c).
    #[arg(short = 'c', long = "config-file", env = "PATRONICTL_CONFIG_FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the members of the cluster.
    List {
        /// Output format.
        #[arg(short = 'f', long = "format", value_enum, default_value = "pretty")]
        format: Format,
        /// Print again every N seconds (1 if no value is given).
        #[arg(short = 'W', num_args = 0..=1, default_missing_value = "1")]
        watch: Option<u64>,
    },
    /// Show pghactl's version.
    Version,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Format {
    Pretty,
    Json,
    Yaml,
    Tsv,
}

fn default_config() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".config/patroni/patronictl.yaml")
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Command::Version = args.command {
        println!("pghactl version {PGHA_VERSION}");
        return ExitCode::SUCCESS;
    }
    let path = args.config.clone().unwrap_or_else(default_config);
    let config = match CtlConfig::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pghactl: {e}");
            return ExitCode::from(1);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pghactl: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(config, args.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pghactl: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(config: CtlConfig, command: Command) -> Result<(), String> {
    let layout = KeyLayout::new(&config.namespace, &config.scope);
    let timing = Timing {
        retry_timeout: Duration::from_secs(5),
        ..Timing::default()
    };
    let dcs = pgha_agent::dcs::connect(&config.dcs, layout, "pghactl", timing)?;
    match command {
        Command::List { format, watch } => loop {
            let cluster = dcs
                .load()
                .await
                .map_err(|e| format!("cannot read cluster {}: {e}", config.scope))?;
            let text = match format {
                Format::Pretty => list::pretty(&config.scope, &cluster),
                Format::Json => list::json(&config.scope, &cluster).to_string() + "\n",
                Format::Yaml => list::yaml(&config.scope, &cluster),
                Format::Tsv => list::tsv(&config.scope, &cluster),
            };
            match watch {
                None => {
                    print!("{text}");
                    return Ok(());
                }
                Some(every) => {
                    print!(
                        "\x1b[2J\x1b[H{}\n{text}",
                        jiff::Zoned::now().strftime("%Y-%m-%d %H:%M:%S %Z")
                    );
                    tokio::time::sleep(Duration::from_secs(every.max(1))).await;
                }
            }
        },
        Command::Version => Ok(()),
    }
}
