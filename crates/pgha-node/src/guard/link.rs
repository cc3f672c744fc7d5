//! The agent's side of the guard: starts it, tells it every new lock
//! deadline, restarts it when it dies, and says whether this node can fence
//! itself right now (a node that cannot must not be primary).

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use pgha_core::clock::Clock;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{mpsc, oneshot, watch};

use pgha_postgres::{LaunchError, LaunchFuture, LaunchSpec, PostmasterLauncher};

use super::protocol::{
    Beat, FromGuard, Launch, READY, ToGuard, WatchdogReport, WatchdogWant, deadline_ns,
    monotonic_ns,
};

/// What the agent wants its guard to enforce: the lock deadline on the
/// agent's monotonic clock, maintenance mode, and the watchdog to hold
/// while the lock is held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuardInput {
    pub deadline: Option<Duration>,
    pub paused: bool,
    /// `paused` comes from a cluster read (see [`Beat::known`]).
    pub known: bool,
    pub watchdog: Option<WatchdogWant>,
}

/// How the guard is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardHealth {
    /// Not started yet.
    Starting,
    Up {
        pid: u32,
    },
    /// Not running since `since` (agent clock), because `why`.
    Down {
        since: Duration,
        why: GuardDown,
    },
}

/// Why the guard is not running.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardDown {
    /// Its program could not be started (missing, not executable).
    #[error("cannot run the fence guard ({command}): {reason}")]
    CannotRun { command: String, reason: String },
    #[error("the guard's pipes are missing")]
    NoPipes,
    /// The program started but did not speak as a guard: most likely a
    /// program that does not run the guard for these arguments.
    #[error("it did not say it was ready (said {said:?}, {status})")]
    NotAGuard { said: String, status: String },
    #[error("reading its first line: {0}")]
    FirstLine(String),
    #[error("not ready within {0:?}")]
    NotReady(Duration),
    #[error("it exited ({0})")]
    Exited(String),
    /// A beat could not be written (its pipe is full or broken); the
    /// guard was killed to be replaced.
    #[error("writing to it failed ({0}); killed it")]
    Unwritable(String),
}

/// A guard that died is restarted at once; only one that stays down this
/// long (or cannot be started) makes the node unfit to be primary.
pub const GUARD_GRACE: Duration = Duration::from_secs(2);
/// How long the guard gets to say it is ready.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long writing one line to the guard may take; longer means it is
/// stuck (its pipe is full), and it is replaced.
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);
const RESPAWN_PAUSE: Duration = Duration::from_millis(200);

/// Which program runs the fence guard. The guard must be a process of its
/// own (it fences when the agent's process dies or freezes); which program
/// that is depends on who embeds the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardMode {
    /// This very program, through `/proc/self/exe` (which works even when a
    /// package upgrade replaced the file), with `args`: for a program that
    /// embeds the node and runs [`daemon::run`](super::daemon::run) when
    /// given `args` (see `examples/embed_node.rs`); any other would be
    /// started with arguments it does not know and never answer as a guard
    /// (the node then stays unfit to be primary, and says so).
    CurrentExe { args: Vec<OsString> },
    /// `program args...`: the `pgha` agent runs `pg-fence-guard`, the small
    /// program installed beside it (its arguments say whose PostgreSQL it
    /// guards and how it logs).
    Program {
        program: PathBuf,
        args: Vec<OsString>,
    },
}

impl fmt::Display for GuardMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuardMode::CurrentExe { args } => write_command(f, "/proc/self/exe", args),
            GuardMode::Program { program, args } => {
                write_command(f, &program.display().to_string(), args)
            }
        }
    }
}

fn write_command(f: &mut fmt::Formatter<'_>, program: &str, args: &[OsString]) -> fmt::Result {
    f.write_str(program)?;
    for a in args {
        write!(f, " {}", a.to_string_lossy())?;
    }
    Ok(())
}

impl GuardMode {
    fn command(&self) -> Command {
        let mut cmd = match self {
            GuardMode::CurrentExe { args } => {
                let mut cmd = Command::new("/proc/self/exe");
                if let Ok(exe) = std::env::current_exe() {
                    cmd.arg0(exe);
                }
                cmd.args(args);
                cmd
            }
            GuardMode::Program { program, args } => {
                let mut cmd = Command::new(program);
                cmd.args(args);
                cmd
            }
        };
        // Its own process group: a Ctrl-C or a signal to the agent's group
        // does not reach it, and it outlives the agent.
        cmd.process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(false);
        cmd
    }
}

/// How long a postmaster launch may wait for the guard's answer.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(10);

/// A request to start the postmaster, with where its answer goes.
type LaunchRequest = (Launch, oneshot::Sender<Result<u32, LaunchError>>);

