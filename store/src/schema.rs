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

// ---- process -------------------------------------------------------------------------------

/// Schema of the `process` table.
pub static PROCESS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = common_fields();
    fields.extend([
        // fork | exec | exit | exe_hash (a late hash of an exec, see `exe_sha256`), or a
        // privilege/escape signal: setuid, setgid, setreuid,
        // setregid, setresuid, setresgid, capset, ptrace, mount, umount, unshare, setns,
        // init_module, finit_module, bpf, memfd_create, mmap_exec, mprotect_exec
        Field::new("event", DataType::Utf8, false),
        Field::new("ppid", DataType::Int32, true),
        // Kernel monotonic start time of the process: with pid, the key that survives PID reuse.
        Field::new("start_ns", DataType::UInt64, true),
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
        // exec: the credentials of the new image; setuid family: the ids asked for.
        Field::new("uid", DataType::UInt32, true),
        Field::new("gid", DataType::UInt32, true),
        Field::new("euid", DataType::UInt32, true),
        Field::new("egid", DataType::UInt32, true),
        // exit: the status passed to exit(), or the signal that killed the process.
        Field::new("exit_code", DataType::Int32, true),
        Field::new("exit_signal", DataType::Int32, true),
        Field::new("core_dumped", DataType::Boolean, true),
        // signals: the syscall's result (negative errno on failure), its target process
        // (ptrace), its flags (unshare/setns/mount/mmap/mprotect/bpf command/ptrace request/
        // capset effective set) and a readable detail (mount source and target, module
        // parameters, memfd name).
        Field::new("ret", DataType::Int64, true),
        Field::new("target_pid", DataType::Int32, true),
        Field::new("flags", DataType::UInt64, true),
        Field::new("detail", DataType::Utf8, true),
        // What the kernel and the recorder know about where a process runs ([`ProcessFacts`]);
        // NULL in segments written before these columns existed.
        // exec: the process's working directory, and the executed path made absolute against
        // it and normalized lexically (`.`, `..`, repeated `/` removed).
        Field::new("cwd", DataType::Utf8, true),
        Field::new("exe_path", DataType::Utf8, true),
        // exec and signals: inode number of the task's mount namespace (the kernel's
        // nsproxy->mnt_ns), and of the one its program image was executed in (followed from
        // the exec through forks).
        Field::new("mnt_ns", DataType::UInt32, true),
        Field::new("image_mnt_ns", DataType::UInt32, true),
        // exec and signals: true when the program image was executed in the recorder's (the
        // host's) mount namespace: a runtime's own binary that has not yet executed anything
        // inside the container. Never derived from a name the process chose.
        Field::new("host_image", DataType::Boolean, true),
        // exec: the path of the file the kernel executed (`bprm->file`), and how it was found;
        // see the file table's `kernel_path` and `path_resolution` (relative to the process's
        // root, i.e. the container's). For a `#!` script it is the interpreter the kernel ran;
        // for a symlink, its target. NULL on other rows.
        Field::new("kernel_path", DataType::Utf8, true),
        Field::new("path_resolution", DataType::Utf8, true),
        // exec: SHA-256 (hex) of the file the kernel executed, read through the kernel's own
        // reference to it (/proc/PID/exe, checked to be the executed inode), and how it went
        // (`exe_hash`): hashed | pending | queue_full | too_big | gone | replaced | changed |
        // not_regular | unreadable | no_identity | off. `pending`: the hash was not ready when
        // the row was sealed; it follows in an `exe_hash` row of the same host, pid, start_ns
        // and ktime_ns (the `execs` view joins it in). NULL on other rows and older segments.
        Field::new("exe_sha256", DataType::Utf8, true),
        Field::new("exe_hash", DataType::Utf8, true),
    ]);
    Arc::new(Schema::new(fields))
});

/// Facts of a `process` row beyond the event itself: where the process runs, as the kernel
/// reported it and the recorder followed it (see the schema's comments). Kept beside
/// [`ProcessRow`] rather than in it, so rows built without them stay valid (all NULL).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessFacts {
    pub cwd: Option<String>,
    pub exe_path: Option<String>,
    pub mnt_ns: Option<u32>,
    pub image_mnt_ns: Option<u32>,
    pub host_image: Option<bool>,
    pub kernel_path: Option<String>,
    pub path_resolution: Option<&'static str>,
    pub exe_sha256: Option<String>,
    pub exe_hash: Option<&'static str>,
}

/// The ids a setuid-family call asks for (None = unchanged).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ids {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub euid: Option<u32>,
    pub egid: Option<u32>,
}

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
    /// The hash of an exec's file that was not ready when the exec row was sealed: same
    /// pid, start_ns and ktime_ns as that exec row; `exe_sha256`/`exe_hash` in its facts.
    ExeHash,
    /// A privilege change or container-escape signal (see the `event` column's list).
    Signal {
        name: &'static str,
        ids: Ids,
        target_pid: Option<i32>,
        flags: Option<u64>,
        detail: Option<String>,
        /// None while (or if) the result was not seen.
        ret: Option<i64>,
    },
}

impl ProcessEvent {
    pub fn name(&self) -> &'static str {
        match self {
            ProcessEvent::Fork => "fork",
            ProcessEvent::Exec { .. } => "exec",
            ProcessEvent::Exit { .. } => "exit",
            ProcessEvent::ExeHash => "exe_hash",
            ProcessEvent::Signal { name, .. } => name,
        }
    }
}

