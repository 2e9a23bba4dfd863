//! End-to-end: `quarry record` as root against the real kernel, read back with our reader and
//! with pyarrow, and `quarry verify` after a clean stop and after SIGKILL.

// A test fails by panicking: unwrap is how it says what went wrong.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

/// A marker process with a distinctive argv, run by a shell: fork, exec (argv, parent) and exit
/// (code) of both must be in the store.
#[test]
fn records_exec_with_argv_parent_and_exit_code() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mark = marker("exec");
    let rec = RecorderProcess::start(&store, &["--seal-interval", "1s"]);
    let recorder_pid = rec.pid();

    // sh forks a child that execs `true <marker> "two words"`, then sh exits with 3. The child
    // runs `true` through `exec` so the marker exec is the child's own.
    let script = format!("/bin/sh -c 'exec /bin/true {mark} \"two words\"'; exit 3");
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg(&script)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(3));
    let shell_pid_hint = std::process::id();

    let out = rec.stop_with(Signal::SIGINT);
    assert!(out.status.success(), "recorder failed: {out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("sealed"), "no summary: {stdout}");

    let rows = process_rows(&store);
    let marker_exec = rows
        .iter()
        .find(|r| r.event == "exec" && r.argv.as_ref().is_some_and(|a| a.contains(&mark)))
        .unwrap_or_else(|| panic!("marker exec not recorded; {} rows", rows.len()));
    assert_eq!(marker_exec.filename.as_deref(), Some("/bin/true"));
    assert_eq!(
        marker_exec.argv.as_ref().unwrap(),
        &vec![
            "/bin/true".to_string(),
            mark.clone(),
            "two words".to_string()
        ]
    );
    assert_eq!(marker_exec.comm, "true");

    // Its parent is the outer shell (`sh -c script`), whose own exec we recorded, forked by
    // this test process, and which exited with 3.
    let ppid = marker_exec.ppid.expect("exec rows carry the parent");
    let parent_exec = rows
        .iter()
        .find(|r| {
            r.event == "exec"
                && r.pid == ppid
                && r.argv
                    .as_ref()
                    .is_some_and(|a| a.iter().any(|x| x.contains(&mark)))
        })
        .expect("the parent shell's exec is recorded");
    assert_eq!(parent_exec.ppid, Some(shell_pid_hint as i32));
    let parent_exit = rows
        .iter()
        .find(|r| r.event == "exit" && r.pid == ppid && r.start_ns == parent_exec.start_ns)
        .expect("the parent shell's exit is recorded");
    assert_eq!(parent_exit.exit_code, Some(3));

    // The marker process: forked by the shell, exited 0, same process key throughout.
    let fork = rows
        .iter()
        .find(|r| {
            r.event == "fork" && r.pid == marker_exec.pid && r.start_ns == marker_exec.start_ns
        })
        .expect("the marker process's fork is recorded");
    assert_eq!(fork.ppid, Some(ppid));
    let exit = rows
        .iter()
        .find(|r| {
            r.event == "exit" && r.pid == marker_exec.pid && r.start_ns == marker_exec.start_ns
        })
        .expect("the marker process's exit is recorded");
    assert_eq!((exit.exit_code, exit.exit_signal), (Some(0), None));
    assert!(fork.ktime_ns <= marker_exec.ktime_ns && marker_exec.ktime_ns <= exit.ktime_ns);

    // The recorder ignores its own activity (it was forked and exec'd before it loaded).
    assert!(
        rows.iter()
            .all(|r| r.pid != recorder_pid && r.ppid != Some(recorder_pid))
    );

    // An independent reader (pyarrow, Hive partitioning) sees the same rows.
    let py = python()
        .arg(tests_dir().join("py/read_process.py"))
        .arg(&store)
        .arg(&mark)
        .output()
        .expect("python3 of .venv with pyarrow (scripts/setup installs it)");
    assert!(
        py.status.success(),
        "pyarrow reader failed: {}",
        String::from_utf8_lossy(&py.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&py.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let py_exec = lines
        .iter()
        .find(|v| {
            v["event"] == "exec" && v["pid"] == marker_exec.pid && v["filename"] == "/bin/true"
        })
        .expect("pyarrow sees the marker exec");
    assert_eq!(py_exec["pid"], marker_exec.pid);
    assert_eq!(py_exec["ppid"], ppid);
    assert_eq!(py_exec["argv"][1], mark);
    assert!(
        lines
            .iter()
            .any(|v| v["event"] == "exit" && v["pid"] == marker_exec.pid && v["exit_code"] == 0)
    );
    assert!(
        lines
            .iter()
            .any(|v| v["event"] == "exit" && v["pid"] == ppid && v["exit_code"] == 3)
    );
    assert!(
        lines
            .iter()
            .all(|v| v["hour"].is_number() && v["dt"].is_string())
    );

    let (code, report) = verify(&store);
    assert_eq!(code, 0, "verify failed: {report}");
}

/// SIGKILL mid-run, while segments are being sealed several times a second: every visible
/// segment is complete, `verify` passes, and the next recorder completes any interrupted seal.
#[test]
fn sigkill_never_leaves_a_half_written_segment() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mark = marker("kill");
    let rec = RecorderProcess::start(&store, &["--seal-interval", "100ms"]);

    // Keep process activity flowing so there is always something to seal.
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        Command::new("/bin/true").arg(&mark).status().unwrap();
    }
    let out = rec.stop_with(Signal::SIGKILL);
    assert_eq!(
        out.status.code(),
        None,
        "the recorder should have died of SIGKILL"
    );

    let (code, report) = verify(&store);
    assert_eq!(code, 0, "verify after SIGKILL: {report}");
    // Every visible segment opens and decodes completely.
    let rows = process_rows(&store);
    assert!(
        rows.iter()
            .any(|r| r.argv.as_ref().is_some_and(|a| a.contains(&mark))),
        "some marker rows were sealed before the kill"
    );

    // A new recorder on the same store recovers and the store still verifies.
    let rec = RecorderProcess::start(&store, &["--seal-interval", "1s"]);
    let out = rec.stop_with(Signal::SIGTERM);
    assert!(out.status.success(), "second recorder: {out:?}");
    let (code, report) = verify(&store);
    assert_eq!(code, 0, "verify after restart: {report}");
    assert!(
        !report.contains("pending"),
        "recovery completed pending seals: {report}"
    );
}

