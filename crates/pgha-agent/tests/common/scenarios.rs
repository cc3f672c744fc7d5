//! The pghactl scenarios for commands that act through the REST API, run
//! against any cluster that speaks Patroni's protocols: the real Patroni
//! (the reference) and pgha. Each asserts what patronictl prints and what
//! the cluster does.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use pgha_core::dcs::Dcs;
use pgha_core::model::{Cluster, MemberData, PgState, Role};
use serde_json::Value;
use tokio::time::Instant;

use super::{pghactl, pghactl_env};

/// The PostgreSQL superuser's password in both kinds of test clusters.
pub const SUPERUSER_PASSWORD: &str = "su-pass";

/// How long a cluster may take to settle after a change.
pub const HEALTHY: Duration = Duration::from_secs(45);

/// A running cluster pghactl can operate.
pub trait Operated {
    fn scope(&self) -> &str;
    /// The members' names.
    fn names(&self) -> Vec<String>;
    /// A pghactl configuration (with REST credentials when the cluster needs them).
    fn ctl_config(&self) -> PathBuf;
    /// The same without credentials, when the REST API requires some.
    fn ctl_config_without_credentials(&self) -> Option<PathBuf>;
    /// A DCS client for the test's own reads and writes.
    fn dcs(&self) -> &Arc<dyn Dcs>;
    /// The nodes' recent log lines, for failure messages.
    fn logs(&self) -> String;
}

pub async fn load(t: &impl Operated) -> Cluster {
    t.dcs().load().await.expect("load the cluster from the DCS")
}

/// The running leader's name.
pub async fn leader(t: &impl Operated) -> Option<String> {
    let c = t.dcs().load().await.ok()?;
    let m = c.leader_member()?;
    m.data.is_running().then(|| m.name.clone())
}

/// The leader, when it runs, every other member in `names` streams from
/// it on its timeline, and no switchover is pending.
fn healthy_leader(c: &Cluster, names: &[String]) -> Option<String> {
    let l = c.leader_member().filter(|m| m.data.is_running())?;
    let streaming = names.iter().filter(|n| **n != l.name).all(|n| {
        c.member(n).is_some_and(|m| {
            m.data.replication_state.as_deref() == Some("streaming")
                && m.data.timeline == l.data.timeline
        })
    });
    // Patroni leaves `{}` in the failover key when a switchover is done.
    let settled = c.failover.as_ref().is_none_or(|f| f.value.is_empty());
    (streaming && settled).then(|| l.name.clone())
}

