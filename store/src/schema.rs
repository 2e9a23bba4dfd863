//! Table schemas and typed row builders: the one definition of every column in the store.
//!
//! Every row of every table starts with the same identity columns ([`common_fields`]): when it
//! happened (`time` for people, `ktime_ns` for exact ordering), on which host, by which process
//! and thread, in which cgroup and container. A process is identified across PID reuse by
//! `(pid, start_ns)`: its PID together with the kernel's monotonic start time of the process.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, BooleanBuilder, Int32Builder, ListBuilder, StringBuilder,
    TimestampMicrosecondBuilder, UInt32Builder, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};

use crate::Table;

/// The schema of `table`.
pub fn schema_of(table: Table) -> SchemaRef {
    match table {
        Table::Process => PROCESS_SCHEMA.clone(),
        Table::Container => CONTAINER_SCHEMA.clone(),
    }
}

fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Columns every table starts with.
pub fn common_fields() -> Vec<Field> {
    vec![
        Field::new("time", time_type(), false),
        Field::new("ktime_ns", DataType::UInt64, false),
        Field::new("host", DataType::Utf8, false),
        Field::new("pid", DataType::Int32, false),
        Field::new("tid", DataType::Int32, false),
        Field::new("comm", DataType::Utf8, false),
        Field::new("cgroup_id", DataType::UInt64, false),
        Field::new("container_id", DataType::Utf8, true),
    ]
}

/// The identity every row carries; see [`common_fields`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowIdentity {
    pub time: DateTime<Utc>,
    pub ktime_ns: u64,
    pub pid: i32,
    pub tid: i32,
    pub comm: String,
    pub cgroup_id: u64,
    pub container_id: Option<String>,
}

/// Builders for the common columns, shared by every table's builder.
#[derive(Default)]
struct CommonBuilders {
    time: TimestampMicrosecondBuilder,
    ktime_ns: UInt64Builder,
    host: StringBuilder,
    pid: Int32Builder,
    tid: Int32Builder,
    comm: StringBuilder,
    cgroup_id: UInt64Builder,
    container_id: StringBuilder,
}

impl CommonBuilders {
    fn append(&mut self, host: &str, id: &RowIdentity) {
        self.time.append_value(id.time.timestamp_micros());
        self.ktime_ns.append_value(id.ktime_ns);
        self.host.append_value(host);
        self.pid.append_value(id.pid);
        self.tid.append_value(id.tid);
        self.comm.append_value(&id.comm);
        self.cgroup_id.append_value(id.cgroup_id);
        self.container_id.append_option(id.container_id.as_deref());
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.time.finish().with_timezone("UTC")),
            Arc::new(self.ktime_ns.finish()),
            Arc::new(self.host.finish()),
            Arc::new(self.pid.finish()),
            Arc::new(self.tid.finish()),
            Arc::new(self.comm.finish()),
            Arc::new(self.cgroup_id.finish()),
            Arc::new(self.container_id.finish()),
        ]
    }
}

/// Schema of the `process` table.
pub static PROCESS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = common_fields();
    fields.extend([
        // fork | exec | exit
        Field::new("event", DataType::Utf8, false),
        Field::new("ppid", DataType::Int32, true),
        // Kernel monotonic start time of the process: with pid, the key that survives PID reuse.
        Field::new("start_ns", DataType::UInt64, false),
        Field::new("parent_start_ns", DataType::UInt64, true),
        // exec: the path given to execve and the argument vector of the new image.
        Field::new("filename", DataType::Utf8, true),
        Field::new(
            "argv",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            true,
        ),
        // true when argv was longer than the recorder keeps and the tail was cut.
        Field::new("argv_truncated", DataType::Boolean, true),
        Field::new("uid", DataType::UInt32, true),
        Field::new("gid", DataType::UInt32, true),
        Field::new("euid", DataType::UInt32, true),
        Field::new("egid", DataType::UInt32, true),
        // exit: the status passed to exit(), or the signal that killed the process.
        Field::new("exit_code", DataType::Int32, true),
        Field::new("exit_signal", DataType::Int32, true),
        Field::new("core_dumped", DataType::Boolean, true),
    ]);
    Arc::new(Schema::new(fields))
});

/// What happened to a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessEvent {
    /// A new process (not a thread) was created; the row's pid is the child's.
    Fork,
    /// The process replaced its image.
    Exec {
        filename: String,
        argv: Vec<String>,
        argv_truncated: bool,
        uid: u32,
        gid: u32,
        euid: u32,
        egid: u32,
    },
    /// The process ended: either `exit_code` (normal exit) or `signal` is set.
    Exit {
        exit_code: Option<i32>,
        signal: Option<i32>,
        core_dumped: bool,
    },
}

