//! Live CRIU checkpoint of a container, preserved as evidence.
//!
//! [`snapshot`] checkpoints a container's whole process tree through CRIU's RPC (CRIU >= 4.1)
//! and, by default, leaves it running. Beside CRIU's images it keeps what a responder reads
//! without CRIU's tools: the runtime's config, mounts, environment, command lines, open files and
//! sockets, the process tree ([`facts`]), the filesystem changes ([`fschanges`]) and the
//! container's excerpt of the recorded trace ([`trace`]). Everything lands in a new case
//! directory, private to root, whose manifest hashes every file and which is left read-only
//! ([`case`]). The filesystem changes are copied while CRIU has the tasks stopped, without
//! following any name the container could have made a symlink ([`beneath`]). [`restore`]
//! brings the tree back from a case alone, in an isolated environment (a copy of an image
//! directory the analyst gives, a new network namespace with no interfaces up, a cgroup of its
//! own), away from production.
//!
//! Containers need more than a process dump: their network namespace is declared external (it
//! belongs to the runtime; restore hands CRIU a fresh one), host bind mounts are external mounts
//! ([`mounts`]), files the runtime opened outside the container (a log file as stdout) are
//! external files, established TCP connections are kept with TCP repair, and the network is
//! locked while the tasks are frozen.

pub mod baseline;
pub mod beneath;
pub mod case;
pub mod criu;
pub mod drift;
pub mod facts;
pub mod fschanges;
pub mod mounts;
pub mod restore;
pub mod running;
mod text;
pub mod trace;

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use quarry_containers::Container;
use serde::{Deserialize, Serialize};

pub use case::{HashAlg, Mismatch};
pub use restore::{RestoreOptions, Restored, restore};

