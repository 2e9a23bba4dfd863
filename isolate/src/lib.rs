//! Network quarantine of a running container.
//!
//! [`isolate`] attaches cgroup_skb ingress and egress programs to the container's cgroup v2
//! directory: from then on its processes can neither send nor receive packets (TCP, UDP, ICMP;
//! IPv4 and IPv6, established connections included) except to and from the allow-listed
//! collectors, while they keep running so responders can watch. One instance of the programs
//! and their maps is loaded once and pinned (`/sys/fs/bpf/quarry/isolate/shared/`), keyed by
//! cgroup inside, so a quarantine is a few map updates and two attachments: milliseconds. Each
//! container's links are pinned in `/sys/fs/bpf/quarry/isolate/containers/<id>/`, so the quarantine
//! outlives the command and any recorder restart; a record of who isolated what, when and why
//! sits in `/run/quarry/isolate/<id>.json`. Where the container has its own network namespace, nftables
//! rules inside it are a second layer. [`release`] undoes all of it; both are idempotent.

use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::Instant;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap as BpfHashMap, Map, MapData, PerCpuHashMap, PerCpuValues};
use aya::programs::links::{CgroupAttachMode, FdLink, PinnedLink};
use aya::programs::{CgroupSkb, CgroupSkbAttachType};
use aya::util::nr_cpus;
use aya::{Ebpf, EbpfLoader};
use quarry_containers::Container;
use quarry_isolate_common::{AllowValue, CGROUP_KEY_BITS, DropCounts};
use serde::{Deserialize, Serialize};

/// The quarantine programs built by build.rs from isolate/ebpf.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/quarry-isolate"));

/// Where quarantines are pinned in bpffs.
pub const PIN_ROOT: &str = "/sys/fs/bpf/quarry/isolate";
/// The shared programs and maps, below [`PIN_ROOT`] (bpffs refuses names starting with a dot).
const SHARED: &str = "shared";
/// Where the records of active quarantines are kept (tmpfs, like the pins: both end at reboot).
pub const STATE_ROOT: &str = "/run/quarry/isolate";

const NFT_TABLE: &str = "quarry_quarantine";

/// Errors isolating or releasing a container.
#[derive(Debug, thiserror::Error)]
pub enum IsolateError {
    /// An `--allow` entry is not `CIDR` or `CIDR:PORT`.
    #[error(
        "'{0}' is not an allow rule; use an address or CIDR, optionally with a port: 198.18.0.5, 198.18.0.0/24:443, [2001:db8::1]:514"
    )]
    BadAllowRule(String),

    /// Two allow rules overlap with different ports, which one trie entry per network cannot
    /// express.
    #[error(
        "allow rules {0} overlap with different ports; give one rule per network (one port, or \
         every port) and do not nest a port rule inside a broader rule"
    )]
    OverlappingAllow(String),

    /// The container shares the host's network namespace: its cgroup's quarantine would cut
    /// only its own processes, which may surprise; refused unless forced.
    #[error(
        "container {0} uses the host's network namespace: quarantining its cgroup cuts only its \
         own processes off the network (the host is untouched, loopback to host services \
         included); pass --force to do it anyway"
    )]
    HostNetwork(String),

    /// The container has no cgroup v2 directory to attach to.
    #[error(
        "container {container} has no cgroup v2 directory ({path}); is cgroup2 mounted (see /proc/self/mountinfo)?"
    )]
    NoCgroup { container: String, path: String },

    /// bpffs is not mounted where pins go.
    #[error("bpffs is not mounted at /sys/fs/bpf; mount it with `mount -t bpf bpf /sys/fs/bpf`")]
    NoBpffs,

    /// Loading or attaching the programs failed.
    #[error("attaching the quarantine programs failed: {0}")]
    Attach(String),

    /// A file of the quarantine could not be written, read or removed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> IsolateError {
    let path = path.into();
    move |source| IsolateError::Io { path, source }
}

