//! The one client for the members' REST APIs, used by the node (the
//! leader race, the name check), the REST server (switchover checks) and
//! pghactl.
//!
//! Calls are made as patronictl makes them: the URL is the member's
//! `api_url` with the path replaced, bodies are JSON, and requests carry
//! basic-auth credentials when given (pghactl: the `ctl`, else `restapi`
//! section). `https://` members are checked against `ctl.cacert` (else
//! `restapi.cafile`) and get `ctl.certfile`/`keyfile` when they ask for a
//! client certificate, or are not checked with `ctl.insecure` / `-k`.
//! Every call is bounded in time; a member that does not answer is an
//! [`RestError::Unreachable`] naming it, never a hang.

use std::path::PathBuf;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use pgha_core::model::Member;
use serde_json::Value;

#[cfg(feature = "tls")]
pub mod tls;

#[cfg(feature = "tls")]
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
#[cfg(not(feature = "tls"))]
type Connector = HttpConnector;
type HttpClient = Client<Connector, Full<Bytes>>;

/// How long to wait for a TCP connection to a member.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How calls to members' REST APIs use TLS (Patroni's `ctl` section,
/// falling back to `restapi`'s files).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientTls {
    /// Trust anchors for members' certificates.
    pub cacert: Option<PathBuf>,
    /// A client certificate and key, for members that verify clients.
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    /// Do not check members' certificates (`ctl.insecure`).
    pub insecure: bool,
}

/// Basic-auth credentials (`ctl.authentication` or `restapi.authentication`).
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

impl BasicAuth {
    /// The `Authorization` header value.
    pub fn header(&self) -> String {
        format!(
            "Basic {}",
            base64(format!("{}:{}", self.username, self.password).as_bytes())
        )
    }
}

/// Standard base64 with padding (RFC 4648), for the `Authorization` header.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Why a REST call got no HTTP answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RestError {
    /// The member has no `api_url`, or one pghactl cannot call.
    #[error("{member}: {reason}")]
    NoApi { member: String, reason: String },
    /// No connection could be made (the request was not received).
    #[error("{member} ({url}) is unreachable: {reason}")]
    Unreachable {
        member: String,
        url: String,
        reason: String,
    },
    /// Connected, but no answer in time: the member may still act on it.
    #[error("{member} ({url}) did not answer within {}s", .after.as_secs())]
    NoAnswer {
        member: String,
        url: String,
        after: Duration,
    },
}

impl RestError {
    /// The error without the member's name (for lines that already name it).
    pub fn detail(&self) -> String {
        match self {
            RestError::NoApi { reason, .. } => reason.clone(),
            RestError::Unreachable { url, reason, .. } => format!("{url} is unreachable: {reason}"),
            RestError::NoAnswer { url, after, .. } => {
                format!("{url} did not answer within {}s", after.as_secs())
            }
        }
    }
}

/// An HTTP answer: status code and body text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl Response {
    /// The body as JSON, if it is.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }
}

/// A small HTTP/1 client for the members' REST APIs.
#[derive(Debug, Clone)]
pub struct RestClient {
    /// The client, or why none could be made.
    client: Result<HttpClient, NoClient>,
    /// Who calls (`pgha/0.1.0`, `pghactl/0.1.0`), as the `User-Agent`.
    user_agent: String,
    auth: Option<BasicAuth>,
    /// Why `https://` members cannot be called, when they cannot.
    https_problem: Option<String>,
}

fn http_connector() -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    connector.set_nodelay(true);
    connector.enforce_http(false);
    connector
}

