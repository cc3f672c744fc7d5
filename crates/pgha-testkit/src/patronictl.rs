//! The real `patronictl` (PyPI `patroni`), run against a cluster pgha wrote.
//!
//! `scripts/install-deps.sh` installs it into a venv built from Debian's
//! `/usr/bin/python3` (so an unprivileged user can run it too); tests find
//! it at `$PGHA_VENV/bin/patronictl`, default `/opt/pgha-venv`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::workdir::WorkDir;

/// Where the Python tools live.
pub fn venv() -> PathBuf {
    std::env::var_os("PGHA_VENV").map_or_else(|| PathBuf::from("/opt/pgha-venv"), PathBuf::from)
}

/// Which DCS section to write into patronictl's configuration.
#[derive(Debug, Clone)]
pub enum DcsSection {
    /// `etcd3: {hosts: ...}`
    Etcd3 { hosts: String },
    /// `zookeeper: {hosts: [...]}`
    ZooKeeper { hosts: String },
}

/// patronictl pointed at one cluster.
#[derive(Debug)]
pub struct Patronictl {
    dir: WorkDir,
    binary: PathBuf,
}

impl Patronictl {
    pub fn new(namespace: &str, scope: &str, dcs: &DcsSection) -> anyhow::Result<Self> {
        let binary = venv().join("bin/patronictl");
        anyhow::ensure!(
            binary.exists(),
            "{} not found: run scripts/install-deps.sh (it installs PyPI patroni into {})",
            binary.display(),
            venv().display()
        );
        let dir = WorkDir::new("patronictl")?;
        let section = match dcs {
            DcsSection::Etcd3 { hosts } => format!("etcd3:\n  hosts: {hosts}\n"),
            DcsSection::ZooKeeper { hosts } => format!("zookeeper:\n  hosts: ['{hosts}']\n"),
        };
        std::fs::write(
            dir.path().join("patronictl.yml"),
            format!("scope: {scope}\nnamespace: {namespace}\n{section}"),
        )?;
        Ok(Patronictl { dir, binary })
    }

    /// Runs `patronictl -c <config> <args>` (bounded to 60 s) and returns
    /// stdout; a non-zero exit is an error carrying stderr.
    pub async fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("-c")
            .arg(self.dir.path().join("patronictl.yml"))
            .args(args);
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .map_err(|_| anyhow::anyhow!("patronictl {args:?} did not finish within 60 s"))??;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        anyhow::ensure!(
            out.status.success(),
            "patronictl {args:?} failed ({}):\n{}\n{stdout}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(stdout)
    }

    /// `patronictl list -f json`, parsed.
    pub async fn list_json(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let text = self.run(&["list", "-f", "json"]).await?;
        Ok(serde_json::from_str(&text)?)
    }
}
