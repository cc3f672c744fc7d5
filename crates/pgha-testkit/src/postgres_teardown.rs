//! Ending a test's PostgreSQL servers without leaving their shared memory
//! behind on the machine.
//!
//! Why: a postmaster that dies by SIGKILL leaves its System V interlock
//! segment (one of `kernel.shmmni`, 4096 per machine) and its POSIX dynamic
//! shared memory in /dev/shm (about 1 MiB of RAM) behind. PostgreSQL frees
//! them only when a postmaster starts again in the same data directory, and
//! tests delete theirs. On a machine that runs the suite all day they piled
//! up until `shmget` failed and no new postmaster could start: a CI run
//! failed 14 tests with 4,093 segments and 4.1 GB in /dev/shm left by
//! earlier runs.
//!
//! Two measures: [`stop_postmasters`] ends servers with an immediate
//! shutdown (SIGQUIT), after which PostgreSQL frees its memory itself, and
//! only then kills what is left; [`release_orphaned_shared_memory`] frees
//! what killed servers left, from this run or earlier ones.
//!
//! What holds: a segment is released only if no process is attached to it
//! (a postmaster and every one of its children stay attached for their whole
//! life), its creator is gone, and it starts with PostgreSQL's header
//! magic — the test PostgreSQL itself applies before it removes a
//! predecessor's segment — so a running server, ours or anyone's, is never
//! touched.
#![allow(unsafe_code)] // shmat/shmdt/shmctl: System V shared memory has no safe wrapper in nix

use std::path::Path;
use std::time::{Duration, Instant};

use nix::libc;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// `PGShmemMagic` (src/include/storage/pg_shmem.h).
const SHMEM_MAGIC: i32 = 679_834_894;
/// Offset of `dsm_control` in `PGShmemHeader` on 64-bit Linux (magic, pid,
/// two `Size`s, then the handle).
const DSM_CONTROL_OFFSET: usize = 24;
/// `PG_DYNSHMEM_CONTROL_MAGIC` (src/backend/storage/ipc/dsm.c).
const DSM_CONTROL_MAGIC: u32 = 0x9a50_3d32;
/// `dsm_control_header`: magic, nitems, maxitems, padded to the items' alignment.
const DSM_HEADER_SIZE: usize = 16;
/// `dsm_control_item` on 64-bit Linux: handle, refcnt, first_page, npages,
/// impl_private_pm_handle, pinned (padded).
const DSM_ITEM_SIZE: usize = 40;

/// Ends the postmasters `pids` (some may be gone already): an immediate
/// shutdown for all at once, up to `within` for them to exit, then SIGKILL
/// for any still there.
pub fn stop_postmasters(pids: &[i32], within: Duration) {
    let alive: Vec<i32> = pids.iter().copied().filter(|&p| is_running(p)).collect();
    for &p in &alive {
        let _ = kill(Pid::from_raw(p), Signal::SIGQUIT);
    }
    let until = Instant::now() + within;
    while Instant::now() < until && alive.iter().any(|&p| is_running(p)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for &p in &alive {
        if is_running(p) {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
    }
}

/// SIGKILL to every backend of the PostgreSQL cluster named `cluster_name`
/// (`postgres: <cluster_name>: ...` in its command line) that is still
/// there: a backend whose postmaster died first (with its fence guard) is
/// left to init, and one a test froze (SIGSTOP of WAL senders) would hold
/// its shared memory for ever. Returns how many it found.
pub fn kill_backends_of(cluster_name: &str) -> usize {
    let prefix = format!("postgres: {cluster_name}: ");
    let pids: Vec<i32> = crate::faults::procs::table()
        .into_iter()
        .filter(|p| p.cmdline.starts_with(&prefix))
        .map(|p| p.pid)
        .collect();
    for &p in &pids {
        let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
    }
    pids.len()
}

/// The postmaster's pid from `data_dir/postmaster.pid`, if it still runs.
pub fn running_postmaster(data_dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    is_running(pid).then_some(pid)
}

/// A lock, across the test processes of this machine, that keeps
/// [`release_orphaned_shared_memory`] from running while it is held: a
/// test that checks a killed server's memory is still there holds it from
/// the kill to the check. `None` if the lock file cannot be used (then
/// nothing waits).
pub fn hold_shared_memory() -> Option<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("pgha-testkit-shared-memory.lock"))
        .ok()?;
    file.lock().ok()?;
    Some(file)
}

