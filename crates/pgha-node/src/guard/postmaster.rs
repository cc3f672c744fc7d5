//! The postmaster as the guard's child, killed by the kernel when the
//! guard dies.
//!
//! Why: the guard fences when the *agent* dies or freezes, but a `kill -9`
//! of the agent's process tree, a `pkill -9 -f pgha`, or an operator
//! killing "all pgha processes" takes the guard too, and a postmaster that
//! `pg_ctl` detached would keep acknowledging writes after a replica took
//! the expired lock (4,047 such rows in 20 s, measured before this
//! existed). Started here, the postmaster carries the parent-death signal
//! SIGKILL (`prctl(PR_SET_PDEATHSIG)`): whatever kills the guard kills it.
//! Its backends notice the postmaster's death at their next wait (a
//! session between two statements at once) and end; new connections are
//! refused, since the listening sockets died with it.
//!
//! The signal belongs to the *thread* that forked, so the guard runs on a
//! single-threaded runtime and forks from its main thread, which lives as
//! long as the process. In a new session (`setsid`, as `pg_ctl` does), so
//! a terminal's signals do not reach it.
// The one `pre_exec` hook below is the only unsafe code here; the crate
// denies it everywhere else.
#![allow(unsafe_code)]

use std::fs::OpenOptions;
use std::io;
use std::process::{ExitStatus, Stdio};

use nix::sys::signal::Signal;
use nix::unistd::{Pid, getpid, getppid, setsid};

use super::protocol::Launch;

/// The postmaster this guard started, until it exits.
#[derive(Debug)]
pub struct Postmaster {
    pub pid: u32,
    child: tokio::process::Child,
}

impl Postmaster {
    /// Starts `launch` as a child of this process that the kernel kills
    /// (SIGKILL) when this process dies.
    pub fn start(launch: &Launch) -> io::Result<Postmaster> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&launch.log_file)?;
        let log_err = log.try_clone()?;
        let guard: Pid = getpid();
        let mut cmd = tokio::process::Command::new(&launch.program);
        pgha_postgres::launch::without_service_notification(&mut cmd);
        cmd.args(&launch.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .kill_on_drop(false);
        // SAFETY: the hook runs in the forked child before exec and only
        // makes system calls (setsid, prctl, getppid), which are
        // async-signal-safe; it allocates nothing and touches no lock.
        unsafe {
            cmd.pre_exec(move || {
                setsid().map_err(io::Error::from)?;
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)?;
                // The guard may have died between the fork and the prctl:
                // then no signal will ever come.
                if getppid() != guard {
                    return Err(io::Error::other("the fence guard died while starting it"));
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("the postmaster exited at once"))?;
        Ok(Postmaster { pid, child })
    }

    /// Waits until it exits (reaping it, so that `postmaster.pid` does not
    /// name a zombie). Cancel-safe.
    pub async fn exited(&mut self) -> io::Result<ExitStatus> {
        self.child.wait().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn launch(dir: &std::path::Path, script: &str) -> Launch {
        Launch {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            log_file: dir.join("out.log"),
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_child_runs_in_its_own_session_with_output_in_the_log() {
        let tmp = tempfile::tempdir().unwrap();
        let mut pm = Postmaster::start(&launch(
            tmp.path(),
            "echo sid=$(cut -d' ' -f6 /proc/$$/stat) pid=$$; grep PPid /proc/$$/status",
        ))
        .unwrap();
        let status = tokio::time::timeout(Duration::from_secs(10), pm.exited())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success());
        let out = std::fs::read_to_string(tmp.path().join("out.log")).unwrap();
        assert!(
            out.contains(&format!("sid={} pid={}", pm.pid, pm.pid)),
            "a session of its own: {out}"
        );
        assert!(
            out.contains(&format!("PPid:\t{}", std::process::id())),
            "{out}"
        );
    }

    #[test]
    fn a_program_that_cannot_run_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let mut l = launch(tmp.path(), "");
        l.program = tmp.path().join("no-such-postgres");
        assert!(Postmaster::start(&l).is_err());
    }
}
