//! The few route-netlink questions the quarantine asks, answered in-process (no `ip` child:
//! spawning one costs milliseconds, more on a loaded machine): the interfaces of the current
//! network namespace, their addresses, the gateway of the route to an address, and the id
//! this namespace gives another one.
//!
//! Every query runs in the namespace of the calling thread: to ask about a container's
//! namespace, call from a thread that joined it ([`crate::netns::Netns::within`]). This module
//! only reads: it must not change links, addresses or routes, and it trusts nothing but the
//! kernel's answers on its own socket (names in them are the container's to choose).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWNSID: u16 = 88;
const RTM_GETNSID: u16 = 90;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINK: u16 = 5;
const IFLA_LINK_NETNSID: u16 = 37;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_DST: u16 = 1;
const RTA_GATEWAY: u16 = 5;
const NETNSA_NSID: u16 = 1;
const NETNSA_FD: u16 = 3;
const ARPHRD_LOOPBACK: u16 = 772;
const HEADER: usize = 16;

/// One network interface of the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub ifindex: u32,
    pub ifname: String,
    /// The peer's index (veth), in the namespace `link_netnsid` names when set.
    pub link_index: Option<u32>,
    pub link_netnsid: Option<i32>,
    /// By the link type, never the name (a container can rename its interfaces).
    pub loopback: bool,
    /// Its hardware address, when it is an Ethernet-like one.
    pub mac: Option<[u8; 6]>,
}

/// One address of an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr {
    pub ifindex: u32,
    pub addr: IpAddr,
}

/// A route-netlink socket of the calling thread's namespace.
struct Socket(OwnedFd);

impl Socket {
    fn open() -> io::Result<Socket> {
        // SAFETY: plain socket creation; the descriptor is owned right below.
        let raw: RawFd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nobody else owns.
        Ok(Socket(unsafe { OwnedFd::from_raw_fd(raw) }))
    }

    /// Sends request `kind` with `body` (its fixed header and attributes) and returns the
    /// payload of each answer of type `want`: every part of a dump, or the one answer.
    fn ask(&self, kind: u16, dump: bool, body: &[u8], want: u16) -> io::Result<Vec<Vec<u8>>> {
        let len = HEADER + body.len();
        let mut req = Vec::with_capacity(len);
        req.extend_from_slice(&(len as u32).to_ne_bytes());
        req.extend_from_slice(&kind.to_ne_bytes());
        let flags = libc::NLM_F_REQUEST as u16 | if dump { libc::NLM_F_DUMP as u16 } else { 0 };
        req.extend_from_slice(&flags.to_ne_bytes());
        req.extend_from_slice(&1u32.to_ne_bytes());
        req.extend_from_slice(&0u32.to_ne_bytes());
        req.extend_from_slice(body);
        // SAFETY: sending a buffer we own on our socket (to the kernel: no address needed).
        if unsafe { libc::send(self.0.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: receiving into a buffer we own, at most its length.
            let n =
                unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut rest = &buf[..n as usize];
            while rest.len() >= HEADER {
                let mlen = u32::from_ne_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
                if mlen < HEADER || mlen > rest.len() {
                    return Err(io::Error::other("truncated netlink message"));
                }
                let mtype = u16::from_ne_bytes([rest[4], rest[5]]);
                let payload = &rest[HEADER..mlen];
                match mtype {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let code = payload
                            .get(0..4)
                            .map(|b| i32::from_ne_bytes(b.try_into().expect("4 bytes")))
                            .unwrap_or(-libc::EPROTO);
                        return if code == 0 {
                            Ok(out)
                        } else {
                            Err(io::Error::from_raw_os_error(-code))
                        };
                    }
                    t if t == want => {
                        out.push(payload.to_vec());
                        if !dump {
                            return Ok(out);
                        }
                    }
                    _ => {}
                }
                rest = &rest[align(mlen).min(rest.len())..];
            }
        }
    }
}

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// The attributes in `buf`: (type without the nested/byte-order flags, value).
fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            return None;
        }
        let value = &buf[4..len];
        buf = &buf[align(len).min(buf.len())..];
        Some((ty, value))
    })
}

fn attr(ty: u16, value: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(align(4 + value.len()));
    a.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    a.extend_from_slice(&ty.to_ne_bytes());
    a.extend_from_slice(value);
    a.resize(align(a.len()), 0);
    a
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn ip_from(b: &[u8]) -> Option<IpAddr> {
    match b.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(b).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).ok()?))),
        _ => None,
    }
}

/// Parses one RTM_NEWLINK payload.
fn parse_link(p: &[u8]) -> Option<Link> {
    // struct ifinfomsg: family, pad, type (u16), index (i32), flags, change.
    let ty = u16::from_ne_bytes([*p.get(2)?, *p.get(3)?]);
    let mut link = Link {
        ifindex: u32_at(p, 4)?,
        ifname: String::new(),
        link_index: None,
        link_netnsid: None,
        loopback: ty == ARPHRD_LOOPBACK,
        mac: None,
    };
    for (t, v) in attrs(p.get(16..)?) {
        match t {
            IFLA_IFNAME => {
                let name = v.split(|b| *b == 0).next().unwrap_or_default();
                link.ifname = String::from_utf8_lossy(name).into_owned();
            }
            IFLA_LINK => link.link_index = u32_at(v, 0),
            IFLA_LINK_NETNSID => link.link_netnsid = u32_at(v, 0).map(|n| n as i32),
            IFLA_ADDRESS => link.mac = <[u8; 6]>::try_from(v).ok(),
            _ => {}
        }
    }
    Some(link)
}

