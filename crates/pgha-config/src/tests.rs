use super::*;

/// The Patroni 4 example configuration, as users keep it in git.
const PATRONI_EXAMPLE: &str = include_str!("../../../docs/examples/patroni-node1.yml");

fn no_env() -> Vec<(String, String)> {
    Vec::new()
}

#[test]
fn a_patroni_example_config_is_accepted() {
    let c = Config::from_yaml(PATRONI_EXAMPLE, no_env(), None).unwrap();
    assert_eq!(c.name, "node1");
    assert_eq!(c.layout().base(), "/service/demo");
    assert_eq!(
        c.postgresql.listen,
        PgListen {
            addresses: "127.0.0.1".into(),
            port: 5432
        }
    );
    assert_eq!(c.conn_url(), "postgres://127.0.0.1:5432/postgres");
    assert_eq!(c.api_url(), "http://127.0.0.1:8008/patroni");
    assert!(matches!(c.dcs, DcsSection::Etcd3(_)));
    let b = c.bootstrap.as_ref().unwrap();
    assert_eq!(
        b.new_cluster.initdb,
        vec!["--encoding=UTF8", "--data-checksums"]
    );
    // PostgreSQL control gets the node's identity and how to make a new
    // cluster without reading the rest of the configuration.
    assert_eq!(c.postgresql.member, c.name);
    assert_eq!(c.postgresql.scope, c.scope);
    assert_eq!(c.postgresql.new_cluster.as_ref(), Some(&b.new_cluster));
    assert_eq!(b.dcs.timing().0.ttl.as_secs(), 30);
    assert!(b.dcs.use_pg_rewind());
    assert_eq!(c.postgresql.superuser.username, "postgres");
    assert_eq!(
        c.postgresql.rewind.as_ref().unwrap().username,
        "rewind_user"
    );
    assert_eq!(
        c.postgresql.create_replica_methods,
        vec![ReplicaMethod::Basebackup { options: vec![] }]
    );
    assert_eq!(
        c.binary("pg_ctl"),
        PathBuf::from("/usr/lib/postgresql/15/bin/pg_ctl")
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn every_problem_is_listed_with_its_path() {
    let yaml = "name: n1\nrestapi:\n  listen: nowhere\npostgresql:\n  listen: 127.0.0.1:5432\n  use_slots: sometimes\nbootstrap:\n  dcs:\n    ttl: soon\n";
    let e = Config::from_yaml(yaml, no_env(), Some("bad.yml")).unwrap_err();
    for expected in [
        "scope: missing",
        "restapi.connect_address: missing",
        "postgresql.connect_address: missing",
        "postgresql.data_dir: missing",
        "postgresql.use_slots: expected true or false, found a string",
        "bootstrap.dcs.ttl: expected a non-negative integer, found \"soon\"",
        "etcd3: missing (a DCS section is required: etcd3, zookeeper, consul or kubernetes)",
    ] {
        assert!(
            e.errors.iter().any(|x| x == expected),
            "{expected:?} not in {:#?}",
            e.errors
        );
    }
    assert!(
        e.errors.iter().any(|x| x.starts_with("restapi.listen: ")),
        "{:#?}",
        e.errors
    );
    assert!(e.to_string().contains("bad.yml"));
}

#[test]
fn broken_yaml_says_where() {
    let e = Config::from_yaml("name: [n1\n", no_env(), None).unwrap_err();
    assert!(e.errors[0].contains("line 1"), "{:?}", e.errors);
}

#[test]
fn unsupported_dcs_and_keys_are_named() {
    let base = PATRONI_EXAMPLE.replace(
        "etcd3:\n  hosts: 127.0.0.1:2379\n",
        "raft:\n  data_dir: /var/lib/raft\n",
    );
    let e = Config::from_yaml(&base, no_env(), None).unwrap_err();
    assert!(
        e.errors
            .iter()
            .any(|x| x.starts_with("raft: this DCS is not supported")),
        "{:?}",
        e.errors
    );
    let both = PATRONI_EXAMPLE.replace("etcd3:\n", "consul:\n  host: 127.0.0.1:8500\netcd3:\n");
    let e = Config::from_yaml(&both, no_env(), None).unwrap_err();
    assert!(
        e.errors
            .iter()
            .any(|x| x == "etcd3, consul: configure one DCS, not several"),
        "{:?}",
        e.errors
    );
    let consul = PATRONI_EXAMPLE.replace(
        "etcd3:\n  hosts: 127.0.0.1:2379\n",
        "consul:\n  host: 127.0.0.1:8500\n  token: secret\n",
    );
    assert!(matches!(
        Config::from_yaml(&consul, no_env(), None).unwrap().dcs,
        DcsSection::Consul(_)
    ));

    let yaml = format!(
        "{PATRONI_EXAMPLE}\nwatchdog:\n  mode: required\nstandby_cluster:\n  host: h\nfrobnicate: 1\n"
    );
    let c = Config::from_yaml(&yaml, no_env(), None).unwrap();
    assert_eq!(c.watchdog.mode, crate::WatchdogMode::Required);
    assert!(
        c.warnings.contains(
            &"standby_cluster: standby_cluster at the top level of a node's file (Patroni reads \
              it from bootstrap.dcs only; move it there) is not supported by pgha yet (set to \
              {\"host\":\"h\"}): this node will not create a new cluster while it is set"
                .to_string()
        ),
        "{:?}",
        c.warnings
    );
    assert_eq!(c.refused.len(), 1);
    assert!(
        c.warnings
            .contains(&"frobnicate: unknown key; ignored".to_string()),
        "{:?}",
        c.warnings
    );
}

#[test]
fn bootstrap_dcs_is_checked_with_the_dynamic_configuration_table() {
    let yaml = PATRONI_EXAMPLE.replace(
        "  dcs:                      # written once to /<namespace>/<scope>/config\n",
        "  dcs:\n    failsafe_mode: true\n    synchronous_mode: quorum\n    standby_cluster: {host: 10.0.0.1, port: 5432}\n    slots: {s1: {type: physical}}\n",
    );
    assert_ne!(yaml, PATRONI_EXAMPLE);
    let c = Config::from_yaml(&yaml, no_env(), None).unwrap();
    let refused: Vec<&str> = c.refused.iter().map(|u| u.key.as_str()).collect();
    // failsafe_mode, quorum, standby clusters with a host and slots are supported.
    assert!(refused.is_empty(), "{refused:?}");
    assert!(
        !c.warnings.iter().any(|w| w.contains("slots")),
        "{:?}",
        c.warnings
    );
    let bad = PATRONI_EXAMPLE.replace(
        "    ttl: 30\n",
        "    ttl: 30\n    failsafe_mode: sometimes\n",
    );
    let e = Config::from_yaml(&bad, no_env(), None).unwrap_err();
    assert!(
        e.errors.contains(
            &"bootstrap.dcs.failsafe_mode: expected a boolean, found \"sometimes\"".to_string()
        ),
        "{:?}",
        e.errors
    );
}

#[test]
fn the_timing_rule_is_adjusted_with_a_warning() {
    let yaml = PATRONI_EXAMPLE.replace("loop_wait: 10", "loop_wait: 15");
    let c = Config::from_yaml(&yaml, no_env(), None).unwrap();
    assert!(
        c.warnings.iter().any(|w| w.contains("loop_wait 15 -> 10")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn environment_overrides_apply_before_checking() {
    let yaml = PATRONI_EXAMPLE.replace("  data_dir: /var/lib/pgha/node1\n", "");
    assert!(Config::from_yaml(&yaml, no_env(), None).is_err());
    let env = vec![(
        "PATRONI_POSTGRESQL_DATA_DIR".to_string(),
        "/srv/pg".to_string(),
    )];
    let c = Config::from_yaml(&yaml, env, None).unwrap();
    assert_eq!(c.postgresql.data_dir, PathBuf::from("/srv/pg"));
}

#[test]
fn replica_methods_and_basebackup_options() {
    let yaml = PATRONI_EXAMPLE.replace(
        "  authentication:",
        "  create_replica_methods: [wal_g, basebackup]\n  wal_g:\n    command: /usr/bin/wal-g-restore\n    no_params: true\n    no_master: 1\n    envdir: /etc/wal-g\n  basebackup:\n    - verbose\n    - max-rate: 100M\n  authentication:",
    );
    let c = Config::from_yaml(&yaml, no_env(), None).unwrap();
    assert!(
        c.postgresql.create_replica_methods[0].works_without_leader(),
        "no_master is Patroni's older name of no_leader"
    );
    assert!(c.postgresql.can_create_replica_without_leader());
    assert_eq!(
        c.postgresql.create_replica_methods[1],
        ReplicaMethod::Basebackup {
            options: vec!["--verbose".into(), "--max-rate=100M".into()]
        }
    );
    match &c.postgresql.create_replica_methods[0] {
        ReplicaMethod::Custom {
            name,
            command,
            no_params,
            params,
            ..
        } => {
            assert_eq!(
                (name.as_str(), command.as_str(), *no_params),
                ("wal_g", "/usr/bin/wal-g-restore", true)
            );
            assert_eq!(
                params.get("envdir").and_then(Value::as_str),
                Some("/etc/wal-g")
            );
            assert!(
                !params.contains_key("no_master"),
                "read, not passed on: {params:?}"
            );
        }
        other => panic!("{other:?}"),
    }
    let broken = PATRONI_EXAMPLE.replace(
        "  authentication:",
        "  create_replica_methods: [wal_g]\n  authentication:",
    );
    let e = Config::from_yaml(&broken, no_env(), None).unwrap_err();
    assert!(
        e.errors
            .iter()
            .any(|x| x.starts_with("postgresql.wal_g.command: missing")),
        "{:?}",
        e.errors
    );
}

#[test]
fn the_rest_api_allowlist_is_typed_and_bad_entries_are_named_with_their_index() {
    use pgha_rest::access::{AllowEntry, Network};
    let c = Config::from_yaml(PATRONI_EXAMPLE, no_env(), None).unwrap();
    assert_eq!(
        c.restapi_access,
        RestApiAccess::default(),
        "everyone by default"
    );

    let with = |lines: &str| {
        PATRONI_EXAMPLE.replace(
            "  connect_address: 127.0.0.1:8008\n",
            &format!("  connect_address: 127.0.0.1:8008\n{lines}"),
        )
    };
    let yaml = with(
        "  allowlist: [10.0.0.0/8, 192.168.1.7, 'fd00::/8', db1.example]\n  allowlist_include_members: true\n",
    );
    let c = Config::from_yaml(&yaml, no_env(), None).unwrap();
    let network = |t: &str| AllowEntry::Network(Network::parse(t).unwrap());
    assert_eq!(
        c.restapi_access,
        RestApiAccess {
            allowlist: vec![
                network("10.0.0.0/8"),
                network("192.168.1.7/32"),
                network("fd00::/8"),
                AllowEntry::Host("db1.example".into()),
            ],
            include_members: true,
        }
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);

    let yaml = with("  allowlist: [10.0.0.0/8, 10.0.0.0/33, 10.0.0.300, {a: 1}, 'bad host']\n");
    let e = Config::from_yaml(&yaml, no_env(), None).unwrap_err();
    for expected in [
        "restapi.allowlist[1]: \"10.0.0.0/33\": the prefix length 33 is longer than the address's 32 bits",
        "restapi.allowlist[2]: \"10.0.0.300\": \"10.0.0.300\" is not an IP address",
        "restapi.allowlist[3]: expected an IP address, a network or a host name, found a mapping",
        "restapi.allowlist[4]: \"bad host\": \"bad host\" is neither an IP address nor a host name",
    ] {
        assert!(
            e.errors.iter().any(|x| x == expected),
            "{expected:?} not in {:#?}",
            e.errors
        );
    }
    assert_eq!(e.errors.len(), 4, "{:#?}", e.errors);

    // A single string is not a list (Patroni's validator says the same).
    let e = Config::from_yaml(&with("  allowlist: 10.0.0.0/8\n"), no_env(), None).unwrap_err();
    assert!(
        e.errors
            .iter()
            .any(|x| x == "restapi.allowlist: expected a list, found a string"),
        "{:#?}",
        e.errors
    );

    // PATRONI_RESTAPI_ALLOWLIST and _INCLUDE_MEMBERS, as Patroni reads them.
    let env = vec![
        (
            "PATRONI_RESTAPI_ALLOWLIST".to_string(),
            "10.0.0.0/8,127.0.0.1".to_string(),
        ),
        (
            "PATRONI_RESTAPI_ALLOWLIST_INCLUDE_MEMBERS".to_string(),
            "true".to_string(),
        ),
    ];
    let c = Config::from_yaml(PATRONI_EXAMPLE, env, None).unwrap();
    assert_eq!(
        c.restapi_access.allowlist,
        vec![network("10.0.0.0/8"), network("127.0.0.1/32")]
    );
    assert!(c.restapi_access.include_members);
}

#[test]
fn a_custom_bootstrap_method_is_read_as_patroni_reads_it() {
    let method = "  method: pitr\n  pitr:\n    command: /usr/local/bin/restore --from s3\n    keep_existing_recovery_conf: false\n    stanza: main\n    recovery_conf:\n      restore_command: cp /archive/%f %p\n      recovery_target_time: '2026-12-04 12:00:00+00'\n      recovery_target_action: promote\n  initdb:\n";
    let yaml = PATRONI_EXAMPLE.replacen("  initdb:\n", method, 1);
    let c = Config::from_yaml(&yaml, no_env(), None).unwrap();
    assert!(
        !c.warnings
            .iter()
            .any(|w| w.contains("pitr") || w.contains("method")),
        "{:?}",
        c.warnings
    );
    let custom = c.bootstrap.unwrap().new_cluster.custom.unwrap();
    assert_eq!(custom.name, "pitr");
    assert_eq!(custom.command, "/usr/local/bin/restore --from s3");
    assert!(!custom.no_params && !custom.keep_existing_recovery_conf);
    assert_eq!(custom.params, [("stanza".to_string(), "main".to_string())]);
    let recovery = custom.recovery_conf.unwrap();
    assert!(recovery.contains(&(
        "recovery_target_time".to_string(),
        "2026-12-04 12:00:00+00".to_string()
    )));

    // A method without its section or command would silently become
    // initdb in Patroni: here it is an error naming the key.
    let bad = PATRONI_EXAMPLE.replacen("  initdb:\n", "  method: pitr\n  initdb:\n", 1);
    let err = Config::from_yaml(&bad, no_env(), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bootstrap.pitr: missing"), "{err}");
    let bad = PATRONI_EXAMPLE.replacen(
        "  initdb:\n",
        "  method: pitr\n  pitr: {no_params: true}\n  initdb:\n",
        1,
    );
    let err = Config::from_yaml(&bad, no_env(), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bootstrap.pitr.command: missing"), "{err}");
}

#[test]
fn a_nostream_replica_without_an_archive_to_replay_is_warned() {
    let yaml = PATRONI_EXAMPLE.replace(
        "\ntags:\n",
        "\ntags:\n  replicatefrom: node2\n  nostream: true\n",
    );
    let tag_warnings = |yaml: &str| -> Vec<String> {
        let c = Config::from_yaml(yaml, no_env(), None).unwrap();
        c.warnings
            .into_iter()
            .filter(|w| w.starts_with("tags."))
            .collect()
    };
    let named = tag_warnings(&yaml);
    assert_eq!(named.len(), 1, "{named:?}");
    assert!(
        named[0].starts_with("tags.nostream: this replica does not stream"),
        "{named:?}"
    );
    let with_archive = yaml.replacen(
        "\npostgresql:\n",
        "\npostgresql:\n  recovery_conf:\n    restore_command: cp /archive/%f %p\n",
        1,
    );
    assert!(tag_warnings(&with_archive).is_empty());
}

#[test]
fn replicas_recovery_conf_is_applied_and_what_pgha_sets_itself_is_warned() {
    let yaml = PATRONI_EXAMPLE.replacen(
        "\npostgresql:\n",
        "\npostgresql:\n  recovery_conf:\n    restore_command: cp /archive/%f %p\n    \
         recovery_min_apply_delay: 5min\n    primary_conninfo: host=elsewhere\n    \
         recovery_target_time: '2026-01-01'\n",
        1,
    );
    let c = Config::from_yaml(&yaml, no_env(), None).unwrap();
    assert_eq!(
        c.postgresql.recovery_conf,
        [
            (
                "restore_command".to_string(),
                "cp /archive/%f %p".to_string()
            ),
            ("recovery_min_apply_delay".to_string(), "5min".to_string()),
        ]
    );
    let warned = c.warnings.join("\n");
    assert!(
        warned.contains("postgresql.recovery_conf.primary_conninfo: set by pgha itself"),
        "{warned}"
    );
    assert!(
        warned.contains("postgresql.recovery_conf.recovery_target_time: not applied"),
        "{warned}"
    );
    assert!(
        !warned.contains("recovery_conf.restore_command"),
        "{warned}"
    );
    let bad = PATRONI_EXAMPLE.replacen(
        "\npostgresql:\n",
        "\npostgresql:\n  recovery_conf: [1]\n",
        1,
    );
    let e = Config::from_yaml(&bad, no_env(), None).unwrap_err();
    assert!(
        e.errors
            .iter()
            .any(|m| m.starts_with("postgresql.recovery_conf: expected a mapping")),
        "{:?}",
        e.errors
    );
}

#[test]
fn a_replica_method_defined_but_not_listed_is_kept_for_standby_clusters() {
    let yaml = PATRONI_EXAMPLE.replacen(
        "\npostgresql:\n",
        "\npostgresql:\n  from_backup:\n    command: /usr/local/bin/restore\n    no_leader: true\n",
        1,
    );
    let c = Config::from_yaml(&yaml, no_env(), None).unwrap();
    assert!(
        !c.warnings.iter().any(|w| w.contains("from_backup")),
        "not an unknown key: {:?}",
        c.warnings
    );
    assert!(matches!(
        &c.postgresql.other_replica_methods[..],
        [ReplicaMethod::Custom { name, no_leader: true, .. }] if name == "from_backup"
    ));
    // Not listed in create_replica_methods: replicas do not use it.
    assert!(!c.postgresql.can_create_replica_without_leader());
}
