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
    pub start_ns: u64,
    pub parent_start_ns: u64,
    pub filename: [u8; FILENAME_LEN],
    /// The argument strings, each NUL-terminated, as they sit in the new image's memory.
    pub argv: [u8; ARGV_LEN],
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
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub cred_uid: u32,
    pub cred_gid: u32,
    pub cred_euid: u32,
    pub cred_egid: u32,
    pub bprm_filename: u32,
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
