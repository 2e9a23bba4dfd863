//! What the recorder sees, end to end, as root: a real workload's files, connections and
//! privilege/escape signals land in the right tables with the right paths, addresses, ports and
//! results; the raw stream's times bound every call, measured against the test's own clock; and
//! a flood that overflows the ring buffer is accounted for in `gap` rows.

// A test fails by panicking: unwrap is how it says what went wrong.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Int32Type, Int64Type, UInt16Type, UInt32Type, UInt64Type};
use common::*;
use nix::sys::signal::Signal;
use quarry_store::{Store, Table};

/// Every row of `table` as JSON objects (column name -> value), read with the project's reader.
fn rows(store: &std::path::Path, table: Table) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let mut out = Vec::new();
    for batch in Store::at(store).read_table(table).unwrap() {
        let schema = batch.schema();
        // Dictionary-encoded text (the syscall table's comm and name) reads as text.
        let columns: Vec<_> = batch
            .columns()
            .iter()
            .map(|col| match col.data_type() {
                arrow::datatypes::DataType::Dictionary(_, _) => {
                    arrow::compute::cast(col, &arrow::datatypes::DataType::Utf8).unwrap()
                }
                _ => col.clone(),
            })
            .collect();
        for i in 0..batch.num_rows() {
            let mut row = serde_json::Map::new();
            for (f, col) in schema.fields().iter().zip(&columns) {
                let v = if col.is_null(i) {
                    serde_json::Value::Null
                } else if let Some(a) = col.as_string_opt::<i32>() {
                    a.value(i).into()
                } else if let Some(a) = col.as_primitive_opt::<Int32Type>() {
                    a.value(i).into()
                } else if let Some(a) = col.as_primitive_opt::<Int64Type>() {
                    a.value(i).into()
                } else if let Some(a) = col.as_primitive_opt::<UInt64Type>() {
                    a.value(i).into()
                } else if let Some(a) = col.as_primitive_opt::<UInt32Type>() {
                    a.value(i).into()
                } else if let Some(a) = col.as_primitive_opt::<UInt16Type>() {
                    a.value(i).into()
                } else {
                    serde_json::Value::Null
                };
                row.insert(f.name().clone(), v);
            }
            out.push(row);
        }
    }
    out
}

fn has(
    rows: &[serde_json::Map<String, serde_json::Value>],
    pred: impl Fn(&serde_json::Map<String, serde_json::Value>) -> bool,
) -> bool {
    rows.iter().any(pred)
}

