//! `quarry verify` detects every kind of tampering with a store. These build real stores with
//! the store library (real Parquet, real manifest) and need no root.

// A test fails by panicking: unwrap is how it says what went wrong.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{TimeZone, Utc};
use common::*;
use quarry_store::schema::{ProcessEvent, ProcessRow, RowIdentity, process_batch};
use quarry_store::{Partition, Store, Table};

/// A store with three sealed segments in two hours; returns the segment paths.
fn store_with_segments(root: &Path) -> Vec<PathBuf> {
    let store = Store::create(root).unwrap();
    let mut paths = Vec::new();
    for (seq, hour) in [(0u64, 10u32), (1, 10), (2, 11)] {
        let time = Utc
            .with_ymd_and_hms(2026, 11, 28, hour, 5, seq as u32)
            .unwrap();
        let mut rows = Vec::new();
        for pid in 0..50 {
            rows.push(ProcessRow {
                id: RowIdentity {
                    time,
                    ktime_ns: 1_000 + pid as u64,
                    pid,
                    tid: pid,
                    comm: "worker".into(),
                    cgroup_id: 7,
                    container_id: None,
                },
                ppid: Some(1),
                start_ns: Some(10),
                parent_start_ns: Some(1),
                event: ProcessEvent::Exit {
                    exit_code: Some(0),
                    signal: None,
                    core_dumped: false,
                },
            });
        }
        let partition = Partition::for_time(Table::Process, time, "node-a");
        paths.push(
            store
                .seal(&partition, &process_batch("node-a", &rows), 1, seq)
                .unwrap()
                .path,
        );
    }
    paths
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap().display().to_string()
}

#[test]
fn clean_store_verifies() {
    let dir = tempfile::tempdir().unwrap();
    store_with_segments(dir.path());
    let (code, out) = verify(dir.path());
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("3 segments, 150 rows"), "{out}");
}

#[test]
fn one_altered_byte_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let segs = store_with_segments(dir.path());
    let mut data = fs::read(&segs[1]).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x01;
    fs::write(&segs[1], &data).unwrap();

    let (code, out) = verify(dir.path());
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains(&format!("altered segment: {}", rel(dir.path(), &segs[1]))),
        "{out}"
    );
    assert_eq!(
        out.matches('✗').count(),
        2,
        "only that segment is reported: {out}"
    );
}

#[test]
fn missing_and_unlisted_segments_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let segs = store_with_segments(dir.path());
    fs::remove_file(&segs[0]).unwrap();
    let planted = segs[2].with_file_name("planted.parquet");
    fs::copy(&segs[2], &planted).unwrap();

    let (code, out) = verify(dir.path());
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains(&format!("missing segment: {}", rel(dir.path(), &segs[0]))),
        "{out}"
    );
    assert!(
        out.contains(&format!("unlisted segment: {}", rel(dir.path(), &planted))),
        "{out}"
    );
}

#[test]
fn edited_or_dropped_manifest_lines_break_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    store_with_segments(dir.path());
    let manifest = dir.path().join("manifest.jsonl");
    let original = fs::read_to_string(&manifest).unwrap();

    // Edit a row count in line 2: the line no longer matches its hash.
    let lines: Vec<&str> = original.lines().collect();
    let edited = lines[1].replace("\"rows\":50", "\"rows\":49");
    assert_ne!(edited, lines[1]);
    fs::write(&manifest, format!("{}\n{edited}\n{}\n", lines[0], lines[2])).unwrap();
    let (code, out) = verify(dir.path());
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("manifest line 2 (seq 1) does not match its hash"),
        "{out}"
    );

    // Drop line 2 (and its segment, to hide it): line 3 no longer chains.
    fs::write(&manifest, format!("{}\n{}\n", lines[0], lines[2])).unwrap();
    let (code, out) = verify(dir.path());
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("manifest line 2 (seq 2) does not chain"),
        "{out}"
    );
}

#[test]
fn symlinks_in_the_store_are_reported_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let segs = store_with_segments(dir.path());
    let link = segs[0].with_file_name("link.parquet");
    std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
    let (code, out) = verify(dir.path());
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains(&format!(
            "unexpected entry: {} is a symlink",
            rel(dir.path(), &link)
        )),
        "{out}"
    );
}

#[test]
fn json_report_for_machines() {
    let dir = tempfile::tempdir().unwrap();
    let segs = store_with_segments(dir.path());
    fs::remove_file(&segs[2]).unwrap();
    let out = quarry()
        .args(["verify", "--format", "json", "--store"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["segments_verified"], 2);
    assert_eq!(v["problems"][0]["kind"], "missing");
    assert_eq!(v["problems"][0]["path"], rel(dir.path(), &segs[2]));
}

#[test]
fn a_fresh_store_is_private_and_a_world_readable_one_is_reported() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    // A store the recorder creates (not a directory that was there before it).
    let root = tmp.path().join("store");
    let segs = store_with_segments(&root);
    let out = quarry()
        .args(["verify", "--format", "json", "--store"])
        .arg(root.as_path())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["exposed"], serde_json::json!([]), "{v:#}");

    // Opened up by hand: reported, with the fix; the evidence itself still verifies.
    fs::set_permissions(&segs[0], fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(root.as_path(), fs::Permissions::from_mode(0o757)).unwrap();
    let (code, out) = verify(root.as_path());
    assert_eq!(
        code, 0,
        "exposure is a finding, not altered evidence: {out}"
    );
    assert!(
        out.contains("2 store entries are open to every local user (1 writable by anyone)"),
        "{out}"
    );
    assert!(
        out.contains(&format!("0644 {}", rel(root.as_path(), &segs[0]))),
        "{out}"
    );
    assert!(out.contains("chmod -R o-rwx"), "{out}");
}

#[test]
fn planted_file_names_are_escaped_on_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let segs = store_with_segments(dir.path());
    let planted = segs[0].with_file_name("x\u{1b}]0;owned\u{7}\u{202e}.parquet");
    fs::copy(&segs[0], &planted).unwrap();
    let (code, out) = verify(dir.path());
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("x\\u{1b}]0;owned\\u{7}\\u{202e}.parquet"),
        "{out}"
    );
    assert!(
        !out.contains('\u{1b}') && !out.contains('\u{202e}'),
        "{out:?}"
    );
    let sql = quarry()
        .args(["sql", "--store"])
        .arg(dir.path())
        .arg("SELECT count(*) AS n FROM process")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&sql.stdout);
    let stderr = String::from_utf8_lossy(&sql.stderr);
    assert!(stdout.contains("150"), "{stdout}{stderr}");
    assert!(stderr.contains("x\\u{1b}]0;owned"), "{stderr}");
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
}
