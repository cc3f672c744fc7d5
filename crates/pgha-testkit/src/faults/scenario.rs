//! One fault scenario: start a converged 3-node cluster and both writers,
//! let the test inject its fault, then measure what the writers saw.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::json;
use tokio::time::Instant;

use super::checker::{self, Overlap};
use super::writer::{self, Writer, WriterConfig};
use crate::cluster::{ClusterOptions, DcsKind, TestCluster};

/// How long a fresh cluster may take to bootstrap and converge.
const BOOT: Duration = Duration::from_secs(90);

/// A scenario in progress.
#[derive(Debug)]
pub struct Run {
    pub cluster: TestCluster,
    /// The primary when the writers started.
    pub primary: usize,
    epoch: Instant,
    main: Writer,
    pinned: Writer,
    fault_at: Option<Duration>,
}

/// What a scenario measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub id: String,
    pub fault: String,
    /// Rows both writers got acknowledged.
    pub acked: usize,
    /// Acknowledged rows missing on the final primary.
    pub lost: usize,
    pub split_brain: Vec<Overlap>,
    /// Rows the old primary acknowledged to the pinned writer (a stale
    /// client) after another server had accepted a write: writes that a
    /// failover throws away. `None` when no other server took writes.
    pub stale_writes: Option<usize>,
    /// The longest gap between the main writer's acknowledgements after
    /// the fault.
    pub gap: Option<Duration>,
    /// From the fault to the first write acknowledged by another server.
    pub failover: Option<Duration>,
    /// From the fault until one leader with every other member streaming.
    pub converged_after: Duration,
    /// The final primary.
    pub final_primary: String,
    pub main_errors: u64,
}

impl Outcome {
    /// One JSON line for the results table.
    pub fn to_json(&self) -> serde_json::Value {
        let ms = |d: Option<Duration>| d.map(|d| d.as_millis() as u64);
        json!({
            "id": self.id,
            "fault": self.fault,
            "acked": self.acked,
            "lost": self.lost,
            "split_brain": self.split_brain.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "stale_writes": self.stale_writes,
            "gap_ms": ms(self.gap),
            "failover_ms": ms(self.failover),
            "converged_ms": self.converged_after.as_millis() as u64,
            "final_primary": self.final_primary,
            "main_errors": self.main_errors,
        })
    }

    /// Fails the test, naming every overlap, if two servers accepted
    /// writes at once.
    pub fn assert_no_split_brain(&self) {
        assert!(
            self.split_brain.is_empty(),
            "{}: two servers accepted writes at once: {:?}",
            self.id,
            self.split_brain
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        );
    }

    /// Writes [`Outcome::to_json`] to `dir/<id>.json` and prints it.
    pub fn record(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        let text = serde_json::to_string_pretty(&self.to_json())?;
        eprintln!("fault scenario {}: {text}", self.id);
        std::fs::write(dir.join(format!("{}.json", self.id)), text)?;
        Ok(())
    }
}

impl Run {
    /// A converged 3-node etcd cluster with both writers running.
    pub async fn start(agent: &Path, options: ClusterOptions) -> anyhow::Result<Run> {
        Run::start_on(agent, DcsKind::Etcd, options).await
    }

    /// A converged 3-node cluster on `kind` with both writers running.
    pub async fn start_on(
        agent: &Path,
        kind: DcsKind,
        options: ClusterOptions,
    ) -> anyhow::Result<Run> {
        Run::start_prepared(agent, kind, options, |_| Ok(())).await
    }

    /// [`Run::start_on`], with `prepare` run on the cluster before its
    /// agents start (to give them an environment, say).
    pub async fn start_prepared(
        agent: &Path,
        kind: DcsKind,
        options: ClusterOptions,
        prepare: impl FnOnce(&mut TestCluster) -> anyhow::Result<()>,
    ) -> anyhow::Result<Run> {
        let mut cluster = TestCluster::new(agent, kind, options).await?;
        prepare(&mut cluster)?;
        cluster.start_all()?;
        let primary = cluster.wait_converged(&[0, 1, 2], BOOT).await?;
        cluster
            .sql(primary, &writer::create_table())
            .await
            .context("creating the writers' table")?;
        let epoch = Instant::now();
        let hosts: Vec<(IpAddr, u16)> = cluster.nodes.iter().map(|n| (n.host, n.pg_port)).collect();
        let main = Writer::start(WriterConfig::new("main", hosts, true, epoch));
        let pinned = Writer::start(WriterConfig::new(
            "pinned",
            vec![(cluster.nodes[primary].host, cluster.nodes[primary].pg_port)],
            false,
            epoch,
        ));
        main.wait_for_acks(50, Duration::from_secs(30)).await?;
        pinned.wait_for_acks(50, Duration::from_secs(30)).await?;
        Ok(Run {
            cluster,
            primary,
            epoch,
            main,
            pinned,
            fault_at: None,
        })
    }

