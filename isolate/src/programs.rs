//! The cgroup_skb layer: one instance of the quarantine programs and their maps, loaded once
//! and pinned in bpffs (`/sys/fs/bpf/quarry/isolate/shared/`), keyed by cgroup inside; per
//! container, the two links that attach them to its cgroup, pinned in
//! `/sys/fs/bpf/quarry/isolate/containers/<id>/` so the quarantine outlives the command.
//!
//! It owns everything below [`PIN_ROOT`] and nothing else: it must not touch namespaces,
//! nftables or the records in /run (beyond taking the state lock to unload), and it never
//! detaches a link it did not pin for that container.

use std::ffi::CString;
use std::fs;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap as BpfHashMap, Map, MapData, PerCpuHashMap, PerCpuValues};
use aya::programs::CgroupSkb;
use aya::programs::links::PinnedLink;
use aya::util::nr_cpus;
use aya::{Ebpf, EbpfLoader};
use quarry_isolate_common::{AllowValue, CGROUP_KEY_BITS, DropCounts};

use crate::state::{STATE_ROOT, StateLock, safe_name};
use crate::{AllowRule, IsolateError, io};

/// The quarantine programs built by build.rs from isolate/ebpf.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/quarry-isolate"));

/// Where quarantines are pinned in bpffs.
pub const PIN_ROOT: &str = "/sys/fs/bpf/quarry/isolate";
/// The shared programs and maps, below [`PIN_ROOT`] (bpffs refuses names starting with a dot).
const SHARED: &str = "shared";

/// Where the links of container `id` are pinned.
pub(crate) fn pin_dir(id: &str) -> PathBuf {
    Path::new(PIN_ROOT).join("containers").join(safe_name(id))
}

/// Whether both links of container `id` are pinned.
pub(crate) fn links_pinned(id: &str) -> bool {
    let dir = pin_dir(id);
    dir.join("egress").exists() && dir.join("ingress").exists()
}

/// Whether either link of container `id` is pinned.
pub(crate) fn any_link_pinned(id: &str) -> bool {
    let dir = pin_dir(id);
    dir.join("egress").exists() || dir.join("ingress").exists()
}

pub(crate) fn bpffs_mounted() -> bool {
    fs::read_to_string("/proc/self/mounts")
        .map(|m| {
            m.lines().any(|l| {
                l.split_whitespace().nth(1) == Some("/sys/fs/bpf")
                    && l.split_whitespace().nth(2) == Some("bpf")
            })
        })
        .unwrap_or(false)
}

/// Puts the cgroup_skb layer in force for container `id`: its allow-list and counters in the
/// shared maps, both links attached to `cgroup_dir` and pinned, then the switch. Leaves
/// nothing behind when it fails.
pub(crate) fn attach(
    id: &str,
    cgroup_dir: &Path,
    cgroup_id: u64,
    rules: &[AllowRule],
) -> Result<(), IsolateError> {
    let pins = pin_dir(id);
    fs::create_dir_all(&pins).map_err(io(&pins))?;
    let attach = || -> Result<(), IsolateError> {
        let shared = Shared::open_or_create()?;
        shared.set_allow_list(cgroup_id, rules)?;
        shared.reset_drops(cgroup_id)?;
        let cgroup = fs::File::open(cgroup_dir).map_err(io(cgroup_dir))?;
        for (pin, attach_type) in [
            ("egress", BPF_CGROUP_INET_EGRESS),
            ("ingress", BPF_CGROUP_INET_INGRESS),
        ] {
            // A bpf_link: the kernel runs it alongside other tools' cgroup_skb programs
            // (systemd's IP accounting, say) and any drop verdict drops the packet.
            link_and_pin(
                &shared.dir.join(format!("prog-{pin}")),
                &cgroup,
                attach_type,
                &pins.join(pin),
            )
            .map_err(|e| IsolateError::Attach(format!("attaching the {pin} program: {e}")))?;
        }
        // The switch: from this map update on, both directions are cut.
        shared.mark(cgroup_id, true)
    };
    attach().inspect_err(|_| {
        let _ = fs::remove_dir_all(&pins);
        if let Ok(shared) = Shared::open() {
            let _ = shared.mark(cgroup_id, false);
            let _ = shared.set_allow_list(cgroup_id, &[]);
        }
    })
}

const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_CGROUP_INET_INGRESS: u32 = 0;
const BPF_CGROUP_INET_EGRESS: u32 = 1;

/// The bpf(2) syscall with `attr` (its first words; the rest of the union zero).
fn bpf(cmd: libc::c_long, attr: &[u32]) -> std::io::Result<libc::c_long> {
    let mut buf = [0u32; 32];
    buf[..attr.len()].copy_from_slice(attr);
    // SAFETY: bpf(2) reads at most size_of_val(buf) bytes of a buffer we own.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            buf.as_ptr(),
            std::mem::size_of_val(&buf) as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc)
}