/// Why a snapshot or restore could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// No CRIU binary was found.
    #[error(
        "CRIU was not found ({looked}); install CRIU >= 4.1 (on Debian 12 `scripts/setup` builds \
         4.1.1 from Debian trixie's source package; Debian 12's own criu 3.17 fails on kernels >= \
         6.13) or pass its path with --criu"
    )]
    CriuMissing { looked: String },

    /// CRIU is older than 4.1.
    #[error(
        "{} is CRIU {found}; snapshots need CRIU >= 4.1 (older versions fail on kernels >= 6.13); \
         install 4.1 or newer (`scripts/setup` builds 4.1.1) or pass its path with --criu",
        path.display()
    )]
    CriuTooOld { path: PathBuf, found: String },

    /// The case directory exists already; evidence is never overwritten.
    #[error(
        "the case directory {} already exists; evidence is never overwritten: choose another \
         --case directory",
        path.display()
    )]
    CaseExists { path: PathBuf },

    /// The filesystem of the case directory has too little room for the images.
    #[error(
        "not enough disk space for the snapshot in {}: about {} MiB needed (process memory, \
         tmpfs contents and changed files), {} MiB available; free space or choose another \
         --case directory",
        path.display(), needed / (1 << 20), available / (1 << 20)
    )]
    NoSpace {
        path: PathBuf,
        needed: u64,
        available: u64,
    },

    /// The container has no running process to checkpoint.
    #[error("container {container} has no running init process to checkpoint")]
    NotRunning { container: String },

    /// CRIU refused or failed; its log says why.
    #[error("{what} failed: {message}{}", log.as_deref().map(|l| format!("\nCRIU log:\n{l}")).unwrap_or_default())]
    Criu {
        what: String,
        message: String,
        log: Option<String>,
    },

    /// A case directory is incomplete or its manifest unreadable.
    #[error("{} is not a usable case: {reason}", path.display())]
    BadCase { path: PathBuf, reason: String },

    /// The case's files do not match its manifest.
    #[error(
        "the case {} does not match its manifest ({} files missing, altered or unlisted: {}); \
         refusing to restore altered evidence",
        path.display(), problems.len(),
        problems.iter().map(|m| format!("{} {}", m.path, m.problem)).collect::<Vec<_>>().join(", ")
    )]
    Tampered {
        path: PathBuf,
        problems: Vec<Mismatch>,
    },

    /// A path in the case's JSON leads outside the case (or is not a plain relative path).
    #[error(
        "{} points outside the case: {field} is {value:?}; a case names only plain relative \
         paths inside itself (no `..`, nothing absolute, no symlink on the way), so this one was \
         altered or written by hand: refusing to restore it",
        path.display()
    )]
    OutsideCase {
        path: PathBuf,
        field: String,
        value: String,
    },

    /// Restore was not given the image directory the tree comes back on.
    #[error(
        "the case {} holds the container's changed files, not its image: pass the root \
         filesystem the container started from with --rootfs DIR (a copy of its image; never the \
         live container's root{}, which the container may have changed since the snapshot)",
        case.display(),
        recorded.as_ref().map(|r| format!(" {}", r.display())).unwrap_or_default()
    )]
    RootfsNeeded {
        case: PathBuf,
        recorded: Option<PathBuf>,
    },

    /// The given --rootfs is the live container's root recorded in the case.
    #[error(
        "--rootfs {} is the container's live root filesystem recorded in the case; the container \
         may have changed it since the snapshot: pass a copy of its image instead",
        path.display()
    )]
    LiveRootfs { path: PathBuf },

    /// Writing the trace excerpt failed.
    #[error("writing the trace excerpt {}: {reason}", path.display())]
    Trace { path: PathBuf, reason: String },

    #[error(transparent)]
    Store(#[from] quarry_store::StoreError),

    #[error("Arrow error")]
    Arrow(#[from] arrow::error::ArrowError),

    /// Any other I/O failure, with its path.
    #[error("I/O error on {}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

impl SnapshotError {
    pub fn io(path: impl AsRef<Path>, source: io::Error) -> Self {
        SnapshotError::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
}

/// How to take a snapshot.
#[derive(Debug, Clone)]
pub struct Options {
    /// New directory for the case (refused when it exists).
    pub case_dir: PathBuf,
    /// Stop the container after the checkpoint instead of leaving it running.
    pub stop: bool,
    /// Trace store to take the container's excerpt from, when it exists.
    pub store: Option<PathBuf>,
    /// CRIU binary; found on $PATH and the usual places when None.
    pub criu: Option<PathBuf>,
    /// For the manifest: the exact command, who ran it, on which host, why.
    pub command: String,
    pub operator: String,
    pub host: String,
    pub reason: Option<String>,
    /// How every file is hashed in the manifest.
    pub hash: HashAlg,
}

/// What happens, for a progress display.
pub enum Progress<'a> {
    /// A new step begins.
    Step(&'a str),
    /// Bytes done of a long step.
    Bytes { done: u64, total: u64 },
}

/// What a snapshot made.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub case_dir: PathBuf,
    /// SHA-256 of manifest.json: pins every file of the case.
    pub manifest_sha256: String,
    pub container_id: String,
    pub container_name: Option<String>,
    pub criu_version: String,
    pub left_running: bool,
    pub timings: Timings,
    pub processes: usize,
    pub images_bytes: u64,
    pub files: usize,
    pub fs_changes: usize,
    pub trace_rows: Vec<(String, usize)>,
    pub warnings: Vec<String>,
}

/// How long things took, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Timings {
    /// Time the container's tasks were stopped: CRIU's own measure from its stats-dump image
    /// (freezing + frozen), or the whole dump request when it wrote none.
    pub frozen_ms: f64,
    /// Part of that spent stopping the tasks.
    pub freezing_ms: f64,
    /// The CRIU dump request, from sending to answer.
    pub dump_ms: f64,
    /// Part of the frozen time spent copying the filesystem changes (and the small files the
    /// runtime bound in) while the tasks were stopped.
    pub fs_copy_ms: f64,
    /// The whole snapshot, checks and hashing included.
    pub total_ms: f64,
}

/// A file the container has open that lives outside its mount namespace (a runtime's log file
/// as stdout): CRIU cannot reopen it by path, so it is external and restore hands in a new one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExternalFile {
    /// CRIU's key: `file[<mnt_id hex>:<inode hex>]`.
    pub key: String,
    pub pid: i32,
    pub fd: i32,
    pub target: String,
    /// st_mode of the file (restore must hand in one of the same type and permissions).
    pub mode: u32,
}

