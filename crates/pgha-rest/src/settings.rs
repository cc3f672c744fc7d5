//! The REST API's settings, in pgha's types (Patroni's `restapi` section
//! is mapped onto them by the configuration layer).

use std::path::PathBuf;

use crate::access::AllowEntry;

/// Whether the REST API asks clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyClient {
    None,
    /// Checked when presented.
    Optional,
    /// Every client must present one signed by `cafile`.
    Required,
}

/// HTTPS for the REST API (`restapi.certfile` and friends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestApiTls {
    pub certfile: PathBuf,
    /// The private key; `certfile` when the key is in the same file.
    pub keyfile: PathBuf,
    /// CA for client certificates (and, for peers' certificates, unless
    /// `ctl.cacert` is set).
    pub cafile: Option<PathBuf>,
    pub verify_client: VerifyClient,
}

/// `restapi.allowlist` and `restapi.allowlist_include_members`: who may
/// call the REST API's unsafe methods ([`access`](crate::access)). An empty list and
/// `false` admit everyone, as in Patroni.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RestApiAccess {
    /// Every entry parsed; an entry that does not parse is a configuration
    /// error naming it (`restapi.allowlist[2]: ...`), never dropped.
    pub allowlist: Vec<AllowEntry>,
    /// Members' `api_url` hosts (from the DCS) are admitted too.
    pub include_members: bool,
}
