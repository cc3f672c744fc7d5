//! YAML the way patronictl writes and reads it.
//!
//! patronictl prints configurations and tables with PyYAML's `safe_dump`
//! (sorted keys, sequences not indented under their key, YAML 1.1 quoting)
//! and reads `edit-config -s key=value` values with `safe_load`, where
//! `on`, `yes` and `off` are booleans. People diff and grep that output and
//! type those values, so pghactl produces and reads the same text rather
//! than another (equally valid) YAML spelling.

use serde_json::{Map, Number, Value};

/// What a plain (unquoted) scalar means to a YAML 1.1 reader such as PyYAML.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Implicit {
    Null,
    Bool(bool),
    Int,
    Float,
    /// A date or time (PyYAML makes it a `datetime`).
    Timestamp,
    /// `<<` and `=`: special keys in YAML 1.1.
    Special,
    Str,
}

/// Block-style YAML of `value`, as `yaml.safe_dump(value, default_flow_style=False)`.
pub fn dump(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(m) if !m.is_empty() => block_mapping(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => block_sequence(&mut out, a, 0),
        other => {
            out.push_str(&block_scalar(other));
            out.push('\n');
            if !matches!(other, Value::Object(_) | Value::Array(_)) {
                // PyYAML ends a document that is a lone scalar explicitly.
                out.push_str("...\n");
            }
        }
    }
    out
}

/// Flow-style YAML of `value` on one line, as `yaml.safe_dump(value,
/// default_flow_style=True).strip()` (patronictl's tags in `tsv` and
/// `topology` output).
pub fn dump_flow(value: &Value) -> String {
    flow(value)
}

fn indent(out: &mut String, level: usize) {
    out.extend(std::iter::repeat_n(' ', level));
}

/// Keys sorted as Python sorts strings (by code point).
fn sorted(m: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<(&String, &Value)> = m.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

fn block_mapping(out: &mut String, m: &Map<String, Value>, level: usize) {
    for (i, (key, value)) in sorted(m).into_iter().enumerate() {
        if i > 0 {
            indent(out, level);
        }
        out.push_str(&scalar_text(key, true, false));
        out.push(':');
        block_value(out, value, level, true);
    }
}

fn block_sequence(out: &mut String, items: &[Value], level: usize) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            indent(out, level);
        }
        out.push('-');
        block_value(out, item, level, false);
    }
}

/// Writes what follows `key:` or `-`, ending with a newline. `in_mapping`
/// tells whether the owner is a mapping key: a sequence under a key is not
/// indented (PyYAML's style), one under a `-` is.
fn block_value(out: &mut String, value: &Value, level: usize, in_mapping: bool) {
    match value {
        Value::Object(m) if !m.is_empty() => {
            if in_mapping {
                out.push('\n');
                indent(out, level + 2);
            } else {
                out.push(' ');
            }
            block_mapping(out, m, level + 2);
        }
        Value::Array(a) if !a.is_empty() => {
            if in_mapping {
                out.push('\n');
                indent(out, level);
                block_sequence(out, a, level);
            } else {
                out.push(' ');
                block_sequence(out, a, level + 2);
            }
        }
        other => {
            out.push(' ');
            out.push_str(&block_scalar(other));
            out.push('\n');
        }
    }
}

/// A scalar (or empty collection) written in block context, where `a:b`
/// and `a,b` stay plain.
fn block_scalar(value: &Value) -> String {
    match value {
        Value::String(s) => scalar_text(s, false, false),
        other => flow(other),
    }
}

fn flow(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number_text(n),
        Value::String(s) => scalar_text(s, false, true),
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(flow).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(m) => {
            let items: Vec<String> = sorted(m)
                .into_iter()
                .map(|(k, v)| format!("{}: {}", scalar_text(k, true, true), flow(v)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
    }
}

/// A number as PyYAML writes it (floats as Python's `repr`, `1e+20` as `1.0e+20`).
fn number_text(n: &Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    match n.as_f64() {
        Some(f) => python_float(f),
        None => n.to_string(),
    }
}

/// Python's `repr(float)`, adjusted like PyYAML's float representer.
pub fn python_float(f: f64) -> String {
    if f.is_nan() {
        return ".nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            ".inf".into()
        } else {
            "-.inf".into()
        };
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-4..1e16).contains(&abs) {
        // Python switches to exponent notation outside [1e-4, 1e16).
        let text = format!("{f:e}");
        let (mantissa, exp) = text.split_once('e').unwrap_or((&text, "0"));
        let mantissa = if mantissa.contains('.') {
            mantissa.to_string()
        } else {
            format!("{mantissa}.0")
        };
        let exp: i32 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.unsigned_abs());
    }
    let text = format!("{f}");
    if text.contains('.') {
        text
    } else {
        format!("{text}.0")
    }
}

