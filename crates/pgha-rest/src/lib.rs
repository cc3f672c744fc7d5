//! The REST API, read side: Patroni's paths, status codes and JSON.
//!
//! Every answer is computed from the [`NodeStatus`] the HA loop published
//! after its last cycle; no request queries PostgreSQL or the DCS, so
//! health checks are cheap and can never stall or slow the loop.
//!
//! `GET` returns the node's status JSON with the code; `HEAD` and
//! `OPTIONS` return the code alone (HAProxy's `option httpchk OPTIONS /primary`).
//! Unsafe methods pass [`access`] (allowlist, client certificate) and
//! basic auth, in Patroni's order, before anything is read or changed.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pgha_core::dcs::Dcs;
use pgha_core::model::lsn::format as format_lsn;
use pgha_core::model::{Cluster, PATRONI_COMPAT_VERSION, PGHA_VERSION, PgState};
use pgha_node::{NodeHandle, NodeStatus};
use pgha_rest_client::RestClient;
use serde_json::{Map, Value, json};
use tokio::sync::mpsc;

use access::{AccessRules, ClientConn};
use pgha_rest_client::ClientTls;

pub mod access;
pub mod settings;
#[cfg(feature = "tls")]
pub mod tls;
mod write;

/// The largest request body accepted (Patroni's bodies are a few hundred bytes).
pub const MAX_BODY: usize = 64 * 1024;

/// What the handlers read and whom they ask.
#[derive(Clone, Debug)]
pub struct ApiState {
    /// The node: its last status, and requests for its loop (restart,
    /// reinitialize, wake up).
    pub node: NodeHandle,
    /// For switchover, failover and configuration requests.
    pub dcs: Arc<dyn Dcs>,
    /// `POST /reload`: asks whoever owns the configuration (the `pgha`
    /// binary re-reads its file) to hand the node a new one.
    pub reload: mpsc::Sender<()>,
    /// Calls to the other members (switchover and failover checks).
    pub peers: RestClient,
    /// `restapi.authentication`: required on unsafe methods when set.
    pub auth: Option<(String, String)>,
    /// `restapi.allowlist`, `allowlist_include_members`, `verify_client`:
    /// checked on unsafe methods before `auth`.
    pub access: Arc<AccessRules>,
}

impl ApiState {
    pub fn new(
        node: NodeHandle,
        dcs: Arc<dyn Dcs>,
        reload: mpsc::Sender<()>,
        auth: Option<(String, String)>,
        peers_tls: &ClientTls,
        access: AccessRules,
    ) -> Self {
        ApiState {
            node,
            dcs,
            reload,
            peers: RestClient::new("pgha", None, peers_tls),
            auth,
            access: Arc::new(access),
        }
    }
}

/// The router for the whole API.
pub fn router(state: ApiState) -> Router {
    Router::new().fallback(handle).with_state(state)
}

/// Serves the API on `listener` until the process ends: HTTPS when
/// `tls` is given, plain HTTP otherwise. Either way every request carries
/// its connection's [`ClientConn`] (client address, verified certificate),
/// which the access rules need.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<std::sync::Arc<TlsServerConfig>>,
    state: ApiState,
) -> std::io::Result<()> {
    let app = router(state).into_make_service_with_connect_info::<ClientConn>();
    match tls {
        #[cfg(feature = "tls")]
        Some(config) => axum::serve(tls::TlsListener::new(listener, config)?, app).await,
        #[cfg(not(feature = "tls"))]
        Some(_) => Err(std::io::Error::other(
            "built without the tls feature of pgha-rest",
        )),
        None => axum::serve(listener, app).await,
    }
}

/// The TLS server configuration type (a placeholder without the `tls` feature).
#[cfg(feature = "tls")]
pub type TlsServerConfig = rustls::ServerConfig;
#[cfg(not(feature = "tls"))]
#[derive(Debug)]
pub enum TlsServerConfig {}

const HEALTH_PATHS: &[&str] = &[
    "/",
    "/primary",
    "/master",
    "/read-write",
    "/leader",
    "/standby-leader",
    "/standby_leader",
    "/replica",
    "/read-only",
    "/health",
    "/sync",
    "/synchronous",
    "/async",
    "/asynchronous",
    "/quorum",
    "/read-only-sync",
    "/read-only-synchronous",
    "/read-only-quorum",
];

