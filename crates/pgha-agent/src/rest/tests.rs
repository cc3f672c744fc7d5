use std::collections::HashMap;
use std::time::Duration;

use pgha_core::ha::DataDir;
use pgha_core::model::{ClusterKey, MemberData, PgState, RawEntry, Role, Tags, Version};

use super::*;
use crate::postgres::{DbState, Observed};

fn db(in_recovery: bool) -> DbState {
    DbState {
        in_recovery,
        write_lsn: (!in_recovery).then_some(5000),
        receive_lsn: in_recovery.then_some(4900),
        replay_lsn: in_recovery.then_some(4800),
        replay_paused: false,
        replayed_timestamp: None,
        timeline: Some(2),
        receiver_status: in_recovery.then(|| "streaming".into()),
        receiver_upstream: None,
        postmaster_start_time: Some("2026-11-21 10:00:00.000000+00:00".into()),
        server_version: 150018,
        replication: Vec::new(),
        system_id: Some("7312345678901234567".into()),
    }
}

fn cluster(leader: &str, optime: u64) -> Cluster {
    let e = |k: &str, v: &str| RawEntry {
        key: ClusterKey::parse(k).unwrap(),
        value: v.as_bytes().to_vec(),
        version: Version::number(1),
        owner: None,
    };
    Cluster::from_entries(
        [
            e("leader", leader),
            e("status", &format!("{{\"optime\":{optime}}}")),
            e(
                "members/n1",
                r#"{"conn_url":"postgres://127.0.0.1:5432/postgres","api_url":"http://127.0.0.1:8008/patroni","state":"running","role":"primary","xlog_location":5000,"timeline":2}"#,
            ),
            e(
                "members/n2",
                r#"{"conn_url":"postgres://127.0.0.1:5433/postgres","api_url":"http://127.0.0.1:8009/patroni","state":"running","role":"replica","replication_state":"streaming","xlog_location":4900,"receive_lsn":4900,"replay_lsn":4800,"timeline":2}"#,
            ),
        ],
        Version::number(1),
    )
}

fn node(name: &str, primary: bool, holds_lock: bool) -> NodeStatus {
    let mut s = NodeStatus::initial(name, "demo");
    s.observed = Some(Observed {
        data_dir: DataDir::Initialized {
            system_id: "7312345678901234567".into(),
            was_primary: primary,
            timeline: 2,
        },
        postmaster: Some(1),
        db: Some(db(!primary)),
        controldata: None,
        following: None,
    });
    s.member = MemberData {
        state: Some(PgState::Running),
        role: Some(if primary {
            Role::Primary
        } else {
            Role::Replica
        }),
        replication_state: (!primary).then(|| "streaming".into()),
        ..Default::default()
    };
    s.holds_lock = holds_lock;
    s.cluster = Some(Arc::new(cluster("n1", 5000)));
    s.last_cycle = Some(Duration::from_secs(100));
    s
}

fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn primary_and_replica_health_codes_follow_patroni() {
    let primary = node("n1", true, true);
    let replica = node("n2", false, false);
    for path in [
        "/",
        "/primary",
        "/read-write",
        "/leader",
        "/read-only",
        "/health",
    ] {
        assert_eq!(health_code(path, &q(&[]), &primary), 200, "primary {path}");
    }
    assert_eq!(health_code("/replica", &q(&[]), &primary), 503);
    for path in ["/replica", "/read-only", "/health", "/async"] {
        assert_eq!(health_code(path, &q(&[]), &replica), 200, "replica {path}");
    }
    for path in [
        "/",
        "/primary",
        "/read-write",
        "/leader",
        "/standby-leader",
        "/sync",
    ] {
        assert_eq!(health_code(path, &q(&[]), &replica), 503, "replica {path}");
    }
}

#[test]
fn a_primary_without_the_lock_is_not_primary_and_a_lock_holder_in_recovery_is_only_leader() {
    let no_lock = node("n1", true, false);
    assert_eq!(health_code("/primary", &q(&[]), &no_lock), 503);
    let promoting = node("n2", false, true);
    assert_eq!(health_code("/primary", &q(&[]), &promoting), 503);
    assert_eq!(health_code("/leader", &q(&[]), &promoting), 200);
}

