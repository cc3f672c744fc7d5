//! A **Consul emulator** for tests: a small HTTP server on loopback that
//! answers the part of Consul's HTTP API a Patroni-compatible DCS client
//! uses, with Consul's documented semantics. It is not Consul and must
//! never be used as one: it keeps everything in memory, has one node, one
//! datacenter and no Raft.
//!
//! It exists because no Consul agent can be installed where pgha's tests
//! run. pgha's Consul backend (`pgha-dcs-consul`) is tested against it,
//! and so is Patroni's own Consul client (`patroni.dcs.consul`), so the
//! two clients are cross-checked against one server; each behaviour it
//! implements has a test quoting the Consul documentation sentence it
//! comes from (`tests/documented_behaviour.rs`).
//!
//! # What it implements
//!
//! - `GET/PUT/DELETE /v1/kv/<key>`: `recurse`, `keys`/`separator`, `raw`
//!   (flags are recognised by presence, as Consul does: `?recurse=false`
//!   is still recursive), `cas` (`0` = create only), `acquire`, `release`,
//!   `flags`; conflicting flags (`cas` with `acquire`, `recurse` with
//!   `cas`, …) are refused with 400; values are base64 in JSON; writes
//!   that change nothing keep the `ModifyIndex`.
//! - `PUT /v1/txn` with KV operations (`set`, `cas`, `lock`, `unlock`,
//!   `get`, `check-index`, `check-session`, `check-not-exists`, `delete`,
//!   `delete-cas`, `delete-tree`): all applied at one index, or none (409
//!   with `Errors`); lock-delays are checked first. Node, Service and
//!   Check operations are not implemented (404).
//! - Sessions: `PUT /v1/session/create` (`Name`, `Node`, `Checks`/
//!   `NodeChecks`, `LockDelay`, `Behavior`, `TTL`, keys in any case),
//!   `renew` (404 when gone), `destroy`, `info`, `list`. A session with a
//!   TTL is invalidated no earlier than its TTL and no later than twice
//!   its TTL after its last renewal ([`StoreConfig::ttl_multiplier`];
//!   2.0 by default, as Consul's leader arms its timers). Invalidation
//!   releases or deletes the keys it holds (`Behavior`) and puts each
//!   under the session's lock-delay. `session_ttl_min` is enforced with
//!   Consul's error text.
//! - Blocking queries on KV reads: `index` and `wait` (default 5 min, at
//!   most 10, plus up to `wait/16` of jitter), `X-Consul-Index` on every
//!   read (a missing key reports the KV table's index; a recursive read
//!   the highest index under the prefix, deletions included).
//! - `GET /v1/agent/self` shaped as a modern agent's (`Config`,
//!   `DebugConfig.SessionTTLMin`, `Member`), `GET /v1/status/leader`.
//! - ACL *tokens* as an on/off gate ([`EmulatorConfig::acl_token`]):
//!   requests without the token get 403. No policies are evaluated.
//! - `dc`: requests naming another datacenter fail as Consul's do.
//! - Test switches: [`Faults`] (hang, any status such as 429 or 500),
//!   a settable [`EmulatorClock`], [`ConsulEmulator::restart`], which
//!   drops the listener and every connection and comes back on the same
//!   port with the same data, every session's TTL starting afresh (what a
//!   Consul leader election does), and [`ConsulEmulator::snapshot`] /
//!   [`restore`](ConsulEmulator::restore), a Raft snapshot restore: indexes
//!   go backwards and blocking queries answer at once.
//!
//! Anything else is answered 404 and logged, so running a client against
//! the emulator shows what else it would need.
//!
//! # What it cannot prove
//!
//! Passing tests against the emulator shows that a client speaks Consul's
//! documented API correctly; it cannot show how a real Consul cluster
//! behaves where the documentation leaves room or where several servers
//! are involved:
//! - **Session TTLs across a Consul leader failover.** Consul renews
//!   every TTL when a new leader takes over; the emulator imitates this
//!   on [`ConsulEmulator::restart`], but the timing of a real election
//!   (and the reads served meanwhile) is not modelled.
//! - **Node health.** Sessions are tied to a node and its checks
//!   (`serfHealth` by default); a real node failing its gossip check
//!   invalidates its sessions. The emulator has one node that never fails;
//!   only the TTL invalidates sessions.
//! - **ACLs.** A token either matches or does not; policies, roles and
//!   per-key rules are not evaluated.
//! - Consistency modes (`stale`, `consistent`) are accepted and mean
//!   nothing here: there is one copy of the data.

mod api;
mod control;
pub mod duration;
pub mod store;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info};

pub use control::{EmulatorClock, Fault, Faults};
pub use store::{Entry, Session, StoreConfig};

