//! Live detection in `quarry record`: rules on the rows being sealed, alerts into the store's
//! `alert` table and out to the configured outputs, the lost-events alert, the optional
//! response, and the metrics endpoint.
//!
//! ```text
//! drain loop ──(tap: bounded, never waits)──► detection thread ──► alert table (sealed)
//!                                               │  LiveDetector     ├► outputs (a bounded queue
//!                                               │  (look-back        │   and thread each)
//!                                               │   window)          └► response (isolate)
//! ```
//!
//! The recorder never waits for anything here: the tap drops (and counts) batches when this
//! thread is behind, every output has its own queue and thread, and an isolation runs on a
//! thread of its own. What detection misses is still recorded: `quarry hunt` finds it later.
//! This module must not change what is recorded, and must not isolate anything unless
//! `--respond` asked for it.

mod args;
mod metrics;
mod outputs;
mod respond;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use arrow::array::{Array, UInt64Array};
use arrow::record_batch::RecordBatch;
use quarry_query::hunt::{self, Finding, Rule};
use quarry_query::live::{LiveDetector, Window};
use quarry_recorder::stats::Stats;
use quarry_recorder::tap::Tap;
use quarry_store::alert::{AlertFormat, alert_id};
use quarry_store::schema::{AlertRow, alert_batch};
use quarry_store::{Partition, Store, Table};

pub use args::DetectArgs;
use outputs::Outputs;
use respond::Responder;

/// How often the rules run over the window (when new rows arrived).
pub const EVALUATE_EVERY: Duration = Duration::from_millis(500);
/// At most this many rows wait for one evaluation; the rest wait in the tap's queue.
pub const MAX_PENDING_ROWS: usize = 200_000;
/// How often the drain loop hands rows to the sealer and the tap.
pub const TAP_INTERVAL: Duration = Duration::from_millis(500);
/// Batches the tap holds for the detection thread.
pub const TAP_CAPACITY: usize = 256;
/// At most one lost-events alert in this interval; the losses in between are summed into it.
pub const LOST_ALERT_EVERY: Duration = Duration::from_secs(60);
/// The lost-events alert's rule id.
pub const LOST_RULE: &str = "QR001";

/// Counters of the detection side, for `--metrics` and the summary.
#[derive(Default)]
pub struct DetectStats {
    pub alerts: Mutex<BTreeMap<String, u64>>,
    pub evaluations: AtomicU64,
    pub alerts_not_sealed: AtomicU64,
    /// Microseconds the last evaluation took.
    pub last_evaluation_us: AtomicU64,
}

/// The running detection thread.
pub struct Detection {
    thread: JoinHandle<()>,
    stop: Arc<AtomicBool>,
    pub stats: Arc<DetectStats>,
    pub tap: Arc<Tap>,
    outputs: Arc<Outputs>,
}

/// Everything detection needs, parsed and checked before recording starts.
pub struct Plan {
    pub rules: Vec<Rule>,
    pub outputs: Vec<outputs::OutputSpec>,
    pub format: AlertFormat,
    pub responder: Option<Responder>,
    pub metrics: Option<std::net::SocketAddr>,
}

