//! Failures as the Kubernetes API reports them: a `Status` object with a
//! code, a machine-readable reason and a message.

use serde_json::{Value, json};
use thiserror::Error;

use crate::store::Resource;

/// One failed request, rendered as a `v1 Status`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{code} {reason}: {message}")]
pub struct ApiError {
    pub code: u16,
    /// `StatusReason`: `Conflict`, `AlreadyExists`, `NotFound`, ...
    pub reason: &'static str,
    pub message: String,
    /// `details.name` and `details.kind`, where the error is about one object.
    pub details: Option<(String, &'static str)>,
    /// `Retry-After` seconds, for 429 and 503.
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    fn about(mut self, res: Resource, name: &str) -> Self {
        self.details = Some((name.to_string(), res.plural()));
        self
    }

    pub fn not_found(res: Resource, name: &str) -> Self {
        ApiError::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", res.plural()),
        )
        .about(res, name)
    }

    pub fn already_exists(res: Resource, name: &str) -> Self {
        ApiError::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", res.plural()),
        )
        .about(res, name)
    }

    /// A stale `resourceVersion`: kube-apiserver's own wording.
    pub fn conflict(res: Resource, name: &str) -> Self {
        ApiError::conflict_with(
            res,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn conflict_with(res: Resource, name: &str, why: &str) -> Self {
        ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {why}",
                res.plural()
            ),
        )
        .about(res, name)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(400, "BadRequest", message)
    }

    pub fn invalid(res: Resource, name: &str, message: impl Into<String>) -> Self {
        ApiError::new(
            422,
            "Invalid",
            format!("{} \"{name}\" is invalid: {}", res.kind(), message.into()),
        )
        .about(res, name)
    }

    pub fn gone(message: impl Into<String>) -> Self {
        ApiError::new(410, "Expired", message)
    }

    pub fn unsupported_media_type(content_type: &str) -> Self {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/merge-patch+json, application/strategic-merge-patch+json (got {content_type:?})"
            ),
        )
    }

    pub fn method_not_allowed(method: &str) -> Self {
        ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        )
    }

    pub fn path_not_found() -> Self {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// What a fault switch answers with: 429, 500, 503, 504 ...
    pub fn injected(code: u16) -> Self {
        let reason = match code {
            429 => "TooManyRequests",
            500 => "InternalError",
            503 => "ServiceUnavailable",
            504 => "Timeout",
            _ => "",
        };
        let mut e = ApiError::new(code, reason, format!("injected fault: {code}"));
        if code == 429 || code == 503 {
            e.retry_after = Some(1);
        }
        e
    }

    /// The `Status` body.
    pub fn status(&self) -> Value {
        let mut v = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some((name, kind)) = &self.details {
            v["details"] = json!({ "name": name, "kind": kind });
        }
        if let Some(secs) = self.retry_after {
            v["details"]["retryAfterSeconds"] = json!(secs);
        }
        v
    }
}
