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
//! State across batches is the window itself: a rule correlating rows (a file written, then
//! executed; a process and its parent's exec) sees both when both are inside it. It is bounded
//! by age ([`Window::max_age`]) and by rows ([`Window::max_rows`]); the oldest batches go first.
//! A correlation whose first row left the window is not found live (`quarry hunt` over the
//! store still finds it). Views that aggregate (the `processes` view) see only the window.
//!
//! This module must not write to a store, deliver alerts or block the recorder: it is handed
//! batches and returns findings; the caller (the binary's detection thread) does the rest.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use chrono::DateTime;
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use quarry_store::Table;
use quarry_store::schema::schema_of;

use crate::hunt::{Finding, Rule, Scope, rule_sql};
use crate::timeline::Rows;
use crate::{QueryError, Result};

/// How much history the live rules see.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// Batches older than this (since they arrived) leave the window.
    pub max_age: Duration,
    /// At most this many rows in the window, all tables together; the oldest batches go first.
    pub max_rows: usize,
}

impl Default for Window {
    fn default() -> Window {
        Window {
            max_age: Duration::from_secs(30),
            max_rows: 200_000,
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
    batches: VecDeque<(Instant, Table, RecordBatch)>,
    rows: usize,
    /// Batches pushed since the last evaluation.
    fresh: usize,
    raised: HashSet<Raised>,
    raised_order: VecDeque<Raised>,
    /// Rules that failed on the last evaluation, with the error (they are tried again).
    failing: Vec<(String, String)>,
}

impl LiveDetector {
    pub fn new(rules: Vec<Rule>, window: Window) -> LiveDetector {
        LiveDetector {
            rules,
            window,
            batches: VecDeque::new(),
            rows: 0,
            fresh: 0,
            raised: HashSet::new(),
            raised_order: VecDeque::new(),
            failing: Vec::new(),
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

    /// Rules whose last evaluation failed, and why.
    pub fn failing(&self) -> &[(String, String)] {
        &self.failing
    }

    /// Adds a batch of `table` (rows of the store's schema for it) to the window.
    pub fn push(&mut self, table: Table, batch: RecordBatch) {
        if batch.num_rows() == 0 {
            return;
        }
        self.rows += batch.num_rows();
        self.fresh += 1;
        self.batches.push_back((Instant::now(), table, batch));
        self.evict(Instant::now());
    }

    /// Whether batches arrived since the last evaluation.
    pub fn has_fresh(&self) -> bool {
        self.fresh > 0
    }

    fn evict(&mut self, now: Instant) {
        while let Some((at, _, batch)) = self.batches.front() {
            let too_old = now.duration_since(*at) > self.window.max_age;
            // The newest batch always stays, however large.
            let too_many = self.rows > self.window.max_rows && self.batches.len() > 1;
            if !(too_old || too_many) {
                break;
            }
            self.rows -= batch.num_rows();
            self.batches.pop_front();
        }
    }

    /// Runs every rule over the window; returns the findings not reported before, in time
    /// order. A rule that fails is skipped (see [`LiveDetector::failing`]); the others run.
    pub async fn evaluate(&mut self) -> Result<Vec<Finding>> {
        self.fresh = 0;
        self.evict(Instant::now());
        let ctx = self.session().await?;
        let mut found = Vec::new();
        self.failing.clear();
        for rule in &self.rules {
            let sql = rule_sql(rule, &Scope::default());
            let batches = match run(&ctx, &sql).await {
                Ok(b) => b,
                Err(e) => {
                    self.failing.push((rule.id.clone(), e.to_string()));
                    continue;
                }
            };
            for batch in &batches {
                let r = Rows::new(batch)?;
                for i in 0..batch.num_rows() {
                    let finding = Finding {
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
                    };
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
        found.sort_by(|a, b| (a.time, &a.rule, a.ktime_ns).cmp(&(b.time, &b.rule, b.ktime_ns)));
        Ok(found)
    }

    /// A session whose store tables are the window's batches (empty tables for the others),
    /// with the views and functions rules use.
    async fn session(&self) -> Result<SessionContext> {
        let config = SessionConfig::new()
            .with_default_catalog_and_schema("quarry", "store")
            .with_target_partitions(1);
        let ctx = SessionContext::new_with_config(config);
        for table in Table::ALL {
            let schema = schema_of(table);
            let mut parts = Vec::new();
            for (_, t, batch) in &self.batches {
                if *t == table {
                    parts.push(with_partition_columns(batch)?);
                }
            }
            let schema = match parts.first() {
                Some(b) => b.schema(),
                None => with_partition_columns(&RecordBatch::new_empty(schema))?.schema(),
            };
            let mem = MemTable::try_new(schema, vec![parts]).map_err(QueryError::Engine)?;
            ctx.register_table(table.name(), Arc::new(mem))
                .map_err(QueryError::Engine)?;
        }
        crate::views::register(&ctx).await?;
        Ok(ctx)
    }
}

async fn run(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    let df = ctx.sql(sql).await.map_err(QueryError::Engine)?;
    df.collect().await.map_err(QueryError::Engine)
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
