use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::*;

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn net(text: &str) -> Network {
    Network::parse(text).unwrap()
}

fn client(addr: &str, verified_certificate: bool) -> ClientConn {
    ClientConn {
        peer: SocketAddr::new(ip(addr), 40000),
        verified_certificate,
    }
}

// ---- networks and entries

#[test]
fn ipv4_networks_match_by_prefix_and_ignore_host_bits() {
    let n = net("10.0.0.0/8");
    assert!(n.contains(ip("10.0.0.1")));
    assert!(n.contains(ip("10.255.255.255")));
    assert!(!n.contains(ip("11.0.0.1")));
    assert!(!n.contains(ip("9.255.255.255")));
    // Python's ip_network(v, strict=False): host bits are cleared.
    assert_eq!(net("10.1.2.3/8"), n);
    assert_eq!(n.to_string(), "10.0.0.0/8");
    let host = net("192.168.1.7/32");
    assert!(host.contains(ip("192.168.1.7")));
    assert!(!host.contains(ip("192.168.1.8")));
    let all = net("0.0.0.0/0");
    assert!(all.contains(ip("203.0.113.9")));
    assert!(
        !all.contains(ip("2001:db8::1")),
        "an IPv4 network holds no IPv6 address"
    );
    let odd = net("172.16.0.0/12");
    assert!(odd.contains(ip("172.31.255.1")));
    assert!(!odd.contains(ip("172.32.0.1")));
}

#[test]
fn ipv6_networks_match_by_prefix() {
    let n = net("fd00::/8");
    assert!(n.contains(ip("fd12:3456::1")));
    assert!(!n.contains(ip("fe80::1")));
    assert!(!n.contains(ip("10.0.0.1")));
    let doc = net("2001:db8:abcd::/48");
    assert!(doc.contains(ip("2001:db8:abcd:ffff::1")));
    assert!(!doc.contains(ip("2001:db8:abce::1")));
    assert!(net("::1/128").contains(ip("::1")));
    assert!(!net("::1/128").contains(ip("::2")));
    assert!(net("::/0").contains(ip("2001:db8::1")));
}

#[test]
fn ipv4_mapped_clients_match_ipv4_entries() {
    // A dual-stack listener reports an IPv4 client as ::ffff:a.b.c.d.
    let mapped = ip("::ffff:10.1.2.3");
    assert!(net("10.0.0.0/8").contains(mapped));
    assert!(!net("192.168.0.0/16").contains(mapped));
    assert!(Network::host(ip("10.1.2.3")).contains(mapped));
    // A mapped entry is the IPv4 network it maps.
    assert_eq!(net("::ffff:10.0.0.0/104"), net("10.0.0.0/8"));
    assert!(net("::ffff:10.0.0.0/104").contains(ip("10.9.9.9")));
    assert_eq!(
        Network::host(ip("::ffff:127.0.0.1")),
        Network::host(IpAddr::V4(Ipv4Addr::LOCALHOST))
    );
    // A mapped client is in ::/0 as it came; a plain IPv4 one is not
    // (Python's rule: no family mixing).
    assert!(net("::/0").contains(mapped));
    assert!(!net("::/0").contains(ip("10.1.2.3")));
    // ::1 is not a mapped address.
    assert!(!net("0.0.0.0/0").contains(IpAddr::V6(Ipv6Addr::LOCALHOST)));
}

#[test]
fn netmasks_and_hostmasks_are_read_as_python_reads_them() {
    assert_eq!(net("10.0.0.0/255.0.0.0"), net("10.0.0.0/8"));
    assert_eq!(net("10.0.0.0/0.255.255.255"), net("10.0.0.0/8"));
    assert_eq!(net("10.1.0.0/255.255.0.0"), net("10.1.0.0/16"));
    assert_eq!(
        Network::parse("10.0.0.0/255.0.255.0"),
        Err(EntryError::Prefix("255.0.255.0".into()))
    );
}