/// How long `GET /patroni` waits for PostgreSQL before it answers with
/// the last cycle's snapshot (below the peers' timeout in the race).
const LIVE_STATUS_WAIT: std::time::Duration = std::time::Duration::from_millis(300);

async fn handle(State(state): State<ApiState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let method = parts.method.clone();
    let path = parts.uri.path().to_string();
    if method == Method::GET && matches!(path.as_str(), "/cluster" | "/history" | "/config") {
        return read_fresh(&state, &path).await;
    }
    if method == Method::GET && path == "/patroni" {
        // What peers racing for the lock read: PostgreSQL's WAL positions
        // as they are now, not as of the last cycle.
        let status = state.node.live_status(LIVE_STATUS_WAIT).await;
        return (StatusCode::OK, axum::Json(status_json(&status))).into_response();
    }
    if method == Method::GET || method == Method::HEAD || method == Method::OPTIONS {
        let query: HashMap<String, String> = parts
            .uri
            .query()
            .map(|q| {
                q.split('&')
                    .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
                    .map(|(k, v)| (percent_decode(k), percent_decode(v)))
                    .collect()
            })
            .unwrap_or_default();
        return read(&state, &method, &path, &query);
    }
    let client = parts
        .extensions
        .get::<ConnectInfo<ClientConn>>()
        .map(|ConnectInfo(c)| *c);
    let cluster = state.node.status().cluster.clone();
    if let Err(denied) = state
        .access
        .check(client.as_ref(), cluster.as_deref())
        .await
    {
        tracing::info!(
            client = ?client.map(|c| c.peer),
            %method,
            path,
            reason = %denied,
            "REST API: unsafe request refused"
        );
        return write::error(StatusCode::FORBIDDEN, denied.to_string());
    }
    if !authorized(&state, &parts.headers) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"pgha\"")],
            axum::Json(json!({"error": "authentication required (restapi.authentication)"})),
        )
            .into_response();
    }
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return write::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than {MAX_BODY} bytes"),
            );
        }
    };
    match (method.as_str(), path.as_str()) {
        ("POST", "/switchover") => write::switchover(&state, &body, "switchover").await,
        ("POST", "/failover") => write::switchover(&state, &body, "failover").await,
        ("DELETE", "/switchover") => write::delete_switchover(&state).await,
        ("POST", "/restart") => write::restart(&state, &body).await,
        ("DELETE", "/restart") => write::delete_restart(&state).await,
        ("POST", "/reload") => write::reload(&state).await,
        ("POST", "/failsafe") => write::failsafe(&state, &body),
        ("POST", "/reinitialize") => write::reinitialize(&state, &body).await,
        ("PATCH", "/config") => write::patch_config(&state, &body).await,
        ("PUT", "/config") => write::put_config(&state, &body).await,
        (m, p) if is_known(p) => write::error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{m} {p} is not supported"),
        ),
        (_, p) => write::error(StatusCode::NOT_FOUND, format!("unknown path {p}")),
    }
}

fn is_known(path: &str) -> bool {
    HEALTH_PATHS.contains(&path)
        || [
            "/liveness",
            "/readiness",
            "/patroni",
            "/cluster",
            "/history",
            "/config",
            "/metrics",
            "/switchover",
            "/failover",
            "/restart",
            "/reload",
            "/reinitialize",
            "/failsafe",
        ]
        .contains(&path)
}

/// Basic auth on unsafe methods, when `restapi.authentication` is set.
fn authorized(state: &ApiState, headers: &HeaderMap) -> bool {
    let Some((user, password)) = &state.auth else {
        return true;
    };
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(base64_decode)
    else {
        return false;
    };
    let expected = format!("{user}:{password}");
    // Compare every byte so the time taken does not reveal the prefix that matched.
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Standard base64 (RFC 4648), as HTTP basic auth uses.
fn base64_decode(text: &str) -> Option<String> {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in text.trim().bytes().filter(|c| *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(v);
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
        }
    }
    String::from_utf8(out).ok()
}

