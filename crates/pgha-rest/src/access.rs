//! Who may call the REST API's unsafe methods (POST, PUT, PATCH, DELETE):
//! `restapi.allowlist`, `restapi.allowlist_include_members` and, over
//! HTTPS with a `cafile`, `restapi.verify_client`, checked as Patroni's
//! `RestApiServer.check_access` checks them, in its order:
//!
//! 1. when an allowlist or `allowlist_include_members` is configured, the
//!    client's address must be in the allowlist or be a member's address
//!    (the host of a member key's `api_url` in the last cluster snapshot,
//!    resolved per request): else 403 `Access is denied`;
//! 2. when `verify_client` is `optional` or `required`, the client must
//!    have presented a certificate that the TLS handshake verified against
//!    `cafile`: else 403 `client certificate required`;
//! 3. then basic auth (401, `rest.rs`).
//!
//! Reading (GET, HEAD, OPTIONS) is never restricted here, as in Patroni.
//!
//! Two deliberate differences from Patroni, both failing closed where
//! Patroni fails open: an invalid allowlist entry is a configuration error
//! naming it (Patroni logs it and drops it, and a list left empty that way
//! lets everyone in), and an allowlist whose host names do not resolve
//! admits nobody but the members (Patroni: everybody).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use pgha_core::model::Cluster;
use tokio::net::TcpListener;

use crate::settings::{RestApiAccess, VerifyClient};

/// How long one host name may take to resolve, at startup (allowlist
/// entries) and per request (members' `api_url` hosts, looked up
/// concurrently): an unsafe request waits at most this long for DNS.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// What the server knows of the client of one connection. Both listeners
/// (plain TCP and `tls::TlsListener`) produce it, and every request on the
/// connection carries it as axum's `ConnectInfo<ClientConn>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientConn {
    /// The client's address as the socket saw it (an IPv4 client of a
    /// dual-stack listener shows as `::ffff:a.b.c.d`).
    pub peer: SocketAddr,
    /// The client presented a certificate and the TLS handshake verified it
    /// against `restapi.cafile` (a certificate that fails verification ends
    /// the handshake, so no request ever carries one). Always false over
    /// plain HTTP.
    pub verified_certificate: bool,
}

impl Connected<IncomingStream<'_, TcpListener>> for ClientConn {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Self {
        ClientConn {
            peer: *stream.remote_addr(),
            verified_certificate: false,
        }
    }
}

/// Why an allowlist entry cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("an empty entry")]
    Empty,
    #[error("{0:?} is not an IP address")]
    Address(String),
    #[error("{0:?} is neither a prefix length nor a netmask")]
    Prefix(String),
    #[error("the prefix length {prefix} is longer than the address's {bits} bits")]
    PrefixTooLong { prefix: u32, bits: u32 },
    #[error("{0:?} is neither an IP address nor a host name")]
    Host(String),
}

/// An IP network: an address and a prefix length.
///
/// Invariant: the prefix is at most the family's bit count, the address's
/// bits after the prefix are zero, and a network within `::ffff:0:0/96`
/// (IPv4-mapped IPv6) is kept as the IPv4 network it maps, so that it
/// matches IPv4 clients as well as mapped ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// The network of `addr` with `prefix` bits; host bits are cleared
    /// (Python's `ip_network(v, strict=False)`, which Patroni uses).
    pub fn new(addr: IpAddr, prefix: u32) -> Result<Network, EntryError> {
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > bits {
            return Err(EntryError::PrefixTooLong { prefix, bits });
        }
        let masked = match addr {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) & mask32(prefix)).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) & mask128(prefix)).into()),
        };
        Ok(match masked {
            IpAddr::V6(a) if prefix >= 96 => match a.to_ipv4_mapped() {
                Some(v4) => Network {
                    addr: IpAddr::V4(v4),
                    prefix: (prefix - 96) as u8,
                },
                None => Network {
                    addr: masked,
                    prefix: prefix as u8,
                },
            },
            _ => Network {
                addr: masked,
                prefix: prefix as u8,
            },
        })
    }

    /// The network holding exactly `addr` (`/32` or `/128`).
    pub fn host(addr: IpAddr) -> Network {
        let canonical = addr.to_canonical();
        Network {
            addr: canonical,
            prefix: if canonical.is_ipv4() { 32 } else { 128 },
        }
    }

    /// `10.0.0.0/8`, `fd00::/8`, or with an IPv4 netmask (`10.0.0.0/255.0.0.0`)
    /// or hostmask (`10.0.0.0/0.255.255.255`), as Python's `ip_network` reads
    /// them; a bare address is the network of that address alone.
    pub fn parse(text: &str) -> Result<Network, EntryError> {
        let text = text.trim();
        let address = |a: &str| {
            a.parse::<IpAddr>()
                .map_err(|_| EntryError::Address(a.to_string()))
        };
        let Some((addr, prefix)) = text.split_once('/') else {
            return address(text).map(Network::host);
        };
        let addr = address(addr)?;
        let prefix = match (prefix.parse::<u32>(), prefix.parse::<Ipv4Addr>()) {
            (Ok(n), _) if prefix.bytes().all(|b| b.is_ascii_digit()) => n,
            (_, Ok(mask)) if addr.is_ipv4() => {
                let m = u32::from(mask);
                if m.leading_ones() + m.trailing_zeros() == 32 {
                    m.leading_ones()
                } else if m.leading_zeros() + m.trailing_ones() == 32 {
                    m.leading_zeros()
                } else {
                    return Err(EntryError::Prefix(prefix.to_string()));
                }
            }
            _ => return Err(EntryError::Prefix(prefix.to_string())),
        };
        Network::new(addr, prefix)
    }

    /// Whether `ip` is in the network, as it came or as the IPv4 address
    /// it maps (`::ffff:10.1.2.3` is in `10.0.0.0/8`, and in `::/0`).
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.holds(ip) || self.holds(ip.to_canonical())
    }

    fn holds(&self, ip: IpAddr) -> bool {
        let prefix = u32::from(self.prefix);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(a)) => u32::from(a) & mask32(prefix) == u32::from(net),
            (IpAddr::V6(net), IpAddr::V6(a)) => u128::from(a) & mask128(prefix) == u128::from(net),
            _ => false,
        }
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn mask32(prefix: u32) -> u32 {
    u32::MAX.checked_shl(32 - prefix).unwrap_or(0)
}

