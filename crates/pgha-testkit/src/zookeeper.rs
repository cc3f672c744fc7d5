//! A real ZooKeeper server (Debian's `zookeeper`, on Java) on loopback.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::ports::free_port;
use crate::process::ServerProcess;
use crate::workdir::WorkDir;

/// Where Debian installs ZooKeeper's jar and its default config directory.
const CLASSPATH: &str = "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar";

/// A standalone ZooKeeper on a free loopback port, killed on drop.
///
/// `tickTime` is 500 ms so sessions may be as short as 1 s (ZooKeeper
/// negotiates session timeouts into `[2, 20] × tickTime` unless told
/// otherwise; the bounds are widened to 1–60 s here).
#[derive(Debug)]
pub struct ZooKeeperServer {
    dir: WorkDir,
    port: u16,
    process: Option<ServerProcess>,
}

impl ZooKeeperServer {
    pub async fn start() -> anyhow::Result<Self> {
        let dir = WorkDir::new("zookeeper")?;
        let port = free_port()?;
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data)?;
        std::fs::write(
            dir.path().join("zoo.cfg"),
            format!(
                "tickTime=500\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
                 minSessionTimeout=1000\nmaxSessionTimeout=60000\nadmin.enableServer=false\n\
                 4lw.commands.whitelist=ruok,srvr\n",
                data.display()
            ),
        )?;
        let mut server = ZooKeeperServer {
            dir,
            port,
            process: None,
        };
        server.start_process().await?;
        Ok(server)
    }

    async fn start_process(&mut self) -> anyhow::Result<()> {
        let mut cmd = Command::new("java");
        cmd.arg("-cp")
            .arg(CLASSPATH)
            .arg("-Xmx256m")
            .arg("-XX:+UseSerialGC")
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(self.dir.path().join("zoo.cfg"));
        let process =
            ServerProcess::spawn("zookeeper", cmd, &self.dir.path().join("zookeeper.log"))?;
        self.process = Some(process);
        // `ruok` answers before the server serves sessions; `srvr` reports
        // a `Mode:` only once it does.
        let ready = crate::wait::until(
            "zookeeper serving sessions (srvr)",
            Duration::from_secs(60),
            Duration::from_millis(100),
            || {
                let addr = self.addr();
                async move {
                    let reply = crate::proxy::ask(addr, b"srvr").await.ok()?;
                    reply.contains("Mode:").then_some(())
                }
            },
        )
        .await;
        if let Err(e) = ready {
            let tail = self
                .process
                .as_ref()
                .map(|p| p.log_tail(30))
                .unwrap_or_default();
            anyhow::bail!("{e}\n{tail}");
        }
        Ok(())
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `127.0.0.1:<port>`, the form ZooKeeper clients take.
    pub fn connect_string(&self) -> String {
        self.addr().to_string()
    }

    /// Kills the server (SIGKILL). Its data, sessions included, stays.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Sends `signal` to the server (SIGSTOP freezes it: connections stay
    /// open and nothing answers; SIGCONT resumes it).
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> anyhow::Result<()> {
        match &self.process {
            Some(p) => p.signal(signal),
            None => anyhow::bail!("the server is not running"),
        }
    }

    /// Starts it again on the same port with the same data.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        self.start_process().await
    }

    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.start_again().await
    }
}
