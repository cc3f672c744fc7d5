//! HAProxy (Debian's package) configured as Patroni's documentation shows:
//! one port for the primary (`option httpchk OPTIONS /primary`), one for
//! the replicas (`OPTIONS /replica`). A client going through it must reach
//! the primary, and follow a switchover and a failover.

// A panic is how a test fails; the helpers here are part of the tests.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pgha_testkit::cluster::{ClusterOptions, DcsKind, SUPERUSER_PASSWORD, TestCluster};
use pgha_testkit::ports::free_port;
use pgha_testkit::process::ServerProcess;
use tokio::time::Instant;

fn agent() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pgha"))
}

/// `SELECT inet_server_port(), pg_is_in_recovery()` through HAProxy on `port`.
async fn through(port: u16) -> anyhow::Result<(u16, bool)> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host("127.0.0.1")
        .port(port)
        .user("postgres")
        .password(SUPERUSER_PASSWORD)
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(2));
    let (client, conn) =
        tokio::time::timeout(Duration::from_secs(3), cfg.connect(tokio_postgres::NoTls)).await??;
    tokio::spawn(conn);
    let row = tokio::time::timeout(
        Duration::from_secs(3),
        client.query_one("SELECT inet_server_port(), pg_is_in_recovery()", &[]),
    )
    .await??;
    let server_port: i32 = row.get(0);
    Ok((u16::try_from(server_port)?, row.get(1)))
}

/// Waits until HAProxy's primary port leads to node `want`'s PostgreSQL.
async fn until_primary_port_reaches(c: &TestCluster, port: u16, want: usize, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if let Ok((server, in_recovery)) = through(port).await
            && server == c.nodes[want].pg_port
            && !in_recovery
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "HAProxy's primary port never reached node{}\n{}",
            want + 1,
            c.logs_tail(10)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_follows_switchover_and_failover() {
    pgha_testkit::init_tracing();
    let mut c = TestCluster::new(agent(), DcsKind::Etcd, ClusterOptions::default())
        .await
        .unwrap();
    c.start_all().unwrap();
    let p = c
        .wait_converged(&[0, 1, 2], Duration::from_secs(60))
        .await
        .unwrap();

    let (primary_port, replica_port) = (free_port().unwrap(), free_port().unwrap());
    let servers = |check: &str| {
        c.nodes
            .iter()
            .map(|n| {
                format!(
                    "    server {} 127.0.0.1:{} maxconn 100 check port {}\n",
                    n.name, n.pg_port, n.api_port
                )
            })
            .collect::<String>()
            + &format!("    # checked with OPTIONS {check}\n")
    };
    let cfg = format!(
        "global\n    maxconn 100\n\n\
         defaults\n    log global\n    mode tcp\n    retries 2\n    timeout client 30m\n    timeout connect 4s\n    timeout server 30m\n    timeout check 5s\n\n\
         listen primary\n    bind 127.0.0.1:{primary_port}\n    option httpchk OPTIONS /primary\n    http-check expect status 200\n    \
         default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions\n{}\n\
         listen replicas\n    bind 127.0.0.1:{replica_port}\n    balance roundrobin\n    option httpchk OPTIONS /replica\n    http-check expect status 200\n    \
         default-server inter 1s fall 2 rise 1 on-marked-down shutdown-sessions\n{}",
        servers("/primary"),
        servers("/replica"),
    );
    let cfg_path = c.dir.path().join("haproxy.cfg");
    std::fs::write(&cfg_path, cfg).unwrap();
    let mut cmd = Command::new("/usr/sbin/haproxy");
    cmd.arg("-db").arg("-f").arg(&cfg_path);
    let _haproxy = ServerProcess::spawn("haproxy", cmd, &c.dir.path().join("haproxy.log")).unwrap();

    until_primary_port_reaches(&c, primary_port, p, Duration::from_secs(20)).await;
    // HAProxy counts servers as up until their first checks fail: once the
    // checks have settled, the replica port leads to replicas only.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut replicas_in_a_row = 0;
    while replicas_in_a_row < 6 {
        match through(replica_port).await {
            Ok((server, true)) if server != c.nodes[p].pg_port => replicas_in_a_row += 1,
            _ => replicas_in_a_row = 0,
        }
        assert!(
            Instant::now() < deadline,
            "the replica port still leads to the primary"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Switchover: the primary port follows.
    let cand = (p + 1) % 3;
    let body = format!(
        r#"{{"leader": "{}", "candidate": "{}"}}"#,
        c.nodes[p].name, c.nodes[cand].name
    );
    let (code, text) = c
        .api_call(
            p,
            "POST",
            "/switchover",
            Some(&body),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{text}");
    until_primary_port_reaches(&c, primary_port, cand, Duration::from_secs(20)).await;

    // Failover: kill -9 of the new primary's agent and PostgreSQL.
    c.kill_node(cand);
    let new = c
        .wait_for_primary(Duration::from_secs(
            c.options.ttl + c.options.loop_wait + 10,
        ))
        .await
        .unwrap();
    until_primary_port_reaches(&c, primary_port, new, Duration::from_secs(20)).await;
    // And never to the dead node.
    let (server, _) = through(primary_port).await.unwrap();
    assert_ne!(server, c.nodes[cand].pg_port);
}