/// The handle the agent keeps.
#[derive(Debug, Clone)]
pub struct GuardLink {
    health: watch::Receiver<GuardHealth>,
    watchdog: watch::Receiver<WatchdogReport>,
    exit: mpsc::Sender<oneshot::Sender<()>>,
    launches: mpsc::Sender<LaunchRequest>,
}

impl GuardLink {
    /// Starts the task that runs the guard and feeds it `input`.
    pub fn start(
        command: GuardMode,
        input: watch::Receiver<GuardInput>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let (health_tx, health) = watch::channel(GuardHealth::Starting);
        let (watchdog_tx, watchdog) = watch::channel(WatchdogReport::Off);
        let (exit, exit_rx) = mpsc::channel(1);
        let (launches, launches_rx) = mpsc::channel(1);
        tokio::spawn(supervise(
            command,
            input,
            clock,
            Reports {
                health: health_tx,
                watchdog: watchdog_tx,
            },
            Requests {
                exit: exit_rx,
                launches: launches_rx,
            },
        ));
        GuardLink {
            health,
            watchdog,
            exit,
            launches,
        }
    }

    /// The guard's last word on the watchdog.
    pub fn watchdog(&self) -> WatchdogReport {
        self.watchdog.borrow().clone()
    }

    /// Waits (bounded) until the guard reports the watchdog held or failed
    /// (it tries when a beat first carries a lock); returns the report.
    pub async fn settled_watchdog(&mut self, within: Duration) -> WatchdogReport {
        let _ = tokio::time::timeout(
            within,
            self.watchdog
                .wait_for(|w| !matches!(w, WatchdogReport::Off)),
        )
        .await;
        self.watchdog()
    }

    /// Waits (bounded) until the guard's first start succeeded or failed.
    pub async fn wait_started(&mut self, within: Duration) {
        let _ = tokio::time::timeout(
            within,
            self.health
                .wait_for(|h| !matches!(h, GuardHealth::Starting)),
        )
        .await;
    }

    /// Why this node could not fence itself if the agent failed now, or
    /// `None` when its guard runs (or was restarted within [`GUARD_GRACE`]).
    pub fn unfenced(&self, now: Duration) -> Option<String> {
        match &*self.health.borrow() {
            GuardHealth::Up { .. } => None,
            GuardHealth::Starting => Some("the fence guard has not started yet".into()),
            GuardHealth::Down { since, why } => (now.saturating_sub(*since) >= GUARD_GRACE)
                .then(|| format!("the fence guard is not running: {why}")),
        }
    }

    pub fn health(&self) -> GuardHealth {
        self.health.borrow().clone()
    }

    /// A clean stop of the agent: the guard exits touching nothing.
    pub async fn exit(&self) {
        let (tx, rx) = oneshot::channel();
        if self.exit.send(tx).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(3), rx).await;
        }
    }
}

/// The guard starts the postmaster as its child, so that the postmaster
/// dies with it (see [`super::postmaster`]).
impl PostmasterLauncher for GuardLink {
    fn launch<'a>(&'a self, spec: &'a LaunchSpec) -> LaunchFuture<'a> {
        Box::pin(async move {
            // A guard being restarted (it died a moment ago, maybe with the
            // postmaster this start replaces) is waited for: a postmaster
            // started without it would not die with the next one.
            let mut health = self.health.clone();
            let up = tokio::time::timeout(GUARD_GRACE, async move {
                health
                    .wait_for(|h| matches!(h, GuardHealth::Up { .. }))
                    .await
                    .is_ok()
            })
            .await;
            if up != Ok(true) {
                return Err(LaunchError::Unavailable(
                    "the fence guard is not running".into(),
                ));
            }
            let launch = Launch {
                program: spec.program.clone(),
                args: spec.args.clone(),
                log_file: spec.log_file.clone(),
            };
            let (tx, rx) = oneshot::channel();
            let gone = || LaunchError::Unavailable("the fence guard went down".into());
            self.launches.send((launch, tx)).await.map_err(|_| gone())?;
            match tokio::time::timeout(LAUNCH_TIMEOUT, rx).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(_)) => Err(gone()),
                Err(_) => Err(LaunchError::Unavailable(format!(
                    "the fence guard did not answer within {LAUNCH_TIMEOUT:?}"
                ))),
            }
        })
    }
}

/// The beat for `input`, the deadline moved from the agent's clock onto the
/// system's monotonic clock (read first, so never later than the truth).
fn beat(input: GuardInput, clock: &dyn Clock) -> Beat {
    let raw_before = monotonic_ns();
    let now = clock.now();
    Beat {
        lock_until_ns: input
            .deadline
            .map(|d| deadline_ns(raw_before, d.saturating_sub(now))),
        paused: input.paused,
        known: input.known,
        watchdog: input.watchdog,
    }
}

/// Where the supervising task publishes what it learns.
struct Reports {
    health: watch::Sender<GuardHealth>,
    watchdog: watch::Sender<WatchdogReport>,
}

