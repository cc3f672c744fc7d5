//! The guard process's whole life: `pg-fence-guard` (or an embedding
//! program's own guard mode), started by the agent, reading [`ToGuard`]
//! lines on its standard input.
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
//!   its promised lifetime, the lock is handed over ([`super::handover`]:
//!   this member marked `stopped`, the leader key deleted by compare-and-
//!   set), so the replicas, watching the leader key, race at once instead
//!   of after `ttl`.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::handover::{Handover, Released, hand_over};
use super::postmaster::Postmaster;
use super::protocol::{
    Beat, FromGuard, Launch, READY, ToGuard, WatchdogReport, WatchdogWant, monotonic_ns, until,
};
use super::service_watchdog::ServiceWatchdog;
use super::stop::{Stopped, Target, stop_now};
use super::watchdog::Watchdog;

/// How long before the lock's end the guard stops a primary whose agent
/// went silent. Later than the agent's own fence (`FENCE_MARGIN` before),
/// which should have acted already, and early enough for SIGQUIT to land.
pub const GUARD_MARGIN: Duration = Duration::from_millis(500);

/// The guard's name in `ps` (and its program's, `pg-fence-guard`): at most
/// 15 bytes (the kernel's limit) and without "pgha" in it.
pub const PROCESS_NAME: &std::ffi::CStr = c"pg-fence-guard";

/// Whose PostgreSQL the guard protects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardTarget {
    /// The member name: whose leader lock and member key it may hand over.
    pub member: String,
    /// The data directory of the PostgreSQL it stops.
    pub data_dir: PathBuf,
}

/// Why the guard could not run.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    /// It cannot ignore the stop signals a service manager sends, so it
    /// could be stopped before it fenced.
    #[error("cannot handle signal {signal}: {source}")]
    Signals {
        signal: &'static str,
        source: std::io::Error,
    },
    /// The agent never learns the guard runs.
    #[error("cannot tell the agent the guard is ready: {0}")]
    Ready(std::io::Error),
}

