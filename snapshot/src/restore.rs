//! Bringing a snapshot's process tree back, isolated, for analysis away from production.
//!
//! Restore works from the case alone. The case is verified against its manifest first (altered
//! evidence is refused), and every path its JSON names (`restore.json`'s changes directory and
//! mount copies, the paths of `fs/changes.json`) must be a plain relative path inside it: a case
//! that points outside itself is refused ([`SnapshotError::OutsideCase`]). The tree comes back
//! on a *copy* of an image directory the analyst names with `--rootfs` (the root filesystem the
//! container started from): the case holds the container's changes, not its image, and the live
//! container's root recorded in the case is never read (the container may have changed it since
//! the snapshot; it is refused when passed as `--rootfs`). The case's changed files are laid
//! over the copy with every operation (create, delete, copy, chmod, chown, symlink) made
//! relative to a directory fd of the restore root without following a symlink
//! ([`crate::beneath`]): the image or the case may hold a symlink anywhere, and where the case
//! says a directory was and the image has a symlink or a file, that entry is replaced by a
//! directory inside the root. Device nodes, fifos and sockets of the case are not created.
//!
//! Setuid and setgid bits of the case's files are stripped (listed in the notes): the restore
//! root is a host directory, and a setuid file the container chose should not exist on the host
//! even inside a 0700 workdir. CRIU checks the mode of files the tree has open, so a tree that
//! held such a file open fails to restore, with CRIU's log line saying which. The image copy
//! keeps its own bits (they are the image's, as on any host holding it).
//!
//! The rest of the environment: a new network namespace with no way out (loopback, and the
//! local addresses of its TCP connections on a veth whose peer has no address: the connections
//! come back ESTABLISHED and whatever they send is dropped); a new pid namespace when the
//! container had one; host bind mounts replaced by the case's copies (small files such as
//! /etc/hosts) or empty placeholders unless the analyst binds them explicitly (a host path
//! recorded in the case is never bound); files the runtime held outside the container (its log
//! as stdout) become files of the restore directory; a cgroup of its own
//! (`quarry-restore-<pid>-<time>` on the cgroup2 hierarchy), which CRIU is started in so the
//! tree stays there, removed by restore when the restore fails and left holding the tree when
//! it succeeds (`echo 1 > CGROUP/cgroup.kill; rmdir CGROUP` ends it). The workdir is 0700.
//!
//! No user namespace: CRIU restores the namespaces recorded in the images and has no option
//! to map a tree checkpointed in the host's user namespace (rootful runc, Podman, Docker) into
//! a new one (`--unprivileged` needs the tree to have been in a user namespace when dumped).
//! Such a tree comes back as root of the host's user namespace, which is why everything above
//! keeps it away from the host.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag};
use nix::unistd::UnlinkatFlags;
use serde::{Deserialize, Serialize};

use crate::{RestorePlan, SnapshotError, beneath, case, criu};

/// How to restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Directory for the restored root and logs; `<case>.restore-<time>` when None.
    pub workdir: Option<PathBuf>,
    /// Image directory the tree comes back on (copied; the root filesystem the container
    /// started from). Required: the case holds only the changes.
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
    /// The cgroup the tree runs in (cgroup2 directory).
    pub cgroup: PathBuf,
    /// Mount points given an empty placeholder (no host source given, no copy in the case).
    pub placeholders: Vec<String>,
    /// What the analyst should know about this restore.
    pub notes: Vec<String>,
    pub restore_ms: f64,
}

fn io_err(p: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |e| SnapshotError::io(p, e)
}

/// One entry of `fs/changes.json`, as restore reads it.
#[derive(Debug, Deserialize)]
struct CaseChange {
    path: String,
    kind: String,
    #[serde(default)]
    mode: String,
    uid: Option<u32>,
    gid: Option<u32>,
    symlink_target: Option<String>,
    sha256: Option<String>,
}

/// The root directory's mode and owner in `fs/changes.json`.
#[derive(Debug, Deserialize)]
struct CaseRoot {
    mode: String,
    uid: u32,
    gid: u32,
}

#[derive(Debug, Deserialize)]
struct CaseChanges {
    #[serde(default)]
    root: Option<CaseRoot>,
    changes: Vec<CaseChange>,
}

/// A verified case whose paths are all inside it.
struct Case {
    dir: PathBuf,
    fd: OwnedFd,
    plan: RestorePlan,
    changes_dir: PathBuf,
    changes: Vec<(PathBuf, CaseChange)>,
    root: Option<CaseRoot>,
    /// Mount copies by index of `plan.external_mounts`.
    mount_copies: Vec<Option<PathBuf>>,
}