/// What restore needs to know, written into the case as `restore.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestorePlan {
    pub container_id: String,
    /// Host path of the container's root filesystem at checkpoint time: a fact, never read by
    /// restore (it is the live container's, which may have changed since).
    pub rootfs: Option<PathBuf>,
    pub root_fstype: String,
    /// The network namespace was declared external (`extRootNetNS`).
    pub net_external: bool,
    pub external_mounts: Vec<mounts::ExternalMount>,
    pub external_files: Vec<ExternalFile>,
    /// Directory in the case holding copies of the changed files (relative; restore refuses
    /// anything that leads outside the case).
    pub fs_changes_dir: String,
    pub network_lock: String,
    /// Local addresses of the container's TCP connections: restore puts them on a dead-end
    /// interface of the new namespace, because TCP repair reconnects need a route.
    #[serde(default)]
    pub tcp_local_addrs: Vec<String>,
}

/// The default place for a case: `/var/lib/quarry/cases/<name>-<UTC time>`.
pub fn default_case_dir(c: &Container) -> PathBuf {
    PathBuf::from("/var/lib/quarry/cases").join(format!(
        "{}-{}",
        c.display_name(),
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
    ))
}

fn write_json(path: &Path, v: &impl Serialize) -> Result<(), SnapshotError> {
    let text = serde_json::to_string_pretty(v).expect("serialisable");
    write_file(path, (text + "\n").as_bytes())
}

/// A new file of the case, private from its first byte (the umask does not decide).
fn write_file(path: &Path, data: &[u8]) -> Result<(), SnapshotError> {
    use std::io::Write;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(data))
        .map_err(|e| SnapshotError::io(path, e))
}

fn nearest_existing(p: &Path) -> PathBuf {
    let mut p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(p)
    };
    while !p.exists() {
        if !p.pop() {
            return PathBuf::from("/");
        }
    }
    p
}

