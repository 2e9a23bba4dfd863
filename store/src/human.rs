//! Sizes, durations and errors for people, as every command prints them and as retention caps
//! are written (`1.5 GiB`, `7d`), and the one parser of each of sizes ([`parse_size`]: every
//! size flag and configuration value goes through it; a flag with a range checks it on top),
//! durations ([`parse_duration`]) and points in time ([`parse_time`]) as people write them.

use std::time::Duration;

/// Human size, e.g. `1.5 GiB`.
pub fn human_bytes(b: u64) -> String {
    match b {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// Reads a size as people write it: plain bytes (`4096`), or a number (decimals allowed) with
/// a unit `K`, `M`, `G` or `T`, any case, optionally followed by `B` or `iB` and optionally
/// after a space: `64K`, `800m`, `1.5G`, `64MiB`, `64 MB`. Units are powers of 1024 (`MB`
/// too, as `ls -h` and the rest of Quarry print them). `0` is a size; the caller refuses it
/// where it means nothing.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit = unit.trim_start().to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(&unit);
    let shift: u32 = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(not_a_size(text)),
    };
    let too_large = || format!("'{}' is too large", text.trim());
    // Whole numbers exactly (a byte count above 2^53 stays itself); fractions through f64.
    if let Ok(n) = number.parse::<u64>() {
        return n.checked_mul(1 << shift).ok_or_else(too_large);
    }
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0 && number.contains('.'))
        .ok_or_else(|| not_a_size(text))?;
    let bytes = value * (1u64 << shift) as f64;
    if bytes >= u64::MAX as f64 {
        return Err(too_large());
    }
    Ok(bytes as u64)
}

/// The one error of [`parse_size`]: what was given and the forms that work.
fn not_a_size(text: &str) -> String {
    format!(
        "'{}' is not a size; give bytes or a number with K, M, G or T (powers of 1024), e.g. \
         4096, 64K, 800M, 1.5G or 64MiB",
        text.trim()
    )
}

/// Human duration as retention caps are written, e.g. `7d`, `36h`, `90m`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// An error and every cause below it on one line (`what failed: why: why`), for logs and
/// status lines. Errors' own Display says only what failed; the causes are their sources.
pub fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

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

    #[derive(Debug, thiserror::Error)]
    #[error("sealing failed")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn sizes_in_every_form_people_write() {
        for (text, bytes) in [
            ("4096", 4096),
            ("0", 0),
            ("64K", 64 << 10),
            ("64k", 64 << 10),
            ("800m", 800 << 20),
            ("16M", 16 << 20),
            ("64MiB", 64 << 20),
            ("64 MB", 64 << 20),
            ("64 mb", 64 << 20),
            ("1G", 1 << 30),
            ("1.5GiB", 3 << 29),
            ("1.5K", 1536),
            ("50G", 50 << 30),
            ("1T", 1 << 40),
            (" 2G ", 2 << 30),
            ("12B", 12),
            ("18446744073709551615", u64::MAX),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
        for bad in [
            "", "G", "big", "2X", "1.2.3M", "-1M", "64 M B", "nanG", "1e3",
        ] {
            let e = parse_size(bad).unwrap_err();
            assert!(
                e.contains("is not a size") && e.contains("64K"),
                "{bad}: {e}"
            );
        }
        assert!(parse_size("20000000T").unwrap_err().contains("too large"));
        assert!(
            parse_size("18446744073709551616")
                .unwrap_err()
                .contains("not a size")
        );
    }

    #[test]
    fn causes_follow_the_error_once() {
        let e = Outer(std::io::Error::other("no space"));
        assert_eq!(with_causes(&e), "sealing failed: no space");
    }

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
