//! Worker of live detection: the thread that takes the tap's batches, evaluates the rules
//! over the look-back window, raises the lost-events alert, seals alert rows into the store
//! and hands them to the outputs and the response.
//!
//! It must never make the recorder wait: batches beyond one evaluation's worth stay in the
//! tap's bounded queue (which counts what it cannot hold), and every output and isolation has
//! a thread of its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use arrow::array::{Array, UInt64Array};
use arrow::record_batch::RecordBatch;
use quarry_query::hunt::{Finding, Rule};
use quarry_query::live::LiveDetector;
use quarry_recorder::tap::Tap;
use quarry_store::alert::alert_id;
use quarry_store::schema::{AlertRow, alert_batch};
use quarry_store::{Partition, Store, Table};

use crate::outputs::Outputs;
use crate::respond::Responder;
use crate::{DetectStats, EVALUATE_EVERY, LOST_ALERT_EVERY, LOST_RULE, MAX_PENDING_ROWS};

/// Lost events seen and not alerted yet (rate limit).
#[derive(Default)]
pub(crate) struct LostEvents {
    last_alert: Option<Instant>,
    pending: u64,
    /// The gap row of the first pending loss: the alert names it.
    first: Option<(u64, chrono::DateTime<chrono::Utc>)>,
}

pub(crate) struct Worker {
    pub(crate) detector: LiveDetector,
    /// At most this many bytes of rows wait for an evaluation.
    pub(crate) max_pending_bytes: u64,
    pub(crate) store: Store,
    pub(crate) host: String,
    pub(crate) run_id: u32,
    pub(crate) seq: u64,
    pub(crate) stats: Arc<DetectStats>,
    pub(crate) outputs: Arc<Outputs>,
    pub(crate) responder: Option<Responder>,
    pub(crate) lost: LostEvents,
    pub(crate) tap: Arc<Tap>,
    pub(crate) behind_reported: u64,
    pub(crate) containers: ContainerNames,
}

/// Containers' names and images, for the alerts about them: from the `container` rows the tap
/// hands over, and for a container not seen in them yet (its first seconds) from the runtimes'
/// own records, read at most once a second.
#[derive(Default)]
pub(crate) struct ContainerNames {
    known: HashMap<String, (Option<String>, Option<String>)>,
    discovered: Option<Instant>,
}

/// Most containers remembered; the map is emptied when it would hold more (a recorder on a
/// node that starts this many containers reads them again).
const MAX_CONTAINER_NAMES: usize = 65_536;

impl ContainerNames {
    /// Learns from a batch of `container` rows.
    fn learn(&mut self, batch: &RecordBatch) {
        use arrow::array::StringArray;
        let (Some(ids), Some(names), Some(images)) = (
            column::<StringArray>(batch, "container_id"),
            column::<StringArray>(batch, "name"),
            column::<StringArray>(batch, "image"),
        ) else {
            return;
        };
        if self.known.len() > MAX_CONTAINER_NAMES {
            self.known.clear();
        }
        for i in 0..batch.num_rows() {
            if ids.is_null(i) {
                continue;
            }
            let text = |a: &StringArray| (!a.is_null(i)).then(|| a.value(i).to_string());
            self.known
                .insert(ids.value(i).to_string(), (text(names), text(images)));
        }
    }

    /// The name and image of container `id`, when known.
    fn of(&mut self, id: &str) -> (Option<String>, Option<String>) {
        if let Some(found) = self.known.get(id) {
            return found.clone();
        }
        if self
            .discovered
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            self.discovered = Some(Instant::now());
            for c in quarry_containers::Inventory::discover().containers {
                self.known.insert(c.id, (c.name, c.image));
            }
        }
        self.known.get(id).cloned().unwrap_or_default()
    }
}

impl Worker {
    pub(crate) fn run(&mut self, rx: Receiver<(Table, RecordBatch)>, stop: &AtomicBool) {
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
            if self.wants_rows() {
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
            while self.wants_rows() {
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

    /// Whether one more batch fits what waits for the next evaluation.
    fn wants_rows(&self) -> bool {
        self.detector.pending_rows() < MAX_PENDING_ROWS
            && self.detector.pending_bytes() < self.max_pending_bytes
    }

    fn take(&mut self, table: Table, batch: RecordBatch) {
        self.tap.taken(&batch);
        if table == Table::Gap {
            self.count_lost(&batch);
        }
        if table == Table::Container {
            self.containers.learn(&batch);
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
            .map(|f| {
                let mut row = alert_row(f, &self.host, self.detector.rules());
                if let Some(id) = &f.container_id {
                    (row.container_name, row.image) = self.containers.of(id);
                }
                row
            })
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
                "{} alerts could not be sealed into the alert table (they are still sent): {}",
                rows.len(),
                quarry_store::human::with_causes(&e)
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
fn alert_row(f: &Finding, host: &str, rules: &[Rule]) -> AlertRow {
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

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_store::schema::{ContainerRow, container_batch};

    #[test]
    fn container_rows_name_the_containers_of_alerts() {
        let row = ContainerRow {
            time: chrono::Utc::now(),
            container_id: "c0ffee".into(),
            name: Some("web".into()),
            runtime: "podman".into(),
            image: Some("docker.io/library/nginx:1".into()),
            cgroup_id: Some(7),
            cgroup_path: "/machine.slice/libpod-c0ffee.scope".into(),
            init_pid: Some(70),
            netns_inode: None,
            host_network: false,
            created: None,
            pod_uid: None,
            pod_name: None,
            pod_namespace: None,
            first_seen: chrono::Utc::now(),
            last_seen: chrono::Utc::now(),
            events: 1,
        };
        let mut names = ContainerNames::default();
        names.learn(&container_batch("h", &[row]));
        assert_eq!(
            names.of("c0ffee"),
            (Some("web".into()), Some("docker.io/library/nginx:1".into()))
        );
    }
}
