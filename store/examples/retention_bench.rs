//! Measures retention, compaction and verify on a store of many small segments.
//!
//! `cargo run --release -p quarry-store --example retention_bench -- [SEGMENTS] [HOURS]`
//! builds SEGMENTS process segments of 100 rows spread over HOURS back-dated hours (default
//! 10000 over 100) in a temporary directory, then times: an age cap removing the older half,
//! compaction of every remaining closed hour, a size cap removing half of the rest, and `verify`.

// A benchmark stops at its first failure: unwrap says where.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use quarry_store::schema::{ProcessEvent, ProcessRow, RowIdentity, process_batch};
use quarry_store::{CompactPolicy, Partition, RetentionPolicy, Store, Table, verify_store};

fn main() {
    let mut args = std::env::args().skip(1);
    let segments: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let hours: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path()).unwrap();
    let now = Utc.with_ymd_and_hms(2026, 11, 28, 12, 30, 0).unwrap();
    let t0 = Instant::now();
    for i in 0..segments {
        let h = (i % hours) as i64;
        let time = now - chrono::Duration::hours(h);
        let rows: Vec<ProcessRow> = (0..100)
            .map(|r| ProcessRow {
                id: RowIdentity {
                    time,
                    ktime_ns: i << 8 | r,
                    pid: r as i32,
                    tid: r as i32,
                    comm: "bench".into(),
                    cgroup_id: 1,
                    container_id: Some(format!("c{}", i % 4)),
                },
                ppid: None,
                start_ns: None,
                parent_start_ns: None,
                event: ProcessEvent::Fork,
            })
            .collect();
        let p = Partition::for_time(Table::Process, time, "bench");
        store
            .seal(&p, &process_batch("bench", &rows), 1, i)
            .unwrap();
    }
    println!(
        "sealed {segments} segments over {hours} hours in {:.1?}",
        t0.elapsed()
    );

    let t = Instant::now();
    let policy = RetentionPolicy {
        max_age: Some(Duration::from_secs(hours / 2 * 3600)),
        ..Default::default()
    };
    let r = store.retain(&policy, now, false).unwrap();
    println!(
        "age cap: removed {} segments in {:.1?}",
        r.removed.len(),
        t.elapsed()
    );

    let t = Instant::now();
    let merged = store
        .compact(&CompactPolicy::default(), now, false)
        .unwrap();
    let sources: usize = merged.iter().map(|c| c.sources.len()).sum();
    println!(
        "compaction: {sources} segments into {} in {:.1?}",
        merged.len(),
        t.elapsed()
    );

    let t = Instant::now();
    let cap = verify_store(&store).unwrap().bytes / 2;
    let r = store
        .retain(
            &RetentionPolicy {
                max_bytes: Some(cap),
                ..Default::default()
            },
            now,
            false,
        )
        .unwrap();
    println!(
        "size cap: removed {} segments in {:.1?}",
        r.removed.len(),
        t.elapsed()
    );

    let t = Instant::now();
    let v = verify_store(&store).unwrap();
    assert!(v.is_ok(), "{:?}", v.problems);
    println!(
        "verify: {} segments, {} manifest entries, {} removals in {:.1?}",
        v.segments_verified,
        v.manifest_entries,
        v.removed_segments,
        t.elapsed()
    );
}
