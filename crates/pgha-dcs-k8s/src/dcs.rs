//! [`K8sDcs`]: one node's client, implementing [`Dcs`] on the Kubernetes API.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Endpoints, Pod, Service};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use pgha_core::dcs::{Dcs, DcsError, LockLease, SharedKey, WatchOutcome};
use pgha_core::model::{
    Cluster, ClusterKey, Expect, KeyLayout, KeyProblem, LeaderLock, MemberData, PgState, RawEntry,
    Role, Timing, Version,
};
use serde_json::{Map, Value, json};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::config::{
    ApiServer, K8sConfig, PATRONI_DEFAULT_CONTEXT, valid_label_value, valid_object_name,
};
use crate::fail::Fail;
use crate::record::{self, Heartbeat, LeaderRecord, Observer, OwnLock};
use crate::values::{self, Home, Updates};

/// Pause between attempts after a failure that left time to try again.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between attempts.
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(500);
/// How often a guarded write is re-read and tried again after it lost a
/// race to a write that did not touch the key (a sibling annotation).
const MAX_ATTEMPTS: usize = 5;
/// The cursor of a cluster without leader object.
const NO_LEADER_OBJECT: &str = "none";

/// Whether a request may be sent again after a failure whose outcome is
/// unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repeat {
    /// Reads and unconditional patches: applying twice is the same as once.
    Safe,
    /// Creates and writes guarded by `resourceVersion`: a repeat after a
    /// success that was not seen would report our own write as lost.
    OnlyIfNotSent,
}

/// What this client remembers between calls.
#[derive(Debug, Default)]
struct State {
    /// The leader record as last seen, and since when.
    leader_seen: Observer<(), LeaderRecord>,
    /// Each pgha member's `(status, heartbeat)` as last seen, and since when.
    members_seen: Observer<String, (String, String)>,
    own: OwnLock,
}

/// One node's client of the Kubernetes API. See the crate docs for the
/// mapping, the lifetimes and their limits.
///
/// Invariants:
/// - every trait call returns within `retry_timeout` (watches: at their
///   own timeout), whatever the network does;
/// - every write of the leader record is guarded by the `resourceVersion`
///   it was decided on;
/// - nothing runs in the background: the lock and the member heartbeat are
///   refreshed only by this client's calls.
#[derive(Debug)]
pub struct K8sDcs {
    config: K8sConfig,
    layout: KeyLayout,
    name: String,
    /// Object names start with it: Patroni's `<scope>`.
    prefix: String,
    labels: BTreeMap<String, String>,
    selector: String,
    timing: Mutex<Timing>,
    client: ClientSlot,
    state: Mutex<State>,
    config_service_done: AtomicBool,
    /// Our Pod's IP once read (for the leader Endpoints).
    pod_ip: Mutex<Option<String>>,
}

/// The kube client, made on first use (kube's `Client` has no `Debug`).
#[derive(Default)]
struct ClientSlot(tokio::sync::Mutex<Option<kube::Client>>);

impl std::fmt::Debug for ClientSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSlot")
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data: a panic elsewhere leaves it usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn annotations(o: &DynamicObject) -> BTreeMap<String, String> {
    o.metadata.annotations.clone().unwrap_or_default()
}

fn rv(o: &DynamicObject) -> String {
    o.metadata.resource_version.clone().unwrap_or_default()
}

fn token(o: &DynamicObject) -> Version {
    Version::token(rv(o))
}

fn leader_token(o: Option<&DynamicObject>) -> Version {
    o.map_or_else(|| Version::token(NO_LEADER_OBJECT), token)
}

impl K8sDcs {
    /// A client for node `member_name` (the name of its Pod) of the cluster
    /// at `layout`: the scope names the objects; the layout's namespace is
    /// not used (as in Patroni, the Kubernetes namespace comes from the
    /// configuration).
    ///
    /// Does not contact the API server, nor read the kubeconfig: both happen
    /// at the first call and are retried by later calls, so an agent started
    /// before the API server is reachable works as soon as it is (calls fail
    /// with [`DcsError::Unreachable`], or [`DcsError::Rejected`] for a
    /// kubeconfig that cannot be used, meanwhile). Fails only on a
    /// configuration that cannot work ([`DcsError::Rejected`]); the
    /// configuration's warnings are logged here.
    pub fn new(
        config: K8sConfig,
        layout: KeyLayout,
        member_name: impl Into<String>,
        timing: Timing,
    ) -> Result<Self, DcsError> {
        let name = member_name.into();
        config
            .validate()
            .map_err(|e| DcsError::rejected("configure", e))?;
        if !valid_object_name(&name) {
            return Err(DcsError::rejected(
                "configure",
                format!(
                    "member name {name:?} must be the name of its Pod (lowercase letters, digits, '-' and '.')"
                ),
            ));
        }
        let prefix = layout.scope().trim_matches('/').replace('/', "-");
        if !valid_object_name(&format!("{prefix}-leader")) || !valid_label_value(&prefix) {
            return Err(DcsError::rejected(
                "configure",
                format!(
                    "scope {:?} cannot name Kubernetes objects and label them (lowercase letters, digits and '-', at most 63)",
                    layout.scope()
                ),
            ));
        }
        for w in config.warnings() {
            warn!("{w}");
        }
        let labels = config.cluster_labels(&prefix);
        let selector = config.label_selector(&prefix);
        Ok(K8sDcs {
            config,
            layout,
            name,
            prefix,
            labels,
            selector,
            timing: Mutex::new(timing),
            client: ClientSlot::default(),
            state: Mutex::new(State::default()),
            config_service_done: AtomicBool::new(false),
            pod_ip: Mutex::new(None),
        })
    }

