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
