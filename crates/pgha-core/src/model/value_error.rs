//! Why a value stored in the DCS cannot be read.
//!
//! A value that does not read is reported with its key
//! ([`KeyProblem`](super::KeyProblem)) and treated as absent, never guessed
//! at; this says what was wrong with it.

/// What was wrong with a stored value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Not JSON at all (and not one of the legacy plain forms).
    #[error("invalid JSON: {0}")]
    NotJson(String),
    /// JSON of the wrong kind: a list where an object belongs, ...
    #[error("expected {expected}, found {found}")]
    WrongKind {
        expected: &'static str,
        found: &'static str,
    },
    /// The right kind, but a field does not read (`what`: the value's name).
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    /// Neither JSON nor the legacy bare LSN.
    #[error("expected an LSN, found {0}")]
    NotAnLsn(String),
    /// A time that is not ISO 8601 (as Python writes and reads them).
    #[error("{0:?} is not an ISO 8601 time")]
    NotATime(String),
}

impl ValueError {
    /// `found` was not the `expected` kind of JSON.
    pub(crate) fn wrong_kind(expected: &'static str, found: &serde_json::Value) -> Self {
        ValueError::WrongKind {
            expected,
            found: super::dynamic_config::json_kind(found),
        }
    }
}