/// Decodes `%XX` escapes and `+` in a query string component.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (hex, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/cluster`, `/history`, `/config` read the DCS afresh, as Patroni does
/// (an operator checking a switchover wants what is stored now, not a loop
/// old); without an answer within 2 s they fall back to the last snapshot.
async fn read_fresh(state: &ApiState, path: &str) -> Response {
    let fresh = tokio::time::timeout(std::time::Duration::from_secs(2), state.dcs.load()).await;
    let status = state.node.status();
    let cluster = match fresh {
        Ok(Ok(c)) => Some(Arc::new(c)),
        _ => status.cluster.clone(),
    };
    let Some(c) = cluster else {
        return write::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the cluster cannot be read from the DCS",
        );
    };
    match path {
        "/cluster" => (StatusCode::OK, axum::Json(cluster_json(&c, &status))).into_response(),
        "/history" => (
            StatusCode::OK,
            axum::Json(
                c.history
                    .as_ref()
                    .map_or_else(|| json!([]), |h| json!(h.value)),
            ),
        )
            .into_response(),
        _ => match c.config.as_ref() {
            Some(cfg) => (StatusCode::OK, axum::Json(json!(cfg.value))).into_response(),
            None => write::error(
                StatusCode::BAD_GATEWAY,
                "no dynamic configuration in the DCS",
            ),
        },
    }
}

/// The read side: health checks, status, cluster, history, config, metrics.
fn read(
    state: &ApiState,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
) -> Response {
    let status = state.node.status();
    let now = state.node.now();
    let code_only = method == Method::HEAD || method == Method::OPTIONS;
    let (code, body) = match path {
        p if HEALTH_PATHS.contains(&p) => {
            (health_code(p, query, &status), Some(status_json(&status)))
        }
        "/liveness" => (liveness_code(&status, now), None),
        "/readiness" => (readiness_code(query, &status), None),
        "/patroni" => (200, Some(status_json(&status))),
        "/cluster" => match &status.cluster {
            Some(c) => (200, Some(cluster_json(c, &status))),
            None => (
                503,
                Some(json!({"error": "the cluster has not been read from the DCS yet"})),
            ),
        },
        "/history" => (
            200,
            Some(
                status
                    .cluster
                    .as_ref()
                    .and_then(|c| c.history.as_ref())
                    .map_or_else(|| json!([]), |h| json!(h.value)),
            ),
        ),
        "/failsafe" => match status.cluster.as_ref().and_then(|c| c.failsafe.as_ref()) {
            Some(f) => (200, Some(json!(f.value))),
            _ => (502, None),
        },
        "/config" => match status.cluster.as_ref().and_then(|c| c.config.as_ref()) {
            Some(c) => (200, Some(json!(c.value))),
            None => (
                502,
                Some(json!({"error": "no dynamic configuration in the DCS"})),
            ),
        },
        "/metrics" => {
            return if code_only {
                StatusCode::OK.into_response()
            } else {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    metrics(&status),
                )
                    .into_response()
            };
        }
        p if is_known(p) => {
            return write::error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} {p} is not supported"),
            );
        }
        p => return write::error(StatusCode::NOT_FOUND, format!("unknown path {p}")),
    };
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    match body {
        Some(body) if !code_only => (code, axum::Json(body)).into_response(),
        _ => code.into_response(),
    }
}

/// Patroni's `state` for the status JSON.
fn state_text(s: &NodeStatus) -> String {
    s.member
        .state
        .as_ref()
        .map_or_else(|| "unknown".into(), |st| st.to_string())
}

