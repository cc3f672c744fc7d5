//! `pgha-k8s-emulator --listen 127.0.0.1:PORT [--kubeconfig FILE]`: runs
//! the kube-apiserver emulator until interrupted, and optionally writes a
//! kubeconfig pointing at it.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use pgha_k8s_emulator::Emulator;

/// A kube-apiserver emulator for tests (ConfigMaps, Endpoints, Services,
/// Pods; watch; label selectors). Not a Kubernetes.
#[derive(Debug, Parser)]
#[command(name = "pgha-k8s-emulator", version)]
struct Args {
    /// Loopback address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Write a kubeconfig pointing at the emulator here.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig's context name (Patroni's default context is `kind-kind`).
    #[arg(long, default_value = "pgha-k8s-emulator")]
    context: String,
    /// The kubeconfig context's namespace.
    #[arg(long, default_value = "default")]
    namespace: String,
}

/// `RUST_LOG` as one level (`debug`, ...), else `info`.
fn rust_log_level() -> tracing::Level {
    std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(tracing::Level::INFO)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_max_level(rust_log_level())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let emulator = Emulator::start(args.listen).await?;
    if let Some(path) = &args.kubeconfig {
        emulator.write_kubeconfig(path, &args.context, &args.namespace)?;
    }
    // The address on stdout, one line, for scripts that picked port 0.
    println!("{}", emulator.url());
    tokio::signal::ctrl_c().await?;
    emulator.stop();
    Ok(())
}
