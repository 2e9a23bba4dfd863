//! The network-namespace-level layers of a quarantine, and the one safe way into a namespace.
//!
//! Two nftables layers act on frames, whatever socket made them:
//!
//! * inside the container's namespace, table `inet quarry_quarantine` (IP of every process in
//!   the namespace, raw IP sockets included) and table `netdev quarry_quarantine`, an `egress`
//!   chain on each of its interfaces: every frame the namespace sends, from packet sockets too
//!   (`AF_PACKET`, with or without `PACKET_QDISC_BYPASS`, whose frames the kernel passes through
//!   the netfilter egress hook), ARP and ND included, is stopped before it crosses the veth, so
//!   even a capture on the host side of the pair sees nothing;
//! * in the host's namespace, table `netdev quarry_q_<netns cookie>` with an `ingress` and an
//!   `egress` chain on the host side of the container's veth pairs (a bridge port, often): what
//!   the container sends never reaches the host's stack, the bridge or other containers, even if
//!   a container with CAP_NET_ADMIN flushed its own tables; and nothing reaches it, so a packet
//!   socket inside cannot even sniff frames sent its way (taps see frames before any hook of
//!   the receiving side, so only the sending side can keep them from a sniffer).
//!
//! Neighbour resolution for the allow-list still works: ARP and ND pass only for allow-listed
//! addresses and the gateways of the namespace's routes to them (not its default gateway,
//! unless a collector lies beyond it). Both layers cut every process of the namespace, so
//! they are shared by the quarantined containers in it and reference-counted by the
//! namespace's cookie (`/run/quarry/isolate/netns/<cookie>.json`): they follow the union of their
//! allow-lists, and go with the last one released.
//!
//! A namespace is only ever entered through a descriptor opened from `/proc/<pid>/ns/net` whose
//! inode and cookie are the ones recorded at isolate time: a pid that has been reused by a
//! process of another namespace is never entered, even one whose namespace got the recorded
//! inode (inodes of gone namespaces are handed out again; cookies never are until reboot,
//! when the records in /run and the tables go too).

use std::fs;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde::{Deserialize, Serialize};

use crate::{AllowRule, IsolateError, STATE_ROOT, io};

/// Table of the layer inside the container's namespace (both families share the name).
pub const NETNS_TABLE: &str = "quarry_quarantine";

/// The host-side table for the namespace with cookie `cookie` (not its inode: a namespace
/// made after this one is gone may get the same inode, and its quarantine the same table).
pub fn host_table(cookie: u64) -> String {
    format!("quarry_q_{cookie}")
}

/// A descriptor of a network namespace, checked to be the expected one.
pub struct Netns {
    fd: OwnedFd,
    pub inode: u64,
    /// The kernel's cookie of the namespace: unlike its inode, never given to another
    /// namespace while the system runs.
    pub cookie: u64,
}

/// Opens the network namespace of `pid`; `None` when the process is gone or its namespace is
/// not the expected one: another inode, or (when recorded) another cookie. A pid can be
/// reused, and so can an inode once its namespace is gone (the kernel hands out the lowest
/// free number): only the cookie tells a new namespace from the recorded one.
pub fn open(pid: i32, inode: Option<u64>, cookie: Option<u64>) -> Option<Netns> {
    let path = format!("/proc/{pid}/ns/net");
    let file = fs::File::open(&path).ok()?;
    let ino = file.metadata().ok()?.ino();
    if inode.is_some_and(|e| e != ino) {
        return None;
    }
    let fd: OwnedFd = file.into();
    let found = netns_cookie(&fd).ok()?;
    if cookie.is_some_and(|c| c != found) {
        return None;
    }
    Some(Netns {
        fd,
        inode: ino,
        cookie: found,
    })
}

/// The cookie of the namespace `fd` refers to: read from a socket made in it, by a thread
/// that joins it for that and ends (the rest of the process stays where it is).
fn netns_cookie(fd: &OwnedFd) -> std::io::Result<u64> {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    let raw = fd.as_raw_fd();
    std::thread::scope(|s| {
        s.spawn(move || {
            // SAFETY: setns on a descriptor the caller keeps open, in this thread only; a
            // socket we close; getsockopt into a u64 we own.
            unsafe {
                if libc::setns(raw, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // A unix socket: belongs to the namespace, never touches the network.
                let sock = libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
                if sock < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let mut cookie = 0u64;
                let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
                let rc = libc::getsockopt(
                    sock,
                    libc::SOL_SOCKET,
                    SO_NETNS_COOKIE,
                    (&mut cookie as *mut u64).cast(),
                    &mut len,
                );
                let err = std::io::Error::last_os_error();
                libc::close(sock);
                if rc != 0 {
                    return Err(err);
                }
                Ok(cookie)
            }
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("cookie thread panicked")))
    })
}

impl Netns {
    /// `program` run inside this namespace (joined before exec, from the descriptor checked
    /// at open).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        let fd = self.fd.as_raw_fd();
        // SAFETY: setns is async-signal-safe; the descriptor stays open in the parent until
        // the child has exec'd (spawn waits for that).
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }
}