/// The node status JSON of `GET /patroni` (and every health check's body).
pub fn status_json(s: &NodeStatus) -> Value {
    let mut out = Map::new();
    out.insert("state".into(), json!(state_text(s)));
    let db = s.observed.as_ref().and_then(|o| o.db.as_ref());
    if let Some(db) = db {
        if let Some(t) = &db.postmaster_start_time {
            out.insert("postmaster_start_time".into(), json!(t));
        }
        out.insert(
            "role".into(),
            json!(if s.is_standby_leader() {
                "standby_leader"
            } else if db.in_recovery {
                "replica"
            } else {
                "primary"
            }),
        );
        out.insert("server_version".into(), json!(db.server_version));
        let xlog = if db.in_recovery {
            json!({
                "received_location": db.receive_lsn.or(db.replay_lsn),
                "replayed_location": db.replay_lsn,
                "replayed_timestamp": db.replayed_timestamp,
                "paused": db.replay_paused,
            })
        } else {
            json!({"location": db.write_lsn})
        };
        out.insert("xlog".into(), xlog);
        if let Some(tl) = db.timeline {
            out.insert("timeline".into(), json!(tl));
        }
        if let Some(rs) = &s.member.replication_state {
            out.insert("replication_state".into(), json!(rs));
        }
        // pgha only: not streaming from the leader for too long (M1); read
        // by peers in the leader race.
        let broken = pgha_core::ha::replication::BROKEN_FIELD;
        if let Some(v) = s.member.extra.get(broken) {
            out.insert(broken.into(), v.clone());
        }
        if !db.replication.is_empty() {
            out.insert("replication".into(), json!(db.replication));
        }
    } else if let Some(role) = &s.member.role {
        out.insert("role".into(), json!(role.as_str()));
    }
    // pgha only: a primary stopped for want of the DCS, which takes the lock
    // back when it returns; read by peers in the leader race.
    let takeback = pgha_core::ha::failsafe::TAKEBACK_FIELD;
    if let Some(v) = s.member.extra.get(takeback) {
        out.insert(takeback.into(), v.clone());
    }
    if s.is_sync_standby() {
        out.insert("sync_standby".into(), json!(true));
    }
    if s.is_quorum_standby() {
        out.insert("quorum_standby".into(), json!(true));
    }
    // pgha only: who may take over a leaderless cluster in synchronous mode.
    if let Some(note) = s
        .cluster
        .as_deref()
        .and_then(pgha_core::ha::sync::leaderless_note)
    {
        out.insert("synchronous_mode_wait".into(), json!(note));
    }
    if s.paused {
        out.insert("pause".into(), json!(true));
    }
    if s.failsafe_active {
        out.insert("failsafe_mode_is_active".into(), json!(true));
    }
    if s.cluster.as_ref().is_none_or(|c| c.leader.is_none()) {
        out.insert("cluster_unlocked".into(), json!(true));
    }
    if let Some(t) = s.dcs_last_seen {
        out.insert("dcs_last_seen".into(), json!(t));
    }
    if s.member.pending_restart == Some(true) {
        out.insert("pending_restart".into(), json!(true));
        if let Some(reason) = &s.member.pending_restart_reason {
            out.insert("pending_restart_reason".into(), reason.clone());
        }
    }
    if let Some(r) = &s.member.scheduled_restart {
        out.insert("scheduled_restart".into(), json!(r));
    }
    if !s.member.tags.is_empty() {
        out.insert("tags".into(), json!(s.member.tags));
    }
    if let Some(sysid) = db.and_then(|d| d.system_id.clone()).or_else(|| {
        s.observed
            .as_ref()
            .and_then(|o| o.controldata.as_ref())
            .map(|c| c.system_id.clone())
    }) {
        out.insert("database_system_identifier".into(), json!(sysid));
    }
    out.insert(
        "patroni".into(),
        json!({"version": PATRONI_COMPAT_VERSION, "scope": s.scope, "name": s.name}),
    );
    out.insert("pgha_version".into(), json!(PGHA_VERSION));
    if !s.unsupported.is_empty() {
        // pgha only: the dynamic configuration asks for what pgha does not do.
        let keys: Vec<Value> = s
            .unsupported
            .iter()
            .map(|u| json!({"key": u.key, "value": u.value, "message": u.to_string()}))
            .collect();
        out.insert("unsupported_config".into(), Value::Array(keys));
    }
    Value::Object(out)
}

/// The leader's last known position: `status.optime`.
fn leader_optime(s: &NodeStatus) -> u64 {
    s.cluster
        .as_ref()
        .and_then(|c| c.last_leader_lsn())
        .unwrap_or(0)
}

/// A lag limit as Patroni takes it: bytes, or a size with a unit (`16kB`, `10MB`).
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "kB" | "KB" | "k" => 1 << 10,
        "MB" | "M" => 1 << 20,
        "GB" | "G" => 1 << 30,
        "TB" | "T" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// The code of a health-check path, by Patroni's rules.
