//! Event records shared by the eBPF programs (writers) and the recorder (reader).
//!
//! Every record is `#[repr(C)]`, fixed-size and starts with an [`EventHeader`] whose `kind`
//! says which record follows. The kernel side writes them straight into ring-buffer slots (the
//! larger ones do not fit on the 512-byte eBPF stack); the user side reads them back with
//! [`read_record`], which checks the length first.

#![no_std]

/// Length of a task's `comm`, including the terminating NUL.
pub const COMM_LEN: usize = 16;
/// Bytes of the exec'd path kept (longer paths are cut; `filename_len` tells).
pub const FILENAME_LEN: usize = 256;
/// Bytes of the NUL-separated argument vector kept. A power of two, so the kernel side can
/// bound a variable-length copy for the verifier with a mask.
pub const ARGV_LEN: usize = 1024;

/// `EventHeader::kind` of a [`ForkEvent`].
pub const KIND_FORK: u32 = 1;
/// `EventHeader::kind` of an [`ExecEvent`].
pub const KIND_EXEC: u32 = 2;
/// `EventHeader::kind` of an [`ExitEvent`].
pub const KIND_EXIT: u32 = 3;
/// `EventHeader::kind` of a [`CallEvent`].
pub const KIND_CALL: u32 = 5;
/// `EventHeader::kind` of a [`TcpStateEvent`].
pub const KIND_TCP_STATE: u32 = 7;

/// Bytes kept of each path (or socket address) argument.
pub const STR_LEN: usize = 256;
/// Bytes kept of the third, short string argument (a mount's filesystem type).
pub const SHORT_STR_LEN: usize = 32;
/// Bytes of a socket address kept (enough for `sockaddr_un`).
pub const SOCKADDR_LEN: usize = 128;

/// Who did something, when and where: the first bytes of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct EventHeader {
    pub kind: u32,
    /// Process id (the kernel's tgid) of the current task.
    pub pid: u32,
    /// Thread id (the kernel's pid) of the current task.
    pub tid: u32,
    pub _pad: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC, the clock task start times use too.
    pub ktime_ns: u64,
    /// Inode number of the task's cgroup v2 directory.
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
}

/// A new process (never a thread) was created. The header describes the parent.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ForkEvent {
    pub header: EventHeader,
    pub child_pid: u32,
    pub _pad: u32,
    pub parent_start_ns: u64,
    pub child_start_ns: u64,
}

/// A process replaced its image. The header describes the process after the exec.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExecEvent {
    pub header: EventHeader,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub euid: u32,
    pub egid: u32,
    /// Bytes of `filename` filled, without the NUL (the kernel string may have been longer).
    pub filename_len: u32,
    /// Length of the full argument area in the new image (`mm->arg_end - mm->arg_start`).
    pub argv_total_len: u32,
    /// Bytes of `argv` filled: `min(argv_total_len, ARGV_LEN)`.
    pub argv_len: u32,
    /// Inode number of the task's mount namespace when it executed the new image.
    pub mnt_ns: u32,
    /// The executed file's device as the kernel holds it (`bprm->file->f_inode->i_sb->s_dev`,
    /// the kernel's `MAJOR << 20 | MINOR` encoding); with `exe_ino` the identity a hash of
    /// `/proc/PID/exe` is checked against. 0 when the path walk's offsets are off.
    pub exe_dev: u32,
    pub start_ns: u64,
    pub parent_start_ns: u64,
    /// The executed file's inode number (`bprm->file->f_inode->i_ino`); 0 when unknown.
    pub exe_ino: u64,
    pub filename: [u8; FILENAME_LEN],
    /// The argument strings, each NUL-terminated, as they sit in the new image's memory.
    pub argv: [u8; ARGV_LEN],
    /// The executed file's path as the kernel resolved it (`bprm->file`): see [`KernelPath`].
    pub kpath: KernelPath,
}

/// Bytes of a [`KernelPath`]'s buffer. Components are written at offsets below
/// [`KPATH_NAME_CAP`] only, each at most [`KPATH_NAME_CAP`] bytes (NAME_MAX and its NUL), so
/// every write stays inside the buffer in a form the verifier can check; a path of more than
/// about 256 bytes is cut ([`KPATH_TRUNCATED`]).
pub const KPATH_LEN: usize = 512;
/// Most bytes one component takes in a [`KernelPath`] (a name of NAME_MAX bytes and its NUL).
pub const KPATH_NAME_CAP: usize = 256;
/// Most components (names) a [`KernelPath`] walk records before it gives up.
pub const KPATH_MAX_NAMES: u32 = 32;
/// Most steps of the walk: one per component plus one per mount crossed.
pub const KPATH_STEPS: u32 = 48;