/// One allow-list entry: a network and, optionally, the one remote port allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowRule {
    pub addr: IpAddr,
    pub prefix: u8,
    /// 0 = every port.
    pub port: u16,
}

impl FromStr for AllowRule {
    type Err = IsolateError;

    /// Parses `ADDR`, `ADDR/PREFIX`, `ADDR:PORT`, `ADDR/PREFIX:PORT`; IPv6 with a port in
    /// brackets: `[ADDR]:PORT`, `[ADDR/PREFIX]:PORT`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || IsolateError::BadAllowRule(s.to_string());
        let (net, port) = if let Some(rest) = s.strip_prefix('[') {
            let (net, tail) = rest.split_once(']').ok_or_else(bad)?;
            let port = match tail.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad())?,
                None if tail.is_empty() => 0,
                None => return Err(bad()),
            };
            (net, port)
        } else if s.matches(':').count() == 1 {
            let (net, p) = s.split_once(':').ok_or_else(bad)?;
            (net, p.parse().map_err(|_| bad())?)
        } else {
            (s, 0)
        };
        let (addr, prefix) = match net.split_once('/') {
            Some((a, p)) => (a, Some(p.parse::<u8>().map_err(|_| bad())?)),
            None => (net, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        if prefix > max {
            return Err(bad());
        }
        Ok(AllowRule { addr, prefix, port })
    }
}

impl std::fmt::Display for AllowRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let net = format!("{}/{}", self.addr, self.prefix);
        match (self.port, self.addr.is_ipv6()) {
            (0, _) => f.write_str(&net),
            (p, true) => write!(f, "[{net}]:{p}"),
            (p, false) => write!(f, "{net}:{p}"),
        }
    }
}

/// Refuses allow-lists the kernel side cannot honour: it keeps one port (or any) per network
/// and picks the longest matching network, so two rules for the same network with different
/// ports, or a port rule inside a broader network rule, would silently allow less than asked.
pub fn check_allow_list(rules: &[AllowRule]) -> Result<(), IsolateError> {
    fn contains(outer: &AllowRule, inner: &AllowRule) -> bool {
        let bits = |a: IpAddr| -> u128 {
            match a {
                IpAddr::V4(v) => u128::from(u32::from(v)) << 96,
                IpAddr::V6(v) => u128::from(v),
            }
        };
        if outer.addr.is_ipv4() != inner.addr.is_ipv4() || outer.prefix > inner.prefix {
            return false;
        }
        // IPv4 sits in the top 32 bits, so its prefix counts from the top like IPv6's.
        if outer.prefix == 0 {
            return true;
        }
        let mask = u128::MAX << (128 - u32::from(outer.prefix));
        bits(outer.addr) & mask == bits(inner.addr) & mask
    }
    for (i, a) in rules.iter().enumerate() {
        for b in &rules[i + 1..] {
            let conflict = if a.prefix == b.prefix {
                contains(a, b) && a.port != b.port
            } else {
                let (outer, inner) = if a.prefix < b.prefix { (a, b) } else { (b, a) };
                // The narrower rule wins for its addresses: fine if it allows every port or
                // the same port as the broader one.
                contains(outer, inner) && inner.port != 0 && inner.port != outer.port
            };
            if conflict {
                return Err(IsolateError::OverlappingAllow(format!("{a} and {b}")));
            }
        }
    }
    Ok(())
}

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
    /// True when the nftables layer was applied inside the container's netns.
    pub nftables: bool,
    pub init_pid: Option<i32>,
    /// The cgroup the programs are attached to (its inode), the key of its map entries.
    pub cgroup_id: u64,
}

/// Packets dropped by a quarantine so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Dropped {
    pub egress: u64,
    pub ingress: u64,
}

