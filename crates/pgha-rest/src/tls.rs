//! HTTPS for the REST API: `restapi.certfile`, `keyfile`, `cafile`,
//! `verify_client`, with rustls (the ring provider).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use pgha_rest_client::tls::{TlsError, certificates, private_key, provider, roots};

use super::access::ClientConn;
use crate::settings::{RestApiTls, VerifyClient};

/// How long a client may take over the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The server side of the REST API's TLS, checked at startup so a bad
/// file stops the agent with its name before anything runs.
pub fn server_config(tls: &RestApiTls) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = certificates(&tls.certfile, "restapi.certfile")?;
    let key = private_key(&tls.keyfile, "restapi.keyfile")?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Refused {
            setting: "TLS versions",
            reason: e.to_string(),
        })?;
    let builder = match (tls.verify_client, &tls.cafile) {
        (VerifyClient::None, _) | (_, None) => builder.with_no_client_auth(),
        (mode, Some(ca)) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca, "restapi.cafile")?),
                provider(),
            );
            let verifier = if mode == VerifyClient::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| TlsError::Refused {
                setting: "restapi.cafile",
                reason: e.to_string(),
            })?)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Refused {
            setting: "restapi.certfile/keyfile",
            reason: e.to_string(),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TCP listener whose connections speak TLS. Handshakes run
/// concurrently (a slow client delays nobody else); a client that fails or
/// stalls its handshake is dropped and logged, never served in clear.
#[derive(Debug)]
pub struct TlsListener {
    local: SocketAddr,
    ready: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(conn) => conn,
                    Err(e) => {
                        tracing::debug!("REST API: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (acceptor, ready) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = ready.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!("REST API: TLS handshake with {peer} failed: {e}")
                        }
                        Err(_) => tracing::debug!("REST API: TLS handshake with {peer} timed out"),
                    }
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(TlsListener { local, ready })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The acceptor task only ends when nobody listens any more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// A TLS connection's client: its address, and whether it presented a
/// certificate. rustls reports peer certificates only once the verifier
/// accepted them (a bad one ends the handshake before any request), so
/// `Some` means verified against `restapi.cafile`.
impl Connected<IncomingStream<'_, TlsListener>> for ClientConn {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        let (_, session) = stream.io().get_ref();
        ClientConn {
            peer: *stream.remote_addr(),
            verified_certificate: session
                .peer_certificates()
                .is_some_and(|chain| !chain.is_empty()),
        }
    }
}
