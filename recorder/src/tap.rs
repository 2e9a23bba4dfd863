//! A copy of the rows on their way to the sealer, for live detection.
//!
//! The drain loop hands every batch of the decoded tables (process, file, net, gap, container)
//! that the sealer took to [`Tap::offer`], which puts a reference to it (Arrow buffers are
//! shared, nothing is copied) in a bounded queue and never waits: when the consumer is behind
//! and the queue is full (in batches, or in the bytes of the batches it holds, which are kept
//! alive by the queue once the sealer is done with them), the batch is not offered and its
//! rows are counted ([`Tap::behind`]). The consumer says what it took ([`Tap::taken`]). The recording itself never depends on the consumer: a batch is offered
//! only after the sealer has taken it, and a slow or stopped consumer loses nothing but
//! detection.
//!
//! The raw syscall stream (`syscall`) is not offered: it is millions of rows a second and no
//! live rule reads it.
//!
//! With a tap, the drain loop also hands the rows it holds to the sealer every
//! [`Tap::interval`] (as row groups of the open segments, which are still sealed on the seal
//! tick), so a rule sees a row within that interval rather than within the seal interval.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use quarry_store::Table;

/// The bounded queue between the drain loop and a detection consumer.
pub struct Tap {
    tx: SyncSender<(Table, RecordBatch)>,
    interval: Duration,
    max_bytes: u64,
    /// Bytes of the batches offered and not yet taken.
    queued_bytes: AtomicU64,
    behind_batches: AtomicU64,
    behind_rows: AtomicU64,
}

impl std::fmt::Debug for Tap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tap")
            .field("interval", &self.interval)
            .field("behind_rows", &self.behind_rows.load(Ordering::Relaxed))
            .finish()
    }
}

impl Tap {
    /// A tap holding at most `capacity` batches of at most `max_bytes` in all, and its
    /// receiving end. Rows reach the tap at most `interval` after they were decoded.
    pub fn new(
        capacity: usize,
        max_bytes: u64,
        interval: Duration,
    ) -> (Tap, Receiver<(Table, RecordBatch)>) {
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        (
            Tap {
                tx,
                interval,
                max_bytes,
                queued_bytes: AtomicU64::new(0),
                behind_batches: AtomicU64::new(0),
                behind_rows: AtomicU64::new(0),
            },
            rx,
        )
    }

    /// What the consumer calls for each batch it received: its bytes leave the tap's count.
    pub fn taken(&self, batch: &RecordBatch) {
        let bytes = batch.get_array_memory_size() as u64;
        // Saturating: never below zero, whatever the order of offers and takes.
        let _ = self
            .queued_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                Some(q.saturating_sub(bytes))
            });
    }

    /// Bytes of the batches offered and not taken yet.
    pub fn queued_bytes(&self) -> u64 {
        self.queued_bytes.load(Ordering::Relaxed)
    }

    /// Whether rows of `table` are offered.
    pub fn wants(table: Table) -> bool {
        matches!(
            table,
            Table::Process | Table::File | Table::Net | Table::Gap | Table::Container
        )
    }

    /// Offers a batch the sealer took; never waits.
    pub fn offer(&self, table: Table, batch: &RecordBatch) {
        if !Tap::wants(table) || batch.num_rows() == 0 {
            return;
        }
        let bytes = batch.get_array_memory_size() as u64;
        let behind = || {
            self.behind_batches.fetch_add(1, Ordering::Relaxed);
            self.behind_rows
                .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        };
        // Over the byte budget: not offered (one batch is always let through to an empty tap,
        // however large, so that detection is never starved by one big batch).
        let queued = self.queued_bytes.load(Ordering::Relaxed);
        if queued > 0 && queued + bytes > self.max_bytes {
            behind();
            return;
        }
        match self.tx.try_send((table, batch.clone())) {
            Ok(()) => {
                self.queued_bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            // A consumer that is gone is behind for good: the rows are counted the same way.
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => behind(),
        }
    }

    /// How often the drain loop hands its rows over when a tap is set.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Batches and rows not offered because the consumer was behind (all of them recorded).
    pub fn behind(&self) -> (u64, u64) {
        (
            self.behind_batches.load(Ordering::Relaxed),
            self.behind_rows.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_store::schema::{GapReason, GapRow, gap_batch};

    fn one_gap() -> RecordBatch {
        gap_batch(
            "h",
            &[GapRow {
                time: chrono::Utc::now(),
                ktime_ns: 1,
                cpu: 0,
                lost: 3,
                since: chrono::Utc::now(),
                reason: GapReason::RingBufferFull,
                lost_table: None,
            }],
        )
    }

    #[test]
    fn a_full_queue_counts_instead_of_waiting() {
        let (tap, rx) = Tap::new(1, u64::MAX, Duration::from_secs(1));
        tap.offer(Table::Gap, &one_gap());
        tap.offer(Table::Gap, &one_gap());
        assert_eq!(tap.behind(), (1, 1));
        let (_, taken) = rx.try_recv().unwrap();
        tap.taken(&taken);
        tap.offer(Table::Gap, &one_gap());
        assert_eq!(tap.behind(), (1, 1));
        // The raw stream is never offered.
        assert!(!Tap::wants(Table::Syscall));
    }

    #[test]
    fn the_byte_budget_bounds_what_waits_and_taking_frees_it() {
        let batch = one_gap();
        let bytes = batch.get_array_memory_size() as u64;
        // Room for two batches' bytes, in a queue of many batches.
        let (tap, rx) = Tap::new(100, 2 * bytes, Duration::from_secs(1));
        for _ in 0..3 {
            tap.offer(Table::Gap, &batch);
        }
        assert_eq!(tap.behind(), (1, 1), "the third is over the budget");
        assert_eq!(tap.queued_bytes(), 2 * bytes);
        let (_, taken) = rx.try_recv().unwrap();
        tap.taken(&taken);
        tap.offer(Table::Gap, &batch);
        assert_eq!(tap.behind(), (1, 1), "room again after a take");
    }
}
