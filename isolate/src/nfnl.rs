//! nf_tables over netlink, in-process: a [`Ruleset`] sent to the kernel as one batch (one
//! transaction, as `nft -f` would), without starting an `nft` process (which costs tens of
//! milliseconds on a loaded machine: exec, a dozen libraries, a cache dump).
//!
//! It encodes exactly the conditions of [`crate::nft::Match`], with the dependencies nft
//! would add (the network protocol before an address, the transport protocol before a port),
//! and applies the batch in the namespace of the calling thread (join one with
//! [`crate::netns::Netns::within`]). It only writes what it is given: it must not list or
//! interpret the kernel's rulesets (status does that through `nft -j`, one reader for all).

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::nft::{Chain, Family, Hook, Match, PRIORITY, Ruleset, Table, Verdict};

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NLA_F_NESTED: u16 = 0x8000;

const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_NETDEV: u8 = 5;
const NFPROTO_IPV6: u8 = 10;

// Attributes.
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_HOOK_DEVS: u16 = 4;
const NFTA_DEVICE_NAME: u16 = 1;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;

// Expressions (their attributes: 1 = destination or source register, and so on).
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_META_PROTOCOL: u32 = 1;
const NFT_META_IIF: u32 = 4;
const NFT_META_OIF: u32 = 5;
const NFT_META_IIFTYPE: u32 = 8;
const NFT_META_OIFTYPE: u32 = 9;
const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;
const NFT_PAYLOAD_NETWORK: u32 = 1;
const NFT_PAYLOAD_TRANSPORT: u32 = 2;
const ARPHRD_LOOPBACK: u16 = 772;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;

fn align(n: usize) -> usize {
    (n + 3) & !3
}

/// A netlink attribute.
fn attr(ty: u16, value: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(align(4 + value.len()));
    a.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    a.extend_from_slice(&ty.to_ne_bytes());
    a.extend_from_slice(value);
    a.resize(align(a.len()), 0);
    a
}

fn nested(ty: u16, parts: &[Vec<u8>]) -> Vec<u8> {
    attr(ty | NLA_F_NESTED, &parts.concat())
}

fn be32(ty: u16, v: u32) -> Vec<u8> {
    attr(ty, &v.to_be_bytes())
}

fn string(ty: u16, s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    attr(ty, &v)
}

/// One expression of a rule.
fn expr(name: &str, data: &[Vec<u8>]) -> Vec<u8> {
    nested(
        NFTA_LIST_ELEM,
        &[string(NFTA_EXPR_NAME, name), nested(NFTA_EXPR_DATA, data)],
    )
}

fn meta(key: u32) -> Vec<u8> {
    // NFTA_META_DREG, NFTA_META_KEY.
    expr("meta", &[be32(1, NFT_REG_1), be32(2, key)])
}

fn payload(base: u32, offset: u32, len: u32) -> Vec<u8> {
    // NFTA_PAYLOAD_DREG, _BASE, _OFFSET, _LEN.
    expr(
        "payload",
        &[
            be32(1, NFT_REG_1),
            be32(2, base),
            be32(3, offset),
            be32(4, len),
        ],
    )
}

fn cmp_eq(value: &[u8]) -> Vec<u8> {
    // NFTA_CMP_SREG, _OP (NFT_CMP_EQ = 0), _DATA.
    expr(
        "cmp",
        &[
            be32(1, NFT_REG_1),
            be32(2, 0),
            nested(3, &[attr(NFTA_DATA_VALUE, value)]),
        ],
    )
}

/// The first `prefix` bits of the register kept, the rest cleared.
fn mask(len: usize, prefix: u8) -> Vec<u8> {
    let mut m = vec![0u8; len];
    for (i, b) in m.iter_mut().enumerate() {
        let bits = (usize::from(prefix)).saturating_sub(i * 8).min(8);
        *b = if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
    }
    // NFTA_BITWISE_SREG, _DREG, _LEN, _MASK, _XOR.
    expr(
        "bitwise",
        &[
            be32(1, NFT_REG_1),
            be32(2, NFT_REG_1),
            be32(3, len as u32),
            nested(4, &[attr(NFTA_DATA_VALUE, &m)]),
            nested(5, &[attr(NFTA_DATA_VALUE, &vec![0u8; len])]),
        ],
    )
}

/// Compares bytes at `offset` of `base` with the first `prefix` bits of `value`.
fn field_in(base: u32, offset: u32, value: &[u8], prefix: u8) -> Vec<Vec<u8>> {
    let full = (value.len() * 8) as u8;
    if prefix == 0 {
        return Vec::new();
    }
    let mut out = vec![payload(base, offset, value.len() as u32)];
    if prefix < full {
        out.push(mask(value.len(), prefix));
        let mut masked = value.to_vec();
        for (i, b) in masked.iter_mut().enumerate() {
            let bits = (usize::from(prefix)).saturating_sub(i * 8).min(8);
            *b &= if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
        }
        out.push(cmp_eq(&masked));
    } else {
        out.push(cmp_eq(value));
    }
    out
}