#[test]
fn files_connections_and_escape_signals_are_recorded() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let mark = marker("cov");
    let rec = RecorderProcess::start(&store, &["--seal-interval", "1s"]);

    // Files, by a shell working in its own directory with relative paths.
    let script = format!(
        "echo data > {mark}.tmp && mv {mark}.tmp {mark}.dat && chmod 600 {mark}.dat && \
         mkdir {mark}.d && ln -s {mark}.dat {mark}.lnk && rm {mark}.lnk {mark}.dat && rmdir {mark}.d"
    );
    let ok = Command::new("/bin/sh")
        .arg("-c")
        .arg(&script)
        .current_dir(&work)
        .status()
        .unwrap();
    assert!(ok.success());

    // A TCP listener on loopback, a connection to it, and the accept.
    let py = "import socket\n\
              s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(4); port=s.getsockname()[1]\n\
              c=socket.socket(); c.connect(('127.0.0.1',port)); a,peer=s.accept()\n\
              a.sendall(b'x'); assert c.recv(1)==b'x'\n\
              print(port, peer[1])\n";
    let out = Command::new("python3").arg("-c").arg(py).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace().map(|x| x.parse::<u64>().unwrap());
    let (port, client_port) = (it.next().unwrap(), it.next().unwrap());

    // A child that unshares its mount namespace and mounts a tmpfs there.
    let mnt = dir.path().join(format!("{mark}-mnt"));
    std::fs::create_dir(&mnt).unwrap();
    let ok = Command::new("unshare")
        .arg("-m")
        .arg("sh")
        .arg("-c")
        .arg(format!("mount -t tmpfs quarry-test {}", mnt.display()))
        .status()
        .unwrap();
    assert!(ok.success());

    let out = rec.stop_with(Signal::SIGINT);
    assert!(out.status.success(), "{out:?}");

    let files = rows(&store, Table::File);
    let at = |name: &str| work.join(name).display().to_string();
    assert!(
        has(&files, |r| r["event"] == "open"
            && r["abs_path"] == at(&format!("{mark}.tmp"))
            && r["resolution"] == "cwd"
            && r["ret"].as_i64() >= Some(0)),
        "open/create"
    );
    assert!(
        has(&files, |r| r["event"] == "rename"
            && r["abs_path"] == at(&format!("{mark}.tmp"))
            && r["abs_path2"] == at(&format!("{mark}.dat"))
            && r["ret"] == 0),
        "rename with both paths"
    );
    assert!(
        has(&files, |r| r["event"] == "chmod"
            && r["abs_path"] == at(&format!("{mark}.dat"))
            && r["mode"] == 0o600
            && r["ret"] == 0),
        "chmod with mode"
    );
    assert!(
        has(&files, |r| r["event"] == "mkdir"
            && r["abs_path"] == at(&format!("{mark}.d"))),
        "mkdir"
    );
    assert!(
        has(&files, |r| r["event"] == "symlink"
            && r["path"] == format!("{mark}.dat")
            && r["abs_path2"] == at(&format!("{mark}.lnk"))),
        "symlink"
    );
    assert!(
        has(&files, |r| r["event"] == "unlink"
            && r["abs_path"] == at(&format!("{mark}.dat"))
            && r["ret"] == 0),
        "unlink"
    );
    assert!(
        has(&files, |r| r["event"] == "rmdir"
            && r["abs_path"] == at(&format!("{mark}.d"))),
        "rmdir"
    );

    let net = rows(&store, Table::Net);
    let py_rows: Vec<_> = net.iter().filter(|r| r["comm"] == "python3").collect();
    assert!(
        py_rows
            .iter()
            .any(|r| r["event"] == "bind" && r["local_addr"] == "127.0.0.1" && r["ret"] == 0),
        "bind"
    );
    assert!(
        py_rows
            .iter()
            .any(|r| r["event"] == "listen" && r["backlog"] == 4 && r["ret"] == 0),
        "listen"
    );
    assert!(
        py_rows.iter().any(|r| r["event"] == "connect"
            && r["remote_addr"] == "127.0.0.1"
            && r["remote_port"] == port
            && r["family"] == "inet"),
        "connect with address and port"
    );
    assert!(
        py_rows.iter().any(|r| r["event"] == "accept"
            && r["remote_addr"] == "127.0.0.1"
            && r["remote_port"] == client_port
            && r["ret"].as_i64() >= Some(0)),
        "accept with peer"
    );
    assert!(
        has(&net, |r| r["event"] == "tcp_state"
            && r["new_state"] == "ESTABLISHED"
            && (r["local_port"] == port || r["remote_port"] == port)),
        "TCP state change"
    );

    let procs = rows(&store, Table::Process);
    assert!(
        has(&procs, |r| r["event"] == "unshare"
            && r["detail"].as_str().is_some_and(|d| d.contains("mnt"))
            && r["ret"] == 0),
        "unshare"
    );
    assert!(
        has(&procs, |r| r["event"] == "mount"
            && r["detail"].as_str().is_some_and(|d| d
                .contains(&mnt.display().to_string())
                && d.contains("tmpfs"))
            && r["ret"] == 0),
        "mount with target and type"
    );
}

#[test]
fn a_flood_is_accounted_for_in_gap_rows() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // A small ring buffer and a slow drain: a tight syscall loop must overflow it.
    let rec = RecorderProcess::start(
        &store,
        &[
            "--syscalls",
            "all",
            "--ring-size",
            "64K",
            "--seal-interval",
            "1s",
        ],
    );
    let calls: u64 = 2_000_000;
    let child = Command::new(env!("CARGO_BIN_EXE_quarry-bench"))
        .args(["loop", "getpid", &calls.to_string()])
        .spawn()
        .unwrap();
    let pid = child.id() as i64;
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let out = rec.stop_with(Signal::SIGINT);
    assert!(out.status.success(), "{out:?}");

    let recorded = rows(&store, Table::Syscall)
        .iter()
        .filter(|r| r["pid"] == pid && r["name"] == "getpid")
        .count() as u64;
    let lost: u64 = rows(&store, Table::Gap)
        .iter()
        .map(|r| r["lost"].as_u64().unwrap())
        .sum();
    assert!(
        lost > 0,
        "the flood overflowed the buffer and gap rows say so"
    );
    assert!(recorded <= calls);
    // Lost counts are per CPU, not per process: they cover the loop's missing rows (and any
    // other process's lost in the same window).
    assert!(
        recorded + lost >= calls,
        "recorded {recorded} + lost {lost} account for the {calls} calls"
    );
}