/// What [`isolate`] did.
#[derive(Debug, Serialize)]
pub struct IsolateOutcome {
    pub isolation: Isolation,
    /// False when the container was already isolated (nothing was changed).
    pub changed: bool,
    /// Milliseconds from the start of the call until both programs were attached.
    pub effective_after_ms: f64,
    /// When both programs were attached (for callers measuring from their own start).
    #[serde(skip)]
    pub attached_at: Option<Instant>,
    /// Why the nftables layer was not applied, when it was not.
    pub nftables_note: Option<String>,
}

/// A file name for container `id`, one-to-one: ids made of `[A-Za-z0-9.-]` (not starting with
/// a dot) stay readable; anything else is hex-encoded behind a `_` (which readable names never
/// start with), so no two ids share pins and no id can name a parent directory.
fn safe_name(id: &str) -> String {
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

fn pin_dir(id: &str) -> PathBuf {
    Path::new(PIN_ROOT).join("containers").join(safe_name(id))
}

fn state_path(id: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(format!("{}.json", safe_name(id)))
}

/// The user behind this command: `SUDO_USER` when run through sudo, else the uid.
pub fn actor() -> String {
    let uid = unsafe_free_uid();
    match std::env::var("SUDO_USER") {
        Ok(u) if !u.is_empty() => format!("{u} (via sudo, uid {uid})"),
        _ => format!("uid {uid}"),
    }
}

fn unsafe_free_uid() -> u32 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().next().map(str::to_string))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(u32::MAX)
}

/// Every active quarantine, from the records beside the pins.
pub fn list() -> Vec<Isolation> {
    let mut out: Vec<Isolation> = fs::read_dir(STATE_ROOT)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| fs::read(e.path()).ok())
        .filter_map(|b| serde_json::from_slice(&b).ok())
        .filter(|i: &Isolation| pin_dir(&i.container_id).join("egress").exists())
        .collect();
    out.sort_by(|a, b| a.since.cmp(&b.since));
    out
}

/// The active quarantine of `id`, if any.
pub fn find(id: &str) -> Option<Isolation> {
    list().into_iter().find(|i| i.container_id == id)
}

/// Packets dropped so far by the quarantine of `id`, both layers together.
pub fn dropped(id: &str) -> Option<Dropped> {
    let isolation = find(id)?;
    let shared = Shared::open().ok()?;
    let drops: PerCpuHashMap<_, u64, DropCounts> =
        PerCpuHashMap::try_from(Map::PerCpuHashMap(shared.map("drops").ok()?)).ok()?;
    let mut d = match drops.get(&isolation.cgroup_id, 0) {
        Ok(per_cpu) => Dropped {
            egress: per_cpu.iter().map(|c| c.egress).sum(),
            ingress: per_cpu.iter().map(|c| c.ingress).sum(),
        },
        Err(_) => Dropped::default(),
    };
    if let (true, Some(pid)) = (isolation.nftables, isolation.init_pid) {
        let (out, inp) = nft_counters(pid);
        d.egress += out;
        d.ingress += inp;
    }
    Some(d)
}

/// (output, input) packets counted by the nftables layer's final drop rules.
fn nft_counters(pid: i32) -> (u64, u64) {
    let Ok(out) = Command::new("nsenter")
        .args([
            "-n",
            "-t",
            &pid.to_string(),
            "nft",
            "-j",
            "list",
            "table",
            "inet",
            NFT_TABLE,
        ])
        .output()
    else {
        return (0, 0);
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return (0, 0);
    };
    let (mut egress, mut ingress) = (0, 0);
    for item in v["nftables"].as_array().into_iter().flatten() {
        let rule = &item["rule"];
        let packets = rule["expr"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|e| e["counter"]["packets"].as_u64());
        match (rule["chain"].as_str(), packets) {
            (Some("output"), Some(p)) => egress += p,
            (Some("input"), Some(p)) => ingress += p,
            _ => {}
        }
    }
    (egress, ingress)
}