/// One network interface, as `ip -j link` shows it.
#[derive(Debug, Clone, Deserialize)]
struct IpLink {
    ifindex: u32,
    ifname: String,
    #[serde(default)]
    link_index: Option<u32>,
    #[serde(default)]
    link_netnsid: Option<i32>,
    #[serde(default)]
    link_type: String,
}

fn ip_links(cmd: &mut Command) -> Result<Vec<IpLink>, String> {
    let out = cmd
        .args(["-j", "link", "show"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("ip -j link: {e}"))
}

/// An interface on the host side of one of the container's veth pairs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostDevice {
    pub ifname: String,
    pub ifindex: u32,
}

/// The interfaces of a namespace: its own (but loopback) and their host-side peers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Devices {
    /// Interfaces inside the namespace (the `egress` chain's devices).
    pub inside: Vec<String>,
    /// Host-side peers of its veth pairs (the host table's devices).
    pub host: Vec<HostDevice>,
    /// Interfaces inside whose names nft cannot be given safely: not in the inside layer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unsafe_inside: Vec<String>,
}

/// Finds the namespace's interfaces and the host-side peers of its veths: a host interface is
/// a peer when its own peer lives in this namespace (by the id the host gives the namespace,
/// not by a name or index the container could choose) and is one of these interfaces.
pub fn devices(ns: &Netns) -> Result<Devices, String> {
    let inside = ip_links(&mut ns.command("ip"))?;
    // The host's dump first: listing a veth gives its peer's namespace an id.
    let host = ip_links(&mut Command::new("ip"))?;
    let nsid = nsid_of(ns).map_err(|e| format!("RTM_GETNSID: {e}"))?;
    let mut d = Devices::default();
    for l in &inside {
        // Loopback by its type, not its name: with CAP_NET_ADMIN a container can rename its
        // veth `lo` (and its loopback something else).
        if l.link_type != "loopback" {
            // Names inside the namespace are the container's to choose (with CAP_NET_ADMIN):
            // only names that cannot change the meaning of a ruleset go into one. A name that
            // cannot is left out of the inside layer (and said so), never a reason to skip
            // the host-side layer, which finds its devices by index.
            if safe_ifname(&l.ifname) {
                d.inside.push(l.ifname.clone());
            } else {
                d.unsafe_inside.push(l.ifname.clone());
            }
        }
    }
    if let Some(nsid) = nsid {
        for h in &host {
            if h.link_netnsid == Some(nsid)
                && let Some(peer) = h.link_index
                && inside
                    .iter()
                    .any(|c| c.ifindex == peer && c.link_index == Some(h.ifindex))
                && safe_ifname(&h.ifname)
            {
                d.host.push(HostDevice {
                    ifname: h.ifname.clone(),
                    ifindex: h.ifindex,
                });
            }
        }
    }
    Ok(d)
}

fn safe_ifname(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
}