#[test]
fn entries_parse_into_networks_addresses_or_host_names() {
    let e = |t: &str| AllowEntry::parse(t);
    assert_eq!(e("10.0.0.0/8"), Ok(AllowEntry::Network(net("10.0.0.0/8"))));
    assert_eq!(e(" 10.0.0.5 "), Ok(AllowEntry::Network(net("10.0.0.5/32"))));
    assert_eq!(e("fd00::1"), Ok(AllowEntry::Network(net("fd00::1/128"))));
    assert_eq!(e("db1.example"), Ok(AllowEntry::Host("db1.example".into())));
    assert_eq!(e("localhost"), Ok(AllowEntry::Host("localhost".into())));
    assert_eq!(
        e("pg-node_2.dc1.example."),
        Ok(AllowEntry::Host("pg-node_2.dc1.example.".into()))
    );
    // Refused, naming the entry.
    assert_eq!(e(""), Err(EntryError::Empty));
    assert_eq!(
        e("10.0.0.0/33"),
        Err(EntryError::PrefixTooLong {
            prefix: 33,
            bits: 32
        })
    );
    assert_eq!(
        e("fd00::/129"),
        Err(EntryError::PrefixTooLong {
            prefix: 129,
            bits: 128
        })
    );
    assert_eq!(e("10.0.0.0/x"), Err(EntryError::Prefix("x".into())));
    assert_eq!(e("10.0.0.0/-1"), Err(EntryError::Prefix("-1".into())));
    assert_eq!(
        e("10.0.0.300/8"),
        Err(EntryError::Address("10.0.0.300".into()))
    );
    assert_eq!(
        e("10.0.0.300"),
        Err(EntryError::Address("10.0.0.300".into()))
    );
    assert_eq!(e("192.168.1"), Err(EntryError::Address("192.168.1".into())));
    assert_eq!(e("fe80::g"), Err(EntryError::Address("fe80::g".into())));
    assert_eq!(e("[::1]"), Err(EntryError::Address("[::1]".into())));
    assert_eq!(e("bad host"), Err(EntryError::Host("bad host".into())));
    assert_eq!(e("a..b"), Err(EntryError::Host("a..b".into())));
    assert_eq!(
        e("10.0.0.0/33").unwrap_err().to_string(),
        "the prefix length 33 is longer than the address's 32 bits"
    );
}

#[test]
fn member_api_urls_give_host_and_port() {
    let u = url_host_port;
    assert_eq!(
        u("http://10.0.0.1:8008/patroni"),
        Some(("10.0.0.1".into(), 8008))
    );
    assert_eq!(
        u("https://[fd00::1]:8443/patroni"),
        Some(("fd00::1".into(), 8443))
    );
    assert_eq!(
        u("https://db1.example/patroni"),
        Some(("db1.example".into(), 443))
    );
    assert_eq!(u("http://db1.example"), Some(("db1.example".into(), 80)));
    assert_eq!(u("http://user:pw@h:1/patroni"), Some(("h".into(), 1)));
    assert_eq!(u("http://h:port/patroni"), None);
    assert_eq!(u("http:///patroni"), None);
    assert_eq!(u("garbage"), None);
}

// ---- the rules, without sockets

fn access(entries: &[&str], include_members: bool) -> RestApiAccess {
    RestApiAccess {
        allowlist: entries
            .iter()
            .map(|e| AllowEntry::parse(e).unwrap())
            .collect(),
        include_members,
    }
}

/// A cluster whose members' REST APIs are at `hosts`.
fn cluster(hosts: &[&str]) -> Cluster {
    use pgha_core::model::{ClusterKey, RawEntry, Version};
    let entries = hosts.iter().enumerate().map(|(i, host)| RawEntry {
        key: ClusterKey::parse(&format!("members/n{i}")).unwrap(),
        value: format!(
            r#"{{"conn_url":"postgres://{host}:5432/postgres","api_url":"http://{host}:8008/patroni","state":"running","role":"replica"}}"#
        )
        .into_bytes(),
        version: Version::number(1),
        owner: None,
    });
    Cluster::from_entries(entries, Version::number(1))
}

#[tokio::test]
async fn without_rules_everyone_may_write() {
    let open = AccessRules::resolve(&RestApiAccess::default(), VerifyClient::None).await;
    assert!(!open.restricts_addresses());
    assert_eq!(
        open.check(Some(&client("203.0.113.9", false)), None).await,
        Ok(())
    );
    assert_eq!(open.check(None, None).await, Ok(()));
    assert_eq!(AccessRules::open().check(None, None).await, Ok(()));
}

