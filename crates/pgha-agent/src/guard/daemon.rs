//! The guard process's whole life: `pgha --guard CONFIG`, started by the
//! agent, reading [`ToGuard`] lines on its standard input.
//!
//! It fences in two cases, and only stops a PostgreSQL that may accept
//! writes (no `standby.signal`):
//!
//! - **missed deadline** (the agent is frozen, or its loop and in-process
//!   fence are stuck): at `lock_until - GUARD_MARGIN` without a newer beat,
//!   PostgreSQL is stopped at once. The agent still runs, so the lock is
//!   left to it (or to expiry).
//! - **the agent is gone** (its end of the pipe closed without an `exit`
//!   line: killed, crashed): PostgreSQL is stopped at once; then, only once
//!   it is stopped and only while the lock the agent held is still within
//!   its promised lifetime, the guard marks this member `stopped` (so
//!   replicas do not wait for its last WAL position) and deletes the leader
//!   key by compare-and-set on the exact lock it read (see
//!   [`Dcs::release_leader_at`]). The replicas, watching the leader key,
//!   race at once instead of after `ttl`.
//!
//! Why the read lock is the dead agent's and not a later one of this
//! member: no client can create a new leader key while the old one lives,
//! and the read completes before `lock_until`. Why releasing is safe: the
//! postmaster was stopped first, so the lock protects nothing any more.

use std::sync::Arc;
use std::time::Duration;

use pgha_core::dcs::Dcs;
use pgha_core::model::PgState;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::protocol::{Beat, READY, ToGuard, monotonic_ns, until};
use super::stop::{Stopped, stop_primary_now};
use crate::config::Config;

/// How long before the lock's end the guard stops a primary whose agent
/// went silent. Later than the agent's own fence (`FENCE_MARGIN` before),
/// which should have acted already, and early enough for SIGQUIT to land.
pub const GUARD_MARGIN: Duration = Duration::from_millis(500);

/// Runs the guard until the agent says `exit` or is gone (then fences).
pub async fn run(config: Config) -> Result<(), String> {
    let timing = config
        .bootstrap
        .as_ref()
        .map(|b| b.dcs.timing().0)
        .unwrap_or_default();
    let dcs = crate::dcs::connect(&config.dcs, config.layout(), &config.name, timing)?;
    let data_dir = config.postgresql.data_dir.clone();
    ignore_stop_signals()?;

    let mut stdout = tokio::io::stdout();
    let ready = format!("{READY} {}\n", std::process::id());
    stdout
        .write_all(ready.as_bytes())
        .await
        .and(stdout.flush().await)
        .map_err(|e| format!("cannot tell the agent the guard is ready: {e}"))?;
    tracing::info!(
        "fence guard running for member {} (data directory {})",
        config.name,
        data_dir.display()
    );

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut beat = Beat::default();
    // The deadline already acted on, so a silent agent is fenced once.
    let mut fired_for: Option<u64> = None;
    loop {
        let fire_in = beat
            .lock_until_ns
            .filter(|d| !beat.paused && fired_for != Some(*d))
            .map(|d| until(d).saturating_sub(GUARD_MARGIN));
        let line = match fire_in {
            Some(wait) => match tokio::time::timeout(wait, lines.next_line()).await {
                Ok(line) => line,
                Err(_) => {
                    fired_for = beat.lock_until_ns;
                    fence_silent_agent(&data_dir).await;
                    continue;
                }
            },
            None => lines.next_line().await,
        };
        match line {
            Ok(Some(text)) => match serde_json::from_str::<ToGuard>(&text) {
                Ok(ToGuard::Beat(b)) => beat = b,
                Ok(ToGuard::Exit) => {
                    tracing::info!("fence guard: the agent stops cleanly; exiting");
                    return Ok(());
                }
                Err(e) => tracing::warn!("fence guard: ignoring an unreadable line ({e})"),
            },
            Ok(None) | Err(_) => {
                agent_gone(&config, dcs, beat).await;
                return Ok(());
            }
        }
    }
}

/// A service manager stopping the agent's unit signals every process in
/// it; the guard must outlive the agent long enough to fence, and it exits
/// by itself once the agent is gone.
fn ignore_stop_signals() -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    for kind in [
        SignalKind::terminate(),
        SignalKind::interrupt(),
        SignalKind::hangup(),
    ] {
        let mut s = signal(kind).map_err(|e| format!("cannot handle signal {kind:?}: {e}"))?;
        tokio::spawn(async move {
            while s.recv().await.is_some() {
                tracing::info!(
                    "fence guard: ignoring signal {kind:?}; it exits when the agent does"
                );
            }
        });
    }
    Ok(())
}

async fn fence_silent_agent(data_dir: &std::path::Path) {
    match stop_primary_now(data_dir).await {
        Stopped::Stopped { pid, killed } => tracing::error!(
            "FENCE GUARD: the agent did not renew the leader lock in time; stopped PostgreSQL (postmaster {pid}{})",
            if killed { ", killed" } else { "" }
        ),
        Stopped::StillRunning(pid) => tracing::error!(
            "FENCE GUARD: the agent did not renew the leader lock in time, and postmaster {pid} survived SIGQUIT and SIGKILL"
        ),
        Stopped::NotRunning | Stopped::Replica(_) => {}
    }
}

/// The agent died without saying goodbye: fence, then hand the lock over.
async fn agent_gone(config: &Config, dcs: Arc<dyn Dcs>, beat: Beat) {
    if beat.paused {
        tracing::warn!("fence guard: the agent is gone; paused, so nothing is touched");
        return;
    }
    let stopped = stop_primary_now(&config.postgresql.data_dir).await;
    match &stopped {
        Stopped::Stopped { pid, killed } => tracing::error!(
            "FENCE GUARD: the agent is gone; stopped its primary PostgreSQL (postmaster {pid}{})",
            if *killed { ", killed" } else { "" }
        ),
        Stopped::StillRunning(pid) => {
            tracing::error!(
                "FENCE GUARD: the agent is gone and postmaster {pid} survived SIGQUIT and SIGKILL; \
                 leaving the leader lock to expire"
            );
            return;
        }
        Stopped::NotRunning | Stopped::Replica(_) => {}
    }
    let Some(lock_until) = beat.lock_until_ns else {
        tracing::info!("fence guard: the agent is gone; it held no leader lock");
        return;
    };
    if until(lock_until).is_zero() {
        tracing::info!("fence guard: the agent is gone; its leader lock has expired already");
        return;
    }
    let cluster = match dcs.load().await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("fence guard: cannot read the cluster ({e}); the lock will expire");
            return;
        }
    };
    if monotonic_ns() >= lock_until {
        tracing::info!("fence guard: the lock expired while reading the cluster; leaving it");
        return;
    }
    let Some(lock) = cluster.leader.clone().filter(|l| l.name == config.name) else {
        tracing::info!("fence guard: the agent is gone; the leader lock is not this member's");
        return;
    };
    // Our member key last said "running" with the primary's WAL position;
    // replicas would wait for it to come back. Say it is stopped.
    if let Some(member) = cluster.member(&config.name) {
        let mut data = member.data.clone();
        data.state = Some(PgState::Stopped);
        data.xlog_location = None;
        if let Err(e) = dcs.touch_member(&data).await {
            tracing::warn!("fence guard: cannot mark this member stopped: {e}");
        }
    }
    match dcs.release_leader_at(&lock).await {
        Ok(()) => tracing::warn!(
            "FENCE GUARD: released the leader lock of the dead agent: replicas can take over now"
        ),
        Err(e) => {
            tracing::warn!("fence guard: the leader lock was not released ({e}); it will expire")
        }
    }
}
