//! `pghactl list`: the member table.

use pgha_core::model::{Cluster, Member};
use serde_json::{Map, Value, json};

/// One row of the member table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub member: String,
    pub host: String,
    pub role: String,
    pub state: String,
    pub timeline: Option<u64>,
    /// Megabytes behind the leader; `None` for the leader, `Some(None)` when unknown.
    pub lag_mb: Option<Option<u64>>,
    pub tags: Map<String, Value>,
}

/// The rows, leader first as patronictl sorts them (by name otherwise).
pub fn rows(c: &Cluster) -> Vec<Row> {
    let leader = c.leader_name();
    let cluster_lsn = c.last_leader_lsn();
    let mut rows: Vec<Row> = c
        .members
        .iter()
        .map(|m: &Member| {
            let is_leader = Some(m.name.as_str()) == leader;
            let state = if is_leader {
                None
            } else {
                m.data.replication_state.clone()
            }
            .or_else(|| m.data.state.as_ref().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown".into());
            Row {
                member: m.name.clone(),
                host: m
                    .data
                    .conn_host_port()
                    .map(|(h, p)| format!("{h}:{p}"))
                    .unwrap_or_default(),
                role: if is_leader {
                    "Leader".into()
                } else {
                    "Replica".into()
                },
                state,
                timeline: m.data.timeline,
                lag_mb: (!is_leader).then(|| match (cluster_lsn, m.data.xlog_location) {
                    (Some(l), Some(x)) => Some(l.saturating_sub(x) / (1 << 20)),
                    _ => None,
                }),
                tags: m.data.tags.0.clone(),
            }
        })
        .collect();
    rows.sort_by(|a, b| a.member.cmp(&b.member));
    rows
}

fn lag_text(r: &Row) -> String {
    match r.lag_mb {
        None => String::new(),
        Some(None) => "unknown".into(),
        Some(Some(mb)) => mb.to_string(),
    }
}

/// patronictl's pretty table, with the cluster and its system ID in the top border.
pub fn pretty(scope: &str, c: &Cluster) -> String {
    let rows = rows(c);
    let show_tags = rows.iter().any(|r| !r.tags.is_empty());
    let mut header = vec!["Member", "Host", "Role", "State", "TL", "Lag in MB"];
    if show_tags {
        header.push("Tags");
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let mut cells = vec![
                r.member.clone(),
                r.host.clone(),
                r.role.clone(),
                r.state.clone(),
                r.timeline.map(|t| t.to_string()).unwrap_or_default(),
                lag_text(r),
            ];
            if show_tags {
                cells.push(if r.tags.is_empty() {
                    String::new()
                } else {
                    Value::Object(r.tags.clone()).to_string()
                });
            }
            cells
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            table
                .iter()
                .map(|row| row[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let border = |title: Option<&str>| {
        let mut line: String = widths
            .iter()
            .map(|w| format!("+{}", "-".repeat(w + 2)))
            .collect::<String>()
            + "+";
        if let Some(t) = title {
            let t = format!("+ {t} ");
            if t.len() < line.len() {
                line.replace_range(..t.len(), &t);
            } else {
                line = t;
            }
        }
        line
    };
    let numeric = |i: usize| header[i] == "TL" || header[i] == "Lag in MB";
    let line = |cells: &[String]| {
        let mut s = String::from("|");
        for (i, c) in cells.iter().enumerate() {
            if numeric(i) {
                s.push_str(&format!(" {c:>w$} |", w = widths[i]));
            } else {
                s.push_str(&format!(" {c:<w$} |", w = widths[i]));
            }
        }
        s
    };
    let sysid = c
        .initialize
        .as_ref()
        .map(|v| v.value.as_str())
        .filter(|s| !s.is_empty())
        .unwrap_or("uninitialized");
    let mut out = vec![
        border(Some(&format!("Cluster: {scope} ({sysid})"))),
        line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>()),
        border(None),
    ];
    for row in &table {
        out.push(line(row));
    }
    out.push(border(None));
    if c.dynamic_config().pause() {
        out.push(" Maintenance mode: on".into());
    }
    if c.leader.is_none() {
        out.push(" No leader: the cluster is unlocked".into());
    }
    for p in &c.problems {
        out.push(format!(" ! {p}"));
    }
    out.join("\n") + "\n"
}

/// `-f json`: one object per member, patronictl's keys.
pub fn json(scope: &str, c: &Cluster) -> Value {
    Value::Array(
        rows(c)
            .into_iter()
            .map(|r| {
                let mut o = Map::new();
                o.insert("Cluster".into(), json!(scope));
                o.insert("Member".into(), json!(r.member));
                o.insert("Host".into(), json!(r.host));
                o.insert("Role".into(), json!(r.role));
                o.insert("State".into(), json!(r.state));
                if let Some(t) = r.timeline {
                    o.insert("TL".into(), json!(t));
                }
                match r.lag_mb {
                    Some(Some(l)) => {
                        o.insert("Lag in MB".into(), json!(l));
                    }
                    Some(None) => {
                        o.insert("Lag in MB".into(), json!("unknown"));
                    }
                    None => {}
                }
                if !r.tags.is_empty() {
                    o.insert("Tags".into(), Value::Object(r.tags));
                }
                Value::Object(o)
            })
            .collect(),
    )
}

/// `-f tsv`: a header line, then one tab-separated line per member.
pub fn tsv(scope: &str, c: &Cluster) -> String {
    let mut out = String::from("Cluster\tMember\tHost\tRole\tState\tTL\tLag in MB\n");
    for r in rows(c) {
        out.push_str(&format!(
            "{scope}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            r.member,
            r.host,
            r.role,
            r.state,
            r.timeline.map(|t| t.to_string()).unwrap_or_default(),
            lag_text(&r)
        ));
    }
    out
}

/// `-f yaml`: the JSON rows as a YAML list.
pub fn yaml(scope: &str, c: &Cluster) -> String {
    let mut out = String::new();
    for row in json(scope, c).as_array().into_iter().flatten() {
        let mut first = true;
        for (k, v) in row.as_object().into_iter().flatten() {
            let prefix = if first { "- " } else { "  " };
            first = false;
            let value = match v {
                Value::String(s) => serde_json::to_string(s).unwrap_or_default(),
                other => other.to_string(),
            };
            let key = if k.contains(' ') {
                format!("'{k}'")
            } else {
                k.clone()
            };
            out.push_str(&format!("{prefix}{key}: {value}\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgha_core::model::{ClusterKey, RawEntry, Version};

    fn cluster() -> Cluster {
        let e = |k: &str, v: &str| RawEntry {
            key: ClusterKey::parse(k).unwrap(),
            value: v.as_bytes().to_vec(),
            version: Version::number(1),
            owner: None,
        };
        Cluster::from_entries(
            [
                e("initialize", "7312345678901234567"),
                e("leader", "node1"),
                e("status", r#"{"optime": 52428800}"#),
                e(
                    "members/node1",
                    r#"{"conn_url":"postgres://127.0.0.1:5432/postgres","state":"running","role":"primary","timeline":2,"xlog_location":52428800}"#,
                ),
                e(
                    "members/node2",
                    r#"{"conn_url":"postgres://127.0.0.1:5433/postgres","state":"running","role":"replica","replication_state":"streaming","timeline":2,"xlog_location":41943040}"#,
                ),
                e(
                    "members/node3",
                    r#"{"conn_url":"postgres://127.0.0.1:5434/postgres","state":"stopped","role":"replica"}"#,
                ),
                e("members/bad", "{oops"),
            ],
            Version::number(1),
        )
    }

    #[test]
    fn the_table_shows_roles_states_timelines_and_lag() {
        let text = pretty("demo", &cluster());
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("+ Cluster: demo (7312345678901234567) "),
            "{text}"
        );
        assert!(lines[1].contains("| Member | Host "), "{text}");
        assert!(
            text.contains("| node1  | 127.0.0.1:5432 | Leader  | running   |  2 |           |"),
            "{text}"
        );
        assert!(
            text.contains("| node2  | 127.0.0.1:5433 | Replica | streaming |  2 |        10 |"),
            "{text}"
        );
        assert!(
            text.contains("| node3  | 127.0.0.1:5434 | Replica | stopped   |    |   unknown |"),
            "{text}"
        );
        assert!(text.contains(" ! members/bad: invalid JSON"), "{text}");
    }

    #[test]
    fn machine_formats() {
        let j = json("demo", &cluster());
        assert_eq!(j[0]["Member"], "node1");
        assert_eq!(j[0]["Role"], "Leader");
        assert!(j[0].get("Lag in MB").is_none());
        assert_eq!(j[1]["Lag in MB"], 10);
        assert!(
            tsv("demo", &cluster())
                .contains("demo\tnode2\t127.0.0.1:5433\tReplica\tstreaming\t2\t10\n")
        );
        assert!(yaml("demo", &cluster()).contains("- Cluster: \"demo\"\n  Member: \"node1\"\n"));
    }
}
