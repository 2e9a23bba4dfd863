//! Table schemas and row types: the one definition of every column in the store.
//!
//! Every event table starts with the same identity columns ([`common_fields`]): when it
//! happened (`time` for people, `ktime_ns` for exact ordering), on which host, by which process
//! and thread, in which cgroup and container. A process is identified across PID reuse by
//! `(pid, start_ns)`: its PID together with the kernel's monotonic start time of the process.
//!
//! Rows are plain structs; `*_batch` functions turn a slice of them into an Arrow batch of the
//! table's schema. The raw syscall stream, the one high-volume table, has an appending
//! [`SyscallBuilder`] instead so no per-row struct is allocated.
//!
//! Each table's schema, row type and batch function live in a module of their own (`process`,
//! `file`, `net`, `syscall`, `gap`, `action`, `alert`, `container`, `baseline`), re-exported
//! here; this module holds what they share: the identity columns, the column builders and the
//! upgrade of older segments' batches.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, BooleanBuilder, DictionaryArray, Int32Array, Int32Builder, Int64Array, Int64Builder,
    ListBuilder, StringArray, StringBuilder, TimestampMicrosecondArray,
    TimestampMicrosecondBuilder, UInt32Builder, UInt64Array, UInt64Builder,
};
use arrow::buffer::{BooleanBuffer, NullBuffer};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};

use crate::Table;

mod action;
mod alert;
mod baseline;
mod container;
mod file;
mod gap;
mod net;
mod posture;
mod process;
mod syscall;

pub use action::*;
pub use alert::*;
pub use baseline::*;
pub use container::*;
pub use file::*;
pub use gap::*;
pub use net::*;
pub use posture::*;
pub use process::*;
pub use syscall::*;

/// The schema of `table`.
pub fn schema_of(table: Table) -> SchemaRef {
    match table {
        Table::Process => PROCESS_SCHEMA.clone(),
        Table::File => FILE_SCHEMA.clone(),
        Table::Net => NET_SCHEMA.clone(),
        Table::Syscall => SYSCALL_SCHEMA.clone(),
        Table::Gap => GAP_SCHEMA.clone(),
        Table::Action => ACTION_SCHEMA.clone(),
        Table::Container => CONTAINER_SCHEMA.clone(),
        Table::Baseline => BASELINE_SCHEMA.clone(),
        Table::Alert => ALERT_SCHEMA.clone(),
        Table::Posture => POSTURE_SCHEMA.clone(),
    }
}