    fn timing(&self) -> Timing {
        *lock(&self.timing)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// `ttl` in whole seconds, rounded up: what the leader record and the
    /// heartbeat announce.
    fn ttl_secs(&self) -> u64 {
        let ttl = self.timing().ttl;
        (ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).max(1)
    }

    /// The name of the object holding `home`.
    fn object_name(&self, home: Home) -> String {
        match home {
            Home::Leader if self.config.use_endpoints => self.prefix.clone(),
            Home::Leader => format!("{}-leader", self.prefix),
            Home::Config => format!("{}-config", self.prefix),
            Home::Failover => format!("{}-failover", self.prefix),
            Home::Sync => format!("{}-sync", self.prefix),
        }
    }

    fn kind_resource(&self) -> ApiResource {
        if self.config.use_endpoints {
            ApiResource::erase::<Endpoints>(&())
        } else {
            ApiResource::erase::<ConfigMap>(&())
        }
    }

    fn kinds(&self, c: kube::Client) -> Api<DynamicObject> {
        Api::namespaced_with(c, &self.config.namespace, &self.kind_resource())
    }

    fn pods(&self, c: kube::Client) -> Api<DynamicObject> {
        Api::namespaced_with(c, &self.config.namespace, &ApiResource::erase::<Pod>(&()))
    }

    fn services(&self, c: kube::Client) -> Api<DynamicObject> {
        Api::namespaced_with(
            c,
            &self.config.namespace,
            &ApiResource::erase::<Service>(&()),
        )
    }

    /// The kube client, built on first use (reading the kubeconfig or the
    /// service account); a failure is retried by the next call.
    async fn client(&self) -> Result<kube::Client, Fail> {
        let mut slot = self.client.0.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let mut cfg = self.kube_config().await.map_err(Fail::Rejected)?;
        if let Some(via) = &self.config.connect_via {
            if cfg.tls_server_name.is_none() {
                cfg.tls_server_name = cfg.cluster_url.host().map(String::from);
            }
            cfg.cluster_url = via
                .parse()
                .map_err(|e| Fail::Rejected(format!("connect_via {via:?}: {e}")))?;
        }
        // Our own retry policy decides what may be repeated; kube's would
        // repeat guarded writes and outlive retry_timeout.
        cfg.default_retry = false;
        cfg.read_timeout = None;
        cfg.connect_timeout = Some(self.timing().retry_timeout.max(Duration::from_secs(1)));
        let client = kube::Client::try_from(cfg).map_err(|e| Fail::Rejected(e.to_string()))?;
        *slot = Some(client.clone());
        Ok(client)
    }

    async fn kube_config(&self) -> Result<kube::Config, String> {
        let from_file = |kc: Kubeconfig, context: &Option<String>| {
            let context = context.clone().or_else(|| {
                kc.contexts
                    .iter()
                    .any(|c| c.name == PATRONI_DEFAULT_CONTEXT)
                    .then(|| {
                        info!("no kubernetes.context configured: using {PATRONI_DEFAULT_CONTEXT:?} from the kubeconfig, as Patroni does");
                        PATRONI_DEFAULT_CONTEXT.to_string()
                    })
            });
            async move {
                kube::Config::from_custom_kubeconfig(
                    kc,
                    &KubeConfigOptions {
                        context,
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| format!("kubeconfig: {e}"))
            }
        };
        match &self.config.api {
            ApiServer::Url(url) => {
                let uri = url
                    .parse()
                    .map_err(|e| format!("API server URL {url:?}: {e}"))?;
                Ok(kube::Config::new(uri))
            }
            ApiServer::Kubeconfig { path, context } => {
                let kc = Kubeconfig::read_from(path).map_err(|e| format!("kubeconfig: {e}"))?;
                from_file(kc, context).await
            }
            ApiServer::Infer { context } => {
                let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST")
                    .is_some_and(|h| !h.is_empty())
                    && std::env::var_os("KUBERNETES_SERVICE_PORT").is_some_and(|p| !p.is_empty());
                if in_cluster {
                    let mut cfg = kube::Config::incluster()
                        .map_err(|e| format!("in-cluster configuration: {e}"))?;
                    if let Some(ca) = &self.config.cacert {
                        let pem = std::fs::read(ca)
                            .map_err(|e| format!("cacert {}: {e}", ca.display()))?;
                        cfg.root_cert = Some(vec![pem]);
                        cfg.root_cert_file = Some(ca.clone());
                    }
                    Ok(cfg)
                } else {
                    let kc = Kubeconfig::read().map_err(|e| {
                        format!("not in a cluster (KUBERNETES_SERVICE_HOST unset) and no usable kubeconfig: {e}")
                    })?;
                    from_file(kc, context).await
                }
            }
        }
    }

    /// Runs a whole trait operation under the `retry_timeout` bound
    /// ([`pgha_core::dcs::bounded`]).
    async fn bounded<T, Fut>(
        &self,
        operation: &'static str,
        body: impl FnOnce(Instant) -> Fut,
    ) -> Result<T, DcsError>
    where
        Fut: Future<Output = Result<T, DcsError>>,
    {
        let limit = self.timing().retry_timeout;
        pgha_core::dcs::bounded("Kubernetes", operation, limit, body, || ()).await
    }

    /// One API request, repeated while `repeat` allows and time is left
    /// after failures that may pass (transport, 429, 5xx).
    async fn req<T, F, Fut>(&self, deadline: Instant, repeat: Repeat, request: F) -> Result<T, Fail>
    where
        F: Fn(kube::Client) -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let mut pause = RETRY_PAUSE;
        loop {
            let client = self.client().await?;
            let fail = match request(client).await {
                Ok(v) => return Ok(v),
                Err(e) => Fail::from_kube(&e, &self.config.retriable_http_codes),
            };
            let Fail::Transport { not_sent, detail } = &fail else {
                return Err(fail);
            };
            if !(repeat == Repeat::Safe || *not_sent) || Instant::now() + pause >= deadline {
                return Err(fail);
            }
            debug!(detail, "Kubernetes request failed; trying again");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_RETRY_PAUSE);
        }
    }

    async fn get_kind(&self, deadline: Instant, name: &str) -> Result<Option<DynamicObject>, Fail> {
        self.req(deadline, Repeat::Safe, |c| {
            let api = self.kinds(c);
            async move { api.get_opt(name).await }
        })
        .await
    }

    /// A merge patch of one object of the cluster's kind; `rv` guards it.
    async fn patch_kind(
        &self,
        deadline: Instant,
        name: &str,
        body: Value,
        guarded: bool,
    ) -> Result<DynamicObject, Fail> {
        let repeat = if guarded {
            Repeat::OnlyIfNotSent
        } else {
            Repeat::Safe
        };
        self.req(deadline, repeat, |c| {
            let api = self.kinds(c);
            let body = body.clone();
            async move {
                api.patch(name, &PatchParams::default(), &Patch::Merge(&body))
                    .await
            }
        })
        .await
    }