impl Plan {
    /// The plan of `args`, or `None` with `--no-detect` (metrics may still be served).
    pub fn from_args(args: &DetectArgs, store: &std::path::Path) -> anyhow::Result<Option<Plan>> {
        if args.no_detect {
            return Ok(None);
        }
        let mut rules = hunt::builtin_rules();
        if let Some(dir) = &args.rules {
            rules.extend(
                hunt::load_rules(dir)
                    .with_context(|| format!("loading rules from {}", dir.display()))?,
            );
        }
        if let Some(dir) = &args.sigma {
            let loaded = quarry_query::sigma::load_dir(dir)
                .with_context(|| format!("loading Sigma rules from {}", dir.display()))?;
            for refused in &loaded.refused {
                eprintln!("quarry: skipped {refused}");
            }
            rules.extend(loaded.rules);
        }
        let outputs = if args.alert_output.is_empty() {
            vec![outputs::OutputSpec::Stdout]
        } else {
            args.alert_output
                .iter()
                .map(|o| o.parse())
                .collect::<anyhow::Result<_>>()?
        };
        let responder = if args.respond.is_empty() {
            None
        } else {
            Some(Responder::new(&args.respond, store)?)
        };
        Ok(Some(Plan {
            rules,
            outputs,
            format: match args.alert_format {
                args::AlertFormatArg::Falco => AlertFormat::Falco,
                args::AlertFormatArg::Ocsf => AlertFormat::Ocsf,
            },
            responder,
            metrics: args.metrics,
        }))
    }
}

impl Detection {
    /// The thread reading `rx`, the tap's receiving end (the tap is in the recorder's config).
    pub fn start(
        plan: Plan,
        store: Store,
        host: String,
        stats: Arc<Stats>,
        tap: Arc<Tap>,
        rx: Receiver<(Table, RecordBatch)>,
    ) -> Detection {
        let stop = Arc::new(AtomicBool::new(false));
        let dstats = Arc::new(DetectStats::default());
        let outputs = Arc::new(Outputs::start(&plan.outputs, plan.format, &host));
        if let Some(addr) = plan.metrics {
            metrics::serve(
                addr,
                metrics::Sources {
                    recorder: stats.clone(),
                    detect: Some(dstats.clone()),
                    tap: Some(tap.clone()),
                    outputs: Some(outputs.clone()),
                },
            );
        }
        let mut worker = Worker {
            detector: LiveDetector::new(plan.rules, Window::default()),
            store,
            host,
            run_id: std::process::id().rotate_left(8) ^ 0x00a1_e7a1,
            seq: 0,
            stats: dstats.clone(),
            outputs: outputs.clone(),
            responder: plan.responder,
            lost: LostEvents::default(),
            tap: tap.clone(),
            behind_reported: 0,
        };
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("quarry-detect".into())
            .spawn(move || worker.run(rx, &thread_stop))
            .expect("spawning the detection thread");
        Detection {
            thread,
            stop,
            stats: dstats,
            tap,
            outputs,
        }
    }

    /// Evaluates what is left, waits for the outputs to send what they hold (a few seconds at
    /// most) and stops.
    pub fn finish(self) -> Summary {
        self.stop.store(true, Ordering::Release);
        let _ = self.thread.join();
        self.outputs.finish();
        let alerts = self
            .stats
            .alerts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .sum();
        Summary {
            alerts,
            behind_rows: self.tap.behind().1,
            output_drops: self.outputs.dropped(),
        }
    }
}

/// What detection did over a recording.
pub struct Summary {
    pub alerts: u64,
    pub behind_rows: u64,
    pub output_drops: u64,
}

/// Serves `--metrics` without detection (`--no-detect`).
pub fn serve_metrics_only(addr: std::net::SocketAddr, stats: Arc<Stats>) {
    metrics::serve(
        addr,
        metrics::Sources {
            recorder: stats,
            detect: None,
            tap: None,
            outputs: None,
        },
    );
}

/// Lost events seen and not alerted yet (rate limit).
#[derive(Default)]
struct LostEvents {
    last_alert: Option<Instant>,
    pending: u64,
    /// The gap row of the first pending loss: the alert names it.
    first: Option<(u64, chrono::DateTime<chrono::Utc>)>,
}

struct Worker {
    detector: LiveDetector,
    store: Store,
    host: String,
    run_id: u32,
    seq: u64,
    stats: Arc<DetectStats>,
    outputs: Arc<Outputs>,
    responder: Option<Responder>,
    lost: LostEvents,
    tap: Arc<Tap>,
    behind_reported: u64,
}

