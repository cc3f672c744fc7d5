//! The HTTP face of the emulator: routing, the verbs, and watch streams.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use futures::StreamExt;
use http_body_util::BodyExt;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use crate::error::ApiError;
use crate::faults::{Clock, Faults};
use crate::patch::{self, PatchKind};
use crate::selector::{FieldSelector, LabelSelector, Selection};
use crate::store::{
    Event, EventType, Preconditions, Resource, Store, meta_mut, meta_str, set_type_meta,
};
use crate::validate;

/// Largest request body accepted (kube-apiserver's limit is 3 MiB).
const MAX_BODY: usize = 3 * 1024 * 1024;
/// How many recent requests are remembered for [`crate::Emulator::requests`].
const REQUEST_LOG: usize = 2000;
/// A watch without `timeoutSeconds` ends after this long (kube-apiserver
/// picks 30 to 60 minutes).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);
/// How often a watch that asked for bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(5);

/// Everything the request handlers share; survives restarts.
#[derive(Debug)]
pub(crate) struct Shared {
    pub store: Mutex<Store>,
    /// The newest `resourceVersion`, sent after every change: wakes watches.
    pub changed: watch::Sender<u64>,
    pub faults: Faults,
    pub clock: Clock,
    pub requests: Mutex<VecDeque<String>>,
}

impl Shared {
    pub fn new() -> Self {
        let store = Store::default();
        let rv = store.current_rv();
        Shared {
            store: Mutex::new(store),
            changed: watch::channel(rv).0,
            faults: Faults::default(),
            clock: Clock::default(),
            requests: Mutex::new(VecDeque::new()),
        }
    }

    pub fn store(&self) -> MutexGuard<'_, Store> {
        // Plain data: a panic in one handler leaves it usable.
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn log_request(&self, line: String) {
        let mut log = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        if log.len() >= REQUEST_LOG {
            log.pop_front();
        }
        log.push_back(line);
    }

    fn notify(&self) {
        let rv = self.store().current_rv();
        self.changed.send_replace(rv);
    }
}