/// One row of the `process` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessRow {
    pub id: RowIdentity,
    pub ppid: Option<i32>,
    pub start_ns: Option<u64>,
    pub parent_start_ns: Option<u64>,
    pub event: ProcessEvent,
}

/// Builds a `process` batch whose [`ProcessFacts`] are unknown (NULL).
pub fn process_batch(host: &str, rows: &[ProcessRow]) -> RecordBatch {
    process_batch_with_facts(host, rows, &[])
}

/// Builds a `process` batch; `facts[i]` belongs to `rows[i]` (missing ones are NULL).
pub fn process_batch_with_facts(
    host: &str,
    rows: &[ProcessRow],
    facts: &[ProcessFacts],
) -> RecordBatch {
    use ProcessEvent::*;
    type ExecParts<'a> = (&'a str, &'a [String], bool, [u32; 4]);
    fn exec(r: &ProcessRow) -> Option<ExecParts<'_>> {
        match &r.event {
            Exec {
                filename,
                argv,
                argv_truncated,
                uid,
                gid,
                euid,
                egid,
            } => Some((filename, argv, *argv_truncated, [*uid, *gid, *euid, *egid])),
            _ => None,
        }
    }
    fn ids(r: &ProcessRow, i: usize) -> Option<u32> {
        match &r.event {
            Exec { .. } => exec(r).map(|e| e.3[i]),
            Signal { ids, .. } => [ids.uid, ids.gid, ids.euid, ids.egid][i],
            _ => None,
        }
    }
    fn exit(r: &ProcessRow) -> Option<(Option<i32>, Option<i32>, bool)> {
        match &r.event {
            Exit {
                exit_code,
                signal,
                core_dumped,
            } => Some((*exit_code, *signal, *core_dumped)),
            _ => None,
        }
    }
    type SignalParts<'a> = (Option<i32>, Option<u64>, Option<&'a str>, Option<i64>);
    fn signal(r: &ProcessRow) -> Option<SignalParts<'_>> {
        match &r.event {
            Signal {
                target_pid,
                flags,
                detail,
                ret,
                ..
            } => Some((*target_pid, *flags, detail.as_deref(), *ret)),
            _ => None,
        }
    }
    let mut argv = ListBuilder::new(StringBuilder::new());
    for r in rows {
        match exec(r) {
            Some((_, args, _, _)) => {
                args.iter().for_each(|a| argv.values().append_value(a));
                argv.append(true);
            }
            None => argv.append(false),
        }
    }
    let mut columns = common_columns(host, rows, |r| &r.id);
    columns.extend([
        col_str(rows, |r| Some(r.event.name())),
        col_i32(rows, |r| r.ppid),
        col_u64(rows, |r| r.start_ns),
        col_u64(rows, |r| r.parent_start_ns),
        col_str(rows, |r| exec(r).map(|e| e.0)),
        Arc::new(argv.finish()),
        col_bool(rows, |r| exec(r).map(|e| e.2)),
        col_u32(rows, |r| ids(r, 0)),
        col_u32(rows, |r| ids(r, 1)),
        col_u32(rows, |r| ids(r, 2)),
        col_u32(rows, |r| ids(r, 3)),
        col_i32(rows, |r| exit(r).and_then(|e| e.0)),
        col_i32(rows, |r| exit(r).and_then(|e| e.1)),
        col_bool(rows, |r| exit(r).map(|e| e.2)),
        col_i64(rows, |r| signal(r).and_then(|s| s.3)),
        col_i32(rows, |r| signal(r).and_then(|s| s.0)),
        col_u64(rows, |r| signal(r).and_then(|s| s.1)),
        col_str(rows, |r| signal(r).and_then(|s| s.2)),
    ]);
    let none = ProcessFacts::default();
    let facts: Vec<&ProcessFacts> = (0..rows.len())
        .map(|i| facts.get(i).unwrap_or(&none))
        .collect();
    columns.extend([
        col_str(&facts, |f| f.cwd.as_deref()),
        col_str(&facts, |f| f.exe_path.as_deref()),
        col_u32(&facts, |f| f.mnt_ns),
        col_u32(&facts, |f| f.image_mnt_ns),
        col_bool(&facts, |f| f.host_image),
        col_str(&facts, |f| f.kernel_path.as_deref()),
        col_str(&facts, |f| f.path_resolution),
        col_str(&facts, |f| f.exe_sha256.as_deref()),
        col_str(&facts, |f| f.exe_hash),
    ]);
    batch(&PROCESS_SCHEMA, columns)
}

// ---- file ----------------------------------------------------------------------------------

