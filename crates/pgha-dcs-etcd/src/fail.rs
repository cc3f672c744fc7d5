//! What an etcd error means for the HA loop.

use etcd_client::Error;
use tonic_code::Code;

/// A failed etcd request, sorted by what the caller must do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fail {
    /// No answer, a broken connection, or a server that cannot serve now
    /// (no leader, overloaded). The connection is dropped; the outcome of a
    /// write is unknown.
    Transport {
        detail: String,
        /// The request surely never reached a server (the connection could
        /// not be made), so repeating it cannot apply it twice.
        not_sent: bool,
    },
    /// The lease named in the request does not exist (expired or revoked).
    LeaseGone,
    /// Refused: authentication, permissions, a malformed request.
    Rejected(String),
}

/// gRPC status codes, as numbers, so that this crate needs no direct
/// dependency on tonic (etcd-client re-exports its `Status` type only
/// inside its error).
mod tonic_code {
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) struct Code(pub(crate) i32);
    impl Code {
        pub(crate) const CANCELLED: Code = Code(1);
        pub(crate) const UNKNOWN: Code = Code(2);
        pub(crate) const DEADLINE_EXCEEDED: Code = Code(4);
        pub(crate) const NOT_FOUND: Code = Code(5);
        pub(crate) const RESOURCE_EXHAUSTED: Code = Code(8);
        pub(crate) const ABORTED: Code = Code(10);
        pub(crate) const INTERNAL: Code = Code(13);
        pub(crate) const UNAVAILABLE: Code = Code(14);
        pub(crate) const DATA_LOSS: Code = Code(15);
    }
}

/// etcd's message for a lease that is gone (`rpctypes.ErrLeaseNotFound`).
const LEASE_NOT_FOUND: &str = "requested lease not found";

/// Messages of transport errors raised before a request was written to a
/// connection: the TCP/TLS connect failed, or the endpoint was unusable.
const NOT_SENT_MARKERS: [&str; 5] = [
    "error trying to connect",
    "tcp connect error",
    "Connection refused",
    "connection refused",
    "dns error",
];

impl Fail {
    pub(crate) fn from_etcd(e: &Error) -> Fail {
        match e {
            Error::GRpcStatus(s) => {
                let code = Code(s.code() as i32);
                let msg = s.message();
                let detail = match root_cause(s) {
                    Some(cause) if !msg.contains(&cause) => {
                        format!("{:?}: {msg}: {cause}", s.code())
                    }
                    _ => format!("{:?}: {msg}", s.code()),
                };
                if msg.contains(LEASE_NOT_FOUND) && code == Code::NOT_FOUND {
                    return Fail::LeaseGone;
                }
                if is_certificate_problem(&detail) {
                    return Fail::Rejected(detail);
                }
                match code {
                    Code::CANCELLED
                    | Code::UNKNOWN
                    | Code::DEADLINE_EXCEEDED
                    | Code::RESOURCE_EXHAUSTED
                    | Code::ABORTED
                    | Code::INTERNAL
                    | Code::UNAVAILABLE
                    | Code::DATA_LOSS => Fail::Transport {
                        not_sent: code == Code::UNAVAILABLE && is_connect_failure(&detail),
                        detail,
                    },
                    // InvalidArgument, NotFound, AlreadyExists,
                    // PermissionDenied, FailedPrecondition, OutOfRange,
                    // Unimplemented, Unauthenticated: the server answered
                    // and said no.
                    _ => Fail::Rejected(detail),
                }
            }
            Error::LeaseKeepAliveError(m) if m.contains("lease not found") => Fail::LeaseGone,
            Error::TransportError(t) => {
                let detail = match root_cause(t) {
                    Some(cause) => format!("{t}: {cause}"),
                    None => t.to_string(),
                };
                if is_certificate_problem(&detail) {
                    return Fail::Rejected(detail);
                }
                Fail::Transport {
                    not_sent: true,
                    detail,
                }
            }
            Error::IoError(_)
            | Error::WatchError(_)
            | Error::LeaseKeepAliveError(_)
            | Error::Internal(_)
            | Error::ElectError(_) => Fail::Transport {
                detail: e.to_string(),
                not_sent: false,
            },
            // A bad URL or header, or an unmanaged endpoint set:
            // configuration, not the network.
            _ => Fail::Rejected(e.to_string()),
        }
    }

    /// A request that timed out: it may or may not have been applied.
    pub(crate) fn timed_out(after: std::time::Duration) -> Fail {
        Fail::Transport {
            detail: format!("no answer within {after:?}"),
            not_sent: false,
        }
    }
}

/// The innermost source of an error ("Connection refused (os error 111)"),
/// which says more than tonic's "transport error".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause = e.source()?;
    // Bounded: error chains are short, but nothing promises that.
    for _ in 0..16 {
        match cause.source() {
            Some(next) => cause = next,
            None => break,
        }
    }
    Some(cause.to_string())
}

/// A TLS handshake that failed on trust (unknown CA, missing or refused
/// client certificate): configuration, not the network, and retrying will
/// not fix it.
fn is_certificate_problem(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    d.contains("certificate") && !d.contains("timed out")
}

fn is_connect_failure(detail: &str) -> bool {
    NOT_SENT_MARKERS.iter().any(|m| detail.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages matched above, as a real etcd (`PGHA_ETCD_BIN` or
    /// `etcd`) and tonic produce them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn real_errors_are_classified() {
        let server = pgha_testkit::etcd::EtcdServer::start().await.unwrap();
        let mut c = etcd_client::Client::connect([server.endpoint()], None)
            .await
            .unwrap();
        let missing = 0x7e57;
        let e = c
            .put(
                "k",
                "v",
                Some(etcd_client::PutOptions::new().with_lease(missing)),
            )
            .await
            .unwrap_err();
        assert_eq!(Fail::from_etcd(&e), Fail::LeaseGone, "{e:?}");
        let e = c.lease_keep_alive(missing).await.unwrap_err();
        assert_eq!(Fail::from_etcd(&e), Fail::LeaseGone, "{e:?}");

        let port = pgha_testkit::ports::free_port().unwrap();
        let mut dead = etcd_client::Client::connect([format!("http://127.0.0.1:{port}")], None)
            .await
            .unwrap();
        let e = dead.get("k", None).await.unwrap_err();
        assert!(
            matches!(Fail::from_etcd(&e), Fail::Transport { not_sent: true, .. }),
            "{e:?}"
        );
    }
}