impl Worker {
    fn run(&mut self, rx: Receiver<(Table, RecordBatch)>, stop: &AtomicBool) {
        let runtime = match tokio::runtime::Builder::new_current_thread().build() {
            Ok(r) => r,
            Err(e) => {
                log::error!("detection is off: cannot start its runtime: {e}");
                return;
            }
        };
        let mut next = Instant::now() + EVALUATE_EVERY;
        loop {
            let stopping = stop.load(Ordering::Acquire);
            // Batches beyond what one evaluation takes stay in the tap's queue, so that a
            // detection slower than the event rate fills the queue (which counts what it
            // could not take) instead of this thread's memory.
            if self.detector.pending_rows() < MAX_PENDING_ROWS {
                match rx.recv_timeout(if stopping {
                    Duration::ZERO
                } else {
                    EVALUATE_EVERY / 5
                }) {
                    Ok((table, batch)) => self.take(table, batch),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => {}
                }
            }
            while self.detector.pending_rows() < MAX_PENDING_ROWS {
                match rx.try_recv() {
                    Ok((table, batch)) => self.take(table, batch),
                    Err(_) => break,
                }
            }
            let now = Instant::now();
            if stopping || now >= next {
                next = now + EVALUATE_EVERY;
                self.report_behind();
                self.lost_alert(stopping);
                if self.detector.has_fresh() {
                    let started = Instant::now();
                    match runtime.block_on(self.detector.evaluate()) {
                        Ok(found) => self.raise(found),
                        Err(e) => log::error!("live detection failed (recording goes on): {e}"),
                    }
                    self.stats.evaluations.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .last_evaluation_us
                        .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                    for (rule, error) in self.detector.failing() {
                        log::warn!("live rule {rule} failed: {error}");
                    }
                }
            }
            if stopping {
                // What is still queued is evaluated too before the end.
                match rx.try_recv() {
                    Ok((table, batch)) => self.take(table, batch),
                    Err(_) => return,
                }
            }
        }
    }

    fn take(&mut self, table: Table, batch: RecordBatch) {
        if table == Table::Gap {
            self.count_lost(&batch);
        }
        self.detector.push(table, batch);
    }

    /// Says (once per increase, at most every evaluation) that detection fell behind.
    fn report_behind(&mut self) {
        let (_, rows) = self.tap.behind();
        if rows > self.behind_reported {
            log::warn!(
                "live detection is behind: {} rows were recorded but not evaluated live \
                 ({} in all); `quarry hunt` over the store covers them",
                rows - self.behind_reported,
                rows
            );
            self.behind_reported = rows;
        }
    }

    fn count_lost(&mut self, batch: &RecordBatch) {
        let (Some(lost), Some(ktime)) = (
            column::<UInt64Array>(batch, "lost"),
            column::<UInt64Array>(batch, "ktime_ns"),
        ) else {
            return;
        };
        for i in 0..batch.num_rows() {
            if lost.is_null(i) || lost.value(i) == 0 {
                continue;
            }
            self.lost.pending += lost.value(i);
            if self.lost.first.is_none() {
                let time = batch
                    .column_by_name("time")
                    .and_then(|c| {
                        c.as_any()
                            .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
                    })
                    .and_then(|t| chrono::DateTime::from_timestamp_micros(t.value(i)))
                    .unwrap_or_else(chrono::Utc::now);
                self.lost.first = Some((ktime.value(i), time));
            }
        }
    }

