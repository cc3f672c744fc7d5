use std::collections::HashMap;
use std::time::Duration;

use pgha_core::ha::DataDir;
use pgha_core::model::{ClusterKey, MemberData, PgState, RawEntry, Role, Tags, Version};

use super::*;
use pgha_node::postgres::{DbState, Observed};

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
        configured_upstream: None,
        postmaster_start_time: Some("2026-11-21 10:00:00.000000+00:00".into()),
        server_version: 150018,
        replication: Vec::new(),
        system_id: Some("7312345678901234567".into()),
        pending_restart: Vec::new(),
        synchronous_standby_names: None,
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
    assert!(r.get("replication_broken").is_none());
}

#[test]
fn a_replica_not_streaming_from_the_leader_fails_the_streaming_checks() {
    let mut r = node("n2", false, false);
    r.member.replication_state = Some("in archive recovery".into());
    r.member
        .extra
        .insert("replication_broken".into(), serde_json::Value::Bool(true));
    let streaming = q(&[("replication_state", "streaming")]);
    assert_eq!(health_code("/replica", &streaming, &r), 503);
    assert_eq!(readiness_code(&q(&[]), &r), 503);
    // Still a running replica for the checks that do not ask for streaming.
    assert_eq!(health_code("/replica", &q(&[]), &r), 200);
    let j = status_json(&r);
    assert_eq!(j["replication_state"], "in archive recovery");
    assert_eq!(j["replication_broken"], true);
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

/// Every metric Patroni 4.1 exports, with its type; pgha's own beside.
#[test]
fn metrics_are_patronis_set_with_its_types_plus_pghas_own() {
    let mut s = node("n1", true, true);
    s.member.state = Some(PgState::Running);
    s.fence_guard_up = true;
    s.lock_left = Some(std::time::Duration::from_millis(8500));
    s.last_promotion = Some(std::time::Duration::from_millis(1250));
    let text = metrics(&s);
    let types: std::collections::BTreeMap<&str, &str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .collect();
    for (name, kind) in [
        ("patroni_version", "gauge"),
        ("patroni_postgres_running", "gauge"),
        ("patroni_postmaster_start_time", "gauge"),
        ("patroni_primary", "gauge"),
        ("patroni_xlog_location", "counter"),
        ("patroni_standby_leader", "gauge"),
        ("patroni_replica", "gauge"),
        ("patroni_sync_standby", "gauge"),
        ("patroni_quorum_standby", "gauge"),
        ("patroni_xlog_received_location", "counter"),
        ("patroni_xlog_replayed_location", "counter"),
        ("patroni_xlog_replayed_timestamp", "gauge"),
        ("patroni_xlog_paused", "gauge"),
        ("patroni_postgres_streaming", "gauge"),
        ("patroni_postgres_in_archive_recovery", "gauge"),
        ("patroni_postgres_server_version", "gauge"),
        ("patroni_cluster_unlocked", "gauge"),
        ("patroni_failsafe_mode_is_active", "gauge"),
        ("patroni_postgres_timeline", "gauge"),
        ("patroni_dcs_last_seen", "gauge"),
        ("patroni_pending_restart", "gauge"),
        ("patroni_is_paused", "gauge"),
        ("patroni_postgres_state", "gauge"),
        ("pgha_fence_guard_up", "gauge"),
        ("pgha_leader_lock_seconds_left", "gauge"),
        ("pgha_last_promotion_seconds", "gauge"),
    ] {
        assert_eq!(types.get(name), Some(&kind), "{name} in\n{text}");
    }
    let labels = "{scope=\"demo\",name=\"n1\"}";
    for line in [
        format!("patroni_postgres_state{labels} 5"),
        format!("pgha_fence_guard_up{labels} 1"),
        format!("pgha_leader_lock_seconds_left{labels} 8.5"),
        format!("pgha_last_promotion_seconds{labels} 1.25"),
    ] {
        assert!(text.contains(&line), "{line} missing from\n{text}");
    }
    assert!(text.contains("# Values: 0=initdb, 1=initdb_failed, 2=custom_bootstrap, "));
    // An unknown state is -1, as Patroni.
    s.member.state = Some(PgState::Other("hibernating".into()));
    assert!(metrics(&s).contains(&format!("patroni_postgres_state{labels} -1")));
}

/// The alerting rules and the Grafana dashboard in monitoring/ read only
/// metrics pgha exports (a renamed metric would leave an alert that never
/// fires).
#[test]
fn monitoring_reads_only_exported_metrics() {
    let exported: Vec<String> = metrics(&node("n1", true, true))
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../monitoring");
    let mut read = 0;
    for file in ["alerts.yml", "grafana-dashboard.json"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find('p') {
            rest = &rest[at..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[name.len().max(1)..];
            if (name.starts_with("patroni_") || name.starts_with("pgha_")) && name.len() > 6 {
                read += 1;
                assert!(
                    exported.contains(&name),
                    "monitoring/{file} reads {name}, which /metrics does not export"
                );
            }
        }
    }
    assert!(read > 20, "only {read} metric references found");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("grafana-dashboard.json")).unwrap())
            .unwrap();
    assert!(
        dashboard["panels"]
            .as_array()
            .is_some_and(|p| p.len() >= 10)
    );
}