/// [`KernelPath::status`]: no walk was made (not an open/exec, a failed call, or the walk is
/// off because the kernel's BTF lacks a field it needs).
pub const KPATH_NONE: u32 = 0;
/// The walk reached the task's root (`current->fs->root`): the path is absolute as seen from
/// the process (for a containerised process, from the container's root).
pub const KPATH_ROOT: u32 = 1;
/// The walk reached the root of the mount tree the file lies in without meeting the task's
/// root: the file is outside the process's root (an inherited fd, `/proc/<pid>/root/...`), and
/// the path is relative to that mount tree's root.
pub const KPATH_OUTSIDE_ROOT: u32 = 2;
/// The walk gave up (too many components, too long, or a name could not be read): the
/// components found are the path's last ones.
pub const KPATH_TRUNCATED: u32 = 3;
/// The file is not in a mounted tree: a pipe, socket or anonymous inode (reached through
/// `/dev/fd/N` or `/proc/<pid>/fd/N`), or a dentry cut off from its tree. It has no path.
pub const KPATH_PSEUDO: u32 = 4;

/// The path of a file the kernel opened or executed, from the file's own dentry and mount chain
/// (`struct file` -> `f_path`), so neither `..`, `//`, symlinks, a relative path nor another
/// thread rewriting the user's path buffer can change it. The components are written leaf first,
/// each NUL-terminated (`shadow\0etc\0` for `/etc/shadow`); user space reverses them.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KernelPath {
    /// One of the `KPATH_*` statuses.
    pub status: u32,
    /// Bytes of `buf` filled.
    pub len: u32,
    pub buf: [u8; KPATH_LEN],
}

impl KernelPath {
    /// The components, root first; `None` when no walk was made.
    pub fn components(&self) -> Option<impl Iterator<Item = &[u8]>> {
        if self.status == KPATH_NONE {
            return None;
        }
        let len = (self.len as usize).min(KPATH_LEN);
        Some(
            self.buf[..len]
                .rsplit(|&b| b == 0)
                .filter(|c| !c.is_empty()),
        )
    }
}

/// A process ended (its thread-group leader exited).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ExitEvent {
    pub header: EventHeader,
    pub ppid: u32,
    /// The kernel's `task->exit_code`: `status << 8` for exit(status), else the signal number
    /// with 0x80 set when a core was dumped.
    pub exit_code: u32,
    pub start_ns: u64,
    pub parent_start_ns: u64,
}

/// `EventHeader::kind` of a [`CallEvent`] sent at the syscall's entry, for syscalls this
/// kernel has no tracepoints for (`ret` is meaningless: the result was not seen).
pub const KIND_CALL_ENTRY: u32 = 9;

/// `kind` of a [`RawBatch`] (the raw stream), in the position of `EventHeader::kind`.
pub const KIND_RAW_BATCH: u32 = 8;

/// Slots in one [`RawBatch`]. A power of two, so the kernel side can bound an index with a
/// mask.
pub const RAW_BATCH_SLOTS: usize = 128;

/// A batch whose first syscall is older than this is sent at the next syscall on its CPU,
/// full or not, so a busy CPU's rows are never held back for long. (A quiet CPU's batch is
/// sent by the recorder's periodic flush.)
pub const RAW_BATCH_MAX_AGE_NS: u64 = 2_000_000;

/// By default a raw-stream call reads the clock only when it starts a batch or a run of calls
/// from one thread (a thread change or a context switch ends a run), and otherwise every this
/// many calls: the clock is two thirds of the cost of recording a call (measured: ~30 ns of
/// ~45 ns per call on a 6.18 VM). The other calls carry [`RAW_KTIME_UNREAD`]; user space
/// places them after the reading before them, bounded by the reading after them.
pub const RAW_CLOCK_EVERY: u32 = 16;

/// [`RawSlot::ktime_ns`] of a call that did not read the clock (see [`RAW_CLOCK_EVERY`]).
pub const RAW_KTIME_UNREAD: u64 = 0;

/// [`RawSlot::nr`] of the first slot of a thread record (a [`RawThread`], two slots long),
/// which names the thread of the syscall slots after it.
pub const RAW_SLOT_THREAD: i32 = -1;

