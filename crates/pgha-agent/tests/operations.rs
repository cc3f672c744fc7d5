//! End to end, on real etcd and PostgreSQL 15: the operator surface through
//! pgha's REST API — switchover (now and scheduled), failover to a chosen
//! candidate, restart, reload (SIGHUP and POST), reinitialize, pause and
//! resume, dynamic configuration changes, callbacks and a pre_promote veto.

// A panic is how a test fails; the helpers here are part of the tests.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;
use pgha_testkit::cluster::{ClusterOptions, DcsKind, TestCluster};
use tokio::time::Instant;

fn agent() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pgha"))
}

const BOOT: Duration = Duration::from_secs(60);
const CALL: Duration = Duration::from_secs(60);

async fn cluster_with(edit: impl Fn(usize, String) -> String) -> (TestCluster, usize) {
    pgha_testkit::init_tracing();
    let mut c = TestCluster::new(agent(), DcsKind::Etcd, ClusterOptions::default())
        .await
        .unwrap();
    for i in 0..3 {
        c.edit_config(i, |y| edit(i, y)).unwrap();
    }
    c.start_all().unwrap();
    let p = c.wait_converged(&[0, 1, 2], BOOT).await.unwrap();
    (c, p)
}

async fn cluster() -> (TestCluster, usize) {
    cluster_with(|_, y| y).await
}

