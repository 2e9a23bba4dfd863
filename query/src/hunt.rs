//! Detection rules written as SQL, and the runner that turns their rows into findings.
//!
//! A rule is a `.sql` file (the built-in ones live in `query/rules/`) whose header comments
//! name it:
//!
//! ```sql
//! -- id: QH001
//! -- title: Shell spawned in a container
//! -- severity: medium            (info | low | medium | high | critical)
//! -- mitre: T1059.004            (one or more ATT&CK techniques, comma-separated)
//! -- description: free text, may continue on following comment lines
//! SELECT time, host, container_id, pid, comm, source_table, ktime_ns, evidence FROM ...
//! ```
//!
//! A rule's header also says, in its description, what it deliberately does not flag. Its
//! positive and negative cases live beside it in `<name>.test.json` ([`crate::fixture`]);
//! `quarry hunt --test` runs them.
//!
//! The query must return those eight columns: `source_table` and `ktime_ns` (with `host` and
//! `pid`) point at the row behind the finding, so an investigator can go from a finding to
//! the evidence with one `SELECT`. The runner wraps each rule as a subquery and adds the
//! window and container filters, which DataFusion pushes down into the rule's scans.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::timeline::{Rows, sql_literal, timestamp_literal};
use crate::{Catalog, QueryError, Result};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    fn parse(text: &str) -> Option<Severity> {
        Some(match text.trim().to_ascii_lowercase().as_str() {
            "info" => Severity::Info,
            "low" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            "critical" => Severity::Critical,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// One detection rule.
#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    pub id: String,
    pub title: String,
    pub severity: Severity,
    pub mitre: Vec<String>,
    pub description: String,
    #[serde(skip)]
    pub sql: String,
    /// Where the rule came from (a file name, or `builtin:<name>`).
    pub origin: String,
    /// The rule's fixture (`<name>.test.json` beside it): positive and negative cases that
    /// [`crate::fixture::run`] checks. Every built-in rule has one.
    #[serde(skip)]
    pub fixture: Option<String>,
}

/// The rules shipped with Quarry (the files of `query/rules/`).
pub fn builtin_rules() -> Vec<Rule> {
    macro_rules! rules {
        ($($name:literal),* $(,)?) => {
            [$((
                $name,
                include_str!(concat!("../rules/", $name, ".sql")),
                include_str!(concat!("../rules/", $name, ".test.json")),
            )),*]
        };
    }
    rules!(
        "shell-in-container",
        "drift",
        "reverse-shell",
        "sensitive-read",
        "write-system-dirs",
        "persistence",
        "privilege-change",
        "escape-signals",
        "tools-in-container",
        "memfd-exec",
        "setuid-bit",
        "kernel-tunables-write",
        "raw-socket",
        "proc-environ-read",
        "hidden-tmp-file",
        "log-clearing",
        "history-removal",
        "bulk-deletion",
        "exec-from-shm-or-hidden",
        "shell-from-pipe",
        "module-load",
        "runtime-socket",
        "ptrace-or-mem-write",
        "account-change",
        "credential-search",
        "exec-bit-after-write",
        "sensitive-link",
        "mining-pool",
    )
    .into_iter()
    .map(|(name, text, fixture)| {
        let mut rule = parse_rule(&format!("builtin:{name}"), text)
            .unwrap_or_else(|e| panic!("built-in rule {name} is malformed: {e}"));
        rule.fixture = Some(fixture.to_string());
        rule
    })
    .collect()
}

/// Loads every `*.sql` rule in `dir` (not following symlinks).
pub fn load_rules(dir: &Path) -> Result<Vec<Rule>> {
    let mut rules = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| QueryError::io(dir, e))?;
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    paths.sort();
    for path in paths {
        let meta = std::fs::symlink_metadata(&path).map_err(|e| QueryError::io(&path, e))?;
        if !meta.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| QueryError::io(&path, e))?;
        let mut rule = parse_rule(&path.display().to_string(), &text)?;
        // The fixture must be a plain file too: a symlink is not followed.
        let fixture = path.with_extension("test.json");
        if std::fs::symlink_metadata(&fixture).is_ok_and(|m| m.is_file()) {
            rule.fixture =
                Some(std::fs::read_to_string(&fixture).map_err(|e| QueryError::io(&fixture, e))?);
        }
        rules.push(rule);
    }
    Ok(rules)
}

