//! A small **emulator** of kube-apiserver on loopback, for testing pgha's
//! Kubernetes DCS backend and cross-checking it with Patroni's own
//! Kubernetes client. It is not a Kubernetes: no scheduler, no kubelet, no
//! controllers, no etcd; one process, state in memory.
//!
//! # What it implements
//!
//! Core `v1` ConfigMaps, Endpoints, Services and Pods, in any namespace
//! (namespaces exist implicitly), over plain HTTP/1.1 with JSON:
//!
//! - `GET`, `POST` (create; `409 AlreadyExists` when the name is taken),
//!   `PUT`, `PATCH`, `DELETE` (with `preconditions`) of one object;
//!   `GET` (list, with `limit`/`continue`) and `DELETE` (deletecollection)
//!   of a namespace's collection; `GET` across namespaces; the Pod `status`
//!   subresource (the main Pod resource ignores status changes, and a new
//!   Pod starts `Pending`, as the kubelet owns the status).
//! - `metadata.resourceVersion` from one global counter that moves on every
//!   change; a write naming a stale `resourceVersion` is `409 Conflict`; a
//!   write that changes nothing keeps the version and sends no event.
//! - `PATCH` as JSON merge patch (`application/merge-patch+json`) and as
//!   strategic merge patch (`application/strategic-merge-patch+json`) for
//!   maps (`null` deletes) and lists without merge keys (see [`patch`]);
//!   JSON patch and server-side apply are answered `415`.
//! - Validation of names, label keys and values, annotation keys and their
//!   total size ([`validate`]).
//! - Label selectors (`=`, `==`, `!=`, `in`, `notin`, `key`, `!key`) and
//!   field selectors on `metadata.name` / `metadata.namespace` for list,
//!   watch and deletecollection ([`selector`]).
//! - Watch (`?watch=true`): from no version or `"0"` (synthetic `ADDED`
//!   events for the current state, then changes), or from an exact
//!   version (changes after it); objects moving into or out of a label
//!   selection arrive as `ADDED` / `DELETED`; `timeoutSeconds`;
//!   `allowWatchBookmarks` (a `BOOKMARK` every 5 s and at the timeout). A
//!   version older than the kept history gets an `ERROR` event with a
//!   `410 Gone` status, as kube-apiserver's watch does. History is kept
//!   for five minutes of the emulator's clock (etcd's default compaction)
//!   and is forgotten on a restart (a restarted apiserver's watch cache
//!   starts at the current version).
//! - Discovery as clients ask for it: `/version`, `/api`, `/api/v1`,
//!   `/apis`, `/healthz`, and `GET` of namespaces.
//!
//! Fault switches ([`Faults`]): hang (accept, never answer), failing
//! requests with 429/5xx (with `Retry-After`), dropping every open watch
//! stream mid-response, forcing `410 Gone` on the next watches, latency; a
//! settable clock ([`Clock`]); [`Emulator::compact`]; and
//! [`Emulator::restart`] on the same port keeping the state.
//!
//! # What it cannot prove
//!
//! It says nothing about a real cluster's watch cache and compaction timing
//! (here every read is served from the one up-to-date store and history
//! is cut only by the switches above), about authentication, RBAC and
//! admission (there are none: every request is allowed), about
//! multi-apiserver consistency, priority and fairness, protobuf, managed
//! fields and server-side apply, or strategic merge of lists by key. The
//! behaviour it does implement is tested against the sentences of the
//! Kubernetes documentation it comes from (see the tests in `tests/`).

mod error;
mod faults;
mod http;
pub mod patch;
pub mod selector;
mod store;
pub mod validate;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{debug, info};

pub use error::ApiError;
pub use faults::{Clock, Faults};
pub use store::Resource;

use http::Shared;

/// A running emulator. Dropping it stops the server and closes every
/// connection.
#[derive(Debug)]
pub struct Emulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Mutex<Option<Server>>,
}

#[derive(Debug)]
struct Server {
    accept: tokio::task::JoinHandle<()>,
    connections: Arc<Mutex<JoinSet<()>>>,
}

impl Server {
    fn stop(self) {
        self.accept.abort();
        self.connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .abort_all();
    }
}

/// Errors starting or restarting the emulator.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the emulator listens on loopback only; {0} is not a loopback address")]
    NotLoopback(SocketAddr),
    #[error("writing the kubeconfig {path}: {source}")]
    Kubeconfig {
        path: String,
        source: std::io::Error,
    },
}

