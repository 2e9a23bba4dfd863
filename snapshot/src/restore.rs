//! Bringing a snapshot's process tree back, isolated, for analysis away from production.
//!
//! The case is verified against its manifest first (altered evidence is refused). The tree is
//! restored onto a *copy* of the container's root filesystem with the case's changed files laid
//! over it; in a new network namespace with no way out (loopback, and the local addresses of
//! its TCP connections on a veth whose peer has no address: the connections come back
//! ESTABLISHED and whatever they send is dropped); in a new pid namespace when the container had
//! one; with host bind mounts replaced by the case's copies (small files such as /etc/hosts) or
//! empty placeholders, unless the analyst binds them explicitly. Files the runtime held outside
//! the container (its log as stdout) become files of the restore directory.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::{RestorePlan, SnapshotError, case, criu};

/// How to restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Directory for the restored root and logs; `<case>.restore-<time>` when None.
    pub workdir: Option<PathBuf>,
    /// Root filesystem to copy instead of the one recorded in the case.
    pub rootfs: Option<PathBuf>,
    /// Host paths for external mounts, by mount point inside the container.
    pub binds: Vec<(String, PathBuf)>,
    pub criu: Option<PathBuf>,
}

/// A restored tree.
#[derive(Debug, Clone, Serialize)]
pub struct Restored {
    /// Host pid of the restored root process.
    pub pid: i32,
    pub workdir: PathBuf,
    pub root: PathBuf,
    pub log: PathBuf,
    /// Mount points given an empty placeholder (no host source given, no copy in the case).
    pub placeholders: Vec<String>,
    /// What the analyst should know about this restore.
    pub notes: Vec<String>,
    pub restore_ms: f64,
}

fn io_err(p: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |e| SnapshotError::io(p, e)
}