/// What the agent asks of the supervising task.
struct Requests {
    exit: mpsc::Receiver<oneshot::Sender<()>>,
    launches: mpsc::Receiver<LaunchRequest>,
}

fn unavailable(why: &str) -> Result<u32, LaunchError> {
    Err(LaunchError::Unavailable(why.into()))
}

async fn supervise(
    command: GuardMode,
    mut input: watch::Receiver<GuardInput>,
    clock: Arc<dyn Clock>,
    reports: Reports,
    requests: Requests,
) {
    let Requests {
        mut exit,
        mut launches,
    } = requests;
    let health = &reports.health;
    // Since when the guard has been down, kept across restarts that do not
    // stay up for GUARD_GRACE: a guard that keeps crashing counts as down.
    let mut down_since: Option<Duration> = None;
    loop {
        let (mut child, mut stdin, mut stdout, pid) = match spawn(&command).await {
            Ok(c) => c,
            Err(why) => {
                tracing::error!("cannot start the fence guard: {why}");
                let since = *down_since.get_or_insert_with(|| clock.now());
                health.send_replace(GuardHealth::Down { since, why });
                let retry = tokio::time::sleep(Duration::from_secs(1));
                tokio::pin!(retry);
                loop {
                    tokio::select! {
                        _ = &mut retry => break,
                        Some(done) = exit.recv() => { let _ = done.send(()); return; }
                        Some((_, reply)) = launches.recv() => {
                            let _ = reply.send(unavailable("the fence guard cannot be started"));
                        }
                    }
                }
                continue;
            }
        };
        tracing::info!("fence guard running (pid {pid})");
        let up_at = clock.now();
        health.send_replace(GuardHealth::Up { pid });
        reports.watchdog.send_replace(WatchdogReport::Off);
        input.mark_changed();
        // The launch waiting for the guard's answer.
        let mut pending: Option<oneshot::Sender<Result<u32, LaunchError>>> = None;
        let why = loop {
            tokio::select! {
                status = child.wait() => {
                    break GuardDown::Exited(status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()));
                }
                line = stdout.next_line() => {
                    match line {
                        Ok(Some(text)) => match serde_json::from_str::<FromGuard>(&text) {
                            Ok(FromGuard::Watchdog(r)) => { reports.watchdog.send_replace(r); }
                            Ok(FromGuard::Launched { pid }) => {
                                if let Some(reply) = pending.take() { let _ = reply.send(Ok(pid)); }
                            }
                            Ok(FromGuard::LaunchFailed { why }) => {
                                if let Some(reply) = pending.take() {
                                    let _ = reply.send(Err(LaunchError::Failed(why)));
                                }
                            }
                            Err(_) => tracing::debug!("fence guard said {text:?}"),
                        },
                        // Closed: the guard is exiting.
                        Ok(None) | Err(_) => {
                            let status = child.wait().await;
                            break GuardDown::Exited(status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()));
                        }
                    }
                }
                changed = input.changed() => {
                    if changed.is_err() {
                        // The agent is going away without a clean stop:
                        // the guard notices its pipe closing and fences.
                        return;
                    }
                    let b = beat(input.borrow_and_update().clone(), clock.as_ref());
                    if let Err(e) = send(&mut stdin, &ToGuard::Beat(b)).await {
                        let _ = child.start_kill();
                        // Reaped before a new one starts: the old one must
                        // have let go of the watchdog device.
                        let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
                        break GuardDown::Unwritable(e.to_string());
                    }
                }
                Some((launch, reply)) = launches.recv() => {
                    if pending.is_some() {
                        let _ = reply.send(unavailable("another start is waiting for the guard"));
                        continue;
                    }
                    match send(&mut stdin, &ToGuard::Launch(launch)).await {
                        Ok(()) => pending = Some(reply),
                        Err(e) => {
                            let _ = reply.send(unavailable("the fence guard cannot be written to"));
                            let _ = child.start_kill();
                            let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
                            break GuardDown::Unwritable(e.to_string());
                        }
                    }
                }
                Some(done) = exit.recv() => {
                    if send(&mut stdin, &ToGuard::Exit).await.is_ok() {
                        let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
                    }
                    let _ = done.send(());
                    return;
                }
            }
        };
        tracing::error!("fence guard (pid {pid}) is down: {why}; restarting it");
        let now = clock.now();
        if now.saturating_sub(up_at) >= GUARD_GRACE {
            down_since = None;
        }
        let since = *down_since.get_or_insert(now);
        health.send_replace(GuardHealth::Down { since, why });
        tokio::time::sleep(RESPAWN_PAUSE).await;
    }
}

type GuardStdout = tokio::io::Lines<BufReader<tokio::process::ChildStdout>>;

