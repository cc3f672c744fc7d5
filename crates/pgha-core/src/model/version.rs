//! Versions of stored values, and the conditions a write is guarded by.
//!
//! Every engine can tell whether a value changed since it was read, but each
//! spells it differently: etcd's `mod_revision` (i64), ZooKeeper's znode data
//! version (i32), Consul's `ModifyIndex` (u64) and Kubernetes'
//! `resourceVersion` (an opaque string). [`Version`] carries any of them; only
//! the backend that produced a version interprets it.

use std::fmt;

/// The version of one stored value, as reported by the engine that stores it.
///
/// Invariant: a `Version` is only ever compared with versions from the same
/// backend and the same key. Two equal versions mean "unchanged since".
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Version(Repr);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Repr {
    Number(i64),
    Token(String),
}

impl Version {
    /// A numeric version: etcd revision, znode version, Consul index.
    pub fn number(n: i64) -> Self {
        Version(Repr::Number(n))
    }

    /// An opaque version, such as a Kubernetes `resourceVersion`.
    pub fn token(t: impl Into<String>) -> Self {
        Version(Repr::Token(t.into()))
    }

    /// The number, when this version is numeric.
    pub fn as_number(&self) -> Option<i64> {
        match &self.0 {
            Repr::Number(n) => Some(*n),
            Repr::Token(t) => t.parse().ok(),
        }
    }

    /// The opaque token, when this version is one.
    pub fn as_token(&self) -> Option<&str> {
        match &self.0 {
            Repr::Number(_) => None,
            Repr::Token(t) => Some(t),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Number(n) => write!(f, "{n}"),
            Repr::Token(t) => f.write_str(t),
        }
    }
}

/// A value read from the DCS together with the version it had.
#[derive(Clone, Debug, PartialEq)]
pub struct Versioned<T> {
    pub value: T,
    pub version: Version,
}

impl<T> Versioned<T> {
    pub fn new(value: T, version: Version) -> Self {
        Versioned { value, version }
    }
}

/// The condition a guarded write or delete must meet to be applied.
///
/// A write whose condition does not hold changes nothing and fails with
/// [`DcsError::Conflict`](crate::dcs::DcsError::Conflict).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Write whatever is there (last writer wins).
    Any,
    /// Create only: the key must not exist.
    Absent,
    /// The key must still hold the value read at this version.
    Version(Version),
}

impl Expect {
    /// `Version(v)` when a version is known, `Absent` when the key was absent.
    pub fn from_read(version: Option<&Version>) -> Self {
        match version {
            Some(v) => Expect::Version(v.clone()),
            None => Expect::Absent,
        }
    }
}
