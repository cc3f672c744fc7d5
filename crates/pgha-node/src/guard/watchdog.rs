//! The Linux watchdog device (`/dev/watchdog`, e.g. the `softdog` module),
//! held by the guard while this node holds the leader lock.
//!
//! Opening the device starts its timer; unless something writes to it
//! within the timeout, the kernel resets the host. The guard writes a
//! keepalive with every beat that carries a lock deadline, and fences (or
//! disarms) before the timer can run out, so the reset only happens when
//! the guard itself is dead or frozen, or could not stop PostgreSQL: the
//! last line of defence, as with Patroni. Disarming writes the magic `V`
//! before closing, which stops the timer on drivers that allow it.
//!
//! A device that does not accept the watchdog ioctls (a stand-in file in
//! the tests, or a driver without `WDIOC_SETTIMEOUT`) still gets the
//! keepalives, but its timeout is unknown: reported as *unverified*, which
//! `watchdog.mode: required` does not accept.

// The one place pgha talks to the kernel through an ioctl; the workspace
// denies unsafe code everywhere else.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

// <linux/watchdog.h>: #define WDIOC_SETTIMEOUT _IOWR(WATCHDOG_IOCTL_BASE, 6, int)
nix::ioctl_readwrite!(wdioc_settimeout, b'W', 6, nix::libc::c_int);

/// An open, running watchdog.
#[derive(Debug)]
pub struct Watchdog {
    file: File,
    /// The timeout the driver accepted (it may round), or `None` when the
    /// device took no ioctl and its timeout is unknown.
    pub timeout_s: Option<u32>,
}

/// Why the watchdog could not be used; each names the device.
#[derive(Debug, thiserror::Error)]
pub enum WatchdogError {
    #[error("cannot open {}: {source}", device.display())]
    Open {
        device: PathBuf,
        source: std::io::Error,
    },
    /// The driver rounded the timeout up (or to 0): it would fire after
    /// the lock expired, which is no protection.
    #[error("{} applied a timeout of {applied} s instead of {wanted} s", device.display())]
    TimeoutRefused {
        device: PathBuf,
        applied: i64,
        wanted: u32,
    },
    #[error("cannot set the timeout of {}: {errno}", device.display())]
    SetTimeout { device: PathBuf, errno: Errno },
    #[error("watchdog keepalive: {0}")]
    Keepalive(std::io::Error),
    #[error("watchdog magic close: {0}")]
    MagicClose(std::io::Error),
}

impl Watchdog {
    /// Opens `device` (starting its timer) and sets its timeout.
    pub fn activate(device: &Path, timeout_s: u32) -> Result<Watchdog, WatchdogError> {
        let file =
            File::options()
                .write(true)
                .open(device)
                .map_err(|source| WatchdogError::Open {
                    device: device.to_path_buf(),
                    source,
                })?;
        let mut value = nix::libc::c_int::try_from(timeout_s).unwrap_or(nix::libc::c_int::MAX);
        // SAFETY: `file` is open for the whole call, and `value` is a live
        // c_int the driver reads and writes back (the timeout it applied).
        let set = unsafe { wdioc_settimeout(file.as_raw_fd(), &mut value) };
        let mut dog = Watchdog {
            file,
            timeout_s: None,
        };
        match set {
            Ok(_) => {
                let applied = u32::try_from(value).unwrap_or(0);
                if applied == 0 || applied > timeout_s {
                    let _ = dog.disarm();
                    return Err(WatchdogError::TimeoutRefused {
                        device: device.to_path_buf(),
                        applied: i64::from(value),
                        wanted: timeout_s,
                    });
                }
                dog.timeout_s = Some(applied);
            }
            Err(Errno::ENOTTY | Errno::EINVAL | Errno::EOPNOTSUPP) => {}
            Err(e) => {
                let _ = dog.disarm();
                return Err(WatchdogError::SetTimeout {
                    device: device.to_path_buf(),
                    errno: e,
                });
            }
        }
        dog.keepalive()?;
        Ok(dog)
    }

    /// Restarts the timer.
    pub fn keepalive(&mut self) -> Result<(), WatchdogError> {
        self.file
            .write_all(b"1")
            .and_then(|()| self.file.flush())
            .map_err(WatchdogError::Keepalive)
    }

    /// Stops the timer (magic close) and closes the device.
    pub fn disarm(mut self) -> Result<(), WatchdogError> {
        self.file
            .write_all(b"V")
            .and_then(|()| self.file.flush())
            .map_err(WatchdogError::MagicClose)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stand_in_file_gets_keepalives_and_the_magic_close_with_an_unknown_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("watchdog");
        std::fs::write(&path, "").unwrap();
        let mut dog = Watchdog::activate(&path, 10).unwrap();
        assert_eq!(dog.timeout_s, None, "a plain file takes no ioctl");
        dog.keepalive().unwrap();
        dog.disarm().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "11V");
    }

    #[test]
    fn a_missing_device_is_named() {
        let e = Watchdog::activate(Path::new("/nonexistent/watchdog"), 10)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/watchdog"), "{e}");
    }
}
