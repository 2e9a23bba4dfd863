//! End-to-end, as root: `quarry record --syscalls all` into a tmpfs that fills up while a load
//! runs. The recorder must keep servicing SIGINT and `--duration`, count what it could not keep
//! as `gap` rows once space is back, and leave a store that verifies.

// A test fails by panicking: unwrap is how it says what went wrong.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;

/// A small tmpfs, unmounted (lazily, so a failing test cannot leave it busy) on drop.
struct SmallTmpfs {
    dir: tempfile::TempDir,
}

impl SmallTmpfs {
    fn mount(size: &str) -> SmallTmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs on {:?}", dir.path());
        SmallTmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system up to `leave` free bytes with one ballast file.
    fn fill_leaving(&self, leave: u64) -> PathBuf {
        let stat = nix::sys::statvfs::statvfs(self.path()).unwrap();
        let free = stat.blocks_available() * stat.fragment_size();
        let ballast = self.path().join("ballast");
        let file = std::fs::File::create(&ballast).unwrap();
        // tmpfs allocates on write, not on set_len: write zeroes.
        let mut w = std::io::BufWriter::new(file);
        let chunk = vec![0u8; 64 * 1024];
        let mut left = free.saturating_sub(leave);
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            std::io::Write::write_all(&mut w, &chunk[..n]).unwrap();
            left -= n as u64;
        }
        std::io::Write::flush(&mut w).unwrap();
        ballast
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// getpid loops in a child process, one after another, until dropped.
struct Load {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start() -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let _ = Command::new(env!("CARGO_BIN_EXE_quarry-bench"))
                    .args(["loop", "getpid", "2000000"])
                    .stdout(Stdio::null())
                    .status();
            }
        });
        Load {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits (bounded) for a recorder's stderr line containing `needle`.
fn wait_for_line(rec: &RecorderProcess, needle: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rec.stderr_lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return true,
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

/// Waits for a child without hanging the suite: a recorder that ignores its stop is killed
/// and the test fails on that, not on a timeout of the whole run.
fn wait_bounded(mut child: Child, within: Duration) -> Option<Output> {
    let deadline = Instant::now() + within;
    loop {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `gap` rows with a reason, summed: (reason, lost_table, lost).
fn gap_reasons(store: &Path) -> Vec<(String, String, u64)> {
    let out = quarry()
        .args(["sql", "--store"])
        .arg(store)
        .args([
            "--format",
            "csv",
            "SELECT reason, coalesce(lost_table, '-') AS t, CAST(sum(lost) AS BIGINT) AS n \
             FROM gap WHERE reason IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "quarry sql failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split(',');
            Some((
                f.next()?.to_string(),
                f.next()?.to_string(),
                f.next()?.trim().parse().ok()?,
            ))
        })
        .collect()
}

#[test]
fn a_full_disk_never_stops_signals_or_duration() {
    if !require_root() {
        return;
    }
    let fs = SmallTmpfs::mount("4m");
    let store = fs.path().join("store");
    let _ballast = fs.fill_leaving(256 * 1024);
    let load = Load::start();

    // SIGINT while the disk is full.
    let rec = RecorderProcess::start(&store, &["--syscalls", "all", "--seal-interval", "1s"]);
    assert!(
        wait_for_line(&rec, "(disk full)", Duration::from_secs(120)),
        "the recorder never reported the full disk"
    );
    std::thread::sleep(Duration::from_secs(2));
    let (child, lines) = rec.into_child();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGINT,
    )
    .unwrap();
    let out = wait_bounded(child, Duration::from_secs(60))
        .expect("the recorder did not stop on SIGINT with the disk full");
    let stderr = lines.try_iter().collect::<Vec<_>>().join("\n");
    assert!(
        !out.status.success(),
        "rows it could not seal must fail the run: {out:?}"
    );
    assert!(
        stderr.contains("could not be sealed before stopping") && stderr.contains("disk full"),
        "the exit summary names the loss and its reason: {stderr}"
    );

    // `--duration` with the disk still full.
    let rec = RecorderProcess::start(
        &store,
        &[
            "--syscalls",
            "all",
            "--seal-interval",
            "1s",
            "--duration",
            "5s",
        ],
    );
    let (child, _lines) = rec.into_child();
    let out = wait_bounded(child, Duration::from_secs(60))
        .expect("the recorder did not stop at --duration with the disk full");
    assert!(out.status.code().is_some(), "exited, not killed: {out:?}");
    drop(load);

    // Nothing sealed before was damaged.
    let (code, report) = verify(&store);
    assert_eq!(code, 0, "verify after a full disk: {report}");
}

#[test]
fn sealing_resumes_when_space_returns_and_the_loss_is_on_record() {
    if !require_root() {
        return;
    }
    let fs = SmallTmpfs::mount("8m");
    let store = fs.path().join("store");
    let ballast = fs.fill_leaving(256 * 1024);
    let load = Load::start();
    let rec = RecorderProcess::start(&store, &["--syscalls", "all", "--seal-interval", "1s"]);
    assert!(
        wait_for_line(&rec, "(disk full)", Duration::from_secs(120)),
        "the recorder never reported the full disk"
    );
    // Rows are lost for a while; then space comes back mid-run.
    std::thread::sleep(Duration::from_secs(3));
    drop(load);
    std::fs::remove_file(&ballast).unwrap();
    // Sealing resumes by itself: the loss becomes gap rows, sealed while recording goes on.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut reasons = Vec::new();
    while Instant::now() < deadline {
        reasons = gap_reasons(&store);
        if reasons.iter().any(|(r, _, _)| r == "disk full") {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = rec.stop_with(Signal::SIGINT);
    assert!(
        out.status.success(),
        "the run recovered; it must end well: {out:?}"
    );
    let lost: u64 = reasons
        .iter()
        .filter(|(r, _, _)| r == "disk full")
        .map(|(_, _, n)| n)
        .sum();
    assert!(
        lost > 0,
        "gap rows with the disk-full reason account for what was lost: {reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|(r, t, _)| r == "disk full" && t == "syscall"),
        "the lost table is named: {reasons:?}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("rows not kept"),
        "the exit summary says rows were not kept: {stdout}"
    );
    let (code, report) = verify(&store);
    assert_eq!(code, 0, "verify after recovery: {report}");
}
