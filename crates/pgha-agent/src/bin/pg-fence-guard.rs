//! `pg-fence-guard`: the fence guard the `pgha` agent starts beside itself
//! (docs/fencing.md). It stops PostgreSQL when the agent dies or stops
//! renewing the leader lock, starts the postmaster as its own child (so it
//! dies with the guard), holds the watchdogs, and hands a dead agent's lock
//! over by running `pgha --hand-over-lock`. Not meant to be started by
//! hand: its arguments are `pgha_agent::guard_command::GuardCommand`'s.
//!
//! Small on purpose: one thread, no configuration parsing, no DCS client.

use std::process::ExitCode;

use pgha_agent::guard_command::GuardCommand;
use pgha_agent::logging::{self, Role};
use pgha_agent::node::guard::Handover;
use pgha_agent::node::guard::daemon::{self, GuardTarget};

fn main() -> ExitCode {
    let command = match GuardCommand::parse(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "pg-fence-guard: {e} (it is started by the pgha agent, not by hand; see docs/fencing.md)"
            );
            return ExitCode::from(2);
        }
    };
    if let Err(e) = logging::init(&command.log, Role::Guard) {
        eprintln!("pg-fence-guard: {e}");
        return ExitCode::from(1);
    }
    // One thread: the postmaster it starts is killed when the *thread* that
    // forked it ends (the parent-death signal is per thread), so that
    // thread must be the main one, which lives as long as the process.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pg-fence-guard: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let handover = match command.handover {
        Some((program, args)) => Handover::Command { program, args },
        None => Handover::Expire,
    };
    let target = GuardTarget {
        member: command.member,
        data_dir: command.data_dir,
    };
    match runtime.block_on(daemon::run(target, handover)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("fence guard: {e}");
            ExitCode::from(1)
        }
    }
}
