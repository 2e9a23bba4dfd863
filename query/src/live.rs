//! Rules on the stream: the hunt's rules evaluated over the rows the recorder is sealing.
//!
//! A [`LiveDetector`] keeps a bounded look-back window of recent batches per table (the
//! recorder's tap hands it what the sealer took) and, on [`LiveDetector::evaluate`], runs every
//! rule (built-in, `--rules`, Sigma: they are all [`Rule`]s) over that window with the same
//! statement the hunt uses, against in-memory tables of the store's schemas and the same views.
//! A finding is new when its (rule, host, table, ktime_ns, pid) was not raised before: the
//! window overlaps from one evaluation to the next, so the same row is matched many times and
//! reported once.
//!
//! A rule that looks at one row at a time (a filter over one table or one of the row views)
//! runs over the batches that arrived since the last evaluation only: its cost follows the
//! event rate, not the window. A rule that correlates rows ([`correlates`]: a join, a
//! subquery, the aggregating `processes` view) runs over the whole window.
//!
//! State across batches is the window itself: a correlating rule (a file written, then
//! executed; a process and its parent's exec) sees both rows when both are inside it. It is
//! bounded by age ([`Window::max_age`]), rows ([`Window::max_rows`]) and memory
//! ([`Window::max_bytes`]); the oldest batches go first.
//! A correlation whose first row left the window is not found live (`quarry hunt` over the
//! store still finds it). Views that aggregate (the `processes` view) see only the window.
//!
//! This module must not write to a store, deliver alerts or block the recorder: it is handed
//! batches and returns findings; the caller (the binary's detection thread) does the rest.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use chrono::DateTime;
use datafusion::catalog::memory::PartitionData;
use datafusion::datasource::MemTable;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext};
use quarry_store::Table;
use quarry_store::schema::schema_of;

use crate::hunt::{Finding, Row, Rule, Scope, rule_sql};
use crate::timeline::Rows;
use crate::{QueryError, Result};

/// How much history the live rules see.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Batches older than this (since they arrived) leave the window.
    pub max_age: Duration,
    /// At most this many rows in the window, all tables together; the oldest batches go first.
    pub max_rows: usize,
    /// At most this many bytes of batches (Arrow's memory size) in the window; the oldest
    /// batches go first.
    pub max_bytes: u64,
}

impl Default for Window {
    fn default() -> Window {
        Window {
            max_age: Duration::from_secs(30),
            max_rows: 50_000,
            max_bytes: 16 << 20,
        }
    }
}

/// The identity of a raised finding: the rule and the row behind it.
type Raised = (String, Option<String>, String, Option<u64>, Option<i64>);

/// How many raised findings are remembered (to report each once); the oldest are forgotten
/// first, long after their rows left the window.
const MAX_REMEMBERED: usize = 100_000;

/// Live evaluation of rules over a window of recent batches.
pub struct LiveDetector {
    rules: Vec<Rule>,
    window: Window,
    /// (arrived, table, batch, evaluated yet)
    batches: VecDeque<(Instant, Table, RecordBatch, bool)>,
    rows: usize,
    /// Memory of the batches held (evaluated or not), and of those not evaluated yet.
    bytes: u64,
    pending_bytes: u64,
    /// Batches pushed since the last evaluation.
    fresh: usize,
    raised: HashSet<Raised>,
    raised_order: VecDeque<Raised>,
    /// Rules that failed on the last evaluation, with the error (they are tried again).
    failing: Vec<(String, String)>,
    /// The sessions of new rows only and of the whole window, made once: their tables'
    /// contents are swapped before each evaluation, and each rule is planned once.
    sessions: Option<[Live; 2]>,
}

/// A session over in-memory tables whose contents change between evaluations.
struct Live {
    ctx: SessionContext,
    tables: Vec<(Table, PartitionData)>,
    /// Each rule's statement, parsed and planned against the views once.
    frames: HashMap<usize, DataFrame>,
}

impl LiveDetector {
    pub fn new(rules: Vec<Rule>, window: Window) -> LiveDetector {
        LiveDetector {
            rules,
            window,
            batches: VecDeque::new(),
            rows: 0,
            bytes: 0,
            pending_bytes: 0,
            fresh: 0,
            raised: HashSet::new(),
            raised_order: VecDeque::new(),
            failing: Vec::new(),
            sessions: None,
        }
    }

    /// The rules evaluated.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Rows in the window now.
    pub fn window_rows(&self) -> usize {
        self.rows
    }

    /// Rows handed over and not evaluated yet.
    pub fn pending_rows(&self) -> usize {
        self.batches
            .iter()
            .filter(|(_, _, _, evaluated)| !evaluated)
            .map(|(_, _, b, _)| b.num_rows())
            .sum()
    }

    /// Bytes of the batches handed over and not evaluated yet.
    pub fn pending_bytes(&self) -> u64 {
        self.pending_bytes
    }

    /// Rules whose last evaluation failed, and why.
    pub fn failing(&self) -> &[(String, String)] {
        &self.failing
    }

