//! Live counters of a running recorder, read by the status line.

use std::path::PathBuf;
use std::sync::PoisonError;

use quarry_store::Table;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared between the drain loop, the sealer and whoever prints status.
#[derive(Debug, Default)]
pub struct Stats {
    /// Records decoded from the ring buffer.
    pub events: AtomicU64,
    /// Rows decoded per table, in `Table::ALL` order.
    pub table_rows: [AtomicU64; Table::ALL.len()],
    /// Records the kernel could not fit in the ring buffer (sum over CPUs).
    pub kernel_drops: AtomicU64,
    /// Records that did not decode (a kernel/user version mismatch).
    pub undecodable: AtomicU64,
    pub rows_sealed: AtomicU64,
    pub segments_sealed: AtomicU64,
    pub bytes_sealed: AtomicU64,
    /// Rows decoded and held in builders, not yet handed to the sealer.
    pub rows_buffered: AtomicU64,
    /// Rows handed to the sealer (sealed or waiting for a retry).
    pub rows_submitted: AtomicU64,
    /// Rows decoded and not kept: refused by a sealer over its budget, written into a segment
    /// that then failed, or given up at exit with the disk still failing. Written as `gap`
    /// rows when the disk allows.
    pub rows_lost: AtomicU64,
    /// Of `rows_lost`, those handed to the sealer and never sealed (a failed segment, or
    /// given up at exit).
    pub rows_abandoned: AtomicU64,
    /// Why sealing is failing right now (a `GapReason` string), `None` when it works.
    pub degraded: Mutex<Option<&'static str>>,
    pub last_segment: Mutex<Option<PathBuf>>,
    /// The last sealing error, cleared by the next successful seal.
    pub last_error: Mutex<Option<String>>,
    /// What happened to the execs offered for hashing (`exe_sha256`).
    pub exe_hash: std::sync::Arc<crate::exehash::ExeHashStats>,
}

/// A point-in-time copy of [`Stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub events: u64,
    /// (table, rows decoded since start)
    pub table_rows: Vec<(Table, u64)>,
    pub kernel_drops: u64,
    pub undecodable: u64,
    pub rows_sealed: u64,
    pub segments_sealed: u64,
    pub bytes_sealed: u64,
    /// Rows decoded but not sealed yet (nor given up).
    pub rows_pending: u64,
    /// Rows decoded and not kept (see [`Stats::rows_lost`]).
    pub rows_lost: u64,
    /// Why sealing is failing right now, `None` when it works.
    pub degraded: Option<&'static str>,
    pub last_segment: Option<PathBuf>,
    pub last_error: Option<String>,
    /// Exec hash outcomes (`exe_hash` value, count), and how many came from the cache.
    pub exe_hash: Vec<(&'static str, u64)>,
    pub exe_hash_cached: u64,
}

impl Stats {
    /// Counts one decoded row of `table`.
    #[inline]
    pub fn count(&self, table: Table) {
        self.count_many(table, 1);
    }

    pub fn count_many(&self, table: Table, rows: u64) {
        self.table_rows[table.index()].fetch_add(rows, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            events: get(&self.events),
            table_rows: Table::ALL
                .iter()
                .zip(&self.table_rows)
                .map(|(t, n)| (*t, get(n)))
                .collect(),
            kernel_drops: get(&self.kernel_drops),
            undecodable: get(&self.undecodable),
            rows_sealed: get(&self.rows_sealed),
            segments_sealed: get(&self.segments_sealed),
            bytes_sealed: get(&self.bytes_sealed),
            rows_pending: (get(&self.rows_buffered) + get(&self.rows_submitted))
                .saturating_sub(get(&self.rows_sealed) + get(&self.rows_abandoned)),
            rows_lost: get(&self.rows_lost),
            degraded: *self.degraded.lock().unwrap_or_else(PoisonError::into_inner),
            last_segment: self
                .last_segment
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            exe_hash: self.exe_hash.by_status(),
            exe_hash_cached: get(&self.exe_hash.cached),
        }
    }
}
