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
//! the evidence with one `SELECT`. The runner wraps each rule as a subquery, limits the tables
//! it reads to the hunt's window (partition filters, see [`Scope`]), adds the container
//! filter, which DataFusion pushes down into the rule's scans, and streams the findings
//! ([`run_each`]): a few rules at a time, each sorted by the engine, merged in time order.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use quarry_store::Table;
use serde::{Deserialize, Serialize};

use crate::timeline::{ContainerInfo, Rows, sql_literal, timestamp_literal, window_predicate};
use crate::{Catalog, QueryError, Result};

pub use quarry_store::severity::Severity;

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
        "drift-exec",
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

/// Where the rules of a hunt or of live detection come from: the built-in ones (unless left
/// out), a directory of `*.sql` rules and a directory of Sigma rules, loaded in that order.
#[derive(Debug, Clone, Copy, Default)]
pub struct RuleSources<'a> {
    pub builtin: bool,
    pub rules: Option<&'a Path>,
    pub sigma: Option<&'a Path>,
}

impl RuleSources<'_> {
    /// Every rule they hold; the Sigma rules that could not be converted are in `refused`.
    pub fn load(&self) -> Result<crate::sigma::Loaded> {
        let mut loaded = crate::sigma::Loaded::default();
        if self.builtin {
            loaded.rules = builtin_rules();
        }
        if let Some(dir) = self.rules {
            let rules = load_rules(dir).map_err(|e| QueryError::RuleDir {
                dir: dir.to_path_buf(),
                source: Box::new(e),
            })?;
            loaded.rules.extend(rules);
        }
        if let Some(dir) = self.sigma {
            let sigma = crate::sigma::load_dir(dir).map_err(|e| QueryError::SigmaDir {
                dir: dir.to_path_buf(),
                source: Box::new(e),
            })?;
            loaded.rules.extend(sigma.rules);
            loaded.refused = sigma.refused;
        }
        Ok(loaded)
    }
}

/// `hunt --ioc FILE`: the indicator list at `path` as one rule, and a note when some of its
/// indicators can never match what the store records.
pub fn indicator_rule(path: &Path) -> Result<(Rule, Option<String>)> {
    let list = crate::ioc::IocList::read(path).map_err(|e| QueryError::Indicators {
        path: path.to_path_buf(),
        source: Box::new(e),
    })?;
    Ok((list.rule(&path.display().to_string()), list.unmatchable()))
}

/// `hunt --explain ID`: the rule of that id among `rules`; when a Sigma rule of that id was
/// refused (`refused`), the error says why it was not converted.
pub fn find_rule<'a>(
    rules: &'a [Rule],
    refused: &[crate::sigma::SigmaError],
    id: &str,
) -> Result<&'a Rule> {
    if let Some(rule) = rules.iter().find(|r| r.id == id) {
        return Ok(rule);
    }
    Err(
        match refused.iter().find(|e| e.rule.as_deref() == Some(id)) {
            Some(e) => QueryError::NotConverted {
                id: id.to_string(),
                reason: e.to_string(),
            },
            None => QueryError::NoRule(id.to_string()),
        },
    )
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
///
/// The window (`since`/`until`, and with `containers` the containers' recorded lifetimes)
/// limits the rows every rule reads, on both sides of its joins: it becomes `dt`/`hour`
/// partition filters and time bounds on the event tables, so a hunt over the last hour reads
/// the last hour's segments only. A rule that correlates rows (a file written, then executed)
/// sees both inside the window. The container filter applies to the findings.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Container ids (exact) to limit findings to.
    pub containers: Option<Vec<String>>,
}

impl Scope {
    /// This scope limited to the one container the store knows by `given` (id, unique id
    /// prefix or name: [`crate::timeline::find_container`]): its findings only, and only the
    /// hours of its recorded lifetime.
    pub async fn for_container(mut self, catalog: &mut Catalog, given: &str) -> Result<Scope> {
        let container = crate::timeline::find_container(catalog, given).await?;
        self.containers = Some(vec![container.id.clone()]);
        Ok(self.within_lifetime(&container))
    }

