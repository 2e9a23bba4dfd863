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
use quarry_store::schema::{ProcessBuilder, ProcessRow};
use quarry_store::{Partition, Store, Table};

use crate::stats::Stats;

/// Rows waiting to be sealed, grouped by partition.
pub struct Batches {
    host: String,
    process: BTreeMap<Partition, ProcessBuilder>,
}

impl Batches {
    pub fn new(host: String) -> Batches {
        Batches {
            host,
            process: BTreeMap::new(),
        }
    }

    pub fn push_process(&mut self, row: &ProcessRow) {
        let partition = Partition::for_time(Table::Process, row.id.time, &self.host);
        self.process
            .entry(partition)
            .or_default()
            .append(&self.host, row);
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// Rows held right now.
    pub fn len(&self) -> usize {
        self.process.values().map(ProcessBuilder::len).sum()
    }

    /// Finishes every non-empty builder into a batch.
    pub fn take(&mut self) -> Vec<(Partition, RecordBatch)> {
        std::mem::take(&mut self.process)
            .into_iter()
            .filter(|(_, b)| !b.is_empty())
            .map(|(p, mut b)| (p, b.finish()))
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