/// The network protocol check an address or ICMPv6 match depends on.
fn network(family: Family, v6: bool) -> Vec<Vec<u8>> {
    match family {
        Family::Inet => vec![
            meta(NFT_META_NFPROTO),
            cmp_eq(&[if v6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 }]),
        ],
        Family::Netdev => vec![
            meta(NFT_META_PROTOCOL),
            cmp_eq(&(if v6 { 0x86ddu16 } else { 0x0800u16 }).to_be_bytes()),
        ],
    }
}

/// The expressions of one condition.
fn encode_match(family: Family, m: &Match) -> Vec<Vec<u8>> {
    match m {
        Match::InLoopback => vec![
            meta(NFT_META_IIFTYPE),
            cmp_eq(&ARPHRD_LOOPBACK.to_ne_bytes()),
        ],
        Match::OutLoopback => vec![
            meta(NFT_META_OIFTYPE),
            cmp_eq(&ARPHRD_LOOPBACK.to_ne_bytes()),
        ],
        Match::InDev(index, _) => vec![meta(NFT_META_IIF), cmp_eq(&index.to_ne_bytes())],
        Match::OutDev(index, _) => vec![meta(NFT_META_OIF), cmp_eq(&index.to_ne_bytes())],
        Match::Addr { dst, addr, prefix } => {
            let mut out = network(family, addr.is_ipv6());
            let (offset, bytes) = match addr {
                IpAddr::V4(a) => (if *dst { 16 } else { 12 }, a.octets().to_vec()),
                IpAddr::V6(a) => (if *dst { 24 } else { 8 }, a.octets().to_vec()),
            };
            out.extend(field_in(NFT_PAYLOAD_NETWORK, offset, &bytes, *prefix));
            out
        }
        Match::Port { proto, dst, port } => {
            let mut out = vec![meta(NFT_META_L4PROTO), cmp_eq(&[*proto])];
            out.extend(field_in(
                NFT_PAYLOAD_TRANSPORT,
                if *dst { 2 } else { 0 },
                &port.to_be_bytes(),
                16,
            ));
            out
        }
        Match::ArpOp(op) => {
            // Ethernet (1), IPv4 (0x0800), 6-byte and 4-byte addresses, then the operation:
            // the layout every other ARP offset below assumes.
            let mut header = vec![0, 1, 8, 0, 6, 4];
            header.extend_from_slice(&op.to_be_bytes());
            let mut out = vec![meta(NFT_META_PROTOCOL), cmp_eq(&0x0806u16.to_be_bytes())];
            out.extend(field_in(NFT_PAYLOAD_NETWORK, 0, &header, 64));
            out
        }
        Match::ArpIp {
            sender,
            addr,
            prefix,
        } => field_in(
            NFT_PAYLOAD_NETWORK,
            if *sender { 14 } else { 24 },
            &addr.octets(),
            *prefix,
        ),
        Match::ArpSenderMac(mac) => field_in(NFT_PAYLOAD_NETWORK, 8, mac, 48),
        Match::Icmp6Type(t) => {
            let mut out = network(family, true);
            out.extend([meta(NFT_META_L4PROTO), cmp_eq(&[58])]);
            out.extend(field_in(NFT_PAYLOAD_TRANSPORT, 0, &[*t], 8));
            out
        }
        Match::NdTarget { addr, prefix } => {
            if *prefix == 0 {
                field_in(NFT_PAYLOAD_TRANSPORT, 1, &[0], 8)
            } else {
                field_in(NFT_PAYLOAD_TRANSPORT, 8, &addr.octets(), *prefix)
            }
        }
    }
}

fn verdict(code: u32) -> Vec<u8> {
    // NFTA_IMMEDIATE_DREG, NFTA_IMMEDIATE_DATA.
    expr(
        "immediate",
        &[
            be32(1, NFT_REG_VERDICT),
            nested(
                2,
                &[nested(NFTA_DATA_VERDICT, &[be32(NFTA_VERDICT_CODE, code)])],
            ),
        ],
    )
}

fn family_code(f: Family) -> u8 {
    match f {
        Family::Inet => NFPROTO_INET,
        Family::Netdev => NFPROTO_NETDEV,
    }
}

fn hook_number(h: Hook) -> u32 {
    match h {
        // NF_INET_LOCAL_IN, NF_INET_LOCAL_OUT; NF_NETDEV_INGRESS, NF_NETDEV_EGRESS.
        Hook::Input => 1,
        Hook::Output => 3,
        Hook::Ingress => 0,
        Hook::Egress => 1,
    }
}

