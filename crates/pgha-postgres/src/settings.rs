//! What running one node's PostgreSQL needs: where it lives, how to
//! reach it, its roles, how to make a replica or a new cluster. Built by
//! the configuration layer from Patroni's YAML; nothing here knows that
//! format, so PostgreSQL control can be used (and moved to a crate of its
//! own) without it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

use super::address::{HostPort, PgListen};

/// How this node's PostgreSQL is run.
#[derive(Debug, Clone, PartialEq)]
pub struct PgSettings {
    /// This node's member name: `application_name` in `primary_conninfo`,
    /// the name its replication slot is derived from.
    pub member: String,
    /// The cluster's name: `cluster_name`, and `--scope` for custom
    /// replica creation methods.
    pub scope: String,
    pub listen: PgListen,
    pub connect_address: HostPort,
    pub data_dir: PathBuf,
    pub bin_dir: Option<PathBuf>,
    /// Per-binary overrides (`bin_name.pg_ctl`).
    pub bin_name: BTreeMap<String, String>,
    pub pgpass: PathBuf,
    pub superuser: Credentials,
    pub replication: Credentials,
    pub rewind: Option<Credentials>,
    pub parameters: Map<String, Value>,
    pub pg_hba: Option<Vec<String>>,
    pub pg_ident: Option<Vec<String>>,
    pub pg_ctl_timeout: Duration,
    pub create_replica_methods: Vec<ReplicaMethod>,
    /// Custom replica methods defined in the file (`postgresql.<name>`
    /// with a `command`) but not listed in `create_replica_methods`:
    /// `standby_cluster.create_replica_methods` may name them.
    pub other_replica_methods: Vec<ReplicaMethod>,
    /// `postgresql.recovery_conf`: recovery settings every replica runs
    /// with (`restore_command` to fetch WAL from an archive when streaming
    /// is behind or impossible, `archive_cleanup_command`,
    /// `recovery_min_apply_delay`, ...), as Patroni writes them when it
    /// configures a follower. A standby cluster's own settings win.
    pub recovery_conf: Vec<(String, String)>,
    pub use_unix_socket: bool,
    /// How a new cluster is made; `None` on a node that never creates one.
    pub new_cluster: Option<NewCluster>,
}

impl PgSettings {
    /// Settings for member `member` of cluster `scope`, its data in
    /// `data_dir`, PostgreSQL listening on and reached at `address`; the
    /// rest as Patroni defaults it: roles `postgres` and `replicator`
    /// without passwords (pg_hba decides), pg_basebackup to clone, 60 s
    /// for pg_ctl, the password file `.pgpass_<member>` beside the data
    /// directory. Change the fields for anything else.
    pub fn new(member: &str, scope: &str, data_dir: PathBuf, address: HostPort) -> Self {
        let role = |name: &str| Credentials {
            username: name.to_string(),
            password: None,
            ssl: BTreeMap::new(),
        };
        let pgpass = data_dir
            .parent()
            .unwrap_or(&data_dir)
            .join(format!(".pgpass_{member}"));
        PgSettings {
            member: member.to_string(),
            scope: scope.to_string(),
            listen: PgListen {
                addresses: address.host.clone(),
                port: address.port,
            },
            connect_address: address,
            data_dir,
            bin_dir: None,
            bin_name: BTreeMap::new(),
            pgpass,
            superuser: role("postgres"),
            replication: role("replicator"),
            rewind: None,
            parameters: Map::new(),
            pg_hba: None,
            pg_ident: None,
            pg_ctl_timeout: Duration::from_secs(60),
            create_replica_methods: vec![ReplicaMethod::Basebackup {
                options: Vec::new(),
            }],
            other_replica_methods: Vec::new(),
            recovery_conf: Vec::new(),
            use_unix_socket: false,
            new_cluster: None,
        }
    }

    /// Whether a `create_replica_methods` entry works while no leader runs
    /// ([`ReplicaMethod::works_without_leader`]).
    pub fn can_create_replica_without_leader(&self) -> bool {
        self.create_replica_methods
            .iter()
            .any(ReplicaMethod::works_without_leader)
    }

    /// The path of PostgreSQL program `name` (`pg_ctl`, `initdb`, ...):
    /// `bin_name` overrides the file name, `bin_dir` is where it is.
    pub fn binary(&self, name: &str) -> PathBuf {
        let file = self.bin_name.get(name).map_or(name, String::as_str);
        match &self.bin_dir {
            Some(dir) if !file.contains('/') => dir.join(file),
            _ => PathBuf::from(file),
        }
    }
}

