//! `quarry snapshot` / `quarry restore` as root against a real runc container that counts into
//! a tmpfs and holds a TCP connection to a listener on the host end of its own veth pair
//! (198.18.0.0/15 addresses configured here): the checkpoint leaves it running and counting, the
//! connection survives, the manifest's hashes match the files (checked with our own hashing and
//! with `b3sum -c` / `sha256sum -c`), the action is recorded, and the images restore in a fresh, isolated
//! environment whose counter continues from the checkpointed value. Real CRIU, real runc.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use common::containers::{RuncContainer, TestNet};
use common::*;
use quarry_store::{Store, Table};

/// The counter's log inside the container, as lines of numbers.
fn counts(pid: i32) -> Vec<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/root/tmp/count.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Waits (up to a generous deadline, never a timing assertion) until `f` holds.
fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills a restored tree (its root is pid 1 of its own pid namespace: the rest goes with it).
struct Restored(i32);
impl Drop for Restored {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

fn run(args: &[&str]) -> (i32, String, String) {
    let out = quarry().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The counter value the checkpoint froze, read independently of quarry and CRIU: from the
/// tmpfs archive CRIU wrote among the images.
fn checkpointed_count(images: &Path) -> u64 {
    for e in std::fs::read_dir(images).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("tmpfs-dev-") {
            continue;
        }
        let out = Command::new("tar")
            .args(["-xzOf"])
            .arg(e.path())
            .arg("./count.log")
            .output()
            .unwrap();
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            return text.lines().last().unwrap().trim().parse().unwrap();
        }
    }
    panic!("no tmpfs image holds count.log");
}

