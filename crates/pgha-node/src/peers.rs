//! Asking the other members how far their WAL is, for the leader race.
//!
//! Each member's REST API answers `GET /patroni`; a member that does not
//! answer in time is judged by its member key instead (a loop old, at most).

use std::time::Duration;

use futures::future::join_all;
use hyper::Method;
use pgha_core::ha::{PeerSource, PeerStatus};
use pgha_core::model::{Member, Tags, lenient};
use serde_json::Value;

use pgha_rest_client::RestClient;

/// The status of every one of `members` but `me`: from its REST API
/// (`GET /patroni`) when it answers within `timeout`, else from its member
/// key.
pub async fn statuses(
    client: &RestClient,
    members: &[Member],
    me: &str,
    timeout: Duration,
) -> Vec<PeerStatus> {
    let others: Vec<&Member> = members.iter().filter(|m| m.name != me).collect();
    join_all(others.into_iter().map(|m| async move {
        match client.call(m, Method::GET, "patroni", None, timeout).await {
            // Only a status answer is the member's status: an error body
            // (a proxy's 502, a service that serves no `/patroni`) says
            // nothing about its PostgreSQL.
            Ok(r) if r.status == 200 => match r.json() {
                Some(json) => return from_rest(m, &json),
                None => tracing::debug!("peer {}: not JSON; using its member key", m.name),
            },
            Ok(r) => tracing::debug!(
                "peer {}: GET /patroni answered {}; using its member key",
                m.name,
                r.status
            ),
            Err(e) => tracing::debug!("peer {}: {e}; using its member key", m.name),
        }
        from_member_key(m)
    }))
    .await
}

fn from_member_key(m: &Member) -> PeerStatus {
    PeerStatus {
        name: m.name.clone(),
        source: PeerSource::MemberKey,
        is_primary: m.data.role.as_ref().is_some_and(|r| r.is_primary()),
        running: m.data.is_running(),
        starting: m.data.state == Some(pgha_core::model::PgState::Starting),
        wal_position: m.data.xlog_location,
        timeline: m.data.timeline,
        nofailover: m.data.tags.nofailover(),
        failover_priority: m.data.tags.failover_priority(),
        replication_broken: broken_flag(&m.data.extra),
        takes_lock_back: takeback_flag(&m.data.extra),
    }
}

/// The pgha-only `replication_broken` flag of a member key or `GET /patroni`.
fn broken_flag(fields: &serde_json::Map<String, Value>) -> bool {
    fields.get(pgha_core::ha::replication::BROKEN_FIELD) == Some(&Value::Bool(true))
}

/// The pgha-only flag of a former primary that takes the lock back.
fn takeback_flag(fields: &serde_json::Map<String, Value>) -> bool {
    fields.get(pgha_core::ha::failsafe::TAKEBACK_FIELD) == Some(&Value::Bool(true))
}

/// Reads `GET /patroni`: `xlog.location` on a primary, the furthest of
/// `xlog.received_location` / `replayed_location` on a replica.
fn from_rest(m: &Member, json: &Value) -> PeerStatus {
    let xlog = json.get("xlog");
    let field = |k: &str| {
        xlog.and_then(|x| x.get(k))
            .and_then(lenient::int)
            .and_then(|v| u64::try_from(v).ok())
    };
    let role = json.get("role").and_then(Value::as_str).unwrap_or_default();
    let running = json.get("state").and_then(Value::as_str) == Some("running");
    // Only a running PostgreSQL that says it is a primary is one: a stopped
    // or starting node reports the role it last had.
    let is_primary = running && (role == "primary" || role == "master");
    let wal = if is_primary {
        field("location")
    } else {
        match (field("received_location"), field("replayed_location")) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
    .or(m.data.xlog_location);
    let tags = json
        .get("tags")
        .and_then(Value::as_object)
        .map(|t| Tags(t.clone()))
        .unwrap_or_else(|| m.data.tags.clone());
    PeerStatus {
        name: m.name.clone(),
        source: PeerSource::Rest,
        is_primary,
        running,
        starting: json.get("state").and_then(Value::as_str) == Some("starting"),
        wal_position: wal,
        timeline: json
            .get("timeline")
            .and_then(lenient::int)
            .and_then(|v| u64::try_from(v).ok())
            .or(m.data.timeline),
        nofailover: tags.nofailover(),
        failover_priority: tags.failover_priority(),
        replication_broken: json
            .as_object()
            .map_or_else(|| broken_flag(&m.data.extra), broken_flag),
        takes_lock_back: json
            .as_object()
            .map_or_else(|| takeback_flag(&m.data.extra), takeback_flag),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgha_core::model::{MemberData, Version};
    use serde_json::json;

    fn member() -> Member {
        Member {
            name: "n2".into(),
            version: Version::number(1),
            owner: None,
            data: MemberData::default(),
        }
    }

    #[test]
    fn rest_answers_are_read_like_patroni_writes_them() {
        let p = from_rest(
            &member(),
            &json!({"state": "running", "role": "replica", "xlog": {"received_location": 100, "replayed_location": 90}, "tags": {"failover_priority": 3}}),
        );
        assert_eq!(
            (p.wal_position, p.is_primary, p.failover_priority, p.running),
            (Some(100), false, 3, true)
        );
        let p = from_rest(
            &member(),
            &json!({"state": "running", "role": "primary", "xlog": {"location": 500}}),
        );
        assert_eq!((p.wal_position, p.is_primary), (Some(500), true));
        let p = from_rest(&member(), &json!({"state": "starting", "role": "primary"}));
        assert!(!p.is_primary, "a starting node is not a live primary");
    }

    #[test]
    fn the_replication_broken_flag_is_read_from_rest_or_the_member_key() {
        let running = json!({"state": "running", "role": "replica"});
        assert!(!from_rest(&member(), &running).replication_broken);
        let mut broken = running.clone();
        broken["replication_broken"] = json!(true);
        assert!(from_rest(&member(), &broken).replication_broken);
        let mut m = member();
        m.data
            .extra
            .insert("replication_broken".into(), json!(true));
        assert!(from_member_key(&m).replication_broken);
        // The REST answer is the fresher one.
        assert!(!from_rest(&m, &running).replication_broken);
        assert!(!from_member_key(&member()).replication_broken);
    }
}
