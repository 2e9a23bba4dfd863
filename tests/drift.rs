//! Drift end to end, as root: a real runc container against its baseline and a real podman
//! container against its image layers; each gets one file added, one modified and one deleted,
//! and `quarry drift` must list exactly those three with the right hashes.

// A test fails by panicking: unwrap is how it says what went wrong.
#![allow(clippy::unwrap_used)]

mod common;

use common::containers::{PodmanContainer, RuncContainer};
use common::*;
use sha2::{Digest, Sha256};

fn drift_json(container: &str, store: &std::path::Path) -> (Option<i32>, serde_json::Value) {
    let out = quarry()
        .args(["drift", container, "--format", "json", "--store"])
        .arg(store)
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), v)
}

fn changes(drift: &serde_json::Value) -> Vec<(String, String)> {
    drift["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_string(),
                e["change"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn entry<'a>(drift: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
    drift["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["path"] == path)
        .unwrap_or_else(|| panic!("{path} not in {drift}"))
}

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[test]
fn runc_rootfs_drifts_from_its_baseline() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let name = format!("qt-drift-runc-{}", std::process::id());
    let c = RuncContainer::start_tweaked(&name, None, |config, rootfs| {
        config["root"]["readonly"] = false.into();
        std::fs::write(rootfs.join("etc/motd"), "v1\n").unwrap();
    });

    let out = quarry()
        .args(["drift", &name, "--store"])
        .arg(&store)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "no baseline yet is an error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("quarry baseline"));
    let out = quarry()
        .args(["baseline", &name, "--store"])
        .arg(&store)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, drift) = drift_json(&name, &store);
    assert_eq!(
        (code, changes(&drift)),
        (Some(0), vec![]),
        "no drift right after"
    );

    assert_eq!(
        c.exec(&[
            "/bin/sh",
            "-c",
            "echo v2 > /etc/motd; echo new > /etc/added; rm /bin/ls"
        ]),
        0
    );
    let (code, drift) = drift_json(&name, &store);
    assert_eq!(code, Some(4));
    assert_eq!(
        changes(&drift),
        [
            ("/bin/ls".to_string(), "deleted".to_string()),
            ("/etc/added".to_string(), "added".to_string()),
            ("/etc/motd".to_string(), "modified".to_string()),
        ]
    );
    assert_eq!(entry(&drift, "/etc/added")["sha256"], sha(b"new\n"));
    assert_eq!(entry(&drift, "/etc/motd")["sha256"], sha(b"v2\n"));
    assert_eq!(entry(&drift, "/etc/motd")["previous_sha256"], sha(b"v1\n"));
    assert_eq!(entry(&drift, "/bin/ls")["kind"], "symlink");
    // The baseline is evidence like any segment, and the action is on the record.
    let (code, text) = verify(&store);
    assert_eq!(code, 0, "{text}");
}

#[test]
fn podman_overlay_drifts_from_its_image() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let name = format!("qt-drift-podman-{}", std::process::id());
    let c = PodmanContainer::start(&name);
    let (_, before) = drift_json(&name, &store);
    let before = changes(&before);
    assert!(
        before.is_empty(),
        "a fresh container has no drift: {before:?}"
    );

    assert_eq!(
        c.exec(&[
            "/bin/sh",
            "-c",
            "echo added > /etc/added; rm /bin/cat; echo mine > /bin/cat; rm /bin/ls"
        ]),
        0
    );
    let (code, drift) = drift_json(&name, &store);
    assert_eq!(code, Some(4));
    assert_eq!(
        changes(&drift),
        [
            ("/bin/cat".to_string(), "modified".to_string()),
            ("/bin/ls".to_string(), "deleted".to_string()),
            ("/etc/added".to_string(), "added".to_string()),
        ]
    );
    assert_eq!(entry(&drift, "/etc/added")["sha256"], sha(b"added\n"));
    // The image's /bin/cat is a symlink to busybox; now it is a file of the intruder's.
    let cat = entry(&drift, "/bin/cat");
    assert_eq!(cat["kind"], "file");
    assert_eq!(cat["sha256"], sha(b"mine\n"));
    assert_eq!(cat["executable"], false);
    assert!(
        drift["before_start"].as_array().is_some(),
        "runtime set-up listed apart"
    );
}
