//! Network quarantine of a running container.
//!
//! [`isolate`] cuts a container off the network except to and from the allow-listed
//! collectors, while its processes keep running so responders can watch. Three layers, each
//! covering what the one before cannot (the two namespace-level ones are in [`netns`]):
//!
//! 1. **cgroup_skb** ingress and egress programs on the container's cgroup v2 directory: every
//!    IP packet of the container's own processes' inet sockets (TCP, UDP, ICMP, raw IP; IPv4
//!    and IPv6; established connections included), in any namespace, the host's too. Packet
//!    sockets (`AF_PACKET`) never pass these hooks, and a cgroup `sock_create` program could
//!    not refuse them either: the kernel runs it for inet sockets only (`inet_create`,
//!    `inet6_create`). One instance of the programs and maps is loaded once and pinned
//!    (`/sys/fs/bpf/quarry/isolate/shared/`), keyed by cgroup inside, so this layer is a few
//!    map updates and two attachments: milliseconds. Each container's links are pinned in
//!    `/sys/fs/bpf/quarry/isolate/containers/<id>/`, so the quarantine outlives the command.
//! 2. **nftables inside the container's network namespace**: IP of every process in the
//!    namespace (`inet`), and an `egress` chain (`netdev`) on each of its interfaces that stops
//!    every frame it sends (packet sockets with or without `PACKET_QDISC_BYPASS`, ARP, ND)
//!    before it crosses the veth: a capture on the host side sees nothing.
//! 3. **nftables on the host side** of the container's veth pairs (`netdev` ingress and egress
//!    of each host peer): nothing it sends reaches the host's stack or a bridge even if it
//!    could flush its own tables (CAP_NET_ADMIN), and nothing is sent its way, so its packet
//!    sockets cannot sniff either.
//!
//! ARP and ND pass only for allow-listed addresses and the gateways of the routes to them, so
//! the allow-list still resolves its neighbours and nothing else does. Layers 2 and 3 act on
//! the whole namespace: they are shared by the quarantined containers in it and
//! reference-counted by its cookie (unlike its inode, never reused while the system runs),
//! and a namespace is only ever entered by a descriptor whose inode and cookie are the ones
//! recorded at isolate time. A container with CAP_NET_ADMIN can delete layer 2 (status then
//! says so); layer 3 is out of its reach. Sockets open before the quarantine are cut like new ones: every layer looks at each
//! packet, none at connection state.
//!
//! A record of who isolated what, when and why sits in `/run/quarry/isolate/<id>.json`.
//! [`release`] undoes all of it; both are idempotent. This module must not enter a namespace
//! by pid alone, nor remove a shared layer another quarantine still needs.

pub mod netns;

use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
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

    /// The allow-list conflicts with those of isolated containers sharing the network
    /// namespace, whose shared layers follow the union of the lists.
    #[error(
        "the allow-list conflicts with those of {others}, isolated in the same network \
         namespace ({netns}), whose shared layers let the union of the lists through: {detail}; \
         give this container rules compatible with theirs"
    )]
    SharedAllowConflict {
        netns: u64,
        others: String,
        detail: String,
    },

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

/// Packets one layer dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LayerDrops {
    /// `cgroup_skb`, `netns` (nftables inside the namespace) or `host` (host-side nftables).
    pub layer: String,
    pub egress: u64,
    pub ingress: u64,
    /// Whether the layer was found in force: false when its tables are gone (a container with
    /// CAP_NET_ADMIN can delete those inside its own namespace; the host-side layer, which it
    /// cannot reach, still holds); None when it could not be checked (the namespace cannot be
    /// entered any more).
    pub in_place: Option<bool>,
    /// Other quarantined containers whose counts these include (namespace-level layers).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shared_with: Vec<String>,
}

/// Packets dropped by a quarantine so far: in total (no packet is counted by two layers) and
/// per layer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Dropped {
    pub egress: u64,
    pub ingress: u64,
    pub layers: Vec<LayerDrops>,
}

