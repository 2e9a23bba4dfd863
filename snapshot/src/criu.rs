//! Talking to CRIU over its RPC (`criu swrk`), with the messages of the `rust-criu` crate.
//!
//! `rust_criu::Criu` answers the version query; dumps and restores are sent here with the same
//! generated `rpc` messages because a container checkpoint needs options its builder does not
//! carry (the network-lock method, cgroup roots, inherited fds for restore) and because the
//! notifications CRIU sends while the tasks are stopped (`post-dump`) are where the snapshot
//! copies the container's filesystem changes.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use protobuf::{Message, MessageField};
pub use rust_criu::rust_criu_protobuf::rpc;

use crate::SnapshotError;

/// The oldest CRIU that checkpoints on kernels >= 6.13 (vDSO layout change fixed in 4.1).
pub const MIN_VERSION: u32 = 40100;

/// Where CRIU is looked for when no path is given: `$PATH`, then the usual install places.
pub fn find_criu(explicit: Option<&Path>) -> Result<PathBuf, SnapshotError> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(SnapshotError::CriuMissing {
                looked: p.display().to_string(),
            })
        };
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("criu")).collect())
        .unwrap_or_default();
    for d in ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin"] {
        candidates.push(Path::new(d).join("criu"));
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| SnapshotError::CriuMissing {
            looked: "$PATH, /usr/local/sbin, /usr/sbin".into(),
        })
}

/// CRIU's version as major*10000 + minor*100 + sublevel, refused when older than [`MIN_VERSION`].
pub fn check_version(criu: &Path) -> Result<u32, SnapshotError> {
    let mut c = rust_criu::Criu::new_with_criu_path(criu.display().to_string()).map_err(|e| {
        SnapshotError::Criu {
            what: "starting criu".into(),
            message: e.to_string(),
            log: None,
        }
    })?;
    let version = c.get_criu_version().map_err(|e| SnapshotError::Criu {
        what: format!("asking {} for its version", criu.display()),
        message: e.to_string(),
        log: None,
    })?;
    if version < MIN_VERSION {
        return Err(SnapshotError::CriuTooOld {
            path: criu.to_path_buf(),
            found: version_string(version),
        });
    }
    Ok(version)
}

/// `40101` as `4.1.1`.
pub fn version_string(v: u32) -> String {
    format!("{}.{}.{}", v / 10000, v / 100 % 100, v % 100)
}

/// One CRIU notification, with when it arrived.
#[derive(Debug, Clone)]
pub struct Notification {
    pub script: String,
    pub at: Instant,
}

/// What a request returned.
pub struct Outcome {
    pub response: rpc::Criu_resp,
    pub notifications: Vec<Notification>,
}

/// How the `criu swrk` process is started.
#[derive(Debug, Default)]
pub struct Spawn {
    /// fds the CRIU process must have at the same numbers (restore's inherit_fd).
    pub inherit: Vec<RawFd>,
    /// A network namespace fd: CRIU runs in it, and so does what it restores there.
    pub netns: Option<RawFd>,
    /// A `cgroup.procs` file CRIU moves itself into before it starts: what it restores with
    /// `manage_cgroups_mode IGNORE` stays in that cgroup.
    pub cgroup_procs: Option<std::ffi::CString>,
}

/// Sends one request to a fresh `criu swrk` and waits for its answer, acknowledging every
/// notification on the way (after calling `on_notify`, which runs while CRIU waits: during a
/// dump, while the tasks are stopped).
pub fn request(
    criu: &Path,
    kind: rpc::Criu_req_type,
    opts: rpc::Criu_opts,
    spawn: &Spawn,
    on_notify: &mut dyn FnMut(&str),
) -> io::Result<Outcome> {
    let mut sv = [-1; 2];
    // SAFETY: socketpair fills two fds into the array we own.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            sv.as_mut_ptr(),
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nothing else.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) };
    let their_fd = theirs.as_raw_fd();
    let mut keep: Vec<RawFd> = spawn.inherit.clone();
    keep.push(their_fd);
    let netns = spawn.netns;
    let cgroup_procs = spawn.cgroup_procs.clone();
    let mut cmd = Command::new(criu);
    cmd.arg("swrk")
        .arg(their_fd.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    // SAFETY: only async-signal-safe system calls (open, write, close, fcntl, setns) between
    // fork and exec, on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(procs) = &cgroup_procs {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if written != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(ns) = netns
                && libc::setns(ns, libc::CLONE_NEWNET) != 0
            {
                return Err(io::Error::last_os_error());
            }
            for &fd in &keep {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    drop(theirs);

    let mut req = rpc::Criu_req::new();
    req.set_type(kind);
    req.opts = MessageField::some(opts);
    let result = converse(&ours, kind, req, on_notify);
    if result.is_err() {
        let _ = child.kill();
    }
    let _ = child.wait();
    result
}

fn converse(
    sock: &OwnedFd,
    kind: rpc::Criu_req_type,
    req: rpc::Criu_req,
    on_notify: &mut dyn FnMut(&str),
) -> io::Result<Outcome> {
    send(sock, &req.write_to_bytes().map_err(io::Error::other)?)?;
    let mut notifications = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        // SAFETY: recv into a buffer we own, of the length given.
        let n = unsafe {
            libc::recv(
                sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_CMSG_CLOEXEC,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "criu exited without answering (see its log)",
            ));
        }
        let resp =
            rpc::Criu_resp::parse_from_bytes(&buf[..n as usize]).map_err(io::Error::other)?;
        if resp.type_() == rpc::Criu_req_type::NOTIFY {
            let script = resp.notify.script().to_string();
            notifications.push(Notification {
                script: script.clone(),
                at: Instant::now(),
            });
            on_notify(&script);
            let mut ack = rpc::Criu_req::new();
            ack.set_type(rpc::Criu_req_type::NOTIFY);
            ack.set_notify_success(true);
            send(sock, &ack.write_to_bytes().map_err(io::Error::other)?)?;
            continue;
        }
        if resp.type_() != kind && resp.success() {
            return Err(io::Error::other(format!(
                "unexpected CRIU answer {:?} to {kind:?}",
                resp.type_()
            )));
        }
        return Ok(Outcome {
            response: resp,
            notifications,
        });
    }
}

