//! The `action` table: every responder action, who took it and how it ended.

use super::*;

/// Schema of the `action` table: one row per responder action, written by the command that
/// acted, so the timeline and exported evidence show who did what to which container.
pub static ACTION_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("time", time_type(), false),
        Field::new("host", DataType::Utf8, false),
        // isolate | release | snapshot | export
        Field::new("action", DataType::Utf8, false),
        // Who: the invoking user (through sudo when used).
        Field::new("actor", DataType::Utf8, false),
        Field::new("container_id", DataType::Utf8, true),
        Field::new("container_name", DataType::Utf8, true),
        Field::new("reason", DataType::Utf8, true),
        // What exactly, as JSON (allow-list, packets dropped, paths, timings).
        Field::new("detail", DataType::Utf8, true),
        // ok | unchanged | error
        Field::new("result", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, true),
        // The exact command line.
        Field::new("command", DataType::Utf8, false),
    ]))
});

/// One row of the `action` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionRow {
    pub time: DateTime<Utc>,
    pub action: String,
    pub actor: String,
    pub container_id: Option<String>,
    pub container_name: Option<String>,
    pub reason: Option<String>,
    pub detail: Option<String>,
    pub result: String,
    pub error: Option<String>,
    pub command: String,
}

/// Builds an `action` batch.
pub fn action_batch(host: &str, rows: &[ActionRow]) -> RecordBatch {
    batch(
        &ACTION_SCHEMA,
        vec![
            col_time(rows, |r| r.time),
            col_str(rows, |_| Some(host)),
            col_str(rows, |r| Some(&r.action)),
            col_str(rows, |r| Some(&r.actor)),
            col_str(rows, |r| r.container_id.as_deref()),
            col_str(rows, |r| r.container_name.as_deref()),
            col_str(rows, |r| r.reason.as_deref()),
            col_str(rows, |r| r.detail.as_deref()),
            col_str(rows, |r| Some(&r.result)),
            col_str(rows, |r| r.error.as_deref()),
            col_str(rows, |r| Some(&r.command)),
        ],
    )
}