/// Every interface of the calling thread's namespace.
pub fn links() -> io::Result<Vec<Link>> {
    let answers = Socket::open()?.ask(RTM_GETLINK, true, &[0u8; 16], RTM_NEWLINK)?;
    Ok(answers.iter().filter_map(|p| parse_link(p)).collect())
}

/// Every address of every interface of the calling thread's namespace.
pub fn addrs() -> io::Result<Vec<Addr>> {
    let answers = Socket::open()?.ask(RTM_GETADDR, true, &[0u8; 8], RTM_NEWADDR)?;
    let mut out = Vec::new();
    for p in &answers {
        // struct ifaddrmsg: family, prefixlen, flags, scope, index (u32).
        let (Some(family), Some(ifindex)) = (p.first(), u32_at(p, 4)) else {
            continue;
        };
        let (mut local, mut address) = (None, None);
        for (t, v) in attrs(p.get(8..).unwrap_or_default()) {
            match t {
                IFA_LOCAL => local = ip_from(v),
                IFA_ADDRESS => address = ip_from(v),
                _ => {}
            }
        }
        // IPv4 point-to-point links put the peer in IFA_ADDRESS: the own one is IFA_LOCAL.
        let own = if i32::from(*family) == libc::AF_INET {
            local.or(address)
        } else {
            address.or(local)
        };
        if let Some(addr) = own {
            out.push(Addr { ifindex, addr });
        }
    }
    Ok(out)
}

/// The gateway of the route the calling thread's namespace takes to `dst`; None when the
/// route has none (on-link) or there is no route.
pub fn route_gateway(dst: IpAddr) -> io::Result<Option<IpAddr>> {
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags (u32).
    let mut body = vec![0u8; 12];
    let octets: Vec<u8> = match dst {
        IpAddr::V4(a) => {
            body[0] = libc::AF_INET as u8;
            body[1] = 32;
            a.octets().to_vec()
        }
        IpAddr::V6(a) => {
            body[0] = libc::AF_INET6 as u8;
            body[1] = 128;
            a.octets().to_vec()
        }
    };
    body.extend_from_slice(&attr(RTA_DST, &octets));
    let answers = match Socket::open()?.ask(RTM_GETROUTE, false, &body, RTM_NEWROUTE) {
        Ok(a) => a,
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENETUNREACH | libc::EHOSTUNREACH)
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    Ok(answers.first().and_then(|p| {
        attrs(p.get(12..)?)
            .find(|(t, _)| *t == RTA_GATEWAY)
            .and_then(|(_, v)| ip_from(v))
    }))
}

/// The id the calling thread's namespace gives the namespace `fd` refers to, if it gave one
/// (it does once a veth between them has been listed).
pub fn nsid(fd: RawFd) -> io::Result<Option<i32>> {
    // struct rtgenmsg, padded to 4, then NETNSA_FD.
    let mut body = vec![libc::AF_UNSPEC as u8, 0, 0, 0];
    body.extend_from_slice(&attr(NETNSA_FD, &(fd as u32).to_ne_bytes()));
    let answers = Socket::open()?.ask(RTM_GETNSID, false, &body, RTM_NEWNSID)?;
    Ok(answers.first().and_then(|p| {
        attrs(p.get(4..)?)
            .find(|(t, _)| *t == NETNSA_NSID)
            .and_then(|(_, v)| u32_at(v, 0))
            .map(|n| n as i32)
            .filter(|n| *n >= 0)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_and_stop_at_garbage() {
        let mut buf = attr(IFLA_IFNAME, b"eth0\0");
        buf.extend(attr(IFLA_LINK, &7u32.to_ne_bytes()));
        buf.extend_from_slice(&[200, 0, 1, 0]); // claims more than there is
        let got: Vec<(u16, Vec<u8>)> = attrs(&buf).map(|(t, v)| (t, v.to_vec())).collect();
        assert_eq!(
            got,
            vec![
                (IFLA_IFNAME, b"eth0\0".to_vec()),
                (IFLA_LINK, 7u32.to_ne_bytes().to_vec())
            ]
        );
    }

    #[test]
    fn a_link_message_parses() {
        let mut p = vec![0u8; 16];
        p[2..4].copy_from_slice(&1u16.to_ne_bytes()); // ARPHRD_ETHER
        p[4..8].copy_from_slice(&3u32.to_ne_bytes());
        p.extend(attr(IFLA_IFNAME, b"veth0\0"));
        p.extend(attr(IFLA_ADDRESS, &[2, 0, 0, 0, 0, 9]));
        p.extend(attr(IFLA_LINK_NETNSID, &0u32.to_ne_bytes()));
        let l = parse_link(&p).unwrap();
        assert_eq!(
            (
                l.ifindex,
                l.ifname.as_str(),
                l.loopback,
                l.mac,
                l.link_netnsid
            ),
            (3, "veth0", false, Some([2, 0, 0, 0, 0, 9]), Some(0))
        );
    }

    /// The calling thread's own namespace always has a loopback with an address.
    #[test]
    fn the_own_namespace_answers() {
        let links = links().unwrap();
        let lo = links.iter().find(|l| l.loopback).expect("a loopback");
        assert!(lo.ifindex > 0);
        let addrs = addrs().unwrap();
        assert!(
            addrs
                .iter()
                .any(|a| a.ifindex == lo.ifindex && a.addr.is_loopback()),
            "{addrs:?}"
        );
        assert_eq!(route_gateway("127.0.0.1".parse().unwrap()).unwrap(), None);
    }
}
