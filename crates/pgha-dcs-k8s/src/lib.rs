//! pgha's Kubernetes backend: [`K8sDcs`] implements [`pgha_core::dcs::Dcs`]
//! on the Kubernetes API with the objects, annotations and labels Patroni's
//! `kubernetes` DCS uses, so pgha and Patroni nodes, and `patronictl`, read
//! and write the same cluster.
//!
//! # Layout
//!
//! In namespace `kubernetes.namespace` (default `default`), every object
//! labelled with `kubernetes.labels` plus `<scope_label>: <scope>`:
//!
//! | object (ConfigMap, or Endpoints with `use_endpoints`) | annotations |
//! |---|---|
//! | `<scope>-leader` (Endpoints: `<scope>`) | the leader record `leader`, `acquireTime`, `renewTime`, `ttl`, `transitions`; the status `optime`, `slots`, `retain_slots`; `failsafe` |
//! | `<scope>-config` | `initialize`, `config`, `history` |
//! | `<scope>-failover` | `leader`, `member`, `scheduled_at` |
//! | `<scope>-sync` | `leader`, `sync_standby`, `quorum` |
//!
//! Members are the Pods with the cluster's labels: the Pod named after the
//! member carries its status (JSON) in the annotation `status` and its role
//! in the label `role_label` (`leader_label_value` for the lock holder,
//! `follower_label_value` for a running replica). With `use_endpoints` the
//! leader Endpoints' subset carries the leader's IP (`pod_ip`, else the
//! Pod's) and `ports`, and a headless Service `<scope>-config` keeps the
//! config Endpoints from being cleaned up.
//!
//! Every value is a `resourceVersion` (a [`Version`](pgha_core::model::Version)
//! token) of the object holding it: keys that share an object share its
//! version, and a write that changes nothing keeps it (kube-apiserver skips
//! no-op updates). Guarded writes carry `metadata.resourceVersion` in a JSON
//! merge patch; `409 Conflict` means the race was lost.
//!
//! | operation | requests |
//! |---|---|
//! | `load` | list the kind and the Pods by the cluster's label selector; the watch cursor is the leader object's `resourceVersion` |
//! | `acquire_leader` | get the leader object; if the record names a holder whose record has not expired for this reader, `NotOwner`; else patch our record guarded by the `resourceVersion` read (or create the object); 409 → `NotOwner` naming the winner |
//! | `renew_leader` | get; the record must name us **and** be one this client wrote (else `NotOwner`), written less than its `ttl` ago (else `SessionExpired`); patch a new `renewTime` guarded by `resourceVersion` |
//! | `release_leader` | get; if it names us, patch `leader: null` guarded |
//! | `take_leader_from` | get; if the object is still at the `resourceVersion` read, patch our record guarded by it; 409 (or a version moved) → `Conflict` |
//! | `remove_leader_at` | get; no object or an empty record: `Ok`; at the `resourceVersion` read, patch `leader: null` guarded by it; else `Conflict` |
//! | `touch_member` | patch our Pod: `status`, the heartbeat, the role labels |
//! | `write` / `delete` | get the object; check the key against `Expect` (`Absent`: annotation absent, `Version`: the object's `resourceVersion`); patch guarded by it, or create the object (409 AlreadyExists → read again) |
//! | `delete_cluster` | deletecollection of the kind by label selector (and the config Service); the member annotations and role labels are removed from the Pods, which are not ours to delete |
//! | `watch_leader` | kube's watcher on the leader object (list, then watch from the list's version; relist on `410 Gone`), plus a timer for the record's expiry |
//!
//! # Lifetimes are judged by readers
//!
//! Nothing in Kubernetes expires the leader record. As in Patroni, every
//! reader remembers the record (the five leader annotations) it last saw
//! and the moment, on its own monotonic clock, it first saw it; the record
//! is valid until `ttl` (the record's own `ttl` annotation) after that
//! moment. The holder renews by writing a new `renewTime`, which every
//! reader sees as a new record.
//!
//! **Why [`LockLease::valid_for`](pgha_core::dcs::LockLease) is `ttl`.** A
//! successful acquire or renewal writes a record R with a request sent at
//! `s`. Another node can take the lock only with a write guarded by a
//! `resourceVersion` at which R (or a later record of ours) is current, and
//! only once it judged that record expired: `ttl` after it *first saw* it.
//! It cannot have seen R before R was written, and R was written after `s`;
//! so no other node can take the lock before `s + ttl`. A node that judged
//! an older record of ours expired writes with that older
//! `resourceVersion` and gets 409. The argument needs no clock
//! synchronisation (each reader uses only its own clock), only clocks that
//! run at the same rate over `ttl`. Readers that poll slowly, see stale
//! caches or were partitioned see our record later, which only makes the
//! lock last longer for them, never shorter. (`take_leader_from` and
//! `remove_leader_at` replace or empty a record without waiting for it to
//! expire, guarded by the `resourceVersion` they were given; the HA loop
//! calls them only for unowned keys, which this engine never reports:
//! `locks_have_owners` is `false`.)
//!
//! Consequences: a lock left by a dead holder is free for a reader `ttl`
//! after that reader first saw the last record, so a reader that starts
//! late waits a full `ttl`; and `renew_leader` refuses (`SessionExpired`)
//! once `ttl` has passed since its last successful write was sent, rather
//! than quietly renewing a record others may already have judged expired.
//!
//! # Members and their staleness
//!
//! A Pod does not vanish with a lease; Patroni patches its Pod only when its
//! status changed and lists every Pod with the cluster's labels as a member
//! for as long as the Pod exists. pgha keeps that rule for any status it
//! did not write, and adds a proof of life for its own: with every
//! `touch_member` it writes the annotation `pgha/heartbeat` (its `renewTime`,
//! its `ttl`, and a digest of the `status` written with it). A member whose
//! heartbeat matches its status is judged like the leader record: present
//! while `(status, heartbeat)` changed within the heartbeat's `ttl` of when
//! this reader first saw it, left out of [`Cluster::members`](pgha_core::model::Cluster)
//! after that. A status written by something else (a Patroni node taking
//! over the Pod) does not match the old heartbeat and is read as Patroni
//! reads it. The cost: one Pod patch per node per HA cycle, where Patroni
//! patches only on change.
//!
//! # Connection and time bounds
//!
//! [`K8sDcs::new`] neither connects nor reads the kubeconfig; the first
//! call does (in-cluster service account when `KUBERNETES_SERVICE_HOST` is
//! set, else `KUBECONFIG` / `~/.kube/config` with `kubernetes.context`, or
//! Patroni's `kind-kind` context when present, or the current context).
//! Every call is bounded by `retry_timeout` and fails with `Unreachable`
//! when that passes. Within it, reads and unconditional patches are
//! repeated after transport failures, 429 and 5xx (and
//! `retriable_http_codes`); guarded writes and creates only when the
//! request surely was not processed (connection refused, 429), since a
//! repeat after an unseen success would report our own write as a lost
//! race. A leader write whose answer was lost is still recognised as ours
//! by its content. 401/403 and TLS trust failures are `Rejected`.
//!
//! # Limits
//!
//! - Citus/MPP groups (`<scope>-<group>-…`) are not supported.
//! - `bypass_api_service` is accepted without effect.
//! - The keys of one object share a version: a CAS on `config` fails if
//!   `history` was written since it was read (as in Patroni).
//! - Fields of a `status` value other than `optime`, `slots` and
//!   `retain_slots` are not stored (Patroni stores no others).
//! - Tested against the in-repo kube-apiserver emulator
//!   (`pgha-k8s-emulator`) and Patroni's own client; watch-cache and
//!   compaction timing, RBAC and admission of a real cluster are not
//!   exercised (see `docs/kubernetes.md`).

mod dcs;
mod fail;
mod record;
mod values;

pub mod config;

pub use config::{ApiServer, ConfigError, EndpointPort, K8sConfig};
pub use dcs::K8sDcs;
pub use record::{HEARTBEAT, Heartbeat};
