//! A parsed Sigma rule to one SQL query over the views, returning the eight columns every
//! hunt rule returns.
//!
//! Only two things from a rule reach the statement: field names, which are looked up in the
//! [mapping](super::fields) and replaced by its fixed expressions, and values, which are
//! validated for what they are used as (a CIDR is parsed, a regex compiled, a number is an
//! integer) and always written as quoted SQL literals or integers. Nothing a rule says is
//! spliced in as SQL text.
//!
//! Sigma's matching rules, as converted:
//! - text matches whole values, case-insensitively (`cased`: exactly); `*` and `?` are
//!   wildcards, `\*`, `\?` and `\\` their literal characters;
//! - a list of values is any of them (`all`: every one); a search's fields must all match; a
//!   list of maps is any of the maps;
//! - `null` matches a missing value; a test on a missing value is false, so `not` of it is
//!   true, as in Sigma (each test is `... IS TRUE`, never SQL's unknown);
//! - `re` uses Rust's regex syntax (linear time; no look-around or back-references: such a
//!   pattern is refused, not approximated);
//! - `windash`: a `-` or `/` that starts a word also matches `/`, `-`, and the en dash, em dash
//!   and horizontal bar (Linux tools rarely take `/` options; supported for rules shared with
//!   other systems).

use std::net::IpAddr;

use super::Problem;
use super::fields::{self, Join, Kind, Mapped, Unmapped};
use super::model::{Category, Condition, FieldTest, Modifiers, Position, Search, SigmaRule, Value};
use super::parse::Located;
use crate::timeline::sql_literal;

fn unsupported(line: usize, construct: impl Into<String>, reason: impl Into<String>) -> Located {
    (
        line,
        Problem::Unsupported {
            construct: construct.into(),
            reason: reason.into(),
        },
    )
}

fn malformed(line: usize, problem: impl Into<String>) -> Located {
    (line, Problem::Malformed(problem.into()))
}

/// The rule's SQL.
pub fn to_sql(rule: &SigmaRule) -> Result<String, Located> {
    let mut joins = Joins::default();
    let mut converted = Vec::new();
    for search in &rule.searches {
        converted.push((search, search_sql(rule.category, search, &mut joins)?));
    }
    let condition = condition_sql(&rule.condition, &converted, rule.condition_line)?;
    Ok(assemble(rule.category, &joins, &condition))
}

#[derive(Default)]
struct Joins {
    parent: bool,
    image: bool,
}

fn assemble(category: Category, joins: &Joins, condition: &str) -> String {
    let image_join = |alias: &str| {
        if joins.image {
            format!(
                "\nLEFT JOIN ({}) img\n  ON img.host = {alias}.host AND img.pid = {alias}.pid \
                 AND img.span_start <= {alias}.ktime_ns\n AND (img.span_end IS NULL OR \
                 {alias}.ktime_ns < img.span_end)",
                fields::PROCESS_SPAN
            )
        } else {
            String::new()
        }
    };
    match category {
        Category::ProcessCreation => {
            let parent = if joins.parent {
                format!(
                    "\nLEFT JOIN ({}) pp\n  ON pp.host = e.host AND pp.pid = e.ppid \
                     AND pp.start_ns = e.parent_start_ns",
                    fields::PARENT
                )
            } else {
                String::new()
            };
            format!(
                "SELECT e.time, e.host, e.container_id, e.pid, e.comm, 'process' AS source_table, \
                 e.ktime_ns,\n       concat(coalesce(e.exe_path, e.filename), ' [', \
                 array_to_string(e.argv, ' '), ']') AS evidence\nFROM execs e{parent}\nWHERE \
                 {condition}"
            )
        }
        Category::FileEvent | Category::FileAccess => {
            let source = if category == Category::FileEvent {
                // What Sigma's file_event means: a file created or changed (deletions are
                // file_delete). The target of a rename, link or symlink is its new name.
                "SELECT *, CASE WHEN event IN ('rename', 'link', 'symlink') \
                 THEN coalesce(path2, path) ELSE path END AS target\n      FROM file_writes \
                 WHERE succeeded AND event NOT IN ('unlink', 'rmdir')"
            } else {
                "SELECT *, coalesce(abs_path, path) AS target\n      FROM file \
                 WHERE event = 'open' AND ret >= 0"
            };
            format!(
                "SELECT f.time, f.host, f.container_id, f.pid, f.comm, 'file' AS source_table, \
                 f.ktime_ns,\n       concat(f.comm, ' ', f.event, ' ', f.target) AS evidence\n\
                 FROM ({source}) f{}\nWHERE {condition}",
                image_join("f")
            )
        }
        Category::NetworkConnection => format!(
            "SELECT n.time, n.host, n.container_id, n.pid, n.comm, 'net' AS source_table, \
             n.ktime_ns,\n       concat(n.comm, ' ', n.direction, ' ', \
             coalesce(n.remote_addr, ''), ':', coalesce(CAST(n.remote_port AS VARCHAR), '')) \
             AS evidence\nFROM connections n{}\nWHERE n.family IN ('inet', 'inet6') AND \
             ({condition})",
            image_join("n")
        ),
    }
}

