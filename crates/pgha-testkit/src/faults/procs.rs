//! "Rebooting a host" on a shared machine: kill -9 every process of one
//! node — its agent and whatever the agent runs (pg_ctl, pg_rewind, ...),
//! its postmaster and all the postmaster's children — and nothing else.
//!
//! pg_ctl puts the postmaster in a session of its own, so its children are
//! found by session; processes mid-flight (a pg_ctl, a pg_basebackup) by
//! being descendants of the agent or by naming the node's data directory.

use std::collections::BTreeSet;
use std::path::Path;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// One line of the process table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    pub session: i32,
    pub cmdline: String,
}

/// The processes visible in `/proc` (those that vanish while reading are skipped).
pub fn table() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // "pid (comm) S ppid pgrp session ...": comm may hold spaces and
            // parentheses, so split after the last ')'.
            let (_, rest) = stat.rsplit_once(')')?;
            let mut f = rest.split_whitespace();
            let state = f.next()?;
            if state == "Z" || state == "X" {
                return None;
            }
            let ppid = f.next()?.parse().ok()?;
            let _pgrp = f.next()?;
            let session = f.next()?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            Some(Proc {
                pid,
                ppid,
                session,
                cmdline,
            })
        })
        .collect()
}

/// The pids belonging to a node: `roots` and their descendants, every
/// process in a session led by one of `sessions`, and every process whose
/// command line names `data_dir`.
pub fn node_pids(
    procs: &[Proc],
    roots: &[i32],
    sessions: &[i32],
    data_dir: &Path,
) -> BTreeSet<i32> {
    let dir = data_dir.to_string_lossy();
    let mut out: BTreeSet<i32> = procs
        .iter()
        .filter(|p| {
            roots.contains(&p.pid)
                || sessions.contains(&p.session)
                || (!dir.is_empty() && p.cmdline.contains(&*dir))
        })
        .map(|p| p.pid)
        .collect();
    // Descendants, to a fixed point (bounded by the table's size).
    for _ in 0..procs.len() {
        let before = out.len();
        for p in procs {
            if out.contains(&p.ppid) {
                out.insert(p.pid);
            }
        }
        if out.len() == before {
            break;
        }
    }
    out.remove(&(std::process::id() as i32));
    out.remove(&1);
    out.remove(&0);
    out
}

/// Kills (SIGKILL) every process of a node until none is left: the agent
/// `agent` and its descendants, the postmaster `postmaster` with its
/// session, and anything naming `data_dir`. Returns how many were killed.
pub async fn kill_node(
    agent: Option<u32>,
    postmaster: Option<i32>,
    data_dir: &Path,
) -> anyhow::Result<usize> {
    let roots: Vec<i32> = agent
        .map(|a| a as i32)
        .into_iter()
        .chain(postmaster)
        .collect();
    let mut sessions: Vec<i32> = postmaster.into_iter().collect();
    let mut killed = BTreeSet::new();
    for _ in 0..50 {
        let procs = table();
        // A postmaster started meanwhile leads a session of its own.
        for p in &procs {
            if p.cmdline.contains(&*data_dir.to_string_lossy()) && p.session == p.pid {
                sessions.push(p.pid);
            }
        }
        let victims = node_pids(&procs, &roots, &sessions, data_dir);
        let fresh: Vec<i32> = victims.difference(&killed).copied().collect();
        let alive: Vec<i32> = victims
            .iter()
            .copied()
            .filter(|&p| kill(Pid::from_raw(p), None).is_ok())
            .collect();
        if alive.is_empty() {
            return Ok(killed.len());
        }
        for &p in &alive {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
        killed.extend(fresh);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    anyhow::bail!(
        "processes of {} still alive after 50 rounds of SIGKILL",
        data_dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: i32, ppid: i32, session: i32, cmd: &str) -> Proc {
        Proc {
            pid,
            ppid,
            session,
            cmdline: cmd.into(),
        }
    }

    #[test]
    fn a_node_is_its_agent_tree_its_postmaster_session_and_its_data_dir() {
        let procs = vec![
            p(10, 1, 10, "pgha node1.yml"),
            p(11, 10, 10, "pg_ctl start -D /x/node1-data"),
            p(20, 1, 20, "postgres -D /x/node1-data"),
            p(21, 20, 20, "postgres: walreceiver"),
            p(22, 21, 20, "postgres: archive helper"),
            p(30, 1, 30, "postgres -D /x/node2-data"),
            p(31, 30, 30, "postgres: walsender"),
            p(40, 1, 40, "pg_rewind -D /x/node1-data"),
        ];
        let got = node_pids(&procs, &[10, 20], &[20], Path::new("/x/node1-data"));
        assert_eq!(got, [10, 11, 20, 21, 22, 40].into());
    }
}