/// When a call was made, as (before, after) readings of the monotonic clock.
type CallWindow = (u64, u64);

/// A raw-stream row's (ktime_ns, ktime_slack_ns).
type RowTime = (u64, Option<u64>);

/// CLOCK_MONOTONIC, the kernel side's clock, read through the vDSO (no syscall).
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write.
    let read = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(read, 0);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Records `calls` getppid syscalls of this thread, each between two readings of the monotonic
/// clock taken here, and returns (call windows, this thread's getppid rows ordered by ktime_ns
/// as (ktime_ns, ktime_slack_ns)). (The first rows' `ktime_ns` may well be before the loop: a
/// call that skips the clock is bounded from below by its thread's last reading on the CPU.)
fn timed_getppid_calls(extra: &[&str], calls: usize) -> (Vec<CallWindow>, Vec<RowTime>) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut args = vec!["--syscalls", "all", "--seal-interval", "1s"];
    args.extend_from_slice(extra);
    let rec = RecorderProcess::start(&store, &args);
    // SAFETY: gettid has no arguments and cannot fail.
    let tid = unsafe { libc::gettid() } as i64;
    let windows: Vec<CallWindow> = (0..calls)
        .map(|_| {
            let before = monotonic_ns();
            // getppid: a syscall nothing else in this thread makes. SAFETY: no arguments.
            unsafe { libc::syscall(libc::SYS_getppid) };
            (before, monotonic_ns())
        })
        .collect();
    let out = rec.stop_with(Signal::SIGINT);
    assert!(out.status.success(), "{out:?}");
    let mut rows: Vec<RowTime> = rows(&store, Table::Syscall)
        .iter()
        .filter(|r| r["tid"] == tid && r["name"] == "getppid")
        .map(|r| {
            (
                r["ktime_ns"].as_u64().unwrap(),
                r["ktime_slack_ns"].as_u64(),
            )
        })
        .collect();
    rows.sort();
    (windows, rows)
}

/// Checks that row i is call i: its time window (`ktime_ns` to `ktime_ns + ktime_slack_ns`)
/// overlaps the window the call was made in, and times strictly increase.
fn assert_rows_bracket_calls(windows: &[CallWindow], rows: &[RowTime]) {
    assert_eq!(rows.len(), windows.len(), "one row per call");
    for (i, (&(before, after), &(ktime, slack))) in windows.iter().zip(rows).enumerate() {
        // ktime_ns is exact or a lower bound, so never after the call ended; the window's end
        // is never before the call began.
        assert!(
            ktime <= after,
            "call {i}: ktime {ktime} after the call ended ({after})"
        );
        let end = ktime + slack.unwrap_or(0);
        assert!(
            end >= before,
            "call {i}: window ends at {end}, before the call began ({before})"
        );
    }
    assert!(
        rows.windows(2).all(|w| w[0].0 < w[1].0),
        "a thread's rows are strictly ordered by ktime_ns"
    );
}

#[test]
fn raw_stream_times_bound_every_call() {
    if !require_root() {
        return;
    }
    let (windows, rows) = timed_getppid_calls(&[], 4000);
    assert_rows_bracket_calls(&windows, &rows);
    let unread = rows.iter().filter(|r| r.1.is_some()).count();
    assert!(
        unread > 0 && unread < rows.len(),
        "some calls read the clock and most did not: {unread} of {} have a slack",
        rows.len()
    );
}

#[test]
fn exact_syscall_times_read_the_clock_for_every_call() {
    if !require_root() {
        return;
    }
    let (windows, rows) = timed_getppid_calls(&["--exact-syscall-times"], 2000);
    assert_rows_bracket_calls(&windows, &rows);
    assert!(rows.iter().all(|r| r.1.is_none()), "no row has a slack");
}
