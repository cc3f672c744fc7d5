//! The HTTP face of the emulator: Consul's `/v1/kv`, `/v1/txn` (KV
//! operations), `/v1/session`, `/v1/agent/self` and `/v1/status/leader`
//! endpoints, translated to
//! [`Store`] operations.
//!
//! Requests for anything else are answered `404` and logged (warn), so
//! running a client against the emulator shows what else it calls.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, put};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::control::{EmulatorClock, Faults, lock};
use crate::duration;
use crate::store::{
    ApiError, CreateSession, DeleteOp, Entry, PutOp, Session, Store, TxnKvOp, TxnOutcome,
};

/// The longest a blocking query may wait (Consul: 10 minutes).
const MAX_WAIT: Duration = Duration::from_secs(600);
/// The wait of a blocking query that gives none (Consul: 5 minutes).
const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// Consul refuses KV values larger than this (`kv_max_value_size`).
const MAX_VALUE: usize = 512 * 1024;
/// The most operations one transaction may hold (Consul's `maxTxnOps`).
const MAX_TXN_OPS: usize = 64;
/// Below this many nanoseconds a numeric `LockDelay` means seconds.
const LOCK_DELAY_MIN_THRESHOLD: u128 = 1000;

/// Everything the handlers share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Mutex<Store>,
    /// Carries the Raft index after every change; blocking queries wait on it.
    pub(crate) changed: watch::Sender<u64>,
    /// Bumped when a snapshot is restored: the state blocking queries were
    /// watching is abandoned and they answer at once.
    pub(crate) abandoned: watch::Sender<u64>,
    pub(crate) clock: EmulatorClock,
    pub(crate) faults: Faults,
    /// When set, every request must present this token.
    pub(crate) acl_token: Option<String>,
}

impl Shared {
    /// Runs `f` on the store after invalidating expired sessions, and wakes
    /// blocking queries if anything changed.
    pub(crate) fn with_store<T>(&self, f: impl FnOnce(&mut Store, Duration) -> T) -> T {
        let now = self.clock.now();
        let (out, before, after) = {
            let mut st = lock(&self.store);
            let before = st.index();
            st.expire(now);
            let out = f(&mut st, now);
            (out, before, st.index())
        };
        if after != before {
            self.changed.send_replace(after);
        }
        out
    }
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/kv/", any(kv_root))
        .route("/v1/kv/{*key}", any(kv))
        .route("/v1/txn", put(txn))
        .route("/v1/session/create", put(session_create))
        .route("/v1/session/renew/{id}", put(session_renew))
        .route("/v1/session/destroy/{id}", put(session_destroy))
        .route("/v1/session/info/{id}", get(session_info))
        .route("/v1/session/list", get(session_list))
        .route("/v1/agent/self", get(agent_self))
        .route("/v1/status/leader", get(status_leader))
        .fallback(unknown)
        .layer(middleware::from_fn_with_state(shared.clone(), gate))
        .with_state(shared)
}

/// The query string's parameters, in order; a flag without `=` has an
/// empty value (Consul tests flags by presence).
struct Params(Vec<(String, String)>);

