//! From decoded rows to sealed segments.
//!
//! The drain loop appends rows to per-partition Arrow builders ([`Batches`]); on every seal tick
//! the builders are finished and handed to the sealer thread ([`Sealer`]), which writes them
//! with [`Store::seal`]. Encoding and fsync happen off the drain loop so a slow disk never
//! holds up draining the ring buffer. A batch whose seal fails (a full disk, say) is kept and
//! retried, never dropped.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};
use quarry_recorder_common::SyscallEvent;
use quarry_store::schema::{
    FileRow, GapRow, NetRow, ProcessRow, SyscallBuilder, file_batch, gap_batch, net_batch,
    process_batch,
};
use quarry_store::{Partition, Store, Table};

use crate::decode::c_string;
use crate::stats::Stats;
use crate::syscalls::syscall_name;

/// Rows of one partition waiting to be sealed.
enum Pending {
    Process(Vec<ProcessRow>),
    File(Vec<FileRow>),
    Net(Vec<NetRow>),
    Syscall(Box<SyscallBuilder>),
    Gap(Vec<GapRow>),
}

impl Pending {
    fn new(table: Table) -> Pending {
        match table {
            Table::Process => Pending::Process(Vec::new()),
            Table::File => Pending::File(Vec::new()),
            Table::Net => Pending::Net(Vec::new()),
            Table::Syscall => Pending::Syscall(Box::default()),
            Table::Gap => Pending::Gap(Vec::new()),
            Table::Container | Table::Action => {
                unreachable!("container rows are built at seal time; actions are not recorded")
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Pending::Process(v) => v.len(),
            Pending::File(v) => v.len(),
            Pending::Net(v) => v.len(),
            Pending::Syscall(b) => b.len(),
            Pending::Gap(v) => v.len(),
        }
    }

    fn finish(&mut self, host: &str) -> RecordBatch {
        match self {
            Pending::Process(v) => process_batch(host, v),
            Pending::File(v) => file_batch(host, v),
            Pending::Net(v) => net_batch(host, v),
            Pending::Syscall(b) => b.finish(),
            Pending::Gap(v) => gap_batch(host, v),
        }
    }
}

/// Microseconds in an hour: partitions are hours.
const HOUR_MICROS: i64 = 3_600_000_000;

/// Rows waiting to be sealed, grouped by table and hour (the partition, minus the host that is
/// the same for all). Keyed by integers so the per-row lookup on the hot path is cheap.
pub struct Batches {
    host: String,
    parts: BTreeMap<(Table, i64), Pending>,
    rows: usize,
}

impl Batches {
    pub fn new(host: String) -> Batches {
        Batches {
            host,
            parts: BTreeMap::new(),
            rows: 0,
        }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    fn part(&mut self, table: Table, time: DateTime<Utc>) -> &mut Pending {
        self.rows += 1;
        let hour = time.timestamp_micros().div_euclid(HOUR_MICROS);
        self.parts
            .entry((table, hour))
            .or_insert_with(|| Pending::new(table))
    }

    pub fn push_process(&mut self, row: ProcessRow) {
        if let Pending::Process(v) = self.part(Table::Process, row.id.time) {
            v.push(row);
        }
    }

    pub fn push_file(&mut self, row: FileRow) {
        if let Pending::File(v) = self.part(Table::File, row.id.time) {
            v.push(row);
        }
    }

    pub fn push_net(&mut self, row: NetRow) {
        let time = row.id.as_ref().map(|i| i.time).unwrap_or_else(Utc::now);
        if let Pending::Net(v) = self.part(Table::Net, time) {
            v.push(row);
        }
    }

    pub fn push_gap(&mut self, row: GapRow) {
        if let Pending::Gap(v) = self.part(Table::Gap, row.time) {
            v.push(row);
        }
    }

    /// Appends one raw-stream record without building a row struct (or allocating).
    pub fn push_syscall(&mut self, ev: &SyscallEvent, time_micros: i64) {
        self.rows += 1;
        let hour = time_micros.div_euclid(HOUR_MICROS);
        let Pending::Syscall(b) = self
            .parts
            .entry((Table::Syscall, hour))
            .or_insert_with(|| Pending::new(Table::Syscall))
        else {
            return;
        };
        let h = &ev.header;
        let end = h.comm.iter().position(|&c| c == 0).unwrap_or(h.comm.len());
        let lossy;
        let comm = match std::str::from_utf8(&h.comm[..end]) {
            Ok(c) => c,
            Err(_) => {
                lossy = c_string(&h.comm);
                &lossy
            }
        };
        b.append(
            &self.host,
            time_micros,
            h.ktime_ns,
            h.pid as i32,
            h.tid as i32,
            comm,
            h.cgroup_id,
            ev.nr as i32,
            syscall_name(ev.nr).unwrap_or("unknown"),
            ev.ret,
        );
    }

    /// Rows held right now.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Rows held in the largest partition (to seal early before memory grows).
    pub fn largest(&self) -> usize {
        self.parts.values().map(Pending::len).max().unwrap_or(0)
    }

    /// Finishes every partition into a batch.
    pub fn take(&mut self) -> Vec<(Partition, RecordBatch)> {
        self.rows = 0;
        let host = self.host.clone();
        std::mem::take(&mut self.parts)
            .into_iter()
            .filter(|(_, p)| p.len() > 0)
            .map(|((table, hour), mut p)| {
                let start = DateTime::from_timestamp_micros(hour * HOUR_MICROS).unwrap_or_default();
                let partition = Partition::for_time(table, start, &host);
                (partition, p.finish(&host))
            })
            .collect()
    }
}

/// The sealing thread and the channel to it.
pub struct Sealer {
    tx: mpsc::Sender<(Partition, RecordBatch)>,
    thread: JoinHandle<()>,
}

/// How long the sealer waits before retrying a batch that failed to seal.
const RETRY_AFTER: Duration = Duration::from_secs(2);

impl Sealer {
    pub fn spawn(store: Store, run_id: u32, stats: Arc<Stats>) -> Sealer {
        let (tx, rx) = mpsc::channel::<(Partition, RecordBatch)>();
        let thread = std::thread::Builder::new()
            .name("quarry-sealer".into())
            .spawn(move || {
                let mut queue = VecDeque::new();
                let mut seq = 0u64;
                let mut open = true;
                while open || !queue.is_empty() {
                    match rx.recv_timeout(RETRY_AFTER) {
                        Ok(job) => queue.push_back(job),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => open = false,
                    }
                    while let Ok(job) = rx.try_recv() {
                        queue.push_back(job);
                    }
                    seal_queue(&store, run_id, &mut seq, &mut queue, &stats);
                    if !open && !queue.is_empty() {
                        // Shutting down with a failing disk: the rows stay in memory only while
                        // we keep retrying, so say loudly what is at stake.
                        let rows: usize = queue.iter().map(|(_, b)| b.num_rows()).sum();
                        log::error!(
                            "{rows} rows are not sealed yet: {}; retrying",
                            stats
                                .last_error
                                .lock()
                                .unwrap()
                                .as_deref()
                                .unwrap_or("unknown error")
                        );
                        std::thread::sleep(RETRY_AFTER);
                    }
                }
            })
            .expect("spawning the sealer thread");
        Sealer { tx, thread }
    }

