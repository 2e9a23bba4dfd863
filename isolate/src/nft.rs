//! The nftables side of the namespace-level layers: the rulesets, built once as data
//! ([`Ruleset`]: tables, chains, rules of plain conditions), which [`crate::nfnl`] applies
//! in-process and [`Ruleset::script`] renders as the equivalent `nft` script (for `--dry-run`,
//! and for `nft -f` should the kernel refuse the in-process batch); and what the kernel lists
//! back through `nft -j` (drop counters, and a fingerprint of the rules to tell a tampered
//! table from the one installed).
//!
//! Names that go into a ruleset are checked by the caller ([`crate::netns::devices`] keeps
//! only names that cannot change a script's meaning); addresses come from the kernel or the
//! parsed allow-list. This module must not decide which namespace anything runs in: it is
//! given a checked [`Netns`] (or none: the host's), and it never enters one by pid.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::AllowRule;
use crate::netns::{Devices, Netns};

/// Table of the layer inside the container's namespace (both families share the name).
pub const NETNS_TABLE: &str = "quarry_quarantine";

/// The host-side table for the namespace with cookie `cookie` (not its inode: a namespace
/// made after this one is gone may get the same inode, and its quarantine the same table).
pub fn host_table(cookie: u64) -> String {
    format!("quarry_q_{cookie}")
}

/// A table's family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Inet,
    Netdev,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Netdev => "netdev",
        }
    }
}

/// Where a chain hooks in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Input,
    Output,
    Ingress,
    Egress,
}

/// One condition of a rule (a rule matches when all of its conditions do). Each says what
/// it compares; the family dependencies (IPv4 or IPv6, TCP or UDP) are implied, as in nft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// Came in through, or goes out of, a loopback interface (by its type).
    InLoopback,
    OutLoopback,
    /// Came in through, or goes out of, this interface: by index (what the kernel compares)
    /// and name (what a person reads; nft resolves it to the same index).
    InDev(u32, String),
    OutDev(u32, String),
    /// IP source (or destination) in a network.
    Addr {
        dst: bool,
        addr: IpAddr,
        prefix: u8,
    },
    /// TCP (6) or UDP (17) source (or destination) port.
    Port {
        proto: u8,
        dst: bool,
        port: u16,
    },
    /// An Ethernet/IPv4 ARP request (1) or reply (2).
    ArpOp(u16),
    /// ARP sender (or target) protocol address in a network.
    ArpIp {
        sender: bool,
        addr: Ipv4Addr,
        prefix: u8,
    },
    /// ARP sender hardware address.
    ArpSenderMac([u8; 6]),
    /// ICMPv6 type (135 neighbour solicitation, 136 advertisement).
    Icmp6Type(u8),
    /// The target of a neighbour solicitation or advertisement in a network.
    NdTarget {
        addr: Ipv6Addr,
        prefix: u8,
    },
}

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    /// Counts the packet, then drops it: the final rule of each chain.
    CountDrop,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub verdict: Verdict,
}

/// A base chain: priority -300 (before anything else at its hook), policy drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: &'static str,
    pub hook: Hook,
    /// The interfaces of a netdev chain.
    pub devices: Vec<String>,
    pub rules: Vec<Rule>,
}

pub const PRIORITY: i32 = -300;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub family: Family,
    pub name: String,
    pub chains: Vec<Chain>,
}

/// One atomic change: tables removed (when there), then tables created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    pub delete: Vec<(Family, String)>,
    pub create: Vec<Table>,
}

impl Ruleset {
    /// The same change as an nft script (what `--dry-run` shows, and what nft would apply).
    pub fn script(&self) -> String {
        let mut s = String::new();
        for (family, name) in &self.delete {
            let f = family.name();
            s.push_str(&format!("table {f} {name} {{}}\ndelete table {f} {name}\n"));
        }
        for t in &self.create {
            s.push_str(&format!("table {} {} {{\n", t.family.name(), t.name));
            for c in &t.chains {
                let hook = match c.hook {
                    Hook::Input => "input",
                    Hook::Output => "output",
                    Hook::Ingress => "ingress",
                    Hook::Egress => "egress",
                };
                let devices = if c.devices.is_empty() {
                    String::new()
                } else {
                    format!(" devices = {}", devices_set(&c.devices))
                };
                s.push_str(&format!(
                    "  chain {} {{\n    type filter hook {hook}{devices} priority {PRIORITY}; policy drop;\n",
                    c.name
                ));
                for r in &c.rules {
                    s.push_str("    ");
                    for m in &r.matches {
                        s.push_str(&match_text(m));
                        s.push(' ');
                    }
                    s.push_str(match r.verdict {
                        Verdict::Accept => "accept\n",
                        Verdict::CountDrop => "counter drop\n",
                    });
                }
                s.push_str("  }\n");
            }
            s.push_str("}\n");
        }
        s
    }
}