use api::Shared;
use control::lock;
use store::Store;

/// How to start an emulator.
#[derive(Clone, Debug)]
pub struct EmulatorConfig {
    /// Where to listen; port 0 picks a free one. Loopback only is the
    /// intended use.
    pub listen: SocketAddr,
    /// Node, datacenter, `session_ttl_min` and TTL multiplier.
    pub store: StoreConfig,
    /// When set, every request must carry this token (`X-Consul-Token` or
    /// `?token=`); others are refused with 403.
    pub acl_token: Option<String>,
    /// Serve HTTPS instead of HTTP (`tls` feature).
    #[cfg(feature = "tls")]
    pub tls: Option<TlsConfig>,
}

/// HTTPS for the emulator, as an agent with `tls.https` configured (`tls`
/// feature).
#[cfg(feature = "tls")]
#[derive(Clone, Debug)]
pub struct TlsConfig {
    /// PEM certificate chain and private key of the server.
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    /// When set, clients must present a certificate signed by this CA
    /// (Consul's `verify_incoming`).
    pub client_ca: Option<std::path::PathBuf>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            store: StoreConfig::default(),
            acl_token: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl EmulatorConfig {
    /// A configuration for fast tests: `session_ttl_min` lowered to 1 s so
    /// TTLs of a few seconds are accepted (a real agent needs
    /// `session_ttl_min = "1s"` in its configuration for the same).
    pub fn for_tests() -> Self {
        let mut c = EmulatorConfig::default();
        c.store.session_ttl_min = Duration::from_secs(1);
        c
    }
}

/// A running emulator. Dropping it stops the server.
pub struct ConsulEmulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    acceptor: Option<Acceptor>,
    /// The accept loop (which owns every connection) and the session reaper.
    tasks: Mutex<Option<(JoinHandle<()>, JoinHandle<()>)>>,
}

impl std::fmt::Debug for ConsulEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulEmulator")
            .field("addr", &self.addr)
            .field("tls", &self.acceptor.is_some())
            .finish_non_exhaustive()
    }
}