async fn spawn(command: &GuardMode) -> Result<(Child, ChildStdin, GuardStdout, u32), GuardDown> {
    let mut child = command
        .command()
        .spawn()
        .map_err(|e| GuardDown::CannotRun {
            command: command.to_string(),
            reason: e.to_string(),
        })?;
    let pid = child.id().unwrap_or(0);
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        let _ = child.start_kill();
        return Err(GuardDown::NoPipes);
    };
    let mut stdout = BufReader::new(stdout);
    let mut line = String::new();
    let read = tokio::time::timeout(READY_TIMEOUT, stdout.read_line(&mut line)).await;
    match read {
        Ok(Ok(_)) if line.starts_with(READY) => Ok((child, stdin, stdout.lines(), pid)),
        Ok(Ok(_)) => {
            let status = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
            let _ = child.start_kill();
            Err(GuardDown::NotAGuard {
                said: line.trim().to_string(),
                status: match status {
                    Ok(Ok(s)) => s.to_string(),
                    _ => "still running".into(),
                },
            })
        }
        Ok(Err(e)) => {
            let _ = child.start_kill();
            Err(GuardDown::FirstLine(e.to_string()))
        }
        Err(_) => {
            let _ = child.start_kill();
            Err(GuardDown::NotReady(READY_TIMEOUT))
        }
    }
}

async fn send(stdin: &mut ChildStdin, message: &ToGuard) -> std::io::Result<()> {
    let mut line = serde_json::to_string(message)?;
    line.push('\n');
    tokio::time::timeout(WRITE_TIMEOUT, async {
        stdin.write_all(line.as_bytes()).await?;
        stdin.flush().await
    })
    .await
    .map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("blocked for {WRITE_TIMEOUT:?}"),
        )
    })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgha_core::clock::MonotonicClock;

    #[test]
    fn beats_carry_the_deadline_on_the_system_clock_never_later() {
        let clock = MonotonicClock::new();
        let deadline = clock.now() + Duration::from_secs(10);
        let before = monotonic_ns();
        let b = beat(
            GuardInput {
                deadline: Some(deadline),
                paused: false,
                known: true,
                watchdog: None,
            },
            &clock,
        );
        let after = monotonic_ns();
        let until = b.lock_until_ns.expect("a deadline");
        assert!(until <= after + 10_000_000_000, "later than the lock");
        assert!(
            until + 1_000_000_000 > before + 10_000_000_000,
            "far too early"
        );
        let none = beat(GuardInput::default(), &clock);
        assert_eq!(none.lock_until_ns, None);
    }

    fn program(shell: &str) -> GuardMode {
        GuardMode::Program {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), shell.into()],
        }
    }

    #[tokio::test]
    async fn the_postmaster_is_launched_through_the_guard_or_not_at_all() {
        let spec = LaunchSpec::postgres(
            std::path::Path::new("/usr/lib/postgresql/15/bin/postgres"),
            std::path::Path::new("/data"),
            std::path::Path::new("/data/log/x.log"),
        );
        let (_tx, input) = watch::channel(GuardInput::default());
        let clock: Arc<dyn Clock> = Arc::new(MonotonicClock::new());
        // A guard that answers launches (and ignores beats).
        let answering = program(&format!(
            "echo {READY} $$; while read l; do case \"$l\" in *launch*) \
             echo '{{\"launched\":{{\"pid\":42}}}}';; esac; done"
        ));
        let mut link = GuardLink::start(answering, input.clone(), clock.clone());
        link.wait_started(Duration::from_secs(5)).await;
        assert_eq!(link.launch(&spec).await, Ok(42));
        // No guard can be started: after the grace, the caller is told to
        // start PostgreSQL another way.
        let missing = GuardMode::Program {
            program: "/nonexistent/pgha".into(),
            args: vec![],
        };
        let link = GuardLink::start(missing, input, clock);
        assert!(matches!(
            link.launch(&spec).await,
            Err(LaunchError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn an_embedder_names_the_program_that_runs_the_guard() {
        // A program that speaks the guard's first line is taken as one.
        let ready = program(&format!("echo {READY}; cat >/dev/null"));
        let (mut child, stdin, _, _) = spawn(&ready).await.expect("a ready guard");
        drop(stdin);
        let _ = child.wait().await;
        // One that does not (the embedding binary itself, given an
        // argument it does not know) is refused, naming the command.
        let why = spawn(&program("echo usage: myservice [OPTIONS]"))
            .await
            .expect_err("not a guard")
            .to_string();
        assert!(why.contains("did not say it was ready"), "{why}");
        let why = spawn(&GuardMode::Program {
            program: "/nonexistent/pg-fence-guard".into(),
            args: vec!["--member".into()],
        })
        .await
        .expect_err("no such program")
        .to_string();
        assert!(
            why.contains("/nonexistent/pg-fence-guard --member"),
            "{why}"
        );
    }
}