#[tokio::test]
async fn the_allowlist_admits_listed_addresses_only_and_fails_closed() {
    let rules = AccessRules::resolve(
        &access(&["10.0.0.0/8", "192.168.1.7", "fd00::/8"], false),
        VerifyClient::None,
    )
    .await;
    for ok in ["10.2.3.4", "192.168.1.7", "::ffff:10.2.3.4", "fd00::5"] {
        assert_eq!(
            rules.check(Some(&client(ok, false)), None).await,
            Ok(()),
            "{ok}"
        );
    }
    for denied in ["192.168.1.8", "127.0.0.1", "::1", "fe80::1"] {
        assert_eq!(
            rules.check(Some(&client(denied, false)), None).await,
            Err(Denied::Address),
            "{denied}"
        );
    }
    // A request whose client is unknown is refused while rules are in force.
    assert_eq!(rules.check(None, None).await, Err(Denied::Address));
}

#[tokio::test]
async fn host_name_entries_admit_every_address_they_resolve_to() {
    // localhost resolves here (/etc/hosts) to 127.0.0.1 (and perhaps ::1).
    let rules = AccessRules::resolve(&access(&["localhost"], false), VerifyClient::None).await;
    assert_eq!(
        rules.check(Some(&client("127.0.0.1", false)), None).await,
        Ok(())
    );
    assert_eq!(
        rules
            .check(Some(&client("::ffff:127.0.0.1", false)), None)
            .await,
        Ok(())
    );
    assert_eq!(
        rules.check(Some(&client("127.0.0.2", false)), None).await,
        Err(Denied::Address)
    );
    // A name that does not resolve admits nobody (Patroni would admit everybody).
    let unresolved = AccessRules::resolve(
        &access(&["no-such-host.invalid"], false),
        VerifyClient::None,
    )
    .await;
    assert!(unresolved.restricts_addresses());
    assert_eq!(
        unresolved
            .check(Some(&client("127.0.0.1", false)), None)
            .await,
        Err(Denied::Address)
    );
}

#[tokio::test]
async fn include_members_admits_the_members_api_hosts() {
    let rules = AccessRules::resolve(&access(&[], true), VerifyClient::None).await;
    assert!(rules.restricts_addresses());
    let c = cluster(&["10.0.0.1", "10.0.0.2"]);
    assert_eq!(
        rules
            .check(Some(&client("10.0.0.2", false)), Some(&c))
            .await,
        Ok(())
    );
    assert_eq!(
        rules
            .check(Some(&client("::ffff:10.0.0.1", false)), Some(&c))
            .await,
        Ok(())
    );
    assert_eq!(
        rules
            .check(Some(&client("10.0.0.3", false)), Some(&c))
            .await,
        Err(Denied::Address)
    );
    // No snapshot yet: no members to admit.
    assert_eq!(
        rules.check(Some(&client("10.0.0.2", false)), None).await,
        Err(Denied::Address)
    );
    // Host names in api_url are resolved per request.
    let named = cluster(&["localhost"]);
    assert_eq!(
        rules
            .check(Some(&client("127.0.0.1", false)), Some(&named))
            .await,
        Ok(())
    );
    // With an allowlist too, either admits.
    let both = AccessRules::resolve(&access(&["192.168.0.0/16"], true), VerifyClient::None).await;
    assert_eq!(
        both.check(Some(&client("192.168.5.5", false)), Some(&c))
            .await,
        Ok(())
    );
    assert_eq!(
        both.check(Some(&client("10.0.0.1", false)), Some(&c)).await,
        Ok(())
    );
    assert_eq!(
        both.check(Some(&client("172.16.0.1", false)), Some(&c))
            .await,
        Err(Denied::Address)
    );
}

#[tokio::test]
async fn include_members_admits_the_failsafe_keys_hosts_whose_member_keys_expired() {
    // During a DCS outage a primary in failsafe mode asks the members to
    // confirm it (POST /failsafe), though its own member key may have
    // expired from their last snapshot: the failsafe key still names it.
    use pgha_core::model::{Failsafe, Version, Versioned};
    let rules = AccessRules::resolve(&access(&[], true), VerifyClient::None).await;
    let mut c = cluster(&["10.0.0.2"]);
    assert_eq!(
        rules
            .check(Some(&client("10.0.0.1", false)), Some(&c))
            .await,
        Err(Denied::Address)
    );
    let key = Failsafe(
        [
            ("n0".to_string(), "http://10.0.0.1:8008/patroni".to_string()),
            ("n1".to_string(), "http://10.0.0.2:8008/patroni".to_string()),
        ]
        .into_iter()
        .collect(),
    );
    c.failsafe = Some(Versioned::new(key, Version::number(2)));
    assert_eq!(
        rules
            .check(Some(&client("10.0.0.1", false)), Some(&c))
            .await,
        Ok(())
    );
}