fn name(c: &TestCluster, i: usize) -> String {
    c.nodes[i].name.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_to_a_candidate_hands_over_cleanly() {
    let (c, old) = cluster().await;
    c.sql(
        old,
        "CREATE TABLE t(id int); INSERT INTO t SELECT generate_series(1, 100)",
    )
    .await
    .unwrap();
    let cand = (old + 1) % 3;
    let body = format!(
        r#"{{"leader": "{}", "candidate": "{}"}}"#,
        name(&c, old),
        name(&c, cand)
    );
    let started = Instant::now();
    let (code, text) = c
        .api_call(old, "POST", "/switchover", Some(&body), CALL)
        .await
        .unwrap();
    assert_eq!(code, 200, "{text}");
    assert_eq!(
        text,
        format!("Successfully switched over to \"{}\"", name(&c, cand))
    );
    eprintln!("switchover answered after {:?}", started.elapsed());
    let p = c
        .wait_converged(&[0, 1, 2], Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(p, cand);
    assert_eq!(
        c.sql(cand, "SELECT count(*) FROM t").await.unwrap(),
        ["100"]
    );
    // The request is gone, and the old leader ran its checkpoint and stopped cleanly.
    let (_, cluster) = c.api(cand, "/cluster").await.unwrap();
    assert!(cluster.get("scheduled_switchover").is_none());
    assert!(c.log(old).contains("switching over to"), "{}", c.log(old));
}

/// A promotion takes a timeline no member used. PostgreSQL would take one
/// past its own; when another member already promoted to that number
/// (recorded in the `history` key here, as a member that promoted and
/// lost the lock would have left it), a replica of that member could then
/// never follow the new leader, nor be seen to have diverged. The new
/// leader skips the numbers used, its replicas follow it, and the
/// `history` key becomes its own lineage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_takes_a_timeline_no_member_used() {
    let (c, old) = cluster().await;
    let used = r#"[[1,50331648,"no recovery target specified","2026-12-01T10:00:00+00:00","ghost"],[2,67108864,"no recovery target specified","2026-12-01T10:05:00+00:00","ghost"]]"#;
    c.etcdctl(&["put", &c.key_path("history"), used])
        .await
        .unwrap();
    let cand = (old + 1) % 3;
    let body = format!(
        r#"{{"leader": "{}", "candidate": "{}"}}"#,
        name(&c, old),
        name(&c, cand)
    );
    let (code, text) = c
        .api_call(old, "POST", "/switchover", Some(&body), CALL)
        .await
        .unwrap();
    assert_eq!(code, 200, "{text}");
    let p = c
        .wait_converged(&[0, 1, 2], Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(p, cand);
    let tl = c
        .sql(
            cand,
            "SELECT timeline_id::text FROM pg_control_checkpoint()",
        )
        .await
        .unwrap();
    assert_eq!(
        tl,
        ["4"],
        "timelines 2 and 3 are skipped (the key's newest is 2, ending 3)"
    );
    let history = c
        .etcdctl(&["get", &c.key_path("history"), "--print-value-only"])
        .await
        .unwrap();
    let entries: serde_json::Value = serde_json::from_str(history.trim()).unwrap();
    assert_eq!(entries.as_array().map(Vec::len), Some(1), "{entries}");
    assert_eq!(entries[0][0], 1, "{entries}");
    assert_eq!(entries[0][4], name(&c, cand), "{entries}");
}

/// `GET /patroni` reads PostgreSQL's WAL positions when asked, not as of
/// the last cycle: peers racing for the lock compare them, and in quorum
/// mode a position up to `loop_wait` old can hide acknowledged commits a
/// voter holds (found by the simulator, seed 59339).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_peers_race_on_is_read_when_asked() {
    pgha_testkit::init_tracing();
    let options = ClusterOptions {
        ttl: 30,
        loop_wait: 10,
        retry_timeout: 10,
        ..ClusterOptions::default()
    };
    let mut c = TestCluster::new(agent(), DcsKind::Etcd, options)
        .await
        .unwrap();
    c.start_all().unwrap();
    let p = c.wait_converged(&[0, 1, 2], BOOT).await.unwrap();
    let r = (p + 1) % 3;
    c.sql(p, "CREATE TABLE w(i int)").await.unwrap();
    for round in 0..3 {
        c.sql(p, "INSERT INTO w SELECT generate_series(1, 10000)")
            .await
            .unwrap();
        let lsn = c
            .sql(p, "SELECT (pg_current_wal_lsn() - '0/0')::bigint::text")
            .await
            .unwrap()[0]
            .parse::<i64>()
            .unwrap();
        // Well within a loop_wait of 10 s: only a live read can see it.
        let until = Instant::now() + Duration::from_secs(3);
        let mut seen = 0;
        while Instant::now() < until {
            let (_, s) = c.api(r, "/patroni").await.unwrap();
            seen = s["xlog"]["received_location"].as_i64().unwrap_or(0);
            if seen >= lsn {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            seen >= lsn,
            "round {round}: GET /patroni on the replica says {seen}, the primary wrote up to {lsn}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_switchover_happens_at_its_time_and_can_be_cancelled() {
    let (c, old) = cluster().await;
    let at =
        |secs: i64| (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(secs)).to_string();
    // Cancelled before its time: nothing happens.
    let body = format!(
        r#"{{"leader": "{}", "scheduled_at": "{}"}}"#,
        name(&c, old),
        at(3600)
    );
    assert_eq!(
        c.api_call(old, "POST", "/switchover", Some(&body), CALL)
            .await
            .unwrap()
            .0,
        202
    );
    let (_, cl) = c.api(old, "/cluster").await.unwrap();
    assert!(cl.get("scheduled_switchover").is_some(), "{cl}");
    assert_eq!(
        c.api_call(old, "DELETE", "/switchover", None, CALL)
            .await
            .unwrap(),
        (200, "scheduled switchover deleted".into())
    );
    // Scheduled 3 s ahead: it happens then, not before.
    let body = format!(
        r#"{{"leader": "{}", "scheduled_at": "{}"}}"#,
        name(&c, old),
        at(3)
    );
    let asked = Instant::now();
    assert_eq!(
        c.api_call(old, "POST", "/switchover", Some(&body), CALL)
            .await
            .unwrap(),
        (202, "Switchover scheduled".into())
    );
    assert_eq!(c.primary().await, Some(old), "not before its time");
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if let Some(p) = c.primary().await
            && p != old
        {
            assert!(
                asked.elapsed() >= Duration::from_secs(2),
                "switched after {:?}",
                asked.elapsed()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the scheduled switchover did not happen\n{}",
            c.logs_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    c.wait_converged(&[0, 1, 2], Duration::from_secs(60))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_a_chosen_candidate() {
    let (c, old) = cluster().await;
    let cand = (old + 2) % 3;
    let body = format!(r#"{{"candidate": "{}"}}"#, name(&c, cand));
    let (code, text) = c
        .api_call(cand, "POST", "/failover", Some(&body), CALL)
        .await
        .unwrap();
    assert_eq!(code, 200, "{text}");
    assert_eq!(
        c.wait_converged(&[0, 1, 2], Duration::from_secs(60))
            .await
            .unwrap(),
        cand
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_reload_and_dynamic_configuration() {
    let (c, p) = cluster().await;
    let r = (p + 1) % 3;

    // A reloadable parameter through PATCH /config reaches every node.
    let (code, body) = c
        .api_call(
            p,
            "PATCH",
            "/config",
            Some(r#"{"postgresql": {"parameters": {"work_mem": "7MB"}}}"#),
            CALL,
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    for i in 0..3 {
        c.wait_sql(i, "SHOW work_mem", Duration::from_secs(30), |v| {
            v == ["7MB"]
        })
        .await
        .unwrap();
    }

    // One that needs a restart: reported as pending, until a restart.
    c.api_call(
        p,
        "PATCH",
        "/config",
        Some(r#"{"postgresql": {"parameters": {"max_connections": 60}}}"#),
        CALL,
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while c
        .api(r, "/patroni")
        .await
        .map(|(_, s)| s["pending_restart"] != true)
        .unwrap_or(true)
    {
        assert!(
            Instant::now() < deadline,
            "pending_restart never reported\n{}",
            c.logs_tail(10)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let before = c.postmaster_pid(r).unwrap();
    let (code, text) = c
        .api_call(
            r,
            "POST",
            "/restart",
            Some(r#"{"restart_pending": true}"#),
            CALL,
        )
        .await
        .unwrap();
    assert_eq!((code, text.as_str()), (200, "restarted successfully"));
    assert_ne!(c.postmaster_pid(r), Some(before));
    assert_eq!(c.sql(r, "SHOW max_connections").await.unwrap(), ["60"]);
    // A restart whose condition does not hold is refused, saying why.
    let (code, text) = c
        .api_call(r, "POST", "/restart", Some(r#"{"role": "primary"}"#), CALL)
        .await
        .unwrap();
    assert_eq!(code, 503, "{text}");
    assert!(
        text.contains("restart conditions are not satisfied"),
        "{text}"
    );

    // The node's own file, re-read on SIGHUP.
    c.edit_config(r, |y| {
        y.replace(
            "    unix_socket_directories:",
            "    maintenance_work_mem: 77MB\n    unix_socket_directories:",
        )
    })
    .unwrap();
    c.signal_agent(r, Signal::SIGHUP).unwrap();
    c.wait_sql(
        r,
        "SHOW maintenance_work_mem",
        Duration::from_secs(30),
        |v| v == ["77MB"],
    )
    .await
    .unwrap();
    // ... and on POST /reload.
    c.edit_config(r, |y| {
        y.replace("maintenance_work_mem: 77MB", "maintenance_work_mem: 78MB")
    })
    .unwrap();
    assert_eq!(
        c.api_call(r, "POST", "/reload", None, CALL).await.unwrap(),
        (202, "reload scheduled".into())
    );
    c.wait_sql(
        r,
        "SHOW maintenance_work_mem",
        Duration::from_secs(30),
        |v| v == ["78MB"],
    )
    .await
    .unwrap();
    // A broken file is refused and the running configuration kept.
    c.edit_config(r, |y| y.replace("loop_wait: 1", "loop_wait: [broken"))
        .unwrap();
    c.signal_agent(r, Signal::SIGHUP).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        c.log(r)
            .contains("reload refused, keeping the running configuration"),
        "{}",
        c.logs_tail(10)
    );
    assert_eq!(
        c.sql(r, "SHOW maintenance_work_mem").await.unwrap(),
        ["78MB"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reinitialize_reclones_a_replica() {
    let (c, p) = cluster().await;
    c.sql(
        p,
        "CREATE TABLE t(id int); INSERT INTO t SELECT generate_series(1, 100)",
    )
    .await
    .unwrap();
    let r = (p + 1) % 3;
    c.wait_sql(r, "SELECT count(*) FROM t", Duration::from_secs(30), |v| {
        v == ["100"]
    })
    .await
    .unwrap();
    let before = c.postmaster_pid(r).unwrap();
    let (code, text) = c
        .api_call(
            r,
            "POST",
            "/reinitialize",
            Some(r#"{"from_leader": true}"#),
            CALL,
        )
        .await
        .unwrap();
    assert_eq!((code, text.as_str()), (200, "reinitialize started"));
    let (code, text) = c
        .api_call(p, "POST", "/reinitialize", None, CALL)
        .await
        .unwrap();
    assert_eq!(code, 503, "{text}");
    assert!(text.contains("I am the leader"), "{text}");
    c.wait_converged(&[0, 1, 2], Duration::from_secs(60))
        .await
        .unwrap();
    assert_ne!(c.postmaster_pid(r), Some(before));
    assert_eq!(c.sql(r, "SELECT count(*) FROM t").await.unwrap(), ["100"]);
    assert!(c.log(r).contains("reinitializing from"), "{}", c.log(r));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_automatic_action_and_resume_restores_it() {
    let (mut c, p) = cluster().await;
    let (code, _) = c
        .api_call(p, "PATCH", "/config", Some(r#"{"pause": true}"#), CALL)
        .await
        .unwrap();
    assert_eq!(code, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    for i in 0..3 {
        while c
            .api(i, "/patroni")
            .await
            .map(|(_, s)| s["pause"] != true)
            .unwrap_or(true)
        {
            assert!(
                Instant::now() < deadline,
                "node{} never reported pause",
                i + 1
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert_eq!(c.api(p, "/liveness").await.unwrap().0, 200);
    // A replica's crashed PostgreSQL is left alone while paused.
    let r = (p + 1) % 3;
    c.kill_postmaster(r).unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(c.postmaster_pid(r).is_none(), "restarted during pause");
    // The leader's agent stops: PostgreSQL keeps running and nobody takes over.
    c.stop_agent(p).await.unwrap();
    assert!(
        c.postmaster_pid(p).is_some(),
        "paused: PostgreSQL must keep running"
    );
    tokio::time::sleep(Duration::from_secs(c.options.ttl + 3)).await;
    let others: Vec<usize> = (0..3).filter(|&i| i != p).collect();
    for &i in &others {
        assert_ne!(
            c.api(i, "/primary").await.unwrap().0,
            200,
            "node{} promoted during pause",
            i + 1
        );
    }
    // Back to normal.
    c.start_agent(p).unwrap();
    let (code, _) = c
        .api_call(
            others[0],
            "PATCH",
            "/config",
            Some(r#"{"pause": null}"#),
            CALL,
        )
        .await
        .unwrap();
    assert_eq!(code, 200);
    c.wait_converged(&[0, 1, 2], Duration::from_secs(60))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_run_on_role_changes_and_pre_promote_can_veto() {
    let (c, old) = cluster_with(|i, y| {
        let dir = Path::new(y.lines().find_map(|l| l.trim().strip_prefix("data_dir: ")).unwrap()).parent().unwrap().to_path_buf();
        let log = dir.join("callbacks.log");
        let script = dir.join("callback.sh");
        std::fs::write(&script, format!("#!/bin/sh\necho \"$(basename $0) $*\" >> {}\n", log.display())).unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let veto = if i == 2 { "  pre_promote: /bin/false\n" } else { "" };
        y.replace(
            "  pg_hba:\n",
            &format!("  callbacks:\n    on_role_change: {s}\n    on_start: {s}\n    on_stop: {s}\n{veto}  pg_hba:\n", s = script.display()),
        )
    })
    .await;
    let log = c.dir.path().join("callbacks.log");
    let scope = c.scope.clone();
    // node3 refuses to be promoted: a switchover to it fails and node3 withdraws.
    if old != 2 {
        let body = format!(r#"{{"leader": "{}", "candidate": "node3"}}"#, name(&c, old));
        let (code, text) = c
            .api_call(old, "POST", "/switchover", Some(&body), CALL)
            .await
            .unwrap();
        eprintln!("switchover to the vetoing node: {code} {text}");
        let p = c
            .wait_converged(&[0, 1, 2], Duration::from_secs(60))
            .await
            .unwrap();
        assert_ne!(p, 2, "node3's pre_promote vetoes every promotion");
        assert!(
            c.log(2).contains("pre_promote vetoed the promotion"),
            "{}",
            c.log(2)
        );
    }
    let p = c.primary().await.unwrap();
    let cand = (0..3).find(|&i| i != p && i != 2).unwrap();
    let body = format!(
        r#"{{"leader": "{}", "candidate": "{}"}}"#,
        name(&c, p),
        name(&c, cand)
    );
    assert_eq!(
        c.api_call(p, "POST", "/switchover", Some(&body), CALL)
            .await
            .unwrap()
            .0,
        200
    );
    c.wait_converged(&[0, 1, 2], Duration::from_secs(60))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let expected = format!("callback.sh on_role_change primary {scope}");
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains(&expected)
            && text.contains(&format!("callback.sh on_stop primary {scope}"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "callbacks seen:\n{text}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