/// Query parameters, percent-decoded (`+` is a space, as form encoding has it).
#[derive(Debug, Default)]
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: Option<&str>) -> Query {
        Query(
            q.unwrap_or("")
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (decode(k), decode(v))
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Go's `strconv.ParseBool`, which the apiserver uses for flags.
    fn flag(&self, key: &str) -> bool {
        matches!(
            self.get(key),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True")
        )
    }

    fn selection(&self) -> Result<Selection, ApiError> {
        Ok(Selection {
            labels: LabelSelector::parse(self.get("labelSelector").unwrap_or(""))?,
            fields: FieldSelector::parse(self.get("fieldSelector").unwrap_or(""))?,
        })
    }

    fn dry_run(&self) -> bool {
        self.get("dryRun") == Some("All")
    }
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json_response(code: StatusCode, body: &Value) -> Response<Body> {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = code;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error_response(e: &ApiError) -> Response<Body> {
    let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = json_response(code, &e.status());
    if let Some(secs) = e.retry_after {
        r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    r
}

/// Serves one request. Never fails: every error becomes a `Status`.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    shared.log_request(format!(
        "{method} {path}{}",
        query
            .as_deref()
            .map(|q| format!("?{q}"))
            .unwrap_or_default()
    ));
    let latency = shared.faults.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    shared.faults.wait_unhung().await;
    if let Some(code) = shared.faults.take_failure() {
        debug!(%method, path, code, "injected failure");
        return Ok(error_response(&ApiError::injected(code)));
    }
    let response = match route(&shared, req, &method, &path, Query::parse(query.as_deref())).await {
        Ok(r) => r,
        Err(e) => {
            debug!(%method, path, code = e.code, reason = e.reason, "request failed");
            error_response(&e)
        }
    };
    Ok(response)
}

async fn read_json(req: Request<Incoming>) -> Result<(Value, String), ApiError> {
    let content_type = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the body: {e}")))?
        .to_bytes();
    if body.len() > MAX_BODY {
        return Err(ApiError::new(
            413,
            "RequestEntityTooLarge",
            "request body too large",
        ));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((Value::Null, content_type));
    }
    let v = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON in the request body: {e}")))?;
    Ok((v, content_type))
}

async fn route(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    method: &Method,
    path: &str,
    q: Query,
) -> Result<Response<Body>, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["version"] => Ok(json_response(StatusCode::OK, &version())),
        ["healthz"] | ["livez"] | ["readyz"] => {
            let mut r = Response::new(Body::from("ok"));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            Ok(r)
        }
        ["api"] => Ok(json_response(
            StatusCode::OK,
            &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
        )),
        ["apis"] => Ok(json_response(
            StatusCode::OK,
            &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": []}),
        )),
        ["api", "v1"] => Ok(json_response(StatusCode::OK, &resource_list())),
        ["api", "v1", "namespaces"] if method == Method::GET => {
            Ok(json_response(StatusCode::OK, &namespaces(shared)))
        }
        ["api", "v1", "namespaces", ns] if method == Method::GET => {
            Ok(json_response(StatusCode::OK, &namespace(ns)))
        }
        ["api", "v1", plural] => {
            let res = resource(plural)?;
            if method != Method::GET {
                return Err(ApiError::method_not_allowed(method.as_str()));
            }
            collection_get(shared, res, None, q).await
        }
        ["api", "v1", "namespaces", ns, plural] => {
            let res = resource(plural)?;
            match *method {
                Method::GET => collection_get(shared, res, Some(ns), q).await,
                Method::POST => {
                    let (body, _) = read_json(req).await?;
                    create(shared, res, ns, body, &q)
                }
                Method::DELETE => delete_collection(shared, res, ns, &q),
                _ => Err(ApiError::method_not_allowed(method.as_str())),
            }
        }
        ["api", "v1", "namespaces", ns, plural, name] => {
            let res = resource(plural)?;
            object(shared, req, method, res, ns, name, false, &q).await
        }
        ["api", "v1", "namespaces", ns, "pods", name, "status"] => {
            object(shared, req, method, Resource::Pods, ns, name, true, &q).await
        }
        _ => {
            warn!(%method, path, "the emulator does not serve this path");
            Err(ApiError::path_not_found())
        }
    }
}

fn resource(plural: &str) -> Result<Resource, ApiError> {
    Resource::from_plural(plural).ok_or_else(|| {
        warn!(plural, "the emulator does not serve this resource type");
        ApiError::path_not_found()
    })
}

fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-pgha-k8s-emulator",
        "gitCommit": "",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "",
        "compiler": "",
        "platform": "linux/amd64",
    })
}

