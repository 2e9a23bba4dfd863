//! Bad input gets a clear error naming the problem and the fix, and a non-zero exit.

// A test fails by panicking: unwrap is how it says what went wrong.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::*;

#[test]
fn record_without_privileges_says_how_to_fix_it() {
    if !require_root() {
        return;
    }
    // Drop to nobody with no capabilities, as an unprivileged user would run it.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_quarry"))
        .args([
            "record",
            "--store",
            "/tmp/quarry-never-created",
            "--duration",
            "1s",
        ])
        .output()
        .expect("setpriv (util-linux)");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CAP_BPF") && err.contains("root"), "{err}");
    assert!(!std::path::Path::new("/tmp/quarry-never-created").exists());
}

#[test]
fn record_into_unwritable_store_names_it() {
    if !require_root() {
        return;
    }
    // A path below a regular file can never be created, even by root.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let store = file.join("store");
    let out = quarry()
        .args(["record", "--duration", "1s", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&store.display().to_string()) && err.contains("--store"),
        "{err}"
    );
}

#[test]
fn verify_of_a_missing_store_is_an_error() {
    let out = quarry()
        .args(["verify", "--store", "/nonexistent/quarry/store"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no store here"));
}

#[test]
fn bad_duration_is_a_usage_error() {
    let out = quarry()
        .args(["record", "--duration", "soon"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("30s"));
}