fn match_text(m: &Match) -> String {
    match m {
        Match::InLoopback => "meta iiftype loopback".into(),
        Match::OutLoopback => "meta oiftype loopback".into(),
        Match::InDev(_, name) => format!("iif \"{name}\""),
        Match::OutDev(_, name) => format!("oif \"{name}\""),
        Match::Addr { dst, addr, prefix } => format!(
            "{} {} {addr}/{prefix}",
            if addr.is_ipv4() { "ip" } else { "ip6" },
            if *dst { "daddr" } else { "saddr" }
        ),
        Match::Port { proto, dst, port } => format!(
            "{} {} {port}",
            if *proto == 6 { "tcp" } else { "udp" },
            if *dst { "dport" } else { "sport" }
        ),
        Match::ArpOp(op) => format!(
            "arp operation {}",
            if *op == 1 { "request" } else { "reply" }
        ),
        Match::ArpIp {
            sender,
            addr,
            prefix,
        } => format!(
            "arp {} ip {addr}/{prefix}",
            if *sender { "saddr" } else { "daddr" }
        ),
        Match::ArpSenderMac(mac) => format!("arp saddr ether {}", mac_text(mac)),
        Match::Icmp6Type(t) => format!(
            "icmpv6 type {}",
            if *t == 135 {
                "nd-neighbor-solicit"
            } else {
                "nd-neighbor-advert"
            }
        ),
        Match::NdTarget { addr, prefix } => {
            if *prefix == 0 {
                // Matches every target; nft has no empty raw match, the type says enough.
                "icmpv6 code 0".into()
            } else {
                let bits = u128::from(*addr) >> (128 - u32::from(*prefix));
                format!("@th,64,{prefix} 0x{bits:x}")
            }
        }
    }
}

/// Which way a chain's packets go, seen from the container.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    /// Leaving it: the remote end is the destination, the container the sender.
    Out,
    /// Entering it: the remote end is the source, the container the target.
    In,
}

/// An interface a chain's neighbour rules name, with the container's own addresses on it:
/// the only senders of ARP/ND leaving through it, the only targets of ARP entering.
struct Port {
    dev: Match,
    own: Vec<IpAddr>,
    mac: Option<[u8; 6]>,
}

fn rule(matches: Vec<Match>) -> Rule {
    Rule {
        matches,
        verdict: Verdict::Accept,
    }
}

/// Accept rules for the allow-list's IP traffic.
fn allow_rules(way: Way, allow: &[AllowRule]) -> Vec<Rule> {
    let dst = way == Way::Out;
    let mut out = Vec::new();
    for r in allow {
        let addr = Match::Addr {
            dst,
            addr: r.addr,
            prefix: r.prefix,
        };
        if r.port == 0 {
            out.push(rule(vec![addr]));
        } else {
            for proto in [6, 17] {
                out.push(rule(vec![
                    addr.clone(),
                    Match::Port {
                        proto,
                        dst,
                        port: r.port,
                    },
                ]));
            }
        }
    }
    out
}