impl ConsulEmulator {
    /// Binds `config.listen` and starts serving.
    pub async fn start(config: EmulatorConfig) -> std::io::Result<Self> {
        let salt = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default()
            ^ u64::from(std::process::id());
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(config.store, salt)),
            changed: tokio::sync::watch::channel(0).0,
            abandoned: tokio::sync::watch::channel(0).0,
            clock: EmulatorClock::new(),
            faults: Faults::default(),
            acl_token: config.acl_token,
        });
        #[cfg(feature = "tls")]
        let acceptor = match &config.tls {
            Some(t) => Some(tls::acceptor(t)?),
            None => None,
        };
        #[cfg(not(feature = "tls"))]
        let acceptor = None;
        let listener = TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let emulator = ConsulEmulator {
            shared,
            addr,
            acceptor,
            tasks: Mutex::new(None),
        };
        emulator.spawn(listener);
        info!(%addr, "consul emulator listening");
        Ok(emulator)
    }

    fn spawn(&self, listener: TcpListener) {
        let serve = tokio::spawn(serve(listener, self.shared.clone(), self.acceptor.clone()));
        let reap = tokio::spawn(reaper(self.shared.clone()));
        if let Some((a, b)) = lock(&self.tasks).replace((serve, reap)) {
            a.abort();
            b.abort();
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>` (`https://` when serving TLS).
    pub fn url(&self) -> String {
        let scheme = if self.acceptor.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    /// The fault switches.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// The clock sessions expire by.
    pub fn clock(&self) -> &EmulatorClock {
        &self.shared.clock
    }

    /// Stops abruptly: the listener closes and every open connection is
    /// dropped mid-request. The data stays.
    pub fn stop(&self) {
        if let Some((serve, reap)) = lock(&self.tasks).take() {
            serve.abort();
            reap.abort();
        }
        debug!(addr = %self.addr, "consul emulator stopped");
    }

    /// Serves again on the same port with the same data. Every session's
    /// TTL starts afresh, as after a Consul leader election.
    pub async fn start_again(&self) -> std::io::Result<()> {
        let mut last = None;
        // The old listener may take a moment to be released.
        for _ in 0..50 {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => {
                    self.shared
                        .with_store(|st, now| st.reset_session_timers(now));
                    self.spawn(listener);
                    info!(addr = %self.addr, "consul emulator serving again");
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("could not bind again")))
    }

    /// [`stop`](Self::stop), then [`start_again`](Self::start_again).
    pub async fn restart(&self) -> std::io::Result<()> {
        self.stop();
        // Let aborted tasks release the port.
        tokio::task::yield_now().await;
        self.start_again().await
    }

    /// Writes a value directly, bypassing HTTP (a foreign writer).
    pub fn put_raw(&self, key: &str, value: &[u8]) {
        self.shared.with_store(|st, _| st.put_raw(key, value));
    }

    /// Reads an entry directly.
    pub fn get_raw(&self, key: &str) -> Option<Entry> {
        self.shared.with_store(|st, _| st.kv_get(key).1)
    }

    /// The live sessions.
    pub fn sessions(&self) -> Vec<Session> {
        self.shared.with_store(|st, _| st.sessions())
    }

    /// A copy of the whole state, for [`restore`](Self::restore).
    pub fn snapshot(&self) -> Snapshot {
        Snapshot(self.shared.with_store(|st, _| st.clone()))
    }

    /// Replaces the whole state by `snapshot`, as restoring a Raft snapshot
    /// does: indexes go back to the snapshot's, every session's TTL starts
    /// afresh, and blocking queries answer at once from the restored state.
    pub fn restore(&self, snapshot: &Snapshot) {
        let now = self.shared.clock.now();
        let index = {
            let mut st = lock(&self.shared.store);
            *st = snapshot.0.clone();
            st.reset_session_timers(now);
            st.index()
        };
        self.shared.abandoned.send_modify(|g| *g += 1);
        self.shared.changed.send_replace(index);
        info!(index, "consul emulator: snapshot restored");
    }
}

/// The emulator's whole state at one moment ([`ConsulEmulator::snapshot`]).
#[derive(Clone, Debug)]
pub struct Snapshot(Store);

impl Drop for ConsulEmulator {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(feature = "tls")]
type Acceptor = tokio_rustls::TlsAcceptor;
/// Without the `tls` feature there is never an acceptor.
#[cfg(not(feature = "tls"))]
#[derive(Clone, Debug)]
enum Acceptor {}

/// Accepts connections and serves each with the router; aborting this task
/// drops the listener and, with the `JoinSet`, every connection.
async fn serve(listener: TcpListener, shared: Arc<Shared>, acceptor: Option<Acceptor>) {
    let router = api::router(shared);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let service = TowerToHyperService::new(router.clone());
                let acceptor = acceptor.clone();
                connections.spawn(async move {
                    let result = match acceptor {
                        None => http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await,
                        #[cfg(feature = "tls")]
                        Some(acceptor) => {
                            let handshake = tokio::time::timeout(
                                Duration::from_secs(10),
                                acceptor.accept(stream),
                            );
                            match handshake.await {
                                Ok(Ok(tls)) => http1::Builder::new()
                                    .serve_connection(TokioIo::new(tls), service)
                                    .await,
                                Ok(Err(e)) => {
                                    debug!(%peer, "TLS handshake failed: {e}");
                                    return;
                                }
                                Err(_) => return,
                            }
                        }
                        #[cfg(not(feature = "tls"))]
                        Some(never) => match never {},
                    };
                    if let Err(e) = result {
                        debug!(%peer, "connection ended: {e}");
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

#[cfg(feature = "tls")]
mod tls {
    //! The rustls server side (`tls` feature).

    use std::path::Path;
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::server::WebPkiClientVerifier;

    fn bad(path: &Path, e: impl std::fmt::Display) -> std::io::Error {
        std::io::Error::other(format!("{}: {e}", path.display()))
    }

    fn certs(path: &Path) -> std::io::Result<Vec<CertificateDer<'static>>> {
        CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(path, e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(path, e))
    }

    pub(super) fn acceptor(t: &super::TlsConfig) -> std::io::Result<tokio_rustls::TlsAcceptor> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?;
        let builder = match &t.client_ca {
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in certs(ca)? {
                    roots.add(c).map_err(|e| bad(ca, e))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(std::io::Error::other)?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let key = PrivateKeyDer::from_pem_file(&t.key).map_err(|e| bad(&t.key, e))?;
        let config = builder
            .with_single_cert(certs(&t.cert)?, key)
            .map_err(std::io::Error::other)?;
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

/// Invalidates sessions when their time comes, so blocking queries on
/// their keys wake without waiting for the next request. Re-plans after
/// every change (a new session may expire sooner) and every clock move.
async fn reaper(shared: Arc<Shared>) {
    let mut changed = shared.changed.subscribe();
    loop {
        shared.with_store(|_, _| ());
        let now = shared.clock.now();
        let next = lock(&shared.store).next_expiry();
        let sleep = next.map_or(Duration::from_secs(3600), |at| at.saturating_sub(now));
        tokio::select! {
            _ = tokio::time::sleep(sleep + Duration::from_millis(1)) => {}
            _ = shared.clock.moved.notified() => {}
            r = changed.changed() => {
                if r.is_err() {
                    return;
                }
            }
        }
    }
}
