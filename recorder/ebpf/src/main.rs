//! Quarry's kernel side: tracepoint programs that fill fixed-size records into a ring buffer
//! for the recorder to drain.
//!
//! Design choices, each for a measured reason (numbers in BENCHMARKS.md):
//! - raw and BTF tracepoints: the cheapest attachments that work here (fentry/kprobes do not);
//! - the raw stream (every syscall) is collected per CPU in a [`RawBatch`] and sent as one
//!   record per batch: a ring-buffer reservation per syscall cost more than the syscall;
//! - records are submitted with `BPF_RB_NO_WAKEUP` and the recorder drains on a short timer,
//!   because a wakeup per event costs ~1.7x more;
//! - kernel structures are read at offsets the recorder found in BTF ([`KernelOffsets`]), so one
//!   object runs on any kernel with BTF;
//! - a record that does not fit in the ring buffer is counted per CPU in `DROPS`: evidence may
//!   be lost under a flood, but never silently (a run the kernel skips because the program is
//!   already running on that CPU is counted by the kernel; the recorder reads that count too).

#![no_std]
#![no_main]

use core::ffi::c_void;
use core::ptr::addr_of_mut;

use aya_ebpf::Global;
use aya_ebpf::bindings::BPF_RB_NO_WAKEUP;
use aya_ebpf::helpers::generated::{
    bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_task,
    bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_loop, bpf_probe_read_kernel_str,
    bpf_probe_read_user as probe_read_user_raw, bpf_probe_read_user_str,
};
use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_probe_read_kernel, bpf_probe_read_user,
};
use aya_ebpf::macros::{btf_tracepoint, map, raw_tracepoint, tracepoint};
use aya_ebpf::maps::{HashMap, PerCpuArray, RingBuf};
use aya_ebpf::programs::{BtfTracePointContext, RawTracePointContext, TracePointContext};
use quarry_recorder_common::{
    ARGV_LEN, ArgCopy, COPY_RAW, COPY_SOCKADDR, COPY_STR, CallArgs, CallEvent, DROPS_SLOT,
    EventHeader, ExecEvent, ExitEvent, FILENAME_LEN, ForkEvent, KIND_CALL, KIND_CALL_ENTRY,
    KIND_EXEC, KIND_EXIT, KIND_FORK, KIND_RAW_BATCH, KIND_TCP_STATE, KPATH_LEN, KPATH_MAX_NAMES,
    KPATH_NAME_CAP, KPATH_NONE, KPATH_OUTSIDE_ROOT, KPATH_PSEUDO, KPATH_ROOT, KPATH_STEPS,
    KPATH_TRUNCATED, KernelOffsets, KernelPath, MAX_CGROUP_DEPTH, MAX_FILTER_CGROUPS,
    RAW_BATCH_HEADER_LEN, RAW_BATCH_MAX_AGE_NS, RAW_BATCH_SLOTS, RAW_CLOCK_EVERY, RAW_KTIME_UNREAD,
    RAW_SLOT_THREAD, RAW_THREAD_SLOTS, RawBatch, RawSlot, RawThread, SHORT_STR_LEN, SOCKADDR_LEN,
    STR_LEN, TcpStateEvent, UNREADABLE, entry_plan, is_exec_memory, nr, reads_mnt_ns,
    walks_result_fd,
};

/// Process id of the recorder itself: its own activity is never recorded.
#[unsafe(no_mangle)]
static RECORDER_TGID: Global<u32> = Global::new(0);

/// Field offsets in this kernel's structures, found by the recorder in BTF.
#[unsafe(no_mangle)]
static OFFSETS: Global<KernelOffsets> = Global::new(KernelOffsets {
    task_pid: 0,
    task_tgid: 0,
    task_start_time: 0,
    task_real_parent: 0,
    task_group_leader: 0,
    task_mm: 0,
    task_real_cred: 0,
    task_exit_code: 0,
    task_signal: 0,
    signal_live: 0,
    mm_arg_start: 0,
    mm_arg_end: 0,
    cred_uid: 0,
    cred_gid: 0,
    cred_euid: 0,
    cred_egid: 0,
    bprm_filename: 0,
    task_nsproxy: 0,
    nsproxy_mnt_ns: 0,
    mnt_ns_inum: 0,
    path_walk: 0,
    task_files: 0,
    files_fdt: 0,
    fdt_max_fds: 0,
    fdt_fd: 0,
    file_f_path: 0,
    path_dentry: 0,
    path_mnt: 0,
    dentry_d_parent: 0,
    dentry_name: 0,
    vfsmount_mnt_root: 0,
    mount_mnt: 0,
    mount_mnt_parent: 0,
    mount_mnt_mountpoint: 0,
    task_fs: 0,
    fs_root: 0,
    bprm_file: 0,
    file_f_inode: 0,
    inode_i_ino: 0,
    inode_i_sb: 0,
    sb_s_dev: 0,
});