/// One 24-byte slot of a [`RawBatch`]: a syscall (`nr >= 0`) or, when `nr` is
/// [`RAW_SLOT_THREAD`], the first half of a thread record (read the two slots as a
/// [`RawThread`]).
///
/// The raw stream is the one part of the recording that runs on every syscall of the machine,
/// so a slot carries only what changes per call. Who made the call (pid, comm and cgroup) is
/// written once per run of calls from the same thread, and again after a call that may rename
/// it (exec, prctl), which saves two helper calls and 24 bytes per call.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawSlot {
    pub nr: i32,
    pub tid: u32,
    /// When the call returned, or [`RAW_KTIME_UNREAD`]: then it returned after the reading
    /// of the previous slots and before that of the next ones (or the batch's `sent_ktime_ns`).
    pub ktime_ns: u64,
    pub ret: i64,
}

/// Two [`RawSlot`]s read as a thread record (`nr` and `tid` in the same place as a slot's).
///
/// The cgroup is read here, not per call: a batch always starts with a thread record, and a
/// CPU writes another after every context switch and thread change, so a task moved to another
/// cgroup while it keeps running on its CPU is attributed to the new cgroup from its next
/// switch or the next batch on (at most [`RAW_BATCH_SLOTS`] calls or [`RAW_BATCH_MAX_AGE_NS`]
/// later).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawThread {
    /// Always [`RAW_SLOT_THREAD`].
    pub marker: i32,
    pub tid: u32,
    /// Process id (the kernel's tgid) of the thread.
    pub pid: u32,
    pub _pad: u32,
    /// Inode number of the thread's cgroup v2 directory.
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
    pub _reserved: u64,
}

/// Slots a [`RawThread`] takes.
pub const RAW_THREAD_SLOTS: usize = 2;

/// The fixed part of a [`RawBatch`]; the ring-buffer record is this followed by `len` slots.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RawBatchHeader {
    /// Always [`KIND_RAW_BATCH`].
    pub kind: u32,
    /// Slots filled (a thread record counts as [`RAW_THREAD_SLOTS`]).
    pub len: u32,
    /// Syscall slots among them: what is counted as lost if the batch cannot be sent.
    pub calls: u32,
    /// Non-zero while a program is writing the batch (the flush program then leaves it).
    pub busy: u32,
    /// Thread of the last thread record, 0 at the start of a batch.
    pub last_tid: u32,
    /// CPU the batch was filled on: one CPU's batches, and the slots in each, are in time
    /// order.
    pub cpu: u32,
    /// Calls since the last clock reading ([`RAW_CLOCK_EVERY`]).
    pub unclocked: u32,
    pub _pad: u32,
    /// `ktime_ns` of the first syscall slot.
    pub first_ktime_ns: u64,
    /// The last clock reading of a syscall slot.
    pub last_ktime_ns: u64,
    /// The clock when the batch was sent: calls at its end that did not read the clock
    /// returned before this.
    pub sent_ktime_ns: u64,
}

/// Bytes of [`RawBatchHeader`] at the front of a raw-batch record.
pub const RAW_BATCH_HEADER_LEN: usize = core::mem::size_of::<RawBatchHeader>();

/// Syscalls of the raw stream on one CPU, collected in a per-CPU map and sent to user space as
/// one ring-buffer record (header and filled slots only) when nearly full, when older than
/// [`RAW_BATCH_MAX_AGE_NS`], or when the recorder asks (quiet CPUs, shutdown). One record per
/// batch instead of one per syscall is what makes recording every syscall affordable.
///
/// A batch is self-contained: its first syscall slot is always preceded by a thread record, so a
/// batch lost to a full ring buffer takes no other batch's meaning with it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawBatch {
    pub header: RawBatchHeader,
    /// One slot more than a batch fills, so a thread record starting at any slot index the
    /// kernel side can compute stays inside the value (what the verifier checks).
    pub slots: [RawSlot; RAW_BATCH_SLOTS + 1],
}

const _: () = assert!(core::mem::size_of::<RawSlot>() == 24);
const _: () = assert!(core::mem::size_of::<RawThread>() == RAW_THREAD_SLOTS * 24);
const _: () = assert!(RAW_BATCH_SLOTS.is_power_of_two());

