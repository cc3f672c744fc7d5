//! pgha's Consul backend: [`ConsulDcs`] implements [`pgha_core::dcs::Dcs`]
//! on Consul's HTTP API (KV store and sessions), with the key layout and
//! values Patroni's `consul` module uses, so pgha and Patroni nodes, and
//! `patronictl`, read and write the same cluster.
//!
//! Raw HTTP/1.1 on hyper; TLS (rustls, ring) with the `tls` cargo feature,
//! trust in the system's CAs additionally with `tls-roots`. Configuration
//! comes from Patroni's `consul:` section: [`ConsulConfig::from_patroni`].
//!
//! # Mapping
//!
//! Keys are the cluster's paths without the leading slash
//! (`service/<scope>/leader`, as Patroni writes them); values are stored
//! exactly as Patroni stores them (`leader` holds the plain member name,
//! JSON values are compact). Versions are `ModifyIndex`es; owners are
//! session IDs.
//!
//! | operation | Consul requests |
//! |---|---|
//! | `load` | `GET /v1/kv/<prefix>/?recurse` (with `consistent` or `stale` as configured); the watch cursor is the answer's `X-Consul-Index` |
//! | `acquire_leader` | session renew (or create), `PUT leader?acquire=<session>` with our name; `false` → read the holder for `NotOwner` |
//! | `renew_leader` | session renew (404: `SessionExpired`), then a consistent read of `leader`: it must name us and be held by our current session; a key naming us on a session this client retired after a `ttl` change is moved (`?release=<old>`, `?acquire=<new>`) |
//! | `release_leader` | consistent read of `leader`; if it names us, `DELETE leader?cas=<ModifyIndex>` |
//! | `take_leader_from` | session renew (or create), then one `PUT /v1/txn`: `check-index` at the `ModifyIndex` read, `delete`, `lock` with our session (`Flags` = the index replaced); rolled back at the index check → `Conflict`. (`?cas=` and `?acquire=` cannot be combined on a KV `PUT`: Consul answers 400 "Conflicting flags") |
//! | `remove_leader_at` | `DELETE leader?cas=<ModifyIndex read>` (`true` also for a key already gone: `Ok`); `false` → `Conflict` |
//! | `touch_member` | session renew (or create), `PUT members/<name>?acquire=<session>`; a member key held by another session (ours before a `ttl` change, or a previous run's) is deleted and written again, as Patroni does |
//! | `write` | `Any`: plain `PUT`; `Absent`: `?cas=0`; `Version(v)`: `?cas=v&flags=v`; `false` is `Conflict`. The new version is read back (Consul's write answers carry none); if the key changed again in between, the version returned is 0, which no compare-and-set matches |
//! | `delete` | `Any`: `DELETE` (never `recurse`); `Absent`: a read; `Version(v)`: a read (absent → `Conflict`) then `DELETE ?cas=v` |
//! | `delete_cluster` | `DELETE /v1/kv/<prefix>/?recurse` (trailing slash: never a sibling cluster) |
//! | `watch_leader` | blocking `GET leader?index=<i>&wait=<remaining>` from the cursor; see below |
//!
//! A compare-and-set write always makes a new version: Consul skips a write
//! that changes nothing (same value and flags) and keeps its `ModifyIndex`,
//! so two writers racing at one version with the stored value could both
//! succeed. pgha stores the version it replaces in the entry's `Flags`
//! (Patroni ignores `Flags` and writes 0), which the entry at that version
//! never holds. Values themselves are exactly Patroni's.
//!
//! `recurse` is sent only where meant: Consul treats the parameter's mere
//! presence as recursive (`?recurse=false` is recursive too), so a single
//! key is never deleted or read with it.
//!
//! # Sessions and honest lifetimes
//!
//! One session per node: `TTL = ttl/2`, `Behavior = delete`, `LockDelay =
//! 1ms`, `Checks` = Patroni's `checks` setting (empty by default: only the
//! TTL invalidates the session, as with Patroni), named `<scope>-<name>`.
//! The leader and member keys are acquired with it, so they vanish with
//! it. It is renewed only by this client's own calls (`touch_member`,
//! `acquire_leader`, `renew_leader`, `take_leader_from`), one `PUT
//! /v1/session/renew/<id>` each; nothing runs in the background, so an HA
//! loop that stops calling lets its lock and member key go.
//!
//! Consul documents the TTL as a *lower bound* for invalidation: it never
//! invalidates a session before the TTL has passed since the last renewal,
//! and may wait up to twice as long. Hence Patroni's `ttl/2`: keys of a
//! dead node are gone within about `ttl`. And hence the promise:
//! **[`LockLease::valid_for`](pgha_core::dcs::LockLease) is the session
//! TTL Consul confirmed, i.e. `ttl/2`, not `ttl`.** The renewal is
//! processed after the call was sent, so no other node can take the lock
//! before `sent + valid_for`; nothing more can be promised. The agent must
//! plan its renewals by `valid_for`: with Patroni's defaults (`ttl` 30,
//! `loop_wait` 10, `retry_timeout` 10) a leader has 15 s after each
//! renewal is sent, not 30. A TTL Consul answers higher on renewal (it may,
//! under load) is not taken as a longer promise.
//!
//! A session Consul no longer knows (renew answers 404) is reported once:
//! `renew_leader` fails with `SessionExpired` and forgets it; the next
//! `touch_member` or `acquire_leader` creates a new one (they create one
//! silently when theirs is gone, logging a warning); `renew_leader` without
//! a session says `NotOwner`. A new `ttl` takes effect with the next
//! session; the old one is left to expire, not destroyed (the leader key
//! may still be on it until `renew_leader` moves it).
//!
//! If Consul refuses `ttl/2` as below its `session_ttl_min` (10 s by
//! default, so `ttl` < 20), the session is created with that minimum
//! instead, with a warning, as Patroni does: keys of a dead node then last
//! up to twice the minimum, and `valid_for` says the minimum.
//!
//! # Watching the leader key
//!
//! The cursor is the `X-Consul-Index` of the load. A watch sends blocking
//! reads of the leader key with `index` = the cursor (then the last index
//! seen) and `wait` = the time left. A present key answers with its
//! `ModifyIndex`: above the cursor means changed. A missing key answers 404
//! with the KV store's index, which moves with any write anywhere: the
//! client keeps that index and waits on, unless the leader key existed at
//! the load (remembered per cursor for the last loads), which means it was
//! deleted. An index lower than the one sent (a restored or rebuilt store)
//! ends the watch as `Changed`, so the caller loads afresh, as Consul's
//! documentation asks. The watch ends at its own timeout; transport errors
//! end it early with `Unreachable`.
//!
//! # Connections, agents and time bounds
//!
//! [`ConsulDcs::new`] does not connect. Several agents may be configured
//! (`hosts`, a pgha extension; Patroni uses one `host`): the client stays
//! on one and moves to the next when a request fails. Every call is bounded
//! by `retry_timeout` and fails with `Unreachable` when that passes; within
//! it, requests safe to repeat are repeated (on the next agent, each
//! attempt then getting `retry_timeout / agents`, at least 1 s), while a
//! compare-and-set write is repeated only if it surely was not applied.
//! Sessions belong to the node of the agent that created them; with
//! several agents, a session created through one keeps working through the
//! others (sessions are cluster-wide), but is invalidated if that node is
//! deregistered.
//!
//! Errors: no answer, broken connections, 429 and 5xx answers (no cluster
//! leader, overload) are `Unreachable`; 403 (ACL), other 4xx, and TLS
//! certificates that are not trusted are `Rejected`.
//!
//! # Limits
//!
//! - Validated against an in-repo Consul **emulator**
//!   (`pgha-consul-emulator`) and Patroni's own Consul client, not against
//!   a real Consul cluster. What that cannot prove: the TTL reset on a
//!   Consul leader failover (the TTL is a lower bound, so it only lengthens
//!   lifetimes; `valid_for` stays true), node-health invalidation
//!   (`serfHealth` and other checks given in `checks`), and ACL policy
//!   evaluation (only "token accepted or not" is exercised).
//!   See `docs/consul.md`.
//! - No service registration (`register_service: true` is refused).
//! - `verify: false` is refused: certificates are always verified.
//! - A leader key naming this node on a session this client never held (a
//!   previous run of the node) is not taken over: `renew_leader` says
//!   `NotOwner` and the key goes with its session.
//! - Reads for versions after a write and the reads in lock operations are
//!   `consistent`; `load` uses the configured mode (with `stale`, a load
//!   may be behind writes this node saw acknowledged).
//! - Recent Consul releases refuse KV keys with characters outside
//!   `[A-Za-z0-9,-_./]` or ending in suffixes such as `.com` or `.json`:
//!   member names (and scopes) must avoid them there, with Patroni as with
//!   pgha.

mod dcs;
mod http;
mod wire;

pub mod config;

pub use config::{ConfigError, Consistency, ConsulConfig, Endpoint};
pub use dcs::ConsulDcs;
