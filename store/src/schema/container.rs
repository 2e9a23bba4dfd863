//! The `container` table: what the recorder learned of each container, and reading it back.

use super::*;

/// Schema of the `container` table. Unlike event tables it describes containers, not what a
/// process did: one row per container per sealed interval in which rows were attributed to it,
/// so `min(first_seen)` and `max(last_seen)` over its rows give its whole recorded life.
pub static CONTAINER_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        // When the row was written (the end of the interval it covers).
        Field::new("time", time_type(), false),
        Field::new("host", DataType::Utf8, false),
        Field::new("container_id", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("runtime", DataType::Utf8, false),
        Field::new("image", DataType::Utf8, true),
        Field::new("cgroup_id", DataType::UInt64, true),
        Field::new("cgroup_path", DataType::Utf8, false),
        Field::new("init_pid", DataType::Int32, true),
        Field::new("netns_inode", DataType::UInt64, true),
        Field::new("host_network", DataType::Boolean, false),
        Field::new("created", DataType::Utf8, true),
        Field::new("pod_uid", DataType::Utf8, true),
        Field::new("pod_name", DataType::Utf8, true),
        Field::new("pod_namespace", DataType::Utf8, true),
        Field::new("first_seen", time_type(), false),
        Field::new("last_seen", time_type(), false),
        // Rows attributed to the container in this interval.
        Field::new("events", DataType::UInt64, false),
    ]))
});

/// One row of the `container` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRow {
    pub time: DateTime<Utc>,
    pub container_id: String,
    pub name: Option<String>,
    pub runtime: String,
    pub image: Option<String>,
    pub cgroup_id: Option<u64>,
    pub cgroup_path: String,
    pub init_pid: Option<i32>,
    pub netns_inode: Option<u64>,
    pub host_network: bool,
    pub created: Option<String>,
    pub pod_uid: Option<String>,
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub events: u64,
}

/// Builds a `container` batch.
pub fn container_batch(host: &str, rows: &[ContainerRow]) -> RecordBatch {
    batch(
        &CONTAINER_SCHEMA,
        vec![
            col_time(rows, |r| r.time),
            col_str(rows, |_| Some(host)),
            col_str(rows, |r| Some(&r.container_id)),
            col_str(rows, |r| r.name.as_deref()),
            col_str(rows, |r| Some(&r.runtime)),
            col_str(rows, |r| r.image.as_deref()),
            col_u64(rows, |r| r.cgroup_id),
            col_str(rows, |r| Some(&r.cgroup_path)),
            col_i32(rows, |r| r.init_pid),
            col_u64(rows, |r| r.netns_inode),
            col_bool(rows, |r| Some(r.host_network)),
            col_str(rows, |r| r.created.as_deref()),
            col_str(rows, |r| r.pod_uid.as_deref()),
            col_str(rows, |r| r.pod_name.as_deref()),
            col_str(rows, |r| r.pod_namespace.as_deref()),
            col_time(rows, |r| r.first_seen),
            col_time(rows, |r| r.last_seen),
            col_u64(rows, |r| Some(r.events)),
        ],
    )
}

/// Reads `container` rows back from a batch of the `container` table.
pub fn container_rows(batch: &RecordBatch) -> Vec<ContainerRow> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{TimestampMicrosecondType, UInt64Type};
    let col = |n: &str| batch.column_by_name(n).expect("container schema column");
    let text = |n: &str, i: usize| {
        let a = col(n).as_string::<i32>();
        (!a.is_null(i)).then(|| a.value(i).to_string())
    };
    let ts = |n: &str, i: usize| {
        let a = col(n).as_primitive::<TimestampMicrosecondType>();
        DateTime::from_timestamp_micros(a.value(i)).unwrap_or_default()
    };
    let u64s = |n: &str, i: usize| {
        let a = col(n).as_primitive::<UInt64Type>();
        (!a.is_null(i)).then(|| a.value(i))
    };
    let pids = col("init_pid").as_primitive::<Int32Type>();
    let host_network = col("host_network").as_boolean();
    (0..batch.num_rows())
        .map(|i| ContainerRow {
            time: ts("time", i),
            container_id: text("container_id", i).unwrap_or_default(),
            name: text("name", i),
            runtime: text("runtime", i).unwrap_or_default(),
            image: text("image", i),
            cgroup_id: u64s("cgroup_id", i),
            cgroup_path: text("cgroup_path", i).unwrap_or_default(),
            init_pid: (!pids.is_null(i)).then(|| pids.value(i)),
            netns_inode: u64s("netns_inode", i),
            host_network: host_network.value(i),
            created: text("created", i),
            pod_uid: text("pod_uid", i),
            pod_name: text("pod_name", i),
            pod_namespace: text("pod_namespace", i),
            first_seen: ts("first_seen", i),
            last_seen: ts("last_seen", i),
            events: u64s("events", i).unwrap_or(0),
        })
        .collect()
}
