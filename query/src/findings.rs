//! Hunt results for people and for machines: findings written as they come (a table, or one
//! JSON array a finding at a time), the rule list, a rule's SQL, and fixture results. The
//! binary only chooses the form and where it goes.
//!
//! Rule files, evidence and container ids are attacker-influenced: every cell and line for
//! people passes through [`printable`]. It must not run or change a rule: findings come from
//! [`hunt::run_each`].

use std::io::Write;

use crate::fixture::CaseResult;
use crate::hunt::{self, Finding, Rule, Scope};
use crate::output::{TABLE_CHUNK_ROWS, TableStyle, TextTable, printable};
use crate::{Catalog, QueryError, Result};

/// A failed write of results (standard output, most often).
fn written(source: std::io::Error) -> QueryError {
    QueryError::Io {
        path: "standard output".into(),
        source,
    }
}

impl Finding {
    /// The columns of `quarry hunt` (see [`Finding::row`]); ROW is `table@ktime_ns` of the
    /// row behind the finding.
    pub const COLUMNS: [&'static str; 8] = [
        "TIME",
        "SEVERITY",
        "RULE",
        "ATT&CK",
        "CONTAINER",
        "PID",
        "EVIDENCE",
        "ROW",
    ];

    /// The finding as a row under [`Finding::COLUMNS`], cells made printable.
    pub fn row(&self) -> Vec<String> {
        [
            self.time.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
            self.severity.as_str().into(),
            self.rule.clone(),
            self.mitre.join(","),
            self.container_id
                .as_deref()
                .map(|c| c.chars().take(12).collect())
                .unwrap_or_default(),
            self.pid.map(|p| p.to_string()).unwrap_or_default(),
            self.evidence.clone(),
            format!(
                "{}@{}",
                self.source_table,
                self.ktime_ns.map(|k| k.to_string()).unwrap_or_default()
            ),
        ]
        .iter()
        .map(|c| printable(c))
        .collect()
    }
}

/// Runs `rules` over `catalog` in `scope` and writes each finding to `out` as it is found:
/// one pretty JSON array when `json`, else a table (printed in chunks, so a long hunt shows
/// its first findings early). Returns how many were found.
pub async fn write_hunt(
    catalog: &mut Catalog,
    rules: &[Rule],
    scope: &Scope,
    json: bool,
    out: &mut dyn Write,
) -> Result<u64> {
    if json {
        let mut first = true;
        let count = hunt::run_each(catalog, rules, scope, |f| {
            let text = serde_json::to_string_pretty(&f).map_err(|e| written(e.into()))?;
            let sep = if first { "[\n  " } else { ",\n  " };
            first = false;
            write!(out, "{sep}{}", text.replace('\n', "\n  ")).map_err(written)
        })
        .await?;
        writeln!(out, "{}", if first { "[]" } else { "\n]" }).map_err(written)?;
        return Ok(count);
    }
    let header = Finding::COLUMNS.iter().map(|h| h.to_string()).collect();
    let mut table = TextTable::styled(TableStyle::Plain, header, TABLE_CHUNK_ROWS);
    let count = hunt::run_each(catalog, rules, scope, |f| {
        table.push(f.row(), out).map_err(written)
    })
    .await?;
    table.finish(out).map_err(written)?;
    Ok(count)
}

impl Rule {
    /// The columns of `quarry hunt --list` (see [`Rule::row`]).
    pub const COLUMNS: [&'static str; 4] = ["ID", "SEVERITY", "ATT&CK", "TITLE"];

    /// The rule as a row under [`Rule::COLUMNS`] (cells unescaped: the table escapes them).
    pub fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.severity.as_str().into(),
            self.mitre.join(","),
            self.title.clone(),
        ]
    }

    /// `quarry hunt --explain`: the rule's id, title and origin as SQL comments, then the SQL
    /// it runs (before the hunt's window and container filters wrap it). A rule file is
    /// attacker-chosen text, so every line is made printable (the exact SQL is the JSON's).
    pub fn explain_text(&self) -> String {
        format!(
            "-- {}: {}\n-- from {}\n{}",
            printable(&self.id),
            printable(&self.title),
            printable(&self.origin),
            self.sql
                .lines()
                .map(printable)
                .collect::<Vec<_>>()
                .join("\n")
        )
    }

    /// `quarry hunt --explain --format json`: the rule with its exact SQL.
    pub fn explain_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "title": self.title,
            "origin": self.origin,
            "sql": self.sql,
        })
    }
}

impl CaseResult {
    /// The columns of `quarry hunt --test` (see [`CaseResult::row`]).
    pub const COLUMNS: [&'static str; 5] = ["RULE", "RESULT", "EXPECTED", "GOT", "CASE"];

    /// The case's outcome as a row under [`CaseResult::COLUMNS`].
    pub fn row(&self) -> Vec<String> {
        vec![
            self.rule.clone(),
            if self.passed() { "ok" } else { "FAILED" }.into(),
            self.expected.to_string(),
            self.got.to_string(),
            printable(&self.case),
        ]
    }
}
