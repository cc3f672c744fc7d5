//! systemd's notification protocol (`sd_notify`): one datagram of
//! `KEY=value` lines to the socket in `NOTIFY_SOCKET`, which systemd gives
//! a unit's processes (`Type=notify`, or `WatchdogSec=`).
//!
//! The agent says `READY=1` once its REST API listens and the node runs,
//! `RELOADING=1` (with `MONOTONIC_USEC`) and `READY=1` again around a
//! reload, `STOPPING=1` when it stops, as Patroni 4.1 does; the fence guard
//! sends the watchdog's `WATCHDOG=1`
//! ([`crate::guard::service_watchdog`]). Without `NOTIFY_SOCKET` nothing is
//! sent.

use std::io;
use std::os::unix::net::UnixDatagram;

use pgha_postgres::launch::NOTIFY_SOCKET;

/// Sends `message` to `socket`: a path, or `@name` in the abstract
/// namespace.
pub fn send(socket: &str, message: &str) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    match socket.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(message.as_bytes(), &addr)?;
        }
        None => {
            sock.send_to(message.as_bytes(), socket)?;
        }
    }
    Ok(())
}

/// Tells the service manager `message` if this process runs under one
/// (`NOTIFY_SOCKET` set); a failure is logged, never fatal.
pub fn notify(message: &str) {
    let Some(socket) = std::env::var_os(NOTIFY_SOCKET) else {
        return;
    };
    let socket = socket.to_string_lossy();
    if let Err(e) = send(&socket, message) {
        tracing::warn!("cannot notify the service manager at {socket} ({message:?}): {e}");
    }
}

/// `RELOADING=1` with the monotonic time systemd (`Type=notify-reload`)
/// expects along with it.
pub fn reloading_message() -> String {
    let usec = crate::guard::protocol::monotonic_ns() / 1_000;
    format!("RELOADING=1\nMONOTONIC_USEC={usec}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_a_path_socket() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        send(&path.display().to_string(), "READY=1").unwrap();
        let mut buf = [0u8; 128];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let reloading = reloading_message();
        assert!(reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="));
        assert!(send(&tmp.path().join("none").display().to_string(), "X=1").is_err());
    }
}