/// Runs the guard until the agent says `exit` or is gone (then fences,
/// and hands the dead agent's lock over as `handover` says), and, if it
/// started the postmaster, until that exits.
/// Its program reads [`ToGuard`] lines on standard input and answers on
/// standard output.
///
/// Run it with `block_on` on a current-thread runtime, as `pgha` does:
/// the postmaster it starts is killed when the *thread* that forked it
/// ends (the parent-death signal is per thread), so that thread must be
/// the one that lives as long as the process.
pub async fn run(target: GuardTarget, handover: Handover) -> Result<(), GuardError> {
    let data_dir = target.data_dir.clone();
    // `ps` shows the guard under one name whichever program runs it (an
    // embedding program started through `/proc/self/exe` would be "exe"),
    // and one without "pgha" in it: `pkill pgha` aimed at the agent leaves
    // the guard to fence and hand the lock over.
    if let Err(e) = nix::sys::prctl::set_name(PROCESS_NAME) {
        tracing::debug!("fence guard: cannot set the process name: {e}");
    }
    ignore_stop_signals()?;

    let mut stdout = tokio::io::stdout();
    let ready = format!("{READY} {}\n", std::process::id());
    stdout
        .write_all(ready.as_bytes())
        .await
        .and(stdout.flush().await)
        .map_err(GuardError::Ready)?;
    tracing::info!(
        "fence guard running for member {} (data directory {})",
        target.member,
        data_dir.display()
    );
    if let Some(service) = ServiceWatchdog::from_env() {
        tracing::info!(
            "fence guard: pinging systemd's service watchdog every {:?}",
            service.interval()
        );
        // On this thread: if the guard freezes, so do the pings.
        tokio::spawn(service.keep_pinging());
    }

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut beat = Beat::default();
    let mut dog = DogKeeper::new(stdout);
    // The postmaster this guard started, while it runs: it dies with the
    // guard (see `postmaster`), so the guard outlives the agent for as
    // long as it runs.
    let mut postmaster: Option<Postmaster> = None;
    // Whether the current beat's deadline was already acted on, so a silent
    // agent is fenced once.
    let mut fired = false;
    loop {
        let fire_in = (!fired && !beat.paused)
            .then(|| fence_at(&beat, &dog))
            .flatten()
            .map(until);
        let deadline = async {
            match fire_in {
                Some(wait) => tokio::time::sleep(wait).await,
                None => std::future::pending().await,
            }
        };
        let child_exit = async {
            match postmaster.as_mut() {
                Some(pm) => pm.exited().await,
                None => std::future::pending().await,
            }
        };
        let line = tokio::select! {
            line = lines.next_line() => line,
            () = deadline => {
                fired = true;
                if fence_silent_agent(&data_dir).await {
                    dog.disarm("PostgreSQL is stopped").await;
                }
                continue;
            }
            status = child_exit => {
                log_exit(postmaster.take(), status);
                continue;
            }
        };
        match line {
            Ok(Some(text)) => match serde_json::from_str::<ToGuard>(&text) {
                Ok(ToGuard::Beat(b)) => {
                    beat = b;
                    fired = false;
                    dog.follow(&beat).await;
                }
                Ok(ToGuard::Launch(launch)) => {
                    let reply = launch_postmaster(&launch, &mut postmaster);
                    dog.send(&reply).await;
                }
                Ok(ToGuard::Exit) => {
                    dog.disarm("the agent stops").await;
                    tracing::info!("fence guard: the agent stops cleanly");
                    keep_until_exit(postmaster).await;
                    return Ok(());
                }
                Err(e) => tracing::warn!("fence guard: ignoring an unreadable line ({e})"),
            },
            Ok(None) | Err(_) => {
                if agent_gone(&target, &handover, &beat).await {
                    dog.disarm("the dead agent's PostgreSQL is stopped").await;
                } else if dog.held() {
                    tracing::error!(
                        "FENCE GUARD: PostgreSQL could not be stopped; leaving the watchdog to reset the host"
                    );
                    dog.abandon();
                }
                keep_until_exit(postmaster).await;
                return Ok(());
            }
        }
    }
}

/// Starts the postmaster the agent asked for, unless the last one still
/// runs (a second would only find the data directory locked).
fn launch_postmaster(launch: &Launch, postmaster: &mut Option<Postmaster>) -> FromGuard {
    if let Some(pm) = postmaster.as_ref() {
        return FromGuard::LaunchFailed {
            why: format!(
                "the postmaster this guard started (pid {}) still runs",
                pm.pid
            ),
        };
    }
    match Postmaster::start(launch) {
        Ok(pm) => {
            tracing::info!(
                "fence guard: started the postmaster (pid {}); it stops if this guard dies",
                pm.pid
            );
            let pid = pm.pid;
            *postmaster = Some(pm);
            FromGuard::Launched { pid }
        }
        Err(e) => {
            let why = format!("cannot start {}: {e}", launch.program.display());
            tracing::error!("fence guard: {why}");
            FromGuard::LaunchFailed { why }
        }
    }
}

fn log_exit(postmaster: Option<Postmaster>, status: std::io::Result<std::process::ExitStatus>) {
    let pid = postmaster.map_or(0, |pm| pm.pid);
    match status {
        Ok(s) => tracing::info!("fence guard: the postmaster (pid {pid}) exited ({s})"),
        Err(e) => tracing::warn!("fence guard: waiting for the postmaster (pid {pid}): {e}"),
    }
}

/// With the agent gone (or stopped while PostgreSQL is left running, as in
/// maintenance mode), the guard stays while the postmaster it started
/// runs: its exit would kill it. A replica goes on streaming, a paused
/// primary on serving, until PostgreSQL stops (or a new agent restarts it
/// under its own guard).
async fn keep_until_exit(postmaster: Option<Postmaster>) {
    let Some(mut pm) = postmaster else { return };
    tracing::info!(
        "fence guard: the postmaster (pid {}) still runs; staying until it stops, since it would \
         die with this guard",
        pm.pid
    );
    let status = pm.exited().await;
    log_exit(Some(pm), status);
}

