//! Each test checks one behaviour of the emulator against the sentence of
//! Consul's documentation it comes from (quoted above the test; the page
//! is named). Where the documentation is silent and Consul's source decides
//! (flags recognised by presence, conflicting flags), the source file is
//! named instead. Failure cases included.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use pgha_consul_emulator::{ConsulEmulator, EmulatorConfig, Fault};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// One HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    index: Option<u64>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// A bare HTTP/1.1 request (`Connection: close`), bounded to 15 s.
async fn call(addr: SocketAddr, method: &str, path: &str, body: &str) -> Answer {
    call_with(addr, method, path, body, &[]).await
}

async fn call_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> Answer {
    tokio::time::timeout(Duration::from_secs(15), async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(body.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let index = head
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("x-consul-index:").map(str::to_string))
            .and_then(|v| v.trim().parse().ok());
        Answer {
            status,
            index,
            body: body.to_string(),
        }
    })
    .await
    .expect("request bounded to 15 s")
}

async fn emulator() -> ConsulEmulator {
    ConsulEmulator::start(EmulatorConfig::for_tests())
        .await
        .unwrap()
}

async fn session(addr: SocketAddr, body: &str) -> String {
    let a = call(addr, "PUT", "/v1/session/create", body).await;
    assert_eq!(a.status, 200, "{a:?}");
    a.json()["ID"].as_str().unwrap().to_string()
}

fn entry(a: &Answer) -> Value {
    a.json()[0].clone()
}

// ---- KV ----------------------------------------------------------------

/// kv.mdx, Read Key: "If no key exists at the given path, a 404 is returned
/// instead of a 200 response." (and, for blocking queries, the answer still
/// carries `X-Consul-Index`).
#[tokio::test]
async fn missing_key_is_404_with_an_index() {
    let e = emulator().await;
    let a = call(e.addr(), "GET", "/v1/kv/service/demo/leader", "").await;
    assert_eq!(a.status, 404);
    assert!(a.index.unwrap() >= 1, "{a:?}");
}

/// kv.mdx: "`Value` is a base64-encoded blob of data." / "The payload is
/// arbitrary, and is loaded directly into Consul as supplied."
#[tokio::test]
async fn values_are_stored_as_supplied_and_read_as_base64() {
    let e = emulator().await;
    assert_eq!(
        call(e.addr(), "PUT", "/v1/kv/service/demo/leader", "node1")
            .await
            .body,
        "true"
    );
    let a = call(e.addr(), "GET", "/v1/kv/service/demo/leader", "").await;
    assert_eq!(a.status, 200);
    assert_eq!(entry(&a)["Value"], "bm9kZTE=");
    assert_eq!(entry(&a)["Key"], "service/demo/leader");
    // An empty value reads as null.
    call(e.addr(), "PUT", "/v1/kv/service/demo/initialize", "").await;
    let a = call(e.addr(), "GET", "/v1/kv/service/demo/initialize", "").await;
    assert_eq!(entry(&a)["Value"], Value::Null);
}

/// kv.mdx, `recurse`: "Specifies if the lookup should be recursive and
/// `key` treated as a prefix instead of a literal match." / "if `?recurse`
/// is provided, the returned `X-Consul-Index` corresponds to the latest
/// `ModifyIndex` within the prefix".
#[tokio::test]
async fn recursive_read_and_its_index() {
    let e = emulator().await;
    call(e.addr(), "PUT", "/v1/kv/service/demo/config", "{}").await;
    call(e.addr(), "PUT", "/v1/kv/service/demo/members/n1", "{}").await;
    call(e.addr(), "PUT", "/v1/kv/service/other/config", "{}").await;
    let a = call(e.addr(), "GET", "/v1/kv/service/demo/?recurse", "").await;
    let list = a.json();
    assert_eq!(list.as_array().unwrap().len(), 2);
    let max = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["ModifyIndex"].as_u64().unwrap())
        .max()
        .unwrap();
    assert_eq!(a.index, Some(max));
    // A write under another prefix does not move this prefix's index.
    call(e.addr(), "PUT", "/v1/kv/service/other/config", "{\"x\":1}").await;
    let b = call(e.addr(), "GET", "/v1/kv/service/demo/?recurse", "").await;
    assert_eq!(b.index, a.index);
    // Nothing under a prefix: 404.
    let c = call(e.addr(), "GET", "/v1/kv/service/none/?recurse", "").await;
    assert_eq!(c.status, 404);
}