/// A string scalar: plain when a YAML 1.1 reader would read it back as the
/// same string, else single-quoted, else double-quoted with escapes.
fn scalar_text(s: &str, simple_key: bool, in_flow: bool) -> String {
    let a = analyze(s);
    let plain_ok = if in_flow {
        a.allow_flow_plain
    } else {
        a.allow_block_plain
    };
    if implicit(s) == Implicit::Str && plain_ok && !(simple_key && (a.empty || a.multiline)) {
        return s.to_string();
    }
    if a.allow_single_quoted && !a.multiline {
        return format!("'{}'", s.replace('\'', "''"));
    }
    double_quoted(s)
}

fn double_quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '\0' => out.push_str("\\0"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\x0b' => out.push_str("\\v"),
            '\x0c' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            '\x1b' => out.push_str("\\e"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{85}' => out.push_str("\\N"),
            '\u{a0}' => out.push_str("\\_"),
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            c if printable(c) => out.push(c),
            c if (c as u32) <= 0xff => out.push_str(&format!("\\x{:02X}", c as u32)),
            c if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push_str(&format!("\\U{:08X}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// Characters PyYAML writes as they are (with `allow_unicode=True`).
fn printable(c: char) -> bool {
    matches!(c, '\n' | '\x20'..='\x7e' | '\u{85}' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
        && c != '\u{feff}'
}

/// Which styles can carry a string, after PyYAML's `Emitter.analyze_scalar`.
#[derive(Debug, Clone, Copy)]
struct Analysis {
    empty: bool,
    multiline: bool,
    allow_flow_plain: bool,
    allow_block_plain: bool,
    allow_single_quoted: bool,
}

fn is_space_or_break(c: Option<char>) -> bool {
    matches!(
        c,
        None | Some('\0' | ' ' | '\t' | '\r' | '\n' | '\u{85}' | '\u{2028}' | '\u{2029}')
    )
}

fn analyze(s: &str) -> Analysis {
    if s.is_empty() {
        return Analysis {
            empty: true,
            multiline: false,
            allow_flow_plain: false,
            allow_block_plain: true,
            allow_single_quoted: true,
        };
    }
    let chars: Vec<char> = s.chars().collect();
    let n = chars.len();
    let mut block_indicators = s.starts_with("---") || s.starts_with("...");
    let mut flow_indicators = block_indicators;
    let (mut line_breaks, mut special) = (false, false);
    let (mut leading_space, mut leading_break) = (false, false);
    let (mut trailing_space, mut trailing_break) = (false, false);
    let (mut break_space, mut space_break) = (false, false);
    let (mut previous_space, mut previous_break) = (false, false);
    let mut preceded_by_ws = true;
    for (i, &ch) in chars.iter().enumerate() {
        let followed_by_ws = is_space_or_break(chars.get(i + 1).copied());
        if i == 0 {
            if "#,[]{}&*!|>'\"%@`".contains(ch) {
                flow_indicators = true;
                block_indicators = true;
            }
            if ch == '?' || ch == ':' {
                flow_indicators = true;
                block_indicators |= followed_by_ws;
            }
            if ch == '-' && followed_by_ws {
                flow_indicators = true;
                block_indicators = true;
            }
        } else {
            if ",?[]{}".contains(ch) {
                flow_indicators = true;
            }
            if ch == ':' {
                flow_indicators = true;
                block_indicators |= followed_by_ws;
            }
            if ch == '#' && preceded_by_ws {
                flow_indicators = true;
                block_indicators = true;
            }
        }
        let is_break = matches!(ch, '\n' | '\u{85}' | '\u{2028}' | '\u{2029}');
        line_breaks |= is_break;
        special |= !printable(ch);
        if ch == ' ' {
            leading_space |= i == 0;
            trailing_space |= i == n - 1;
            break_space |= previous_break;
            previous_space = true;
            previous_break = false;
        } else if is_break {
            leading_break |= i == 0;
            trailing_break |= i == n - 1;
            space_break |= previous_space;
            previous_space = false;
            previous_break = true;
        } else {
            previous_space = false;
            previous_break = false;
        }
        preceded_by_ws = is_space_or_break(Some(ch));
    }
    let mut a = Analysis {
        empty: false,
        multiline: line_breaks,
        allow_flow_plain: true,
        allow_block_plain: true,
        allow_single_quoted: true,
    };
    if leading_space || leading_break || trailing_space || trailing_break {
        a.allow_flow_plain = false;
        a.allow_block_plain = false;
    }
    if break_space {
        a.allow_flow_plain = false;
        a.allow_block_plain = false;
        a.allow_single_quoted = false;
    }
    if space_break || special {
        a.allow_flow_plain = false;
        a.allow_block_plain = false;
        a.allow_single_quoted = false;
    }
    if line_breaks {
        a.allow_flow_plain = false;
        a.allow_block_plain = false;
    }
    if flow_indicators {
        a.allow_flow_plain = false;
    }
    if block_indicators {
        a.allow_block_plain = false;
    }
    a
}

/// How PyYAML's resolver reads a plain scalar.
fn implicit(s: &str) -> Implicit {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Implicit::Null,
        "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => {
            return Implicit::Bool(true);
        }
        "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => {
            return Implicit::Bool(false);
        }
        "<<" | "=" => return Implicit::Special,
        _ => {}
    }
    if is_int(s) {
        Implicit::Int
    } else if is_float(s) {
        Implicit::Float
    } else if is_timestamp(s) {
        Implicit::Timestamp
    } else {
        Implicit::Str
    }
}

fn strip_sign(s: &str) -> &str {
    s.strip_prefix(['-', '+']).unwrap_or(s)
}

fn all_in(s: &str, ok: impl Fn(char) -> bool) -> bool {
    !s.is_empty() && s.chars().all(ok)
}

/// `(?::[0-5]?[0-9])+` : the base-60 tail of `1:30:00`.
fn sexagesimal_tail(s: &str) -> bool {
    let Some(rest) = s.strip_prefix(':') else {
        return false;
    };
    rest.split(':').all(|part| {
        let b = part.as_bytes();
        match b.len() {
            1 => b[0].is_ascii_digit(),
            2 => (b'0'..=b'5').contains(&b[0]) && b[1].is_ascii_digit(),
            _ => false,
        }
    })
}

/// PyYAML's int pattern: binary, octal, decimal, hex, base 60.
fn is_int(s: &str) -> bool {
    let u = strip_sign(s);
    if let Some(bin) = u.strip_prefix("0b") {
        return all_in(bin, |c| c == '0' || c == '1' || c == '_');
    }
    if let Some(hex) = u.strip_prefix("0x") {
        return all_in(hex, |c| c.is_ascii_hexdigit() || c == '_');
    }
    if u == "0" {
        return true;
    }
    if let Some(oct) = u.strip_prefix('0') {
        return all_in(oct, |c| ('0'..='7').contains(&c) || c == '_');
    }
    let digits_end = u
        .find(|c: char| !(c.is_ascii_digit() || c == '_'))
        .unwrap_or(u.len());
    let (head, tail) = u.split_at(digits_end);
    if !head.starts_with(|c: char| ('1'..='9').contains(&c)) {
        return false;
    }
    tail.is_empty() || sexagesimal_tail(tail)
}

/// `[eE][-+][0-9]+`, optional.
fn exponent_ok(s: &str) -> bool {
    if s.is_empty() {
        return true;
    }
    let Some(rest) = s.strip_prefix(['e', 'E']) else {
        return false;
    };
    let Some(digits) = rest.strip_prefix(['-', '+']) else {
        return false;
    };
    all_in(digits, |c| c.is_ascii_digit())
}

/// PyYAML's float pattern (a dot is required; `1e5` is a string).
fn is_float(s: &str) -> bool {
    if matches!(s, ".nan" | ".NaN" | ".NAN") {
        return true;
    }
    let u = strip_sign(s);
    if matches!(u, ".inf" | ".Inf" | ".INF") {
        return true;
    }
    let frac_and_exp = |rest: &str| {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '_'))
            .unwrap_or(rest.len());
        exponent_ok(&rest[end..])
    };
    if let Some(rest) = s.strip_prefix('.') {
        return rest.starts_with(|c: char| c.is_ascii_digit()) && frac_and_exp(rest);
    }
    if !u.starts_with(|c: char| c.is_ascii_digit()) {
        return false;
    }
    let int_end = u
        .find(|c: char| !(c.is_ascii_digit() || c == '_'))
        .unwrap_or(u.len());
    let rest = &u[int_end..];
    if let Some(frac) = rest.strip_prefix('.') {
        return frac_and_exp(frac);
    }
    // Base 60 with a fraction: 1:30.5
    match rest.rfind('.') {
        Some(dot) if rest.starts_with(':') => {
            sexagesimal_tail(&rest[..dot])
                && all_in(&format!("0{}", &rest[dot + 1..]), |c| {
                    c.is_ascii_digit() || c == '_'
                })
        }
        _ => false,
    }
}

