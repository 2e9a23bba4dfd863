//! What a responder reads beside the images, taken from /proc while the container runs: the
//! process tree, each process's command line, environment, credentials, namespaces, open files
//! and sockets, and the container's mounts and network tables.
//!
//! CRIU's images hold all of this too, but only CRIU's tools read them; these files are plain
//! JSON and text, readable by anyone with the case directory.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// One open file descriptor.
#[derive(Debug, Clone, Serialize)]
pub struct Fd {
    pub fd: i32,
    /// Where the link points: a path, `socket:[ino]`, `pipe:[ino]`, `anon_inode:...`.
    pub target: String,
    pub flags: Option<String>,
    pub pos: Option<u64>,
    /// The mount the file is on, by id in the host's view (for CRIU's external files).
    pub mnt_id: Option<u32>,
    pub inode: Option<u64>,
    pub regular_file: bool,
}

/// One process of the container.
#[derive(Debug, Clone, Serialize)]
pub struct Process {
    pub pid: i32,
    pub ppid: i32,
    /// Pid inside the container's pid namespace.
    pub ns_pid: Option<i32>,
    pub comm: String,
    pub state: String,
    /// Start time, clock ticks since boot (with pid, the process key).
    pub start_ticks: u64,
    pub cmdline: Vec<String>,
    pub environ: Vec<String>,
    pub exe: Option<String>,
    pub cwd: Option<String>,
    pub uid: Option<String>,
    pub gid: Option<String>,
    pub cap_eff: Option<String>,
    pub threads: u32,
    pub rss_bytes: u64,
    pub cgroup: String,
    pub namespaces: BTreeMap<String, u64>,
    pub fds: Vec<Fd>,
}

fn read(p: impl AsRef<Path>) -> Option<String> {
    fs::read_to_string(p).ok()
}

fn nul_list(p: &Path) -> Vec<String> {
    fs::read(p)
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// (ppid, comm, state, start ticks, threads, rss pages) from /proc/PID/stat.
fn stat(pid: i32) -> Option<(i32, String, String, u64, u32, u64)> {
    let s = read(format!("/proc/{pid}/stat"))?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s[open + 1..close].to_string();
    let rest: Vec<&str> = s[close + 2..].split_whitespace().collect();
    Some((
        rest.get(1)?.parse().ok()?,
        comm,
        rest.first()?.to_string(),
        rest.get(19)?.parse().ok()?,
        rest.get(17)?.parse().ok()?,
        rest.get(21)?.parse().ok()?,
    ))
}

/// `init` and every descendant, parents before children.
pub fn tree(init: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if let Some((ppid, ..)) = stat(pid) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = vec![init];
    let mut i = 0;
    while i < out.len() {
        let mut kids = children.get(&out[i]).cloned().unwrap_or_default();
        kids.sort_unstable();
        out.extend(kids);
        i += 1;
    }
    out
}

/// Everything about one process; None when it has exited meanwhile.
pub fn process(pid: i32) -> Option<Process> {
    let (ppid, comm, state, start_ticks, threads, rss_pages) = stat(pid)?;
    let base = PathBuf::from(format!("/proc/{pid}"));
    let status = read(base.join("status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
    };
    let ns_pid = field("NSpid:").and_then(|v| v.split(' ').next_back()?.parse().ok());
    let link = |p: &str| {
        fs::read_link(base.join(p))
            .ok()
            .map(|l| l.display().to_string())
    };
    let mut namespaces = BTreeMap::new();
    for ns in ["cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts"] {
        if let Ok(m) = fs::metadata(base.join("ns").join(ns)) {
            namespaces.insert(ns.to_string(), m.ino());
        }
    }
    Some(Process {
        pid,
        ppid,
        ns_pid,
        comm,
        state,
        start_ticks,
        cmdline: nul_list(&base.join("cmdline")),
        environ: nul_list(&base.join("environ")),
        exe: link("exe"),
        cwd: link("cwd"),
        uid: field("Uid:"),
        gid: field("Gid:"),
        cap_eff: field("CapEff:"),
        threads,
        rss_bytes: rss_pages * page_size(),
        cgroup: read(base.join("cgroup")).unwrap_or_default(),
        namespaces,
        fds: fds(pid),
    })
}

pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v > 0 { v as u64 } else { 4096 }
}

fn fds(pid: i32) -> Vec<Fd> {
    let dir = PathBuf::from(format!("/proc/{pid}/fd"));
    let mut out = Vec::new();
    for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
        let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(target) = fs::read_link(e.path()) else {
            continue;
        };
        let info = read(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
        let get = |k: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
        };
        let meta = fs::metadata(e.path()).ok();
        out.push(Fd {
            fd,
            target: target.display().to_string(),
            flags: get("flags:"),
            pos: get("pos:").and_then(|v| v.parse().ok()),
            mnt_id: get("mnt_id:").and_then(|v| v.parse().ok()),
            inode: meta.as_ref().map(|m| m.ino()),
            regular_file: meta.as_ref().is_some_and(|m| m.is_file()),
        });
    }
    out.sort_by_key(|f| f.fd);
    out
}