fn search_sql(category: Category, search: &Search, joins: &mut Joins) -> Result<String, Located> {
    let mut alternatives = Vec::new();
    for tests in &search.alternatives {
        let mut parts = Vec::new();
        for test in tests {
            parts.push(test_sql(category, test, joins)?);
        }
        alternatives.push(group(parts, "AND"));
    }
    Ok(group(alternatives, "OR"))
}

fn group(mut parts: Vec<String>, op: &str) -> String {
    if parts.len() == 1 {
        return parts.remove(0);
    }
    format!("({})", parts.join(&format!(" {op} ")))
}

fn test_sql(category: Category, test: &FieldTest, joins: &mut Joins) -> Result<String, Located> {
    let line = test.line;
    let field = &test.field;
    let mapped: Mapped = fields::map(category, field).map_err(|u| match u {
        Unmapped::NoData(why) => unsupported(line, format!("field {field}"), why),
        Unmapped::Unknown => unsupported(
            line,
            format!("field {field:?}"),
            format!(
                "{} rules here can use {}",
                category_name(category),
                fields::known(category).join(", ")
            ),
        ),
    })?;
    match mapped.needs {
        Join::None => {}
        Join::Parent => joins.parent = true,
        Join::Image => joins.image = true,
    }
    let m = &test.modifiers;
    let x = mapped.sql;
    if m.exists {
        return match test.values.as_slice() {
            [Value::Bool(true)] => Ok(format!("{x} IS NOT NULL")),
            [Value::Bool(false)] => Ok(format!("{x} IS NULL")),
            _ => Err(malformed(
                line,
                format!("{field}|exists takes true or false"),
            )),
        };
    }
    let mut each = Vec::new();
    for value in &test.values {
        each.push(value_sql(&mapped, m, value, line, field)?);
    }
    Ok(group(each, if m.all { "AND" } else { "OR" }))
}

fn category_name(category: Category) -> &'static str {
    match category {
        Category::ProcessCreation => "process_creation",
        Category::FileEvent => "file_event",
        Category::FileAccess => "file_access",
        Category::NetworkConnection => "network_connection",
    }
}

