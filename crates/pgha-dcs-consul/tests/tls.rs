//! TLS against the Consul emulator serving HTTPS and requiring client
//! certificates (Consul's `verify_incoming`), with a throwaway CA made by
//! the `openssl` CLI. Configured through Patroni's `consul:` keys
//! (`scheme`, `cacert`, `cert`, `key`, `token`). Runs with `--features tls`.
#![cfg(feature = "tls")]
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use anyhow::{Context, ensure};
use pgha_consul_emulator::{ConsulEmulator, EmulatorConfig, TlsConfig};
use pgha_core::dcs::{Dcs, DcsError};
use pgha_core::model::{KeyLayout, Timing};
use pgha_dcs_consul::{ConsulConfig, ConsulDcs};
use pgha_testkit::pki::make_pki;
use pgha_testkit::workdir::WorkDir;
use serde_json::json;

fn timing() -> Timing {
    Timing {
        ttl: Duration::from_secs(10),
        loop_wait: Duration::from_secs(1),
        retry_timeout: Duration::from_secs(2),
    }
}

fn node(section: serde_json::Value, name: &str) -> anyhow::Result<ConsulDcs> {
    let config = ConsulConfig::from_patroni(&section)?;
    Ok(ConsulDcs::new(
        config,
        KeyLayout::new("/service", "tls"),
        name,
        timing(),
    )?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_client_certificates_and_a_token() -> anyhow::Result<()> {
    pgha_testkit::init_tracing();
    let dir = WorkDir::new("consul-tls")?;
    make_pki(dir.path(), "good")?;
    make_pki(dir.path(), "other")?;
    let p = |f: &str| dir.path().join(f).display().to_string();
    let mut config = EmulatorConfig::for_tests();
    config.acl_token = Some("s3cret".into());
    config.tls = Some(TlsConfig {
        cert: dir.path().join("good-server.pem"),
        key: dir.path().join("good-server.key"),
        client_ca: Some(dir.path().join("good-ca.pem")),
    });
    let e = ConsulEmulator::start(config).await?;
    let host = e.addr().to_string();
    ensure!(e.url().starts_with("https://"));

    // Patroni's keys: scheme, cacert, cert + key, token.
    let good = node(
        json!({"host": host, "scheme": "https", "cacert": p("good-ca.pem"),
               "cert": p("good-client.pem"), "key": p("good-client.key"), "token": "s3cret"}),
        "a",
    )?;
    good.load().await.context("load over TLS")?;
    good.acquire_leader().await.context("acquire over TLS")?;
    ensure!(good.load().await?.leader_name() == Some("a"));

    // A combined file (certificate and key in one), as Patroni accepts.
    let combined = dir.path().join("good-client-combined.pem");
    std::fs::write(
        &combined,
        [
            std::fs::read(dir.path().join("good-client.pem"))?,
            std::fs::read(dir.path().join("good-client.key"))?,
        ]
        .concat(),
    )?;
    let url = format!("https://{host}");
    let combined_node = node(
        json!({"url": url, "cacert": p("good-ca.pem"),
               "cert": combined.display().to_string(), "token": "s3cret"}),
        "b",
    )?;
    combined_node
        .load()
        .await
        .context("load with a combined cert file")?;

    // The server's certificate is checked against cacert: refused.
    let wrong_ca = node(
        json!({"host": host, "scheme": "https", "cacert": p("other-ca.pem"),
               "cert": p("good-client.pem"), "key": p("good-client.key"), "token": "s3cret"}),
        "c",
    )?;
    let r = wrong_ca.load().await;
    ensure!(
        matches!(&r, Err(DcsError::Rejected { detail, .. }) if detail.contains("certificate")),
        "untrusted server certificate: {r:?}"
    );

    // A client certificate from another CA is refused by the server.
    let wrong_client = node(
        json!({"host": host, "scheme": "https", "cacert": p("good-ca.pem"),
               "cert": p("other-client.pem"), "key": p("other-client.key"), "token": "s3cret"}),
        "d",
    )?;
    let r = wrong_client.load().await;
    ensure!(r.is_err(), "a foreign client certificate was accepted");

    // Without the token: 403, Rejected (configuration, not the network).
    let no_token = node(
        json!({"host": host, "scheme": "https", "cacert": p("good-ca.pem"),
               "cert": p("good-client.pem"), "key": p("good-client.key")}),
        "e",
    )?;
    let r = no_token.load().await;
    ensure!(
        matches!(&r, Err(DcsError::Rejected { detail, .. }) if detail.contains("403")),
        "no token: {r:?}"
    );

    // Plain http to the TLS port fails, it does not hang.
    let plain = node(json!({"host": host, "token": "s3cret"}), "f")?;
    let started = tokio::time::Instant::now();
    ensure!(plain.load().await.is_err());
    ensure!(started.elapsed() <= timing().retry_timeout + Duration::from_secs(1));
    Ok(())
}

#[test]
fn missing_files_are_reported_at_configuration() {
    let r = ConsulConfig::from_patroni(&json!({
        "scheme": "https", "cacert": "/nonexistent/ca.pem"
    }))
    .and_then(|c| {
        ConsulDcs::new(c, KeyLayout::new("/service", "x"), "n", timing())
            .map(|_| ())
            .map_err(|e| pgha_dcs_consul::ConfigError::Unreadable {
                path: String::new(),
                reason: e.to_string(),
            })
    });
    let msg = format!("{r:?}");
    assert!(msg.contains("/nonexistent/ca.pem"), "{msg}");
}