/// The raw stream reads the clock every this many calls of one thread (1: on every call); see
/// [`RAW_CLOCK_EVERY`].
#[unsafe(no_mangle)]
static RAW_CLOCK_EVERY_CALLS: Global<u32> = Global::new(RAW_CLOCK_EVERY);

/// When non-zero, only tasks in the cgroups of `CGROUP_FILTER` (or below them) are recorded.
#[unsafe(no_mangle)]
static FILTER_CGROUPS: Global<u32> = Global::new(0);

/// cgroup ids whose tasks (and their descendants' tasks) are recorded when filtering.
#[map]
static CGROUP_FILTER: HashMap<u64, u8> = HashMap::with_max_entries(MAX_FILTER_CGROUPS, 0);

/// Decoded syscalls in progress: thread id -> arguments saved at entry, used at exit. A plain
/// hash (an LRU one may evict live entries early); entries of threads that exit mid-call are
/// removed by `sched_process_exit`, and a full map is counted as a drop.
#[map]
static CALL_ARGS: HashMap<u32, CallArgs> = HashMap::with_max_entries(65536, 0);

/// Records for user space. The recorder may resize it at load time.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(8 << 20, 0);

/// Records that did not fit in `EVENTS`, per CPU.
#[map]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The raw stream's batch being filled on each CPU (see [`RawBatch`]).
#[map]
static RAW_BATCH: PerCpuArray<RawBatch> = PerCpuArray::with_max_entries(1, 0);

/// True when the current task should be recorded: it is not the recorder, and, when filtering,
/// its cgroup or one of its ancestors is in `CGROUP_FILTER`.
#[inline(always)]
fn should_record() -> bool {
    should_record_task(bpf_get_current_pid_tgid())
}

/// [`should_record`] for a caller that already has `bpf_get_current_pid_tgid()`.
#[inline(always)]
fn should_record_task(pid_tgid: u64) -> bool {
    if (pid_tgid >> 32) as u32 == RECORDER_TGID.load() {
        return false;
    }
    if FILTER_CGROUPS.load() == 0 {
        return true;
    }
    // SAFETY: helpers without memory arguments.
    let own = unsafe { bpf_get_current_cgroup_id() };
    for level in 1..MAX_CGROUP_DEPTH {
        // SAFETY: as above; returns 0 past the task's own level.
        let ancestor = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
        if ancestor == 0 {
            break;
        }
        // SAFETY: the value is only tested for presence.
        if unsafe { CGROUP_FILTER.get(&ancestor) }.is_some() {
            return true;
        }
        if ancestor == own {
            break;
        }
    }
    false
}

#[inline(always)]
fn count_drop() {
    count_drops(1);
}

#[inline(always)]
fn count_drops(n: u64) {
    if let Some(slot) = DROPS.get_ptr_mut(DROPS_SLOT) {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        unsafe { *slot += n };
    }
}

/// Reads a `T` at `base + off` in kernel memory; zero when the read faults.
#[inline(always)]
unsafe fn kread<T: Copy + Default>(base: u64, off: u32) -> T {
    // SAFETY: bpf_probe_read_kernel tolerates any address and reports faults as errors.
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T) }.unwrap_or_default()
}

/// (tgid, group-leader start time) of a task.
#[inline(always)]
unsafe fn process_identity(task: u64, o: &KernelOffsets) -> (u32, u64) {
    unsafe {
        let tgid: u32 = kread(task, o.task_tgid);
        let leader: u64 = kread(task, o.task_group_leader);
        (tgid, kread(leader, o.task_start_time))
    }
}

/// Inode number of a task's mount namespace (task->nsproxy->mnt_ns->ns.inum); 0 when it
/// cannot be read (an exiting task has no nsproxy).
#[inline(always)]
unsafe fn mnt_ns_of(task: u64, o: &KernelOffsets) -> u32 {
    unsafe {
        let nsproxy: u64 = kread(task, o.task_nsproxy);
        if nsproxy == 0 {
            return 0;
        }
        let mnt_ns: u64 = kread(nsproxy, o.nsproxy_mnt_ns);
        if mnt_ns == 0 {
            return 0;
        }
        kread(mnt_ns, o.mnt_ns_inum)
    }
}

/// The `struct file` behind the current task's descriptor `fd` (files->fdt->fd[fd]); 0 when
/// there is none.
#[inline(always)]
unsafe fn file_of_fd(fd: i64, o: &KernelOffsets) -> u64 {
    unsafe {
        let files: u64 = kread(bpf_get_current_task(), o.task_files);
        let fdt: u64 = kread(files, o.files_fdt);
        let max: u32 = kread(fdt, o.fdt_max_fds);
        if fd < 0 || fd >= max as i64 {
            return 0;
        }
        let array: u64 = kread(fdt, o.fdt_fd);
        kread(array + 8 * fd as u64, 0)
    }
}