fn send(sock: &OwnedFd, data: &[u8]) -> io::Result<()> {
    // SAFETY: send from a buffer we own, of the length given.
    let n = unsafe { libc::send(sock.as_raw_fd(), data.as_ptr().cast(), data.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// CRIU's own measurements of a dump, from the `stats-dump` image (microseconds).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct DumpStats {
    /// Time to stop every task.
    pub freezing_us: u64,
    /// Time the tasks stayed stopped, from all stopped to resumed (or killed).
    pub frozen_us: u64,
    pub memdump_us: u64,
    pub memwrite_us: u64,
    pub pages_scanned: u64,
    pub pages_written: u64,
}

/// Reads `stats-dump`: a CRIU image (two magics, a little-endian length) holding one
/// `stats_entry { dump_stats_entry dump = 1; }` message, decoded by hand because the crate
/// does not carry CRIU's image protos.
pub fn read_dump_stats(images: &Path) -> Option<DumpStats> {
    let data = std::fs::read(images.join("stats-dump")).ok()?;
    let len = u32::from_le_bytes(data.get(8..12)?.try_into().ok()?) as usize;
    let top = fields(data.get(12..12 + len)?)?;
    let dump = top.iter().find_map(|(f, v)| match (f, v) {
        (1, Field::Bytes(b)) => Some(*b),
        _ => None,
    })?;
    let dump = fields(dump)?;
    let get = |n: u64| {
        dump.iter()
            .find_map(|(f, v)| match (f, v) {
                (f, Field::Varint(x)) if *f == n => Some(*x),
                _ => None,
            })
            .unwrap_or(0)
    };
    Some(DumpStats {
        freezing_us: get(1),
        frozen_us: get(2),
        memdump_us: get(3),
        memwrite_us: get(4),
        pages_scanned: get(5),
        pages_written: get(7),
    })
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(b: &[u8], i: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i)?;
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Some(v);
        }
    }
    None
}

fn fields(b: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let key = varint(b, &mut i)?;
        let field = match key & 7 {
            0 => Field::Varint(varint(b, &mut i)?),
            2 => {
                let len = varint(b, &mut i)? as usize;
                let s = b.get(i..i + len)?;
                i += len;
                Field::Bytes(s)
            }
            1 => {
                i += 8;
                continue;
            }
            5 => {
                i += 4;
                continue;
            }
            _ => return None,
        };
        out.push((key >> 3, field));
    }
    Some(out)
}

/// CRIU's own words for a failed request: its errno when it set one (the log says more).
pub fn failure(resp: &rpc::Criu_resp) -> String {
    match resp.cr_errno() {
        0 => "CRIU reported a failure".into(),
        n => format!(
            "CRIU reported a failure: {}",
            io::Error::from_raw_os_error(n)
        ),
    }
}

/// The last lines of a CRIU log that say what went wrong.
pub fn log_errors(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Error") && !l.contains("RLIMIT_NOFILE"))
        .collect();
    let pick = if errors.is_empty() {
        text.lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect()
    } else {
        errors
            .into_iter()
            .rev()
            .take(6)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
    };
    Some(pick.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_stats_dump() {
        // A real stats-dump written by CRIU 4.1.1 on this kind of machine.
        let bytes = hex::decode(
            "4059105506330957230000000a2108de0110eca50b18db0620ad012830300038224000480050085808600068007000",
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("stats-dump"), &bytes).unwrap();
        let s = read_dump_stats(dir.path()).unwrap();
        assert_eq!(s.freezing_us, 222);
        assert_eq!(s.frozen_us, 185_068);
        assert_eq!(s.pages_written, 34);
    }

    #[test]
    fn versions_print() {
        assert_eq!(version_string(40101), "4.1.1");
        assert_eq!(version_string(31700), "3.17.0");
    }
}
