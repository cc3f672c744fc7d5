//! Refusing to run under a name a live node already uses.
//!
//! Two agents with one `name` (a YAML file copied to a new machine, only the
//! addresses changed) would both write `members/<name>`, so the cluster
//! would see one member flapping between two servers, and each would
//! manage its own PostgreSQL as if it were that member. Patroni refuses to
//! start then ("Can't start; there is already a node named 'node2'
//! running"); so does pgha, before it touches PostgreSQL or starts its
//! fence guard.

use std::time::Duration;

use hyper::Method;
use pgha_core::dcs::Dcs;
use pgha_core::model::{Member, Timing};

use crate::config::NodeConfig;
use pgha_rest_client::RestClient;

/// How long the other node's REST API may take to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Another live node uses this node's name.
#[derive(Debug, thiserror::Error)]
#[error(
    "Can't start; there is already a node named '{name}' running: {evidence}; its member key \
     publishes PostgreSQL at {conn_url} and the REST API at {api_url}, this node's configuration \
     says {my_conn_url} and {my_api_url}. Give this node another name."
)]
pub struct NameTaken {
    pub name: String,
    /// What showed the other node is alive.
    pub evidence: String,
    pub conn_url: String,
    pub api_url: String,
    pub my_conn_url: String,
    pub my_api_url: String,
}

/// Waits for the DCS (nothing can be decided without it, as Patroni waits
/// at start-up), then fails if `members/<name>` belongs to another server
/// that is alive: its addresses differ from this node's, and its REST API
/// answers or its key is refreshed within one loop. A key with this node's
/// own addresses is its previous life (a restart within `ttl`); a key
/// nobody refreshes is a dead node's, and expires.
pub async fn ensure_unique_name(
    config: &NodeConfig,
    dcs: &dyn Dcs,
    peers: &RestClient,
    timing: Timing,
) -> Result<(), NameTaken> {
    let (theirs, timing) = load_member(dcs, &config.name, timing).await;
    let Some(theirs) = theirs else {
        return Ok(());
    };
    let (my_conn_url, my_api_url) = (config.conn_url(), config.api_url.clone());
    let conn_url = theirs.data.conn_url.clone().unwrap_or_default();
    let api_url = theirs.data.api_url.clone().unwrap_or_default();
    if conn_url == my_conn_url && api_url == my_api_url {
        return Ok(());
    }
    let taken = |evidence: String| NameTaken {
        name: config.name.clone(),
        evidence,
        conn_url: conn_url.clone(),
        api_url: api_url.clone(),
        my_conn_url: my_conn_url.clone(),
        my_api_url: my_api_url.clone(),
    };
    if !api_url.is_empty()
        && peers
            .call(&theirs, Method::GET, "patroni", None, PROBE_TIMEOUT)
            .await
            .is_ok()
    {
        return Err(taken(format!("its REST API at {api_url} answered")));
    }
    // Its REST API may be out of reach from here while it runs: a live
    // agent rewrites its member key every loop_wait.
    tracing::info!(
        member = %config.name,
        "members/{} names another server ({conn_url}) whose REST API does not answer; \
         checking for one loop whether its key is refreshed",
        config.name
    );
    tokio::time::sleep(timing.loop_wait + timing.retry_timeout + Duration::from_secs(1)).await;
    match load_member(dcs, &config.name, timing).await.0 {
        Some(now) if now.version != theirs.version && now.data.conn_url == theirs.data.conn_url => {
            Err(taken("its member key is being refreshed".into()))
        }
        _ => Ok(()),
    }
}

/// `members/<name>` as the DCS has it now, and the cluster's timings
/// (`timing` where it has no configuration), waiting while the DCS cannot
/// be read.
async fn load_member(dcs: &dyn Dcs, name: &str, timing: Timing) -> (Option<Member>, Timing) {
    loop {
        match dcs.load().await {
            Ok(cluster) => {
                let timing = cluster
                    .config
                    .as_ref()
                    .map_or(timing, |c| c.value.timing().0);
                return (cluster.member(name).cloned(), timing);
            }
            Err(e) => {
                tracing::warn!(
                    "cannot read the cluster from the DCS ({e}); waiting for it before starting"
                );
                tokio::time::sleep(timing.loop_wait.max(Duration::from_secs(1))).await;
            }
        }
    }
}
