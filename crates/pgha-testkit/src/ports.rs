//! Free TCP ports on loopback.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

/// A loopback port nobody listens on now, never handed out twice by this
/// process (so tests running in parallel do not collide).
pub fn free_port() -> anyhow::Result<u16> {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    for _ in 0..100 {
        let port = TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port();
        let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
        if given.get_or_insert_with(HashSet::new).insert(port) {
            return Ok(port);
        }
    }
    anyhow::bail!("no free loopback port found in 100 tries")
}
