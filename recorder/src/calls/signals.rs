//! Privilege and escape signals: uid/gid and capability changes, ptrace, mount, namespaces,
//! kernel modules, bpf, memfd and executable memory, as `process` rows of event `signal`.

use quarry_recorder_common::nr;
use quarry_store::schema::{Ids, ProcessEvent, ProcessFacts, ProcessRow};

use super::{Call, CallRow, ProcView};

/// A signal syscall as its row; None for a syscall of another family.
pub(super) fn decode(proc: &impl ProcView, c: &Call) -> Option<CallRow> {
    let ev = c.ev;
    let a = &ev.args;
    let row = match ev.nr {
        nr::SETUID => signal(
            c,
            "setuid",
            Ids {
                uid: optional_id(a[0]),
                ..Default::default()
            },
            None,
            None,
            None,
        ),
        nr::SETGID => signal(
            c,
            "setgid",
            Ids {
                gid: optional_id(a[0]),
                ..Default::default()
            },
            None,
            None,
            None,
        ),
        nr::SETREUID | nr::SETRESUID => signal(
            c,
            if ev.nr == nr::SETREUID {
                "setreuid"
            } else {
                "setresuid"
            },
            Ids {
                uid: optional_id(a[0]),
                euid: optional_id(a[1]),
                ..Default::default()
            },
            None,
            None,
            None,
        ),
        nr::SETREGID | nr::SETRESGID => signal(
            c,
            if ev.nr == nr::SETREGID {
                "setregid"
            } else {
                "setresgid"
            },
            Ids {
                gid: optional_id(a[0]),
                egid: optional_id(a[1]),
                ..Default::default()
            },
            None,
            None,
            None,
        ),
        nr::CAPSET => {
            let d = &ev.str1;
            let word =
                |o: usize| u32::from_le_bytes(d[o..o + 4].try_into().unwrap_or([0; 4])) as u64;
            let (eff, perm) = if ev.str1_len >= 24 {
                (word(0) | word(12) << 32, word(4) | word(16) << 32)
            } else {
                (0, 0)
            };
            signal(
                c,
                "capset",
                Ids::default(),
                None,
                Some(eff),
                Some(format!("effective={eff:#x} permitted={perm:#x}")),
            )
        }
        nr::PTRACE => signal(
            c,
            "ptrace",
            Ids::default(),
            Some(a[1] as i32),
            Some(a[0]),
            Some(ptrace_request(a[0])),
        ),
        nr::MOUNT => signal(
            c,
            "mount",
            Ids::default(),
            None,
            Some(a[3]),
            Some(format!("{} on {} type {}", c.s1(), c.s2(), c.s3())),
        ),
        nr::UMOUNT2 => signal(c, "umount", Ids::default(), None, Some(a[1]), Some(c.s2())),
        nr::UNSHARE => signal(
            c,
            "unshare",
            Ids::default(),
            None,
            Some(a[0]),
            Some(namespace_names(a[0])),
        ),
        nr::SETNS => {
            let target = proc
                .fd_path(c.pid, a[0] as i32)
                .unwrap_or_else(|| format!("fd {}", a[0] as i32));
            signal(
                c,
                "setns",
                Ids::default(),
                None,
                Some(a[1]),
                Some(format!("{} ({target})", namespace_names(a[1]))),
            )
        }
        nr::INIT_MODULE => signal(
            c,
            "init_module",
            Ids::default(),
            None,
            None,
            Some(format!("params={}", c.s1())),
        ),
        nr::FINIT_MODULE => {
            let file = proc
                .fd_path(c.pid, a[0] as i32)
                .unwrap_or_else(|| format!("fd {}", a[0] as i32));
            signal(
                c,
                "finit_module",
                Ids::default(),
                None,
                Some(a[2]),
                Some(format!("{file} params={}", c.s1())),
            )
        }
        nr::BPF => signal(
            c,
            "bpf",
            Ids::default(),
            None,
            Some(a[0]),
            Some(bpf_command(a[0])),
        ),
        nr::MEMFD_CREATE => signal(
            c,
            "memfd_create",
            Ids::default(),
            None,
            Some(a[1]),
            Some(c.s1()),
        ),
        nr::MMAP => signal(
            c,
            "mmap_exec",
            Ids::default(),
            None,
            Some(a[2]),
            Some(format!("len={} prot={:#x} flags={:#x}", a[1], a[2], a[3])),
        ),
        nr::MPROTECT => signal(
            c,
            "mprotect_exec",
            Ids::default(),
            None,
            Some(a[2]),
            Some(format!("addr={:#x} len={} prot={:#x}", a[0], a[1], a[2])),
        ),
        _ => return None,
    };
    Some(row)
}

/// A signal row; its result and image columns are filled by the caller.
fn signal(
    c: &Call,
    name: &'static str,
    ids: Ids,
    target: Option<i32>,
    flags: Option<u64>,
    detail: Option<String>,
) -> CallRow {
    CallRow::Process(
        ProcessRow {
            id: c.id.clone(),
            ppid: None,
            start_ns: None,
            parent_start_ns: None,
            event: ProcessEvent::Signal {
                name,
                ids,
                target_pid: target,
                flags,
                detail,
                ret: None,
            },
        },
        ProcessFacts::default(),
    )
}

/// Names of the namespace flags in an unshare/setns/clone flag word.
pub fn namespace_names(flags: u64) -> String {
    const NS: [(u64, &str); 8] = [
        (0x0002_0000, "mnt"),
        (0x0200_0000, "cgroup"),
        (0x0400_0000, "uts"),
        (0x0800_0000, "ipc"),
        (0x1000_0000, "user"),
        (0x2000_0000, "pid"),
        (0x4000_0000, "net"),
        (0x0000_0080, "time"),
    ];
    let names: Vec<&str> = NS
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(",")
    }
}

fn ptrace_request(req: u64) -> String {
    match req {
        0 => "TRACEME".into(),
        1..=3 => "PEEK".into(),
        4..=6 => "POKE".into(),
        16 => "ATTACH".into(),
        17 => "DETACH".into(),
        0x4206 => "SEIZE".into(),
        other => format!("request {other}"),
    }
}

fn bpf_command(cmd: u64) -> String {
    match cmd {
        0 => "MAP_CREATE".into(),
        5 => "PROG_LOAD".into(),
        8 => "PROG_ATTACH".into(),
        28 => "LINK_CREATE".into(),
        other => format!("cmd {other}"),
    }
}

fn optional_id(v: u64) -> Option<u32> {
    let v = v as u32;
    (v != u32::MAX).then_some(v)
}