/// A bpf(2) command that returns a new descriptor.
fn bpf_fd(cmd: libc::c_long, attr: &[u32]) -> std::io::Result<OwnedFd> {
    let fd = bpf(cmd, attr)?;
    // SAFETY: a descriptor the kernel just gave us, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `(lower, upper)` halves of a pointer to `path` as a C string, for a bpf attr.
fn path_words(path: &CString) -> (u32, u32) {
    let p = path.as_ptr() as u64;
    (p as u32, (p >> 32) as u32)
}

/// Attaches the program pinned at `prog` to `cgroup` as a bpf_link of `attach_type` and
/// pins the link at `pin`: three syscalls. (aya's program API would first probe the kernel's
/// features, ~10 ms with a dozen test programs loaded, in the path to the quarantine.)
fn link_and_pin(
    prog: &Path,
    cgroup: &fs::File,
    attach_type: u32,
    pin: &Path,
) -> std::io::Result<()> {
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    };
    let (prog_path, pin_path) = (c(prog)?, c(pin)?);
    let (lo, hi) = path_words(&prog_path);
    // union bpf_attr for BPF_OBJ_GET: pathname (u64), bpf_fd, file_flags.
    let prog_fd = bpf_fd(BPF_OBJ_GET, &[lo, hi, 0, 0])?;
    // For BPF_LINK_CREATE: prog_fd, target_fd, attach_type, flags.
    let link = bpf_fd(
        BPF_LINK_CREATE,
        &[
            prog_fd.as_raw_fd() as u32,
            cgroup.as_raw_fd() as u32,
            attach_type,
            0,
        ],
    )?;
    let (lo, hi) = path_words(&pin_path);
    // For BPF_OBJ_PIN: pathname, bpf_fd, file_flags. Closing the fd after: the pin holds it.
    bpf(BPF_OBJ_PIN, &[lo, hi, link.as_raw_fd() as u32, 0]).map(|_| ())
}

/// Lifts the cgroup_skb layer of container `id`: its map entries go, and unpinning its links
/// detaches the programs.
pub(crate) fn detach(id: &str, cgroup_id: u64) -> Result<(), IsolateError> {
    if let Ok(shared) = Shared::open() {
        shared.mark(cgroup_id, false)?;
        shared.set_allow_list(cgroup_id, &[])?;
        shared.clear_drops(cgroup_id);
    }
    let pins = pin_dir(id);
    for link in ["egress", "ingress"] {
        let path = pins.join(link);
        if let Ok(pinned) = PinnedLink::from_pin(&path) {
            // Unpinning drops the last reference: the program detaches from the cgroup.
            let _ = pinned.unpin();
        }
        let _ = fs::remove_file(&path);
    }
    fs::remove_dir_all(&pins).map_err(io(&pins))
}

/// Removes whatever an interrupted isolate of `id` pinned.
pub(crate) fn remove_stale(id: &str) {
    let _ = fs::remove_dir_all(pin_dir(id));
}

/// (egress, ingress) packets the programs dropped for cgroup `cgroup_id`.
pub(crate) fn drops(cgroup_id: u64) -> (u64, u64) {
    Shared::open()
        .ok()
        .and_then(|shared| {
            let per_cpu = shared.drops().ok()?.get(&cgroup_id, 0).ok()?;
            Some((
                per_cpu.iter().map(|c| c.egress).sum(),
                per_cpu.iter().map(|c| c.ingress).sum(),
            ))
        })
        .unwrap_or((0, 0))
}

pub(crate) fn attach_err(e: impl std::error::Error) -> IsolateError {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    IsolateError::Attach(msg)
}

/// The programs and maps every quarantine shares, pinned once.
struct Shared {
    dir: PathBuf,
}

const SHARED_MAPS: [(&str, &str); 4] = [
    ("QUARANTINED", "quarantined"),
    ("ALLOW_V4", "allow-v4"),
    ("ALLOW_V6", "allow-v6"),
    ("DROPS", "drops"),
];

impl Shared {
    fn open() -> Result<Shared, IsolateError> {
        let dir = Path::new(PIN_ROOT).join(SHARED);
        if dir.join("prog-ingress").exists() {
            Ok(Shared { dir })
        } else {
            Err(IsolateError::Attach(
                "the shared quarantine programs are not loaded".into(),
            ))
        }
    }

    /// Opens the pinned programs, loading and pinning them the first time. Loading costs tens
    /// of milliseconds (aya parses the kernel's BTF); every later quarantine skips it.
    fn open_or_create() -> Result<Shared, IsolateError> {
        if let Ok(s) = Shared::open() {
            return Ok(s);
        }
        let dir = Path::new(PIN_ROOT).join(SHARED);
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let mut ebpf: Ebpf = EbpfLoader::new().load(EBPF_OBJECT).map_err(attach_err)?;
        for (name, file) in SHARED_MAPS {
            let map = ebpf
                .map(name)
                .ok_or_else(|| IsolateError::Attach(format!("no map {name} in the object")))?;
            map.pin(dir.join(file)).map_err(attach_err)?;
        }
        // The ingress program is pinned last: its presence means everything is there.
        for (program, file) in [
            ("quarantine_egress", "prog-egress"),
            ("quarantine_ingress", "prog-ingress"),
        ] {
            let prog: &mut CgroupSkb = ebpf
                .program_mut(program)
                .ok_or_else(|| IsolateError::Attach(format!("no program {program}")))?
                .try_into()
                .map_err(attach_err)?;
            prog.load().map_err(attach_err)?;
            prog.pin(dir.join(file)).map_err(attach_err)?;
        }
        Ok(Shared { dir })
    }