impl Params {
    fn parse(raw: Option<&str>) -> Self {
        Params(
            form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn encode(&self) -> String {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(self.0.iter())
            .finish()
    }
}

fn text(status: u16, body: impl Into<String>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, body.into()).into_response()
}

fn error(e: ApiError) -> Response {
    text(e.status, e.body)
}

fn json_response(value: &Value, index: Option<u64>) -> Response {
    let mut resp = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response();
    if let Some(i) = index {
        add_index(resp.headers_mut(), i);
    }
    resp
}

/// The headers Consul puts on answers to reads.
fn add_index(headers: &mut HeaderMap, index: u64) {
    if let Ok(v) = HeaderValue::from_str(&index.to_string()) {
        headers.insert("X-Consul-Index", v);
    }
    headers.insert("X-Consul-KnownLeader", HeaderValue::from_static("true"));
    headers.insert("X-Consul-LastContact", HeaderValue::from_static("0"));
}

/// Faults, then ACL and datacenter checks, before any endpoint runs.
async fn gate(State(sh): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    debug!(method = %req.method(), uri = %req.uri(), "request");
    if let Some((status, body)) = sh.faults.gate().await {
        return text(status, body);
    }
    let params = Params::parse(req.uri().query());
    if let Some(required) = &sh.acl_token {
        let given = req
            .headers()
            .get("X-Consul-Token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| {
                req.headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(|t| t.trim().to_string())
            })
            .or_else(|| params.get("token").map(str::to_string));
        match given {
            Some(t) if t == *required => {}
            Some(_) => return text(403, "ACL not found"),
            None => {
                return text(
                    403,
                    "Permission denied: anonymous token lacks permission (emulator: a token is required)",
                );
            }
        }
    }
    let dc = lock(&sh.store).config().datacenter.clone();
    if let Some(asked) = params.get("dc")
        && !asked.is_empty()
        && asked != dc
    {
        return text(500, "No path to datacenter");
    }
    next.run(req).await
}

async fn unknown(method: Method, uri: axum::http::Uri) -> Response {
    warn!(%method, %uri, "emulator: request for an endpoint it does not implement");
    text(
        404,
        format!(
            "consul emulator: {method} {} is not implemented",
            uri.path()
        ),
    )
}

async fn kv_root(
    State(sh): State<Arc<Shared>>,
    method: Method,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    kv_request(
        &sh,
        method,
        String::new(),
        Params::parse(q.as_deref()),
        body,
    )
    .await
}

async fn kv(
    State(sh): State<Arc<Shared>>,
    method: Method,
    Path(key): Path<String>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Response {
    kv_request(&sh, method, key, Params::parse(q.as_deref()), body).await
}

async fn kv_request(
    sh: &Shared,
    method: Method,
    key: String,
    params: Params,
    body: Bytes,
) -> Response {
    if key.starts_with('/') {
        return text(400, "key must not begin with a '/'");
    }
    match method {
        Method::GET => kv_get(sh, key, params).await,
        Method::PUT => kv_put(sh, key, params, body),
        Method::DELETE => kv_delete(sh, key, params),
        other => text(
            405,
            format!("method {other} not allowed: use GET, PUT or DELETE"),
        ),
    }
}

/// Rejects requests combining flags that select different operations.
fn conflicting(params: &Params, flags: &[&str]) -> Option<Response> {
    let present = flags.iter().filter(|f| params.has(f)).count();
    (present > 1).then(|| text(400, format!("Conflicting flags: {}\n", params.encode())))
}

fn parse_u64(params: &Params, name: &str) -> Result<Option<u64>, ApiError> {
    match params.get(name) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            ApiError::new(
                500,
                format!("strconv.ParseUint: parsing {v:?}: invalid syntax"),
            )
        }),
    }
}

/// The parameters of a blocking query: `index` and `wait`.
fn blocking_params(params: &Params) -> Result<(u64, Duration), ApiError> {
    let index = match params.get("index") {
        None => 0,
        Some(v) => v.parse().map_err(|_| ApiError::new(400, "Invalid index"))?,
    };
    let wait = match params.get("wait") {
        None => DEFAULT_WAIT,
        Some(v) => duration::parse(v).ok_or_else(|| ApiError::new(400, "Invalid wait time"))?,
    };
    if params.has("stale") && params.has("consistent") {
        return Err(ApiError::new(
            400,
            "Cannot specify ?stale with ?consistent, conflicting semantics.",
        ));
    }
    Ok((index, wait.min(MAX_WAIT)))
}