/// Restores the tree of the case at `case_dir`.
pub fn restore(case_dir: &Path, opts: &RestoreOptions) -> Result<Restored, SnapshotError> {
    let problems = case::verify(case_dir)?;
    if !problems.is_empty() {
        return Err(SnapshotError::Tampered {
            path: case_dir.to_path_buf(),
            problems,
        });
    }
    let plan_path = case_dir.join("restore.json");
    let plan: RestorePlan =
        serde_json::from_str(&fs::read_to_string(&plan_path).map_err(io_err(&plan_path))?)
            .map_err(|e| SnapshotError::BadCase {
                path: plan_path.clone(),
                reason: e.to_string(),
            })?;
    let criu_path = criu::find_criu(opts.criu.as_deref())?;
    criu::check_version(&criu_path)?;

    let workdir = opts.workdir.clone().unwrap_or_else(|| {
        let mut s = case_dir.as_os_str().to_owned();
        s.push(format!(
            ".restore-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
        ));
        PathBuf::from(s)
    });
    if workdir.exists() {
        return Err(SnapshotError::BadCase {
            path: workdir,
            reason: "the restore directory exists already; choose another --workdir".into(),
        });
    }
    fs::create_dir_all(&workdir).map_err(io_err(&workdir))?;

    // A private copy of the root filesystem, with the changes as they were at checkpoint time.
    let source = opts
        .rootfs
        .clone()
        .or(plan.rootfs.clone())
        .filter(|p| p.is_dir())
        .ok_or_else(|| SnapshotError::BadCase {
            path: case_dir.to_path_buf(),
            reason: "the container's root filesystem recorded in the case is gone; pass a copy \
                     of it with --rootfs"
                .into(),
        })?;
    let root = workdir.join("root");
    let out = Command::new("cp")
        .arg("-a")
        .arg("--reflink=auto")
        .arg(&source)
        .arg(&root)
        .output()
        .map_err(io_err(&root))?;
    if !out.status.success() {
        return Err(SnapshotError::io(
            &root,
            io::Error::other(format!(
                "copying {}: {}",
                source.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        ));
    }
    lay_changes(case_dir, &plan, &root)?;

    // Host-side resources the images refer to.
    let mut inherit: Vec<OwnedFd> = Vec::new();
    let mut o = criu::rpc::Criu_opts::new();
    let ns = fresh_netns().map_err(io_err(Path::new("/proc/thread-self/ns/net")))?;
    dead_end_network(&ns, &plan.tcp_local_addrs)?;
    let mut notes: Vec<String> = Vec::new();
    let run_in = if plan.net_external {
        let mut i = criu::rpc::Inherit_fd::new();
        i.set_key("extRootNetNS".into());
        i.set_fd(ns.as_raw_fd());
        o.inherit_fd.push(i);
        None
    } else {
        // The container was on the host's network: CRIU itself runs in the new namespace, so
        // the tree comes back there and not on the host's network.
        notes.push(
            "the container shared the host's network namespace; the tree was restored into a new \
             one with no way out"
                .into(),
        );
        Some(ns.as_raw_fd())
    };
    let stdio = workdir.join("external-files");
    for f in &plan.external_files {
        fs::create_dir_all(&stdio).map_err(io_err(&stdio))?;
        let file = if f.mode & libc::S_IFMT == libc::S_IFREG {
            let p = stdio.join(format!("pid{}-fd{}", f.pid, f.fd));
            let file = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(f.mode & 0o7777)
                .open(&p)
                .map_err(io_err(&p))?;
            // CRIU checks the mode it recorded; the umask must not change it.
            fs::set_permissions(&p, fs::Permissions::from_mode(f.mode & 0o7777))
                .map_err(io_err(&p))?;
            file
        } else {
            fs::OpenOptions::new()
                .write(true)
                .open("/dev/null")
                .map_err(io_err(Path::new("/dev/null")))?
        };
        let fd: OwnedFd = file.into();
        let mut i = criu::rpc::Inherit_fd::new();
        i.set_key(f.key.clone());
        i.set_fd(fd.as_raw_fd());
        o.inherit_fd.push(i);
        inherit.push(fd);
    }
    let mut placeholders = Vec::new();
    let holders = workdir.join("placeholders");
    for m in &plan.external_mounts {
        let given = opts
            .binds
            .iter()
            .find(|(k, _)| *k == m.mount_point)
            .map(|(_, v)| v.clone());
        // cgroup v1 directories are read-only views of the container's own cgroup: harmless.
        let host = given.or_else(|| {
            (m.fstype == "cgroup")
                .then(|| m.host_path.clone().filter(|p| p.exists()))
                .flatten()
        });
        let val = match (host, &m.copy) {
            (Some(h), _) => h,
            (None, Some(copy)) => {
                // A writable copy of the case's copy: the case stays untouched.
                fs::create_dir_all(&holders).map_err(io_err(&holders))?;
                let p = holders.join(m.mount_point.trim_start_matches('/').replace('/', "_"));
                fs::copy(case_dir.join(copy), &p).map_err(io_err(&p))?;
                fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).map_err(io_err(&p))?;
                p
            }
            (None, None) => {
                fs::create_dir_all(&holders).map_err(io_err(&holders))?;
                let p = holders.join(m.mount_point.trim_start_matches('/').replace('/', "_"));
                if m.is_dir {
                    fs::create_dir_all(&p).map_err(io_err(&p))?;
                } else {
                    fs::write(&p, "").map_err(io_err(&p))?;
                }
                placeholders.push(m.mount_point.clone());
                p
            }
        };
        let mut e = criu::rpc::Ext_mount_map::new();
        e.set_key(m.mount_point.clone());
        e.set_val(val.display().to_string());
        o.ext_mnt.push(e);
    }

    let images_dir = case_dir.join("images");
    let images = fs::File::open(&images_dir).map_err(io_err(&images_dir))?;
    let work = fs::File::open(&workdir).map_err(io_err(&workdir))?;
    o.set_images_dir_fd(images.as_raw_fd());
    o.set_work_dir_fd(work.as_raw_fd());
    o.set_log_level(4);
    o.set_log_file("restore.log".into());
    o.set_root(root.display().to_string());
    o.set_tcp_established(true);
    o.set_ext_unix_sk(true);
    o.set_file_locks(true);
    // The restored tree stays in the restoring process's cgroup, never the production one.
    o.set_manage_cgroups(true);
    o.set_manage_cgroups_mode(criu::rpc::Criu_cg_mode::IGNORE);
    o.set_network_lock(if plan.network_lock == "iptables" {
        criu::rpc::Criu_network_lock_method::IPTABLES
    } else {
        criu::rpc::Criu_network_lock_method::NFTABLES
    });
    let mut fds: Vec<RawFd> = inherit.iter().map(|f| f.as_raw_fd()).collect();
    if plan.net_external {
        fds.push(ns.as_raw_fd());
    }
    let t = std::time::Instant::now();
    let outcome = criu::request(
        &criu_path,
        criu::rpc::Criu_req_type::RESTORE,
        o,
        &fds,
        run_in,
        &mut |_| {},
    );
    let restore_ms = t.elapsed().as_secs_f64() * 1000.0;
    let log = workdir.join("restore.log");
    let outcome = outcome.map_err(|e| SnapshotError::Criu {
        what: "the CRIU restore".into(),
        message: e.to_string(),
        log: criu::log_errors(&log),
    })?;
    if !outcome.response.success() {
        return Err(SnapshotError::Criu {
            what: "the CRIU restore".into(),
            message: criu::failure(&outcome.response),
            log: criu::log_errors(&log),
        });
    }
    Ok(Restored {
        pid: outcome.response.restore.pid(),
        workdir,
        root,
        log,
        placeholders,
        notes,
        restore_ms,
    })
}

/// Lays the case's copies of changed files over the root copy, with their recorded owner and
/// mode (CRIU checks the mode of files the tree has open), and removes what was deleted.
fn lay_changes(case_dir: &Path, plan: &RestorePlan, root: &Path) -> Result<(), SnapshotError> {
    let list = case_dir.join("fs/changes.json");
    let Ok(text) = fs::read_to_string(&list) else {
        return Ok(());
    };
    let set: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| SnapshotError::BadCase {
            path: list.clone(),
            reason: e.to_string(),
        })?;
    for c in set["changes"].as_array().into_iter().flatten() {
        let path = c["path"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches('/');
        if path.is_empty() || path.split('/').any(|p| p == "..") {
            continue;
        }
        let to = root.join(path);
        match c["kind"].as_str() {
            Some("deleted") => {
                let _ = fs::remove_file(&to).or_else(|_| fs::remove_dir_all(&to));
            }
            Some("added_or_modified") if c["sha256"].is_string() => {
                let from = case_dir.join(&plan.fs_changes_dir).join(path);
                if let Some(parent) = to.parent() {
                    fs::create_dir_all(parent).map_err(io_err(parent))?;
                }
                let _ = fs::remove_file(&to);
                fs::copy(&from, &to).map_err(io_err(&from))?;
                let mode = u32::from_str_radix(c["mode"].as_str().unwrap_or("644"), 8)
                    .unwrap_or(0o644)
                    & 0o7777;
                fs::set_permissions(&to, fs::Permissions::from_mode(mode)).map_err(io_err(&to))?;
                let (uid, gid) = (c["uid"].as_u64(), c["gid"].as_u64());
                if let (Some(u), Some(g)) = (uid, gid) {
                    let _ = std::os::unix::fs::chown(&to, Some(u as u32), Some(g as u32));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Gives the new namespace a loopback that is up and, when the tree had TCP connections, a
/// veth pair whose far end has no address: the connections' local addresses and a default
/// route sit on the near end, so TCP repair can reconnect them, and whatever they send dies at
/// the far end. Nothing is connected to any other namespace.
fn dead_end_network(ns: &OwnedFd, addrs: &[String]) -> Result<(), SnapshotError> {
    let ns_path = format!("/proc/{}/fd/{}", std::process::id(), ns.as_raw_fd());
    let ip = |args: &[&str]| -> Result<(), SnapshotError> {
        let out = Command::new("nsenter")
            .arg(format!("--net={ns_path}"))
            .arg("ip")
            .args(args)
            .output()
            .map_err(io_err(Path::new("nsenter")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(SnapshotError::io(
                Path::new("ip"),
                io::Error::other(format!(
                    "ip {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
            ))
        }
    };
    ip(&["link", "set", "lo", "up"])?;
    if addrs.is_empty() {
        return Ok(());
    }
    ip(&[
        "link", "add", "quarry0", "type", "veth", "peer", "name", "quarry1",
    ])?;
    ip(&["link", "set", "quarry0", "up"])?;
    ip(&["link", "set", "quarry1", "up"])?;
    let (mut v4, mut v6) = (false, false);
    for a in addrs {
        if a.contains(':') {
            ip(&[
                "-6",
                "addr",
                "add",
                &format!("{a}/128"),
                "dev",
                "quarry0",
                "nodad",
            ])?;
            v6 = true;
        } else {
            ip(&["addr", "add", &format!("{a}/32"), "dev", "quarry0"])?;
            v4 = true;
        }
    }
    if v4 {
        ip(&["route", "add", "default", "dev", "quarry0"])?;
    }
    if v6 {
        ip(&["-6", "route", "add", "default", "dev", "quarry0"])?;
    }
    Ok(())
}

/// A new network namespace with nothing in it but a loopback that is down, held by an fd.
/// Made on a short-lived thread so this process keeps its own namespace.
fn fresh_netns() -> io::Result<OwnedFd> {
    std::thread::spawn(|| -> io::Result<OwnedFd> {
        // SAFETY: unshare affects only this thread, which ends right after.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let path = c"/proc/thread-self/ns/net";
        // SAFETY: open of a constant C string; the fd is owned below.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just opened and is owned by nothing else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    })
    .join()
    .map_err(|_| io::Error::other("the namespace thread panicked"))?
}
