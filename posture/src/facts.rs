//! What the kernel says about a container's process: the raw facts posture is judged on.
//!
//! Everything here is read from `/proc/<pid>`, the cgroup filesystems and the runtime's OCI
//! config, never from what the container says about itself. A pid is only a handle: the
//! process's start time is read before and after, so a pid reused mid-read is an error, not
//! a report about some other process.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::GatherError;
use crate::caps::CapSet;
use quarry_containers::mountinfo::{Mount, host_path_of, parse_mountinfo};
use quarry_containers::runtime::start_ticks;

/// Namespaces whose sharing with the host matters.
pub const NAMESPACES: [&str; 7] = ["mnt", "pid", "net", "ipc", "uts", "user", "cgroup"];

/// The bundle config is the runtime's, but a few MiB is already far beyond any real one.
const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// Facts about one process, with the host's facts it is compared against.
#[derive(Debug, Clone, Serialize)]
pub struct Facts {
    pub pid: i32,
    pub effective: CapSet,
    pub permitted: CapSet,
    pub bounding: CapSet,
    pub ambient: CapSet,
    /// The host init's bounding set: "every capability" on this kernel.
    pub host_bounding: CapSet,
    pub euid: u32,
    /// Namespace name -> true when it is the host's (pid 1's).
    pub shared_namespaces: BTreeMap<String, bool>,
    /// The process's uid_map when it has its own user namespace.
    pub uid_map: Option<String>,
    /// 0 disabled, 1 strict, 2 filter.
    pub seccomp: Option<u8>,
    pub no_new_privs: Option<bool>,
    /// The LSM label (`attr/current`); `None` when no labelling LSM is active on the host.
    pub lsm_label: Option<String>,
    pub mounts: Vec<Mount>,
    /// For each mount (same index), the host path it shows, when its filesystem is mounted on
    /// the host too.
    pub host_paths: Vec<Option<PathBuf>>,
    /// For each mount (same index), whether that host path is a unix socket.
    pub host_sockets: Vec<bool>,
    pub limits: Limits,
    /// Device rules and device nodes from the OCI config, when the bundle is known.
    pub devices: Option<Devices>,
}

/// cgroup limits; `None` where the controller's file was not found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Limits {
    /// Bytes; `Some(None)` means "max" (unlimited).
    pub memory: Option<Option<u64>>,
    pub pids: Option<Option<u64>>,
    /// CPU quota in microseconds per period; `Some(None)` means unlimited.
    pub cpu_quota: Option<Option<u64>>,
}

/// What the OCI config lets the container reach among the host's devices.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Devices {
    /// A rule allowing every device (type `a`, or any major/minor with a wildcard).
    pub all_allowed: bool,
    /// Device nodes the runtime creates inside the container.
    pub nodes: Vec<String>,
}

/// Where to read from; tests point these at fixture trees.
#[derive(Debug, Clone)]
pub struct Sources {
    pub proc_root: PathBuf,
    /// The cgroup v2 mount (hybrid hosts: `/sys/fs/cgroup/unified`).
    pub cgroup2: Option<PathBuf>,
    /// Where cgroup v1 hierarchies are mounted (`/sys/fs/cgroup`).
    pub cgroup1_root: PathBuf,
}

impl Default for Sources {
    fn default() -> Self {
        Sources {
            proc_root: PathBuf::from("/proc"),
            cgroup2: None,
            cgroup1_root: PathBuf::from("/sys/fs/cgroup"),
        }
    }
}