/// State of one [`walk_path`], shared with each [`walk_step`] through `bpf_loop`.
#[repr(C)]
struct Walk {
    out: *mut KernelPath,
    dentry: u64,
    vfsmnt: u64,
    root_dentry: u64,
    root_mnt: u64,
    pos: u32,
    names: u32,
    status: u32,
    _pad: u32,
}

/// Walks `file`'s dentry chain up to the current task's root (`current->fs->root`), crossing
/// mounts through `struct mount` (`mnt_mountpoint` in `mnt_parent`) the way the kernel's d_path
/// does, and writes the names leaf first into `out` (see [`KernelPath`]). The steps run in
/// `bpf_loop`, so the verifier checks one step, not every path through [`KPATH_STEPS`] of them.
///
/// The walk reads the kernel's structures while other CPUs may rename or unmount: a name read
/// mid-rename can be the old or the new one (as with d_path without its locks), never memory
/// outside the dentry; every step is a probe read, so a freed pointer yields a fault, not a crash.
///
/// # Safety
/// `out` must point at writable memory for a `KernelPath` (a reserved ring-buffer slot).
#[inline(always)]
unsafe fn walk_path(file: u64, out: *mut KernelPath, o: &KernelOffsets) {
    unsafe {
        (*out).status = KPATH_NONE;
        (*out).len = 0;
        if o.path_walk == 0 || file == 0 {
            return;
        }
        let fs: u64 = kread(bpf_get_current_task(), o.task_fs);
        let mut walk = Walk {
            out,
            dentry: kread(file, o.file_f_path + o.path_dentry),
            vfsmnt: kread(file, o.file_f_path + o.path_mnt),
            root_dentry: kread(fs, o.fs_root + o.path_dentry),
            root_mnt: kread(fs, o.fs_root + o.path_mnt),
            pos: 0,
            names: 0,
            status: KPATH_TRUNCATED,
            _pad: 0,
        };
        bpf_loop(
            KPATH_STEPS,
            walk_step as *mut c_void,
            &mut walk as *mut Walk as *mut c_void,
            0,
        );
        (*out).len = walk.pos;
        (*out).status = walk.status;
    }
}

/// One step of [`walk_path`]: a name written, or a mount crossed. Returns 1 to stop.
extern "C" fn walk_step(_index: u64, ctx: *mut c_void) -> i64 {
    let o = OFFSETS.load();
    // SAFETY: `ctx` is the caller's `Walk` (bpf_loop passes it through); kernel memory is read
    // through probe helpers; the name is written below KPATH_LEN (masked offset + cap).
    unsafe {
        let w = &mut *(ctx as *mut Walk);
        let (dentry, vfsmnt) = (w.dentry, w.vfsmnt);
        if dentry == 0 || vfsmnt == 0 {
            return 1;
        }
        if dentry == w.root_dentry && vfsmnt == w.root_mnt {
            w.status = KPATH_ROOT;
            return 1;
        }
        let mnt_root: u64 = kread(vfsmnt, o.vfsmount_mnt_root);
        let parent: u64 = kread(dentry, o.dentry_d_parent);
        if dentry == mnt_root || dentry == parent {
            // The root of this mount: go on from where it is mounted, or stop at the root of
            // its mount tree (a mount is its own parent there).
            let mnt = vfsmnt.wrapping_sub(o.mount_mnt as u64);
            let mnt_parent: u64 = kread(mnt, o.mount_mnt_parent);
            if dentry != mnt_root {
                w.status = KPATH_PSEUDO;
                return 1;
            }
            if mnt_parent == mnt || mnt_parent == 0 {
                w.status = KPATH_OUTSIDE_ROOT;
                return 1;
            }
            w.dentry = kread(mnt, o.mount_mnt_mountpoint);
            w.vfsmnt = mnt_parent + o.mount_mnt as u64;
            return 0;
        }
        if w.names >= KPATH_MAX_NAMES || w.pos as usize >= KPATH_LEN - KPATH_NAME_CAP {
            return 1;
        }
        let name: u64 = kread(dentry, o.dentry_name);
        // The mask restates pos < KPATH_LEN - KPATH_NAME_CAP for the verifier.
        let at = w.pos as usize & (KPATH_LEN - KPATH_NAME_CAP - 1);
        let buf = addr_of_mut!((*w.out).buf) as *mut u8;
        let n = bpf_probe_read_kernel_str(
            buf.add(at) as *mut c_void,
            KPATH_NAME_CAP as u32,
            name as *const c_void,
        );
        if n <= 1 {
            return 1;
        }
        w.pos += n as u32;
        w.names += 1;
        w.dentry = parent;
        0
    }
}

