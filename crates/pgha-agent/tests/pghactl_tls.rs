//! pghactl with members whose REST API is HTTPS and wants a client
//! certificate (`restapi.certfile/keyfile/cafile`, `verify_client:
//! required`), on a pgha cluster: a node's own YAML (its `ctl.cacert`,
//! `certfile`, `keyfile` and `restapi.authentication`) is all pghactl
//! needs; without a CA, or without a client certificate, each member's
//! failure is named. Certificates come from a throwaway CA made with
//! Debian's `openssl` CLI.

// A panic is how a test fails; the helpers here are part of the tests.
#![allow(clippy::unwrap_used)]

mod common;

use common::pgha_cluster::PghaCluster;
use common::pghactl;
use common::scenarios::{self, Operated};
use pgha_testkit::pki::make_pki;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_members_with_client_certificates() {
    pgha_testkit::init_tracing();
    let c = PghaCluster::start_with(|dir, yaml| {
        if !dir.join("test-ca.pem").exists() {
            make_pki(dir, "test").unwrap();
        }
        let f = |name: &str| dir.join(format!("test-{name}")).display().to_string();
        let tls = format!(
            "  certfile: {}\n  keyfile: {}\n  cafile: {}\n  verify_client: required\n  authentication: {{username: admin, password: admin-pass}}\n\
             ctl:\n  cacert: {}\n  certfile: {}\n  keyfile: {}\n",
            f("server.pem"), f("server.key"), f("ca.pem"), f("ca.pem"), f("client.pem"), f("client.key")
        );
        let at = yaml.find("etcd3:").unwrap();
        format!("{}{tls}{}", &yaml[..at], &yaml[at..])
    })
    .await
    .expect("pgha cluster over https");
    let scope = c.scope().to_string();
    let leader = scenarios::wait_healthy(&c, scenarios::HEALTHY)
        .await
        .unwrap();
    let loaded = scenarios::load(&c).await;
    assert!(loaded.members.iter().all(|m| {
        m.data
            .api_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"))
    }));

    // A node's own configuration file has everything pghactl needs.
    let node_yml = c.cluster.nodes[0].config.clone();
    let out = pghactl(&node_yml, &["version", &scope], "").await.ok();
    for n in c.names() {
        assert!(out.stdout.contains(&format!("{n}: Patroni 4.")), "{out}");
    }
    let candidate = c.names().into_iter().find(|n| *n != leader).unwrap();
    let out = pghactl(
        &node_yml,
        &["switchover", "--candidate", &candidate, "--force"],
        "",
    )
    .await
    .ok();
    assert!(
        out.stdout
            .contains(&format!("Successfully switched over to \"{candidate}\"")),
        "{out}"
    );

    // Without a CA to check the members: refused, saying what to set.
    let plain = c.ctl_config();
    let out = pghactl(&plain, &["reload", &scope, &leader, "--force"], "")
        .await
        .failed();
    assert!(
        out.stdout.contains(&format!(
            "Failed: reload for member {leader}: https://127.0.0.1:"
        )),
        "{out}"
    );
    assert!(
        out.stdout
            .contains("set ctl.cacert (or restapi.cafile), or use -k/--insecure"),
        "{out}"
    );
    // -k checks nothing, but these members want a client certificate.
    let out = pghactl(&plain, &["-k", "reload", &scope, &leader, "--force"], "")
        .await
        .failed();
    assert!(
        out.stdout.contains(&format!(
            "Failed: reload for member {leader}: https://127.0.0.1:"
        )),
        "{out}"
    );
    assert!(out.stdout.contains("is unreachable"), "{out}");
}
