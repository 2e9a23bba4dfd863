//! Tiny real segments for tests and benchmarks: one `gap` row sealed like any segment (through
//! [`Store::seal`], so it is hashed into the manifest), when what matters is that a store has
//! segments, not what they hold.
//!
//! Nothing in a recording path calls this.

use crate::schema::{GapReason, GapRow, gap_batch};
use crate::segment::SealedSegment;
use crate::{Partition, Result, Store, Table};

/// Seals one `gap` row of `host`, timed now, as segment `seq` of run 1.
pub fn seal_one_gap_row(store: &Store, host: &str, seq: u64) -> Result<SealedSegment> {
    let time = chrono::Utc::now();
    let row = GapRow {
        time,
        ktime_ns: seq,
        since: time,
        cpu: 0,
        lost: 1,
        reason: GapReason::RingBufferFull,
        lost_table: None,
    };
    let partition = Partition::for_time(Table::Gap, time, host);
    store.seal(&partition, &gap_batch(host, &[row]), 1, seq)
}