/// Writes the header of the current task to `h`.
///
/// # Safety
/// `h` must point at writable memory for an `EventHeader` (a reserved ring-buffer slot).
#[inline(always)]
unsafe fn fill_header(h: *mut EventHeader, kind: u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: helpers without memory arguments; `h` is valid per the contract.
    unsafe {
        h.write(EventHeader {
            kind,
            pid: tgid,
            tid: pid_tgid as u32,
            _pad: 0,
            ktime_ns: bpf_ktime_get_ns(),
            cgroup_id: bpf_get_current_cgroup_id(),
            comm: bpf_get_current_comm().unwrap_or([0; 16]),
        });
    }
}

/// sched_process_fork(parent, child): a new task. Threads are skipped; only processes matter
/// for lineage.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> u32 {
    let o = OFFSETS.load();
    let parent: u64 = ctx.arg(0);
    let child: u64 = ctx.arg(1);
    // SAFETY: reads go through bpf_probe_read_kernel.
    let (child_tid, child_tgid): (u32, u32) =
        unsafe { (kread(child, o.task_pid), kread(child, o.task_tgid)) };
    if child_tid != child_tgid || !should_record() {
        return 0;
    }
    let Some(mut slot) = EVENTS.reserve::<ForkEvent>(0) else {
        count_drop();
        return 0;
    };
    let ev = slot.as_mut_ptr();
    // SAFETY: `ev` points at a reserved ring-buffer slot of the right size.
    unsafe {
        fill_header(addr_of_mut!((*ev).header), KIND_FORK);
        (*ev).child_pid = child_tgid;
        (*ev)._pad = 0;
        (*ev).parent_start_ns = process_identity(parent, &o).1;
        (*ev).child_start_ns = kread(child, o.task_start_time);
    }
    slot.submit(BPF_RB_NO_WAKEUP as u64);
    0
}

/// sched_process_exec(task, old_pid, bprm): the current task runs a new image.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn sched_process_exec(ctx: RawTracePointContext) -> u32 {
    let o = OFFSETS.load();
    let bprm: u64 = ctx.arg(2);
    if !should_record() {
        return 0;
    }
    let Some(mut slot) = EVENTS.reserve::<ExecEvent>(0) else {
        count_drop();
        return 0;
    };
    let ev = slot.as_mut_ptr();
    // SAFETY: `ev` points at a reserved slot; kernel reads go through probe helpers.
    unsafe {
        fill_header(addr_of_mut!((*ev).header), KIND_EXEC);
        let task = bpf_get_current_task();
        (*ev).start_ns = process_identity(task, &o).1;
        let parent: u64 = kread(task, o.task_real_parent);
        let (ppid, parent_start) = process_identity(parent, &o);
        (*ev).ppid = ppid;
        (*ev).parent_start_ns = parent_start;

        let cred: u64 = kread(task, o.task_real_cred);
        (*ev).mnt_ns = mnt_ns_of(task, &o);
        (*ev).uid = kread(cred, o.cred_uid);
        (*ev).gid = kread(cred, o.cred_gid);
        (*ev).euid = kread(cred, o.cred_euid);
        (*ev).egid = kread(cred, o.cred_egid);

        let filename: u64 = kread(bprm, o.bprm_filename);
        let copied = bpf_probe_read_kernel_str(
            addr_of_mut!((*ev).filename) as *mut c_void,
            FILENAME_LEN as u32,
            filename as *const c_void,
        );
        // The helper counts the NUL it wrote; on a fault it returns a negative errno.
        (*ev).filename_len = if copied > 0 { copied as u32 - 1 } else { 0 };

        let mm: u64 = kread(task, o.task_mm);
        let arg_start: u64 = kread(mm, o.mm_arg_start);
        let arg_end: u64 = kread(mm, o.mm_arg_end);
        let total = arg_end.saturating_sub(arg_start);
        (*ev).argv_total_len = total as u32;
        let mut n = if total > ARGV_LEN as u64 {
            ARGV_LEN as u64
        } else {
            total
        };
        // The mask restates the bound in a form the verifier tracks.
        n &= (ARGV_LEN as u64) * 2 - 1;
        let rc = probe_read_user_raw(
            addr_of_mut!((*ev).argv) as *mut c_void,
            n as u32,
            arg_start as *const c_void,
        );
        (*ev).argv_len = if rc == 0 { n as u32 } else { 0 };

        let file: u64 = kread(bprm, o.bprm_file);
        walk_path(file, addr_of_mut!((*ev).kpath), &o);
        (*ev).exe_dev = 0;
        (*ev).exe_ino = 0;
        if o.path_walk != 0 && file != 0 {
            let inode: u64 = kread(file, o.file_f_inode);
            let sb: u64 = kread(inode, o.inode_i_sb);
            (*ev).exe_ino = kread(inode, o.inode_i_ino);
            (*ev).exe_dev = kread(sb, o.sb_s_dev);
        }
    }
    slot.submit(BPF_RB_NO_WAKEUP as u64);
    0
}

