//! What the writers' records say after a fault: acknowledged rows lost,
//! whether two servers accepted writes at the same time, and how long the
//! writes stopped.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use super::writer::Ack;

/// One server's tenure as a writable primary: the writes one postmaster
/// run acknowledged. (A server that accepted writes, became a replica and
/// was promoted again was restarted in between: a PostgreSQL primary
/// becomes a replica only through a restart.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenure {
    /// The server's name (its member name where known, else `addr:port`).
    pub server: String,
    pub postmaster_start_us: i64,
    /// The server time of its first and last acknowledged write (µs).
    pub first_us: i64,
    pub last_us: i64,
    pub writes: usize,
}

/// The tenures in `acks`, ordered by their first write; `name` maps a
/// server address to a member name.
pub fn tenures(acks: &[Ack], name: impl Fn(&str) -> String) -> Vec<Tenure> {
    let mut by: BTreeMap<(String, i64), Tenure> = BTreeMap::new();
    for a in acks {
        let t = by
            .entry((a.server.clone(), a.postmaster_start_us))
            .or_insert_with(|| Tenure {
                server: name(&a.server),
                postmaster_start_us: a.postmaster_start_us,
                first_us: a.server_us,
                last_us: a.server_us,
                writes: 0,
            });
        t.first_us = t.first_us.min(a.server_us);
        t.last_us = t.last_us.max(a.server_us);
        t.writes += 1;
    }
    let mut out: Vec<Tenure> = by.into_values().collect();
    out.sort_by_key(|t| (t.first_us, t.last_us));
    out
}

/// Two tenures that overlap in time: two servers accepted writes at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlap {
    pub earlier: Tenure,
    pub later: Tenure,
    /// How long both accepted writes.
    pub both_for: Duration,
}

impl std::fmt::Display for Overlap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} accepted writes until {} µs while {} accepted writes from {} µs: \
             both accepted writes for {} ms ({} and {} writes in their tenures)",
            self.earlier.server,
            self.earlier.last_us,
            self.later.server,
            self.later.first_us,
            self.both_for.as_millis(),
            self.earlier.writes,
            self.later.writes
        )
    }
}

/// Every pair of tenures whose intervals `[first, last]` overlap. A
/// legitimate failover or switchover orders them: the old primary stops
/// accepting writes (it is stopped or demoted) before its lock can pass, and
/// the new one is promoted only after it took the lock, so the old tenure
/// ends before the new one begins.
pub fn overlaps(tenures: &[Tenure]) -> Vec<Overlap> {
    let mut out = Vec::new();
    for (i, a) in tenures.iter().enumerate() {
        for b in &tenures[i + 1..] {
            if b.first_us <= a.last_us {
                let both = a.last_us.min(b.last_us) - b.first_us;
                out.push(Overlap {
                    earlier: a.clone(),
                    later: b.clone(),
                    both_for: Duration::from_micros(both.max(0) as u64),
                });
            }
        }
    }
    out
}

/// The acknowledged rows missing from `present` (the final primary's
/// `(writer, id)` pairs).
pub fn lost<'a>(acks: &'a [Ack], present: &HashSet<(String, i64)>) -> Vec<&'a Ack> {
    acks.iter()
        .filter(|a| !present.contains(&(a.writer.clone(), a.id)))
        .collect()
}

/// The longest gap between consecutive acknowledgements (client time), and
/// when it ended; gaps that end before `from` are ignored. The time before
/// the first acknowledgement after `from` counts as a gap from `from`.
pub fn longest_gap(acks: &[Ack], from: Duration) -> Option<(Duration, Duration)> {
    let mut times: Vec<Duration> = acks.iter().map(|a| a.at).collect();
    times.sort();
    let mut best: Option<(Duration, Duration)> = None;
    let mut prev: Option<Duration> = None;
    for t in times {
        if t >= from {
            let start = prev.unwrap_or(from);
            let gap = t.saturating_sub(start);
            if best.is_none_or(|(g, _)| gap > g) {
                best = Some((gap, t));
            }
        }
        prev = Some(t);
    }
    best
}

/// The first acknowledgement at or after `from` by a server other than
/// `old` (client time): when writes resumed on a new primary.
pub fn first_ack_elsewhere(acks: &[Ack], from: Duration, old: &str) -> Option<Duration> {
    acks.iter()
        .filter(|a| a.at >= from && a.server != old)
        .map(|a| a.at)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(server: &str, pm: i64, us: i64, at_ms: u64, id: i64) -> Ack {
        Ack {
            writer: "main".into(),
            id,
            server: server.into(),
            postmaster_start_us: pm,
            server_us: us,
            at: Duration::from_millis(at_ms),
        }
    }

    #[test]
    fn a_failover_in_order_is_not_split_brain() {
        let acks = vec![
            ack("a", 1, 100, 1, 1),
            ack("a", 1, 200, 2, 2),
            ack("b", 5, 300, 3, 3),
            ack("b", 5, 400, 4, 4),
            // a restarted (new postmaster) and primary again later
            ack("a", 9, 500, 5, 5),
        ];
        let t = tenures(&acks, str::to_string);
        assert_eq!(t.len(), 3);
        assert!(overlaps(&t).is_empty());
    }

    #[test]
    fn interleaved_writes_on_two_servers_are_split_brain() {
        let acks = vec![
            ack("a", 1, 100, 1, 1),
            ack("b", 5, 300, 3, 2),
            ack("a", 1, 350, 4, 3),
            ack("b", 5, 400, 5, 4),
        ];
        let o = overlaps(&tenures(&acks, str::to_string));
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].earlier.server, "a");
        assert_eq!(o[0].both_for, Duration::from_micros(50));
    }

    #[test]
    fn gaps_and_losses() {
        let acks = vec![
            ack("a", 1, 100, 10, 1),
            ack("a", 1, 200, 20, 2),
            ack("b", 2, 300, 520, 3),
            ack("b", 2, 400, 530, 4),
        ];
        assert_eq!(
            longest_gap(&acks, Duration::ZERO),
            Some((Duration::from_millis(500), Duration::from_millis(520)))
        );
        assert_eq!(
            first_ack_elsewhere(&acks, Duration::from_millis(15), "a"),
            Some(Duration::from_millis(520))
        );
        let present: HashSet<(String, i64)> = [
            ("main".to_string(), 1),
            ("main".to_string(), 3),
            ("main".to_string(), 4),
        ]
        .into();
        let l = lost(&acks, &present);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].id, 2);
    }
}