    async fn create_kind(
        &self,
        deadline: Instant,
        name: &str,
        ann: &Updates,
        extra: Option<(&str, Value)>,
    ) -> Result<DynamicObject, Fail> {
        let annotations: Map<String, Value> = ann
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k.clone(), Value::String(v.clone()))))
            .collect();
        let ar = self.kind_resource();
        let mut body = json!({
            "apiVersion": ar.api_version,
            "kind": ar.kind,
            "metadata": {
                "name": name,
                "namespace": self.config.namespace,
                "labels": self.labels,
                "annotations": annotations,
            },
        });
        if let Some((field, value)) = extra {
            body[field] = value;
        }
        let obj: DynamicObject =
            serde_json::from_value(body).map_err(|e| Fail::Rejected(e.to_string()))?;
        if self.config.use_endpoints && name == self.object_name(Home::Config) {
            self.ensure_config_service(deadline).await;
        }
        self.req(deadline, Repeat::OnlyIfNotSent, |c| {
            let api = self.kinds(c);
            let obj = obj.clone();
            async move { api.create(&PostParams::default(), &obj).await }
        })
        .await
    }

    /// The metadata part of a patch: the cluster's labels, the annotation
    /// updates, and `resourceVersion` when the write is guarded.
    fn meta_patch(&self, updates: &Updates, rv: Option<&str>) -> Value {
        let ann: Map<String, Value> = updates
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().map_or(Value::Null, Value::String)))
            .collect();
        let mut meta = json!({"labels": self.labels, "annotations": ann});
        if let Some(rv) = rv {
            meta["resourceVersion"] = json!(rv);
        }
        json!({ "metadata": meta })
    }

    /// With `use_endpoints`, the config Endpoints needs a Service of the
    /// same name, or the endpoints controller may delete it (Patroni creates
    /// it the same way). Best effort: 409 (exists) and 403 are fine.
    async fn ensure_config_service(&self, deadline: Instant) {
        if !self.config.use_endpoints || self.config_service_done.load(Ordering::Relaxed) {
            return;
        }
        let name = self.object_name(Home::Config);
        let body = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": self.config.namespace, "labels": self.labels},
            "spec": {"clusterIP": "None"},
        });
        let Ok(svc) = serde_json::from_value::<DynamicObject>(body) else {
            return;
        };
        let r = self
            .req(deadline, Repeat::OnlyIfNotSent, |c| {
                let api = self.services(c);
                let svc = svc.clone();
                async move { api.create(&PostParams::default(), &svc).await }
            })
            .await;
        match r {
            Ok(_) => {
                self.config_service_done.store(true, Ordering::Relaxed);
            }
            Err(f) if f.is_status(409) => {
                self.config_service_done.store(true, Ordering::Relaxed);
            }
            Err(Fail::Rejected(d)) if d.starts_with("403") => {
                warn!("cannot create the Service {name} for the config Endpoints (forbidden): {d}");
                self.config_service_done.store(true, Ordering::Relaxed);
            }
            Err(f) => debug!(?f, "creating the config Service failed; will try again"),
        }
    }

    // ----- the leader record -----

    /// Reads the leader object and notes the record as seen now.
    async fn get_leader(&self, deadline: Instant) -> Result<Option<DynamicObject>, Fail> {
        let obj = self
            .get_kind(deadline, &self.object_name(Home::Leader))
            .await?;
        self.observe_leader(obj.as_ref(), Instant::now());
        Ok(obj)
    }

    fn observe_leader(&self, obj: Option<&DynamicObject>, at: Instant) {
        let mut st = self.state();
        match obj {
            Some(o) => {
                let rec = LeaderRecord::from_annotations(&annotations(o));
                st.leader_seen.observe(&(), &rec, at);
            }
            None => st.leader_seen.clear(),
        }
    }

    /// When the record stops being valid for this reader: `ttl` after it
    /// was first seen in this form.
    fn leader_expiry(&self, rec: &LeaderRecord, now: Instant) -> Instant {
        let since = self.state().leader_seen.since(&(), rec).unwrap_or(now);
        since + rec.ttl_or(self.timing().ttl)
    }

    fn new_record(&self, current: &LeaderRecord, keep_acquire: bool) -> LeaderRecord {
        let now = record::iso_now();
        let mine = current.holder() == Some(self.name.as_str());
        let transitions = if current.is_empty() {
            0
        } else {
            current.transitions() + u64::from(!mine)
        };
        let acquire_time = if mine && keep_acquire {
            current.acquire_time.clone().unwrap_or_else(|| now.clone())
        } else {
            now.clone()
        };
        // A renewal must change the record, or readers would not see it.
        let renew_time = if current.renew_time.as_deref() == Some(now.as_str()) {
            format!("{}0", now.trim_end_matches("+00:00")) + "+00:00"
        } else {
            now
        };
        LeaderRecord {
            leader: Some(self.name.clone()),
            acquire_time: Some(acquire_time),
            renew_time: Some(renew_time),
            ttl: Some(self.ttl_secs().to_string()),
            transitions: Some(transitions.to_string()),
        }
    }

    fn lock_lease(&self) -> LockLease {
        LockLease {
            valid_for: Duration::from_secs(self.ttl_secs()),
        }
    }

    /// The leader Endpoints' subsets for this node as leader, when they must
    /// change (`use_endpoints` only; `None`: leave them). Our Pod is read
    /// only when the subsets must be (re)written or our IP is not known yet.
    async fn leader_subsets(
        &self,
        deadline: Instant,
        current: Option<&DynamicObject>,
    ) -> Option<Value> {
        if !self.config.use_endpoints {
            return None;
        }
        let ports: Vec<Value> = self
            .config
            .ports
            .iter()
            .map(|p| {
                let mut v = json!({"port": p.port});
                if let Some(n) = &p.name {
                    v["name"] = json!(n);
                }
                if let Some(proto) = &p.protocol {
                    v["protocol"] = json!(proto);
                }
                v
            })
            .collect();
        let known = self
            .config
            .pod_ip
            .clone()
            .or_else(|| lock(&self.pod_ip).clone());
        if known
            .as_deref()
            .is_some_and(|ip| subsets_match(current, ip, &ports))
        {
            return None;
        }
        let pod = self
            .req(deadline, Repeat::Safe, |c| {
                let api = self.pods(c);
                async move { api.get_opt(&self.name).await }
            })
            .await
            .ok()
            .flatten();
        // Without an IP (none configured, none on the Pod yet) the subsets
        // are left alone, as Patroni does.
        let ip = self.config.pod_ip.clone().or_else(|| {
            pod.as_ref()
                .and_then(|p| p.data.pointer("/status/podIP"))
                .and_then(Value::as_str)
                .map(String::from)
        })?;
        *lock(&self.pod_ip) = Some(ip.clone());
        if subsets_match(current, &ip, &ports) {
            return None;
        }
        let mut address = json!({"ip": ip});
        if let Some(p) = &pod {
            address["targetRef"] = json!({
                "kind": "Pod",
                "namespace": self.config.namespace,
                "name": self.name,
                "uid": p.metadata.uid,
                "resourceVersion": p.metadata.resource_version,
            });
            if let Some(h) = p.data.pointer("/spec/hostname").and_then(Value::as_str) {
                address["hostname"] = json!(h);
            }
            if let Some(n) = p.data.pointer("/spec/nodeName").and_then(Value::as_str) {
                address["nodeName"] = json!(n);
            }
        }
        Some(json!([{"addresses": [address], "ports": ports}]))
    }

    /// Writes our leader record (guarded by `rv` when given), creating the
    /// object when there is none. Records the attempt as ours first, so a
    /// write whose answer is lost is still recognised.
    async fn write_leader(
        &self,
        deadline: Instant,
        current: Option<&DynamicObject>,
        rec: &LeaderRecord,
        guarded: bool,
        sent: Instant,
    ) -> Result<DynamicObject, Fail> {
        let updates: Updates = rec
            .annotations()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let subsets = self.leader_subsets(deadline, current).await;
        self.state().own.sending(rec, sent);
        let name = self.object_name(Home::Leader);
        let r = match current {
            None => {
                self.create_kind(deadline, &name, &updates, subsets.map(|s| ("subsets", s)))
                    .await
            }
            Some(o) => {
                let rv = rv(o);
                let mut body = self.meta_patch(&updates, guarded.then_some(rv.as_str()));
                if let Some(s) = subsets {
                    body["subsets"] = s;
                }
                self.patch_kind(deadline, &name, body, guarded).await
            }
        };
        match &r {
            Ok(obj) => {
                let mut st = self.state();
                st.own.confirmed(rec.clone(), sent);
                let applied = LeaderRecord::from_annotations(&annotations(obj));
                st.leader_seen.observe(&(), &applied, Instant::now());
            }
            Err(f) if f.is_status(409) => self.state().own.refused(rec),
            Err(_) => {}
        }
        r
    }

    fn not_owner_of(&self, obj: Option<&DynamicObject>) -> DcsError {
        let holder = obj
            .map(|o| LeaderRecord::from_annotations(&annotations(o)))
            .and_then(|r| r.holder().map(String::from));
        DcsError::not_owner("leader", holder)
    }

    async fn do_acquire(&self, deadline: Instant, sent: Instant) -> Result<LockLease, DcsError> {
        let op = "acquire_leader";
        let current = self
            .get_leader(deadline)
            .await
            .map_err(|f| f.into_dcs(op))?;
        let rec = current
            .as_ref()
            .map(|o| LeaderRecord::from_annotations(&annotations(o)))
            .unwrap_or_default();
        if let Some(holder) = rec.holder() {
            let now = Instant::now();
            if now < self.leader_expiry(&rec, now) {
                return Err(DcsError::not_owner("leader", Some(holder.to_string())));
            }
            info!(
                holder,
                "the leader record has not changed for its ttl: taking over"
            );
        }
        let new = self.new_record(&rec, true);
        match self
            .write_leader(deadline, current.as_ref(), &new, true, sent)
            .await
        {
            Ok(_) => {
                info!("took the leader lock");
                Ok(self.lock_lease())
            }
            Err(f) if f.is_status(409) => {
                // Lost the race (or the object appeared meanwhile): name the winner.
                let now = self
                    .get_leader(deadline)
                    .await
                    .map_err(|f| f.into_dcs(op))?;
                Err(self.not_owner_of(now.as_ref()))
            }
            Err(f) => Err(f.into_dcs(op)),
        }
    }

    async fn do_renew(&self, deadline: Instant, sent: Instant) -> Result<LockLease, DcsError> {
        let op = "renew_leader";
        for _ in 0..MAX_ATTEMPTS {
            let current = self
                .get_leader(deadline)
                .await
                .map_err(|f| f.into_dcs(op))?;
            let Some(obj) = current.as_ref() else {
                return Err(DcsError::not_owner("leader", None));
            };
            let rec = LeaderRecord::from_annotations(&annotations(obj));
            if rec.holder() != Some(self.name.as_str()) {
                self.state().own.clear();
                return Err(self.not_owner_of(current.as_ref()));
            }
            let Some(written) = self.state().own.sent_at(&rec) else {
                // Our name, but not a record this client wrote: a namesake's
                // (or a previous run's) lock, never silently adopted.
                return Err(DcsError::not_owner("leader", Some(self.name.clone())));
            };
            if Instant::now() >= written + rec.ttl_or(self.timing().ttl) {
                warn!(
                    "our leader record was not renewed within its ttl: other nodes may have judged it expired"
                );
                self.state().own.clear();
                return Err(DcsError::SessionExpired {
                    what: "leader record",
                });
            }
            let new = self.new_record(&rec, true);
            match self
                .write_leader(deadline, current.as_ref(), &new, true, sent)
                .await
            {
                Ok(_) => return Ok(self.lock_lease()),
                // Another annotation changed (a status write): read again.
                Err(f) if f.is_status(409) => continue,
                Err(f) if f.is_status(404) => return Err(DcsError::not_owner("leader", None)),
                Err(f) => return Err(f.into_dcs(op)),
            }
        }
        Err(DcsError::unreachable(
            op,
            "the leader object kept changing under us",
        ))
    }

    async fn do_release(&self, deadline: Instant) -> Result<(), DcsError> {
        let op = "release_leader";
        for _ in 0..MAX_ATTEMPTS {
            let current = self
                .get_leader(deadline)
                .await
                .map_err(|f| f.into_dcs(op))?;
            let Some(obj) = current.as_ref() else {
                return Err(DcsError::not_owner("leader", None));
            };
            let rec = LeaderRecord::from_annotations(&annotations(obj));
            if rec.holder() != Some(self.name.as_str()) {
                return Err(self.not_owner_of(current.as_ref()));
            }
            let mut body =
                self.meta_patch(&vec![(record::LEADER.to_string(), None)], Some(&rv(obj)));
            if self.config.use_endpoints {
                body["subsets"] = json!([]);
            }
            match self
                .patch_kind(deadline, &self.object_name(Home::Leader), body, true)
                .await
            {
                Ok(o) => {
                    let mut st = self.state();
                    st.own.clear();
                    st.leader_seen.observe(
                        &(),
                        &LeaderRecord::from_annotations(&annotations(&o)),
                        Instant::now(),
                    );
                    info!("released the leader lock");
                    return Ok(());
                }
                Err(f) if f.is_status(409) => continue,
                Err(f) if f.is_status(404) => return Err(DcsError::not_owner("leader", None)),
                Err(f) => return Err(f.into_dcs(op)),
            }
        }
        Err(DcsError::unreachable(
            op,
            "the leader object kept changing under us",
        ))
    }

    /// Empties the leader record if it still names us at the
    /// `resourceVersion` `lock` was read at (a PATCH guarded by it). For the
    /// fence guard: the record is judged by readers, so another client of
    /// the same member may release it like its holder would.
    async fn do_release_at(&self, deadline: Instant, lock: &LeaderLock) -> Result<(), DcsError> {
        let op = "release_leader";
        if lock.name != self.name {
            return Err(DcsError::not_owner("leader", Some(lock.name.clone())));
        }
        let current = self
            .get_leader(deadline)
            .await
            .map_err(|f| f.into_dcs(op))?;
        let Some(obj) = current.as_ref() else {
            return Err(DcsError::not_owner("leader", None));
        };
        let rec = LeaderRecord::from_annotations(&annotations(obj));
        if rec.holder() != Some(self.name.as_str()) {
            return Err(self.not_owner_of(current.as_ref()));
        }
        if token(obj) != lock.version {
            return Err(DcsError::conflict("leader"));
        }
        let mut body = self.meta_patch(&vec![(record::LEADER.to_string(), None)], Some(&rv(obj)));
        if self.config.use_endpoints {
            body["subsets"] = json!([]);
        }
        match self
            .patch_kind(deadline, &self.object_name(Home::Leader), body, true)
            .await
        {
            Ok(_) => {
                info!("released the leader lock on behalf of this member");
                Ok(())
            }
            Err(f) if f.is_status(409) => Err(DcsError::conflict("leader")),
            Err(f) if f.is_status(404) => Err(DcsError::not_owner("leader", None)),
            Err(f) => Err(f.into_dcs(op)),
        }
    }

    /// Writes our record in place of the leader record `lock` was read
    /// from, guarded by that `resourceVersion`: the write is refused (409)
    /// if anything on the leader object changed since the read. Readers
    /// judge our record from when they first see it, which is after this
    /// call was sent, so it lives at least `ttl` from then, as after
    /// `acquire_leader`.
    async fn do_take_from(
        &self,
        deadline: Instant,
        sent: Instant,
        lock: &LeaderLock,
    ) -> Result<LockLease, DcsError> {
        let op = "take_leader_from";
        let current = self
            .get_leader(deadline)
            .await
            .map_err(|f| f.into_dcs(op))?;
        let Some(obj) = current.as_ref() else {
            return Err(DcsError::conflict("leader"));
        };
        let rec = LeaderRecord::from_annotations(&annotations(obj));
        if token(obj) != lock.version || rec.holder().is_none() {
            debug!(
                read = %lock.version,
                current = rv(obj),
                "leader record changed since it was read: not taken over"
            );
            return Err(DcsError::conflict("leader"));
        }
        let new = self.new_record(&rec, true);
        match self
            .write_leader(deadline, current.as_ref(), &new, true, sent)
            .await
        {
            Ok(_) => {
                info!(
                    replaced = ?rec.holder(),
                    version = %lock.version,
                    "took the leader record over by compare-and-set"
                );
                Ok(self.lock_lease())
            }
            Err(f) if f.is_status(409) || f.is_status(404) => Err(DcsError::conflict("leader")),
            Err(f) => Err(f.into_dcs(op)),
        }
    }

    /// Empties the leader record `lock` was read from, guarded by that
    /// `resourceVersion`, whatever it names. No object, or a record naming
    /// nobody, is a lock already gone.
    async fn do_remove_at(&self, deadline: Instant, lock: &LeaderLock) -> Result<(), DcsError> {
        let op = "remove_leader_at";
        let current = self
            .get_leader(deadline)
            .await
            .map_err(|f| f.into_dcs(op))?;
        let Some(obj) = current.as_ref() else {
            return Ok(());
        };
        let rec = LeaderRecord::from_annotations(&annotations(obj));
        let Some(holder) = rec.holder() else {
            debug!("leader record already empty");
            return Ok(());
        };
        if token(obj) != lock.version {
            debug!(
                read = %lock.version,
                current = rv(obj),
                holder,
                "leader record changed since it was read: not removed"
            );
            return Err(DcsError::conflict("leader"));
        }
        let mine = holder == self.name;
        let holder = holder.to_string();
        let mut body = self.meta_patch(&vec![(record::LEADER.to_string(), None)], Some(&rv(obj)));
        if self.config.use_endpoints {
            body["subsets"] = json!([]);
        }
        match self
            .patch_kind(deadline, &self.object_name(Home::Leader), body, true)
            .await
        {
            Ok(o) => {
                let mut st = self.state();
                if mine {
                    st.own.clear();
                }
                st.leader_seen.observe(
                    &(),
                    &LeaderRecord::from_annotations(&annotations(&o)),
                    Instant::now(),
                );
                drop(st);
                info!(holder, version = %lock.version, "removed the leader record by compare-and-set");
                Ok(())
            }
            Err(f) if f.is_status(409) => Err(DcsError::conflict("leader")),
            Err(f) if f.is_status(404) => Ok(()),
            Err(f) => Err(f.into_dcs(op)),
        }
    }

    // ----- members -----

    /// Whether this client holds the lock as far as it knows (for the role label).
    fn holds_lock(&self) -> bool {
        let st = self.state();
        st.own
            .confirmed
            .as_ref()
            .is_some_and(|(rec, sent)| Instant::now() < *sent + rec.ttl_or(self.timing().ttl))
    }

    /// The Pod labels Patroni sets for this status: the role label (and
    /// `tmp_role_label`, `bootstrap_labels`); `None` removes a label.
    fn pod_labels(&self, data: &MemberData) -> Map<String, Value> {
        let role = data.role.as_ref();
        let running = data.state == Some(PgState::Running);
        let (label, tmp) = if self.holds_lock() {
            let v = if role == Some(&Role::StandbyLeader) {
                &self.config.standby_leader_label_value
            } else {
                &self.config.leader_label_value
            };
            (Some(v.clone()), Some("primary".to_string()))
        } else if running && role.is_some_and(|r| !r.is_primary()) {
            let r = role.map(|r| r.as_str().to_string()).unwrap_or_default();
            let v = if r == "replica" {
                self.config.follower_label_value.clone()
            } else {
                r.clone()
            };
            (Some(v), Some(r))
        } else {
            (None, None)
        };
        let label_value = |v: Option<String>| match v {
            Some(v) if valid_label_value(&v) => Value::String(v),
            Some(v) => {
                warn!(
                    value = v,
                    "not a valid label value: the role label is removed instead"
                );
                Value::Null
            }
            None => Value::Null,
        };
        let mut labels = Map::new();
        labels.insert(self.config.role_label.clone(), label_value(label));
        if let Some(t) = &self.config.tmp_role_label {
            labels.insert(t.clone(), label_value(tmp));
        }
        if !self.config.bootstrap_labels.is_empty() {
            let bootstrapping = matches!(
                data.state,
                Some(
                    PgState::InitializingNewCluster
                        | PgState::CustomBootstrap
                        | PgState::StartingAfterCustomBootstrap
                        | PgState::CreatingReplica
                )
            );
            for (k, v) in &self.config.bootstrap_labels {
                labels.insert(
                    k.clone(),
                    if bootstrapping {
                        Value::String(v.clone())
                    } else {
                        Value::Null
                    },
                );
            }
        }
        labels
    }

    // ----- shared keys -----

    async fn do_write(
        &self,
        deadline: Instant,
        key: SharedKey,
        value: &str,
        expect: &Expect,
    ) -> Result<Version, DcsError> {
        let op = "write";
        let name = self.object_name(values::home(key));
        for _ in 0..MAX_ATTEMPTS {
            let current = self
                .get_kind(deadline, &name)
                .await
                .map_err(|f| f.into_dcs(op))?;
            let Some(obj) = current else {
                if matches!(expect, Expect::Version(_)) {
                    return Err(DcsError::conflict(key));
                }
                let updates = values::to_annotations(key, value, &BTreeMap::new())?;
                match self.create_kind(deadline, &name, &updates, None).await {
                    Ok(o) => return Ok(token(&o)),
                    Err(f) if f.is_status(409) => continue,
                    Err(f) => return Err(f.into_dcs(op)),
                }
            };
            let a = annotations(&obj);
            let updates = values::to_annotations(key, value, &a)?;
            let guard = match expect {
                Expect::Any => None,
                Expect::Absent => {
                    if values::present(key, &a) {
                        return Err(DcsError::conflict(key));
                    }
                    Some(rv(&obj))
                }
                Expect::Version(v) => {
                    if token(&obj) != *v || !values::present(key, &a) {
                        return Err(DcsError::conflict(key));
                    }
                    Some(rv(&obj))
                }
            };
            let body = self.meta_patch(&updates, guard.as_deref());
            match self
                .patch_kind(deadline, &name, body, guard.is_some())
                .await
            {
                Ok(o) => return Ok(token(&o)),
                Err(f) if f.is_status(409) => match expect {
                    // Someone changed the object: maybe only a sibling key.
                    Expect::Absent => continue,
                    _ => return Err(DcsError::conflict(key)),
                },
                Err(f) if f.is_status(404) => match expect {
                    Expect::Version(_) => return Err(DcsError::conflict(key)),
                    _ => continue,
                },
                Err(f) => return Err(f.into_dcs(op)),
            }
        }
        Err(DcsError::conflict(key))
    }

    async fn do_delete(
        &self,
        deadline: Instant,
        key: SharedKey,
        expect: &Expect,
    ) -> Result<(), DcsError> {
        let op = "delete";
        let name = self.object_name(values::home(key));
        let current = self
            .get_kind(deadline, &name)
            .await
            .map_err(|f| f.into_dcs(op))?;
        let Some(obj) = current else {
            return match expect {
                Expect::Version(_) => Err(DcsError::conflict(key)),
                _ => Ok(()),
            };
        };
        let a = annotations(&obj);
        let present = values::present(key, &a);
        let guard = match expect {
            Expect::Any if !present => return Ok(()),
            Expect::Any => None,
            Expect::Absent if present => return Err(DcsError::conflict(key)),
            Expect::Absent => return Ok(()),
            Expect::Version(v) => {
                if token(&obj) != *v || !present {
                    return Err(DcsError::conflict(key));
                }
                Some(rv(&obj))
            }
        };
        let body = self.meta_patch(&values::deletion(key, &a), guard.as_deref());
        match self
            .patch_kind(deadline, &name, body, guard.is_some())
            .await
        {
            Ok(_) => Ok(()),
            Err(f) if f.is_status(409) => Err(DcsError::conflict(key)),
            Err(f) if f.is_status(404) => match expect {
                Expect::Version(_) => Err(DcsError::conflict(key)),
                _ => Ok(()),
            },
            Err(f) => Err(f.into_dcs(op)),
        }
    }

    // ----- load -----

    fn build_cluster(
        &self,
        objects: Vec<DynamicObject>,
        pods: Vec<DynamicObject>,
        at: Instant,
    ) -> Cluster {
        let by_name = |home: Home| {
            let name = self.object_name(home);
            objects
                .iter()
                .find(|o| o.metadata.name.as_deref() == Some(name.as_str()))
        };
        let mut entries = Vec::new();
        let mut problems = Vec::new();
        let mut shared = |key: SharedKey, obj: Option<&DynamicObject>| {
            let Some(o) = obj else { return };
            match values::read(key, &annotations(o)) {
                None => {}
                Some(Ok(text)) => entries.push(RawEntry {
                    key: key.cluster_key(),
                    value: text.into_bytes(),
                    version: token(o),
                    owner: None,
                }),
                Some(Err(reason)) => problems.push(KeyProblem {
                    key: key.cluster_key().relative(),
                    version: Some(token(o)),
                    reason,
                }),
            }
        };
        let config = by_name(Home::Config);
        let leader = by_name(Home::Leader);
        for key in [SharedKey::Initialize, SharedKey::Config, SharedKey::History] {
            shared(key, config);
        }
        for key in [SharedKey::Status, SharedKey::Failsafe] {
            shared(key, leader);
        }
        shared(SharedKey::Failover, by_name(Home::Failover));
        shared(SharedKey::Sync, by_name(Home::Sync));

        let mut st = self.state();
        // The leader: held while its record changed within ttl of when we
        // first saw it.
        match leader {
            Some(o) => {
                let rec = LeaderRecord::from_annotations(&annotations(o));
                let since = st.leader_seen.observe(&(), &rec, at);
                if let Some(holder) = rec.holder() {
                    if at < since + rec.ttl_or(self.timing().ttl) {
                        entries.push(RawEntry {
                            key: ClusterKey::Leader,
                            value: holder.as_bytes().to_vec(),
                            version: token(o),
                            owner: None,
                        });
                    } else {
                        debug!(
                            holder,
                            "leader record unchanged for its ttl: the cluster is unlocked"
                        );
                    }
                }
            }
            None => st.leader_seen.clear(),
        }
        // Members: Pods with a `status`. A pgha member (heartbeat bound to
        // its status) is present while its heartbeat moves; any other status
        // is present while its Pod exists, as Patroni has it.
        let mut alive = Vec::new();
        for p in &pods {
            let Some(name) = p.metadata.name.clone() else {
                continue;
            };
            let a = annotations(p);
            let Some(status) = a.get("status") else {
                continue;
            };
            let heartbeat = a.get(record::HEARTBEAT).filter(|h| {
                Heartbeat::parse(h).is_some_and(|hb| hb.status == record::digest(status))
            });
            if let Some(hb_text) = heartbeat {
                let ttl = Heartbeat::parse(hb_text)
                    .map(|h| Duration::from_secs(h.ttl.max(1)))
                    .unwrap_or(self.timing().ttl);
                let since = st
                    .members_seen
                    .observe(&name, &(status.clone(), hb_text.clone()), at);
                alive.push(name.clone());
                if at >= since + ttl {
                    debug!(
                        member = name,
                        "member heartbeat unchanged for its ttl: left out"
                    );
                    continue;
                }
            }
            entries.push(RawEntry {
                key: ClusterKey::Member(name),
                value: status.clone().into_bytes(),
                version: token(p),
                owner: None,
            });
        }
        st.members_seen.retain(|k| alive.contains(k));
        drop(st);

        let mut cluster = Cluster::from_entries(entries, leader_token(leader));
        cluster.problems.extend(problems);
        cluster.problems.sort_by(|a, b| a.key.cmp(&b.key));
        cluster
    }

    // ----- watch -----

    async fn do_watch(
        &self,
        cursor: &Version,
        timeout: Duration,
    ) -> Result<WatchOutcome, DcsError> {
        let op = "watch_leader";
        let start = Instant::now();
        let deadline = start + timeout;
        let retry_timeout = self.timing().retry_timeout;
        let init_deadline = deadline.min(start + retry_timeout);
        let unanswered = || {
            if init_deadline >= deadline {
                Ok(WatchOutcome::TimedOut)
            } else {
                Err(DcsError::unreachable(
                    op,
                    format!("no answer within retry_timeout ({retry_timeout:?})"),
                ))
            }
        };
        let client = match tokio::time::timeout_at(init_deadline, self.client()).await {
            Ok(Ok(c)) => c,
            Ok(Err(f)) => return Err(f.into_dcs(op)),
            Err(_) => return unanswered(),
        };
        let secs = u32::try_from(timeout.as_secs().saturating_add(1)).unwrap_or(u32::MAX);
        let wc = watcher::Config::default()
            .fields(&format!("metadata.name={}", self.object_name(Home::Leader)))
            .list_semantic(watcher::ListSemantic::MostRecent)
            .timeout(secs.max(1));
        let mut stream = watcher::watcher(self.kinds(client), wc).boxed();

        // The current state first (a list), compared with the cursor.
        let mut listing: Option<DynamicObject> = None;
        let mut backoff: Option<Instant> = None;
        let snapshot = loop {
            let ev = tokio::select! {
                ev = stream.next(), if backoff.is_none() => ev,
                _ = tokio::time::sleep_until(backoff.unwrap_or(init_deadline)), if backoff.is_some() => {
                    backoff = None;
                    continue;
                }
                _ = tokio::time::sleep_until(init_deadline) => return unanswered(),
            };
            match ev {
                Some(Ok(watcher::Event::Init)) => listing = None,
                Some(Ok(watcher::Event::InitApply(o))) => listing = Some(o),
                Some(Ok(watcher::Event::InitDone)) => break listing.take(),
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    debug!(error = %e, "listing the leader object failed; trying again");
                    if let Some(rejected) = watch_rejection(&e) {
                        return Err(DcsError::rejected(op, rejected));
                    }
                    backoff = Some(Instant::now() + RETRY_PAUSE * 2);
                }
                None => return unanswered(),
            }
        };
        let now = Instant::now();
        self.observe_leader(snapshot.as_ref(), now);
        if leader_token(snapshot.as_ref()) != *cursor {
            return Ok(WatchOutcome::Changed);
        }
        // A held record expires for us ttl after we first saw it: that is a
        // change of the lock even though nothing is written.
        let expiry = snapshot.as_ref().and_then(|o| {
            let rec = LeaderRecord::from_annotations(&annotations(o));
            rec.holder()?;
            let at = self.leader_expiry(&rec, now);
            (at > now).then_some(at)
        });

        let mut relist: Option<DynamicObject> = None;
        loop {
            let ev = tokio::select! {
                ev = stream.next(), if backoff.is_none() => ev,
                _ = tokio::time::sleep_until(backoff.unwrap_or(deadline)), if backoff.is_some() => {
                    backoff = None;
                    continue;
                }
                _ = tokio::time::sleep_until(expiry.unwrap_or(deadline)), if expiry.is_some() => {
                    debug!("the leader record expired while watching");
                    return Ok(WatchOutcome::Changed);
                }
                _ = tokio::time::sleep_until(deadline) => return Ok(WatchOutcome::TimedOut),
            };
            match ev {
                Some(Ok(watcher::Event::Apply(o))) => {
                    if token(&o) != *cursor {
                        self.observe_leader(Some(&o), Instant::now());
                        return Ok(WatchOutcome::Changed);
                    }
                }
                Some(Ok(watcher::Event::Delete(_))) => {
                    self.observe_leader(None, Instant::now());
                    return Ok(WatchOutcome::Changed);
                }
                // A relist (after 410 Gone): compare the new state.
                Some(Ok(watcher::Event::Init)) => relist = None,
                Some(Ok(watcher::Event::InitApply(o))) => relist = Some(o),
                Some(Ok(watcher::Event::InitDone)) => {
                    if leader_token(relist.as_ref()) != *cursor {
                        self.observe_leader(relist.as_ref(), Instant::now());
                        return Ok(WatchOutcome::Changed);
                    }
                }
                Some(Err(e)) => {
                    debug!(error = %e, "leader watch interrupted; resuming");
                    backoff = Some(Instant::now() + RETRY_PAUSE * 2);
                }
                None => backoff = Some(deadline),
            }
        }
    }
}