    /// Adds a batch of `table` (rows of the store's schema for it) to the window.
    pub fn push(&mut self, table: Table, batch: RecordBatch) {
        if batch.num_rows() == 0 {
            return;
        }
        // In the tables' shape once, not on every evaluation it takes part in.
        let batch = match with_partition_columns(&batch) {
            Ok(b) => b,
            Err(e) => {
                log::warn!("a {table} batch left out of live detection: {e}");
                return;
            }
        };
        self.rows += batch.num_rows();
        let bytes = batch.get_array_memory_size() as u64;
        self.bytes += bytes;
        self.pending_bytes += bytes;
        self.fresh += 1;
        self.batches
            .push_back((Instant::now(), table, batch, false));
        self.evict(Instant::now());
    }

    /// Whether batches arrived since the last evaluation.
    pub fn has_fresh(&self) -> bool {
        self.fresh > 0
    }

    fn evict(&mut self, now: Instant) {
        while let Some((at, _, batch, evaluated)) = self.batches.front() {
            let too_old = now.duration_since(*at) > self.window.max_age;
            let too_many = self.rows > self.window.max_rows;
            let too_big = self.bytes > self.window.max_bytes;
            // A batch not evaluated yet stays, whatever the window: its rows are still owed
            // their single-row rules (what waits is bounded by the caller, see
            // [`LiveDetector::pending_bytes`]).
            if !(too_old || too_many || too_big) || !*evaluated {
                break;
            }
            self.rows -= batch.num_rows();
            self.bytes = self
                .bytes
                .saturating_sub(batch.get_array_memory_size() as u64);
            self.batches.pop_front();
        }
    }

    /// Runs every rule over the window; returns the findings not reported before, in time
    /// order. A rule that fails is skipped (see [`LiveDetector::failing`]); the others run.
    pub async fn evaluate(&mut self) -> Result<Vec<Finding>> {
        self.fresh = 0;
        if self.sessions.is_none() {
            self.sessions = Some([Live::new().await?, Live::new().await?]);
        }
        let [fresh, window] = self.sessions.as_mut().expect("made above");
        for (fresh_only, live) in [(true, &*fresh), (false, &*window)] {
            for (table, part) in &live.tables {
                let rows: Vec<RecordBatch> = self
                    .batches
                    .iter()
                    .filter(|(_, t, _, evaluated)| t == table && !(fresh_only && *evaluated))
                    .map(|(_, _, b, _)| b.clone())
                    .collect();
                *part.write().await = rows;
            }
        }
        for entry in self.batches.iter_mut() {
            entry.3 = true;
        }
        self.pending_bytes = 0;
        let mut found = Vec::new();
        let (fresh, window) = (&mut *fresh, &mut *window);
        self.failing.clear();
        for (i, rule) in self.rules.iter().enumerate() {
            let live = if correlates(&rule.sql) {
                &mut *window
            } else {
                &mut *fresh
            };
            let frame = match live.frames.get(&i) {
                Some(f) => Ok(f.clone()),
                None => {
                    let sql = rule_sql(rule, &Scope::default());
                    live.ctx.sql(&sql).await.inspect(|f| {
                        live.frames.insert(i, f.clone());
                    })
                }
            };
            let outcome = match frame {
                Ok(f) => f.collect().await,
                Err(e) => Err(e),
            };
            let batches = match outcome.map_err(QueryError::Engine) {
                Ok(b) => b,
                Err(e) => {
                    self.failing.push((rule.id.clone(), e.to_string()));
                    continue;
                }
            };
            for batch in &batches {
                let r = Rows::new(batch)?;
                for i in 0..batch.num_rows() {
                    let finding = Row::read(&r, i).finding_of(rule);
                    let key: Raised = (
                        finding.rule.clone(),
                        finding.host.clone(),
                        finding.source_table.clone(),
                        finding.ktime_ns,
                        finding.pid,
                    );
                    if self.raised.insert(key.clone()) {
                        self.raised_order.push_back(key);
                        found.push(finding);
                    }
                }
            }
        }
        while self.raised_order.len() > MAX_REMEMBERED {
            if let Some(old) = self.raised_order.pop_front() {
                self.raised.remove(&old);
            }
        }
        self.evict(Instant::now());
        found.sort_by(|a, b| (a.time, &a.rule, a.ktime_ns).cmp(&(b.time, &b.rule, b.ktime_ns)));
        Ok(found)
    }
}

impl Live {
    /// A session whose store tables are empty in-memory tables of the store's schemas (with
    /// the partition columns), with the views and functions rules use.
    async fn new() -> Result<Live> {
        let config = SessionConfig::new()
            .with_default_catalog_and_schema("quarry", "store")
            .with_target_partitions(1);
        let ctx = SessionContext::new_with_config(config);
        let mut tables = Vec::new();
        for table in Table::ALL {
            let schema =
                with_partition_columns(&RecordBatch::new_empty(schema_of(table)))?.schema();
            let mem = MemTable::try_new(schema, vec![Vec::new()]).map_err(QueryError::Engine)?;
            tables.push((table, mem.batches[0].clone()));
            ctx.register_table(table.name(), Arc::new(mem))
                .map_err(QueryError::Engine)?;
        }
        crate::views::register(&ctx).await?;
        Ok(Live {
            ctx,
            tables,
            frames: HashMap::new(),
        })
    }
}