fn resource_list() -> Value {
    let resources: Vec<Value> = Resource::all()
        .iter()
        .map(|r| {
            json!({
                "name": r.plural(),
                "singularName": r.kind().to_ascii_lowercase(),
                "namespaced": true,
                "kind": r.kind(),
                "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            })
        })
        .collect();
    json!({"kind": "APIResourceList", "groupVersion": "v1", "resources": resources})
}

fn namespace(ns: &str) -> Value {
    json!({
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": {"name": ns},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    })
}

fn namespaces(shared: &Shared) -> Value {
    let store = shared.store();
    let mut names: Vec<String> = vec!["default".into()];
    for res in Resource::all() {
        for obj in store.list(res, None) {
            if let Some(ns) = meta_str(obj, "namespace")
                && !names.iter().any(|n| n == ns)
            {
                names.push(ns.to_string());
            }
        }
    }
    let items: Vec<Value> = names
        .iter()
        .map(|n| {
            let mut v = namespace(n);
            strip_type_meta(&mut v);
            v
        })
        .collect();
    json!({
        "kind": "NamespaceList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": store.current_rv().to_string()},
        "items": items,
    })
}

/// List items carry no `kind`/`apiVersion` of their own.
fn strip_type_meta(v: &mut Value) {
    if let Value::Object(m) = v {
        m.remove("kind");
        m.remove("apiVersion");
    }
}

async fn collection_get(
    shared: &Arc<Shared>,
    res: Resource,
    ns: Option<&str>,
    q: Query,
) -> Result<Response<Body>, ApiError> {
    let selection = q.selection()?;
    if q.flag("watch") {
        return watch(shared, res, ns, selection, &q);
    }
    let limit: Option<usize> = match q.get("limit") {
        None | Some("") | Some("0") => None,
        Some(l) => Some(
            l.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
        ),
    };
    let mut store = shared.store();
    store.compact_by_age(shared.clock.now());
    // A continue token is "<list version>/<namespace>/<name>" of the last item served.
    let (list_rv, after) = match q.get("continue").filter(|c| !c.is_empty()) {
        Some(token) => {
            let mut parts = token.splitn(3, '/');
            let rv: u64 = parts
                .next()
                .and_then(|r| r.parse().ok())
                .ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
            if rv < store.compacted() {
                return Err(ApiError::gone(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ));
            }
            let ns_part = parts.next().unwrap_or("").to_string();
            let name_part = parts.next().unwrap_or("").to_string();
            (rv, Some((ns_part, name_part)))
        }
        None => (store.current_rv(), None),
    };
    let mut items: Vec<Value> = store
        .list(res, ns)
        .into_iter()
        .filter(|o| selection.matches(o))
        .filter(|o| {
            after.as_ref().is_none_or(|(ans, aname)| {
                let key = (
                    meta_str(o, "namespace").unwrap_or(""),
                    meta_str(o, "name").unwrap_or(""),
                );
                key > (ans.as_str(), aname.as_str())
            })
        })
        .cloned()
        .collect();
    let mut cont = None;
    if let Some(limit) = limit
        && items.len() > limit
    {
        items.truncate(limit);
        if let Some(last) = items.last() {
            cont = Some(format!(
                "{list_rv}/{}/{}",
                meta_str(last, "namespace").unwrap_or(""),
                meta_str(last, "name").unwrap_or("")
            ));
        }
    }
    drop(store);
    for i in &mut items {
        strip_type_meta(i);
    }
    let mut meta = json!({"resourceVersion": list_rv.to_string()});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": res.list_kind(), "apiVersion": "v1", "metadata": meta, "items": items}),
    ))
}

/// Fills `kind`/`apiVersion`, checks the namespace and name of a body.
fn prepare_body(
    res: Resource,
    ns: &str,
    body: Value,
    name: Option<&str>,
) -> Result<Value, ApiError> {
    let mut obj = body;
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    if let Some(kind) = obj.get("kind").and_then(Value::as_str)
        && kind != res.kind()
    {
        return Err(ApiError::bad_request(format!(
            "the body's kind {kind:?} does not match the resource {}",
            res.plural()
        )));
    }
    if let Some(body_ns) = meta_str(&obj, "namespace")
        && !body_ns.is_empty()
        && body_ns != ns
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    set_type_meta(&mut obj, res);
    if let Some(name) = name {
        let meta = meta_mut(&mut obj);
        if meta
            .get("name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            meta.insert("name".into(), json!(name));
        }
    }
    Ok(obj)
}

fn create(
    shared: &Shared,
    res: Resource,
    ns: &str,
    body: Value,
    q: &Query,
) -> Result<Response<Body>, ApiError> {
    let mut obj = prepare_body(res, ns, body, None)?;
    let now = shared.clock.now();
    {
        let meta = meta_mut(&mut obj);
        meta.remove("resourceVersion");
        let has_name = meta
            .get("name")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        if !has_name {
            let Some(prefix) = meta.get("generateName").and_then(Value::as_str) else {
                return Err(ApiError::invalid(
                    res,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                ));
            };
            let suffix = now
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default()
                % 100_000;
            let name = format!("{prefix}{suffix:05}");
            meta.insert("name".into(), json!(name));
        }
    }
    if res == Resource::Pods {
        // Status is the system's to fill in (the kubelet, through the
        // status subresource); a new Pod starts Pending.
        if let Value::Object(m) = &mut obj {
            m.insert("status".into(), json!({"phase": "Pending"}));
        }
    }
    validate::object(res, &obj)?;
    let created = shared.store().create(res, ns, obj, now, q.dry_run())?;
    shared.notify();
    Ok(json_response(StatusCode::CREATED, &created))
}

#[allow(clippy::too_many_arguments)]
async fn object(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    method: &Method,
    res: Resource,
    ns: &str,
    name: &str,
    status_subresource: bool,
    q: &Query,
) -> Result<Response<Body>, ApiError> {
    match *method {
        Method::GET => {
            let store = shared.store();
            let obj = store
                .get(res, ns, name)
                .cloned()
                .ok_or_else(|| ApiError::not_found(res, name))?;
            Ok(json_response(StatusCode::OK, &obj))
        }
        Method::PUT => {
            let (body, _) = read_json(req).await?;
            let new = prepare_body(res, ns, body, Some(name))?;
            write(shared, res, ns, name, status_subresource, q, |_current| {
                Ok(new)
            })
        }
        Method::PATCH => {
            let (body, content_type) = read_json(req).await?;
            let kind = PatchKind::from_content_type(&content_type)?;
            if !body.is_object() {
                return Err(ApiError::bad_request("the patch must be a JSON object"));
            }
            write(shared, res, ns, name, status_subresource, q, |current| {
                let mut patched = current.clone();
                match kind {
                    PatchKind::Merge => patch::merge(&mut patched, &body),
                    PatchKind::Strategic => patch::strategic(&mut patched, &body)?,
                }
                Ok(patched)
            })
        }
        Method::DELETE if !status_subresource => {
            let (body, _) = read_json(req).await?;
            let pre = body.get("preconditions");
            let rv = pre
                .and_then(|p| p.get("resourceVersion"))
                .and_then(Value::as_str)
                .map(str::to_string);
            let uid = pre
                .and_then(|p| p.get("uid"))
                .and_then(Value::as_str)
                .map(str::to_string);
            let now = shared.clock.now();
            let pre = Preconditions {
                resource_version: rv,
                uid,
            };
            let gone = shared
                .store()
                .delete(res, ns, name, &pre, now, q.dry_run())?;
            shared.notify();
            Ok(json_response(
                StatusCode::OK,
                &json!({
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": {"name": name, "kind": res.plural(), "uid": meta_str(&gone, "uid")},
                }),
            ))
        }
        _ => Err(ApiError::method_not_allowed(method.as_str())),
    }
}

/// An update (PUT or PATCH) of one object, atomically: read, compute the
/// new object with `f`, validate, store.
#[allow(clippy::too_many_arguments)]
fn write(
    shared: &Shared,
    res: Resource,
    ns: &str,
    name: &str,
    status_subresource: bool,
    q: &Query,
    f: impl FnOnce(&Value) -> Result<Value, ApiError>,
) -> Result<Response<Body>, ApiError> {
    let now = shared.clock.now();
    let updated = {
        let mut store = shared.store();
        let current = store
            .get(res, ns, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(res, name))?;
        let mut new = f(&current)?;
        if !new.is_object() {
            return Err(ApiError::bad_request(
                "the result of the patch is not an object",
            ));
        }
        set_type_meta(&mut new, res);
        if res == Resource::Pods {
            if status_subresource {
                // Only the status changes through the status subresource.
                let status = new.get("status").cloned();
                let rv = meta_str(&new, "resourceVersion").map(str::to_string);
                let mut merged = current.clone();
                if let Value::Object(m) = &mut merged {
                    match status {
                        Some(s) => m.insert("status".into(), s),
                        None => m.remove("status"),
                    };
                }
                if let Some(rv) = rv {
                    meta_mut(&mut merged).insert("resourceVersion".into(), json!(rv));
                }
                new = merged;
            } else if let Value::Object(m) = &mut new {
                // The main resource ignores changes to the status.
                match current.get("status") {
                    Some(s) => m.insert("status".into(), s.clone()),
                    None => m.remove("status"),
                };
            }
        }
        validate::object(res, &new)?;
        store.update(res, ns, name, new, now, q.dry_run())?
    };
    shared.notify();
    Ok(json_response(StatusCode::OK, &updated))
}

fn delete_collection(
    shared: &Shared,
    res: Resource,
    ns: &str,
    q: &Query,
) -> Result<Response<Body>, ApiError> {
    let selection = q.selection()?;
    let now = shared.clock.now();
    let mut deleted = Vec::new();
    {
        let mut store = shared.store();
        let names: Vec<String> = store
            .list(res, Some(ns))
            .into_iter()
            .filter(|o| selection.matches(o))
            .filter_map(|o| meta_str(o, "name").map(str::to_string))
            .collect();
        for name in names {
            let mut gone =
                store.delete(res, ns, &name, &Preconditions::default(), now, q.dry_run())?;
            strip_type_meta(&mut gone);
            deleted.push(gone);
        }
    }
    shared.notify();
    let rv = shared.store().current_rv();
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": res.list_kind(), "apiVersion": "v1", "metadata": {"resourceVersion": rv.to_string()}, "items": deleted}),
    ))
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// Synthetic `ADDED` events for the current state, then changes.
    CurrentState,
    /// Changes after this version.
    After(u64),
}