#[test]
fn replica_filters_lag_state_and_tags() {
    let mut r = node("n2", false, false);
    // 5000 - 4800 = 200 bytes behind
    assert_eq!(health_code("/replica", &q(&[("lag", "100")]), &r), 503);
    assert_eq!(health_code("/replica", &q(&[("lag", "1kB")]), &r), 200);
    assert_eq!(
        health_code("/replica", &q(&[("replication_state", "streaming")]), &r),
        200
    );
    r.member.replication_state = Some("in archive recovery".into());
    assert_eq!(
        health_code("/replica", &q(&[("replication_state", "streaming")]), &r),
        503
    );
    r.member.replication_state = Some("streaming".into());
    r.member.tags = Tags(
        serde_json::json!({"dc": "eu", "nosync": false})
            .as_object()
            .unwrap()
            .clone(),
    );
    assert_eq!(health_code("/replica", &q(&[("tag_dc", "eu")]), &r), 200);
    assert_eq!(health_code("/replica", &q(&[("tag_dc", "us")]), &r), 503);
    assert_eq!(health_code("/replica", &q(&[("tag_rack", "1")]), &r), 503);
    assert_eq!(
        health_code("/replica", &q(&[("tag_nosync", "false")]), &r),
        200
    );
    r.member.tags = Tags(
        serde_json::json!({"noloadbalance": true})
            .as_object()
            .unwrap()
            .clone(),
    );
    assert_eq!(
        health_code("/replica", &q(&[]), &r),
        503,
        "noloadbalance is left out of /replica"
    );
    assert_eq!(health_code("/read-only", &q(&[]), &r), 503);
}

#[test]
fn stopped_postgres_fails_health() {
    let mut r = node("n2", false, false);
    r.observed.as_mut().unwrap().db = None;
    r.member.state = Some(PgState::Stopped);
    for path in ["/health", "/replica", "/read-only"] {
        assert_eq!(health_code(path, &q(&[]), &r), 503, "{path}");
    }
}

#[test]
fn liveness_and_readiness() {
    let r = node("n2", false, false);
    let s = r.timing;
    assert_eq!(
        liveness_code(&r, Duration::from_secs(100) + s.loop_wait),
        200
    );
    assert_eq!(
        liveness_code(&r, Duration::from_secs(100) + s.loop_wait + 2 * s.ttl),
        503
    );
    let mut paused = r.clone();
    paused.paused = true;
    assert_eq!(liveness_code(&paused, Duration::from_secs(10_000)), 200);

    assert_eq!(readiness_code(&q(&[]), &r), 200);
    assert_eq!(readiness_code(&q(&[("lag", "100")]), &r), 503);
    assert_eq!(
        readiness_code(&q(&[("lag", "150"), ("mode", "write")]), &r),
        200
    );
    let mut not_streaming = r.clone();
    not_streaming.member.replication_state = Some("in archive recovery".into());
    assert_eq!(readiness_code(&q(&[]), &not_streaming), 503);
    assert_eq!(readiness_code(&q(&[]), &node("n1", true, true)), 200);
}

#[test]
fn status_json_has_patronis_fields() {
    let p = status_json(&node("n1", true, true));
    assert_eq!(p["state"], "running");
    assert_eq!(p["role"], "primary");
    assert_eq!(p["xlog"]["location"], 5000);
    assert_eq!(p["timeline"], 2);
    assert_eq!(p["server_version"], 150018);
    assert_eq!(p["database_system_identifier"], "7312345678901234567");
    assert_eq!(p["patroni"]["scope"], "demo");
    assert_eq!(p["patroni"]["name"], "n1");
    assert!(p.get("cluster_unlocked").is_none());
    let r = status_json(&node("n2", false, false));
    assert_eq!(r["xlog"]["received_location"], 4900);
    assert_eq!(r["xlog"]["replayed_location"], 4800);
    assert_eq!(r["replication_state"], "streaming");
}

#[test]
fn cluster_json_matches_cluster_as_json() {
    let s = node("n2", false, false);
    let c = cluster_json(s.cluster.as_ref().unwrap(), &s);
    assert_eq!(c["scope"], "demo");
    let m = c["members"].as_array().unwrap();
    assert_eq!(m[0]["name"], "n1");
    assert_eq!(m[0]["role"], "leader");
    assert_eq!(m[0]["state"], "running");
    assert_eq!(m[0]["port"], 5432);
    assert_eq!(m[1]["role"], "replica");
    assert_eq!(m[1]["state"], "streaming");
    assert_eq!(m[1]["lag"], 100);
    assert_eq!(m[1]["replay_lag"], 200);
    assert_eq!(m[1]["receive_lsn"], "0/1324");
}

#[test]
fn metrics_use_patronis_names() {
    let text = metrics(&node("n1", true, true));
    for line in [
        "patroni_postgres_running{scope=\"demo\",name=\"n1\"} 1",
        "patroni_primary{scope=\"demo\",name=\"n1\"} 1",
        "patroni_xlog_location{scope=\"demo\",name=\"n1\"} 5000",
        "patroni_postgres_timeline{scope=\"demo\",name=\"n1\"} 2",
        "patroni_cluster_unlocked{scope=\"demo\",name=\"n1\"} 0",
        "patroni_is_paused{scope=\"demo\",name=\"n1\"} 0",
        "patroni_version{scope=\"demo\",name=\"n1\"} 040104",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
}

#[test]
fn sizes_parse_with_units() {
    assert_eq!(parse_size("100"), Some(100));
    assert_eq!(parse_size("16kB"), Some(16384));
    assert_eq!(parse_size("10MB"), Some(10 << 20));
    assert_eq!(parse_size("ten"), None);
}
