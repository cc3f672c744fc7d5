//! pghactl's REST-driven commands against a real Patroni 4 cluster (etcd,
//! three Patroni nodes, PostgreSQL 15, started by each test): the reference
//! pghactl must work with. The scenarios are in `common/scenarios.rs`; the
//! same ones run against pgha in `pghactl_pgha.rs`.

// A panic is how a test fails; the helpers here are part of the tests.
#![allow(clippy::unwrap_used)]

mod common;

use common::patroni_cluster::PatroniCluster;
use common::scenarios;

async fn cluster() -> PatroniCluster {
    pgha_testkit::init_tracing();
    PatroniCluster::start(3).await.expect("Patroni cluster")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_and_failover_on_patroni() {
    scenarios::switchover_and_failover(&cluster().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_reload_reinit_and_flush_on_patroni() {
    scenarios::restart_reload_reinit_and_flush(&cluster().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_credentials_and_sql_on_patroni() {
    scenarios::pause_resume_credentials_and_sql(&cluster().await).await;
}

/// The `sync` key as the real Patroni writes it, read by pghactl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synchronous_mode_roles_on_patroni() {
    scenarios::synchronous_mode_roles(&cluster().await).await;
}
