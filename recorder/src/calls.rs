//! Decoding syscalls (files, network, privilege and escape signals) into rows.
//!
//! The kernel sends one [`CallEvent`] per decoded syscall at its exit: arguments, result and the
//! user memory the arguments point to. What a row needs beyond that comes from state kept here:
//! each process's working directory, followed through fork, chdir and exit so that relative
//! paths of short-lived processes resolve after they are gone; the address each socket was
//! bound to, for listen and accept rows; and each process's start time and the mount namespace
//! its program image was executed in, followed from exec through fork, so privilege and escape
//! signals say whether the runtime's own binary made them (see [`ProcessFacts`]).
//!
//! Paths are made absolute against the cwd or dirfd and then normalized lexically (`.`, `..`,
//! repeated `/`): rules match `/etc/shadow` however the process spelled it. Lexical means the
//! filesystem is not consulted: a `..` after a symlink is taken literally, which the schema
//! documents. Nothing here trusts a name the process chose (comm, argv[0]) for identity.

use std::collections::HashMap;
use std::path::Path;

use quarry_recorder_common::{
    CallEvent, KIND_CALL_ENTRY, SHORT_STR_LEN, TcpStateEvent, UNREADABLE, nr,
};
use quarry_store::schema::{
    FileRow, Ids, NetRow, ProcessEvent, ProcessFacts, ProcessRow, RowIdentity,
};

use crate::syscalls::syscall_name;

/// A decoded row of one of the tables fed by syscalls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallRow {
    Process(ProcessRow, ProcessFacts),
    File(FileRow),
    Net(NetRow),
}

/// Where relative paths and fds are looked up; `/proc` on a live system.
pub trait ProcView {
    /// The target of `/proc/<pid>/cwd`.
    fn cwd(&self, pid: u32) -> Option<String>;
    /// The target of `/proc/<pid>/fd/<fd>`.
    fn fd_path(&self, pid: u32, fd: i32) -> Option<String>;
    /// Inode number of the recorder's own (the host's) mount namespace.
    fn own_mnt_ns(&self) -> Option<u32>;
}

/// The live `/proc`.
pub struct LiveProc;