/// Schema of the `file` table.
pub static FILE_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = common_fields();
    fields.extend([
        // open | create | unlink | rename | chmod | chown | mkdir | rmdir | link | symlink |
        // truncate
        Field::new("event", DataType::Utf8, false),
        Field::new("syscall", DataType::Utf8, false),
        // The path as the process gave it, and made absolute when the recorder could (against
        // the process's cwd or the directory fd); `resolution` says how: absolute | cwd |
        // dirfd | unresolved (the process or fd was gone) | none (fd-only calls). Absolute,
        // cwd and dirfd paths are normalized lexically: `.`, `..` and repeated `/` are removed
        // without consulting the filesystem (a `..` after a symlink is taken literally), so
        // `/tmp/../etc//./shadow` is recorded as `/etc/shadow`.
        Field::new("path", DataType::Utf8, true),
        Field::new("abs_path", DataType::Utf8, true),
        Field::new("resolution", DataType::Utf8, false),
        // rename/link/symlink: the second path (the new name; for symlink, the link itself).
        Field::new("path2", DataType::Utf8, true),
        Field::new("abs_path2", DataType::Utf8, true),
        // open flags (O_*), rename flags; mode for open/creat/chmod/mkdir.
        Field::new("flags", DataType::UInt64, true),
        Field::new("mode", DataType::UInt32, true),
        // chown: the owner asked for (-1 = unchanged).
        Field::new("owner_uid", DataType::Int64, true),
        Field::new("owner_gid", DataType::Int64, true),
        // fchmod/fchown/ftruncate: the file descriptor acted on; open: the fd returned.
        Field::new("fd", DataType::Int32, true),
        // The syscall's result: >= 0 success (open: the new fd), negative errno on failure.
        Field::new("ret", DataType::Int64, true),
        // The path of the file the kernel actually opened (open/creat that succeeded), walked
        // in the kernel from the returned fd's dentry and mount chain: symlinks, `..`, `//`, a
        // relative path or another thread rewriting the path buffer cannot change it. It is
        // absolute as seen from the process's own root (`current->fs->root`): for a process in
        // a container, from the container's root, so a container's /etc/shadow is
        // `/etc/shadow`, not its path on the host. `path_resolution` says what it is:
        //   kernel              -- the walk reached the process's root;
        //   kernel_outside_root -- the file lies outside the process's root (an inherited fd,
        //                          /proc/<pid>/root/...): the path is from the root of the
        //                          mount tree the file is in (for a container process opening
        //                          through /proc/1/root, the host's path);
        //   truncated           -- the walk gave up (more than 32 components or ~256 bytes):
        //                          kernel_path holds the last components, without a leading /;
        //   pseudo              -- the fd is no file in a mounted tree (a pipe, socket or
        //                          anonymous inode opened through /dev/fd/N or
        //                          /proc/<pid>/fd/N): kernel_path is NULL;
        //   lexical             -- no kernel path (failed calls, calls without a result fd,
        //                          unlink/rename, or a kernel whose BTF lacks a field the walk
        //                          needs): only abs_path, the lexical resolution, is known.
        // The walk runs at the syscall's exit tracepoint, on the fd just returned: another
        // thread of the process that replaces that descriptor (dup2) in the moment between the
        // kernel's return and the tracepoint makes it name the replacing file; the path given
        // stays beside it, and rules match either.
        // NULL in segments written before these columns existed.
        Field::new("kernel_path", DataType::Utf8, true),
        Field::new("path_resolution", DataType::Utf8, true),
    ]);
    Arc::new(Schema::new(fields))
});

/// Values of the `path_resolution` columns (the file table's schema says what each means).
pub mod path_resolution {
    pub const KERNEL: &str = "kernel";
    pub const KERNEL_OUTSIDE_ROOT: &str = "kernel_outside_root";
    pub const TRUNCATED: &str = "truncated";
    pub const LEXICAL: &str = "lexical";
    pub const PSEUDO: &str = "pseudo";
    pub const ALL: [&str; 5] = [KERNEL, KERNEL_OUTSIDE_ROOT, TRUNCATED, LEXICAL, PSEUDO];
}

/// One row of the `file` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    pub id: RowIdentity,
    pub event: &'static str,
    pub syscall: &'static str,
    pub path: Option<String>,
    pub abs_path: Option<String>,
    pub resolution: &'static str,
    pub path2: Option<String>,
    pub abs_path2: Option<String>,
    pub flags: Option<u64>,
    pub mode: Option<u32>,
    pub owner_uid: Option<i64>,
    pub owner_gid: Option<i64>,
    pub fd: Option<i32>,
    pub ret: Option<i64>,
    pub kernel_path: Option<String>,
    pub path_resolution: Option<&'static str>,
}

/// Builds a `file` batch.
pub fn file_batch(host: &str, rows: &[FileRow]) -> RecordBatch {
    let mut columns = common_columns(host, rows, |r| &r.id);
    columns.extend([
        col_str(rows, |r| Some(r.event)),
        col_str(rows, |r| Some(r.syscall)),
        col_str(rows, |r| r.path.as_deref()),
        col_str(rows, |r| r.abs_path.as_deref()),
        col_str(rows, |r| Some(r.resolution)),
        col_str(rows, |r| r.path2.as_deref()),
        col_str(rows, |r| r.abs_path2.as_deref()),
        col_u64(rows, |r| r.flags),
        col_u32(rows, |r| r.mode),
        col_i64(rows, |r| r.owner_uid),
        col_i64(rows, |r| r.owner_gid),
        col_i32(rows, |r| r.fd),
        col_i64(rows, |r| r.ret),
        col_str(rows, |r| r.kernel_path.as_deref()),
        col_str(rows, |r| r.path_resolution),
    ]);
    batch(&FILE_SCHEMA, columns)
}

// ---- net -----------------------------------------------------------------------------------