fn digits(s: &str, min: usize, max: usize) -> Option<&str> {
    let n = s.bytes().take(max).take_while(u8::is_ascii_digit).count();
    (n >= min).then(|| &s[n..])
}

/// PyYAML's timestamp pattern: `2024-01-01` or `2024-1-1T10:00:00.5+02:00`.
fn is_timestamp(s: &str) -> bool {
    let parse = |s: &str| -> Option<()> {
        let s = digits(s, 4, 4)?.strip_prefix('-')?;
        if s.len() == 5
            && digits(s, 2, 2)?
                .strip_prefix('-')
                .and_then(|r| digits(r, 2, 2))
                == Some("")
        {
            return Some(());
        }
        let s = digits(s, 1, 2)?.strip_prefix('-')?;
        let s = digits(s, 1, 2)?;
        let s = match s.strip_prefix(['T', 't']) {
            Some(r) => r,
            None => {
                let r = s.trim_start_matches([' ', '\t']);
                (r.len() < s.len()).then_some(r)?
            }
        };
        let s = digits(s, 1, 2)?.strip_prefix(':')?;
        let s = digits(s, 2, 2)?.strip_prefix(':')?;
        let mut s = digits(s, 2, 2)?;
        if let Some(r) = s.strip_prefix('.') {
            s = r.trim_start_matches(|c: char| c.is_ascii_digit());
        }
        let s = s.trim_start_matches([' ', '\t']);
        if s.is_empty() || s == "Z" {
            return Some(());
        }
        let s = digits(s.strip_prefix(['-', '+'])?, 1, 2)?;
        if s.is_empty() {
            return Some(());
        }
        digits(s.strip_prefix(':')?, 2, 2)?.is_empty().then_some(())
    };
    parse(s).is_some()
}

