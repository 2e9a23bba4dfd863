//! `quarry snapshot` / `quarry restore` as root against a real runc container that counts into
//! a tmpfs and holds a TCP connection to a listener on the host end of its own veth pair
//! (198.18.0.0/15 addresses configured here): the checkpoint leaves it running and counting, the
//! connection survives, the manifest's hashes match the files (checked with our own hashing and
//! with `b3sum -c` / `sha256sum -c`), the action is recorded, and the images restore in a fresh, isolated
//! environment whose counter continues from the checkpointed value. Real CRIU, real runc.

// A test fails by panicking: unwrap is how it says what went wrong.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
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

/// A restored tree, ended through the cgroup restore made for it (which is then removed).
struct Restored {
    pid: i32,
    cgroup: std::path::PathBuf,
}
impl Restored {
    fn from_report(r: &serde_json::Value) -> Restored {
        Restored {
            pid: r["pid"].as_i64().unwrap() as i32,
            cgroup: r["cgroup"].as_str().unwrap().into(),
        }
    }
}
impl Drop for Restored {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = std::fs::write(self.cgroup.join("cgroup.kill"), "1");
        for _ in 0..250 {
            if std::fs::remove_dir(&self.cgroup).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The mode bits of a path (not following a symlink).
fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Every entry below `dir` (symlinks not followed).
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
            out.push(e.path());
        }
    }
    out
}

/// A fresh case is root's alone: directories 0700, files 0400.
fn assert_private_case(case: &Path) {
    assert_eq!(mode(case), 0o700, "{case:?}");
    for p in walk(case) {
        let md = std::fs::symlink_metadata(&p).unwrap();
        assert!(!md.file_type().is_symlink(), "a symlink in the case: {p:?}");
        let want = if md.is_dir() { 0o700 } else { 0o400 };
        assert_eq!(mode(&p), want, "{p:?}");
        assert_eq!(md.uid(), 0, "{p:?}");
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
    }
    assert_private_case(&case);
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

    // Restore in a fresh environment, on a copy of the image the container started from (a
    // busybox rootfs built the same way); the restored counter continues from the checkpoint.
    let checkpointed = checkpointed_count(&case.join("images"));
    let image = dir.path().join("image");
    common::containers::busybox_rootfs(&image);
    let (code, _, err) = run(&["restore", case.to_str().unwrap()]);
    assert_eq!(code, 1, "a restore without --rootfs must be refused");
    assert!(err.contains("--rootfs"), "{err}");
    let workdir = dir.path().join("restored");
    let (code, out, err) = run(&[
        "restore",
        case.to_str().unwrap(),
        "--rootfs",
        image.to_str().unwrap(),
        "--workdir",
        workdir.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "restore failed: {out}{err}");
    let restored: serde_json::Value = serde_json::from_str(&out).unwrap();
    let guard = Restored::from_report(&restored);
    let rpid = guard.pid;
    assert_eq!(mode(&workdir), 0o700);
    // In the cgroup restore made for it.
    let procs = std::fs::read_to_string(guard.cgroup.join("cgroup.procs")).unwrap();
    assert!(
        procs.lines().any(|l| l.trim() == rpid.to_string()),
        "{procs}"
    );
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

    // The image the container was made from (the same busybox rootfs).
    let image = dir.path().join("image");
    common::containers::busybox_rootfs(&image);
    let (code, out, err) = run(&[
        "restore",
        case.to_str().unwrap(),
        "--rootfs",
        image.to_str().unwrap(),
        "--workdir",
        dir.path().join("restored").to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "restore failed: {out}{err}");
    let restored: serde_json::Value = serde_json::from_str(&out).unwrap();
    let guard = Restored::from_report(&restored);
    let rpid = guard.pid;
    assert_ne!(rpid, c.pid());
    let cmdline = std::fs::read(format!("/proc/{rpid}/cmdline")).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).contains("sleep"));
    // The restored root carries the change as it was at checkpoint time.
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{rpid}/root/dropped.txt")).unwrap(),
        "evidence\n"
    );
}

/// Whether `needle` occurs in `hay`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    let mut from = 0;
    while let Some(p) = hay[from..].iter().position(|&b| b == needle[0]) {
        if hay[from + p..].starts_with(needle) {
            return true;
        }
        from += p + 1;
    }
    false
}

