//! Decoding tests over a fake /proc.

use super::*;
use chrono::Utc;
use quarry_recorder_common::{
    EventHeader, KIND_CALL, KPATH_LEN, KPATH_NONE, KPATH_ROOT, KernelPath, STR_LEN,
};

struct FakeProc;
impl ProcView for FakeProc {
    fn cwd(&self, pid: u32) -> Option<String> {
        (pid == 7).then(|| "/home/u".to_string())
    }
    fn fd_path(&self, pid: u32, fd: i32) -> Option<String> {
        (pid == 7 && fd == 3).then(|| "/etc".to_string())
    }
    fn own_mnt_ns(&self) -> Option<u32> {
        Some(HOST_NS)
    }
}

const HOST_NS: u32 = 4026531841;

fn id() -> RowIdentity {
    RowIdentity {
        time: Utc::now(),
        ktime_ns: 1,
        pid: 7,
        tid: 8,
        comm: "x".into(),
        cgroup_id: 1,
        container_id: None,
    }
}

fn call(pid: u32, nr: i64, args: [u64; 6], ret: i64, s1: &[u8], s2: &[u8]) -> CallEvent {
    let mut ev = CallEvent {
        header: EventHeader {
            kind: KIND_CALL,
            pid,
            tid: pid,
            _pad: 0,
            ktime_ns: 1,
            cgroup_id: 1,
            comm: [0; 16],
        },
        nr,
        ret,
        enter_ktime_ns: 0,
        args,
        str1_len: s1.len() as u32,
        str2_len: s2.len() as u32,
        str3_len: 0,
        mnt_ns: 0,
        str1: [0; STR_LEN],
        str2: [0; STR_LEN],
        str3: [0; SHORT_STR_LEN],
        kpath: KernelPath {
            status: KPATH_NONE,
            len: 0,
            buf: [0; KPATH_LEN],
        },
    };
    ev.str1[..s1.len()].copy_from_slice(s1);
    ev.str2[..s2.len()].copy_from_slice(s2);
    ev
}

fn file(c: &mut Calls<FakeProc>, ev: &CallEvent) -> FileRow {
    match c.call(ev, id()) {
        Some(CallRow::File(f)) => f,
        other => panic!("not a file row: {other:?}"),
    }
}

const CWD: u64 = AT_FDCWD as u64;

#[test]
fn the_kernel_path_sits_beside_the_path_given() {
    let mut c = Calls::with_proc(FakeProc);
    let mut ev = call(7, nr::OPENAT, [CWD, 0, 0, 0, 0, 0], 3, b"/tmp/s", b"");
    let leaf_first = b"shadow\0etc\0";
    ev.kpath.status = KPATH_ROOT;
    ev.kpath.len = leaf_first.len() as u32;
    ev.kpath.buf[..leaf_first.len()].copy_from_slice(leaf_first);
    let f = file(&mut c, &ev);
    assert_eq!(f.abs_path.as_deref(), Some("/tmp/s"));
    assert_eq!(f.kernel_path.as_deref(), Some("/etc/shadow"));
    assert_eq!(f.path_resolution, Some("kernel"));
    // No walk (a failed open, an unlink): lexical only.
    let f = file(&mut c, &call(7, nr::UNLINK, [0; 6], 0, b"/tmp/s", b""));
    assert_eq!((f.kernel_path, f.path_resolution), (None, Some("lexical")));
}

#[test]
fn paths_resolve_against_cwd_and_dirfd() {
    let mut c = Calls::with_proc(FakeProc);
    let f = file(
        &mut c,
        &call(
            7,
            nr::OPENAT,
            [CWD, 0, 0o101, 0o644, 0, 0],
            5,
            b"notes.txt",
            b"",
        ),
    );
    assert_eq!(f.abs_path.as_deref(), Some("/home/u/notes.txt"));
    assert_eq!(
        (f.event, f.syscall, f.resolution),
        ("open", "openat", "cwd")
    );
    assert_eq!(
        (f.flags, f.mode, f.fd, f.ret),
        (Some(0o101), Some(0o644), Some(5), Some(5))
    );
    let f = file(
        &mut c,
        &call(7, nr::OPENAT, [3, 0, 0, 0, 0, 0], 4, b"passwd", b""),
    );
    assert_eq!(
        (f.abs_path.as_deref(), f.resolution),
        (Some("/etc/passwd"), "dirfd")
    );
    let f = file(&mut c, &call(7, nr::UNLINK, [0; 6], 0, b"/abs", b""));
    assert_eq!(
        (f.abs_path.as_deref(), f.resolution),
        (Some("/abs"), "absolute")
    );
    let f = file(&mut c, &call(99, nr::UNLINK, [0; 6], 0, b"x", b""));
    assert_eq!((f.abs_path, f.resolution), (None, "unresolved"));
    let mut unreadable = call(7, nr::UNLINK, [0; 6], 0, b"", b"");
    unreadable.str1_len = UNREADABLE;
    let f = file(&mut c, &unreadable);
    assert_eq!((f.path, f.resolution), (None, "unreadable"));
}