/// Schema of the `net` table.
pub static NET_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields = common_fields();
    fields.extend([
        // connect | accept | bind | listen | socket | tcp_state
        Field::new("event", DataType::Utf8, false),
        Field::new("syscall", DataType::Utf8, true),
        Field::new("fd", DataType::Int32, true),
        // inet | inet6 | unix | netlink | packet | other(<n>)
        Field::new("family", DataType::Utf8, true),
        // tcp_state rows: tcp | sctp | mptcp; socket rows: the socket type asked for
        // (stream | dgram | raw | seqpacket | packet | other).
        Field::new("protocol", DataType::Utf8, true),
        Field::new("local_addr", DataType::Utf8, true),
        Field::new("local_port", DataType::UInt16, true),
        Field::new("remote_addr", DataType::Utf8, true),
        Field::new("remote_port", DataType::UInt16, true),
        Field::new("unix_path", DataType::Utf8, true),
        // tcp_state: the transition (e.g. SYN_SENT -> ESTABLISHED). The pid/comm of these rows
        // is whatever task the kernel ran when the state changed, often not the socket's owner.
        Field::new("old_state", DataType::Utf8, true),
        Field::new("new_state", DataType::Utf8, true),
        // listen: the backlog asked for.
        Field::new("backlog", DataType::Int32, true),
        // The syscall's result (accept: the new fd); negative errno on failure.
        Field::new("ret", DataType::Int64, true),
    ]);
    Arc::new(Schema::new(fields))
});

/// The kernel's TCP state names (include/net/tcp_states.h), by number, as the `net` table's
/// `old_state`/`new_state` columns spell them. None for a number the kernel does not use.
pub fn tcp_state_name(state: usize) -> Option<&'static str> {
    const STATES: [&str; 13] = [
        "UNKNOWN",
        "ESTABLISHED",
        "SYN_SENT",
        "SYN_RECV",
        "FIN_WAIT1",
        "FIN_WAIT2",
        "TIME_WAIT",
        "CLOSE",
        "CLOSE_WAIT",
        "LAST_ACK",
        "LISTEN",
        "CLOSING",
        "NEW_SYN_RECV",
    ];
    STATES.get(state).copied().filter(|_| state != 0)
}

/// One row of the `net` table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetRow {
    pub id: Option<RowIdentity>,
    pub event: &'static str,
    pub syscall: Option<&'static str>,
    pub fd: Option<i32>,
    pub family: Option<String>,
    pub protocol: Option<&'static str>,
    pub local_addr: Option<String>,
    pub local_port: Option<u16>,
    pub remote_addr: Option<String>,
    pub remote_port: Option<u16>,
    pub unix_path: Option<String>,
    pub old_state: Option<&'static str>,
    pub new_state: Option<&'static str>,
    pub backlog: Option<i32>,
    pub ret: Option<i64>,
}

/// Builds a `net` batch. Every row must have its identity set.
pub fn net_batch(host: &str, rows: &[NetRow]) -> RecordBatch {
    let mut columns = common_columns(host, rows, |r| {
        r.id.as_ref().expect("net rows carry an identity")
    });
    let ports = |f: fn(&NetRow) -> Option<u16>| -> ArrayRef {
        let mut b = arrow::array::UInt16Builder::with_capacity(rows.len());
        rows.iter().for_each(|r| b.append_option(f(r)));
        Arc::new(b.finish())
    };
    let local_port = ports(|r| r.local_port);
    let remote_port = ports(|r| r.remote_port);
    columns.extend([
        col_str(rows, |r| Some(r.event)),
        col_str(rows, |r| r.syscall),
        col_i32(rows, |r| r.fd),
        col_str(rows, |r| r.family.as_deref()),
        col_str(rows, |r| r.protocol),
        col_str(rows, |r| r.local_addr.as_deref()),
        local_port,
        col_str(rows, |r| r.remote_addr.as_deref()),
        remote_port,
        col_str(rows, |r| r.unix_path.as_deref()),
        col_str(rows, |r| r.old_state),
        col_str(rows, |r| r.new_state),
        col_i32(rows, |r| r.backlog),
        col_i64(rows, |r| r.ret),
    ]);
    batch(&NET_SCHEMA, columns)
}

// ---- syscall -------------------------------------------------------------------------------

/// Schema of the `syscall` table: the raw stream. `comm` and `name` are dictionary-encoded in
/// memory too, because this table has millions of rows per interval. (`host` stays plain text:
/// engines merge it with the `host=` partition column, which is text.)
///
/// `ktime_slack_ns` says how exact a row's time is. Null: the recorder read the clock for this
/// call, and `ktime_ns` is when it returned. Otherwise (by default most calls of a busy thread
/// do not read the clock, which is what makes recording every call affordable) the call
/// returned after `ktime_ns` and at most `ktime_slack_ns` later; `ktime_ns` still orders the
/// rows of a thread and of a CPU exactly.
pub static SYSCALL_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let fields: Vec<Field> = common_fields()
        .into_iter()
        .map(|f| {
            if f.name() == "comm" {
                Field::new(f.name(), dict.clone(), false)
            } else {
                f
            }
        })
        .chain([
            Field::new("nr", DataType::Int32, false),
            Field::new("name", dict.clone(), false),
            Field::new("ret", DataType::Int64, false),
            Field::new("ktime_slack_ns", DataType::UInt64, true),
        ])
        .collect();
    Arc::new(Schema::new(fields))
});

