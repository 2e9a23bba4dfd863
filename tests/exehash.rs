//! Executable hashes end to end, as root: the real recorder, a runc busybox container that
//! copies busybox to a new name and runs it, then `exe_sha256` on its exec rows and
//! `quarry hunt --ioc` over what was recorded.

// A test fails by panicking: unwrap is how it says what went wrong.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::containers::RuncContainer;
use common::*;
use nix::sys::signal::Signal;
use sha2::{Digest, Sha256};

fn sql(store: &Path, query: &str) -> Vec<Vec<String>> {
    let out = quarry()
        .args(["sql", "--format", "csv", "--store"])
        .arg(store)
        .arg(query)
        .output()
        .unwrap();
    assert!(out.status.success(), "quarry sql failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

fn hunt_ioc(store: &Path, list: &Path) -> (Option<i32>, String, String) {
    let out = quarry()
        .args(["hunt", "--no-builtin", "--format", "json", "--ioc"])
        .arg(list)
        .arg("--store")
        .arg(store)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn exec_rows_carry_the_executed_files_sha256_and_an_ioc_list_finds_it() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let name = format!("qt-x21-exehash-{}", std::process::id());
    let c = RuncContainer::start_tweaked(&name, None, |config, _| {
        config["root"]["readonly"] = false.into();
    });
    let busybox = std::fs::read(format!("/proc/{}/root/bin/busybox", c.pid())).unwrap();
    let want = hex::encode(Sha256::digest(&busybox));

    let rec = RecorderProcess::start(&store, &["--seal-interval", "1s"]);
    // A copy under a new path, named like an applet so busybox runs it. It must still run
    // when the hashing thread opens /proc/PID/exe: a process already gone has no file left to
    // reach through the kernel's reference (its row then says `gone`), so it sleeps.
    let tool = format!("/tmp/x21-{}/sleep", std::process::id());
    c.exec(&[
        "sh",
        "-c",
        "mkdir -p ${0%/sleep} && cp /bin/busybox $0 && $0 3",
        &tool,
    ]);
    let out = rec.stop_with(Signal::SIGINT);
    assert!(out.status.success(), "{out:?}");

    let rows = sql(
        &store,
        &format!(
            "SELECT exe_path, exe_sha256, exe_hash FROM execs WHERE container_id = '{name}' \
             ORDER BY ktime_ns"
        ),
    );
    let copied: Vec<_> = rows.iter().filter(|r| r[0] == tool).collect();
    assert_eq!(copied.len(), 1, "{rows:?}");
    assert_eq!(
        (copied[0][1].as_str(), copied[0][2].as_str()),
        (want.as_str(), "hashed")
    );
    // Every exec in the container was hashed (busybox's applets are all the one binary), or
    // says why not; none has a hash that is not busybox's.
    for r in &rows {
        assert!(!r[2].is_empty(), "exec without an exe_hash status: {r:?}");
        assert!(r[1].is_empty() || r[1] == want, "a wrong hash: {r:?}");
    }
    // No late row is left without its exec row.
    let orphans = sql(
        &store,
        "SELECT count(*) FROM process l WHERE event = 'exe_hash' AND NOT EXISTS \
         (SELECT 1 FROM process e WHERE e.event = 'exec' AND e.pid = l.pid \
          AND e.start_ns = l.start_ns AND e.ktime_ns = l.ktime_ns)",
    );
    assert_eq!(orphans, vec![vec!["0".to_string()]]);

    // The hash on an indicator list is a finding in this container; another hash is none.
    let list = dir.path().join("iocs.txt");
    std::fs::write(
        &list,
        format!("# test list\n{want}  # busybox\n198.51.100.7\nevil.example.com\n"),
    )
    .unwrap();
    let (code, stdout, stderr) = hunt_ioc(&store, &list);
    assert_eq!(code, Some(4), "{stderr}");
    assert!(stderr.contains("1 domain"), "{stderr}");
    let findings: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    assert!(
        findings.iter().any(|f| f["rule"] == "IOC001"
            && f["container_id"] == name.as_str()
            && f["evidence"].as_str().unwrap().contains(&tool)),
        "{stdout}"
    );
    std::fs::write(&list, format!("{}\n", "ab".repeat(32))).unwrap();
    let (code, stdout, stderr) = hunt_ioc(&store, &list);
    assert_eq!((code, stdout.trim()), (Some(0), "[]"), "{stderr}");

    // The same hash from a STIX 2 bundle's indicator; the part of a feed a list cannot say
    // (an AND) is skipped and named, not widened.
    let stix = dir.path().join("feed.json");
    std::fs::write(
        &stix,
        serde_json::json!({
            "type": "bundle",
            "id": "bundle--test",
            "objects": [
                {"type": "indicator", "spec_version": "2.1", "id": "indicator--hash",
                 "pattern_type": "stix",
                 "pattern": format!("[file:hashes.'SHA-256' = '{want}']")},
                {"type": "indicator", "spec_version": "2.1", "id": "indicator--both",
                 "pattern_type": "stix",
                 "pattern": format!("[file:hashes.'SHA-256' = '{want}' AND file:name = 'x']")}
            ]
        })
        .to_string(),
    )
    .unwrap();
    let (code, stdout, stderr) = hunt_ioc(&store, &stix);
    assert_eq!(code, Some(4), "{stderr}");
    assert!(stderr.contains("indicator--both"), "{stderr}");
    let findings: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    assert!(
        findings
            .iter()
            .any(|f| f["rule"] == "IOC001" && f["container_id"] == name.as_str()),
        "{stdout}"
    );

    // A bad line is refused with its number.
    std::fs::write(&list, format!("{want}\nnot an indicator\n")).unwrap();
    let (code, _, stderr) = hunt_ioc(&store, &list);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("line 2"), "{stderr}");
    drop(c);
}

/// QH029 over a real recording: a runc container with a baseline runs a binary it copied after
/// the baseline (a finding) and the image's own busybox (none).
#[test]
fn an_exec_of_a_file_not_in_the_baseline_is_a_drift_exec_finding() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let name = format!("qt-x21-driftexec-{}", std::process::id());
    let c = RuncContainer::start_tweaked(&name, None, |config, _| {
        config["root"]["readonly"] = false.into();
    });
    let out = quarry()
        .args(["baseline", &name, "--store"])
        .arg(&store)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let rec = RecorderProcess::start(&store, &["--seal-interval", "1s"]);
    let tool = format!("/tmp/x21-{}/sleep", std::process::id());
    c.exec(&["/bin/sleep", "1"]);
    c.exec(&[
        "sh",
        "-c",
        "mkdir -p ${0%/sleep} && cp /bin/busybox $0 && $0 3",
        &tool,
    ]);
    let out = rec.stop_with(Signal::SIGINT);
    assert!(out.status.success(), "{out:?}");

    let out = quarry()
        .args(["hunt", "--format", "json", "--container", &name, "--store"])
        .arg(&store)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let findings: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let drift: Vec<&str> = findings
        .iter()
        .filter(|f| f["rule"] == "QH029")
        .map(|f| f["evidence"].as_str().unwrap())
        .collect();
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert!(drift[0].contains(&format!("executed {tool}")), "{drift:?}");
    drop(c);
}
