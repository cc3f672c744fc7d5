//! Tabular output in patronictl's formats: `pretty` (boxed table), `tsv`,
//! `json` and `yaml`, with the same keys, value types and quirks (empty
//! values left out of a member's JSON object, tags as YAML in a cell), so
//! whatever parses patronictl's output parses pghactl's.

use serde_json::{Map, Value};

use super::table::Table;
use super::yaml;

/// An output format (`-f`/`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Pretty,
    Tsv,
    Json,
    Yaml,
    Yml,
    /// `pretty` with replicas indented under their upstream (`topology`).
    #[value(skip)]
    Topology,
}

impl Format {
    /// Whether this is one of the boxed-table formats.
    pub fn is_table(self) -> bool {
        matches!(self, Format::Pretty | Format::Topology)
    }
}

/// Rows to print: column names and one value per column per row.
#[derive(Debug, Clone, Default)]
pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
    /// Columns to right-align in a table.
    pub right: Vec<&'static str>,
    /// Written into the top border of a table; a member list when the first
    /// column is `Cluster`.
    pub title: String,
    /// The column separator for `tsv`.
    pub delimiter: String,
}

impl Rows {
    pub fn new(columns: &[&str]) -> Self {
        Rows {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            delimiter: "\t".into(),
            ..Default::default()
        }
    }

    /// The text patronictl's `print_output` writes for these rows.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Json | Format::Yaml | Format::Yml => {
                let elements = Value::Array(self.objects());
                if format == Format::Json {
                    python_json(&elements) + "\n"
                } else {
                    yaml::dump(&elements) + "\n"
                }
            }
            Format::Pretty | Format::Tsv | Format::Topology => self.text(format),
        }
    }

    /// One JSON object per row. A member list (a title is set) leaves out
    /// empty values, as patronictl does.
    fn objects(&self) -> Vec<Value> {
        self.rows
            .iter()
            .map(|row| {
                let mut o = Map::new();
                for (c, v) in self.columns.iter().zip(row) {
                    if self.title.is_empty() || !python_str(v).is_empty() {
                        o.insert(c.clone(), v.clone());
                    }
                }
                Value::Object(o)
            })
            .collect()
    }

    fn text(&self, format: Format) -> String {
        let list_cluster =
            !self.title.is_empty() && self.columns.first().is_some_and(|c| c == "Cluster");
        let tags = self.columns.iter().position(|c| c == "Tags");
        let cell = |i: usize, v: &Value| match (list_cluster && Some(i) == tags, v) {
            (true, Value::Object(m)) if !m.is_empty() => {
                if format == Format::Pretty {
                    yaml::dump(v).trim().to_string()
                } else {
                    yaml::dump_flow(v)
                }
            }
            _ => python_str(v),
        };
        // The cluster's name is in the title; a table leaves its column out.
        let skip = usize::from(list_cluster && format != Format::Tsv);
        let columns: Vec<String> = self.columns[skip.min(self.columns.len())..].to_vec();
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| {
                r.iter()
                    .enumerate()
                    .skip(skip)
                    .map(|(i, v)| cell(i, v))
                    .collect()
            })
            .collect();
        if format == Format::Tsv {
            let mut out = String::new();
            for r in std::iter::once(&columns).chain(&rows) {
                out.push_str(&r.join(&self.delimiter));
                out.push('\n');
            }
            return out;
        }
        let mut table = Table::new(self.title.clone(), columns);
        for name in &self.right {
            table.align_right(name);
        }
        table.rows = rows;
        table.render()
    }
}

/// Python's `str()` of a JSON value, as patronictl prints cells:
/// `None`, `True`, `1.5`, strings as they are.
pub fn python_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => python_repr(other),
    }
}

