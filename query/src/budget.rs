//! The memory a query may use and where it spills when it needs more.
//!
//! `quarry sql`, `timeline` and `hunt` run on the node the recorder runs on: a query must not
//! take the memory the recorder (or the workload) needs. Every session gets a fair spill pool
//! of a fixed size ([`SessionOptions::memory_limit`], by default the smaller of 2 GiB and a
//! quarter of the machine's memory); sorts, aggregations and joins that can spill write to a
//! private temporary directory (mode 0700, removed when the session ends) instead of growing,
//! and a query that still does not fit fails with [`QueryError::MemoryBudget`], which names the
//! budget and the flag that raises it.
//!
//! This module only sizes and builds the engine's runtime; it must not decide what a query
//! reads (that is [`crate::segments`]) or run anything.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::error::DataFusionError;
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;

use crate::{QueryError, Result};

/// The default budget never exceeds this, however large the machine.
pub const DEFAULT_LIMIT_CAP: u64 = 2 << 30;

/// The smallest budget accepted: below this even a count fails to plan its buffers.
pub const MIN_LIMIT: u64 = 1 << 20;

/// How a query session may use the machine. `Default` is what `quarry` uses without flags;
/// a configuration file can fill these in later.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// Bytes the engine may hold at once (None: [`default_memory_limit`]).
    pub memory_limit: Option<u64>,
    /// Where spill files go (None: the system's temporary directory, `$TMPDIR` or `/tmp`).
    /// A private directory is created inside it for each session.
    pub spill_dir: Option<PathBuf>,
}

impl SessionOptions {
    /// The budget this session gets.
    pub fn limit(&self) -> u64 {
        self.memory_limit.unwrap_or_else(default_memory_limit)
    }
}

/// The smaller of [`DEFAULT_LIMIT_CAP`] and a quarter of the machine's memory.
pub fn default_memory_limit() -> u64 {
    match total_memory() {
        Some(total) => (total / 4).clamp(MIN_LIMIT, DEFAULT_LIMIT_CAP),
        None => DEFAULT_LIMIT_CAP,
    }
}

/// Physical memory from `/proc/meminfo` (None where it cannot be read).
fn total_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A private directory for one session's spill files, removed when the session ends.
#[derive(Debug)]
pub(crate) struct SpillDir(PathBuf);