/// Checkpoints `container` into a new case directory.
///
/// In steps: cheap refusals ([`check_ready`]), what /proc says about the tree ([`gather`]),
/// room for the images, the facts written into a new private case, the CRIU dump with the
/// filesystem changes copied while the tasks are stopped ([`dump`]), then the trace excerpt,
/// `restore.json`, the hashes and the manifest ([`seal`]).
pub fn snapshot(
    container: &Container,
    opts: &Options,
    progress: &mut dyn FnMut(Progress<'_>),
) -> Result<Report, SnapshotError> {
    let started = Instant::now();
    let started_at = chrono::Utc::now();

    progress(Progress::Step(
        "checking CRIU, the case directory and disk space",
    ));
    let (init, criu_path, version_check) = check_ready(container, opts)?;
    progress(Progress::Step(
        "reading the container's processes, files and sockets",
    ));
    let mut g = gather(container, init)?;
    let criu_version = version_check.join().map_err(|_| SnapshotError::Criu {
        what: "asking CRIU for its version".into(),
        message: "the version check panicked".into(),
        log: None,
    })??;
    check_space(&g, &opts.case_dir)?;

    let dir = &opts.case_dir;
    case::create(dir)?;
    write_facts(dir, container, &g)?;
    copy_runtime_files(container, &dir.join("runtime"), &mut g.warnings);

    progress(Progress::Step(if opts.stop {
        "checkpointing with CRIU, copying the filesystem changes while it is stopped (the \
         container stops afterwards)"
    } else {
        "checkpointing with CRIU, copying the filesystem changes while it is stopped (the \
         container keeps running)"
    }));
    let d = dump(container, opts, &criu_path, dir, &mut g)?;

    let mut trace_rows = Vec::new();
    if let Some(store) = opts.store.as_ref().filter(|s| s.is_dir()) {
        progress(Progress::Step(
            "copying the container's trace excerpt from the store",
        ));
        match trace::excerpt(
            store,
            &container.id,
            container.created.as_deref(),
            &dir.join("trace"),
        ) {
            Ok(c) => trace_rows = c,
            Err(e) => g.warnings.push(format!("trace excerpt not taken: {e}")),
        }
    }
    let plan = RestorePlan {
        container_id: container.id.clone(),
        rootfs: g.rootfs.clone(),
        root_fstype: g
            .root
            .as_ref()
            .map(|r| r.fstype.clone())
            .unwrap_or_default(),
        net_external: d.net_external,
        external_mounts: g.ext_mounts.clone(),
        external_files: g.ext_files.clone(),
        fs_changes_dir: "fs/changes".into(),
        network_lock: "nftables".into(),
        tcp_local_addrs: tcp_local_addrs(&g.sockets),
    };
    write_json(&dir.join("restore.json"), &plan)?;

    progress(Progress::Step("hashing every file of the case"));
    let mut timings = Timings {
        frozen_ms: d.frozen_ms,
        freezing_ms: d.freezing_ms,
        dump_ms: d.dump_ms,
        fs_copy_ms: d.fs_copy_ms,
        total_ms: 0.0,
    };
    let sealed = seal(
        dir,
        opts,
        &mut |done, total| progress(Progress::Bytes { done, total }),
        serde_json::json!({
            "tool": "quarry",
            "version": env!("CARGO_PKG_VERSION"),
            "kind": "snapshot",
            "host": opts.host,
            "operator": opts.operator,
            "command": opts.command,
            "reason": opts.reason,
            "started": started_at.to_rfc3339(),
            "container": container,
            "criu": { "path": criu_path, "version": criu::version_string(criu_version) },
            "left_running": !opts.stop,
            "criu_stats": d.stats,
            "warnings": g.warnings,
            "hash": opts.hash,
        }),
        &mut timings,
        started,
    )?;
    timings.total_ms = ms(started.elapsed());

    Ok(Report {
        case_dir: dir.clone(),
        manifest_sha256: sealed.manifest_sha256,
        container_id: container.id.clone(),
        container_name: container.name.clone(),
        criu_version: criu::version_string(criu_version),
        left_running: !opts.stop,
        timings,
        processes: g.pids.len(),
        images_bytes: sealed.images_bytes,
        files: sealed.files + 2,
        fs_changes: d.fs_changes,
        trace_rows,
        warnings: g.warnings,
    })
}

type VersionCheck = std::thread::JoinHandle<Result<u32, SnapshotError>>;

/// Refusals that cost nothing, before anything is written or frozen: an existing case, no
/// running init, no CRIU. CRIU's version is asked on a thread while /proc is read.
fn check_ready(
    container: &Container,
    opts: &Options,
) -> Result<(i32, PathBuf, VersionCheck), SnapshotError> {
    if opts.case_dir.symlink_metadata().is_ok() {
        return Err(SnapshotError::CaseExists {
            path: opts.case_dir.clone(),
        });
    }
    let init = container
        .init_pid
        .filter(|p| Path::new(&format!("/proc/{p}")).exists())
        .ok_or_else(|| SnapshotError::NotRunning {
            container: container.to_string(),
        })?;
    let criu_path = criu::find_criu(opts.criu.as_deref())?;
    let p = criu_path.clone();
    Ok((
        init,
        criu_path,
        std::thread::spawn(move || criu::check_version(&p)),
    ))
}

/// What /proc and the mount tables say about the container before the checkpoint.
struct Gathered {
    init: i32,
    /// The tree below init: what CRIU dumps.
    pids: Vec<i32>,
    processes: Vec<facts::Process>,
    sockets: Vec<facts::Socket>,
    mountinfo_text: String,
    cmounts: Vec<mounts::Mount>,
    proc_root: PathBuf,
    root: Option<mounts::Mount>,
    rootfs: Option<PathBuf>,
    ext_mounts: Vec<mounts::ExternalMount>,
    ext_files: Vec<ExternalFile>,
    /// Where the filesystem changes are, and their size before the checkpoint.
    changes: Option<(fschanges::Source, u64)>,
    warnings: Vec<String>,
}

fn gather(container: &Container, init: i32) -> Result<Gathered, SnapshotError> {
    let mut warnings = Vec::new();
    let pids = facts::tree(init);
    let mut processes: Vec<facts::Process> =
        pids.iter().filter_map(|&p| facts::process(p)).collect();
    // CRIU dumps the tree below the init process; a process entered from outside (runc exec,
    // docker exec) is in the cgroup but not in that tree, and is left out of the images.
    if let Some(fs) = quarry_containers::CgroupFs::detect() {
        let procs = fs::read_to_string(fs.dir(&container.cgroup_path).join("cgroup.procs"))
            .unwrap_or_default();
        let outside: Vec<i32> = procs
            .lines()
            .filter_map(|p| p.parse().ok())
            .filter(|p| !pids.contains(p))
            .collect();
        if !outside.is_empty() {
            warnings.push(format!(
                "processes {outside:?} are in the container's cgroup but not below its init \
                 process (entered with exec?): they are described in facts/ but not in the \
                 images, and CRIU did not stop them while the filesystem changes were copied"
            ));
            processes.extend(outside.iter().filter_map(|&p| facts::process(p)));
        }
    }
    let sockets = facts::sockets(init, &processes);
    let mountinfo_text = fs::read_to_string(format!("/proc/{init}/mountinfo"))
        .map_err(|e| SnapshotError::io(format!("/proc/{init}/mountinfo"), e))?;
    let cmounts = mounts::parse_mountinfo(&mountinfo_text);
    let hmounts =
        mounts::parse_mountinfo(&fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
    let proc_root = PathBuf::from(format!("/proc/{init}/root"));
    let root = mounts::root_mount(&cmounts).cloned();
    let rootfs = root
        .as_ref()
        .and_then(|r| mounts::host_path_of(r, &hmounts));
    let ext_mounts = mounts::externals(&cmounts, &hmounts, &proc_root);
    let ext_files = external_files(&processes, &pids, &cmounts);
    let start_unix = process_start_unix(init).unwrap_or(0);
    let changes = match (&rootfs, &root) {
        (Some(rootfs), Some(root)) => {
            let src = fschanges::Source::new(rootfs, &root.fstype, &root.super_options, start_unix);
            match fschanges::scan(&src) {
                Ok(c) => Some((src, c.bytes)),
                Err(e) => {
                    warnings.push(format!("filesystem changes not taken: {e}"));
                    None
                }
            }
        }
        _ => {
            warnings.push(
                "the container's root filesystem is not visible from the host; filesystem \
                 changes not taken"
                    .into(),
            );
            None
        }
    };
    Ok(Gathered {
        init,
        pids,
        processes,
        sockets,
        mountinfo_text,
        cmounts,
        proc_root,
        root,
        rootfs,
        ext_mounts,
        ext_files,
        changes,
        warnings,
    })
}

/// Files the tree holds open on mounts outside its mount namespace: CRIU's external files.
fn external_files(
    processes: &[facts::Process],
    pids: &[i32],
    cmounts: &[mounts::Mount],
) -> Vec<ExternalFile> {
    let container_mnt_ids: std::collections::HashSet<u32> = cmounts.iter().map(|m| m.id).collect();
    let mut ext_files: Vec<ExternalFile> = Vec::new();
    for p in processes.iter().filter(|p| pids.contains(&p.pid)) {
        for f in &p.fds {
            let (Some(mnt), Some(ino)) = (f.mnt_id, f.inode) else {
                continue;
            };
            if !f.target.starts_with('/') || container_mnt_ids.contains(&mnt) {
                continue;
            }
            let key = format!("file[{mnt:x}:{ino:x}]");
            if ext_files.iter().any(|e| e.key == key) {
                continue;
            }
            let mode = fs::metadata(format!("/proc/{}/fd/{}", p.pid, f.fd))
                .map(|m| m.mode())
                .unwrap_or(0o100644);
            ext_files.push(ExternalFile {
                key,
                pid: p.pid,
                fd: f.fd,
                target: f.target.clone(),
                mode,
            });
        }
    }
    ext_files
}

/// Room for the images: resident memory of every process (an upper bound: shared pages are
/// counted once per process, CRIU writes them once), tmpfs contents, changed files, slack.
fn check_space(g: &Gathered, case_dir: &Path) -> Result<(), SnapshotError> {
    let rss: u64 = g.processes.iter().map(|p| p.rss_bytes).sum();
    let tmpfs: u64 = g
        .cmounts
        .iter()
        .filter(|m| m.fstype == "tmpfs")
        .filter_map(|m| case::used_bytes(&g.proc_root.join(m.mount_point.trim_start_matches('/'))))
        .sum();
    let needed = rss + tmpfs + g.changes.as_ref().map_or(0, |c| c.1) + (16 << 20);
    let anchor = nearest_existing(case_dir);
    match case::free_bytes(&anchor) {
        Some(available) if available < needed => Err(SnapshotError::NoSpace {
            path: anchor,
            needed,
            available,
        }),
        _ => Ok(()),
    }
}

/// The facts beside the images: processes, sockets, mounts, the netns's /proc/net tables and
/// the runtime's description of the container.
fn write_facts(dir: &Path, container: &Container, g: &Gathered) -> Result<(), SnapshotError> {
    for sub in ["images", "facts", "runtime"] {
        case::make_dir(&dir.join(sub))?;
    }
    write_json(&dir.join("facts/processes.json"), &g.processes)?;
    write_json(&dir.join("facts/sockets.json"), &g.sockets)?;
    write_file(
        &dir.join("facts/process-tree.txt"),
        facts::tree_text(&g.processes).as_bytes(),
    )?;
    write_file(
        &dir.join("facts/mountinfo.txt"),
        g.mountinfo_text.as_bytes(),
    )?;
    write_json(&dir.join("facts/mounts.json"), &g.cmounts)?;
    for table in [
        "tcp", "tcp6", "udp", "udp6", "unix", "raw", "raw6", "route", "dev",
    ] {
        if let Ok(t) = fs::read_to_string(format!("/proc/{}/net/{table}", g.init)) {
            write_file(&dir.join(format!("facts/net-{table}.txt")), t.as_bytes())?;
        }
    }
    write_json(&dir.join("runtime/container.json"), container)
}

/// What the dump step measured and took.
struct Dumped {
    net_external: bool,
    dump_ms: f64,
    frozen_ms: f64,
    freezing_ms: f64,
    fs_copy_ms: f64,
    stats: Option<criu::DumpStats>,
    fs_changes: usize,
}

/// The CRIU dump. CRIU announces `post-dump` once every image is written and before it
/// resumes (or kills) the tasks: that is when the filesystem changes and the small files the
/// runtime bound in are copied, so they are what was there at checkpoint time and the
/// container cannot swap a name between the check and the copy. The copy is part of the
/// frozen time CRIU reports.
fn dump(
    container: &Container,
    opts: &Options,
    criu_path: &Path,
    dir: &Path,
    g: &mut Gathered,
) -> Result<Dumped, SnapshotError> {
    let net_external = container.netns_inode.is_some() && !container.host_network;
    let mut o = criu::rpc::Criu_opts::new();
    let images = fs::File::open(dir.join("images")).map_err(|e| SnapshotError::io(dir, e))?;
    o.set_images_dir_fd(images.as_raw_fd());
    o.set_log_level(4);
    o.set_log_file("dump.log".into());
    o.set_pid(g.init);
    o.set_leave_running(!opts.stop);
    if let Some(r) = &g.rootfs {
        o.set_root(r.display().to_string());
    }
    o.set_tcp_established(true);
    o.set_ext_unix_sk(true);
    o.set_file_locks(true);
    o.set_manage_cgroups(true);
    // Notifications are round trips while the tasks are stopped (a few per dump), but
    // post-dump is the one moment the container's files hold still.
    o.set_notify_scripts(true);
    // nftables locks the network in-process; iptables runs two iptables-restore processes while
    // the tasks are frozen (~50 ms more here).
    o.set_network_lock(criu::rpc::Criu_network_lock_method::NFTABLES);
    if net_external && let Some(ino) = container.netns_inode {
        o.external.push(format!("net[{ino}]:extRootNetNS"));
    }
    for f in &g.ext_files {
        o.external.push(f.key.clone());
    }
    for m in &g.ext_mounts {
        let mut e = criu::rpc::Ext_mount_map::new();
        e.set_key(m.mount_point.clone());
        e.set_val(m.mount_point.clone());
        o.ext_mnt.push(e);
    }
    let dump_start = Instant::now();
    let mut captured: Option<io::Result<fschanges::ChangeSet>> = None;
    let mut fs_copy_ms = 0.0;
    let mut notes = Vec::new();
    let outcome = {
        let (changes, init, ext_mounts) = (&g.changes, g.init, &mut g.ext_mounts);
        criu::request(
            criu_path,
            criu::rpc::Criu_req_type::DUMP,
            o,
            &criu::Spawn::default(),
            &mut |script| {
                if script != "post-dump" || captured.is_some() {
                    return;
                }
                let t = Instant::now();
                if let Some((src, _)) = changes {
                    captured = Some(fschanges::capture(src, &dir.join("fs/changes")));
                }
                copy_mount_files(init, ext_mounts, dir, &mut notes);
                fs_copy_ms = ms(t.elapsed());
            },
        )
    };
    let dump_ms = ms(dump_start.elapsed());
    drop(images);
    g.warnings.append(&mut notes);
    let log = dir.join("images/dump.log");
    let outcome = outcome.map_err(|e| SnapshotError::Criu {
        what: "the CRIU dump".into(),
        message: e.to_string(),
        log: criu::log_errors(&log),
    })?;
    if !outcome.response.success() {
        return Err(SnapshotError::Criu {
            what: format!(
                "the CRIU dump (the container was resumed; the partial case is left in {} for \
                 diagnosis)",
                dir.display()
            ),
            message: criu::failure(&outcome.response),
            log: criu::log_errors(&log),
        });
    }
    let stats = criu::read_dump_stats(&dir.join("images"));
    let (frozen_ms, freezing_ms) = match stats {
        Some(s) if s.frozen_us > 0 => (
            (s.freezing_us + s.frozen_us) as f64 / 1000.0,
            s.freezing_us as f64 / 1000.0,
        ),
        // No stats image: the whole request is the upper bound.
        _ => (dump_ms, 0.0),
    };
    let mut fs_changes = 0;
    match captured {
        Some(Ok(set)) => {
            fs_changes = set.changes.len();
            g.warnings
                .extend(set.notes.iter().map(|n| format!("filesystem change {n}")));
            write_json(&dir.join("fs/changes.json"), &set)?;
        }
        Some(Err(e)) => g
            .warnings
            .push(format!("filesystem changes not taken: {e}")),
        None if g.changes.is_some() => g
            .warnings
            .push("filesystem changes not taken: CRIU sent no post-dump notification".into()),
        None => {}
    }
    Ok(Dumped {
        net_external,
        dump_ms,
        frozen_ms,
        freezing_ms,
        fs_copy_ms,
        stats,
        fs_changes,
    })
}

/// Small files the runtime bound in (/etc/hosts, /etc/resolv.conf, ...), as the container
/// sees them: evidence, and what restore binds in their place. Opened below the container's
/// root without following a symlink (one there could point at a host file: `/proc/PID/root`
/// resolves absolute links against the host's root).
fn copy_mount_files(
    init: i32,
    ext_mounts: &mut [mounts::ExternalMount],
    dir: &Path,
    notes: &mut Vec<String>,
) {
    let Ok(root) = beneath::open_trusted_dir(Path::new(&format!("/proc/{init}/root"))) else {
        notes.push("the container's root was gone before its bound-in files were copied".into());
        return;
    };
    for m in ext_mounts.iter_mut().filter(|m| !m.is_dir) {
        let Some(rel) = beneath::plain_relative(&m.mount_point) else {
            continue;
        };
        let copied = (|| -> io::Result<Option<String>> {
            let fd = beneath::open(
                &root,
                &rel,
                nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_NONBLOCK,
                0,
            )?;
            let mut f = fs::File::from(fd);
            let md = f.metadata()?;
            if !md.is_file() || md.len() > 1 << 20 {
                return Ok(None);
            }
            let name = format!(
                "mounts/{}",
                m.mount_point.trim_start_matches('/').replace('/', "_")
            );
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir.join("mounts"))?;
            let mut out = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(dir.join(&name))?;
            io::copy(&mut f, &mut out)?;
            Ok(Some(name))
        })();
        match copied {
            Ok(c) => m.copy = c,
            Err(e) => notes.push(format!("{} not copied: {e}", m.mount_point)),
        }
    }
}

/// What sealing the case gave.
struct Sealed {
    manifest_sha256: String,
    images_bytes: u64,
    files: usize,
}

/// Hashes every file, writes the manifest (`fields` plus the files, times and timings) and
/// the sums file, and makes the case private and read-only.
fn seal(
    dir: &Path,
    opts: &Options,
    progress: &mut dyn FnMut(u64, u64),
    mut fields: serde_json::Value,
    timings: &mut Timings,
    started: Instant,
) -> Result<Sealed, SnapshotError> {
    let files = case::hash_all(dir, opts.hash, progress)?;
    let images_bytes: u64 = files
        .iter()
        .filter(|f| f.path.starts_with("images/"))
        .map(|f| f.size)
        .sum();
    timings.total_ms = ms(started.elapsed());
    fields["finished"] = chrono::Utc::now().to_rfc3339().into();
    fields["timings_ms"] = serde_json::to_value(*timings).expect("serialisable");
    fields["files"] = serde_json::to_value(&files).expect("serialisable");
    let mpath = dir.join(case::MANIFEST);
    write_json(&mpath, &fields)?;
    let manifest_sha256 =
        quarry_store::segment::sha256_file(&mpath).map_err(|e| SnapshotError::io(&mpath, e))?;
    case::write_sums(dir, opts.hash, &files).map_err(|e| SnapshotError::io(dir, e))?;
    case::seal(dir).map_err(|e| SnapshotError::io(dir, e))?;
    Ok(Sealed {
        manifest_sha256,
        images_bytes,
        files: files.len(),
    })
}

/// The local IPs of connected TCP sockets, without ports, each once.
fn tcp_local_addrs(sockets: &[facts::Socket]) -> Vec<String> {
    let mut out: Vec<String> = sockets
        .iter()
        .filter(|s| s.proto.starts_with("tcp") && s.state != "LISTEN" && s.state != "CLOSE")
        .filter_map(|s| {
            s.local
                .rsplit_once(':')
                .map(|(ip, _)| ip.trim_matches(['[', ']']).to_string())
        })
        .filter(|ip| ip != "0.0.0.0" && ip != "::")
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Re-hashes a case against its manifest and checks it is private: empty when every file is
/// as written and nothing of it is open to other users (`world_accessible` otherwise: fix with
/// `chmod -R go-rwx CASE`).
pub fn verify_case(dir: &Path) -> Result<Vec<Mismatch>, SnapshotError> {
    let mut problems = case::verify(dir)?;
    for path in case::exposed(dir).map_err(|e| SnapshotError::io(dir, e))? {
        problems.push(Mismatch {
            path,
            problem: "world_accessible",
        });
    }
    Ok(problems)
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// When a process started, in Unix seconds (boot time + start ticks).
fn process_start_unix(pid: i32) -> Option<i64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks: i64 = stat
        .get(stat.rfind(')')? + 2..)?
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()?;
    let btime: i64 = fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as i64;
    Some(btime + ticks / hz)
}

/// The runtime's own description of the container: the OCI bundle's config.json, runc's
/// state.json, Podman's container config, when present.
fn copy_runtime_files(c: &Container, dest: &Path, warnings: &mut Vec<String>) {
    let mut sources: Vec<(PathBuf, &str)> = Vec::new();
    if let Some(b) = &c.bundle {
        sources.push((b.join("config.json"), "bundle-config.json"));
    }
    for root in quarry_containers::runtime::Sources::default().runc_roots {
        sources.push((root.join(&c.id).join("state.json"), "runc-state.json"));
    }
    sources.push((
        PathBuf::from("/var/lib/containers/storage/overlay-containers")
            .join(&c.id)
            .join("userdata/config.json"),
        "podman-config.json",
    ));
    sources.push((
        PathBuf::from("/var/lib/docker/containers")
            .join(&c.id)
            .join("config.v2.json"),
        "docker-config.v2.json",
    ));
    let mut any = false;
    for (src, name) in sources {
        if dest.join(name).exists() {
            continue;
        }
        if fs::copy(&src, dest.join(name)).is_ok() {
            any = true;
        }
    }
    if !any {
        warnings.push("no runtime config found for the container (bundle, runc state, Podman or Docker store)".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criu_errors_say_which_version_and_how_to_get_it() {
        let old = SnapshotError::CriuTooOld {
            path: "/usr/sbin/criu".into(),
            found: "3.17.1".into(),
        }
        .to_string();
        assert!(
            old.contains("CRIU 3.17.1") && old.contains(">= 4.1"),
            "{old}"
        );
        assert!(
            old.contains("scripts/setup") && old.contains("--criu"),
            "{old}"
        );
        let missing = criu::find_criu(Some(Path::new("/nonexistent/criu")))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("install CRIU >= 4.1"), "{missing}");
    }

    #[test]
    fn tcp_local_addresses_once_without_listeners() {
        let s = |proto: &str, local: &str, state: &str| facts::Socket {
            proto: proto.into(),
            local: local.into(),
            remote: "198.18.0.1:80".into(),
            state: state.into(),
            inode: 1,
            holders: vec![],
        };
        let v = tcp_local_addrs(&[
            s("tcp", "198.18.0.2:4000", "ESTABLISHED"),
            s("tcp", "198.18.0.2:4001", "ESTABLISHED"),
            s("tcp", "0.0.0.0:80", "LISTEN"),
            s("tcp6", "[fd00::2]:4002", "ESTABLISHED"),
            s("udp", "198.18.0.9:53", "0x7"),
        ]);
        assert_eq!(v, ["198.18.0.2", "fd00::2"]);
    }
}