/// A syscall Quarry decodes (files, network, privilege and escape signals), sent at its exit:
/// the arguments saved at entry, the result, and the user memory the arguments point to. That
/// memory is read at exit because the kernel has just touched it, so its pages are resident
/// (at entry a path in a not-yet-touched page often cannot be read). For accept/accept4,
/// `str1` holds the peer address the kernel wrote.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CallEvent {
    pub header: EventHeader,
    pub nr: i64,
    pub ret: i64,
    /// `bpf_ktime_get_ns()` at entry (the header's time is the exit).
    pub enter_ktime_ns: u64,
    pub args: [u64; 6],
    /// Bytes filled in `str1`/`str2`/`str3` (strings without their NUL; raw copies whole), or
    /// [`UNREADABLE`] when the user memory could not be read.
    pub str1_len: u32,
    pub str2_len: u32,
    pub str3_len: u32,
    /// Inode number of the task's mount namespace, for the privilege and escape signals
    /// ([`reads_mnt_ns`]); 0 for the others.
    pub mnt_ns: u32,
    pub str1: [u8; STR_LEN],
    pub str2: [u8; STR_LEN],
    pub str3: [u8; SHORT_STR_LEN],
    /// open/openat/openat2/creat that succeeded: the path of the file the returned fd refers to
    /// ([`walks_result_fd`]); status [`KPATH_NONE`] for every other call.
    pub kpath: KernelPath,
}

/// True for the calls whose result is a new fd of a file opened by path: its [`KernelPath`] is
/// walked at the exit.
#[inline(always)]
pub const fn walks_result_fd(nr: i64) -> bool {
    matches!(nr, nr::OPEN | nr::OPENAT | nr::OPENAT2 | nr::CREAT)
}

/// `CallEvent::str*_len` when the argument's memory could not be read.
pub const UNREADABLE: u32 = u32::MAX;

/// What the entry of a decoded syscall leaves for its exit, per thread.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CallArgs {
    pub nr: i64,
    pub enter_ktime_ns: u64,
    pub args: [u64; 6],
}

/// A TCP socket changed state (sock:inet_sock_set_state). This fires wherever the kernel
/// happens to be (often a softirq), so the header's task is not necessarily the socket's owner.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TcpStateEvent {
    pub header: EventHeader,
    pub old_state: i32,
    pub new_state: i32,
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub protocol: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// Byte offsets of the kernel structure fields the programs read, found by the recorder in the
/// running kernel's BTF and handed to the programs as a global before they load. Reading by
/// offset keeps the programs independent of any one kernel's layout.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_start_time: u32,
    pub task_real_parent: u32,
    pub task_group_leader: u32,
    pub task_mm: u32,
    pub task_real_cred: u32,
    pub task_exit_code: u32,
    pub task_signal: u32,
    pub signal_live: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub cred_uid: u32,
    pub cred_gid: u32,
    pub cred_euid: u32,
    pub cred_egid: u32,
    pub bprm_filename: u32,
    pub task_nsproxy: u32,
    pub nsproxy_mnt_ns: u32,
    /// `mnt_namespace.ns.inum`.
    pub mnt_ns_inum: u32,
    /// Non-zero when the path walk's offsets below were all found; zero turns the walk off
    /// (every path is then lexical).
    pub path_walk: u32,
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    pub file_f_path: u32,
    pub path_dentry: u32,
    pub path_mnt: u32,
    pub dentry_d_parent: u32,
    /// `dentry.d_name.name`.
    pub dentry_name: u32,
    pub vfsmount_mnt_root: u32,
    /// Offset of the `struct vfsmount` inside its `struct mount` (`container_of`).
    pub mount_mnt: u32,
    pub mount_mnt_parent: u32,
    pub mount_mnt_mountpoint: u32,
    pub task_fs: u32,
    /// `fs_struct.root` (a `struct path`).
    pub fs_root: u32,
    pub bprm_file: u32,
    /// `file.f_inode`, `inode.i_ino`, `inode.i_sb`, `super_block.s_dev`: the executed file's
    /// identity (found with the path walk's offsets, off with it).
    pub file_f_inode: u32,
    pub inode_i_ino: u32,
    pub inode_i_sb: u32,
    pub sb_s_dev: u32,
}

/// Most cgroups a recorder can be restricted to (`quarry record --containers`).
pub const MAX_FILTER_CGROUPS: u32 = 1024;
/// Deepest cgroup level the kernel-side filter looks at when matching ancestors.
pub const MAX_CGROUP_DEPTH: u32 = 16;