pub fn health_code(path: &str, query: &HashMap<String, String>, s: &NodeStatus) -> u16 {
    let running = s.pg_running()
        && s.member
            .state
            .as_ref()
            .is_some_and(|st| st.as_str() == "running");
    let primary = s.holds_lock && s.is_primary();
    let standby_leader = s.is_standby_leader();
    let leader = s.holds_lock;
    let max_lag = query
        .get("lag")
        .and_then(|l| parse_size(l))
        .unwrap_or(u64::MAX);
    let replayed = s
        .observed
        .as_ref()
        .and_then(|o| o.db.as_ref())
        .and_then(|d| d.replay_lsn)
        .unwrap_or(0);
    let optime = leader_optime(s);
    let lagging = optime > 0 && optime > replayed.saturating_add(max_lag);
    let state_ok = query
        .get("replication_state")
        .is_none_or(|wanted| s.member.replication_state.as_deref() == Some(wanted.as_str()));
    let replica = running
        && s.is_replica()
        && !standby_leader
        && !s.member.tags.noloadbalance()
        && !lagging
        && state_ok;
    // Patroni: a standby leader answers the read-only checks as a primary.
    let reader = primary || standby_leader;
    // Only the synchronous checks look at the sync key: a load balancer's
    // `/primary` costs no more than before.
    let sync_standby = || s.is_sync_standby();
    let quorum_standby = || s.is_quorum_standby();
    let (code_ok, ignore_tags) = match path {
        "/standby-leader" | "/standby_leader" => (standby_leader, true),
        "/leader" => (leader, true),
        "/" | "/primary" | "/master" | "/read-write" => (primary, true),
        "/replica" => (replica, false),
        "/read-only" => (reader || replica, false),
        "/health" => (running, false),
        "/sync" | "/synchronous" => (s.cluster.is_some() && replica && sync_standby(), false),
        "/quorum" => (s.cluster.is_some() && replica && quorum_standby(), false),
        "/async" | "/asynchronous" => (
            s.cluster.is_some() && replica && !sync_standby() && !quorum_standby(),
            false,
        ),
        "/read-only-sync" | "/read-only-synchronous" => (
            s.cluster.is_some() && (reader || (replica && sync_standby())),
            false,
        ),
        "/read-only-quorum" => (
            s.cluster.is_some() && (reader || (replica && quorum_standby())),
            false,
        ),
        _ => (false, false),
    };
    if !code_ok {
        return 503;
    }
    if !ignore_tags {
        for (k, wanted) in query {
            let Some(tag) = k.strip_prefix("tag_") else {
                continue;
            };
            let have = match s.member.tags.0.get(tag) {
                None | Some(Value::Null) => return 503,
                Some(Value::String(v)) => v.clone(),
                Some(other) => other.to_string().to_lowercase(),
            };
            if &have != wanted {
                return 503;
            }
        }
    }
    200
}

/// 200 while the HA loop keeps running: its last cycle ended less than
/// `loop_wait + ttl` ago (`2 × ttl` on a replica); always 200 when paused.
pub fn liveness_code(s: &NodeStatus, now: std::time::Duration) -> u16 {
    if s.paused {
        return 200;
    }
    let threshold = if s.is_primary() {
        s.timing.ttl
    } else {
        s.timing.ttl * 2
    };
    match s.last_cycle {
        Some(last) if now.saturating_sub(last) < s.timing.loop_wait + threshold => 200,
        _ => 503,
    }
}

/// 200 on the leader, or on a streaming replica within the lag limit.
pub fn readiness_code(query: &HashMap<String, String>, s: &NodeStatus) -> u16 {
    if s.holds_lock {
        return 200;
    }
    let Some(db) = s.observed.as_ref().and_then(|o| o.db.as_ref()) else {
        return 503;
    };
    if s.member.replication_state.as_deref() != Some("streaming") || s.cluster.is_none() {
        return 503;
    }
    let write_mode = query.get("mode").is_some_and(|m| m == "write");
    let position = if write_mode {
        db.receive_lsn
    } else {
        db.replay_lsn
    }
    .unwrap_or(0);
    let lag = leader_optime(s).saturating_sub(position);
    let max = query
        .get("lag")
        .and_then(|l| parse_size(l))
        .unwrap_or_else(|| s.dynamic.maximum_lag_on_failover());
    if lag > max { 503 } else { 200 }
}