/// Reads the facts of `pid`, the init process of a container whose cgroup v2 path is
/// `cgroup_path` and whose OCI bundle is `bundle` (when known).
pub fn gather(
    sources: &Sources,
    pid: i32,
    cgroup_path: &str,
    bundle: Option<&Path>,
) -> Result<Facts, GatherError> {
    let dir = sources.proc_root.join(pid.to_string());
    let started = start_ticks(&sources.proc_root, pid).ok_or(GatherError::Gone { pid })?;
    let status = read_text(&dir.join("status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(str::trim))
    };
    let caps = |name: &str| field(name).and_then(CapSet::parse_hex).unwrap_or_default();
    let host_status = read_text(&sources.proc_root.join("1/status"))?;
    let host_bounding = host_status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(CapSet::parse_hex)
        .unwrap_or_default();
    let euid = field("Uid")
        .and_then(|v| v.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(u32::MAX);

    let mut shared_namespaces = BTreeMap::new();
    for ns in NAMESPACES {
        let mine = fs::read_link(dir.join("ns").join(ns)).ok();
        // The host's namespaces are pid 1's; where pid 1 is protected from us (some VM and
        // sandbox inits are), our own, since quarry runs on the host.
        let host = fs::read_link(sources.proc_root.join("1/ns").join(ns))
            .or_else(|_| fs::read_link(sources.proc_root.join("self/ns").join(ns)))
            .ok();
        if let (Some(mine), Some(host)) = (mine, host) {
            shared_namespaces.insert(ns.to_string(), mine == host);
        }
    }
    let uid_map = match shared_namespaces.get("user") {
        Some(false) => read_text(&dir.join("uid_map")).ok(),
        _ => None,
    };

    let lsm_label = read_text(&dir.join("attr/current"))
        .ok()
        .map(|l| l.trim_end_matches(['\n', '\0']).to_string());

    let mounts = parse_mountinfo(&read_text(&dir.join("mountinfo"))?);
    let host_mounts = parse_mountinfo(&read_text(&sources.proc_root.join("1/mountinfo"))?);
    let host_paths: Vec<Option<PathBuf>> = mounts
        .iter()
        .map(|m| host_path_of(m, &host_mounts))
        .collect();
    let host_sockets = host_paths
        .iter()
        .map(|p| p.as_deref().is_some_and(is_socket))
        .collect();

    let cgroup_lines = read_text(&dir.join("cgroup"))?;
    if !cgroup_lines
        .lines()
        .any(|l| l.starts_with("0::") && l[3..] == *cgroup_path)
        && sources.cgroup2.is_some()
    {
        return Err(GatherError::NotInContainer {
            pid,
            cgroup: cgroup_path.to_string(),
        });
    }
    let limits = read_limits(sources, cgroup_path, &cgroup_lines);
    let devices = match bundle {
        Some(b) => Some(read_devices(&b.join("config.json"))?),
        None => None,
    };

    if start_ticks(&sources.proc_root, pid) != Some(started) {
        return Err(GatherError::Gone { pid });
    }
    Ok(Facts {
        pid,
        effective: caps("CapEff"),
        permitted: caps("CapPrm"),
        bounding: caps("CapBnd"),
        ambient: caps("CapAmb"),
        host_bounding,
        euid,
        shared_namespaces,
        uid_map,
        seccomp: field("Seccomp").and_then(|v| v.parse().ok()),
        no_new_privs: field("NoNewPrivs").map(|v| v == "1"),
        lsm_label,
        mounts,
        host_paths,
        host_sockets,
        limits,
        devices,
    })
}

fn read_text(path: &Path) -> Result<String, GatherError> {
    fs::read_to_string(path).map_err(|source| GatherError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

fn read_limits(sources: &Sources, cgroup_path: &str, cgroup_lines: &str) -> Limits {
    let mut limits = Limits::default();
    let safe = |p: &str| !p.split('/').any(|c| c == "..");
    if let Some(v2) = &sources.cgroup2
        && safe(cgroup_path)
    {
        let dir = v2.join(cgroup_path.trim_start_matches('/'));
        limits.memory = read_limit(&dir.join("memory.max"));
        limits.pids = read_limit(&dir.join("pids.max"));
        limits.cpu_quota = fs::read_to_string(dir.join("cpu.max"))
            .ok()
            .map(|t| parse_max(t.split_whitespace().next().unwrap_or("max")));
    }
    // Hybrid hosts keep the controllers on v1 hierarchies.
    for line in cgroup_lines.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.is_empty() || !safe(path) {
            continue;
        }
        let path = path.trim_start_matches('/');
        let dir = |c: &str| {
            [controllers, c]
                .iter()
                .map(|d| sources.cgroup1_root.join(d).join(path))
                .find(|d| d.is_dir())
        };
        let has = |c: &str| controllers.split(',').any(|x| x == c);
        if has("memory") && limits.memory.is_none() {
            limits.memory = dir("memory").and_then(|d| {
                read_limit(&d.join("memory.limit_in_bytes"))
                    // v1 spells "unlimited" as a huge page-aligned number.
                    .map(|v| v.filter(|b| *b < (1 << 62)))
            });
        }
        if has("pids") && limits.pids.is_none() {
            limits.pids = dir("pids").and_then(|d| read_limit(&d.join("pids.max")));
        }
        if has("cpu") && limits.cpu_quota.is_none() {
            limits.cpu_quota = dir("cpu").and_then(|d| {
                fs::read_to_string(d.join("cpu.cfs_quota_us"))
                    .ok()
                    .map(|t| {
                        t.trim()
                            .parse::<i64>()
                            .ok()
                            .filter(|q| *q > 0)
                            .map(|q| q as u64)
                    })
            });
        }
    }
    limits
}

fn read_limit(path: &Path) -> Option<Option<u64>> {
    fs::read_to_string(path).ok().map(|t| parse_max(t.trim()))
}

fn parse_max(text: &str) -> Option<u64> {
    if text == "max" {
        None
    } else {
        text.parse().ok()
    }
}

fn read_devices(config: &Path) -> Result<Devices, GatherError> {
    // O_NOFOLLOW: the bundle path is the runtime's; a symlink there is not expected.
    let read = || -> std::io::Result<Vec<u8>> {
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(config)?;
        let mut bytes = Vec::new();
        file.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes)?;
        Ok(bytes)
    };
    let bytes = read().map_err(|source| GatherError::Read {
        path: config.to_path_buf(),
        source,
    })?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(GatherError::Config {
            path: config.to_path_buf(),
            problem: format!("larger than {MAX_CONFIG_BYTES} bytes"),
        });
    }
    let config: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| GatherError::Config {
            path: config.to_path_buf(),
            problem: e.to_string(),
        })?;
    let linux = &config["linux"];
    // OCI rules apply in order, the last match winning; "everything allowed" means the last
    // wildcard rule allows.
    let all_allowed = linux["resources"]["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .rfind(|rule| {
            let any_type = matches!(rule["type"].as_str(), None | Some("a"));
            any_type && rule["major"].is_null() && rule["minor"].is_null()
        })
        .is_some_and(|rule| rule["allow"].as_bool() == Some(true));
    let nodes = linux["devices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["path"].as_str().map(str::to_string))
        .collect();
    Ok(Devices { all_allowed, nodes })
}
