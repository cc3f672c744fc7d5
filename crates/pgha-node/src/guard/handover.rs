//! Handing a dead agent's leader lock over, once its guard has stopped
//! PostgreSQL: the member key says `stopped` and the leader key is deleted
//! by compare-and-set, so the replicas race at once instead of after `ttl`.
//!
//! The guard itself holds no DCS connection (it must stay small: it runs
//! beside every PostgreSQL for as long as the postmaster it started). It
//! either runs a command that does this ([`Handover::Command`]: `pgha
//! --hand-over-lock NS CONFIG` for the agent, started only when the agent is
//! gone), or an embedding program gives it a connection of its own
//! ([`Handover::Dcs`]).
//!
//! Why it is safe: PostgreSQL was stopped first, so the lock protects
//! nothing any more; the lock deleted is the exact one read (compare-and-
//! set on its version) and only while it is still within the dead agent's
//! promised lifetime `lock_until_ns`, before which no other client can have
//! created a newer leader key for this member.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pgha_core::dcs::Dcs;
use pgha_core::model::PgState;

use super::protocol::{monotonic_ns, until};

/// How the guard hands a dead agent's lock over.
#[derive(Clone)]
pub enum Handover {
    /// It leaves the lock to expire (`ttl`): no connection, no command.
    Expire,
    /// It runs `program args... <lock_until_ns>` (the lock's deadline on
    /// `CLOCK_MONOTONIC`, as the last argument), which does
    /// [`release_dead_leader`] and exits 0 once the lock is released.
    Command {
        program: PathBuf,
        args: Vec<OsString>,
    },
    /// It calls [`release_dead_leader`] on this connection (its own, not
    /// shared with the agent's process: it must work when that is gone).
    Dcs(Arc<dyn Dcs>),
}

impl std::fmt::Debug for Handover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Handover::Expire => f.write_str("Expire"),
            Handover::Command { program, args } => f
                .debug_struct("Command")
                .field("program", program)
                .field("args", args)
                .finish(),
            Handover::Dcs(_) => f.write_str("Dcs(..)"),
        }
    }
}

/// What became of the dead agent's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    /// Deleted: the replicas can take over now.
    Released,
    /// Its deadline passed (before or while handing it over): nothing was
    /// deleted, expiry does the rest.
    Expired,
    /// The leader key does not name this member (any more).
    NotHeld,
    /// The DCS could not be read or refused the delete; it will expire.
    Failed(String),
}

/// Marks `member` stopped and deletes its leader lock, if the lock is still
/// this member's and `lock_until_ns` (raw `CLOCK_MONOTONIC`) has not passed.
/// Call it only once the member's PostgreSQL is stopped. Never waits past
/// `lock_until_ns`.
pub async fn release_dead_leader(dcs: &dyn Dcs, member: &str, lock_until_ns: u64) -> Released {
    let left = until(lock_until_ns);
    if left.is_zero() {
        return Released::Expired;
    }
    match tokio::time::timeout(left, release_before(dcs, member, lock_until_ns)).await {
        Ok(r) => r,
        Err(_) => Released::Expired,
    }
}

async fn release_before(dcs: &dyn Dcs, member: &str, lock_until_ns: u64) -> Released {
    let cluster = match dcs.load().await {
        Ok(c) => c,
        Err(e) => return Released::Failed(format!("cannot read the cluster: {e}")),
    };
    if monotonic_ns() >= lock_until_ns {
        return Released::Expired;
    }
    let Some(lock) = cluster.leader.clone().filter(|l| l.name == member) else {
        return Released::NotHeld;
    };
    // The member key last said "running" with the primary's WAL position;
    // replicas would wait for it to come back. Say it is stopped.
    if let Some(key) = cluster.member(member) {
        let mut data = key.data.clone();
        data.state = Some(PgState::Stopped);
        data.xlog_location = None;
        if let Err(e) = dcs.touch_member(&data).await {
            tracing::warn!("fence guard: cannot mark this member stopped: {e}");
        }
    }
    if monotonic_ns() >= lock_until_ns {
        return Released::Expired;
    }
    match dcs.release_leader_at(&lock).await {
        Ok(()) => Released::Released,
        Err(e) => Released::Failed(format!("the leader lock was not released: {e}")),
    }
}

/// Runs `handover` for `member`'s lock, bounded by `lock_until_ns`.
pub(crate) async fn hand_over(handover: &Handover, member: &str, lock_until_ns: u64) -> Released {
    match handover {
        Handover::Expire => Released::Expired,
        Handover::Dcs(dcs) => release_dead_leader(dcs.as_ref(), member, lock_until_ns).await,
        Handover::Command { program, args } => {
            run_command(program, args, lock_until_ns, until(lock_until_ns)).await
        }
    }
}