fn mask128(prefix: u32) -> u128 {
    u128::MAX.checked_shl(128 - prefix).unwrap_or(0)
}

/// One `restapi.allowlist` entry as configured, checked when the
/// configuration is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowEntry {
    /// A network (`10.0.0.0/8`) or a single address (`10.0.0.5`, i.e. `/32`).
    Network(Network),
    /// A host name, resolved to every address it has when the REST API starts.
    Host(String),
}

impl AllowEntry {
    /// Entries with a `/` are networks; others are IP addresses or host
    /// names (Patroni's rule). Text that looks numeric or has a `:` but is
    /// no address (`10.0.0.300`, `fe80::g`) is refused rather than sent to
    /// the resolver as a host name, since it is surely a typo.
    pub fn parse(text: &str) -> Result<AllowEntry, EntryError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(EntryError::Empty);
        }
        if text.contains('/') {
            return Network::parse(text).map(AllowEntry::Network);
        }
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(AllowEntry::Network(Network::host(ip)));
        }
        if text.contains(':') || text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(EntryError::Address(text.to_string()));
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        let name = text.strip_suffix('.').unwrap_or(text);
        if name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(EntryError::Host(text.to_string()));
        }
        Ok(AllowEntry::Host(text.to_string()))
    }
}

impl std::fmt::Display for AllowEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AllowEntry::Network(n) => n.fmt(f),
            AllowEntry::Host(h) => f.write_str(h),
        }
    }
}

/// Why an unsafe request was refused; the text is Patroni's, sent as
/// `{"error": "..."}` with 403.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The client's address is neither in the allowlist nor a member's.
    #[error("Access is denied")]
    Address,
    /// `verify_client` is set and the client presented no verified certificate.
    #[error("client certificate required")]
    ClientCertificate,
}

/// The rules one REST API server enforces, built when it starts.
///
/// Invariant: [`AccessRules::check`] fails closed: while an allowlist or
/// `allowlist_include_members` is in force, a request whose client address
/// is unknown is refused, and so is one from an address no entry matches,
/// even when the entries' host names did not resolve.
#[derive(Debug, Clone, Default)]
pub struct AccessRules {
    /// `None`: no allowlist configured. `Some`: the configured entries as
    /// networks, host names resolved (empty if none resolved).
    allowlist: Option<Vec<Network>>,
    /// Members' `api_url` hosts are admitted too.
    include_members: bool,
    /// `verify_client` is `optional` or `required` (over HTTPS with a `cafile`).
    client_certificate: bool,
}

impl AccessRules {
    /// Nobody is restricted (no allowlist, no client certificates).
    pub fn open() -> AccessRules {
        AccessRules::default()
    }