#[test]
fn sizes_parse_with_units() {
    assert_eq!(parse_size("100"), Some(100));
    assert_eq!(parse_size("16kB"), Some(16384));
    assert_eq!(parse_size("10MB"), Some(10 << 20));
    assert_eq!(parse_size("ten"), None);
}

#[test]
fn query_components_and_basic_auth_decode() {
    assert_eq!(percent_decode("10%20MB"), "10 MB");
    assert_eq!(percent_decode("a+b%2Fc%"), "a b/c%");
    assert_eq!(
        base64_decode("YWRtaW46YWRtaW4tcGFzcw=="),
        Some("admin:admin-pass".into())
    );
    assert_eq!(base64_decode("bad!"), None);
}

// ---- the write side, against the in-memory DCS and a stand-in HA loop

mod write_side {
    use std::sync::Arc;
    use std::time::Duration;

    use axum::body::Body;
    use axum::extract::{Request, State};
    use pgha_core::dcs::memory::MemoryStore;
    use pgha_core::dcs::{Dcs, DcsExt};
    use pgha_core::model::{DynamicConfig, Expect, KeyLayout, Timing};
    use serde_json::{Value, json};
    use tokio::sync::{mpsc, watch};

    use super::super::{ApiState, handle};
    use pgha_node::command::Command;
    use pgha_node::{NodeHandle, NodeStatus};
    use pgha_rest_client::RestClient;

    struct Api {
        state: ApiState,
        store: MemoryStore,
        dcs: Arc<dyn Dcs>,
    }

