//! What a finished recording says about itself: the machine form of `quarry record`'s last
//! line (`--format json`), the line for people, and what went wrong at the end (rows that
//! could not be sealed, rows not kept).
//!
//! It only words a [`Summary`]; it must not change what was recorded.

use std::io::{self, Write};
use std::path::Path;

use quarry_store::human::human_bytes;

use crate::Summary;

impl Summary {
    /// The machine form of the recording into `store`.
    pub fn to_json(&self, store: &Path) -> serde_json::Value {
        let s = &self.stats;
        serde_json::json!({
            "store": store,
            "events": s.events,
            "rows_sealed": s.rows_sealed,
            "segments_sealed": s.segments_sealed,
            "bytes_sealed": s.bytes_sealed,
            "kernel_drops": s.kernel_drops,
            "undecodable": s.undecodable,
            "rows_pending": s.rows_pending,
            "rows_lost": s.rows_lost,
            "rows_unsealed_at_exit": self.unsealed.iter().map(|l| serde_json::json!({
                "table": l.table.name(), "rows": l.rows, "reason": l.reason.as_str(),
            })).collect::<Vec<_>>(),
            "recovered_segments": self.recovered_segments,
            "exe_hash": s.exe_hash.iter()
                .map(|(k, v)| ((*k).to_string(), serde_json::Value::from(*v)))
                .collect::<serde_json::Map<_, _>>(),
            "exe_hash_cached": s.exe_hash_cached,
        })
    }

    /// What was sealed into `store`, for people, and the exec hashes' outcomes.
    pub fn render_text(&self, store: &Path, w: &mut dyn Write) -> io::Result<()> {
        let s = &self.stats;
        writeln!(
            w,
            "quarry: stopped; sealed {} rows in {} segments ({}) into {}; {} events dropped by \
             the kernel; {} rows not kept",
            s.rows_sealed,
            s.segments_sealed,
            human_bytes(s.bytes_sealed),
            store.display(),
            s.kernel_drops,
            s.rows_lost,
        )?;
        if !s.exe_hash.is_empty() {
            let counts: Vec<String> = s.exe_hash.iter().map(|(k, n)| format!("{k} {n}")).collect();
            writeln!(
                w,
                "quarry: exec hashes: {} ({} of the hashed from the cache)",
                counts.join(", "),
                s.exe_hash_cached
            )?;
        }
        Ok(())
    }

    /// When rows could not be sealed before stopping (not even as gap rows): what, why, and
    /// what to do. The recording failed.
    pub fn unsealed_error(&self, store: &Path) -> Option<String> {
        if self.unsealed.iter().all(|l| l.rows == 0) {
            return None;
        }
        let what: Vec<String> = self
            .unsealed
            .iter()
            .map(|l| format!("{} {} rows ({})", l.rows, l.table.name(), l.reason))
            .collect();
        Some(format!(
            "{} could not be sealed before stopping, and no gap row for them could be written \
             ({}); free space in {} (or fix the write error) and restart the recorder; what was \
             sealed before is intact (`quarry verify --store {}`)",
            what.join(", "),
            self.stats.last_error.as_deref().unwrap_or("unknown error"),
            store.display(),
            store.display()
        ))
    }

    /// When rows were not kept while sealing failed or fell behind: a warning (they are on
    /// record as gap rows, like the kernel's drops, so the recording itself succeeded).
    pub fn lost_warning(&self, store: &Path) -> Option<String> {
        let s = &self.stats;
        (s.rows_lost > 0).then(|| {
            format!(
                "{} rows could not be kept while sealing was failing or behind ({}); they are \
                 counted in the store's gap table; check the space and health of {}",
                s.rows_lost,
                s.last_error.as_deref().unwrap_or("the sealer fell behind"),
                store.display()
            )
        })
    }
}
