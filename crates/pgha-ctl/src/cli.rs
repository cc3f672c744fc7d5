//! The command line: patronictl's commands, arguments and flags, so
//! scripts written for patronictl run unchanged.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use super::members::RoleFilter;
use super::output::Format;

#[derive(Parser, Debug)]
#[command(
    name = "pghactl",
    version,
    about = "Look at and operate a pgha (or Patroni) cluster; patronictl-compatible"
)]
pub struct Cli {
    /// Configuration file: a node's YAML, or one with scope, namespace, the
    /// DCS section and ctl.authentication [default: ~/.config/patroni/patronictl.yaml].
    #[arg(short = 'c', long = "config-file", env = "PATRONICTL_CONFIG_FILE")]
    pub config: Option<PathBuf>,
    /// The DCS to use instead of the file's: etcd3://HOST:PORT/NAMESPACE,
    /// zookeeper://HOST:PORT or consul://HOST:PORT.
    #[arg(short = 'd', long = "dcs-url", visible_alias = "dcs", env = "DCS_URL")]
    pub dcs_url: Option<String>,
    /// Do not check the certificates of https REST APIs (ctl.insecure).
    #[arg(short = 'k', long = "insecure")]
    pub insecure: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List the members of clusters.
    List(ListArgs),
    /// The members as a tree: replicas under the node they replicate from.
    Topology(TopologyArgs),
    /// Hand the leader role to a replica (now or at a scheduled time).
    Switchover(SwitchoverArgs),
    /// Promote a named replica (also when there is no leader).
    Failover(FailoverArgs),
    /// Restart PostgreSQL on members (now or scheduled).
    Restart(RestartArgs),
    /// Make members reload their configuration.
    Reload(ReloadArgs),
    /// Rebuild replicas from scratch.
    Reinit(ReinitArgs),
    /// Cancel a scheduled restart or switchover.
    Flush(FlushArgs),
    /// Stop automatic failover (maintenance mode).
    Pause(PauseArgs),
    /// Resume automatic failover.
    Resume(PauseArgs),
    /// Demote the cluster to a standby cluster of another one.
    DemoteCluster(DemoteClusterArgs),
    /// Promote a standby cluster: make it run standalone.
    PromoteCluster(PromoteClusterArgs),
    /// Change the cluster's dynamic configuration.
    EditConfig(EditConfigArgs),
    /// Show the cluster's dynamic configuration.
    ShowConfig(ClusterArg),
    /// The history of failovers and switchovers.
    History(HistoryArgs),
    /// A connection string for a member.
    Dsn(DsnArgs),
    /// Run SQL on a member.
    Query(QueryArgs),
    /// Delete the cluster's keys from the DCS.
    Remove(RemoveArgs),
    /// pghactl's version, and the members' when a cluster is named.
    Version(VersionArgs),
}

/// Refresh every N seconds (`-w`), or every 2 (`-W`).
#[derive(Args, Debug, Clone, Default)]
pub struct WatchArgs {
    /// Refresh the output every 2 seconds.
    #[arg(short = 'W')]
    pub w: bool,
    /// Refresh the output every SECONDS.
    #[arg(short = 'w', long = "watch", value_name = "SECONDS")]
    pub watch: Option<f64>,
}