    pub fn submit(&self, partition: Partition, batch: RecordBatch) {
        // The receiver lives until `finish`, which consumes self: send cannot fail before.
        let _ = self.tx.send((partition, batch));
    }

    /// Waits until everything submitted is sealed.
    pub fn finish(self) {
        drop(self.tx);
        let _ = self.thread.join();
    }
}

fn seal_queue(
    store: &Store,
    run_id: u32,
    seq: &mut u64,
    queue: &mut VecDeque<(Partition, RecordBatch)>,
    stats: &Stats,
) {
    while let Some((partition, batch)) = queue.front() {
        match store.seal(partition, batch, run_id, *seq) {
            Ok(sealed) => {
                *seq += 1;
                let rows = batch.num_rows() as u64;
                stats.rows_sealed.fetch_add(rows, Ordering::Relaxed);
                stats.segments_sealed.fetch_add(1, Ordering::Relaxed);
                stats
                    .bytes_sealed
                    .fetch_add(sealed.entry.body.bytes, Ordering::Relaxed);
                *stats.last_segment.lock().unwrap() = Some(sealed.path);
                *stats.last_error.lock().unwrap() = None;
                queue.pop_front();
            }
            Err(e) => {
                // The sequence number is still bumped: a failed attempt may have left a staging
                // file of that name behind, and names are never reused.
                *seq += 1;
                log::warn!("sealing a {} segment failed: {e}", partition.table);
                *stats.last_error.lock().unwrap() = Some(e.to_string());
                return;
            }
        }
    }
}