/// kv.mdx, Delete Key, `recurse`: "Specifies to delete all keys which have
/// the specified prefix. Without this, only a key with an exact match will
/// be deleted." Consul tests the flag by presence (agent/kvs_endpoint.go:
/// `if _, ok := params["recurse"]; ok`), so `recurse=false` is recursive.
#[tokio::test]
async fn recurse_is_recognised_by_presence() {
    let e = emulator().await;
    for k in ["members/node1", "members/node10"] {
        call(e.addr(), "PUT", &format!("/v1/kv/s/{k}"), "{}").await;
    }
    call(e.addr(), "DELETE", "/v1/kv/s/members/node1", "").await;
    assert!(e.get_raw("s/members/node10").is_some(), "exact match only");
    call(e.addr(), "PUT", "/v1/kv/s/members/node1", "{}").await;
    call(
        e.addr(),
        "DELETE",
        "/v1/kv/s/members/node1?recurse=false",
        "",
    )
    .await;
    assert!(e.get_raw("s/members/node1").is_none());
    assert!(
        e.get_raw("s/members/node10").is_none(),
        "recurse=false still deletes the prefix"
    );
}

/// kv.mdx, `cas` on PUT: "If the index is 0, Consul will only put the key if
/// it does not already exist. If the index is non-zero, the key is only set
/// if the index matches the `ModifyIndex` of that key."
#[tokio::test]
async fn put_with_cas() {
    let e = emulator().await;
    let k = "/v1/kv/s/config";
    assert_eq!(
        call(e.addr(), "PUT", &format!("{k}?cas=0"), "a").await.body,
        "true"
    );
    assert_eq!(
        call(e.addr(), "PUT", &format!("{k}?cas=0"), "b").await.body,
        "false"
    );
    let m = entry(&call(e.addr(), "GET", k, "").await)["ModifyIndex"]
        .as_u64()
        .unwrap();
    assert_eq!(
        call(e.addr(), "PUT", &format!("{k}?cas={}", m + 1000), "c")
            .await
            .body,
        "false"
    );
    assert_eq!(
        call(e.addr(), "PUT", &format!("{k}?cas={m}"), "d")
            .await
            .body,
        "true"
    );
    assert_eq!(
        call(e.addr(), "PUT", &format!("{k}?cas={m}"), "e")
            .await
            .body,
        "false"
    );
    // A non-zero index on a missing key does not create it.
    assert_eq!(
        call(e.addr(), "PUT", "/v1/kv/s/nothing?cas=5", "x")
            .await
            .body,
        "false"
    );
    assert!(e.get_raw("s/nothing").is_none());
}

/// kv.mdx, `cas` on DELETE: "Unlike `PUT`, the index must be greater than 0
/// for Consul to take any action: a 0 index will not delete the key. If the
/// index is non-zero, the key is only deleted if the index matches the
/// `ModifyIndex` of that key."
#[tokio::test]
async fn delete_with_cas() {
    let e = emulator().await;
    call(e.addr(), "PUT", "/v1/kv/s/leader", "n1").await;
    let m = e.get_raw("s/leader").unwrap().modify_index;
    assert_eq!(
        call(e.addr(), "DELETE", "/v1/kv/s/leader?cas=0", "")
            .await
            .body,
        "false"
    );
    assert_eq!(
        call(
            e.addr(),
            "DELETE",
            &format!("/v1/kv/s/leader?cas={}", m + 1),
            ""
        )
        .await
        .body,
        "false"
    );
    assert!(e.get_raw("s/leader").is_some());
    assert_eq!(
        call(e.addr(), "DELETE", &format!("/v1/kv/s/leader?cas={m}"), "")
            .await
            .body,
        "true"
    );
    assert!(e.get_raw("s/leader").is_none());
}

/// agent/kvs_endpoint.go, `conflictingFlags`: "determines if
/// non-composable flags were passed in a request" (PUT: cas, acquire,
/// release; DELETE: recurse, cas), answered 400.
#[tokio::test]
async fn conflicting_flags_are_refused() {
    let e = emulator().await;
    let a = call(e.addr(), "DELETE", "/v1/kv/s/?recurse&cas=1", "").await;
    assert_eq!(a.status, 400);
    assert!(a.body.starts_with("Conflicting flags"), "{a:?}");
    let a = call(e.addr(), "PUT", "/v1/kv/s/k?cas=0&acquire=x", "").await;
    assert_eq!(a.status, 400);
}

