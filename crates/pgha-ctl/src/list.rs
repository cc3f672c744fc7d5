//! `list` and `topology`: the member table, read from the DCS, with
//! patronictl 4's columns (received and replayed WAL positions and lag),
//! extra columns when any member has pending or scheduled restarts or tags,
//! and the notes under the table (maintenance mode, scheduled switchover).

use pgha_core::model::{Cluster, Member};
use serde_json::{Map, Value, json};

use super::cli::ListArgs;
use super::output::{Format, Rows, timestamp};
use super::{Ctl, CtlError, clear_screen, echo, echo_raw, note};

/// How long a `pending_restart_reason` entry may be in a table before it
/// is shown as hidden (patronictl's limit).
const MAX_REASON_WIDTH: usize = 50;

/// `list` / `topology`: prints each cluster, once or every `-w` seconds.
pub async fn run(ctl: &mut Ctl, args: ListArgs, topology: bool) -> Result<(), CtlError> {
    let format = if topology {
        Format::Topology
    } else {
        args.format
    };
    let names = if args.cluster_names.is_empty() {
        match &ctl.config.scope {
            Some(s) => vec![s.clone()],
            None => {
                note("Warning: Listing members: No cluster names were provided");
                return Ok(());
            }
        }
    } else {
        args.cluster_names.clone()
    };
    let every = args.watch.interval();
    loop {
        if every.is_some() {
            clear_screen();
        }
        if args.timestamp {
            echo(timestamp(0));
        }
        for name in &names {
            let c = ctl.load(name).await?;
            echo_raw(render(&c, name, args.extended, format));
        }
        let Some(every) = every else {
            return Ok(());
        };
        tokio::time::sleep(every).await;
    }
}

/// The member list of one cluster in `format`, with the notes under a table.
pub fn render(c: &Cluster, scope: &str, extended: bool, format: Format) -> String {
    let mut text = rows(c, scope, extended, format).render(format);
    if format.is_table() {
        let info = service_info(c);
        if !info.is_empty() {
            text.push(' ');
            text.push_str(&info.join("\n "));
            text.push('\n');
        }
        for p in &c.problems {
            text.push_str(&format!(" ! {p}\n"));
        }
    }
    text
}

/// The title in the table's top border: the cluster and its system ID.
fn title(c: &Cluster, scope: &str) -> String {
    let sysid = match c.initialize.as_ref().map(|v| v.value.as_str()) {
        None => "uninitialized",
        Some("") => "initializing",
        Some(id) => id,
    };
    format!(" Cluster: {scope} ({sysid}) ")
}

/// One member as patronictl's `cluster_as_json` describes it: role and
/// state as shown, address, WAL positions and lag behind the leader.
#[derive(Debug, Clone, Default)]
struct MemberView {
    name: String,
    /// `leader`, `standby_leader`, `sync_standby`, `quorum_standby`, `replica`.
    role: &'static str,
    state: String,
    host: Option<String>,
    port: Option<u16>,
    data: Map<String, Value>,
    /// (LSN text, lag bytes) for received, replayed and the legacy single
    /// position; `None` for the leader, `("unknown", None)` when unknown.
    receive: Option<(String, Option<u64>)>,
    replay: Option<(String, Option<u64>)>,
    xlog: Option<(String, Option<u64>)>,
}

/// `0/3000060`: PostgreSQL's spelling of a WAL position.
pub use pgha_core::model::lsn::format as format_lsn;

fn position(lsn: Option<u64>, cluster_lsn: u64) -> (String, Option<u64>) {
    match lsn.filter(|&l| l > 0) {
        None => ("unknown".into(), None),
        Some(l) => (format_lsn(l), Some(cluster_lsn.saturating_sub(l))),
    }
}

/// Whether the dynamic configuration describes a standby cluster.
fn is_standby_cluster(c: &Cluster) -> bool {
    c.dynamic_config().get("standby_cluster").is_some_and(|s| {
        ["host", "port", "restore_command"]
            .iter()
            .any(|k| s.get(*k).is_some_and(truthy))
    })
}