    /// A cluster led by n1 with members n1 and n2 (whose REST APIs do not
    /// answer: nothing listens on their ports) and a stand-in loop that
    /// answers restart and reinitialize requests.
    async fn api(auth: Option<(&str, &str)>) -> Api {
        let store = MemoryStore::new();
        let layout = KeyLayout::new("/service", "demo");
        let timing = Timing::default();
        let n1: Arc<dyn Dcs> = Arc::new(store.client(layout.clone(), "n1", timing));
        let n2: Arc<dyn Dcs> = Arc::new(store.client(layout, "n2", timing));
        let member = |port: u16| {
            serde_json::from_value(json!({"conn_url": format!("postgres://127.0.0.1:{port}/postgres"),
                "api_url": format!("http://127.0.0.1:{}/patroni", port + 1), "state": "running", "role": "replica"}))
            .unwrap()
        };
        n1.touch_member(&member(1)).await.unwrap();
        n2.touch_member(&member(3)).await.unwrap();
        n1.acquire_leader().await.unwrap();
        n1.write_config(
            &DynamicConfig::parse(r#"{"ttl":30,"postgresql":{"parameters":{"work_mem":"4MB"}}}"#)
                .unwrap(),
            Expect::Absent,
        )
        .await
        .unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        tokio::spawn(async move {
            while let Some(c) = rx.recv().await {
                match c {
                    Command::Restart { reply, .. } => {
                        let _ = reply.send(pgha_node::RestartAnswer::Restarted);
                    }
                    Command::Reinitialize { reply, .. } => {
                        let _ = reply.send(pgha_node::ReinitializeAnswer::IsLeader);
                    }
                    Command::CancelRestart { reply } => {
                        let _ = reply.send(false);
                    }
                    Command::Reload(_) | Command::Wakeup => {}
                }
            }
        });
        let (_status_tx, status_rx) = watch::channel(Arc::new(NodeStatus::initial("n1", "demo")));
        std::mem::forget(_status_tx);
        let (reload, reloads) = mpsc::channel(1);
        std::mem::forget(reloads);
        let state = ApiState {
            node: NodeHandle::new(
                status_rx,
                tx,
                Arc::new(pgha_core::clock::MonotonicClock::new()),
            ),
            dcs: n1.clone(),
            reload,
            peers: RestClient::new("pgha", None, &Default::default()),
            auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
            access: Arc::new(crate::access::AccessRules::open()),
        };
        Api {
            state,
            store,
            dcs: n1,
        }
    }

    async fn call(
        api: &Api,
        method: &str,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = handle(
            State(api.state.clone()),
            req.body(Body::from(body.to_string())).unwrap(),
        )
        .await;
        let code = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (code, value)
    }

    #[track_caller]
    fn assert_error(r: &(u16, Value), code: u16, part: &str) {
        assert_eq!(r.0, code, "{r:?}");
        let msg = r.1["error"]
            .as_str()
            .unwrap_or_else(|| panic!("a JSON error body, got {:?}", r.1));
        assert!(msg.contains(part), "{msg:?} should mention {part:?}");
    }

    #[tokio::test]
    async fn malformed_and_mistyped_bodies_get_400_with_the_reason() {
        let a = api(None).await;
        assert_error(
            &call(&a, "POST", "/switchover", "{not json", &[]).await,
            400,
            "not valid JSON",
        );
        assert_error(
            &call(&a, "POST", "/switchover", "[1]", &[]).await,
            400,
            "must be a JSON object, not a list",
        );
        assert_error(
            &call(&a, "POST", "/switchover", "", &[]).await,
            400,
            "needs a JSON object",
        );
        assert_error(
            &call(&a, "POST", "/switchover", r#"{"leader": 5}"#, &[]).await,
            400,
            "leader must be a string",
        );
        assert_error(
            &call(
                &a,
                "POST",
                "/switchover",
                r#"{"leader": "n1", "candiate": "n2"}"#,
                &[],
            )
            .await,
            400,
            "unknown field(s) for switchover: candiate",
        );
        assert_error(
            &call(&a, "POST", "/switchover", r#"{"candidate": "n2"}"#, &[]).await,
            400,
            "only from a specific leader",
        );
        assert_error(
            &call(&a, "POST", "/failover", r#"{}"#, &[]).await,
            400,
            "only to a specific candidate",
        );
        assert_error(
            &call(
                &a,
                "POST",
                "/switchover",
                r#"{"leader": "n1", "candidate": "n1"}"#,
                &[],
            )
            .await,
            400,
            "target and source are the same",
        );
        assert_error(
            &call(&a, "POST", "/reinitialize", r#"{"force": "perhaps"}"#, &[]).await,
            400,
            "force must be true or false",
        );
        assert_error(
            &call(&a, "PATCH", "/config", "7", &[]).await,
            400,
            "JSON object",
        );
    }

    #[tokio::test]
    async fn schedules_must_be_future_times_with_a_zone() {
        let a = api(None).await;
        let body =
            |t: &str| format!(r#"{{"leader": "n1", "candidate": "n2", "scheduled_at": "{t}"}}"#);
        assert_error(
            &call(&a, "POST", "/switchover", &body("2030-01-01T10:00:00"), &[]).await,
            400,
            "Timezone information is mandatory",
        );
        assert_error(
            &call(
                &a,
                "POST",
                "/switchover",
                &body("2001-01-01T10:00:00+00:00"),
                &[],
            )
            .await,
            422,
            "in the past",
        );
        assert_error(
            &call(&a, "POST", "/switchover", &body("soon+01:00"), &[]).await,
            422,
            "Unable to parse",
        );
        assert_error(
            &call(
                &a,
                "POST",
                "/failover",
                &body("2030-01-01T10:00:00Z").replace(r#""leader": "n1", "#, ""),
                &[],
            )
            .await,
            400,
            "can't be scheduled",
        );
        let r = call(
            &a,
            "POST",
            "/switchover",
            &body("2030-01-01T10:00:00+00:00"),
            &[],
        )
        .await;
        assert_eq!(r, (202, Value::String("Switchover scheduled".into())));
        let f = a.dcs.load().await.unwrap().failover.unwrap().value;
        assert_eq!(
            (f.leader.as_deref(), f.member.as_deref()),
            (Some("n1"), Some("n2"))
        );
        assert_eq!(
            f.scheduled_at().unwrap().unwrap().to_string(),
            "2030-01-01T10:00:00Z"
        );
        assert_eq!(
            call(&a, "DELETE", "/switchover", "", &[]).await,
            (200, Value::String("scheduled switchover deleted".into()))
        );
        assert_error(
            &call(&a, "DELETE", "/switchover", "", &[]).await,
            404,
            "no switchover is scheduled",
        );
    }

    #[tokio::test]
    async fn impossible_switchovers_get_412_naming_each_reason() {
        let a = api(None).await;
        assert_error(
            &call(&a, "POST", "/switchover", r#"{"leader": "n2"}"#, &[]).await,
            412,
            "n2 is not the leader, n1 is",
        );
        assert_error(
            &call(
                &a,
                "POST",
                "/switchover",
                r#"{"leader": "n1", "candidate": "n9"}"#,
                &[],
            )
            .await,
            412,
            "n9 is not a member (members: n1, n2)",
        );
        // n2's REST API does not answer: it is not a good candidate, and the reason says so.
        assert_error(
            &call(&a, "POST", "/switchover", r#"{"leader": "n1"}"#, &[]).await,
            412,
            "n2 does not answer on its REST API",
        );
        assert!(
            a.dcs.load().await.unwrap().failover.is_none(),
            "nothing was written"
        );
    }

    #[tokio::test]
    async fn restart_filters_are_checked_and_requests_reach_the_loop() {
        let a = api(None).await;
        assert_error(
            &call(&a, "POST", "/restart", r#"{"role": "boss"}"#, &[]).await,
            400,
            "role should be either",
        );
        assert_error(
            &call(
                &a,
                "POST",
                "/restart",
                r#"{"postgres_version": "nine"}"#,
                &[],
            )
            .await,
            400,
            "not a PostgreSQL version",
        );
        assert_error(
            &call(&a, "POST", "/restart", r#"{"timeout": -3}"#, &[]).await,
            400,
            "positive number of seconds",
        );
        assert_error(
            &call(&a, "POST", "/restart", r#"{"when": "now"}"#, &[]).await,
            400,
            "Unknown filter for the scheduled restart: when",
        );
        assert_error(
            &call(
                &a,
                "POST",
                "/restart",
                r#"{"schedule": "2001-01-01T00:00:00Z"}"#,
                &[],
            )
            .await,
            422,
            "in the past",
        );
        assert_eq!(
            call(&a, "POST", "/restart", "", &[]).await,
            (200, Value::String("restarted successfully".into()))
        );
        assert_eq!(
            call(
                &a,
                "POST",
                "/restart",
                r#"{"role": "primary", "timeout": "30s", "restart_pending": true}"#,
                &[]
            )
            .await
            .0,
            200
        );
        assert_error(
            &call(&a, "DELETE", "/restart", "", &[]).await,
            404,
            "no restarts are scheduled",
        );
        assert_error(
            &call(&a, "POST", "/reinitialize", "", &[]).await,
            503,
            "I am the leader",
        );
        assert_eq!(
            call(&a, "POST", "/reload", "", &[]).await,
            (202, Value::String("reload scheduled".into()))
        );
    }

    #[tokio::test]
    async fn config_patch_merges_refuses_bad_types_and_reports_races() {
        let a = api(None).await;
        let r = call(&a, "PATCH", "/config", r#"{"ttl": 20, "loop_wait": 5, "postgresql": {"parameters": {"work_mem": null, "max_connections": 200}}}"#, &[]).await;
        assert_eq!(r.0, 200, "{r:?}");
        assert_eq!(
            r.1,
            json!({"ttl": 20, "postgresql": {"parameters": {"max_connections": 200}}, "loop_wait": 5})
        );
        let stored = a.dcs.load().await.unwrap().config.unwrap().value;
        assert_eq!(serde_json::to_value(&stored).unwrap(), r.1);

        assert_error(
            &call(&a, "PATCH", "/config", r#"{"ttl": "soon"}"#, &[]).await,
            400,
            "ttl: expected a non-negative integer",
        );

        // Someone else writes between our read and our write: 409.
        let layout = KeyLayout::new("/service", "demo");
        let other = a.store.client(layout, "n1", Timing::default());
        other.faults().fail_next_writes_with_conflict(0);
        let faulty = api_with_dcs(&a, Arc::new(other));
        if let Some(memory) = faulty.1 {
            memory.fail_next_writes_with_conflict(1);
        }
        assert_error(
            &call(&faulty.0, "PATCH", "/config", r#"{"ttl": 25}"#, &[]).await,
            409,
            "changed by someone else",
        );

        let r = call(&a, "PUT", "/config", r#"{"ttl": 40, "loop_wait": 10}"#, &[]).await;
        assert_eq!(r, (200, json!({"ttl": 40, "loop_wait": 10})));
    }

    #[tokio::test]
    async fn config_writes_that_turn_on_what_pgha_lacks_are_refused_by_name() {
        let a = api(None).await;
        let before = a.dcs.load().await.unwrap().config.unwrap();
        for (method, body, key) in [
            (
                "PATCH",
                r#"{"standby_cluster": {"port": 5432}}"#,
                "standby_cluster",
            ),
            (
                "PUT",
                r#"{"ttl": 30, "standby_cluster": {"port": 6543, "host": ""}}"#,
                "standby_cluster",
            ),
        ] {
            assert_error(
                &call(&a, method, "/config", body, &[]).await,
                400,
                &format!("refused: {key}: "),
            );
            let now = a.dcs.load().await.unwrap().config.unwrap();
            assert_eq!(
                now.version, before.version,
                "{method} {body}: nothing is written"
            );
        }
        // Turning them off, or keys pgha merely warns about, are written.
        let r = call(
            &a,
            "PATCH",
            "/config",
            r#"{"synchronous_mode": "quorum", "synchronous_mode_strict": true, "failsafe_mode": true, "slots": {"s": {"type": "physical"}}}"#,
            &[],
        )
        .await;
        assert_eq!(r.0, 200, "{r:?}");
    }

    #[test]
    fn every_metric_is_declared_once() {
        // A family exposed twice is invalid exposition: Prometheus rejects
        // the scrape (patroni_failsafe_mode_is_active once was).
        let s = super::node("n1", true, true);
        let m = super::metrics(&s);
        let mut seen = std::collections::HashSet::new();
        for line in m.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = line.split_whitespace().nth(2).unwrap();
            assert!(seen.insert(name.to_string()), "{name} declared twice:\n{m}");
        }
        assert!(seen.contains("patroni_failsafe_mode_is_active"));
    }

    #[test]
    fn a_configuration_asking_for_what_pgha_lacks_shows_in_status_and_metrics() {
        let mut s = super::node("n1", true, true);
        let m = super::metrics(&s);
        assert!(
            m.contains("pgha_unsupported_config{scope=\"demo\",name=\"n1\"} 0"),
            "{m}"
        );
        assert!(super::status_json(&s).get("unsupported_config").is_none());
        s.unsupported = pgha_core::model::DynamicConfig::parse(
            r#"{"failsafe_mode": true, "standby_cluster": {"port": 5432}}"#,
        )
        .unwrap()
        .review()
        .unsupported;
        let m = super::metrics(&s);
        assert!(
            m.contains("pgha_unsupported_config{scope=\"demo\",name=\"n1\"} 1"),
            "{m}"
        );
        let j = super::status_json(&s);
        assert_eq!(j["unsupported_config"][0]["key"], "standby_cluster");
        assert!(
            j["unsupported_config"][0]["message"]
                .as_str()
                .unwrap()
                .contains("standby clusters with neither a host nor a restore_command (nothing to replicate from) is not supported by pgha yet"),
            "{j}"
        );
    }

    #[tokio::test]
    async fn post_failsafe_answers_as_patroni_and_is_a_promise() {
        let mut a = api(None).await;
        let ping = r#"{"name":"n2","conn_url":"postgres://h:5432/postgres","api_url":"http://h:8009/patroni"}"#;
        // A handle without failsafe mode.
        let r = call(&a, "POST", "/failsafe", ping, &[]).await;
        assert_eq!(r.0, 502, "{r:?}");

        let gate = pgha_node::failsafe::FailsafeGate::new(
            Arc::new(pgha_core::clock::MonotonicClock::new()),
            false,
            Duration::from_secs(30),
        );
        a.state.node = a.state.node.clone().with_failsafe(gate.clone());
        assert_eq!(call(&a, "POST", "/failsafe", ping, &[]).await.0, 502);
        // Enabled (the loop configures it from the dynamic configuration).
        let gate2 = pgha_node::failsafe::FailsafeGate::new(
            Arc::new(pgha_core::clock::MonotonicClock::new()),
            true,
            Duration::from_secs(30),
        );
        a.state.node = a.state.node.clone().with_failsafe(gate2.clone());
        let r = call(&a, "POST", "/failsafe", ping, &[]).await;
        assert_eq!(
            r,
            (200, Value::String("Accepted".into())),
            "Patroni's answer"
        );
        assert_eq!(
            gate2.witness().and_then(|w| w.leader).as_deref(),
            Some("n2"),
            "the member now refuses the lock"
        );
        assert_error(
            &call(&a, "POST", "/failsafe", "{}", &[]).await,
            400,
            "POST /failsafe needs a JSON object",
        );
    }

    /// The same API over another client (to inject faults into its link).
    fn api_with_dcs(
        a: &Api,
        dcs: Arc<pgha_core::dcs::memory::MemoryDcs>,
    ) -> (Api, Option<Arc<pgha_core::dcs::memory::Faults>>) {
        let faults = dcs.faults();
        let mut state = a.state.clone();
        state.dcs = dcs.clone();
        (
            Api {
                state,
                store: a.store.clone(),
                dcs,
            },
            Some(faults),
        )
    }

    #[tokio::test]
    async fn oversized_bodies_unknown_paths_and_methods() {
        let a = api(None).await;
        let big = format!(
            r#"{{"ttl": 20, "pad": "{}"}}"#,
            "x".repeat(super::super::MAX_BODY)
        );
        assert_error(
            &call(&a, "PATCH", "/config", &big, &[]).await,
            413,
            "larger than",
        );
        assert_error(
            &call(&a, "GET", "/nowhere", "", &[]).await,
            404,
            "unknown path /nowhere",
        );
        assert_error(
            &call(&a, "POST", "/patroni", "{}", &[]).await,
            405,
            "POST /patroni is not supported",
        );
        assert_error(
            &call(&a, "DELETE", "/config", "", &[]).await,
            405,
            "not supported",
        );
    }

    #[tokio::test]
    async fn unsafe_methods_need_basic_auth_when_configured() {
        let a = api(Some(("admin", "admin-pass"))).await;
        assert_error(
            &call(&a, "POST", "/reload", "", &[]).await,
            401,
            "authentication required",
        );
        assert_error(
            &call(
                &a,
                "POST",
                "/reload",
                "",
                &[("authorization", "Basic YWRtaW46d3Jvbmc=")],
            )
            .await,
            401,
            "authentication required",
        );
        let ok = call(
            &a,
            "POST",
            "/reload",
            "",
            &[("authorization", "Basic YWRtaW46YWRtaW4tcGFzcw==")],
        )
        .await;
        assert_eq!(ok.0, 202);
        // Reading needs no credentials.
        assert_eq!(call(&a, "GET", "/patroni", "", &[]).await.0, 200);
        let _ = Duration::ZERO;
    }
}
