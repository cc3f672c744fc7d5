//! Running the agent: the `pgha` binary's whole life.

use std::sync::Arc;

use pgha_core::clock::{Clock, MonotonicClock};
use tokio::sync::{mpsc, watch};

use crate::agent::{Agent, Command, NodeStatus};
use crate::config::Config;
use crate::guard::GuardMode;
use crate::rest;

/// Why the agent could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Startup(String),
    #[error(transparent)]
    Refused(#[from] crate::agent::AgentExit),
    #[error(transparent)]
    NameTaken(#[from] crate::agent::unique_name::NameTaken),
}

/// Starts the REST API and the HA loop and runs until SIGTERM or SIGINT
/// (then stops PostgreSQL and releases the lock) or until the loop
/// refuses to go on.
pub async fn run(config: Config, config_path: Option<std::path::PathBuf>) -> Result<(), RunError> {
    if nix::unistd::geteuid().is_root() {
        return Err(RunError::Startup(
            "pgha must not run as root: PostgreSQL refuses to run as root. Run it as the postgres user.".into(),
        ));
    }
    for w in &config.warnings {
        tracing::warn!("configuration: {w}");
    }
    let config = Arc::new(config);
    let timing = config
        .bootstrap
        .as_ref()
        .map(|b| b.dcs.timing().0)
        .unwrap_or_default();
    let dcs = crate::dcs::connect(&config.dcs, config.layout(), &config.name, timing)
        .map_err(|e| RunError::Startup(e.to_string()))?;

    // TLS files and peers' CA are checked now, so a bad file stops the
    // agent with its name before anything runs.
    let tls = match &config.restapi_tls {
        #[cfg(feature = "restapi-tls")]
        Some(t) => Some(rest::tls::server_config(t).map_err(RunError::Startup)?),
        #[cfg(not(feature = "restapi-tls"))]
        Some(_) => {
            return Err(RunError::Startup(
                "restapi.certfile: this pgha was built without the restapi-tls feature".into(),
            ));
        }
        None => None,
    };
    // TLS files for calls to members that cannot be used stop the start,
    // naming the file (the client itself would only say so on its first
    // call to an https member).
    #[cfg(feature = "restapi-tls")]
    rest::client::tls::client_config(&config.client_tls).map_err(RunError::Startup)?;
    let peers = rest::client::RestClient::new("pgha", None, &config.client_tls);
    // Before anything is started or touched: this name must be free.
    crate::agent::unique_name::ensure_unique_name(&config, dcs.as_ref(), &peers, timing).await?;
    let listen = config.restapi_listen.socket_string();
    let listener = tokio::net::TcpListener::bind(&listen).await.map_err(|e| {
        RunError::Startup(format!("restapi.listen: cannot listen on {listen}: {e}"))
    })?;
    let (status_tx, status_rx) =
        watch::channel(Arc::new(NodeStatus::initial(&config.name, &config.scope)));
    let (commands_tx, commands_rx) = mpsc::channel(16);
    let clock: Arc<dyn Clock> = Arc::new(MonotonicClock::new());
    // Allowlist host names are resolved once, now, as Patroni does when it
    // loads the configuration; members' addresses are resolved per request.
    let access =
        rest::access::AccessRules::resolve(&config.restapi_access, config.restapi_verify_client())
            .await;
    let api = rest::ApiState::new(
        status_rx,
        clock,
        dcs.clone(),
        commands_tx.clone(),
        config.clone(),
        access,
    );
    tokio::spawn(async move {
        if let Err(e) = rest::serve(listener, tls, api).await {
            tracing::error!("REST API stopped: {e}");
        }
    });
    tracing::info!("REST API listening on {listen}");

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("received a stop signal");
        let _ = stop_tx.send(true);
    });
    let hup = commands_tx.clone();
    tokio::spawn(async move {
        let Ok(mut sighup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::error!("cannot install the SIGHUP handler; use POST /reload");
            return;
        };
        while sighup.recv().await.is_some() {
            tracing::info!("received SIGHUP: reloading the configuration");
            if hup.send(Command::Reload).await.is_err() {
                return;
            }
        }
    });
    let guard = GuardMode::ThisProgram {
        config_path: config_path.clone(),
    };
    Agent::new(config, config_path, dcs, guard, status_tx)
        .run(stop_rx, commands_rx)
        .await?;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Checks what `--validate-config` checks beyond the file itself: the
/// PostgreSQL programs exist, and the data directory's parent is usable.
pub fn check_environment(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    let mut programs = vec![
        "postgres",
        "pg_ctl",
        "initdb",
        "pg_controldata",
        "pg_basebackup",
    ];
    if config.postgresql_ha.use_pg_rewind.unwrap_or_else(|| {
        config
            .bootstrap
            .as_ref()
            .is_some_and(|b| b.dcs.use_pg_rewind())
    }) {
        programs.push("pg_rewind");
    }
    for p in programs {
        let path = config.binary(p);
        let found = if path.components().count() > 1 {
            path.is_file()
        } else {
            which(&path)
        };
        if !found {
            let where_ = match &config.postgresql.bin_dir {
                Some(d) => format!("postgresql.bin_dir ({})", d.display()),
                None => "PATH (postgresql.bin_dir is not set)".into(),
            };
            problems.push(format!("postgresql.bin_dir: {p} not found in {where_}"));
        }
    }
    let timing = config
        .bootstrap
        .as_ref()
        .map(|b| b.dcs.timing().0)
        .unwrap_or_default();
    if let Err(e) = crate::dcs::connect(&config.dcs, config.layout(), &config.name, timing) {
        problems.push(e.to_string());
    }
    let data_dir = &config.postgresql.data_dir;
    if let Some(parent) = data_dir.parent()
        && !data_dir.exists()
        && !parent.is_dir()
    {
        problems.push(format!(
            "postgresql.data_dir: parent directory {} does not exist",
            parent.display()
        ));
    }
    problems
}

fn which(program: &std::path::Path) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}