/// `--duration` stops by itself and seals what it saw.
#[test]
fn duration_stops_the_recorder() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mark = marker("duration");
    let mut cmd = quarry();
    cmd.args([
        "record",
        "--quiet",
        "--format",
        "json",
        "--duration",
        "2s",
        // Live detection stays on: with --format json its alerts go to stderr, so an alert
        // some other process on the machine raises cannot come before the summary parsed here.
        "--store",
    ])
    .arg(&store);
    // Waits for "recording" (attaching can take seconds on a loaded machine), so the marker
    // runs while the recorder records.
    let (child, _stderr) = RecorderProcess::spawn(cmd).into_child();
    Command::new("/bin/true").arg(&mark).status().unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(summary["rows_sealed"].as_u64().unwrap() > 0, "{summary}");
    assert_eq!(summary["rows_pending"], 0);
    let rows = process_rows(&store);
    assert!(
        rows.iter()
            .any(|r| r.argv.as_ref().is_some_and(|a| a.contains(&mark)))
    );
}

/// `quarry status` reads what the running recorder publishes into its store every second (its
/// pid, scope and counters), and says NOT RUNNING (exit 1) once it has stopped.
#[test]
fn status_follows_the_running_recorder() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let rec = RecorderProcess::start(&store, &["--quiet", "--no-detect"]);
    let status = |format: &str| {
        quarry()
            .args(["status", "--format", format, "--store"])
            .arg(&store)
            .output()
            .unwrap()
    };
    // The first status file is written a second or two after recording starts.
    let deadline = Instant::now() + Duration::from_secs(60);
    let running = loop {
        let out = status("json");
        if out.status.success() {
            break serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap();
        }
        assert!(Instant::now() < deadline, "no status: {out:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(running["running"], true, "{running}");
    assert_eq!(running["status"]["pid"], rec.pid(), "{running}");
    assert_eq!(running["status"]["scope"], "all processes", "{running}");
    let text = String::from_utf8(status("table").stdout).unwrap();
    assert!(text.starts_with("recorder running (pid "), "{text}");
    let out = rec.stop_with(Signal::SIGINT);
    assert!(out.status.success(), "{out:?}");
    let stopped = status("json");
    assert_eq!(stopped.status.code(), Some(1), "{stopped:?}");
    let stopped: serde_json::Value = serde_json::from_slice(&stopped.stdout).unwrap();
    assert_eq!(stopped["running"], false, "{stopped}");
    let text = String::from_utf8(status("table").stdout).unwrap();
    assert!(text.starts_with("recorder NOT RUNNING"), "{text}");
}
