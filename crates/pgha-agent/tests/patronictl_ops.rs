//! The real patronictl (PyPI patroni 4.x) operating a running pgha cluster:
//! each command must do what it does on Patroni.

// A panic is how a test fails; the helpers here are part of the tests.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use pgha_testkit::cluster::{ClusterOptions, DcsKind, TestCluster};
use pgha_testkit::patronictl::{DcsSection, Patronictl};
use tokio::time::Instant;

fn agent() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pgha"))
}

fn etcd_hosts(c: &TestCluster) -> String {
    let text = std::fs::read_to_string(c.ctl_config().unwrap()).unwrap();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("hosts: "))
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patronictl_operates_a_pgha_cluster() {
    pgha_testkit::init_tracing();
    let mut c = TestCluster::new(agent(), DcsKind::Etcd, ClusterOptions::default())
        .await
        .unwrap();
    c.start_all().unwrap();
    let p = c
        .wait_converged(&[0, 1, 2], Duration::from_secs(60))
        .await
        .unwrap();
    let ctl = Patronictl::new(
        "/service/",
        &c.scope,
        &DcsSection::Etcd3 {
            hosts: etcd_hosts(&c),
        },
    )
    .unwrap();
    let scope = c.scope.clone();
    let name = |i: usize| c.nodes[i].name.clone();

    // list
    let rows = ctl.list_json().await.unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows.iter().filter(|r| r["Role"] == "Leader").count(), 1);
    assert_eq!(
        rows.iter().filter(|r| r["State"] == "streaming").count(),
        2,
        "{rows:#?}"
    );

    // switchover
    let cand = (p + 1) % 3;
    let out = ctl
        .run(&[
            "switchover",
            &scope,
            "--leader",
            &name(p),
            "--candidate",
            &name(cand),
            "--force",
        ])
        .await
        .unwrap();
    assert!(
        out.contains(&format!("Successfully switched over to \"{}\"", name(cand))),
        "{out}"
    );
    assert_eq!(
        c.wait_converged(&[0, 1, 2], Duration::from_secs(60))
            .await
            .unwrap(),
        cand
    );
    let p = cand;

    // history shows the switch
    let history: serde_json::Value =
        serde_json::from_str(&ctl.run(&["history", "-f", "json"]).await.unwrap()).unwrap();
    assert_eq!(
        history.as_array().unwrap().last().unwrap()["New Leader"],
        name(p),
        "{history}"
    );

    // restart one member
    let r = (p + 1) % 3;
    let before = c.postmaster_pid(r).unwrap();
    let out = ctl
        .run(&["restart", &scope, &name(r), "--force"])
        .await
        .unwrap();
    assert!(
        out.contains(&format!("Success: restart on member {}", name(r))),
        "{out}"
    );
    assert_ne!(c.postmaster_pid(r), Some(before));

    // reload everybody
    let out = ctl.run(&["reload", &scope, "--force"]).await.unwrap();
    for i in 0..3 {
        assert!(
            out.contains(&format!("Reload request received for member {}", name(i))),
            "{out}"
        );
    }

    // edit-config: a reloadable parameter reaches every node
    ctl.run(&["edit-config", &scope, "--force", "-p", "work_mem=9MB"])
        .await
        .unwrap();
    for i in 0..3 {
        c.wait_sql(i, "SHOW work_mem", Duration::from_secs(30), |v| {
            v == ["9MB"]
        })
        .await
        .unwrap();
    }

    // pause / resume, waiting for every member to confirm
    let out = ctl.run(&["pause", &scope, "--wait"]).await.unwrap();
    assert!(
        out.contains("Success: cluster management is paused"),
        "{out}"
    );
    let rows = ctl.run(&["list", &scope]).await.unwrap();
    assert!(rows.contains("Maintenance mode: on"), "{rows}");
    let out = ctl.run(&["resume", &scope, "--wait"]).await.unwrap();
    assert!(
        out.contains("Success: cluster management is resumed"),
        "{out}"
    );

    // failover to a chosen candidate
    let cand = (p + 2) % 3;
    let out = ctl
        .run(&["failover", &scope, "--candidate", &name(cand), "--force"])
        .await
        .unwrap();
    assert!(
        out.contains(&format!("Successfully failed over to \"{}\"", name(cand))),
        "{out}"
    );
    assert_eq!(
        c.wait_converged(&[0, 1, 2], Duration::from_secs(60))
            .await
            .unwrap(),
        cand
    );

    // patronictl's own view agrees at the end
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = ctl.list_json().await.unwrap();
        if rows
            .iter()
            .any(|r| r["Member"] == name(cand) && r["Role"] == "Leader")
        {
            break;
        }
        assert!(Instant::now() < deadline, "{rows:#?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    c.stop_agent(0).await.unwrap();
}