    /// The lost-events alert, at most once per [`LOST_ALERT_EVERY`] (and at the end).
    fn lost_alert(&mut self, stopping: bool) {
        if self.lost.pending == 0 {
            return;
        }
        if !stopping
            && self
                .lost
                .last_alert
                .is_some_and(|at| at.elapsed() < LOST_ALERT_EVERY)
        {
            return;
        }
        let (ktime_ns, event_time) = self.lost.first.take().unwrap_or((0, chrono::Utc::now()));
        let lost = std::mem::take(&mut self.lost.pending);
        self.lost.last_alert = Some(Instant::now());
        let row = AlertRow {
            time: chrono::Utc::now(),
            alert_id: alert_id(LOST_RULE, &self.host, Some("gap"), Some(ktime_ns), None),
            rule: LOST_RULE.into(),
            title: "Events were lost: the record has a gap".into(),
            severity: "high".into(),
            rule_source: "recorder".into(),
            mitre: vec!["T1562.006".into()],
            tags: vec!["recorder".into(), "event_drop".into()],
            evidence: format!(
                "{lost} events or rows were lost since the last such alert (kernel ring buffer \
                 full, sealing behind or failing); `SELECT * FROM gap` says where"
            ),
            source_table: Some("gap".into()),
            event_time: Some(event_time),
            ktime_ns: Some(ktime_ns),
            fields: Some(serde_json::json!({ "quarry.lost": lost }).to_string()),
            ..Default::default()
        };
        self.deliver(vec![row]);
    }

    fn raise(&mut self, found: Vec<Finding>) {
        if found.is_empty() {
            return;
        }
        let rows: Vec<AlertRow> = found
            .iter()
            .map(|f| alert_row(f, &self.host, self.detector.rules()))
            .collect();
        if let Some(responder) = &mut self.responder {
            for (finding, row) in found.iter().zip(&rows) {
                responder.consider(finding, row);
            }
        }
        self.deliver(rows);
    }

    /// Seals the alerts into the store, then hands them to the outputs.
    fn deliver(&mut self, rows: Vec<AlertRow>) {
        let now = chrono::Utc::now();
        {
            let mut per_rule = self
                .stats
                .alerts
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for r in &rows {
                *per_rule.entry(r.rule.clone()).or_default() += 1;
            }
        }
        self.seq += 1;
        let partition = Partition::for_time(Table::Alert, now, &self.host);
        let batch = alert_batch(&self.host, &rows);
        if let Err(e) = self.store.seal(&partition, &batch, self.run_id, self.seq) {
            self.stats
                .alerts_not_sealed
                .fetch_add(rows.len() as u64, Ordering::Relaxed);
            log::error!(
                "{} alerts could not be sealed into the alert table (they are still sent): {:#}",
                rows.len(),
                anyhow::Error::new(e)
            );
        }
        for row in &rows {
            self.outputs.send(row);
        }
    }
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Option<&'a T> {
    batch.column_by_name(name)?.as_any().downcast_ref::<T>()
}

/// Where a rule came from, as the alert table says it.
fn rule_source(rule: Option<&Rule>) -> &'static str {
    match rule.map(|r| r.origin.as_str()) {
        Some(o) if o.starts_with("builtin:") => "builtin",
        Some(o) if o.contains(".yml") || o.contains(".yaml") => "sigma",
        _ => "rules",
    }
}

/// The alert row of a finding.
pub fn alert_row(f: &Finding, host: &str, rules: &[Rule]) -> AlertRow {
    let rule = rules.iter().find(|r| r.id == f.rule);
    let host_of_row = f.host.as_deref().unwrap_or(host);
    let pid = f.pid.and_then(|p| i32::try_from(p).ok());
    AlertRow {
        time: chrono::Utc::now(),
        alert_id: alert_id(&f.rule, host_of_row, Some(&f.source_table), f.ktime_ns, pid),
        rule: f.rule.clone(),
        title: f.title.clone(),
        severity: f.severity.as_str().into(),
        rule_source: rule_source(rule).into(),
        mitre: f.mitre.clone(),
        tags: Vec::new(),
        evidence: f.evidence.clone(),
        source_table: Some(f.source_table.clone()),
        event_time: Some(f.time),
        ktime_ns: f.ktime_ns,
        pid,
        comm: f.comm.clone(),
        container_id: f.container_id.clone(),
        container_name: None,
        image: None,
        fields: None,
    }
}