/// Whether the Endpoints' subsets already point at `ip` with `ports`
/// (a port's protocol defaults to TCP).
fn subsets_match(current: Option<&DynamicObject>, ip: &str, ports: &[Value]) -> bool {
    let Some(s) = current
        .and_then(|o| o.data.get("subsets"))
        .and_then(Value::as_array)
    else {
        return false;
    };
    let proto = |v: &Value| {
        v.get("protocol")
            .and_then(Value::as_str)
            .unwrap_or("TCP")
            .to_string()
    };
    s.len() == 1
        && s[0]["addresses"]
            .as_array()
            .is_some_and(|a| a.len() == 1 && a[0]["ip"] == json!(ip))
        && s[0]["ports"].as_array().is_some_and(|have| {
            have.len() == ports.len()
                && ports.iter().all(|want| {
                    have.iter().any(|h| {
                        h["port"] == want["port"]
                            && h.get("name") == want.get("name")
                            && proto(h) == proto(want)
                    })
                })
        })
}

/// A watch failure that retrying cannot fix (RBAC, configuration).
fn watch_rejection(e: &watcher::Error) -> Option<String> {
    let inner = match e {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => e,
        _ => return None,
    };
    match Fail::from_kube(inner, &[]) {
        Fail::Rejected(d) => Some(d),
        _ => None,
    }
}

