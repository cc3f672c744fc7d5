//! A TCP relay on loopback whose link a test can cut.
//!
//! Each node's DCS client connects to the server through its own
//! [`FaultProxy`], so a test can partition one node without touching the
//! server or the other nodes, and without network namespaces.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// What the link does with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkMode {
    /// Bytes flow both ways.
    Open,
    /// Connections stay up but no byte crosses, either way, until the link
    /// opens again (a partition that drops packets). New connections are
    /// accepted and held.
    Blackhole,
    /// Every connection is closed and new ones are closed at once (the
    /// server looks down).
    Refuse,
}

/// A relay from a loopback port to `target`, with a switch.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    mode: watch::Sender<LinkMode>,
    accept: tokio::task::JoinHandle<()>,
    connections: Arc<Mutex<JoinSet<()>>>,
}

impl FaultProxy {
    /// Listens on a free loopback port and relays to `target`.
    pub async fn start(target: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (mode, _) = watch::channel(LinkMode::Open);
        let connections = Arc::new(Mutex::new(JoinSet::new()));
        let accept = {
            let mode = mode.clone();
            let connections = connections.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((client, _)) = listener.accept().await else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    };
                    if *mode.borrow() == LinkMode::Refuse {
                        drop(client);
                        continue;
                    }
                    let rx = mode.subscribe();
                    let mut set = connections.lock().unwrap_or_else(|p| p.into_inner());
                    // Reap finished relays so the set does not grow without bound.
                    while set.try_join_next().is_some() {}
                    set.spawn(relay(client, target, rx));
                }
            })
        };
        Ok(FaultProxy {
            addr,
            mode,
            accept,
            connections,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set(&self, mode: LinkMode) {
        self.mode.send_replace(mode);
        if mode == LinkMode::Refuse {
            self.connections
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .abort_all();
        }
    }

    pub fn mode(&self) -> LinkMode {
        *self.mode.borrow()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .abort_all();
    }
}

/// Waits while the link is black-holed; false when it is refused.
async fn open(mode: &mut watch::Receiver<LinkMode>) -> bool {
    loop {
        let m = *mode.borrow_and_update();
        match m {
            LinkMode::Open => return true,
            LinkMode::Refuse => return false,
            LinkMode::Blackhole => {
                if mode.changed().await.is_err() {
                    return false;
                }
            }
        }
    }
}

async fn relay(client: TcpStream, target: SocketAddr, mut mode: watch::Receiver<LinkMode>) {
    if !open(&mut mode).await {
        return;
    }
    let Ok(server) = TcpStream::connect(target).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = pump(cr, sw, mode.clone());
    let down = pump(sr, cw, mode);
    // When one direction ends, the connection is over.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<LinkMode>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if !open(&mut mode).await {
            return;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            // Stop reading the moment the link is cut.
            _ = mode.changed() => continue,
        };
        // Bytes read just before a cut are held until the link opens.
        if !open(&mut mode).await {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Sends `request` to `addr` and returns everything it answers before
/// closing (bounded to 2 s): enough for `ruok` and `GET /health`.
pub async fn ask(addr: SocketAddr, request: &[u8]) -> anyhow::Result<String> {
    tokio::time::timeout(Duration::from_secs(2), async {
        let mut s = TcpStream::connect(addr).await?;
        s.write_all(request).await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        let text = String::from_utf8_lossy(&out).into_owned();
        // Keep only the body of an HTTP answer.
        Ok(match text.split_once("\r\n\r\n") {
            Some((_, body)) => body.to_string(),
            None => text,
        })
    })
    .await
    .map_err(|_| anyhow::anyhow!("no answer from {addr} within 2 s"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn roundtrip(s: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
        s.write_all(b"ping").await.ok()?;
        let mut buf = [0u8; 4];
        tokio::time::timeout(within, s.read_exact(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some(buf.to_vec())
    }

    #[tokio::test]
    async fn blackhole_holds_bytes_and_refuse_closes() {
        let proxy = FaultProxy::start(echo_server().await).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(
            roundtrip(&mut s, Duration::from_secs(2)).await.unwrap(),
            b"ping"
        );

        proxy.set(LinkMode::Blackhole);
        assert!(
            roundtrip(&mut s, Duration::from_millis(300))
                .await
                .is_none()
        );
        proxy.set(LinkMode::Open);
        // The bytes sent during the black hole arrive once it opens.
        let mut buf = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf, b"ping");

        proxy.set(LinkMode::Refuse);
        let mut buf = [0u8; 4];
        let r = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .unwrap();
        assert!(
            matches!(r, Ok(0) | Err(_)),
            "connection must be closed: {r:?}"
        );
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        assert!(
            roundtrip(&mut fresh, Duration::from_millis(500))
                .await
                .is_none()
        );

        proxy.set(LinkMode::Open);
        let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(
            roundtrip(&mut again, Duration::from_secs(2)).await.unwrap(),
            b"ping"
        );
    }
}
