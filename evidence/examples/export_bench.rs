//! Measures export and bundle verification on a store built for it.
//!
//! `cargo run --release -p quarry-evidence --example export_bench -- [SEGMENTS] [ROWS]` seals
//! SEGMENTS process segments of ROWS rows (default 200 x 10000) split between two containers
//! over the last hours, then exports one container (signed) and verifies the bundle.

// A benchmark stops at its first failure: unwrap says where.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use chrono::Utc;
use quarry_evidence::{ExportRequest, VerifyOptions, export, generate_keypair, verify_bundle};
use quarry_store::schema::{ContainerRow, ProcessEvent, ProcessRow, RowIdentity};
use quarry_store::schema::{container_batch, process_batch};
use quarry_store::{Partition, Store, Table};

fn main() {
    let mut args = std::env::args().skip(1);
    let segments: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let per: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path().join("store")).unwrap();
    let now = Utc::now();
    for i in 0..segments {
        let time = now - chrono::Duration::minutes((segments - i) as i64);
        let container = if i % 2 == 0 { "web" } else { "db" };
        let rows: Vec<ProcessRow> = (0..per)
            .map(|r| ProcessRow {
                id: RowIdentity {
                    time,
                    ktime_ns: i << 20 | r,
                    pid: (r % 30_000) as i32,
                    tid: (r % 30_000) as i32,
                    comm: "worker".into(),
                    cgroup_id: 1,
                    container_id: Some(container.into()),
                },
                ppid: Some(1),
                start_ns: Some(r),
                parent_start_ns: Some(1),
                event: ProcessEvent::Exec {
                    filename: "/usr/bin/worker".into(),
                    argv: vec!["worker".into(), format!("--job={r}")],
                    argv_truncated: false,
                    uid: 1000,
                    gid: 1000,
                    euid: 1000,
                    egid: 1000,
                },
            })
            .collect();
        let p = Partition::for_time(Table::Process, time, "bench");
        store
            .seal(&p, &process_batch("bench", &rows), 1, i)
            .unwrap();
    }
    let row = ContainerRow {
        time: now,
        container_id: "web".into(),
        name: Some("web".into()),
        runtime: "runc".into(),
        image: None,
        cgroup_id: Some(1),
        cgroup_path: "/web".into(),
        init_pid: Some(1),
        netns_inode: None,
        host_network: false,
        created: None,
        pod_uid: None,
        pod_name: None,
        pod_namespace: None,
        first_seen: now,
        last_seen: now,
        events: 0,
    };
    let p = Partition::for_time(Table::Container, now, "bench");
    store
        .seal(&p, &container_batch("bench", &[row]), 1, segments)
        .unwrap();
    let store_bytes = quarry_store::verify_store(&store).unwrap().bytes;
    let (key, public) = generate_keypair().unwrap();
    let output = dir.path().join("web.qbundle");
    let t = Instant::now();
    let report = export(
        &ExportRequest {
            store: &store,
            container_id: "web".into(),
            container_name: Some("web".into()),
            since: None,
            until: None,
            case_dir: None,
            output: output.clone(),
            signing_key: Some(&key),
            actor: "bench".into(),
            host: "bench".into(),
            command: "export_bench".into(),
        },
        &mut |_| {},
    )
    .unwrap();
    let exported = t.elapsed();
    let rows: u64 = report.rows.values().sum();
    println!(
        "export: {rows} rows of web from {} segments ({:.1} MiB of store) into a {:.1} MiB bundle \
         in {exported:.2?} ({:.0} rows/s)",
        report.segments_read,
        store_bytes as f64 / (1 << 20) as f64,
        report.bytes as f64 / (1 << 20) as f64,
        rows as f64 / exported.as_secs_f64()
    );
    let t = Instant::now();
    let v = verify_bundle(
        &output,
        &VerifyOptions {
            trusted_key: Some(public),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(v.is_ok(), "{:?}", v.problems);
    println!(
        "verify: {} files, {:.1} MiB extracted and checked in {:.2?}",
        v.files_verified,
        v.extracted_bytes as f64 / (1 << 20) as f64,
        t.elapsed()
    );
}