/// Python's `repr()` of a JSON value.
fn python_repr(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) if n.is_f64() => n.as_f64().map_or_else(
            || n.to_string(),
            |f| yaml::python_float(f).replace(".0e", "e"),
        ),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(python_repr).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!(
                    "{}: {}",
                    python_repr(&Value::String(k.clone())),
                    python_repr(v)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `json.dumps(value)` as Python writes it: `", "` and `": "` separators,
/// non-ASCII escaped. patronictl's JSON output and REST request bodies look
/// like this.
pub fn python_json(v: &Value) -> String {
    let mut out = String::new();
    write_python_json(&mut out, v);
    out
}

fn write_python_json(out: &mut String, v: &Value) {
    match v {
        Value::Array(a) => {
            out.push('[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_python_json(out, item);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            for (i, (k, item)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_json_string(out, k);
                out.push_str(": ");
                write_python_json(out, item);
            }
            out.push('}');
        }
        Value::String(s) => write_json_string(out, s),
        other => out.push_str(&other.to_string()),
    }
}

fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            c if (' '..='~').contains(&c) => out.push(c),
            c => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

/// The local time as patronictl prints it: `precision` digits of the
/// seconds' fraction shown minus one (its `timestamp()` helper cuts one
/// more character than it means to), none for 0.
pub fn timestamp(precision: usize) -> String {
    let full = jiff::Zoned::now()
        .strftime("%Y-%m-%d %H:%M:%S.%6f")
        .to_string();
    let keep = full.len().saturating_sub(7 - precision.min(6));
    full[..keep].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn members() -> Rows {
        let mut r = Rows::new(&["Cluster", "Member", "TL", "Lag", "Tags"]);
        r.title = " Cluster: demo (1) ".into();
        r.right = vec!["TL", "Lag"];
        r.rows.push(vec![
            json!("demo"),
            json!("node1"),
            json!(1),
            json!(""),
            json!(""),
        ]);
        r.rows.push(vec![
            json!("demo"),
            json!("node2"),
            json!(1),
            json!(0),
            json!({"nofailover": true, "dc": "eu"}),
        ]);
        r
    }

    #[test]
    fn member_rows_in_every_format() {
        let r = members();
        assert_eq!(
            r.render(Format::Json),
            "[{\"Cluster\": \"demo\", \"Member\": \"node1\", \"TL\": 1}, \
             {\"Cluster\": \"demo\", \"Member\": \"node2\", \"TL\": 1, \"Lag\": 0, \"Tags\": {\"nofailover\": true, \"dc\": \"eu\"}}]\n"
        );
        assert_eq!(
            r.render(Format::Tsv),
            "Cluster\tMember\tTL\tLag\tTags\ndemo\tnode1\t1\t\t\ndemo\tnode2\t1\t0\t{dc: eu, nofailover: true}\n"
        );
        assert_eq!(
            r.render(Format::Yaml),
            "- Cluster: demo\n  Member: node1\n  TL: 1\n- Cluster: demo\n  Lag: 0\n  Member: node2\n  TL: 1\n  Tags:\n    dc: eu\n    nofailover: true\n\n"
        );
        assert_eq!(
            r.render(Format::Pretty),
            "+ Cluster: demo (1) +------------------+\n\
             | Member | TL | Lag | Tags             |\n\
             +--------+----+-----+------------------+\n\
             | node1  |  1 |     |                  |\n\
             +--------+----+-----+------------------+\n\
             | node2  |  1 |   0 | dc: eu           |\n\
             |        |    |     | nofailover: true |\n\
             +--------+----+-----+------------------+\n"
        );
    }

    #[test]
    fn python_spellings() {
        assert_eq!(python_str(&Value::Null), "None");
        assert_eq!(python_str(&json!(true)), "True");
        assert_eq!(python_str(&json!(1.5)), "1.5");
        assert_eq!(python_str(&json!(1e20)), "1e+20");
        assert_eq!(
            python_json(&json!({"a": "é\"", "b": [1, null]})),
            "{\"a\": \"\\u00e9\\\"\", \"b\": [1, null]}"
        );
        let ts = timestamp(6);
        assert_eq!(ts.len(), "2026-11-21 20:15:30.18678".len(), "{ts}");
        assert_eq!(timestamp(0).len(), "2026-11-21 20:15:30".len());
    }
}