/// Raw-stream rows held as plain columns until sealed.
///
/// The raw stream is the largest table by far (every syscall of the machine), so appending a
/// row is a handful of `Vec` pushes: the thread's `comm` is interned once per run of rows
/// from that thread ([`SyscallBuilder::intern_comm`]), the host (the same for every row) and
/// the syscall `name` (a function of `nr`) are only materialised by
/// [`SyscallBuilder::finish`], and `container_id` is filled at seal time.
///
/// Rows are kept apart by [`SyscallRow::source`] and come out source by source, each
/// source's rows in the order they came. The recorder's sources are CPUs, whose rows arrive in
/// time order, so the batch comes out in long time-ordered runs without a sort. The per-source
/// columns keep their memory across [`SyscallBuilder::finish`] (down to what recent batches
/// needed), so a recorder that reuses its builder does not grow and fault in fresh vectors
/// for every segment. The batch's own columns can come back too, once sealed
/// ([`SyscallBuilder::recycle`]), and the next batch is built in their memory.
#[derive(Default)]
pub struct SyscallBuilder {
    sources: Vec<SourceRows>,
    comms: Vec<String>,
    comm_keys: HashMap<String, i32>,
    spare: SpareColumns,
}

/// Column vectors of sealed batches, for the next batch. Writing a batch into memory that is
/// already mapped, rather than into fresh pages the kernel must clear and map one by one, is
/// what this saves: at millions of rows a second that was a third of the recorder's drain
/// thread. Holds at most one batch's worth of each kind.
#[derive(Default)]
struct SpareColumns {
    i32s: Vec<Vec<i32>>,
    i64s: Vec<Vec<i64>>,
    u64s: Vec<Vec<u64>>,
    bytes: Vec<Vec<u8>>,
}

impl SpareColumns {
    /// A batch of [`SYSCALL_SCHEMA`] uses this many vectors of each kind: pid, tid, comm, nr
    /// and name keys and the host's offsets; time and ret; ktime_ns, cgroup_id and the slack;
    /// the host's bytes.
    const I32S: usize = 6;
    const I64S: usize = 2;
    const U64S: usize = 3;
    const BYTES: usize = 1;

    /// An empty vector for `len` values: the smallest spare one it fits in, else the largest
    /// (which grows), else a new one. A spare much larger than `len` stays for a larger batch.
    fn take<T>(pool: &mut Vec<Vec<T>>, len: usize) -> Vec<T> {
        let fits = |v: &Vec<T>| v.capacity() >= len;
        let best = (0..pool.len())
            .filter(|&i| fits(&pool[i]))
            .min_by_key(|&i| pool[i].capacity())
            .or_else(|| (0..pool.len()).max_by_key(|&i| pool[i].capacity()))
            .filter(|&i| pool[i].capacity() <= 2 * len.max(4096));
        match best {
            Some(i) => {
                let mut spare = pool.swap_remove(i);
                spare.clear();
                spare.reserve(len);
                spare
            }
            None => Vec::with_capacity(len),
        }
    }

    /// Keeps `buffer`'s memory if it is a whole vector nothing else shares and the pool has
    /// room.
    fn keep<T: arrow::datatypes::ArrowNativeType>(
        pool: &mut Vec<Vec<T>>,
        max: usize,
        buffer: arrow::buffer::Buffer,
    ) {
        if pool.len() < max
            && let Ok(vector) = buffer.into_vec::<T>()
        {
            pool.push(vector);
        }
    }

    fn recycle(&mut self, batch: RecordBatch) {
        let columns = batch.columns().to_vec();
        drop(batch);
        for column in columns {
            // Buffers outlive the array only here, so a column no one else holds gives its
            // memory back whole.
            let data = column.to_data();
            drop(column);
            let data_type = data.data_type().clone();
            let buffers = data.buffers().to_vec();
            drop(data);
            let mut buffers = buffers.into_iter();
            let (Some(first), second) = (buffers.next(), buffers.next()) else {
                continue;
            };
            match (data_type, second) {
                (DataType::Int32 | DataType::Dictionary(_, _), None) => {
                    Self::keep(&mut self.i32s, Self::I32S, first)
                }
                (DataType::Int64 | DataType::Timestamp(_, _), None) => {
                    Self::keep(&mut self.i64s, Self::I64S, first)
                }
                (DataType::UInt64, None) => Self::keep(&mut self.u64s, Self::U64S, first),
                (DataType::Utf8, Some(values)) => {
                    Self::keep(&mut self.i32s, Self::I32S, first);
                    Self::keep(&mut self.bytes, Self::BYTES, values);
                }
                _ => {}
            }
        }
    }
}

/// The rows of one source, column by column.
#[derive(Default)]
struct SourceRows {
    time: Vec<i64>,
    ktime_ns: Vec<u64>,
    pid: Vec<i32>,
    tid: Vec<i32>,
    comm: Vec<i32>,
    cgroup_id: Vec<u64>,
    nr: Vec<i32>,
    ret: Vec<i64>,
    /// [`SyscallRow::ktime_slack_ns`], 0 for `None`.
    ktime_slack_ns: Vec<u64>,
    /// Rows held lately: the last batch's, or three quarters of the previous value if that
    /// is more.
    recent_rows: usize,
}