fn bpffs_mounted() -> bool {
    fs::read_to_string("/proc/self/mounts")
        .map(|m| {
            m.lines().any(|l| {
                l.split_whitespace().nth(1) == Some("/sys/fs/bpf")
                    && l.split_whitespace().nth(2) == Some("bpf")
            })
        })
        .unwrap_or(false)
}

/// Quarantines `container`. Isolating an isolated container changes nothing and says so.
pub fn isolate(
    container: &Container,
    cgroup_dir: &Path,
    allow: &[AllowRule],
    reason: Option<&str>,
    force: bool,
) -> Result<IsolateOutcome, IsolateError> {
    let started = Instant::now();
    check_allow_list(allow)?;
    let _lock = StateLock::acquire()?;
    if let Some(existing) = find(&container.id) {
        return Ok(IsolateOutcome {
            isolation: existing,
            changed: false,
            effective_after_ms: 0.0,
            attached_at: None,
            nftables_note: Some("already isolated; nothing changed".into()),
        });
    }
    if container.host_network && !force {
        return Err(IsolateError::HostNetwork(container.to_string()));
    }
    if !cgroup_dir.is_dir() {
        return Err(IsolateError::NoCgroup {
            container: container.to_string(),
            path: cgroup_dir.display().to_string(),
        });
    }
    if !bpffs_mounted() {
        return Err(IsolateError::NoBpffs);
    }
    let pins = pin_dir(&container.id);
    if pins.join("egress").exists() || pins.join("ingress").exists() {
        // Links pinned without a record: an earlier isolate died before writing it. The
        // quarantine may be live: never undo it from here; `release` clears it.
        return Err(IsolateError::Attach(format!(
            "{} already has quarantine links pinned in {} but no record; run `quarry release {}` \
             and isolate again",
            container,
            pins.display(),
            container.id
        )));
    }
    fs::create_dir_all(&pins).map_err(io(&pins))?;

    // The container's own loopback stays up when it has its own network namespace: it never
    // leaves the container. In the host's namespace loopback reaches host services: cut it.
    let mut rules: Vec<AllowRule> = allow.to_vec();
    if !container.host_network {
        rules.push("127.0.0.0/8".parse()?);
        rules.push("::1/128".parse()?);
    }

    let cgroup_id =
        std::os::unix::fs::MetadataExt::ino(&fs::metadata(cgroup_dir).map_err(io(cgroup_dir))?);
    let attach = || -> Result<(), IsolateError> {
        let shared = Shared::open_or_create()?;
        shared.set_allow_list(cgroup_id, &rules)?;
        shared.reset_drops(cgroup_id)?;
        let cgroup = fs::File::open(cgroup_dir).map_err(io(cgroup_dir))?;
        for (pin, attach_type) in [
            ("egress", CgroupSkbAttachType::Egress),
            ("ingress", CgroupSkbAttachType::Ingress),
        ] {
            let mut prog = CgroupSkb::from_pin(shared.dir.join(format!("prog-{pin}")), attach_type)
                .map_err(attach_err)?;
            // A bpf_link: the kernel runs it alongside other tools' cgroup_skb programs
            // (systemd's IP accounting, say) and any drop verdict drops the packet. Link
            // attachment takes no mode flags (the kernel rejects them), hence `Single`.
            let link_id = prog
                .attach(&cgroup, attach_type, CgroupAttachMode::Single)
                .map_err(attach_err)?;
            let link = prog.take_link(link_id).map_err(attach_err)?;
            let fd_link: FdLink = link.try_into().map_err(attach_err)?;
            fd_link.pin(pins.join(pin)).map_err(attach_err)?;
        }
        // The switch: from this map update on, both directions are cut.
        shared.mark(cgroup_id, true)
    };
    if let Err(e) = attach() {
        // Leave nothing half-done behind.
        let _ = fs::remove_dir_all(&pins);
        if let Ok(shared) = Shared::open() {
            let _ = shared.mark(cgroup_id, false);
            let _ = shared.set_allow_list(cgroup_id, &[]);
        }
        return Err(e);
    }
    let attached_at = Instant::now();
    let effective_after_ms = (attached_at - started).as_secs_f64() * 1000.0;

    let (nftables, nftables_note) = match (container.host_network, container.init_pid) {
        (true, _) => (
            false,
            Some("host network namespace: no nftables layer".to_string()),
        ),
        (false, None) => (
            false,
            Some("no init pid to enter the network namespace".to_string()),
        ),
        (false, Some(pid)) => match apply_nftables(pid, &rules) {
            Ok(()) => (true, None),
            Err(e) => (
                false,
                Some(format!(
                    "nftables layer not applied ({e}); the eBPF layer holds"
                )),
            ),
        },
    };

    let isolation = Isolation {
        container_id: container.id.clone(),
        container_name: container.name.clone(),
        cgroup_path: container.cgroup_path.clone(),
        since: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        reason: reason.map(str::to_string),
        allow: allow.to_vec(),
        actor: actor(),
        nftables,
        init_pid: container.init_pid,
        cgroup_id,
    };
    let state = state_path(&container.id);
    fs::create_dir_all(STATE_ROOT).map_err(io(STATE_ROOT))?;
    fs::write(
        &state,
        serde_json::to_vec_pretty(&isolation).expect("serializes"),
    )
    .map_err(io(&state))?;
    Ok(IsolateOutcome {
        isolation,
        changed: true,
        effective_after_ms,
        attached_at: Some(attached_at),
        nftables_note,
    })
}