/// Whether a rule's SQL may relate one row to others (a join, a subquery, an aggregate, the
/// `processes` view): such a rule runs over the whole window, the others over new rows only.
/// Judged on the text, erring towards the window: a word in a comment or a string literal
/// only costs a larger evaluation, never a missed match.
pub fn correlates(sql: &str) -> bool {
    let upper = sql.to_ascii_uppercase();
    let words = [
        "JOIN",
        "EXISTS",
        "PROCESSES",
        " IN (SELECT",
        "GROUP BY",
        "OVER (",
        "OVER(",
        "COUNT(",
        "MIN(",
        "MAX(",
        "SUM(",
        "ARRAY_AGG",
        "FIRST_VALUE",
        "LAST_VALUE",
        "UNION",
        "LAG(",
        "LEAD(",
    ];
    words.iter().any(|w| upper.contains(w)) || upper.matches("FROM").count() > 1
}

/// The batch with the `dt` and `hour` columns the store's tables have from their layout (the
/// views and some rules name them), from each row's `time`.
fn with_partition_columns(batch: &RecordBatch) -> Result<RecordBatch> {
    use arrow::array::{Array, ArrayRef, StringBuilder, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema};
    let rows = batch.num_rows();
    let times = batch
        .column_by_name("time")
        .and_then(|c| c.as_any().downcast_ref::<TimestampMicrosecondArray>());
    let mut dt = StringBuilder::with_capacity(rows, rows * 10);
    let mut hour = StringBuilder::with_capacity(rows, rows * 2);
    for i in 0..rows {
        match times
            .filter(|t| !t.is_null(i))
            .and_then(|t| DateTime::from_timestamp_micros(t.value(i)))
        {
            Some(t) => {
                dt.append_value(t.format("%Y-%m-%d").to_string());
                hour.append_value(t.format("%H").to_string());
            }
            None => {
                dt.append_null();
                hour.append_null();
            }
        }
    }
    let mut fields: Vec<Arc<Field>> = batch.schema().fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new("dt", DataType::Utf8, true)));
    fields.push(Arc::new(Field::new("hour", DataType::Utf8, true)));
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns.push(Arc::new(dt.finish()));
    columns.push(Arc::new(hour.finish()));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| QueryError::Engine(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_store::schema::{FileRow, RowIdentity, file_batch};

    fn open(path: &str, ktime_ns: u64) -> RecordBatch {
        let row = FileRow {
            id: RowIdentity {
                time: chrono::Utc::now(),
                ktime_ns,
                pid: 7,
                tid: 7,
                comm: "cat".into(),
                cgroup_id: 1,
                container_id: Some("c1".into()),
            },
            event: "open",
            syscall: "openat",
            path: Some(path.into()),
            abs_path: Some(path.into()),
            resolution: "absolute",
            path2: None,
            abs_path2: None,
            flags: Some(0),
            mode: None,
            owner_uid: None,
            owner_gid: None,
            fd: Some(3),
            ret: Some(3),
            kernel_path: Some(path.into()),
            path_resolution: Some("kernel"),
        };
        file_batch("h", &[row])
    }

    #[tokio::test]
    async fn a_row_is_reported_once_and_only_when_new() {
        let mut d = LiveDetector::new(crate::hunt::builtin_rules(), Window::default());
        d.push(Table::File, open("/etc/hostname", 1));
        assert!(d.evaluate().await.unwrap().is_empty());
        d.push(Table::File, open("/etc/shadow", 2));
        let found = d.evaluate().await.unwrap();
        assert!(d.failing().is_empty(), "{:?}", d.failing());
        assert_eq!(
            found.iter().map(|f| f.rule.as_str()).collect::<Vec<_>>(),
            ["QH004"]
        );
        assert_eq!(found[0].ktime_ns, Some(2));
        assert_eq!(found[0].source_table, "file");
        // Evaluated again, and with the same row handed over again: nothing new.
        assert!(d.evaluate().await.unwrap().is_empty());
        d.push(Table::File, open("/etc/shadow", 2));
        assert!(d.evaluate().await.unwrap().is_empty());
    }

    #[test]
    fn single_row_rules_are_told_from_correlating_ones() {
        let rules = crate::hunt::builtin_rules();
        let by_id = |id: &str| rules.iter().find(|r| r.id == id).unwrap();
        assert!(!correlates(&by_id("QH004").sql));
        assert!(correlates(
            "SELECT * FROM file f JOIN process p ON p.pid = f.pid"
        ));
        assert!(correlates("SELECT * FROM processes"));
    }
}
