//! pghactl's DCS commands on a real etcd holding a cluster written through
//! pgha's DCS layer (no agents: the values stay put, so outputs can be
//! compared byte for byte with the real patronictl's): every list format,
//! history, show-config; edit-config's ways of changing the configuration,
//! its diff and questions, and its compare-and-set on a concurrent change;
//! remove's three questions.

// A panic is how a test fails; the helpers here are part of the tests.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{pghactl, pghactl_env};
use pgha_agent::config::DcsSection;
use pgha_core::dcs::{Dcs, DcsExt};
use pgha_core::model::{
    DynamicConfig, Expect, Failover, History, HistoryEntry, KeyLayout, MemberData, PgState, Role,
    Status, Timing,
};
use pgha_testkit::etcd::EtcdServer;
use pgha_testkit::workdir::WorkDir;
use serde_json::{Value, json};

const SYSID: &str = "7312345678901234567";

struct Fixture {
    dir: WorkDir,
    scope: String,
    config: PathBuf,
    nodes: Vec<Arc<dyn Dcs>>,
    _etcd: EtcdServer,
}

/// A member as Patroni writes it; its REST API is a loopback port nobody
/// listens on (there are no agents here).
fn member(port: u16, role: Role, extra: Value) -> MemberData {
    let api = pgha_testkit::ports::free_port().unwrap();
    let mut m = MemberData {
        conn_url: Some(format!("postgres://127.0.0.1:{port}/postgres")),
        api_url: Some(format!("http://127.0.0.1:{api}/patroni")),
        state: Some(PgState::Running),
        role: Some(role.clone()),
        version: Some("4.1.5".into()),
        xlog_location: Some(50331808),
        timeline: Some(2),
        ..Default::default()
    };
    if role == Role::Replica {
        m.replication_state = Some("streaming".into());
        m.receive_lsn = Some(50331808);
        m.replay_lsn = Some(48234656);
    }
    if let Value::Object(extra) = extra {
        let mut v = serde_json::to_value(&m).unwrap();
        for (k, x) in extra {
            v[k] = x;
        }
        m = serde_json::from_value(v).unwrap();
    }
    m
}

/// A three-member cluster as Patroni would have written it, with tags, a
/// pending restart, a scheduled restart and a scheduled switchover.
async fn fixture() -> Fixture {
    let etcd = EtcdServer::start().await.unwrap();
    let dir = WorkDir::new("pghactl-dcs").unwrap();
    let scope = format!("ctl-{}", std::process::id());
    let section = DcsSection::Etcd3(json!({"hosts": etcd.addr().to_string()}));
    let timing = Timing {
        ttl: Duration::from_secs(60),
        ..Timing::default()
    };
    let nodes: Vec<Arc<dyn Dcs>> = ["node1", "node2", "node3"]
        .iter()
        .map(|n| {
            pgha_agent::dcs::connect(&section, KeyLayout::new("/service/", &scope), n, timing)
                .unwrap()
        })
        .collect();
    let leader = &nodes[0];
    leader.race_initialize().await.unwrap();
    leader.set_initialize(SYSID, Expect::Any).await.unwrap();
    let config = DynamicConfig::parse(
        r#"{"ttl":30,"loop_wait":10,"retry_timeout":10,"maximum_lag_on_failover":1048576,"postgresql":{"use_pg_rewind":true,"parameters":{"max_connections":100,"hot_standby":"on","work_mem":"4MB"},"pg_hba":["host all all 0.0.0.0/0 md5"]}}"#,
    )
    .unwrap();
    leader.write_config(&config, Expect::Absent).await.unwrap();
    leader
        .touch_member(&member(5432, Role::Primary, json!({})))
        .await
        .unwrap();
    leader.acquire_leader().await.unwrap();
    leader
        .write_status(&Status {
            optime: Some(50331808),
            ..Default::default()
        })
        .await
        .unwrap();
    leader
        .write_history(&History(vec![
            HistoryEntry {
                timeline: 1,
                lsn: 25165984,
                reason: "no recovery target specified".into(),
                timestamp: Some("2026-11-21T10:00:00.123456+00:00".into()),
                new_leader: Some("node1".into()),
            },
            HistoryEntry {
                timeline: 2,
                lsn: 33554592,
                reason: "no recovery target specified".into(),
                timestamp: None,
                new_leader: None,
            },
        ]))
        .await
        .unwrap();
    nodes[1]
        .touch_member(&member(
            5433,
            Role::Replica,
            json!({"tags": {"nofailover": true, "dc": "eu"}, "pending_restart": true,
                   "pending_restart_reason": {"max_connections": {"old_value": "100", "new_value": "200"}}}),
        ))
        .await
        .unwrap();
    nodes[2]
        .touch_member(&member(
            5434,
            Role::Replica,
            json!({"scheduled_restart": {"schedule": "2099-01-01T10:00:00+00:00", "postgres_version": "16.1"},
                   "tags": {"replicatefrom": "node2"}}),
        ))
        .await
        .unwrap();
    let path = dir.path().join("ctl.yml");
    std::fs::write(
        &path,
        format!(
            "scope: {scope}\nnamespace: /service/\netcd3:\n  hosts: {}\n",
            etcd.addr()
        ),
    )
    .unwrap();
    Fixture {
        dir,
        scope,
        config: path,
        nodes,
        _etcd: etcd,
    }
}

