//! Posture end to end, as root: real runc containers, one given dangerous privileges and one
//! minimal, judged by the real `quarry posture` from the kernel's view of their processes.

// A test fails by panicking: unwrap is how it says what went wrong.
#![allow(clippy::unwrap_used)]

mod common;

use common::containers::RuncContainer;
use common::*;

fn posture_of(name: &str) -> (Option<i32>, Vec<serde_json::Value>) {
    let out = quarry()
        .args(["posture", name, "--format", "json", "--fail-on", "critical"])
        .output()
        .unwrap();
    let reports: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(reports.len(), 1);
    assert!(
        reports[0]["error"].is_null(),
        "posture failed: {}",
        reports[0]["error"]
    );
    (
        out.status.code(),
        reports[0]["findings"].as_array().unwrap().clone(),
    )
}

fn ids(findings: &[serde_json::Value]) -> Vec<String> {
    findings
        .iter()
        .map(|f| f["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn dangerous_privileges_are_findings_and_a_minimal_container_has_none_of_them() {
    if !require_root() {
        return;
    }
    // A real unix socket named like the Docker API's, bind-mounted into the container.
    let sockets = tempfile::tempdir().unwrap();
    let socket_path = sockets.path().join("docker.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&socket_path).unwrap();

    let loose_name = format!("qt-posture-loose-{}", std::process::id());
    let loose = RuncContainer::start_tweaked(&loose_name, None, |config, _| {
        for set in ["bounding", "effective", "permitted"] {
            let caps = config["process"]["capabilities"][set]
                .as_array_mut()
                .unwrap();
            caps.push("CAP_SYS_ADMIN".into());
            caps.push("CAP_NET_RAW".into());
        }
        // The host's network namespace: no network entry at all.
        config["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "network");
        config["mounts"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "destination": "/run/docker.sock", "type": "bind",
                "source": socket_path, "options": ["rbind", "rw"]
            }));
    });

    let tight_name = format!("qt-posture-tight-{}", std::process::id());
    let tight = RuncContainer::start_tweaked(&tight_name, None, |config, _| {
        config["process"]["user"] = serde_json::json!({"uid": 1000, "gid": 1000});
        config["process"]["noNewPrivileges"] = true.into();
        config["root"]["readonly"] = true.into();
        config["linux"]["resources"]["memory"] = serde_json::json!({"limit": 64 << 20});
        config["linux"]["resources"]["pids"] = serde_json::json!({"limit": 64});
    });

    let (code, loose_findings) = posture_of(&loose_name);
    let found = ids(&loose_findings);
    for id in ["cap-sys-admin", "cap-net-raw", "host-net", "runtime-socket"] {
        assert!(found.contains(&id.to_string()), "{id} missing: {found:?}");
    }
    assert_eq!(
        code,
        Some(4),
        "a critical finding exits 4 with --fail-on critical"
    );
    let admin = loose_findings
        .iter()
        .find(|f| f["id"] == "cap-sys-admin")
        .unwrap();
    assert_eq!(admin["severity"], "critical");
    assert!(admin["evidence"].as_str().unwrap().contains("effective"));
    let socket = loose_findings
        .iter()
        .find(|f| f["id"] == "runtime-socket")
        .unwrap();
    assert_eq!(socket["cis"], "5.31");
    assert!(
        socket["evidence"]
            .as_str()
            .unwrap()
            .contains("/run/docker.sock")
    );

    // The table names each finding and its fix, for people.
    let table = quarry().args(["posture", &loose_name]).output().unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    println!("{text}");
    assert!(
        text.contains("capability CAP_SYS_ADMIN") && text.contains("drop it"),
        "{text}"
    );

    let (_, tight_findings) = posture_of(&tight_name);
    let found = ids(&tight_findings);
    for id in [
        "cap-sys-admin",
        "cap-net-raw",
        "host-net",
        "runtime-socket",
        "root-without-userns",
        "rootfs-writable",
        "new-privileges",
        "no-memory-limit",
        "no-pids-limit",
        "privileged",
    ] {
        assert!(!found.contains(&id.to_string()), "{id} raised: {found:?}");
    }
    drop((loose, tight));
}

#[test]
fn unknown_container_is_a_clear_error() {
    let out = quarry()
        .args(["posture", "qt-no-such-container-here"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("qt-no-such-container-here"), "{err}");
}

/// The recorder judges the containers it sees: a container given CAP_SYS_ADMIN gets `posture`
/// rows naming it (once: an unchanged posture is not written again) and an automatic baseline
/// of its plain rootfs; a recording with `--no-posture --no-baseline` writes neither, and the
/// container's timeline shows the posture.
#[test]
fn the_recorder_writes_a_containers_posture_once_takes_its_baseline_and_the_timeline_shows_it() {
    if !require_root() {
        return;
    }
    let name = format!("qt-posture-rec-{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let rec = RecorderProcess::start(&store, &["--seal-interval", "1s", "--no-detect"]);
    let c = RuncContainer::start_tweaked(&name, None, |config, _| {
        for set in ["bounding", "effective", "permitted"] {
            config["process"]["capabilities"][set]
                .as_array_mut()
                .unwrap()
                .push("CAP_SYS_ADMIN".into());
        }
    });
    // Rows of the container's own, seal after seal, so the recorder sees it several times.
    for _ in 0..4 {
        assert_eq!(c.exec(&["cat", "/proc/version"]), 0);
        std::thread::sleep(std::time::Duration::from_millis(800));
    }
    let out = rec.stop_with(nix::sys::signal::Signal::SIGINT);
    assert!(out.status.success(), "{out:?}");

    let sql = |q: &str| -> Vec<serde_json::Value> {
        let out = quarry()
            .args(["sql", q, "--format", "json", "--store"])
            .arg(&store)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let rows = sql(&format!(
        "SELECT check_id, severity, posture_id, time FROM posture WHERE container_id = '{name}'"
    ));
    assert!(
        rows.iter()
            .any(|r| r["check_id"] == "cap-sys-admin" && r["severity"] == "critical"),
        "{rows:#?}"
    );
    let assessments: std::collections::BTreeSet<String> = rows
        .iter()
        .map(|r| format!("{}@{}", r["posture_id"], r["time"]))
        .collect();
    assert_eq!(assessments.len(), 1, "written more than once: {rows:#?}");

    // The recorder took the plain rootfs's baseline when it first saw the container: busybox
    // with its real hash, and an action row whose actor is the recorder.
    let busybox = sql(&format!(
        "SELECT sha256 FROM baseline WHERE container_id = '{name}' AND path = '/bin/busybox'"
    ));
    let want = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        std::fs::read("/bin/busybox").unwrap(),
    ));
    assert_eq!(busybox.len(), 1, "{busybox:#?}");
    assert_eq!(busybox[0]["sha256"], want.as_str());
    let actions = sql(&format!(
        "SELECT actor, result FROM action WHERE action = 'baseline' AND container_id = '{name}'"
    ));
    assert_eq!(actions.len(), 1, "{actions:#?}");
    assert!(
        actions[0]["actor"].as_str().unwrap().contains("recorder"),
        "{actions:#?}"
    );
    assert_eq!(actions[0]["result"], "ok");

    let out = quarry()
        .args(["timeline", &name, "--format", "json", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let timeline: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        timeline["posture"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["check_id"] == "cap-sys-admin"),
        "{}",
        timeline["posture"]
    );
    // The export bundle of the container carries its posture rows.
    let bundle = dir.path().join("bundle.tar.zst");
    let out = quarry()
        .args(["export", &name, "--format", "json", "-o"])
        .arg(&bundle)
        .arg("--store")
        .arg(&store)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["rows"]["posture"].as_u64().unwrap_or(0) >= 1,
        "{report:#}"
    );
    drop(c);

    // Off when asked.
    let store2 = dir.path().join("store2");
    let rec = RecorderProcess::start(
        &store2,
        &[
            "--seal-interval",
            "1s",
            "--no-detect",
            "--no-posture",
            "--no-baseline",
        ],
    );
    let c = RuncContainer::start_tweaked(&format!("{name}-off"), None, |_, _| {});
    for _ in 0..3 {
        assert_eq!(c.exec(&["cat", "/proc/version"]), 0);
        std::thread::sleep(std::time::Duration::from_millis(800));
    }
    let out = rec.stop_with(nix::sys::signal::Signal::SIGINT);
    assert!(out.status.success(), "{out:?}");
    drop(c);
    for table in ["posture", "baseline"] {
        let out = quarry()
            .args(["sql", &format!("SELECT count(*) AS n FROM {table}")])
            .args(["--format", "json", "--store"])
            .arg(&store2)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let n: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(n[0]["n"], 0, "{table}: {n}");
    }
}
