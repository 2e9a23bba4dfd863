//! Converting the kernel's monotonic event times to wall-clock UTC.
//!
//! Events carry `bpf_ktime_get_ns()` (CLOCK_MONOTONIC). The offset to CLOCK_REALTIME is taken
//! between two realtime reads around one monotonic read, and refreshed now and then so an NTP
//! step shows up in `time` while `ktime_ns` keeps the exact order.

use chrono::{DateTime, Utc};
use nix::time::{ClockId, clock_gettime};

fn now_ns(clock: ClockId) -> i128 {
    let ts = clock_gettime(clock).expect("CLOCK_REALTIME and CLOCK_MONOTONIC always exist");
    ts.tv_sec() as i128 * 1_000_000_000 + ts.tv_nsec() as i128
}

/// Maps monotonic nanoseconds to UTC.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    /// realtime - monotonic, in nanoseconds.
    offset_ns: i128,
}

impl WallClock {
    /// Measures the current offset.
    pub fn measure() -> WallClock {
        let before = now_ns(ClockId::CLOCK_REALTIME);
        let mono = now_ns(ClockId::CLOCK_MONOTONIC);
        let after = now_ns(ClockId::CLOCK_REALTIME);
        WallClock {
            offset_ns: (before + after) / 2 - mono,
        }
    }

    /// A clock with a fixed offset, for tests.
    pub fn with_offset_ns(offset_ns: i128) -> WallClock {
        WallClock { offset_ns }
    }

    /// The monotonic clock now, in the units events carry.
    pub fn monotonic_now_ns() -> u64 {
        now_ns(ClockId::CLOCK_MONOTONIC) as u64
    }

    /// Microseconds since the Unix epoch: the form the store's `time` column holds.
    #[inline]
    pub fn to_micros(&self, ktime_ns: u64) -> i64 {
        // In i64 when it fits (until the year 2262): this runs once per raw-stream row, and
        // a 128-bit division is a library call.
        match (i64::try_from(ktime_ns), i64::try_from(self.offset_ns)) {
            (Ok(k), Ok(o)) if k.checked_add(o).is_some() => (k + o).div_euclid(1000),
            _ => (ktime_ns as i128 + self.offset_ns).div_euclid(1000) as i64,
        }
    }

    pub fn to_utc(&self, ktime_ns: u64) -> DateTime<Utc> {
        let wall = ktime_ns as i128 + self.offset_ns;
        DateTime::from_timestamp_nanos(wall.clamp(0, i64::MAX as i128) as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_now_to_now() {
        let c = WallClock::measure();
        let t = c.to_utc(WallClock::monotonic_now_ns());
        let drift = (Utc::now() - t).num_milliseconds().abs();
        assert!(drift < 1000, "drift {drift} ms");
    }

    #[test]
    fn fixed_offset() {
        let c = WallClock::with_offset_ns(1_700_000_000_000_000_000);
        assert_eq!(
            c.to_utc(5_000).timestamp_nanos_opt(),
            Some(1_700_000_000_000_005_000)
        );
    }
}
