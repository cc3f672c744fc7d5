//! The boxed tables patronictl prints (Python's PrettyTable, as patronictl
//! configures it), character for character: people and scripts compare
//! pghactl's tables with patronictl's.

/// How a column's header and cells are justified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table: column headers, rows of (possibly multi-line) cells, and an
/// optional title written into the top border (`+ Cluster: demo (...) ---+`).
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub title: String,
    pub columns: Vec<String>,
    pub align: Vec<Align>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with every column left-aligned.
    pub fn new(title: impl Into<String>, columns: Vec<String>) -> Self {
        let align = vec![Align::Left; columns.len()];
        Table {
            title: title.into(),
            columns,
            align,
            rows: Vec::new(),
        }
    }

    /// Right-aligns the columns named `name` (numbers read better that way).
    pub fn align_right(&mut self, name: &str) {
        for (i, c) in self.columns.iter().enumerate() {
            if c == name {
                self.align[i] = Align::Right;
            }
        }
    }

    fn widths(&self) -> Vec<usize> {
        (0..self.columns.len())
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(i))
                    .flat_map(|cell| cell.lines())
                    .map(|l| l.chars().count())
                    .chain([self.columns[i].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect()
    }

    /// The table as text, ending with a newline.
    pub fn render(&self) -> String {
        let widths = self.widths();
        let rule: String = widths
            .iter()
            .map(|w| format!("+{}", "-".repeat(w + 2)))
            .collect::<String>()
            + "+";
        let line = |cells: &[&str]| {
            let mut s = String::from("|");
            for (i, w) in widths.iter().enumerate() {
                let cell = cells.get(i).copied().unwrap_or("");
                let pad = w.saturating_sub(cell.chars().count());
                match self.align[i] {
                    Align::Left => s.push_str(&format!(" {cell}{} |", " ".repeat(pad))),
                    Align::Right => s.push_str(&format!(" {}{cell} |", " ".repeat(pad))),
                }
            }
            s
        };
        // Multi-line cells get a rule between every row, as patronictl does.
        let multiline = self.rows.iter().flatten().any(|c| c.contains('\n'));
        let mut out = vec![with_title(&rule, &self.title)];
        out.push(line(
            &self.columns.iter().map(String::as_str).collect::<Vec<_>>(),
        ));
        out.push(rule.clone());
        for (n, row) in self.rows.iter().enumerate() {
            let split: Vec<Vec<&str>> = row.iter().map(|c| c.split('\n').collect()).collect();
            let height = split.iter().map(Vec::len).max().unwrap_or(1);
            for k in 0..height {
                let cells: Vec<&str> = split
                    .iter()
                    .map(|lines| lines.get(k).copied().unwrap_or(""))
                    .collect();
                out.push(line(&cells));
            }
            if multiline && n + 1 < self.rows.len() {
                out.push(rule.clone());
            }
        }
        out.push(rule);
        out.join("\n") + "\n"
    }
}

/// Writes `title` over the start of the top border, keeping its first and
/// last characters (truncating a title longer than the border).
fn with_title(rule: &str, title: &str) -> String {
    if title.is_empty() {
        return rule.to_string();
    }
    let chars: Vec<char> = rule.chars().collect();
    let room = chars.len().saturating_sub(2);
    let title: String = title.chars().take(room).collect();
    let taken = title.chars().count();
    let mut out = String::new();
    out.push(chars[0]);
    out.push_str(&title);
    out.extend(&chars[1 + taken..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_table_matches_patronictl() {
        let mut t = Table::new(
            " Cluster: demo (7710720802782309446) ",
            [
                "Member",
                "Host",
                "Role",
                "State",
                "TL",
                "Receive LSN",
                "Lag",
            ]
            .map(String::from)
            .to_vec(),
        );
        for c in ["TL", "Receive LSN", "Lag"] {
            t.align_right(c);
        }
        t.rows.push(
            ["node1", "127.0.0.1:25431", "Leader", "running", "1", "", ""]
                .map(String::from)
                .to_vec(),
        );
        t.rows.push(
            [
                "node2",
                "127.0.0.1:25432",
                "Replica",
                "streaming",
                "1",
                "0/4000000",
                "0",
            ]
            .map(String::from)
            .to_vec(),
        );
        assert_eq!(
            t.render(),
            "+ Cluster: demo (7710720802782309446) -----------+----+-------------+-----+\n\
             | Member | Host            | Role    | State     | TL | Receive LSN | Lag |\n\
             +--------+-----------------+---------+-----------+----+-------------+-----+\n\
             | node1  | 127.0.0.1:25431 | Leader  | running   |  1 |             |     |\n\
             | node2  | 127.0.0.1:25432 | Replica | streaming |  1 |   0/4000000 |   0 |\n\
             +--------+-----------------+---------+-----------+----+-------------+-----+\n"
        );
    }

    #[test]
    fn empty_tables_multiline_cells_and_long_titles() {
        let t = Table::new("", ["TL", "LSN"].map(String::from).to_vec());
        assert_eq!(
            t.render(),
            "+----+-----+\n| TL | LSN |\n+----+-----+\n+----+-----+\n"
        );
        let mut t = Table::new(
            " Cluster: a-very-long-name (uninitialized) ",
            ["A", "Tags"].map(String::from).to_vec(),
        );
        t.rows
            .push(vec!["x".into(), "dc: eu\nnofailover: true".into()]);
        t.rows.push(vec!["y".into(), String::new()]);
        assert_eq!(
            t.render(),
            "+ Cluster: a-very-long-+\n\
             | A | Tags             |\n\
             +---+------------------+\n\
             | x | dc: eu           |\n\
             |   | nofailover: true |\n\
             +---+------------------+\n\
             | y |                  |\n\
             +---+------------------+\n"
        );
    }
}
