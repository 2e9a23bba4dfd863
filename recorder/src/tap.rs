//! A copy of the rows on their way to the sealer, for live detection.
//!
//! The drain loop hands every batch of the decoded tables (process, file, net, gap, container)
//! that the sealer took to [`Tap::offer`], which puts a reference to it (Arrow buffers are
//! shared, nothing is copied) in a bounded queue and never waits: when the consumer is behind
//! and the queue is full, the batch is not offered and its rows are counted
//! ([`Tap::behind`]). The recording itself never depends on the consumer: a batch is offered
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
    /// A tap holding at most `capacity` batches, and its receiving end. Rows reach the tap at
    /// most `interval` after they were decoded.
    pub fn new(capacity: usize, interval: Duration) -> (Tap, Receiver<(Table, RecordBatch)>) {
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        (
            Tap {
                tx,
                interval,
                behind_batches: AtomicU64::new(0),
                behind_rows: AtomicU64::new(0),
            },
            rx,
        )
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
        match self.tx.try_send((table, batch.clone())) {
            Ok(()) => {}
            // A consumer that is gone is behind for good: the rows are counted the same way.
            Err(TrySendError::Full((_, b))) | Err(TrySendError::Disconnected((_, b))) => {
                self.behind_batches.fetch_add(1, Ordering::Relaxed);
                self.behind_rows
                    .fetch_add(b.num_rows() as u64, Ordering::Relaxed);
            }
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
        let (tap, rx) = Tap::new(1, Duration::from_secs(1));
        tap.offer(Table::Gap, &one_gap());
        tap.offer(Table::Gap, &one_gap());
        assert_eq!(tap.behind(), (1, 1));
        assert!(rx.try_recv().is_ok());
        tap.offer(Table::Gap, &one_gap());
        assert_eq!(tap.behind(), (1, 1));
        // The raw stream is never offered.
        assert!(!Tap::wants(Table::Syscall));
    }
}