impl ProcView for LiveProc {
    fn cwd(&self, pid: u32) -> Option<String> {
        std::fs::read_link(format!("/proc/{pid}/cwd"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    }
    fn fd_path(&self, pid: u32, fd: i32) -> Option<String> {
        std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    }
    fn own_mnt_ns(&self) -> Option<u32> {
        let link = std::fs::read_link("/proc/self/ns/mnt").ok()?;
        parse_ns_link(&link.to_string_lossy())
    }
}

/// The inode number in a namespace link's target (`mnt:[4026531841]`).
pub fn parse_ns_link(target: &str) -> Option<u32> {
    target.split_once(":[")?.1.strip_suffix(']')?.parse().ok()
}

/// `AT_FDCWD` from `<fcntl.h>`.
const AT_FDCWD: i32 = -100;
const AT_REMOVEDIR: u64 = 0x200;
const O_CREAT_WRONLY_TRUNC: u64 = 0o100 | 0o1 | 0o1000;

/// `base` joined with the relative `path`, as the kernel would look it up.
pub fn join(base: &str, path: &str) -> String {
    Path::new(base).join(path).to_string_lossy().into_owned()
}

/// Removes `.` and `..` components and repeated or trailing `/` lexically, as the kernel
/// walks them when no symlink is involved (`..` at the root stays at the root).
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// A parsed socket address.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SockAddr {
    pub family: String,
    pub addr: Option<String>,
    pub port: Option<u16>,
    pub unix_path: Option<String>,
}

/// Parses a `struct sockaddr` as copied from user memory.
pub fn parse_sockaddr(b: &[u8]) -> Option<SockAddr> {
    if b.len() < 2 {
        return None;
    }
    let family = u16::from_le_bytes([b[0], b[1]]);
    let port = || b.get(2..4).map(|p| u16::from_be_bytes([p[0], p[1]]));
    Some(match family {
        2 if b.len() >= 8 => SockAddr {
            family: "inet".into(),
            addr: Some(std::net::Ipv4Addr::new(b[4], b[5], b[6], b[7]).to_string()),
            port: port(),
            unix_path: None,
        },
        10 if b.len() >= 24 => {
            let a: [u8; 16] = b[8..24].try_into().ok()?;
            SockAddr {
                family: "inet6".into(),
                addr: Some(std::net::Ipv6Addr::from(a).to_string()),
                port: port(),
                unix_path: None,
            }
        }
        1 => {
            let raw = &b[2..];
            let path = if raw.first() == Some(&0) {
                // Abstract namespace: shown with a leading '@', as ss(8) does.
                let name = &raw[1..];
                let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
                format!("@{}", String::from_utf8_lossy(&name[..end]))
            } else {
                crate::decode::c_string(raw)
            };
            SockAddr {
                family: "unix".into(),
                addr: None,
                port: None,
                unix_path: Some(path),
            }
        }
        other => SockAddr {
            family: format!("other({other})"),
            ..Default::default()
        },
    })
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

/// An address family's name, as the `family` column spells it.
fn family_name(family: u16) -> String {
    match family {
        1 => "unix".into(),
        2 => "inet".into(),
        10 => "inet6".into(),
        16 => "netlink".into(),
        17 => "packet".into(),
        other => format!("other({other})"),
    }
}

/// The socket type in socket(2)'s second argument (without SOCK_NONBLOCK/SOCK_CLOEXEC).
fn socket_type(ty: u64) -> &'static str {
    match ty & 0xf {
        1 => "stream",
        2 => "dgram",
        3 => "raw",
        5 => "seqpacket",
        10 => "packet",
        _ => "other",
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

/// Text of a copied string argument; None when the kernel could not read it.
fn text(buf: &[u8], len: u32) -> Option<String> {
    if len == UNREADABLE {
        return None;
    }
    let len = (len as usize).min(buf.len());
    Some(String::from_utf8_lossy(&buf[..len]).into_owned())
}

/// Raw bytes of a copied argument; empty when unreadable.
fn raw(buf: &[u8], len: u32) -> &[u8] {
    if len == UNREADABLE {
        return &[];
    }
    &buf[..(len as usize).min(buf.len())]
}

fn optional_id(v: u64) -> Option<u32> {
    let v = v as u32;
    (v != u32::MAX).then_some(v)
}

/// What is followed of each process besides its cwd.
#[derive(Debug, Clone, Copy, Default)]
struct Image {
    start_ns: Option<u64>,
    /// The mount namespace the program image was executed in (inherited through fork).
    mnt_ns: Option<u32>,
}

/// Decoder state: each process's working directory, start time and image namespace, and each
/// socket's bound address.
pub struct Calls<P: ProcView = LiveProc> {
    proc: P,
    cwd: HashMap<u32, String>,
    images: HashMap<u32, Image>,
    bound: HashMap<(u32, i32), SockAddr>,
    host_mnt_ns: Option<u32>,
}

impl Calls<LiveProc> {
    pub fn new() -> Self {
        Calls::with_proc(LiveProc)
    }
}

impl Default for Calls<LiveProc> {
    fn default() -> Self {
        Calls::new()
    }
}

impl<P: ProcView> Calls<P> {
    pub fn with_proc(proc: P) -> Self {
        let host_mnt_ns = proc.own_mnt_ns();
        Calls {
            proc,
            cwd: HashMap::new(),
            images: HashMap::new(),
            bound: HashMap::new(),
            host_mnt_ns,
        }
    }

    /// Follows a fork, exec or exit, and fills what the recorder knows of it into `facts`
    /// (whose `mnt_ns` the kernel side filled for an exec).
    pub fn process(&mut self, row: &ProcessRow, facts: &mut ProcessFacts) {
        let pid = row.id.pid as u32;
        match &row.event {
            ProcessEvent::Fork => {
                let parent = row.ppid.map(|p| p as u32);
                if let Some(parent) = parent {
                    self.process_forked(parent, pid);
                }
                let image = Image {
                    start_ns: row.start_ns,
                    mnt_ns: parent
                        .and_then(|p| self.images.get(&p))
                        .and_then(|i| i.mnt_ns),
                };
                self.images.insert(pid, image);
            }
            ProcessEvent::Exec { filename, .. } => {
                facts.cwd = self.cwd_of(pid);
                facts.exe_path = self.resolve(pid, None, filename).0;
                self.images.insert(
                    pid,
                    Image {
                        start_ns: row.start_ns,
                        mnt_ns: facts.mnt_ns,
                    },
                );
                self.image_facts(pid, facts);
            }
            ProcessEvent::Exit { .. } => self.process_exited(pid),
            ProcessEvent::ExeHash | ProcessEvent::Signal { .. } => {}
        }
    }

    /// The image columns of a row of `pid`.
    fn image_facts(&self, pid: u32, facts: &mut ProcessFacts) {
        let image = self.images.get(&pid).and_then(|i| i.mnt_ns);
        facts.image_mnt_ns = image;
        facts.host_image = match (image, self.host_mnt_ns) {
            (Some(image), Some(host)) => Some(image == host),
            _ => None,
        };
    }

    /// A new process starts in its parent's working directory.
    pub fn process_forked(&mut self, parent: u32, child: u32) {
        if let Some(cwd) = self.cwd_of(parent) {
            self.cwd.insert(child, cwd);
        }
    }

    /// Forgets what is known of a process that exited.
    pub fn process_exited(&mut self, pid: u32) {
        self.cwd.remove(&pid);
        self.images.remove(&pid);
        self.bound.retain(|(p, _), _| *p != pid);
    }

    /// The working directory of `pid`: followed from fork and chdir, else read from /proc
    /// while the process is alive.
    fn cwd_of(&mut self, pid: u32) -> Option<String> {
        if let Some(c) = self.cwd.get(&pid) {
            return Some(c.clone());
        }
        let c = self.proc.cwd(pid)?;
        self.cwd.insert(pid, c.clone());
        Some(c)
    }

    fn resolve(
        &mut self,
        pid: u32,
        dirfd: Option<i32>,
        path: &str,
    ) -> (Option<String>, &'static str) {
        if path.starts_with('/') {
            return (Some(normalize(path)), "absolute");
        }
        let (base, how) = match dirfd {
            None | Some(AT_FDCWD) => (self.cwd_of(pid), "cwd"),
            Some(fd) if fd >= 0 => (self.proc.fd_path(pid, fd), "dirfd"),
            Some(_) => (None, "unresolved"),
        };
        match base {
            Some(base) if path.is_empty() => (Some(normalize(&base)), how),
            Some(base) => (Some(normalize(&join(&base, path))), how),
            None => (None, "unresolved"),
        }
    }

    /// Decodes one syscall. chdir/fchdir update the working directory and make no row.
    pub fn call(&mut self, ev: &CallEvent, id: RowIdentity) -> Option<CallRow> {
        let pid = ev.header.pid;
        match ev.nr {
            nr::CHDIR if ev.ret == 0 => {
                if let Some(path) = text(&ev.str1, ev.str1_len) {
                    let (abs, _) = self.resolve(pid, None, &path);
                    match abs {
                        Some(abs) => self.cwd.insert(pid, normalize(&abs)),
                        None => self.cwd.remove(&pid),
                    };
                }
                return None;
            }
            nr::FCHDIR if ev.ret == 0 => {
                match self.proc.fd_path(pid, ev.args[0] as i32) {
                    Some(dir) => self.cwd.insert(pid, dir),
                    None => self.cwd.remove(&pid),
                };
                return None;
            }
            nr::CHDIR | nr::FCHDIR => return None,
            _ => {}
        }
        let mut row = self.decode(ev, id)?;
        // A record sent at entry has no result.
        let result = (ev.header.kind != KIND_CALL_ENTRY).then_some(ev.ret);
        match &mut row {
            CallRow::Process(p, facts) => {
                if let ProcessEvent::Signal { ret, .. } = &mut p.event {
                    *ret = result;
                }
                p.start_ns = self.images.get(&pid).and_then(|i| i.start_ns);
                facts.mnt_ns = (ev.mnt_ns != 0).then_some(ev.mnt_ns);
                self.image_facts(pid, facts);
            }
            CallRow::File(f) => {
                f.ret = Some(ev.ret);
                if f.event == "open" && ev.ret >= 0 {
                    f.fd = Some(ev.ret as i32);
                }
                // The kernel side walks only the opens that returned an fd; every other row
                // is lexical.
                let (kernel_path, how) = crate::decode::kernel_path(&ev.kpath);
                (f.kernel_path, f.path_resolution) = (kernel_path, Some(how));
            }
            CallRow::Net(n) => {
                n.ret = Some(ev.ret);
                if n.event == "socket" && ev.ret >= 0 {
                    n.fd = Some(ev.ret as i32);
                }
                if let ("bind", 0, Some(fd), Some(family)) =
                    (n.event, ev.ret, n.fd, n.family.clone())
                {
                    let addr = SockAddr {
                        family,
                        addr: n.local_addr.clone(),
                        port: n.local_port,
                        unix_path: n.unix_path.clone(),
                    };
                    self.bound.insert((pid, fd), addr);
                }
            }
        }
        Some(row)
    }

    fn decode(&mut self, ev: &CallEvent, id: RowIdentity) -> Option<CallRow> {
        let a = &ev.args;
        let pid = ev.header.pid;
        let unreadable = || "(unreadable)".to_string();
        let p1 = text(&ev.str1, ev.str1_len);
        let p2 = text(&ev.str2, ev.str2_len);
        let s1 = p1.clone().unwrap_or_else(unreadable);
        let s2 = p2.clone().unwrap_or_else(unreadable);
        let s3 = text(&ev.str3[..SHORT_STR_LEN], ev.str3_len).unwrap_or_else(unreadable);
        let syscall = syscall_name(ev.nr).unwrap_or("unknown");
        let dirfd = |i: usize| Some(a[i] as i32);
        let file = |this: &mut Self,
                    event: &'static str,
                    path: Option<(Option<i32>, Option<String>)>,
                    path2: Option<(Option<i32>, Option<String>)>| {
            let (path, abs_path, resolution) = match path {
                Some((fd, Some(p))) => {
                    let (abs, how) = this.resolve(pid, fd, &p);
                    (Some(p), abs, how)
                }
                Some((_, None)) => (None, None, "unreadable"),
                None => (None, None, "none"),
            };
            let (path2, abs_path2) = match path2 {
                Some((fd, Some(p))) => {
                    let (abs, _) = this.resolve(pid, fd, &p);
                    (Some(p), abs)
                }
                _ => (None, None),
            };
            FileRow {
                id: id.clone(),
                event,
                syscall,
                path,
                abs_path,
                resolution,
                path2,
                abs_path2,
                flags: None,
                mode: None,
                owner_uid: None,
                owner_gid: None,
                fd: None,
                ret: None,
                kernel_path: None,
                path_resolution: None,
            }
        };
        let signal = |name: &'static str,
                      ids: Ids,
                      target: Option<i32>,
                      flags: Option<u64>,
                      detail: Option<String>| {
            CallRow::Process(
                ProcessRow {
                    id: id.clone(),
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
        };
        let row = match ev.nr {
            nr::OPEN => {
                let mut f = file(self, "open", Some((None, p1)), None);
                (f.flags, f.mode) = (Some(a[1]), Some(a[2] as u32));
                CallRow::File(f)
            }
            nr::OPENAT => {
                let mut f = file(self, "open", Some((dirfd(0), p1)), None);
                (f.flags, f.mode) = (Some(a[2]), Some(a[3] as u32));
                CallRow::File(f)
            }
            nr::OPENAT2 => {
                let mut f = file(self, "open", Some((dirfd(0), p1)), None);
                let how = raw(&ev.str2, ev.str2_len);
                if how.len() >= 16 {
                    f.flags = Some(u64::from_le_bytes(how[0..8].try_into().ok()?));
                    f.mode = Some(u64::from_le_bytes(how[8..16].try_into().ok()?) as u32);
                }
                CallRow::File(f)
            }
            nr::CREAT => {
                let mut f = file(self, "create", Some((None, p1)), None);
                (f.flags, f.mode) = (Some(O_CREAT_WRONLY_TRUNC), Some(a[1] as u32));
                CallRow::File(f)
            }
            nr::UNLINK => CallRow::File(file(self, "unlink", Some((None, p1)), None)),
            nr::UNLINKAT => {
                let event = if a[2] & AT_REMOVEDIR != 0 {
                    "rmdir"
                } else {
                    "unlink"
                };
                let mut f = file(self, event, Some((dirfd(0), p1)), None);
                f.flags = Some(a[2]);
                CallRow::File(f)
            }
            nr::RMDIR => CallRow::File(file(self, "rmdir", Some((None, p1)), None)),
            nr::RENAME => CallRow::File(file(self, "rename", Some((None, p1)), Some((None, p2)))),
            nr::RENAMEAT | nr::RENAMEAT2 => {
                let mut f = file(self, "rename", Some((dirfd(0), p1)), Some((dirfd(2), p2)));
                if ev.nr == nr::RENAMEAT2 {
                    f.flags = Some(a[4]);
                }
                CallRow::File(f)
            }
            nr::CHMOD => {
                let mut f = file(self, "chmod", Some((None, p1)), None);
                f.mode = Some(a[1] as u32);
                CallRow::File(f)
            }
            nr::FCHMODAT | nr::FCHMODAT2 => {
                let mut f = file(self, "chmod", Some((dirfd(0), p1)), None);
                f.mode = Some(a[2] as u32);
                CallRow::File(f)
            }
            nr::FCHMOD => {
                let mut f = file(self, "chmod", None, None);
                (f.fd, f.mode) = (Some(a[0] as i32), Some(a[1] as u32));
                f.abs_path = self.proc.fd_path(pid, a[0] as i32);
                CallRow::File(f)
            }
            nr::CHOWN | nr::LCHOWN => {
                let mut f = file(self, "chown", Some((None, p1)), None);
                (f.owner_uid, f.owner_gid) = (Some(a[1] as i32 as i64), Some(a[2] as i32 as i64));
                CallRow::File(f)
            }
            nr::FCHOWNAT => {
                let mut f = file(self, "chown", Some((dirfd(0), p1)), None);
                (f.owner_uid, f.owner_gid) = (Some(a[2] as i32 as i64), Some(a[3] as i32 as i64));
                f.flags = Some(a[4]);
                CallRow::File(f)
            }
            nr::FCHOWN => {
                let mut f = file(self, "chown", None, None);
                f.fd = Some(a[0] as i32);
                (f.owner_uid, f.owner_gid) = (Some(a[1] as i32 as i64), Some(a[2] as i32 as i64));
                f.abs_path = self.proc.fd_path(pid, a[0] as i32);
                CallRow::File(f)
            }
            nr::MKDIR => {
                let mut f = file(self, "mkdir", Some((None, p1)), None);
                f.mode = Some(a[1] as u32);
                CallRow::File(f)
            }
            nr::MKDIRAT => {
                let mut f = file(self, "mkdir", Some((dirfd(0), p1)), None);
                f.mode = Some(a[2] as u32);
                CallRow::File(f)
            }
            nr::LINK => CallRow::File(file(self, "link", Some((None, p1)), Some((None, p2)))),
            nr::LINKAT => {
                let mut f = file(self, "link", Some((dirfd(0), p1)), Some((dirfd(2), p2)));
                f.flags = Some(a[4]);
                CallRow::File(f)
            }
            // A symlink's target is kept as written: it is resolved when followed, not now.
            nr::SYMLINK | nr::SYMLINKAT => {
                let link_dirfd = if ev.nr == nr::SYMLINKAT {
                    dirfd(1)
                } else {
                    None
                };
                let mut f = file(self, "symlink", None, Some((link_dirfd, p2)));
                f.path = p1;
                f.resolution = "none";
                CallRow::File(f)
            }
            nr::TRUNCATE => CallRow::File(file(self, "truncate", Some((None, p1)), None)),
            nr::FTRUNCATE => {
                let mut f = file(self, "truncate", None, None);
                f.fd = Some(a[0] as i32);
                f.abs_path = self.proc.fd_path(pid, a[0] as i32);
                CallRow::File(f)
            }
            nr::CONNECT | nr::BIND => {
                let sa = parse_sockaddr(raw(&ev.str1, ev.str1_len)).unwrap_or_default();
                let connect = ev.nr == nr::CONNECT;
                CallRow::Net(NetRow {
                    id: Some(id.clone()),
                    event: if connect { "connect" } else { "bind" },
                    syscall: Some(syscall),
                    fd: Some(a[0] as i32),
                    family: (!sa.family.is_empty()).then_some(sa.family),
                    local_addr: if connect { None } else { sa.addr.clone() },
                    local_port: if connect { None } else { sa.port },
                    remote_addr: if connect { sa.addr } else { None },
                    remote_port: if connect { sa.port } else { None },
                    unix_path: sa.unix_path,
                    ..Default::default()
                })
            }
            nr::SOCKET => CallRow::Net(NetRow {
                id: Some(id.clone()),
                event: "socket",
                syscall: Some(syscall),
                family: Some(family_name(a[0] as u16)),
                protocol: Some(socket_type(a[1])),
                ..Default::default()
            }),
            nr::LISTEN | nr::ACCEPT | nr::ACCEPT4 => {
                let fd = a[0] as i32;
                let local = self.bound.get(&(pid, fd)).cloned().unwrap_or_default();
                // accept: the peer address the kernel wrote sits in str1.
                let peer = parse_sockaddr(raw(&ev.str1, ev.str1_len)).unwrap_or_default();
                let family = if local.family.is_empty() {
                    peer.family
                } else {
                    local.family
                };
                CallRow::Net(NetRow {
                    id: Some(id.clone()),
                    event: if ev.nr == nr::LISTEN {
                        "listen"
                    } else {
                        "accept"
                    },
                    syscall: Some(syscall),
                    fd: Some(fd),
                    family: (!family.is_empty()).then_some(family),
                    local_addr: local.addr,
                    local_port: local.port,
                    remote_addr: peer.addr,
                    remote_port: peer.port,
                    unix_path: local.unix_path.or(peer.unix_path),
                    backlog: (ev.nr == nr::LISTEN).then_some(a[1] as i32),
                    ..Default::default()
                })
            }
            nr::SETUID => signal(
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
                    "capset",
                    Ids::default(),
                    None,
                    Some(eff),
                    Some(format!("effective={eff:#x} permitted={perm:#x}")),
                )
            }
            nr::PTRACE => signal(
                "ptrace",
                Ids::default(),
                Some(a[1] as i32),
                Some(a[0]),
                Some(ptrace_request(a[0])),
            ),
            nr::MOUNT => signal(
                "mount",
                Ids::default(),
                None,
                Some(a[3]),
                Some(format!("{s1} on {s2} type {s3}")),
            ),
            nr::UMOUNT2 => signal("umount", Ids::default(), None, Some(a[1]), Some(s2)),
            nr::UNSHARE => signal(
                "unshare",
                Ids::default(),
                None,
                Some(a[0]),
                Some(namespace_names(a[0])),
            ),
            nr::SETNS => {
                let target = self
                    .proc
                    .fd_path(pid, a[0] as i32)
                    .unwrap_or_else(|| format!("fd {}", a[0] as i32));
                signal(
                    "setns",
                    Ids::default(),
                    None,
                    Some(a[1]),
                    Some(format!("{} ({target})", namespace_names(a[1]))),
                )
            }
            nr::INIT_MODULE => signal(
                "init_module",
                Ids::default(),
                None,
                None,
                Some(format!("params={s1}")),
            ),
            nr::FINIT_MODULE => {
                let file = self
                    .proc
                    .fd_path(pid, a[0] as i32)
                    .unwrap_or_else(|| format!("fd {}", a[0] as i32));
                signal(
                    "finit_module",
                    Ids::default(),
                    None,
                    Some(a[2]),
                    Some(format!("{file} params={s1}")),
                )
            }
            nr::BPF => signal(
                "bpf",
                Ids::default(),
                None,
                Some(a[0]),
                Some(bpf_command(a[0])),
            ),
            nr::MEMFD_CREATE => signal("memfd_create", Ids::default(), None, Some(a[1]), Some(s1)),
            nr::MMAP => signal(
                "mmap_exec",
                Ids::default(),
                None,
                Some(a[2]),
                Some(format!("len={} prot={:#x} flags={:#x}", a[1], a[2], a[3])),
            ),
            nr::MPROTECT => signal(
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
}

/// A TCP state change as a `net` row. It is not attributed to a process: the kernel changes
/// state wherever it runs (often in softirq context), so the current task says nothing about
/// the socket's owner.
pub fn tcp_state_row(ev: &TcpStateEvent, mut id: RowIdentity) -> NetRow {
    let state = |s: i32| {
        usize::try_from(s)
            .ok()
            .and_then(quarry_store::schema::tcp_state_name)
            .unwrap_or("UNKNOWN")
    };
    let (family, addr): (&str, fn(&[u8; 16]) -> String) = if ev.family == 10 {
        ("inet6", |a| std::net::Ipv6Addr::from(*a).to_string())
    } else {
        ("inet", |a| {
            std::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string()
        })
    };
    (id.pid, id.tid, id.cgroup_id) = (0, 0, 0);
    id.comm = String::new();
    NetRow {
        id: Some(id),
        event: "tcp_state",
        family: Some(family.into()),
        protocol: Some(match ev.protocol {
            6 => "tcp",
            132 => "sctp",
            262 => "mptcp",
            _ => "other",
        }),
        local_addr: Some(addr(&ev.saddr)),
        local_port: Some(ev.sport),
        remote_addr: Some(addr(&ev.daddr)),
        remote_port: Some(ev.dport),
        old_state: Some(state(ev.old_state)),
        new_state: Some(state(ev.new_state)),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
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
        let Some(CallRow::Process(_, facts)) =
            c.call(&call(99, nr::MOUNT, [0; 6], 0, b"", b""), id())
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
}
