//! pgha's etcd v3 backend: [`EtcdDcs`] implements [`pgha_core::dcs::Dcs`]
//! on etcd's v3 (gRPC) API, with the key layout and values Patroni's
//! `etcd3` module uses, so pgha and Patroni nodes, and `patronictl`, read
//! and write the same cluster.
//!
//! # Mapping
//!
//! Keys live under [`KeyLayout::prefix`](pgha_core::model::KeyLayout::prefix)
//! (`/service/<scope>/`); values are stored exactly as Patroni stores them
//! (`leader` holds the plain member name, JSON values are compact).
//!
//! | operation | etcd requests |
//! |---|---|
//! | `load` | one linearizable range read of the prefix; the watch cursor is the response header's revision, versions are `mod_revision`s, owners are lease ids (decimal) |
//! | `acquire_leader` | lease keepalive (or grant), then txn `create_revision(leader) == 0` → put `name` with our lease, else read `leader` (the holder named in `NotOwner`) |
//! | `renew_leader` | one lease keepalive (lease gone → `SessionExpired`), then txn `value(leader) == name ∧ lease(leader) == ours`, else read `leader`; a key naming us on a lease this client retired after a `ttl` change is moved to the current lease by a second txn guarded by that old lease |
//! | `release_leader` | txn `value(leader) == name` → delete, else read `leader` |
//! | `take_leader_from` | lease keepalive (or grant), then txn `mod_revision(leader) == version read` → put `name` with our lease; a failed compare is `Conflict` |
//! | `remove_leader_at` | txn `mod_revision(leader) == version read` → delete, else read `leader`: gone is `Ok`, anything else `Conflict` |
//! | `touch_member` | lease keepalive (or grant), put `members/<name>` with our lease |
//! | `write` / `delete` | `Expect::Any`: plain put/delete; `Absent`: txn `create_revision == 0`; `Version(v)`: txn `mod_revision == v`; a failed compare is `Conflict` |
//! | `delete_cluster` | delete range of the prefix |
//! | `watch_leader` | watch `leader` from `cursor + 1`: any event, or a compacted start revision, is `Changed`; the watch stream is set up within `retry_timeout` and then runs to the watch's own timeout |
//!
//! A plain renewal writes nothing (the lease keepalive is what extends the
//! lock), so it does not wake replicas watching the leader key.
//!
//! # Leases
//!
//! One lease per node, TTL = `ttl` (whole seconds, rounded up; etcd may
//! raise it to its minimum, about 2 s by default). It is refreshed only by
//! this client's own calls (`touch_member`, `acquire_leader`,
//! `renew_leader`, `take_leader_from`), each with a single keepalive request.
//! There is no background keepalive task: an HA loop that stops calling
//! lets its lock and member key expire, which is the point.
//!
//! A [`LockLease`](pgha_core::dcs::LockLease) carries the TTL the server
//! granted. The keepalive or grant is processed after the call was sent,
//! so the lease outlives `sent + valid_for`: the promise is never more than
//! the truth.
//!
//! A new `ttl` ([`Dcs::set_timing`](pgha_core::dcs::Dcs::set_timing))
//! takes effect with a new lease at the next lock or member call. The old
//! lease is left to expire, not revoked (the leader key may still be on
//! it); `renew_leader` moves the leader key over, `touch_member` the member
//! key.
//!
//! # Connections and time bounds
//!
//! [`EtcdDcs::new`] does not connect. The first call connects to the first
//! endpoint; a transport failure or timeout drops the connection and the
//! next attempt goes to the next endpoint, so an agent started while etcd
//! is down, or whose etcd member died, carries on once an endpoint answers.
//! Every call is bounded by `retry_timeout` (connects, retries and lock
//! waits included) and fails with `Unreachable` when that passes. Within
//! that time, requests that are safe to repeat (reads, keepalives,
//! unconditional puts and deletes) are retried, on the next endpoint when
//! there are several (each attempt then gets `retry_timeout / endpoints`,
//! at least 1 s); compare-and-set requests are repeated only when the
//! connection could not even be made, since repeating one whose success
//! went unseen would report our own write as a conflict.
//!
//! Errors: no answer, broken connections, and server-side unavailability
//! (no leader, overload) are `Unreachable`; authentication and permission
//! errors, TLS certificates that are not trusted, and malformed requests
//! are `Rejected`; a lease etcd no longer knows is `SessionExpired`.
//!
//! # Authentication and TLS
//!
//! `username`/`password` use etcd's token authentication; an expired token
//! (etcd's simple tokens expire after 5 minutes and with a restart) is
//! renewed and the request repeated once. If the cluster has
//! authentication disabled, the client goes on without it, as Patroni does.
//!
//! TLS (`https://` endpoints, `cacert`, client `cert`/`key`) needs the
//! `tls` cargo feature (rustls with the ring provider; off by default).
//! Without `cacert` the system's CAs are trusted only with the `tls-roots`
//! feature; otherwise `cacert` is required.
//!
//! # Limits
//!
//! - No member discovery: only the configured endpoints are used (Patroni
//!   also asks etcd for its member list). DNS SRV discovery (`srv`) is not
//!   supported and is refused at configuration time.
//! - Reads are linearizable (Patroni's HA loop reads serializable): with
//!   the etcd member cut off from its quorum, `load` fails (`Unreachable`)
//!   rather than return possibly stale data, and a watch cursor is never
//!   behind a write this node already saw acknowledged.
//! - A leader key naming this node on a lease this client never held (left
//!   by a previous run of the node, or another process using its name) is
//!   not taken over: `renew_leader` says `NotOwner` and the key expires with
//!   its lease.
//! - A repeated compare-and-set whose first attempt succeeded unseen cannot
//!   happen (see above), but a plain put or delete may be applied twice.
//! - Requires etcd ≥ 3.3 (transactions comparing leases).

mod conn;
mod dcs;
mod fail;

pub mod config;

pub use config::{ConfigError, EtcdConfig, PatroniEtcd3};
pub use dcs::EtcdDcs;
