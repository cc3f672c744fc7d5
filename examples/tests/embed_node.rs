//! `embed_node` (a service embedding `pgha_node`, examples/embed_node.rs)
//! on real PostgreSQL and etcd: three instances elect one primary; when
//! the primary's service is killed, its fence guard (the same program,
//! started with `--guard`) stops its PostgreSQL and hands the lock over,
//! and another instance becomes primary with the data written before.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use pgha_testkit::cluster::{ClusterOptions, run_as_user};
use pgha_testkit::etcd::EtcdServer;
use pgha_testkit::ports::free_port;
use pgha_testkit::process::ServerProcess;
use pgha_testkit::wait::until;
use pgha_testkit::workdir::WorkDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Instance {
    data_dir: PathBuf,
    pg_port: u16,
    http_port: u16,
    service: Option<ServerProcess>,
}

/// The instances; dropping it stops what the test left running.
struct Instances(Vec<Instance>);

impl Drop for Instances {
    fn drop(&mut self) {
        for i in &mut self.0 {
            if let Some(mut s) = i.service.take() {
                s.kill();
            }
            if let Some(pid) = postmaster_pid(&i.data_dir) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

fn postmaster_pid(data_dir: &std::path::Path) -> Option<i32> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    kill(Pid::from_raw(pid), None).ok().map(|()| pid)
}

/// `GET /role` from an instance's own endpoint; `None` if it does not answer.
async fn role(port: u16) -> Option<String> {
    let exchange = async {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        conn.write_all(b"GET /role HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .ok()?;
        let mut text = String::new();
        conn.read_to_string(&mut text).await.ok()?;
        Some(text.split("\r\n\r\n").nth(1)?.to_string())
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
}

async fn primaries(instances: &Instances) -> Vec<usize> {
    let mut found = Vec::new();
    for (i, inst) in instances.0.iter().enumerate() {
        if inst.service.is_some() && role(inst.http_port).await.as_deref() == Some("primary") {
            found.push(i);
        }
    }
    found
}

async fn sql(port: u16, query: &str) -> anyhow::Result<Vec<String>> {
    let (client, conn) = tokio_postgres::connect(
        &format!("host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=3"),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(conn);
    let mut out = Vec::new();
    for m in client.simple_query(query).await? {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = m {
            out.push(r.get(0).unwrap_or_default().to_string());
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_embedded_nodes_elect_one_primary_and_fail_over() {
    let etcd = EtcdServer::start().await.unwrap();
    let dir = WorkDir::new("embed-node").unwrap();
    let user = run_as_user().unwrap();
    if let Some((uid, gid)) = user {
        nix::unistd::chown(dir.path(), Some(uid), Some(gid)).unwrap();
    }
    let scope = format!("embed-{}", std::process::id());
    let bin_dir = ClusterOptions::default().bin_dir;
    let mut instances = Instances(Vec::new());
    for n in 1..=3 {
        let node_dir = dir.path().join(format!("n{n}"));
        std::fs::create_dir(&node_dir).unwrap();
        if let Some((uid, gid)) = user {
            nix::unistd::chown(&node_dir, Some(uid), Some(gid)).unwrap();
        }
        let inst = Instance {
            data_dir: node_dir.join("data"),
            pg_port: free_port().unwrap(),
            http_port: free_port().unwrap(),
            service: None,
        };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_embed_node"));
        if let Some((uid, gid)) = user {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid.as_raw()).gid(gid.as_raw());
        }
        cmd.args(["--name", &format!("n{n}"), "--scope", &scope])
            .args(["--etcd", &etcd.addr().to_string()])
            .arg("--data-dir")
            .arg(&inst.data_dir)
            .args(["--pg-port", &inst.pg_port.to_string()])
            .args(["--http-port", &inst.http_port.to_string()])
            .arg("--bin-dir")
            .arg(&bin_dir)
            .args(["--ttl", "5"])
            .env("HOME", &node_dir);
        let log = dir.path().join(format!("n{n}.log"));
        instances.0.push(Instance {
            service: Some(ServerProcess::spawn(&format!("n{n}"), cmd, &log).unwrap()),
            ..inst
        });
    }
    let logs = |instances: &Instances| {
        instances
            .0
            .iter()
            .enumerate()
            .map(|(i, _)| {
                let text = std::fs::read_to_string(dir.path().join(format!("n{}.log", i + 1)))
                    .unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                format!(
                    "--- n{} ---\n{}",
                    i + 1,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };

    // One primary, and two replicas that stream from it.
    let first = until(
        "one primary",
        Duration::from_secs(120),
        Duration::from_millis(500),
        || async {
            match primaries(&instances).await[..] {
                [p] => Some(p),
                _ => None,
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&instances)));
    let primary_port = instances.0[first].pg_port;
    sql(
        primary_port,
        "CREATE TABLE t(id int); INSERT INTO t VALUES (1)",
    )
    .await
    .unwrap();
    until(
        "two replicas with the row",
        Duration::from_secs(120),
        Duration::from_millis(500),
        || async {
            let mut ready = 0;
            for (i, inst) in instances.0.iter().enumerate() {
                if i != first
                    && role(inst.http_port).await.as_deref() == Some("replica")
                    && sql(inst.pg_port, "SELECT count(*) FROM t").await.ok()
                        == Some(vec!["1".into()])
                {
                    ready += 1;
                }
            }
            (ready == 2).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&instances)));

    // The primary's service dies (kill -9): its guard fences PostgreSQL.
    let old_data = instances.0[first].data_dir.clone();
    if let Some(mut s) = instances.0[first].service.take() {
        s.kill();
    }
    until(
        "the old primary's PostgreSQL stopped by its guard",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || async { postmaster_pid(&old_data).is_none().then_some(()) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&instances)));

    // Another instance takes over, with the row.
    let second = until(
        "a new primary",
        Duration::from_secs(60),
        Duration::from_millis(300),
        || async {
            match primaries(&instances).await[..] {
                [p] if p != first => Some(p),
                _ => None,
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&instances)));
    let port = instances.0[second].pg_port;
    sql(port, "INSERT INTO t VALUES (2)").await.unwrap();
    assert_eq!(
        sql(port, "SELECT count(*) FROM t").await.unwrap(),
        ["2"],
        "{}",
        logs(&instances)
    );

    // A clean stop (SIGINT) stops PostgreSQL and releases the lock.
    for inst in &mut instances.0 {
        if let Some(s) = &inst.service {
            s.signal(Signal::SIGINT).unwrap();
        }
    }
    for inst in &mut instances.0 {
        if let Some(s) = &mut inst.service {
            until(
                "the service to exit",
                Duration::from_secs(60),
                Duration::from_millis(200),
                || {
                    let running = s.is_running();
                    async move { (!running).then_some(()) }
                },
            )
            .await
            .unwrap();
        }
        assert_eq!(
            postmaster_pid(&inst.data_dir),
            None,
            "PostgreSQL left running"
        );
    }
}
