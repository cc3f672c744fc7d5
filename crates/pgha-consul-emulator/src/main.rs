//! `pgha-consul-emulator --listen 127.0.0.1:PORT`: the Consul emulator as a
//! process, for running Patroni, patronictl or pgha against it by hand.
//! It is an emulator for tests, not a Consul agent.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use pgha_consul_emulator::{ConsulEmulator, EmulatorConfig, duration};

/// A Consul emulator for tests (KV, sessions, blocking queries) on loopback.
#[derive(Debug, Parser)]
#[command(name = "pgha-consul-emulator", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8500")]
    listen: SocketAddr,
    /// Consul's `session_ttl_min` (Go duration).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    session_ttl_min: Duration,
    /// Invalidate an unrenewed session after this many times its TTL (1.0 to 2.0).
    #[arg(long, default_value_t = 2.0)]
    ttl_multiplier: f64,
    /// The node name sessions belong to.
    #[arg(long, default_value = "emulator")]
    node: String,
    /// The datacenter name.
    #[arg(long, default_value = "dc1")]
    datacenter: String,
    /// Require this ACL token on every request.
    #[arg(long, env = "PGHA_CONSUL_EMULATOR_TOKEN")]
    acl_token: Option<String>,
    /// Serve HTTPS with this PEM certificate (needs --tls-key; `tls` feature).
    #[cfg(feature = "tls")]
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of --tls-cert.
    #[cfg(feature = "tls")]
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Require client certificates signed by this PEM CA.
    #[cfg(feature = "tls")]
    #[arg(long, requires = "tls_cert")]
    tls_client_ca: Option<std::path::PathBuf>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    duration::parse(s).ok_or_else(|| format!("not a Go duration: {s:?}"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    // `RUST_LOG` as one level (`debug`, ...), else `info`.
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt().with_max_level(level).init();
    if !(1.0..=2.0).contains(&args.ttl_multiplier) {
        eprintln!("--ttl-multiplier must be between 1.0 and 2.0");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let mut config = EmulatorConfig {
            listen: args.listen,
            acl_token: args.acl_token,
            ..Default::default()
        };
        config.store.session_ttl_min = args.session_ttl_min;
        config.store.ttl_multiplier = args.ttl_multiplier;
        config.store.node = args.node;
        config.store.datacenter = args.datacenter;
        #[cfg(feature = "tls")]
        if let (Some(cert), Some(key)) = (args.tls_cert, args.tls_key) {
            config.tls = Some(pgha_consul_emulator::TlsConfig {
                cert,
                key,
                client_ca: args.tls_client_ca,
            });
        }
        let emulator = match ConsulEmulator::start(config).await {
            Ok(e) => e,
            Err(e) => {
                eprintln!("cannot listen on {}: {e}", args.listen);
                return ExitCode::FAILURE;
            }
        };
        // The address on stdout, so a parent process can wait for it.
        println!("listening on {}", emulator.addr());
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("cannot watch SIGTERM: {e}");
                    return ExitCode::FAILURE;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        emulator.stop();
        ExitCode::SUCCESS
    })
}