/// What [`isolate`] did.
#[derive(Debug, Serialize)]
pub struct IsolateOutcome {
    pub isolation: Isolation,
    /// False when the container was already isolated (nothing was changed).
    pub changed: bool,
    /// Milliseconds from the start of the call until the cgroup_skb layer was in force.
    pub effective_after_ms: f64,
    /// Milliseconds from the start of the call until every layer was in force.
    pub all_layers_after_ms: f64,
    /// When the cgroup_skb layer was in force (for callers measuring from their own start).
    #[serde(skip)]
    pub attached_at: Option<Instant>,
    /// Why a layer was not applied, when one was not (first line: the nftables layers).
    pub nftables_note: Option<String>,
    /// What else the responder should know: containers sharing the namespace, say.
    pub notes: Vec<String>,
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

/// Packets dropped so far by the quarantine of `id`, per layer. The namespace-level layers
/// count for every quarantined container of the namespace: their entries say which others.
pub fn dropped(id: &str) -> Option<Dropped> {
    let isolation = find(id)?;
    let cg = Shared::open()
        .ok()
        .and_then(|shared| {
            let per_cpu = shared.drops().ok()?.get(&isolation.cgroup_id, 0).ok()?;
            Some((
                per_cpu.iter().map(|c| c.egress).sum(),
                per_cpu.iter().map(|c| c.ingress).sum(),
            ))
        })
        .unwrap_or((0, 0));
    let mut layers = vec![LayerDrops {
        layer: "cgroup_skb".into(),
        egress: cg.0,
        ingress: cg.1,
        in_place: Some(pin_dir(id).join("egress").exists() && pin_dir(id).join("ingress").exists()),
        shared_with: Vec::new(),
    }];
    if let Some(rec) = isolation.netns_cookie.and_then(netns::NetnsRecord::load) {
        let shared_with: Vec<String> = rec
            .members
            .iter()
            .map(|m| m.container_id.clone())
            .filter(|c| *c != isolation.container_id)
            .collect();
        let (inside, host) = rec.drops();
        for (on, layer, counted) in [
            (rec.inside_layer, "netns", inside),
            (rec.host_layer, "host", host),
        ] {
            if on {
                layers.push(LayerDrops {
                    layer: layer.into(),
                    egress: counted.egress,
                    ingress: counted.ingress,
                    in_place: counted.in_place,
                    shared_with: shared_with.clone(),
                });
            }
        }
    }
    Some(Dropped {
        egress: layers.iter().map(|l| l.egress).sum(),
        ingress: layers.iter().map(|l| l.ingress).sum(),
        layers,
    })
}

/// What the namespace-level layers of one namespace are to be.
#[derive(Debug, Clone, Serialize)]
pub struct NetnsPlan {
    pub netns_inode: u64,
    /// Its cookie: the name of the host-side table is made from it.
    pub netns_cookie: u64,
    /// The quarantined containers of the namespace these layers serve.
    pub members: Vec<String>,
    /// The union of their allow-lists: what these layers let through.
    pub allow: Vec<AllowRule>,
    pub devices: netns::Devices,
    /// ARP/ND is let through for these only.
    pub neighbours: Vec<AllowRule>,
    /// The nft script run inside the namespace.
    pub netns_script: String,
    /// The nft script run in the host's namespace (None: no host-side peer was found).
    pub host_script: Option<String>,
    /// Why the interfaces could not be listed, when they could not.
    pub devices_error: Option<String>,
}

/// Plans the namespace-level layers for `members`: reads the interfaces and gateways inside
/// `ns` when given (else keeps `known` ones: the namespace could not be entered).
fn netns_plan(
    ino: u64,
    cookie: u64,
    ns: Option<&netns::Netns>,
    members: &[netns::Member],
    known: Option<&netns::NetnsRecord>,
) -> NetnsPlan {
    let mut allow: Vec<AllowRule> = Vec::new();
    for r in members.iter().flat_map(|m| &m.allow) {
        if !allow.contains(r) {
            allow.push(*r);
        }
    }
    let (devices, gateways, devices_error) = match ns {
        Some(ns) => match netns::devices(ns) {
            Ok(d) => (d, netns::gateways(ns, &allow), None),
            Err(e) => (netns::Devices::default(), Vec::new(), Some(e)),
        },
        None => (
            known.map(|k| k.devices.clone()).unwrap_or_default(),
            Vec::new(),
            None,
        ),
    };
    let neighbours = match (ns, known) {
        (None, Some(k)) => k.neighbours.clone(),
        _ => netns::neighbours(&allow, &gateways),
    };
    // When the interfaces could not be listed, the inside script filters IP only: its
    // netdev table needs their names.
    let netns_script = netns::netns_script(&allow, &neighbours, &devices.inside);
    let host_script = (!devices.host.is_empty())
        .then(|| netns::host_script(cookie, &allow, &neighbours, &devices.host));
    NetnsPlan {
        netns_inode: ino,
        netns_cookie: cookie,
        members: members.iter().map(|m| m.container_id.clone()).collect(),
        allow,
        devices,
        neighbours,
        netns_script,
        host_script,
        devices_error,
    }
}

/// Applies `plan`: inside through `ns` when given, on the host side in any case (the old
/// host table goes when there is no peer any more). Both at once: they are independent.
/// Returns the updated record and notes on what failed.
fn apply_netns_plan(
    plan: &NetnsPlan,
    ns: Option<&netns::Netns>,
    members: Vec<netns::Member>,
    was: Option<&netns::NetnsRecord>,
) -> (netns::NetnsRecord, Vec<String>) {
    let mut notes = Vec::new();
    let host_script = plan.host_script.clone().unwrap_or_else(|| {
        let t = netns::host_table(plan.netns_cookie);
        format!("table netdev {t} {{}}\ndelete table netdev {t}\n")
    });
    let (inside, host) = std::thread::scope(|s| {
        let inside = s.spawn(|| ns.map(|ns| netns::nft(ns.command("nft"), &plan.netns_script)));
        let host = netns::nft(Command::new("nft"), &host_script);
        (inside.join().unwrap_or(None), host)
    });
    let inside_layer = match inside {
        Some(Ok(())) => true,
        Some(Err(e)) => {
            notes.push(format!(
                "the nftables layer inside the network namespace was not applied ({e})"
            ));
            false
        }
        None => was.is_some_and(|w| w.inside_layer),
    };
    let host_layer = match (&plan.host_script, host) {
        (Some(_), Ok(())) => true,
        (Some(_), Err(e)) => {
            notes.push(format!(
                "the host-side nftables layer was not applied ({e})"
            ));
            false
        }
        (None, _) => {
            notes.push(
                "no host-side peer of the container's interfaces in the host's namespace \
                 (not a veth, or its peer is elsewhere): no host-side layer"
                    .into(),
            );
            false
        }
    };
    if !plan.devices.unsafe_inside.is_empty() {
        notes.push(format!(
            "interfaces {:?} inside the namespace have names nft cannot be given safely: the \
             inside layer filters their IP only; the host-side layer still covers their peers",
            plan.devices.unsafe_inside
        ));
    }
    if let Some(e) = &plan.devices_error {
        notes.push(format!(
            "the namespace's interfaces could not be listed ({e}): only its IP is filtered inside it"
        ));
    }
    let rec = netns::NetnsRecord {
        netns_inode: plan.netns_inode,
        netns_cookie: plan.netns_cookie,
        members,
        devices: plan.devices.clone(),
        neighbours: plan.neighbours.clone(),
        inside_layer,
        host_layer,
    };
    (rec, notes)
}

/// What `isolate --dry-run` shows: what would be attached, and where.
#[derive(Debug, Serialize)]
pub struct Plan {
    pub container_id: String,
    pub container_name: Option<String>,
    pub already_isolated: bool,
    /// The cgroup_skb layer: programs attached to this directory (inode `cgroup_id`).
    pub cgroup_dir: String,
    pub cgroup_id: u64,
    /// Where its links would be pinned.
    pub pins: String,
    /// The cgroup_skb allow-list (the container's own loopback added when it has its own
    /// namespace).
    pub cgroup_allow: Vec<AllowRule>,
    /// The namespace-level layers (None: host network, or no process to find it by).
    pub netns: Option<NetnsPlan>,
    pub notes: Vec<String>,
}

/// The allow-list of the cgroup_skb layer.
fn cgroup_rules(container: &Container, allow: &[AllowRule]) -> Vec<AllowRule> {
    let mut rules: Vec<AllowRule> = allow.to_vec();
    // The container's own loopback stays up when it has its own network namespace: it never
    // leaves the container. In the host's namespace loopback reaches host services: cut it.
    if !container.host_network {
        for lo in [
            AllowRule {
                addr: IpAddr::from([127, 0, 0, 0]),
                prefix: 8,
                port: 0,
            },
            AllowRule {
                addr: IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
                prefix: 128,
                port: 0,
            },
        ] {
            rules.push(lo);
        }
    }
    rules
}

/// A container's namespace, the members its layers would serve, and its record so far.
type Namespace = (netns::Netns, Vec<netns::Member>, Option<netns::NetnsRecord>);

/// The namespace of `container` (checked against the inode its inventory saw) and the
/// members its layers would serve with `allow` added for it; None when it has none to enter.
fn container_netns(
    container: &Container,
    allow: &[AllowRule],
) -> Result<Option<Namespace>, IsolateError> {
    if container.host_network {
        return Ok(None);
    }
    let Some(pid) = container.init_pid else {
        return Ok(None);
    };
    let Some(ns) = netns::open(pid, container.netns_inode, None) else {
        return Ok(None);
    };
    let was = netns::NetnsRecord::load(ns.cookie);
    let mut members: Vec<netns::Member> =
        was.as_ref().map(|r| r.members.clone()).unwrap_or_default();
    members.retain(|m| m.container_id != container.id);
    members.push(netns::Member {
        container_id: container.id.clone(),
        init_pid: Some(pid),
        allow: allow.to_vec(),
    });
    let mut union: Vec<AllowRule> = Vec::new();
    for r in members.iter().flat_map(|m| &m.allow) {
        if !union.contains(r) {
            union.push(*r);
        }
    }
    if members.len() > 1
        && let Err(IsolateError::OverlappingAllow(detail)) = check_allow_list(&union)
    {
        return Err(IsolateError::SharedAllowConflict {
            netns: ns.inode,
            others: members[..members.len() - 1]
                .iter()
                .map(|m| m.container_id.clone())
                .collect::<Vec<_>>()
                .join(", "),
            detail,
        });
    }
    Ok(Some((ns, members, was)))
}

fn sharing_notes(
    ino: u64,
    members: &[netns::Member],
    me: &str,
    others_in_netns: &[String],
) -> Vec<String> {
    let isolated: Vec<&str> = members
        .iter()
        .map(|m| m.container_id.as_str())
        .filter(|c| *c != me)
        .collect();
    let not_isolated: Vec<&str> = others_in_netns
        .iter()
        .map(String::as_str)
        .filter(|c| *c != me && !isolated.contains(c))
        .collect();
    let mut notes = Vec::new();
    if !not_isolated.is_empty() {
        notes.push(format!(
            "network namespace {ino} is shared with {}: the namespace-level layers cut them \
             too (every process and frame of the namespace, except to the allow-list); only \
             this container's own processes get the cgroup_skb layer",
            not_isolated.join(", ")
        ));
    }
    if !isolated.is_empty() {
        notes.push(format!(
            "network namespace {ino} is shared with the isolated {}: its namespace-level \
             layers now let the union of their allow-lists through, and stay until the last \
             of them is released",
            isolated.join(", ")
        ));
    }
    notes
}

/// What [`isolate`] would do, without doing any of it.
pub fn plan(
    container: &Container,
    cgroup_dir: &Path,
    allow: &[AllowRule],
    others_in_netns: &[String],
) -> Result<Plan, IsolateError> {
    check_allow_list(allow)?;
    let cgroup_id =
        std::os::unix::fs::MetadataExt::ino(&fs::metadata(cgroup_dir).map_err(io(cgroup_dir))?);
    let mut notes = Vec::new();
    if container.host_network {
        notes.push(
            "host network namespace: only the cgroup_skb layer (needs --force); no \
             namespace-level layer"
                .into(),
        );
    }
    let netns = match container_netns(container, allow)? {
        Some((ns, members, was)) => {
            notes.extend(sharing_notes(
                ns.inode,
                &members,
                &container.id,
                others_in_netns,
            ));
            Some(netns_plan(
                ns.inode,
                ns.cookie,
                Some(&ns),
                &members,
                was.as_ref(),
            ))
        }
        None => {
            if !container.host_network {
                notes.push(
                    "the container's network namespace cannot be entered (no init pid, or it \
                     changed): only the cgroup_skb layer"
                        .into(),
                );
            }
            None
        }
    };
    Ok(Plan {
        container_id: container.id.clone(),
        container_name: container.name.clone(),
        already_isolated: find(&container.id).is_some(),
        cgroup_dir: cgroup_dir.display().to_string(),
        cgroup_id,
        pins: pin_dir(&container.id).display().to_string(),
        cgroup_allow: cgroup_rules(container, allow),
        netns,
        notes,
    })
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
/// `others_in_netns`: ids of the other containers known to share its network namespace (the
/// outcome says what the quarantine means for them). `actor`: who asked, for the record.
pub fn isolate(
    container: &Container,
    cgroup_dir: &Path,
    allow: &[AllowRule],
    reason: Option<&str>,
    force: bool,
    others_in_netns: &[String],
    actor: &str,
) -> Result<IsolateOutcome, IsolateError> {
    let started = Instant::now();
    check_allow_list(allow)?;
    let _lock = StateLock::acquire()?;
    if let Some(existing) = find(&container.id) {
        return Ok(IsolateOutcome {
            isolation: existing,
            changed: false,
            effective_after_ms: 0.0,
            all_layers_after_ms: 0.0,
            attached_at: None,
            nftables_note: Some("already isolated; nothing changed".into()),
            notes: Vec::new(),
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
    // Before anything is attached: a conflict with the allow-lists of containers sharing the
    // namespace is refused, not half applied.
    let namespace = container_netns(container, allow)?;
    fs::create_dir_all(&pins).map_err(io(&pins))?;
    let rules = cgroup_rules(container, allow);

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

    let mut notes = Vec::new();
    let (nftables, host_layer, netns_id, nftables_note) = match namespace {
        None if container.host_network => (
            false,
            false,
            None,
            Some("host network namespace: no namespace-level layer".to_string()),
        ),
        None => (
            false,
            false,
            None,
            Some(
                "the network namespace cannot be entered (no init pid, or its namespace is \
                 not the one the inventory saw): only the cgroup_skb layer"
                    .to_string(),
            ),
        ),
        Some((ns, members, was)) => {
            notes.extend(sharing_notes(
                ns.inode,
                &members,
                &container.id,
                others_in_netns,
            ));
            let plan = netns_plan(ns.inode, ns.cookie, Some(&ns), &members, was.as_ref());
            let (rec, failed) = apply_netns_plan(&plan, Some(&ns), members, was.as_ref());
            rec.save()?;
            let note = (!failed.is_empty()).then(|| failed.join("; "));
            (
                rec.inside_layer,
                rec.host_layer,
                Some((ns.inode, ns.cookie)),
                note,
            )
        }
    };
    let all_layers_after_ms = started.elapsed().as_secs_f64() * 1000.0;

    let isolation = Isolation {
        container_id: container.id.clone(),
        container_name: container.name.clone(),
        cgroup_path: container.cgroup_path.clone(),
        since: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        reason: reason.map(str::to_string),
        allow: allow.to_vec(),
        actor: actor.to_string(),
        nftables,
        host_layer,
        init_pid: container.init_pid,
        netns_inode: netns_id.map(|n| n.0),
        netns_cookie: netns_id.map(|n| n.1),
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
        all_layers_after_ms,
        attached_at: Some(attached_at),
        nftables_note,
        notes,
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

/// What [`release`] did.
#[derive(Debug, Serialize)]
pub struct ReleaseOutcome {
    /// The quarantine that was lifted; None when the container was not isolated.
    pub released: Option<Isolation>,
    pub dropped: Dropped,
    /// What was left as it was, and why (a shared namespace, a namespace that is gone).
    pub notes: Vec<String>,
}

/// Lifts the quarantine of container `id` exactly: unpins the links (which detaches the
/// programs), removes its map entries and the record, and its share of the namespace-level
/// layers: those go with the last quarantined container of the namespace, and until then
/// follow the others' allow-lists. Works after the container has exited too; a namespace is
/// entered only when a recorded pid still lives in the recorded one.
pub fn release(id: &str) -> Result<ReleaseOutcome, IsolateError> {
    let _lock = StateLock::acquire()?;
    let Some(isolation) = find(id) else {
        // Clean up anything stale left by an interrupted isolate.
        let _ = fs::remove_dir_all(pin_dir(id));
        let _ = fs::remove_file(state_path(id));
        return Ok(ReleaseOutcome {
            released: None,
            dropped: Dropped::default(),
            notes: Vec::new(),
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
    let mut notes = Vec::new();
    match isolation.netns_cookie {
        Some(cookie) => release_netns_share(cookie, id, &mut notes)?,
        None if isolation.nftables => notes.push(format!(
            "this quarantine was recorded without its network namespace's inode: its nftables \
             table is left as it is (no pid is trusted to find the namespace; pid {} may be \
             another process's now)",
            isolation
                .init_pid
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into())
        )),
        None => {}
    }
    let state = state_path(id);
    fs::remove_file(&state).map_err(io(&state))?;
    Ok(ReleaseOutcome {
        released: Some(isolation),
        dropped,
        notes,
    })
}

/// Takes container `id` out of the namespace-level layers of the namespace with `cookie`.
fn release_netns_share(cookie: u64, id: &str, notes: &mut Vec<String>) -> Result<(), IsolateError> {
    let Some(rec) = netns::NetnsRecord::load(cookie) else {
        return Ok(());
    };
    let ino = rec.netns_inode;
    // The way in, found before this member goes: its own pid may be the only one left.
    let ns = rec.enter();
    let mut remaining = rec.members.clone();
    remaining.retain(|m| m.container_id != id);
    if remaining.is_empty() {
        match &ns {
            Some(ns) if rec.inside_layer => {
                if let Err(e) = netns::nft(ns.command("nft"), &netns::netns_delete_script()) {
                    notes.push(format!(
                        "the nftables tables inside network namespace {ino} were not removed ({e})"
                    ));
                }
            }
            Some(_) => {}
            None => notes.push(format!(
                "network namespace {ino} is gone, or none of the recorded pids ({}) is in it any \
                 more (a pid may have been reused): nothing inside any namespace was touched",
                rec.members
                    .iter()
                    .filter_map(|m| m.init_pid)
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
        let t = netns::host_table(cookie);
        if let Err(e) = netns::nft(
            Command::new("nft"),
            &format!("table netdev {t} {{}}\ndelete table netdev {t}\n"),
        ) {
            notes.push(format!("the host-side table {t} was not removed ({e})"));
        }
        return netns::NetnsRecord::remove(cookie);
    }
    // Others in the namespace are still isolated: their layers stay, narrowed to their
    // allow-lists (entered through one of theirs when this one's pid is gone).
    let ns = rec
        .members
        .iter()
        .filter(|m| m.container_id != id)
        .filter_map(|m| m.init_pid)
        .find_map(|pid| netns::open(pid, Some(ino), Some(cookie)))
        .or(ns);
    let plan = netns_plan(ino, cookie, ns.as_ref(), &remaining, Some(&rec));
    let others: Vec<String> = remaining.iter().map(|m| m.container_id.clone()).collect();
    let (new, failed) = apply_netns_plan(&plan, ns.as_ref(), remaining, Some(&rec));
    new.save()?;
    notes.push(format!(
        "network namespace {ino} is shared with the still-isolated {}: its namespace-level \
         layers stay",
        others.join(", ")
    ));
    notes.extend(failed);
    Ok(())
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
