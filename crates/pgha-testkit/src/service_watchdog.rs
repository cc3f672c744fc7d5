//! A **stand-in** for systemd's service watchdog (`WatchdogSec=`) — not
//! systemd, which cannot run units on a test machine, but what it does for
//! a unit with a watchdog: its processes get `NOTIFY_SOCKET` and
//! `WATCHDOG_USEC`, and once `WATCHDOG=1` pings have arrived, a period
//! without one makes it kill every process of the unit (SIGKILL: here the
//! node's agent, fence guards, postmaster and backends).
//!
//! Like systemd it arms on the first ping (systemd arms once the service
//! started), and it fires at most once.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;

use crate::faults::procs;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Which processes make up a node's "unit".
#[derive(Debug, Clone)]
pub struct Unit {
    /// Every process whose command line names this file (the agent, its
    /// guards) belongs to the unit.
    pub config: PathBuf,
    /// And the postmaster `postmaster.pid` names here, with its children.
    pub data_dir: PathBuf,
}

impl Unit {
    /// The unit's processes now.
    pub fn processes(&self) -> Vec<i32> {
        let config = self.config.to_string_lossy();
        let postmaster = crate::postgres_teardown::running_postmaster(&self.data_dir);
        procs::table()
            .into_iter()
            .filter(|p| {
                p.cmdline.split(' ').any(|arg| arg == config)
                    || postmaster.is_some_and(|pm| p.pid == pm || p.ppid == pm)
            })
            .map(|p| p.pid)
            .collect()
    }
}

/// The stand-in, watching one unit.
#[derive(Debug)]
pub struct ServiceWatchdogStandIn {
    socket: PathBuf,
    period: Duration,
    fired: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ServiceWatchdogStandIn {
    /// Listens at `socket` (made writable for the agents' user) and
    /// watches `unit` with `period`.
    pub fn start(socket: &Path, period: Duration, unit: Unit) -> anyhow::Result<Self> {
        let _ = std::fs::remove_file(socket);
        let listener =
            UnixDatagram::bind(socket).with_context(|| format!("binding {}", socket.display()))?;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o777))?;
        listener.set_read_timeout(Some(Duration::from_millis(50)))?;
        let fired = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (fired, stop) = (fired.clone(), stop.clone());
            std::thread::spawn(move || watch(&listener, period, &unit, &fired, &stop))
        };
        Ok(ServiceWatchdogStandIn {
            socket: socket.to_path_buf(),
            period,
            fired,
            stop,
            thread: Some(thread),
        })
    }

    /// The environment systemd would give the unit's processes.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("NOTIFY_SOCKET".into(), self.socket.display().to_string()),
            ("WATCHDOG_USEC".into(), self.period.as_micros().to_string()),
        ]
    }

    /// Whether it killed the unit.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }
}

impl Drop for ServiceWatchdogStandIn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn watch(
    listener: &UnixDatagram,
    period: Duration,
    unit: &Unit,
    fired: &AtomicBool,
    stop: &AtomicBool,
) {
    let mut last_ping: Option<std::time::Instant> = None;
    let mut buf = [0u8; 256];
    while !stop.load(Ordering::SeqCst) {
        if let Ok(n) = listener.recv(&mut buf)
            && buf[..n].split(|b| *b == b'\n').any(|l| l == b"WATCHDOG=1")
        {
            last_ping = Some(std::time::Instant::now());
        }
        if last_ping.is_some_and(|t| t.elapsed() > period) {
            let victims = unit.processes();
            eprintln!(
                "service watchdog stand-in: no ping for {period:?}; killing the unit's processes {victims:?}"
            );
            // Before the kills: a test that sees PostgreSQL gone must also
            // see who stopped it.
            fired.store(true, Ordering::SeqCst);
            for p in victims {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
            return;
        }
    }
}
