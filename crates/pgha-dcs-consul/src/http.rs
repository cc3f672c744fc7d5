//! The HTTP transport to Consul: one hyper client, several agents, and a
//! time bound on everything.
//!
//! The client stays on one agent and moves to the next when a request to
//! it fails (no connection, no answer in time, or a 429/5xx answer that is
//! not about the request itself). Requests that are safe to repeat are
//! repeated within the caller's deadline, on the next agent when there are
//! several (each attempt then gets `retry_timeout / agents`, at least 1 s);
//! a compare-and-set is repeated only when it surely was not applied (the
//! connection could not be made, or Consul said 429), since repeating one
//! that succeeded unseen would report our own write as a conflict.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, HeaderValue, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;
use tracing::debug;

use crate::config::{ConfigError, ConsulConfig, Endpoint};
use crate::wire;

#[cfg(feature = "tls")]
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
#[cfg(not(feature = "tls"))]
type Connector = HttpConnector;

/// The shortest time one attempt on one agent gets when a call may move on
/// to the next agent.
const MIN_ATTEMPT: Duration = Duration::from_secs(1);
/// Pause between attempts, so a refusing agent is not hammered.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Bodies of Consul 500 answers that are answers about the request (the
/// session is gone, the TTL is out of range, …), not unavailability.
const ANSWERS_IN_500: [&str; 7] = [
    "invalid session",
    "Invalid Session TTL",
    "Session TTL",
    "Missing check",
    "Missing node",
    "Invalid Behavior",
    "missing session",
];

/// Whether a request may be sent again after a failure whose outcome is
/// unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Repeat {
    /// Reads, renewals, plain puts and deletes, lock acquisitions by one
    /// session, compare-and-set deletes (Consul answers `true` for a key
    /// already gone): applying twice is the same as once. Also session
    /// creation: a repeat after a lost answer leaves one unused session,
    /// which holds nothing and expires with its TTL.
    Safe,
    /// Compare-and-set writes: repeated only when surely not applied.
    OnlyIfNotApplied,
}

/// One request.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub method: Method,
    /// Already encoded: `/v1/kv/service/demo/leader`.
    pub path: String,
    /// `(name, None)` is a bare flag (`recurse`); values are encoded here.
    pub query: Vec<(&'static str, Option<String>)>,
    pub body: Bytes,
    pub repeat: Repeat,
}

impl Call {
    pub fn new(method: Method, path: String, repeat: Repeat) -> Self {
        Call {
            method,
            path,
            query: Vec::new(),
            body: Bytes::new(),
            repeat,
        }
    }

    pub fn flag(mut self, name: &'static str) -> Self {
        self.query.push((name, None));
        self
    }

    pub fn param(mut self, name: &'static str, value: impl ToString) -> Self {
        self.query.push((name, Some(value.to_string())));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }
}

/// An HTTP answer from Consul (any status but 429 and unexplained 5xx).
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    pub status: u16,
    /// `X-Consul-Index`, on reads.
    pub index: Option<u64>,
    pub body: Bytes,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).trim().to_string()
    }

    /// The `true`/`false` answer of a KV write.
    pub fn boolean(&self) -> Option<bool> {
        match self.text().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    }
}

/// A request that got no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fail {
    /// No connection, or no answer in time. The outcome of a write is
    /// unknown unless `not_sent`.
    Transport { detail: String, not_sent: bool },
    /// Consul answered 429 (rate limited: not applied) or a 5xx such as
    /// "No cluster leader" (outcome unknown).
    Unavailable { status: u16, body: String },
    /// Refused for good: a certificate that is not trusted, an invalid URL.
    Rejected(String),
}

impl Fail {
    fn surely_not_applied(&self) -> bool {
        match self {
            Fail::Transport { not_sent, .. } => *not_sent,
            Fail::Unavailable { status, .. } => *status == 429,
            Fail::Rejected(_) => true,
        }
    }

    pub fn detail(&self) -> String {
        match self {
            Fail::Transport { detail, .. } => detail.clone(),
            Fail::Unavailable { status, body } => format!("Consul answered {status}: {body}"),
            Fail::Rejected(d) => d.clone(),
        }
    }
}

