//! pgha's ZooKeeper backend: Patroni's key layout on ZooKeeper, so pgha and
//! Patroni nodes, and `patronictl`, read and write the same znodes.
//!
//! One [`ZkDcs`] is one node's client. It owns one ZooKeeper *session*
//! (through the `zookeeper-client` crate); the session plays the part of
//! etcd's lease.
//!
//! # How the [`Dcs`](pgha_core::dcs::Dcs) operations map to ZooKeeper
//!
//! Every key lives at `/<namespace>/<scope>/<key>`; parents are persistent
//! znodes created on demand (Patroni's `makepath`).
//!
//! | operation | ZooKeeper |
//! |---|---|
//! | `load` | `getChildren` of the base path and of `members/`, then `getData` of every known key, pipelined (key by key: ZooKeeper has no multi-key snapshot). Unknown children are ignored. Watch cursor: the `leader` znode's identity `"<czxid>:<mzxid>"`, or `"absent"`. |
//! | `acquire_leader` | create ephemeral `leader` holding our name; `NodeExists` → read the holder → `NotOwner{holder}` |
//! | `renew_leader` | `sync` + `getData(leader)` (one round trip, which also proves the session alive): succeeds only if the znode names us *and* its `ephemeralOwner` is our current session |
//! | `release_leader` | the same check, then delete `leader` at the version read |
//! | `take_leader_from` | `sync` + `getData(leader)`: it must still be the znode read (same `mzxid`, same owner), else `Conflict`; then one `multi`: delete `leader` at its data version + create ephemeral ours. For a persistent (hand-written) znode the `multi` starts by creating and deleting a child of it, which ZooKeeper refuses under an ephemeral znode: a lock created meanwhile in its place is never replaced |
//! | `remove_leader_at` | the same check (absent: `Ok`), then the same guarded delete without the create |
//! | `touch_member` | `exists(members/<name>)`: absent → create it ephemeral in our session; ours → `setData` at its version; another session's (an old one of ours, or written by hand) → delete it and create it again, as Patroni does |
//! | `write` / `delete` | `setData` / `delete` at the znode's data version; `Expect::Absent` = `create` |
//! | `delete_cluster` | recursive delete of the base path |
//! | `watch_leader` | exists-watch on `leader` (fires on create, delete and data change); returns at once when the current identity differs from the cursor |
//!
//! Versions are the znode's data version (`Stat::version`); a member's or
//! the leader's `owner` is the session id of its `ephemeralOwner` (hex).
//!
//! # Sessions
//!
//! - **Session timeout = `ttl`.** The server may negotiate another value
//!   (it clamps to `[minSessionTimeout, maxSessionTimeout]`); every
//!   [`LockLease`](pgha_core::dcs::LockLease) reports the *negotiated*
//!   timeout, never the requested one. The server expires a session no
//!   sooner than that long after the last request it received, and a
//!   successful call's request was received after the call was sent, so
//!   the lease is honest.
//! - **Lazy, bounded.** [`ZkDcs::new`] does not connect. The first call
//!   (and the first call after a session ended) opens a session. Every call
//!   — reconnection included — is bounded by `retry_timeout` and fails with
//!   `Unreachable` past it. While the connection is down, calls wait for
//!   the library to reconnect (within their bound) rather than queueing
//!   requests that would run later.
//! - **Expiry is reported, never papered over.** A background task watches
//!   the session state (and logs each change when it happens). Once the
//!   session has ended (expired, closed, authentication failed) it is never
//!   used again: the next call opens a new session (a new client), and the
//!   loss is recorded. The next `renew_leader` or `release_leader` reports
//!   it as [`DcsError::SessionExpired`](pgha_core::dcs::DcsError::SessionExpired),
//!   once, as soon as the server can be reached again (while it cannot,
//!   every call fails with `Unreachable`, as the trait requires) — unless
//!   the node acquired the lock again in the new session meanwhile.
//!   `load`, `touch_member`, writes and `acquire_leader` simply work on the
//!   new session, as the trait asks of `touch_member`. Independently of that
//!   report, a renewal only succeeds when the `leader` znode's
//!   `ephemeralOwner` is the *current* session, so a lock held by an old
//!   session can never be renewed by a new one. pgha never deletes a
//!   `leader` znode it does not own (Patroni's `_update_leader` does; pgha
//!   does not).
//! - **`set_timing`.** `retry_timeout` applies at once. A new `ttl` applies
//!   from the next session: a session's timeout is fixed when it is created,
//!   and replacing the session to change it would delete our `leader` and
//!   member znodes, i.e. give up the lock.
//!
//! # Limits
//!
//! - **The library keeps the session alive in the background.** The
//!   ZooKeeper client pings the server on its own (every ~3/8 of the
//!   connection timeout), so a stuck HA loop does *not* by itself let the
//!   session, and with it the leader znode, expire — unlike etcd, where
//!   only this client's calls refresh the lease. What bounds a stuck primary
//!   on ZooKeeper is the HA loop's own deadline: it demotes when it cannot
//!   renew within the lease it was last promised (and a watchdog, if
//!   configured, covers a loop that is stuck entirely).
//! - **Client-side expiry.** When no server can be reached, the library
//!   declares the session expired after 7/5 of the negotiated timeout. A
//!   server that was down all that time restores its sessions with a fresh
//!   timeout when it comes back, so the old session's znodes (possibly
//!   `leader`) may linger for one more `ttl` before the server expires them.
//!   pgha never renews them (the owner check above); it waits like everyone
//!   else.
//! - **`Unreachable` writes may still land.** As with any timeout, a write
//!   that failed with `Unreachable` may have been applied — or may still be,
//!   within the same session: a request issued just as the connection drops
//!   is held by the library and sent when it reconnects. Calls wait for a
//!   dropped connection to come back instead of issuing requests into it,
//!   which keeps that window small, but callers must `load` before assuming
//!   a failed write did nothing (a late `acquire_leader` shows up as a
//!   `leader` znode naming us, owned by our session).
//! - **`load` is not a snapshot.** Keys are read one by one (pipelined in one
//!   round trip); a change between two reads may show half of it. The watch
//!   cursor is taken from the same `leader` read as the returned lock.
//! - **`release_leader`'s delete is guarded by the znode's data version,
//!   which restarts at 0 for every new znode.** If, between our ownership
//!   check and the delete (one round trip), our znode were deleted by
//!   someone else and a new leader created at once, the delete would hit the
//!   new one. Only the fence guard (`release_leader_at`, for its own
//!   member's lock) or a person deletes a live node's `leader`, so this does
//!   not arise in a working cluster. ZooKeeper offers no delete guarded by
//!   creation zxid. `take_leader_from` and `remove_leader_at` share the
//!   limit for an *ephemeral* znode read; for a persistent one (written by
//!   hand, the case they are called for) the child probe closes it.
//! - **No TLS** in this build: `use_ssl: true` is refused at configuration
//!   time rather than silently falling back to plaintext. Digest (and other
//!   `addauth`) credentials via `auth_data` and ACLs via `set_acls` are
//!   supported.
//! - **Follower reads.** Reads (`load`, holder names) may come from a
//!   follower that lags the leader slightly; the ownership checks of
//!   `renew_leader` and `release_leader` `sync` first, so they are never
//!   answered from stale state.

mod config;
mod dcs;

pub use config::{CheckedConfig, ConfigError, ZkConfig};
pub use dcs::ZkDcs;