/// `batch` in `schema`, for rows written before a column was added: a nullable column the batch
/// lacks is filled with nulls ("not recorded"). Anything else that differs (a column of
/// another type, one the schema does not have) is an error: converting it could lose evidence.
pub fn upgrade_batch(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    if let Some(extra) = batch
        .schema()
        .fields()
        .iter()
        .find(|f| schema.field_with_name(f.name()).is_err())
    {
        return Err(ArrowError::SchemaError(format!(
            "column {} is not in the table's schema",
            extra.name()
        )));
    }
    let columns = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) => Ok(column.clone()),
            None if field.is_nullable() => Ok(arrow::array::new_null_array(
                field.data_type(),
                batch.num_rows(),
            )),
            None => Err(ArrowError::SchemaError(format!(
                "column {} is missing and may not be null",
                field.name()
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}

fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Columns every event table starts with.
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

/// The identity every event row carries; see [`common_fields`].
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

// Column builders over a slice of rows: one closure per column keeps each table's batch
// function a readable list of its columns.

fn col_str<'a, R>(rows: &'a [R], f: impl Fn(&'a R) -> Option<&'a str>) -> ArrayRef {
    let mut b = StringBuilder::with_capacity(rows.len(), rows.len() * 8);
    rows.iter().for_each(|r| b.append_option(f(r)));
    Arc::new(b.finish())
}
fn col_u64<'a, R>(rows: &'a [R], f: impl Fn(&'a R) -> Option<u64>) -> ArrayRef {
    let mut b = UInt64Builder::with_capacity(rows.len());
    rows.iter().for_each(|r| b.append_option(f(r)));
    Arc::new(b.finish())
}
fn col_i64<'a, R>(rows: &'a [R], f: impl Fn(&'a R) -> Option<i64>) -> ArrayRef {
    let mut b = Int64Builder::with_capacity(rows.len());
    rows.iter().for_each(|r| b.append_option(f(r)));
    Arc::new(b.finish())
}
fn col_i32<'a, R>(rows: &'a [R], f: impl Fn(&'a R) -> Option<i32>) -> ArrayRef {
    let mut b = Int32Builder::with_capacity(rows.len());
    rows.iter().for_each(|r| b.append_option(f(r)));
    Arc::new(b.finish())
}
fn col_u32<'a, R>(rows: &'a [R], f: impl Fn(&'a R) -> Option<u32>) -> ArrayRef {
    let mut b = UInt32Builder::with_capacity(rows.len());
    rows.iter().for_each(|r| b.append_option(f(r)));
    Arc::new(b.finish())
}
fn col_bool<'a, R>(rows: &'a [R], f: impl Fn(&'a R) -> Option<bool>) -> ArrayRef {
    let mut b = BooleanBuilder::with_capacity(rows.len());
    rows.iter().for_each(|r| b.append_option(f(r)));
    Arc::new(b.finish())
}
fn col_time<'a, R>(rows: &'a [R], f: impl Fn(&'a R) -> DateTime<Utc>) -> ArrayRef {
    let mut b = TimestampMicrosecondBuilder::with_capacity(rows.len());
    rows.iter()
        .for_each(|r| b.append_value(f(r).timestamp_micros()));
    Arc::new(b.finish().with_timezone("UTC"))
}

/// The common columns of event rows.
fn common_columns<'a, R>(
    host: &'a str,
    rows: &'a [R],
    id: impl Fn(&'a R) -> &'a RowIdentity,
) -> Vec<ArrayRef> {
    vec![
        col_time(rows, |r| id(r).time),
        col_u64(rows, |r| Some(id(r).ktime_ns)),
        col_str(rows, |_| Some(host)),
        col_i32(rows, |r| Some(id(r).pid)),
        col_i32(rows, |r| Some(id(r).tid)),
        col_str(rows, |r| Some(&id(r).comm)),
        col_u64(rows, |r| Some(id(r).cgroup_id)),
        col_str(rows, |r| id(r).container_id.as_deref()),
    ]
}

fn batch(schema: &SchemaRef, columns: Vec<ArrayRef>) -> RecordBatch {
    RecordBatch::try_new(schema.clone(), columns)
        .expect("batch functions build one value per column per row, in schema order")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_batch_has_the_alert_schema() {
        let row = AlertRow {
            time: Utc::now(),
            alert_id: "a1".into(),
            rule: "QH001".into(),
            title: "Shell".into(),
            severity: "medium".into(),
            rule_source: "builtin".into(),
            mitre: vec!["T1059.004".into()],
            evidence: "shell".into(),
            ktime_ns: Some(5),
            ..Default::default()
        };
        let b = alert_batch(
            "h",
            &[
                row.clone(),
                AlertRow {
                    tags: vec!["x".into()],
                    ..row
                },
            ],
        );
        assert_eq!(b.schema(), *ALERT_SCHEMA);
        assert_eq!(b.num_rows(), 2);
        assert!(b.column_by_name("event_time").unwrap().is_null(0));
    }
    use arrow::array::Array;
    use chrono::TimeZone;

    /// A getpid call of pid 1.
    fn getpid_row(comm: i32, ktime_slack_ns: Option<u64>) -> SyscallRow {
        SyscallRow {
            time_micros: 1,
            ktime_ns: 1_000,
            pid: 1,
            tid: 1,
            comm,
            cgroup_id: 1,
            nr: 39,
            ret: 1,
            ktime_slack_ns,
            source: 0,
        }
    }

    /// A raw-stream batch as sealed before `ktime_slack_ns` existed reads as today's schema with
    /// the column null; a column the schema does not know is refused, not dropped.
    #[test]
    fn batches_of_an_older_schema_are_upgraded_with_null_columns() {
        let mut b = SyscallBuilder::default();
        let comm = b.intern_comm("sh");
        b.append(getpid_row(comm, Some(500)));
        let now = b.finish("h", |_| Some("getpid"));
        let at = now.schema().index_of("ktime_slack_ns").unwrap();
        let mut old = now.clone();
        old.remove_column(at);

        let upgraded = upgrade_batch(old.clone(), &SYSCALL_SCHEMA).unwrap();
        assert_eq!(upgraded.schema(), *SYSCALL_SCHEMA);
        assert_eq!(upgraded.column(at).null_count(), 1);
        assert_eq!(upgraded.column(0), now.column(0));
        assert_eq!(upgrade_batch(now.clone(), &SYSCALL_SCHEMA).unwrap(), now);

        let mut narrower = (**SYSCALL_SCHEMA).clone();
        narrower.fields = narrower
            .fields
            .iter()
            .filter(|f| f.name() != "ktime_slack_ns")
            .cloned()
            .collect();
        let err = upgrade_batch(now, &Arc::new(narrower)).unwrap_err();
        assert!(err.to_string().contains("ktime_slack_ns"), "{err}");
    }

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
    fn baseline_rows_round_trip() {
        let row = BaselineRow {
            time: Utc.with_ymd_and_hms(2026, 12, 1, 10, 0, 0).unwrap(),
            baseline_id: "c1@2026-12-01T10:00:00Z".into(),
            container_id: "c1".into(),
            path: "/bin/sh".into(),
            kind: "file".into(),
            size: Some(3),
            mode: Some(0o100755),
            uid: Some(0),
            gid: Some(0),
            mtime: Some(-5),
            sha256: Some("ab".into()),
            symlink_target: None,
            note: None,
        };
        let batch = baseline_batch("h", std::slice::from_ref(&row));
        assert_eq!(batch.schema(), schema_of(Table::Baseline));
        assert_eq!(baseline_rows(&batch), [row]);
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
    fn process_batch_matches_schema_for_every_event_kind() {
        let row = |event| ProcessRow {
            id: identity(10),
            ppid: Some(1),
            start_ns: Some(5),
            parent_start_ns: Some(1),
            event,
        };
        let rows = [
            row(ProcessEvent::Fork),
            row(ProcessEvent::Exec {
                filename: "/bin/ls".into(),
                argv: vec!["ls".into(), "-l".into()],
                argv_truncated: false,
                uid: 0,
                gid: 0,
                euid: 0,
                egid: 0,
            }),
            row(ProcessEvent::Exit {
                exit_code: Some(3),
                signal: None,
                core_dumped: false,
            }),
            row(ProcessEvent::Signal {
                name: "setuid",
                ids: Ids {
                    uid: Some(0),
                    ..Default::default()
                },
                target_pid: None,
                flags: None,
                detail: None,
                ret: Some(0),
            }),
        ];
        let batch = process_batch("h", &rows);
        assert_eq!(batch.num_rows(), 4);
        assert_eq!(batch.schema(), schema_of(Table::Process));
        let argv = batch
            .column_by_name("argv")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow::array::ListArray>()
            .unwrap();
        assert!(argv.is_null(0) && !argv.is_null(1) && argv.is_null(2));
        assert_eq!(argv.value(1).len(), 2);
        let uid = batch.column_by_name("uid").unwrap();
        assert!(uid.is_null(0) && !uid.is_null(1) && uid.is_null(2) && !uid.is_null(3));
    }

    #[test]
    fn syscall_rows_come_out_source_by_source_and_the_builder_starts_over() {
        use arrow::array::AsArray;
        use arrow::datatypes::{Int64Type, UInt64Type};
        fn row(source: u32, ktime_ns: u64, comm: i32) -> SyscallRow {
            SyscallRow {
                time_micros: ktime_ns as i64,
                ktime_ns,
                pid: 1,
                tid: 1,
                comm,
                cgroup_id: 1,
                nr: 39,
                ret: ktime_ns as i64,
                ktime_slack_ns: None,
                source,
            }
        }
        fn comms(batch: &RecordBatch) -> Vec<String> {
            let dict = batch
                .column_by_name("comm")
                .unwrap()
                .as_dictionary::<Int32Type>();
            let values = dict.values().as_string::<i32>();
            dict.keys()
                .iter()
                .map(|k| values.value(k.unwrap() as usize).to_string())
                .collect()
        }
        let mut b = SyscallBuilder::default();
        let sh = b.intern_comm("sh");
        for (source, ktime) in [(1, 10), (0, 20), (1, 30), (0, 40), (7, 5)] {
            b.append(row(source, ktime, sh));
        }
        let first = b.finish("h", |_| Some("getpid"));
        let ktimes = |batch: &RecordBatch| -> Vec<u64> {
            let column = batch.column_by_name("ktime_ns").unwrap();
            column.as_primitive::<UInt64Type>().values().to_vec()
        };
        assert_eq!(
            ktimes(&first),
            [20, 40, 10, 30, 5],
            "by source, arrival order within"
        );
        let rets = first
            .column_by_name("ret")
            .unwrap()
            .as_primitive::<Int64Type>();
        assert_eq!(
            rets.values().to_vec(),
            [20, 40, 10, 30, 5],
            "columns stay aligned"
        );
        assert!(b.is_empty());

        // The next batch holds only its own rows, with a dictionary of its own comms.
        let nginx = b.intern_comm("nginx");
        b.append(row(1, 50, nginx));
        let second = b.finish("h", |_| Some("getpid"));
        assert_eq!(ktimes(&second), [50]);
        assert_eq!(comms(&second), ["nginx"]);
        let dict = second
            .column_by_name("comm")
            .unwrap()
            .as_dictionary::<Int32Type>();
        assert_eq!(
            dict.values().len(),
            1,
            "comms of the previous batch are gone"
        );
    }

    #[test]
    fn other_tables_match_their_schemas() {
        let f = file_batch(
            "h",
            &[FileRow {
                id: identity(1),
                event: "open",
                syscall: "openat",
                path: Some("a".into()),
                abs_path: Some("/a".into()),
                resolution: "cwd",
                path2: None,
                abs_path2: None,
                flags: Some(0),
                mode: None,
                owner_uid: None,
                owner_gid: None,
                fd: Some(3),
                ret: Some(3),
                kernel_path: None,
                path_resolution: None,
            }],
        );
        assert_eq!(f.schema(), schema_of(Table::File));
        let n = net_batch(
            "h",
            &[NetRow {
                id: Some(identity(1)),
                event: "connect",
                ..Default::default()
            }],
        );
        assert_eq!(n.schema(), schema_of(Table::Net));
        let mut s = SyscallBuilder::default();
        let comm = s.intern_comm("x");
        s.append(getpid_row(comm, None));
        assert_eq!(
            s.finish("h", |_| Some("getpid")).schema(),
            schema_of(Table::Syscall)
        );
        let t = identity(1).time;
        let g = gap_batch(
            "h",
            &[GapRow {
                time: t,
                ktime_ns: 1,
                since: t,
                cpu: 0,
                lost: 5,
                reason: GapReason::RingBufferFull,
                lost_table: None,
            }],
        );
        assert_eq!(g.schema(), schema_of(Table::Gap));
    }
}