#[test]
fn live_snapshot_keeps_running_hashes_match_and_restores_isolated() {
    if !require_root() {
        return;
    }
    let pid = std::process::id();
    let net = TestNet::new("s");
    let listener = TcpListener::bind(format!("{}:0", net.host)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel::<TcpStream>();
    std::thread::spawn(move || {
        if let Ok((s, _)) = listener.accept() {
            let _ = tx.send(s);
        }
    });
    let script = format!(
        "sleep 1000000 | nc {} {port} >/dev/null & \
         i=0; while true; do i=$((i+1)); echo $i >> /tmp/count.log; sleep 0.1; done",
        net.host
    );
    let c = RuncContainer::start_with(
        &format!("qt-snap-{pid}"),
        Some(&net.netns),
        &["sh", "-c", &script],
        &["/tmp"],
    );
    let init = c.pid();
    let mut conn = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the container connects to the host listener");
    wait_for("the counter to start", || counts(init).len() >= 3);

    let dir = tempfile::tempdir().unwrap();
    let case = dir.path().join("case");
    let store = dir.path().join("store");
    let (code, out, err) = run(&[
        "snapshot",
        &c.id,
        "--case",
        case.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
        "--reason",
        "test",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "snapshot failed: {out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["left_running"], true);
    assert!(report["timings"]["frozen_ms"].as_f64().unwrap() > 0.0);
    assert!(report["processes"].as_u64().unwrap() >= 3, "{report}");

    // The container keeps counting, and its connection is still up.
    let after = *counts(init).last().unwrap();
    wait_for("the counter to go on after the snapshot", || {
        counts(init).last().copied().unwrap_or(0) > after + 2
    });
    conn.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    conn.write_all(b"still there?\n").unwrap();
    let mut buf = [0u8; 16];
    match conn.read(&mut buf) {
        Ok(0) => panic!("the container's TCP connection was closed by the snapshot"),
        Ok(_) => {}
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{e}"
        ),
    }

    // The facts beside the images name the connection.
    let sockets: serde_json::Value =
        serde_json::from_slice(&std::fs::read(case.join("facts/sockets.json")).unwrap()).unwrap();
    let remote = format!("{}:{port}", net.host);
    assert!(
        sockets
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["remote"] == remote.as_str() && s["state"] == "ESTABLISHED"),
        "{sockets}"
    );
    for f in [
        "facts/processes.json",
        "facts/process-tree.txt",
        "facts/mountinfo.txt",
        "runtime/bundle-config.json",
        "runtime/runc-state.json",
        "images/inventory.img",
        "images/dump.log",
        "restore.json",
    ] {
        assert!(case.join(f).is_file(), "{f} missing from the case");
    }

    // Every file listed with its size and SHA-256, matching, read-only; `sha256sum -c` agrees.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(case.join("manifest.json")).unwrap()).unwrap();
    let files = manifest["files"].as_array().unwrap();
    assert!(files.len() > 10);
    for f in files {
        let p = case.join(f["path"].as_str().unwrap());
        let data = std::fs::read(&p).unwrap();
        assert_eq!(data.len() as u64, f["size"].as_u64().unwrap(), "{p:?}");
        assert_eq!(manifest["hash"], "blake3");
        let hash = blake3::hash(&data).to_hex().to_string();
        assert_eq!(hash, f["hash"].as_str().unwrap(), "{p:?}");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o222,
            0,
            "{p:?} is writable"
        );
    }
    for key in ["version", "host", "operator", "started", "command"] {
        assert!(manifest[key].is_string(), "manifest lacks {key}");
    }
    assert!(manifest["command"].as_str().unwrap().contains("snapshot"));
    let sums = Command::new("b3sum")
        .args(["-c", "--quiet", "B3SUMS"])
        .current_dir(&case)
        .output()
        .expect("b3sum (scripts/setup installs it)");
    assert!(sums.status.success(), "{sums:?}");
    let (code, out, _) = run(&["snapshot", "--verify", case.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");

    // Recorded in the store's action table.
    let mut found = false;
    for b in Store::at(&store).read_table(Table::Action).unwrap() {
        let col = |n: &str| b.column_by_name(n).unwrap().as_string::<i32>().clone();
        let (action, id, result) = (col("action"), col("container_id"), col("result"));
        for i in 0..b.num_rows() {
            found |=
                action.value(i) == "snapshot" && id.value(i) == c.id && result.value(i) == "ok";
        }
    }
    assert!(found, "no snapshot row in the action table");

    // An existing case directory is never overwritten.
    let (code, _, err) = run(&[
        "snapshot",
        &c.id,
        "--case",
        case.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("already exists"), "{err}");

    // Restore in a fresh environment; the restored counter continues from the checkpoint.
    let checkpointed = checkpointed_count(&case.join("images"));
    let (code, out, err) = run(&[
        "restore",
        case.to_str().unwrap(),
        "--workdir",
        dir.path().join("restored").to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "restore failed: {out}{err}");
    let restored: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rpid = restored["pid"].as_i64().unwrap() as i32;
    let _guard = Restored(rpid);
    assert_ne!(rpid, init);
    wait_for("the restored counter to run", || {
        counts(rpid).last().copied().unwrap_or(0) > checkpointed + 2
    });
    let restored_counts = counts(rpid);
    let expected: Vec<u64> = (1..=restored_counts.len() as u64).collect();
    assert_eq!(
        restored_counts, expected,
        "the restored log must run 1..n without a gap or restart"
    );
    assert!(restored_counts.contains(&checkpointed));
    // Isolated: its own network namespace, neither the container's nor the host's.
    let ns = |p: i32| std::fs::read_link(format!("/proc/{p}/ns/net")).unwrap();
    assert_ne!(ns(rpid), ns(init));
    assert_ne!(ns(rpid), std::fs::read_link("/proc/self/ns/net").unwrap());
    // The original is untouched by the restored copy.
    let orig = counts(init);
    assert_eq!(orig, (1..=orig.len() as u64).collect::<Vec<_>>());
}

#[test]
fn clear_errors_for_unknown_container_missing_criu_and_full_disk() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (code, _, err) = run(&[
        "snapshot",
        "no-such-container-xyz",
        "--store",
        store.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("no running container matches"), "{err}");

    let c = RuncContainer::start(&format!("qt-snaperr-{}", std::process::id()));
    let (code, _, err) = run(&[
        "snapshot",
        &c.id,
        "--case",
        dir.path().join("c1").to_str().unwrap(),
        "--criu",
        "/nonexistent/criu",
        "--store",
        store.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("CRIU >= 4.1"), "{err}");
    assert!(!dir.path().join("c1").exists());

    // A 1 MiB tmpfs cannot hold the images: refused before anything is frozen or written.
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let mounted = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            "size=1m",
            "quarry-test",
            small.to_str().unwrap(),
        ])
        .status()
        .unwrap()
        .success();
    assert!(mounted);
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _u = Unmount(&small);
    let (code, _, err) = run(&[
        "snapshot",
        &c.id,
        "--case",
        small.join("case").to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("not enough disk space"), "{err}");
    assert!(!small.join("case").exists());

    // SHA-256 on request, checked by coreutils; a tampered file is found by --verify.
    let case = dir.path().join("sha");
    let (code, out, err) = run(&[
        "snapshot",
        &c.id,
        "--hash",
        "sha256",
        "--case",
        case.to_str().unwrap(),
        "--store",
        store.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let sums = Command::new("sha256sum")
        .args(["-c", "--quiet", "SHA256SUMS"])
        .current_dir(&case)
        .output()
        .unwrap();
    assert!(sums.status.success(), "{sums:?}");
    // The store holds this container's earlier (refused) snapshot actions: they are in the
    // case's trace excerpt.
    let excerpt = quarry_store::read::read_segment(&case.join("trace/action.parquet")).unwrap();
    assert!(excerpt.iter().map(|b| b.num_rows()).sum::<usize>() >= 2);
    std::fs::write(case.join("facts/process-tree.txt"), "edited").unwrap();
    let (code, out, _) = run(&["snapshot", "--verify", case.to_str().unwrap()]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("altered") && out.contains("facts/process-tree.txt"),
        "{out}"
    );
}

#[test]
fn podman_container_on_overlay_snapshots_and_restores() {
    if !require_root() {
        return;
    }
    let c =
        common::containers::PodmanContainer::start(&format!("qt-snap-pm-{}", std::process::id()));
    // A file written inside lands in the overlay's upper directory: a filesystem change.
    assert_eq!(
        c.exec(&["sh", "-c", "echo evidence > /dropped.txt"]),
        0,
        "exec in the podman container"
    );
    let dir = tempfile::tempdir().unwrap();
    let case = dir.path().join("case");
    let (code, out, err) = run(&[
        "snapshot",
        &c.name,
        "--case",
        case.to_str().unwrap(),
        "--store",
        dir.path().join("store").to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "snapshot failed: {out}{err}");
    let changes: serde_json::Value =
        serde_json::from_slice(&std::fs::read(case.join("fs/changes.json")).unwrap()).unwrap();
    assert!(
        changes["method"]["overlay_upper"].is_string(),
        "{}",
        changes["method"]
    );
    assert_eq!(
        std::fs::read_to_string(case.join("fs/changes/dropped.txt")).unwrap(),
        "evidence\n"
    );
    assert!(case.join("runtime/podman-config.json").is_file());
    let (code, out, _) = run(&["snapshot", "--verify", case.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    // Still running afterwards.
    assert_eq!(c.exec(&["true"]), 0);

    let (code, out, err) = run(&[
        "restore",
        case.to_str().unwrap(),
        "--workdir",
        dir.path().join("restored").to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "restore failed: {out}{err}");
    let restored: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rpid = restored["pid"].as_i64().unwrap() as i32;
    let _guard = Restored(rpid);
    assert_ne!(rpid, c.pid());
    let cmdline = std::fs::read(format!("/proc/{rpid}/cmdline")).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).contains("sleep"));
    // The restored root carries the change as it was at checkpoint time.
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{rpid}/root/dropped.txt")).unwrap(),
        "evidence\n"
    );
}