/// A socket of the container's network namespace, with the processes holding it.
#[derive(Debug, Clone, Serialize)]
pub struct Socket {
    pub proto: String,
    pub local: String,
    pub remote: String,
    pub state: String,
    pub inode: u64,
    /// `pid:fd` of every holder in the container.
    pub holders: Vec<String>,
}

/// The inet sockets of the network namespace `pid` is in, from /proc/PID/net/{tcp,udp}{,6}.
pub fn sockets(pid: i32, processes: &[Process]) -> Vec<Socket> {
    let mut holders: HashMap<u64, Vec<String>> = HashMap::new();
    for p in processes {
        for f in &p.fds {
            if let Some(ino) = f
                .target
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .and_then(|s| s.parse().ok())
            {
                holders
                    .entry(ino)
                    .or_default()
                    .push(format!("{}:{}", p.pid, f.fd));
            }
        }
    }
    let mut out = Vec::new();
    for proto in ["tcp", "tcp6", "udp", "udp6"] {
        let Some(text) = read(format!("/proc/{pid}/net/{proto}")) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                continue;
            }
            let st = u8::from_str_radix(f[3], 16).unwrap_or(0) as usize;
            let inode: u64 = f[9].parse().unwrap_or(0);
            out.push(Socket {
                proto: proto.into(),
                local: hex_addr(f[1]),
                remote: hex_addr(f[2]),
                state: if proto.starts_with("tcp") {
                    quarry_store::schema::tcp_state_name(st)
                        .unwrap_or("?")
                        .to_string()
                } else {
                    format!("{st:#x}")
                },
                inode,
                holders: holders.get(&inode).cloned().unwrap_or_default(),
            });
        }
    }
    out
}

/// `0100007F:1F90` as `127.0.0.1:8080` (IPv6 in the kernel's word order, as 8 groups).
fn hex_addr(s: &str) -> String {
    let Some((a, p)) = s.split_once(':') else {
        return s.to_string();
    };
    let port = u16::from_str_radix(p, 16).unwrap_or(0);
    let bytes: Vec<u8> = (0..a.len() / 2)
        .filter_map(|i| u8::from_str_radix(&a[2 * i..2 * i + 2], 16).ok())
        .collect();
    match bytes.len() {
        4 => format!("{}.{}.{}.{}:{port}", bytes[3], bytes[2], bytes[1], bytes[0]),
        16 => {
            let mut b = [0u8; 16];
            for w in 0..4 {
                for i in 0..4 {
                    b[w * 4 + i] = bytes[w * 4 + 3 - i];
                }
            }
            format!("[{}]:{port}", std::net::Ipv6Addr::from(b))
        }
        _ => s.to_string(),
    }
}

/// The process tree as indented text, for people.
pub fn tree_text(processes: &[Process]) -> String {
    let mut out = String::new();
    let pids: std::collections::HashSet<i32> = processes.iter().map(|p| p.pid).collect();
    fn walk(p: &Process, all: &[Process], depth: usize, out: &mut String) {
        out.push_str(&format!(
            "{}{} (ns pid {}) {} [{}]\n",
            "  ".repeat(depth),
            p.pid,
            p.ns_pid.map_or("?".into(), |n| n.to_string()),
            if p.cmdline.is_empty() {
                p.comm.clone()
            } else {
                p.cmdline.join(" ")
            },
            p.state
        ));
        for c in all.iter().filter(|c| c.ppid == p.pid) {
            walk(c, all, depth + 1, out);
        }
    }
    for root in processes.iter().filter(|p| !pids.contains(&p.ppid)) {
        walk(root, processes, 0, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_decode() {
        assert_eq!(hex_addr("0100007F:1F90"), "127.0.0.1:8080");
        assert_eq!(
            hex_addr("00000000000000000000000001000000:0016"),
            "[::1]:22"
        );
    }

    #[test]
    fn own_process_is_read() {
        let me = std::process::id() as i32;
        let p = process(me).unwrap();
        assert_eq!(p.pid, me);
        assert!(!p.cmdline.is_empty());
        assert!(p.fds.iter().any(|f| f.fd == 0));
        assert!(tree(me).starts_with(&[me]));
    }
}
