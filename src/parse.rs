//! How people write sizes, durations, times and bind mounts on the command line and in the
//! configuration file: the value parsers of the flags in `cli.rs` and of `config.rs`. Each
//! error says what was given and shows a form that works.

use std::path::PathBuf;
use std::time::Duration;

/// Parses `MOUNTPOINT=HOSTPATH`.
pub fn parse_bind(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((k, v)) if k.starts_with('/') && !v.is_empty() => Ok((k.to_string(), v.into())),
        _ => Err(format!(
            "'{s}' is not MOUNTPOINT=HOSTPATH (e.g. /data=/srv/copy)"
        )),
    }
}

/// Sizes: the one parser of every size flag and configuration value (its forms are in its
/// documentation: `4096`, `64K`, `800M`, `1.5G`, `64MiB`, `64 MB`).
pub use quarry_store::human::parse_size;

/// The kernel ring buffer's size: a size that is a power of two from 4K to 1G.
pub fn parse_ring_size(s: &str) -> Result<u32, String> {
    let bytes = parse_size(s)?;
    if !bytes.is_power_of_two() || !(4096..=(1 << 30)).contains(&bytes) {
        return Err(format!(
            "'{}' must be a power of two between 4K and 1G (e.g. 16M)",
            s.trim()
        ));
    }
    Ok(bytes as u32)
}

/// Live detection's memory (`--detect-memory`, the config file's `record.detect_memory`): a
/// size of at least 4M.
pub fn parse_detect_memory(s: &str) -> Result<u64, String> {
    let bytes = parse_size(s)?;
    if bytes < 4 << 20 {
        return Err(format!(
            "'{}' is too small for live detection: give at least 4M (e.g. 24M)",
            s.trim()
        ));
    }
    Ok(bytes)
}

/// A query's memory limit (`--memory-limit`, the config file's `query.memory_limit`): the
/// query engine's own reading (a size, at least its minimum); a binary without the engine reads
/// it as a size.
#[cfg(feature = "responder")]
pub use quarry_query::budget::parse_memory_limit as parse_query_memory;
#[cfg(not(feature = "responder"))]
pub use quarry_store::human::parse_size as parse_query_memory;

/// Parses a point in time: RFC 3339, `YYYY-MM-DD HH:MM[:SS]` or `YYYY-MM-DD` (UTC), `now`, or
/// a duration (`2h`, `7d`) meaning that long ago.
pub fn parse_time(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    use chrono::{NaiveDate, NaiveDateTime, Utc};
    let t = s.trim();
    if t == "now" {
        return Ok(Utc::now());
    }
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(t) {
        return Ok(d.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(d) = NaiveDateTime::parse_from_str(t, fmt) {
            return Ok(d.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    if t.starts_with(|c: char| c.is_ascii_digit())
        && let Ok(ago) = parse_duration(t)
    {
        let ago = chrono::Duration::from_std(ago).map_err(|e| e.to_string())?;
        return Utc::now()
            .checked_sub_signed(ago)
            .ok_or_else(|| format!("'{s}' reaches before the calendar's start"));
    }
    Err(format!(
        "'{s}' is not a time; use RFC 3339 (2026-11-28T10:00:00Z), '2026-11-28 10:00' (UTC), a \
         date, or a duration meaning that long ago (2h, 7d)"
    ))
}

/// Parses `90`, `90s`, `15m`, `2h`, `1d` or `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration; use e.g. 30s, 15m, 2h or 1d"))?;
    let too_long = || format!("'{s}' is too long");
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "" | "s" => n,
        "m" => n.checked_mul(60).ok_or_else(too_long)?,
        "h" => n.checked_mul(3600).ok_or_else(too_long)?,
        "d" => n.checked_mul(86_400).ok_or_else(too_long)?,
        other => {
            return Err(format!(
                "unknown unit '{other}' in '{s}'; use ms, s, m, h or d"
            ));
        }
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        let t = parse_time("2026-11-28T14:00:00Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-28T14:00:00+00:00");
        let t = parse_time("2026-11-28T15:00:00+01:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-28T14:00:00+00:00");
        let ago = chrono::Utc::now() - parse_time("2h").unwrap();
        assert!((ago.num_seconds() - 7200).abs() < 60, "{ago}");
        assert!(parse_time("yesterday").unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5y").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn ring_sizes() {
        assert_eq!(parse_ring_size("64K").unwrap(), 65536);
        assert_eq!(parse_ring_size("16M").unwrap(), 16 << 20);
        assert_eq!(parse_ring_size("16 MiB").unwrap(), 16 << 20);
        assert!(parse_ring_size("3M").unwrap_err().contains("power of two"));
        assert!(parse_ring_size("1K").unwrap_err().contains("power of two"));
        assert!(parse_ring_size("lots").unwrap_err().contains("not a size"));
    }

    #[test]
    fn times_of_day_and_dates() {
        let t = parse_time("2026-11-28T10:00:00+01:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-28T09:00:00+00:00");
        assert_eq!(
            parse_time("2026-11-28 10:30").unwrap().to_rfc3339(),
            "2026-11-28T10:30:00+00:00"
        );
        assert_eq!(
            parse_time("2026-11-28").unwrap().to_rfc3339(),
            "2026-11-28T00:00:00+00:00"
        );
        let ago = chrono::Utc::now() - parse_time("2h").unwrap();
        assert!((ago.num_seconds() - 7200).abs() < 60);
        assert!(parse_time("yesterday").is_err());
    }
}
