//! Network quarantine: cgroup_skb programs on a container's cgroup that drop every packet in
//! both directions except to and from the allow-listed collectors, and count what they drop.
//!
//! One loaded instance serves every quarantined container (it is pinned once and reused, so a
//! quarantine takes a few map updates and two attachments, not a load): the packet's cgroup, or
//! its nearest ancestor in `QUARANTINED`, selects the container, whose entries in the
//! allow-lists are keyed by its cgroup id.
//!
//! The packet starts at its IP header. Only the remote address (and port, for TCP and UDP) is
//! looked at: the allow-list is a longest-prefix-match trie per address family whose value says
//! which remote port is allowed (0 = any). Everything unparseable is dropped: a quarantine
//! fails closed.

#![no_std]
#![no_main]

use aya_ebpf::EbpfContext;
use aya_ebpf::helpers::generated::{bpf_skb_ancestor_cgroup_id, bpf_skb_cgroup_id};
use aya_ebpf::macros::{cgroup_skb, map};
use aya_ebpf::maps::lpm_trie::Key;
use aya_ebpf::maps::{HashMap, LpmTrie, PerCpuHashMap};
use aya_ebpf::programs::SkBuffContext;
use quarry_isolate_common::{AllowValue, DropCounts, MAX_CGROUP_DEPTH};

/// cgroup ids of the quarantined containers.
#[map]
static QUARANTINED: HashMap<u64, u8> = HashMap::with_max_entries(4096, 0);

/// (cgroup id, IPv4 network) -> allowed remote port.
#[map]
static ALLOW_V4: LpmTrie<[u8; 12], AllowValue> = LpmTrie::with_max_entries(16384, 0);

/// (cgroup id, IPv6 network) -> allowed remote port.
#[map]
static ALLOW_V6: LpmTrie<[u8; 24], AllowValue> = LpmTrie::with_max_entries(16384, 0);

/// Dropped packets per quarantined cgroup.
#[map]
static DROPS: PerCpuHashMap<u64, DropCounts> = PerCpuHashMap::with_max_entries(4096, 0);

const PASS: i32 = 1;
const DROP: i32 = 0;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

#[inline(always)]
fn allowed(value: Option<&AllowValue>, port: u16) -> bool {
    match value {
        Some(v) => v.port == 0 || v.port == port,
        None => false,
    }
}

/// The quarantined cgroup this packet's cgroup is, or lies below.
#[inline(always)]
fn quarantined_cgroup(ctx: &SkBuffContext) -> Option<u64> {
    let skb = ctx.as_ptr() as *mut _;
    // SAFETY: helpers reading the skb's socket cgroup; they take the context pointer.
    let own = unsafe { bpf_skb_cgroup_id(skb) };
    // SAFETY: presence test only.
    if unsafe { QUARANTINED.get(&own) }.is_some() {
        return Some(own);
    }
    for level in 1..MAX_CGROUP_DEPTH {
        // SAFETY: as above.
        let ancestor = unsafe { bpf_skb_ancestor_cgroup_id(skb, level) };
        if ancestor == 0 || ancestor == own {
            break;
        }
        // SAFETY: presence test only.
        if unsafe { QUARANTINED.get(&ancestor) }.is_some() {
            return Some(ancestor);
        }
    }
    None
}

/// Decides one packet. `egress`: the remote end is the destination; else the source.
#[inline(always)]
fn decide(ctx: &SkBuffContext, egress: bool) -> i32 {
    // Attached but not (or no longer) marked: a release in progress lets traffic through.
    let Some(cgroup) = quarantined_cgroup(ctx) else {
        return PASS;
    };
    let cg = cgroup.to_be_bytes();
    let ok = match ctx.load::<u8>(0) {
        Ok(first) if first >> 4 == 4 => {
            let ihl = ((first & 0x0f) as usize) * 4;
            let proto: u8 = ctx.load(9).unwrap_or(0);
            let addr: [u8; 4] = ctx.load(if egress { 16 } else { 12 }).unwrap_or([0; 4]);
            let port = remote_port(ctx, proto, ihl, egress);
            let mut key = [0u8; 12];
            key[..8].copy_from_slice(&cg);
            key[8..].copy_from_slice(&addr);
            allowed(ALLOW_V4.get(Key::new(96, key)), port)
        }
        Ok(first) if first >> 4 == 6 => {
            let proto: u8 = ctx.load(6).unwrap_or(0);
            let addr: [u8; 16] = ctx.load(if egress { 24 } else { 8 }).unwrap_or([0; 16]);
            let port = remote_port(ctx, proto, 40, egress);
            let mut key = [0u8; 24];
            key[..8].copy_from_slice(&cg);
            key[8..].copy_from_slice(&addr);
            allowed(ALLOW_V6.get(Key::new(192, key)), port)
        }
        _ => false,
    };
    if ok {
        return PASS;
    }
    if let Some(counts) = DROPS.get_ptr_mut(&cgroup) {
        // SAFETY: per-CPU value, written only by this CPU while the program runs.
        unsafe {
            if egress {
                (*counts).egress += 1;
            } else {
                (*counts).ingress += 1;
            }
        }
    }
    DROP
}

/// The remote port of a TCP or UDP packet (0 for other protocols).
#[inline(always)]
fn remote_port(ctx: &SkBuffContext, proto: u8, l4: usize, egress: bool) -> u16 {
    if proto != IPPROTO_TCP && proto != IPPROTO_UDP {
        return 0;
    }
    let off = if egress { l4 + 2 } else { l4 };
    ctx.load::<[u8; 2]>(off)
        .map(u16::from_be_bytes)
        .unwrap_or(0)
}

#[cgroup_skb(egress)]
pub fn quarantine_egress(ctx: SkBuffContext) -> i32 {
    decide(&ctx, true)
}

#[cgroup_skb(ingress)]
pub fn quarantine_ingress(ctx: SkBuffContext) -> i32 {
    decide(&ctx, false)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