impl SourceRows {
    /// Empties the columns, keeping at most about twice the memory their recent batches
    /// needed: one burst does not pin its memory for good (it fades batch by batch), and a
    /// short batch between full ones (a seal on the timer) does not give up memory the next
    /// full one faults in again.
    fn clear(&mut self) {
        self.recent_rows = self.time.len().max(self.recent_rows - self.recent_rows / 4);
        let len = self.recent_rows;
        fn clear_column<T>(column: &mut Vec<T>, len: usize) {
            column.clear();
            if column.capacity() > 2 * len {
                column.shrink_to(len);
            }
        }
        clear_column(&mut self.time, len);
        clear_column(&mut self.ktime_ns, len);
        clear_column(&mut self.pid, len);
        clear_column(&mut self.tid, len);
        clear_column(&mut self.comm, len);
        clear_column(&mut self.cgroup_id, len);
        clear_column(&mut self.nr, len);
        clear_column(&mut self.ret, len);
        clear_column(&mut self.ktime_slack_ns, len);
    }
}

/// Sources from this one on share one list (the recorder's sources, CPU numbers, are far
/// below it): a bogus source must not allocate a list per number.
const MAX_SOURCES: usize = 4096;

/// A string column holding `value` `rows` times, built in bulk (in `spare` vectors where it
/// has them).
fn repeated_string(value: &str, rows: usize, spare: &mut SpareColumns) -> ArrayRef {
    let fits = |n: usize| i32::try_from(n).is_ok();
    if !value.len().checked_mul(rows).is_some_and(fits) || !fits(rows) {
        // Beyond 32-bit offsets: the checked way says so.
        return Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
            value, rows,
        )));
    }
    let len = value.len() as i32;
    let mut offsets = SpareColumns::take(&mut spare.i32s, rows + 1);
    offsets.extend((0..=rows as i32).map(|i| i * len));
    let mut values = SpareColumns::take(&mut spare.bytes, value.len() * rows);
    for _ in 0..rows {
        values.extend_from_slice(value.as_bytes());
    }
    // SAFETY: offsets start at 0, grow by the length of a valid UTF-8 string and end at the
    // length of `values`, which is that string repeated.
    Arc::new(unsafe {
        StringArray::new_unchecked(
            arrow::buffer::OffsetBuffer::new_unchecked(offsets.into()),
            values.into(),
            None,
        )
    })
}

/// `values` as a column with nulls where they are 0.
fn nonzero_or_null(values: Vec<u64>) -> UInt64Array {
    let valid = BooleanBuffer::collect_bool(values.len(), |i| values[i] != 0);
    let nulls = Some(NullBuffer::new(valid)).filter(|n| n.null_count() > 0);
    UInt64Array::new(values.into(), nulls)
}

/// One raw-stream row for [`SyscallBuilder::append`]; `comm` is a key from
/// [`SyscallBuilder::intern_comm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyscallRow {
    pub time_micros: i64,
    pub ktime_ns: u64,
    pub pid: i32,
    pub tid: i32,
    pub comm: i32,
    pub cgroup_id: u64,
    pub nr: i32,
    pub ret: i64,
    /// `None` when `ktime_ns` is when the call returned; otherwise it returned after
    /// `ktime_ns` and at most this much later (the recorder did not read the clock for it).
    pub ktime_slack_ns: Option<u64>,
    /// Where the row came from (the recorder: the CPU); not stored, it orders the batch.
    pub source: u32,
}

