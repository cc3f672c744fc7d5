//! systemd's service watchdog (`WatchdogSec=`): the guard's pings, so that
//! a node whose agent *and* guard freeze together is stopped from outside.
//!
//! Nothing inside a frozen process group can act: a `SIGSTOP` of agent and
//! guard (a cgroup freeze, a debugger, a stuck kernel call in both) leaves
//! the postmaster running while the lock expires. Only a timer outside
//! both can stop it: the Linux watchdog (`watchdog:`, [`super::watchdog`])
//! or systemd's. With `WatchdogSec=` (and `NotifyAccess=all`, since the
//! guard is not the unit's main process) systemd gives every process of
//! the unit `NOTIFY_SOCKET` and `WATCHDOG_USEC`; the guard sends
//! `WATCHDOG=1` every half period, and when the pings stop systemd kills
//! the unit's processes, PostgreSQL's included (`WatchdogSignal=`, then
//! SIGKILL).
//!
//! It protects only if the kill comes before another node can take the
//! lock: `WatchdogSec` at most `ttl - loop_wait - retry_timeout - 1 s`
//! ([`ServiceWatchdog::protects`]).

use std::io;
use std::time::Duration;

use pgha_core::model::Timing;

use pgha_postgres::launch::{NOTIFY_SOCKET, WATCHDOG_USEC};

/// systemd's service watchdog, as this process's environment describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceWatchdog {
    /// `NOTIFY_SOCKET`: a path, or `@name` in the abstract namespace.
    pub socket: String,
    /// `WATCHDOG_USEC`: the unit is killed when no ping came for this long.
    pub period: Duration,
}

impl ServiceWatchdog {
    /// From `NOTIFY_SOCKET` and `WATCHDOG_USEC`; `None` when either is
    /// missing or unreadable (no service watchdog).
    pub fn from_env() -> Option<Self> {
        Self::from_vars(
            std::env::var(NOTIFY_SOCKET).ok().as_deref(),
            std::env::var(WATCHDOG_USEC).ok().as_deref(),
        )
    }

    fn from_vars(socket: Option<&str>, usec: Option<&str>) -> Option<Self> {
        let socket = socket.filter(|s| !s.is_empty())?.to_string();
        let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
        Some(ServiceWatchdog {
            socket,
            period: Duration::from_micros(usec),
        })
    }

    /// How often the guard pings: half the period, as systemd advises.
    pub fn interval(&self) -> Duration {
        self.period / 2
    }

    /// The longest period that still stops a frozen node before another
    /// can take its lock: the last renewal may be `loop_wait +
    /// retry_timeout` older than the freeze, and the kill needs a moment.
    pub fn longest_protecting_period(t: Timing) -> Duration {
        t.ttl
            .saturating_sub(t.loop_wait + t.retry_timeout + Duration::from_secs(1))
    }

    /// Why this period cannot protect against a frozen agent and guard
    /// with timings `t`, if it cannot.
    pub fn protects(&self, t: Timing) -> Result<(), String> {
        let longest = Self::longest_protecting_period(t);
        if self.period > longest {
            return Err(format!(
                "systemd's WatchdogSec ({:?}) is longer than ttl - loop_wait - retry_timeout - 1 s \
                 ({longest:?}): a node whose agent and guard freeze together is killed only after \
                 another may have taken its lock",
                self.period
            ));
        }
        Ok(())
    }

    /// Sends one `WATCHDOG=1`.
    pub fn ping(&self) -> io::Result<()> {
        crate::service_notify::send(&self.socket, "WATCHDOG=1")
    }

    /// Pings every [`ServiceWatchdog::interval`] for as long as the process
    /// runs (and is not frozen: then the pings stop, which is the point).
    pub async fn keep_pinging(self) {
        let mut failing = false;
        loop {
            match self.ping() {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("fence guard: systemd watchdog pings get through again");
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::error!(
                        "fence guard: cannot ping systemd's watchdog at {} ({e}); systemd will \
                         kill the service (set NotifyAccess=all in the unit)",
                        self.socket
                    );
                }
                Err(_) => {}
            }
            tokio::time::sleep(self.interval()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(ttl: u64, loop_wait: u64, retry: u64) -> Timing {
        Timing {
            ttl: Duration::from_secs(ttl),
            loop_wait: Duration::from_secs(loop_wait),
            retry_timeout: Duration::from_secs(retry),
        }
    }

    #[test]
    fn the_environment_names_socket_and_period() {
        let w = ServiceWatchdog::from_vars(Some("/run/systemd/notify"), Some("6000000")).unwrap();
        assert_eq!(w.period, Duration::from_secs(6));
        assert_eq!(w.interval(), Duration::from_secs(3));
        assert_eq!(ServiceWatchdog::from_vars(None, Some("6000000")), None);
        assert_eq!(ServiceWatchdog::from_vars(Some("/s"), None), None);
        assert_eq!(ServiceWatchdog::from_vars(Some("/s"), Some("0")), None);
        assert_eq!(ServiceWatchdog::from_vars(Some(""), Some("5")), None);
        assert_eq!(ServiceWatchdog::from_vars(Some("/s"), Some("x")), None);
    }

    #[test]
    fn a_period_protects_only_when_the_kill_comes_before_the_lock_can_pass() {
        let w = |s| ServiceWatchdog {
            socket: "/s".into(),
            period: Duration::from_secs(s),
        };
        // Patroni's defaults: 30 - 10 - 10 - 1.
        assert!(w(9).protects(timing(30, 10, 10)).is_ok());
        let why = w(10).protects(timing(30, 10, 10)).unwrap_err();
        assert!(why.contains("WatchdogSec"), "{why}");
        assert!(w(2).protects(timing(5, 1, 2)).is_err());
    }

    #[test]
    fn pings_reach_the_socket() {
        use std::os::unix::net::UnixDatagram;
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let w = ServiceWatchdog {
            socket: path.display().to_string(),
            period: Duration::from_secs(2),
        };
        w.ping().unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
        let abstract_name = format!("@pgha-test-{}", std::process::id());
        let server = {
            use std::os::linux::net::SocketAddrExt;
            let addr =
                std::os::unix::net::SocketAddr::from_abstract_name(&abstract_name[1..]).unwrap();
            UnixDatagram::bind_addr(&addr).unwrap()
        };
        ServiceWatchdog {
            socket: abstract_name,
            period: Duration::from_secs(2),
        }
        .ping()
        .unwrap();
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }
}