/// Runs `query` until its index passes `min_index` or `wait` (plus up to
/// `wait / 16` of jitter, as Consul adds) runs out. With `min_index` 0 it
/// answers at once.
async fn blocking<T>(
    sh: &Shared,
    min_index: u64,
    wait: Duration,
    query: impl Fn(&Store) -> (u64, T),
) -> (u64, T) {
    let deadline = tokio::time::Instant::now() + wait + jitter(wait / 16);
    let mut abandoned = sh.abandoned.subscribe();
    loop {
        // Subscribe before reading, so a change right after the read wakes us.
        let mut rx = sh.changed.subscribe();
        let (index, out) = sh.with_store(|st, _| query(st));
        if min_index == 0 || index > min_index || tokio::time::Instant::now() >= deadline {
            return (index, out);
        }
        tokio::select! {
            r = rx.changed() => {
                if r.is_err() {
                    return (index, out);
                }
            }
            // A restore: answer from the restored state at once, whatever
            // its index (Consul: "If a restore may have woken us up then
            // bail out from the query immediately").
            _ = abandoned.changed() => return sh.with_store(|st, _| query(st)),
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// Up to `max` of pseudo-random extra wait, as Consul spreads wake-ups.
fn jitter(max: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    max.mul_f64(f64::from(nanos % 1000) / 1000.0)
}

fn entry_json(key: &str, e: &Entry) -> Value {
    let value = if e.value.is_empty() {
        Value::Null
    } else {
        Value::String(base64::engine::general_purpose::STANDARD.encode(&e.value))
    };
    let mut v = json!({
        "LockIndex": e.lock_index,
        "Key": key,
        "Flags": e.flags,
        "Value": value,
    });
    if let (Some(s), Some(obj)) = (&e.session, v.as_object_mut()) {
        obj.insert("Session".into(), Value::String(s.clone()));
    }
    if let Some(obj) = v.as_object_mut() {
        obj.insert("CreateIndex".into(), json!(e.create_index));
        obj.insert("ModifyIndex".into(), json!(e.modify_index));
    }
    v
}

async fn kv_get(sh: &Shared, key: String, params: Params) -> Response {
    let (min_index, wait) = match blocking_params(&params) {
        Ok(p) => p,
        Err(e) => return error(e),
    };
    if params.has("keys") {
        let sep = params.get("separator").unwrap_or_default().to_string();
        let (index, entries) = blocking(sh, min_index, wait, |st| st.kv_list(&key)).await;
        let mut keys: Vec<String> = Vec::new();
        for (k, _) in entries {
            let shown = match (sep.is_empty(), k[key.len()..].find(&sep)) {
                (false, Some(at)) => k[..key.len() + at + sep.len()].to_string(),
                _ => k,
            };
            if keys.last() != Some(&shown) {
                keys.push(shown);
            }
        }
        if keys.is_empty() && !key.is_empty() {
            return not_found(index);
        }
        return json_response(&json!(keys), Some(index));
    }
    if params.has("recurse") {
        let (index, entries) = blocking(sh, min_index, wait, |st| st.kv_list(&key)).await;
        if entries.is_empty() {
            return not_found(index);
        }
        let list: Vec<Value> = entries.iter().map(|(k, e)| entry_json(k, e)).collect();
        return json_response(&Value::Array(list), Some(index));
    }
    if key.is_empty() {
        return text(400, "Missing key name");
    }
    let (index, entry) = blocking(sh, min_index, wait, |st| st.kv_get(&key)).await;
    let Some(entry) = entry else {
        return not_found(index);
    };
    if params.has("raw") {
        let mut resp = (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain")],
            entry.value.clone(),
        )
            .into_response();
        add_index(resp.headers_mut(), index);
        return resp;
    }
    json_response(&json!([entry_json(&key, &entry)]), Some(index))
}

fn not_found(index: u64) -> Response {
    let mut resp = StatusCode::NOT_FOUND.into_response();
    add_index(resp.headers_mut(), index);
    resp
}

fn kv_put(sh: &Shared, key: String, params: Params, body: Bytes) -> Response {
    if key.is_empty() {
        return text(400, "Missing key name");
    }
    if let Some(r) = conflicting(&params, &["cas", "acquire", "release"]) {
        return r;
    }
    let flags = match parse_u64(&params, "flags") {
        Ok(f) => f.unwrap_or(0),
        Err(e) => return error(e),
    };
    let op = if params.has("release") {
        PutOp::Release(params.get("release").unwrap_or_default().to_string())
    } else if params.has("acquire") {
        PutOp::Acquire(params.get("acquire").unwrap_or_default().to_string())
    } else if params.has("cas") {
        match parse_u64(&params, "cas") {
            Ok(c) => PutOp::Cas(c.unwrap_or(0)),
            Err(e) => return error(e),
        }
    } else {
        PutOp::Set
    };
    if body.len() > MAX_VALUE {
        return text(
            413,
            format!(
                "Request body({} bytes) too large, max size: {MAX_VALUE} bytes.",
                body.len()
            ),
        );
    }
    let set = op == PutOp::Set;
    match sh.with_store(|st, now| st.kv_put(&key, body.to_vec(), flags, op, now)) {
        Ok(done) => json_response(&Value::Bool(set || done), None),
        Err(e) => error(e),
    }
}

fn kv_delete(sh: &Shared, key: String, params: Params) -> Response {
    if let Some(r) = conflicting(&params, &["recurse", "cas"]) {
        return r;
    }
    let op = if params.has("recurse") {
        DeleteOp::Tree
    } else if key.is_empty() {
        return text(400, "Missing key name");
    } else if params.has("cas") {
        match parse_u64(&params, "cas") {
            Ok(c) => DeleteOp::Cas(c.unwrap_or(0)),
            Err(e) => return error(e),
        }
    } else {
        DeleteOp::Key
    };
    let cas = matches!(op, DeleteOp::Cas(_));
    match sh.with_store(|st, _| st.kv_delete(&key, op)) {
        Ok(done) => json_response(&Value::Bool(!cas || done), None),
        Err(e) => error(e),
    }
}

/// Decodes a transaction body as Consul's `convertOps` does: a JSON array
/// of operations, keys of a KV operation in any case, `Value` base64. An
/// operation that is not `KV` (Node, Service, Check, Session) is not
/// implemented: `Err(None)`. `Err(Some(message))` is a 400.
fn decode_txn(body: &[u8]) -> Result<Vec<TxnKvOp>, Option<String>> {
    let value: Value = serde_json::from_slice(body).map_err(|e| Some(e.to_string()))?;
    let Value::Array(items) = value else {
        return Err(Some("expected a JSON array of operations".into()));
    };
    let mut ops = Vec::with_capacity(items.len());
    for item in items {
        let Value::Object(op) = item else {
            return Err(Some("expected an operation object".into()));
        };
        let mut kv = None;
        for (k, v) in op {
            if k.eq_ignore_ascii_case("KV") {
                kv = Some(v);
            } else if !v.is_null() {
                return Err(None);
            }
        }
        let Some(Value::Object(fields)) = kv else {
            return Err(Some("operation without KV".into()));
        };
        let mut out = TxnKvOp::default();
        for (k, v) in &fields {
            let text = || match v {
                Value::String(s) => Ok(s.clone()),
                Value::Null => Ok(String::new()),
                other => Err(Some(format!("{k}: expected a string, found {other}"))),
            };
            let number = || match v {
                Value::Number(n) => n
                    .as_u64()
                    .ok_or_else(|| Some(format!("{k}: not an unsigned integer: {n}"))),
                Value::Null => Ok(0),
                other => Err(Some(format!("{k}: expected a number, found {other}"))),
            };
            match k.to_ascii_lowercase().as_str() {
                "verb" => out.verb = text()?,
                "key" => out.key = text()?,
                "session" => out.session = text()?,
                "flags" => out.flags = number()?,
                "index" => out.index = number()?,
                "value" => {
                    out.value = base64::engine::general_purpose::STANDARD
                        .decode(text()?)
                        .map_err(|e| Some(format!("failed to decode value: {e}")))?;
                }
                _ => {}
            }
        }
        ops.push(out);
    }
    Ok(ops)
}

/// `PUT /v1/txn`: 200 with the results when every operation applied, 409
/// with the errors when the transaction was rolled back (txn.mdx).
async fn txn(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    let ops = match decode_txn(&body) {
        Ok(ops) => ops,
        Err(Some(e)) => return text(400, format!("Failed to parse body: {e}")),
        Err(None) => {
            warn!("emulator: a transaction with other than KV operations");
            return text(
                404,
                "consul emulator: only KV operations are implemented in /v1/txn",
            );
        }
    };
    if ops.len() > MAX_TXN_OPS {
        return text(
            413,
            format!(
                "Transaction contains too many operations ({} > {MAX_TXN_OPS})",
                ops.len()
            ),
        );
    }
    if let Some(op) = ops.iter().find(|op| op.value.len() > MAX_VALUE) {
        return text(
            413,
            format!(
                "Value for key {:?} is too large ({} > {MAX_VALUE} bytes)",
                op.key,
                op.value.len()
            ),
        );
    }
    match sh.with_store(|st, now| st.txn(&ops, now)) {
        TxnOutcome::Applied(results) => {
            let results: Vec<Value> = results
                .iter()
                .map(|(k, e)| json!({ "KV": entry_json(k, e) }))
                .collect();
            json_response(&json!({ "Results": results, "Errors": null }), None)
        }
        TxnOutcome::RolledBack(errors) => {
            let errors: Vec<Value> = errors
                .iter()
                .map(|(i, what)| json!({ "OpIndex": i, "What": what }))
                .collect();
            (
                StatusCode::CONFLICT,
                [(header::CONTENT_TYPE, "application/json")],
                json!({ "Results": null, "Errors": errors }).to_string(),
            )
                .into_response()
        }
    }
}

fn session_json(s: &Session) -> Value {
    json!({
        "ID": s.id,
        "Name": s.name,
        "Node": s.node,
        "LockDelay": u64::try_from(s.lock_delay.as_nanos()).unwrap_or(u64::MAX),
        "Behavior": s.behavior.as_str(),
        "TTL": s.ttl_text,
        "NodeChecks": s.node_checks,
        "ServiceChecks": Value::Null,
        "CreateIndex": s.create_index,
        "ModifyIndex": s.modify_index,
    })
}

/// Decodes a session-create body as Consul does: keys in any case, a
/// `Checks` key (even empty) replaces the default `serfHealth`, and a
/// `LockDelay` below 1000 (ns) means seconds.
fn decode_create(body: &[u8]) -> Result<CreateSession, String> {
    let mut req = CreateSession::default();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(req);
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let Value::Object(map) = value else {
        return Err("expected a JSON object".into());
    };
    let string = |v: &Value, name: &str| -> Result<String, String> {
        match v {
            Value::String(s) => Ok(s.clone()),
            Value::Null => Ok(String::new()),
            other => Err(format!("{name}: expected a string, found {other}")),
        }
    };
    let strings = |v: &Value, name: &str| -> Result<Vec<String>, String> {
        match v {
            Value::Null => Ok(Vec::new()),
            Value::Array(items) => items.iter().map(|i| string(i, name)).collect(),
            other => Err(format!("{name}: expected a list, found {other}")),
        }
    };
    for (k, v) in &map {
        match k.to_ascii_lowercase().as_str() {
            "name" => req.name = string(v, k)?,
            "node" => req.node = Some(string(v, k)?).filter(|n| !n.is_empty()),
            "checks" | "nodechecks" => {
                let mut checks = req.checks.take().unwrap_or_default();
                checks.extend(strings(v, k)?);
                req.checks = Some(checks);
            }
            "servicechecks" if v.as_array().is_some_and(|a| !a.is_empty()) => {
                return Err("ServiceChecks are not supported by the emulator".into());
            }
            "behavior" => req.behavior = Some(string(v, k)?),
            "ttl" => req.ttl = Some(string(v, k)?),
            "lockdelay" => {
                let nanos: u128 = match v {
                    Value::String(s) => duration::parse(s)
                        .ok_or_else(|| format!("time: invalid duration {s:?}"))?
                        .as_nanos(),
                    Value::Number(n) => n.as_f64().map_or(0, |f| f.max(0.0) as u128),
                    other => return Err(format!("LockDelay: unexpected {other}")),
                };
                let nanos = if nanos < LOCK_DELAY_MIN_THRESHOLD {
                    nanos * 1_000_000_000
                } else {
                    nanos
                };
                req.lock_delay = Some(Duration::from_nanos(
                    u64::try_from(nanos).unwrap_or(u64::MAX),
                ));
            }
            _ => {}
        }
    }
    Ok(req)
}

async fn session_create(State(sh): State<Arc<Shared>>, body: Bytes) -> Response {
    let req = match decode_create(&body) {
        Ok(r) => r,
        Err(e) => return text(400, format!("Request decode failed: {e}")),
    };
    match sh.with_store(|st, now| st.session_create(req, now)) {
        Ok(id) => json_response(&json!({ "ID": id }), None),
        Err(e) => error(e),
    }
}

async fn session_renew(State(sh): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    match sh.with_store(|st, now| st.session_renew(&id, now)) {
        Some(s) => json_response(&json!([session_json(&s)]), None),
        None => text(404, format!("Session id '{id}' not found")),
    }
}

async fn session_destroy(State(sh): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    sh.with_store(|st, now| st.session_destroy(&id, now));
    json_response(&Value::Bool(true), None)
}

async fn session_info(State(sh): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let (index, s) = sh.with_store(|st, _| (st.index(), st.session_get(&id)));
    let list: Vec<Value> = s.iter().map(session_json).collect();
    json_response(&Value::Array(list), Some(index))
}

async fn session_list(State(sh): State<Arc<Shared>>) -> Response {
    let (index, all) = sh.with_store(|st, _| (st.index(), st.sessions()));
    let list: Vec<Value> = all.iter().map(session_json).collect();
    json_response(&Value::Array(list), Some(index))
}

/// A modern agent's `/v1/agent/self`: the short `Config` block and the
/// full configuration under `DebugConfig` (where `SessionTTLMin` lives).
async fn agent_self(State(sh): State<Arc<Shared>>) -> Response {
    let config = lock(&sh.store).config().clone();
    json_response(
        &json!({
            "Config": {
                "Datacenter": config.datacenter,
                "PrimaryDatacenter": config.datacenter,
                "NodeName": config.node,
                "NodeID": "00000000-0000-4000-8000-000000000001",
                "Revision": "emulator",
                "Server": true,
                "Version": "1.21.0-pgha-emulator",
            },
            "DebugConfig": {
                "Datacenter": config.datacenter,
                "NodeName": config.node,
                "SessionTTLMin": duration::format(config.session_ttl_min),
            },
            "Member": {
                "Name": config.node,
                "Addr": "127.0.0.1",
                "Port": 8301,
                "Tags": {"dc": config.datacenter, "role": "consul"},
                "Status": 1,
            },
            "Meta": {},
        }),
        None,
    )
}

async fn status_leader() -> Response {
    json_response(&json!("127.0.0.1:8300"), None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_body_is_read_like_consul() {
        // Patroni's body: lower-case keys, seconds as floats, empty checks.
        let r = decode_create(
            br#"{"name": "demo-n1", "checks": [], "lockdelay": "0.001s", "behavior": "delete", "ttl": "15.0s"}"#,
        )
        .unwrap();
        assert_eq!(r.name, "demo-n1");
        assert_eq!(r.checks, Some(vec![]));
        assert_eq!(r.lock_delay, Some(Duration::from_millis(1)));
        assert_eq!(r.ttl.as_deref(), Some("15.0s"));
        // A small number means seconds.
        let r = decode_create(br#"{"LockDelay": 5}"#).unwrap();
        assert_eq!(r.lock_delay, Some(Duration::from_secs(5)));
        // No Checks key: the default applies (None).
        assert_eq!(decode_create(b"{}").unwrap().checks, None);
        assert!(decode_create(b"[1]").is_err());
    }
}