impl SyscallBuilder {
    pub fn len(&self) -> usize {
        self.sources.iter().map(|s| s.time.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.iter().all(|s| s.time.is_empty())
    }

    /// Takes back the columns of a batch this builder finished, once it is sealed and nothing
    /// else holds them, to build the next batches in their memory. Columns still shared, or
    /// more than one batch's worth, are simply dropped.
    pub fn recycle(&mut self, batch: RecordBatch) {
        self.spare.recycle(batch);
    }

    /// The key of `comm` for [`SyscallRow::comm`].
    pub fn intern_comm(&mut self, comm: &str) -> i32 {
        if let Some(&key) = self.comm_keys.get(comm) {
            return key;
        }
        let key = self.comms.len() as i32;
        self.comms.push(comm.to_string());
        self.comm_keys.insert(comm.to_string(), key);
        key
    }

    #[inline]
    pub fn append(&mut self, row: SyscallRow) {
        let at = (row.source as usize).min(MAX_SOURCES - 1);
        if at >= self.sources.len() {
            self.sources.resize_with(at + 1, SourceRows::default);
        }
        let rows = &mut self.sources[at];
        rows.time.push(row.time_micros);
        rows.ktime_ns.push(row.ktime_ns);
        rows.pid.push(row.pid);
        rows.tid.push(row.tid);
        rows.comm.push(row.comm);
        rows.cgroup_id.push(row.cgroup_id);
        rows.nr.push(row.nr);
        rows.ret.push(row.ret);
        // 0 stands for "read the clock": a slack of 0 is kept as 1 (a bound may only grow).
        rows.ktime_slack_ns
            .push(row.ktime_slack_ns.map_or(0, |s| s.max(1)));
    }

    /// Turns the rows into a batch of [`SYSCALL_SCHEMA`] and starts over, keeping the
    /// builder's memory for the next batch. `name_of` names a syscall number (`None`:
    /// "unknown").
    pub fn finish(
        &mut self,
        host: &str,
        name_of: impl Fn(i32) -> Option<&'static str>,
    ) -> RecordBatch {
        let rows = self.len();
        // Source after source, into spare vectors or ones of the exact size (handed to Arrow
        // as they are).
        fn concat<T: Copy>(
            sources: &[SourceRows],
            rows: usize,
            column: impl Fn(&SourceRows) -> &Vec<T>,
            spare: &mut Vec<Vec<T>>,
        ) -> Vec<T> {
            let mut out = SpareColumns::take(spare, rows);
            for source in sources {
                out.extend_from_slice(column(source));
            }
            out
        }
        let (sources, spare) = (&self.sources, &mut self.spare);
        let time = concat(sources, rows, |s| &s.time, &mut spare.i64s);
        let ktime_ns = concat(sources, rows, |s| &s.ktime_ns, &mut spare.u64s);
        let pid = concat(sources, rows, |s| &s.pid, &mut spare.i32s);
        let tid = concat(sources, rows, |s| &s.tid, &mut spare.i32s);
        let comm = concat(sources, rows, |s| &s.comm, &mut spare.i32s);
        let cgroup_id = concat(sources, rows, |s| &s.cgroup_id, &mut spare.u64s);
        let nr = concat(sources, rows, |s| &s.nr, &mut spare.i32s);
        let ret = concat(sources, rows, |s| &s.ret, &mut spare.i64s);
        let slack = concat(sources, rows, |s| &s.ktime_slack_ns, &mut spare.u64s);
        for source in &mut self.sources {
            source.clear();
        }
        let comms = std::mem::take(&mut self.comms);
        self.comm_keys.clear();

        // Names: one dictionary entry per distinct number in the batch, found through a table
        // indexed by number (syscall numbers are small; others share the "unknown" entry).
        const TABLE: usize = 1024;
        let mut names: Vec<&str> = Vec::new();
        let mut key_of_nr = [-1i32; TABLE];
        let mut unknown = -1i32;
        let mut key = |nr: i32| -> i32 {
            let slot = match usize::try_from(nr) {
                Ok(i) if i < TABLE => &mut key_of_nr[i],
                _ => &mut unknown,
            };
            if *slot < 0 {
                let name = usize::try_from(nr)
                    .ok()
                    .filter(|&i| i < TABLE)
                    .and_then(|_| name_of(nr))
                    .unwrap_or("unknown");
                // "unknown" once, whichever number brought it in.
                *slot = match names.iter().position(|n| *n == name) {
                    Some(at) => at as i32,
                    None => {
                        names.push(name);
                        names.len() as i32 - 1
                    }
                };
            }
            *slot
        };
        let mut name_keys = SpareColumns::take(&mut self.spare.i32s, rows);
        name_keys.extend(nr.iter().map(|&nr| key(nr)));
        let dictionary = |keys: Vec<i32>, values: StringArray| -> ArrayRef {
            // SAFETY: every key was handed out by the dictionary's own interning (comms by
            // `intern_comm`, names by `key` above), so each indexes a value; checking millions
            // of keys again is what this skips.
            Arc::new(unsafe {
                DictionaryArray::<Int32Type>::new_unchecked(
                    Int32Array::from(keys),
                    Arc::new(values),
                )
            })
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(TimestampMicrosecondArray::from(time).with_timezone("UTC")),
            Arc::new(UInt64Array::from(ktime_ns)),
            repeated_string(host, rows, &mut self.spare),
            Arc::new(Int32Array::from(pid)),
            Arc::new(Int32Array::from(tid)),
            dictionary(comm, StringArray::from(comms)),
            Arc::new(UInt64Array::from(cgroup_id)),
            arrow::array::new_null_array(&DataType::Utf8, rows),
            Arc::new(Int32Array::from(nr)),
            dictionary(name_keys, StringArray::from(names)),
            Arc::new(Int64Array::from(ret)),
            Arc::new(nonzero_or_null(slack)),
        ];
        batch(&SYSCALL_SCHEMA, columns)
    }
}

// ---- gap -----------------------------------------------------------------------------------

/// Schema of the `gap` table: where evidence is missing. Each row says that between `since`
/// and `time`, `lost` records or rows were not kept, and why (`reason`, a [`GapReason`]):
/// records that did not fit in the ring buffer on CPU `cpu`; program runs the kernel skipped by
/// recursion protection (`cpu` [`GAP_CPU_UNKNOWN`]: it does not say where); or rows of
/// `lost_table` the recorder decoded but could not seal (a full disk, a write error, a sealer
/// too far behind), also on [`GAP_CPU_UNKNOWN`]. `reason` and `lost_table` are NULL in segments
/// sealed before they existed (those rows are all kernel-side losses).
pub static GAP_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("time", time_type(), false),
        Field::new("ktime_ns", DataType::UInt64, false),
        Field::new("host", DataType::Utf8, false),
        Field::new("since", time_type(), false),
        Field::new("cpu", DataType::Int32, false),
        Field::new("lost", DataType::UInt64, false),
        Field::new("reason", DataType::Utf8, true),
        Field::new("lost_table", DataType::Utf8, true),
    ]))
});

/// [`GapRow::cpu`] when the loss is not tied to one CPU: runs the kernel skipped by recursion
/// protection (it does not say on which CPU), and rows lost in user space.
pub const GAP_CPU_UNKNOWN: i32 = -1;