fn value_sql(
    mapped: &Mapped,
    m: &Modifiers,
    value: &Value,
    line: usize,
    field: &str,
) -> Result<String, Located> {
    let x = mapped.sql;
    let text_only = m.position != Position::Whole || m.windash || m.regex.is_some();
    if *value == Value::Null {
        if text_only || m.cidr || m.compare.is_some() {
            return Err(malformed(line, format!("{field}: null takes no modifier")));
        }
        return Ok(format!("{x} IS NULL"));
    }
    if mapped.kind == Kind::Initiated {
        let direction = match value {
            Value::Bool(b) => *b,
            Value::Text(t) if t.eq_ignore_ascii_case("true") => true,
            Value::Text(t) if t.eq_ignore_ascii_case("false") => false,
            _ => return Err(malformed(line, "Initiated is 'true' or 'false'")),
        };
        if *m != Modifiers::default() {
            return Err(unsupported(
                line,
                "modifiers on Initiated",
                "Initiated is 'true' or 'false'",
            ));
        }
        let name = if direction { "connect" } else { "accept" };
        return Ok(format!("({x} = '{name}') IS TRUE"));
    }
    if let Some(op) = m.compare {
        let Value::Int(n) = value else {
            return Err(malformed(
                line,
                format!("{field}|{op:?}: compare with an integer"),
            ));
        };
        if mapped.kind != Kind::Number {
            return Err(unsupported(
                line,
                format!("{op:?} on {field}"),
                "lt, lte, gt and gte compare numbers",
            ));
        }
        return Ok(format!("({x} {} {n}) IS TRUE", op.operator()));
    }
    if m.cidr {
        if mapped.kind != Kind::Ip {
            return Err(unsupported(
                line,
                format!("cidr on {field}"),
                "cidr applies to DestinationIp and SourceIp",
            ));
        }
        let Value::Text(text) = value else {
            return Err(malformed(
                line,
                format!("{field}|cidr: give a network such as 10.0.0.0/8"),
            ));
        };
        let network = parse_cidr(text).ok_or_else(|| {
            malformed(
                line,
                format!("{field}|cidr: {text:?} is not a network such as 10.0.0.0/8 or fd00::/8"),
            )
        })?;
        return Ok(format!("cidr_match({x}, {})", sql_literal(&network)));
    }
    let text = match value {
        Value::Text(t) => t.clone(),
        Value::Int(i) => i.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => unreachable!("handled above"),
    };
    if mapped.kind == Kind::Number {
        // A plain number compares as a number; anything else as its decimal text.
        if !text_only && let Ok(n) = text.trim().parse::<i64>() {
            return Ok(format!("({x} = {n}) IS TRUE"));
        }
        let x = format!("CAST({x} AS VARCHAR)");
        return text_sql(&x, m, &text, line, field);
    }
    text_sql(x, m, &text, line, field)
}

fn text_sql(
    x: &str,
    m: &Modifiers,
    text: &str,
    line: usize,
    field: &str,
) -> Result<String, Located> {
    if let Some(flags) = m.regex {
        let mut prefix = String::new();
        for (on, f) in [
            (flags.insensitive, 'i'),
            (flags.multiline, 'm'),
            (flags.dot_all, 's'),
        ] {
            if on {
                prefix.push(f);
            }
        }
        let pattern = if prefix.is_empty() {
            text.to_string()
        } else {
            format!("(?{prefix}){text}")
        };
        // The engine uses the same regex crate: what compiles here compiles there.
        if let Err(e) = regex::RegexBuilder::new(&pattern)
            .size_limit(1 << 20)
            .build()
        {
            let first = e.to_string();
            let first = first.lines().last().unwrap_or_default().trim().to_string();
            return Err(unsupported(
                line,
                format!("regular expression of {field}"),
                format!("Rust's regex syntax is used (no look-around or back-references): {first}"),
            ));
        }
        return Ok(format!("({x} ~ {}) IS TRUE", sql_literal(&pattern)));
    }
    let op = if m.cased { "LIKE" } else { "ILIKE" };
    let variants = if m.windash {
        windash(text)
    } else {
        vec![text.to_string()]
    };
    let tests: Vec<String> = variants
        .iter()
        .map(|v| {
            let mut pattern = like_pattern(v);
            if matches!(m.position, Position::Contains | Position::EndsWith) {
                pattern.insert(0, '%');
            }
            if matches!(m.position, Position::Contains | Position::StartsWith) {
                pattern.push('%');
            }
            format!("({x} {op} {} ESCAPE '\\') IS TRUE", sql_literal(&pattern))
        })
        .collect();
    Ok(group(tests, "OR"))
}