impl Emulator {
    /// Starts serving on `listen` (a loopback address; port 0 picks a free
    /// port).
    pub async fn start(listen: SocketAddr) -> Result<Emulator, EmulatorError> {
        if !listen.ip().is_loopback() {
            return Err(EmulatorError::NotLoopback(listen));
        }
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| EmulatorError::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener
            .local_addr()
            .map_err(|source| EmulatorError::Bind {
                addr: listen,
                source,
            })?;
        let shared = Arc::new(Shared::new());
        let server = serve(listener, shared.clone());
        info!(%addr, "pgha-k8s-emulator listening");
        Ok(Emulator {
            addr,
            shared,
            server: Mutex::new(Some(server)),
        })
    }

    /// Starts on a free loopback port.
    pub async fn start_local() -> Result<Emulator, EmulatorError> {
        Emulator::start(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    /// The recent requests, as `METHOD /path?query`, oldest first.
    pub fn requests(&self) -> Vec<String> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// The newest `resourceVersion`.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().current_rv()
    }

    /// A copy of one stored object.
    pub fn object(&self, res: Resource, namespace: &str, name: &str) -> Option<Value> {
        self.shared.store().get(res, namespace, name).cloned()
    }

    /// Copies of every stored object of `res` in `namespace`.
    pub fn objects(&self, res: Resource, namespace: &str) -> Vec<Value> {
        self.shared
            .store()
            .list(res, Some(namespace))
            .into_iter()
            .cloned()
            .collect()
    }

    /// Forgets the change history: watches resuming from any earlier
    /// version get `410 Gone` (an etcd compaction).
    pub fn compact(&self) {
        self.shared.store().compact_all();
    }

    /// How long changes are kept for watches, on the emulator's clock
    /// (default five minutes).
    pub fn set_history(&self, d: Duration) {
        self.shared.store().history = d;
    }

    /// Stops the server abruptly (every connection, watches included, is
    /// cut) and serves again on the same port with the same objects. Like a
    /// restarted kube-apiserver in front of the same etcd, the watch history
    /// starts afresh: resuming a watch from an older version gets `410`.
    pub async fn restart(&self) -> Result<(), EmulatorError> {
        self.stop();
        self.shared.store().compact_all();
        // The port was just released; binding again can take a moment.
        let mut last = None;
        for _ in 0..50 {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => {
                    let server = serve(listener, self.shared.clone());
                    *self.server.lock().unwrap_or_else(|p| p.into_inner()) = Some(server);
                    info!(addr = %self.addr, "pgha-k8s-emulator restarted");
                    return Ok(());
                }
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        Err(EmulatorError::Bind {
            addr: self.addr,
            source: last.unwrap_or_else(|| std::io::Error::other("bind failed")),
        })
    }

    /// Stops serving and closes every connection; the state stays.
    pub fn stop(&self) {
        if let Some(server) = self.server.lock().unwrap_or_else(|p| p.into_inner()).take() {
            server.stop();
        }
    }

    /// Writes a kubeconfig whose context `context` points at this emulator
    /// with `namespace` as its default namespace. The token is a dummy: the
    /// emulator does no authentication.
    pub fn write_kubeconfig(
        &self,
        path: &Path,
        context: &str,
        namespace: &str,
    ) -> Result<(), EmulatorError> {
        std::fs::write(path, kubeconfig(&self.url(), context, namespace)).map_err(|source| {
            EmulatorError::Kubeconfig {
                path: path.display().to_string(),
                source,
            }
        })
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A kubeconfig (YAML, which JSON is a subset of) for `server`.
pub fn kubeconfig(server: &str, context: &str, namespace: &str) -> String {
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "pgha-k8s-emulator", "cluster": {"server": server}}],
        "users": [{"name": "pgha-k8s-emulator", "user": {"token": "emulator"}}],
        "contexts": [{"name": context, "context": {"cluster": "pgha-k8s-emulator", "user": "pgha-k8s-emulator", "namespace": namespace}}],
        "current-context": context,
        "preferences": {},
    });
    let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    text.push('\n');
    text
}

fn serve(listener: TcpListener, shared: Arc<Shared>) -> Server {
    let connections = Arc::new(Mutex::new(JoinSet::new()));
    let conns = connections.clone();
    let accept = tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let shared = shared.clone();
            let mut set = conns.lock().unwrap_or_else(|p| p.into_inner());
            // Reap finished connections so the set stays small.
            while set.try_join_next().is_some() {}
            set.spawn(async move {
                let svc = service_fn(move |req| http::handle(shared.clone(), req));
                if let Err(e) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await
                {
                    debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
    });
    Server {
        accept,
        connections,
    }
}
