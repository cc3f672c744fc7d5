//! `pg_ctl` and the postmaster's pid file: starting, stopping, promoting.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::PgError;
use super::command::run;
use super::launch::{self, LaunchError, LaunchSpec, PostmasterLauncher};

/// How to stop PostgreSQL (`pg_ctl stop -m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownMode {
    /// Disconnect clients, checkpoint, stop.
    Fast,
    /// Stop at once, without a checkpoint (crash recovery at next start).
    Immediate,
}

impl ShutdownMode {
    fn arg(self) -> &'static str {
        match self {
            ShutdownMode::Fast => "fast",
            ShutdownMode::Immediate => "immediate",
        }
    }
}

/// `pg_ctl` for one data directory.
#[derive(Debug, Clone)]
pub struct PgCtl {
    pub pg_ctl: PathBuf,
    pub data_dir: PathBuf,
    /// Where the postmaster's own output goes.
    pub log_file: PathBuf,
}

impl PgCtl {
    /// Starts the postmaster and waits (up to `timeout`) until it accepts
    /// connections (or runs as a hot standby).
    ///
    /// With a `launcher` (the fence guard) the postmaster is the
    /// launcher's child and dies with it ([`crate::launch`]); without one,
    /// or while the launcher is unavailable, `pg_ctl` detaches it into its
    /// own session, so it outlives every pgha process.
    pub async fn start(
        &self,
        timeout: Duration,
        launcher: Option<&dyn PostmasterLauncher>,
    ) -> Result<(), PgError> {
        if let Some(dir) = self.log_file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| PgError::Io {
                path: dir.display().to_string(),
                reason: e.to_string(),
            })?;
        }
        let log_from = std::fs::metadata(&self.log_file).map_or(0, |m| m.len());
        if let Some(launcher) = launcher {
            let spec = LaunchSpec::postgres(
                &self.pg_ctl.with_file_name("postgres"),
                &self.data_dir,
                &self.log_file,
            );
            match launcher.launch(&spec).await {
                Ok(pid) => {
                    return launch::wait_ready(&self.data_dir, pid, timeout)
                        .await
                        .map_err(|e| self.with_start_log(e, log_from));
                }
                Err(LaunchError::Unavailable(why)) => tracing::warn!(
                    "starting PostgreSQL with pg_ctl ({why}): it will not stop if the fence \
                     guard dies"
                ),
                Err(LaunchError::Failed(why)) => {
                    return Err(PgError::Spawn {
                        program: spec.program.display().to_string(),
                        reason: why,
                    });
                }
            }
        }
        let secs = timeout.as_secs().max(1).to_string();
        let mut pg_ctl = tokio::process::Command::new(&self.pg_ctl);
        launch::without_service_notification(&mut pg_ctl);
        let started = run(
            pg_ctl
                .arg("start")
                .arg("-D")
                .arg(&self.data_dir)
                .args(["-w", "-t", &secs, "-l"])
                .arg(&self.log_file),
            timeout + Duration::from_secs(5),
        )
        .await;
        started
            .map(drop)
            .map_err(|e| self.with_start_log(e, log_from))
    }

    /// A failed start's error with what the postmaster logged since the
    /// log was `log_from` bytes long: pg_ctl only says "Examine the log
    /// output", and the reason (a port in use, no shared memory left, a
    /// bad setting) is in the log.
    fn with_start_log(&self, e: PgError, log_from: u64) -> PgError {
        match e {
            PgError::Failed {
                program,
                status,
                output,
            } => PgError::Failed {
                program,
                status,
                output: match log_written_since(&self.log_file, log_from, START_LOG_LINES) {
                    Some(log) => format!("{output}\n{}:\n{log}", self.log_file.display()),
                    None => output,
                },
            },
            e => e,
        }
    }

    /// Stops the postmaster, waiting up to `timeout`. If it is still up
    /// after that (a fast stop stuck in its checkpoint), it is stopped
    /// immediately, and as a last resort killed.
    pub async fn stop(&self, mode: ShutdownMode, timeout: Duration) -> Result<(), PgError> {
        let attempt = |mode: ShutdownMode, t: Duration| {
            let secs = t.as_secs().max(1).to_string();
            let mut cmd = tokio::process::Command::new(&self.pg_ctl);
            cmd.arg("stop").arg("-D").arg(&self.data_dir).args([
                "-m",
                mode.arg(),
                "-w",
                "-t",
                &secs,
            ]);
            async move { run(&mut cmd, t + Duration::from_secs(2)).await }
        };
        if self.postmaster_pid().is_none() {
            return Ok(());
        }
        match attempt(mode, timeout).await {
            Ok(_) => return Ok(()),
            Err(e) if self.postmaster_pid().is_none() => {
                tracing::debug!("pg_ctl stop reported {e}, but PostgreSQL is down");
                return Ok(());
            }
            Err(e) => tracing::warn!(
                "pg_ctl stop -m {} failed ({e}); stopping immediately",
                mode.arg()
            ),
        }
        if mode != ShutdownMode::Immediate
            && attempt(ShutdownMode::Immediate, Duration::from_secs(5))
                .await
                .is_ok()
        {
            return Ok(());
        }
        self.kill_postmaster()
    }

    /// SIGKILL to the postmaster: the last resort when it will not stop.
    pub fn kill_postmaster(&self) -> Result<(), PgError> {
        if let Some(pid) = self.postmaster_pid() {
            tracing::warn!("killing postmaster {pid} with SIGKILL");
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        Ok(())
    }

    /// Promotes a standby and waits for the promotion to finish.
    pub async fn promote(&self, timeout: Duration) -> Result<(), PgError> {
        let secs = timeout.as_secs().max(1).to_string();
        run(
            tokio::process::Command::new(&self.pg_ctl)
                .arg("promote")
                .arg("-D")
                .arg(&self.data_dir)
                .args(["-w", "-t", &secs]),
            timeout + Duration::from_secs(5),
        )
        .await
        .map(drop)
    }

    /// The postmaster's pid, when `postmaster.pid` names a live process.
    pub fn postmaster_pid(&self) -> Option<i32> {
        postmaster_pid(&self.data_dir)
    }
}