/// Restores the tree of the case at `case_dir`.
pub fn restore(case_dir: &Path, opts: &RestoreOptions) -> Result<Restored, SnapshotError> {
    let case = load_case(case_dir)?;
    let image = image_dir(&case, opts)?;
    let criu_path = criu::find_criu(opts.criu.as_deref())?;
    criu::check_version(&criu_path)?;

    let workdir = make_workdir(case_dir, opts)?;
    let mut notes: Vec<String> = Vec::new();
    let root = workdir.join("root");
    copy_image(&image, &root)?;
    let root_fd = beneath::open_trusted_dir(&root).map_err(io_err(&root))?;
    lay_changes(&case, &root_fd, &mut notes).map_err(io_err(&root))?;

    // Host-side resources the images refer to.
    let mut o = criu::rpc::Criu_opts::new();
    let mut spawn = criu::Spawn::default();
    let ns = fresh_netns().map_err(io_err(Path::new("/proc/thread-self/ns/net")))?;
    dead_end_network(&ns, &case.plan.tcp_local_addrs)?;
    if case.plan.net_external {
        let mut i = criu::rpc::Inherit_fd::new();
        i.set_key("extRootNetNS".into());
        i.set_fd(ns.as_raw_fd());
        o.inherit_fd.push(i);
        spawn.inherit.push(ns.as_raw_fd());
    } else {
        // The container was on the host's network: CRIU itself runs in the new namespace, so
        // the tree comes back there and not on the host's network.
        notes.push(
            "the container shared the host's network namespace; the tree was restored into a new \
             one with no way out"
                .into(),
        );
        spawn.netns = Some(ns.as_raw_fd());
    }
    let held = external_files(&case.plan, &workdir, &mut o, &mut notes)?;
    spawn.inherit.extend(held.iter().map(|f| f.as_raw_fd()));
    let placeholders = external_mounts(&case, opts, &workdir, &mut o)?;

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
    // The restored tree stays in CRIU's cgroup (ours), never the production one.
    o.set_manage_cgroups(true);
    o.set_manage_cgroups_mode(criu::rpc::Criu_cg_mode::IGNORE);
    o.set_network_lock(if case.plan.network_lock == "iptables" {
        criu::rpc::Criu_network_lock_method::IPTABLES
    } else {
        criu::rpc::Criu_network_lock_method::NFTABLES
    });
    let mut cgroup = RestoreCgroup::create()?;
    spawn.cgroup_procs = Some(
        std::ffi::CString::new(cgroup.dir.join("cgroup.procs").as_os_str().as_bytes())
            .map_err(|e| SnapshotError::io(&cgroup.dir, io::Error::other(e)))?,
    );
    let t = std::time::Instant::now();
    let outcome = criu::request(
        &criu_path,
        criu::rpc::Criu_req_type::RESTORE,
        o,
        &spawn,
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
    cgroup.keep = true;
    Ok(Restored {
        pid: outcome.response.restore.pid(),
        workdir,
        root,
        log,
        cgroup: cgroup.dir.clone(),
        placeholders,
        notes,
        restore_ms,
    })
}

/// Verifies the case, reads its JSON and checks every path it names stays inside it.
fn load_case(case_dir: &Path) -> Result<Case, SnapshotError> {
    let problems = case::verify(case_dir)?;
    if !problems.is_empty() {
        return Err(SnapshotError::Tampered {
            path: case_dir.to_path_buf(),
            problems,
        });
    }
    let fd = beneath::open_trusted_dir(case_dir).map_err(io_err(case_dir))?;
    let plan_path = case_dir.join("restore.json");
    let plan: RestorePlan =
        read_json(&fd, case_dir, "restore.json")?.ok_or_else(|| SnapshotError::BadCase {
            path: plan_path.clone(),
            reason: "restore.json is missing".into(),
        })?;
    let outside = |field: &str, value: &str| SnapshotError::OutsideCase {
        path: plan_path.clone(),
        field: field.into(),
        value: value.into(),
    };
    let changes_dir = beneath::plain_relative(&plan.fs_changes_dir)
        .filter(|_| !plan.fs_changes_dir.starts_with('/'))
        .ok_or_else(|| outside("fs_changes_dir", &plan.fs_changes_dir))?;
    let mut mount_copies = Vec::new();
    for (i, m) in plan.external_mounts.iter().enumerate() {
        if beneath::plain_relative(&m.mount_point).is_none() || !m.mount_point.starts_with('/') {
            return Err(outside(
                &format!("external_mounts[{i}].mount_point"),
                &m.mount_point,
            ));
        }
        mount_copies.push(match &m.copy {
            Some(c) => Some(
                beneath::plain_relative(c)
                    .filter(|_| !c.starts_with('/'))
                    .ok_or_else(|| outside(&format!("external_mounts[{i}].copy"), c))?,
            ),
            None => None,
        });
    }
    let list_path = case_dir.join("fs/changes.json");
    let mut changes = Vec::new();
    let mut root = None;
    if let Some(set) = read_json::<CaseChanges>(&fd, case_dir, "fs/changes.json")? {
        root = set.root;
        for (i, c) in set.changes.into_iter().enumerate() {
            let rel =
                beneath::plain_relative(&c.path).ok_or_else(|| SnapshotError::OutsideCase {
                    path: list_path.clone(),
                    field: format!("changes[{i}].path"),
                    value: c.path.clone(),
                })?;
            changes.push((rel, c));
        }
    }
    Ok(Case {
        dir: case_dir.to_path_buf(),
        fd,
        plan,
        changes_dir,
        changes,
        root,
        mount_copies,
    })
}

/// Reads a JSON file of the case, opened below the case without following a symlink; None
/// when it is not there.
fn read_json<T: serde::de::DeserializeOwned>(
    case_fd: &OwnedFd,
    case_dir: &Path,
    rel: &str,
) -> Result<Option<T>, SnapshotError> {
    let path = case_dir.join(rel);
    let fd = match beneath::open(case_fd, Path::new(rel), OFlag::O_RDONLY, 0) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SnapshotError::io(&path, e)),
    };
    let mut text = String::new();
    io::Read::read_to_string(&mut fs::File::from(fd), &mut text).map_err(io_err(&path))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| SnapshotError::BadCase {
            path,
            reason: e.to_string(),
        })
}

