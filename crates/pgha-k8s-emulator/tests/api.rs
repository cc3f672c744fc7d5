//! The emulator against the Kubernetes documentation: each test quotes the
//! sentence the behaviour it checks comes from (failure cases included).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use pgha_k8s_emulator::{Emulator, Resource};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

struct Api {
    emu: Emulator,
    http: Client<HttpConnector, Full<Bytes>>,
}

struct Answer {
    status: StatusCode,
    headers: hyper::HeaderMap,
    body: Value,
}

impl Api {
    async fn start() -> Api {
        Api {
            emu: Emulator::start_local().await.unwrap(),
            http: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Option<Value>,
    ) -> Answer {
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.emu.url()))
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(5), self.http.request(req))
            .await
            .unwrap()
            .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, "application/json", None).await
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        self.call(Method::POST, path, "application/json", Some(body))
            .await
    }

    async fn put(&self, path: &str, body: Value) -> Answer {
        self.call(Method::PUT, path, "application/json", Some(body))
            .await
    }

    async fn merge(&self, path: &str, body: Value) -> Answer {
        self.call(
            Method::PATCH,
            path,
            "application/merge-patch+json",
            Some(body),
        )
        .await
    }

    async fn strategic(&self, path: &str, body: Value) -> Answer {
        self.call(
            Method::PATCH,
            path,
            "application/strategic-merge-patch+json",
            Some(body),
        )
        .await
    }

    async fn cm(&self, name: &str, labels: Value) -> Answer {
        self.post(
            "/api/v1/namespaces/ns1/configmaps",
            json!({"metadata": {"name": name, "labels": labels}}),
        )
        .await
    }

    /// Opens a watch and returns a reader of its events.
    async fn watch(&self, query: &str) -> Events {
        let mut s = TcpStream::connect(self.emu.addr()).await.unwrap();
        let req = format!(
            "GET /api/v1/namespaces/ns1/configmaps?watch=true&{query} HTTP/1.1\r\nHost: x\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).await.unwrap();
        assert!(line.contains("200"), "watch answered {line}");
        // headers
        loop {
            line.clear();
            r.read_line(&mut line).await.unwrap();
            if line == "\r\n" {
                break;
            }
        }
        Events { r }
    }
}

fn rv(v: &Value) -> String {
    v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string()
}

struct Events {
    r: BufReader<TcpStream>,
}

impl Events {
    /// The next event, or `None` at the end of the stream (or after 3 s).
    async fn next(&mut self) -> Option<Value> {
        tokio::time::timeout(Duration::from_secs(3), async {
            // One event per chunk: its size line, the JSON line, the CRLF.
            let mut line = String::new();
            if self.r.read_line(&mut line).await.ok()? == 0 {
                return None;
            }
            let size = usize::from_str_radix(line.trim(), 16).ok()?;
            if size == 0 {
                return None;
            }
            line.clear();
            self.r.read_line(&mut line).await.ok()?;
            let v: Value = serde_json::from_str(line.trim()).ok()?;
            let mut crlf = String::new();
            self.r.read_line(&mut crlf).await.ok()?;
            Some(v)
        })
        .await
        .ok()
        .flatten()
    }
}

/// "409 StatusConflict: Indicates that either the resource the client
/// attempted to create already exists or the requested update operation
/// cannot be completed due to a conflict." (API conventions, HTTP status codes)
#[tokio::test]
async fn creating_an_existing_object_is_409_already_exists() {
    let api = Api::start().await;
    let a = api.cm("demo-leader", json!({"cluster-name": "demo"})).await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(a.body["kind"], "ConfigMap");
    assert!(!rv(&a.body).is_empty());
    let again = api.cm("demo-leader", json!({})).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(again.body["reason"], "AlreadyExists");
    assert_eq!(again.body["kind"], "Status");
}