/// When a silent agent's PostgreSQL must be stopped: before its lock can
/// expire, and before the watchdog (if held) would reset the host.
fn fence_at(beat: &Beat, dog: &DogKeeper) -> Option<u64> {
    let lock = beat
        .lock_until_ns?
        .saturating_sub(u64::try_from(GUARD_MARGIN.as_nanos()).unwrap_or(u64::MAX));
    Some(match dog.expires_ns() {
        Some(reset) => lock.min(reset.saturating_sub(1_000_000_000)),
        None => lock,
    })
}

/// Holds the watchdog while the beats say the lock is held, and reports
/// each change to the agent on standard output.
struct DogKeeper {
    out: tokio::io::Stdout,
    dog: Option<(WatchdogWant, Watchdog)>,
    last_keepalive_ns: u64,
    /// The request that failed, not retried until it changes or the lock
    /// is given up and taken again (no log spam, as in Patroni).
    failed: Option<WatchdogWant>,
}

impl DogKeeper {
    fn new(out: tokio::io::Stdout) -> Self {
        DogKeeper {
            out,
            dog: None,
            last_keepalive_ns: 0,
            failed: None,
        }
    }

    fn held(&self) -> bool {
        self.dog.is_some()
    }

    /// When the held watchdog resets the host without another keepalive.
    fn expires_ns(&self) -> Option<u64> {
        let (_, dog) = self.dog.as_ref()?;
        let timeout = dog.timeout_s?;
        Some(
            self.last_keepalive_ns
                .saturating_add(u64::from(timeout).saturating_mul(1_000_000_000)),
        )
    }

    async fn follow(&mut self, beat: &Beat) {
        let want = beat
            .watchdog
            .clone()
            .filter(|_| beat.lock_until_ns.is_some() && !beat.paused);
        let Some(want) = want else {
            if self.failed.take().is_some() {
                // The failure was about that lock; the next one tries again.
                self.report(&WatchdogReport::Off).await;
            }
            self.disarm("the leader lock is not held").await;
            return;
        };
        if let Some((held, dog)) = self.dog.as_mut() {
            if *held == want {
                match dog.keepalive() {
                    Ok(()) => self.last_keepalive_ns = monotonic_ns(),
                    Err(e) => tracing::error!("fence guard: {e}"),
                }
                return;
            }
            self.disarm("its settings changed").await;
        }
        if self.failed.as_ref() == Some(&want) {
            return;
        }
        let report = match Watchdog::activate(&want.device, want.timeout_s) {
            Ok(dog) => {
                self.last_keepalive_ns = monotonic_ns();
                let report = match dog.timeout_s {
                    Some(t) => {
                        tracing::info!(
                            "fence guard: watchdog {} active with a {t} s timeout",
                            want.device.display()
                        );
                        WatchdogReport::Active { timeout_s: t }
                    }
                    None => {
                        let why = format!(
                            "{} takes no watchdog ioctl: keepalives are written but its timeout is unknown",
                            want.device.display()
                        );
                        tracing::warn!("fence guard: {why}");
                        WatchdogReport::Unverified { why }
                    }
                };
                self.dog = Some((want, dog));
                report
            }
            Err(e) => {
                tracing::warn!("fence guard: watchdog not activated: {e}");
                self.failed = Some(want);
                WatchdogReport::Failed { why: e.to_string() }
            }
        };
        self.report(&report).await;
    }

    async fn disarm(&mut self, why: &str) {
        let Some((want, dog)) = self.dog.take() else {
            return;
        };
        match dog.disarm() {
            Ok(()) => tracing::info!(
                "fence guard: watchdog {} disarmed: {why}",
                want.device.display()
            ),
            Err(e) => tracing::error!("fence guard: {e}"),
        }
        self.report(&WatchdogReport::Off).await;
    }