/// Accept rules for ARP (when the family sees it: netdev does, inet does not) and ND with
/// `neighbours`, through each of `ports`, sent by the container's own addresses on it only
/// (its hardware address too for ARP): an allowed neighbour cannot be used to poison the
/// other side's caches with an address that is not the container's. One rule per sender:
/// no sets, so the kernel's view is as plain as the script.
fn neighbour_rules(way: Way, neighbours: &[AllowRule], ports: &[Port], arp: bool) -> Vec<Rule> {
    let mut out = Vec::new();
    for port in ports {
        let own4: Vec<Ipv4Addr> = port
            .own
            .iter()
            .filter_map(|a| match a {
                IpAddr::V4(v) => Some(*v),
                IpAddr::V6(_) => None,
            })
            .collect();
        let own6: Vec<Ipv6Addr> = port
            .own
            .iter()
            .filter_map(|a| match a {
                IpAddr::V6(v) => Some(*v),
                IpAddr::V4(_) => None,
            })
            .collect();
        for n in neighbours {
            match (n.addr, way) {
                (IpAddr::V4(_), _) if !arp => {}
                (IpAddr::V4(v4), Way::Out) => {
                    for op in [1, 2] {
                        for own in &own4 {
                            let mut m = vec![
                                port.dev.clone(),
                                Match::ArpOp(op),
                                Match::ArpIp {
                                    sender: true,
                                    addr: *own,
                                    prefix: 32,
                                },
                            ];
                            if let Some(mac) = port.mac {
                                m.push(Match::ArpSenderMac(mac));
                            }
                            m.push(Match::ArpIp {
                                sender: false,
                                addr: v4,
                                prefix: n.prefix,
                            });
                            out.push(rule(m));
                        }
                    }
                }
                (IpAddr::V4(v4), Way::In) => {
                    for op in [1, 2] {
                        for own in &own4 {
                            out.push(rule(vec![
                                port.dev.clone(),
                                Match::ArpOp(op),
                                Match::ArpIp {
                                    sender: true,
                                    addr: v4,
                                    prefix: n.prefix,
                                },
                                Match::ArpIp {
                                    sender: false,
                                    addr: *own,
                                    prefix: 32,
                                },
                            ]));
                        }
                    }
                }
                (IpAddr::V6(v6), Way::Out) => {
                    // A solicitation goes to a multicast group: its target names the
                    // neighbour; its source is one of ours, or unspecified while an address
                    // is checked for duplicates.
                    let senders = own6
                        .iter()
                        .copied()
                        .chain((!own6.is_empty()).then_some(Ipv6Addr::UNSPECIFIED));
                    for from in senders {
                        out.push(rule(vec![
                            port.dev.clone(),
                            Match::Addr {
                                dst: false,
                                addr: IpAddr::V6(from),
                                prefix: 128,
                            },
                            Match::Icmp6Type(135),
                            Match::NdTarget {
                                addr: v6,
                                prefix: n.prefix,
                            },
                        ]));
                    }
                    // An advertisement goes to the asker, from the address it advertises,
                    // which must be ours.
                    for own in &own6 {
                        out.push(rule(vec![
                            port.dev.clone(),
                            Match::Addr {
                                dst: false,
                                addr: IpAddr::V6(*own),
                                prefix: 128,
                            },
                            Match::Addr {
                                dst: true,
                                addr: n.addr,
                                prefix: n.prefix,
                            },
                            Match::Icmp6Type(136),
                            Match::NdTarget {
                                addr: *own,
                                prefix: 128,
                            },
                        ]));
                    }
                }
                (IpAddr::V6(_), Way::In) => {
                    for t in [135, 136] {
                        out.push(rule(vec![
                            port.dev.clone(),
                            Match::Addr {
                                dst: false,
                                addr: n.addr,
                                prefix: n.prefix,
                            },
                            Match::Icmp6Type(t),
                        ]));
                    }
                }
            }
        }
    }
    out
}

fn devices_set(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    format!("{{ {} }}", quoted.join(", "))
}

fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The inside interfaces nft may be given, as ports (`out`: the way out of them).
fn inside_ports(devices: &Devices, out: bool) -> Vec<Port> {
    devices
        .inside
        .iter()
        .filter_map(|name| {
            let own = devices.own.iter().find(|o| &o.ifname == name)?;
            Some(Port {
                dev: if out {
                    Match::OutDev(own.ifindex, name.clone())
                } else {
                    Match::InDev(own.ifindex, name.clone())
                },
                own: own.addrs.clone(),
                mac: own.mac,
            })
        })
        .collect()
}