#[async_trait]
impl Dcs for K8sDcs {
    fn member_name(&self) -> &str {
        &self.name
    }

    fn layout(&self) -> &KeyLayout {
        &self.layout
    }

    fn set_timing(&self, timing: Timing) {
        *lock(&self.timing) = timing;
    }

    async fn load(&self) -> Result<Cluster, DcsError> {
        self.bounded("load", |deadline| async move {
            let lp = ListParams::default().labels(&self.selector);
            let kinds = self.req(deadline, Repeat::Safe, |c| {
                let api = self.kinds(c);
                let lp = lp.clone();
                async move { api.list(&lp).await }
            });
            let pods = self.req(deadline, Repeat::Safe, |c| {
                let api = self.pods(c);
                let lp = lp.clone();
                async move { api.list(&lp).await }
            });
            let (kinds, pods) = tokio::try_join!(kinds, pods).map_err(|f| f.into_dcs("load"))?;
            Ok(self.build_cluster(kinds.items, pods.items, Instant::now()))
        })
        .await
    }

    async fn acquire_leader(&self) -> Result<LockLease, DcsError> {
        let sent = Instant::now();
        self.bounded("acquire_leader", |d| self.do_acquire(d, sent))
            .await
    }

    async fn renew_leader(&self) -> Result<LockLease, DcsError> {
        let sent = Instant::now();
        self.bounded("renew_leader", |d| self.do_renew(d, sent))
            .await
    }

