//! Patroni's key layout: every value of one cluster lives under
//! `/<namespace>/<scope>/`.
//!
//! The names here are the wire contract with Patroni and patronictl; changing
//! one breaks every tool that reads a Patroni cluster.

use std::fmt;

/// Patroni's default namespace.
pub const DEFAULT_NAMESPACE: &str = "/service";

/// The keys of one cluster, relative to its base path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClusterKey {
    /// `initialize`: the PostgreSQL system identifier, `""` while initdb runs.
    Initialize,
    /// `config`: the dynamic configuration (JSON).
    Config,
    /// `leader`: the leader lock; holds the leader's member name.
    Leader,
    /// `members/<name>`: one member's status (JSON).
    Member(String),
    /// `failover`: a requested switchover or failover (JSON).
    Failover,
    /// `history`: the timeline history (JSON list).
    History,
    /// `status`: the leader's last WAL position and slots (JSON).
    Status,
    /// `sync`: synchronous replication state (JSON).
    Sync,
    /// `failsafe`: members known to the leader in failsafe mode (JSON).
    Failsafe,
    /// `optime/leader`: the pre-2.0 place of the leader's LSN, read as a fallback.
    LegacyOptime,
}

impl ClusterKey {
    /// The key relative to the cluster's base path, as Patroni names it.
    pub fn relative(&self) -> String {
        match self {
            ClusterKey::Member(name) => format!("members/{name}"),
            other => other.fixed_name().unwrap_or_default().to_string(),
        }
    }

    fn fixed_name(&self) -> Option<&'static str> {
        Some(match self {
            ClusterKey::Initialize => "initialize",
            ClusterKey::Config => "config",
            ClusterKey::Leader => "leader",
            ClusterKey::Member(_) => return None,
            ClusterKey::Failover => "failover",
            ClusterKey::History => "history",
            ClusterKey::Status => "status",
            ClusterKey::Sync => "sync",
            ClusterKey::Failsafe => "failsafe",
            ClusterKey::LegacyOptime => "optime/leader",
        })
    }

    /// Recognises a key relative to the base path. Keys pgha does not know
    /// (written by newer tools, or by hand) give `None` and are ignored.
    pub fn parse(relative: &str) -> Option<ClusterKey> {
        let relative = relative.trim_start_matches('/');
        if let Some(name) = relative.strip_prefix("members/") {
            return (!name.is_empty() && !name.contains('/'))
                .then(|| ClusterKey::Member(name.to_string()));
        }
        Some(match relative {
            "initialize" => ClusterKey::Initialize,
            "config" => ClusterKey::Config,
            "leader" => ClusterKey::Leader,
            "failover" => ClusterKey::Failover,
            "history" => ClusterKey::History,
            "status" => ClusterKey::Status,
            "sync" => ClusterKey::Sync,
            "failsafe" => ClusterKey::Failsafe,
            "optime/leader" => ClusterKey::LegacyOptime,
            _ => return None,
        })
    }
}

impl fmt::Display for ClusterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.relative())
    }
}

/// Where one cluster lives: `/<namespace>/<scope>/`.
///
/// Invariant: `base` starts with `/`, never ends with `/`, and has no empty
/// segments, exactly as Patroni normalises it (`/service/` + `demo` gives
/// `/service/demo`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyLayout {
    namespace: String,
    scope: String,
    base: String,
}

impl KeyLayout {
    /// The layout for `scope` under `namespace` (Patroni's default is
    /// [`DEFAULT_NAMESPACE`]).
    pub fn new(namespace: &str, scope: &str) -> Self {
        let base = std::iter::once("")
            .chain(namespace.split('/').filter(|s| !s.is_empty()))
            .chain(scope.split('/').filter(|s| !s.is_empty()))
            .collect::<Vec<_>>()
            .join("/");
        let base = if base.is_empty() {
            "/".to_string()
        } else {
            base
        };
        KeyLayout {
            namespace: namespace.to_string(),
            scope: scope.to_string(),
            base,
        }
    }

    pub fn scope(&self) -> &str {
        &self.scope
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The cluster's base path, without a trailing slash: `/service/demo`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The prefix every key of the cluster starts with: `/service/demo/`.
    pub fn prefix(&self) -> String {
        format!("{}/", self.base.trim_end_matches('/'))
    }

    /// The absolute path of `key`: `/service/demo/members/node1`.
    pub fn path(&self, key: &ClusterKey) -> String {
        format!("{}{}", self.prefix(), key.relative())
    }

    /// The part of `absolute` below the cluster's prefix, if it is inside.
    pub fn strip<'a>(&self, absolute: &'a str) -> Option<&'a str> {
        absolute.strip_prefix(&self.prefix())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_path_is_normalised_like_patroni() {
        assert_eq!(KeyLayout::new("/service/", "demo").base(), "/service/demo");
        assert_eq!(KeyLayout::new("service", "demo").base(), "/service/demo");
        assert_eq!(KeyLayout::new("//a//b/", "/demo/").base(), "/a/b/demo");
        assert_eq!(KeyLayout::new("/", "demo").base(), "/demo");
    }

    #[test]
    fn paths_match_patroni_names() {
        let l = KeyLayout::new(DEFAULT_NAMESPACE, "demo");
        assert_eq!(l.path(&ClusterKey::Leader), "/service/demo/leader");
        assert_eq!(
            l.path(&ClusterKey::Member("node1".into())),
            "/service/demo/members/node1"
        );
        assert_eq!(
            l.path(&ClusterKey::LegacyOptime),
            "/service/demo/optime/leader"
        );
        assert_eq!(l.strip("/service/demo/config"), Some("config"));
        assert_eq!(l.strip("/service/demo2/config"), None);
    }

    #[test]
    fn parse_round_trips_and_ignores_unknown_keys() {
        for key in [
            ClusterKey::Initialize,
            ClusterKey::Config,
            ClusterKey::Leader,
            ClusterKey::Member("n1".into()),
            ClusterKey::Failover,
            ClusterKey::History,
            ClusterKey::Status,
            ClusterKey::Sync,
            ClusterKey::Failsafe,
            ClusterKey::LegacyOptime,
        ] {
            assert_eq!(ClusterKey::parse(&key.relative()), Some(key));
        }
        assert_eq!(ClusterKey::parse("members/"), None);
        assert_eq!(ClusterKey::parse("members/a/b"), None);
        assert_eq!(ClusterKey::parse("something-new"), None);
    }
}