/// sched_process_exit(task, ...): a task is exiting. The process ends when its last thread
/// does (`signal->live` has reached zero by the time this fires); that thread, leader or not,
/// carries the group's exit code.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_process_exit(_ctx: RawTracePointContext) -> u32 {
    let tid = bpf_get_current_pid_tgid() as u32;
    // A thread that dies inside a decoded syscall never reaches its exit.
    let _ = CALL_ARGS.remove(&tid);
    if !should_record() {
        return 0;
    }
    let o = OFFSETS.load();
    // SAFETY: reads go through bpf_probe_read_kernel.
    let live: i32 = unsafe {
        let signal: u64 = kread(bpf_get_current_task(), o.task_signal);
        kread(signal, o.signal_live)
    };
    if live != 0 {
        return 0;
    }
    let Some(mut slot) = EVENTS.reserve::<ExitEvent>(0) else {
        count_drop();
        return 0;
    };
    let ev = slot.as_mut_ptr();
    // SAFETY: `ev` points at a reserved slot; kernel reads go through probe helpers.
    unsafe {
        fill_header(addr_of_mut!((*ev).header), KIND_EXIT);
        let task = bpf_get_current_task();
        (*ev).start_ns = process_identity(task, &o).1;
        let parent: u64 = kread(task, o.task_real_parent);
        let (ppid, parent_start) = process_identity(parent, &o);
        (*ev).ppid = ppid;
        (*ev).parent_start_ns = parent_start;
        (*ev).exit_code = kread(task, o.task_exit_code);
    }
    slot.submit(BPF_RB_NO_WAKEUP as u64);
    0
}

/// Copies what `plan` asks for from user memory into `dst` (capacity `cap`); returns the
/// bytes filled (strings without their NUL), or `UNREADABLE`.
#[inline(always)]
unsafe fn copy_arg(dst: *mut u8, cap: usize, plan: ArgCopy, args: &[u64; 6]) -> u32 {
    let (i, extra) = (plan.arg as usize, plan.extra as usize);
    if i >= 6 {
        return 0;
    }
    let (ptr, len, is_str) = match plan.kind {
        COPY_STR => (args[i], cap as u64, true),
        COPY_RAW => (args[i], extra as u64, false),
        COPY_SOCKADDR if extra < 6 => (args[i], args[extra], false),
        _ => return 0,
    };
    if ptr == 0 {
        return 0;
    }
    // SAFETY: the probe helpers tolerate any user address; `dst` has `cap` bytes.
    unsafe {
        if is_str {
            let n = bpf_probe_read_user_str(dst as *mut c_void, cap as u32, ptr as *const c_void);
            if n > 0 { n as u32 - 1 } else { UNREADABLE }
        } else {
            let mut n = if len > cap as u64 { cap as u64 } else { len };
            n &= 0x1ff; // restates n <= cap (<= 256) for the verifier
            if n > cap as u64 {
                return UNREADABLE;
            }
            let rc = probe_read_user_raw(dst as *mut c_void, n as u32, ptr as *const c_void);
            if rc == 0 { n as u32 } else { UNREADABLE }
        }
    }
}

/// syscalls:sys_enter_<name> of each decoded syscall (one program, attached to each): the
/// arguments are kept for the exit. Per-syscall tracepoints rather than the global sys_enter, so
/// the syscalls Quarry does not decode run no program at all.
#[tracepoint]
pub fn sys_enter_decoded(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets of the syscalls:sys_enter_* format (nr at 8, six 8-byte args from 16);
    // reads go through bpf_probe_read_kernel.
    let nr = unsafe { ctx.read_at::<i32>(8) }.unwrap_or(-1) as i64;
    if !entry_plan(nr).decoded || !should_record() {
        return 0;
    }
    let mut call = CallArgs {
        nr,
        // SAFETY: helper without memory arguments.
        enter_ktime_ns: unsafe { bpf_ktime_get_ns() },
        args: [0; 6],
    };
    for i in 0..6 {
        // SAFETY: as above; a syscall with fewer arguments leaves unused slots that are ignored.
        call.args[i] = unsafe { ctx.read_at::<u64>(16 + 8 * i) }.unwrap_or(0);
    }
    if !is_exec_memory(nr, &call.args) {
        return 0;
    }
    let tid = bpf_get_current_pid_tgid() as u32;
    if CALL_ARGS.insert(&tid, &call, 0).is_err() {
        count_drop();
    }
    0
}

