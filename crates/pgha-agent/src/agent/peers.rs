//! Asking the other members how far their WAL is, for the leader race.
//!
//! Each member's REST API answers `GET /patroni`; a member that does not
//! answer in time is judged by its member key instead (a loop old, at most).

use std::time::Duration;

use futures::future::join_all;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use pgha_core::ha::{PeerSource, PeerStatus};
use pgha_core::model::{Member, Tags, lenient};
use serde_json::Value;

/// A small HTTP/1 client for the members' REST APIs (HTTPS too, with the
/// `restapi-tls` feature).
#[derive(Debug, Clone)]
pub struct PeerClient {
    client: Client<Connector, Empty<Bytes>>,
    /// Why HTTPS cannot be used, when it cannot (no CA configured).
    https_problem: Option<String>,
}

#[cfg(feature = "restapi-tls")]
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;
#[cfg(not(feature = "restapi-tls"))]
type Connector = HttpConnector;

fn http_connector() -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    connector.set_nodelay(true);
    connector.enforce_http(false);
    connector
}

impl Default for PeerClient {
    /// Plain HTTP, and HTTPS only to members whose certificate... nobody's:
    /// no CA is configured. Reads no file, so it cannot fail.
    fn default() -> Self {
        PeerClient::new(&crate::config::ClientTls::default())
            .expect("a client without TLS files reads no file and cannot fail")
    }
}

impl PeerClient {
    /// A client for members' REST APIs with the `ctl`/`restapi` TLS files.
    /// Files that cannot be read are an error naming them.
    pub fn new(settings: &crate::config::ClientTls) -> Result<Self, String> {
        #[cfg(feature = "restapi-tls")]
        {
            let usable = settings.cacert.is_some() || settings.insecure;
            let config = tls::client_config(settings)?;
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(config)
                .https_or_http()
                .enable_http1()
                .wrap_connector(http_connector());
            Ok(PeerClient {
                client: Client::builder(TokioExecutor::new()).build(connector),
                https_problem: (!usable).then(|| {
                    "https members need a CA to check them: set ctl.cacert or restapi.cafile (or ctl.insecure)".into()
                }),
            })
        }
        #[cfg(not(feature = "restapi-tls"))]
        {
            let _ = settings;
            Ok(PeerClient {
                client: Client::builder(TokioExecutor::new()).build(http_connector()),
                https_problem: Some("this pgha was built without the restapi-tls feature".into()),
            })
        }
    }
}

/// TLS for calls to members.
#[cfg(feature = "restapi-tls")]
pub mod tls {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    use crate::config::ClientTls;
    use crate::rest::tls::{certificates, private_key, roots};

    /// The client side: trust `cacert`, present `certfile`/`keyfile` when
    /// given, or (`insecure`) check nothing, as `ctl.insecure` asks.
    pub fn client_config(settings: &ClientTls) -> Result<rustls::ClientConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = if settings.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
        } else {
            let store = match &settings.cacert {
                Some(ca) => roots(ca, "ctl.cacert / restapi.cafile")?,
                None => rustls::RootCertStore::empty(),
            };
            builder.with_root_certificates(store)
        };
        match (&settings.certfile, &settings.keyfile) {
            (Some(cert), Some(key)) if settings.cacert.is_some() || settings.insecure => builder
                .with_client_auth_cert(
                    certificates(cert, "ctl.certfile")?,
                    private_key(key, "ctl.keyfile")?,
                )
                .map_err(|e| format!("ctl.certfile/keyfile: {e}")),
            _ => Ok(builder.with_no_client_auth()),
        }
    }

    /// `ctl.insecure`: accepts any certificate (signatures still checked).
    #[derive(Debug)]
    struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

    impl ServerCertVerifier for NoVerification {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}

impl PeerClient {
    /// `GET url` and parse the JSON body, within `timeout`. Any status is
    /// accepted (health endpoints answer 503 with a body).
    pub async fn get_json(&self, url: &str, timeout: Duration) -> Result<(u16, Value), String> {
        let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL {url:?}: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                if let Some(problem) = &self.https_problem {
                    return Err(format!("{url}: {problem}"));
                }
            }
            _ => return Err(format!("{url}: not an http(s) URL")),
        }
        let fut = async {
            let resp = self.client.get(uri).await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            let json = serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))?;
            Ok::<_, String>((status, json))
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| format!("no answer from {url} within {timeout:?}"))?
    }

    /// The status of every one of `members` but `me`: from its REST API
    /// when it answers within `timeout`, else from its member key.
    pub async fn statuses(
        &self,
        members: &[Member],
        me: &str,
        timeout: Duration,
    ) -> Vec<PeerStatus> {
        let others: Vec<&Member> = members.iter().filter(|m| m.name != me).collect();
        join_all(others.into_iter().map(|m| async move {
            if let Some(url) = m.data.api_url.as_deref() {
                match self.get_json(url, timeout).await {
                    Ok((_, json)) => return from_rest(m, &json),
                    Err(e) => tracing::debug!("peer {}: {e}; using its member key", m.name),
                }
            }
            from_member_key(m)
        }))
        .await
    }
}