/// The image directory to copy: the analyst's `--rootfs`, never the live root in the case.
fn image_dir(case: &Case, opts: &RestoreOptions) -> Result<PathBuf, SnapshotError> {
    let given = opts
        .rootfs
        .as_ref()
        .ok_or_else(|| SnapshotError::RootfsNeeded {
            case: case.dir.clone(),
            recorded: case.plan.rootfs.clone(),
        })?;
    // The analyst's own path: following its symlinks is what they asked for.
    let image = fs::canonicalize(given).map_err(io_err(given))?;
    let md = fs::metadata(&image).map_err(io_err(&image))?;
    if !md.is_dir() {
        return Err(SnapshotError::io(
            &image,
            io::Error::other("--rootfs must be a directory (the image's root filesystem)"),
        ));
    }
    if let Some(live) = case.plan.rootfs.as_ref().and_then(|p| fs::metadata(p).ok())
        && live.dev() == md.dev()
        && live.ino() == md.ino()
    {
        return Err(SnapshotError::LiveRootfs { path: image });
    }
    Ok(image)
}

/// A new workdir, 0700 from its creation (the umask can only take bits away).
fn make_workdir(case_dir: &Path, opts: &RestoreOptions) -> Result<PathBuf, SnapshotError> {
    let workdir = opts.workdir.clone().unwrap_or_else(|| {
        let mut s = case_dir.as_os_str().to_owned();
        s.push(format!(
            ".restore-{}",
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
        ));
        PathBuf::from(s)
    });
    if workdir.symlink_metadata().is_ok() {
        return Err(SnapshotError::BadCase {
            path: workdir,
            reason: "the restore directory exists already; choose another --workdir".into(),
        });
    }
    if let Some(parent) = workdir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&workdir)
        .map_err(io_err(&workdir))?;
    Ok(workdir)
}