/// syscalls:sys_exit_<name> of each decoded syscall: one record with the arguments saved at
/// entry, the result, and the user memory the arguments point to.
#[tracepoint]
pub fn sys_exit_decoded(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets of the syscalls:sys_exit_* format (nr at 8, ret at 16).
    let nr = unsafe { ctx.read_at::<i32>(8) }.unwrap_or(-1) as i64;
    let ret = unsafe { ctx.read_at::<i64>(16) }.unwrap_or(0);
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: the value is copied out before the entry is removed.
    let Some(call) = (unsafe { CALL_ARGS.get(&tid) }).copied() else {
        return 0;
    };
    let _ = CALL_ARGS.remove(&tid);
    if call.nr != nr {
        return 0;
    }
    send_call(KIND_CALL, nr, ret, call.enter_ktime_ns, &call.args);
    0
}

/// One [`CallEvent`] with the arguments, the result and the user memory the arguments point
/// to.
#[inline(always)]
fn send_call(kind: u32, nr: i64, ret: i64, enter_ktime_ns: u64, args: &[u64; 6]) {
    let plan = entry_plan(nr).copies;
    let Some(mut slot) = EVENTS.reserve::<CallEvent>(0) else {
        count_drop();
        return;
    };
    let ev = slot.as_mut_ptr();
    let args = *args;
    // SAFETY: `ev` points at a reserved slot; user memory is read through probe helpers.
    unsafe {
        fill_header(addr_of_mut!((*ev).header), kind);
        (*ev).nr = nr;
        (*ev).ret = ret;
        (*ev).enter_ktime_ns = enter_ktime_ns;
        (*ev).args = args;
        (*ev).mnt_ns = if reads_mnt_ns(nr) {
            mnt_ns_of(bpf_get_current_task(), &OFFSETS.load())
        } else {
            0
        };
        if (nr == nr::ACCEPT || nr == nr::ACCEPT4) && ret >= 0 && args[2] != 0 {
            // The peer address the kernel wrote, as long as it said it is.
            let len: u32 = bpf_probe_read_user(args[2] as *const u32).unwrap_or(0);
            let peer = [args[1], len as u64, 0, 0, 0, 0];
            (*ev).str1_len = copy_arg(
                addr_of_mut!((*ev).str1) as *mut u8,
                SOCKADDR_LEN,
                ArgCopy::sockaddr(0, 1),
                &peer,
            );
        } else {
            (*ev).str1_len = copy_arg(addr_of_mut!((*ev).str1) as *mut u8, STR_LEN, plan[0], &args);
        }
        (*ev).str2_len = copy_arg(addr_of_mut!((*ev).str2) as *mut u8, STR_LEN, plan[1], &args);
        (*ev).str3_len = copy_arg(
            addr_of_mut!((*ev).str3) as *mut u8,
            SHORT_STR_LEN,
            plan[2],
            &args,
        );
        let o = OFFSETS.load();
        let file = if kind == KIND_CALL && walks_result_fd(nr) && ret >= 0 && o.path_walk != 0 {
            file_of_fd(ret, &o)
        } else {
            0
        };
        walk_path(file, addr_of_mut!((*ev).kpath), &o);
    }
    slot.submit(BPF_RB_NO_WAKEUP as u64);
}

/// Entry of every syscall, attached only for decoded syscalls this kernel has no tracepoints
/// for (init_module and finit_module on a kernel without module support): anything else
/// returns after one comparison. The record is sent at entry, its result unseen.
#[btf_tracepoint(function = "sys_enter")]
pub fn sys_enter_entry_only(ctx: BtfTracePointContext) -> i32 {
    let id: i64 = ctx.arg(1);
    if id != nr::INIT_MODULE && id != nr::FINIT_MODULE {
        return 0;
    }
    if !should_record() {
        return 0;
    }
    let regs: *const u8 = ctx.arg(0);
    // SAFETY: `regs` is a BTF pointer to struct pt_regs: the verifier checks each load, which
    // is at a constant offset (x86_64 di, si, dx, r10, r8, r9: the six arguments).
    let arg = |off: usize| unsafe { core::ptr::read_volatile(regs.add(off) as *const u64) };
    let args = [arg(112), arg(104), arg(96), arg(56), arg(72), arg(64)];
    // SAFETY: helper without memory arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    send_call(KIND_CALL_ENTRY, id, 0, now, &args);
    0
}

/// x86_64 `struct pt_regs` offset of `orig_ax`, which holds the syscall number.
const ORIG_AX_OFFSET: usize = 120;

