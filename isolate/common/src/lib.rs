//! Map layouts shared by the quarantine programs (kernel) and `quarry-isolate` (user).

#![no_std]

/// Value of an allow-list entry: the remote port allowed (0 = every port).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllowValue {
    pub port: u16,
    pub _pad: [u8; 6],
}

/// Packets a quarantine dropped, per container cgroup (a per-CPU hash map value).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropCounts {
    /// Packets the container tried to send.
    pub egress: u64,
    /// Packets that tried to reach the container.
    pub ingress: u64,
}

/// Allow-list keys start with the quarantined cgroup's id, big-endian, so one trie serves every
/// quarantined container: a rule for network N/p of cgroup C is the prefix (C, N) of length
/// 64 + p.
pub const CGROUP_KEY_BITS: u32 = 64;

/// Deepest cgroup level searched for a quarantined ancestor of a packet's cgroup.
pub const MAX_CGROUP_DEPTH: i32 = 16;

#[cfg(feature = "user")]
// SAFETY: repr(C), Copy, every bit pattern valid, padding made explicit.
unsafe impl aya::Pod for AllowValue {}
#[cfg(feature = "user")]
// SAFETY: repr(C), Copy, two u64s, no padding.
unsafe impl aya::Pod for DropCounts {}