/// "When a record is about to be updated, it's version is checked against a
/// pre-saved value, and if it doesn't match, the update fails with a
/// StatusConflict (HTTP status code 409)." and "The resourceVersion is
/// changed by the server every time an object is modified." (API
/// conventions, Concurrency Control and Consistency)
#[tokio::test]
async fn stale_resource_version_is_409_conflict_and_every_change_moves_it() {
    let api = Api::start().await;
    let created = api.cm("demo-config", json!({})).await.body;
    let v1 = rv(&created);
    let path = "/api/v1/namespaces/ns1/configmaps/demo-config";
    let ok = api
        .merge(
            path,
            json!({"metadata": {"resourceVersion": v1, "annotations": {"config": "{}"}}}),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    let v2 = rv(&ok.body);
    assert_ne!(v1, v2);
    let stale = api
        .merge(
            path,
            json!({"metadata": {"resourceVersion": v1, "annotations": {"config": "x"}}}),
        )
        .await;
    assert_eq!(stale.status, StatusCode::CONFLICT);
    assert_eq!(stale.body["reason"], "Conflict");
    assert_eq!(
        api.get(path).await.body["metadata"]["annotations"]["config"],
        "{}"
    );
    // PUT with a stale version, too
    let mut body = ok.body.clone();
    body["metadata"]["resourceVersion"] = json!(v1);
    assert_eq!(api.put(path, body).await.status, StatusCode::CONFLICT);
    // and a PATCH without a version is unconditional
    let any = api
        .merge(path, json!({"metadata": {"annotations": {"config": "y"}}}))
        .await;
    assert_eq!(any.status, StatusCode::OK);
    assert_ne!(rv(&any.body), v2);
}

/// "The resourceVersion is changed by the server every time an object is
/// modified." (API conventions): a write that modifies nothing is not a
/// modification, so the version stays (kube-apiserver skips no-op updates;
/// kubernetes/kubernetes#67541).
#[tokio::test]
async fn a_write_that_changes_nothing_keeps_the_version() {
    let api = Api::start().await;
    api.cm("demo-sync", json!({})).await;
    let path = "/api/v1/namespaces/ns1/configmaps/demo-sync";
    let a = api
        .merge(path, json!({"metadata": {"annotations": {"leader": "a"}}}))
        .await;
    let b = api
        .merge(
            path,
            json!({"metadata": {"resourceVersion": rv(&a.body), "annotations": {"leader": "a"}}}),
        )
        .await;
    assert_eq!(b.status, StatusCode::OK);
    assert_eq!(rv(&a.body), rv(&b.body));
}

/// "Null values in the merge patch are given special meaning to indicate
/// the removal of existing values in the target." (RFC 7386, the
/// `application/merge-patch+json` the API accepts; the strategic merge patch
/// treats maps the same way)
#[tokio::test]
async fn merge_and_strategic_patches_delete_with_null() {
    let api = Api::start().await;
    api.cm("demo-failover", json!({"a": "1"})).await;
    let path = "/api/v1/namespaces/ns1/configmaps/demo-failover";
    let p = api
        .merge(
            path,
            json!({"metadata": {"annotations": {"leader": "n1", "member": "n2"}}}),
        )
        .await;
    assert_eq!(
        p.body["metadata"]["annotations"],
        json!({"leader": "n1", "member": "n2"})
    );
    let p = api
        .strategic(
            path,
            json!({"metadata": {"annotations": {"leader": null}, "labels": {"a": null, "b": "2"}}}),
        )
        .await;
    assert_eq!(p.status, StatusCode::OK);
    assert_eq!(p.body["metadata"]["annotations"], json!({"member": "n2"}));
    assert_eq!(p.body["metadata"]["labels"], json!({"b": "2"}));
    let p = api
        .merge(path, json!({"metadata": {"annotations": {"member": null}}}))
        .await;
    assert!(p.body["metadata"].get("annotations").is_none());
    // JSON patch is not emulated: refused, not misread
    let jp = api
        .call(
            Method::PATCH,
            path,
            "application/json-patch+json",
            Some(json!([])),
        )
        .await;
    assert_eq!(jp.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // patching what is not there
    let missing = api
        .merge("/api/v1/namespaces/ns1/configmaps/nope", json!({}))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.body["reason"], "NotFound");
}

/// "Equality- or inequality-based requirements allow filtering by label keys
/// and values. Matching objects must satisfy all of the specified label
/// constraints, though they may have additional labels as well." and
/// "Set-based label requirements allow filtering keys according to a set of
/// values." (Labels and Selectors)
#[tokio::test]
async fn label_selectors_filter_lists() {
    let api = Api::start().await;
    api.cm(
        "a",
        json!({"app": "pg", "cluster-name": "demo", "role": "primary"}),
    )
    .await;
    api.cm(
        "b",
        json!({"app": "pg", "cluster-name": "demo", "role": "replica"}),
    )
    .await;
    api.cm("c", json!({"app": "pg", "cluster-name": "other"}))
        .await;
    let names = |a: &Answer| -> Vec<String> {
        a.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let q = |sel: &str| {
        format!(
            "/api/v1/namespaces/ns1/configmaps?labelSelector={}",
            sel.replace(' ', "+")
                .replace('=', "%3D")
                .replace(',', "%2C")
        )
    };
    assert_eq!(
        names(&api.get(&q("app=pg,cluster-name=demo")).await),
        ["a", "b"]
    );
    assert_eq!(
        names(&api.get(&q("cluster-name=demo,role!=replica")).await),
        ["a"]
    );
    assert_eq!(
        names(&api.get(&q("role notin (primary)")).await),
        ["b", "c"]
    );
    assert_eq!(
        names(&api.get(&q("role in (primary,replica)")).await),
        ["a", "b"]
    );
    assert_eq!(names(&api.get(&q("!role")).await), ["c"]);
    let bad = api.get(&q("role in (")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    // list items carry no kind of their own; the list has one
    let all = api.get("/api/v1/namespaces/ns1/configmaps").await;
    assert_eq!(all.body["kind"], "ConfigMapList");
    assert!(all.body["items"][0].get("kind").is_none());
}

/// "The server will return all changes (creates, deletes, and updates) that
/// occur after the supplied resourceVersion." (API Concepts, Efficient
/// detection of changes); "LIST and WATCH operations may specify label
/// selectors to filter the sets of objects returned" (Labels and Selectors)
#[tokio::test]
async fn watch_from_a_list_version_sees_every_later_change() {
    let api = Api::start().await;
    api.cm("before", json!({"cluster-name": "demo"})).await;
    let list = api.get("/api/v1/namespaces/ns1/configmaps").await;
    let from = rv(&list.body);
    let mut w = api
        .watch(&format!(
            "resourceVersion={from}&labelSelector=cluster-name%3Ddemo"
        ))
        .await;
    api.cm("x", json!({"cluster-name": "demo"})).await;
    api.cm("ignored", json!({"cluster-name": "other"})).await;
    api.merge(
        "/api/v1/namespaces/ns1/configmaps/x",
        json!({"metadata": {"annotations": {"k": "v"}}}),
    )
    .await;
    // leaving the selection is reported as a deletion
    api.merge(
        "/api/v1/namespaces/ns1/configmaps/x",
        json!({"metadata": {"labels": {"cluster-name": "gone"}}}),
    )
    .await;
    api.call(
        Method::DELETE,
        "/api/v1/namespaces/ns1/configmaps/before",
        "application/json",
        None,
    )
    .await;
    let mut seen = Vec::new();
    for _ in 0..4 {
        let e = w.next().await.unwrap();
        seen.push(format!(
            "{} {}",
            e["type"].as_str().unwrap(),
            e["object"]["metadata"]["name"].as_str().unwrap()
        ));
        assert_eq!(e["object"]["kind"], "ConfigMap");
    }
    assert_eq!(
        seen,
        ["ADDED x", "MODIFIED x", "DELETED x", "DELETED before"]
    );
}

/// "Get State and Start at Most Recent: ... To establish initial state, the
/// watch begins with synthetic “Added” events of all resources instances
/// that exist at the starting resource version." (API Concepts, The
/// ResourceVersion Parameter)
#[tokio::test]
async fn watch_without_a_version_starts_with_synthetic_added_events() {
    let api = Api::start().await;
    api.cm("one", json!({})).await;
    api.cm("two", json!({})).await;
    let mut w = api.watch("").await;
    assert_eq!(w.next().await.unwrap()["object"]["metadata"]["name"], "one");
    let e = w.next().await.unwrap();
    assert_eq!(
        (e["type"].as_str(), e["object"]["metadata"]["name"].as_str()),
        (Some("ADDED"), Some("two"))
    );
    api.cm("three", json!({})).await;
    assert_eq!(
        w.next().await.unwrap()["object"]["metadata"]["name"],
        "three"
    );
}

/// "When the requested watch operations fail because the historical version
/// of that resource is not available, clients must handle the case by
/// recognizing the status code 410 Gone" and "Clusters using etcd3 preserve
/// changes in the last 5 minutes by default." (API Concepts)
#[tokio::test]
async fn a_compacted_version_is_410_gone() {
    let api = Api::start().await;
    let first = rv(&api.cm("old", json!({})).await.body);
    api.cm("newer", json!({})).await;
    // five minutes pass on the emulator's clock; the next write compacts
    api.emu.clock().advance(Duration::from_secs(301));
    api.cm("newest", json!({})).await;
    let mut w = api.watch(&format!("resourceVersion={first}")).await;
    let e = w.next().await.unwrap();
    assert_eq!(e["type"], "ERROR");
    assert_eq!(e["object"]["code"], 410);
    assert_eq!(e["object"]["reason"], "Expired");
    assert!(w.next().await.is_none(), "the stream ends after the error");
    // compaction by the switch, and the forced-410 switch
    let now = api.emu.resource_version();
    api.emu.compact();
    api.cm("after", json!({})).await;
    let mut w = api.watch(&format!("resourceVersion={}", now - 1)).await;
    assert_eq!(w.next().await.unwrap()["object"]["code"], 410);
    api.emu.faults().gone_next_watches(1);
    let mut w = api
        .watch(&format!("resourceVersion={}", api.emu.resource_version()))
        .await;
    assert_eq!(w.next().await.unwrap()["object"]["code"], 410);
    let mut w = api
        .watch(&format!("resourceVersion={}", api.emu.resource_version()))
        .await;
    api.cm("fine", json!({})).await;
    assert_eq!(w.next().await.unwrap()["type"], "ADDED");
}

/// "timeoutSeconds: Timeout for the list/watch call. This limits the
/// duration of the call, regardless of any activity or inactivity." (API
/// reference, list/watch parameters); "Bookmark events can be requested by
/// allowWatchBookmarks=true option in watch requests" (API Concepts)
#[tokio::test]
async fn watch_timeout_ends_the_stream_with_a_bookmark() {
    let api = Api::start().await;
    let v = api.emu.resource_version();
    let mut w = api
        .watch(&format!(
            "resourceVersion={v}&timeoutSeconds=1&allowWatchBookmarks=true"
        ))
        .await;
    let started = std::time::Instant::now();
    let e = w.next().await.unwrap();
    assert_eq!(e["type"], "BOOKMARK");
    assert_eq!(rv(&e["object"]), v.to_string());
    assert!(w.next().await.is_none());
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// "the server will return up to limit resources in the result and include a
/// continue value if there are more resources in the collection" (API
/// Concepts, Retrieving large results sets in chunks)
#[tokio::test]
async fn lists_come_in_chunks() {
    let api = Api::start().await;
    for n in ["a", "b", "c"] {
        api.cm(n, json!({})).await;
    }
    let p1 = api
        .get("/api/v1/namespaces/ns1/configmaps?limit=2")
        .await
        .body;
    assert_eq!(p1["items"].as_array().unwrap().len(), 2);
    let token = p1["metadata"]["continue"].as_str().unwrap().to_string();
    let p2 = api
        .get(&format!(
            "/api/v1/namespaces/ns1/configmaps?limit=2&continue={token}"
        ))
        .await
        .body;
    assert_eq!(p2["items"].as_array().unwrap().len(), 1);
    assert_eq!(p2["items"][0]["metadata"]["name"], "c");
    assert!(p2["metadata"].get("continue").is_none());
    assert_eq!(
        p1["metadata"]["resourceVersion"],
        p2["metadata"]["resourceVersion"]
    );
}

/// "429 StatusTooManyRequests ... Suggested client recovery behavior: Read
/// the Retry-After HTTP header from the response, and wait at least that
/// long before retrying." and "500 StatusInternalServerError ... Suggested
/// client recovery behavior: Retry with exponential backoff." (API
/// conventions) — the fault switches answer so.
#[tokio::test]
async fn injected_429_and_5xx_answers() {
    let api = Api::start().await;
    api.emu.faults().fail_next(1, 429);
    let a = api.get("/api/v1/namespaces/ns1/configmaps").await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(a.headers.get("retry-after").unwrap(), "1");
    assert_eq!(a.body["reason"], "TooManyRequests");
    assert_eq!(
        api.get("/api/v1/namespaces/ns1/configmaps").await.status,
        StatusCode::OK
    );
    api.emu.faults().set_fail_all(Some(503));
    assert_eq!(
        api.get("/version").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    api.emu.faults().set_fail_all(None);
    assert_eq!(api.get("/version").await.status, StatusCode::OK);
}

/// "If the client watch is disconnected they can restart a new watch from
/// the last returned resourceVersion" (API Concepts) — the switches cut
/// streams and hang requests; a watch resumed after a cut sees what
/// happened meanwhile.
#[tokio::test]
async fn dropped_streams_and_hangs() {
    let api = Api::start().await;
    let v = api.emu.resource_version();
    let mut w = api.watch(&format!("resourceVersion={v}")).await;
    api.emu.faults().drop_watch_streams();
    assert!(w.next().await.is_none(), "stream cut");
    api.cm("meanwhile", json!({})).await;
    let mut w = api.watch(&format!("resourceVersion={v}")).await;
    assert_eq!(
        w.next().await.unwrap()["object"]["metadata"]["name"],
        "meanwhile"
    );

    api.emu.faults().set_hang(true);
    let hung = tokio::time::timeout(
        Duration::from_millis(500),
        api.http.request(
            Request::get(format!("{}/version", api.emu.url()))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        ),
    )
    .await;
    assert!(hung.is_err(), "a hung emulator does not answer");
    api.emu.faults().set_hang(false);
    assert_eq!(api.get("/version").await.status, StatusCode::OK);
}

/// A restart keeps the objects (etcd keeps them) but not the watch history:
/// "Servers are not required to serve all older resource versions and may
/// return a HTTP 410 (Gone) status code if a client requests a
/// resourceVersion older than the server has retained." (API Concepts)
#[tokio::test]
async fn restart_keeps_objects_and_forgets_history() {
    let api = Api::start().await;
    let v = rv(&api.cm("kept", json!({})).await.body);
    api.emu.restart().await.unwrap();
    let got = api.get("/api/v1/namespaces/ns1/configmaps/kept").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(rv(&got.body), v);
    let mut w = api
        .watch(&format!(
            "resourceVersion={}",
            v.parse::<u64>().unwrap() - 1
        ))
        .await;
    assert_eq!(w.next().await.unwrap()["object"]["code"], 410);
    let next = rv(&api.cm("after-restart", json!({})).await.body);
    assert!(next.parse::<u64>().unwrap() > v.parse::<u64>().unwrap());
}

/// "Valid label value: must be 63 characters or less (can be empty), unless
/// empty, must begin and end with an alphanumeric character ([a-z0-9A-Z]),
/// could contain dashes (-), underscores (_), dots (.), and alphanumerics
/// between." (Labels and Selectors, Syntax and character set)
#[tokio::test]
async fn invalid_labels_and_names_are_422() {
    let api = Api::start().await;
    assert_eq!(
        api.cm("ok", json!({"role": "standby_leader"})).await.status,
        StatusCode::CREATED
    );
    let bad = api.cm("bad", json!({"role": "not valid!"})).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad.body["reason"], "Invalid");
    let long = api.cm("long", json!({"role": "x".repeat(64)})).await;
    assert_eq!(long.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        api.cm("Upper", json!({})).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let notstring = api
        .post(
            "/api/v1/namespaces/ns1/configmaps",
            json!({"metadata": {"name": "n", "annotations": {"a": 1}}}),
        )
        .await;
    assert_eq!(notstring.status, StatusCode::BAD_REQUEST);
}

/// "preconditions: Must be fulfilled before a deletion is carried out. If
/// not possible, a 409 Conflict status will be returned." (API reference,
/// DeleteOptions)
#[tokio::test]
async fn delete_preconditions_and_collections() {
    let api = Api::start().await;
    let v = rv(&api.cm("x", json!({"cluster-name": "demo"})).await.body);
    api.cm("y", json!({"cluster-name": "demo"})).await;
    api.cm("z", json!({"cluster-name": "other"})).await;
    let path = "/api/v1/namespaces/ns1/configmaps/x";
    api.merge(path, json!({"metadata": {"annotations": {"a": "b"}}}))
        .await;
    let stale = api
        .call(
            Method::DELETE,
            path,
            "application/json",
            Some(json!({"preconditions": {"resourceVersion": v}})),
        )
        .await;
    assert_eq!(stale.status, StatusCode::CONFLICT);
    let coll = api
        .call(
            Method::DELETE,
            "/api/v1/namespaces/ns1/configmaps?labelSelector=cluster-name%3Ddemo",
            "application/json",
            None,
        )
        .await;
    assert_eq!(coll.status, StatusCode::OK);
    assert_eq!(coll.body["items"].as_array().unwrap().len(), 2);
    assert!(api.emu.object(Resource::ConfigMaps, "ns1", "z").is_some());
    assert!(api.emu.object(Resource::ConfigMaps, "ns1", "x").is_none());
}

/// Pod "status: Most recently observed status of the pod. This data may not
/// be up to date. Populated by the system. Read-only." (API reference, Pod)
/// — written through the status subresource only.
#[tokio::test]
async fn pod_status_is_the_systems() {
    let api = Api::start().await;
    let pods = "/api/v1/namespaces/ns1/pods";
    let p = api
        .post(pods, json!({"metadata": {"name": "n1"}, "spec": {"containers": []}, "status": {"podIP": "10.0.0.9"}}))
        .await;
    assert_eq!(p.status, StatusCode::CREATED);
    assert_eq!(p.body["status"], json!({"phase": "Pending"}));
    let p = api
        .merge(
            &format!("{pods}/n1"),
            json!({"status": {"podIP": "1.2.3.4"}, "metadata": {"annotations": {"status": "{}"}}}),
        )
        .await;
    assert_eq!(p.body["status"], json!({"phase": "Pending"}));
    assert_eq!(p.body["metadata"]["annotations"]["status"], "{}");
    let p = api
        .merge(
            &format!("{pods}/n1/status"),
            json!({"status": {"podIP": "10.0.0.9", "phase": "Running"}}),
        )
        .await;
    assert_eq!(p.body["status"]["podIP"], "10.0.0.9");
}

/// "Resource versions must be treated as opaque by clients and passed
/// unmodified back to the server." (API Concepts) — what the emulator
/// hands out are strings, and the discovery documents kube-rs and Patroni
/// may ask for are served.
#[tokio::test]
async fn versions_are_strings_and_discovery_answers() {
    let api = Api::start().await;
    let c = api.cm("s", json!({})).await.body;
    assert!(c["metadata"]["resourceVersion"].is_string());
    assert_eq!(api.get("/version").await.body["major"], "1");
    assert_eq!(api.get("/api").await.body["versions"], json!(["v1"]));
    let v1 = api.get("/api/v1").await.body;
    assert!(
        v1["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "endpoints")
    );
    assert_eq!(
        api.get("/api/v1/namespaces/ns1").await.body["status"]["phase"],
        "Active"
    );
    assert_eq!(api.get("/apis/apps/v1").await.status, StatusCode::NOT_FOUND);
}