/// `GET /cluster`, as Patroni's `cluster_as_json`.
pub fn cluster_json(c: &Cluster, s: &NodeStatus) -> Value {
    let leader = c.leader_name();
    let cluster_lsn = c.last_leader_lsn().unwrap_or(0);
    let members: Vec<Value> = c
        .members
        .iter()
        .map(|m| {
            let is_leader = Some(m.name.as_str()) == leader;
            let role = match (is_leader, s.dynamic.standby_cluster().is_some()) {
                (true, true) => "standby_leader",
                (true, false) => "leader",
                _ => "replica",
            };
            let state = if is_leader {
                None
            } else {
                m.data.replication_state.clone()
            }
            .filter(|r| !r.is_empty())
            .or_else(|| m.data.state.as_ref().map(|s| s.to_string()))
            .unwrap_or_default();
            let mut out = Map::new();
            out.insert("name".into(), json!(m.name));
            out.insert("role".into(), json!(role));
            out.insert("state".into(), json!(state));
            out.insert("api_url".into(), json!(m.data.api_url));
            if let Some((host, port)) = m.data.conn_host_port() {
                out.insert("host".into(), json!(host));
                out.insert("port".into(), json!(port));
            }
            if let Some(t) = m.data.timeline {
                out.insert("timeline".into(), json!(t));
            }
            if let Some(p) = m.data.pending_restart {
                out.insert("pending_restart".into(), json!(p));
            }
            if !m.data.tags.is_empty() {
                out.insert("tags".into(), json!(m.data.tags));
            }
            if !is_leader {
                for (prefix, lsn) in [
                    ("receive_", m.data.receive_lsn),
                    ("replay_", m.data.replay_lsn),
                    ("", m.data.xlog_location),
                ] {
                    match lsn {
                        None | Some(0) => {
                            out.insert(format!("{prefix}lsn"), json!("unknown"));
                            out.insert(format!("{prefix}lag"), json!("unknown"));
                        }
                        Some(l) => {
                            out.insert(format!("{prefix}lsn"), json!(format_lsn(l)));
                            out.insert(
                                format!("{prefix}lag"),
                                json!(cluster_lsn.saturating_sub(l)),
                            );
                        }
                    }
                }
            }
            Value::Object(out)
        })
        .collect();
    let mut out = Map::new();
    out.insert("members".into(), Value::Array(members));
    out.insert("scope".into(), json!(s.scope));
    if c.dynamic_config().pause() {
        out.insert("pause".into(), json!(true));
    }
    if let Some(f) = &c.failover
        && let Some(at) = &f.value.scheduled_at_text
    {
        let mut sw = Map::new();
        sw.insert("at".into(), json!(at));
        if let Some(l) = &f.value.leader {
            sw.insert("from".into(), json!(l));
        }
        if let Some(m) = &f.value.member {
            sw.insert("to".into(), json!(m));
        }
        out.insert("scheduled_switchover".into(), Value::Object(sw));
    }
    Value::Object(out)
}

