//! Quarantine state: the record of each active quarantine (`/run/quarry/isolate/<id>.json`),
//! the record of each network namespace's shared layers and who needs them
//! (`/run/quarry/isolate/netns/<cookie>.json`), the file names both are kept under, and the
//! lock that serialises every change to them.
//!
//! The records say what was done, for release and status; they are never the proof that a
//! layer is in force (each layer's module checks the kernel for that). This module must not
//! touch the kernel, and must not derive a path from an id except through [`safe_name`].

use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::netns::Devices;
use crate::{AllowRule, IsolateError, io, programs};

/// Where the records of active quarantines are kept (tmpfs, like the pins: both end at reboot).
pub const STATE_ROOT: &str = "/run/quarry/isolate";

/// The record of an active quarantine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Isolation {
    pub container_id: String,
    pub container_name: Option<String>,
    pub cgroup_path: String,
    pub since: String,
    pub reason: Option<String>,
    pub allow: Vec<AllowRule>,
    /// Who asked (the invoking user, through sudo when used).
    pub actor: String,
    /// True when the layer inside the container's network namespace was applied.
    pub nftables: bool,
    /// True when the host-side layer (on the host peers of its veths) was applied.
    #[serde(default)]
    pub host_layer: bool,
    pub init_pid: Option<i32>,
    /// Inode of the network namespace the namespace-level layers were applied to: the only
    /// namespace release and status ever enter for this quarantine.
    #[serde(default)]
    pub netns_inode: Option<u64>,
    /// That namespace's cookie, which no other namespace gets while the system runs (its
    /// inode may be reused once it is gone).
    #[serde(default)]
    pub netns_cookie: Option<u64>,
    /// The cgroup the programs are attached to (its inode), the key of its map entries.
    pub cgroup_id: u64,
}

/// A file name for container `id`, one-to-one: ids made of `[A-Za-z0-9.-]` (not starting with
/// a dot) stay readable; anything else is hex-encoded behind a `_` (which readable names never
/// start with), so no two ids share pins and no id can name a parent directory.
pub(crate) fn safe_name(id: &str) -> String {
    let readable = !id.is_empty()
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if readable {
        id.to_string()
    } else {
        let hex: String = id.bytes().map(|b| format!("{b:02x}")).collect();
        format!("_{hex}")
    }
}

pub(crate) fn state_path(id: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(format!("{}.json", safe_name(id)))
}

/// Every active quarantine, from the records beside the pins.
pub fn list() -> Vec<Isolation> {
    let mut out: Vec<Isolation> = fs::read_dir(STATE_ROOT)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .filter(|i: &Isolation| programs::links_pinned(&i.container_id))
        .collect();
    out.sort_by(|a, b| a.since.cmp(&b.since));
    out
}

/// The active quarantine of `id`, if any.
pub fn find(id: &str) -> Option<Isolation> {
    list().into_iter().find(|i| i.container_id == id)
}

/// Writes the record of `isolation`.
pub(crate) fn save(isolation: &Isolation) -> Result<(), IsolateError> {
    let state = state_path(&isolation.container_id);
    fs::create_dir_all(STATE_ROOT).map_err(io(STATE_ROOT))?;
    fs::write(
        &state,
        serde_json::to_vec_pretty(isolation).expect("serializes"),
    )
    .map_err(io(&state))
}

/// Removes the record of container `id`; `must`: whether it has to be there.
pub(crate) fn remove(id: &str, must: bool) -> Result<(), IsolateError> {
    let state = state_path(id);
    match fs::remove_file(&state) {
        Err(e) if must || e.kind() != std::io::ErrorKind::NotFound => Err(IsolateError::Io {
            path: state,
            source: e,
        }),
        _ => Ok(()),
    }
}

/// An exclusive lock over quarantine state, so concurrent isolates and releases of the same
/// container cannot undo each other's work. Held until dropped (closing the file unlocks).
pub(crate) struct StateLock {
    _file: fs::File,
}

impl StateLock {
    pub(crate) fn acquire() -> Result<StateLock, IsolateError> {
        use std::os::fd::AsRawFd;
        fs::create_dir_all(STATE_ROOT).map_err(io(STATE_ROOT))?;
        let path = Path::new(STATE_ROOT).join("lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io(&path))?;
        // SAFETY: flock on a valid descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(IsolateError::Io {
                path,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(StateLock { _file: file })
    }
}

/// One quarantined container of a shared namespace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Member {
    pub container_id: String,
    pub init_pid: Option<i32>,
    pub allow: Vec<AllowRule>,
}

/// The namespace-level layers of one network namespace and who needs them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetnsRecord {
    pub netns_inode: u64,
    /// The namespace's cookie (see [`crate::netns::Netns::cookie`]): the record's key.
    pub netns_cookie: u64,
    pub members: Vec<Member>,
    pub devices: Devices,
    /// ARP/ND let through for these (allow-list networks and gateways).
    pub neighbours: Vec<AllowRule>,
    /// Whether the tables inside the namespace are in place.
    pub inside_layer: bool,
    /// Whether the host-side table is in place.
    pub host_layer: bool,
    /// Fingerprint of the rules of the tables inside the namespace as the kernel listed them
    /// right after they were installed (see [`crate::nft::Listing`]): status compares, so a
    /// rule inserted, changed or removed by a container with CAP_NET_ADMIN shows.
    #[serde(default)]
    pub inside_rules: Option<String>,
    /// The same for the host-side table.
    #[serde(default)]
    pub host_rules: Option<String>,
}

pub(crate) fn netns_dir() -> PathBuf {
    Path::new(STATE_ROOT).join("netns")
}

fn record_path(cookie: u64) -> PathBuf {
    netns_dir().join(format!("{cookie}.json"))
}

impl NetnsRecord {
    pub fn load(cookie: u64) -> Option<NetnsRecord> {
        serde_json::from_slice(&fs::read(record_path(cookie)).ok()?).ok()
    }

    pub fn save(&self) -> Result<(), IsolateError> {
        let dir = netns_dir();
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let path = record_path(self.netns_cookie);
        fs::write(&path, serde_json::to_vec_pretty(self).expect("serializes")).map_err(io(&path))
    }

    pub fn remove(cookie: u64) -> Result<(), IsolateError> {
        let path = record_path(cookie);
        match fs::remove_file(&path) {
            Ok(()) => {
                let _ = fs::remove_dir(netns_dir());
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(IsolateError::Io { path, source: e }),
        }
    }

    /// The union of the members' allow-lists: what the shared layers let through.
    pub fn allow_union(&self) -> Vec<AllowRule> {
        crate::allow::union(self.members.iter().map(|m| m.allow.as_slice()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_safe_one_to_one_file_names() {
        assert_eq!(safe_name("abc-1.2"), "abc-1.2");
        assert_eq!(safe_name("../../etc"), "_2e2e2f2e2e2f657463");
        assert_ne!(safe_name("a+b"), safe_name("a_b"));
        assert_eq!(safe_name("..."), "_2e2e2e");
        assert!(!safe_name("").is_empty());
    }
}