/// Sends the filled part of `batch` to user space (counting its syscalls as lost when the ring
/// buffer is full) and starts a new one.
#[inline(always)]
fn send_raw_batch(batch: &mut RawBatch) {
    let len = batch.header.len as usize;
    // Restates len <= RAW_BATCH_SLOTS in a form the verifier tracks.
    let len = if len > RAW_BATCH_SLOTS {
        RAW_BATCH_SLOTS
    } else {
        len
    };
    // The bound for the calls at the end that did not read the clock.
    batch.header.sent_ktime_ns = if batch.header.unclocked > 0 {
        // SAFETY: helper without memory arguments.
        unsafe { bpf_ktime_get_ns() }
    } else {
        batch.header.last_ktime_ns
    };
    let bytes = RAW_BATCH_HEADER_LEN + len * size_of::<RawSlot>();
    // SAFETY: `bytes` is at most the size of `RawBatch`, which `batch` points at.
    let data = unsafe { core::slice::from_raw_parts(batch as *const RawBatch as *const u8, bytes) };
    if EVENTS
        .output::<[u8]>(data, BPF_RB_NO_WAKEUP as u64)
        .is_err()
    {
        count_drops(batch.header.calls as u64);
    }
    batch.header.len = 0;
    batch.header.calls = 0;
    batch.header.last_tid = 0;
    batch.header.unclocked = 0;
}

/// Slots that must be free before a syscall is added: a thread record and the call.
const RAW_ROOM: usize = RAW_THREAD_SLOTS + 1;

/// Exit of every syscall, attached only with `--syscalls all`: the raw stream. A BTF
/// tracepoint rather than a raw one, so `orig_ax` is a plain load instead of a helper call;
/// rows go into the CPU's [`RawBatch`] instead of one ring-buffer record each. Per call it
/// reads nothing but the syscall: pid, comm and cgroup go in a thread record when the thread
/// changes, and the clock is read for a thread's first call and then every
/// `RAW_CLOCK_EVERY_CALLS` calls.
#[btf_tracepoint(function = "sys_exit")]
pub fn sys_exit(ctx: BtfTracePointContext) -> i32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !should_record_task(pid_tgid) {
        return 0;
    }
    let regs: *const u8 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    let Some(batch) = RAW_BATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: the per-CPU slot is this CPU's alone; a flush run on this CPU while we write
    // sees `busy` and leaves it alone. `regs` is a BTF pointer: the verifier checks the load.
    unsafe {
        let batch = &mut *batch;
        let nr = core::ptr::read_volatile(regs.add(ORIG_AX_OFFSET) as *const i64) as i32;
        core::ptr::write_volatile(&mut batch.header.busy, 1);
        if batch.header.len as usize > RAW_BATCH_SLOTS - RAW_ROOM {
            send_raw_batch(batch);
        }
        let tid = pid_tgid as u32;
        // A new batch or thread, or a call that may have renamed this one: say who it is first.
        let new_thread = batch.header.len == 0
            || tid != batch.header.last_tid
            || nr == nr::EXECVE as i32
            || nr == nr::EXECVEAT as i32
            || nr == nr::PRCTL as i32;
        let ktime_ns = if new_thread || batch.header.unclocked + 1 >= RAW_CLOCK_EVERY_CALLS.load() {
            let now = bpf_ktime_get_ns();
            batch.header.last_ktime_ns = now;
            batch.header.unclocked = 0;
            now
        } else {
            batch.header.unclocked += 1;
            RAW_KTIME_UNREAD
        };
        if batch.header.len == 0 {
            batch.header.kind = KIND_RAW_BATCH;
            batch.header.cpu = bpf_get_smp_processor_id();
            batch.header.first_ktime_ns = ktime_ns;
        }
        if new_thread {
            // At most RAW_BATCH_SLOTS - 1: the record's second slot is still inside `slots`.
            let i = batch.header.len as usize & (RAW_BATCH_SLOTS - 1);
            let thread = &mut batch.slots[i] as *mut RawSlot as *mut RawThread;
            (*thread).marker = RAW_SLOT_THREAD;
            (*thread).tid = tid;
            (*thread).pid = (pid_tgid >> 32) as u32;
            (*thread)._pad = 0;
            (*thread).cgroup_id = bpf_get_current_cgroup_id();
            (*thread).comm = bpf_get_current_comm().unwrap_or([0; 16]);
            (*thread)._reserved = 0;
            batch.header.len += RAW_THREAD_SLOTS as u32;
            batch.header.last_tid = tid;
        }
        let i = batch.header.len as usize & (RAW_BATCH_SLOTS - 1);
        batch.slots[i] = RawSlot {
            nr,
            tid,
            ktime_ns,
            ret,
        };
        batch.header.len += 1;
        batch.header.calls += 1;
        // The age is that of the last reading: at most RAW_CLOCK_EVERY_CALLS calls late.
        if batch.header.len as usize > RAW_BATCH_SLOTS - RAW_ROOM
            || batch
                .header
                .last_ktime_ns
                .wrapping_sub(batch.header.first_ktime_ns)
                >= RAW_BATCH_MAX_AGE_NS
        {
            send_raw_batch(batch);
        }
        core::ptr::write_volatile(&mut batch.header.busy, 0);
    }
    0
}