/// How the node that wins the bootstrap race creates the cluster.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewCluster {
    /// initdb options, as command-line flags (`--encoding=UTF8`, `--data-checksums`).
    pub initdb: Vec<String>,
    /// pg_hba lines for the new cluster (Patroni 3's `bootstrap.pg_hba`).
    pub pg_hba: Option<Vec<String>>,
    /// Roles to create (Patroni 3's `bootstrap.users`).
    pub users: Vec<BootstrapUser>,
    /// A script run once after bootstrap, with a connection URL argument.
    pub post_bootstrap: Option<String>,
    /// `bootstrap.method` other than initdb: how the data directory is
    /// made instead (a restore from a backup, to a point in time).
    pub custom: Option<CustomBootstrap>,
}

/// Patroni's custom bootstrap (`bootstrap.method: <name>` and the
/// `bootstrap.<name>` section): a command creates the data directory, then
/// PostgreSQL starts with the given recovery settings and is the new
/// cluster's primary once its recovery ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomBootstrap {
    /// The method's name, for messages.
    pub name: String,
    /// The command line, split on whitespace (as Patroni's `shlex.split`
    /// for commands without quotes).
    pub command: String,
    /// Do not pass `--scope=` and `--datadir=`.
    pub no_params: bool,
    /// Leave the recovery settings and signal files the command wrote.
    pub keep_existing_recovery_conf: bool,
    /// Recovery settings (`restore_command`, `recovery_target_time`,
    /// `recovery_target_action`, ...) written with `recovery.signal`.
    pub recovery_conf: Option<Vec<(String, String)>>,
    /// Other keys of the section, passed as `--key=value`.
    pub params: Vec<(String, String)>,
}

/// PostgreSQL login settings for one role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: Option<String>,
    /// libpq settings besides user and password (`sslmode`, `sslcert`, ...).
    pub ssl: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapUser {
    pub name: String,
    pub password: Option<String>,
    pub options: Vec<String>,
}

/// One way of creating a replica, tried in the order configured.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplicaMethod {
    /// pg_basebackup with these extra flags.
    Basebackup { options: Vec<String> },
    /// A user command, called like Patroni calls it.
    Custom {
        name: String,
        command: String,
        keep_data: bool,
        no_params: bool,
        /// `no_leader` (Patroni's older name: `no_master`): the method
        /// needs no running leader (it restores a backup), so it may
        /// create a replica while the cluster has no leader.
        no_leader: bool,
        params: Map<String, Value>,
    },
}

impl ReplicaMethod {
    /// Whether this method can create a replica while no leader runs.
    pub fn works_without_leader(&self) -> bool {
        matches!(
            self,
            ReplicaMethod::Custom {
                no_leader: true,
                ..
            }
        )
    }
}

/// The settings of the example node (`docs/examples/patroni-node1.yml`,
/// as the configuration layer reads it), for tests.
#[cfg(test)]
pub(crate) fn example() -> PgSettings {
    let login = |user: &str, password: &str| Credentials {
        username: user.into(),
        password: Some(password.into()),
        ssl: BTreeMap::new(),
    };
    let mut parameters = Map::new();
    parameters.insert(
        "unix_socket_directories".into(),
        Value::from("/var/run/postgresql"),
    );
    PgSettings {
        member: "node1".into(),
        scope: "demo".into(),
        listen: PgListen {
            addresses: "127.0.0.1".into(),
            port: 5432,
        },
        connect_address: HostPort {
            host: "127.0.0.1".into(),
            port: 5432,
        },
        data_dir: "/var/lib/pgha/node1".into(),
        bin_dir: Some("/usr/lib/postgresql/15/bin".into()),
        bin_name: BTreeMap::new(),
        pgpass: "/var/lib/pgha/pgpass-node1".into(),
        superuser: login("postgres", "su-pass"),
        replication: login("replicator", "rep-pass"),
        rewind: Some(login("rewind_user", "rewind-pass")),
        parameters,
        pg_hba: Some(vec![
            "local all all trust".into(),
            "host all all 127.0.0.1/32 md5".into(),
            "host replication replicator 127.0.0.1/32 md5".into(),
        ]),
        pg_ident: None,
        pg_ctl_timeout: Duration::from_secs(60),
        create_replica_methods: vec![ReplicaMethod::Basebackup {
            options: Vec::new(),
        }],
        other_replica_methods: Vec::new(),
        use_unix_socket: false,
        recovery_conf: Vec::new(),
        new_cluster: Some(NewCluster {
            initdb: vec!["--encoding=UTF8".into(), "--data-checksums".into()],
            ..NewCluster::default()
        }),
    }
}