/// The host-side peers as ports (`out`: the way out of them, towards the container), with
/// the addresses of the container's end.
fn host_ports(devices: &Devices, out: bool) -> Vec<Port> {
    devices
        .host
        .iter()
        .map(|h| {
            let own = devices
                .own
                .iter()
                .find(|o| Some(o.ifindex) == h.peer_ifindex);
            Port {
                dev: if out {
                    Match::OutDev(h.ifindex, h.ifname.clone())
                } else {
                    Match::InDev(h.ifindex, h.ifname.clone())
                },
                own: own.map(|o| o.addrs.clone()).unwrap_or_default(),
                mac: own.and_then(|o| o.mac),
            }
        })
        .collect()
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

fn chain(name: &'static str, hook: Hook, devices: Vec<String>, mut rules: Vec<Rule>) -> Chain {
    // The final `counter drop` counts what each chain stops. On the way out this layer sees
    // packets before the cgroup_skb layer does, on the way in before the socket does: the
    // layers' counts add up, none counts a packet another already dropped.
    rules.push(Rule {
        matches: Vec::new(),
        verdict: Verdict::CountDrop,
    });
    Chain {
        name,
        hook,
        devices,
        rules,
    }
}

/// The tables of the layer inside the namespace, as `(family, name)`.
fn inside_table_names() -> Vec<(Family, String)> {
    vec![
        (Family::Inet, NETNS_TABLE.to_string()),
        (Family::Netdev, NETNS_TABLE.to_string()),
    ]
}

/// The change that (re)creates the layer inside the namespace, atomically (one transaction:
/// the old tables go and the new ones come in the same step).
pub fn netns_ruleset(allow: &[AllowRule], neighbours: &[AllowRule], devices: &Devices) -> Ruleset {
    let mut input = vec![rule(vec![Match::InLoopback])];
    input.extend(allow_rules(Way::In, allow));
    input.extend(neighbour_rules(
        Way::In,
        neighbours,
        &inside_ports(devices, false),
        false,
    ));
    let mut output = vec![rule(vec![Match::OutLoopback])];
    output.extend(allow_rules(Way::Out, allow));
    output.extend(neighbour_rules(
        Way::Out,
        neighbours,
        &inside_ports(devices, true),
        false,
    ));
    let mut create = vec![Table {
        family: Family::Inet,
        name: NETNS_TABLE.into(),
        chains: vec![
            chain("input", Hook::Input, Vec::new(), input),
            chain("output", Hook::Output, Vec::new(), output),
        ],
    }];
    if !devices.inside.is_empty() {
        let mut egress = allow_rules(Way::Out, allow);
        egress.extend(neighbour_rules(
            Way::Out,
            neighbours,
            &inside_ports(devices, true),
            true,
        ));
        create.push(Table {
            family: Family::Netdev,
            name: NETNS_TABLE.into(),
            chains: vec![chain(
                "egress",
                Hook::Egress,
                devices.inside.clone(),
                egress,
            )],
        });
    }
    Ruleset {
        delete: inside_table_names(),
        create,
    }
}

/// The change that deletes the layer inside the namespace.
pub fn netns_delete() -> Ruleset {
    Ruleset {
        delete: inside_table_names(),
        create: Vec::new(),
    }
}

/// The change that (re)creates the host-side table of the namespace with cookie `cookie`
/// (only deletes it when the namespace has no host-side peer).
pub fn host_ruleset(
    cookie: u64,
    allow: &[AllowRule],
    neighbours: &[AllowRule],
    devices: &Devices,
) -> Ruleset {
    let mut r = host_delete(cookie);
    if !devices.host.is_empty() {
        let names: Vec<String> = devices.host.iter().map(|h| h.ifname.clone()).collect();
        let mut from = allow_rules(Way::Out, allow);
        from.extend(neighbour_rules(
            Way::Out,
            neighbours,
            &host_ports(devices, false),
            true,
        ));
        let mut to = allow_rules(Way::In, allow);
        to.extend(neighbour_rules(
            Way::In,
            neighbours,
            &host_ports(devices, true),
            true,
        ));
        r.create.push(Table {
            family: Family::Netdev,
            name: host_table(cookie),
            chains: vec![
                chain("from_container", Hook::Ingress, names.clone(), from),
                chain("to_container", Hook::Egress, names, to),
            ],
        });
    }
    r
}

/// The change that deletes the host-side table of the namespace with cookie `cookie`.
pub fn host_delete(cookie: u64) -> Ruleset {
    Ruleset {
        delete: vec![(Family::Netdev, host_table(cookie))],
        create: Vec::new(),
    }
}

fn nft_command(ns: Option<&Netns>) -> Command {
    match ns {
        Some(ns) => ns.command("nft"),
        None => Command::new("nft"),
    }
}

/// Runs `script` with `nft -f -` in `ns` (the host's namespace when None): the fallback when
/// the kernel refuses an in-process batch, with nft's own diagnosis.
pub fn run(ns: Option<&Netns>, script: &str) -> Result<(), String> {
    let mut child = nft_command(ns)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft not available: {e}"))?;
    let written = child
        .stdin
        .take()
        .ok_or_else(|| "nft has no input".to_string())
        .and_then(|mut stdin| {
            stdin
                .write_all(script.as_bytes())
                .map_err(|e| e.to_string())
        });
    // Waited for in any case: no child is left behind, even when writing failed.
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    written?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// What the kernel lists of a layer's tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// Packets the final drop rules counted leaving the container (chains `output`,
    /// `egress`, `from_container`) and entering it (the others).
    pub egress: u64,
    pub ingress: u64,
    /// SHA-256 of the tables, chains and rules as listed, without handles and counter
    /// values: the same as right after install unless someone changed them.
    pub fingerprint: String,
    /// Whether every expected table is there.
    pub complete: bool,
}

/// Lists the tables `(family, name)` in `ns` (the host's namespace when None); None when
/// nft could not list at all.
pub fn list(ns: Option<&Netns>, tables: &[(&str, &str)]) -> Option<Listing> {
    let mut cmd = nft_command(ns);
    match tables {
        [(family, name)] => cmd.args(["-j", "list", "table", family, name]),
        _ => cmd.args(["-j", "list", "ruleset"]),
    };
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        // A single table that is not there: listed as nothing.
        return (tables.len() == 1).then(|| parse_listing(&Value::Null, tables));
    }
    let v = serde_json::from_slice::<Value>(&out.stdout).ok()?;
    Some(parse_listing(&v, tables))
}