fn attach_err(e: impl std::error::Error) -> IsolateError {
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

/// An exclusive lock over quarantine state, so concurrent isolates and releases of the same
/// container cannot undo each other's work. Held until dropped (closing the file unlocks).
struct StateLock {
    _file: fs::File,
}

impl StateLock {
    fn acquire() -> Result<StateLock, IsolateError> {
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

/// The nftables ruleset of the second layer: drop everything but loopback and the allow-list.
pub fn nft_ruleset(rules: &[AllowRule]) -> String {
    let mut input = String::new();
    let mut output = String::new();
    for r in rules {
        let fam = if r.addr.is_ipv4() { "ip" } else { "ip6" };
        let net = format!("{}/{}", r.addr, r.prefix);
        if r.port == 0 {
            input.push_str(&format!("    {fam} saddr {net} accept\n"));
            output.push_str(&format!("    {fam} daddr {net} accept\n"));
        } else {
            for proto in ["tcp", "udp"] {
                input.push_str(&format!(
                    "    {fam} saddr {net} {proto} sport {} accept\n",
                    r.port
                ));
                output.push_str(&format!(
                    "    {fam} daddr {net} {proto} dport {} accept\n",
                    r.port
                ));
            }
        }
    }
    // The final `counter drop` counts what this layer stops: it sees packets before the eBPF
    // layer does on the way out, so both layers' counts add up to what the container tried.
    format!(
        "table inet {NFT_TABLE} {{\n  chain input {{\n    type filter hook input priority -300; policy drop;\n    iif lo accept\n{input}    counter drop\n  }}\n  chain output {{\n    type filter hook output priority -300; policy drop;\n    oif lo accept\n{output}    counter drop\n  }}\n}}\n"
    )
}

fn nft_in_netns(pid: i32, script: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("nsenter")
        .args(["-n", "-t", &pid.to_string(), "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("nsenter/nft not available: {e}"))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn apply_nftables(pid: i32, rules: &[AllowRule]) -> Result<(), String> {
    nft_in_netns(pid, &nft_ruleset(rules))
}

/// What [`release`] did.
#[derive(Debug, Serialize)]
pub struct ReleaseOutcome {
    /// The quarantine that was lifted; None when the container was not isolated.
    pub released: Option<Isolation>,
    pub dropped: Dropped,
}

/// Lifts the quarantine of container `id` exactly: unpins the links (which detaches the
/// programs), removes the maps, the nftables table and the record. Works after the container
/// has exited too.
pub fn release(id: &str) -> Result<ReleaseOutcome, IsolateError> {
    let _lock = StateLock::acquire()?;
    let Some(isolation) = find(id) else {
        // Clean up anything stale left by an interrupted isolate.
        let _ = fs::remove_dir_all(pin_dir(id));
        let _ = fs::remove_file(state_path(id));
        return Ok(ReleaseOutcome {
            released: None,
            dropped: Dropped::default(),
        });
    };
    let dropped = dropped(id).unwrap_or_default();
    if let Ok(shared) = Shared::open() {
        shared.mark(isolation.cgroup_id, false)?;
        shared.set_allow_list(isolation.cgroup_id, &[])?;
        shared.clear_drops(isolation.cgroup_id);
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
    fs::remove_dir_all(&pins).map_err(io(&pins))?;
    if let (true, Some(pid)) = (isolation.nftables, isolation.init_pid)
        && let Err(e) = nft_in_netns(pid, &format!("delete table inet {NFT_TABLE}\n"))
    {
        log::info!("nftables table not removed ({e}); the container's netns is likely gone");
    }
    let state = state_path(id);
    fs::remove_file(&state).map_err(io(&state))?;
    Ok(ReleaseOutcome {
        released: Some(isolation),
        dropped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_rules_parse() {
        let r: AllowRule = "198.18.0.5".parse().unwrap();
        assert_eq!((r.prefix, r.port), (32, 0));
        let r: AllowRule = "198.18.0.0/24:443".parse().unwrap();
        assert_eq!(
            (r.prefix, r.port, r.to_string().as_str()),
            (24, 443, "198.18.0.0/24:443")
        );
        let r: AllowRule = "[2001:db8::1]:514".parse().unwrap();
        assert_eq!((r.prefix, r.port), (128, 514));
        let r: AllowRule = "2001:db8::/32".parse().unwrap();
        assert_eq!((r.prefix, r.port), (32, 0));
        for bad in [
            "",
            "host.example",
            "198.18.0.0/33",
            "198.18.0.1:http",
            "[::1",
        ] {
            assert!(bad.parse::<AllowRule>().is_err(), "{bad}");
        }
    }

    #[test]
    fn nft_ruleset_drops_all_but_loopback_and_allowed() {
        let rules = ["198.18.0.5", "198.18.1.0/24:514"].map(|r| r.parse().unwrap());
        let nft = nft_ruleset(&rules);
        assert!(nft.contains("policy drop") && nft.contains("iif lo accept"));
        assert!(nft.contains("ip daddr 198.18.0.5/32 accept"));
        assert!(nft.contains("ip daddr 198.18.1.0/24 tcp dport 514 accept"));
        assert!(nft.contains("ip saddr 198.18.1.0/24 udp sport 514 accept"));
    }

    #[test]
    fn ids_are_safe_one_to_one_file_names() {
        assert_eq!(safe_name("abc-1.2"), "abc-1.2");
        assert_eq!(safe_name("../../etc"), "_2e2e2f2e2e2f657463");
        assert_ne!(safe_name("a+b"), safe_name("a_b"));
        assert_eq!(safe_name("..."), "_2e2e2e");
        assert!(!safe_name("").is_empty());
    }

    #[test]
    fn overlapping_allow_rules_are_refused() {
        let rules = |v: &[&str]| {
            v.iter()
                .map(|r| r.parse().unwrap())
                .collect::<Vec<AllowRule>>()
        };
        assert!(check_allow_list(&rules(&["198.18.0.5:514", "198.18.1.0/24"])).is_ok());
        assert!(check_allow_list(&rules(&["198.18.0.5:514", "198.18.0.5:443"])).is_err());
        assert!(check_allow_list(&rules(&["198.18.0.0/24", "198.18.0.5:443"])).is_err());
        assert!(check_allow_list(&rules(&["198.18.0.0/24", "198.18.0.5"])).is_ok());
    }
}