#[test]
fn cwd_follows_fork_and_chdir_after_the_process_is_gone() {
    let mut c = Calls::with_proc(FakeProc);
    // pid 50 is not in /proc (already exited) but was forked by 7 and chdir'd.
    c.process_forked(7, 50);
    assert!(
        c.call(&call(50, nr::CHDIR, [0; 6], 0, b"../srv/./app", b""), id())
            .is_none()
    );
    let f = file(
        &mut c,
        &call(50, nr::RENAMEAT2, [CWD, 0, CWD, 0, 0, 0], 0, b"a", b"b"),
    );
    assert_eq!(f.abs_path.as_deref(), Some("/home/srv/app/a"));
    assert_eq!(f.abs_path2.as_deref(), Some("/home/srv/app/b"));
    c.process_exited(50);
    let f = file(&mut c, &call(50, nr::UNLINK, [0; 6], 0, b"a", b""));
    assert_eq!(f.resolution, "unresolved");
}

#[test]
fn normalizes_lexically() {
    assert_eq!(normalize("/a/b/../c/./d/"), "/a/c/d");
    assert_eq!(normalize("/.."), "/");
    assert_eq!(parse_ns_link("mnt:[4026531841]"), Some(4026531841));
    assert_eq!(parse_ns_link("mnt:4026531841"), None);
}

/// Every spelling of /etc/shadow is recorded as /etc/shadow, beside the path as given.
#[test]
fn paths_are_normalized_however_they_are_spelled() {
    let mut c = Calls::with_proc(FakeProc);
    c.process_forked(7, 60);
    assert!(
        c.call(&call(60, nr::CHDIR, [0; 6], 0, b"/tmp", b""), id())
            .is_none()
    );
    for (pid, path) in [
        (60, &b"../etc/shadow"[..]),
        (7, b"//etc//shadow"),
        (7, b"/etc/./shadow"),
        (7, b"/tmp/../etc/shadow/"),
    ] {
        let f = file(&mut c, &call(pid, nr::OPEN, [0; 6], 3, path, b""));
        assert_eq!(f.abs_path.as_deref(), Some("/etc/shadow"), "{f:?}");
        assert_eq!(f.path.as_deref().map(str::as_bytes), Some(path));
    }
}

fn exec_row(pid: i32, ppid: i32, filename: &str) -> ProcessRow {
    let mut i = id();
    i.pid = pid;
    ProcessRow {
        id: i,
        ppid: Some(ppid),
        start_ns: Some(pid as u64 * 10),
        parent_start_ns: None,
        event: ProcessEvent::Exec {
            filename: filename.into(),
            argv: vec![filename.into()],
            argv_truncated: false,
            uid: 0,
            gid: 0,
            euid: 0,
            egid: 0,
        },
    }
}

fn fork_row(pid: i32, ppid: i32) -> ProcessRow {
    let mut row = exec_row(pid, ppid, "");
    row.event = ProcessEvent::Fork;
    row
}

/// An exec's program is resolved against the cwd; the namespace its image was executed in
/// follows the process through forks and is what signals are judged by.
#[test]
fn exec_facts_and_image_namespace_follow_the_process() {
    const CONTAINER_NS: u32 = 4026532300;
    let mut c = Calls::with_proc(FakeProc);
    // A runtime process: its image was executed in the host's namespace; its child (forked
    // before any exec) carries that image into the container's namespace.
    let mut facts = ProcessFacts {
        mnt_ns: Some(HOST_NS),
        ..Default::default()
    };
    c.process(&exec_row(7, 1, "/usr/bin/runc"), &mut facts);
    assert_eq!(
        (facts.cwd.as_deref(), facts.host_image),
        (Some("/home/u"), Some(true))
    );
    c.process(&fork_row(80, 7), &mut ProcessFacts::default());
    let mut mount = call(80, nr::MOUNT, [0; 6], 0, b"proc", b"/proc");
    mount.mnt_ns = CONTAINER_NS;
    let Some(CallRow::Process(row, facts)) = c.call(&mount, id()) else {
        panic!()
    };
    assert_eq!(row.start_ns, Some(800));
    assert_eq!(
        (facts.mnt_ns, facts.image_mnt_ns, facts.host_image),
        (Some(CONTAINER_NS), Some(HOST_NS), Some(true))
    );
    // The same process executes a program inside the container: from then on its image is
    // the container's, whatever the program is called.
    assert!(
        c.call(&call(80, nr::CHDIR, [0; 6], 0, b"/tmp", b""), id())
            .is_none()
    );
    let mut facts = ProcessFacts {
        mnt_ns: Some(CONTAINER_NS),
        ..Default::default()
    };
    c.process(&exec_row(80, 7, "./runc"), &mut facts);
    assert_eq!(facts.exe_path.as_deref(), Some("/tmp/runc"));
    assert_eq!(facts.host_image, Some(false));
    let Some(CallRow::Process(_, facts)) = c.call(&mount, id()) else {
        panic!()
    };
    assert_eq!(facts.host_image, Some(false));
    // A process whose exec was never seen is not taken for the runtime.
    let Some(CallRow::Process(_, facts)) = c.call(&call(99, nr::MOUNT, [0; 6], 0, b"", b""), id())
    else {
        panic!()
    };
    assert_eq!(facts.host_image, None);
}