    /// This scope limited to `container`'s recorded lifetime (when the store knows it):
    /// nothing of a container is recorded outside it, so its hunt reads only those hours.
    pub fn within_lifetime(mut self, container: &ContainerInfo) -> Scope {
        if let Some(first) = container.first_seen {
            self.since = Some(self.since.map_or(first, |s| s.max(first)));
        }
        if let Some(last) = container.last_seen {
            // last_seen is when its last interval was sealed: a second of slack, as the
            // timeline keeps.
            let last = last + chrono::Duration::seconds(1);
            self.until = Some(self.until.map_or(last, |u| u.min(last)));
        }
        self
    }
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

/// How many rules run at once: enough to overlap one rule's reading with another's joins,
/// few enough that their operators share the memory budget in useful pieces.
pub const PARALLEL_RULES: usize = 2;

/// The event tables a hunt's window limits (they have `time`, `dt` and `hour`). The
/// `container` table is left whole: it describes containers, not events in time.
const WINDOWED_TABLES: [Table; 6] = [
    Table::Process,
    Table::File,
    Table::Net,
    Table::Syscall,
    Table::Gap,
    Table::Action,
];

/// Runs `rules` over `catalog` in `scope`; findings ordered by time, collected.
pub async fn run(catalog: &mut Catalog, rules: &[Rule], scope: &Scope) -> Result<Vec<Finding>> {
    let mut findings = Vec::new();
    run_each(catalog, rules, scope, |f| {
        findings.push(f);
        Ok(())
    })
    .await?;
    Ok(findings)
}

/// Runs `rules` over `catalog` in `scope` and hands each finding to `each`, in time order;
/// returns how many there were.
///
/// Memory stays bounded whatever the number of findings: each rule's query sorts its own
/// findings (inside the session's budget, spilling as needed) and they are written to an
/// unnamed temporary file as they come; the files are then merged in time order, one
/// finding of each in memory. At most [`PARALLEL_RULES`] rules run at once, sharing the
/// session's memory budget; a rule that ran out of it runs again alone, with all of it, and
/// only a rule over budget on its own fails the hunt.
pub async fn run_each(
    catalog: &mut Catalog,
    rules: &[Rule],
    scope: &Scope,
    mut each: impl FnMut(Finding) -> Result<()>,
) -> Result<u64> {
    let spill = catalog.spill_path().to_path_buf();
    let mut done: Vec<Option<RuleFindings>> = (0..rules.len()).map(|_| None).collect();
    // A segment found damaged inside is left out (the session reopened without it) and the
    // rules it stopped run again; the second time, errors are final.
    for attempt in 0..2 {
        let todo: Vec<usize> = (0..rules.len()).filter(|i| done[*i].is_none()).collect();
        let outcomes: Vec<(usize, Result<RuleFindings>)> = {
            let session = &*catalog;
            let spill = &spill;
            futures::stream::iter(todo)
                .map(|i| async move {
                    let sql = rule_sql(&rules[i], scope);
                    (i, run_rule(session, &sql, spill).await)
                })
                .buffer_unordered(PARALLEL_RULES)
                .collect()
                .await
        };
        let mut damaged = None;
        let mut over_budget = Vec::new();
        for (i, outcome) in outcomes {
            match outcome {
                Ok(found) => done[i] = Some(found),
                Err(QueryError::Engine(e)) if attempt == 0 && crate::catalog::is_data_error(&e) => {
                    damaged = Some(e)
                }
                // It shared the budget with another rule: it gets all of it, alone, below.
                Err(QueryError::MemoryBudget { .. }) if PARALLEL_RULES > 1 => over_budget.push(i),
                Err(e) => return Err(rule_error(&rules[i], e)),
            }
        }
        for i in over_budget {
            let sql = rule_sql(&rules[i], scope);
            match run_rule(catalog, &sql, &spill).await {
                Ok(found) => done[i] = Some(found),
                Err(e) => return Err(rule_error(&rules[i], e)),
            }
        }
        match damaged {
            Some(e) => catalog.leave_out_damaged(e).await?,
            None => break,
        }
    }
    let files: Vec<RuleFindings> = done
        .into_iter()
        .map(|d| d.expect("every rule ran or its error was returned"))
        .collect();
    merge(rules, files, &mut each)
}

fn rule_error(rule: &Rule, e: QueryError) -> QueryError {
    QueryError::Rule {
        path: rule.origin.clone(),
        problem: e.to_string(),
    }
}

/// The statement that runs `rule` in `scope`: the windowed tables (and the views over them)
/// as CTEs shadowing the store's, the rule as a subquery, the findings filtered and sorted.
pub(crate) fn rule_sql(rule: &Rule, scope: &Scope) -> String {
    let mut ctes = Vec::new();
    if scope.since.is_some() || scope.until.is_some() {
        let window = window_predicate(scope.since, scope.until);
        for table in WINDOWED_TABLES {
            let name = table.name();
            ctes.push(format!(
                "{name} AS (SELECT * FROM quarry.store.{name} WHERE {window})"
            ));
        }
        // The views are rebuilt over the windowed tables; the registered ones read the
        // store's tables whole.
        for (name, sql) in crate::views::definitions() {
            ctes.push(format!("{name} AS ({sql})"));
        }
    }
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
    let with = if ctes.is_empty() {
        String::new()
    } else {
        format!("WITH {}\n", ctes.join(",\n"))
    };
    format!(
        "{with}SELECT time, host, container_id, pid, comm, source_table, ktime_ns, evidence \
         FROM (\n{}\n) AS finding{filter} \
         ORDER BY time, ktime_ns, pid, host, evidence",
        rule.sql
    )
}

/// One rule's findings, sorted, deduplicated, in an unnamed temporary file.
struct RuleFindings {
    file: std::fs::File,
}

/// One row of a rule's result: a finding without the rule's own fields (as a hunt keeps it in
/// its file, and live detection reads it).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Row {
    time: i64,
    host: Option<String>,
    container_id: Option<String>,
    pid: Option<i64>,
    comm: Option<String>,
    evidence: String,
    source_table: String,
    ktime_ns: Option<u64>,
}