    /// The rules for `access` and `verify_client` (pass `VerifyClient::None`
    /// when the API speaks plain HTTP or has no `cafile`). Host names are
    /// resolved now, each within [`LOOKUP_TIMEOUT`]; one that does not
    /// resolve is logged by name and admits nobody.
    pub async fn resolve(access: &RestApiAccess, verify_client: VerifyClient) -> AccessRules {
        let allowlist = if access.allowlist.is_empty() {
            None
        } else {
            let mut networks = Vec::new();
            for entry in &access.allowlist {
                match entry {
                    AllowEntry::Network(n) => networks.push(*n),
                    AllowEntry::Host(host) => match lookup(host, 8080).await {
                        Ok(ips) => {
                            tracing::info!(host = %host, addresses = ?ips, "restapi.allowlist: host name resolved");
                            networks.extend(ips.into_iter().map(Network::host));
                        }
                        Err(error) => tracing::warn!(
                            host = %host, %error,
                            "restapi.allowlist: host name does not resolve; it admits nobody"
                        ),
                    },
                }
            }
            Some(networks)
        };
        AccessRules {
            allowlist,
            include_members: access.include_members,
            client_certificate: verify_client != VerifyClient::None,
        }
    }

    /// Whether the client's address is checked at all.
    pub fn restricts_addresses(&self) -> bool {
        self.allowlist.is_some() || self.include_members
    }

    /// Checks an unsafe request from `client` (`None`: not known, as when a
    /// request did not come through a listener), with `cluster` the last
    /// snapshot, whose members' addresses count when `include_members` is set.
    pub async fn check(
        &self,
        client: Option<&ClientConn>,
        cluster: Option<&Cluster>,
    ) -> Result<(), Denied> {
        if self.restricts_addresses() {
            let Some(ip) = client.map(|c| c.peer.ip()) else {
                return Err(Denied::Address);
            };
            let listed = self.allowlist.iter().flatten().any(|n| n.contains(ip));
            let admitted = listed || (self.include_members && is_member_address(ip, cluster).await);
            if !admitted {
                return Err(Denied::Address);
            }
        }
        if self.client_certificate && !client.is_some_and(|c| c.verified_certificate) {
            return Err(Denied::ClientCertificate);
        }
        Ok(())
    }
}

/// Whether `ip` is an address of a member's `api_url` host in `cluster`.
/// Addresses written as IP literals need no lookup; host names are looked
/// up concurrently, each within [`LOOKUP_TIMEOUT`], and one that does not
/// resolve only counts for nothing.
async fn is_member_address(ip: IpAddr, cluster: Option<&Cluster>) -> bool {
    let Some(cluster) = cluster else {
        return false;
    };
    // The `failsafe` key's members count too: during a DCS outage their
    // member keys may have expired from the last snapshot while a primary
    // in failsafe mode still asks this node to confirm it.
    let failsafe = cluster.failsafe.iter().flat_map(|f| f.value.0.values());
    let mut hosts: Vec<(String, u16)> = cluster
        .members
        .iter()
        .filter_map(|m| m.data.api_url.as_deref())
        .chain(failsafe.map(String::as_str))
        .filter_map(url_host_port)
        .collect();
    hosts.sort();
    hosts.dedup();
    let lookups = hosts.iter().map(|(host, port)| async move {
        match lookup(host, *port).await {
            Ok(ips) => ips,
            Err(error) => {
                tracing::debug!(host = %host, %error, "allowlist_include_members: member host does not resolve");
                Vec::new()
            }
        }
    });
    futures::future::join_all(lookups)
        .await
        .into_iter()
        .flatten()
        .any(|member| Network::host(member).contains(ip))
}

/// The host and port of a member's `api_url` (`https://[::1]:8008/patroni`
/// gives `::1` and 8008); without a port, the scheme's (as Python's `urlparse`).
pub fn url_host_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let default = if scheme.eq_ignore_ascii_case("https") {
        443
    } else {
        80
    };
    let (host, port) = match host_port.strip_prefix('[') {
        Some(bracketed) => {
            let (host, after) = bracketed.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        },
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => default,
    };
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// Every address of `host` (an IP literal is its own address, with no
/// lookup), within [`LOOKUP_TIMEOUT`].
async fn lookup(host: &str, port: u16) -> Result<Vec<IpAddr>, LookupError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![ip]);
    }
    match tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(addrs)) => Ok(addrs.map(|a| a.ip()).collect()),
        Ok(Err(e)) => Err(LookupError::Failed(e)),
        Err(_) => Err(LookupError::NoAnswer(LOOKUP_TIMEOUT)),
    }
}

/// Why a host name did not resolve.
#[derive(Debug, thiserror::Error)]
enum LookupError {
    #[error("{0}")]
    Failed(std::io::Error),
    #[error("no answer within {0:?}")]
    NoAnswer(std::time::Duration),
}

#[cfg(test)]
mod tests;