/// The value of a plain scalar as `yaml.safe_load` gives it. Dates and
/// non-finite floats, which have no JSON form, stay strings.
pub fn resolve_plain(s: &str) -> Value {
    match implicit(s) {
        Implicit::Null => Value::Null,
        Implicit::Bool(b) => Value::Bool(b),
        Implicit::Int => parse_int(s).map_or_else(|| Value::String(s.into()), Value::from),
        Implicit::Float => {
            let cleaned = s.replace('_', "");
            cleaned
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .and_then(Number::from_f64)
                .map_or_else(|| Value::String(s.into()), Value::Number)
        }
        Implicit::Timestamp | Implicit::Special | Implicit::Str => Value::String(s.into()),
    }
}

fn parse_int(s: &str) -> Option<i64> {
    let negative = s.starts_with('-');
    let u = strip_sign(s).replace('_', "");
    let magnitude = if let Some(b) = u.strip_prefix("0b") {
        i64::from_str_radix(b, 2).ok()?
    } else if let Some(h) = u.strip_prefix("0x") {
        i64::from_str_radix(h, 16).ok()?
    } else if u.contains(':') {
        u.split(':').try_fold(0i64, |acc, part| {
            acc.checked_mul(60)?.checked_add(part.parse().ok()?)
        })?
    } else if u.len() > 1 && u.starts_with('0') {
        i64::from_str_radix(&u[1..], 8).ok()?
    } else {
        u.parse().ok()?
    };
    Some(if negative { -magnitude } else { magnitude })
}