/// Python's truthiness, which patronictl uses to decide what to show.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Host and port from `conn_kwargs` (newer Patroni) or `conn_url`.
fn address(m: &Member, data: &Map<String, Value>) -> (Option<String>, Option<u16>) {
    if let Some(kw) = data.get("conn_kwargs").and_then(Value::as_object) {
        let host = kw.get("host").and_then(Value::as_str).map(String::from);
        let port = kw
            .get("port")
            .and_then(|p| p.as_u64().or_else(|| p.as_str()?.parse().ok()))
            .and_then(|p| u16::try_from(p).ok());
        return (host.filter(|h| !h.is_empty()), port);
    }
    match m.data.conn_host_port() {
        Some((h, p)) if !h.is_empty() => (Some(h), Some(p)),
        _ => (None, None),
    }
}

/// Members the DCS still knows although their member key is gone: the
/// leader keeps a replication slot for them (`status.retain_slots`), so
/// their PostgreSQL may well be running and streaming without an agent
/// (scenario S4: the agent was stopped). patronictl drops them silently;
/// they are shown as `unmanaged` replicas with unknown positions.
fn unmanaged(c: &Cluster) -> Vec<MemberView> {
    let Some(retained) = c
        .status
        .as_ref()
        .and_then(|s| s.value.retain_slots.as_ref())
    else {
        return Vec::new();
    };
    let known = |slot: &str| {
        c.members
            .iter()
            .map(|m| m.name.as_str())
            .chain(c.leader_name())
            .any(|name| name == slot || pgha_postgres::files::slot_name(name) == slot)
    };
    let mut out: Vec<MemberView> = retained
        .iter()
        .filter(|slot| !slot.is_empty() && !known(slot))
        .map(|slot| MemberView {
            name: slot.clone(),
            role: "replica",
            state: "unmanaged".into(),
            receive: Some(("unknown".into(), None)),
            replay: Some(("unknown".into(), None)),
            xlog: Some(("unknown".into(), None)),
            ..Default::default()
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out.dedup_by(|a, b| a.name == b.name);
    out
}

fn views(c: &Cluster) -> Vec<MemberView> {
    let config = c.dynamic_config();
    let leader = c.leader_name();
    let standby_cluster = is_standby_cluster(c);
    let sync = c
        .sync
        .as_ref()
        .filter(|_| config.synchronous_mode())
        .map(|s| &s.value);
    let cluster_lsn = c.status.as_ref().and_then(|s| s.value.optime).unwrap_or(0);
    c.members
        .iter()
        .map(|m| {
            let is_leader = Some(m.name.as_str()) == leader;
            let role = if is_leader {
                if standby_cluster {
                    "standby_leader"
                } else {
                    "leader"
                }
            } else if sync.is_some_and(|s| s.is_standby(&m.name)) {
                if config.quorum_commit_mode() {
                    "quorum_standby"
                } else {
                    "sync_standby"
                }
            } else {
                "replica"
            };
            let data = match serde_json::to_value(&m.data) {
                Ok(Value::Object(o)) => o,
                _ => Map::new(),
            };
            let replication_state = if role == "leader" {
                None
            } else {
                m.data.replication_state.clone().filter(|s| !s.is_empty())
            };
            let state = replication_state
                .or_else(|| m.data.state.as_ref().map(|s| s.to_string()))
                .unwrap_or_default();
            let (host, port) = address(m, &data);
            let mut v = MemberView {
                name: m.name.clone(),
                role,
                state,
                host,
                port,
                data,
                ..Default::default()
            };
            if !is_leader {
                v.receive = Some(position(m.data.receive_lsn, cluster_lsn));
                v.replay = Some(position(m.data.replay_lsn, cluster_lsn));
                v.xlog = Some(position(m.data.xlog_location, cluster_lsn));
            }
            v
        })
        .collect()
}

/// Lag in MB as patronictl rounds it (Python's `round`: halves to even).
fn lag_mb(bytes: u64) -> u64 {
    (bytes as f64 / 1024.0 / 1024.0).round_ties_even() as u64
}

/// `param: old->new` lines for `pending_restart_reason`.
fn restart_reason(data: &Map<String, Value>, hide_long: bool) -> String {
    let Some(reasons) = data
        .get("pending_restart_reason")
        .and_then(Value::as_object)
    else {
        return String::new();
    };
    reasons
        .iter()
        .map(|(param, values)| {
            let text = |k: &str| match values.get(k) {
                Some(Value::String(s)) => s.clone(),
                Some(other) => super::output::python_str(other),
                None => String::new(),
            };
            let full = format!("{param}: {}->{}", text("old_value"), text("new_value"));
            if hide_long && full.chars().count() > MAX_REASON_WIDTH {
                format!("{param}: [hidden - too long]")
            } else {
                full
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `2026-01-14T10:00:00+00:00 if version < 15.4`
fn scheduled_restart(data: &Map<String, Value>) -> Option<String> {
    let s = data.get("scheduled_restart")?.as_object()?;
    let mut text = super::output::python_str(s.get("schedule")?);
    if let Some(v) = s.get("postgres_version") {
        text.push_str(&format!(" if version < {}", super::output::python_str(v)));
    }
    Some(text)
}

/// patronictl's `topology_sort`: the leader, then each member under the
/// one it replicates from (`replicatefrom` tag), indented by depth.
fn topology_sort(members: Vec<MemberView>) -> Vec<MemberView> {
    let is_leader = |m: &MemberView| m.role.ends_with("leader");
    let leader = members
        .iter()
        .find(|m| is_leader(m))
        .map(|m| m.name.clone());
    let replicas: Vec<String> = members
        .iter()
        .filter(|m| !is_leader(m))
        .map(|m| m.name.clone())
        .collect();
    let parent_of = |m: &MemberView| -> Option<String> {
        let from = m
            .data
            .get("tags")
            .and_then(|t| t.get("replicatefrom"))
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty() && *p != m.name && replicas.iter().any(|r| r == p));
        from.map(String::from).or_else(|| leader.clone())
    };
    let mut out = Vec::new();
    fn walk(
        parent: Option<&str>,
        level: usize,
        members: &[MemberView],
        parent_of: &dyn Fn(&MemberView) -> Option<String>,
        out: &mut Vec<MemberView>,
    ) {
        // Depth is bounded by the number of members (no cycles reach the root).
        if level > members.len() {
            return;
        }
        for m in members
            .iter()
            .filter(|m| !m.role.ends_with("leader") && parent_of(m).as_deref() == parent)
        {
            let mut shown = m.clone();
            shown.name = format!("{}+ {}", "  ".repeat(level.saturating_sub(1)), m.name);
            out.push(shown);
            walk(Some(&m.name), level + 1, members, parent_of, out);
        }
    }
    if let Some(l) = members.iter().find(|m| is_leader(m)) {
        out.push(l.clone());
    }
    walk(leader.as_deref(), 1, &members, &parent_of, &mut out);
    out
}

/// The member rows, patronictl's `output_members` column for column.
pub fn rows(c: &Cluster, scope: &str, extended: bool, format: Format) -> Rows {
    let mut members = views(c);
    members.extend(unmanaged(c));
    let mut columns = vec![
        "Cluster",
        "Member",
        "Host",
        "Role",
        "State",
        "TL",
        "Receive LSN",
        "Receive Lag",
        "Replay LSN",
        "Replay Lag",
    ];
    let with_host: Vec<&MemberView> = members.iter().filter(|m| m.host.is_some()).collect();
    for (column, key) in [
        ("Pending restart", "pending_restart"),
        ("Pending restart reason", "pending_restart_reason"),
        ("Scheduled restart", "scheduled_restart"),
        ("Tags", "tags"),
    ] {
        if extended
            || with_host
                .iter()
                .any(|m| m.data.get(key).is_some_and(truthy))
        {
            columns.push(column);
        }
    }
    // host:port when a port is not the default or two members share a host.
    let mut hosts: Vec<&str> = with_host.iter().filter_map(|m| m.host.as_deref()).collect();
    let any_port = with_host.iter().any(|m| m.port.is_some_and(|p| p != 5432));
    hosts.sort_unstable();
    hosts.dedup();
    let append_port = any_port || hosts.len() < with_host.len();
    if format == Format::Topology {
        members = topology_sort(members);
    }
    let table = format.is_table();
    let mut out_rows = Vec::new();
    for m in &members {
        let (mut receive, mut replay) = (m.receive.clone(), m.replay.clone());
        // Members written by Patroni before receive/replay positions existed.
        let legacy = matches!(
            (&receive, &replay, &m.xlog),
            (Some((r, _)), Some((p, _)), Some((x, _))) if r == "unknown" && p == "unknown" && x != "unknown"
        );
        if legacy {
            if m.state == "streaming" {
                receive = m.xlog.clone();
            } else {
                replay = m.xlog.clone();
            }
        }
        let lsn =
            |p: &Option<(String, Option<u64>)>| p.as_ref().map_or(json!(""), |(t, _)| json!(t));
        let lag = |p: &Option<(String, Option<u64>)>| match p {
            Some((_, Some(bytes))) => json!(lag_mb(*bytes)),
            _ => json!(""),
        };
        let host = match (&m.host, m.port) {
            (Some(h), Some(p)) if append_port => format!("{h}:{p}"),
            (Some(h), _) => h.clone(),
            (None, _) => String::new(),
        };
        let mut row = Vec::new();
        for column in &columns {
            row.push(match *column {
                "Cluster" => json!(scope),
                "Member" => json!(m.name),
                "Host" => json!(host),
                "Role" => json!(title_case(m.role)),
                "State" => json!(m.state),
                "TL" => m.data.get("timeline").cloned().unwrap_or(json!("")),
                "Receive LSN" => lsn(&receive),
                "Receive Lag" => lag(&receive),
                "Replay LSN" => lsn(&replay),
                "Replay Lag" => lag(&replay),
                "Pending restart" => json!(if m.data.get("pending_restart").is_some_and(truthy) {
                    "*"
                } else {
                    ""
                }),
                "Pending restart reason" => json!(restart_reason(&m.data, table)),
                "Scheduled restart" => json!(scheduled_restart(&m.data).unwrap_or_default()),
                "Tags" => m.data.get("tags").cloned().unwrap_or(json!("")),
                _ => json!(""),
            });
        }
        out_rows.push(row);
    }
    let mut rows = Rows::new(&columns);
    if table {
        for c in rows.columns.iter_mut() {
            if c == "Receive Lag" || c == "Replay Lag" {
                *c = "Lag".into();
            }
        }
    }
    rows.rows = out_rows;
    rows.title = title(c, scope);
    rows.right = vec!["Group", "Receive LSN", "Replay LSN", "Lag", "TL"];
    rows
}

/// `standby_leader` -> `Standby Leader`.
fn title_case(role: &str) -> String {
    role.split('_')
        .map(|w| {
            let mut chars = w.chars();
            chars.next().map_or_else(String::new, |f| {
                f.to_uppercase().collect::<String>() + chars.as_str()
            })
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The notes under a table: maintenance mode, a scheduled switchover, and
/// (in a cluster run by pgha) the dynamic configuration's keys that pgha
/// refuses and runs without.
pub fn service_info(c: &Cluster) -> Vec<String> {
    let mut info = Vec::new();
    if c.dynamic_config().pause() {
        info.push("Maintenance mode: on".to_string());
    }
    if let Some((leader, by)) = pgha_core::ha::failsafe::confirmed_leader(c) {
        info.push(format!(
            "Failsafe mode: active: {leader} runs as the leader without the DCS (confirmed by {})",
            by.join(", ")
        ));
    }
    if !c.run_by_patroni_only() {
        for u in c.dynamic_config().review().unsupported {
            info.push(format!("WARNING: {u}"));
        }
        if let Some(note) = pgha_core::ha::sync::leaderless_note(c) {
            info.push(format!("WARNING: {note}"));
        }
    }
    let scheduled = c.failover.as_ref().and_then(|f| {
        let at = f
            .value
            .scheduled_at_text
            .as_deref()
            .filter(|t| !t.is_empty())?;
        Some((&f.value, at))
    });
    if let Some((f, at)) = scheduled {
        // As patronictl shows it: parsed, then in Python's isoformat
        // (`2030-01-01T12:00:00+00:00`, whatever spelling was stored).
        let at = super::schedule::parse(Some(at))
            .ok()
            .flatten()
            .map_or_else(|| at.to_string(), |s| s.iso);
        let mut text = format!("Switchover scheduled at: {at}");
        for (label, value) in [("from", &f.leader), ("to", &f.member)] {
            if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
                text.push_str(&format!("\n{label:>24}: {v}"));
            }
        }
        info.push(text);
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgha_core::model::{ClusterKey, RawEntry, Version};

    fn cluster(extra: &[(&str, &str)]) -> Cluster {
        let e = |k: &str, v: &str| RawEntry {
            key: ClusterKey::parse(k).unwrap(),
            value: v.as_bytes().to_vec(),
            version: Version::number(1),
            owner: None,
        };
        let mut entries = vec![
            e("initialize", "7312345678901234567"),
            e("leader", "node1"),
            e("status", r#"{"optime": 67108960}"#),
            e(
                "members/node1",
                r#"{"conn_url":"postgres://127.0.0.1:5432/postgres","state":"running","role":"primary","timeline":2,"xlog_location":67108960}"#,
            ),
            e(
                "members/node2",
                r#"{"conn_url":"postgres://127.0.0.1:5433/postgres","state":"running","role":"replica","replication_state":"streaming","timeline":2,"xlog_location":67108960,"receive_lsn":67108960,"replay_lsn":50331744}"#,
            ),
            e(
                "members/node3",
                r#"{"conn_url":"postgres://127.0.0.1:5434/postgres","state":"stopped","role":"replica","tags":{"replicatefrom":"node2","nofailover":true}}"#,
            ),
        ];
        entries.extend(extra.iter().map(|(k, v)| e(k, v)));
        Cluster::from_entries(entries, Version::number(1))
    }

    #[test]
    fn the_table_is_patronictls() {
        let text = render(&cluster(&[]), "demo", false, Format::Pretty);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "+ Cluster: demo (7312345678901234567) ----------+----+-------------+-----+------------+-----+----------------------+"
        );
        assert_eq!(
            lines[1],
            "| Member | Host           | Role    | State     | TL | Receive LSN | Lag | Replay LSN | Lag | Tags                 |"
        );
        assert_eq!(
            lines[3],
            "| node1  | 127.0.0.1:5432 | Leader  | running   |  2 |             |     |            |     |                      |"
        );
        assert_eq!(
            lines[5],
            "| node2  | 127.0.0.1:5433 | Replica | streaming |  2 |   0/4000060 |   0 |  0/3000060 |  16 |                      |"
        );
        assert_eq!(
            lines[7..9],
            [
                "| node3  | 127.0.0.1:5434 | Replica | stopped   |    |     unknown |     |    unknown |     | nofailover: true     |",
                "|        |                |         |           |    |             |     |            |     | replicatefrom: node2 |",
            ]
        );
        assert_eq!(lines.len(), 10, "{text}");
        let j = rows(&cluster(&[]), "demo", false, Format::Json).render(Format::Json);
        let j: Value = serde_json::from_str(&j).unwrap();
        assert_eq!(
            j[0],
            json!({"Cluster": "demo", "Member": "node1", "Host": "127.0.0.1:5432", "Role": "Leader", "State": "running", "TL": 2})
        );
        assert_eq!(j[1]["Replay Lag"], 16);
        assert_eq!(j[1]["Receive LSN"], "0/4000060");
        assert_eq!(j[2]["Receive LSN"], "unknown");
        assert!(j[2].get("Receive Lag").is_none());
        assert_eq!(
            j[2]["Tags"],
            json!({"replicatefrom": "node2", "nofailover": true})
        );
    }

    #[test]
    fn a_member_whose_key_is_gone_but_whose_slot_is_kept_is_shown_unmanaged() {
        let c = cluster(&[(
            "status",
            r#"{"optime": 67108960, "retain_slots": ["node1", "node2", "node3", "node4_eu"]}"#,
        )]);
        let j = rows(&c, "demo", false, Format::Json).render(Format::Json);
        let j: Value = serde_json::from_str(&j).unwrap();
        let names: Vec<&str> = j
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r["Member"].as_str())
            .collect();
        assert_eq!(names, ["node1", "node2", "node3", "node4_eu"]);
        assert_eq!(j[3]["State"], "unmanaged");
        assert_eq!(j[3]["Role"], "Replica");
        assert_eq!(j[3]["Receive LSN"], "unknown");
        let text = render(&c, "demo", false, Format::Pretty);
        assert!(text.contains("| node4_eu |"), "{text}");
        // Without retained slots, nothing extra.
        assert_eq!(
            rows(&cluster(&[]), "demo", false, Format::Json).rows.len(),
            3
        );
    }

    #[test]
    fn topology_indents_cascading_replicas() {
        let text = render(&cluster(&[]), "demo", false, Format::Topology);
        let names: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("| ") && !l.starts_with("| Member"))
            .map(|l| l.split('|').nth(1).unwrap_or_default().trim_end())
            .filter(|n| !n.trim().is_empty())
            .collect();
        assert_eq!(names, [" node1", " + node2", "   + node3"]);
        assert!(
            text.contains("{nofailover: true, replicatefrom: node2}"),
            "{text}"
        );
    }

    #[test]
    fn a_leader_running_in_failsafe_mode_is_named_under_the_table() {
        let mut c = cluster(&[]);
        c.leader = None;
        for m in c.members.iter_mut().filter(|m| m.name != "node1") {
            m.data
                .extra
                .insert("failsafe_leader".into(), serde_json::json!("node1"));
        }
        let text = render(&c, "demo", false, Format::Pretty);
        assert!(
            text.contains(
                " Failsafe mode: active: node1 runs as the leader without the DCS (confirmed by node2, node3)"
            ),
            "{text}"
        );
        // With a leader key, nothing to say.
        let c = cluster(&[]);
        assert!(!render(&c, "demo", false, Format::Pretty).contains("Failsafe"));
    }

    #[test]
    fn notes_under_the_table() {
        let c = cluster(&[
            ("config", r#"{"pause": true}"#),
            (
                "failover",
                r#"{"leader":"node1","member":"node2","scheduled_at":"2030-01-01T12:00:00Z"}"#,
            ),
        ]);
        let text = render(&c, "demo", false, Format::Pretty);
        assert!(
            text.ends_with(
                "+\n Maintenance mode: on\n Switchover scheduled at: 2030-01-01T12:00:00+00:00\n                    from: node1\n                      to: node2\n"
            ),
            "{text}"
        );
        assert!(!render(&c, "demo", false, Format::Json).contains("Maintenance"));
    }

    #[test]
    fn hosts_show_ports_only_when_needed_and_lag_rounds_like_python() {
        let c = Cluster::from_entries(
            [
                RawEntry {
                    key: ClusterKey::parse("members/a").unwrap(),
                    value: br#"{"conn_url":"postgres://10.0.0.1:5432/postgres","state":"running","pending_restart":true,"pending_restart_reason":{"max_connections":{"old_value":"100","new_value":"200"}}}"#.to_vec(),
                    version: Version::number(1),
                    owner: None,
                },
                RawEntry {
                    key: ClusterKey::parse("members/b").unwrap(),
                    value: br#"{"conn_url":"postgres://10.0.0.2/postgres","state":"running"}"#.to_vec(),
                    version: Version::number(1),
                    owner: None,
                },
            ],
            Version::number(1),
        );
        let r = rows(&c, "x", false, Format::Tsv);
        assert_eq!(r.rows[0][2], json!("10.0.0.1"));
        assert_eq!(
            r.columns.last().map(String::as_str),
            Some("Pending restart reason")
        );
        assert_eq!(r.rows[0][10], json!("*"));
        assert_eq!(r.rows[0][11], json!("max_connections: 100->200"));
        assert_eq!(lag_mb(1024 * 1024 * 5 / 2), 2);
        assert_eq!(lag_mb(1024 * 1024 * 7 / 2), 4);
        assert!(
            render(&c, "x", false, Format::Pretty).starts_with("+ Cluster: x (uninitialized) ")
        );
    }
}
