//! `pgha`: the agent. Runs beside one PostgreSQL and keeps exactly one
//! primary in the cluster, with Patroni's configuration file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use pgha_agent::config::{Config, ConfigError};
use pgha_agent::logging::{self, Role};
use pgha_agent::node::guard::handover::{Released, release_dead_leader};

/// pgha: PostgreSQL high availability, Patroni-compatible.
#[derive(Parser, Debug)]
#[command(name = "pgha", version)]
struct Args {
    /// The node's configuration file (Patroni's YAML). Without it, the
    /// configuration is read from PATRONI_CONFIGURATION.
    config: Option<PathBuf>,
    /// Check the configuration, list every problem with its path, and exit.
    #[arg(long)]
    validate_config: bool,
    /// Hand the leader lock of this member's dead agent over (internal:
    /// the fence guard runs it once it stopped PostgreSQL; see
    /// docs/fencing.md). The value is the lock's deadline on
    /// CLOCK_MONOTONIC; nothing is touched past it.
    #[arg(
        long,
        hide = true,
        value_name = "LOCK_UNTIL_NS",
        conflicts_with = "validate_config"
    )]
    hand_over_lock: Option<u64>,
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
    if let Some(lock_until_ns) = args.hand_over_lock {
        return hand_over_lock(&config, lock_until_ns);
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
    match logging::init(&config.log, role) {
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

/// `--hand-over-lock`: run by the fence guard once it stopped the dead
/// agent's PostgreSQL; the exit status says what became of the lock
/// ([`Released::exit_code`]).
fn hand_over_lock(config: &Config, lock_until_ns: u64) -> ExitCode {
    if !init_logging(config, Role::Guard) {
        return ExitCode::from(1);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("fence guard: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let released = runtime.block_on(async {
        let dcs = match pgha_agent::dcs::connect(
            &config.dcs,
            config.layout(),
            &config.name,
            config.node_config().initial_timing(),
        ) {
            Ok(d) => d,
            Err(e) => return Released::Failed(format!("cannot connect to the DCS: {e}")),
        };
        release_dead_leader(dcs.as_ref(), &config.name, lock_until_ns).await
    });
    if let Released::Failed(why) = &released {
        tracing::warn!("fence guard: handing the dead agent's lock over: {why}");
    }
    ExitCode::from(u8::try_from(released.exit_code()).unwrap_or(1))
}