/// Why a YAML value (`key=VALUE`) or document does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum YamlError {
    #[error("unexpected {found:?} at column {column} of {text:?}")]
    Unexpected {
        found: char,
        column: usize,
        text: String,
    },
    /// A flow list or mapping item not followed by `,` or its closing bracket.
    #[error("expected ',' or '{close}' at column {column}")]
    NoSeparator { close: char, column: usize },
    #[error("unterminated {0}")]
    Unterminated(&'static str),
    #[error("bad escape \\{0}")]
    BadEscape(String),
    /// The YAML parser refused the document: its message.
    #[error("{0}")]
    Document(String),
}

/// The value of `key=VALUE` as `yaml.safe_load(VALUE)` reads it: plain
/// scalars by YAML 1.1 rules (`on` is true, `y` and `8MB` strings, empty is
/// null), quoted strings, and flow collections (`[a, b]`, `{k: v}`) whose
/// plain items follow the same rules. Anything else (block scalars, several
/// lines) goes to the YAML parser.
pub fn load_value(text: &str) -> Result<Value, YamlError> {
    let trimmed = text.trim();
    if trimmed.starts_with(['|', '>', '!', '&', '*']) || trimmed.contains('\n') {
        return load_document(text);
    }
    let mut p = Flow {
        chars: trimmed.chars().collect(),
        pos: 0,
    };
    let value = p.value(false)?;
    p.skip_spaces();
    match p.peek() {
        None => Ok(value),
        Some('#') if p.pos > 0 && p.chars[p.pos - 1] == ' ' => Ok(value),
        Some(c) => Err(YamlError::Unexpected {
            found: c,
            column: p.pos + 1,
            text: trimmed.to_string(),
        }),
    }
}

/// A parser for one YAML flow value (what fits on a command line).
struct Flow {
    chars: Vec<char>,
    pos: usize,
}

impl Flow {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += 1;
        }
    }

    fn value(&mut self, in_flow: bool) -> Result<Value, YamlError> {
        self.skip_spaces();
        match self.peek() {
            Some('[') => self.sequence(),
            Some('{') => self.mapping(),
            Some('\'') => self.single_quoted().map(Value::String),
            Some('"') => self.double_quoted().map(Value::String),
            _ => Ok(resolve_plain(&self.plain(in_flow))),
        }
    }

    /// A plain scalar: up to a comment, or (in a collection) to `,`, `]`,
    /// `}` or a `: ` separator.
    fn plain(&mut self, in_flow: bool) -> String {
        let start = self.pos;
        while let Some(c) = self.peek() {
            let next = self.chars.get(self.pos + 1).copied();
            let prev_space = self.pos > start && self.chars[self.pos - 1] == ' ';
            if (c == '#' && prev_space)
                || (in_flow && matches!(c, ',' | '[' | ']' | '{' | '}'))
                || (in_flow && c == ':' && matches!(next, None | Some(' ' | ',' | ']' | '}')))
            {
                break;
            }
            self.pos += 1;
        }
        self.chars[start..self.pos]
            .iter()
            .collect::<String>()
            .trim()
            .to_string()
    }

    fn sequence(&mut self) -> Result<Value, YamlError> {
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.skip_spaces();
            if self.peek() == Some(']') {
                self.pos += 1;
                return Ok(Value::Array(items));
            }
            items.push(self.value(true)?);
            self.skip_spaces();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(']') => {}
                _ => {
                    return Err(YamlError::NoSeparator {
                        close: ']',
                        column: self.pos + 1,
                    });
                }
            }
        }
    }

    fn mapping(&mut self) -> Result<Value, YamlError> {
        self.pos += 1;
        let mut map = Map::new();
        loop {
            self.skip_spaces();
            if self.peek() == Some('}') {
                self.pos += 1;
                return Ok(Value::Object(map));
            }
            let key = match self.value(true)? {
                Value::String(s) => s,
                Value::Null => "null".to_string(),
                other => other.to_string(),
            };
            self.skip_spaces();
            let value = if self.peek() == Some(':') {
                self.pos += 1;
                self.value(true)?
            } else {
                Value::Null
            };
            map.insert(key, value);
            self.skip_spaces();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some('}') => {}
                _ => {
                    return Err(YamlError::NoSeparator {
                        close: '}',
                        column: self.pos + 1,
                    });
                }
            }
        }
    }

    fn single_quoted(&mut self) -> Result<String, YamlError> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(YamlError::Unterminated("single-quoted string")),
                Some('\'') if self.chars.get(self.pos + 1) == Some(&'\'') => {
                    out.push('\'');
                    self.pos += 2;
                }
                Some('\'') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(c) => {
                    out.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    fn double_quoted(&mut self) -> Result<String, YamlError> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(YamlError::Unterminated("double-quoted string"));
            };
            self.pos += 1;
            match c {
                '"' => return Ok(out),
                '\\' => {
                    let e = self.peek().ok_or(YamlError::Unterminated("escape"))?;
                    self.pos += 1;
                    let hex = |p: &mut Self, n: usize| -> Result<char, YamlError> {
                        let digits: String = p.chars.iter().skip(p.pos).take(n).collect();
                        p.pos += n;
                        u32::from_str_radix(&digits, 16)
                            .ok()
                            .and_then(char::from_u32)
                            .ok_or_else(|| YamlError::BadEscape(format!("{e}{digits}")))
                    };
                    out.push(match e {
                        '0' => '\0',
                        'a' => '\x07',
                        'b' => '\x08',
                        't' | '\t' => '\t',
                        'n' => '\n',
                        'v' => '\x0b',
                        'f' => '\x0c',
                        'r' => '\r',
                        'e' => '\x1b',
                        ' ' => ' ',
                        '"' => '"',
                        '/' => '/',
                        '\\' => '\\',
                        'N' => '\u{85}',
                        '_' => '\u{a0}',
                        'L' => '\u{2028}',
                        'P' => '\u{2029}',
                        'x' => hex(self, 2)?,
                        'u' => hex(self, 4)?,
                        'U' => hex(self, 8)?,
                        other => return Err(YamlError::BadEscape(other.to_string())),
                    });
                }
                c => out.push(c),
            }
        }
    }
}