/// Reads a rule's header and SQL.
pub fn parse_rule(origin: &str, text: &str) -> Result<Rule> {
    let problem = |p: &str| QueryError::Rule {
        path: origin.into(),
        problem: p.into(),
    };
    let (mut id, mut title, mut severity, mut mitre) = (None, None, None, Vec::new());
    let mut description = String::new();
    let mut last_key = "";
    let mut sql = String::new();
    let mut in_header = true;
    for line in text.lines() {
        // The header is the leading comment block; comments inside the SQL are the SQL's.
        let comment = line.trim_start().strip_prefix("--");
        if comment.is_none() && !line.trim().is_empty() {
            in_header = false;
        }
        let (true, Some(comment)) = (in_header, comment) else {
            sql.push_str(line);
            sql.push('\n');
            continue;
        };
        let comment = comment.trim();
        match comment.split_once(':') {
            Some((key, value))
                if ["id", "title", "severity", "mitre", "description"].contains(&key.trim()) =>
            {
                let value = value.trim();
                last_key = match key.trim() {
                    "id" => {
                        id = Some(value.to_string());
                        "id"
                    }
                    "title" => {
                        title = Some(value.to_string());
                        "title"
                    }
                    "severity" => {
                        severity = Some(Severity::parse(value).ok_or_else(|| {
                            problem("severity must be info, low, medium, high or critical")
                        })?);
                        "severity"
                    }
                    "mitre" => {
                        mitre = value.split(',').map(|t| t.trim().to_string()).collect();
                        "mitre"
                    }
                    _ => {
                        description = value.to_string();
                        "description"
                    }
                };
            }
            _ if last_key == "description" && !comment.is_empty() => {
                description.push(' ');
                description.push_str(comment);
            }
            _ => {}
        }
    }
    let sql = sql.trim().trim_end_matches(';').to_string();
    if sql.is_empty() {
        return Err(problem("no SQL after the header"));
    }
    crate::guard::check(&sql).map_err(|e| problem(&e.to_string()))?;
    let mitre_ok = !mitre.is_empty()
        && mitre
            .iter()
            .all(|t| t.starts_with('T') && t[1..].chars().all(|c| c.is_ascii_digit() || c == '.'));
    if !mitre_ok {
        return Err(problem(
            "mitre must list ATT&CK technique ids such as T1059.004",
        ));
    }
    Ok(Rule {
        id: id.ok_or_else(|| problem("missing `-- id:` line"))?,
        title: title.ok_or_else(|| problem("missing `-- title:` line"))?,
        severity: severity.ok_or_else(|| problem("missing `-- severity:` line"))?,
        mitre,
        description,
        sql,
        origin: origin.into(),
        fixture: None,
    })
}

/// Which rows a hunt looks at.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Container ids (exact) to limit findings to.
    pub containers: Option<Vec<String>>,
}

/// One finding: a rule matched a row.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub rule: String,
    pub title: String,
    pub severity: Severity,
    pub mitre: Vec<String>,
    pub time: DateTime<Utc>,
    pub host: Option<String>,
    pub container_id: Option<String>,
    pub pid: Option<i64>,
    pub comm: Option<String>,
    pub evidence: String,
    /// The row behind the finding: `SELECT * FROM <source_table> WHERE host = .. AND
    /// ktime_ns = .. AND pid = ..`.
    pub source_table: String,
    pub ktime_ns: Option<u64>,
}

/// Runs `rules` over `catalog` in `scope`; findings ordered by time.
pub async fn run(catalog: &mut Catalog, rules: &[Rule], scope: &Scope) -> Result<Vec<Finding>> {
    let mut filters = Vec::new();
    if let Some(s) = scope.since {
        filters.push(format!("time >= {}", timestamp_literal(s)));
    }
    if let Some(u) = scope.until {
        filters.push(format!("time <= {}", timestamp_literal(u)));
    }
    if let Some(ids) = &scope.containers {
        let list: Vec<String> = ids.iter().map(|i| sql_literal(i)).collect();
        filters.push(format!("container_id IN ({})", list.join(", ")));
    }
    let filter = if filters.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", filters.join(" AND "))
    };
    let mut findings = Vec::new();
    for rule in rules {
        let sql = format!(
            "SELECT time, host, container_id, pid, comm, source_table, ktime_ns, evidence \
             FROM (\n{}\n) AS finding{filter}",
            rule.sql
        );
        let batches = catalog
            .run_resilient(&sql)
            .await
            .map_err(|e| QueryError::Rule {
                path: rule.origin.clone(),
                problem: e.to_string(),
            })?;
        for b in &batches {
            let r = Rows::new(b)?;
            for i in 0..b.num_rows() {
                findings.push(Finding {
                    rule: rule.id.clone(),
                    title: rule.title.clone(),
                    severity: rule.severity,
                    mitre: rule.mitre.clone(),
                    time: r.time("time", i).unwrap_or_default(),
                    host: r.string("host", i),
                    container_id: r.string("container_id", i),
                    pid: r.int("pid", i),
                    comm: r.string("comm", i),
                    evidence: r.string("evidence", i).unwrap_or_default(),
                    source_table: r.string("source_table", i).unwrap_or_default(),
                    ktime_ns: r.int("ktime_ns", i).map(|v| v as u64),
                });
            }
        }
    }
    // A rule joining several rows can match one row more than once; one finding per row.
    findings.sort_by(|a, b| {
        (a.time, &a.rule, a.ktime_ns, a.pid, &a.evidence).cmp(&(
            b.time,
            &b.rule,
            b.ktime_ns,
            b.pid,
            &b.evidence,
        ))
    });
    findings.dedup_by(|a, b| {
        a.rule == b.rule && a.ktime_ns == b.ktime_ns && a.pid == b.pid && a.host == b.host
    });
    Ok(findings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_rules_parse_and_have_unique_ids() {
        let rules = builtin_rules();
        assert!(rules.len() >= 10);
        let mut ids: Vec<_> = rules.iter().map(|r| r.id.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), rules.len());
    }

    #[test]
    fn malformed_rules_name_the_problem() {
        let err = parse_rule(
            "x.sql",
            "-- id: X\n-- title: t\n-- severity: urgent\nSELECT 1",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("severity"), "{err}");
        let err = parse_rule(
            "x.sql",
            "-- id: X\n-- title: t\n-- severity: low\n-- mitre: T1\nDROP TABLE process",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("refused"), "{err}");
        let err = parse_rule(
            "x.sql",
            "-- id: X\n-- severity: low\n-- mitre: T1\nSELECT 1",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("title"), "{err}");
    }
}