/// The real patronictl with the same configuration file.
async fn patronictl(config: &Path, args: &[&str]) -> String {
    patronictl_with(config, args, "").await
}

/// The real patronictl, answering its questions with `stdin`.
async fn patronictl_with(config: &Path, args: &[&str], stdin: &str) -> String {
    use tokio::io::AsyncWriteExt;
    let bin = pgha_testkit::patronictl::venv().join("bin/patronictl");
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg("-c")
        .arg(config)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .await
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "patronictl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_commands_print_what_patronictl_prints() {
    let f = fixture().await;
    f.nodes[0]
        .write_failover(
            &Failover {
                leader: Some("node1".into()),
                member: Some("node3".into()),
                scheduled_at_text: Some("2099-01-01T12:00:00+00:00".into()),
                ..Default::default()
            },
            Expect::Any,
        )
        .await
        .unwrap();
    let mut config = f.nodes[0].load().await.unwrap().config.unwrap();
    config.value.set_path("pause", Some(json!(true)));
    f.nodes[0]
        .write_config(&config.value, Expect::Version(config.version))
        .await
        .unwrap();

    let cases: &[&[&str]] = &[
        &["list"],
        &["list", "-e"],
        &["list", "-f", "json"],
        &["list", "-f", "yaml"],
        &["list", "-f", "tsv"],
        &["list", &f.scope, &f.scope],
        &["topology"],
        &["history"],
        &["history", "-f", "json"],
        &["history", "-f", "yaml"],
        &["history", "-f", "tsv"],
        &["show-config"],
        &["dsn"],
        &["dsn", "-r", "replica"],
        &["dsn", "-m", "node3"],
    ];
    for args in cases {
        let ours = pghactl(&f.config, args, "").await.ok();
        let theirs = patronictl(&f.config, args).await;
        assert_eq!(
            ours.stdout, theirs,
            "pghactl {args:?} differs from patronictl"
        );
    }
    // A sample, so a reader sees what was compared.
    let list = pghactl(&f.config, &["list"], "").await.ok().stdout;
    assert!(
        list.contains(
            "| node2  | 127.0.0.1:5433 | Replica | streaming |  2 |   0/30000A0 |   0 |  0/2E000A0 |   2 | *               \
             | max_connections: 100->200 |                                             | dc: eu               |\n"
        ),
        "{list}"
    );
    assert!(list.contains(" Maintenance mode: on\n Switchover scheduled at: 2099-01-01T12:00:00+00:00\n                    from: node1\n                      to: node3\n"), "{list}");

    // Errors name what is missing.
    let out = pghactl(&f.config, &["dsn", "-m", "node9"], "")
        .await
        .failed();
    assert!(
        out.stderr.contains("node9 is not a member of cluster"),
        "{out}"
    );
    let out = pghactl(&f.config, &["dsn", "-m", "node1", "-r", "replica"], "")
        .await
        .failed();
    assert!(
        out.stderr
            .contains("--role and --member are mutually exclusive"),
        "{out}"
    );
    let missing = f.dir.path().join("missing.yml");
    let out = pghactl(&missing, &["list"], "").await.failed();
    assert!(
        out.stderr.starts_with("Error: Provided config file"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_config_changes_shows_asks_and_never_overwrites_a_concurrent_change() {
    let f = fixture().await;
    let stored = |c: pgha_core::model::Cluster| Value::Object(c.config.unwrap().value.into_map());

    // -s and -p, with YAML 1.1 values: the same diff and question as
    // patronictl's (answered "no" by both, so nothing changes yet).
    let args = [
        "edit-config",
        "-s",
        "ttl=25",
        "-p",
        "max_connections=200",
        "-s",
        "synchronous_mode=on",
        "-p",
        "work_mem=",
    ];
    let ours = pghactl(&f.config, &args, "n\n").await.ok();
    assert_eq!(ours.stdout, patronictl_with(&f.config, &args, "n\n").await);
    assert!(
        ours.stdout
            .contains("-ttl: 30\n+synchronous_mode: true\n+ttl: 25\n"),
        "{ours}"
    );
    assert_eq!(stored(f.nodes[1].load().await.unwrap())["ttl"], 30);
    let out = pghactl(&f.config, &[&args[..], &["--force"]].concat(), "")
        .await
        .ok();
    assert!(out.stdout.ends_with("Configuration changed\n"), "{out}");
    let c = stored(f.nodes[1].load().await.unwrap());
    assert_eq!(c["ttl"], 25);
    assert_eq!(c["synchronous_mode"], true);
    assert_eq!(
        c["postgresql"]["parameters"],
        json!({"max_connections": 200, "hot_standby": "on"})
    );
    assert_eq!(
        c["postgresql"]["use_pg_rewind"], true,
        "untouched keys stay"
    );

    // Nothing to change; a "no" changes nothing; a "yes" does.
    let out = pghactl(&f.config, &["edit-config", "-s", "ttl=25"], "")
        .await
        .ok();
    assert_eq!(out.stdout, "Not changed\n");
    let out = pghactl(&f.config, &["edit-config", "-s", "ttl=26"], "n\n")
        .await
        .ok();
    assert!(
        out.stdout
            .ends_with("-ttl: 25\n+ttl: 26\nApply these changes? [y/N]: "),
        "{out}"
    );
    assert_eq!(stored(f.nodes[1].load().await.unwrap())["ttl"], 25);
    pghactl(&f.config, &["edit-config", "-s", "ttl=26"], "y\n")
        .await
        .ok();
    assert_eq!(stored(f.nodes[1].load().await.unwrap())["ttl"], 26);
    let out = pghactl(&f.config, &["edit-config", "-s", "nonsense"], "")
        .await
        .failed();
    assert!(
        out.stderr.contains("Invalid parameter setting nonsense"),
        "{out}"
    );

    // --apply FILE merges (null deletes); --replace - replaces, from standard input.
    let file = f.dir.path().join("patch.yml");
    std::fs::write(
        &file,
        "loop_wait: 5\nsynchronous_mode: null\npostgresql:\n  parameters:\n    work_mem: 8MB\n",
    )
    .unwrap();
    pghactl(
        &f.config,
        &[
            "edit-config",
            "--apply",
            file.to_str().unwrap(),
            "--force",
            "-q",
        ],
        "",
    )
    .await
    .ok();
    let c = stored(f.nodes[1].load().await.unwrap());
    assert_eq!(
        (c["loop_wait"].clone(), c.get("synchronous_mode").cloned()),
        (json!(5), None)
    );
    assert_eq!(c["postgresql"]["parameters"]["work_mem"], "8MB");
    let out = pghactl(&f.config, &["edit-config", "--replace", "-"], "ttl: 40\n")
        .await
        .ok();
    assert!(
        out.stdout
            .ends_with("Use --force option to apply changes\n"),
        "{out}"
    );
    pghactl(
        &f.config,
        &["edit-config", "--replace", "-", "--force"],
        "ttl: 40\nloop_wait: 5\nretry_timeout: 10\npostgresql: {use_pg_rewind: true}\n",
    )
    .await
    .ok();
    assert_eq!(
        stored(f.nodes[1].load().await.unwrap()),
        json!({"ttl": 40, "loop_wait": 5, "retry_timeout": 10, "postgresql": {"use_pg_rewind": true}})
    );

    // The editor: what it saves is written.
    let editor = f.dir.path().join("editor.sh");
    std::fs::write(&editor, "#!/bin/sh\nsed -i 's/^ttl: 40$/ttl: 45/' \"$1\"\n").unwrap();
    make_executable(&editor);
    let out = pghactl_env(
        &f.config,
        &["edit-config", "--force"],
        "",
        &[("EDITOR", editor.to_str().unwrap())],
    )
    .await
    .ok();
    assert!(
        out.stdout.contains("-ttl: 40\n+ttl: 45\n")
            && out.stdout.ends_with("Configuration changed\n"),
        "{out}"
    );

    // Someone changes the configuration while the editor is open: the write
    // is refused (compare-and-set), says so, and their change stays.
    let racing = f.dir.path().join("racing-editor.sh");
    std::fs::write(
        &racing,
        "#!/bin/sh\n\"$PGHACTL\" -c \"$CTLCFG\" edit-config -s loop_wait=7 --force -q >/dev/null || exit 3\nsed -i 's/^ttl: 45$/ttl: 50/' \"$1\"\n",
    )
    .unwrap();
    make_executable(&racing);
    let out = pghactl_env(
        &f.config,
        &["edit-config", "--force"],
        "",
        &[
            ("EDITOR", racing.to_str().unwrap()),
            ("PGHACTL", common::binary().to_str().unwrap()),
            ("CTLCFG", f.config.to_str().unwrap()),
        ],
    )
    .await
    .failed();
    assert!(
        out.stderr
            .contains("Config modification aborted due to concurrent changes"),
        "{out}"
    );
    let c = stored(f.nodes[1].load().await.unwrap());
    assert_eq!(
        (c["ttl"].clone(), c["loop_wait"].clone()),
        (json!(45), json!(7)),
        "the concurrent change is kept"
    );

    // show-config is what patronictl shows, after all that.
    assert_eq!(
        pghactl(&f.config, &["show-config"], "").await.ok().stdout,
        patronictl(&f.config, &["show-config"]).await
    );
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_asks_three_questions_before_deleting_the_cluster() {
    let f = fixture().await;
    let out = pghactl(&f.config, &["remove", &f.scope], "wrong\n")
        .await
        .failed();
    assert!(
        out.stdout
            .contains("Please confirm the cluster name to remove: "),
        "{out}"
    );
    assert!(
        out.stderr
            .contains("Error: Cluster names specified do not match"),
        "{out}"
    );
    let out = pghactl(
        &f.config,
        &["remove", &f.scope],
        &format!("{}\nyes\n", f.scope),
    )
    .await
    .failed();
    assert!(
        out.stderr
            .contains("You did not exactly type \"Yes I am aware\""),
        "{out}"
    );
    let out = pghactl(
        &f.config,
        &["remove", &f.scope],
        &format!("{}\nYes I am aware\nnode2\n", f.scope),
    )
    .await
    .failed();
    assert!(
        out.stdout.contains(
            "This cluster currently is healthy. Please specify the leader name to continue: "
        ),
        "{out}"
    );
    assert!(
        out.stderr
            .contains("You did not specify the current leader of the cluster"),
        "{out}"
    );
    let out = pghactl(&f.config, &["remove", &f.scope], &format!("{}\n", f.scope))
        .await
        .failed();
    assert!(
        out.stderr.contains("Aborted!"),
        "input ending early aborts: {out}"
    );
    assert!(
        f.nodes[1].load().await.unwrap().initialize.is_some(),
        "nothing removed yet"
    );

    pghactl(
        &f.config,
        &["remove", &f.scope, "-f", "json"],
        &format!("{}\nYes I am aware\nnode1\n", f.scope),
    )
    .await
    .ok();
    let c = f.nodes[1].load().await.unwrap();
    assert!(
        c.initialize.is_none() && c.config.is_none() && c.history.is_none(),
        "{c:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_members_are_named_and_switchover_falls_back_to_the_dcs() {
    let f = fixture().await;
    let c = f.nodes[0].load().await.unwrap();
    let api = |name: &str| {
        c.member(name)
            .unwrap()
            .data
            .api_url
            .clone()
            .unwrap()
            .replace("/patroni", "")
    };

    // The leader's REST API does not answer: the request goes into the DCS.
    let out = pghactl(
        &f.config,
        &[
            "switchover",
            "--candidate",
            "node3",
            "--scheduled",
            "2099-01-01T12:00+00:00",
            "--force",
        ],
        "",
    )
    .await
    .ok();
    assert!(
        out.stdout
            .contains("Could not switchover using Patroni api, falling back to DCS"),
        "{out}"
    );
    assert!(
        out.stderr.contains(&format!(
            "node1 ({}/switchover) is unreachable",
            api("node1")
        )),
        "{out}"
    );
    assert!(
        out.stdout
            .contains(" Switchover scheduled at: 2099-01-01T12:00:00+00:00\n"),
        "{out}"
    );
    let failover = f.nodes[1].load().await.unwrap().failover.unwrap().value;
    assert_eq!(
        (
            failover.leader.as_deref(),
            failover.member.as_deref(),
            failover.scheduled_at_text.as_deref()
        ),
        (
            Some("node1"),
            Some("node3"),
            Some("2099-01-01T12:00:00+00:00")
        )
    );
    // Nobody answers DELETE /switchover either: the key is cleared in the DCS.
    let out = pghactl(&f.config, &["flush", &f.scope, "switchover"], "")
        .await
        .ok();
    assert!(
        out.stdout.contains(&format!(
            "Could not find any accessible member of cluster {}",
            f.scope
        )),
        "{out}"
    );
    assert!(
        f.nodes[1]
            .load()
            .await
            .unwrap()
            .failover
            .unwrap()
            .value
            .is_empty()
    );

    // Each unreachable member is named with its address.
    let out = pghactl(
        &f.config,
        &["restart", &f.scope, "node2", "node3", "--force"],
        "",
    )
    .await
    .failed();
    for n in ["node2", "node3"] {
        assert!(
            out.stdout.contains(&format!(
                "Failed: restart for member {n}: {}/restart is unreachable",
                api(n)
            )),
            "{out}"
        );
    }
    let out = pghactl(&f.config, &["pause"], "").await.failed();
    assert!(
        out.stderr
            .contains("Can not find accessible cluster member (tried node1, node2, node3)"),
        "{out}"
    );
    assert!(
        out.stderr.contains(&format!(
            "Member node2 is not accessible: node2 ({}/config) is unreachable",
            api("node2")
        )),
        "{out}"
    );
}