/// What [`release_orphaned_shared_memory`] freed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// System V interlock segments removed.
    pub segments: usize,
    /// Files removed from /dev/shm.
    pub dsm_files: usize,
    /// Their size in bytes.
    pub dsm_bytes: u64,
}

/// Frees the shared memory of every dead PostgreSQL server on the machine
/// (see the module's doc for why that is safe), as PostgreSQL does for its
/// predecessor when it starts in the same data directory.
pub fn release_orphaned_shared_memory() -> Released {
    // Not while a test looks at a killed server's memory (tests run
    // concurrently, in threads or processes).
    let _held = hold_shared_memory();
    let mut released = Released::default();
    let Ok(table) = std::fs::read_to_string("/proc/sysvipc/shm") else {
        return released;
    };
    // key shmid perms size cpid lpid nattch uid gid ...
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let number = |i: usize| fields.get(i).and_then(|f| f.parse::<i64>().ok());
        let (Some(shmid), Some(size), Some(creator), Some(attached)) =
            (number(1), number(3), number(4), number(6))
        else {
            continue;
        };
        let (Ok(shmid), Ok(creator)) = (i32::try_from(shmid), i32::try_from(creator)) else {
            continue;
        };
        if attached != 0 || size < 56 || is_running(creator) {
            continue;
        }
        let Some(dsm_control) = postgres_header(shmid) else {
            continue;
        };
        if dsm_control != 0 {
            release_dynamic_shared_memory(dsm_control, &mut released);
        }
        // SAFETY: IPC_RMID takes no buffer; the id came from the kernel's table.
        if unsafe { libc::shmctl(shmid, libc::IPC_RMID, std::ptr::null_mut()) } == 0 {
            released.segments += 1;
        }
    }
    released
}

/// The `dsm_control` handle of segment `shmid`, if it is a PostgreSQL
/// header no process is attached to.
fn postgres_header(shmid: i32) -> Option<u32> {
    // SAFETY: a read-only attach; the pointer is checked before use and
    // detached before returning. The segment is at least 56 bytes (checked
    // by the caller from the kernel's table), so both reads are in bounds.
    unsafe {
        let at = libc::shmat(shmid, std::ptr::null(), libc::SHM_RDONLY);
        if at as isize == -1 {
            return None;
        }
        let base = at as *const u8;
        let magic = std::ptr::read_unaligned(base as *const i32);
        let dsm_control = std::ptr::read_unaligned(base.add(DSM_CONTROL_OFFSET) as *const u32);
        let mut stat: libc::shmid_ds = std::mem::zeroed();
        let stat_ok = libc::shmctl(shmid, libc::IPC_STAT, &mut stat) == 0;
        libc::shmdt(at);
        // Our own attach counts once: anyone else attached means it is in use.
        (magic == SHMEM_MAGIC && stat_ok && stat.shm_nattch <= 1).then_some(dsm_control)
    }
}

/// Removes the dynamic shared memory control segment `handle` and every
/// segment it lists, as PostgreSQL's `dsm_cleanup_using_control_segment`.
fn release_dynamic_shared_memory(handle: u32, released: &mut Released) {
    let control = dsm_path(handle);
    let Ok(bytes) = std::fs::read(&control) else {
        return;
    };
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
    };
    let layout_known = word(0) == Some(DSM_CONTROL_MAGIC)
        && word(8).is_some_and(|max| bytes.len() == DSM_HEADER_SIZE + max as usize * DSM_ITEM_SIZE);
    if layout_known {
        let items = word(4).unwrap_or(0) as usize;
        for i in 0..items {
            let at = DSM_HEADER_SIZE + i * DSM_ITEM_SIZE;
            let (Some(item), Some(refcnt)) = (word(at), word(at + 4)) else {
                break;
            };
            // Odd handles name slots in the main region, not files.
            if refcnt != 0 && item % 2 == 0 {
                remove(&dsm_path(item), released);
            }
        }
    }
    remove(&control, released);
}

fn dsm_path(handle: u32) -> std::path::PathBuf {
    Path::new("/dev/shm").join(format!("PostgreSQL.{handle}"))
}

fn remove(path: &Path, released: &mut Released) {
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if std::fs::remove_file(path).is_ok() {
        released.dsm_files += 1;
        released.dsm_bytes += size;
    }
}

/// Whether `pid` is a live process (a zombie waiting for its parent is not).
fn is_running(pid: i32) -> bool {
    if pid <= 0 || kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}
