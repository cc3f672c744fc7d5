//! What can go wrong talking to a DCS, typed so the HA loop can act on it.

use thiserror::Error;

/// A failed DCS operation.
///
/// The variants are what the HA loop must tell apart:
/// - [`Unreachable`](DcsError::Unreachable): no answer within the deadline.
///   Retry; a leader that stays here past its renewal deadline demotes.
/// - [`NotOwner`](DcsError::NotOwner), [`Conflict`](DcsError::Conflict),
///   [`SessionExpired`](DcsError::SessionExpired): someone else won, or we
///   lost what we held. Never retry blindly: reload and decide again.
/// - [`Corrupt`](DcsError::Corrupt): the stored data cannot be used; a
///   person must look. Retrying does not help.
/// - [`Rejected`](DcsError::Rejected): the server refused (authentication,
///   permissions, a malformed request). Configuration, not the network.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum DcsError {
    /// No answer from the DCS within the operation's deadline, or the
    /// connection failed. Whether a write was applied is unknown.
    #[error("DCS unreachable during {operation}: {detail}")]
    Unreachable {
        operation: &'static str,
        detail: String,
    },

    /// The lock or key is held by someone else (or by nobody), so an
    /// operation that requires owning it did nothing.
    #[error("{key}: not ours, held by {}", holder.as_deref().unwrap_or("nobody"))]
    NotOwner { key: String, holder: Option<String> },

    /// A compare-and-set found another version than expected (or the key
    /// exists where absence was required, or is gone where a version was
    /// expected). Nothing was written.
    #[error("{key}: changed by someone else (compare-and-set failed)")]
    Conflict { key: String },

    /// This node's lease or session has expired: every key attached to it
    /// (the leader lock, the member key) is gone or about to go. The next
    /// operation starts a new lease or session.
    #[error("our DCS {what} expired: the leader lock and member key it held are gone")]
    SessionExpired { what: &'static str },

    /// A stored value cannot be used.
    #[error("{key}: corrupt value: {reason}")]
    Corrupt { key: String, reason: String },

    /// The DCS refused the request (authentication, permission, bad request).
    #[error("DCS rejected {operation}: {detail}")]
    Rejected {
        operation: &'static str,
        detail: String,
    },
}

impl DcsError {
    pub fn unreachable(operation: &'static str, detail: impl ToString) -> Self {
        DcsError::Unreachable {
            operation,
            detail: detail.to_string(),
        }
    }

    pub fn conflict(key: impl ToString) -> Self {
        DcsError::Conflict {
            key: key.to_string(),
        }
    }

    pub fn not_owner(key: impl ToString, holder: Option<String>) -> Self {
        DcsError::NotOwner {
            key: key.to_string(),
            holder,
        }
    }

    pub fn rejected(operation: &'static str, detail: impl ToString) -> Self {
        DcsError::Rejected {
            operation,
            detail: detail.to_string(),
        }
    }

    /// The DCS could not be asked: the outcome of a write is unknown.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, DcsError::Unreachable { .. })
    }

    /// Someone else won, or we lost what we held: reload and decide again.
    pub fn is_lost_race(&self) -> bool {
        matches!(
            self,
            DcsError::NotOwner { .. } | DcsError::Conflict { .. } | DcsError::SessionExpired { .. }
        )
    }
}