/// Copies the image directory to `root` (a new name in the private workdir). `cp -a` copies
/// symlinks as symlinks; `--` ends its options before the paths.
fn copy_image(image: &Path, root: &Path) -> Result<(), SnapshotError> {
    let out = Command::new("cp")
        .args(["-a", "--reflink=auto", "--"])
        .arg(image)
        .arg(root)
        .output()
        .map_err(io_err(root))?;
    if !out.status.success() {
        return Err(SnapshotError::io(
            root,
            io::Error::other(format!(
                "copying {}: {}",
                image.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        ));
    }
    Ok(())
}

/// Lays the case's changes over the root copy, in the case's order (parents first): changed
/// files with their recorded owner and mode, setuid/setgid stripped (CRIU checks the mode of
/// files the tree has open); directories and symlinks as recorded; deletions removed. Nothing
/// is followed: every name is resolved below `root` with no symlink on the way.
fn lay_changes(case: &Case, root: &OwnedFd, notes: &mut Vec<String>) -> io::Result<()> {
    let (mut stripped, mut replaced, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    if let Some(r) = &case.root {
        let perm = u32::from_str_radix(&r.mode, 8).unwrap_or(0o40755) & 0o1777;
        nix::unistd::fchown(
            root,
            Some(nix::unistd::Uid::from_raw(r.uid)),
            Some(nix::unistd::Gid::from_raw(r.gid)),
        )?;
        nix::sys::stat::fchmod(root, Mode::from_bits_truncate(perm))?;
    }
    for (rel, c) in &case.changes {
        let (parent_rel, name) = beneath::split(rel);
        let parent = ensure_dir(root, parent_rel, &mut replaced)?;
        let recorded = u32::from_str_radix(&c.mode, 8).unwrap_or(0o100644);
        let perm = recorded & 0o7777;
        if perm & 0o6000 != 0 && c.kind != "directory" {
            stripped.push(c.path.clone());
        }
        let perm = Mode::from_bits_truncate(perm & !0o6000);
        let owner = (
            c.uid.map(nix::unistd::Uid::from_raw),
            c.gid.map(nix::unistd::Gid::from_raw),
        );
        match c.kind.as_str() {
            "deleted" => remove_at(&parent, name)?,
            "directory" => {
                let d = ensure_dir(&parent, Path::new(name), &mut replaced)?;
                nix::unistd::fchown(&d, owner.0, owner.1)?;
                nix::sys::stat::fchmod(&d, perm)?;
            }
            "added_or_modified" if c.sha256.is_some() => {
                let from =
                    beneath::open(&case.fd, &case.changes_dir.join(rel), OFlag::O_RDONLY, 0)?;
                remove_at(&parent, name)?;
                let to = beneath::open(
                    &parent,
                    Path::new(name),
                    OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL,
                    0o600,
                )?;
                let (mut from, mut to) = (fs::File::from(from), fs::File::from(to));
                io::copy(&mut from, &mut to)?;
                // Owner first: chown clears setuid bits, chmod then sets the mode as meant.
                nix::unistd::fchown(&to, owner.0, owner.1)?;
                nix::sys::stat::fchmod(&to, perm)?;
            }
            "symlink" => {
                let Some(target) = &c.symlink_target else {
                    continue;
                };
                remove_at(&parent, name)?;
                // A symlink is data here: it is created, never followed (the tree resolves it
                // inside its own root).
                nix::unistd::symlinkat(target.as_str(), &parent, name)?;
                nix::unistd::fchownat(
                    &parent,
                    name,
                    owner.0,
                    owner.1,
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )?;
            }
            "added_or_modified" => {}
            _ => skipped.push(c.path.clone()),
        }
    }
    if !stripped.is_empty() {
        notes.push(format!(
            "setuid/setgid bits not restored on {} (the case keeps the recorded modes)",
            stripped.join(", ")
        ));
    }
    if !replaced.is_empty() {
        notes.push(format!(
            "the image had a symlink or file where the container had a directory, replaced by a \
             directory: {}",
            replaced.join(", ")
        ));
    }
    if !skipped.is_empty() {
        notes.push(format!(
            "device nodes, fifos and sockets of the case not created: {}",
            skipped.join(", ")
        ));
    }
    Ok(())
}

/// Opens the directory `rel` below `dir`, making each missing component and replacing any
/// that is not a directory (a symlink the image or a crafted case put there) by a new one.
fn ensure_dir(dir: &OwnedFd, rel: &Path, replaced: &mut Vec<String>) -> io::Result<OwnedFd> {
    let mut cur = dir.try_clone()?;
    for comp in rel.components() {
        let name = comp.as_os_str();
        if name == OsStr::new(".") {
            continue;
        }
        match nix::sys::stat::fstatat(&cur, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits() => {}
            Ok(_) => {
                replaced.push(Path::new(name).display().to_string());
                nix::unistd::unlinkat(&cur, name, UnlinkatFlags::NoRemoveDir)?;
                nix::sys::stat::mkdirat(&cur, name, Mode::from_bits_truncate(0o755))?;
            }
            Err(nix::errno::Errno::ENOENT) => {
                nix::sys::stat::mkdirat(&cur, name, Mode::from_bits_truncate(0o755))?;
            }
            Err(e) => return Err(e.into()),
        }
        cur = beneath::open_dir(&cur, Path::new(name))?;
    }
    Ok(cur)
}

/// Removes `name` of `dir` and, for a directory, everything below it, through fds (a symlink
/// is removed, never followed). Nothing there is fine.
fn remove_at(dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
    let st = match nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(nix::errno::Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits() {
        let sub = beneath::open_dir(dir, Path::new(name))?;
        let mut names = Vec::new();
        for e in nix::dir::Dir::from_fd(sub.try_clone()?)?.iter().flatten() {
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(n.to_vec());
            }
        }
        for n in names {
            remove_at(&sub, OsStr::from_bytes(&n))?;
        }
        nix::unistd::unlinkat(dir, name, UnlinkatFlags::RemoveDir)?;
    } else {
        nix::unistd::unlinkat(dir, name, UnlinkatFlags::NoRemoveDir)?;
    }
    Ok(())
}

/// Files the runtime held outside the container: new files of the workdir (no setuid, setgid
/// or sticky bit), or /dev/null for anything but a regular file.
fn external_files(
    plan: &RestorePlan,
    workdir: &Path,
    o: &mut criu::rpc::Criu_opts,
    notes: &mut Vec<String>,
) -> Result<Vec<OwnedFd>, SnapshotError> {
    let mut held = Vec::new();
    let stdio = workdir.join("external-files");
    for f in &plan.external_files {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&stdio)
            .map_err(io_err(&stdio))?;
        let file = if f.mode & libc::S_IFMT == libc::S_IFREG {
            let p = stdio.join(format!("pid{}-fd{}", f.pid, f.fd));
            let mode = f.mode & 0o777;
            if f.mode & 0o7000 != 0 {
                notes.push(format!(
                    "{}: special mode bits of the external file not restored",
                    p.display()
                ));
            }
            let file = fs::OpenOptions::new()
                .create_new(true)
                .append(true)
                .mode(mode)
                .open(&p)
                .map_err(io_err(&p))?;
            // CRIU checks the mode it recorded; the umask must not change it.
            file.set_permissions(fs::Permissions::from_mode(mode))
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
        held.push(fd);
    }
    Ok(held)
}

/// What stands for each host mount: the analyst's `--bind`, else a writable copy of the case's
/// copy, else an empty placeholder (returned by mount point). A host path recorded in the case
/// is never bound: the case may have been written by anyone.
fn external_mounts(
    case: &Case,
    opts: &RestoreOptions,
    workdir: &Path,
    o: &mut criu::rpc::Criu_opts,
) -> Result<Vec<String>, SnapshotError> {
    let mut placeholders = Vec::new();
    let holders = workdir.join("placeholders");
    for (i, m) in case.plan.external_mounts.iter().enumerate() {
        let given = opts
            .binds
            .iter()
            .find(|(k, _)| *k == m.mount_point)
            .map(|(_, v)| v.clone());
        let val = match (given, &case.mount_copies[i]) {
            (Some(h), _) => h,
            (None, copy) => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&holders)
                    .map_err(io_err(&holders))?;
                let p = holders.join(format!(
                    "{i}-{}",
                    m.mount_point.trim_start_matches('/').replace('/', "_")
                ));
                if let Some(copy) = copy {
                    // A writable copy of the case's copy: the case stays untouched.
                    let from = beneath::open(&case.fd, copy, OFlag::O_RDONLY, 0)
                        .map_err(io_err(&case.dir.join(copy)))?;
                    let mut to = fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o644)
                        .open(&p)
                        .map_err(io_err(&p))?;
                    io::copy(&mut fs::File::from(from), &mut to).map_err(io_err(&p))?;
                } else {
                    if m.is_dir {
                        fs::DirBuilder::new()
                            .mode(0o755)
                            .create(&p)
                            .map_err(io_err(&p))?;
                    } else {
                        fs::OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .mode(0o644)
                            .open(&p)
                            .map_err(io_err(&p))?;
                    }
                    placeholders.push(m.mount_point.clone());
                }
                p
            }
        };
        let mut e = criu::rpc::Ext_mount_map::new();
        e.set_key(m.mount_point.clone());
        e.set_val(val.display().to_string());
        o.ext_mnt.push(e);
    }
    Ok(placeholders)
}

