//! A private network of Linux network namespaces for partition tests.
//!
//! Layout: a *switch* namespace holding a bridge, and one namespace per
//! member — `cli` (every client of the test), `dcs` (etcd), `n1`, `n2`,
//! `n3` (an agent with its PostgreSQL each) — joined to the bridge by veth
//! pairs created directly inside the namespaces. The root namespace gets no
//! interface and no route into the subnet, and nothing in the test sends
//! from it: the test body runs on a thread that entered `cli`
//! ([`Network::run_in_client`]), and servers start inside their own
//! namespace (`nsenter`). A partition is a set of nftables DROP rules inside
//! one member's namespace ([`Network::cut`]), which leaves the `cli`
//! address reachable so the test can still see what the cut-off node does.
//!
//! Needs root (creating namespaces); [`Network::create`] says so otherwise.
//! Dropping the network deletes every namespace it made.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, bail};

use crate::cluster::Host;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The private network; see the module docs.
#[derive(Debug)]
pub struct Network {
    prefix: String,
    members: Vec<String>,
}

/// The subnet inside the namespaces (never routed from the root namespace).
const SUBNET: [u8; 3] = [10, 213, 47];

impl Network {
    /// Why this machine cannot run namespace tests, if it cannot.
    pub fn unavailable() -> Option<String> {
        if !nix::unistd::Uid::effective().is_root() {
            return Some("network namespace tests need root (ip netns add)".into());
        }
        for tool in ["ip", "nsenter", "nft"] {
            let found = std::env::var_os("PATH")
                .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(tool).is_file()));
            if !found {
                return Some(format!("{tool} is not installed"));
            }
        }
        None
    }

    /// Creates the switch and the `cli`, `dcs` and `n1`..`n<nodes>`
    /// namespaces, and checks the result.
    pub fn create(nodes: usize) -> anyhow::Result<Network> {
        if let Some(why) = Network::unavailable() {
            bail!("{why}");
        }
        remove_stale();
        let prefix = format!(
            "pgha{}x{}-",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut members = vec!["cli".to_string(), "dcs".to_string()];
        members.extend((1..=nodes).map(|i| format!("n{i}")));
        let mut net = Network {
            prefix,
            members: Vec::new(),
        };
        let sw = net.ns("sw");
        ip(&["netns", "add", &sw])?;
        net.members.push("sw".into());
        ip_in(&sw, &["link", "add", "br0", "type", "bridge"])?;
        ip_in(&sw, &["link", "set", "br0", "up"])?;
        for m in &members {
            let ns = net.ns(m);
            ip(&["netns", "add", &ns])?;
            net.members.push(m.clone());
            ip_in(
                &ns,
                &[
                    "link", "add", "eth0", "type", "veth", "peer", "name", m, "netns", &sw,
                ],
            )?;
            ip_in(&sw, &["link", "set", m, "master", "br0", "up"])?;
            let addr = format!("{}/24", net.addr(m)?);
            ip_in(&ns, &["addr", "add", &addr, "dev", "eth0"])?;
            ip_in(&ns, &["link", "set", "eth0", "up"])?;
            ip_in(&ns, &["link", "set", "lo", "up"])?;
        }
        net.check()?;
        Ok(net)
    }

    /// Every member has its address, and the root namespace has no
    /// interface in the subnet.
    fn check(&self) -> anyhow::Result<()> {
        for m in self.members.iter().filter(|m| *m != "sw") {
            let out = ip_in(&self.ns(m), &["-4", "addr", "show", "dev", "eth0"])?;
            let want = self.addr(m)?.to_string();
            if !out.contains(&format!("inet {want}/24")) {
                bail!("namespace {}: eth0 lacks {want}: {out}", self.ns(m));
            }
        }
        let root = ip_output(&["-4", "addr", "show"])?;
        let subnet = format!("inet {}.{}.{}.", SUBNET[0], SUBNET[1], SUBNET[2]);
        if root.contains(&subnet) {
            bail!("the root namespace has an address in the test subnet: {root}");
        }
        Ok(())
    }

    fn ns(&self, member: &str) -> String {
        format!("{}{member}", self.prefix)
    }

    /// A member's address.
    pub fn addr(&self, member: &str) -> anyhow::Result<IpAddr> {
        let host = match member {
            "cli" => 2,
            "dcs" => 3,
            n => {
                let i: u8 = n
                    .strip_prefix('n')
                    .and_then(|i| i.parse().ok())
                    .with_context(|| format!("no member {n}"))?;
                10 + i
            }
        };
        Ok(IpAddr::V4(Ipv4Addr::new(
            SUBNET[0], SUBNET[1], SUBNET[2], host,
        )))
    }

    /// Where a member's server runs, for [`crate::cluster::Placement`].
    pub fn host(&self, member: &str) -> anyhow::Result<Host> {
        Ok(Host {
            addr: self.addr(member)?,
            netns: Some(self.ns(member)),
        })
    }

    /// The subnet, for `pg_hba.conf`.
    pub fn cidr(&self) -> String {
        format!("{}.{}.{}.0/24", SUBNET[0], SUBNET[1], SUBNET[2])
    }

    /// Cuts `member` off from `peers` in both directions (nftables DROP in
    /// its namespace); other traffic, the `cli` member's included, flows.
    pub fn cut(&self, member: &str, peers: &[&str]) -> anyhow::Result<()> {
        let addrs: Vec<String> = peers
            .iter()
            .map(|p| self.addr(p).map(|a| a.to_string()))
            .collect::<anyhow::Result<_>>()?;
        let set = addrs.join(", ");
        let rules = format!(
            "table inet pgha_cut {{\n\
               chain input {{ type filter hook input priority 0; policy accept; ip saddr {{ {set} }} drop; }}\n\
               chain output {{ type filter hook output priority 0; policy accept; ip daddr {{ {set} }} drop; }}\n\
             }}\n"
        );
        let file = std::env::temp_dir().join(format!("{}{member}.nft", self.prefix));
        std::fs::write(&file, rules)?;
        let result = self.nft(member, &["-f".as_ref(), file.as_os_str()]);
        let _ = std::fs::remove_file(&file);
        result
    }

    /// Removes the cut made by [`Network::cut`].
    pub fn heal(&self, member: &str) -> anyhow::Result<()> {
        let args: Vec<&std::ffi::OsStr> = ["delete", "table", "inet", "pgha_cut"]
            .iter()
            .map(|a| a.as_ref())
            .collect();
        self.nft(member, &args)
    }

    /// Runs `nft <args>` inside `member`'s namespace.
    fn nft(&self, member: &str, args: &[&std::ffi::OsStr]) -> anyhow::Result<()> {
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.ns(member)))
            .arg("nft")
            .args(args)
            .output()
            .context("running nft")?;
        if !out.status.success() {
            bail!(
                "nft in {}: {}",
                self.ns(member),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Runs `body` on a thread that entered the `cli` namespace, with a
    /// runtime of its own, so every socket the test opens lives there.
    pub fn run_in_client<F, Fut>(&self, body: F) -> anyhow::Result<()>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let path = format!("/run/netns/{}", self.ns("cli"));
        let thread = std::thread::spawn(move || -> anyhow::Result<()> {
            let ns = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("entering {path}"))?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(body())
        });
        match thread.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for m in self.members.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(m)])
                .output();
        }
    }
}

/// Deletes namespaces left by test processes that no longer run (a test
/// killed by its runner does not get to drop its network).
fn remove_stale() {
    let Ok(list) = ip_output(&["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let owner = name
            .strip_prefix("pgha")
            .and_then(|rest| rest.split_once('x'))
            .and_then(|(pid, _)| pid.parse::<i32>().ok());
        if let Some(pid) = owner
            && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err()
        {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    ip_output(args).map(drop)
}

/// `ip <args>` inside namespace `ns`, entered with `nsenter` rather than
/// `ip -n`/`ip netns exec`: those also remount `/` and `/sys` in a mount
/// namespace of their own, which fails where `/` is no mount point (a
/// chroot, as in `fresh-debian.sh`).
fn ip_in(ns: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .arg("ip")
        .args(args)
        .output()
        .context("running nsenter ip (util-linux, iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip (in {ns}) {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip_output(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
