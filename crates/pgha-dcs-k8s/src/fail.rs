//! What a failed API request means for the HA loop.

use pgha_core::dcs::DcsError;

/// A failed request, sorted by what the caller must do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fail {
    /// The server answered with a status the caller interprets: 404, 409
    /// (Conflict or AlreadyExists), 410, 422, ...
    Status {
        code: u16,
        reason: String,
        message: String,
    },
    /// No answer, a broken connection, or a server that cannot serve now
    /// (429, 5xx). The outcome of a write is unknown unless `not_sent`.
    Transport {
        detail: String,
        /// The request surely was not processed (the connection could not
        /// be made, or the server refused it with 429 before processing).
        not_sent: bool,
    },
    /// Refused for good: authentication, RBAC, TLS trust, configuration.
    Rejected(String),
}

/// Status codes after which a request is worth repeating.
pub(crate) const RETRIABLE: [u16; 5] = [429, 500, 502, 503, 504];

impl Fail {
    pub(crate) fn from_kube(e: &kube::Error, extra_retriable: &[u16]) -> Fail {
        match e {
            kube::Error::Api(status) => {
                let code = status.code;
                let detail = format!("{code} {}: {}", status.reason, status.message);
                if RETRIABLE.contains(&code) || extra_retriable.contains(&code) {
                    // 429 is refused before any processing.
                    Fail::Transport {
                        detail,
                        not_sent: code == 429,
                    }
                } else if code == 401 || code == 403 {
                    Fail::Rejected(detail)
                } else {
                    Fail::Status {
                        code,
                        reason: status.reason.clone(),
                        message: status.message.clone(),
                    }
                }
            }
            kube::Error::HyperError(_)
            | kube::Error::Service(_)
            | kube::Error::ReadEvents(_)
            | kube::Error::FromUtf8(_)
            | kube::Error::SerdeError(_)
            | kube::Error::LinesCodecMaxLineLengthExceeded => {
                let detail = chain(e);
                if is_certificate_problem(&detail) {
                    return Fail::Rejected(detail);
                }
                Fail::Transport {
                    not_sent: is_connect_failure(e, &detail),
                    detail,
                }
            }
            // Building the request, TLS setup, auth providers, kubeconfig:
            // configuration, not the network.
            other => Fail::Rejected(chain(other)),
        }
    }

    pub(crate) fn is_status(&self, code: u16) -> bool {
        matches!(self, Fail::Status { code: c, .. } if *c == code)
    }

    /// The typed error for a failure the caller did not interpret.
    pub(crate) fn into_dcs(self, operation: &'static str) -> DcsError {
        match self {
            Fail::Transport { detail, .. } => DcsError::unreachable(operation, detail),
            Fail::Rejected(detail) => DcsError::rejected(operation, detail),
            Fail::Status {
                code,
                reason,
                message,
            } => DcsError::rejected(operation, format!("{code} {reason}: {message}")),
        }
    }
}

/// The error and its sources, innermost last: hyper's "client error
/// (Connect)" says little without "Connection refused (os error 111)".
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    // Bounded: error chains are short, but nothing promises that.
    for _ in 0..16 {
        let Some(s) = cur else { break };
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

/// The TCP connection could not be made: nothing was sent.
fn is_connect_failure(e: &(dyn std::error::Error + 'static), detail: &str) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    for _ in 0..16 {
        let Some(s) = cur else { break };
        if let Some(io) = s.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::AddrNotAvailable
            )
        {
            return true;
        }
        cur = s.source();
    }
    detail.contains("client error (Connect)") || detail.contains("tcp connect error")
}

fn is_certificate_problem(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    d.contains("certificate") && !d.contains("timed out")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, reason: &str) -> kube::Error {
        kube::Error::Api(Box::new(
            kube::core::Status::failure("m", reason).with_code(code),
        ))
    }

    #[test]
    fn statuses_are_sorted() {
        assert!(matches!(
            Fail::from_kube(&api(409, "Conflict"), &[]),
            Fail::Status { code: 409, .. }
        ));
        assert!(matches!(
            Fail::from_kube(&api(404, "NotFound"), &[]),
            Fail::Status { code: 404, .. }
        ));
        assert!(matches!(
            Fail::from_kube(&api(403, "Forbidden"), &[]),
            Fail::Rejected(_)
        ));
        assert!(matches!(
            Fail::from_kube(&api(429, "TooManyRequests"), &[]),
            Fail::Transport { not_sent: true, .. }
        ));
        assert!(matches!(
            Fail::from_kube(&api(503, "ServiceUnavailable"), &[]),
            Fail::Transport {
                not_sent: false,
                ..
            }
        ));
        assert!(matches!(
            Fail::from_kube(&api(401, "Unauthorized"), &[401]),
            Fail::Transport { .. }
        ));
        assert!(
            Fail::from_kube(&api(422, "Invalid"), &[])
                .into_dcs("x")
                .to_string()
                .contains("422")
        );
    }
}
