//! The emulator's storage: objects by resource, namespace and name, one
//! global `resourceVersion` counter, and a bounded history of changes that
//! watches replay from.
//!
//! Invariants:
//! - every change that modifies an object takes the next `resourceVersion`
//!   and appends exactly one event to the history, in version order;
//! - a write that would leave the object unchanged takes no version and
//!   appends no event (kube-apiserver skips no-op updates);
//! - `compacted` is the newest version whose events are no longer kept: a
//!   watch from an older version is answered `410 Gone`.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};

use crate::error::ApiError;

/// The resource types the emulator serves, all in the core (`v1`) group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    ConfigMaps,
    Endpoints,
    Pods,
    Services,
}

impl Resource {
    /// The resource type named in a URL (`configmaps`).
    pub fn from_plural(plural: &str) -> Option<Resource> {
        Some(match plural {
            "configmaps" => Resource::ConfigMaps,
            "endpoints" => Resource::Endpoints,
            "pods" => Resource::Pods,
            "services" => Resource::Services,
            _ => return None,
        })
    }

    pub fn plural(self) -> &'static str {
        match self {
            Resource::ConfigMaps => "configmaps",
            Resource::Endpoints => "endpoints",
            Resource::Pods => "pods",
            Resource::Services => "services",
        }
    }

    /// The `kind` of one object.
    pub fn kind(self) -> &'static str {
        match self {
            Resource::ConfigMaps => "ConfigMap",
            Resource::Endpoints => "Endpoints",
            Resource::Pods => "Pod",
            Resource::Services => "Service",
        }
    }

    /// The `kind` of a list of them.
    pub fn list_kind(self) -> String {
        format!("{}List", self.kind())
    }

    pub fn all() -> [Resource; 4] {
        [
            Resource::ConfigMaps,
            Resource::Endpoints,
            Resource::Pods,
            Resource::Services,
        ]
    }
}

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as watches replay it.
#[derive(Clone, Debug)]
pub struct Event {
    pub rv: u64,
    pub kind: EventType,
    pub resource: Resource,
    pub namespace: String,
    /// The object after the change (for a deletion: as it was, with the
    /// deletion's version).
    pub object: Value,
    /// The object before the change, so a label-selected watch can turn a
    /// change that moves an object into or out of its selection into
    /// `ADDED` or `DELETED`.
    pub prev: Option<Value>,
    /// When it happened, on the emulator's clock (for compaction by age).
    pub at: SystemTime,
}

type Key = (Resource, String, String);

/// `DeleteOptions.preconditions`: what must still hold for a deletion.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Preconditions {
    pub resource_version: Option<String>,
    pub uid: Option<String>,
}

/// The whole state. Kept across emulator restarts, like etcd behind a
/// restarted kube-apiserver.
#[derive(Debug)]
pub struct Store {
    rv: u64,
    objects: BTreeMap<Key, Value>,
    events: VecDeque<Event>,
    compacted: u64,
    uid_seq: u64,
    /// How long changes are kept for watches (etcd's default compaction
    /// keeps five minutes).
    pub history: Duration,
    /// At most this many changes are kept, whatever their age.
    pub max_events: usize,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            rv: 1000,
            objects: BTreeMap::new(),
            events: VecDeque::new(),
            compacted: 1000,
            uid_seq: 0,
            history: Duration::from_secs(300),
            max_events: 10_000,
        }
    }
}

/// The object's `metadata` (created if missing).
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = json!({});
    }
    let Value::Object(map) = obj else {
        unreachable!("made an object above")
    };
    let meta = map.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    match meta {
        Value::Object(m) => m,
        _ => unreachable!("made an object above"),
    }
}

