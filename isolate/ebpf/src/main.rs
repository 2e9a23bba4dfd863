//! Network quarantine: cgroup_skb programs on a container's cgroup that drop every packet in
//! both directions except to and from the allow-listed collectors, and count what they drop.
//!
//! The packet starts at its IP header. Only the remote address (and port, for TCP and UDP) is
//! looked at: the allow-list is a longest-prefix-match trie per address family whose value says
//! which remote port is allowed (0 = any). Everything unparseable is dropped: a quarantine
//! fails closed.

#![no_std]
#![no_main]

use aya_ebpf::macros::{cgroup_skb, map};
use aya_ebpf::maps::lpm_trie::Key;
use aya_ebpf::maps::{LpmTrie, PerCpuArray};
use aya_ebpf::programs::SkBuffContext;
use quarry_isolate_common::{AllowValue, DROPS_EGRESS, DROPS_INGRESS};

#[map]
static ALLOW_V4: LpmTrie<[u8; 4], AllowValue> = LpmTrie::with_max_entries(256, 0);

#[map]
static ALLOW_V6: LpmTrie<[u8; 16], AllowValue> = LpmTrie::with_max_entries(256, 0);

#[map]
static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);

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

/// Decides one packet. `egress`: the remote end is the destination; else the source.
#[inline(always)]
fn decide(ctx: &SkBuffContext, egress: bool) -> i32 {
    let Ok(first) = ctx.load::<u8>(0) else {
        return DROP;
    };
    let ok = match first >> 4 {
        4 => {
            let ihl = ((first & 0x0f) as usize) * 4;
            let proto: u8 = ctx.load(9).unwrap_or(0);
            let addr: [u8; 4] = ctx.load(if egress { 16 } else { 12 }).unwrap_or([0; 4]);
            let port = remote_port(ctx, proto, ihl, egress);
            allowed(ALLOW_V4.get(Key::new(32, addr)), port)
        }
        6 => {
            let proto: u8 = ctx.load(6).unwrap_or(0);
            let addr: [u8; 16] = ctx.load(if egress { 24 } else { 8 }).unwrap_or([0; 16]);
            let port = remote_port(ctx, proto, 40, egress);
            allowed(ALLOW_V6.get(Key::new(128, addr)), port)
        }
        _ => false,
    };
    if ok {
        return PASS;
    }
    let slot = if egress { DROPS_EGRESS } else { DROPS_INGRESS };
    if let Some(n) = DROPS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, written only by this CPU while the program runs.
        unsafe { *n += 1 };
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