    async fn release_leader(&self) -> Result<(), DcsError> {
        self.bounded("release_leader", |d| self.do_release(d)).await
    }

    async fn release_leader_at(&self, lock: &LeaderLock) -> Result<(), DcsError> {
        self.bounded("release_leader", |d| self.do_release_at(d, lock))
            .await
    }

    /// Nothing here is a lease: a leader record is alive while readers see
    /// it change within its `ttl`, and `load` reports only such records, all
    /// with `owner: None`. An unowned record means nothing on this engine.
    fn locks_have_owners(&self) -> bool {
        false
    }

    async fn take_leader_from(&self, lock: &LeaderLock) -> Result<LockLease, DcsError> {
        let sent = Instant::now();
        self.bounded("take_leader_from", |d| self.do_take_from(d, sent, lock))
            .await
    }

    async fn remove_leader_at(&self, lock: &LeaderLock) -> Result<(), DcsError> {
        self.bounded("remove_leader_at", |d| self.do_remove_at(d, lock))
            .await
    }

    async fn touch_member(&self, data: &MemberData) -> Result<(), DcsError> {
        let status = pgha_core::dcs::to_json(data)?;
        let heartbeat = Heartbeat {
            renew_time: record::iso_now(),
            ttl: self.ttl_secs(),
            status: record::digest(&status),
        }
        .to_text();
        let labels = self.pod_labels(data);
        let body = json!({
            "metadata": {
                "labels": labels,
                "annotations": {"status": status, record::HEARTBEAT: heartbeat},
            }
        });
        self.bounded("touch_member", |deadline| async move {
            self.ensure_config_service(deadline).await;
            let r = self
                .req(deadline, Repeat::Safe, |c| {
                    let api = self.pods(c);
                    let body = body.clone();
                    async move {
                        api.patch(&self.name, &PatchParams::default(), &Patch::Merge(&body))
                            .await
                    }
                })
                .await;
            match r {
                Ok(_) => Ok(()),
                Err(f) if f.is_status(404) => Err(DcsError::rejected(
                    "touch_member",
                    format!(
                        "no Pod {:?} in namespace {:?}: on Kubernetes a member is its Pod, and the member name must be the Pod's name",
                        self.name, self.config.namespace
                    ),
                )),
                Err(f) => Err(f.into_dcs("touch_member")),
            }
        })
        .await
    }