    /// The other two nodes.
    pub fn replicas(&self) -> Vec<usize> {
        (0..3).filter(|&i| i != self.primary).collect()
    }

    /// Waits until the writer pinned to the original primary got `n` more
    /// rows acknowledged (after a restart of that primary, say).
    pub async fn wait_for_pinned_acks(&self, n: u64, within: Duration) -> anyhow::Result<()> {
        self.pinned.wait_for_acks(n, within).await
    }

    /// The fault happens now.
    pub fn fault(&mut self) {
        self.fault_at = Some(self.epoch.elapsed());
    }

    /// Waits for the cluster to converge (bounded by `within`, counted from
    /// the fault), lets the main writer get 50 more rows through, stops
    /// both writers and reads the final primary.
    pub async fn finish(self, id: &str, fault: &str, within: Duration) -> anyhow::Result<Outcome> {
        let Run {
            cluster,
            primary,
            epoch,
            main,
            pinned,
            fault_at,
        } = self;
        let fault_at = fault_at.context("Run::fault was not called")?;
        let left = within.saturating_sub(epoch.elapsed().saturating_sub(fault_at));
        let converged = cluster.wait_converged(&[0, 1, 2], left).await;
        let converged_after = epoch.elapsed().saturating_sub(fault_at);
        let final_primary = match converged {
            Ok(p) => p,
            Err(e) => {
                let _ = main.stop().await;
                let _ = pinned.stop().await;
                bail!("{id}: no convergence within {within:?} of the fault: {e}");
            }
        };
        main.wait_for_acks(50, Duration::from_secs(30)).await?;
        let main_log = main.stop().await?;
        let pinned_log = pinned.stop().await?;

        let rows = cluster
            .sql(
                final_primary,
                &format!("SELECT writer || ':' || id FROM {}", writer::TABLE),
            )
            .await
            .context("reading the final primary")?;
        let present: HashSet<(String, i64)> = rows
            .iter()
            .filter_map(|r| {
                let (w, id) = r.rsplit_once(':')?;
                Some((w.to_string(), id.parse().ok()?))
            })
            .collect();
        let mut acks = main_log.acks.clone();
        acks.extend(pinned_log.acks.iter().cloned());
        let names = |addr: &str| {
            cluster
                .nodes
                .iter()
                .find(|n| addr.ends_with(&format!(":{}", n.pg_port)))
                .map(|n| n.name.clone())
                .unwrap_or_else(|| addr.to_string())
        };
        let tenures = checker::tenures(&acks, names);
        let old_server = format!(
            "{}:{}",
            cluster.nodes[primary].host, cluster.nodes[primary].pg_port
        );
        let failover_at = checker::first_ack_elsewhere(&main_log.acks, fault_at, &old_server);
        Ok(Outcome {
            id: id.to_string(),
            fault: fault.to_string(),
            acked: acks.len(),
            lost: checker::lost(&acks, &present).len(),
            split_brain: checker::overlaps(&tenures),
            stale_writes: failover_at.map(|t| {
                pinned_log
                    .acks
                    .iter()
                    .filter(|a| a.server == old_server && a.at >= t)
                    .count()
            }),
            gap: checker::longest_gap(&main_log.acks, fault_at).map(|(g, _)| g),
            failover: failover_at.map(|t| t.saturating_sub(fault_at)),
            converged_after,
            final_primary: cluster.nodes[final_primary].name.clone(),
            main_errors: main_log.errors,
        })
    }
}

/// Where the scenario tests leave their results (`scripts/fault-matrix.sh`
/// turns them into docs/fault-matrix.md).
pub fn results_dir(target_tmp: &str) -> std::path::PathBuf {
    Path::new(target_tmp).join("fault-matrix")
}
