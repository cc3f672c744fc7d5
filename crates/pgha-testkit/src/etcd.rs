//! A real etcd server (Debian's `etcd-server`) on loopback.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::ports::free_port;
use crate::process::ServerProcess;
use crate::workdir::WorkDir;

/// A single-member etcd on free loopback ports, killed on drop.
///
/// The binary is `etcd` from `PATH`, or `PGHA_ETCD_BIN` (to run the same
/// tests against another etcd release).
#[derive(Debug)]
pub struct EtcdServer {
    dir: WorkDir,
    client_port: u16,
    peer_port: u16,
    binary: PathBuf,
    process: Option<ServerProcess>,
    /// The address it listens on (loopback unless started with [`EtcdServer::start_on`]).
    host: IpAddr,
    /// The network namespace it runs in (`None`: the test's own).
    netns: Option<String>,
}

impl EtcdServer {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST), None).await
    }

    /// Starts etcd listening on `host`, inside network namespace `netns`
    /// when given (entered with `nsenter`). Its health is checked from the
    /// calling thread, which must be able to reach `host`.
    pub async fn start_on(host: IpAddr, netns: Option<&str>) -> anyhow::Result<Self> {
        let binary =
            std::env::var_os("PGHA_ETCD_BIN").map_or_else(|| PathBuf::from("etcd"), PathBuf::from);
        let mut server = EtcdServer {
            dir: WorkDir::new("etcd")?,
            client_port: free_port()?,
            peer_port: free_port()?,
            binary,
            process: None,
            host,
            netns: netns.map(str::to_string),
        };
        server.start_process().await?;
        Ok(server)
    }

    async fn start_process(&mut self) -> anyhow::Result<()> {
        let client = format!("http://{}", self.addr());
        let peer = format!("http://{}", SocketAddr::new(self.host, self.peer_port));
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}"))
                    .arg("--")
                    .arg(&self.binary);
                c
            }
            None => Command::new(&self.binary),
        };
        cmd.arg("--name")
            .arg("pgha-test")
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("pgha-test={peer}"))
            .env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH);
        let process = ServerProcess::spawn("etcd", cmd, &self.dir.path().join("etcd.log"))?;
        self.process = Some(process);
        let ready = crate::wait::until(
            "etcd /health",
            Duration::from_secs(30),
            Duration::from_millis(100),
            || {
                let addr = self.addr();
                async move {
                    let reply = crate::proxy::ask(addr, b"GET /health HTTP/1.0\r\n\r\n")
                        .await
                        .ok()?;
                    reply.contains("\"health\":\"true\"").then_some(())
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

    /// The client address, `127.0.0.1:<port>` (or the host given to
    /// [`EtcdServer::start_on`]).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.client_port)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Kills the server (SIGKILL, as in a crash). Its data stays.
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill();
        }
    }

    /// Sends `signal` to the server (SIGSTOP freezes it: connections stay
    /// open and nothing answers, as in a stalled or overloaded server;
    /// SIGCONT resumes it).
    pub fn signal(&self, signal: nix::sys::signal::Signal) -> anyhow::Result<()> {
        match &self.process {
            Some(p) => p.signal(signal),
            None => anyhow::bail!("the server is not running"),
        }
    }

    /// Starts it again on the same ports with the same data.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        self.start_process().await
    }

    /// Kill, then start again: what a crashed-and-restarted server looks like
    /// to its clients.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.start_again().await
    }
}
