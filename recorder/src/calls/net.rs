//! The network family: socket, bind, connect, listen and accept as `net` rows (listen and
//! accept carry the address the socket was bound to), socket addresses, and TCP state changes.

use quarry_recorder_common::{TcpStateEvent, nr};
use quarry_store::schema::{NetRow, RowIdentity};

use super::{Call, CallRow, Calls, ProcView, raw};

/// A network syscall as its row; None for a syscall of another family.
pub(super) fn decode<P: ProcView>(calls: &mut Calls<P>, c: &Call) -> Option<CallRow> {
    let ev = c.ev;
    let a = &ev.args;
    let row = match ev.nr {
        nr::CONNECT | nr::BIND => {
            let sa = parse_sockaddr(raw(&ev.str1, ev.str1_len)).unwrap_or_default();
            let connect = ev.nr == nr::CONNECT;
            CallRow::Net(NetRow {
                id: Some(c.id.clone()),
                event: if connect { "connect" } else { "bind" },
                syscall: Some(c.syscall),
                fd: Some(a[0] as i32),
                family: (!sa.family.is_empty()).then_some(sa.family),
                local_addr: if connect { None } else { sa.addr.clone() },
                local_port: if connect { None } else { sa.port },
                remote_addr: if connect { sa.addr } else { None },
                remote_port: if connect { sa.port } else { None },
                unix_path: sa.unix_path,
                ..Default::default()
            })
        }
        nr::SOCKET => CallRow::Net(NetRow {
            id: Some(c.id.clone()),
            event: "socket",
            syscall: Some(c.syscall),
            family: Some(family_name(a[0] as u16)),
            protocol: Some(socket_type(a[1])),
            ..Default::default()
        }),
        nr::LISTEN | nr::ACCEPT | nr::ACCEPT4 => {
            let fd = a[0] as i32;
            let local = calls.bound.get(&(c.pid, fd)).cloned().unwrap_or_default();
            // accept: the peer address the kernel wrote sits in str1.
            let peer = parse_sockaddr(raw(&ev.str1, ev.str1_len)).unwrap_or_default();
            let family = if local.family.is_empty() {
                peer.family
            } else {
                local.family
            };
            CallRow::Net(NetRow {
                id: Some(c.id.clone()),
                event: if ev.nr == nr::LISTEN {
                    "listen"
                } else {
                    "accept"
                },
                syscall: Some(c.syscall),
                fd: Some(fd),
                family: (!family.is_empty()).then_some(family),
                local_addr: local.addr,
                local_port: local.port,
                remote_addr: peer.addr,
                remote_port: peer.port,
                unix_path: local.unix_path.or(peer.unix_path),
                backlog: (ev.nr == nr::LISTEN).then_some(a[1] as i32),
                ..Default::default()
            })
        }
        _ => return None,
    };
    Some(row)
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SockAddr {
    pub family: String,
    pub addr: Option<String>,
    pub port: Option<u16>,
    pub unix_path: Option<String>,
}

/// Parses a `struct sockaddr` as copied from user memory.
pub fn parse_sockaddr(b: &[u8]) -> Option<SockAddr> {
    if b.len() < 2 {
        return None;
    }
    let family = u16::from_le_bytes([b[0], b[1]]);
    let port = || b.get(2..4).map(|p| u16::from_be_bytes([p[0], p[1]]));
    Some(match family {
        2 if b.len() >= 8 => SockAddr {
            family: "inet".into(),
            addr: Some(std::net::Ipv4Addr::new(b[4], b[5], b[6], b[7]).to_string()),
            port: port(),
            unix_path: None,
        },
        10 if b.len() >= 24 => {
            let a: [u8; 16] = b[8..24].try_into().ok()?;
            SockAddr {
                family: "inet6".into(),
                addr: Some(std::net::Ipv6Addr::from(a).to_string()),
                port: port(),
                unix_path: None,
            }
        }
        1 => {
            let raw = &b[2..];
            let path = if raw.first() == Some(&0) {
                // Abstract namespace: shown with a leading '@', as ss(8) does.
                let name = &raw[1..];
                let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
                format!("@{}", String::from_utf8_lossy(&name[..end]))
            } else {
                crate::decode::c_string(raw)
            };
            SockAddr {
                family: "unix".into(),
                addr: None,
                port: None,
                unix_path: Some(path),
            }
        }
        other => SockAddr {
            family: format!("other({other})"),
            ..Default::default()
        },
    })
}

/// An address family's name, as the `family` column spells it.
fn family_name(family: u16) -> String {
    match family {
        1 => "unix".into(),
        2 => "inet".into(),
        10 => "inet6".into(),
        16 => "netlink".into(),
        17 => "packet".into(),
        other => format!("other({other})"),
    }
}

/// The socket type in socket(2)'s second argument (without SOCK_NONBLOCK/SOCK_CLOEXEC).
fn socket_type(ty: u64) -> &'static str {
    match ty & 0xf {
        1 => "stream",
        2 => "dgram",
        3 => "raw",
        5 => "seqpacket",
        10 => "packet",
        _ => "other",
    }
}

/// A TCP state change as a `net` row. It is not attributed to a process: the kernel changes
/// state wherever it runs (often in softirq context), so the current task says nothing about
/// the socket's owner.
pub fn tcp_state_row(ev: &TcpStateEvent, mut id: RowIdentity) -> NetRow {
    let state = |s: i32| {
        usize::try_from(s)
            .ok()
            .and_then(quarry_store::schema::tcp_state_name)
            .unwrap_or("UNKNOWN")
    };
    let (family, addr): (&str, fn(&[u8; 16]) -> String) = if ev.family == 10 {
        ("inet6", |a| std::net::Ipv6Addr::from(*a).to_string())
    } else {
        ("inet", |a| {
            std::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string()
        })
    };
    (id.pid, id.tid, id.cgroup_id) = (0, 0, 0);
    id.comm = String::new();
    NetRow {
        id: Some(id),
        event: "tcp_state",
        family: Some(family.into()),
        protocol: Some(match ev.protocol {
            6 => "tcp",
            132 => "sctp",
            262 => "mptcp",
            _ => "other",
        }),
        local_addr: Some(addr(&ev.saddr)),
        local_port: Some(ev.sport),
        remote_addr: Some(addr(&ev.daddr)),
        remote_port: Some(ev.dport),
        old_state: Some(state(ev.old_state)),
        new_state: Some(state(ev.new_state)),
        ..Default::default()
    }
}
