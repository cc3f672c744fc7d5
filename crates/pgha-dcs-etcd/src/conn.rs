//! The connection to etcd: made on first use, dropped on failure, and moved
//! to the next endpoint when one fails.
//!
//! etcd-client's own balanced channel spreads requests over all endpoints
//! and, once an endpoint failed, may keep routing to it or stall; a client
//! that must answer within `retry_timeout` cannot rely on that. So each
//! [`Client`] here talks to exactly one endpoint, and any transport failure
//! or timeout throws it away: the next call connects afresh, to the next
//! endpoint. That also clears connections a partition left half-dead
//! (nothing would tell HTTP/2 they are gone: no background pings by
//! design).

use std::sync::{Mutex, MutexGuard};

use etcd_client::{Client, ConnectOptions};
use tracing::{debug, info};

use crate::EtcdConfig;
use crate::config::ConfigError;

/// One live client and which endpoint and connection generation it is.
#[derive(Clone)]
pub(crate) struct Conn {
    pub(crate) client: Client,
    generation: u64,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct State {
    /// The endpoint the next connection goes to.
    index: usize,
    current: Option<Conn>,
    /// Bumped on every new connection, so a failure reported for an old
    /// one does not throw away its successor.
    generation: u64,
}

/// Hands out the current client, connecting lazily.
pub(crate) struct Connector {
    endpoints: Vec<String>,
    user: Option<(String, String)>,
    #[cfg(feature = "tls")]
    tls: Option<etcd_client::TlsOptions>,
    state: Mutex<State>,
    /// Serialises connecting, so concurrent calls share one new connection.
    connecting: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("endpoints", &self.endpoints)
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .field("state", &*self.lock())
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// Checks the configuration and reads TLS files; does not connect.
    pub(crate) fn new(config: &EtcdConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let user = match (&config.username, &config.password) {
            (Some(u), Some(p)) => Some((u.clone(), p.clone())),
            _ => None,
        };
        Ok(Connector {
            endpoints: config.endpoints.clone(),
            user,
            #[cfg(feature = "tls")]
            tls: tls_options(config)?,
            state: Mutex::new(State::default()),
            connecting: tokio::sync::Mutex::new(()),
        })
    }

    pub(crate) fn endpoint_count(&self) -> usize {
        self.endpoints.len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain data: a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current client, connecting to the current endpoint if there is
    /// none. The caller reports a failed connect with [`Connector::failed`]
    /// (`None`), which moves to the next endpoint.
    pub(crate) async fn get(&self) -> Result<Conn, etcd_client::Error> {
        if let Some(c) = self.lock().current.clone() {
            return Ok(c);
        }
        let _connecting = self.connecting.lock().await;
        let index = {
            let st = self.lock();
            if let Some(c) = st.current.clone() {
                return Ok(c);
            }
            st.index
        };
        let endpoint = &self.endpoints[index % self.endpoints.len()];
        debug!(endpoint, "connecting to etcd");
        let client = self.connect(endpoint).await?;
        let mut st = self.lock();
        st.generation += 1;
        let conn = Conn {
            client,
            generation: st.generation,
        };
        st.current = Some(conn.clone());
        Ok(conn)
    }

    /// Forgets `conn` after a transport failure or timeout on it; the next
    /// call connects to the next endpoint. `None`: the failure is not tied
    /// to a known connection (a connect that timed out, a whole call that
    /// ran out of time): drop whatever is current and move on.
    pub(crate) fn failed(&self, conn: Option<&Conn>) {
        let mut st = self.lock();
        if let (Some(c), Some(cur)) = (conn, &st.current)
            && c.generation != cur.generation
        {
            // Already replaced after an earlier failure.
            return;
        }
        if conn.is_some() && st.current.is_none() {
            return;
        }
        st.current = None;
        st.index = (st.index + 1) % self.endpoints.len();
        debug!(
            next = %self.endpoints[st.index],
            "dropped the etcd connection after a failure"
        );
    }

    fn options(&self, endpoint: &str, with_user: bool) -> ConnectOptions {
        let mut o = ConnectOptions::new()
            // Simple tokens expire (5 min by default) and die with a server
            // restart: authenticate again and repeat the request once.
            .with_auto_token_refresh(true);
        if with_user && let Some((u, p)) = &self.user {
            o = o.with_user(u.clone(), p.clone());
        }
        // etcd-client refuses TLS options on an http:// endpoint.
        #[cfg(feature = "tls")]
        if let (Some(tls), true) = (&self.tls, endpoint.starts_with("https://")) {
            o = o.with_tls(tls.clone());
        }
        #[cfg(not(feature = "tls"))]
        let _ = endpoint;
        o
    }

    async fn connect(&self, endpoint: &str) -> Result<Client, etcd_client::Error> {
        let r = Client::connect([endpoint], Some(self.options(endpoint, true))).await;
        match r {
            // Patroni carries on without a token when the cluster has
            // authentication switched off; so do we.
            Err(etcd_client::Error::GRpcStatus(s))
                if self.user.is_some() && s.message().contains("authentication is not enabled") =>
            {
                info!(
                    endpoint,
                    "etcd authentication is not enabled; connecting without credentials"
                );
                Client::connect([endpoint], Some(self.options(endpoint, false))).await
            }
            other => other,
        }
    }
}

#[cfg(feature = "tls")]
fn tls_options(config: &EtcdConfig) -> Result<Option<etcd_client::TlsOptions>, ConfigError> {
    use crate::config::read_pem;
    use etcd_client::{Certificate, Identity, TlsOptions};
    if !config.uses_tls() && config.cacert.is_none() && config.cert.is_none() {
        return Ok(None);
    }
    if !config.uses_tls() {
        // TLS files with http:// endpoints: the files would be ignored, a
        // sure sign of a mistake.
        return Err(ConfigError::BadProtocol(
            "http (cacert/cert/key are set: use https endpoints or protocol: https)".into(),
        ));
    }
    let mut tls = TlsOptions::new();
    if let Some(ca) = &config.cacert {
        tls = tls.ca_certificate(Certificate::from_pem(read_pem(ca)?));
    } else if cfg!(feature = "tls-roots") {
        // No CA given: trust the system's roots, as Patroni does.
        tls = tls.with_enabled_roots();
    } else {
        return Err(ConfigError::NoCa);
    }
    if let (Some(cert), Some(key)) = (&config.cert, &config.key) {
        tls = tls.identity(Identity::from_pem(read_pem(cert)?, read_pem(key)?));
    }
    Ok(Some(tls))
}