    fn map(&self, file: &str) -> Result<MapData, IsolateError> {
        MapData::from_pin(self.dir.join(file)).map_err(attach_err)
    }

    /// Marks (or unmarks) a cgroup as quarantined: the switch the programs look at.
    fn mark(&self, cgroup_id: u64, on: bool) -> Result<(), IsolateError> {
        let mut m: BpfHashMap<_, u64, u8> =
            BpfHashMap::try_from(Map::HashMap(self.map("quarantined")?)).map_err(attach_err)?;
        if on {
            m.insert(cgroup_id, 1, 0).map_err(attach_err)
        } else {
            let _ = m.remove(&cgroup_id);
            Ok(())
        }
    }

    /// Replaces the allow-list entries of a cgroup with `rules`.
    fn set_allow_list(&self, cgroup_id: u64, rules: &[AllowRule]) -> Result<(), IsolateError> {
        let cg = cgroup_id.to_be_bytes();
        let mut v4: LpmTrie<_, [u8; 12], AllowValue> =
            LpmTrie::try_from(Map::LpmTrie(self.map("allow-v4")?)).map_err(attach_err)?;
        let mut v6: LpmTrie<_, [u8; 24], AllowValue> =
            LpmTrie::try_from(Map::LpmTrie(self.map("allow-v6")?)).map_err(attach_err)?;
        let old4: Vec<Key<[u8; 12]>> = v4
            .keys()
            .flatten()
            .filter(|k| k.data()[..8] == cg)
            .collect();
        for k in old4 {
            let _ = v4.remove(&k);
        }
        let old6: Vec<Key<[u8; 24]>> = v6
            .keys()
            .flatten()
            .filter(|k| k.data()[..8] == cg)
            .collect();
        for k in old6 {
            let _ = v6.remove(&k);
        }
        for r in rules {
            let value = AllowValue {
                port: r.port,
                _pad: [0; 6],
            };
            let prefix = CGROUP_KEY_BITS + r.prefix as u32;
            match r.addr {
                IpAddr::V4(a) => {
                    let mut data = [0u8; 12];
                    data[..8].copy_from_slice(&cg);
                    data[8..].copy_from_slice(&a.octets());
                    v4.insert(&Key::new(prefix, data), value, 0)
                        .map_err(attach_err)?;
                }
                IpAddr::V6(a) => {
                    let mut data = [0u8; 24];
                    data[..8].copy_from_slice(&cg);
                    data[8..].copy_from_slice(&a.octets());
                    v6.insert(&Key::new(prefix, data), value, 0)
                        .map_err(attach_err)?;
                }
            }
        }
        Ok(())
    }

    fn drops(&self) -> Result<PerCpuHashMap<MapData, u64, DropCounts>, IsolateError> {
        PerCpuHashMap::try_from(Map::PerCpuHashMap(self.map("drops")?)).map_err(attach_err)
    }

    fn reset_drops(&self, cgroup_id: u64) -> Result<(), IsolateError> {
        let cpus = nr_cpus().map_err(|(_, e)| attach_err(e))?;
        let zeros =
            PerCpuValues::try_from(vec![DropCounts::default(); cpus]).map_err(attach_err)?;
        self.drops()?
            .insert(cgroup_id, zeros, 0)
            .map_err(attach_err)
    }

    fn clear_drops(&self, cgroup_id: u64) {
        if let Ok(mut d) = self.drops() {
            let _ = d.remove(&cgroup_id);
        }
    }
}

/// Loads and pins the shared quarantine programs ahead of need (at node start, say), so even
/// the first isolate only attaches. Idempotent.
pub fn prepare() -> Result<(), IsolateError> {
    if !bpffs_mounted() {
        return Err(IsolateError::NoBpffs);
    }
    Shared::open_or_create().map(|_| ())
}

/// Unpins the shared programs and maps when no container is isolated (the next isolate loads
/// them again). Returns whether it did.
pub fn unload_if_idle() -> Result<bool, IsolateError> {
    // Not while an isolate is between loading the programs and pinning its links.
    let _lock = StateLock::acquire()?;
    let containers = Path::new(PIN_ROOT).join("containers");
    let busy = fs::read_dir(&containers)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false);
    if busy {
        return Ok(false);
    }
    let shared = Path::new(PIN_ROOT).join(SHARED);
    match fs::remove_dir_all(&shared) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(IsolateError::Io {
                path: shared,
                source: e,
            });
        }
    }
    let _ = fs::remove_dir(&containers);
    let _ = fs::remove_dir(PIN_ROOT);
    if let Some(quarry_dir) = Path::new(PIN_ROOT).parent() {
        let _ = fs::remove_dir(quarry_dir);
    }
    let _ = fs::remove_dir(STATE_ROOT);
    Ok(true)
}
