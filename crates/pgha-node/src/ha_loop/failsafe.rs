//! Failsafe mode in the loop: the primary's confirmation round when the
//! DCS is gone, and the `failsafe` key the leader keeps while it is there
//! (see `pgha_core::ha::failsafe` for why this is safe).

use std::collections::BTreeMap;

use pgha_core::clock::Clock;
use pgha_core::dcs::DcsExt;
use pgha_core::ha::Outcome;
use pgha_core::ha::failsafe::{self, FailsafePing, Round};
use pgha_core::model::{Cluster, Failsafe};

use super::HaLoop;
use crate::failsafe::confirm_round;

impl HaLoop {
    /// Asks every member of the last known `failsafe` key to confirm this
    /// primary; when all do, the right to write is extended from the
    /// moment the round was sent, and the fences are told.
    pub(super) async fn failsafe_round(&mut self) -> Round {
        let timing = self.node.timing();
        let ping = FailsafePing {
            name: self.config.name.clone(),
            conn_url: Some(self.config.conn_url()),
            api_url: Some(self.config.api_url.clone()),
            slots: None,
            ttl: Some(timing.ttl.as_secs()),
        };
        let timeout = failsafe::round_timeout(timing, self.dynamic.failsafe_timeout());
        let sent = self.clock.now();
        let round = confirm_round(
            &self.rest,
            self.failsafe_key.as_ref(),
            &self.config.name,
            &ping,
            timeout,
        )
        .await;
        if round.confirmed() {
            self.node.handle(
                self.clock.now(),
                Outcome::FailsafeConfirmed {
                    sent,
                    valid_for: failsafe::window(timing),
                },
            );
            if let Some(deadline) = self.node.memory().lock_deadline {
                self.fence.arm(deadline);
            }
        } else {
            tracing::warn!("failsafe mode: {}", round.describe());
        }
        round
    }

    /// The leader keeps the `failsafe` key listing every member (Patroni's
    /// topology) while failsafe mode is on: whom it must ask, and who may
    /// race, if it loses the DCS. Never while its right to write stands on
    /// confirmations: a member the key gains may race as soon as it reads
    /// it, and the confirmations that right stands on never asked it (found
    /// by the simulator, seed 90290: a write whose reply was lost added a
    /// restarted member, which took the expired lock beside the primary).
    pub(super) async fn keep_failsafe_key(&mut self, cluster: &Cluster) {
        if !self.dynamic.failsafe_mode() || self.node.memory().failsafe_since.is_some() {
            return;
        }
        let wanted = failsafe::topology(cluster, &self.config.name, &self.config.api_url);
        if cluster.failsafe.as_ref().map(|f| &f.value) == Some(&wanted) {
            return;
        }
        match self.dcs.write_failsafe(&wanted).await {
            Ok(_) => self.failsafe_key = Some(wanted),
            Err(e) => {
                tracing::warn!("cannot write the failsafe key: {e}");
                // Applied or not: every member of either version may
                // count itself in the key.
                let mut both: BTreeMap<String, String> =
                    self.failsafe_key.take().map(|f| f.0).unwrap_or_default();
                both.extend(wanted.0);
                self.failsafe_key = Some(Failsafe(both));
            }
        }
    }
}