fn watch(
    shared: &Arc<Shared>,
    res: Resource,
    ns: Option<&str>,
    selection: Selection,
    q: &Query,
) -> Result<Response<Body>, ApiError> {
    let start = match q.get("resourceVersion") {
        None | Some("") | Some("0") => Start::CurrentState,
        Some(v) => Start::After(
            v.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {v:?}")))?,
        ),
    };
    if q.flag("sendInitialEvents") {
        return Err(ApiError::invalid(
            res,
            "",
            "sendInitialEvents: the emulator does not implement streaming lists",
        ));
    }
    let timeout = match q.get("timeoutSeconds") {
        Some(t) => Duration::from_secs(
            t.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {t:?}")))?,
        ),
        None => DEFAULT_WATCH_TIMEOUT,
    };
    let bookmarks = q.flag("allowWatchBookmarks");
    let gone = shared.faults.take_gone();
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let shared = shared.clone();
    let ns = ns.map(str::to_string);
    tokio::spawn(async move {
        let w = Watcher {
            shared,
            res,
            ns,
            selection,
            tx,
        };
        w.run(start, timeout, bookmarks, gone).await;
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
    .boxed();
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(r)
}

/// One watch stream's producer.
struct Watcher {
    shared: Arc<Shared>,
    res: Resource,
    ns: Option<String>,
    selection: Selection,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl Watcher {
    async fn send(&self, event: &Value) -> bool {
        let mut line = event.to_string();
        line.push('\n');
        self.tx.send(Ok(Bytes::from(line))).await.is_ok()
    }

    async fn send_gone(&self, asked: u64, oldest: u64) {
        let status =
            ApiError::gone(format!("too old resource version: {asked} ({oldest})")).status();
        let _ = self.send(&json!({"type": "ERROR", "object": status})).await;
    }

    fn in_scope(&self, e: &Event) -> bool {
        e.resource == self.res && self.ns.as_deref().is_none_or(|ns| ns == e.namespace)
    }

    /// The event this watch reports for `e`, if any: a change that moves an
    /// object into the selection is `ADDED`, out of it `DELETED`.
    fn translate(&self, e: &Event) -> Option<(EventType, Value)> {
        if !self.in_scope(e) {
            return None;
        }
        let now = self.selection.matches(&e.object);
        let before = e.prev.as_ref().is_some_and(|p| self.selection.matches(p));
        match e.kind {
            EventType::Added => now.then(|| (EventType::Added, e.object.clone())),
            EventType::Deleted => before.then(|| (EventType::Deleted, e.object.clone())),
            EventType::Modified => match (before, now) {
                (true, true) => Some((EventType::Modified, e.object.clone())),
                (false, true) => Some((EventType::Added, e.object.clone())),
                (true, false) => {
                    // Report the deletion from the selection with the new version.
                    Some((EventType::Deleted, e.object.clone()))
                }
                (false, false) => None,
            },
        }
    }

    async fn run(self, start: Start, timeout: Duration, bookmarks: bool, gone: bool) {
        let mut drops = self.shared.faults.watch_drops();
        drops.borrow_and_update();
        let mut hang = self.shared.faults.hang_switch();
        let mut changed = self.shared.changed.subscribe();
        changed.borrow_and_update();
        if gone {
            let oldest = self.shared.store().current_rv();
            let asked = match start {
                Start::After(rv) => rv,
                Start::CurrentState => 0,
            };
            self.send_gone(asked, oldest).await;
            return;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut sent_rv = match start {
            Start::After(rv) => rv,
            Start::CurrentState => {
                let (objects, rv) = {
                    let store = self.shared.store();
                    let objects: Vec<Value> = store
                        .list(self.res, self.ns.as_deref())
                        .into_iter()
                        .filter(|o| self.selection.matches(o))
                        .cloned()
                        .collect();
                    (objects, store.current_rv())
                };
                for o in objects {
                    if !self.send(&json!({"type": "ADDED", "object": o})).await {
                        return;
                    }
                }
                rv
            }
        };
        let mut next_bookmark = tokio::time::Instant::now() + BOOKMARK_EVERY;
        loop {
            // While hung, send nothing: changes queue up in the history.
            if *hang.borrow_and_update() {
                tokio::select! {
                    _ = hang.changed() => continue,
                    _ = drops.changed() => { self.abort().await; return; }
                    _ = self.tx.closed() => return,
                }
            }
            let batch = {
                let mut store = self.shared.store();
                store.compact_by_age(self.shared.clock.now());
                store.events_after(sent_rv)
            };
            match batch {
                Err(oldest) => {
                    self.send_gone(sent_rv, oldest).await;
                    return;
                }
                Ok(events) => {
                    for e in &events {
                        if let Some((kind, object)) = self.translate(e)
                            && !self
                                .send(&json!({"type": kind.as_str(), "object": object}))
                                .await
                        {
                            return;
                        }
                        sent_rv = e.rv;
                    }
                }
            }
            tokio::select! {
                _ = changed.changed() => {}
                _ = hang.changed() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    if bookmarks {
                        self.bookmark().await;
                    }
                    return;
                }
                _ = tokio::time::sleep_until(next_bookmark), if bookmarks => {
                    if !self.bookmark().await {
                        return;
                    }
                    next_bookmark = tokio::time::Instant::now() + BOOKMARK_EVERY;
                }
                _ = drops.changed() => { self.abort().await; return; }
                _ = self.tx.closed() => return,
            }
        }
    }

    async fn bookmark(&self) -> bool {
        let rv = self.shared.store().current_rv();
        self.send(&json!({
            "type": "BOOKMARK",
            "object": {"kind": self.res.kind(), "apiVersion": "v1", "metadata": {"resourceVersion": rv.to_string()}},
        }))
        .await
    }

    /// Ends the response abruptly: the connection is reset mid-stream.
    async fn abort(&self) {
        debug!("dropping a watch stream (fault switch)");
        let _ = self
            .tx
            .send(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "watch stream dropped by the emulator's fault switch",
            )))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = Query::parse(Some(
            "labelSelector=cluster-name%3Ddemo%2Crole+in+%28a%2Cb%29&watch=True&x",
        ));
        assert_eq!(
            q.get("labelSelector"),
            Some("cluster-name=demo,role in (a,b)")
        );
        assert!(q.flag("watch"));
        assert_eq!(q.get("x"), Some(""));
        assert_eq!(decode("%zz%4"), "%zz%4");
    }
}