/// Why evidence is missing: the `reason` column of the `gap` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GapReason {
    /// The kernel found the ring buffer full and counted the records it could not write.
    RingBufferFull,
    /// The kernel skipped a program run because one was already running on that CPU.
    ProgramRecursion,
    /// Rows were decoded but the store's file system had no space left to seal them.
    DiskFull,
    /// Rows were decoded but sealing them failed with another error (EIO, a read-only mount).
    WriteError,
    /// Rows were decoded faster than they could be sealed, beyond the recorder's memory budget.
    SealerBehind,
}

impl GapReason {
    /// The value stored in the `reason` column.
    pub fn as_str(self) -> &'static str {
        match self {
            GapReason::RingBufferFull => "ring buffer full",
            GapReason::ProgramRecursion => "program recursion",
            GapReason::DiskFull => "disk full",
            GapReason::WriteError => "write error",
            GapReason::SealerBehind => "sealer behind",
        }
    }
}

impl std::fmt::Display for GapReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the `gap` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GapRow {
    pub time: DateTime<Utc>,
    pub ktime_ns: u64,
    pub since: DateTime<Utc>,
    pub cpu: i32,
    pub lost: u64,
    pub reason: GapReason,
    /// The table whose rows were lost, when known (user-space losses).
    pub lost_table: Option<Table>,
}

/// Builds a `gap` batch.
pub fn gap_batch(host: &str, rows: &[GapRow]) -> RecordBatch {
    batch(
        &GAP_SCHEMA,
        vec![
            col_time(rows, |r| r.time),
            col_u64(rows, |r| Some(r.ktime_ns)),
            col_str(rows, |_| Some(host)),
            col_time(rows, |r| r.since),
            col_i32(rows, |r| Some(r.cpu)),
            col_u64(rows, |r| Some(r.lost)),
            col_str(rows, |r| Some(r.reason.as_str())),
            col_str(rows, |r| r.lost_table.map(|t| t.name())),
        ],
    )
}

// ---- action --------------------------------------------------------------------------------

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

// ---- alert ---------------------------------------------------------------------------------

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

// ---- container -----------------------------------------------------------------------------

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
    fn recycled_batches_lend_their_memory_to_the_next_ones() {
        /// Where each buffer of each column of `batch` lives.
        fn addresses(batch: &RecordBatch) -> Vec<usize> {
            batch
                .columns()
                .iter()
                .flat_map(|c| c.to_data().buffers().to_vec())
                .filter(|b| !b.is_empty())
                .map(|b| b.as_ptr() as usize)
                .collect()
        }
        let fill = |b: &mut SyscallBuilder, rows: u64, base: u64| {
            let comm = b.intern_comm("sh");
            for i in 0..rows {
                b.append(SyscallRow {
                    time_micros: (base + i) as i64,
                    ktime_ns: base + i,
                    pid: 7,
                    tid: 8,
                    comm,
                    cgroup_id: 9,
                    nr: 39,
                    ret: (base + i) as i64,
                    ktime_slack_ns: (i % 2 == 0).then_some(3),
                    source: (i % 3) as u32,
                });
            }
        };
        /// Where the spare vectors live.
        fn spare(b: &SyscallBuilder) -> Vec<usize> {
            let s = &b.spare;
            (s.i32s.iter().map(|v| v.as_ptr() as usize))
                .chain(s.i64s.iter().map(|v| v.as_ptr() as usize))
                .chain(s.u64s.iter().map(|v| v.as_ptr() as usize))
                .chain(s.bytes.iter().map(|v| v.as_ptr() as usize))
                .collect()
        }
        let mut b = SyscallBuilder::default();
        fill(&mut b, 10_000, 0);
        let first = b.finish("node-1", |_| Some("getpid"));
        b.recycle(first);
        let lent = spare(&b);
        // Every column vector: six of i32, two of i64, three of u64, the host's bytes.
        assert_eq!(lent.len(), 12);
        fill(&mut b, 9_000, 50_000);
        let second = b.finish("node-1", |_| Some("getpid"));
        assert!(spare(&b).is_empty());
        let used = addresses(&second);
        assert!(
            lent.iter().all(|a| used.contains(a)),
            "the second batch is built in the first one's memory"
        );
        // ... and holds its own rows, not the first one's.
        let mut expected = SyscallBuilder::default();
        fill(&mut expected, 9_000, 50_000);
        assert_eq!(second, expected.finish("node-1", |_| Some("getpid")));

        // A batch someone still holds gives nothing back.
        let held = second.clone();
        b.recycle(second);
        assert!(spare(&b).is_empty());
        drop(held);
    }

    #[test]
    fn repeated_strings_are_whole_strings() {
        use arrow::array::AsArray;
        let texts = |value: &str, rows: usize| -> Vec<String> {
            let column = repeated_string(value, rows, &mut SpareColumns::default());
            let column = column.as_string::<i32>();
            column.iter().map(|v| v.unwrap().to_string()).collect()
        };
        assert_eq!(texts("node-1", 3), ["node-1", "node-1", "node-1"]);
        assert_eq!(texts("", 2), ["", ""]);
        assert!(texts("node-1", 0).is_empty());
        // Many rows: still the same string everywhere.
        let many = texts("h", 5 << 20);
        assert!(many.len() == 5 << 20 && many.iter().all(|v| v == "h"));
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
