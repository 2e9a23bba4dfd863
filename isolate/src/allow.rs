//! The allow-list: what a quarantine still lets through, as the responder writes it
//! (`CIDR[:PORT]`), checked for what the layers can honour, and the cgroup_skb layer's own
//! additions (the container's loopback).
//!
//! Pure data: this module must not touch the kernel, files or namespaces; every layer takes
//! its list from here and none re-parses or re-checks rules on its own.

use std::net::IpAddr;
use std::str::FromStr;

use quarry_containers::Container;
use serde::{Deserialize, Serialize};

use crate::IsolateError;

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

/// The allow-list of the cgroup_skb layer.
pub(crate) fn cgroup_rules(container: &Container, allow: &[AllowRule]) -> Vec<AllowRule> {
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

/// The rules of several allow-lists together, each once, in order of first appearance.
pub(crate) fn union<'a>(lists: impl IntoIterator<Item = &'a [AllowRule]>) -> Vec<AllowRule> {
    let mut out: Vec<AllowRule> = Vec::new();
    for r in lists.into_iter().flatten() {
        if !out.contains(r) {
            out.push(*r);
        }
    }
    out
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

    #[test]
    fn a_union_keeps_each_rule_once() {
        let a: Vec<AllowRule> = vec!["198.18.0.5:514".parse().unwrap()];
        let b: Vec<AllowRule> = vec![
            "198.18.0.5:514".parse().unwrap(),
            "198.18.1.0/24".parse().unwrap(),
        ];
        assert_eq!(union([a.as_slice(), b.as_slice()]), b);
    }
}