/// A batch being built: netlink messages with consecutive sequence numbers.
struct Batch {
    buf: Vec<u8>,
    seq: u32,
    /// Messages the kernel acknowledges (all but the batch's begin and end).
    acked: usize,
}

impl Batch {
    fn new() -> Batch {
        let mut b = Batch {
            buf: Vec::new(),
            seq: 0,
            acked: 0,
        };
        b.push(NFNL_MSG_BATCH_BEGIN, 0, 0, NFNL_SUBSYS_NFTABLES, &[]);
        b
    }

    fn push(&mut self, kind: u16, flags: u16, family: u8, res_id: u16, attrs: &[u8]) {
        self.seq += 1;
        let len = 16 + 4 + attrs.len();
        self.buf.extend_from_slice(&(len as u32).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf
            .extend_from_slice(&(flags | libc::NLM_F_REQUEST as u16).to_ne_bytes());
        self.buf.extend_from_slice(&self.seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes());
        // struct nfgenmsg: family, version, resource id (big-endian).
        self.buf.push(family);
        self.buf.push(0);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        self.buf.extend_from_slice(attrs);
    }

    fn message(&mut self, msg: u16, flags: u16, family: Family, attrs: &[Vec<u8>]) {
        self.acked += 1;
        self.push(
            (NFNL_SUBSYS_NFTABLES << 8) | msg,
            flags | libc::NLM_F_ACK as u16,
            family_code(family),
            0,
            &attrs.concat(),
        );
    }

    fn table(&mut self, t: &Table) {
        let create = libc::NLM_F_CREATE as u16;
        self.message(
            NFT_MSG_NEWTABLE,
            create,
            t.family,
            &[string(NFTA_TABLE_NAME, &t.name)],
        );
        for c in &t.chains {
            self.chain(t, c);
        }
    }

    fn chain(&mut self, t: &Table, c: &Chain) {
        let mut hook = vec![
            be32(NFTA_HOOK_HOOKNUM, hook_number(c.hook)),
            be32(NFTA_HOOK_PRIORITY, PRIORITY as u32),
        ];
        if !c.devices.is_empty() {
            let devs: Vec<Vec<u8>> = c
                .devices
                .iter()
                .map(|d| string(NFTA_DEVICE_NAME, d))
                .collect();
            hook.push(nested(NFTA_HOOK_DEVS, &devs));
        }
        self.message(
            NFT_MSG_NEWCHAIN,
            libc::NLM_F_CREATE as u16,
            t.family,
            &[
                string(NFTA_CHAIN_TABLE, &t.name),
                string(NFTA_CHAIN_NAME, c.name),
                nested(NFTA_CHAIN_HOOK, &hook),
                be32(NFTA_CHAIN_POLICY, NF_DROP),
                string(NFTA_CHAIN_TYPE, "filter"),
            ],
        );
        for r in &c.rules {
            let mut exprs: Vec<Vec<u8>> = r
                .matches
                .iter()
                .flat_map(|m| encode_match(t.family, m))
                .collect();
            match r.verdict {
                Verdict::Accept => exprs.push(verdict(NF_ACCEPT)),
                Verdict::CountDrop => {
                    exprs.push(expr("counter", &[]));
                    exprs.push(verdict(NF_DROP));
                }
            }
            self.message(
                NFT_MSG_NEWRULE,
                (libc::NLM_F_CREATE | libc::NLM_F_APPEND) as u16,
                t.family,
                &[
                    string(NFTA_RULE_TABLE, &t.name),
                    string(NFTA_RULE_CHAIN, c.name),
                    nested(NFTA_RULE_EXPRESSIONS, &exprs),
                ],
            );
        }
    }

    fn finish(mut self) -> (Vec<u8>, usize) {
        self.push(NFNL_MSG_BATCH_END, 0, 0, NFNL_SUBSYS_NFTABLES, &[]);
        (self.buf, self.acked)
    }
}

/// The batch that applies `ruleset`, and how many acknowledgements it asks for.
fn encode(ruleset: &Ruleset) -> (Vec<u8>, usize) {
    let mut b = Batch::new();
    for (family, name) in &ruleset.delete {
        // Created empty first, so that deleting it cannot fail for its absence.
        let name = [string(NFTA_TABLE_NAME, name)];
        b.message(NFT_MSG_NEWTABLE, libc::NLM_F_CREATE as u16, *family, &name);
        b.message(NFT_MSG_DELTABLE, 0, *family, &name);
    }
    for t in &ruleset.create {
        b.table(t);
    }
    b.finish()
}

/// Applies `ruleset` in the calling thread's network namespace, all of it or none.
pub fn apply(ruleset: &Ruleset) -> io::Result<()> {
    let (batch, acks) = encode(ruleset);
    // SAFETY: plain socket creation; the descriptor is owned right below.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            NETLINK_NETFILTER,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let fd = sock.as_raw_fd();
    // Never wait forever for the kernel's answer.
    let tv = libc::timeval {
        tv_sec: 2,
        tv_usec: 0,
    };
    // SAFETY: setsockopt with a timeval we own; send of a buffer we own.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        );
        if libc::send(fd, batch.as_ptr().cast(), batch.len(), 0) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let mut seen = 0;
    let mut first_error = None;
    let mut buf = vec![0u8; 64 * 1024];
    while seen < acks {
        // SAFETY: receiving into a buffer we own, at most its length.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(first_error.unwrap_or_else(io::Error::last_os_error));
        }
        let mut rest = &buf[..n as usize];
        while rest.len() >= 16 {
            let len = u32::from_ne_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
            if len < 16 || len > rest.len() {
                break;
            }
            let kind = u16::from_ne_bytes([rest[4], rest[5]]);
            if kind == libc::NLMSG_ERROR as u16 && len >= 20 {
                seen += 1;
                let code = i32::from_ne_bytes(rest[16..20].try_into().expect("4 bytes"));
                if code != 0 && first_error.is_none() {
                    first_error = Some(io::Error::from_raw_os_error(-code));
                }
            }
            rest = &rest[align(len).min(rest.len())..];
        }
        // A failed batch is aborted as a whole; the kernel may not acknowledge the rest.
        if first_error.is_some() {
            break;
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::Rule;

    /// The type and payload of each message in a batch.
    fn messages(buf: &[u8]) -> Vec<(u16, Vec<u8>)> {
        let mut out = Vec::new();
        let mut rest = buf;
        while rest.len() >= 16 {
            let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
            out.push((
                u16::from_ne_bytes([rest[4], rest[5]]),
                rest[16..len].to_vec(),
            ));
            rest = &rest[len..];
        }
        out
    }

    #[test]
    fn a_batch_frames_its_messages_and_counts_their_acks() {
        let ruleset = Ruleset {
            delete: vec![(Family::Inet, "t".into())],
            create: vec![Table {
                family: Family::Inet,
                name: "t".into(),
                chains: vec![Chain {
                    name: "output",
                    hook: Hook::Output,
                    devices: Vec::new(),
                    rules: vec![Rule {
                        matches: vec![Match::OutLoopback],
                        verdict: Verdict::Accept,
                    }],
                }],
            }],
        };
        let (batch, acks) = encode(&ruleset);
        let kinds: Vec<u16> = messages(&batch).iter().map(|(k, _)| *k).collect();
        let nft = |m: u16| (NFNL_SUBSYS_NFTABLES << 8) | m;
        assert_eq!(
            kinds,
            [
                NFNL_MSG_BATCH_BEGIN,
                nft(NFT_MSG_NEWTABLE),
                nft(NFT_MSG_DELTABLE),
                nft(NFT_MSG_NEWTABLE),
                nft(NFT_MSG_NEWCHAIN),
                nft(NFT_MSG_NEWRULE),
                NFNL_MSG_BATCH_END
            ]
        );
        assert_eq!(acks, 5);
        // Every message is for the inet family; the batch itself names the subsystem.
        let msgs = messages(&batch);
        assert_eq!(msgs[0].1[2..4], NFNL_SUBSYS_NFTABLES.to_be_bytes());
        assert!(msgs[1..6].iter().all(|(_, p)| p[0] == NFPROTO_INET));
    }

    #[test]
    fn a_network_is_masked_before_it_is_compared() {
        let e = encode_match(
            Family::Netdev,
            &Match::Addr {
                dst: true,
                addr: "198.18.1.7".parse().unwrap(),
                prefix: 24,
            },
        );
        // meta protocol, cmp 0x0800, payload, bitwise, cmp.
        assert_eq!(e.len(), 5);
        let joined = e.concat();
        let find = |needle: &[u8]| joined.windows(needle.len()).any(|w| w == needle);
        assert!(find(&attr(NFTA_DATA_VALUE, &[255, 255, 255, 0])));
        assert!(find(&attr(NFTA_DATA_VALUE, &[198, 18, 1, 0])));
        assert!(find(&attr(NFTA_DATA_VALUE, &0x0800u16.to_be_bytes())));
        // A full-length address needs no mask.
        let host = encode_match(
            Family::Inet,
            &Match::Addr {
                dst: false,
                addr: "2001:2::5".parse().unwrap(),
                prefix: 128,
            },
        );
        assert_eq!(host.len(), 4);
    }
}