/// The id this (the host's) namespace gives `ns`, if it gave one (it does once a veth between
/// them has been listed).
fn nsid_of(ns: &Netns) -> std::io::Result<Option<i32>> {
    const RTM_NEWNSID: u16 = 88;
    const RTM_GETNSID: u16 = 90;
    const NETNSA_NSID: u16 = 1;
    const NETNSA_FD: u16 = 3;
    // SAFETY: plain socket creation; the descriptor is owned below.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let sock: OwnedFd = unsafe { std::os::fd::FromRawFd::from_raw_fd(raw) };
    // nlmsghdr (16) + rtgenmsg padded (4) + nlattr (4) + u32 fd (4).
    let mut req = [0u8; 28];
    req[0..4].copy_from_slice(&28u32.to_ne_bytes());
    req[4..6].copy_from_slice(&RTM_GETNSID.to_ne_bytes());
    req[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    req[16] = libc::AF_UNSPEC as u8;
    req[20..22].copy_from_slice(&8u16.to_ne_bytes());
    req[22..24].copy_from_slice(&NETNSA_FD.to_ne_bytes());
    req[24..28].copy_from_slice(&(ns.fd.as_raw_fd() as u32).to_ne_bytes());
    // SAFETY: sending a buffer we own on our socket (to the kernel: no address needed).
    if unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut buf = [0u8; 256];
    // SAFETY: receiving into a buffer we own.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 20 {
        return Err(std::io::Error::last_os_error());
    }
    let n = n as usize;
    let kind = u16::from_ne_bytes([buf[4], buf[5]]);
    if kind == libc::NLMSG_ERROR as u16 {
        let err = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
        return Err(std::io::Error::from_raw_os_error(-err));
    }
    if kind != RTM_NEWNSID {
        return Ok(None);
    }
    let mut off = 20;
    while off + 4 <= n {
        let len = u16::from_ne_bytes([buf[off], buf[off + 1]]) as usize;
        let ty = u16::from_ne_bytes([buf[off + 2], buf[off + 3]]);
        if len < 4 || off + len > n {
            break;
        }
        if ty == NETNSA_NSID && len >= 8 {
            let id = i32::from_ne_bytes([buf[off + 4], buf[off + 5], buf[off + 6], buf[off + 7]]);
            return Ok((id >= 0).then_some(id));
        }
        off += (len + 3) & !3;
    }
    Ok(None)
}

/// The gateways the namespace reaches the allow-listed networks through (its routes to them):
/// the only neighbours beyond the allow-list itself that ARP/ND is let through for. Not every
/// gateway: the default one is, typically, the host-side address, and ARP to it must stay cut
/// when no allow-listed collector lies beyond it. A network spread over several routes is
/// looked up by its first address.
pub fn gateways(ns: &Netns, allow: &[AllowRule]) -> Vec<IpAddr> {
    #[derive(Deserialize)]
    struct Route {
        #[serde(default)]
        gateway: Option<String>,
    }
    let mut out = Vec::new();
    for r in allow {
        let Ok(o) = ns
            .command("ip")
            .args(["-j", "route", "get", &r.addr.to_string()])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
        else {
            continue;
        };
        let routes: Vec<Route> = serde_json::from_slice(&o.stdout).unwrap_or_default();
        for route in routes {
            if let Some(g) = route.gateway.and_then(|g| g.parse::<IpAddr>().ok())
                && !out.contains(&g)
            {
                out.push(g);
            }
        }
    }
    out
}

/// Which way a chain's packets go, seen from the container.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    /// Leaving it: the remote end is the destination.
    Out,
    /// Entering it: the remote end is the source.
    In,
}

/// Accept rules for the allow-list (and, with `neighbours`, ARP/ND for them and the
/// gateways); `arp`: whether the family sees ARP (netdev does, inet does not).
fn accept_rules(way: Way, allow: &[AllowRule], neighbours: &[AllowRule], arp: bool) -> String {
    let (a, p) = match way {
        Way::Out => ("daddr", "dport"),
        Way::In => ("saddr", "sport"),
    };
    let mut s = String::new();
    for r in allow {
        let fam = if r.addr.is_ipv4() { "ip" } else { "ip6" };
        let net = format!("{}/{}", r.addr, r.prefix);
        if r.port == 0 {
            s.push_str(&format!("    {fam} {a} {net} accept\n"));
        } else {
            for proto in ["tcp", "udp"] {
                s.push_str(&format!(
                    "    {fam} {a} {net} {proto} {p} {} accept\n",
                    r.port
                ));
            }
        }
    }
    for n in neighbours {
        let net = format!("{}/{}", n.addr, n.prefix);
        match (n.addr, way) {
            (IpAddr::V4(_), _) if arp => {
                // ARP's target address on the way out, its sender's on the way in.
                s.push_str(&format!(
                    "    arp operation {{ request, reply }} arp {a} ip {net} accept\n"
                ));
            }
            (IpAddr::V4(_), _) => {}
            (IpAddr::V6(v6), Way::Out) => {
                // A solicitation goes to a multicast group: its target (at bit 64 of the
                // ICMPv6 header) names the neighbour; an advertisement goes to the asker.
                let target = if n.prefix == 0 {
                    String::new()
                } else {
                    let bits = u128::from(v6) >> (128 - u32::from(n.prefix));
                    format!(" @th,64,{} 0x{bits:x}", n.prefix)
                };
                s.push_str(&format!(
                    "    icmpv6 type nd-neighbor-solicit{target} accept\n    icmpv6 type nd-neighbor-advert ip6 daddr {net} accept\n"
                ));
            }
            (IpAddr::V6(_), Way::In) => {
                s.push_str(&format!(
                    "    icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert }} ip6 saddr {net} accept\n"
                ));
            }
        }
    }
    s
}

