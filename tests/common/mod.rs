//! Helpers shared by the end-to-end tests: run the real `quarry` binary, as root, against the
//! real kernel, and read back what it wrote.
#![allow(dead_code)] // each test binary uses a different subset

pub mod bucket;
pub mod containers;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Int32Type, UInt64Type};
use quarry_store::{Store, Table};

pub fn quarry() -> Command {
    Command::new(env!("CARGO_BIN_EXE_quarry"))
}

/// Root tests need root; say so plainly instead of failing deep inside bpf(2). Set
/// QUARRY_SKIP_ROOT_TESTS=1 to skip them knowingly on a machine without root.
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("QUARRY_SKIP_ROOT_TESTS").is_some() {
        eprintln!("skipping: not root and QUARRY_SKIP_ROOT_TESTS is set");
        return false;
    }
    panic!("this test loads eBPF programs and must run as root (or set QUARRY_SKIP_ROOT_TESTS=1)");
}

/// A unique marker to find this test's own rows among everything the machine does.
pub fn marker(name: &str) -> String {
    format!(
        "quarry-test-{name}-{}-{}",
        std::process::id(),
        rand_suffix()
    )
}

fn rand_suffix() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    t.as_nanos() as u64 ^ (t.as_nanos() >> 64) as u64
}

/// A `quarry record` child that is killed (and reaped) if the test fails before stopping it.
pub struct RecorderProcess {
    child: Option<Child>,
    pub stderr_lines: mpsc::Receiver<String>,
}

impl RecorderProcess {
    /// Starts a recorder and waits until it says it is recording (programs attached).
    pub fn start(store: &Path, extra: &[&str]) -> RecorderProcess {
        let mut cmd = quarry();
        cmd.arg("record").arg("--store").arg(store).args(extra);
        RecorderProcess::spawn(cmd)
    }

    /// Starts `cmd` (a `quarry record` command line) and waits until it says it is recording.
    pub fn spawn(mut cmd: Command) -> RecorderProcess {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning quarry record");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[recorder] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut rec = RecorderProcess {
            child: Some(child),
            stderr_lines: rx,
        };
        loop {
            match rec.stderr_lines.recv_timeout(Duration::from_secs(60)) {
                Ok(line) if line.starts_with("quarry: recording ") => break,
                Ok(_) => continue,
                Err(_) => {
                    let out = rec.child.take().unwrap().wait_with_output().unwrap();
                    panic!("recorder did not start: {out:?}");
                }
            }
        }
        rec
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// The child process, to stop and wait for by hand (no longer killed on drop), and its
    /// stderr lines (the child's own stderr pipe is read by this struct's thread).
    pub fn into_child(mut self) -> (Child, mpsc::Receiver<String>) {
        let child = self.child.take().unwrap();
        let (_, idle) = mpsc::channel();
        (child, std::mem::replace(&mut self.stderr_lines, idle))
    }

    /// Sends `signal` and waits for the recorder to exit.
    pub fn stop_with(mut self, signal: nix::sys::signal::Signal) -> Output {
        let child = self.child.take().unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
        child.wait_with_output().unwrap()
    }
}

impl Drop for RecorderProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// One `process` row, as the tests look at it.
#[derive(Debug, Clone, PartialEq)]
pub struct Proc {
    pub event: String,
    pub pid: i32,
    pub ppid: Option<i32>,
    pub start_ns: u64,
    pub ktime_ns: u64,
    pub comm: String,
    pub filename: Option<String>,
    pub argv: Option<Vec<String>>,
    pub exit_code: Option<i32>,
    pub exit_signal: Option<i32>,
    pub cgroup_id: u64,
    pub container_id: Option<String>,
}

/// Every `process` row in the store, read with the project's own reader.
pub fn process_rows(store: &Path) -> Vec<Proc> {
    let mut rows = Vec::new();
    for batch in Store::at(store).read_table(Table::Process).unwrap() {
        let col = |n: &str| batch.column_by_name(n).unwrap().clone();
        let (event, comm, filename) = (col("event"), col("comm"), col("filename"));
        let (event, comm, filename) = (
            event.as_string::<i32>(),
            comm.as_string::<i32>(),
            filename.as_string::<i32>(),
        );
        let (pid, ppid) = (col("pid"), col("ppid"));
        let (pid, ppid) = (
            pid.as_primitive::<Int32Type>(),
            ppid.as_primitive::<Int32Type>(),
        );
        let (start, ktime) = (col("start_ns"), col("ktime_ns"));
        let (start, ktime) = (
            start.as_primitive::<UInt64Type>(),
            ktime.as_primitive::<UInt64Type>(),
        );
        let (code, sig) = (col("exit_code"), col("exit_signal"));
        let (code, sig) = (
            code.as_primitive::<Int32Type>(),
            sig.as_primitive::<Int32Type>(),
        );
        let argv = col("argv");
        let argv = argv.as_list::<i32>();
        let (cgroup, container) = (col("cgroup_id"), col("container_id"));
        let (cgroup, container) = (
            cgroup.as_primitive::<UInt64Type>(),
            container.as_string::<i32>(),
        );
        for i in 0..batch.num_rows() {
            let opt_i32 = |a: &arrow::array::Int32Array| (!a.is_null(i)).then(|| a.value(i));
            rows.push(Proc {
                event: event.value(i).to_string(),
                pid: pid.value(i),
                ppid: opt_i32(ppid),
                start_ns: start.value(i),
                ktime_ns: ktime.value(i),
                comm: comm.value(i).to_string(),
                filename: (!filename.is_null(i)).then(|| filename.value(i).to_string()),
                argv: (!argv.is_null(i)).then(|| {
                    let v = argv.value(i);
                    let v = v.as_string::<i32>();
                    (0..v.len()).map(|j| v.value(j).to_string()).collect()
                }),
                exit_code: opt_i32(code),
                exit_signal: opt_i32(sig),
                cgroup_id: cgroup.value(i),
                container_id: (!container.is_null(i)).then(|| container.value(i).to_string()),
            });
        }
    }
    rows
}

/// Runs `quarry verify` on a store and returns (exit code, stdout).
pub fn verify(store: &Path) -> (i32, String) {
    let out = quarry()
        .args(["verify", "--store"])
        .arg(store)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Rows whose argv mentions `marker`.
pub fn rows_with_marker<'a>(rows: &'a [Proc], marker: &str) -> Vec<&'a Proc> {
    rows.iter()
        .filter(|r| {
            r.argv
                .as_ref()
                .is_some_and(|a| a.iter().any(|x| x.contains(marker)))
        })
        .collect()
}

pub fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests")
}

/// The Python of the test readers: the checkout's virtual environment, where scripts/setup
/// installs the pinned pyarrow, duckdb and kubernetes-validate (never the system Python).
pub fn python() -> Command {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python3");
    assert!(
        venv.is_file(),
        "{} is missing: run `sudo scripts/setup` (it creates the test readers' virtual environment)",
        venv.display()
    );
    Command::new(venv)
}
