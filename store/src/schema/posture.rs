//! The `posture` table: what a container was allowed to do, as the recorder judged it.

use super::*;

/// Schema of the `posture` table: a container's least-privilege findings (capabilities,
/// shared namespaces, host mounts, limits, ...) as the recorder judged them when it first saw
/// the container and each time they changed. One assessment is all rows of one `posture_id`;
/// an assessment that found nothing is one row whose `check_id` is `none`, so "judged and clean"
/// is told apart from "never judged".
pub static POSTURE_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        // When the assessment was made.
        Field::new("time", time_type(), false),
        Field::new("host", DataType::Utf8, false),
        Field::new("container_id", DataType::Utf8, false),
        // The assessment's digest (its findings, sorted): equal ids, equal posture.
        Field::new("posture_id", DataType::Utf8, false),
        // The finding's stable id (`cap-sys-admin`, `host-net`, ...), or `none`.
        Field::new("check_id", DataType::Utf8, false),
        // info | low | medium | high | critical
        Field::new("severity", DataType::Utf8, false),
        Field::new("title", DataType::Utf8, false),
        // The fact behind it (the mount point, the capability set, ...).
        Field::new("evidence", DataType::Utf8, false),
        Field::new("why", DataType::Utf8, true),
        Field::new("fix", DataType::Utf8, true),
        // The CIS Docker Benchmark recommendation it matches, where one does.
        Field::new("cis", DataType::Utf8, true),
        // The init process the facts were read from.
        Field::new("init_pid", DataType::Int32, true),
    ]))
});

/// One row of the `posture` table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PostureRow {
    pub time: DateTime<Utc>,
    pub container_id: String,
    pub posture_id: String,
    pub check_id: String,
    pub severity: String,
    pub title: String,
    pub evidence: String,
    pub why: Option<String>,
    pub fix: Option<String>,
    pub cis: Option<String>,
    pub init_pid: Option<i32>,
}

/// Builds a `posture` batch.
pub fn posture_batch(host: &str, rows: &[PostureRow]) -> RecordBatch {
    batch(
        &POSTURE_SCHEMA,
        vec![
            col_time(rows, |r| r.time),
            col_str(rows, |_| Some(host)),
            col_str(rows, |r| Some(&r.container_id)),
            col_str(rows, |r| Some(&r.posture_id)),
            col_str(rows, |r| Some(&r.check_id)),
            col_str(rows, |r| Some(&r.severity)),
            col_str(rows, |r| Some(&r.title)),
            col_str(rows, |r| Some(&r.evidence)),
            col_str(rows, |r| r.why.as_deref()),
            col_str(rows, |r| r.fix.as_deref()),
            col_str(rows, |r| r.cis.as_deref()),
            col_i32(rows, |r| r.init_pid),
        ],
    )
}
