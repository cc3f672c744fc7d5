//! Whether this replica really replicates from the leader (scenario M1):
//! the count kept for `decide` ([`pgha_core::ha::StreamingWatch`]), the
//! state published, and one log line when it breaks or heals. The decision
//! itself (repair `primary_conninfo`, stay out of the race) is
//! `pgha_core::ha::decide`'s.

use pgha_core::ha::replication::{self as core, BROKEN_FIELD};
use pgha_core::ha::{Endpoint, LocalPostgres, not_streaming_limit};
use pgha_core::model::{Cluster, MemberData};
use serde_json::Value;

use super::HaLoop;
use crate::postgres::{DbState, Observed};

impl HaLoop {
    /// Logs when the replication breaks or heals: `(was_broken, broken)`
    /// as [`pgha_core::ha::HaNode::observe`] counted it.
    pub(super) fn log_streaming(
        &self,
        (was_broken, broken): (bool, bool),
        observed: &Observed,
        local: &LocalPostgres,
    ) {
        let limit = not_streaming_limit(self.node.timing());
        let watch = &self.node.memory().streaming;
        let leader = watch.upstream.as_deref().unwrap_or("the leader");
        if !was_broken && broken {
            let receiver = observed
                .db
                .as_ref()
                .and_then(|d| d.receiver_status.clone())
                .unwrap_or_else(|| "no WAL receiver".into());
            let configured = local
                .configured_upstream
                .as_ref()
                .map_or_else(|| "unknown".into(), ToString::to_string);
            tracing::warn!(
                "replication broken: not streaming from {leader} for {:.1?} (more than {limit:?}; \
                 WAL receiver: {receiver}, connected to {}, primary_conninfo points at {configured}); \
                 reported as not streaming and not a failover candidate",
                watch.not_streaming_for,
                local
                    .receiver_sender
                    .as_ref()
                    .map_or_else(|| "nothing".into(), ToString::to_string),
            );
        } else if was_broken && !broken && watch.upstream.is_some() {
            tracing::info!("replication repaired: streaming from {leader} again");
        }
    }

    /// Adds the pgha-only `replication_broken` flag to the member key.
    pub(super) fn publish_streaming(&self, data: &mut MemberData) {
        if data.replication_state.is_some()
            && self
                .node
                .memory()
                .streaming
                .broken(not_streaming_limit(self.node.timing()))
        {
            data.extra.insert(BROKEN_FIELD.into(), Value::Bool(true));
        }
    }
}

/// The server the WAL receiver is connected to.
pub fn sender(d: &DbState) -> Option<Endpoint> {
    d.receiver_upstream.as_deref().and_then(Endpoint::parse)
}

/// The `replication_state` to publish: `streaming` only when the WAL
/// receiver streams from its upstream (`cluster`'s leader, or the member
/// `replicate_from` names while it runs; any server when `cluster` is
/// `None`), `in archive recovery` for any other replica, as Patroni names
/// it; `None` on a primary.
pub fn state(
    d: &DbState,
    cluster: Option<&Cluster>,
    replicate_from: Option<&str>,
) -> Option<String> {
    core::state_of(
        d.in_recovery,
        d.receiver_status.as_deref(),
        sender(d).as_ref(),
        cluster,
        replicate_from,
    )
}