#[test]
fn sockets_and_calls_seen_only_at_entry() {
    let mut c = Calls::with_proc(FakeProc);
    let Some(CallRow::Net(n)) = c.call(
        &call(7, nr::SOCKET, [17, 0x80003, 0, 0, 0, 0], 5, b"", b""),
        id(),
    ) else {
        panic!()
    };
    assert_eq!(
        (n.event, n.family.as_deref(), n.protocol, n.fd),
        ("socket", Some("packet"), Some("raw"), Some(5))
    );
    let mut module = call(7, nr::FINIT_MODULE, [3, 0, 0, 0, 0, 0], 0, b"", b"");
    module.header.kind = KIND_CALL_ENTRY;
    let Some(CallRow::Process(p, _)) = c.call(&module, id()) else {
        panic!()
    };
    assert!(matches!(
        p.event,
        ProcessEvent::Signal {
            name: "finit_module",
            ret: None,
            ..
        }
    ));
}

#[test]
fn sockaddrs() {
    let mut v4 = vec![2, 0, 0x1f, 0x90, 198, 18, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
    let a = parse_sockaddr(&v4).unwrap();
    assert_eq!(
        (a.family.as_str(), a.addr.as_deref(), a.port),
        ("inet", Some("198.18.0.1"), Some(8080))
    );
    v4.truncate(3);
    assert!(parse_sockaddr(&v4).unwrap().addr.is_none());
    let mut v6 = vec![10, 0, 0, 80, 0, 0, 0, 0];
    v6.extend(std::net::Ipv6Addr::LOCALHOST.octets());
    assert_eq!(parse_sockaddr(&v6).unwrap().addr.as_deref(), Some("::1"));
    let unix = b"\x01\x00/run/x.sock\x00";
    assert_eq!(
        parse_sockaddr(unix).unwrap().unix_path.as_deref(),
        Some("/run/x.sock")
    );
    let abs = b"\x01\x00\x00name";
    assert_eq!(
        parse_sockaddr(abs).unwrap().unix_path.as_deref(),
        Some("@name")
    );
}

#[test]
fn listen_and_accept_know_the_bound_address() {
    let mut c = Calls::with_proc(FakeProc);
    let sa = [2u8, 0, 0x1f, 0x90, 127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
    c.call(&call(7, nr::BIND, [4, 0, 16, 0, 0, 0], 0, &sa, b""), id());
    let Some(CallRow::Net(l)) =
        c.call(&call(7, nr::LISTEN, [4, 16, 0, 0, 0, 0], 0, b"", b""), id())
    else {
        panic!()
    };
    assert_eq!(
        (l.local_addr.as_deref(), l.local_port, l.backlog),
        (Some("127.0.0.1"), Some(8080), Some(16))
    );
    let peer = [2u8, 0, 0xd4, 0x31, 127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
    let Some(CallRow::Net(a)) = c.call(
        &call(7, nr::ACCEPT4, [4, 1, 2, 0, 0, 0], 6, &peer, b""),
        id(),
    ) else {
        panic!()
    };
    assert_eq!(
        (a.event, a.ret, a.local_port),
        ("accept", Some(6), Some(8080))
    );
    assert_eq!(
        (a.remote_addr.as_deref(), a.remote_port),
        (Some("127.0.0.1"), Some(54321))
    );
}

#[test]
fn signals() {
    let mut c = Calls::with_proc(FakeProc);
    let Some(CallRow::Process(p, _)) = c.call(
        &call(7, nr::UNSHARE, [0x4002_0000, 0, 0, 0, 0, 0], -1, b"", b""),
        id(),
    ) else {
        panic!()
    };
    let ProcessEvent::Signal {
        name, detail, ret, ..
    } = p.event
    else {
        panic!()
    };
    assert_eq!(
        (name, detail.as_deref(), ret),
        ("unshare", Some("mnt,net"), Some(-1))
    );
    let Some(CallRow::Process(p, _)) = c.call(
        &call(
            7,
            nr::SETRESUID,
            [0, 0, u32::MAX as u64, 0, 0, 0],
            0,
            b"",
            b"",
        ),
        id(),
    ) else {
        panic!()
    };
    assert!(
        matches!(&p.event, ProcessEvent::Signal { name: "setresuid", ids, .. } if ids.uid == Some(0) && ids.euid == Some(0))
    );
}
