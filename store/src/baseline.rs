//! Baselines: a container's root filesystem hashed into the `baseline` table (by `quarry
//! baseline`), and read back for `quarry drift` from verified segments only.
//!
//! What a baseline holds is the snapshot crate's (`drift::baseline`); this module only seals
//! its rows and reads them back. It must never hand back rows of a segment the manifest does
//! not vouch for: a planted baseline would hide drift.

use chrono::{DateTime, Utc};

use crate::schema::{BaselineRow, baseline_batch, baseline_rows};
use crate::verified::Skipped;
use crate::{Partition, Result, Store, Table};

/// Rows per sealed segment of a baseline: a big rootfs is several segments, not one huge batch.
pub const ROWS_PER_SEGMENT: usize = 50_000;

impl Store {
    /// Seals `rows` (one baseline, taken at `now`) as `host`'s, in segments of at most
    /// [`ROWS_PER_SEGMENT`] rows.
    pub fn seal_baseline(
        &self,
        rows: &[BaselineRow],
        host: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let partition = Partition::for_time(Table::Baseline, now, host);
        for chunk in rows.chunks(ROWS_PER_SEGMENT) {
            self.seal(
                &partition,
                &baseline_batch(host, chunk),
                std::process::id(),
                0,
            )?;
        }
        Ok(())
    }

    /// Every baseline row of `container_id`, from verified segments, and the segments left
    /// out (none when the store does not exist yet).
    pub fn baseline_of(&self, container_id: &str) -> Result<(Vec<BaselineRow>, Vec<Skipped>)> {
        if !self.root().is_dir() {
            return Ok((Vec::new(), Vec::new()));
        }
        let (batches, skipped) = self.read_table_verified(Table::Baseline)?;
        let rows = batches
            .iter()
            .flat_map(baseline_rows)
            .filter(|r| r.container_id == container_id)
            .collect();
        Ok((rows, skipped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(container_id: &str, path: &str, time: DateTime<Utc>) -> BaselineRow {
        BaselineRow {
            time,
            baseline_id: format!("b-{container_id}"),
            container_id: container_id.into(),
            path: path.into(),
            kind: "file".into(),
            size: Some(1),
            mode: Some(0o644),
            uid: Some(0),
            gid: Some(0),
            mtime: Some(0),
            sha256: Some("00".into()),
            symlink_target: None,
            note: None,
        }
    }

    #[test]
    fn a_sealed_baseline_reads_back_for_its_container_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path().join("store")).unwrap();
        let (none, _) = Store::at(dir.path().join("absent"))
            .baseline_of("c1")
            .unwrap();
        assert!(none.is_empty());
        // Truncated to the stored precision (microseconds).
        let now = DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap();
        let mine: Vec<BaselineRow> = (0..ROWS_PER_SEGMENT + 2)
            .map(|i| row("c1", &format!("/f{i}"), now))
            .collect();
        store.seal_baseline(&mine, "h1", now).unwrap();
        store
            .seal_baseline(&[row("c2", "/other", now)], "h1", now)
            .unwrap();
        let (got, skipped) = store.baseline_of("c1").unwrap();
        assert!(skipped.is_empty());
        assert_eq!(got.len(), mine.len());
        assert!(got.contains(&mine[ROWS_PER_SEGMENT + 1]));
        assert!(got.iter().all(|r| r.container_id == "c1"));
    }
}