/// Index of the single slot in the per-CPU `DROPS` counter array.
pub const DROPS_SLOT: u32 = 0;

/// Reads a record of type `T` from the front of a ring-buffer item, or `None` when it is too
/// short (which would mean a kernel/user mismatch).
///
/// # Safety
/// `T` must be one of this crate's plain-old-data records (every bit pattern valid).
pub unsafe fn read_record<T: Copy>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < core::mem::size_of::<T>() {
        return None;
    }
    // SAFETY: the length is checked above; read_unaligned has no alignment requirement, and
    // the caller promises every bit pattern is a valid T.
    Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr() as *const T) })
}

#[cfg(feature = "user")]
// SAFETY: KernelOffsets is repr(C), Copy, has no padding and every bit pattern is valid.
unsafe impl aya::Pod for KernelOffsets {}

/// x86_64 numbers of the syscalls the recorder decodes; shared so kernel and user side agree.
/// [`DECODED_SYSCALLS`] names their tracepoints.
pub mod nr {
    pub const MMAP: i64 = 9;
    pub const MPROTECT: i64 = 10;
    pub const OPEN: i64 = 2;
    pub const CONNECT: i64 = 42;
    pub const ACCEPT: i64 = 43;
    pub const BIND: i64 = 49;
    pub const LISTEN: i64 = 50;
    pub const TRUNCATE: i64 = 76;
    pub const CHDIR: i64 = 80;
    pub const FCHDIR: i64 = 81;
    pub const FTRUNCATE: i64 = 77;
    pub const RENAME: i64 = 82;
    pub const MKDIR: i64 = 83;
    pub const RMDIR: i64 = 84;
    pub const CREAT: i64 = 85;
    pub const LINK: i64 = 86;
    pub const UNLINK: i64 = 87;
    pub const SYMLINK: i64 = 88;
    pub const CHMOD: i64 = 90;
    pub const FCHMOD: i64 = 91;
    pub const CHOWN: i64 = 92;
    pub const FCHOWN: i64 = 93;
    pub const LCHOWN: i64 = 94;
    pub const PTRACE: i64 = 101;
    pub const SETUID: i64 = 105;
    pub const SETGID: i64 = 106;
    pub const SETREUID: i64 = 113;
    pub const SETREGID: i64 = 114;
    pub const SETRESUID: i64 = 117;
    pub const SETRESGID: i64 = 119;
    pub const CAPSET: i64 = 126;
    pub const MOUNT: i64 = 165;
    pub const UMOUNT2: i64 = 166;
    pub const INIT_MODULE: i64 = 175;
    pub const OPENAT: i64 = 257;
    pub const MKDIRAT: i64 = 258;
    pub const FCHOWNAT: i64 = 260;
    pub const UNLINKAT: i64 = 263;
    pub const RENAMEAT: i64 = 264;
    pub const LINKAT: i64 = 265;
    pub const SYMLINKAT: i64 = 266;
    pub const FCHMODAT: i64 = 268;
    pub const UNSHARE: i64 = 272;
    pub const ACCEPT4: i64 = 288;
    pub const SETNS: i64 = 308;
    pub const FINIT_MODULE: i64 = 313;
    pub const RENAMEAT2: i64 = 316;
    pub const MEMFD_CREATE: i64 = 319;
    pub const BPF: i64 = 321;
    pub const SOCKET: i64 = 41;
    pub const OPENAT2: i64 = 437;
    pub const FCHMODAT2: i64 = 452;
    // Not decoded, but they may rename the calling thread (the raw stream re-reads its comm).
    pub const EXECVE: i64 = 59;
    pub const PRCTL: i64 = 157;
    pub const EXECVEAT: i64 = 322;
}

