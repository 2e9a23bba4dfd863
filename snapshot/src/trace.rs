//! The container's excerpt of the recorded trace: every row of the store attributed to it,
//! copied into the case as Parquet (the store's own format and schemas), plus the store's gap
//! rows, which say where the recording itself is incomplete.

use std::fs::File;
use std::path::Path;

use arrow::array::{Array, AsArray, BooleanArray};
use arrow::compute::filter_record_batch;
use parquet::arrow::ArrowWriter;
use quarry_store::{Store, Table};

use crate::SnapshotError;

/// Rows per table written into `dest/<table>.parquet`.
pub type Counts = Vec<(String, usize)>;

/// Copies the rows of `container_id` from the store at `store` into `dest`. Tables with no rows
/// for the container are left out.
pub fn excerpt(store: &Path, container_id: &str, dest: &Path) -> Result<Counts, SnapshotError> {
    let store = Store::at(store);
    let mut counts = Vec::new();
    for table in Table::ALL {
        let batches = store.read_table(table)?;
        let mut kept = Vec::new();
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
            if b.num_rows() > 0 {
                kept.push(b);
            }
        }
        if kept.is_empty() {
            continue;
        }
        std::fs::create_dir_all(dest).map_err(|e| SnapshotError::io(dest, e))?;
        let path = dest.join(format!("{}.parquet", table.name()));
        let file = File::create(&path).map_err(|e| SnapshotError::io(&path, e))?;
        let parquet_err = |e: parquet::errors::ParquetError| SnapshotError::Trace {
            path: path.clone(),
            reason: e.to_string(),
        };
        let mut w = ArrowWriter::try_new(file, kept[0].schema(), None).map_err(parquet_err)?;
        let mut rows = 0;
        for b in &kept {
            rows += b.num_rows();
            w.write(b).map_err(parquet_err)?;
        }
        w.close().map_err(parquet_err)?;
        counts.push((table.name().to_string(), rows));
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
        let counts = excerpt(&dir.path().join("store"), "aaa", &dest).unwrap();
        assert_eq!(counts, vec![("action".to_string(), 2)]);
        let back = quarry_store::read::read_segment(&dest.join("action.parquet")).unwrap();
        assert_eq!(back.iter().map(|b| b.num_rows()).sum::<usize>(), 2);
        assert!(
            excerpt(&dir.path().join("store"), "zzz", &dir.path().join("t2"))
                .unwrap()
                .is_empty()
        );
    }
}
