//! The fence guard: a small process beside the agent that keeps a primary
//! from writing when the agent itself fails (scenario P4).
//!
//! The agent's own fences (the decision to demote at the lock deadline, and
//! the in-process [`Fence`](crate::fence::Fence) task) live in the agent's
//! process: a `kill -9`, a crash or a `SIGSTOP` of the agent takes them
//! away, and PostgreSQL would go on accepting writes after the lock expired
//! and a replica was promoted. Patroni has the same hole, closed only by
//! the Linux watchdog rebooting the whole host.
//!
//! The guard is a program of its own ([`GuardMode`]: `pg-fence-guard` for
//! the agent; an embedding program may run [`daemon::run`] in a mode of its
//! own), small and single-threaded, in its own process group, started by
//! the agent ([`link`]) and fed one line per change of the lock's deadline
//! ([`protocol`]). It holds no DCS connection: handing a dead agent's lock
//! over is done by a command it starts then ([`handover`]). It ignores SIGTERM and
//! SIGINT (a service manager stopping the agent's unit must not kill it
//! before it fenced), and acts alone ([`daemon`]):
//!
//! - deadline missed (agent frozen or stuck): stop PostgreSQL immediately
//!   (SIGQUIT half a second before any replica can take the lock, then
//!   SIGKILL if it is still up 0.7 s later: [`stop`]) — while the lock is
//!   held even a standby, which may be in the middle of a promotion;
//! - agent gone (pipe closed without `exit`): stop PostgreSQL immediately,
//!   mark the member stopped and release the dead agent's leader lock by
//!   compare-and-set, so failover takes a second instead of `ttl`.
//!
//! The agent restarts a guard that dies, and a node whose guard stays down
//! is not allowed to be primary (`decide` demotes it and keeps it out of the
//! leader race). In maintenance mode the guard touches nothing.
//!
//! The guard also holds the Linux watchdog device while the lock is held
//! (`watchdog.mode`, [`watchdog`]): it resets the host only if the guard
//! itself dies or freezes, or cannot stop PostgreSQL.

pub mod daemon;
pub mod handover;
pub mod link;
pub mod postmaster;
pub mod protocol;
pub mod service_watchdog;
pub mod stop;
pub mod watchdog;

pub use handover::Handover;
pub use link::{GuardDown, GuardHealth, GuardInput, GuardLink, GuardMode};
pub use protocol::{WatchdogReport, WatchdogWant};
