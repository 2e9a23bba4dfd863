//! `--metrics ADDR`: Prometheus text exposition of the recorder's and detection's counters.
//!
//! A plain HTTP/1.0 responder on its own thread: every request gets the metrics (the path is
//! not looked at). Off by default; bind it to loopback unless the network in between is
//! trusted: the counters say how busy the host is and which rules fire.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use quarry_recorder::stats::Stats;
use quarry_recorder::tap::Tap;
use quarry_recorder::upload::UploadState;

use crate::DetectStats;
use crate::outputs::Outputs;

/// The counters the endpoint serves: the recorder's always, detection's when it runs.
pub struct Sources {
    pub recorder: Arc<Stats>,
    pub detect: Option<Arc<DetectStats>>,
    pub tap: Option<Arc<Tap>>,
    pub outputs: Option<Arc<Outputs>>,
    /// The upload to a bucket (`--upload`), when one runs.
    pub upload: Option<Arc<UploadState>>,
}

impl Sources {
    /// The recorder's counters alone (`--no-detect`).
    pub fn recorder_only(recorder: Arc<Stats>) -> Sources {
        Sources {
            recorder,
            detect: None,
            tap: None,
            outputs: None,
            upload: None,
        }
    }
}

/// Starts serving on a thread of its own; the error when `addr` cannot be listened on (or the
/// thread not started). Recording does not depend on it.
pub fn serve(addr: SocketAddr, sources: Sources) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr)?;
    std::thread::Builder::new()
        .name("quarry-metrics".into())
        .spawn(move || {
            let mut seal = SealWatch::default();
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = conn.set_write_timeout(Some(Duration::from_secs(2)));
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf);
                let body = render(&sources, &mut seal);
                let _ = write!(
                    conn,
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        })?;
    Ok(())
}

/// When the count of sealed segments last moved: the seal lag is the time since.
#[derive(Default)]
struct SealWatch {
    segments: u64,
    at: Option<Instant>,
}

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn render(s: &Sources, seal: &mut SealWatch) -> String {
    let snap = s.recorder.snapshot();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, values: Vec<(String, u64)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in values {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let label = |k: &str, v: &str| {
        format!(
            "{{{k}=\"{}\"}}",
            v.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        )
    };
    metric(
        "quarry_events_total",
        "counter",
        "Rows decoded, per table.",
        snap.table_rows
            .iter()
            .map(|(t, n)| (label("table", t.name()), *n))
            .collect(),
    );
    metric(
        "quarry_kernel_drops_total",
        "counter",
        "Records the kernel could not put in the ring buffer (all tables; see the gap table).",
        vec![(String::new(), snap.kernel_drops)],
    );
    metric(
        "quarry_rows_lost_total",
        "counter",
        "Rows decoded and not kept (sealing failed or behind; written as gap rows).",
        vec![(String::new(), snap.rows_lost)],
    );
    metric(
        "quarry_rows_pending",
        "gauge",
        "Rows decoded and not sealed yet.",
        vec![(String::new(), snap.rows_pending)],
    );
    if seal.at.is_none() || snap.segments_sealed != seal.segments {
        seal.segments = snap.segments_sealed;
        seal.at = Some(Instant::now());
    }
    let lag = seal.at.map_or(0, |at| at.elapsed().as_secs());
    metric(
        "quarry_seal_lag_seconds",
        "gauge",
        "Seconds since a segment was last seen sealed.",
        vec![(String::new(), lag)],
    );
    metric(
        "quarry_segments_sealed_total",
        "counter",
        "Segments sealed.",
        vec![(String::new(), snap.segments_sealed)],
    );
    if let Some(d) = &s.detect {
        let alerts = d
            .alerts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        metric(
            "quarry_alerts_total",
            "counter",
            "Alerts raised, per rule.",
            alerts.iter().map(|(r, n)| (label("rule", r), *n)).collect(),
        );
        metric(
            "quarry_alerts_not_sealed_total",
            "counter",
            "Alerts that could not be sealed into the alert table.",
            vec![(String::new(), d.alerts_not_sealed.load(Ordering::Relaxed))],
        );
        metric(
            "quarry_detection_evaluation_microseconds",
            "gauge",
            "How long the last evaluation of the live rules took.",
            vec![(String::new(), d.last_evaluation_us.load(Ordering::Relaxed))],
        );
    }
    if let Some(t) = &s.tap {
        metric(
            "quarry_detection_behind_rows_total",
            "counter",
            "Rows recorded but not evaluated live (detection was behind).",
            vec![(String::new(), t.behind().1)],
        );
    }
    if let Some(o) = &s.outputs {
        let c = o.counters();
        metric(
            "quarry_alert_output_queue_depth",
            "gauge",
            "Alerts waiting in an output's queue.",
            c.iter()
                .map(|c| (label("output", &c.name), c.queued))
                .collect(),
        );
        metric(
            "quarry_alert_output_dropped_total",
            "counter",
            "Alerts an output dropped (queue full, or every retry failed).",
            c.iter()
                .map(|c| (label("output", &c.name), c.dropped))
                .collect(),
        );
        metric(
            "quarry_alert_output_sent_total",
            "counter",
            "Alerts an output delivered.",
            c.iter()
                .map(|c| (label("output", &c.name), c.sent))
                .collect(),
        );
    }
    if let Some(u) = &s.upload {
        let u = u.status();
        metric(
            "quarry_upload_backlog_segments",
            "gauge",
            "Sealed segments not in the bucket yet (as of the last upload pass).",
            vec![(String::new(), u.pending_segments)],
        );
        metric(
            "quarry_upload_backlog_bytes",
            "gauge",
            "Bytes of the segments not in the bucket yet.",
            vec![(String::new(), u.pending_bytes)],
        );
        metric(
            "quarry_upload_segments_total",
            "counter",
            "Segments uploaded to the bucket.",
            vec![(String::new(), u.uploaded_segments)],
        );
        metric(
            "quarry_upload_bytes_total",
            "counter",
            "Bytes uploaded to the bucket.",
            vec![(String::new(), u.uploaded_bytes)],
        );
        metric(
            "quarry_upload_manifest_chunks_total",
            "counter",
            "Manifest chunks (the entries the bucket lacked, one per pass) uploaded.",
            vec![(String::new(), u.manifest_chunks)],
        );
        metric(
            "quarry_upload_manifest_bytes_total",
            "counter",
            "Bytes of manifest uploaded (each entry once).",
            vec![(String::new(), u.manifest_bytes)],
        );
        metric(
            "quarry_upload_failed_passes_total",
            "counter",
            "Upload passes that failed (the bucket unreachable, a conflict); retried with backoff.",
            vec![(String::new(), u.failed_passes)],
        );
        let last = u
            .last_success
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map_or(0, |t| t.timestamp().max(0) as u64);
        metric(
            "quarry_upload_last_success_timestamp_seconds",
            "gauge",
            "When an upload pass last left nothing pending (Unix time; 0: not yet).",
            vec![(String::new(), last)],
        );
    }
    metric(
        "quarry_resident_memory_bytes",
        "gauge",
        "The recorder's resident set size.",
        vec![(String::new(), rss_bytes().unwrap_or(0))],
    );
    out
}
