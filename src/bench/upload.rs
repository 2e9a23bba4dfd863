//! `quarry-bench upload`: how fast a store goes into an S3-compatible bucket: rows/s and MB/s
//! of quarry-bucket's upload (create-only PUT, read back and hashed) into a SeaweedFS
//! `weed mini` on 127.0.0.1, started the way the tests start it (tests/common/bucket.rs: the
//! pinned server in .venv, its data in a temporary directory, removed afterwards).
//!
//! ```text
//! quarry-bench upload --store DIR [--hosts 1] [--format json]
//! quarry-bench upload --grow N [--format json]
//! ```
//!
//! `--grow N` is a recording's upload in small: a fresh store seals N one-row segments, a pass
//! (with one [`quarry_bucket::Shipped`] throughout, as `record --upload` keeps) after each, and
//! the bucket's manifest bytes are counted against the local manifest's (and against what
//! whole copies per pass, the earlier scheme, would have added up to).
//!
//! DIR is any store (e.g. from `quarry-bench query generate`); it is only read. It is uploaded
//! `--hosts` times under as many host names (simulated nodes, one after the other), then once
//! more under the first name: everything is there already, so that run is the cost of
//! checking (each object read back and hashed). Timings are reported, never asserted.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use quarry_bucket::{Bucket, BucketUrl, upload_store};
use quarry_store::Store;

#[allow(dead_code, clippy::unwrap_used)]
#[path = "../../tests/common/bucket.rs"]
pub(crate) mod weed;

pub fn run(args: &[&str]) -> anyhow::Result<()> {
    let (mut store, mut hosts, mut json, mut grow) = (None, 1usize, false, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--store" => store = Some(PathBuf::from(it.next().context("--store DIR")?)),
            "--hosts" => hosts = it.next().context("--hosts N")?.parse::<usize>()?.max(1),
            "--format" => json = it.next() == Some(&"json"),
            "--grow" => grow = Some(it.next().context("--grow N")?.parse::<u64>()?.max(1)),
            other => bail!(
                "unknown argument {other}\nusage: quarry-bench upload --store DIR [--hosts N] \
                 [--format json] | --grow N [--format json]"
            ),
        }
    }
    if let Some(segments) = grow {
        return grow_run(segments, json);
    }
    let store = Store::at(
        store
            .context("--store DIR (a store to upload, e.g. from `quarry-bench query generate`)")?,
    );
    anyhow::ensure!(
        store.manifest_path().is_file(),
        "{} is not a store",
        store.root().display()
    );
    let server = weed::Weed::start("bench-upload");
    let bucket = Bucket::from_env_with(&BucketUrl::parse(&server.url("bench"))?, &server.env())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut rows = Vec::new();
    let names: Vec<String> = (0..hosts).map(|i| format!("bench-{i}")).collect();
    for (run, host) in names.iter().chain(names.first()).enumerate() {
        let started = Instant::now();
        let report = runtime.block_on(upload_store(&store, &bucket, host, &|_| {}))?;
        let secs = started.elapsed().as_secs_f64();
        anyhow::ensure!(report.is_ok(), "upload failed: {:?}", report.problems);
        let (total_rows, total_bytes) = (report.rows, report.bytes);
        let what = if run < hosts { "upload" } else { "re-check" };
        // A re-check uploads nothing: its rates are over what it read back.
        let (r, b) = if run < hosts {
            (total_rows, total_bytes)
        } else {
            let log = quarry_store::Manifest::new(store.manifest_path()).read()?;
            let live = log.live();
            (
                live.iter().map(|e| e.body.rows).sum(),
                live.iter().map(|e| e.body.bytes).sum(),
            )
        };
        rows.push(serde_json::json!({
            "run": what,
            "host": host,
            "segments": report.segments,
            "rows": r,
            "bytes": b,
            "secs": secs,
            "rows_per_s": r as f64 / secs,
            "mb_per_s": b as f64 / 1e6 / secs,
        }));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "{:<9} {:<8} {:>8} {:>12} {:>10} {:>8} {:>12} {:>8}",
            "run", "host", "segments", "rows", "MB", "secs", "rows/s", "MB/s"
        );
        for r in &rows {
            println!(
                "{:<9} {:<8} {:>8} {:>12} {:>10.1} {:>8.2} {:>12.0} {:>8.1}",
                r["run"].as_str().unwrap_or(""),
                r["host"].as_str().unwrap_or(""),
                r["segments"].as_u64().unwrap_or(0),
                r["rows"].as_u64().unwrap_or(0),
                r["bytes"].as_f64().unwrap_or(0.0) / 1e6,
                r["secs"].as_f64().unwrap_or(0.0),
                r["rows_per_s"].as_f64().unwrap_or(0.0),
                r["mb_per_s"].as_f64().unwrap_or(0.0),
            );
        }
    }
    Ok(())
}

/// `--grow N` (see the module docs).
fn grow_run(segments: u64, json: bool) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::create(dir.path())?;
    let server = weed::Weed::start("bench-grow");
    let bucket = Bucket::from_env_with(&BucketUrl::parse(&server.url("bench"))?, &server.env())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut shipped = quarry_bucket::Shipped::default();
    // What a whole copy per pass (the scheme before chunks) would have written in all.
    let mut whole_copies = 0u64;
    let started = Instant::now();
    for seq in 0..segments {
        quarry_store::fixture::seal_one_gap_row(&store, "bench", seq)?;
        let report = runtime.block_on(quarry_bucket::upload_new(
            &store,
            &bucket,
            "bench",
            &mut shipped,
            &|_| {},
        ))?;
        anyhow::ensure!(report.is_ok(), "upload failed: {:?}", report.problems);
        whole_copies += std::fs::metadata(store.manifest_path())?.len();
    }
    let secs = started.elapsed().as_secs_f64();
    let local = std::fs::metadata(store.manifest_path())?.len();
    let chunks = runtime.block_on(bucket.list("_manifest"))?;
    let in_bucket: u64 = chunks.iter().map(|(_, size)| size).sum();
    let out = serde_json::json!({
        "passes": segments,
        "manifest_entries": segments,
        "local_manifest_bytes": local,
        "bucket_manifest_objects": chunks.len(),
        "bucket_manifest_bytes": in_bucket,
        "whole_copies_bytes": whole_copies,
        "secs": secs,
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{segments} passes: local manifest {local} bytes; bucket manifest {in_bucket} bytes \
             in {} chunks (whole copies per pass would be {whole_copies} bytes); {secs:.1}s",
            chunks.len()
        );
    }
    Ok(())
}
