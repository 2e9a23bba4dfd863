//! The `gap` table: where evidence is missing, and why.

use super::*;

/// Schema of the `gap` table: where evidence is missing. Each row says that between `since`
/// and `time`, `lost` records or rows were not kept, and why (`reason`, a [`GapReason`]):
/// records that did not fit in the ring buffer on CPU `cpu`; program runs the kernel skipped by
/// recursion protection (`cpu` [`GAP_CPU_UNKNOWN`]: it does not say where); or rows of
/// `lost_table` the recorder decoded but could not seal (a full disk, a write error, a sealer
/// too far behind), also on [`GAP_CPU_UNKNOWN`]. `reason` and `lost_table` are NULL in segments
/// sealed before they existed (those rows are all kernel-side losses).
pub static GAP_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("time", time_type(), false),
        Field::new("ktime_ns", DataType::UInt64, false),
        Field::new("host", DataType::Utf8, false),
        Field::new("since", time_type(), false),
        Field::new("cpu", DataType::Int32, false),
        Field::new("lost", DataType::UInt64, false),
        Field::new("reason", DataType::Utf8, true),
        Field::new("lost_table", DataType::Utf8, true),
    ]))
});

/// [`GapRow::cpu`] when the loss is not tied to one CPU: runs the kernel skipped by recursion
/// protection (it does not say on which CPU), and rows lost in user space.
pub const GAP_CPU_UNKNOWN: i32 = -1;

/// Why evidence is missing: the `reason` column of the `gap` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GapReason {
    /// The kernel found the ring buffer full and counted the records it could not write.
    RingBufferFull,
    /// The kernel skipped a program run because one was already running on that CPU.
    ProgramRecursion,
    /// Rows were decoded but the store's file system had no space left to seal them.
    DiskFull,
    /// Rows were decoded but sealing them failed with another error (EIO, a read-only mount).
    WriteError,
    /// Rows were decoded faster than they could be sealed, beyond the recorder's memory budget.
    SealerBehind,
}

impl GapReason {
    /// The value stored in the `reason` column.
    pub fn as_str(self) -> &'static str {
        match self {
            GapReason::RingBufferFull => "ring buffer full",
            GapReason::ProgramRecursion => "program recursion",
            GapReason::DiskFull => "disk full",
            GapReason::WriteError => "write error",
            GapReason::SealerBehind => "sealer behind",
        }
    }
}

impl std::fmt::Display for GapReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the `gap` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GapRow {
    pub time: DateTime<Utc>,
    pub ktime_ns: u64,
    pub since: DateTime<Utc>,
    pub cpu: i32,
    pub lost: u64,
    pub reason: GapReason,
    /// The table whose rows were lost, when known (user-space losses).
    pub lost_table: Option<Table>,
}

/// Builds a `gap` batch.
pub fn gap_batch(host: &str, rows: &[GapRow]) -> RecordBatch {
    batch(
        &GAP_SCHEMA,
        vec![
            col_time(rows, |r| r.time),
            col_u64(rows, |r| Some(r.ktime_ns)),
            col_str(rows, |_| Some(host)),
            col_time(rows, |r| r.since),
            col_i32(rows, |r| Some(r.cpu)),
            col_u64(rows, |r| Some(r.lost)),
            col_str(rows, |r| Some(r.reason.as_str())),
            col_str(rows, |r| r.lost_table.map(|t| t.name())),
        ],
    )
}