impl SpillDir {
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for SpillDir {
    fn drop(&mut self) {
        // A cancelled or failed query's engine tasks can still be winding down on other
        // threads, creating or removing spill files while the directory is removed: one
        // failed pass would leave spilled evidence behind in /tmp, so try again for a while.
        for _ in 0..200 {
            match std::fs::remove_dir_all(&self.0) {
                Ok(()) => return,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
    }
}

/// The engine runtime for `options`: the memory pool and the spill directory. The returned
/// [`SpillDir`] must outlive the runtime.
pub(crate) fn runtime(options: &SessionOptions) -> Result<(RuntimeEnvBuilder, SpillDir)> {
    let base = options.spill_dir.clone().unwrap_or_else(std::env::temp_dir);
    // Mode 0700 from creation: spilled rows are evidence too, and the base is often /tmp.
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("quarry-spill-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(&base)
        .map_err(|e| QueryError::io(&base, e))?;
    let dir = SpillDir(dir.keep());
    let limit = usize::try_from(options.limit()).unwrap_or(usize::MAX);
    // Tracking the largest consumers makes the engine's message say what took the memory.
    let pool = TrackConsumersPool::new(
        FairSpillPool::new(limit),
        NonZeroUsize::new(5).expect("5 is not zero"),
    );
    let builder = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(pool))
        .with_disk_manager_builder(
            DiskManagerBuilder::default()
                .with_mode(DiskManagerMode::Directories(vec![dir.path().to_path_buf()])),
        );
    Ok((builder, dir))
}

/// Memory each sort keeps back for merging what it spilled: the engine's 10 MiB, less in a
/// small budget (two sorts a query, two queries of a hunt, must fit with room to work).
pub(crate) fn sort_spill_reservation(limit: u64) -> usize {
    usize::try_from((limit / 16).min(10 << 20)).unwrap_or(10 << 20)
}

/// `e` as the budget error when the engine ran out of its memory pool, else as it is.
pub(crate) fn engine_error(e: DataFusionError, limit: u64) -> QueryError {
    if exhausted(&e) {
        QueryError::MemoryBudget {
            limit,
            source: Box::new(e),
        }
    } else {
        QueryError::Engine(e)
    }
}

/// Whether the pool refused memory somewhere in `e` (streams wrap the error in Arrow,
/// shared and context errors on its way up).
fn exhausted(e: &DataFusionError) -> bool {
    match e {
        DataFusionError::ResourcesExhausted(_) => true,
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            exhausted(inner)
        }
        DataFusionError::Shared(inner) => exhausted(inner),
        DataFusionError::ArrowError(inner, _) => match inner.as_ref() {
            arrow::error::ArrowError::ExternalError(source) => source
                .downcast_ref::<DataFusionError>()
                .is_some_and(exhausted),
            _ => false,
        },
        DataFusionError::External(source) => source
            .downcast_ref::<DataFusionError>()
            .is_some_and(exhausted),
        DataFusionError::Collection(all) => all.iter().any(exhausted),
        _ => false,
    }
}

/// Reads a memory budget: a size as [`quarry_store::human::parse_size`] reads it (`512M`,
/// `2G`, `1.5GiB`, `1073741824`), at least [`MIN_LIMIT`].
pub fn parse_memory_limit(text: &str) -> std::result::Result<u64, String> {
    let bytes = quarry_store::human::parse_size(text)?;
    if bytes < MIN_LIMIT {
        return Err(format!("'{}' is too small: give at least 1M", text.trim()));
    }
    Ok(bytes)
}

/// A size for people: `2.0 GiB`, `512.0 MiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A flag value that doubles `bytes`, for the error's suggestion (`4G`, `512M`).
pub(crate) fn suggest_double(bytes: u64) -> String {
    let double = bytes.saturating_mul(2);
    if double >= 1 << 30 {
        format!("{}G", double.div_ceil(1 << 30))
    } else {
        format!("{}M", double.div_ceil(1 << 20))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_with_binary_units() {
        assert_eq!(parse_memory_limit("2G"), Ok(2 << 30));
        assert_eq!(parse_memory_limit("512M"), Ok(512 << 20));
        assert_eq!(parse_memory_limit("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_memory_limit("64 mb"), Ok(64 << 20));
        assert_eq!(parse_memory_limit("1048576"), Ok(1 << 20));
        assert!(parse_memory_limit("2X").unwrap_err().contains("not a size"));
        assert!(parse_memory_limit("G").unwrap_err().contains("not a size"));
        assert!(parse_memory_limit("10K").unwrap_err().contains("too small"));
    }

    #[test]
    fn the_default_is_capped_and_a_quarter_of_memory() {
        let limit = default_memory_limit();
        assert!((MIN_LIMIT..=DEFAULT_LIMIT_CAP).contains(&limit));
        if let Some(total) = total_memory() {
            assert!(limit <= total / 4 || limit == MIN_LIMIT);
        }
    }

    #[test]
    fn budget_errors_are_found_inside_wrapped_errors() {
        let inner = DataFusionError::ResourcesExhausted("pool".into());
        let wrapped = DataFusionError::ArrowError(
            Box::new(arrow::error::ArrowError::ExternalError(Box::new(
                DataFusionError::Context("sort".into(), Box::new(inner)),
            ))),
            None,
        );
        let e = engine_error(wrapped, 64 << 20);
        assert!(matches!(e, QueryError::MemoryBudget { .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("64.0 MiB") && text.contains("--memory-limit"),
            "{text}"
        );
        let other = engine_error(DataFusionError::Plan("x".into()), 1 << 30);
        assert!(matches!(other, QueryError::Engine(_)));
    }
}
