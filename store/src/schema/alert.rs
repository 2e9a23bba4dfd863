//! The `alert` table: live detection's findings, naming the row behind each.

use super::*;

/// Schema of the `alert` table: one row per alert a rule raised while recording. An alert
/// names the row behind it (`source_table`, `host`, `pid`, `ktime_ns`) so the evidence is one
/// `SELECT` away, and `alert_id` is what `quarry timeline --around` takes. How an alert is
/// delivered (Falco or OCSF JSON) is [`crate::alert`]'s; this is only what is kept.
pub static ALERT_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let list = DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)));
    Arc::new(Schema::new(vec![
        // When the alert was raised.
        Field::new("time", time_type(), false),
        Field::new("host", DataType::Utf8, false),
        // Unique within the store: the rule, host and ktime_ns of the row behind it.
        Field::new("alert_id", DataType::Utf8, false),
        Field::new("rule", DataType::Utf8, false),
        Field::new("title", DataType::Utf8, false),
        // info | low | medium | high | critical
        Field::new("severity", DataType::Utf8, false),
        // Where the rule came from: builtin | rules | sigma | recorder (lost events).
        Field::new("rule_source", DataType::Utf8, false),
        // ATT&CK technique ids (T1059.004) and the rule's other tags.
        Field::new("mitre", list.clone(), true),
        Field::new("tags", list, true),
        // The finding's evidence text: what the alert says happened.
        Field::new("evidence", DataType::Utf8, false),
        // The row behind the alert (NULL for an alert about the recorder itself).
        Field::new("source_table", DataType::Utf8, true),
        Field::new("event_time", time_type(), true),
        Field::new("ktime_ns", DataType::UInt64, true),
        Field::new("pid", DataType::Int32, true),
        Field::new("comm", DataType::Utf8, true),
        Field::new("container_id", DataType::Utf8, true),
        Field::new("container_name", DataType::Utf8, true),
        Field::new("image", DataType::Utf8, true),
        // Further fields of the row as a JSON object (exe, argv, path, addresses, ...).
        Field::new("fields", DataType::Utf8, true),
    ]))
});

/// One row of the `alert` table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AlertRow {
    pub time: DateTime<Utc>,
    pub alert_id: String,
    pub rule: String,
    pub title: String,
    pub severity: String,
    pub rule_source: String,
    pub mitre: Vec<String>,
    pub tags: Vec<String>,
    pub evidence: String,
    pub source_table: Option<String>,
    pub event_time: Option<DateTime<Utc>>,
    pub ktime_ns: Option<u64>,
    pub pid: Option<i32>,
    pub comm: Option<String>,
    pub container_id: Option<String>,
    pub container_name: Option<String>,
    pub image: Option<String>,
    /// A JSON object of further fields, as text.
    pub fields: Option<String>,
}

/// Builds an `alert` batch.
pub fn alert_batch(host: &str, rows: &[AlertRow]) -> RecordBatch {
    let list = |f: fn(&AlertRow) -> &[String]| -> ArrayRef {
        let mut b = ListBuilder::new(StringBuilder::new());
        for r in rows {
            f(r).iter().for_each(|v| b.values().append_value(v));
            b.append(true);
        }
        Arc::new(b.finish())
    };
    let event_time: ArrayRef = {
        let mut b = TimestampMicrosecondBuilder::with_capacity(rows.len());
        rows.iter()
            .for_each(|r| b.append_option(r.event_time.map(|t| t.timestamp_micros())));
        Arc::new(b.finish().with_timezone("UTC"))
    };
    batch(
        &ALERT_SCHEMA,
        vec![
            col_time(rows, |r| r.time),
            col_str(rows, |_| Some(host)),
            col_str(rows, |r| Some(&r.alert_id)),
            col_str(rows, |r| Some(&r.rule)),
            col_str(rows, |r| Some(&r.title)),
            col_str(rows, |r| Some(&r.severity)),
            col_str(rows, |r| Some(&r.rule_source)),
            list(|r| &r.mitre),
            list(|r| &r.tags),
            col_str(rows, |r| Some(&r.evidence)),
            col_str(rows, |r| r.source_table.as_deref()),
            event_time,
            col_u64(rows, |r| r.ktime_ns),
            col_i32(rows, |r| r.pid),
            col_str(rows, |r| r.comm.as_deref()),
            col_str(rows, |r| r.container_id.as_deref()),
            col_str(rows, |r| r.container_name.as_deref()),
            col_str(rows, |r| r.image.as_deref()),
            col_str(rows, |r| r.fields.as_deref()),
        ],
    )
}
