//! pgha as a systemd service: the unit in `packaging/systemd` passes
//! `systemd-analyze verify`, and the agent speaks systemd's notification
//! protocol (`READY=1`, `RELOADING=1` + `MONOTONIC_USEC`, `STOPPING=1`) to
//! the socket in `NOTIFY_SOCKET` — a socket the test listens on, as
//! systemd would (systemd itself cannot run units on the test machine).

// A panic is how a test fails; the helpers here are part of the tests.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use pgha_testkit::cluster::{ClusterOptions, DcsKind, TestCluster};

fn agent() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pgha"))
}

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(repo().join("packaging/systemd/pgha.service")).unwrap();
    // verify insists that ExecStart's program exists: the one just built.
    assert!(unit.contains("ExecStart=/usr/bin/pgha "), "{unit}");
    let unit = unit.replace("/usr/bin/pgha", &agent().display().to_string());
    let path = tmp.path().join("pgha.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd, scripts/install-deps.sh)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // It reports unknown keys and bad values as warnings, exiting 0.
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
}

/// The next notification within `within`, if any.
fn next_message(socket: &UnixDatagram, within: Duration) -> Option<String> {
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    None
}

/// Waits (bounded) for a notification containing `what`; the ones before
/// it are returned too, for the failure message.
fn wait_for(socket: &UnixDatagram, what: &str, within: Duration) -> Result<String, Vec<String>> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    while let Some(m) = next_message(socket, deadline.saturating_duration_since(Instant::now())) {
        if m.contains(what) {
            return Ok(m);
        }
        seen.push(m);
    }
    Err(seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_tells_the_service_manager_ready_reloading_and_stopping() {
    pgha_testkit::init_tracing();
    let mut c = TestCluster::new(
        agent(),
        DcsKind::Etcd,
        ClusterOptions {
            nodes: 1,
            ..ClusterOptions::default()
        },
    )
    .await
    .unwrap();
    let dir = c.nodes[0].data_dir.parent().unwrap().to_path_buf();
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    c.nodes[0].agent_env = vec![("NOTIFY_SOCKET".into(), path.display().to_string())];
    c.start_all().unwrap();
    let wait = Duration::from_secs(60);
    wait_for(&socket, "READY=1", wait).unwrap_or_else(|seen| {
        panic!("no READY=1 (got {seen:?})\n{}", c.log(0));
    });
    c.wait_for_primary(wait).await.unwrap();
    // PostgreSQL did not speak for pgha's unit: Debian's is built with
    // systemd support and would say READY=1 and STOPPING=1 if it saw the
    // socket. Nothing more arrived while it started.
    assert_eq!(next_message(&socket, Duration::from_secs(1)), None);

    c.signal_agent(0, Signal::SIGHUP).unwrap();
    let reloading = wait_for(&socket, "RELOADING=1", wait).unwrap();
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    wait_for(&socket, "READY=1", wait).unwrap();

    c.signal_agent(0, Signal::SIGTERM).unwrap();
    wait_for(&socket, "STOPPING=1", wait).unwrap();
    let deadline = Instant::now() + wait;
    while c.agent_exit(0).is_none() {
        assert!(Instant::now() < deadline, "the agent did not stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // PostgreSQL stopped with it: never a STOPPING=1 from the postmaster.
    assert_eq!(next_message(&socket, Duration::from_millis(500)), None);
}

/// `log: {type: json, dir: ...}`: every line every agent (and guard)
/// writes through a failover is one JSON object with Patroni's names, in
/// `<dir>/patroni.log`; the HA decisions carry their rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_in_log_dir_parse_line_by_line_through_a_failover() {
    pgha_testkit::init_tracing();
    let mut c = TestCluster::new(agent(), DcsKind::Etcd, ClusterOptions::default())
        .await
        .unwrap();
    let mut dirs = Vec::new();
    for i in 0..c.nodes.len() {
        let dir = c.nodes[i]
            .data_dir
            .parent()
            .unwrap()
            .join(format!("{}-log", c.nodes[i].name));
        std::fs::create_dir_all(&dir).unwrap();
        if let Some((uid, gid)) = pgha_testkit::cluster::run_as_user().unwrap() {
            nix::unistd::chown(&dir, Some(uid), Some(gid)).unwrap();
        }
        let d = dir.display().to_string();
        c.edit_config(i, |yaml| {
            format!(
                "{yaml}\nlog:\n  type: json\n  dir: {d}\n  static_fields:\n    app: pgha-test\n"
            )
        })
        .unwrap();
        dirs.push(dir);
    }
    c.start_all().unwrap();
    let p = c
        .wait_converged(&[0, 1, 2], Duration::from_secs(90))
        .await
        .unwrap();
    c.kill_node(p);
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.primary().await.is_none_or(|n| n == p) {
        assert!(Instant::now() < deadline, "no failover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.start_agent(p).unwrap();
    c.wait_converged(&[0, 1, 2], Duration::from_secs(90))
        .await
        .unwrap();
    let mut lines = 0;
    let mut decisions = 0;
    let mut promoted = false;
    for dir in &dirs {
        let text = std::fs::read_to_string(dir.join("patroni.log")).unwrap();
        for line in text.lines() {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            for key in ["asctime", "levelname", "message"] {
                assert!(v[key].is_string(), "no {key}: {line}");
            }
            assert_eq!(v["app"], "pgha-test", "{line}");
            decisions += usize::from(v["rule"].is_string());
            promoted |= v["message"].as_str().is_some_and(|m| m.contains("promot"));
            lines += 1;
        }
    }
    eprintln!("{lines} JSON lines, {decisions} HA decisions with their rule");
    assert!(lines > 20 && decisions > 5 && promoted);
}

/// What Prometheus scrapes after a failover: every member's `/metrics`
/// passes `promtool check metrics` (apart from the counter names Patroni
/// chose, which dashboards depend on), and says what happened — one
/// primary, on a new timeline, with its promotion's duration, its lock's
/// time left and its fence guard up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_failover_pass_promtool_and_tell_what_happened() {
    pgha_testkit::init_tracing();
    let mut c = TestCluster::new(agent(), DcsKind::Etcd, ClusterOptions::default())
        .await
        .unwrap();
    c.start_all().unwrap();
    let old = c
        .wait_converged(&[0, 1, 2], Duration::from_secs(90))
        .await
        .unwrap();
    c.kill_node(old);
    let deadline = Instant::now() + Duration::from_secs(60);
    let new = loop {
        if let Some(n) = c.primary().await.filter(|n| *n != old) {
            break n;
        }
        assert!(Instant::now() < deadline, "no failover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    c.start_agent(old).unwrap();
    c.wait_converged(&[0, 1, 2], Duration::from_secs(90))
        .await
        .unwrap();
    let call = Duration::from_secs(5);
    let mut primaries = 0;
    for i in 0..c.nodes.len() {
        let (code, text) = c.api_call(i, "GET", "/metrics", None, call).await.unwrap();
        assert_eq!(code, 200, "{text}");
        let checked = promtool_check_metrics(&text);
        assert!(
            checked.is_empty(),
            "promtool check metrics:\n{checked}\n{text}"
        );
        let value = |name: &str| -> f64 {
            let prefix = format!("{name}{{");
            text.lines()
                .find(|l| l.starts_with(&prefix))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in\n{text}"))
        };
        assert_eq!(value("patroni_postgres_state"), 5.0, "running\n{text}");
        assert_eq!(value("pgha_fence_guard_up"), 1.0, "{text}");
        assert!(value("patroni_postgres_timeline") >= 2.0, "{text}");
        if i == new {
            primaries += 1;
            assert_eq!(value("patroni_primary"), 1.0, "{text}");
            let promotion = value("pgha_last_promotion_seconds");
            assert!(promotion > 0.0 && promotion < 30.0, "{text}");
            let left = value("pgha_leader_lock_seconds_left");
            assert!(left > 0.0 && left <= c.options.ttl as f64, "{text}");
        } else {
            assert_eq!(value("patroni_primary"), 0.0, "{text}");
            assert_eq!(value("pgha_leader_lock_seconds_left"), 0.0, "{text}");
            assert_eq!(value("patroni_postgres_streaming"), 1.0, "{text}");
        }
    }
    assert_eq!(primaries, 1);
}

/// `promtool check metrics` on `text`: its findings, without the lint
/// about the counters Patroni named without `_total` (kept for
/// compatibility); empty when it is clean. promtool comes from Debian's
/// prometheus package (scripts/install-deps.sh).
fn promtool_check_metrics(text: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (scripts/install-deps.sh installs Debian's prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let patronis_counters = [
        "patroni_xlog_location",
        "patroni_xlog_received_location",
        "patroni_xlog_replayed_location",
    ];
    let findings: Vec<&str> = said
        .lines()
        .filter(|l| {
            !(l.contains("counter metrics should have \"_total\" suffix")
                && patronis_counters.iter().any(|c| l.starts_with(c)))
        })
        .collect();
    if findings.is_empty() && !out.status.success() && !said.contains("_total") {
        return format!("promtool failed ({}) saying nothing", out.status);
    }
    findings.join("\n")
}