impl RestClient {
    /// A client for `program` (the `User-Agent`) with these credentials
    /// and TLS settings. TLS files that cannot be used do not stop
    /// plain-http calls: they are reported on the first call to an
    /// `https://` member (the agent checks them at start-up, see
    /// [`tls::client_config`]).
    pub fn new(program: &str, auth: Option<BasicAuth>, tls: &ClientTls) -> Self {
        let (client, https_problem) = match build(tls) {
            Ok((c, p)) => (Ok(c), p),
            Err(e) => (Err(e), None),
        };
        RestClient {
            client,
            user_agent: format!("{program}/{}", env!("CARGO_PKG_VERSION")),
            auth,
            https_problem,
        }
    }
    /// `method http(s)://<member's api host>/<path>` with `body` (JSON
    /// text), answered within `timeout`. Any HTTP status is an answer.
    pub async fn call(
        &self,
        member: &Member,
        method: Method,
        path: &str,
        body: Option<String>,
        timeout: Duration,
    ) -> Result<Response, RestError> {
        let url = endpoint_url(member, path)?;
        let no_client = |reason: &str| RestError::NoApi {
            member: member.name.clone(),
            reason: format!("{url}: {reason}"),
        };
        let client = self
            .client
            .as_ref()
            .map_err(|e| no_client(&e.to_string()))?;
        if let (true, Some(problem)) = (url.starts_with("https://"), &self.https_problem) {
            return Err(no_client(problem));
        }
        let unreachable = |reason: String| RestError::Unreachable {
            member: member.name.clone(),
            url: url.clone(),
            reason,
        };
        let mut request = Request::builder()
            .method(method)
            .uri(&url)
            .header("User-Agent", &self.user_agent);
        if let Some(auth) = &self.auth {
            request = request.header("Authorization", auth.header());
        }
        let payload = match body {
            Some(json) => {
                request = request.header("Content-Type", "application/json");
                Bytes::from(json)
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(payload))
            .map_err(|e| unreachable(format!("cannot build the request: {e}")))?;
        let exchange = async {
            let response = client
                .request(request)
                .await
                .map_err(|e| unreachable(describe(&e)))?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(format!("the answer broke off: {e}")))?
                .to_bytes();
            Ok(Response {
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(RestError::NoAnswer {
                member: member.name.clone(),
                url,
                after: timeout,
            }),
        }
    }
}

/// The HTTP(S) client, and why https members cannot be called (if so).
#[cfg(feature = "tls")]
fn build(tls: &ClientTls) -> Result<(HttpClient, Option<String>), NoClient> {
    let (config, problem) = match tls::client_config(tls) {
        Ok(c) if tls.cacert.is_some() || tls.insecure => (c, None),
        Ok(c) => (
            c,
            Some(
                "https members need a CA to check them: set ctl.cacert (or restapi.cafile), \
                 or use -k/--insecure"
                    .to_string(),
            ),
        ),
        // Unusable TLS files: plain http still works; https says why not.
        Err(e) => (
            tls::client_config(&ClientTls::default()).map_err(|e| NoClient(e.to_string()))?,
            Some(e.to_string()),
        ),
    };
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http_connector());
    Ok((
        Client::builder(TokioExecutor::new()).build(connector),
        problem,
    ))
}

#[cfg(not(feature = "tls"))]
fn build(_tls: &ClientTls) -> Result<(HttpClient, Option<String>), NoClient> {
    Ok((
        Client::builder(TokioExecutor::new()).build(http_connector()),
        Some("built without TLS support (the pgha-rest-client `tls` feature)".to_string()),
    ))
}

/// Why no HTTP client could be built at all (rustls refused even the
/// default configuration): every call reports it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no HTTP client: {0}")]
struct NoClient(String);

/// Why a request failed, from the innermost error (`Connection refused (os error 111)`).
fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = s.to_string();
        source = s.source();
    }
    text
}

/// The member's `api_url` with its path replaced by `/path`, as patronictl
/// builds it (`http://10.0.0.1:8008/patroni` -> `http://10.0.0.1:8008/restart`).
pub fn endpoint_url(member: &Member, path: &str) -> Result<String, RestError> {
    let no_api = |reason: &str| RestError::NoApi {
        member: member.name.clone(),
        reason: reason.to_string(),
    };
    let api = member
        .data
        .api_url
        .as_deref()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| no_api("its member key has no api_url (REST API address)"))?;
    let (scheme, rest) = api
        .split_once("://")
        .ok_or_else(|| no_api(&format!("api_url {api:?} is not a URL")))?;
    if scheme != "http" && scheme != "https" {
        return Err(no_api(&format!("api_url {api:?} is not an http URL")));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    Ok(format!(
        "{scheme}://{authority}/{}",
        path.trim_start_matches('/')
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgha_core::model::{MemberData, Version};

    fn member(api: Option<&str>) -> Member {
        Member {
            name: "node1".into(),
            version: Version::number(1),
            owner: None,
            data: MemberData {
                api_url: api.map(String::from),
                ..Default::default()
            },
        }
    }

    #[test]
    fn urls_replace_the_path_like_patronictl() {
        assert_eq!(
            endpoint_url(&member(Some("http://127.0.0.1:8008/patroni")), "switchover").unwrap(),
            "http://127.0.0.1:8008/switchover"
        );
        assert_eq!(
            endpoint_url(&member(Some("http://[::1]:8008")), "/restart").unwrap(),
            "http://[::1]:8008/restart"
        );
        let e = endpoint_url(&member(None), "x").unwrap_err().to_string();
        assert!(e.starts_with("node1: ") && e.contains("api_url"), "{e}");
        assert_eq!(
            endpoint_url(&member(Some("https://h:1/patroni")), "x").unwrap(),
            "https://h:1/x"
        );
        assert!(endpoint_url(&member(Some("ftp://h:1/patroni")), "x").is_err());
    }

    #[test]
    fn basic_auth_header() {
        assert_eq!(base64(b"admin:admin-pass"), "YWRtaW46YWRtaW4tcGFzcw==");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        let auth = BasicAuth {
            username: "u".into(),
            password: "p".into(),
        };
        assert_eq!(auth.header(), "Basic dTpw");
        assert!(!format!("{auth:?}").contains("\"p\""));
    }

    #[tokio::test]
    async fn an_unreachable_member_is_named_and_the_call_is_bounded() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let client = RestClient::new("pghactl", None, &ClientTls::default());
        let m = member(Some(&format!("http://127.0.0.1:{port}/patroni")));
        let e = client
            .call(&m, Method::GET, "patroni", None, Duration::from_secs(2))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!(
                "node1 (http://127.0.0.1:{port}/patroni) is unreachable"
            )),
            "{e}"
        );
        // https without a CA to check the member is refused with the reason.
        let m = member(Some(&format!("https://127.0.0.1:{port}/patroni")));
        let e = client
            .call(&m, Method::GET, "patroni", None, Duration::from_secs(2))
            .await
            .unwrap_err()
            .to_string();
        if cfg!(feature = "tls") {
            assert!(e.contains("set ctl.cacert"), "{e}");
        } else {
            assert!(e.contains("built without TLS support"), "{e}");
        }
    }
}