/// The restored tree's own cgroup on the cgroup2 hierarchy; removed when dropped unless
/// `keep` (the restore succeeded and the tree lives in it).
struct RestoreCgroup {
    dir: PathBuf,
    keep: bool,
}

impl RestoreCgroup {
    fn create() -> Result<RestoreCgroup, SnapshotError> {
        let fs = quarry_containers::CgroupFs::detect().ok_or_else(|| {
            SnapshotError::io(
                Path::new("/proc/self/mountinfo"),
                io::Error::other("no cgroup2 hierarchy is mounted: the restored tree needs one"),
            )
        })?;
        let dir = fs.mount().join(format!(
            "quarry-restore-{}-{}",
            std::process::id(),
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.6fZ")
        ));
        fs::create_dir(&dir).map_err(io_err(&dir))?;
        Ok(RestoreCgroup { dir, keep: false })
    }
}

impl Drop for RestoreCgroup {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        // Whatever a failed restore left behind goes with the cgroup.
        let _ = fs::write(self.dir.join("cgroup.kill"), "1");
        for _ in 0..100 {
            if fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        log::warn!("could not remove the restore cgroup {}", self.dir.display());
    }
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
            .args(["--", "ip"])
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
        // Addresses come from the case: only literal IPs reach `ip`.
        let Ok(addr) = a.parse::<std::net::IpAddr>() else {
            continue;
        };
        if addr.is_ipv6() {
            ip(&[
                "-6",
                "addr",
                "add",
                &format!("{addr}/128"),
                "dev",
                "quarry0",
                "nodad",
            ])?;
            v6 = true;
        } else {
            ip(&["addr", "add", &format!("{addr}/32"), "dev", "quarry0"])?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn change(path: &str, kind: &str, mode: &str) -> CaseChange {
        CaseChange {
            path: path.into(),
            kind: kind.into(),
            mode: mode.into(),
            uid: Some(nix::unistd::geteuid().as_raw()),
            gid: Some(nix::unistd::getegid().as_raw()),
            symlink_target: None,
            sha256: Some("x".into()),
        }
    }

    #[test]
    fn changes_stay_inside_the_root_and_lose_setuid() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("sentinel"), "untouched").unwrap();
        let case_dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(case_dir.path().join("fs/changes/p")).unwrap();
        fs::write(case_dir.path().join("fs/changes/p/f"), "from case").unwrap();
        fs::write(case_dir.path().join("fs/changes/s"), "suid").unwrap();
        let root = tempfile::tempdir().unwrap();
        // The image has symlinks out where the container had a directory and a file.
        symlink(outside.path(), root.path().join("p")).unwrap();
        symlink(outside.path().join("sentinel"), root.path().join("s")).unwrap();
        symlink(outside.path(), root.path().join("gone")).unwrap();
        let case = Case {
            dir: case_dir.path().to_path_buf(),
            fd: beneath::open_trusted_dir(case_dir.path()).unwrap(),
            plan: serde_json::from_value(serde_json::json!({
                "container_id": "c", "rootfs": null, "root_fstype": "ext4", "net_external": true,
                "external_mounts": [], "external_files": [], "fs_changes_dir": "fs/changes",
                "network_lock": "nftables"
            }))
            .unwrap(),
            changes_dir: "fs/changes".into(),
            root: None,
            changes: vec![
                ("p/f".into(), change("/p/f", "added_or_modified", "100644")),
                ("s".into(), change("/s", "added_or_modified", "104755")),
                (
                    "gone/sentinel".into(),
                    change("/gone/sentinel", "deleted", "0"),
                ),
                ("dev".into(), change("/dev", "char_device", "20644")),
            ],
            mount_copies: vec![],
        };
        let fd = beneath::open_trusted_dir(root.path()).unwrap();
        let mut notes = Vec::new();
        lay_changes(&case, &fd, &mut notes).unwrap();
        assert_eq!(
            fs::read_to_string(outside.path().join("sentinel")).unwrap(),
            "untouched"
        );
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 1);
        assert_eq!(
            fs::read_to_string(root.path().join("p/f")).unwrap(),
            "from case"
        );
        let s = fs::symlink_metadata(root.path().join("s")).unwrap();
        assert!(s.is_file());
        assert_eq!(s.mode() & 0o7777, 0o755, "setuid stripped");
        assert!(!root.path().join("dev").exists());
        assert!(
            notes
                .iter()
                .any(|n| n.contains("setuid") && n.contains("/s")),
            "{notes:?}"
        );
    }
}
