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
//!
//! The state and the dispatch live here; each syscall family decodes in its own module:
//! [`file`] (opens, creates, renames, links, ownership and mode), [`net`] (sockets and TCP
//! state), [`signals`] (privilege, namespace, module, mount and memory-execution signals).
//! [`paths`] holds the lexical path rules.

mod file;
mod net;
mod paths;
mod signals;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use quarry_recorder_common::{CallEvent, KIND_CALL_ENTRY, SHORT_STR_LEN, UNREADABLE, nr};
use quarry_store::schema::{FileRow, NetRow, ProcessEvent, ProcessFacts, ProcessRow, RowIdentity};

use crate::syscalls::syscall_name;

pub use net::{SockAddr, parse_sockaddr, tcp_state_row};
pub use paths::{join, normalize};
pub use signals::namespace_names;

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

    /// The absolute, lexically normalized form of `path` as `pid` names it (relative to
    /// `dirfd` or the cwd), and how it was resolved.
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

    /// Decodes one syscall into a row of its family's table; None for a syscall no family
    /// decodes.
    fn decode(&mut self, ev: &CallEvent, id: RowIdentity) -> Option<CallRow> {
        let call = Call {
            ev,
            pid: ev.header.pid,
            syscall: syscall_name(ev.nr).unwrap_or("unknown"),
            p1: text(&ev.str1, ev.str1_len),
            p2: text(&ev.str2, ev.str2_len),
            id,
        };
        file::decode(self, &call)
            .or_else(|| net::decode(self, &call))
            .or_else(|| signals::decode(&self.proc, &call))
    }
}

/// One syscall as the family decoders read it.
struct Call<'a> {
    ev: &'a CallEvent,
    id: RowIdentity,
    pid: u32,
    syscall: &'static str,
    /// The first and second string arguments; None when the kernel could not read them.
    p1: Option<String>,
    p2: Option<String>,
}

impl Call<'_> {
    /// Argument `i` as a directory fd (`AT_FDCWD` included).
    fn dirfd(&self, i: usize) -> Option<i32> {
        Some(self.ev.args[i] as i32)
    }

    /// The string arguments as text for a row's detail, `(unreadable)` when unreadable.
    fn s1(&self) -> String {
        self.p1.clone().unwrap_or_else(unreadable)
    }

    fn s2(&self) -> String {
        self.p2.clone().unwrap_or_else(unreadable)
    }

    fn s3(&self) -> String {
        text(&self.ev.str3[..SHORT_STR_LEN], self.ev.str3_len).unwrap_or_else(unreadable)
    }
}

fn unreadable() -> String {
    "(unreadable)".to_string()
}
