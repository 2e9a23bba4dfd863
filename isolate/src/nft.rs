//! The nftables side of the namespace-level layers: the rulesets (as `nft` scripts), the
//! `nft` processes that apply them, and what the kernel lists back (drop counters, and a
//! fingerprint of the rules to tell a tampered table from the one installed).
//!
//! Names that go into a script are checked by the caller ([`crate::netns::devices`] keeps
//! only names that cannot change a ruleset's meaning); addresses come from the kernel or the
//! parsed allow-list. This module must not decide which namespace a script runs in: it is
//! given a checked [`Netns`] (or none: the host's), and it never enters one by pid.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};

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
    /// `oif "eth0"`, `iif "veth1"`: matched by index (nft resolves the name when loading).
    selector: String,
    own: Vec<IpAddr>,
    mac: Option<String>,
}

/// `a` or `{ a, b }`.
fn one_or_set(items: &[String]) -> String {
    match items {
        [one] => one.clone(),
        many => format!("{{ {} }}", many.join(", ")),
    }
}

/// Accept rules for the allow-list's IP traffic.
fn allow_rules(way: Way, allow: &[AllowRule]) -> String {
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
    s
}

/// Accept rules for ARP (when the family sees it: netdev does, inet does not) and ND with
/// `neighbours`, through each of `ports`, sent by the container's own addresses on it only
/// (its hardware address too for ARP): an allowed neighbour cannot be used to poison the
/// other side's caches with an address that is not the container's.
fn neighbour_rules(way: Way, neighbours: &[AllowRule], ports: &[Port], arp: bool) -> String {
    let mut s = String::new();
    for port in ports {
        let sel = &port.selector;
        let own4: Vec<String> = port
            .own
            .iter()
            .filter(|a| a.is_ipv4())
            .map(|a| a.to_string())
            .collect();
        let own6: Vec<std::net::Ipv6Addr> = port
            .own
            .iter()
            .filter_map(|a| match a {
                IpAddr::V6(v) => Some(*v),
                IpAddr::V4(_) => None,
            })
            .collect();
        for n in neighbours {
            let net = format!("{}/{}", n.addr, n.prefix);
            match (n.addr, way) {
                (IpAddr::V4(_), _) if !arp || own4.is_empty() => {}
                (IpAddr::V4(_), Way::Out) => {
                    let ether = port
                        .mac
                        .as_ref()
                        .map(|m| format!(" arp saddr ether {m}"))
                        .unwrap_or_default();
                    s.push_str(&format!(
                        "    {sel} arp operation {{ request, reply }} arp saddr ip {}{ether} arp daddr ip {net} accept\n",
                        one_or_set(&own4)
                    ));
                }
                (IpAddr::V4(_), Way::In) => s.push_str(&format!(
                    "    {sel} arp operation {{ request, reply }} arp saddr ip {net} arp daddr ip {} accept\n",
                    one_or_set(&own4)
                )),
                (IpAddr::V6(_), Way::Out) if own6.is_empty() => {}
                (IpAddr::V6(v6), Way::Out) => {
                    // A solicitation goes to a multicast group: its target (at bit 64 of the
                    // ICMPv6 header) names the neighbour; its source is one of ours, or
                    // unspecified while an address is being checked for duplicates.
                    let target = if n.prefix == 0 {
                        String::new()
                    } else {
                        let bits = u128::from(v6) >> (128 - u32::from(n.prefix));
                        format!(" @th,64,{} 0x{bits:x}", n.prefix)
                    };
                    let mut senders: Vec<String> = own6.iter().map(|a| a.to_string()).collect();
                    senders.push("::".into());
                    s.push_str(&format!(
                        "    {sel} icmpv6 type nd-neighbor-solicit ip6 saddr {}{target} accept\n",
                        one_or_set(&senders)
                    ));
                    // An advertisement goes to the asker and must advertise one of ours.
                    let from: Vec<String> = own6.iter().map(|a| a.to_string()).collect();
                    for own in &own6 {
                        s.push_str(&format!(
                            "    {sel} icmpv6 type nd-neighbor-advert ip6 saddr {} ip6 daddr {net} @th,64,128 0x{:x} accept\n",
                            one_or_set(&from),
                            u128::from(*own)
                        ));
                    }
                }
                (IpAddr::V6(_), Way::In) => s.push_str(&format!(
                    "    {sel} icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert }} ip6 saddr {net} accept\n"
                )),
            }
        }
    }
    s
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

/// The inside interfaces nft may be given, as ports of `keyword` (`oif` or `iif`).
fn inside_ports(devices: &Devices, keyword: &str) -> Vec<Port> {
    devices
        .inside
        .iter()
        .map(|name| {
            let own = devices.own.iter().find(|o| &o.ifname == name);
            Port {
                selector: format!("{keyword} \"{name}\""),
                own: own.map(|o| o.addrs.clone()).unwrap_or_default(),
                mac: own.and_then(|o| o.mac.as_ref()).map(mac_text),
            }
        })
        .collect()
}

/// The host-side peers as ports of `keyword`, with the addresses of the container's end.
fn host_ports(devices: &Devices, keyword: &str) -> Vec<Port> {
    devices
        .host
        .iter()
        .map(|h| {
            let own = devices
                .own
                .iter()
                .find(|o| Some(o.ifindex) == h.peer_ifindex);
            Port {
                selector: format!("{keyword} \"{}\"", h.ifname),
                own: own.map(|o| o.addrs.clone()).unwrap_or_default(),
                mac: own.and_then(|o| o.mac.as_ref()).map(mac_text),
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

/// The script that (re)creates the layer inside the namespace, atomically (one nft
/// transaction: the old tables go and the new ones come in the same step).
pub fn netns_script(allow: &[AllowRule], neighbours: &[AllowRule], devices: &Devices) -> String {
    let t = NETNS_TABLE;
    let mut s = netns_delete_script();
    // The final `counter drop` counts what each chain stops. On the way out this layer sees
    // packets before the cgroup_skb layer does, on the way in before the socket does: the
    // layers' counts add up, none counts a packet another already dropped.
    s.push_str(&format!(
        "table inet {t} {{\n  chain input {{\n    type filter hook input priority -300; policy drop;\n    meta iiftype loopback accept\n{}{}    counter drop\n  }}\n  chain output {{\n    type filter hook output priority -300; policy drop;\n    meta oiftype loopback accept\n{}{}    counter drop\n  }}\n}}\n",
        allow_rules(Way::In, allow),
        neighbour_rules(Way::In, neighbours, &inside_ports(devices, "iif"), false),
        allow_rules(Way::Out, allow),
        neighbour_rules(Way::Out, neighbours, &inside_ports(devices, "oif"), false),
    ));
    if !devices.inside.is_empty() {
        s.push_str(&format!(
            "table netdev {t} {{\n  chain egress {{\n    type filter hook egress devices = {} priority -300; policy drop;\n{}{}    counter drop\n  }}\n}}\n",
            devices_set(&devices.inside),
            allow_rules(Way::Out, allow),
            neighbour_rules(Way::Out, neighbours, &inside_ports(devices, "oif"), true),
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

/// The script that (re)creates the host-side table of the namespace with cookie `cookie`
/// (only deletes it when the namespace has no host-side peer).
pub fn host_script(
    cookie: u64,
    allow: &[AllowRule],
    neighbours: &[AllowRule],
    devices: &Devices,
) -> String {
    let t = host_table(cookie);
    let mut s = host_delete_script(cookie);
    if !devices.host.is_empty() {
        let names: Vec<String> = devices.host.iter().map(|h| h.ifname.clone()).collect();
        s.push_str(&format!(
            "table netdev {t} {{\n  chain from_container {{\n    type filter hook ingress devices = {d} priority -300; policy drop;\n{}{}    counter drop\n  }}\n  chain to_container {{\n    type filter hook egress devices = {d} priority -300; policy drop;\n{}{}    counter drop\n  }}\n}}\n",
            allow_rules(Way::Out, allow),
            neighbour_rules(Way::Out, neighbours, &host_ports(devices, "iif"), true),
            allow_rules(Way::In, allow),
            neighbour_rules(Way::In, neighbours, &host_ports(devices, "oif"), true),
            d = devices_set(&names),
        ));
    }
    s
}

/// The script that deletes the host-side table of the namespace with cookie `cookie`.
pub fn host_delete_script(cookie: u64) -> String {
    let t = host_table(cookie);
    format!("table netdev {t} {{}}\ndelete table netdev {t}\n")
}

fn nft_command(ns: Option<&Netns>) -> Command {
    match ns {
        Some(ns) => ns.command("nft"),
        None => Command::new("nft"),
    }
}

/// An `nft -f -` process, started ahead of its script so that its start (exec, libraries,
/// netlink cache) overlaps with the caller's other work. Killed when dropped unfinished.
pub struct Nft {
    child: Option<Child>,
}

impl Nft {
    /// Starts nft in `ns` (the host's namespace when None).
    pub fn start(ns: Option<&Netns>) -> Result<Nft, String> {
        let child = nft_command(ns)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("nft not available: {e}"))?;
        Ok(Nft { child: Some(child) })
    }

    /// Hands it `script`, which it runs once its input ends (a script fits in a pipe's
    /// buffer: this does not wait for nft).
    pub fn feed(&mut self, script: &str) -> Result<(), String> {
        let child = self.child.as_mut().ok_or("nft already finished")?;
        let mut stdin = child.stdin.take().ok_or("nft already fed")?;
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| e.to_string())
    }

    /// Waits for it to apply what it was fed.
    pub fn wait(mut self) -> Result<(), String> {
        let child = self.child.take().ok_or("nft already finished")?;
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}

impl Drop for Nft {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `script` in `ns` (the host's namespace when None).
pub fn run(ns: Option<&Netns>, script: &str) -> Result<(), String> {
    let mut nft = Nft::start(ns)?;
    nft.feed(script)?;
    nft.wait()
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
        let s = netns_script(&allow, &n, &d);
        assert!(s.contains("hook egress devices = { \"eth0\" } priority -300; policy drop;"));
        assert!(s.contains("ip daddr 198.18.1.5/32 udp dport 514 accept"));
        assert!(s.contains(
            "oif \"eth0\" icmpv6 type nd-neighbor-solicit ip6 saddr { 2001:2::2, fe80::19, :: } @th,64,128 0x20010002000000000000000000000005 accept"
        ));
        // ARP is not something the inet family sees.
        let inet = s
            .split("table netdev quarry_quarantine {\n")
            .next()
            .unwrap();
        assert!(!inet.contains("arp operation"));
        let h = host_script(7, &allow, &n, &d);
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
        let s = netns_script(&allow, &n, &d);
        assert!(s.contains(
            "oif \"eth0\" arp operation { request, reply } arp saddr ip 198.18.1.2 arp saddr ether 02:00:00:00:00:19 arp daddr ip 198.18.1.1/32 accept"
        ));
        let h = host_script(7, &allow, &n, &d);
        // From the container: its own sender address on that veth; to it: its own target.
        assert!(h.contains(
            "iif \"veth1\" arp operation { request, reply } arp saddr ip 198.18.1.2 arp saddr ether 02:00:00:00:00:19 arp daddr ip 198.18.1.5/32 accept"
        ));
        assert!(h.contains(
            "oif \"veth1\" arp operation { request, reply } arp saddr ip 198.18.1.1/32 arp daddr ip 198.18.1.2 accept"
        ));
        // No rule lets ARP through without naming the sender.
        for line in s.lines().chain(h.lines()).filter(|l| l.contains("arp ")) {
            assert!(line.contains("arp saddr ip"), "{line}");
        }
        // Without an address of its own on the interface, no ARP leaves it at all.
        let mut bare = devices();
        bare.own[0].addrs.retain(|a| a.is_ipv6());
        assert!(!host_script(7, &allow, &n, &bare).contains("arp operation"));
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