/// kv.mdx, `acquire`: "If the lock is not held and the session is valid,
/// this increments the `LockIndex` and sets the `Session` value of the key
/// in addition to updating the key contents. A key does not need to exist
/// to be acquired. If the lock is already held by the given session, then
/// the `LockIndex` is not incremented but the key contents are updated."
/// And: "Note that an update that does not include the acquire parameter
/// will proceed normally even if another session has locked the key."
#[tokio::test]
async fn acquire_semantics() {
    let e = emulator().await;
    let s1 = session(e.addr(), r#"{"TTL":"10s"}"#).await;
    let s2 = session(e.addr(), r#"{"TTL":"10s"}"#).await;
    let k = "/v1/kv/s/leader";
    assert_eq!(
        call(e.addr(), "PUT", &format!("{k}?acquire={s1}"), "n1")
            .await
            .body,
        "true"
    );
    let first = e.get_raw("s/leader").unwrap();
    assert_eq!(
        (first.lock_index, first.session.as_deref()),
        (1, Some(s1.as_str()))
    );
    assert_eq!(
        call(e.addr(), "PUT", &format!("{k}?acquire={s2}"), "n2")
            .await
            .body,
        "false"
    );
    assert_eq!(
        call(e.addr(), "PUT", &format!("{k}?acquire={s1}"), "n1b")
            .await
            .body,
        "true"
    );
    let again = e.get_raw("s/leader").unwrap();
    assert_eq!(again.lock_index, 1);
    assert_eq!(again.value, b"n1b");
    // A plain write goes through and keeps the lock.
    assert_eq!(call(e.addr(), "PUT", k, "plain").await.body, "true");
    let plain = e.get_raw("s/leader").unwrap();
    assert_eq!(plain.value, b"plain");
    assert_eq!(plain.session.as_deref(), Some(s1.as_str()));
}

/// sessions overview: the `acquire` operation "can only succeed if there is
/// no existing lock holder" and a session "can no longer be used" once
/// invalidated. A lock with an unknown session fails (Consul: 500
/// `invalid session`), which Patroni's client recognises by that prefix.
#[tokio::test]
async fn acquire_with_an_invalid_session_fails() {
    let e = emulator().await;
    let a = call(
        e.addr(),
        "PUT",
        "/v1/kv/s/leader?acquire=00000000-0000-0000-0000-000000000000",
        "n1",
    )
    .await;
    assert_eq!(a.status, 500);
    assert!(a.body.starts_with("invalid session"), "{a:?}");
    assert!(e.get_raw("s/leader").is_none());
}

/// kv.mdx, `release`: "This will leave the `LockIndex` unmodified but will
/// clear the associated `Session` of the key. The key must be held by this
/// session to be unlocked."
#[tokio::test]
async fn release_semantics() {
    let e = emulator().await;
    let s1 = session(e.addr(), r#"{"TTL":"10s"}"#).await;
    let s2 = session(e.addr(), r#"{"TTL":"10s"}"#).await;
    call(
        e.addr(),
        "PUT",
        &format!("/v1/kv/s/leader?acquire={s1}"),
        "n1",
    )
    .await;
    assert_eq!(
        call(
            e.addr(),
            "PUT",
            &format!("/v1/kv/s/leader?release={s2}"),
            "n1"
        )
        .await
        .body,
        "false"
    );
    let before = e.get_raw("s/leader").unwrap();
    assert_eq!(
        call(
            e.addr(),
            "PUT",
            &format!("/v1/kv/s/leader?release={s1}"),
            "n1"
        )
        .await
        .body,
        "true"
    );
    let after = e.get_raw("s/leader").unwrap();
    assert_eq!(after.session, None);
    assert_eq!(after.lock_index, before.lock_index);
    assert!(after.modify_index > before.modify_index);
}

// ---- transactions ------------------------------------------------------------

/// txn.mdx: "If any operation fails, the transaction is rolled back and
/// none of the changes are applied." / "a status code of 409 will be
/// returned if it was rolled back" with `Errors`: "The `OpIndex` gives the
/// index of the failed operation in the transaction". `check-index`: "Fail
/// if modify index != index"; `check-not-exists`: "Fail if key exists".
#[tokio::test]
async fn txn_is_all_or_nothing() {
    let e = emulator().await;
    call(e.addr(), "PUT", "/v1/kv/s/leader", "by-hand").await;
    let m = e.get_raw("s/leader").unwrap().modify_index;
    let body = format!(
        r#"[{{"KV":{{"Verb":"set","Key":"s/other","Value":"eA=="}}}},
            {{"KV":{{"Verb":"check-index","Key":"s/leader","Index":{}}}}},
            {{"KV":{{"Verb":"delete","Key":"s/leader"}}}}]"#,
        m + 1
    );
    let a = call(e.addr(), "PUT", "/v1/txn", &body).await;
    assert_eq!(a.status, 409, "{a:?}");
    let errors = a.json()["Errors"].clone();
    assert_eq!(errors[0]["OpIndex"], 1, "{a:?}");
    assert!(
        errors[0]["What"].as_str().unwrap().contains("index"),
        "{a:?}"
    );
    assert!(e.get_raw("s/other").is_none(), "rolled back");
    assert_eq!(e.get_raw("s/leader").unwrap().modify_index, m);
    let a = call(
        e.addr(),
        "PUT",
        "/v1/txn",
        r#"[{"KV":{"Verb":"check-not-exists","Key":"s/leader"}}]"#,
    )
    .await;
    assert_eq!(a.status, 409, "{a:?}");
    // At the right index, every operation applies.
    let body = format!(
        r#"[{{"KV":{{"Verb":"check-index","Key":"s/leader","Index":{m}}}}},
            {{"KV":{{"Verb":"delete","Key":"s/leader"}}}},
            {{"KV":{{"Verb":"set","Key":"s/other","Value":"eA=="}}}}]"#
    );
    let a = call(e.addr(), "PUT", "/v1/txn", &body).await;
    assert_eq!(a.status, 200, "{a:?}");
    assert!(e.get_raw("s/leader").is_none());
    assert_eq!(e.get_raw("s/other").unwrap().value, b"x");
    // "no result entries will be added for verbs that delete keys".
    let results = a.json()["Results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 2, "{a:?}");
}

/// txn.mdx, `lock`: "Lock with the given `Session`" (kv.mdx, `acquire`:
/// "If the lock is not held and the session is valid, this increments the
/// `LockIndex` and sets the `Session` value of the key"); a lock held by
/// another session fails the transaction. "the `Value` for KV results will
/// be `null` for any `Verb` other than "get"". A `PUT /v1/kv` cannot do the
/// same: `cas` and `acquire` are conflicting flags (see above).
#[tokio::test]
async fn txn_lock_after_check_index() {
    let e = emulator().await;
    let s1 = session(e.addr(), r#"{"TTL":"10s"}"#).await;
    let s2 = session(e.addr(), r#"{"TTL":"10s"}"#).await;
    call(e.addr(), "PUT", "/v1/kv/s/leader", "by-hand").await;
    let m = e.get_raw("s/leader").unwrap().modify_index;
    let lock = |session: &str, index: u64| {
        format!(
            r#"[{{"KV":{{"Verb":"check-index","Key":"s/leader","Index":{index}}}}},
                {{"KV":{{"Verb":"lock","Key":"s/leader","Value":"bjE=","Flags":{index},"Session":"{session}"}}}}]"#
        )
    };
    let a = call(e.addr(), "PUT", "/v1/txn", &lock(&s1, m)).await;
    assert_eq!(a.status, 200, "{a:?}");
    let held = e.get_raw("s/leader").unwrap();
    assert_eq!(held.value, b"n1");
    assert_eq!(held.session.as_deref(), Some(s1.as_str()));
    assert_eq!(held.lock_index, 1);
    assert!(held.modify_index > m);
    let results = a.json()["Results"].clone();
    assert_eq!(results[1]["KV"]["Session"], s1.as_str(), "{a:?}");
    assert_eq!(results[1]["KV"]["Value"], Value::Null, "{a:?}");
    assert_eq!(results[1]["KV"]["ModifyIndex"], held.modify_index);
    // Held by s1: s2 cannot lock it, even at the right index.
    let a = call(e.addr(), "PUT", "/v1/txn", &lock(&s2, held.modify_index)).await;
    assert_eq!(a.status, 409, "{a:?}");
    assert_eq!(a.json()["Errors"][0]["OpIndex"], 1, "{a:?}");
    assert_eq!(
        e.get_raw("s/leader").unwrap().session.as_deref(),
        Some(s1.as_str())
    );
    // An invalid session fails the lock.
    let a = call(
        e.addr(),
        "PUT",
        "/v1/txn",
        &lock("00000000-0000-0000-0000-000000000000", held.modify_index),
    )
    .await;
    assert_eq!(a.status, 409, "{a:?}");
    assert!(
        a.json()["Errors"][0]["What"]
            .as_str()
            .unwrap()
            .starts_with("invalid session"),
        "{a:?}"
    );
}

// ---- sessions --------------------------------------------------------------

/// sessions overview: "The contract of a TTL is that it represents a lower
/// bound for invalidation; that is, Consul will not expire the session
/// before the TTL is reached, but it is allowed to delay the expiration
/// past the TTL." / session.mdx: "sessions may not be reaped for up to
/// double this TTL". Default: invalidated at 2×TTL, as Consul's leader does.
#[tokio::test]
async fn ttl_is_a_lower_bound_and_twice_it_the_upper() {
    let e = emulator().await;
    let id = session(e.addr(), r#"{"TTL":"10s","Behavior":"delete"}"#).await;
    call(
        e.addr(),
        "PUT",
        &format!("/v1/kv/s/members/n1?acquire={id}"),
        "{}",
    )
    .await;
    e.clock().advance(Duration::from_millis(9_900));
    assert!(e.get_raw("s/members/n1").is_some(), "not before the TTL");
    e.clock().advance(Duration::from_millis(10_000));
    assert!(e.get_raw("s/members/n1").is_some(), "2×TTL not yet reached");
    e.clock().advance(Duration::from_millis(200));
    assert!(e.get_raw("s/members/n1").is_none(), "gone by 2×TTL");
    let r = call(e.addr(), "PUT", &format!("/v1/session/renew/{id}"), "").await;
    assert_eq!(r.status, 404, "{r:?}");
}

/// The same lower bound at its tightest (`ttl_multiplier` 1.0): gone right
/// after the TTL, never before.
#[tokio::test]
async fn earliest_allowed_invalidation_is_the_ttl() {
    let mut config = EmulatorConfig::for_tests();
    config.store.ttl_multiplier = 1.0;
    let e = ConsulEmulator::start(config).await.unwrap();
    let id = session(e.addr(), r#"{"TTL":"10s","Behavior":"delete"}"#).await;
    call(
        e.addr(),
        "PUT",
        &format!("/v1/kv/s/leader?acquire={id}"),
        "n1",
    )
    .await;
    e.clock().advance(Duration::from_millis(9_900));
    assert!(e.get_raw("s/leader").is_some());
    e.clock().advance(Duration::from_millis(200));
    assert!(e.get_raw("s/leader").is_none());
}

/// session.mdx, Renew Session: "This is used with sessions that have a TTL,
/// and it extends the expiration by the TTL." A session that is gone is
/// answered 404 (agent/session_endpoint.go: "Session id '%s' not found").
#[tokio::test]
async fn renew_extends_and_404_when_gone() {
    let e = emulator().await;
    let id = session(e.addr(), r#"{"TTL":"10s","Behavior":"delete"}"#).await;
    for _ in 0..3 {
        e.clock().advance(Duration::from_secs(15));
        let r = call(e.addr(), "PUT", &format!("/v1/session/renew/{id}"), "").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json()[0]["TTL"], "10s");
    }
    e.clock().advance(Duration::from_secs(21));
    let r = call(e.addr(), "PUT", &format!("/v1/session/renew/{id}"), "").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body, format!("Session id '{id}' not found"));
}

/// session.mdx, `Behavior`: "`release` - causes any locks that are held to
/// be released; `delete` - causes any locks that are held to be deleted".
/// Sessions overview: "If the `release` behavior is being used, any of the
/// locks held in association with the session are released, and the
/// `ModifyIndex` of the key is incremented."
#[tokio::test]
async fn behaviors_on_invalidation() {
    let e = emulator().await;
    let del = session(e.addr(), r#"{"TTL":"10s","Behavior":"delete"}"#).await;
    let rel = session(e.addr(), r#"{"TTL":"10s"}"#).await;
    call(e.addr(), "PUT", &format!("/v1/kv/s/a?acquire={del}"), "x").await;
    call(e.addr(), "PUT", &format!("/v1/kv/s/b?acquire={rel}"), "y").await;
    let before = e.get_raw("s/b").unwrap().modify_index;
    // Sessions overview: the session is invalidated when "Session is
    // explicitly destroyed".
    call(e.addr(), "PUT", &format!("/v1/session/destroy/{del}"), "").await;
    call(e.addr(), "PUT", &format!("/v1/session/destroy/{rel}"), "").await;
    assert!(e.get_raw("s/a").is_none());
    let b = e.get_raw("s/b").unwrap();
    assert_eq!(b.session, None);
    assert!(b.modify_index > before);
}

/// Sessions overview: "When a session invalidation takes place, Consul
/// prevents any of the previously held locks from being re-acquired for
/// the `lock-delay` interval" ... "clients are able to disable this
/// mechanism by providing a zero delay value." Default 15 s (session.mdx:
/// "`LockDelay` (string: "15s")").
#[tokio::test]
async fn lock_delay_after_invalidation() {
    let e = emulator().await;
    let old = session(e.addr(), r#"{"TTL":"10s"}"#).await;
    let new = session(e.addr(), r#"{"TTL":"10s"}"#).await;
    call(
        e.addr(),
        "PUT",
        &format!("/v1/kv/s/leader?acquire={old}"),
        "n1",
    )
    .await;
    call(e.addr(), "PUT", &format!("/v1/session/destroy/{old}"), "").await;
    let k = format!("/v1/kv/s/leader?acquire={new}");
    assert_eq!(
        call(e.addr(), "PUT", &k, "n2").await.body,
        "false",
        "lock-delay"
    );
    e.clock().advance(Duration::from_secs(16));
    call(e.addr(), "PUT", &format!("/v1/session/renew/{new}"), "").await;
    assert_eq!(call(e.addr(), "PUT", &k, "n2").await.body, "true");
    // Patroni's 1 ms lock-delay, written as a float of seconds.
    let quick = session(
        e.addr(),
        r#"{"ttl":"10.0s","lockdelay":"0.001s","behavior":"delete","checks":[]}"#,
    )
    .await;
    call(e.addr(), "PUT", &format!("/v1/kv/s/m?acquire={quick}"), "q").await;
    call(e.addr(), "PUT", &format!("/v1/session/destroy/{quick}"), "").await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(
        call(e.addr(), "PUT", &format!("/v1/kv/s/m?acquire={new}"), "q")
            .await
            .body,
        "true"
    );
}

/// session.mdx, `TTL`: "Specifies the duration of a session (between 10s
/// and 86400s)." The lower end is the agent's `session_ttl_min`; outside
/// the range the create fails with Consul's message.
#[tokio::test]
async fn ttl_out_of_range_is_refused() {
    let e = ConsulEmulator::start(EmulatorConfig::default())
        .await
        .unwrap();
    let a = call(e.addr(), "PUT", "/v1/session/create", r#"{"TTL":"5s"}"#).await;
    assert_eq!(a.status, 500);
    assert_eq!(
        a.body,
        "Invalid Session TTL '5000000000', must be between [10s=24h0m0s]"
    );
    let a = call(e.addr(), "PUT", "/v1/session/create", r#"{"TTL":"25h"}"#).await;
    assert_eq!(a.status, 500);
    let a = call(e.addr(), "PUT", "/v1/session/create", r#"{"TTL":"soon"}"#).await;
    assert_eq!(a.status, 500);
    assert!(e.sessions().is_empty());
}

/// session.mdx, `Checks`: "Specifies a list of node health check IDs" and
/// "It is highly recommended that, if you override this list, you include
/// the default `serfHealth`." An empty list means no checks; a check the
/// node does not have is refused.
#[tokio::test]
async fn session_checks() {
    let e = emulator().await;
    let id = session(e.addr(), "").await;
    let info = call(e.addr(), "GET", &format!("/v1/session/info/{id}"), "").await;
    assert_eq!(
        info.json()[0]["NodeChecks"],
        serde_json::json!(["serfHealth"])
    );
    assert_eq!(info.json()[0]["LockDelay"], 15_000_000_000u64);
    let id = session(e.addr(), r#"{"checks":[]}"#).await;
    let info = call(e.addr(), "GET", &format!("/v1/session/info/{id}"), "").await;
    assert_eq!(info.json()[0]["NodeChecks"], serde_json::json!([]));
    let a = call(
        e.addr(),
        "PUT",
        "/v1/session/create",
        r#"{"Checks":["service:pg"]}"#,
    )
    .await;
    assert_eq!(a.status, 500);
}

/// session.mdx, Delete Session: "If the session UUID does not exist or
/// already expired, a 200 is still returned (the operation is idempotent)."
/// Read Session: "If the session does not exist, an empty JSON list `[]` is
/// returned."
#[tokio::test]
async fn destroy_is_idempotent_and_info_of_nothing_is_empty() {
    let e = emulator().await;
    let a = call(e.addr(), "PUT", "/v1/session/destroy/nope", "").await;
    assert_eq!((a.status, a.body.as_str()), (200, "true"));
    let a = call(e.addr(), "GET", "/v1/session/info/nope", "").await;
    assert_eq!((a.status, a.body.as_str()), (200, "[]"));
}

// ---- blocking queries --------------------------------------------------------

/// blocking.mdx: "When this is provided, the HTTP request will "hang" until
/// a change in the system occurs, or the maximum timeout is reached." And
/// "A small random amount of additional wait time is added to the supplied
/// maximum `wait` time ... This adds up to `wait / 16` additional time to
/// the maximum duration."
#[tokio::test]
async fn blocking_query_waits_for_a_change_or_the_wait() {
    let e = emulator().await;
    call(e.addr(), "PUT", "/v1/kv/s/leader", "n1").await;
    let a = call(e.addr(), "GET", "/v1/kv/s/leader", "").await;
    let index = a.index.unwrap();
    let start = Instant::now();
    let b = call(
        e.addr(),
        "GET",
        &format!("/v1/kv/s/leader?index={index}&wait=1s"),
        "",
    )
    .await;
    let took = start.elapsed();
    assert_eq!(b.index, Some(index));
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(1062 + 300),
        "{took:?}"
    );
    // A change wakes it at once.
    let addr = e.addr();
    let waiter = tokio::spawn(async move {
        let start = Instant::now();
        let r = call(
            addr,
            "GET",
            &format!("/v1/kv/s/leader?index={index}&wait=10s"),
            "",
        )
        .await;
        (r, start.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    call(e.addr(), "PUT", "/v1/kv/s/leader", "n2").await;
    let (r, took) = waiter.await.unwrap();
    assert!(r.index.unwrap() > index);
    assert!(took < Duration::from_secs(2), "{took:?}");
    // Bad parameters are refused.
    assert_eq!(
        call(e.addr(), "GET", "/v1/kv/s/leader?index=x", "")
            .await
            .status,
        400
    );
    assert_eq!(
        call(e.addr(), "GET", "/v1/kv/s/leader?index=1&wait=forever", "")
            .await
            .status,
        400
    );
}

/// blocking.mdx: "It is _always_ safe to use an index of `1` to wait for
/// updates when the data being requested doesn't exist yet". A blocking
/// read of a missing key wakes when the key's session expires and deletes
/// it (session.mdx: "the session is invalidated if it is not renewed
/// before the TTL expires").
#[tokio::test]
async fn blocking_query_wakes_when_an_expiring_session_deletes_the_key() {
    let e = emulator().await;
    let fresh = call(e.addr(), "GET", "/v1/kv/s/nothing", "").await;
    assert!(fresh.index.unwrap() >= 1);
    let id = session(
        e.addr(),
        r#"{"TTL":"1s","Behavior":"delete","LockDelay":"1ms"}"#,
    )
    .await;
    call(
        e.addr(),
        "PUT",
        &format!("/v1/kv/s/leader?acquire={id}"),
        "n1",
    )
    .await;
    let index = call(e.addr(), "GET", "/v1/kv/s/leader", "")
        .await
        .index
        .unwrap();
    let start = Instant::now();
    let r = call(
        e.addr(),
        "GET",
        &format!("/v1/kv/s/leader?index={index}&wait=10s"),
        "",
    )
    .await;
    assert_eq!(r.status, 404);
    assert!(r.index.unwrap() > index);
    // Invalidated at 2×TTL = 2 s after creation.
    assert!(
        start.elapsed() < Duration::from_millis(2500),
        "{:?}",
        start.elapsed()
    );
}

/// blocking.mdx: "**Reset the index if it goes backwards**. ... Cases
/// where this can occur include: If a raft snapshot is restored on the
/// servers with older version of the data." A blocking query in flight
/// answers at once from the restored state (agent/consul/rpc.go: "If a
/// restore may have woken us up then bail out from the query
/// immediately").
#[tokio::test]
async fn restored_snapshot_sends_the_index_backwards() {
    let e = emulator().await;
    call(e.addr(), "PUT", "/v1/kv/s/leader", "n1").await;
    let snapshot = e.snapshot();
    for i in 0..5 {
        call(e.addr(), "PUT", "/v1/kv/s/leader", &format!("n{i}")).await;
    }
    let index = call(e.addr(), "GET", "/v1/kv/s/leader", "")
        .await
        .index
        .unwrap();
    let addr = e.addr();
    let waiter = tokio::spawn(async move {
        let start = Instant::now();
        let r = call(
            addr,
            "GET",
            &format!("/v1/kv/s/leader?index={index}&wait=10s"),
            "",
        )
        .await;
        (r, start.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    e.restore(&snapshot);
    let (r, took) = waiter.await.unwrap();
    assert!(r.index.unwrap() < index, "{r:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert_eq!(entry(&r)["Value"], "bjE=");
}

// ---- agent, ACL, dc ------------------------------------------------------------

/// agent/index.mdx, Read Configuration: "The `Config` element contains a
/// subset of the configuration ... `DebugConfig` contains the full runtime
/// configuration".
#[tokio::test]
async fn agent_self_has_config_and_debug_config() {
    let e = emulator().await;
    let a = call(e.addr(), "GET", "/v1/agent/self", "").await;
    let v = a.json();
    assert_eq!(v["Config"]["Datacenter"], "dc1");
    assert!(v["Config"].get("SessionTTLMin").is_none());
    assert_eq!(v["DebugConfig"]["SessionTTLMin"], "1s");
}

/// api-docs/index.mdx, Authentication: "When authentication is enabled, a
/// Consul token should be provided to API requests using the
/// `X-Consul-Token` header or with the Bearer scheme in the authorization
/// header." Without a valid one, requests are refused (403). Only the token
/// gate is emulated, not policies.
#[tokio::test]
async fn acl_token_gate() {
    let mut config = EmulatorConfig::for_tests();
    config.acl_token = Some("s3cret".into());
    let e = ConsulEmulator::start(config).await.unwrap();
    assert_eq!(call(e.addr(), "GET", "/v1/kv/k", "").await.status, 403);
    let a = call_with(
        e.addr(),
        "GET",
        "/v1/kv/k",
        "",
        &[("X-Consul-Token", "nope")],
    )
    .await;
    assert_eq!((a.status, a.body.as_str()), (403, "ACL not found"));
    let a = call_with(
        e.addr(),
        "GET",
        "/v1/kv/k",
        "",
        &[("X-Consul-Token", "s3cret")],
    )
    .await;
    assert_eq!(a.status, 404);
    let a = call_with(
        e.addr(),
        "GET",
        "/v1/kv/k",
        "",
        &[("Authorization", "Bearer s3cret")],
    )
    .await;
    assert_eq!(a.status, 404);
}

/// kv.mdx, `dc`: "Specifies the datacenter to query. This will default to
/// the datacenter of the agent being queried." / Delete Key: "gives "No
/// path to datacenter" error when dc is invalid."
#[tokio::test]
async fn unknown_datacenter() {
    let e = emulator().await;
    assert_eq!(
        call(e.addr(), "GET", "/v1/kv/k?dc=dc1", "").await.status,
        404
    );
    let a = call(e.addr(), "DELETE", "/v1/kv/k?dc=mars", "").await;
    assert_eq!((a.status, a.body.as_str()), (500, "No path to datacenter"));
}

// ---- test switches -----------------------------------------------------------------

/// Fault switches: a hung server answers nothing until released; a status
/// fault answers without applying (429: "rate limit exceeded" as Consul's
/// rate limiter; 500: as with "No cluster leader").
#[tokio::test]
async fn faults_hang_and_status() {
    let e = emulator().await;
    e.faults().set(Fault::Hang);
    let addr = e.addr();
    let hung = tokio::spawn(async move { call(addr, "PUT", "/v1/kv/s/k", "v").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!hung.is_finished());
    e.faults().clear();
    assert_eq!(hung.await.unwrap().status, 200);

    e.faults().fail_next(2, 429, "rate limit exceeded");
    assert_eq!(call(e.addr(), "PUT", "/v1/kv/s/k", "w").await.status, 429);
    assert_eq!(call(e.addr(), "PUT", "/v1/kv/s/k", "w").await.status, 429);
    assert_eq!(e.get_raw("s/k").unwrap().value, b"v", "not applied");
    assert_eq!(call(e.addr(), "PUT", "/v1/kv/s/k", "w").await.status, 200);
    e.faults().set(Fault::Status {
        status: 500,
        body: "No cluster leader".into(),
    });
    assert_eq!(call(e.addr(), "GET", "/v1/kv/s/k", "").await.status, 500);
    e.faults().clear();
}

/// Sessions overview: "The TTL is renewed on session creation, on session
/// renew, and on leader failover." A restart keeps the data and the port,
/// drops open connections, and starts every TTL afresh.
#[tokio::test]
async fn restart_keeps_data_and_renews_ttls() {
    let e = emulator().await;
    let id = session(e.addr(), r#"{"TTL":"10s","Behavior":"delete"}"#).await;
    call(
        e.addr(),
        "PUT",
        &format!("/v1/kv/s/leader?acquire={id}"),
        "n1",
    )
    .await;
    e.clock().advance(Duration::from_secs(19));
    e.restart().await.unwrap();
    e.clock().advance(Duration::from_secs(19));
    let a = call(e.addr(), "GET", "/v1/kv/s/leader", "").await;
    assert_eq!(a.status, 200, "the TTL started afresh at the restart");
    e.clock().advance(Duration::from_secs(2));
    assert_eq!(
        call(e.addr(), "GET", "/v1/kv/s/leader", "").await.status,
        404
    );
}

/// Requests for endpoints the emulator does not implement are answered 404
/// (and logged), so running a client against it shows what else it calls.
#[tokio::test]
async fn unknown_endpoints_are_404() {
    let e = emulator().await;
    let a = call(e.addr(), "GET", "/v1/catalog/nodes", "").await;
    assert_eq!(a.status, 404);
    assert!(a.body.contains("not implemented"));
}