    /// Exits holding the device open without a magic close: the kernel
    /// resets the host when its timer runs out.
    fn abandon(&mut self) {
        if let Some((_, dog)) = self.dog.take() {
            std::mem::forget(dog);
        }
    }

    async fn report(&mut self, report: &WatchdogReport) {
        self.send(&FromGuard::Watchdog(report.clone())).await;
    }

    /// One line to the agent (this keeper owns the guard's standard output).
    async fn send(&mut self, message: &FromGuard) {
        let Ok(mut line) = serde_json::to_string(message) else {
            return;
        };
        line.push('\n');
        // The agent may be gone; then nobody needs the report.
        let _ = self.out.write_all(line.as_bytes()).await;
        let _ = self.out.flush().await;
    }
}

/// A service manager stopping the agent's unit signals every process in
/// it; the guard must outlive the agent long enough to fence, and it exits
/// by itself once the agent is gone.
fn ignore_stop_signals() -> Result<(), GuardError> {
    use tokio::signal::unix::{SignalKind, signal};
    for (kind, name) in [
        (SignalKind::terminate(), "SIGTERM"),
        (SignalKind::interrupt(), "SIGINT"),
        (SignalKind::hangup(), "SIGHUP"),
    ] {
        let mut s = signal(kind).map_err(|source| GuardError::Signals {
            signal: name,
            source,
        })?;
        tokio::spawn(async move {
            while s.recv().await.is_some() {
                tracing::info!("fence guard: ignoring {name}; it exits when the agent does");
            }
        });
    }
    Ok(())
}

/// Returns whether PostgreSQL accepts no writes now.
async fn fence_silent_agent(data_dir: &std::path::Path) -> bool {
    // Only armed while the lock is held: a promotion may be under way.
    let stopped = stop_now(data_dir, Target::Any).await;
    match &stopped {
        Stopped::Stopped { pid, killed } => tracing::error!(
            "FENCE GUARD: the agent did not renew the leader lock in time; stopped PostgreSQL (postmaster {pid}{})",
            if *killed { ", killed" } else { "" }
        ),
        Stopped::StillRunning(pid) => tracing::error!(
            "FENCE GUARD: the agent did not renew the leader lock in time, and postmaster {pid} survived SIGQUIT and SIGKILL"
        ),
        Stopped::NotRunning | Stopped::Replica(_) => {}
    }
    stopped.is_safe()
}

/// The agent died without saying goodbye: fence, then hand the lock over.
/// Returns whether PostgreSQL accepts no writes now (paused: it was left
/// alone on purpose, and so is the watchdog).
async fn agent_gone(target: &GuardTarget, handover: &Handover, beat: &Beat) -> bool {
    if beat.paused {
        tracing::warn!("fence guard: the agent is gone; paused, so nothing is touched");
        return true;
    }
    if !beat.known {
        tracing::warn!(
            "fence guard: the agent is gone before it read the cluster (maintenance mode unknown); nothing is touched"
        );
        return true;
    }
    // Holding the lock, even a standby may be promoting: stop it too.
    let stop_target = if beat.lock_until_ns.is_some() {
        Target::Any
    } else {
        Target::Writable
    };
    let stopped = stop_now(&target.data_dir, stop_target).await;
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
            return false;
        }
        Stopped::NotRunning | Stopped::Replica(_) => {}
    }
    let Some(lock_until) = beat.lock_until_ns else {
        tracing::info!("fence guard: the agent is gone; it held no leader lock");
        return true;
    };
    match hand_over(handover, &target.member, lock_until).await {
        Released::Released => tracing::warn!(
            "FENCE GUARD: released the leader lock of the dead agent: replicas can take over now"
        ),
        Released::Expired => {
            tracing::info!("fence guard: the dead agent's leader lock is left to expire")
        }
        Released::NotHeld => {
            tracing::info!("fence guard: the agent is gone; the leader lock is not this member's")
        }
        Released::Failed(why) => {
            tracing::warn!("fence guard: the leader lock was not released ({why}); it will expire")
        }
    }
    true
}
