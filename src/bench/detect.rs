//! `quarry-bench detect`: what live detection costs and how soon it alerts.
//!
//! - **Latency** (in process, no root): `file` rows built with the store's own row builders
//!   arrive at `--rate` rows a second in hand-overs every 500 ms (the recorder's tap
//!   interval), each with marker rows (a container process opening /etc/shadow, which QH004
//!   flags) spread over the interval; a detection loop like `quarry record`'s (a bounded queue,
//!   every built-in rule over the look-back window every 500 ms) takes them. A marker's latency
//!   runs from the instant its row would have been decoded to the instant its finding is out.
//! - **Throughput** (root): the mixed workload (`loop mixed`) recorded by `quarry record`
//!   with and without `--no-detect`, alternating; the loop's time and the rows sealed.

use std::collections::HashMap;
use std::sync::{PoisonError, mpsc};
use std::time::{Duration, Instant};

use anyhow::Context;
use quarry_query::hunt;
use quarry_query::live::{LiveDetector, Window};
use quarry_store::schema::{FileRow, RowIdentity, file_batch};

/// The recorder's tap interval and detection's evaluation period (quarry-detect).
const INTERVAL: Duration = quarry_detect::TAP_INTERVAL;

pub fn run(args: &[&str]) -> anyhow::Result<()> {
    let mut rate: usize = 100_000;
    let mut seconds: u64 = 20;
    let mut markers: usize = 4;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--rate" => rate = it.next().context("--rate N")?.parse()?,
            "--seconds" => seconds = it.next().context("--seconds N")?.parse()?,
            "--markers" => markers = it.next().context("--markers N")?.parse::<usize>()?.max(1),
            other => anyhow::bail!(
                "unknown argument {other}: detect [--rate N] [--seconds N] [--markers N]"
            ),
        }
    }
    latency(rate, seconds, markers)
}

fn row(i: u64, ktime_ns: u64, path: &str, container: &str) -> FileRow {
    FileRow {
        id: RowIdentity {
            time: chrono::Utc::now(),
            ktime_ns,
            pid: 10_000 + (i % 500) as i32,
            tid: 10_000 + (i % 500) as i32,
            comm: "app".into(),
            cgroup_id: 1,
            container_id: Some(container.into()),
        },
        event: "open",
        syscall: "openat",
        path: Some(path.into()),
        abs_path: Some(path.into()),
        resolution: "absolute",
        path2: None,
        abs_path2: None,
        flags: Some(0),
        mode: None,
        owner_uid: None,
        owner_gid: None,
        fd: Some(3),
        ret: Some(3),
        kernel_path: Some(path.into()),
        path_resolution: Some("kernel"),
    }
}

fn latency(rate: usize, seconds: u64, markers: usize) -> anyhow::Result<()> {
    let per_batch = rate * INTERVAL.as_millis() as usize / 1000;
    let batches = seconds * 1000 / INTERVAL.as_millis() as u64;
    // What the tap holds.
    let (tx, rx) = mpsc::sync_channel(quarry_detect::TAP_CAPACITY);
    let mut behind = 0u64;
    // marker ktime_ns -> when its row was decoded
    let decoded: std::sync::Arc<std::sync::Mutex<HashMap<u64, Instant>>> = Default::default();
    let gen_decoded = decoded.clone();
    let generator = std::thread::spawn(move || {
        let mut ktime = 1u64;
        let mut next = Instant::now() + INTERVAL;
        for b in 0..batches {
            let start = next - INTERVAL;
            let mut rows = Vec::with_capacity(per_batch);
            for i in 0..per_batch {
                ktime += 1;
                let n = b * per_batch as u64 + i as u64;
                rows.push(row(
                    n,
                    ktime,
                    &format!("/usr/lib/lib{}.so", n % 1000),
                    "bench-c1",
                ));
            }
            let mut marks = Vec::new();
            for m in 0..markers {
                ktime += 1;
                // Decoded evenly over the interval before its hand-over.
                let at = start + INTERVAL.mul_f64((m as f64 + 0.5) / markers as f64);
                marks.push((ktime, at));
                rows.push(row(m as u64, ktime, "/etc/shadow", "bench-c1"));
            }
            let batch = file_batch("bench", &rows);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
            next += INTERVAL;
            gen_decoded
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(marks);
            if tx.try_send(batch).is_err() {
                behind += 1;
            }
        }
        behind
    });
    let mut detector = LiveDetector::new(hunt::builtin_rules(), Window::default());
    let mut latencies = Vec::new();
    let mut evaluations = Vec::new();
    let mut window_rows = 0usize;
    let mut next = Instant::now() + INTERVAL;
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let mut open = true;
    while open || detector.has_fresh() {
        match rx.recv_timeout(INTERVAL / 5) {
            Ok(b) => detector.push(quarry_store::Table::File, b),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => open = false,
        }
        while let Ok(b) = rx.try_recv() {
            detector.push(quarry_store::Table::File, b);
        }
        if (Instant::now() >= next || !open) && detector.has_fresh() {
            next = Instant::now() + INTERVAL;
            let started = Instant::now();
            let found = runtime.block_on(detector.evaluate())?;
            let done = Instant::now();
            evaluations.push(done.duration_since(started).as_secs_f64());
            window_rows = window_rows.max(detector.window_rows());
            let decoded = decoded.lock().unwrap_or_else(PoisonError::into_inner);
            for f in found.iter().filter(|f| f.rule == "QH004") {
                if let Some(at) = f.ktime_ns.and_then(|k| decoded.get(&k)) {
                    latencies.push(done.duration_since(*at).as_secs_f64());
                }
            }
        }
    }
    let behind = generator
        .join()
        .map_err(|_| anyhow::anyhow!("generator panicked"))?;
    let expected = batches as usize * markers;
    let pct = |v: &mut Vec<f64>, p: f64| -> f64 {
        v.sort_by(|a, b| a.total_cmp(b));
        if v.is_empty() {
            return f64::NAN;
        }
        v[((v.len() - 1) as f64 * p).round() as usize]
    };
    println!(
        "detect: {rate} rows/s for {seconds} s ({per_batch} rows every {} ms), {} rules, window \
         up to {window_rows} rows",
        INTERVAL.as_millis(),
        hunt::builtin_rules().len()
    );
    println!(
        "  event to alert: p50 {:.3} s, p99 {:.3} s, max {:.3} s ({} of {expected} markers alerted)",
        pct(&mut latencies, 0.5),
        pct(&mut latencies, 0.99),
        pct(&mut latencies, 1.0),
        latencies.len()
    );
    println!(
        "  evaluation of all rules: p50 {:.3} s, p99 {:.3} s over {} evaluations; {behind} \
         hand-overs found the queue full",
        pct(&mut evaluations, 0.5),
        pct(&mut evaluations, 0.99),
        evaluations.len()
    );
    Ok(())
}
