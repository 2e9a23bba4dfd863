//! The container's excerpt of the recorded trace: every row of the store attributed to it,
//! copied into the case as Parquet (the store's own format and schemas), plus the store's gap
//! rows, which say where the recording itself is incomplete.
//!
//! Rows come only through the store's verified reader ([`quarry_store::verified`]): segments the
//! manifest lists, hash-checked; a planted, altered or missing file is left out with a warning
//! naming it.

use std::fs::File;
use std::path::Path;

use arrow::array::{Array, AsArray, BooleanArray};
use arrow::compute::filter_record_batch;
use parquet::arrow::ArrowWriter;
use quarry_store::verified::{self, Skipped};
use quarry_store::{Store, Table};

use crate::SnapshotError;

/// Rows per table written into `dest/<table>.parquet`.
pub type Counts = Vec<(String, usize)>;

/// Copies the rows of `container_id` from the store at `store` into `dest`, segment by segment
/// (memory stays bounded by one segment). Partitions older than the hour `since` (RFC 3339,
/// the container's creation) cannot hold its rows and are skipped; gap rows are kept from the
/// same hours on. Tables with no rows for the container are left out.
pub fn excerpt(
    store: &Path,
    container_id: &str,
    since: Option<&str>,
    dest: &Path,
) -> Result<Counts, SnapshotError> {
    let store = Store::at(store);
    let since = since
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&chrono::Utc));
    let listing = store.verified_listing()?;
    for s in &listing.skipped {
        log::warn!("trace excerpt: {s}");
    }
    let mut counts = Vec::new();
    for table in Table::ALL {
        let path = dest.join(format!("{}.parquet", table.name()));
        let parquet_err = |e: parquet::errors::ParquetError| SnapshotError::Trace {
            path: path.clone(),
            reason: e.to_string(),
        };
        let mut writer: Option<ArrowWriter<File>> = None;
        let mut rows = 0;
        for seg in listing.of(table) {
            if since.is_some_and(|s| seg.partition.hour_end() <= s) {
                continue;
            }
            let batches = match verified::read(seg)? {
                Ok(b) => b,
                Err(refusal) => {
                    let s = Skipped {
                        path: seg.path.clone(),
                        refusal,
                    };
                    log::warn!("trace excerpt: {s}");
                    continue;
                }
            };
            for b in batches {
                let b = if table == Table::Gap {
                    b
                } else {
                    let Some(col) = b.column_by_name("container_id") else {
                        continue;
                    };
                    let ids = col.as_string::<i32>();
                    let mask: BooleanArray = (0..ids.len())
                        .map(|i| Some(!ids.is_null(i) && ids.value(i) == container_id))
                        .collect();
                    filter_record_batch(&b, &mask)?
                };
                if b.num_rows() == 0 {
                    continue;
                }
                if writer.is_none() {
                    std::fs::create_dir_all(dest).map_err(|e| SnapshotError::io(dest, e))?;
                    let file = File::create(&path).map_err(|e| SnapshotError::io(&path, e))?;
                    writer =
                        Some(ArrowWriter::try_new(file, b.schema(), None).map_err(parquet_err)?);
                }
                rows += b.num_rows();
                if let Some(w) = writer.as_mut() {
                    w.write(&b).map_err(parquet_err)?;
                }
            }
        }
        if let Some(w) = writer {
            w.close().map_err(parquet_err)?;
            counts.push((table.name().to_string(), rows));
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_store::Partition;
    use quarry_store::schema::{ActionRow, action_batch};

    fn row(container: &str) -> ActionRow {
        ActionRow {
            time: chrono::Utc::now(),
            action: "isolate".into(),
            actor: "uid 0".into(),
            container_id: Some(container.into()),
            container_name: None,
            reason: None,
            detail: None,
            result: "ok".into(),
            error: None,
            command: "quarry isolate".into(),
        }
    }

    #[test]
    fn only_the_containers_rows_are_copied() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path().join("store")).unwrap();
        let p = Partition::for_time(Table::Action, chrono::Utc::now(), "h");
        let rows = [row("aaa"), row("bbb"), row("aaa")];
        store.seal(&p, &action_batch("h", &rows), 1, 0).unwrap();
        let dest = dir.path().join("trace");
        let counts = excerpt(&dir.path().join("store"), "aaa", None, &dest).unwrap();
        assert_eq!(counts, vec![("action".to_string(), 2)]);
        let back = quarry_store::read::read_segment(&dest.join("action.parquet")).unwrap();
        assert_eq!(back.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
        assert!(
            excerpt(
                &dir.path().join("store"),
                "zzz",
                None,
                &dir.path().join("t2")
            )
            .unwrap()
            .is_empty()
        );
        // Partitions before the container was created are not read.
        let later = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
        let none = excerpt(
            &dir.path().join("store"),
            "aaa",
            Some(&later),
            &dir.path().join("t3"),
        )
        .unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn planted_and_altered_segments_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path().join("store")).unwrap();
        let p = Partition::for_time(Table::Action, chrono::Utc::now(), "h");
        let a = store
            .seal(&p, &action_batch("h", &[row("aaa")]), 1, 0)
            .unwrap();
        let b = store
            .seal(&p, &action_batch("h", &[row("aaa"), row("aaa")]), 1, 1)
            .unwrap();
        // A copy under a new name is not in the manifest: not read.
        std::fs::copy(&b.path, b.path.with_file_name("planted.parquet")).unwrap();
        let counts = excerpt(store.root(), "aaa", None, &dir.path().join("t1")).unwrap();
        assert_eq!(counts, vec![("action".to_string(), 3)]);
        // An altered segment (same size, one byte flipped) is not read either.
        let mut data = std::fs::read(&a.path).unwrap();
        let mid = data.len() / 2;
        data[mid] ^= 1;
        std::fs::write(&a.path, &data).unwrap();
        let counts = excerpt(store.root(), "aaa", None, &dir.path().join("t2")).unwrap();
        assert_eq!(counts, vec![("action".to_string(), 2)]);
    }
}