/// The part of `nft -j list` output `v` that belongs to `tables`.
fn parse_listing(v: &Value, tables: &[(&str, &str)]) -> Listing {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.remove("handle");
                if let Some(Value::Object(c)) = m.get_mut("counter") {
                    c.insert("packets".into(), 0.into());
                    c.insert("bytes".into(), 0.into());
                }
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let ours = |o: &Value, name_key: &str| {
        tables
            .iter()
            .any(|(f, t)| o["family"].as_str() == Some(*f) && o[name_key].as_str() == Some(*t))
    };
    let (mut egress, mut ingress) = (0, 0);
    let mut found: Vec<(String, String)> = Vec::new();
    let mut kept = Vec::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        let keep = if let Some(t) = item.get("table") {
            if ours(t, "name") {
                found.push((
                    t["family"].as_str().unwrap_or_default().into(),
                    t["name"].as_str().unwrap_or_default().into(),
                ));
                true
            } else {
                false
            }
        } else if let Some(o) = item.get("chain").or_else(|| item.get("set")) {
            ours(o, "table")
        } else if let Some(rule) = item.get("rule") {
            let mine = ours(rule, "table");
            if mine {
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
            mine
        } else {
            // Anything else listed in our tables (flowtables, maps, objects) is someone
            // else's addition: part of the fingerprint.
            item.as_object()
                .and_then(|m| m.values().next())
                .is_some_and(|o| ours(o, "table"))
        };
        if keep {
            let mut item = item.clone();
            strip(&mut item);
            kept.push(item);
        }
    }
    let complete = tables
        .iter()
        .all(|(f, t)| found.iter().any(|(ff, tt)| ff == f && tt == t));
    let digest = Sha256::digest(Value::Array(kept).to_string().as_bytes());
    Listing {
        egress,
        ingress,
        fingerprint: digest.iter().map(|b| format!("{b:02x}")).collect(),
        complete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::{HostDevice, OwnAddresses};

    fn devices() -> Devices {
        Devices {
            inside: vec!["eth0".into()],
            host: vec![HostDevice {
                ifname: "veth1".into(),
                ifindex: 9,
                peer_ifindex: Some(2),
            }],
            unsafe_inside: Vec::new(),
            own: vec![OwnAddresses {
                ifname: "eth0".into(),
                ifindex: 2,
                mac: Some([2, 0, 0, 0, 0, 0x19]),
                addrs: vec![
                    "198.18.1.2".parse().unwrap(),
                    "2001:2::2".parse().unwrap(),
                    "fe80::19".parse().unwrap(),
                ],
            }],
        }
    }

    #[test]
    fn scripts_allow_only_the_list_and_its_neighbours() {
        let allow: Vec<AllowRule> = ["198.18.1.5:514", "[2001:2::5]:514"]
            .iter()
            .map(|r| r.parse().unwrap())
            .collect();
        let n = neighbours(&allow, &["198.18.1.1".parse().unwrap()]);
        let d = devices();
        let s = netns_ruleset(&allow, &n, &d).script();
        assert!(s.contains("hook egress devices = { \"eth0\" } priority -300; policy drop;"));
        assert!(s.contains("ip daddr 198.18.1.5/32 udp dport 514 accept"));
        assert!(s.contains(
            "oif \"eth0\" ip6 saddr ::/128 icmpv6 type nd-neighbor-solicit @th,64,128 0x20010002000000000000000000000005 accept"
        ));
        // An advertisement leaving advertises the address it comes from, one of ours.
        assert!(s.contains(
            "oif \"eth0\" ip6 saddr fe80::19/128 ip6 daddr 2001:2::5/128 icmpv6 type nd-neighbor-advert @th,64,128 0xfe800000000000000000000000000019 accept"
        ));
        // ARP is not something the inet family sees.
        let inet = s
            .split("table netdev quarry_quarantine {\n")
            .next()
            .unwrap();
        assert!(!inet.contains("arp operation"));
        let h = host_ruleset(7, &allow, &n, &d).script();
        assert!(h.contains("table netdev quarry_q_7 {\n"));
        assert!(h.contains("hook ingress devices = { \"veth1\" }"));
        assert!(h.contains("ip saddr 198.18.1.5/32 tcp sport 514 accept"));
        assert!(h.ends_with("    counter drop\n  }\n}\n"));
    }

    #[test]
    fn arp_and_nd_leave_only_from_the_containers_own_addresses() {
        let allow: Vec<AllowRule> = vec!["198.18.1.5:514".parse().unwrap()];
        let n = neighbours(&allow, &["198.18.1.1".parse().unwrap()]);
        let d = devices();
        let s = netns_ruleset(&allow, &n, &d).script();
        assert!(s.contains(
            "oif \"eth0\" arp operation request arp saddr ip 198.18.1.2/32 arp saddr ether 02:00:00:00:00:19 arp daddr ip 198.18.1.1/32 accept"
        ));
        let h = host_ruleset(7, &allow, &n, &d).script();
        // From the container: its own sender address on that veth; to it: its own target.
        assert!(h.contains(
            "iif \"veth1\" arp operation reply arp saddr ip 198.18.1.2/32 arp saddr ether 02:00:00:00:00:19 arp daddr ip 198.18.1.5/32 accept"
        ));
        assert!(h.contains(
            "oif \"veth1\" arp operation request arp saddr ip 198.18.1.1/32 arp daddr ip 198.18.1.2/32 accept"
        ));
        // No rule lets ARP or ND through without naming the sender.
        for line in s.lines().chain(h.lines()) {
            if line.contains("arp ") {
                assert!(line.contains("arp saddr ip"), "{line}");
            }
            if line.contains("icmpv6 type") {
                assert!(line.contains("ip6 saddr"), "{line}");
            }
        }

        // Without an address of its own on the interface, no ARP leaves it at all.
        let mut bare = devices();
        bare.own[0].addrs.retain(|a| a.is_ipv6());
        assert!(
            !host_ruleset(7, &allow, &n, &bare)
                .script()
                .contains("arp operation")
        );
    }

    #[test]
    fn a_listing_fingerprints_rules_but_not_counters_or_handles() {
        let listing = |extra_rule: bool, packets: u64, handle: u64| {
            let mut items = vec![
                serde_json::json!({"metainfo": {"version": "1.0.6"}}),
                serde_json::json!({"table": {"family": "inet", "name": NETNS_TABLE, "handle": handle}}),
                serde_json::json!({"chain": {"family": "inet", "table": NETNS_TABLE, "name": "output", "handle": handle, "policy": "drop"}}),
                serde_json::json!({"rule": {"family": "inet", "table": NETNS_TABLE, "chain": "output", "handle": handle + 1,
                    "expr": [{"counter": {"packets": packets, "bytes": packets * 60}}, {"drop": null}]}}),
                serde_json::json!({"table": {"family": "inet", "name": "theirs", "handle": 9}}),
            ];
            if extra_rule {
                items.insert(3, serde_json::json!({"rule": {"family": "inet", "table": NETNS_TABLE, "chain": "output",
                    "handle": 99, "expr": [{"accept": null}]}}));
            }
            parse_listing(
                &serde_json::json!({ "nftables": items }),
                &[("inet", NETNS_TABLE)],
            )
        };
        let installed = listing(false, 0, 1);
        let later = listing(false, 42, 1);
        assert_eq!(
            (later.egress, later.complete),
            (42, true),
            "counted as it leaves"
        );
        assert_eq!(installed.fingerprint, later.fingerprint);
        assert_eq!(installed.fingerprint, listing(false, 3, 5).fingerprint);
        assert_ne!(installed.fingerprint, listing(true, 42, 1).fingerprint);
        let gone = parse_listing(&Value::Null, &[("inet", NETNS_TABLE)]);
        assert!(!gone.complete);
    }
}