/// A Sigma value as a LIKE pattern: `*` and `?` become `%` and `_`, their escaped forms and
/// every LIKE metacharacter in the value become literals.
pub(crate) fn like_pattern(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(&next @ ('*' | '?' | '\\')) => {
                    chars.next();
                    literal(&mut out, next);
                }
                _ => literal(&mut out, '\\'),
            },
            '*' => out.push('%'),
            '?' => out.push('_'),
            other => literal(&mut out, other),
        }
    }
    out
}

fn literal(out: &mut String, c: char) {
    if matches!(c, '%' | '_' | '\\') {
        out.push('\\');
    }
    out.push(c);
}

/// The dash forms `windash` tries for a `-` or `/` that starts a word.
const DASHES: [char; 5] = ['-', '/', '\u{2013}', '\u{2014}', '\u{2015}'];

fn windash(value: &str) -> Vec<String> {
    let chars: Vec<char> = value.chars().collect();
    let starts_word = |i: usize| {
        matches!(chars[i], '-' | '/')
            && (i == 0 || chars[i - 1].is_whitespace())
            && chars.get(i + 1).is_some_and(|c| c.is_alphanumeric())
    };
    if !(0..chars.len()).any(starts_word) {
        return vec![value.to_string()];
    }
    DASHES
        .iter()
        .map(|dash| {
            (0..chars.len())
                .map(|i| if starts_word(i) { *dash } else { chars[i] })
                .collect()
        })
        .collect()
}

/// `text` as a network in canonical form (host bits cleared), or None.
pub(crate) fn parse_cidr(text: &str) -> Option<String> {
    let (addr, bits) = match text.trim().split_once('/') {
        Some((a, b)) => (a.parse::<IpAddr>().ok()?, b.parse::<u8>().ok()?),
        None => {
            let a = text.trim().parse::<IpAddr>().ok()?;
            (a, if a.is_ipv4() { 32 } else { 128 })
        }
    };
    super::cidr::Network::new(addr, bits).map(|n| n.to_string())
}

fn condition_sql(
    condition: &Condition,
    searches: &[(&Search, String)],
    line: usize,
) -> Result<String, Located> {
    let named = |pattern: &str| -> Result<Vec<&String>, Located> {
        let found: Vec<&String> = searches
            .iter()
            .filter(|(s, _)| {
                if pattern == "them" {
                    !s.name.starts_with('_')
                } else {
                    glob(pattern, &s.name)
                }
            })
            .map(|(_, sql)| sql)
            .collect();
        if found.is_empty() {
            return Err(malformed(
                line,
                format!("condition: {pattern:?} names no search of the detection"),
            ));
        }
        Ok(found)
    };
    Ok(match condition {
        Condition::Search(name) => {
            let (_, sql) = searches
                .iter()
                .find(|(s, _)| s.name == *name)
                .ok_or_else(|| {
                    malformed(
                        line,
                        format!("condition: {name:?} is not a search of the detection"),
                    )
                })?;
            sql.clone()
        }
        Condition::Not(inner) => format!("NOT ({})", condition_sql(inner, searches, line)?),
        Condition::And(parts) | Condition::Or(parts) => {
            let op = if matches!(condition, Condition::And(_)) {
                "AND"
            } else {
                "OR"
            };
            let sql = parts
                .iter()
                .map(|p| condition_sql(p, searches, line))
                .collect::<Result<Vec<_>, _>>()?;
            group(sql, op)
        }
        Condition::OneOf(pattern) => group(named(pattern)?.into_iter().cloned().collect(), "OR"),
        Condition::AllOf(pattern) => group(named(pattern)?.into_iter().cloned().collect(), "AND"),
    })
}

/// Sigma's name patterns: `*` stands for any run of characters.
fn glob(pattern: &str, name: &str) -> bool {
    // The usual one-backtrack-point matcher: linear in practice, never exponential in the
    // number of `*` a hostile condition writes.
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}
