//! The value parsers of the flags in `cli.rs` and of `config.rs`: what only the command line
//! reads (the ring size's range, bind mounts) and the store's one reading of sizes, durations
//! and times (`quarry_store::human`). Each error says what was given and shows a form that
//! works.

use std::path::PathBuf;

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

/// Times and durations: the one reading of both (`2026-11-28 10:00`, `2h`, `15m`).
pub use quarry_store::human::{parse_duration, parse_time};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_sizes() {
        assert_eq!(parse_ring_size("64K").unwrap(), 65536);
        assert_eq!(parse_ring_size("16M").unwrap(), 16 << 20);
        assert_eq!(parse_ring_size("16 MiB").unwrap(), 16 << 20);
        assert!(parse_ring_size("3M").unwrap_err().contains("power of two"));
        assert!(parse_ring_size("1K").unwrap_err().contains("power of two"));
        assert!(parse_ring_size("lots").unwrap_err().contains("not a size"));
    }
}
