//! The REST API over HTTPS with client certificates (`restapi.certfile`,
//! `keyfile`, `cafile`, `verify_client: required`; `ctl.*` for calls to
//! peers) and an allowlist (`allowlist_include_members`), on real etcd and
//! PostgreSQL. Certificates come from a throwaway
//! CA made with Debian's `openssl` CLI (`pgha_testkit::pki`).

// A panic is how a test fails; the helpers here are part of the tests.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pgha_testkit::cluster::{ClusterOptions, DcsKind, TestCluster};
use pgha_testkit::pki::make_pki;
use tokio::time::Instant;

fn agent() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pgha"))
}

/// `curl` status code for `url`, with extra arguments.
fn curl(url: &str, args: &[&str]) -> String {
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ])
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_api_over_mutual_tls() {
    pgha_testkit::init_tracing();
    let mut c = TestCluster::new(agent(), DcsKind::Etcd, ClusterOptions::default())
        .await
        .unwrap();
    let pki = make_pki(c.dir.path(), "test").unwrap();
    let (ca, cert, key, client_cert, client_key) = (
        pki.ca,
        pki.server_cert,
        pki.server_key,
        pki.client_cert,
        pki.client_key,
    );
    for i in 0..3 {
        c.edit_config(i, |y| {
            let section = format!(
                "  certfile: {}\n  keyfile: {}\n  cafile: {}\n  verify_client: required\n  allowlist: ['10.0.0.0/8']\n  allowlist_include_members: true\n  authentication: {{username: admin, password: admin-pass}}\nctl:\n  cacert: {}\n  certfile: {}\n  keyfile: {}\n",
                cert.display(), key.display(), ca.display(), ca.display(), client_cert.display(), client_key.display()
            );
            let at = y.find("etcd3:").unwrap();
            format!("{}{}{}", &y[..at], section, &y[at..])
        })
        .unwrap();
    }
    c.start_all().unwrap();
    let (ca_s, cc, ck) = (
        ca.display().to_string(),
        client_cert.display().to_string(),
        client_key.display().to_string(),
    );
    let tls = ["--cacert", &ca_s, "--cert", &cc, "--key", &ck];
    let primary = |c: &TestCluster| {
        (0..3)
            .filter(|&i| {
                curl(
                    &format!("https://127.0.0.1:{}/primary", c.nodes[i].api_port),
                    &tls,
                ) == "200"
            })
            .collect::<Vec<_>>()
    };
    let until_one_primary = |c: &TestCluster, within: Duration| {
        let deadline = Instant::now() + within;
        loop {
            let p = primary(c);
            if p.len() == 1 {
                return p[0];
            }
            assert!(
                Instant::now() < deadline,
                "no single primary over HTTPS\n{}",
                c.logs_tail(15)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    let p = until_one_primary(&c, Duration::from_secs(60));
    // Both replicas stream before anything is killed: a primary killed
    // while they still clone leaves nobody to fail over to. (Asked on the
    // replicas: pg_basebackup's WAL stream also shows as 'streaming' in
    // the primary's pg_stat_replication.)
    let streaming = "SELECT status FROM pg_stat_wal_receiver";
    for i in (0..3).filter(|&i| i != p) {
        c.wait_sql(i, streaming, Duration::from_secs(60), |r| {
            r == ["streaming"]
        })
        .await
        .unwrap_or_else(|e| panic!("replica not streaming: {e}\n{}", c.logs_tail(15)));
    }
    let ports: Vec<u16> = c.nodes.iter().map(|n| n.api_port).collect();
    let url = |i: usize, path: &str| format!("https://127.0.0.1:{}{path}", ports[i]);

    // Without a client certificate, or in clear, there is no answer.
    assert_eq!(curl(&url(p, "/primary"), &["--cacert", &ca_s]), "000");
    assert_eq!(
        curl(
            &format!("http://127.0.0.1:{}/primary", c.nodes[p].api_port),
            &[]
        ),
        "000"
    );
    // The member key advertises https.
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5"])
        .args(tls)
        .arg(url(p, "/cluster"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!(
        "\"api_url\":\"https://127.0.0.1:{}/patroni\"",
        c.nodes[p].api_port
    )));

    // Failover: the leader race asks the peers over mutual TLS.
    c.kill_node(p);
    let new = until_one_primary(&c, Duration::from_secs(30));
    assert_ne!(new, p);
    for i in (0..3).filter(|&i| i != p && i != new) {
        c.wait_sql(i, streaming, Duration::from_secs(60), |r| {
            r == ["streaming"]
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the other replica does not follow: {e}\n{}",
                c.logs_tail(15)
            )
        });
    }
    let others: Vec<usize> = (0..3).filter(|&i| i != p).collect();

    // An authenticated switchover over HTTPS. It also proves the agents
    // reach each other over mutual TLS: the candidate is checked with a
    // GET /patroni, and an unreachable one would make this a 412.
    let cand = others.into_iter().find(|&i| i != new).unwrap();
    let body = format!(
        r#"{{"leader": "{}", "candidate": "{}"}}"#,
        c.nodes[new].name, c.nodes[cand].name
    );
    // Unsafe calls are admitted only from the allowlist or a member's
    // address (every api_url is on 127.0.0.1): from 127.0.0.2, even with
    // the certificate and the password, 403 and no switchover.
    let outside = curl(
        &url(new, "/switchover"),
        &[
            &tls[..],
            &["--interface", "127.0.0.2", "-u", "admin:admin-pass"][..],
            &["-X", "POST", "-d", &body][..],
        ]
        .concat(),
    );
    assert_eq!(outside, "403", "{}", c.logs_tail(15));
    assert_eq!(primary(&c), vec![new]);
    let code = curl(
        &url(new, "/switchover"),
        &[
            &tls[..],
            &["-u", "admin:admin-pass", "-X", "POST", "-d", &body][..],
        ]
        .concat(),
    );
    assert_eq!(code, "200", "{}", c.logs_tail(15));
    assert_eq!(until_one_primary(&c, Duration::from_secs(30)), cand);
}