impl WatchArgs {
    /// The refresh interval, if watching.
    pub fn interval(&self) -> Option<std::time::Duration> {
        match (self.watch, self.w) {
            (Some(s), _) if s > 0.0 && s.is_finite() => Some(std::time::Duration::from_secs_f64(s)),
            (_, true) => Some(std::time::Duration::from_secs(2)),
            _ => None,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct ListArgs {
    /// Clusters to list [default: the configured scope].
    pub cluster_names: Vec<String>,
    /// Show pending restarts, scheduled restarts and tags even when empty.
    #[arg(short = 'e', long = "extended")]
    pub extended: bool,
    /// Print a timestamp before the table.
    #[arg(short = 't', long = "timestamp")]
    pub timestamp: bool,
    /// Output format.
    #[arg(short = 'f', long = "format", value_enum, default_value = "pretty")]
    pub format: Format,
    #[command(flatten)]
    pub watch: WatchArgs,
}

#[derive(Args, Debug, Clone)]
pub struct TopologyArgs {
    /// Clusters to show [default: the configured scope].
    pub cluster_names: Vec<String>,
    #[command(flatten)]
    pub watch: WatchArgs,
}

impl From<TopologyArgs> for ListArgs {
    fn from(t: TopologyArgs) -> Self {
        ListArgs {
            cluster_names: t.cluster_names,
            extended: false,
            timestamp: false,
            format: Format::Topology,
            watch: t.watch,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct ClusterArg {
    /// The cluster [default: the configured scope].
    pub cluster_name: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct SwitchoverArgs {
    /// The cluster [default: the configured scope].
    pub cluster_name: Option<String>,
    /// The current leader (asked for when not given).
    #[arg(long = "leader", visible_alias = "primary")]
    pub leader: Option<String>,
    /// The member to promote (Patroni picks one when left empty).
    #[arg(long)]
    pub candidate: Option<String>,
    /// When: "now" or a time such as 2026-01-14T10:00 (local) or 2026-01-14T10:00+02:00.
    #[arg(long)]
    pub scheduled: Option<String>,
    /// Do not ask anything.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug, Clone)]
pub struct FailoverArgs {
    /// The cluster [default: the configured scope].
    pub cluster_name: Option<String>,
    /// The member to promote.
    #[arg(long)]
    pub candidate: Option<String>,
    /// Do not ask anything.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug, Clone)]
pub struct RestartArgs {
    /// The cluster (required, as in patronictl).
    pub cluster_name: String,
    /// Members to restart [default: every member with the role].
    pub member_names: Vec<String>,
    /// Restart only members with this role.
    #[arg(short = 'r', long = "role", value_enum, default_value = "any")]
    pub role: RoleFilter,
    /// Restart a single member only (any of those selected).
    #[arg(long = "any")]
    pub any: bool,
    /// When: "now" or a time such as 2026-01-14T10:00 (local) or 2026-01-14T10:00+02:00.
    #[arg(long)]
    pub scheduled: Option<String>,
    /// Restart only if the running PostgreSQL is older than this (e.g. 15.4).
    #[arg(long = "pg-version", value_name = "VERSION")]
    pub pg_version: Option<String>,
    /// Restart only members with a pending restart.
    #[arg(long)]
    pub pending: bool,
    /// Fail (and fail over if needed) when the restart takes longer than this (seconds, or e.g. 2m).
    #[arg(long)]
    pub timeout: Option<String>,
    /// Do not ask anything.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ReloadArgs {
    /// The cluster (required, as in patronictl).
    pub cluster_name: String,
    /// Members to reload [default: every member with the role].
    pub member_names: Vec<String>,
    /// Reload only members with this role.
    #[arg(short = 'r', long = "role", value_enum, default_value = "any")]
    pub role: RoleFilter,
    /// Do not ask anything.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ReinitArgs {
    /// The cluster (required, as in patronictl).
    pub cluster_name: String,
    /// Replicas to rebuild (asked for when not given).
    pub member_names: Vec<String>,
    /// Do not ask anything (and cancel a reinit already running).
    #[arg(long)]
    pub force: bool,
    /// Copy from the leader even when another member could serve.
    #[arg(long = "from-leader")]
    pub from_leader: bool,
    /// Wait until the rebuild has finished.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Args, Debug, Clone)]
pub struct FlushArgs {
    /// The cluster (required, as in patronictl).
    pub cluster_name: String,
    /// Members (default: all with the role), then what to cancel: `restart` or `switchover`.
    #[arg(required = true, num_args = 1.., value_name = "MEMBER_NAMES... restart|switchover")]
    pub rest: Vec<String>,
    /// Flush only members with this role.
    #[arg(short = 'r', long = "role", value_enum, default_value = "any")]
    pub role: RoleFilter,
    /// Do not ask anything.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug, Clone)]
pub struct PauseArgs {
    /// The cluster [default: the configured scope].
    pub cluster_name: Option<String>,
    /// Wait until every member has seen the change.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Args, Debug, Clone)]
pub struct DemoteClusterArgs {
    /// The cluster [default: the configured scope].
    pub cluster_name: Option<String>,
    /// Do not ask anything.
    #[arg(long)]
    pub force: bool,
    /// Address of the remote node.
    #[arg(long)]
    pub host: Option<String>,
    /// Port of the remote node.
    #[arg(long)]
    pub port: Option<u16>,
    /// Command to restore WAL records from the remote primary.
    #[arg(long = "restore-command")]
    pub restore_command: Option<String>,
    /// Name of the slot on the remote node to use for replication.
    #[arg(long = "primary-slot-name")]
    pub primary_slot_name: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct PromoteClusterArgs {
    /// The cluster [default: the configured scope].
    pub cluster_name: Option<String>,
    /// Do not ask anything.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug, Clone)]
pub struct EditConfigArgs {
    /// The cluster [default: the configured scope].
    pub cluster_name: Option<String>,
    /// Do not show the changes.
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    /// Set a value: key.path=YAML_VALUE (an empty or null value deletes the key). Repeatable.
    #[arg(short = 's', long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Set a PostgreSQL parameter: name=value (short for -s postgresql.parameters.name=value). Repeatable.
    #[arg(short = 'p', long = "pg", value_name = "NAME=VALUE")]
    pub pg: Vec<String>,
    /// Merge the YAML in FILE into the configuration ("-" for standard input).
    #[arg(long = "apply", value_name = "FILE")]
    pub apply: Option<String>,
    /// Replace the configuration with the YAML in FILE ("-" for standard input).
    #[arg(long = "replace", value_name = "FILE")]
    pub replace: Option<String>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug, Clone)]
pub struct HistoryArgs {
    /// The cluster [default: the configured scope].
    pub cluster_name: Option<String>,
    /// Output format.
    #[arg(short = 'f', long = "format", value_enum, default_value = "pretty")]
    pub format: Format,
}

#[derive(Args, Debug, Clone)]
pub struct DsnArgs {
    /// The cluster [default: the configured scope].
    pub cluster_name: Option<String>,
    /// A member with this role [default: the leader].
    #[arg(short = 'r', long = "role", value_enum)]
    pub role: Option<RoleFilter>,
    /// This member.
    #[arg(short = 'm', long = "member")]
    pub member: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct QueryArgs {
    /// The cluster [default: the configured scope].
    pub cluster_name: Option<String>,
    /// Output format.
    #[arg(long = "format", value_enum, default_value = "tsv")]
    pub format: Format,
    /// Run the SQL in this file.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Ask for the password.
    #[arg(long)]
    pub password: bool,
    /// Database user [default: $PGUSER, else the OS user].
    #[arg(short = 'U', long = "username")]
    pub username: Option<String>,
    #[command(flatten)]
    pub watch: WatchArgs,
    /// Query a member with this role [default: the leader].
    #[arg(short = 'r', long = "role", value_enum)]
    pub role: Option<RoleFilter>,
    /// Query this member.
    #[arg(short = 'm', long = "member")]
    pub member: Option<String>,
    /// Column separator for tsv.
    #[arg(long, default_value = "\t")]
    pub delimiter: String,
    /// The SQL to run.
    #[arg(short = 'c', long = "command")]
    pub command: Option<String>,
    /// Database [default: $PGDATABASE, else the user name].
    #[arg(short = 'd', long = "dbname")]
    pub dbname: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct RemoveArgs {
    /// The cluster to remove (required).
    pub cluster_name: String,
    /// Format of the member list shown first.
    #[arg(short = 'f', long = "format", value_enum, default_value = "pretty")]
    pub format: Format,
}

#[derive(Args, Debug, Clone)]
pub struct VersionArgs {
    /// Also ask this cluster's members for their versions.
    pub cluster_name: Option<String>,
    /// Only these members.
    pub member_names: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Command {
        Cli::try_parse_from(std::iter::once("pghactl").chain(args.iter().copied()))
            .unwrap()
            .command
    }

    #[test]
    fn patronictl_command_lines_parse() {
        assert!(
            matches!(parse(&["list", "-e", "-t", "-f", "json", "-W"]), Command::List(a) if a.extended && a.watch.w)
        );
        assert!(
            matches!(parse(&["switchover", "demo", "--primary", "n1", "--candidate", "n2", "--force"]),
            Command::Switchover(a) if a.leader.as_deref() == Some("n1") && a.force)
        );
        assert!(
            matches!(parse(&["restart", "demo", "n1", "n2", "--role", "standby-leader", "--pending"]),
            Command::Restart(a) if a.member_names == ["n1", "n2"] && a.role == RoleFilter::StandbyLeader)
        );
        assert!(
            matches!(parse(&["edit-config", "-s", "ttl=20", "-p", "work_mem=8MB", "--force"]),
            Command::EditConfig(a) if a.set == ["ttl=20"] && a.pg == ["work_mem=8MB"])
        );
        assert!(
            matches!(parse(&["query", "-c", "select 1", "-U", "postgres", "--format", "json", "-m", "n1"]),
            Command::Query(a) if a.format == Format::Json && a.member.as_deref() == Some("n1"))
        );
        assert!(
            matches!(parse(&["flush", "demo", "n1", "restart"]), Command::Flush(a) if a.cluster_name == "demo" && a.rest == ["n1", "restart"])
        );
        assert!(
            matches!(parse(&["-c", "x.yml", "version", "demo"]), Command::Version(a) if a.cluster_name.as_deref() == Some("demo"))
        );
        assert!(
            Cli::try_parse_from(["pghactl", "restart"]).is_err(),
            "restart needs the cluster name"
        );
    }
}