fn from_member_key(m: &Member) -> PeerStatus {
    PeerStatus {
        name: m.name.clone(),
        source: PeerSource::MemberKey,
        is_primary: m.data.role.as_ref().is_some_and(|r| r.is_primary()),
        running: m.data.is_running(),
        starting: m.data.state == Some(pgha_core::model::PgState::Starting),
        wal_position: m.data.xlog_location,
        nofailover: m.data.tags.nofailover(),
        failover_priority: m.data.tags.failover_priority(),
        replication_broken: broken_flag(&m.data.extra),
    }
}

/// The pgha-only `replication_broken` flag of a member key or `GET /patroni`.
fn broken_flag(fields: &serde_json::Map<String, Value>) -> bool {
    fields.get(pgha_core::ha::replication::BROKEN_FIELD) == Some(&Value::Bool(true))
}

/// Reads `GET /patroni`: `xlog.location` on a primary, the furthest of
/// `xlog.received_location` / `replayed_location` on a replica.
fn from_rest(m: &Member, json: &Value) -> PeerStatus {
    let xlog = json.get("xlog");
    let field = |k: &str| {
        xlog.and_then(|x| x.get(k))
            .and_then(lenient::int)
            .and_then(|v| u64::try_from(v).ok())
    };
    let role = json.get("role").and_then(Value::as_str).unwrap_or_default();
    let running = json.get("state").and_then(Value::as_str) == Some("running");
    // Only a running PostgreSQL that says it is a primary is one: a stopped
    // or starting node reports the role it last had.
    let is_primary = running && (role == "primary" || role == "master");
    let wal = if is_primary {
        field("location")
    } else {
        match (field("received_location"), field("replayed_location")) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
    .or(m.data.xlog_location);
    let tags = json
        .get("tags")
        .and_then(Value::as_object)
        .map(|t| Tags(t.clone()))
        .unwrap_or_else(|| m.data.tags.clone());
    PeerStatus {
        name: m.name.clone(),
        source: PeerSource::Rest,
        is_primary,
        running,
        starting: json.get("state").and_then(Value::as_str) == Some("starting"),
        wal_position: wal,
        nofailover: tags.nofailover(),
        failover_priority: tags.failover_priority(),
        replication_broken: json
            .as_object()
            .map_or_else(|| broken_flag(&m.data.extra), broken_flag),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgha_core::model::{MemberData, Version};
    use serde_json::json;

    fn member() -> Member {
        Member {
            name: "n2".into(),
            version: Version::number(1),
            owner: None,
            data: MemberData::default(),
        }
    }

    #[test]
    fn rest_answers_are_read_like_patroni_writes_them() {
        let p = from_rest(
            &member(),
            &json!({"state": "running", "role": "replica", "xlog": {"received_location": 100, "replayed_location": 90}, "tags": {"failover_priority": 3}}),
        );
        assert_eq!(
            (p.wal_position, p.is_primary, p.failover_priority, p.running),
            (Some(100), false, 3, true)
        );
        let p = from_rest(
            &member(),
            &json!({"state": "running", "role": "primary", "xlog": {"location": 500}}),
        );
        assert_eq!((p.wal_position, p.is_primary), (Some(500), true));
        let p = from_rest(&member(), &json!({"state": "starting", "role": "primary"}));
        assert!(!p.is_primary, "a starting node is not a live primary");
    }

    #[test]
    fn the_replication_broken_flag_is_read_from_rest_or_the_member_key() {
        let running = json!({"state": "running", "role": "replica"});
        assert!(!from_rest(&member(), &running).replication_broken);
        let mut broken = running.clone();
        broken["replication_broken"] = json!(true);
        assert!(from_rest(&member(), &broken).replication_broken);
        let mut m = member();
        m.data
            .extra
            .insert("replication_broken".into(), json!(true));
        assert!(from_member_key(&m).replication_broken);
        // The REST answer is the fresher one.
        assert!(!from_rest(&m, &running).replication_broken);
        assert!(!from_member_key(&member()).replication_broken);
    }
}