/// How many of the postmaster's log lines a failed start reports.
const START_LOG_LINES: usize = 5;

/// The last `lines` lines `log` got after it was `from` bytes long, if any.
fn log_written_since(log: &Path, from: u64, lines: usize) -> Option<String> {
    let bytes = std::fs::read(log).ok()?;
    let from = usize::try_from(from)
        .ok()
        .filter(|&f| f <= bytes.len())
        .unwrap_or(0);
    let text = String::from_utf8_lossy(&bytes[from..]);
    let written: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = &written[written.len().saturating_sub(lines)..];
    (!tail.is_empty()).then(|| tail.join("\n"))
}

/// Waits (at most `within`) until the process `postmaster.pid` names has
/// exited and been reaped: until then PostgreSQL itself, started on this
/// data directory, finds the lock file held ("another postmaster is
/// running"), even by a zombie that [`postmaster_pid`] already counts as
/// gone.
pub async fn wait_postmaster_exit(data_dir: &Path, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let held = std::fs::read_to_string(data_dir.join("postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next()?.trim().parse::<i32>().ok())
            .filter(|&pid| pid > 0 && kill(Pid::from_raw(pid), None).is_ok());
        if held.is_none() || std::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (at most `within`) until no process is attached to the shared
/// memory segment `postmaster.pid` names: a dead postmaster's backends
/// notice its death only at their next wait, and until the last one is
/// gone PostgreSQL refuses to start on this data directory ("pre-existing
/// shared memory block is still in use") — pg_rewind's crash recovery
/// included.
pub async fn wait_shared_memory_released(data_dir: &Path, within: Duration) {
    let Some(shmid) = std::fs::read_to_string(data_dir.join("postmaster.pid"))
        .ok()
        .and_then(|t| {
            t.lines()
                .nth(6)?
                .split_whitespace()
                .nth(1)?
                .parse::<i64>()
                .ok()
        })
    else {
        return;
    };
    let deadline = std::time::Instant::now() + within;
    while attached(shmid) > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many processes are attached to System V segment `shmid` (0 when
/// it is gone or cannot be read).
fn attached(shmid: i64) -> u64 {
    // Columns: key shmid perms size cpid lpid nattch ...
    std::fs::read_to_string("/proc/sysvipc/shm")
        .ok()
        .and_then(|t| {
            t.lines().skip(1).find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.get(1)?.parse::<i64>().ok()? == shmid).then(|| f.get(6)?.parse().ok())?
            })
        })
        .unwrap_or(0)
}

/// The pid in `postmaster.pid`, if that process is alive and is a
/// PostgreSQL server: not a zombie waiting to be reaped, and not an
/// unrelated process that reused the pid after a reboot.
pub fn postmaster_pid(data_dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    if pid <= 0 || kill(Pid::from_raw(pid), None).is_err() {
        return None;
    }
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    if let Ok(stat) = std::fs::read_to_string(proc_dir.join("stat")) {
        // "pid (comm) S ...": the state letter follows the closing parenthesis.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        if state == Some('Z') || state == Some('X') {
            return None;
        }
    }
    if let Ok(cmdline) = std::fs::read(proc_dir.join("cmdline"))
        && !cmdline.is_empty()
        && !String::from_utf8_lossy(&cmdline).contains("postgres")
    {
        return None;
    }
    Some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// pg_ctl says only "Examine the log output"; the error carries what
    /// the postmaster logged during this start, not what an earlier one did.
    #[tokio::test]
    async fn a_failed_start_says_what_the_postmaster_logged() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let fake = tmp.path().join("pg_ctl");
        // Arguments: start -D DIR -w -t SECS -l LOG.
        std::fs::write(
            &fake,
            "#!/bin/sh\n\
             echo 'FATAL:  could not create shared memory segment: No space left on device' >> \"$8\"\n\
             echo 'pg_ctl: could not start server' >&2\n\
             exit 1\n",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let log_file = tmp.path().join("log").join("postgresql.log");
        std::fs::create_dir_all(log_file.parent().unwrap()).unwrap();
        std::fs::write(&log_file, "FATAL:  an earlier start's reason\n").unwrap();
        let ctl = PgCtl {
            pg_ctl: fake,
            data_dir: tmp.path().join("data"),
            log_file,
        };
        let error = ctl
            .start(Duration::from_secs(5), None)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("could not start server"), "{error}");
        assert!(error.contains("No space left on device"), "{error}");
        assert!(!error.contains("an earlier start"), "{error}");
    }

    #[tokio::test]
    async fn no_segment_or_a_released_one_is_not_waited_for() {
        let tmp = tempfile::tempdir().unwrap();
        let started = std::time::Instant::now();
        wait_shared_memory_released(tmp.path(), Duration::from_secs(5)).await;
        std::fs::write(
            tmp.path().join("postmaster.pid"),
            "1\n/data\n1\n5432\n/tmp\n*\n  10019479 2147483600\nready   \n",
        )
        .unwrap();
        wait_shared_memory_released(tmp.path(), Duration::from_secs(5)).await;
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(attached(2_147_483_600), 0);
    }

    #[tokio::test]
    async fn a_rewind_waits_for_the_lock_files_process_to_be_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let pidfile = dir.join("postmaster.pid");
        // A live process holds it (this test's own): waited for, up to the bound.
        std::fs::write(&pidfile, format!("{}\n/data\n", std::process::id())).unwrap();
        let started = std::time::Instant::now();
        wait_postmaster_exit(&dir, Duration::from_millis(300)).await;
        assert!(started.elapsed() >= Duration::from_millis(300));
        // A child that exits and is reaped while we wait: returns then.
        let mut child = std::process::Command::new("sleep")
            .arg("0.3")
            .spawn()
            .unwrap();
        std::fs::write(&pidfile, format!("{}\n", child.id())).unwrap();
        let waiter = tokio::spawn({
            let dir = dir.clone();
            async move {
                let t = std::time::Instant::now();
                wait_postmaster_exit(&dir, Duration::from_secs(10)).await;
                t.elapsed()
            }
        });
        child.wait().unwrap();
        let waited = waiter.await.unwrap();
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        // No lock file: no wait.
        std::fs::remove_file(&pidfile).unwrap();
        let started = std::time::Instant::now();
        wait_postmaster_exit(&dir, Duration::from_secs(10)).await;
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