/// A string field of `metadata`.
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// The labels of an object (empty when it has none).
pub fn labels(obj: &Value) -> BTreeMap<String, String> {
    obj.get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

impl Store {
    /// The newest `resourceVersion` handed out.
    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    /// The newest version whose change is no longer kept.
    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    pub fn get(&self, res: Resource, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(&(res, ns.to_string(), name.to_string()))
    }

    /// Every object of `res` in `ns` (all namespaces when `None`), in
    /// namespace and name order.
    pub fn list(&self, res: Resource, ns: Option<&str>) -> Vec<&Value> {
        self.objects
            .iter()
            .filter(|((r, n, _), _)| *r == res && ns.is_none_or(|ns| ns == n))
            .map(|(_, v)| v)
            .collect()
    }

    /// Changes after `rv`, or `Err(compacted)` when some of them are no
    /// longer kept.
    pub fn events_after(&self, rv: u64) -> Result<Vec<Event>, u64> {
        if rv < self.compacted {
            return Err(self.compacted);
        }
        Ok(self
            .events
            .iter()
            .skip_while(|e| e.rv <= rv)
            .cloned()
            .collect())
    }

    /// Drops changes older than the history window (by `now`) and beyond
    /// the event limit.
    pub fn compact_by_age(&mut self, now: SystemTime) {
        while let Some(front) = self.events.front() {
            let too_old = now
                .duration_since(front.at)
                .is_ok_and(|age| age > self.history);
            if too_old || self.events.len() > self.max_events {
                self.compacted = front.rv;
                self.events.pop_front();
            } else {
                break;
            }
        }
    }

    /// Forgets every change so far: watches from any version before now are
    /// answered `410 Gone` (as after a compaction, or by a restarted
    /// apiserver whose watch cache starts at the current version).
    pub fn compact_all(&mut self) {
        self.events.clear();
        self.compacted = self.rv;
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn record(
        &mut self,
        kind: EventType,
        res: Resource,
        ns: &str,
        object: Value,
        prev: Option<Value>,
        at: SystemTime,
    ) {
        let rv = self.rv;
        self.events.push_back(Event {
            rv,
            kind,
            resource: res,
            namespace: ns.to_string(),
            object,
            prev,
            at,
        });
        self.compact_by_age(at);
    }

    /// Stores a new object. `obj` must have its name set and be valid;
    /// this fills in the system fields.
    pub fn create(
        &mut self,
        res: Resource,
        ns: &str,
        mut obj: Value,
        now: SystemTime,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let name = meta_str(&obj, "name").unwrap_or_default().to_string();
        if self.get(res, ns, &name).is_some() {
            return Err(ApiError::already_exists(res, &name));
        }
        let rv = if dry_run { self.rv } else { self.next_rv() };
        self.uid_seq += 1;
        let uid = format!("00000000-0000-4000-8000-{:012x}", self.uid_seq);
        set_type_meta(&mut obj, res);
        let meta = meta_mut(&mut obj);
        meta.insert("namespace".into(), json!(ns));
        meta.insert("uid".into(), json!(uid));
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        meta.insert("creationTimestamp".into(), json!(timestamp(now)));
        if !dry_run {
            self.objects
                .insert((res, ns.to_string(), name), obj.clone());
            self.record(EventType::Added, res, ns, obj.clone(), None, now);
        }
        Ok(obj)
    }

    /// Replaces an existing object with `new` (already merged and
    /// validated by the caller). System fields are carried over from the
    /// stored object; `metadata.resourceVersion` in `new`, when set, must
    /// equal the stored one. A replacement that changes nothing keeps the
    /// version and records no event.
    pub fn update(
        &mut self,
        res: Resource,
        ns: &str,
        name: &str,
        mut new: Value,
        now: SystemTime,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let key = (res, ns.to_string(), name.to_string());
        let Some(old) = self.objects.get(&key).cloned() else {
            return Err(ApiError::not_found(res, name));
        };
        let current_rv = meta_str(&old, "resourceVersion")
            .unwrap_or_default()
            .to_string();
        if let Some(expected) = meta_str(&new, "resourceVersion")
            && !expected.is_empty()
            && expected != current_rv
        {
            return Err(ApiError::conflict(res, name));
        }
        if meta_str(&new, "name").is_some_and(|n| n != name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta_str(&new, "name").unwrap_or_default()
            )));
        }
        if let Some(uid) = meta_str(&new, "uid")
            && Some(uid) != meta_str(&old, "uid")
        {
            return Err(ApiError::conflict_with(
                res,
                name,
                "Precondition failed: UID in precondition does not match the UID of the object",
            ));
        }
        set_type_meta(&mut new, res);
        {
            let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
            let meta = meta_mut(&mut new);
            for field in ["namespace", "name", "uid", "creationTimestamp"] {
                match old_meta.get(field) {
                    Some(v) => {
                        meta.insert(field.into(), v.clone());
                    }
                    None => {
                        meta.remove(field);
                    }
                }
            }
            meta.insert("resourceVersion".into(), json!(current_rv));
            for empty in ["labels", "annotations"] {
                if meta
                    .get(empty)
                    .is_some_and(|v| v.is_null() || v.as_object().is_some_and(Map::is_empty))
                {
                    meta.remove(empty);
                }
            }
        }
        if new == old {
            return Ok(old);
        }
        let rv = if dry_run { self.rv } else { self.next_rv() };
        meta_mut(&mut new).insert("resourceVersion".into(), json!(rv.to_string()));
        if !dry_run {
            self.objects.insert(key, new.clone());
            self.record(EventType::Modified, res, ns, new.clone(), Some(old), now);
        }
        Ok(new)
    }

    /// Deletes an object, if the preconditions (when given) still hold.
    pub fn delete(
        &mut self,
        res: Resource,
        ns: &str,
        name: &str,
        pre: &Preconditions,
        now: SystemTime,
        dry_run: bool,
    ) -> Result<Value, ApiError> {
        let key = (res, ns.to_string(), name.to_string());
        let Some(old) = self.objects.get(&key).cloned() else {
            return Err(ApiError::not_found(res, name));
        };
        if let Some(rv) = pre.resource_version.as_deref()
            && meta_str(&old, "resourceVersion") != Some(rv)
        {
            return Err(ApiError::conflict_with(
                res,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    meta_str(&old, "resourceVersion").unwrap_or_default()
                ),
            ));
        }
        if let Some(uid) = pre.uid.as_deref()
            && meta_str(&old, "uid") != Some(uid)
        {
            return Err(ApiError::conflict_with(
                res,
                name,
                "Precondition failed: UID in precondition does not match the UID of the object",
            ));
        }
        if dry_run {
            return Ok(old);
        }
        self.objects.remove(&key);
        let rv = self.next_rv();
        let mut gone = old.clone();
        meta_mut(&mut gone).insert("resourceVersion".into(), json!(rv.to_string()));
        self.record(EventType::Deleted, res, ns, gone.clone(), Some(old), now);
        Ok(gone)
    }
}

/// `kind` and `apiVersion` as the server reports them for one object.
pub fn set_type_meta(obj: &mut Value, res: Resource) {
    if let Value::Object(map) = obj {
        map.insert("kind".into(), json!(res.kind()));
        map.insert("apiVersion".into(), json!("v1"));
    }
}

/// RFC 3339 in UTC with second precision, as Kubernetes writes timestamps.
pub fn timestamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    jiff::Timestamp::from_second(i64::try_from(secs).unwrap_or(i64::MAX))
        .map(|ts| ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}
