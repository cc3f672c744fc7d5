//! The Debian package as installed (`scripts/test-package.sh` builds it,
//! installs it on this machine, runs this test, and removes it): a
//! three-node cluster of the installed `/usr/bin/pgha` (with the
//! `pg-fence-guard` installed beside it) elects a primary, the installed
//! `pghactl` lists it, and the cluster fails over when the primary's host
//! dies and when its agent alone is killed (the installed guard hands the
//! lock over).

// A panic is how a test fails; the helpers here are part of the tests.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use pgha_testkit::cluster::{ClusterOptions, DcsKind, TestCluster};

const BOOT: Duration = Duration::from_secs(60);

fn installed(program: &str) -> PathBuf {
    let dir = std::env::var_os("PGHA_INSTALLED_DIR").unwrap_or_else(|| "/usr/bin".into());
    Path::new(&dir).join(program)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the package installed: scripts/test-package.sh runs it"]
async fn the_installed_package_runs_a_cluster_that_fails_over() {
    pgha_testkit::init_tracing();
    let agent = installed("pgha");
    assert!(
        installed("pg-fence-guard").is_file(),
        "the package installs pg-fence-guard beside pgha"
    );
    let mut c = TestCluster::new(&agent, DcsKind::Etcd, ClusterOptions::default())
        .await
        .unwrap();
    c.start_all().unwrap();
    let first = c.wait_converged(&[0, 1, 2], BOOT).await.unwrap();
    assert_eq!(c.guard_pids(first).len(), 1, "the installed guard runs");

    let list = std::process::Command::new(installed("pghactl"))
        .arg("-c")
        .arg(c.ctl_config().unwrap())
        .args(["list", "-f", "tsv"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success(), "{text}");
    assert_eq!(text.matches("\tLeader\trunning").count(), 1, "{text}");
    assert_eq!(text.matches("\tReplica\tstreaming").count(), 2, "{text}");

    // The primary's agent alone dies: its guard fences and hands over.
    c.kill_agent(first);
    let second = new_primary(&c, first).await;
    assert!(
        c.log(first)
            .contains("FENCE GUARD: released the leader lock"),
        "{}",
        c.log(first)
    );
    c.start_agent(first).unwrap();
    c.wait_converged(&[0, 1, 2], Duration::from_secs(90))
        .await
        .unwrap();

    // The new primary's host dies: the lock expires and another takes over.
    c.kill_node(second);
    new_primary(&c, second).await;
}

/// Waits (bounded) for a primary other than `old`.
async fn new_primary(c: &TestCluster, old: usize) -> usize {
    let within = Duration::from_secs(c.options.ttl + 30);
    let started = tokio::time::Instant::now();
    loop {
        if let Some(n) = c.primary().await
            && n != old
        {
            return n;
        }
        assert!(
            started.elapsed() < within,
            "no new primary within {within:?}\n{}",
            c.log(old)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