impl ProcessEvent {
    pub fn name(&self) -> &'static str {
        match self {
            ProcessEvent::Fork => "fork",
            ProcessEvent::Exec { .. } => "exec",
            ProcessEvent::Exit { .. } => "exit",
        }
    }
}

/// One row of the `process` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessRow {
    pub id: RowIdentity,
    pub ppid: Option<i32>,
    pub start_ns: u64,
    pub parent_start_ns: Option<u64>,
    pub event: ProcessEvent,
}

/// Accumulates `process` rows into Arrow arrays.
#[derive(Default)]
pub struct ProcessBuilder {
    len: usize,
    common: CommonBuilders,
    event: StringBuilder,
    ppid: Int32Builder,
    start_ns: UInt64Builder,
    parent_start_ns: UInt64Builder,
    filename: StringBuilder,
    argv: ListBuilder<StringBuilder>,
    argv_truncated: BooleanBuilder,
    uid: UInt32Builder,
    gid: UInt32Builder,
    euid: UInt32Builder,
    egid: UInt32Builder,
    exit_code: Int32Builder,
    exit_signal: Int32Builder,
    core_dumped: BooleanBuilder,
}

impl ProcessBuilder {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn append(&mut self, host: &str, row: &ProcessRow) {
        self.len += 1;
        self.common.append(host, &row.id);
        self.event.append_value(row.event.name());
        self.ppid.append_option(row.ppid);
        self.start_ns.append_value(row.start_ns);
        self.parent_start_ns.append_option(row.parent_start_ns);
        match &row.event {
            ProcessEvent::Exec {
                filename,
                argv,
                argv_truncated,
                uid,
                gid,
                euid,
                egid,
            } => {
                self.filename.append_value(filename);
                for a in argv {
                    self.argv.values().append_value(a);
                }
                self.argv.append(true);
                self.argv_truncated.append_value(*argv_truncated);
                self.uid.append_value(*uid);
                self.gid.append_value(*gid);
                self.euid.append_value(*euid);
                self.egid.append_value(*egid);
            }
            _ => {
                self.filename.append_null();
                self.argv.append(false);
                self.argv_truncated.append_null();
                self.uid.append_null();
                self.gid.append_null();
                self.euid.append_null();
                self.egid.append_null();
            }
        }
        match &row.event {
            ProcessEvent::Exit {
                exit_code,
                signal,
                core_dumped,
            } => {
                self.exit_code.append_option(*exit_code);
                self.exit_signal.append_option(*signal);
                self.core_dumped.append_value(*core_dumped);
            }
            _ => {
                self.exit_code.append_null();
                self.exit_signal.append_null();
                self.core_dumped.append_null();
            }
        }
    }

    /// Takes the rows gathered so far as one batch, leaving the builder empty.
    pub fn finish(&mut self) -> RecordBatch {
        self.len = 0;
        let mut columns = self.common.finish();
        columns.extend::<[ArrayRef; 14]>([
            Arc::new(self.event.finish()),
            Arc::new(self.ppid.finish()),
            Arc::new(self.start_ns.finish()),
            Arc::new(self.parent_start_ns.finish()),
            Arc::new(self.filename.finish()),
            Arc::new(self.argv.finish()),
            Arc::new(self.argv_truncated.finish()),
            Arc::new(self.uid.finish()),
            Arc::new(self.gid.finish()),
            Arc::new(self.euid.finish()),
            Arc::new(self.egid.finish()),
            Arc::new(self.exit_code.finish()),
            Arc::new(self.exit_signal.finish()),
            Arc::new(self.core_dumped.finish()),
        ]);
        RecordBatch::try_new(PROCESS_SCHEMA.clone(), columns)
            .expect("ProcessBuilder appends exactly one value per column per row")
    }
}

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