fn devices_set(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    format!("{{ {} }}", quoted.join(", "))
}

/// The neighbours ARP/ND is let through for: the allow-listed networks and the gateways.
pub fn neighbours(allow: &[AllowRule], gateways: &[IpAddr]) -> Vec<AllowRule> {
    let mut out: Vec<AllowRule> = allow.iter().map(|r| AllowRule { port: 0, ..*r }).collect();
    for g in gateways {
        let prefix = if g.is_ipv4() { 32 } else { 128 };
        let rule = AllowRule {
            addr: *g,
            prefix,
            port: 0,
        };
        if !out.contains(&rule) {
            out.push(rule);
        }
    }
    out
}

/// The script that (re)creates the layer inside the namespace, atomically (one nft
/// transaction: the old tables go and the new ones come in the same step).
pub fn netns_script(allow: &[AllowRule], neighbours: &[AllowRule], inside: &[String]) -> String {
    let t = NETNS_TABLE;
    let mut s = format!(
        "table inet {t} {{}}\ndelete table inet {t}\ntable netdev {t} {{}}\ndelete table netdev {t}\n"
    );
    // The final `counter drop` counts what each chain stops. On the way out this layer sees
    // packets before the cgroup_skb layer does, on the way in before the socket does: the
    // layers' counts add up, none counts a packet another already dropped.
    s.push_str(&format!(
        "table inet {t} {{\n  chain input {{\n    type filter hook input priority -300; policy drop;\n    meta iiftype loopback accept\n{}    counter drop\n  }}\n  chain output {{\n    type filter hook output priority -300; policy drop;\n    meta oiftype loopback accept\n{}    counter drop\n  }}\n}}\n",
        accept_rules(Way::In, allow, neighbours, false),
        accept_rules(Way::Out, allow, neighbours, false),
    ));
    if !inside.is_empty() {
        s.push_str(&format!(
            "table netdev {t} {{\n  chain egress {{\n    type filter hook egress devices = {} priority -300; policy drop;\n{}    counter drop\n  }}\n}}\n",
            devices_set(inside),
            accept_rules(Way::Out, allow, neighbours, true),
        ));
    }
    s
}

/// The script that deletes the layer inside the namespace.
pub fn netns_delete_script() -> String {
    let t = NETNS_TABLE;
    format!(
        "table inet {t} {{}}\ndelete table inet {t}\ntable netdev {t} {{}}\ndelete table netdev {t}\n"
    )
}

/// The script that (re)creates the host-side table of the namespace with cookie `cookie`.
pub fn host_script(
    cookie: u64,
    allow: &[AllowRule],
    neighbours: &[AllowRule],
    host: &[HostDevice],
) -> String {
    let t = host_table(cookie);
    let mut s = format!("table netdev {t} {{}}\ndelete table netdev {t}\n");
    if !host.is_empty() {
        let names: Vec<String> = host.iter().map(|h| h.ifname.clone()).collect();
        s.push_str(&format!(
            "table netdev {t} {{\n  chain from_container {{\n    type filter hook ingress devices = {d} priority -300; policy drop;\n{}    counter drop\n  }}\n  chain to_container {{\n    type filter hook egress devices = {d} priority -300; policy drop;\n{}    counter drop\n  }}\n}}\n",
            accept_rules(Way::Out, allow, neighbours, true),
            accept_rules(Way::In, allow, neighbours, true),
            d = devices_set(&names),
        ));
    }
    s
}

