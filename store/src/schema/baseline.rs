//! The `baseline` table: a container's root filesystem entry by entry, and reading it back.

use super::*;

/// The `baseline` table: a container's root filesystem entry by entry, when the baseline was
/// taken. One baseline is all rows of one `baseline_id`.
pub static BASELINE_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("time", time_type(), false),
        Field::new("host", DataType::Utf8, false),
        // Unique per baseline taken (the container id and the time, in RFC 3339).
        Field::new("baseline_id", DataType::Utf8, false),
        Field::new("container_id", DataType::Utf8, false),
        // Path inside the container; empty on a `note` row.
        Field::new("path", DataType::Utf8, false),
        // file | directory | symlink | fifo | socket | char_device | block_device | note
        Field::new("kind", DataType::Utf8, false),
        Field::new("size", DataType::UInt64, true),
        // st_mode, file type bits included.
        Field::new("mode", DataType::UInt32, true),
        Field::new("uid", DataType::UInt32, true),
        Field::new("gid", DataType::UInt32, true),
        Field::new("mtime", DataType::Int64, true),
        Field::new("sha256", DataType::Utf8, true),
        Field::new("symlink_target", DataType::Utf8, true),
        // What the walk could not take (too deep, replaced, unreadable, over the limit).
        Field::new("note", DataType::Utf8, true),
    ]))
});

/// One row of the `baseline` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaselineRow {
    pub time: DateTime<Utc>,
    pub baseline_id: String,
    pub container_id: String,
    pub path: String,
    pub kind: String,
    pub size: Option<u64>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mtime: Option<i64>,
    pub sha256: Option<String>,
    pub symlink_target: Option<String>,
    pub note: Option<String>,
}

/// Builds a `baseline` batch.
pub fn baseline_batch(host: &str, rows: &[BaselineRow]) -> RecordBatch {
    batch(
        &BASELINE_SCHEMA,
        vec![
            col_time(rows, |r| r.time),
            col_str(rows, |_| Some(host)),
            col_str(rows, |r| Some(&r.baseline_id)),
            col_str(rows, |r| Some(&r.container_id)),
            col_str(rows, |r| Some(&r.path)),
            col_str(rows, |r| Some(&r.kind)),
            col_u64(rows, |r| r.size),
            col_u32(rows, |r| r.mode),
            col_u32(rows, |r| r.uid),
            col_u32(rows, |r| r.gid),
            col_i64(rows, |r| r.mtime),
            col_str(rows, |r| r.sha256.as_deref()),
            col_str(rows, |r| r.symlink_target.as_deref()),
            col_str(rows, |r| r.note.as_deref()),
        ],
    )
}

/// Reads `baseline` rows back from a batch of the `baseline` table.
pub fn baseline_rows(batch: &RecordBatch) -> Vec<BaselineRow> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int64Type, TimestampMicrosecondType, UInt32Type, UInt64Type};
    let col = |n: &str| batch.column_by_name(n).expect("baseline schema column");
    let text = |n: &str, i: usize| {
        let a = col(n).as_string::<i32>();
        (!a.is_null(i)).then(|| a.value(i).to_string())
    };
    let u32s = |n: &str, i: usize| {
        let a = col(n).as_primitive::<UInt32Type>();
        (!a.is_null(i)).then(|| a.value(i))
    };
    let times = col("time").as_primitive::<TimestampMicrosecondType>();
    let sizes = col("size").as_primitive::<UInt64Type>();
    let mtimes = col("mtime").as_primitive::<Int64Type>();
    (0..batch.num_rows())
        .map(|i| BaselineRow {
            time: DateTime::from_timestamp_micros(times.value(i)).unwrap_or_default(),
            baseline_id: text("baseline_id", i).unwrap_or_default(),
            container_id: text("container_id", i).unwrap_or_default(),
            path: text("path", i).unwrap_or_default(),
            kind: text("kind", i).unwrap_or_default(),
            size: (!sizes.is_null(i)).then(|| sizes.value(i)),
            mode: u32s("mode", i),
            uid: u32s("uid", i),
            gid: u32s("gid", i),
            mtime: (!mtimes.is_null(i)).then(|| mtimes.value(i)),
            sha256: text("sha256", i),
            symlink_target: text("symlink_target", i),
            note: text("note", i),
        })
        .collect()
}
