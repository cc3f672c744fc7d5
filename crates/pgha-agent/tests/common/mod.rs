//! Test support shared by the `pghactl_*` tests: running the `pghactl`
//! binary (answers fed on standard input, bounded in time), a real Patroni
//! cluster and a pgha cluster behind one interface, and the scenarios for
//! the REST-based commands that run against both.

// Each test file uses a part of this module.
#![allow(dead_code)]

pub mod backup;
pub mod patroni_cluster;
pub mod pgha_cluster;
pub mod scenarios;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

/// The longest one pghactl run may take in a test.
const RUN_LIMIT: Duration = Duration::from_secs(60);

/// What a pghactl run printed, and how it exited.
#[derive(Debug, Clone)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Panics with everything printed unless the run succeeded.
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "pghactl failed:\n{self}");
        self
    }

    /// Panics unless the run failed.
    pub fn failed(self) -> Self {
        assert_ne!(self.code, 0, "pghactl should have failed:\n{self}");
        self
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pghactl"))
}

/// `pghactl -c <config> <args>` with `stdin` as the answers.
pub async fn pghactl(config: &Path, args: &[&str], stdin: &str) -> Output {
    pghactl_env(config, args, stdin, &[]).await
}

/// Like [`pghactl`], with extra environment variables.
pub async fn pghactl_env(
    config: &Path,
    args: &[&str],
    stdin: &str,
    env: &[(&str, &str)],
) -> Output {
    let mut cmd = tokio::process::Command::new(binary());
    cmd.arg("-c")
        .arg(config)
        .args(args)
        .env_remove("PATRONICTL_CONFIG_FILE")
        .env_remove("DCS_URL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start pghactl");
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin.as_bytes()).await;
    }
    let out = tokio::time::timeout(RUN_LIMIT, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("pghactl {args:?} did not finish within {RUN_LIMIT:?}"))
        .expect("pghactl output");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