/// Every decoded syscall with its name (its tracepoints are syscalls:sys_{enter,exit}_<name>).
pub const DECODED_SYSCALLS: [(i64, &str); 52] = [
    (nr::MMAP, "mmap"),
    (nr::MPROTECT, "mprotect"),
    (nr::OPEN, "open"),
    (nr::CONNECT, "connect"),
    (nr::ACCEPT, "accept"),
    (nr::BIND, "bind"),
    (nr::LISTEN, "listen"),
    (nr::TRUNCATE, "truncate"),
    (nr::FTRUNCATE, "ftruncate"),
    (nr::CHDIR, "chdir"),
    (nr::FCHDIR, "fchdir"),
    (nr::RENAME, "rename"),
    (nr::MKDIR, "mkdir"),
    (nr::RMDIR, "rmdir"),
    (nr::CREAT, "creat"),
    (nr::LINK, "link"),
    (nr::UNLINK, "unlink"),
    (nr::SYMLINK, "symlink"),
    (nr::CHMOD, "chmod"),
    (nr::FCHMOD, "fchmod"),
    (nr::CHOWN, "chown"),
    (nr::FCHOWN, "fchown"),
    (nr::LCHOWN, "lchown"),
    (nr::PTRACE, "ptrace"),
    (nr::SETUID, "setuid"),
    (nr::SETGID, "setgid"),
    (nr::SETREUID, "setreuid"),
    (nr::SETREGID, "setregid"),
    (nr::SETRESUID, "setresuid"),
    (nr::SETRESGID, "setresgid"),
    (nr::CAPSET, "capset"),
    (nr::MOUNT, "mount"),
    (nr::UMOUNT2, "umount"),
    (nr::INIT_MODULE, "init_module"),
    (nr::OPENAT, "openat"),
    (nr::MKDIRAT, "mkdirat"),
    (nr::FCHOWNAT, "fchownat"),
    (nr::UNLINKAT, "unlinkat"),
    (nr::RENAMEAT, "renameat"),
    (nr::LINKAT, "linkat"),
    (nr::SYMLINKAT, "symlinkat"),
    (nr::FCHMODAT, "fchmodat"),
    (nr::FCHMODAT2, "fchmodat2"),
    (nr::UNSHARE, "unshare"),
    (nr::ACCEPT4, "accept4"),
    (nr::SETNS, "setns"),
    (nr::FINIT_MODULE, "finit_module"),
    (nr::RENAMEAT2, "renameat2"),
    (nr::MEMFD_CREATE, "memfd_create"),
    (nr::BPF, "bpf"),
    (nr::OPENAT2, "openat2"),
    (nr::SOCKET, "socket"),
];

/// Decoded syscalls with no tracepoints on some kernels (built without module support, as
/// here): the kernel side can record them at entry from the raw sys_enter tracepoint instead,
/// filtered by number before anything else runs.
pub const ENTRY_ONLY_SYSCALLS: [i64; 2] = [nr::INIT_MODULE, nr::FINIT_MODULE];

/// True for the syscalls whose records carry the task's mount namespace (the privilege and
/// escape signals: rare calls, so the extra kernel reads cost nothing measurable; file and
/// network calls skip them).
#[inline(always)]
pub const fn reads_mnt_ns(nr: i64) -> bool {
    matches!(
        nr,
        nr::MOUNT
            | nr::UMOUNT2
            | nr::UNSHARE
            | nr::SETNS
            | nr::PTRACE
            | nr::BPF
            | nr::INIT_MODULE
            | nr::FINIT_MODULE
            | nr::SETUID
            | nr::SETGID
            | nr::SETREUID
            | nr::SETREGID
            | nr::SETRESUID
            | nr::SETRESGID
            | nr::CAPSET
            | nr::MEMFD_CREATE
    )
}

/// What the kernel side copies from user memory for one argument of a decoded syscall.
///
/// Plain integers rather than an enum with payloads: every byte is always defined, which keeps
/// the BPF verifier from seeing spills of uninitialised registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgCopy {
    /// One of the `COPY_*` kinds.
    pub kind: u8,
    /// The pointer argument's index.
    pub arg: u8,
    /// `COPY_RAW`: bytes to copy; `COPY_SOCKADDR`: index of the length argument.
    pub extra: u16,
}

/// Copy nothing.
pub const COPY_NONE: u8 = 0;
/// The NUL-terminated string at the argument.
pub const COPY_STR: u8 = 1;
/// `extra` raw bytes from the argument.
pub const COPY_RAW: u8 = 2;
/// A socket address at the argument, its length in argument `extra`.
pub const COPY_SOCKADDR: u8 = 3;

impl ArgCopy {
    pub const NONE: ArgCopy = ArgCopy {
        kind: COPY_NONE,
        arg: 0,
        extra: 0,
    };
    pub const fn str(arg: u8) -> ArgCopy {
        ArgCopy {
            kind: COPY_STR,
            arg,
            extra: 0,
        }
    }
    pub const fn raw(arg: u8, len: u16) -> ArgCopy {
        ArgCopy {
            kind: COPY_RAW,
            arg,
            extra: len,
        }
    }
    pub const fn sockaddr(arg: u8, len_arg: u16) -> ArgCopy {
        ArgCopy {
            kind: COPY_SOCKADDR,
            arg,
            extra: len_arg,
        }
    }
}