/// Removes a file when dropped.
struct RemoveFile(std::path::PathBuf);
impl Drop for RemoveFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Kills a child process when dropped.
struct KillChild(std::process::Child);
impl Drop for KillChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Rewrites one file of a case and its entry in the manifest, as someone with write access to
/// the disk could: the case still verifies, so only restore's own checks stand in the way.
fn forge(case: &Path, rel: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let p = case.join(rel);
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    edit(&mut v);
    let data = serde_json::to_vec_pretty(&v).unwrap();
    std::fs::write(&p, &data).unwrap();
    let mpath = case.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    for f in m["files"].as_array_mut().unwrap() {
        if f["path"] == rel {
            f["size"] = data.len().into();
            f["hash"] = blake3::hash(&data).to_hex().to_string().into();
        }
    }
    std::fs::write(&mpath, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

/// A container that, the moment its snapshot thaws it, swaps a changed file for a symlink to a
/// host file and a changed file's directory for a symlink to /etc (where a host file of the same
/// name waits). The case holds what was there at checkpoint time and neither host file; a
/// restore onto an image whose directories are symlinks out of the root writes nothing outside
/// its workdir and strips the setuid bit the container set; a case whose restore.json points
/// outside the case is refused.
#[test]
fn symlinks_swapped_in_after_the_checkpoint_reach_neither_case_nor_host() {
    if !require_root() {
        return;
    }
    let pid = std::process::id();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("host-secret");
    let secret_text = format!("host secret of test {pid}");
    std::fs::write(&secret, &secret_text).unwrap();
    let etc_name = format!("qt-e17-{pid}");
    let etc_text = format!("host /etc file of test {pid}");
    let etc_file = Path::new("/etc").join(&etc_name);
    std::fs::write(&etc_file, &etc_text).unwrap();
    let _etc = RemoveFile(etc_file.clone());

    // Writable root; the changed files sit among many others (copying them takes a while, so a
    // copy made after the thaw races the swaps); init keeps writing and waits in wait4.
    let script = format!(
        "mkdir -p /evidence /p; echo original-note > /evidence/note; \
         echo original-etc > /p/{etc_name}; echo suid > /evidence/suid; chmod 4755 /evidence/suid; \
         i=0; while [ $i -lt 300 ]; do echo $i > /evidence/bulk-$i; echo $i > /p/bulk-$i; \
         i=$((i+1)); done; \
         i=0; while true; do i=$((i+1)); echo $i > /tick; sleep 0.05; done"
    );
    let c = RuncContainer::start_tweaked(&format!("qt-e17-swap-{pid}"), None, |config, _| {
        config["root"]["readonly"] = false.into();
        config["process"]["args"] = serde_json::json!(["sh", "-c", script]);
    });
    let init = c.pid();
    let root = std::path::PathBuf::from(format!("/proc/{init}/root"));
    wait_for("the container's files", || root.join("tick").is_file());
    // Entered from outside (so CRIU does not stop it): waits until the dump stops init (state
    // t), then until init writes a new /tick, which only init's own code does: the container
    // was resumed. (Init's state and syscall are no proof of that: while CRIU's parasite runs
    // in it and is cured, it passes through states a resumed init also shows.) From then on it
    // swaps the changed file for a symlink to a host file and its directory for a symlink to
    // /etc, and back, until told to stop.
    let watcher = format!(
        "s=; until [ \"$s\" = t ]; do read -r _ _ s _ < /proc/1/stat; done; \
         read -r t0 < /tick; \
         until read -r t1 < /tick; [ \"$t1\" != \"$t0\" ]; do :; done; \
         until [ -e /stop ]; do \
           mv /evidence/note /evidence/note.old; ln -s {0} /evidence/note; \
           mv /p /p.old; ln -s /etc /p; \
           rm /evidence/note /p; mv /evidence/note.old /evidence/note; mv /p.old /p; \
         done; \
         rm /evidence/note; ln -s {0} /evidence/note; mv /p /p.old; ln -s /etc /p; \
         touch /swapped",
        secret.display()
    );
    let _watcher = KillChild(
        Command::new("runc")
            .args(["exec", &c.id, "sh", "-c", &watcher])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The watcher runs once its shell (not runc exec) is there.
    wait_for("the watcher to start", || {
        std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c == "sh\n")
                && std::fs::read_to_string(e.path().join("cmdline"))
                    .is_ok_and(|c| c.contains("/swapped"))
        })
    });

    let case = dir.path().join("case");
    let (code, out, err) = run(&[
        "snapshot",
        &c.id,
        "--case",
        case.to_str().unwrap(),
        "--store",
        dir.path().join("store").to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "snapshot failed: {out}{err}");
    // It flipped the names back and forth from the thaw on; now it leaves the symlinks in.
    std::fs::write(root.join("stop"), "").unwrap();
    wait_for("the container to swap in its symlinks", || {
        root.join("swapped").exists()
    });
    assert!(
        std::fs::symlink_metadata(root.join("p"))
            .unwrap()
            .file_type()
            .is_symlink()
    );

    // Neither host file is in the case, in any file; the changes are as they were when frozen.
    for p in walk(&case) {
        if std::fs::symlink_metadata(&p).unwrap().is_file() {
            let data = std::fs::read(&p).unwrap();
            for text in [&secret_text, &etc_text] {
                assert!(
                    !contains(&data, text.as_bytes()),
                    "{p:?} holds a host file's contents"
                );
            }
        }
    }
    let changes = case.join("fs/changes");
    assert_eq!(
        std::fs::read_to_string(changes.join("evidence/note")).unwrap(),
        "original-note\n"
    );
    assert_eq!(
        std::fs::read_to_string(changes.join("p").join(&etc_name)).unwrap(),
        "original-etc\n"
    );
    assert_private_case(&case);
    let (code, out, _) = run(&["snapshot", "--verify", case.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");

    // The image the analyst restores onto has symlinks out of the root where the container had
    // directories; a sentinel directory outside must stay as it is.
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("sentinel"), "untouched").unwrap();
    let image = dir.path().join("image");
    common::containers::busybox_rootfs(&image);
    std::os::unix::fs::symlink(&outside, image.join("evidence")).unwrap();
    std::os::unix::fs::symlink(&outside, image.join("p")).unwrap();
    let workdir = dir.path().join("restored");
    let (code, out, err) = run(&[
        "restore",
        case.to_str().unwrap(),
        "--rootfs",
        image.to_str().unwrap(),
        "--workdir",
        workdir.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "restore failed: {out}{err}");
    let restored: serde_json::Value = serde_json::from_str(&out).unwrap();
    let _guard = Restored::from_report(&restored);
    let names: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, ["sentinel"], "restore wrote outside its workdir");
    assert_eq!(
        std::fs::read_to_string(outside.join("sentinel")).unwrap(),
        "untouched"
    );
    assert_eq!(mode(&workdir), 0o700);
    let rroot = workdir.join("root");
    assert_eq!(
        std::fs::read_to_string(rroot.join("evidence/note")).unwrap(),
        "original-note\n"
    );
    assert!(std::fs::symlink_metadata(rroot.join("p")).unwrap().is_dir());
    assert_eq!(
        mode(&rroot.join("evidence/suid")) & 0o6000,
        0,
        "setuid kept"
    );
    let notes = restored["notes"].to_string();
    assert!(notes.contains("/evidence/suid"), "{notes}");

    // A case whose restore.json leads outside it is refused, before anything is made.
    for bad in ["../outside", "/etc", "fs/../../outside"] {
        let forged = dir.path().join("forged");
        let _ = Command::new("rm").args(["-rf", "--"]).arg(&forged).status();
        assert!(
            Command::new("cp")
                .args(["-a", "--"])
                .arg(&case)
                .arg(&forged)
                .status()
                .unwrap()
                .success()
        );
        forge(&forged, "restore.json", |v| {
            v["fs_changes_dir"] = bad.into()
        });
        let (code, out, _) = run(&["snapshot", "--verify", forged.to_str().unwrap()]);
        assert_eq!(code, 0, "the forged case still verifies: {out}");
        let w = dir.path().join("forged-restore");
        let (code, _, err) = run(&[
            "restore",
            forged.to_str().unwrap(),
            "--rootfs",
            image.to_str().unwrap(),
            "--workdir",
            w.to_str().unwrap(),
        ]);
        assert_eq!(code, 1, "{bad}: {err}");
        assert!(err.contains("points outside the case"), "{bad}: {err}");
        assert!(!w.exists());
    }
}
