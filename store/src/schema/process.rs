//! The `process` table: forks, execs, exits and privilege/escape signals, and the facts the
//! recorder adds to them.

use super::*;

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