/// How to read one syscall: whether it is decoded, and what goes into str1, str2 and str3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub decoded: bool,
    pub copies: [ArgCopy; 3],
}

/// The plan of syscall `nr`; `decoded` is false for syscalls that only appear in the raw
/// stream.
#[inline(always)]
pub const fn entry_plan(nr: i64) -> Plan {
    const N: ArgCopy = ArgCopy::NONE;
    const fn s(i: u8) -> ArgCopy {
        ArgCopy::str(i)
    }
    let copies = match nr {
        nr::OPEN
        | nr::CREAT
        | nr::UNLINK
        | nr::CHMOD
        | nr::CHOWN
        | nr::LCHOWN
        | nr::MKDIR
        | nr::RMDIR
        | nr::TRUNCATE
        | nr::CHDIR => [s(0), N, N],
        nr::OPENAT | nr::UNLINKAT | nr::FCHMODAT | nr::FCHMODAT2 | nr::FCHOWNAT | nr::MKDIRAT => {
            [s(1), N, N]
        }
        // struct open_how { u64 flags; u64 mode; u64 resolve; }
        nr::OPENAT2 => [s(1), ArgCopy::raw(2, 24), N],
        nr::RENAME | nr::LINK | nr::SYMLINK => [s(0), s(1), N],
        nr::RENAMEAT | nr::RENAMEAT2 | nr::LINKAT => [s(1), s(3), N],
        nr::SYMLINKAT => [s(0), s(2), N],
        // chdir/fchdir are not rows of their own: they keep each process's cwd current.
        nr::FCHMOD | nr::FCHOWN | nr::FTRUNCATE | nr::FCHDIR => [N, N, N],
        nr::CONNECT | nr::BIND => [ArgCopy::sockaddr(1, 2), N, N],
        // accept's peer address is written by the kernel: the exit copies it specially.
        nr::ACCEPT | nr::ACCEPT4 | nr::LISTEN => [N, N, N],
        nr::SETUID
        | nr::SETGID
        | nr::SETREUID
        | nr::SETREGID
        | nr::SETRESUID
        | nr::SETRESGID
        | nr::PTRACE
        | nr::UNSHARE
        | nr::SETNS
        | nr::BPF
        | nr::SOCKET
        | nr::MMAP
        | nr::MPROTECT => [N, N, N],
        // struct __user_cap_data_struct { u32 effective, permitted, inheritable; } x2
        nr::CAPSET => [ArgCopy::raw(1, 24), ArgCopy::raw(0, 8), N],
        nr::MOUNT => [s(0), s(1), s(2)],
        nr::UMOUNT2 => [N, s(0), N],
        nr::INIT_MODULE => [s(2), N, N],
        nr::FINIT_MODULE => [s(1), N, N],
        nr::MEMFD_CREATE => [s(0), N, N],
        _ => {
            return Plan {
                decoded: false,
                copies: [N, N, N],
            };
        }
    };
    Plan {
        decoded: true,
        copies,
    }
}

/// `PROT_EXEC` from `<sys/mman.h>`.
pub const PROT_EXEC: u64 = 4;
/// `MAP_ANONYMOUS` from `<sys/mman.h>`.
pub const MAP_ANONYMOUS: u64 = 0x20;

/// True for mmap/mprotect calls worth recording: executable memory that is not a file being
/// loaded (anonymous mmap with PROT_EXEC, or mprotect adding PROT_EXEC).
#[inline(always)]
pub const fn is_exec_memory(nr: i64, args: &[u64; 6]) -> bool {
    match nr {
        nr::MMAP => args[2] & PROT_EXEC != 0 && args[3] & MAP_ANONYMOUS != 0,
        nr::MPROTECT => args[2] & PROT_EXEC != 0,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoded_list_and_plans_agree() {
        for (nr, name) in DECODED_SYSCALLS {
            assert!(entry_plan(nr).decoded, "{name} has no plan");
        }
        for nr in 0..500 {
            if entry_plan(nr).decoded {
                assert!(
                    DECODED_SYSCALLS.iter().any(|(n, _)| *n == nr),
                    "{nr} has no tracepoint"
                );
            }
        }
    }
}
