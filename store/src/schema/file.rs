//! The `file` table: what was opened, created, renamed, linked, removed or changed, with the
//! path as given, its absolute form and the kernel's own path.

use super::*;

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
