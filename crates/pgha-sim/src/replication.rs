//! Time passing on the data path: WAL streaming to the standbys, the
//! client's commits, synchronous acknowledgements as PostgreSQL counts
//! them, the DCS watch waking agents, and PostgreSQL finishing a start or
//! a promotion.

use std::time::Duration;

use pgha_core::ha::PgRole;

use crate::invariants::{Violation, missing_acknowledged};
use crate::postgres::{Process, Record, Sender, Waiting, acknowledged_up_to};
use crate::world::{AgentState, Event, TICK, World};

impl World {
    // --- time passing: replication, the client, the DCS watch

    pub(crate) fn tick(&mut self) {
        for j in 0..self.nodes.len() {
            self.stream(j);
        }
        for j in 0..self.nodes.len() {
            if self.nodes[j].host_up && self.nodes[j].pg.is_primary() {
                self.commit(j);
            }
        }
        for j in 0..self.nodes.len() {
            if self.nodes[j].pg.is_primary() {
                self.acknowledge(j);
            }
        }
        let rev = self.store.leader_changed_at(&self.layout);
        if rev != self.leader_rev {
            self.leader_rev = rev;
            self.wake_watchers();
        }
        if self.healed_at.is_some() {
            self.check_converged();
        }
        self.schedule(self.t + TICK, Event::Tick);
    }

    /// Node `j`'s WAL receiver: streams from the node it follows while that
    /// one runs, is reachable, and has every record `j` has.
    pub(crate) fn stream(&mut self, j: usize) {
        let from = self.nodes[j].pg.follows.filter(|&u| {
            u != j
                && self.nodes[j].pg.is_replica()
                && self.linked(j, u)
                && self.nodes[u].pg.is_up()
                && match (&self.nodes[j].pg.data, &self.nodes[u].pg.data) {
                    (Some(mine), Some(theirs)) => mine.is_prefix_of(theirs),
                    _ => false,
                }
        });
        self.nodes[j].pg.streaming_from = from;
        let Some(u) = from else { return };
        if self.nodes[u].pg.senders_frozen {
            return;
        }
        let have = self.nodes[j].pg.data.as_ref().map_or(0, |d| d.wal.len());
        if self.nodes[u]
            .pg
            .data
            .as_ref()
            .is_none_or(|d| d.wal.len() == have)
        {
            return;
        }
        let (suffix, history) = self.nodes[u]
            .pg
            .data
            .as_ref()
            .map(|d| (d.wal[have..].to_vec(), d.history.clone()))
            .unwrap_or_default();
        if let Some(d) = self.nodes[j].pg.data.as_mut() {
            d.wal.extend(suffix);
            // Following a timeline switch, a standby fetches the new
            // timeline's history file (the whole lineage).
            let end = d.lsn();
            d.history = history.into_iter().filter(|(_, at)| *at < end).collect();
        }
    }

    /// The client commits one row on node `j`.
    pub(crate) fn commit(&mut self, j: usize) {
        let id = self.next_commit;
        let pg = &mut self.nodes[j].pg;
        let synchronous = !pg.sync_names().is_empty();
        let Some(d) = pg.data.as_mut() else { return };
        let timeline = d.timeline();
        d.wal.push(Record { id, timeline });
        let lsn = d.lsn();
        self.next_commit += 1;
        self.commits += 1;
        if synchronous {
            pg.waiting.push(Waiting { id, lsn });
        } else {
            self.acked.push(id);
        }
    }

    /// The WAL senders of node `j`: the standbys streaming from it.
    pub fn senders(&self, j: usize) -> Vec<Sender> {
        self.nodes
            .iter()
            .filter(|n| n.pg.is_replica() && n.pg.streaming_from == Some(j))
            .map(|n| Sender {
                name: n.name.clone(),
                flush: n.pg.lsn(),
            })
            .collect()
    }

    /// Releases node `j`'s waiting commits its synchronous standbys have.
    pub fn acknowledge(&mut self, j: usize) {
        if self.nodes[j].pg.waiting.is_empty() {
            return;
        }
        let senders = self.senders(j);
        let upto = acknowledged_up_to(self.nodes[j].pg.sync_names(), &senders);
        let pg = &mut self.nodes[j].pg;
        let (done, still): (Vec<Waiting>, Vec<Waiting>) = pg
            .waiting
            .iter()
            .partition(|w| upto.is_none_or(|u| w.lsn <= u));
        pg.waiting = still;
        self.acked.extend(done.iter().map(|w| w.id));
    }

    /// A watch on the leader key fires: the agents watching it look now.
    pub(crate) fn wake_watchers(&mut self) {
        let at = self.t + Duration::from_millis(5);
        for i in 0..self.nodes.len() {
            let reachable = self.dcs_reachable(i);
            let n = &mut self.nodes[i];
            if n.agent_state != AgentState::Running || !reachable {
                continue;
            }
            if let Some(a) = n.agent.as_mut()
                && a.watching
                && a.next_wake > at
            {
                a.next_wake = at;
                let incarnation = n.incarnation;
                self.schedule(
                    at,
                    Event::Wake {
                        node: i,
                        incarnation,
                    },
                );
            }
        }
    }

    pub fn schedule_wake(&mut self, i: usize, at: Duration) {
        let incarnation = self.nodes[i].incarnation;
        if let Some(a) = self.nodes[i].agent.as_mut() {
            a.next_wake = at;
        }
        self.schedule(
            at,
            Event::Wake {
                node: i,
                incarnation,
            },
        );
    }

    // --- PostgreSQL completions

    pub(crate) fn pg_ready(&mut self, i: usize, op: u64) {
        let n = &mut self.nodes[i];
        if n.pg_op != op || !n.host_up {
            return;
        }
        if let Process::Starting(role) = n.pg.process
            && n.pg.data.is_some()
        {
            n.pg.process = Process::Up(role);
            if role == PgRole::Primary {
                self.became_primary(i, "started as primary");
            }
        }
    }

    pub(crate) fn pg_promoted(&mut self, i: usize, op: u64, at_least: u64) {
        let marker = self.next_marker;
        let n = &mut self.nodes[i];
        if n.pg_op != op || !n.host_up || !n.pg.is_replica() {
            return;
        }
        let Some(d) = n.pg.data.as_mut() else { return };
        let old = d.timeline();
        d.history.push((old, d.lsn()));
        d.wal.push(Record {
            id: marker,
            timeline: (old + 1).max(at_least),
        });
        d.was_primary = true;
        n.pg.process = Process::Up(PgRole::Primary);
        n.pg.follows = None;
        n.pg.streaming_from = None;
        self.next_marker += 1;
        self.became_primary(i, "promoted");
    }

    /// Node `i` accepts writes now: in a synchronous mode it must hold
    /// every commit acknowledged so far.
    pub(crate) fn became_primary(&mut self, i: usize, how: &str) {
        let tl = self.nodes[i].pg.data.as_ref().map_or(0, |d| d.timeline());
        let name = self.nodes[i].name.clone();
        self.trace(format!("{name}: PostgreSQL {how} (timeline {tl})"));
        if !self.scenario.mode.is_sync() {
            return;
        }
        if let Some((missing, first)) =
            missing_acknowledged(&self.acked, self.nodes[i].pg.data.as_ref())
        {
            self.violation = Some(Violation::LostAcknowledged {
                at: self.t,
                node: name,
                missing,
                acknowledged: self.acked.len(),
                first_missing: first,
            });
        }
    }
}