    async fn write(
        &self,
        key: SharedKey,
        value: &str,
        expect: Expect,
    ) -> Result<Version, DcsError> {
        self.bounded("write", |d| async move {
            self.do_write(d, key, value, &expect).await
        })
        .await
    }

    async fn delete(&self, key: SharedKey, expect: Expect) -> Result<(), DcsError> {
        self.bounded("delete", |d| async move {
            self.do_delete(d, key, &expect).await
        })
        .await
    }

    async fn delete_cluster(&self) -> Result<(), DcsError> {
        self.bounded("delete_cluster", |deadline| async move {
            let op = "delete_cluster";
            let lp = ListParams::default().labels(&self.selector);
            self.req(deadline, Repeat::Safe, |c| {
                let api = self.kinds(c);
                let lp = lp.clone();
                async move { api.delete_collection(&DeleteParams::default(), &lp).await }
            })
            .await
            .map_err(|f| f.into_dcs(op))?;
            if self.config.use_endpoints {
                let name = self.object_name(Home::Config);
                let r = self
                    .req(deadline, Repeat::Safe, |c| {
                        let api = self.services(c);
                        let name = name.clone();
                        async move { api.delete(&name, &DeleteParams::default()).await }
                    })
                    .await;
                match r {
                    Ok(_) => {}
                    Err(f) if f.is_status(404) => {}
                    Err(f) => return Err(f.into_dcs(op)),
                }
                self.config_service_done.store(false, Ordering::Relaxed);
            }
            // Members are Pods, which are not ours to delete: their member
            // record (status, heartbeat, role labels) is.
            let pods = self
                .req(deadline, Repeat::Safe, |c| {
                    let api = self.pods(c);
                    let lp = lp.clone();
                    async move { api.list(&lp).await }
                })
                .await
                .map_err(|f| f.into_dcs(op))?;
            let mut labels = Map::new();
            labels.insert(self.config.role_label.clone(), Value::Null);
            if let Some(t) = &self.config.tmp_role_label {
                labels.insert(t.clone(), Value::Null);
            }
            let body = json!({"metadata": {
                "labels": labels,
                "annotations": {"status": null, record::HEARTBEAT: null},
            }});
            for p in pods.items {
                let a = annotations(&p);
                if !a.contains_key("status") && !a.contains_key(record::HEARTBEAT) {
                    continue;
                }
                let Some(name) = p.metadata.name.clone() else {
                    continue;
                };
                let r = self
                    .req(deadline, Repeat::Safe, |c| {
                        let api = self.pods(c);
                        let body = body.clone();
                        let name = name.clone();
                        async move {
                            api.patch(&name, &PatchParams::default(), &Patch::Merge(&body))
                                .await
                        }
                    })
                    .await;
                match r {
                    Ok(_) => {}
                    Err(f) if f.is_status(404) => {}
                    Err(f) => return Err(f.into_dcs(op)),
                }
            }
            let mut st = self.state();
            st.leader_seen.clear();
            st.members_seen.clear();
            st.own.clear();
            Ok(())
        })
        .await
    }

    async fn watch_leader(
        &self,
        cursor: &Version,
        timeout: Duration,
    ) -> Result<WatchOutcome, DcsError> {
        // The watch is bounded by its own timeout (plus the first list's
        // retry_timeout when that is longer).
        let bound = timeout.max(self.timing().retry_timeout) + Duration::from_millis(200);
        match tokio::time::timeout(bound, self.do_watch(cursor, timeout)).await {
            Ok(r) => r,
            Err(_) => Ok(WatchOutcome::TimedOut),
        }
    }
}
