//! What one seed simulates: the cluster's shape and settings, and the
//! faults, all drawn from the seed.

use std::fmt;
use std::time::Duration;

use pgha_core::model::Timing;

use crate::faults::{Fault, Planned};
use crate::rng::Rng;
use crate::time::{MAX_SKEW_PPM, NodeClock};

/// The replication mode of the simulated cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Async,
    /// `synchronous_mode: true`.
    On,
    /// `synchronous_mode: true` + `synchronous_mode_strict`.
    Strict,
    /// `synchronous_mode: quorum`.
    Quorum,
}

impl Mode {
    pub fn is_sync(self) -> bool {
        self != Mode::Async
    }
}

/// One simulated schedule.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub seed: u64,
    pub nodes: usize,
    pub mode: Mode,
    /// `failsafe_mode: true` in the cluster's configuration.
    pub failsafe: bool,
    pub timing: Timing,
    /// Each node's clock.
    pub clocks: Vec<NodeClock>,
    /// When faults may start (the cluster has had time to form).
    pub faults_from: Duration,
    /// When every fault is healed; from then on the cluster must converge
    /// within [`Scenario::convergence_bound`].
    pub faults_until: Duration,
    pub faults: Vec<Planned>,
    /// How late the DCS revokes an expired lease (and deletes its keys):
    /// zero, or up to 1.5 × ttl, as a loaded etcd did (a killed leader's
    /// key stayed 12 s at ttl 5). Agents must not count on a dead
    /// leader's key vanishing within ttl.
    pub revocation_delay: Duration,
    /// Once the cluster has converged, the leader's host crashes for good:
    /// the others must fail over and converge without it.
    pub leader_host_lost: bool,
}

/// The timings a schedule runs with: Patroni's defaults, a fast setup, and
/// the test cluster's.
const TIMINGS: [(u64, u64, u64); 3] = [(30, 10, 10), (10, 2, 3), (5, 1, 2)];

impl Scenario {
    /// The schedule of `seed`.
    pub fn from_seed(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let nodes = 3 + rng.index(3);
        let mode = [Mode::Async, Mode::On, Mode::Strict, Mode::Quorum][rng.index(4)];
        let (ttl, loop_wait, retry) = TIMINGS[rng.index(TIMINGS.len())];
        let timing = Timing {
            ttl: Duration::from_secs(ttl),
            loop_wait: Duration::from_secs(loop_wait),
            retry_timeout: Duration::from_secs(retry),
        };
        let clocks = (0..nodes)
            .map(|_| NodeClock {
                ppm: i64::try_from(rng.below(2 * MAX_SKEW_PPM as u64 + 1)).unwrap_or(0)
                    - MAX_SKEW_PPM,
            })
            .collect();
        let faults_from = Duration::from_secs(45);
        let window = rng.between(Duration::from_secs(60), Duration::from_secs(150));
        let faults_until = faults_from + window;
        let count = 1 + rng.index(8);
        let mut faults: Vec<Planned> = (0..count)
            .map(|_| Planned {
                at: faults_from + rng.between(Duration::ZERO, window),
                fault: Fault::draw(&mut rng, nodes, timing),
            })
            .collect();
        faults.sort_by_key(|p| p.at);
        // Restart requests come from a stream of their own, appended, so
        // that adding them changed no other draw of any seed.
        let mut requests = Rng::new(seed ^ 0x7E57_A127);
        if requests.chance(0.3) {
            faults.push(Planned {
                at: faults_from + requests.between(Duration::ZERO, window),
                fault: Fault::Restart {
                    node: requests.index(nodes),
                    takes: requests.between(
                        crate::postgres::durations::START.0,
                        crate::postgres::durations::START.1,
                    ),
                },
            });
        }
        // Failsafe mode, too, from a stream of its own.
        let failsafe = Rng::new(seed ^ 0xFA11_5AFE).chance(0.5);
        // And a DCS slow to revoke expired leases.
        let mut slow_dcs = Rng::new(seed ^ 0x51_0E7C_D000);
        let revocation_delay = if slow_dcs.chance(0.3) {
            slow_dcs.between(Duration::ZERO, timing.ttl * 3 / 2)
        } else {
            Duration::ZERO
        };
        let leader_host_lost = Rng::new(seed ^ 0x1057_4057).chance(0.3);
        Scenario {
            seed,
            nodes,
            mode,
            failsafe,
            timing,
            clocks,
            faults_from,
            faults_until,
            faults,
            revocation_delay,
            leader_host_lost,
        }
    }

    /// How long after the last fault heals the cluster must have one
    /// leader and every member streaming from it: enough for leases left
    /// by dead agents to expire (ttl), a crashed synchronous primary's
    /// hand-over wait (2 × ttl), a few loops of races, and a clone, a
    /// rewind and a start each.
    pub fn convergence_bound(&self) -> Duration {
        4 * self.timing.ttl + 6 * self.timing.loop_wait + Duration::from_secs(45)
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} nodes, {:?}{}, ttl {} loop_wait {} retry_timeout {}, clocks {:?} ppm, faults {:.0?}..{:.0?}{}{}",
            self.nodes,
            self.mode,
            if self.failsafe { ", failsafe mode" } else { "" },
            self.timing.ttl.as_secs(),
            self.timing.loop_wait.as_secs(),
            self.timing.retry_timeout.as_secs(),
            self.clocks.iter().map(|c| c.ppm).collect::<Vec<_>>(),
            self.faults_from,
            self.faults_until,
            if self.revocation_delay.is_zero() {
                String::new()
            } else {
                format!(
                    ", leases revoked {:.1?} after their ttl",
                    self.revocation_delay
                )
            },
            if self.leader_host_lost {
                ", then the leader's host lost"
            } else {
                ""
            }
        )
    }
}