/// The connection pool and the agents.
pub(crate) struct Transport {
    endpoints: Vec<Endpoint>,
    client: Client<Connector, Full<Bytes>>,
    token: Option<HeaderValue>,
    dc: Option<String>,
    /// The agent requests go to now.
    current: AtomicUsize,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("endpoints", &self.endpoints)
            .field("dc", &self.dc)
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// Checks the configuration and reads TLS files; connects nothing.
    pub fn new(config: &ConsulConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        #[cfg(feature = "tls")]
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls::client_config(config)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        #[cfg(not(feature = "tls"))]
        let connector = http;
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(4)
            .build(connector);
        let token = match &config.token {
            Some(t) => {
                let mut v = HeaderValue::from_str(t).map_err(|_| ConfigError::Invalid {
                    key: "token".into(),
                    reason: "not a valid HTTP header value".into(),
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        Ok(Transport {
            endpoints: config.endpoints.clone(),
            client,
            token,
            dc: config.dc.clone(),
            current: AtomicUsize::new(0),
        })
    }

    fn request(&self, endpoint: &Endpoint, call: &Call) -> Result<Request<Full<Bytes>>, Fail> {
        let mut uri = format!("{}{}", endpoint.base_url(), call.path);
        let dc = self.dc.as_ref().map(|d| ("dc", Some(d.clone())));
        let mut sep = '?';
        for (name, value) in call.query.iter().cloned().chain(dc) {
            uri.push(sep);
            sep = '&';
            uri.push_str(name);
            if let Some(v) = value {
                uri.push('=');
                uri.push_str(&wire::query_value(&v));
            }
        }
        let mut builder = Request::builder()
            .method(call.method.clone())
            .uri(&uri)
            .header(USER_AGENT, concat!("pgha/", env!("CARGO_PKG_VERSION")));
        if let Some(t) = &self.token {
            builder = builder.header("X-Consul-Token", t.clone());
        }
        if !call.body.is_empty() {
            builder = builder.header(CONTENT_TYPE, "application/octet-stream");
        }
        builder
            .body(Full::new(call.body.clone()))
            .map_err(|e| Fail::Rejected(format!("invalid request {uri}: {e}")))
    }

    /// Moves to the next agent after `index` failed (unless another
    /// failure already moved on).
    fn failed(&self, index: usize) {
        let n = self.endpoints.len();
        if n > 1 {
            let _ = self.current.compare_exchange(
                index,
                (index + 1) % n,
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
        }
    }

    /// One attempt on one agent, bounded by `budget`.
    async fn attempt(&self, call: &Call, budget: Duration) -> (usize, Result<Answer, Fail>) {
        let index = self.current.load(Ordering::SeqCst) % self.endpoints.len();
        let endpoint = &self.endpoints[index];
        let req = match self.request(endpoint, call) {
            Ok(r) => r,
            Err(f) => return (index, Err(f)),
        };
        let result = tokio::time::timeout(budget, async {
            let resp = self.client.request(req).await?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((parts, body))
        })
        .await;
        let outcome = match result {
            Err(_) => Err(Fail::Transport {
                detail: format!("{endpoint}: no answer within {budget:?}"),
                not_sent: false,
            }),
            Ok(Err(e)) => Err(classify(endpoint, e.as_ref())),
            Ok(Ok((parts, body))) => {
                let status = parts.status.as_u16();
                let index = parts
                    .headers
                    .get("X-Consul-Index")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse().ok());
                let text = String::from_utf8_lossy(&body);
                if status == 429
                    || (status >= 500 && !ANSWERS_IN_500.iter().any(|a| text.contains(a)))
                {
                    Err(Fail::Unavailable {
                        status,
                        body: format!("{endpoint}: {}", text.trim()),
                    })
                } else {
                    Ok(Answer {
                        status,
                        index,
                        body,
                    })
                }
            }
        };
        (index, outcome)
    }

    /// Sends `call`, repeating as its [`Repeat`] allows, until `deadline`.
    /// `retry_timeout` sets the share of one attempt when there are
    /// several agents.
    pub async fn send(
        &self,
        call: &Call,
        deadline: Instant,
        retry_timeout: Duration,
    ) -> Result<Answer, Fail> {
        let agents = u32::try_from(self.endpoints.len()).unwrap_or(u32::MAX);
        let per_attempt = if agents > 1 && call.repeat == Repeat::Safe {
            (retry_timeout / agents).max(MIN_ATTEMPT)
        } else {
            Duration::MAX
        };
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(Fail::Transport {
                    detail: format!("no answer within retry_timeout ({retry_timeout:?})"),
                    not_sent: false,
                });
            }
            let (index, outcome) = self.attempt(call, remaining.min(per_attempt)).await;
            let fail = match outcome {
                Ok(answer) => return Ok(answer),
                Err(f @ Fail::Rejected(_)) => return Err(f),
                Err(f) => f,
            };
            self.failed(index);
            let may_repeat = call.repeat == Repeat::Safe || fail.surely_not_applied();
            if !may_repeat || Instant::now() + RETRY_PAUSE >= deadline {
                return Err(fail);
            }
            debug!(
                path = call.path,
                detail = fail.detail(),
                "Consul request failed; trying again"
            );
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }

    /// Sends `call` once, bounded by `until` (blocking queries).
    pub async fn send_once(&self, call: &Call, until: Instant) -> Result<Answer, Fail> {
        let budget = until.saturating_duration_since(Instant::now());
        let (index, outcome) = self.attempt(call, budget).await;
        if matches!(
            outcome,
            Err(Fail::Transport { .. } | Fail::Unavailable { .. })
        ) {
            self.failed(index);
        }
        outcome
    }
}

/// Sorts a hyper error: connection failures (nothing sent), certificate
/// problems (configuration), and everything else (outcome unknown).
fn classify(endpoint: &Endpoint, e: &(dyn std::error::Error + 'static)) -> Fail {
    let mut detail = format!("{endpoint}: {e}");
    let mut cause = e.source();
    // Bounded: error chains are short, but nothing promises that.
    for _ in 0..16 {
        let Some(c) = cause else { break };
        detail.push_str(": ");
        detail.push_str(&c.to_string());
        cause = c.source();
    }
    let lower = detail.to_ascii_lowercase();
    if lower.contains("certificate") || lower.contains("unknownissuer") {
        return Fail::Rejected(detail);
    }
    let not_sent = e
        .downcast_ref::<hyper_util::client::legacy::Error>()
        .is_some_and(hyper_util::client::legacy::Error::is_connect);
    Fail::Transport { detail, not_sent }
}

#[cfg(feature = "tls")]
mod tls {
    //! rustls client configuration from `cacert`, `cert` and `key`.

    use std::path::Path;
    use std::sync::Arc;

    use rustls::RootCertStore;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    use crate::config::{ConfigError, ConsulConfig};

    fn unreadable(path: &Path, e: impl std::fmt::Display) -> ConfigError {
        ConfigError::Unreadable {
            path: path.display().to_string(),
            reason: e.to_string(),
        }
    }

    fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| unreadable(path, e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| unreadable(path, e))?;
        if certs.is_empty() {
            return Err(unreadable(path, "no PEM certificate in the file"));
        }
        Ok(certs)
    }

    pub(super) fn client_config(
        config: &ConsulConfig,
    ) -> Result<rustls::ClientConfig, ConfigError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        if let Some(ca) = &config.cacert {
            for cert in certs(ca)? {
                roots.add(cert).map_err(|e| unreadable(ca, e))?;
            }
        } else {
            #[cfg(feature = "tls-roots")]
            for cert in rustls_native_certs::load_native_certs().certs {
                // A system CA rustls cannot use is skipped, as browsers do.
                let _ = roots.add(cert);
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::Invalid {
                key: "cacert".into(),
                reason: e.to_string(),
            })?
            .with_root_certificates(roots);
        match &config.cert {
            Some(cert) => {
                let chain = certs(cert)?;
                // Patroni accepts a combined file when `key` is not given.
                let key_path = config.key.as_deref().unwrap_or(cert);
                let key =
                    PrivateKeyDer::from_pem_file(key_path).map_err(|e| unreadable(key_path, e))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| ConfigError::Invalid {
                        key: "cert".into(),
                        reason: e.to_string(),
                    })
            }
            None => Ok(builder.with_no_client_auth()),
        }
    }
}
