//! Running the agent: the `pgha` binary's whole life.

use std::path::PathBuf;

use pgha_node::{GuardMode, Node, NodeExit, NodeHandle, service_notify};
use tokio::sync::{mpsc, watch};

use crate::config::Config;
use crate::guard_command::{GUARD_PROGRAM, GuardCommand};
use crate::rest;

/// Why the agent could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Startup(String),
    #[error(transparent)]
    Node(#[from] NodeExit),
}

/// Starts the REST API and the node and runs until SIGTERM or SIGINT
/// (then stops PostgreSQL and releases the lock) or until the node
/// refuses to go on.
pub async fn run(config: Config, config_path: Option<PathBuf>) -> Result<(), RunError> {
    if nix::unistd::geteuid().is_root() {
        return Err(NodeExit::Root.into());
    }
    for w in &config.warnings {
        tracing::warn!("configuration: {w}");
    }
    let node_config = config.node_config();
    let dcs = crate::dcs::connect(
        &config.dcs,
        config.layout(),
        &config.name,
        node_config.initial_timing(),
    )
    .map_err(|e| RunError::Startup(e.to_string()))?;

    // TLS files and peers' CA are checked now, so a bad file stops the
    // agent with its name before anything runs.
    let tls = match &config.restapi_tls {
        #[cfg(feature = "restapi-tls")]
        Some(t) => Some(rest::tls::server_config(t).map_err(|e| RunError::Startup(e.to_string()))?),
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
    pgha_rest_client::tls::client_config(&config.client_tls)
        .map_err(|e| RunError::Startup(e.to_string()))?;
    let guard = guard_mode(&config, config_path.as_ref()).map_err(RunError::Startup)?;
    let (mut node, handle) = Node::new(node_config, dcs.clone(), guard);

    // Before anything is started or touched, and before the REST API
    // listens: this name must be free.
    node.check_name().await?;
    let listen = config.restapi_listen.socket_string();
    let listener = tokio::net::TcpListener::bind(&listen).await.map_err(|e| {
        RunError::Startup(format!("restapi.listen: cannot listen on {listen}: {e}"))
    })?;
    // Allowlist host names are resolved once, now, as Patroni does when it
    // loads the configuration; members' addresses are resolved per request.
    let access =
        rest::access::AccessRules::resolve(&config.restapi_access, config.restapi_verify_client())
            .await;
    let (reload_tx, reload_rx) = mpsc::channel(1);
    let api = rest::ApiState::new(
        handle.clone(),
        dcs,
        reload_tx.clone(),
        config.restapi_auth.clone(),
        &config.client_tls,
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
        service_notify::notify("STOPPING=1");
        let _ = stop_tx.send(true);
    });
    tokio::spawn(async move {
        let Ok(mut sighup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::error!("cannot install the SIGHUP handler; use POST /reload");
            return;
        };
        while sighup.recv().await.is_some() {
            tracing::info!("received SIGHUP: reloading the configuration");
            service_notify::notify(&service_notify::reloading_message());
            // Full: a reload is already coming.
            let _ = reload_tx.try_send(());
        }
    });
    tokio::spawn(reload_on_request(reload_rx, config_path, handle));
    // The REST API listens and the node runs from here: a service manager
    // waiting for the start (`Type=notify`) may go on.
    service_notify::notify("READY=1");
    node.run(stop_rx).await?;
    Ok(())
}

/// Re-reads the configuration (the file, or `PATRONI_CONFIGURATION`) on
/// each request (SIGHUP, `POST /reload`) and hands it to the node. A file
/// with problems is refused and the running configuration kept; what the
/// node cannot change while running it keeps, with a warning; the REST
/// API's own settings take effect at the next start.
async fn reload_on_request(
    mut requests: mpsc::Receiver<()>,
    path: Option<PathBuf>,
    node: NodeHandle,
) {
    while requests.recv().await.is_some() {
        match Config::load_file_or_env(path.as_deref()) {
            Ok(config) => {
                for w in &config.warnings {
                    tracing::warn!("configuration: {w}");
                }
                if node.reload(config.node_config()).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::error!("reload refused, keeping the running configuration: {e}"),
        }
        // Done, applied or refused (systemd waits for this after RELOADING=1).
        service_notify::notify("READY=1");
    }
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
    if let Err(e) = guard_program() {
        problems.push(e);
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

/// Where `pg-fence-guard` is: beside this program (both come from one
/// package or one `cargo build`).
fn guard_program() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| {
        format!("cannot tell where this program is ({e}), so where {GUARD_PROGRAM} is")
    })?;
    let program = exe.with_file_name(GUARD_PROGRAM);
    if program.is_file() {
        Ok(program)
    } else {
        Err(format!(
            "{GUARD_PROGRAM} not found at {} (it is installed beside pgha; without it no \
             fence guard runs and this node could never be primary)",
            program.display()
        ))
    }
}

/// The fence guard: `pg-fence-guard`, told whose PostgreSQL it guards, how
/// to log, and to hand a dead agent's lock over with this very program
/// (`pgha [CONFIG] --hand-over-lock NS`).
fn guard_mode(config: &Config, config_path: Option<&PathBuf>) -> Result<GuardMode, String> {
    let program = guard_program()?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot tell where pgha is: {e}"))?;
    let mut handover: Vec<std::ffi::OsString> = config_path
        .map(|p| {
            std::path::absolute(p)
                .unwrap_or_else(|_| p.clone())
                .into_os_string()
        })
        .into_iter()
        .collect();
    handover.push("--hand-over-lock".into());
    let command = GuardCommand {
        member: config.name.clone(),
        data_dir: config.postgresql.data_dir.clone(),
        log: config.log.clone(),
        handover: Some((exe, handover)),
    };
    Ok(GuardMode::Program {
        program,
        args: command.to_args(),
    })
}

fn which(program: &std::path::Path) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}
