//! The fault harness: a 3-node cluster under a live writer, one fault, and
//! what a user would check afterwards (scenarios.md): acknowledged rows
//! lost, two servers accepting writes at once, the write gap, and whether
//! the cluster converged.
//!
//! - [`writer`]: the main writer (multi-host, `target_session_attrs=read-write`)
//!   and a writer pinned to the original primary (a stale client);
//! - [`checker`]: tenures, overlaps (split brain), losses, gaps;
//! - [`procs`]: killing every process of one node ("reboot a host");
//! - [`partition`]: partition scenarios in network namespaces;
//! - [`scenario`]: one run, from a converged cluster to an [`scenario::Outcome`].

pub mod checker;
pub mod partition;
pub mod procs;
pub mod scenario;
pub mod writer;