/// `GET /metrics`: Prometheus text with Patroni's metric names.
pub fn metrics(s: &NodeStatus) -> String {
    let labels = format!("{{scope=\"{}\",name=\"{}\"}}", s.scope, s.name);
    let db = s.observed.as_ref().and_then(|o| o.db.as_ref());
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{labels} {value}\n"
        ));
    };
    let flag = |b: bool| u8::from(b).to_string();
    let semver: String = PATRONI_COMPAT_VERSION
        .split('.')
        .map(|p| format!("{:0>2}", p))
        .collect();
    metric(
        "patroni_version",
        "gauge",
        "Patroni semver without periods.",
        semver,
    );
    metric(
        "patroni_postgres_running",
        "gauge",
        "Value is 1 if Postgres is running, 0 otherwise.",
        flag(db.is_some()),
    );
    let start = db
        .and_then(|d| d.postmaster_start_time.as_deref())
        .and_then(|t| t.replace(' ', "T").parse::<jiff::Timestamp>().ok())
        .map_or(0.0, |t| t.as_millisecond() as f64 / 1000.0);
    metric(
        "patroni_postmaster_start_time",
        "gauge",
        "Epoch seconds since Postgres started.",
        start.to_string(),
    );
    metric(
        "patroni_primary",
        "gauge",
        "Value is 1 if this node is the leader, 0 otherwise.",
        flag(s.is_primary()),
    );
    metric(
        "patroni_xlog_location",
        "counter",
        "Current location of the Postgres transaction log, 0 if this node is not the leader.",
        db.filter(|d| !d.in_recovery)
            .and_then(|d| d.write_lsn)
            .unwrap_or(0)
            .to_string(),
    );
    metric(
        "patroni_standby_leader",
        "gauge",
        "Value is 1 if this node is the standby_leader, 0 otherwise.",
        flag(s.is_standby_leader()),
    );
    metric(
        "patroni_replica",
        "gauge",
        "Value is 1 if this node is a replica, 0 otherwise.",
        flag(s.is_replica()),
    );
    metric(
        "patroni_sync_standby",
        "gauge",
        "Value is 1 if this node is a sync standby, 0 otherwise.",
        flag(s.is_sync_standby()),
    );
    metric(
        "patroni_quorum_standby",
        "gauge",
        "Value is 1 if this node is a quorum standby, 0 otherwise.",
        flag(s.is_quorum_standby()),
    );
    let replica = db.filter(|d| d.in_recovery);
    metric(
        "patroni_xlog_received_location",
        "counter",
        "Current location of the received Postgres transaction log, 0 if this node is not a replica.",
        replica.and_then(|d| d.receive_lsn).unwrap_or(0).to_string(),
    );
    metric(
        "patroni_xlog_replayed_location",
        "counter",
        "Current location of the replayed Postgres transaction log, 0 if this node is not a replica.",
        replica.and_then(|d| d.replay_lsn).unwrap_or(0).to_string(),
    );
    let replayed_ts = replica
        .and_then(|d| d.replayed_timestamp.as_deref())
        .and_then(|t| t.replace(' ', "T").parse::<jiff::Timestamp>().ok())
        .map_or(0.0, |t| t.as_millisecond() as f64 / 1000.0);
    metric(
        "patroni_xlog_replayed_timestamp",
        "gauge",
        "Current timestamp of the replayed Postgres transaction log, 0 if null.",
        replayed_ts.to_string(),
    );
    metric(
        "patroni_xlog_paused",
        "gauge",
        "Value is 1 if the Postgres xlog is paused, 0 otherwise.",
        flag(replica.is_some_and(|d| d.replay_paused)),
    );
    let rs = s.member.replication_state.as_deref();
    metric(
        "patroni_postgres_streaming",
        "gauge",
        "Value is 1 if Postgres is streaming, 0 otherwise.",
        flag(rs == Some("streaming")),
    );
    metric(
        "patroni_postgres_in_archive_recovery",
        "gauge",
        "Value is 1 if Postgres is replicating from archive, 0 otherwise.",
        flag(rs == Some("in archive recovery")),
    );
    metric(
        "patroni_postgres_server_version",
        "gauge",
        "Version of Postgres (if running), 0 otherwise.",
        db.map_or(0, |d| d.server_version).to_string(),
    );
    metric(
        "patroni_cluster_unlocked",
        "gauge",
        "Value is 1 if the cluster is unlocked, 0 if locked.",
        flag(s.cluster.as_ref().is_none_or(|c| c.leader.is_none())),
    );
    metric(
        "patroni_postgres_timeline",
        "gauge",
        "Postgres timeline of this node (if running), 0 otherwise.",
        db.and_then(|d| d.timeline).unwrap_or(0).to_string(),
    );
    metric(
        "patroni_dcs_last_seen",
        "gauge",
        "Epoch timestamp when DCS was last contacted successfully by Patroni.",
        s.dcs_last_seen.unwrap_or(0).to_string(),
    );
    metric(
        "patroni_pending_restart",
        "gauge",
        "Value is 1 if the node needs a restart, 0 otherwise.",
        flag(s.member.pending_restart == Some(true)),
    );
    metric(
        "patroni_is_paused",
        "gauge",
        "Value is 1 if auto failover is disabled, 0 otherwise.",
        flag(s.paused),
    );
    metric(
        "patroni_failsafe_mode_is_active",
        "gauge",
        "Value is 1 if failsafe mode is active, 0 if inactive.",
        flag(s.failsafe_active),
    );
    metric(
        "patroni_failsafe_mode_enabled",
        "gauge",
        "Value is 1 if failsafe_mode is enabled, 0 otherwise.",
        flag(s.dynamic.failsafe_mode()),
    );
    metric(
        "patroni_failsafe_member",
        "gauge",
        "Value is 1 if this node is a member of failsafe, 0 otherwise.",
        flag(
            s.cluster
                .as_ref()
                .and_then(|c| c.failsafe.as_ref())
                .is_some_and(|f| f.value.0.contains_key(&s.name)),
        ),
    );
    metric(
        "patroni_failover_priority",
        "gauge",
        "Node failover priority.",
        s.member.tags.failover_priority().to_string(),
    );
    metric(
        "pgha_fence_guard_up",
        "gauge",
        "Value is 1 if this node's fence guard runs, 0 otherwise (a node whose guard stays \
         down cannot be primary).",
        flag(s.fence_guard_up),
    );
    metric(
        "pgha_leader_lock_seconds_left",
        "gauge",
        "Seconds the leader lock this node holds had left at the end of its last cycle \
         (before another node could take it), 0 if it holds none.",
        s.lock_left.map_or(0.0, |d| d.as_secs_f64()).to_string(),
    );
    metric(
        "pgha_last_promotion_seconds",
        "gauge",
        "Seconds this node's last promotion took, from taking the leader lock to the end of \
         the promotion (pg_ctl promote and the checkpoint after it); 0 if it has not promoted \
         since it started.",
        s.last_promotion
            .map_or(0.0, |d| d.as_secs_f64())
            .to_string(),
    );
    metric(
        "pgha_unsupported_config",
        "gauge",
        "Number of keys of the dynamic configuration that pgha does not implement and runs without, \
         although they protect data (standby_cluster, ...); \
         GET /patroni names them.",
        s.unsupported.len().to_string(),
    );
    // As Patroni: the values' meanings in a comment between HELP and TYPE.
    let values: Vec<String> = POSTGRES_STATES
        .iter()
        .enumerate()
        .map(|(i, (_, name))| format!("{i}={name}"))
        .collect();
    let state = s
        .member
        .state
        .as_ref()
        .and_then(|st| POSTGRES_STATES.iter().position(|(x, _)| x == st))
        .map_or(-1, |i| i64::try_from(i).unwrap_or(-1));
    out.push_str(&format!(
        "# HELP patroni_postgres_state Numeric representation of Postgres state.\n\
         # Values: {}\n# TYPE patroni_postgres_state gauge\npatroni_postgres_state{labels} {state}\n",
        values.join(", ")
    ));
    out
}

/// `patroni_postgres_state`'s values: Patroni's indexes, which never change
/// (dashboards and alerts compare against them); -1 for anything else.
const POSTGRES_STATES: [(PgState, &str); 15] = [
    (PgState::InitializingNewCluster, "initdb"),
    (PgState::InitdbFailed, "initdb_failed"),
    (PgState::CustomBootstrap, "custom_bootstrap"),
    (PgState::CustomBootstrapFailed, "custom_bootstrap_failed"),
    (PgState::CreatingReplica, "creating_replica"),
    (PgState::Running, "running"),
    (PgState::Starting, "starting"),
    (PgState::StartingAfterCustomBootstrap, "bootstrap_starting"),
    (PgState::StartFailed, "start_failed"),
    (PgState::Restarting, "restarting"),
    (PgState::RestartFailed, "restart_failed"),
    (PgState::Stopping, "stopping"),
    (PgState::Stopped, "stopped"),
    (PgState::StopFailed, "stop_failed"),
    (PgState::Crashed, "crashed"),
];

#[cfg(test)]
mod tests;
