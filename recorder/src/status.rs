//! The live status of a running recorder: `<store>/.status.json`, replaced every second while
//! recording ([`Publisher`]) and read by `quarry status` ([`StatusFile::read`]).
//!
//! The file is the recorder's word about itself, not evidence: it is never sealed or hashed,
//! and a reader judges it stale when its pid is gone or it stopped changing. It must never be
//! written through a symlink (the store directory may be shared with its readers' group).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use quarry_store::Store;
use quarry_store::human::human_bytes;
use serde::{Deserialize, Serialize};

use crate::stats::StatsSnapshot;

/// A status older than this means the recorder is stuck or gone.
pub const STALE_AFTER_SECS: i64 = 5;

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
    /// The upload to a bucket (`--upload`), when one runs: its backlog and last outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<crate::upload::UploadStatus>,
}

/// Why a recorder's status could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// There is no status file: no recorder writes into this store (or it cannot be read).
    #[error("no recorder status at {}: is `quarry record --store {}` running?", path.display(), store.display())]
    Missing {
        path: PathBuf,
        store: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a status file.
    #[error("reading {}", path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl StatusFile {
    /// The status of this process now, `now` against `last` taken `secs` seconds before.
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
            upload: None,
        }
    }

    /// The status a recorder last wrote into `store`.
    pub fn read(store: &Store) -> Result<StatusFile, StatusError> {
        let path = store.status_path();
        let text = std::fs::read_to_string(&path).map_err(|source| StatusError::Missing {
            path: path.clone(),
            store: store.root().to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| StatusError::Invalid { path, source })
    }

    /// Seconds since the file was written (a time that does not parse is infinitely old).
    pub fn age_secs(&self) -> i64 {
        chrono::DateTime::parse_from_rfc3339(&self.updated)
            .map(|t| (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds())
            .unwrap_or(i64::MAX)
    }

    /// Whether the recorder that wrote it is still running: its pid exists and the file is
    /// fresh.
    pub fn is_running(&self) -> bool {
        Path::new(&format!("/proc/{}", self.pid)).exists() && self.age_secs() <= STALE_AFTER_SECS
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

/// Writes the status file of a recording, once a second from the caller's loop.
pub struct Publisher {
    store: Store,
    scope: String,
    started_at: String,
    last: StatsSnapshot,
    last_at: Instant,
    failing: bool,
    upload: Option<std::sync::Arc<crate::upload::UploadState>>,
}

impl Publisher {
    /// A publisher for the recording of `scope` into `store`, starting now.
    pub fn new(store: Store, scope: &str) -> Publisher {
        Publisher {
            store,
            scope: scope.to_string(),
            started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            last: StatsSnapshot::default(),
            last_at: Instant::now(),
            failing: false,
            upload: None,
        }
    }

    /// Also publishes the backlog of this upload.
    pub fn with_upload(mut self, upload: std::sync::Arc<crate::upload::UploadState>) -> Publisher {
        self.upload = Some(upload);
        self
    }

    /// Writes the status of `now` (rates since the last call); a failure is logged once per
    /// episode (on a full disk it fails every second), recording goes on.
    pub fn publish(&mut self, now: StatsSnapshot) {
        let mut file = StatusFile::new(
            &self.scope,
            &now,
            &self.last,
            self.last_at.elapsed().as_secs_f64(),
            &self.started_at,
        );
        file.upload = self.upload.as_ref().map(|u| u.status());
        self.last_at = Instant::now();
        self.last = now;
        match file.write(&self.store) {
            Ok(()) => self.failing = false,
            Err(e) if !self.failing => {
                self.failing = true;
                log::warn!(
                    "cannot write {}: {}",
                    self.store.status_path().display(),
                    quarry_store::human::with_causes(&e)
                );
            }
            Err(_) => {}
        }
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

impl StatusFile {
    /// The status for people (`quarry status`): whether the recorder runs, its rates per
    /// table, what it sealed, and whether sealing is failing.
    pub fn render_text(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        let state = if self.is_running() {
            "running"
        } else {
            "NOT RUNNING"
        };
        writeln!(
            w,
            "recorder {state} (pid {}, {}), started {}, status from {} ({}s ago)",
            self.pid,
            self.scope,
            self.started,
            self.updated,
            self.age_secs()
        )?;
        writeln!(
            w,
            "events: {} total, {:.0}/s; dropped by the kernel: {}; rows not yet sealed: {}",
            self.events, self.events_per_s, self.kernel_drops, self.rows_pending
        )?;
        for (table, rows) in &self.rows {
            writeln!(
                w,
                "  {table:<10} {rows:>12} rows  {:>10.0}/s",
                self.rows_per_s.get(table).copied().unwrap_or(0.0)
            )?;
        }
        writeln!(
            w,
            "store: {} segments sealed ({} bytes) this run; last: {}",
            self.segments_sealed,
            self.bytes_sealed,
            self.last_segment.as_deref().unwrap_or("none yet")
        )?;
        if let Some(m) = self.memory_rss_mib {
            writeln!(w, "memory: {m:.0} MiB resident")?;
        }
        if let Some(reason) = &self.degraded {
            writeln!(
                w,
                "DEGRADED ({reason}): still draining the kernel; {} rows not kept so far \
                 (written as gap rows once sealing works again)",
                self.rows_lost
            )?;
        } else if self.rows_lost > 0 {
            writeln!(
                w,
                "{} rows were not kept this run (see the gap table)",
                self.rows_lost
            )?;
        }
        if let Some(e) = &self.last_error {
            writeln!(w, "sealing is failing: {e}")?;
        }
        if let Some(u) = &self.upload {
            writeln!(
                w,
                "upload to {} as host {}: {} segments ({}) uploaded this run; backlog: {} \
                 segments ({}){}; last success: {}",
                u.to,
                u.host,
                u.uploaded_segments,
                human_bytes(u.uploaded_bytes),
                u.pending_segments,
                human_bytes(u.pending_bytes),
                if u.manifest_behind {
                    ", manifest entries behind"
                } else {
                    ""
                },
                u.last_success.as_deref().unwrap_or("none yet")
            )?;
            if let Some(e) = &u.last_error {
                writeln!(
                    w,
                    "upload failing ({} passes in a row; recording goes on, the store keeps \
                     the backlog): {e}{}",
                    u.failures_in_a_row,
                    u.retry_in_secs
                        .map(|s| format!("; next try in {s}s"))
                        .unwrap_or_default()
                )?;
            }
        }
        Ok(())
    }
}

/// Every second while recording: publishes the status file for `quarry status`, and prints a
/// status line on stderr (in place on a terminal, every tenth second otherwise) unless
/// `quiet`. Runs until aborted.
pub async fn every_second(
    stats: std::sync::Arc<crate::stats::Stats>,
    mut publisher: Publisher,
    quiet: bool,
) {
    use std::io::{IsTerminal, Write};
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let (mut last_rows, mut last_line_at) = (0u64, Instant::now());
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.tick().await;
    for n in 1u64.. {
        tick.tick().await;
        let s = stats.snapshot();
        publisher.publish(s.clone());
        if quiet || !(tty || n % 10 == 0) {
            continue;
        }
        let rows: u64 = s.table_rows.iter().map(|(_, n)| n).sum();
        let rate = (rows - last_rows) as f64 / last_line_at.elapsed().as_secs_f64().max(1e-3);
        let line = status_line(&s, started.elapsed().as_secs(), rows, rate);
        if tty {
            eprint!("\r\x1b[2K{line}");
            let _ = std::io::stderr().flush();
        } else {
            eprintln!("{line}");
        }
        // The rate is over the time since the line before, so every printed line's figure
        // covers what happened since the reader last saw one.
        last_rows = rows;
        last_line_at = Instant::now();
    }
}

/// `[  12s] 1234 rows (100/s) | 3 segments, 1.2 MiB | 0 dropped | 5 pending`, and whether
/// sealing is failing.
fn status_line(s: &StatsSnapshot, secs: u64, rows: u64, rate: f64) -> String {
    format!(
        "[{:>4}s] {} rows ({:.0}/s) | {} segments, {} | {} dropped | {} pending{}{}",
        secs,
        rows,
        rate,
        s.segments_sealed,
        quarry_store::human::human_bytes(s.bytes_sealed),
        s.kernel_drops,
        s.rows_pending,
        match (s.degraded, s.rows_lost) {
            (Some(reason), lost) =>
                format!(" | DEGRADED ({reason}): {lost} rows not kept, still draining"),
            (None, 0) => String::new(),
            (None, lost) => format!(" | {lost} rows not kept (gap rows)"),
        },
        s.last_error
            .as_deref()
            .map(|e| format!(" | seal failing: {e}"))
            .unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_status_reads_back_and_is_running_while_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::at(dir.path());
        assert!(matches!(
            StatusFile::read(&store),
            Err(StatusError::Missing { .. })
        ));
        let mut publisher = Publisher::new(store.clone(), "all processes");
        publisher.publish(StatsSnapshot {
            events: 7,
            ..Default::default()
        });
        let status = StatusFile::read(&store).unwrap();
        assert_eq!((status.pid, status.events), (std::process::id(), 7));
        assert_eq!(status.scope, "all processes");
        assert!(status.is_running());
        let stale = StatusFile {
            updated: "2020-01-01T00:00:00Z".into(),
            ..status
        };
        assert!(!stale.is_running());
    }

    #[test]
    fn a_planted_symlink_is_replaced_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "untouched").unwrap();
        let store = Store::at(dir.path().join("store"));
        std::fs::create_dir(store.root()).unwrap();
        std::os::unix::fs::symlink(&target, store.status_path()).unwrap();
        std::os::unix::fs::symlink(&target, store.status_path().with_extension("json.tmp"))
            .unwrap();
        Publisher::new(store.clone(), "x").publish(StatsSnapshot::default());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "untouched");
        assert!(!store.status_path().is_symlink());
        assert_eq!(StatusFile::read(&store).unwrap().scope, "x");
        std::fs::write(store.status_path(), "not json").unwrap();
        assert!(matches!(
            StatusFile::read(&store),
            Err(StatusError::Invalid { .. })
        ));
    }
}
