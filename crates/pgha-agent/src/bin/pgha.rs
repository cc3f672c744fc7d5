//! `pgha`: the agent. Runs beside one PostgreSQL and keeps exactly one
//! primary in the cluster, with Patroni's configuration file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use pgha_agent::config::{Config, ConfigError, log_filter};
use pgha_agent::logging::{self, Role};
use pgha_agent::node::guard::daemon::{self, GuardTarget};

/// pgha: PostgreSQL high availability, Patroni-compatible.
#[derive(Parser, Debug)]
#[command(name = "pgha", version, about)]
struct Args {
    /// The node's configuration file (Patroni's YAML). Without it, the
    /// configuration is read from PATRONI_CONFIGURATION.
    config: Option<PathBuf>,
    /// Check the configuration, list every problem with its path, and exit.
    #[arg(long)]
    validate_config: bool,
    /// Run as the fence guard of the agent that started this process
    /// (internal: the agent starts it; see ARCHITECTURE.md).
    #[arg(long, hide = true, conflicts_with = "validate_config")]
    guard: bool,
}

fn load(args: &Args) -> Result<Config, ConfigError> {
    Config::load_file_or_env(args.config.as_deref())
}

fn print_findings(errors: &[String], warnings: &[String]) {
    for e in errors {
        eprintln!("error: {e}");
    }
    for w in warnings {
        eprintln!("warning: {w}");
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match load(&args) {
        Ok(c) => c,
        Err(e) => {
            let source = e
                .source_name
                .clone()
                .unwrap_or_else(|| "configuration".into());
            eprintln!(
                "{source}: {} problem(s); nothing was started",
                e.errors.len()
            );
            print_findings(&e.errors, &e.warnings);
            return ExitCode::from(1);
        }
    };
    if args.guard {
        return run_guard(config);
    }
    let problems = pgha_agent::run::check_environment(&config);
    if args.validate_config {
        let node = config.node_config();
        let timer = pgha_agent::node::config::FrozenNodeTimer::of(
            &node.watchdog,
            node.initial_timing(),
            pgha_agent::node::guard::service_watchdog::ServiceWatchdog::from_env().as_ref(),
        );
        let mut warnings = config.warnings.clone();
        if let pgha_agent::node::config::FrozenNodeTimer::Missing { why } = timer {
            warnings.push(why);
        }
        print_findings(&problems, &warnings);
        if problems.is_empty() {
            println!("configuration is valid");
            return ExitCode::SUCCESS;
        }
        return ExitCode::from(1);
    }
    if !problems.is_empty() {
        eprintln!("{} problem(s); nothing was started", problems.len());
        print_findings(&problems, &config.warnings);
        return ExitCode::from(1);
    }

    if !init_logging(&config, Role::Agent) {
        return ExitCode::from(1);
    }
    let Some(runtime) = runtime(2) else {
        return ExitCode::from(1);
    };
    match runtime.block_on(pgha_agent::run::run(config, args.config.clone())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(1)
        }
    }
}

/// `log:` as configured; false (having said why) when it cannot be set up.
fn init_logging(config: &Config, role: Role) -> bool {
    let level = log_filter(&config.log.level).unwrap_or("info");
    match logging::init(&config.log, level, role) {
        Ok(()) => true,
        Err(e) => {
            eprintln!("{e}");
            false
        }
    }
}

fn runtime(workers: usize) -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(r) => Some(r),
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            None
        }
    }
}

/// The fence guard's life (started by the agent with `--guard`), on one
/// thread: the postmaster it starts is killed when the thread that forked
/// it ends (the parent-death signal is per thread), so that thread must be
/// the main one, which lives as long as the process.
fn run_guard(config: Config) -> ExitCode {
    if !init_logging(&config, Role::Guard) {
        return ExitCode::from(1);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let target = GuardTarget {
        member: config.name.clone(),
        data_dir: config.postgresql.data_dir.clone(),
    };
    let guarded = runtime.block_on(async {
        // A connection of the guard's own: it must work when the agent's
        // process is gone.
        let dcs = pgha_agent::dcs::connect(
            &config.dcs,
            config.layout(),
            &config.name,
            config.node_config().initial_timing(),
        )?;
        daemon::run(target, dcs).await?;
        Ok::<(), Box<dyn std::error::Error>>(())
    });
    match guarded {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("fence guard: {e}");
            ExitCode::from(1)
        }
    }
}