/// Builds a `container` batch from rows.
pub fn container_batch(host: &str, rows: &[ContainerRow]) -> RecordBatch {
    let ts = |f: fn(&ContainerRow) -> DateTime<Utc>| -> ArrayRef {
        let mut b = TimestampMicrosecondBuilder::with_capacity(rows.len());
        for r in rows {
            b.append_value(f(r).timestamp_micros());
        }
        Arc::new(b.finish().with_timezone("UTC"))
    };
    let text = |f: fn(&ContainerRow) -> Option<&str>| -> ArrayRef {
        let mut b = StringBuilder::new();
        for r in rows {
            b.append_option(f(r));
        }
        Arc::new(b.finish())
    };
    let u64s = |f: fn(&ContainerRow) -> Option<u64>| -> ArrayRef {
        let mut b = UInt64Builder::with_capacity(rows.len());
        for r in rows {
            b.append_option(f(r));
        }
        Arc::new(b.finish())
    };
    let mut init_pid = Int32Builder::with_capacity(rows.len());
    let mut host_network = BooleanBuilder::with_capacity(rows.len());
    for r in rows {
        init_pid.append_option(r.init_pid);
        host_network.append_value(r.host_network);
    }
    let columns: Vec<ArrayRef> = vec![
        ts(|r| r.time),
        Arc::new(arrow::array::StringArray::from(vec![host; rows.len()])),
        text(|r| Some(&r.container_id)),
        text(|r| r.name.as_deref()),
        text(|r| Some(&r.runtime)),
        text(|r| r.image.as_deref()),
        u64s(|r| r.cgroup_id),
        text(|r| Some(&r.cgroup_path)),
        Arc::new(init_pid.finish()),
        u64s(|r| r.netns_inode),
        Arc::new(host_network.finish()),
        text(|r| r.created.as_deref()),
        text(|r| r.pod_uid.as_deref()),
        text(|r| r.pod_name.as_deref()),
        text(|r| r.pod_namespace.as_deref()),
        ts(|r| r.first_seen),
        ts(|r| r.last_seen),
        u64s(|r| Some(r.events)),
    ];
    RecordBatch::try_new(CONTAINER_SCHEMA.clone(), columns)
        .expect("container_batch builds one value per column per row")
}

/// Reads `container` rows back from a batch of the `container` table.
pub fn container_rows(batch: &RecordBatch) -> Vec<ContainerRow> {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int32Type, TimestampMicrosecondType, UInt64Type};
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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Array;
    use chrono::TimeZone;

    fn identity(pid: i32) -> RowIdentity {
        RowIdentity {
            time: Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap(),
            ktime_ns: 1_000,
            pid,
            tid: pid,
            comm: "sh".into(),
            cgroup_id: 42,
            container_id: None,
        }
    }

    #[test]
    fn container_rows_round_trip() {
        let t = Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap();
        let row = ContainerRow {
            time: t,
            container_id: "abc".into(),
            name: Some("web".into()),
            runtime: "runc".into(),
            image: None,
            cgroup_id: Some(44),
            cgroup_path: "/q/abc".into(),
            init_pid: Some(10),
            netns_inode: None,
            host_network: false,
            created: None,
            pod_uid: None,
            pod_name: Some("p".into()),
            pod_namespace: None,
            first_seen: t,
            last_seen: t,
            events: 3,
        };
        let batch = container_batch("h", std::slice::from_ref(&row));
        assert_eq!(batch.schema(), schema_of(Table::Container));
        assert_eq!(container_rows(&batch), vec![row]);
    }

    #[test]
    fn builder_matches_schema_for_every_event_kind() {
        let mut b = ProcessBuilder::default();
        let rows = [
            ProcessRow {
                id: identity(10),
                ppid: Some(1),
                start_ns: 5,
                parent_start_ns: Some(1),
                event: ProcessEvent::Fork,
            },
            ProcessRow {
                id: identity(10),
                ppid: Some(1),
                start_ns: 5,
                parent_start_ns: None,
                event: ProcessEvent::Exec {
                    filename: "/bin/ls".into(),
                    argv: vec!["ls".into(), "-l".into()],
                    argv_truncated: false,
                    uid: 0,
                    gid: 0,
                    euid: 0,
                    egid: 0,
                },
            },
            ProcessRow {
                id: identity(10),
                ppid: Some(1),
                start_ns: 5,
                parent_start_ns: None,
                event: ProcessEvent::Exit {
                    exit_code: Some(3),
                    signal: None,
                    core_dumped: false,
                },
            },
        ];
        for r in &rows {
            b.append("h", r);
        }
        assert_eq!(b.len(), 3);
        let batch = b.finish();
        assert!(b.is_empty());
        assert_eq!(batch.num_rows(), 3);
        assert_eq!(batch.schema(), schema_of(Table::Process));
        let argv = batch
            .column_by_name("argv")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow::array::ListArray>()
            .unwrap();
        assert!(argv.is_null(0) && !argv.is_null(1) && argv.is_null(2));
        assert_eq!(argv.value(1).len(), 2);
    }
}