/// Waits until a leader runs, every other node streams from it on its
/// timeline, and no switchover is pending; returns the leader.
pub async fn wait_healthy(t: &impl Operated, within: Duration) -> anyhow::Result<String> {
    let deadline = Instant::now() + within;
    let names = t.names();
    loop {
        if let Some(leader) = t
            .dcs()
            .load()
            .await
            .ok()
            .and_then(|c| healthy_leader(&c, &names))
        {
            return Ok(leader);
        }
        if Instant::now() >= deadline {
            bail!("cluster not healthy within {within:?}\n{}", t.logs());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until `check` accepts the DCS snapshot.
pub async fn wait_for(
    t: &impl Operated,
    what: &str,
    within: Duration,
    check: impl Fn(&Cluster) -> bool,
) -> Cluster {
    let deadline = Instant::now() + within;
    loop {
        if let Some(c) = t.dcs().load().await.ok().filter(|c| check(c)) {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?}\n{}",
            t.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn others(t: &impl Operated, leader: &str) -> Vec<String> {
    t.names().into_iter().filter(|n| n != leader).collect()
}

/// Interactive and forced switchovers and failovers, refused mistakes, and
/// a scheduled switchover flushed again.
pub async fn switchover_and_failover(t: &impl Operated) {
    let cfg = t.ctl_config();
    let scope = t.scope().to_string();
    let leader = wait_healthy(t, HEALTHY).await.unwrap();
    let rest = others(t, &leader);

    // Interactive, answered through a pipe: primary (default), candidate,
    // when (default now), confirmation.
    let out = pghactl(&cfg, &["switchover"], &format!("\n{}\n\ny\n", rest[0]))
        .await
        .ok();
    assert!(
        out.stdout
            .starts_with("Current cluster topology\n+ Cluster: "),
        "{out}"
    );
    assert!(
        out.stdout.contains(&format!(
            "Primary [{leader}]: Candidate ['{}', '{}'] []: When should the switchover take place (e.g. ",
            rest[0], rest[1]
        )),
        "{out}"
    );
    assert!(
        out.stdout.contains(&format!(
            "Are you sure you want to switchover cluster {scope}, demoting current leader {leader}? [y/N]: "
        )),
        "{out}"
    );
    assert!(
        out.stdout
            .contains(&format!("Successfully switched over to \"{}\"", rest[0])),
        "{out}"
    );
    let last_table = out.stdout.rsplit("+ Cluster: ").next().unwrap_or_default();
    assert!(
        last_table
            .lines()
            .any(|l| l.starts_with(&format!("| {:<6} |", rest[0])) && l.contains("| Leader ")),
        "the table after shows the new leader: {out}"
    );
    assert_eq!(leader_now(t).await, rest[0]);

    // Mistakes are refused, naming the member, before anything is sent.
    let out = pghactl(&cfg, &["switchover", "--leader", &leader, "--force"], "")
        .await
        .failed();
    assert!(
        out.stderr.contains(&format!(
            "Member {leader} is not the leader of cluster {scope}"
        )),
        "{out}"
    );
    let out = pghactl(&cfg, &["failover", "--candidate", "node9", "--force"], "")
        .await
        .failed();
    assert!(
        out.stderr
            .contains(&format!("Member node9 does not exist in cluster {scope}")),
        "{out}"
    );
    let out = pghactl(
        &cfg,
        &["switchover", "--candidate", &rest[0], "--force"],
        "",
    )
    .await
    .failed();
    assert!(
        out.stderr
            .contains(&format!("Member {} is already the leader", rest[0])),
        "{out}"
    );
    // "no" and the end of the input both abort.
    let out = pghactl(&cfg, &["failover", "--candidate", &rest[1]], "n\n")
        .await
        .failed();
    assert!(out.stderr.contains("Error: Aborting failover"), "{out}");
    let out = pghactl(&cfg, &["failover"], "").await.failed();
    assert!(out.stderr.contains("Aborted!"), "{out}");
    assert_eq!(leader_now(t).await, rest[0]);

    // A failover to a named member, without questions, once the old
    // leader has rejoined.
    wait_healthy(t, HEALTHY).await.unwrap();
    let out = pghactl(&cfg, &["failover", "--candidate", &rest[1], "--force"], "")
        .await
        .ok();
    assert!(
        out.stdout
            .contains(&format!("Successfully failed over to \"{}\"", rest[1])),
        "{out}"
    );
    assert_eq!(leader_now(t).await, rest[1]);

    // A scheduled switchover is recorded (and shown) until flushed.
    let out = pghactl(
        &cfg,
        &[
            "switchover",
            "--candidate",
            &leader,
            "--scheduled",
            "2099-01-01T12:00+00:00",
            "--force",
        ],
        "",
    )
    .await
    .ok();
    assert!(out.stdout.contains("Switchover scheduled\n"), "{out}");
    assert!(
        out.stdout
            .contains(" Switchover scheduled at: 2099-01-01T12:00:00+00:00\n"),
        "{out}"
    );
    let f = load(t).await.failover.unwrap().value;
    assert_eq!(
        f.scheduled_at().unwrap().map(|t| t.to_string()).as_deref(),
        Some("2099-01-01T12:00:00Z")
    );
    assert_eq!(f.member.as_deref(), Some(leader.as_str()));
    let out = pghactl(&cfg, &["flush", &scope, "switchover"], "")
        .await
        .ok();
    assert_eq!(out.stdout, "Success: scheduled switchover deleted\n");
    let out = pghactl(&cfg, &["flush", &scope, "switchover"], "")
        .await
        .ok();
    assert_eq!(out.stdout, "No pending scheduled switchover\n");
}

/// The leader once the DCS shows one running (a switchover has just been
/// answered; the member key may lag a loop behind).
async fn leader_now(t: &impl Operated) -> String {
    let c = wait_for(t, "a running leader", Duration::from_secs(10), |c| {
        c.leader_member().is_some_and(|m| m.data.is_running())
    })
    .await;
    c.leader_name().unwrap_or_default().to_string()
}

/// Restarts (forced, interactive by role, scheduled then flushed), reload,
/// reinit with --wait, and members that are unknown, have the wrong role,
/// or do not answer.
pub async fn restart_reload_reinit_and_flush(t: &impl Operated) {
    let cfg = t.ctl_config();
    let scope = t.scope().to_string();
    let leader = wait_healthy(t, HEALTHY).await.unwrap();
    let rest = others(t, &leader);

    // Restart one replica, no questions.
    let out = pghactl(&cfg, &["restart", &scope, &rest[0], "--force"], "")
        .await
        .ok();
    assert!(
        out.stdout
            .ends_with(&format!("Success: restart on member {}\n", rest[0])),
        "{out}"
    );

    // Restart by role, answering patronictl's three questions.
    let out = pghactl(&cfg, &["restart", &scope, "--role", "replica"], "\ny\n\n")
        .await
        .ok();
    assert!(
        out.stdout
            .contains("When should the restart take place (e.g. "),
        "{out}"
    );
    assert!(
        out.stdout.contains(&format!(
            "Are you sure you want to restart members {}, {}? [y/N]: ",
            rest[0], rest[1]
        )),
        "{out}"
    );
    assert!(
        out.stdout
            .contains("Restart if the PostgreSQL version is less than provided (e.g. 9.5.2)  []: "),
        "{out}"
    );
    for r in &rest {
        assert!(
            out.stdout
                .contains(&format!("Success: restart on member {r}\n")),
            "{out}"
        );
    }

    // A scheduled restart shows in the list until flushed.
    let out = pghactl(
        &cfg,
        &[
            "restart",
            &scope,
            &rest[1],
            "--scheduled",
            "2099-01-01T10:00+00:00",
            "--pg-version",
            "16.1",
            "--force",
        ],
        "",
    )
    .await
    .ok();
    assert!(
        out.stdout.ends_with(&format!(
            "Success: restart scheduled on member {}\n",
            rest[1]
        )),
        "{out}"
    );
    wait_for(
        t,
        "the scheduled restart in the member key",
        Duration::from_secs(10),
        |c| {
            c.member(&rest[1])
                .is_some_and(|m| m.data.scheduled_restart.is_some())
        },
    )
    .await;
    let rows: Value =
        serde_json::from_str(&pghactl(&cfg, &["list", "-f", "json"], "").await.ok().stdout)
            .unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["Member"] == rest[1].as_str())
        .unwrap()
        .clone();
    let shown = row["Scheduled restart"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        shown.starts_with("2099-01-01T10:00:00") && shown.ends_with(" if version < 16.1"),
        "{rows}"
    );
    let out = pghactl(&cfg, &["flush", &scope, &rest[1], "restart", "--force"], "")
        .await
        .ok();
    assert!(
        out.stdout.ends_with(&format!(
            "Success: flush scheduled restart for member {}\n",
            rest[1]
        )),
        "{out}"
    );

    // Reload everyone.
    let loop_wait = load(t)
        .await
        .dynamic_config()
        .timing()
        .0
        .loop_wait
        .as_secs();
    let out = pghactl(&cfg, &["reload", &scope, "--force"], "").await.ok();
    for n in t.names() {
        assert!(
            out.stdout.contains(&format!(
                "Reload request received for member {n} and will be processed within {loop_wait} seconds\n"
            )),
            "{out}"
        );
    }

    // Unknown members and the wrong role are refused, naming the member.
    let out = pghactl(&cfg, &["reload", &scope, "node9", "--force"], "")
        .await
        .failed();
    assert!(
        out.stderr
            .contains(&format!("node9 is not a member of cluster {scope}")),
        "{out}"
    );
    let out = pghactl(&cfg, &["reinit", &scope, &leader, "--force"], "")
        .await
        .failed();
    assert!(
        out.stderr.contains(&format!(
            "No 'replica' among provided members: {leader} is the leader"
        )),
        "{out}"
    );

    // Rebuild a replica and wait for it.
    let out = pghactl(&cfg, &["reinit", &scope, &rest[0], "--wait", "--force"], "")
        .await
        .ok();
    assert!(
        out.stdout.ends_with(&format!(
            "Success: reinitialize for member {0}\nWaiting for reinitialize to complete on: {0}\nReinitialize is completed on: {0}\n",
            rest[0]
        )),
        "{out}"
    );
    wait_healthy(t, HEALTHY).await.unwrap();

    // A member whose REST API does not answer is named, and the others
    // are still served.
    let closed = pgha_testkit::ports::free_port().unwrap();
    t.dcs()
        .touch_member(&MemberData {
            conn_url: Some("postgres://127.0.0.1:1/postgres".into()),
            api_url: Some(format!("http://127.0.0.1:{closed}/patroni")),
            state: Some(PgState::Running),
            role: Some(Role::Replica),
            ..Default::default()
        })
        .await
        .unwrap();
    let ghost = t.dcs().member_name().to_string();
    let out = pghactl(&cfg, &["reload", &scope, "--force"], "")
        .await
        .failed();
    assert!(
        out.stdout.contains(&format!(
            "Failed: reload for member {ghost}: http://127.0.0.1:{closed}/reload is unreachable"
        )),
        "{out}"
    );
    assert!(
        out.stdout
            .contains(&format!("Reload request received for member {leader} ")),
        "{out}"
    );
    let out = pghactl(&cfg, &["version", &scope], "").await.ok();
    assert!(
        out.stdout.contains(&format!("{leader}: Patroni 4."))
            && out.stdout.contains(&format!(
                " PostgreSQL {}.",
                pgha_testkit::pg_major_version()
            )),
        "{out}"
    );
    assert!(
        out.stdout
            .contains(&format!("{ghost}: failed to get version: ")),
        "{out}"
    );
}

/// Maintenance mode on and off (waiting for every member), REST
/// credentials, and a parameter set with edit-config read back with query.
pub async fn pause_resume_credentials_and_sql(t: &impl Operated) {
    let cfg = t.ctl_config();
    wait_healthy(t, HEALTHY).await.unwrap();

    let out = pghactl(&cfg, &["pause", "--wait"], "").await.ok();
    assert_eq!(
        out.stdout,
        "'pause' request sent, waiting until it is recognized by all nodes\nSuccess: cluster management is paused\n"
    );
    let c = load(t).await;
    assert!(c.dynamic_config().pause());
    assert!(
        c.members.iter().all(|m| m.data.pause == Some(true)),
        "{:?}",
        c.members
    );
    assert!(
        pghactl(&cfg, &["list"], "")
            .await
            .ok()
            .stdout
            .ends_with(" Maintenance mode: on\n")
    );
    let out = pghactl(&cfg, &["pause"], "").await.failed();
    assert!(out.stderr.contains("Cluster is already paused"), "{out}");
    let out = pghactl(
        &cfg,
        &["switchover", "--scheduled", "2099-01-01T10:00Z", "--force"],
        "",
    )
    .await
    .failed();
    assert!(
        out.stderr
            .contains("Can't schedule switchover in the paused state"),
        "{out}"
    );
    let out = pghactl(&cfg, &["resume", "--wait"], "").await.ok();
    assert!(
        out.stdout
            .ends_with("Success: cluster management is resumed\n"),
        "{out}"
    );
    assert!(!load(t).await.dynamic_config().pause());

    // Without credentials the REST API refuses, and pghactl says what it
    // answered; credentials from PATRONI_CTL_USERNAME/PASSWORD work.
    if let Some(noauth) = t.ctl_config_without_credentials() {
        let out = pghactl(&noauth, &["pause"], "").await.failed();
        assert!(
            out.stdout
                .starts_with("Failed: pause cluster management status code=401"),
            "{out}"
        );
        let env = [
            ("PATRONI_CTL_USERNAME", super::patroni_cluster::API_USER),
            ("PATRONI_CTL_PASSWORD", super::patroni_cluster::API_PASSWORD),
        ];
        pghactl_env(&noauth, &["pause"], "", &env).await.ok();
        pghactl_env(&noauth, &["resume"], "", &env).await.ok();
    }

    // A parameter set with edit-config reaches PostgreSQL; query reads it.
    pghactl(
        &cfg,
        &["edit-config", "-p", "work_mem=8MB", "--force", "-q"],
        "",
    )
    .await
    .ok();
    let pw = [("PGPASSWORD", SUPERUSER_PASSWORD)];
    let mut shown = String::new();
    for _ in 0..60 {
        shown = pghactl_env(
            &cfg,
            &[
                "query",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                "SHOW work_mem",
            ],
            "",
            &pw,
        )
        .await
        .ok()
        .stdout;
        if shown == "work_mem\n8MB\n" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(shown, "work_mem\n8MB\n");
    let out = pghactl(
        &cfg,
        &[
            "query",
            "-U",
            "postgres",
            "--password",
            "-r",
            "replica",
            "--format",
            "json",
            "-c",
            "SELECT pg_is_in_recovery() AS r, 1 AS n, NULL AS x",
        ],
        &format!("{SUPERUSER_PASSWORD}\n"),
    )
    .await
    .ok();
    assert_eq!(out.stdout, "[{\"r\": true, \"n\": 1, \"x\": null}]\n");
    assert_eq!(out.stderr, "Password: ");
}

/// Synchronous replication turned on with `pghactl edit-config`, in
/// `true` then in quorum mode: the cluster's own `sync` key (written by
/// Patroni, or by pgha) is read by pghactl, whose `list` shows the
/// standbys it names as `Sync Standby` / `Quorum Standby`; turned off
/// again, the key goes.
pub async fn synchronous_mode_roles(t: &impl Operated) {
    wait_healthy(t, HEALTHY).await.expect("a healthy cluster");
    let ctl = t.ctl_config();
    for (value, role) in [("on", "Sync Standby"), ("quorum", "Quorum Standby")] {
        let set = format!("synchronous_mode={value}");
        pghactl(&ctl, &["edit-config", "-s", &set, "--force"], "")
            .await
            .ok();
        let deadline = Instant::now() + HEALTHY;
        let standbys = loop {
            let c = load(t).await;
            let named: Vec<String> = c
                .sync
                .as_ref()
                .map(|k| k.value.standbys().iter().map(|s| s.to_string()).collect())
                .unwrap_or_default();
            let mode_seen = (value == "quorum") == c.dynamic_config().quorum_commit_mode();
            if !named.is_empty() && mode_seen {
                break named;
            }
            assert!(
                Instant::now() < deadline,
                "no standby in the sync key after {set}\n{}",
                t.logs()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let list = pghactl(&ctl, &["list"], "").await.ok().stdout;
        for s in &standbys {
            assert!(
                list.lines()
                    .any(|l| l.contains(&format!(" {s} ")) && l.contains(role)),
                "{s} should be listed as {role}:\n{list}"
            );
        }
    }
    pghactl(
        &ctl,
        &["edit-config", "-s", "synchronous_mode=off", "--force"],
        "",
    )
    .await
    .ok();
    let deadline = Instant::now() + HEALTHY;
    while load(t)
        .await
        .sync
        .is_some_and(|k| !k.value.standbys().is_empty())
    {
        assert!(
            Instant::now() < deadline,
            "the sync key still names standbys with synchronous_mode off\n{}",
            t.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
