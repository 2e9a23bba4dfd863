//! Map layouts shared by the quarantine programs (kernel) and `quarry-isolate` (user).

#![no_std]

/// Value of an allow-list entry: the remote port allowed (0 = every port).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllowValue {
    pub port: u16,
    pub _pad: [u8; 6],
}

/// `DROPS` slot counting packets the container tried to send.
pub const DROPS_EGRESS: u32 = 0;
/// `DROPS` slot counting packets that tried to reach the container.
pub const DROPS_INGRESS: u32 = 1;

#[cfg(feature = "user")]
// SAFETY: repr(C), Copy, every bit pattern valid, padding made explicit.
unsafe impl aya::Pod for AllowValue {}