/// Feeds `script` to `nft -f -` run by `cmd` (in whatever namespace `cmd` enters).
pub fn nft(mut cmd: Command, script: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = cmd
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft not available: {e}"))?;
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

/// (out, in) packets counted by the final drop rules of `family table` as `cmd` sees it:
/// chains `output`, `egress` and `from_container` count what leaves, the others what enters.
/// None when the table is not there (a container with CAP_NET_ADMIN can delete the tables in
/// its own namespace).
pub fn counters(mut cmd: Command, family: &str, table: &str) -> Option<(u64, u64)> {
    let out: Output = cmd
        .args(["-j", "list", "table", family, table])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v = serde_json::from_slice::<serde_json::Value>(&out.stdout).ok()?;
    let (mut egress, mut ingress) = (0, 0);
    for item in v["nftables"].as_array().into_iter().flatten() {
        let rule = &item["rule"];
        let packets = rule["expr"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|e| e["counter"]["packets"].as_u64());
        match (rule["chain"].as_str(), packets) {
            (Some("output" | "egress" | "from_container"), Some(p)) => egress += p,
            (Some(_), Some(p)) => ingress += p,
            _ => {}
        }
    }
    Some((egress, ingress))
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
    /// The namespace's cookie (see [`Netns::cookie`]): the record's key.
    pub netns_cookie: u64,
    pub members: Vec<Member>,
    pub devices: Devices,
    /// ARP/ND let through for these (allow-list networks and gateways).
    pub neighbours: Vec<AllowRule>,
    /// Whether the tables inside the namespace are in place.
    pub inside_layer: bool,
    /// Whether the host-side table is in place.
    pub host_layer: bool,
}

fn netns_dir() -> PathBuf {
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
        let mut out: Vec<AllowRule> = Vec::new();
        for m in &self.members {
            for r in &m.allow {
                if !out.contains(r) {
                    out.push(*r);
                }
            }
        }
        out
    }

    /// The namespace, entered through any member's pid whose namespace is still this one.
    pub fn enter(&self) -> Option<Netns> {
        self.members
            .iter()
            .filter_map(|m| m.init_pid)
            .find_map(|pid| open(pid, Some(self.netns_inode), Some(self.netns_cookie)))
    }

    /// Drops counted by the layer inside the namespace and by the host-side table.
    pub fn drops(&self) -> (Counted, Counted) {
        let inside = match self.enter() {
            Some(ns) => {
                let inet = counters(ns.command("nft"), "inet", NETNS_TABLE);
                let netdev = if self.devices.inside.is_empty() {
                    Some((0, 0))
                } else {
                    counters(ns.command("nft"), "netdev", NETNS_TABLE)
                };
                Counted::from(
                    inet.zip(netdev)
                        .map(|((o1, i1), (o2, i2))| (o1 + o2, i1 + i2)),
                )
            }
            None => Counted::default(),
        };
        let host = Counted::from(counters(
            Command::new("nft"),
            "netdev",
            &host_table(self.netns_cookie),
        ));
        (inside, host)
    }
}

/// What one namespace-level layer counted, and whether its tables were found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counted {
    /// None: not checked (the namespace cannot be entered any more).
    pub in_place: Option<bool>,
    pub egress: u64,
    pub ingress: u64,
}

impl From<Option<(u64, u64)>> for Counted {
    fn from(c: Option<(u64, u64)>) -> Counted {
        let (egress, ingress) = c.unwrap_or_default();
        Counted {
            in_place: Some(c.is_some()),
            egress,
            ingress,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_allow_only_the_list_and_its_neighbours() {
        let allow: Vec<AllowRule> = ["198.18.1.5:514", "[2001:2::5]:514"]
            .iter()
            .map(|r| r.parse().unwrap())
            .collect();
        let n = neighbours(&allow, &["198.18.1.1".parse().unwrap()]);
        let s = netns_script(&allow, &n, &["eth0".into()]);
        assert!(s.contains("hook egress devices = { \"eth0\" } priority -300; policy drop;"));
        assert!(s.contains("ip daddr 198.18.1.5/32 udp dport 514 accept"));
        assert!(s.contains("arp operation { request, reply } arp daddr ip 198.18.1.1/32 accept"));
        assert!(s.contains(
            "icmpv6 type nd-neighbor-solicit @th,64,128 0x20010002000000000000000000000005 accept"
        ));
        // ARP is not something the inet family sees.
        let inet = s
            .split("table netdev quarry_quarantine {\n")
            .next()
            .unwrap();
        assert!(!inet.contains("arp operation"));
        let h = host_script(
            7,
            &allow,
            &n,
            &[HostDevice {
                ifname: "veth1".into(),
                ifindex: 9,
            }],
        );
        assert!(h.contains("table netdev quarry_q_7 {\n"));
        assert!(h.contains("hook ingress devices = { \"veth1\" }"));
        assert!(h.contains("ip saddr 198.18.1.5/32 tcp sport 514 accept"));
        assert!(h.contains("arp operation { request, reply } arp saddr ip 198.18.1.1/32 accept"));
        assert!(h.ends_with("    counter drop\n  }\n}\n"));
    }
}
