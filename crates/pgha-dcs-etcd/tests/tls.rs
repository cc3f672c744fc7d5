//! TLS against a real etcd started here with `--client-cert-auth`, using a
//! throwaway CA made with the `openssl` CLI. Runs with `--features tls`.
#![cfg(feature = "tls")]

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::ensure;
use pgha_core::dcs::{Dcs, DcsError};
use pgha_core::model::{KeyLayout, Timing};
use pgha_dcs_etcd::{EtcdConfig, EtcdDcs, PatroniEtcd3};
use pgha_testkit::pki::make_pki;
use pgha_testkit::ports::free_port;
use pgha_testkit::process::ServerProcess;
use pgha_testkit::workdir::WorkDir;
use tokio::time::Instant;

fn timing() -> Timing {
    Timing {
        ttl: Duration::from_secs(10),
        loop_wait: Duration::from_secs(1),
        retry_timeout: Duration::from_secs(2),
    }
}

/// etcd serving clients over TLS only, requiring client certificates.
struct TlsEtcd {
    dir: WorkDir,
    port: u16,
    _process: ServerProcess,
}

impl TlsEtcd {
    async fn start() -> anyhow::Result<Self> {
        let dir = WorkDir::new("etcd-tls")?;
        make_pki(dir.path(), "good")?;
        make_pki(dir.path(), "other")?;
        let (port, peer) = (free_port()?, free_port()?);
        let client_url = format!("https://127.0.0.1:{port}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let binary =
            std::env::var_os("PGHA_ETCD_BIN").map_or_else(|| PathBuf::from("etcd"), PathBuf::from);
        let p = |f: &str| dir.path().join(f);
        let mut cmd = Command::new(binary);
        cmd.arg("--name")
            .arg("pgha-tls")
            .arg("--data-dir")
            .arg(p("data"))
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(format!("pgha-tls={peer_url}"))
            .arg("--cert-file")
            .arg(p("good-server.pem"))
            .arg("--key-file")
            .arg(p("good-server.key"))
            .arg("--trusted-ca-file")
            .arg(p("good-ca.pem"))
            .arg("--client-cert-auth")
            .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH);
        let process = ServerProcess::spawn("etcd", cmd, &p("etcd.log"))?;
        let server = TlsEtcd {
            dir,
            port,
            _process: process,
        };
        // Ready when a correctly configured client can read.
        let probe = server.client(server.config("good", true)?)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match probe.load().await {
                Ok(_) => break,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!("waiting for etcd with TLS: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => {
                    let tail = server._process.log_tail(30);
                    anyhow::bail!("etcd with TLS did not come up: {e}\n{tail}");
                }
            }
        }
        Ok(server)
    }

    /// The configuration as Patroni's etcd3 section would give it.
    fn config(&self, ca: &str, with_client_cert: bool) -> anyhow::Result<EtcdConfig> {
        let p = |f: &str| self.dir.path().join(f).display().to_string();
        let mut section = serde_json::json!({
            "hosts": [format!("127.0.0.1:{}", self.port)],
            "protocol": "https",
            "cacert": p(&format!("{ca}-ca.pem")),
        });
        if with_client_cert {
            section["cert"] = p("good-client.pem").into();
            section["key"] = p("good-client.key").into();
        }
        let section: PatroniEtcd3 = serde_json::from_value(section)?;
        Ok(EtcdConfig::from_patroni(&section)?)
    }

    fn client(&self, config: EtcdConfig) -> anyhow::Result<EtcdDcs> {
        Ok(EtcdDcs::new(
            config,
            KeyLayout::new("/service", "tls"),
            "a",
            timing(),
        )?)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates() -> anyhow::Result<()> {
    pgha_testkit::init_tracing();
    let server = TlsEtcd::start().await?;

    let a = server.client(server.config("good", true)?)?;
    a.touch_member(&Default::default()).await?;
    a.acquire_leader().await?;
    let c = a.load().await?;
    ensure!(c.leader_name() == Some("a") && c.member("a").is_some());

    // Misconfigured clients fail, within retry_timeout, with a typed error.
    // A server certificate we do not trust is configuration (Rejected, at
    // once). A client certificate the server wants but does not get is
    // reported by the server's alert, which with TLS 1.3 comes after the
    // client finished its side of the handshake: depending on timing the
    // client sees the alert (Rejected) or a dropped connection
    // (Unreachable). Plain http to a TLS port looks like a broken link.
    let bound = timing().retry_timeout + Duration::from_secs(1);
    for (what, config, rejected_ok, unreachable_ok) in [
        (
            "no client certificate",
            server.config("good", false)?,
            true,
            true,
        ),
        (
            "a CA that did not sign the server",
            server.config("other", true)?,
            true,
            false,
        ),
        (
            "plain http to a TLS port",
            EtcdConfig::new([format!("http://127.0.0.1:{}", server.port)])?,
            false,
            true,
        ),
    ] {
        let bad = server.client(config)?;
        let start = Instant::now();
        let r = bad.load().await;
        ensure!(
            (rejected_ok && matches!(r, Err(DcsError::Rejected { .. })))
                || (unreachable_ok && matches!(r, Err(DcsError::Unreachable { .. }))),
            "{what}: {r:?}"
        );
        ensure!(
            start.elapsed() <= bound,
            "{what}: took {:?}",
            start.elapsed()
        );
        tracing::info!("{what}: {r:?}");
    }
    Ok(())
}

#[test]
fn unreadable_tls_files_are_a_configuration_error() {
    let config = EtcdConfig {
        cacert: Some("/nonexistent/ca.pem".into()),
        ..EtcdConfig::new(["https://127.0.0.1:2379"]).unwrap()
    };
    let r = EtcdDcs::new(config, KeyLayout::new("/service", "x"), "a", timing());
    assert!(matches!(r, Err(DcsError::Rejected { .. })), "{r:?}");
}