#[tokio::test]
async fn client_certificates_are_checked_after_the_allowlist() {
    let optional = AccessRules::resolve(&RestApiAccess::default(), VerifyClient::Optional).await;
    assert_eq!(
        optional.check(Some(&client("10.0.0.1", false)), None).await,
        Err(Denied::ClientCertificate)
    );
    assert_eq!(
        optional.check(Some(&client("10.0.0.1", true)), None).await,
        Ok(())
    );
    assert_eq!(
        optional.check(None, None).await,
        Err(Denied::ClientCertificate)
    );
    let both = AccessRules::resolve(&access(&["10.0.0.0/8"], false), VerifyClient::Required).await;
    // Outside the allowlist without a certificate: the allowlist answers first.
    assert_eq!(
        both.check(Some(&client("192.168.0.1", false)), None).await,
        Err(Denied::Address)
    );
    assert_eq!(
        both.check(Some(&client("10.0.0.1", false)), None).await,
        Err(Denied::ClientCertificate)
    );
    assert_eq!(
        both.check(Some(&client("10.0.0.1", true)), None).await,
        Ok(())
    );
    assert_eq!(Denied::Address.to_string(), "Access is denied");
    assert_eq!(
        Denied::ClientCertificate.to_string(),
        "client certificate required"
    );
}

// ---- end to end: the REST API served on loopback sockets

mod sockets {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use pgha_core::dcs::memory::MemoryStore;
    use pgha_core::dcs::{Dcs, DcsExt};
    use pgha_core::model::{DynamicConfig, Expect, KeyLayout, Timing};
    use serde_json::{Value, json};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio::net::{TcpSocket, TcpStream};
    use tokio::sync::{mpsc, watch};

    use super::access;
    use crate::access::AccessRules;
    use crate::settings::VerifyClient;
    use crate::{ApiState, TlsServerConfig, serve};
    use pgha_node::{NodeHandle, NodeStatus};
    use pgha_rest_client::RestClient;

    /// One node's REST API on 127.0.0.1, with the in-memory DCS behind it:
    /// a cluster of n1 (this node) and n2, whose REST APIs are at the
    /// hosts given, and a stand-in HA loop that only collects commands.
    struct Node {
        addr: SocketAddr,
        dcs: Arc<dyn Dcs>,
        reloads: mpsc::Receiver<()>,
        _status: watch::Sender<Arc<NodeStatus>>,
        _commands: mpsc::Receiver<pgha_node::command::Command>,
    }

    impl Node {
        async fn start(
            rules: AccessRules,
            auth: Option<(&str, &str)>,
            tls: Option<Arc<TlsServerConfig>>,
            member_hosts: [&str; 2],
        ) -> Node {
            let store = MemoryStore::new();
            let layout = KeyLayout::new("/service", "demo");
            let n1: Arc<dyn Dcs> = Arc::new(store.client(layout.clone(), "n1", Timing::default()));
            let n2: Arc<dyn Dcs> = Arc::new(store.client(layout, "n2", Timing::default()));
            for (dcs, host) in [(&n1, member_hosts[0]), (&n2, member_hosts[1])] {
                let data = serde_json::from_value(json!({
                    "conn_url": format!("postgres://{host}:5432/postgres"),
                    "api_url": format!("http://{host}:8008/patroni"),
                    "state": "running", "role": "replica"}))
                .unwrap();
                dcs.touch_member(&data).await.unwrap();
            }
            n1.acquire_leader().await.unwrap();
            n1.write_config(
                &DynamicConfig::parse(r#"{"ttl":30,"loop_wait":10}"#).unwrap(),
                Expect::Absent,
            )
            .await
            .unwrap();
            // The loop's last snapshot, where allowlist_include_members
            // finds the members.
            let mut status = NodeStatus::initial("n1", "demo");
            status.cluster = Some(Arc::new(n1.load().await.unwrap()));
            let (status_tx, status_rx) = watch::channel(Arc::new(status));
            let (tx, commands) = mpsc::channel(8);
            let (reload, reloads) = mpsc::channel(1);
            let state = ApiState {
                node: NodeHandle::new(
                    status_rx,
                    tx,
                    Arc::new(pgha_core::clock::MonotonicClock::new()),
                ),
                dcs: n1.clone(),
                reload,
                peers: RestClient::new("pgha", None, &Default::default()),
                auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
                access: Arc::new(rules),
            };
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                let _ = serve(listener, tls, state).await;
            });
            Node {
                addr,
                dcs: n1,
                reloads,
                _status: status_tx,
                _commands: commands,
            }
        }