/// The command's exit status says what happened: 0 released, 3 expired,
/// 4 not held, anything else failed (its own log says why).
pub const EXIT_RELEASED: i32 = 0;
pub const EXIT_EXPIRED: i32 = 3;
pub const EXIT_NOT_HELD: i32 = 4;

impl Released {
    /// The exit status a [`Handover::Command`] program reports this with.
    pub fn exit_code(&self) -> i32 {
        match self {
            Released::Released => EXIT_RELEASED,
            Released::Expired => EXIT_EXPIRED,
            Released::NotHeld => EXIT_NOT_HELD,
            Released::Failed(_) => 1,
        }
    }
}

async fn run_command(
    program: &PathBuf,
    args: &[OsString],
    lock_until_ns: u64,
    left: Duration,
) -> Released {
    if left.is_zero() {
        return Released::Expired;
    }
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .arg(lock_until_ns.to_string())
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Released::Failed(format!("cannot run {}: {e}", program.display()));
        }
    };
    match tokio::time::timeout(left, child.wait()).await {
        Ok(Ok(status)) => match status.code() {
            Some(EXIT_RELEASED) => Released::Released,
            Some(EXIT_EXPIRED) => Released::Expired,
            Some(EXIT_NOT_HELD) => Released::NotHeld,
            _ => Released::Failed(format!("{} exited ({status})", program.display())),
        },
        Ok(Err(e)) => Released::Failed(format!("waiting for {}: {e}", program.display())),
        // Past the deadline the lock expires anyway: the child is killed
        // (dropped), and the guard does not wait for it any longer.
        Err(_) => Released::Expired,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgha_core::dcs::memory::MemoryStore;
    use pgha_core::model::{KeyLayout, MemberData, Timing};

    fn in_a_second() -> u64 {
        monotonic_ns() + 1_000_000_000
    }

    async fn cluster_led_by_a() -> (MemoryStore, Arc<dyn Dcs>) {
        let store = MemoryStore::new();
        let layout = KeyLayout::new("/service", "c");
        let a = store.client(layout, "a", Timing::default());
        a.touch_member(&MemberData {
            state: Some(PgState::Running),
            ..MemberData::default()
        })
        .await
        .unwrap();
        a.acquire_leader().await.unwrap();
        (store, Arc::new(a))
    }

    #[tokio::test]
    async fn a_held_lock_is_released_and_the_member_marked_stopped() {
        let (_store, dcs) = cluster_led_by_a().await;
        let r = release_dead_leader(dcs.as_ref(), "a", in_a_second()).await;
        assert_eq!(r, Released::Released);
        let c = dcs.load().await.unwrap();
        assert!(c.leader.is_none());
        assert_eq!(c.member("a").unwrap().data.state, Some(PgState::Stopped));
    }

    #[tokio::test]
    async fn nothing_is_touched_past_the_deadline_or_for_another_member() {
        let (_store, dcs) = cluster_led_by_a().await;
        let r = release_dead_leader(dcs.as_ref(), "a", monotonic_ns().saturating_sub(1)).await;
        assert_eq!(r, Released::Expired);
        let r = release_dead_leader(dcs.as_ref(), "b", in_a_second()).await;
        assert_eq!(r, Released::NotHeld);
        let c = dcs.load().await.unwrap();
        assert_eq!(c.leader.as_ref().map(|l| l.name.as_str()), Some("a"));
        assert_eq!(c.member("a").unwrap().data.state, Some(PgState::Running));
    }

    #[tokio::test]
    async fn a_command_reports_by_its_exit_status() {
        let sh = |code: i32| Handover::Command {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), format!("exit {code}").into(), "sh".into()],
        };
        let until = in_a_second();
        assert_eq!(hand_over(&sh(0), "a", until).await, Released::Released);
        assert_eq!(hand_over(&sh(4), "a", until).await, Released::NotHeld);
        assert!(matches!(
            hand_over(&sh(1), "a", until).await,
            Released::Failed(_)
        ));
        let missing = Handover::Command {
            program: "/nonexistent/pgha".into(),
            args: vec![],
        };
        match hand_over(&missing, "a", until).await {
            Released::Failed(why) => assert!(why.contains("/nonexistent/pgha"), "{why}"),
            other => panic!("{other:?}"),
        }
        // A command still running at the deadline is killed.
        let slow = Handover::Command {
            program: "/bin/sleep".into(),
            args: vec![],
        };
        let soon = monotonic_ns() + 200_000_000;
        // `sleep <ns>` sleeps for ages: the deadline ends it.
        assert_eq!(hand_over(&slow, "a", soon).await, Released::Expired);
    }
}
