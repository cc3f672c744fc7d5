//! `pghactl`: look at and operate a pgha (or Patroni) cluster, with
//! patronictl's commands, flags, prompts and output.

use std::process::ExitCode;

use clap::Parser;
use pgha_agent::ctl::cli::{Cli, Command};
use pgha_agent::ctl::prompt::Console;
use pgha_agent::ctl::{Ctl, CtlConfig, CtlError, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `version` without a cluster needs no configuration at all.
    let needs_config = !matches!(&cli.command, Command::Version(v) if v.cluster_name.is_none());
    let config = if needs_config {
        match CtlConfig::load(cli.config.as_deref(), cli.dcs_url.as_deref()) {
            Ok(mut c) => {
                c.tls.insecure |= cli.insecure;
                c
            }
            Err(e) => return fail(&CtlError::Failed(e.to_string())),
        }
    } else {
        CtlConfig::default()
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            return fail(&CtlError::Failed(format!("cannot start the runtime: {e}")));
        }
    };
    let mut ctl = Ctl::new(config, Console::stdin());
    let outcome = runtime.block_on(run(&mut ctl, cli.command));
    // Do not wait for DCS clients' background tasks to wind down.
    runtime.shutdown_background();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// Reports a failure the way patronictl (click) does, and exits with 1.
fn fail(e: &CtlError) -> ExitCode {
    match e {
        CtlError::Aborted => eprintln!("\nAborted!"),
        CtlError::Failed(text) => eprintln!("Error: {text}"),
        CtlError::Reported => {}
    }
    ExitCode::from(1)
}