impl Row {
    /// Row `i` of a rule's result (the eight columns a rule returns).
    pub(crate) fn read(r: &Rows<'_>, i: usize) -> Row {
        Row {
            time: r
                .time("time", i)
                .map(|t| t.timestamp_micros())
                .unwrap_or_default(),
            host: r.string("host", i),
            container_id: r.string("container_id", i),
            pid: r.int("pid", i),
            comm: r.string("comm", i),
            evidence: r.string("evidence", i).unwrap_or_default(),
            source_table: r.string("source_table", i).unwrap_or_default(),
            ktime_ns: r.int("ktime_ns", i).map(|v| v as u64),
        }
    }

    /// The finding this row of `rule`'s result is.
    pub(crate) fn finding_of(self, rule: &Rule) -> Finding {
        Finding {
            rule: rule.id.clone(),
            title: rule.title.clone(),
            severity: rule.severity,
            mitre: rule.mitre.clone(),
            time: DateTime::from_timestamp_micros(self.time).unwrap_or_default(),
            host: self.host,
            container_id: self.container_id,
            pid: self.pid,
            comm: self.comm,
            evidence: self.evidence,
            source_table: self.source_table,
            ktime_ns: self.ktime_ns,
        }
    }

    /// A rule joining several rows can match one row more than once: one finding per row.
    fn same_row(&self, other: &Row) -> bool {
        self.ktime_ns == other.ktime_ns && self.pid == other.pid && self.host == other.host
    }
}

/// Runs one rule's statement and writes its findings to a temporary file in `spill`.
async fn run_rule(session: &Catalog, sql: &str, spill: &Path) -> Result<RuleFindings> {
    let file = tempfile::tempfile_in(spill).map_err(|e| QueryError::io(spill, e))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 16, file);
    let mut stream = session.stream(sql).await?;
    let mut last: Option<Row> = None;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let r = Rows::new(&batch)?;
        for i in 0..batch.num_rows() {
            let row = Row::read(&r, i);
            // Sorted by time, ktime_ns, pid and host: copies of one row are neighbours.
            if last.as_ref().is_some_and(|l| l.same_row(&row)) {
                continue;
            }
            serde_json::to_writer(&mut out, &row).map_err(|e| QueryError::io(spill, e.into()))?;
            out.write_all(b"\n").map_err(|e| QueryError::io(spill, e))?;
            last = Some(row);
        }
    }
    let mut file = out
        .into_inner()
        .map_err(|e| QueryError::io(spill, e.into_error()))?;
    file.seek(SeekFrom::Start(0))
        .map_err(|e| QueryError::io(spill, e))?;
    Ok(RuleFindings { file })
}

/// Merges the rules' sorted files into one time-ordered sequence of findings.
fn merge(
    rules: &[Rule],
    files: Vec<RuleFindings>,
    each: &mut impl FnMut(Finding) -> Result<()>,
) -> Result<u64> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    use std::io::BufRead;

    let mut readers: Vec<_> = files
        .into_iter()
        .map(|f| std::io::BufReader::with_capacity(1 << 16, f.file).lines())
        .collect();
    let read = |readers: &mut Vec<std::io::Lines<std::io::BufReader<std::fs::File>>>,
                i: usize|
     -> Result<Option<Row>> {
        match readers[i].next() {
            None => Ok(None),
            Some(line) => {
                let line = line.map_err(|e| QueryError::io("hunt findings", e))?;
                let row: Row = serde_json::from_str(&line)
                    .map_err(|e| QueryError::io("hunt findings", e.into()))?;
                Ok(Some(row))
            }
        }
    };
    // Ordered by time, then rule id, then the row: the order findings have always had.
    type Key = (i64, String, Option<u64>, Option<i64>, String, usize);
    let key = |row: &Row, i: usize| -> Key {
        (
            row.time,
            rules[i].id.clone(),
            row.ktime_ns,
            row.pid,
            row.evidence.clone(),
            i,
        )
    };
    let mut heads: Vec<Option<Row>> = Vec::with_capacity(readers.len());
    let mut heap = BinaryHeap::new();
    for i in 0..readers.len() {
        let head = read(&mut readers, i)?;
        if let Some(row) = &head {
            heap.push(Reverse(key(row, i)));
        }
        heads.push(head);
    }
    let mut count = 0u64;
    while let Some(Reverse((.., i))) = heap.pop() {
        let row = heads[i].take().expect("a rule in the heap has a head");
        let next = read(&mut readers, i)?;
        if let Some(n) = &next {
            heap.push(Reverse(key(n, i)));
        }
        heads[i] = next;
        count += 1;
        each(row.finding_of(&rules[i]))?;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explain_finds_a_rule_or_says_why_not() {
        let rules = builtin_rules();
        let id = rules[0].id.clone();
        assert_eq!(find_rule(&rules, &[], &id).unwrap().id, id);
        let e = find_rule(&rules, &[], "NOPE-1").unwrap_err().to_string();
        assert!(e.contains("\"NOPE-1\"") && e.contains("hunt --list"), "{e}");
    }

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
