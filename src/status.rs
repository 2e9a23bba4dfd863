//! The live status of a running recorder: written by `quarry record` into the store every
//! second, read by `quarry status`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use quarry_recorder::stats::StatsSnapshot;
use quarry_store::Store;
use serde::{Deserialize, Serialize};

use crate::cli::{Format, StatusArgs};
use crate::exit;

/// A status older than this means the recorder is stuck or gone.
const STALE_AFTER_SECS: i64 = 5;

/// What `<store>/.status.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusFile {
    pub pid: u32,
    pub scope: String,
    pub started: String,
    pub updated: String,
    pub events: u64,
    pub events_per_s: f64,
    /// Rows decoded since start, and per second over the last second, per table.
    pub rows: BTreeMap<String, u64>,
    pub rows_per_s: BTreeMap<String, f64>,
    pub kernel_drops: u64,
    pub rows_pending: u64,
    /// Rows decoded and not kept (disk full, write errors, sealer over budget); they become
    /// `gap` rows once the disk allows.
    #[serde(default)]
    pub rows_lost: u64,
    /// Why sealing is failing right now ("disk full", "write error"), when it is.
    #[serde(default)]
    pub degraded: Option<String>,
    pub segments_sealed: u64,
    pub bytes_sealed: u64,
    pub last_segment: Option<String>,
    pub last_error: Option<String>,
    pub memory_rss_mib: Option<f64>,
}

impl StatusFile {
    pub fn new(
        scope: &str,
        now: &StatsSnapshot,
        last: &StatsSnapshot,
        secs: f64,
        started: &str,
    ) -> StatusFile {
        let rate = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / secs.max(1e-3);
        let last_rows: BTreeMap<_, _> = last.table_rows.iter().copied().collect();
        StatusFile {
            pid: std::process::id(),
            scope: scope.to_string(),
            started: started.to_string(),
            updated: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            events: now.events,
            events_per_s: rate(now.events, last.events),
            rows: now
                .table_rows
                .iter()
                .map(|(t, n)| (t.name().to_string(), *n))
                .collect(),
            rows_per_s: now
                .table_rows
                .iter()
                .map(|(t, n)| {
                    (
                        t.name().to_string(),
                        rate(*n, last_rows.get(t).copied().unwrap_or(0)),
                    )
                })
                .collect(),
            kernel_drops: now.kernel_drops,
            rows_pending: now.rows_pending,
            rows_lost: now.rows_lost,
            degraded: now.degraded.map(str::to_string),
            segments_sealed: now.segments_sealed,
            bytes_sealed: now.bytes_sealed,
            last_segment: now.last_segment.as_ref().map(|p| p.display().to_string()),
            last_error: now.last_error.clone(),
            memory_rss_mib: rss_mib(),
        }
    }

    /// Replaces the status file atomically (write, then rename), never through a symlink.
    pub fn write(&self, store: &Store) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = store.status_path();
        let tmp = path.with_extension("json.tmp");
        let _ = std::fs::remove_file(&tmp); // removes a planted symlink itself, not its target
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        let written = f
            .write_all(&serde_json::to_vec_pretty(self)?)
            // rename replaces a symlink at `path` rather than writing through it.
            .and_then(|_| std::fs::rename(&tmp, &path));
        if written.is_err() {
            // A full disk: leave no half-written temporary file taking space.
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }
}

fn rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

pub fn run(args: StatusArgs) -> anyhow::Result<u8> {
    let store_dir = args.store.resolve();
    let store = Store::at(&store_dir);
    let path = store.status_path();
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no recorder status at {}: is `quarry record --store {}` running?",
            path.display(),
            store_dir.display()
        )
    })?;
    let status: StatusFile =
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
    let age = chrono::DateTime::parse_from_rfc3339(&status.updated)
        .map(|t| (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds())
        .unwrap_or(i64::MAX);
    let running = alive(status.pid) && age <= STALE_AFTER_SECS;
    match args.out.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "running": running, "status": status })
            )?
        ),
        Format::Table => {
            let state = if running { "running" } else { "NOT RUNNING" };
            println!(
                "recorder {state} (pid {}, {}), started {}, status from {} ({age}s ago)",
                status.pid, status.scope, status.started, status.updated
            );
            println!(
                "events: {} total, {:.0}/s; dropped by the kernel: {}; rows not yet sealed: {}",
                status.events, status.events_per_s, status.kernel_drops, status.rows_pending
            );
            for (table, rows) in &status.rows {
                println!(
                    "  {table:<10} {rows:>12} rows  {:>10.0}/s",
                    status.rows_per_s.get(table).copied().unwrap_or(0.0)
                );
            }
            println!(
                "store: {} segments sealed ({} bytes) this run; last: {}",
                status.segments_sealed,
                status.bytes_sealed,
                status.last_segment.as_deref().unwrap_or("none yet")
            );
            if let Some(m) = status.memory_rss_mib {
                println!("memory: {m:.0} MiB resident");
            }
            if let Some(reason) = &status.degraded {
                println!(
                    "DEGRADED ({reason}): still draining the kernel; {} rows not kept so far \
                     (written as gap rows once sealing works again)",
                    status.rows_lost
                );
            } else if status.rows_lost > 0 {
                println!(
                    "{} rows were not kept this run (see the gap table)",
                    status.rows_lost
                );
            }
            if let Some(e) = &status.last_error {
                println!("sealing is failing: {e}");
            }
        }
    }
    Ok(if running { exit::OK } else { exit::ERROR })
}