/// A whole YAML document (an `--apply` file, the edited configuration).
pub fn load_document(text: &str) -> Result<Value, YamlError> {
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_saphyr::from_str::<Value>(text).map_err(|e| YamlError::Document(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_dynamic_configuration_looks_as_patronictl_shows_it() {
        let config = json!({
            "ttl": 30, "loop_wait": 10,
            "postgresql": {"use_pg_rewind": true, "parameters": {"work_mem": "8MB", "max_connections": 100, "hot_standby": "on"},
                           "pg_hba": ["host all all 0.0.0.0/0 md5", "local all all trust"]},
            "slots": {}, "tags": [],
            "standby_cluster": null,
        });
        let want = "loop_wait: 10\n\
            postgresql:\n  parameters:\n    hot_standby: 'on'\n    max_connections: 100\n    work_mem: 8MB\n\
            \x20 pg_hba:\n  - host all all 0.0.0.0/0 md5\n  - local all all trust\n  use_pg_rewind: true\n\
            slots: {}\nstandby_cluster: null\ntags: []\nttl: 30\n";
        assert_eq!(dump(&config), want);
    }

    #[test]
    fn lists_of_rows_and_nested_sequences() {
        let rows = json!([{"Member": "node1", "TL": 1, "Tags": {"nofailover": true, "dc": "eu"}}, [1, [2, 3]]]);
        assert_eq!(
            dump(&rows),
            "- Member: node1\n  TL: 1\n  Tags:\n    dc: eu\n    nofailover: true\n- - 1\n  - - 2\n    - 3\n"
        );
        assert_eq!(dump(&json!("x")), "x\n...\n");
        assert_eq!(dump(&json!([])), "[]\n");
    }

    #[test]
    fn strings_are_quoted_exactly_when_pyyaml_quotes_them() {
        let cases = [
            ("8MB", "8MB"),
            ("on", "'on'"),
            ("100", "'100'"),
            ("1.5", "'1.5'"),
            ("1e5", "1e5"),
            ("", "''"),
            ("*", "'*'"),
            ("max_connections: 50->100", "'max_connections: 50->100'"),
            ("a:b", "'a:b'"),
            ("a,b", "'a,b'"),
            ("?x", "'?x'"),
            ("-x", "-x"),
            ("it's", "it's"),
            ("'x'", "'''x'''"),
            ("- x", "'- x'"),
            ("x #y", "'x #y'"),
            ("x#y", "x#y"),
            (" lead", "' lead'"),
            ("two\nlines", "\"two\\nlines\""),
            ("tab\there", "\"tab\\there\""),
            (
                "2026-11-21T20:15:29.980446+00:00",
                "'2026-11-21T20:15:29.980446+00:00'",
            ),
            ("2026-11-21", "'2026-11-21'"),
            ("0/4000060", "0/4000060"),
            ("0x1F", "'0x1F'"),
            ("1:30", "'1:30'"),
            ("null", "'null'"),
            ("~", "'~'"),
            ("=", "'='"),
            ("/var/run/postgresql", "/var/run/postgresql"),
            ("ünïcode", "ünïcode"),
        ];
        for (input, want) in cases {
            assert_eq!(flow(&json!(input)), want, "{input:?}");
        }
        assert_eq!(
            dump(&json!({"k": "a:b", "l": "a,b", "m": ":x"})),
            "k: a:b\nl: a,b\nm: :x\n"
        );
        assert_eq!(
            dump_flow(&json!({"nofailover": true, "dc": "eu", "x": "a,b"})),
            "{dc: eu, nofailover: true, x: 'a,b'}"
        );
    }

    #[test]
    fn floats_follow_python_repr() {
        assert_eq!(python_float(1.5), "1.5");
        assert_eq!(python_float(2.0), "2.0");
        assert_eq!(python_float(1e20), "1.0e+20");
        assert_eq!(python_float(1.5e-7), "1.5e-07");
        assert_eq!(python_float(0.0001), "0.0001");
    }

    #[test]
    fn values_are_read_as_yaml_1_1() {
        assert_eq!(load_value("on").unwrap(), json!(true));
        assert_eq!(load_value("Off").unwrap(), json!(false));
        assert_eq!(load_value("y").unwrap(), json!("y"));
        assert_eq!(load_value("30").unwrap(), json!(30));
        assert_eq!(load_value("-7").unwrap(), json!(-7));
        assert_eq!(load_value("010").unwrap(), json!(8));
        assert_eq!(load_value("0x10").unwrap(), json!(16));
        assert_eq!(load_value("1_000").unwrap(), json!(1000));
        assert_eq!(load_value("0.5").unwrap(), json!(0.5));
        assert_eq!(load_value("1e5").unwrap(), json!("1e5"));
        assert_eq!(load_value("8MB").unwrap(), json!("8MB"));
        assert_eq!(load_value("").unwrap(), Value::Null);
        assert_eq!(load_value("null").unwrap(), Value::Null);
        assert_eq!(load_value("'8MB'").unwrap(), json!("8MB"));
        assert_eq!(load_value("\"x y\"").unwrap(), json!("x y"));
        assert_eq!(load_value("[1, {a: b}]").unwrap(), json!([1, {"a": "b"}]));
        assert_eq!(load_value("'on'").unwrap(), json!("on"));
        assert_eq!(load_value("2026-01-01").unwrap(), json!("2026-01-01"));
        assert_eq!(
            load_value("[on, y, 8MB, '1', \"a\\tb\"]").unwrap(),
            json!([true, "y", "8MB", "1", "a\tb"])
        );
        assert_eq!(
            load_value("{a: 1, b: [x], c: , 'd': off}").unwrap(),
            json!({"a": 1, "b": ["x"], "c": null, "d": false})
        );
        assert_eq!(
            load_value("{host: 'h:1', u: a:b}").unwrap(),
            json!({"host": "h:1", "u": "a:b"})
        );
        assert_eq!(load_value("x # comment").unwrap(), json!("x"));
        assert_eq!(load_value("+5").unwrap(), json!(5));
        assert_eq!(load_value("1:30").unwrap(), json!(90));
        assert_eq!(load_value("1.5e+3").unwrap(), json!(1500.0));
        assert!(load_value("[1, 2").is_err());
    }

    #[test]
    fn documents_round_trip_through_dump() {
        let doc = json!({"a": {"b": [1, "two", {"c": null}]}, "d": "on", "e": "", "f": "x: y"});
        assert_eq!(load_document(&dump(&doc)).unwrap(), doc);
    }
}