        async fn plain(rules: AccessRules) -> Node {
            Node::start(rules, None, None, ["127.0.0.3", "127.0.0.4"]).await
        }

        /// The stored `ttl`: what `PATCH /config` changes.
        async fn ttl(&self) -> Value {
            let c = self.dcs.load().await.unwrap().config.unwrap().value;
            serde_json::to_value(&c).unwrap()["ttl"].clone()
        }

        /// Whether a reload was requested since the last call.
        fn reload_requested(&mut self) -> bool {
            let mut seen = false;
            while self.reloads.try_recv().is_ok() {
                seen = true;
            }
            seen
        }

        /// A connection from `source` (a loopback address: Linux routes
        /// all of 127/8 to lo, so a client may bind any of them).
        async fn connect(&self, source: &str) -> TcpStream {
            let socket = TcpSocket::new_v4().unwrap();
            socket
                .bind(SocketAddr::new(source.parse().unwrap(), 0))
                .unwrap();
            socket.connect(self.addr).await.unwrap()
        }

        /// One plain-HTTP request from `source`.
        async fn call(
            &self,
            source: &str,
            method: &str,
            path: &str,
            body: &str,
            headers: &[&str],
        ) -> (u16, Value) {
            exchange(self.connect(source).await, method, path, body, headers).await
        }
    }

    /// Sends one HTTP/1.1 request on `io` and reads the answer: the status
    /// code and the body (JSON when it parses, else its text).
    async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
        mut io: S,
        method: &str,
        path: &str,
        body: &str,
        headers: &[&str],
    ) -> (u16, Value) {
        let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{body}",
            body.len()
        );
        let answer = tokio::time::timeout(Duration::from_secs(10), async {
            io.write_all(request.as_bytes()).await.unwrap();
            io.flush().await.unwrap();
            let mut buf = Vec::new();
            // A TLS peer may close without close_notify: keep what came.
            let _ = io.read_to_end(&mut buf).await;
            buf
        })
        .await
        .expect("an answer within 10 s");
        let text = String::from_utf8_lossy(&answer).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
        let code = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head:?}"));
        let value = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.into()));
        (code, value)
    }

    fn denied(message: &str) -> (u16, Value) {
        (403, json!({"error": message}))
    }

    const PATCH_TTL: &str = r#"{"ttl": 21}"#;

    #[tokio::test]
    async fn without_an_allowlist_any_address_may_write() {
        let mut node = Node::plain(AccessRules::open()).await;
        let r = node
            .call("127.0.0.2", "PATCH", "/config", PATCH_TTL, &[])
            .await;
        assert_eq!(r.0, 200, "{r:?}");
        assert_eq!(node.ttl().await, 21);
        let r = node.call("127.0.0.1", "POST", "/reload", "", &[]).await;
        assert_eq!(r.0, 202, "{r:?}");
        assert!(node.reload_requested());
    }

    #[tokio::test]
    async fn outside_the_allowlist_unsafe_calls_get_403_and_change_nothing() {
        // 127.0.0.1 is not in 10/8.
        let rules = AccessRules::resolve(&access(&["10.0.0.0/8"], false), VerifyClient::None).await;
        let mut node = Node::plain(rules).await;
        assert_eq!(
            node.call("127.0.0.1", "PATCH", "/config", PATCH_TTL, &[])
                .await,
            denied("Access is denied")
        );
        assert_eq!(node.ttl().await, 30, "the configuration is unchanged");
        assert_eq!(
            node.call("127.0.0.1", "POST", "/reload", "", &[]).await,
            denied("Access is denied")
        );
        assert!(!node.reload_requested(), "no reload reached the loop");
        assert_eq!(
            node.call("127.0.0.1", "DELETE", "/switchover", "", &[])
                .await,
            denied("Access is denied")
        );
        // Reading is never restricted.
        let r = node.call("127.0.0.1", "GET", "/patroni", "", &[]).await;
        assert_eq!(r.0, 200, "{r:?}");
        assert_eq!(
            node.call("127.0.0.1", "GET", "/config", "", &[]).await.0,
            200
        );
        assert_eq!(
            node.call("127.0.0.1", "OPTIONS", "/health", "", &[])
                .await
                .0,
            503
        );
    }

    #[tokio::test]
    async fn the_allowlist_is_matched_against_the_real_source_address() {
        let rules = AccessRules::resolve(&access(&["127.0.0.2"], false), VerifyClient::None).await;
        let mut node = Node::plain(rules).await;
        assert_eq!(
            node.call("127.0.0.1", "PATCH", "/config", PATCH_TTL, &[])
                .await,
            denied("Access is denied")
        );
        assert_eq!(node.ttl().await, 30);
        let r = node
            .call("127.0.0.2", "PATCH", "/config", PATCH_TTL, &[])
            .await;
        assert_eq!(r.0, 200, "{r:?}");
        assert_eq!(node.ttl().await, 21);
        assert_eq!(
            node.call("127.0.0.2", "POST", "/reload", "", &[]).await.0,
            202
        );
        assert!(node.reload_requested());
    }

    #[tokio::test]
    async fn allowlist_include_members_admits_a_members_address() {
        // n1 (this node) publishes 127.0.0.3, n2 127.0.0.2; 127.0.0.1 is nobody's.
        let rules = AccessRules::resolve(&access(&[], true), VerifyClient::None).await;
        let node = Node::start(rules, None, None, ["127.0.0.3", "127.0.0.2"]).await;
        assert_eq!(
            node.call("127.0.0.1", "PATCH", "/config", PATCH_TTL, &[])
                .await,
            denied("Access is denied")
        );
        assert_eq!(node.ttl().await, 30);
        let r = node
            .call("127.0.0.2", "PATCH", "/config", PATCH_TTL, &[])
            .await;
        assert_eq!(r.0, 200, "{r:?}");
        assert_eq!(node.ttl().await, 21);
        // A member's api_url host given as a name, resolved per request.
        let rules = AccessRules::resolve(&access(&["10.0.0.0/8"], true), VerifyClient::None).await;
        let node = Node::start(rules, None, None, ["127.0.0.3", "localhost"]).await;
        let r = node
            .call("127.0.0.1", "PATCH", "/config", PATCH_TTL, &[])
            .await;
        assert_eq!(r.0, 200, "{r:?}");
        assert_eq!(
            node.call("127.0.0.2", "PATCH", "/config", PATCH_TTL, &[])
                .await,
            denied("Access is denied")
        );
    }

    #[tokio::test]
    async fn the_allowlist_answers_before_basic_auth() {
        let rules = AccessRules::resolve(&access(&["127.0.0.2"], false), VerifyClient::None).await;
        let node = Node::start(
            rules,
            Some(("admin", "admin-pass")),
            None,
            ["127.0.0.3", "127.0.0.4"],
        )
        .await;
        let good = "Authorization: Basic YWRtaW46YWRtaW4tcGFzcw==";
        // Outside, even with the right credentials: 403, not 401.
        assert_eq!(
            node.call("127.0.0.1", "PATCH", "/config", PATCH_TTL, &[good])
                .await,
            denied("Access is denied")
        );
        assert_eq!(
            node.call("127.0.0.1", "PATCH", "/config", PATCH_TTL, &[])
                .await,
            denied("Access is denied")
        );
        // Inside: credentials are still needed.
        assert_eq!(
            node.call("127.0.0.2", "PATCH", "/config", PATCH_TTL, &[])
                .await
                .0,
            401
        );
        assert_eq!(node.ttl().await, 30);
        assert_eq!(
            node.call("127.0.0.2", "PATCH", "/config", PATCH_TTL, &[good])
                .await
                .0,
            200
        );
        assert_eq!(node.ttl().await, 21);
    }

    /// `verify_client: optional` over HTTPS: the handshake admits clients
    /// without a certificate, the access rules keep them from writing.
    #[cfg(feature = "tls")]
    mod optional_client_certificates {
        use std::sync::Arc;

        use rustls::pki_types::ServerName;
        use tokio_rustls::TlsConnector;

        use super::*;
        use crate::settings::RestApiTls;
        use crate::tls::server_config;
        use pgha_rest_client::tls::{certificates, private_key, roots};

        struct Https {
            node: Node,
            /// Trusts the test CA, presents no certificate.
            anonymous: TlsConnector,
            /// Trusts the test CA, presents the client certificate it signed.
            with_certificate: TlsConnector,
            _dir: tempfile::TempDir,
        }

        impl Https {
            async fn start(rules: AccessRules) -> Https {
                let dir = tempfile::tempdir().unwrap();
                let pki = pgha_testkit::pki::make_pki(dir.path(), "rest").unwrap();
                let server = server_config(&RestApiTls {
                    certfile: pki.server_cert.clone(),
                    keyfile: pki.server_key.clone(),
                    cafile: Some(pki.ca.clone()),
                    verify_client: VerifyClient::Optional,
                })
                .unwrap();
                let node = Node::start(rules, None, Some(server), ["127.0.0.3", "127.0.0.4"]).await;
                let builder = || {
                    rustls::ClientConfig::builder_with_provider(Arc::new(
                        rustls::crypto::ring::default_provider(),
                    ))
                    .with_safe_default_protocol_versions()
                    .unwrap()
                    .with_root_certificates(roots(&pki.ca, "ca").unwrap())
                };
                let anonymous = TlsConnector::from(Arc::new(builder().with_no_client_auth()));
                let with_certificate = TlsConnector::from(Arc::new(
                    builder()
                        .with_client_auth_cert(
                            certificates(&pki.client_cert, "client cert").unwrap(),
                            private_key(&pki.client_key, "client key").unwrap(),
                        )
                        .unwrap(),
                ));
                Https {
                    node,
                    anonymous,
                    with_certificate,
                    _dir: dir,
                }
            }

            async fn call(
                &self,
                certificate: bool,
                method: &str,
                path: &str,
                body: &str,
            ) -> (u16, Value) {
                let connector = if certificate {
                    &self.with_certificate
                } else {
                    &self.anonymous
                };
                let tcp = self.node.connect("127.0.0.1").await;
                let name = ServerName::try_from("127.0.0.1").unwrap();
                let tls = connector.connect(name, tcp).await.unwrap();
                exchange(tls, method, path, body, &[]).await
            }
        }

        #[tokio::test]
        async fn unsafe_calls_need_a_verified_client_certificate() {
            let rules = AccessRules::resolve(
                &crate::settings::RestApiAccess::default(),
                VerifyClient::Optional,
            )
            .await;
            let mut https = Https::start(rules).await;
            // Reading works without a certificate.
            let r = https.call(false, "GET", "/patroni", "").await;
            assert_eq!(r.0, 200, "{r:?}");
            // Writing does not, and changes nothing.
            assert_eq!(
                https.call(false, "PATCH", "/config", PATCH_TTL).await,
                denied("client certificate required")
            );
            assert_eq!(
                https.call(false, "POST", "/reload", "").await,
                denied("client certificate required")
            );
            assert_eq!(https.node.ttl().await, 30);
            assert!(!https.node.reload_requested());
            // With a certificate signed by the CA it works.
            let r = https.call(true, "PATCH", "/config", PATCH_TTL).await;
            assert_eq!(r.0, 200, "{r:?}");
            assert_eq!(https.node.ttl().await, 21);
            assert_eq!(https.call(true, "POST", "/reload", "").await.0, 202);
            assert!(https.node.reload_requested());
        }

        #[tokio::test]
        async fn the_same_server_without_the_rule_lets_anonymous_clients_write() {
            // Same TLS configuration; only the access rule is absent: the
            // 403 above comes from the rule, not from the handshake.
            let https = Https::start(AccessRules::open()).await;
            let r = https.call(false, "PATCH", "/config", PATCH_TTL).await;
            assert_eq!(r.0, 200, "{r:?}");
            assert_eq!(https.node.ttl().await, 21);
        }
    }
}
