//! A unified diff of two texts, laid out as Python's
//! `difflib.unified_diff` (what `patronictl edit-config` shows before it
//! asks): `--- ` / `+++ ` headers without names, hunks with 3 lines of context.

/// Lines of context around each change.
const CONTEXT: usize = 3;

/// Above this many line pairs the diff gives up on finding common lines and
/// shows the whole text replaced (configurations are far smaller).
const MAX_CELLS: usize = 4_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Equal,
    Replace,
    Delete,
    Insert,
}

/// `(tag, a_start, a_end, b_start, b_end)`, as difflib's opcodes.
type Op = (Tag, usize, usize, usize, usize);

/// The diff lines (without line endings); empty when the texts are equal.
pub fn unified(before: &str, after: &str) -> Vec<String> {
    let a = lines(before);
    let b = lines(after);
    let mut out = Vec::new();
    for group in grouped(&opcodes(&a, &b)) {
        if out.is_empty() {
            out.push("--- ".to_string());
            out.push("+++ ".to_string());
        }
        let (first, last) = (group[0], group[group.len() - 1]);
        out.push(format!(
            "@@ -{} +{} @@",
            range(first.1, last.2),
            range(first.3, last.4)
        ));
        for (tag, i1, i2, j1, j2) in group {
            if tag == Tag::Equal {
                out.extend(a[i1..i2].iter().map(|l| format!(" {l}")));
                continue;
            }
            if matches!(tag, Tag::Replace | Tag::Delete) {
                out.extend(a[i1..i2].iter().map(|l| format!("-{l}")));
            }
            if matches!(tag, Tag::Replace | Tag::Insert) {
                out.extend(b[j1..j2].iter().map(|l| format!("+{l}")));
            }
        }
    }
    out
}

/// difflib's `listify`: the text's lines, a trailing newline ignored.
fn lines(text: &str) -> Vec<&str> {
    text.trim_end_matches('\n').split('\n').collect()
}

/// `start,length` of a hunk, 1-based, as `_format_range_unified` writes it.
fn range(start: usize, stop: usize) -> String {
    let length = stop - start;
    match length {
        1 => format!("{}", start + 1),
        0 => format!("{start},0"),
        _ => format!("{},{length}", start + 1),
    }
}

/// Opcodes from a longest common subsequence of lines.
fn opcodes(a: &[&str], b: &[&str]) -> Vec<Op> {
    let (n, m) = (a.len(), b.len());
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    if n.saturating_mul(m) <= MAX_CELLS {
        // lcs[i][j]: length of the LCS of a[i..] and b[j..].
        let mut lcs = vec![vec![0u32; m + 1]; n + 1];
        for i in (0..n).rev() {
            for j in (0..m).rev() {
                lcs[i][j] = if a[i] == b[j] {
                    lcs[i + 1][j + 1] + 1
                } else {
                    lcs[i + 1][j].max(lcs[i][j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < n && j < m {
            if a[i] == b[j] {
                pairs.push((i, j));
                i += 1;
                j += 1;
            } else if lcs[i + 1][j] >= lcs[i][j + 1] {
                i += 1;
            } else {
                j += 1;
            }
        }
    }
    pairs.push((n, m));
    let mut ops = Vec::new();
    let (mut i, mut j) = (0, 0);
    let mut run: Option<(usize, usize)> = None;
    for (pi, pj) in pairs {
        if pi > i || pj > j {
            if let Some((s1, s2)) = run.take() {
                ops.push((Tag::Equal, s1, i, s2, j));
            }
            let tag = match (pi > i, pj > j) {
                (true, true) => Tag::Replace,
                (true, false) => Tag::Delete,
                _ => Tag::Insert,
            };
            ops.push((tag, i, pi, j, pj));
        }
        if pi < n {
            run.get_or_insert((pi, pj));
        }
        i = pi + 1;
        j = pj + 1;
    }
    if let Some((s1, s2)) = run {
        ops.push((Tag::Equal, s1, n, s2, m));
    }
    ops
}

/// difflib's `get_grouped_opcodes(3)`: changes with their context, far
/// apart changes in separate hunks.
fn grouped(codes: &[Op]) -> Vec<Vec<Op>> {
    let mut codes = codes.to_vec();
    if codes.is_empty() {
        codes.push((Tag::Equal, 0, 1, 0, 1));
    }
    if let Some(first) = codes.first_mut().filter(|f| f.0 == Tag::Equal) {
        first.1 = first.1.max(first.2.saturating_sub(CONTEXT));
        first.3 = first.3.max(first.4.saturating_sub(CONTEXT));
    }
    if let Some(last) = codes.last_mut().filter(|l| l.0 == Tag::Equal) {
        last.2 = last.2.min(last.1 + CONTEXT);
        last.4 = last.4.min(last.3 + CONTEXT);
    }
    let mut groups = Vec::new();
    let mut group: Vec<Op> = Vec::new();
    for (tag, mut i1, i2, mut j1, j2) in codes {
        if tag == Tag::Equal && i2 - i1 > 2 * CONTEXT {
            group.push((tag, i1, i2.min(i1 + CONTEXT), j1, j2.min(j1 + CONTEXT)));
            groups.push(std::mem::take(&mut group));
            i1 = i1.max(i2.saturating_sub(CONTEXT));
            j1 = j1.max(j2.saturating_sub(CONTEXT));
        }
        group.push((tag, i1, i2, j1, j2));
    }
    let only_context = group.len() == 1 && group[0].0 == Tag::Equal;
    if !group.is_empty() && !only_context {
        groups.push(group);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hunks_match_difflib() {
        let before = "loop_wait: 2\nmaximum_lag_on_failover: 1048576\npostgresql:\n  parameters:\n    max_connections: 50\n    wal_keep_size: 64MB\n  use_pg_rewind: true\n  use_slots: true\nretry_timeout: 5\nttl: 20\n";
        let after = before
            .replace(
                "wal_keep_size: 64MB\n",
                "wal_keep_size: 64MB\n    work_mem: 8MB\n",
            )
            .replace("ttl: 20", "ttl: 21");
        assert_eq!(
            unified(before, &after).join("\n"),
            "--- \n+++ \n@@ -4,7 +4,8 @@\n   parameters:\n     max_connections: 50\n     wal_keep_size: 64MB\n+    work_mem: 8MB\n   use_pg_rewind: true\n   use_slots: true\n retry_timeout: 5\n-ttl: 20\n+ttl: 21"
        );
        let after = before.replace("loop_wait: 2", "loop_wait: 3");
        assert_eq!(
            unified(before, &after).join("\n"),
            "--- \n+++ \n@@ -1,4 +1,4 @@\n-loop_wait: 2\n+loop_wait: 3\n maximum_lag_on_failover: 1048576\n postgresql:\n   parameters:"
        );
        assert!(unified(before, before).is_empty());
    }

    #[test]
    fn far_apart_changes_make_two_hunks() {
        let before: String = (1..=20).map(|i| format!("l{i}\n")).collect();
        let after = before.replace("l2\n", "x\n").replace("l19\n", "");
        let d = unified(&before, &after);
        let hunks: Vec<&String> = d.iter().filter(|l| l.starts_with("@@")).collect();
        assert_eq!(hunks, ["@@ -1,5 +1,5 @@", "@@ -16,5 +16,4 @@"]);
        assert_eq!(
            unified("", "a\n"),
            ["--- ", "+++ ", "@@ -1 +1 @@", "-", "+a"]
        );
    }
}