/// sched_switch, attached with the raw stream: the CPU leaves a thread. The next raw-stream
/// call on this CPU starts over with a thread record and a clock reading, so a thread's calls
/// that skip the clock always follow a reading of its own on the same CPU with no switch in
/// between: their `ktime_ns` orders them exactly, also when the thread moved between CPUs.
/// Calls at the end of the batch that skipped the clock are bounded now, by sending the batch
/// (its send time is read), rather than by whatever runs on this CPU next.
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(_ctx: BtfTracePointContext) -> i32 {
    let Some(batch) = RAW_BATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: the per-CPU slot is this CPU's alone and the scheduler runs with preemption off.
    // A sys_exit run preempted mid-write (`busy`) is left alone: its thread did not run
    // anywhere else meanwhile, and its calls are bounded by the next reading on this CPU.
    unsafe {
        let batch = &mut *batch;
        if core::ptr::read_volatile(&batch.header.busy) != 0 || batch.header.len == 0 {
            return 0;
        }
        if batch.header.unclocked > 0 {
            send_raw_batch(batch);
        } else {
            batch.header.last_tid = 0;
        }
    }
    0
}

/// Never attached: the recorder runs it on each CPU (`BPF_PROG_TEST_RUN` with
/// `BPF_F_TEST_RUN_ON_CPU`) so a CPU that went quiet still sends its batch. Argument 0 non-zero
/// sends any non-empty batch (shutdown), zero only one older than [`RAW_BATCH_MAX_AGE_NS`].
/// Returns 1 when the batch was being written (try again), 0 otherwise.
#[raw_tracepoint]
pub fn flush_raw_batch(ctx: RawTracePointContext) -> u32 {
    let force: u64 = ctx.arg(0);
    let Some(batch) = RAW_BATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: runs on the batch's own CPU, in an interrupt or with preemption off, so no
    // writer runs meanwhile; one that was interrupted mid-write has `busy` set.
    unsafe {
        let batch = &mut *batch;
        if core::ptr::read_volatile(&batch.header.busy) != 0 {
            return 1;
        }
        if batch.header.len == 0 {
            return 0;
        }
        let age = bpf_ktime_get_ns().wrapping_sub(batch.header.first_ktime_ns);
        if force != 0 || age >= RAW_BATCH_MAX_AGE_NS {
            send_raw_batch(batch);
        }
    }
    0
}

/// sock:inet_sock_set_state: TCP state changes, with both endpoints. Field offsets are those of
/// the tracepoint's format (stable since Linux 4.16); the recorder checks them before attaching.
#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    // This fires wherever the kernel is (often a softirq): the current task says nothing about
    // the socket, so the task filters do not apply. With a cgroup filter, state changes are
    // not recorded at all rather than recorded for the wrong containers.
    if FILTER_CGROUPS.load() != 0 {
        return 0;
    }
    let Some(mut slot) = EVENTS.reserve::<TcpStateEvent>(0) else {
        count_drop();
        return 0;
    };
    let ev = slot.as_mut_ptr();
    // SAFETY: `ev` points at a reserved slot; context reads are bounds-checked by the helper.
    unsafe {
        fill_header(addr_of_mut!((*ev).header), KIND_TCP_STATE);
        (*ev).old_state = ctx.read_at::<i32>(16).unwrap_or(0);
        (*ev).new_state = ctx.read_at::<i32>(20).unwrap_or(0);
        (*ev).sport = ctx.read_at::<u16>(24).unwrap_or(0);
        (*ev).dport = ctx.read_at::<u16>(26).unwrap_or(0);
        (*ev).family = ctx.read_at::<u16>(28).unwrap_or(0);
        (*ev).protocol = ctx.read_at::<u16>(30).unwrap_or(0);
        // IPv4 addresses sit in the first four bytes, the rest zero.
        let (mut saddr, mut daddr) = ([0u8; 16], [0u8; 16]);
        if (*ev).family == AF_INET6 {
            saddr = ctx.read_at::<[u8; 16]>(40).unwrap_or([0; 16]);
            daddr = ctx.read_at::<[u8; 16]>(56).unwrap_or([0; 16]);
        } else {
            let s = ctx.read_at::<[u8; 4]>(32).unwrap_or([0; 4]);
            let d = ctx.read_at::<[u8; 4]>(36).unwrap_or([0; 4]);
            saddr[..4].copy_from_slice(&s);
            daddr[..4].copy_from_slice(&d);
        }
        (*ev).saddr = saddr;
        (*ev).daddr = daddr;
    }
    slot.submit(BPF_RB_NO_WAKEUP as u64);
    0
}

const AF_INET6: u16 = 10;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// GPL-compatible: the probe-read helpers are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
