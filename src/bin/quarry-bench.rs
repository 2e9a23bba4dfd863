//! `quarry-bench`: the recorder's overhead and throughput benchmark, and the workloads it and
//! the flood test drive.
//!
//! ```text
//! sudo quarry-bench recorder [--calls N] [--rounds N] [--pin] [--format json]
//!                                 bare vs filtered vs fully recorded (default and exact times)
//! quarry-bench baseline [--runs N]                         hashing a busybox rootfs as a baseline
//! quarry-bench loop getpid N                               N getpid syscalls; prints ns/call
//! quarry-bench loop open N                                 N opens (and closes) of a file
//! quarry-bench query generate --store DIR [--rows N]       a synthetic 100M-row store
//! quarry-bench query run --store DIR                       timeline/hunt timings, vs DuckDB
//! quarry-bench detect [--rate N] [--seconds N]             event-to-alert latency of live rules
//! sudo quarry-bench detect-cost [--iterations N]           recording with vs without --no-detect
//! quarry-bench fleet --store DIR                           local engine vs Ballista x1, x2
//! quarry-bench upload --store DIR [--hosts N]              rows/s, MB/s into a local SeaweedFS
//! ```
//!
//! The recorder runs as a separate `quarry record` process (the binary next to this one), so
//! its memory and the loop's timing are measured as a deployment would see them. Timings are
//! reported, never asserted: this is a benchmark, not a test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

#[path = "../bench/query.rs"]
mod query_bench;

#[path = "../bench/detect.rs"]
mod detect_bench;
#[path = "../bench/fleet.rs"]
mod fleet_bench;
#[path = "../bench/upload.rs"]
mod upload_bench;

use quarry_store::{Manifest, ManifestOp, Table};
use query_bench::median;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["loop", "getpid", n] => {
            let n: u64 = n.parse().context("N must be a number")?;
            println!("{:.1}", getpid_loop(n));
            Ok(())
        }
        ["loop", "open", n] => {
            let n: u64 = n.parse().context("N must be a number")?;
            println!("{:.1}", open_loop(n)?);
            Ok(())
        }
        ["loop", "mixed", n] => mixed_workload(n.parse().context("N must be a number")?),
        ["loop", "spawn", n] => {
            let n: u64 = n.parse().context("N must be a number")?;
            println!("{:.1}", spawn_loop(n)?);
            Ok(())
        }
        ["exec", rest @ ..] => exec_bench(rest),
        ["baseline", rest @ ..] => baseline_bench(rest),
        ["recorder", rest @ ..] => recorder_bench(rest),
        ["isolate", container, rest @ ..] => isolate_bench(container, rest),
        ["query", rest @ ..] => query_bench::run(rest),
        ["detect", rest @ ..] => detect_bench::run(rest),
        ["detect-cost", rest @ ..] => detect_cost(rest),
        ["fleet", rest @ ..] => fleet_bench::run(rest),
        ["upload", rest @ ..] => upload_bench::run(rest),
        ["--help" | "-h" | "help"] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => bail!("{USAGE}"),
    }
}

const USAGE: &str = "\
usage: quarry-bench recorder [--calls N] [--rounds N] [--pin] [--format json]
       quarry-bench isolate CONTAINER [--runs N] [--force] [--allow RULE]...
       quarry-bench exec [--spawns N] [--rounds N] [--format json]
       quarry-bench baseline [--runs N]                             a busybox rootfs's baseline
       quarry-bench loop getpid|open|mixed|spawn N
       quarry-bench query generate --store DIR [--rows N] | query run --store DIR
       quarry-bench detect [--rate N] [--seconds N] [--markers N]   live detection latency
       quarry-bench detect-cost [--iterations N] [--rounds N]      recording with vs without detection
       quarry-bench fleet --store DIR [--runs N] [--tasks N]   local vs Ballista x1, x2
       quarry-bench upload --store DIR [--hosts N]             rows/s, MB/s into a local SeaweedFS";

/// Runs `n` getpid syscalls and returns ns per call.
fn getpid_loop(n: u64) -> f64 {
    let start = Instant::now();
    for _ in 0..n {
        // SAFETY: getpid has no arguments and cannot fail; the raw syscall bypasses any libc
        // caching so every iteration enters the kernel.
        unsafe { libc::syscall(libc::SYS_getpid) };
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

/// `n` opens and closes of one file: every open is a decoded `file` row, the densest load
/// the default mode (no raw stream) sees. Returns ns per open+close.
fn open_loop(n: u64) -> anyhow::Result<f64> {
    use std::os::unix::ffi::OsStrExt;
    let file = tempfile::NamedTempFile::new()?;
    let path = std::ffi::CString::new(file.path().as_os_str().as_bytes())?;
    let start = Instant::now();
    for _ in 0..n {
        // SAFETY: a valid NUL-terminated path; the fd is ours and closed at once.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            bail!("open: {}", std::io::Error::last_os_error());
        }
        // SAFETY: closing the fd just opened.
        unsafe { libc::close(fd) };
    }
    Ok(start.elapsed().as_nanos() as f64 / n as f64)
}

/// Starts and waits for `/bin/true` `n` times; returns µs per process.
fn spawn_loop(n: u64) -> anyhow::Result<f64> {
    let start = Instant::now();
    for _ in 0..n {
        Command::new("/bin/true").status()?;
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / n as f64)
}

fn run_spawns(n: u64) -> anyhow::Result<f64> {
    let out = Command::new(std::env::current_exe()?)
        .args(["loop", "spawn", &n.to_string()])
        .output()?;
    if !out.status.success() {
        bail!(
            "spawn loop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

/// What hashing every exec's file costs an exec-heavy workload: rounds of a spawn loop bare,
/// recorded (default mode) with exec hashing, bare, recorded without it (`--exe-hash-max 0`),
/// bare; each recorded run against the bare runs on either side of it.
fn exec_bench(args: &[&str]) -> anyhow::Result<()> {
    let mut spawns: u64 = 3000;
    let mut rounds: usize = 3;
    let mut json = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--spawns" => spawns = it.next().context("--spawns N")?.parse()?,
            "--rounds" => rounds = it.next().context("--rounds N")?.parse::<usize>()?.max(1),
            "--format" => json = it.next() == Some(&"json"),
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    let dir = tempfile::tempdir()?;
    run_spawns(spawns / 10)?;
    let (mut with, mut without) = (Vec::new(), Vec::new());
    let mut outcomes = serde_json::Value::Null;
    for round in 0..rounds {
        let b0 = run_spawns(spawns)?;
        let rec = Recorder::start(
            &dir.path().join(format!("hash-{round}")),
            &[],
            Placement::Shared,
        )?;
        let h = run_spawns(spawns)?;
        let summary = rec.stop()?;
        outcomes = summary["exe_hash"].clone();
        let cached = summary["exe_hash_cached"].clone();
        outcomes["cached"] = cached;
        let b1 = run_spawns(spawns)?;
        let rec = Recorder::start(
            &dir.path().join(format!("nohash-{round}")),
            &["--exe-hash-max", "0"],
            Placement::Shared,
        )?;
        let n = run_spawns(spawns)?;
        rec.stop()?;
        let b2 = run_spawns(spawns)?;
        with.push(h / ((b0 + b1) / 2.0));
        without.push(n / ((b1 + b2) / 2.0));
        if !json {
            println!(
                "round {round}: bare {b0:.0}/{b1:.0}/{b2:.0} µs per spawn; hashing {h:.0} µs ({:.3}x), no hashing {n:.0} µs ({:.3}x)",
                with[round], without[round]
            );
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (mw, mn) = (median(&mut with), median(&mut without));
    if json {
        println!(
            "{}",
            serde_json::json!({
                "spawns": spawns, "rounds": rounds, "with_hashing_x": mw,
                "without_hashing_x": mn, "exe_hash_last_round": outcomes,
            })
        );
    } else {
        println!(
            "median of {rounds} rounds of {spawns} spawns: recorded with exec hashing {mw:.3}x bare, without {mn:.3}x; exec hash outcomes (last round): {outcomes}"
        );
    }
    Ok(())
}

/// A workload with every kind of row: `n` rounds of a process started, files created, written,
/// renamed, chmod'ed and deleted, and a TCP connection over loopback.
fn mixed_workload(n: u64) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir()?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server = std::thread::spawn(move || {
        for mut s in listener.incoming().take(n as usize).flatten() {
            let mut b = [0u8; 1];
            let _ = s.read(&mut b);
        }
    });
    for i in 0..n {
        Command::new("/bin/true")
            .arg(format!("round-{i}"))
            .status()?;
        let a = dir.path().join(format!("f{i}.tmp"));
        let b = dir.path().join(format!("f{i}.dat"));
        std::fs::File::create(&a)?.write_all(b"x")?;
        std::fs::rename(&a, &b)?;
        std::fs::set_permissions(&b, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        std::fs::remove_file(&b)?;
        std::net::TcpStream::connect(addr)?.write_all(b"y")?;
    }
    server
        .join()
        .map_err(|_| anyhow::anyhow!("server thread panicked"))?;
    Ok(())
}

/// Where the recorder bench runs its processes: anywhere (the scheduler decides, the loop and
/// the recorder compete for CPUs), or, with `--pin`, the loop alone on one CPU and the recorder
/// on another, which measures what recording costs the traced thread itself.
#[derive(Clone, Copy, PartialEq)]
enum Placement {
    Shared,
    Pinned,
}

/// CPUs of [`Placement::Pinned`].
const LOOP_CPU: usize = 1;
const RECORDER_CPU: usize = 0;

/// Runs `command` on `cpu` only (when given).
fn on_cpu(command: &mut Command, cpu: Option<usize>) -> &mut Command {
    use std::os::unix::process::CommandExt;
    if let Some(cpu) = cpu {
        // SAFETY: the closure runs in the child between fork and exec and only makes one
        // async-signal-safe system call on stack data.
        unsafe {
            command.pre_exec(move || {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    command
}

/// The loop, run in a child process so its threads and cgroup are its own.
fn run_loop(calls: u64, placement: Placement) -> anyhow::Result<f64> {
    run_loop_of("getpid", calls, placement)
}

fn run_loop_of(kind: &str, calls: u64, placement: Placement) -> anyhow::Result<f64> {
    let cpu = (placement == Placement::Pinned).then_some(LOOP_CPU);
    let out = on_cpu(&mut Command::new(std::env::current_exe()?), cpu)
        .args(["loop", kind, &calls.to_string()])
        .output()?;
    if !out.status.success() {
        bail!("loop failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

fn quarry_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let quarry = exe.with_file_name("quarry");
    if !quarry.exists() {
        bail!("{} not found: build the workspace first", quarry.display());
    }
    Ok(quarry)
}

/// A `quarry record` child, stopped with SIGINT (and killed if the bench fails first).
struct Recorder {
    child: Option<Child>,
}

impl Recorder {
    fn start(store: &Path, extra: &[&str], placement: Placement) -> anyhow::Result<Recorder> {
        let cpu = (placement == Placement::Pinned).then_some(RECORDER_CPU);
        let mut child = on_cpu(&mut Command::new(quarry_binary()?), cpu)
            .args(["record", "--quiet", "--format", "json", "--store"])
            .arg(store)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        // Recording has begun when its message is out; read stderr up to it.
        use std::io::BufRead;
        let stderr = child.stderr.take().context("stderr")?;
        let mut lines = std::io::BufReader::new(stderr).lines();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.starts_with("quarry: recording ") => break,
                Some(Ok(_)) => continue,
                _ => bail!("recorder did not start"),
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Ok(Recorder { child: Some(child) })
    }

    fn peak_rss_kib(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Resident KiB of the ring buffer's mapping (the largest BPF map mapping): the kernel maps
    /// its data pages twice (so a record that wraps reads as one), and all of them at once, so
    /// it counts twice its size in RSS from the start.
    fn ring_rss_kib(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
        let mut in_map = false;
        let mut largest = None;
        for line in smaps.lines() {
            if let Some(kib) = line.strip_prefix("Rss:") {
                if in_map {
                    let kib: u64 = kib.trim().trim_end_matches("kB").trim().parse().ok()?;
                    largest = largest.max(Some(kib));
                }
            } else if line.contains('-') && line.split_whitespace().count() >= 5 {
                in_map = line.ends_with("anon_inode:bpf-map");
            }
        }
        largest
    }

    fn stop(mut self) -> anyhow::Result<serde_json::Value> {
        let child = self.child.take().context("already stopped")?;
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!("recorder failed: {:?}", out.status);
        }
        // The summary is the last line: alerts (the stdout output) may come before it.
        let text = String::from_utf8_lossy(&out.stdout);
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("{}");
        Ok(serde_json::from_str(last)?)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// "N MiB (M MiB of it the ring buffer's mapping)".
fn mib_with_ring(rss_kib: Option<u64>, ring_kib: Option<u64>) -> String {
    let mib = |k: u64| k as f64 / 1024.0;
    match (rss_kib, ring_kib) {
        (Some(rss), Some(ring)) => format!(
            "{:.0} MiB ({:.0} MiB of it the ring buffer, mapped twice)",
            mib(rss),
            mib(ring)
        ),
        (Some(rss), None) => format!("{:.0} MiB", mib(rss)),
        _ => "?".into(),
    }
}

/// One round of the recorder benchmark.
struct RecorderRound {
    /// Bare loops before the filtered run, between the recorded runs, and after the last.
    bare: [f64; 4],
    filtered: Option<f64>,
    full: f64,
    /// Fully recorded with `--exact-syscall-times`.
    full_exact: f64,
    events_per_s: f64,
    drops: u64,
    rss_kib: Option<u64>,
    ring_rss_kib: Option<u64>,
}

impl RecorderRound {
    /// The bare loops' ns/call on either side of recorded run `run` (0 filtered, 1 fully
    /// recorded, 2 exact times).
    fn bare_around(&self, run: usize) -> f64 {
        (self.bare[run] + self.bare[run + 1]) / 2.0
    }
}

/// An empty cgroup to point the recorder's filter at, removed when dropped.
struct EmptyCgroup(PathBuf);

impl Drop for EmptyCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Isolates and releases a running container `runs` times; reports how long each quarantine
/// took to be in force (the command measures from its start: the cgroup_skb layer, then each
/// namespace-level layer), where the time went (the command's named steps), and the whole
/// command's wall time.
fn isolate_bench(container: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut runs = 20usize;
    let mut extra = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--runs" => runs = it.next().context("--runs N")?.parse()?,
            "--force" => extra.push("--force"),
            "--allow" => {
                extra.push("--allow");
                extra.push(it.next().context("--allow RULE")?);
            }
            _ => bail!(
                "usage: quarry-bench isolate CONTAINER [--runs N] [--force] [--allow RULE]..."
            ),
        }
    }
    let store = tempfile::tempdir()?;
    let (mut effective, mut all_layers, mut wall) = (Vec::new(), Vec::new(), Vec::new());
    // Per layer and per step, in the order first seen.
    let mut named: Vec<(String, Vec<f64>)> = Vec::new();
    let mut add = |name: String, ms: f64| match named.iter_mut().find(|(n, _)| *n == name) {
        Some((_, v)) => v.push(ms),
        None => named.push((name, vec![ms])),
    };
    for _ in 0..runs {
        let started = Instant::now();
        let out = Command::new(quarry_binary()?)
            .args(["isolate", container, "--format", "json", "--store"])
            .arg(store.path())
            .args(&extra)
            .output()?;
        wall.push(started.elapsed().as_secs_f64() * 1000.0);
        if !out.status.success() {
            bail!("isolate failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        effective.push(v["effective_after_ms"].as_f64().unwrap_or(f64::NAN));
        all_layers.push(v["all_layers_after_ms"].as_f64().unwrap_or(f64::NAN));
        for (kind, key) in [("layer", "layers"), ("step", "steps")] {
            for t in v[key].as_array().into_iter().flatten() {
                if let (Some(n), Some(ms)) = (t["name"].as_str(), t["after_ms"].as_f64()) {
                    add(format!("{kind} {n}"), ms);
                }
            }
        }
        let status = Command::new(quarry_binary()?)
            .args(["release", container, "--store"])
            .arg(store.path())
            .stdout(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("release failed");
        }
    }
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[0], v[v.len() / 2], v[v.len() - 1])
    };
    let (emin, emed, emax) = stats(&mut effective);
    let (amin, amed, amax) = stats(&mut all_layers);
    let (wmin, wmed, wmax) = stats(&mut wall);
    println!("isolate {container}, {runs} runs (the first loads and pins the shared programs)");
    println!(
        "  cgroup_skb in force after (from command start)  min {emin:.2} ms  median {emed:.2} ms  max {emax:.2} ms"
    );
    println!(
        "  every layer in force after (nftables inside and on the host side)  min {amin:.2} ms  median {amed:.2} ms  max {amax:.2} ms"
    );
    println!(
        "  whole command (incl. nftables, record) min {wmin:.2} ms  median {wmed:.2} ms  max {wmax:.2} ms"
    );
    println!("  per layer and step (ms from the command's start):");
    for (name, mut v) in named {
        let (min, med, max) = stats(&mut v);
        println!(
            "    {name:<36} min {min:7.2}  median {med:7.2}  max {max:7.2}  ({} runs)",
            v.len()
        );
    }
    Ok(())
}

/// (rows, bytes) per table from the store's manifest.
fn table_sizes(store: &Path) -> anyhow::Result<Vec<(Table, u64, u64)>> {
    let log = Manifest::new(store.join("manifest.jsonl")).read()?;
    let mut out = Vec::new();
    for table in Table::ALL {
        let (mut rows, mut bytes) = (0, 0);
        for (_, e) in &log.entries {
            if e.body.table == table.name() && e.body.op == ManifestOp::Add {
                rows += e.body.rows;
                bytes += e.body.bytes;
            }
        }
        if rows > 0 {
            out.push((table, rows, bytes));
        }
    }
    Ok(out)
}

/// Recording the mixed workload with detection (the default) and with `--no-detect`,
/// alternating: the loop's wall time and the rows sealed per second of it.
fn detect_cost(args: &[&str]) -> anyhow::Result<()> {
    let mut iterations: u64 = 2000;
    let mut rounds = 3;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--iterations" => iterations = it.next().context("--iterations N")?.parse()?,
            "--rounds" => rounds = it.next().context("--rounds N")?.parse::<usize>()?.max(1),
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    let dir = tempfile::tempdir()?;
    let mut runs: Vec<(&str, Vec<f64>, Vec<f64>)> =
        vec![("detect", vec![], vec![]), ("--no-detect", vec![], vec![])];
    for round in 0..rounds {
        for (name, secs, rates) in runs.iter_mut() {
            let store = dir
                .path()
                .join(format!("{}-{round}", name.trim_start_matches('-')));
            let mut extra = vec!["--seal-interval", "2s", "--alert-output", "file:/dev/null"];
            if *name == "--no-detect" {
                extra = vec!["--seal-interval", "2s", "--no-detect"];
            }
            let rec = Recorder::start(&store, &extra, Placement::Shared)?;
            let started = Instant::now();
            let out = Command::new(std::env::current_exe()?)
                .args(["loop", "mixed", &iterations.to_string()])
                .output()?;
            let t = started.elapsed().as_secs_f64();
            if !out.status.success() {
                bail!("loop failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            let summary = rec.stop()?;
            let rows = summary["rows_sealed"].as_u64().unwrap_or(0) as f64;
            secs.push(t);
            rates.push(rows / t);
        }
    }
    for (name, secs, rates) in &runs {
        println!(
            "{name:>12}: loop of {iterations} rounds median {:.2} s (min {:.2}), {:.0} rows sealed/s \
             of loop time (median of {rounds})",
            median(secs.clone()),
            secs.iter().cloned().fold(f64::INFINITY, f64::min),
            median(rates.clone())
        );
    }
    Ok(())
}

fn recorder_bench(args: &[&str]) -> anyhow::Result<()> {
    let mut calls: u64 = 5_000_000;
    let mut rounds: usize = 3;
    let mut json = false;
    let mut placement = Placement::Shared;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--calls" => calls = it.next().context("--calls N")?.parse()?,
            "--rounds" => rounds = it.next().context("--rounds N")?.parse::<usize>()?.max(1),
            "--format" => json = it.next() == Some(&"json"),
            "--pin" => placement = Placement::Pinned,
            "--help" | "-h" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    if placement == Placement::Pinned
        && std::thread::available_parallelism().map_or(1, |n| n.get()) < 2
    {
        bail!(
            "--pin needs two online CPUs (the loop on CPU {LOOP_CPU}, the recorder on CPU {RECORDER_CPU})"
        );
    }
    let dir = tempfile::tempdir()?;
    let cgroup2 = quarry_containers::CgroupFs::detect().context("no cgroup2 mount")?;
    let empty = EmptyCgroup(cgroup2.dir(&format!("/quarry-bench-empty-{}", std::process::id())));
    std::fs::create_dir(&empty.0).context("creating an empty cgroup")?;

    // Rounds of filtered, fully recorded and exactly timed loops, with a bare loop before,
    // between and after them; each ratio is taken against the bare loops on either side of
    // its run: a VM's speed drifts between minutes more than between seconds.
    run_loop(calls / 10, placement)?;
    let mut results: Vec<RecorderRound> = Vec::new();
    let mut sizes_full = Vec::new();
    for round in 0..rounds {
        let mut bare = [0.0; 4];
        bare[0] = run_loop(calls, placement)?;

        // Attached, but every event filtered out in the kernel (the loop is not in the cgroup
        // the recorder is restricted to): the floor of having the programs attached.
        let rec = Recorder::start(
            &dir.path().join(format!("filtered-{round}")),
            &[
                "--syscalls",
                "all",
                "--cgroup-path",
                &empty.0.display().to_string(),
            ],
            placement,
        );
        let filtered = match rec {
            Ok(rec) => {
                let t = run_loop(calls, placement)?;
                rec.stop()?;
                Some(t)
            }
            Err(e) => {
                eprintln!("filtered run skipped: {e}");
                None
            }
        };

        bare[1] = run_loop(calls, placement)?;

        // Everything recorded: every getpid becomes a syscall row.
        let full_store = dir.path().join(format!("full-{round}"));
        let rec = Recorder::start(
            &full_store,
            &["--syscalls", "all", "--seal-interval", "2s"],
            placement,
        )?;
        let started = Instant::now();
        let full = run_loop(calls, placement)?;
        let loop_secs = started.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_millis(200));
        let rss = rec.peak_rss_kib();
        let ring_rss = rec.ring_rss_kib();
        let mut drops = rec.stop()?["kernel_drops"].as_u64().unwrap_or(0);
        sizes_full = table_sizes(&full_store)?;
        let syscall_rows = sizes_full
            .iter()
            .find(|(t, _, _)| *t == Table::Syscall)
            .map_or(0, |s| s.1);

        bare[2] = run_loop(calls, placement)?;

        // The same with a clock reading for every call (the default reads it for a thread's
        // first call on a CPU and every 16th after).
        let rec = Recorder::start(
            &dir.path().join(format!("exact-{round}")),
            &[
                "--syscalls",
                "all",
                "--exact-syscall-times",
                "--seal-interval",
                "2s",
            ],
            placement,
        )?;
        let full_exact = run_loop(calls, placement)?;
        drops += rec.stop()?["kernel_drops"].as_u64().unwrap_or(0);
        bare[3] = run_loop(calls, placement)?;
        results.push(RecorderRound {
            bare,
            filtered,
            full,
            full_exact,
            events_per_s: syscall_rows as f64 / loop_secs,
            drops,
            rss_kib: rss,
            ring_rss_kib: ring_rss,
        });
    }
    let bare = median(results.iter().flat_map(|r| r.bare).collect());
    let full = median(results.iter().map(|r| r.full).collect());
    let filtered = results
        .iter()
        .all(|r| r.filtered.is_some())
        .then(|| median(results.iter().filter_map(|r| r.filtered).collect()));
    let full_ratios: Vec<f64> = results.iter().map(|r| r.full / r.bare_around(1)).collect();
    let full_exact = median(results.iter().map(|r| r.full_exact).collect());
    let exact_ratios: Vec<f64> = results
        .iter()
        .map(|r| r.full_exact / r.bare_around(2))
        .collect();
    let filtered_ratios: Vec<f64> = results
        .iter()
        .filter_map(|r| r.filtered.map(|f| f / r.bare_around(0)))
        .collect();
    let drops: u64 = results.iter().map(|r| r.drops).sum();
    let events_per_s = median(results.iter().map(|r| r.events_per_s).collect());
    let rss = results.iter().filter_map(|r| r.rss_kib).max();
    let ring_rss = results.iter().filter_map(|r| r.ring_rss_kib).max();

    // A mixed workload, sealed in large segments, for bytes per row of every table.
    let mixed_store = dir.path().join("mixed");
    let rec = Recorder::start(&mixed_store, &["--seal-interval", "1h"], Placement::Shared)?;
    let status = Command::new(std::env::current_exe()?)
        .args(["loop", "mixed", "2000"])
        .status()?;
    if !status.success() {
        bail!("mixed workload failed");
    }
    std::thread::sleep(Duration::from_millis(200));
    let mixed_rss = rec.peak_rss_kib();
    let mut default_ring_rss = rec.ring_rss_kib();
    let mut default_drops = rec.stop()?["kernel_drops"].as_u64().unwrap_or(0);

    // The default mode at full rate: an open loop as fast as it goes, every open a decoded
    // row (and a ring record of ~650 bytes with its kernel path).
    let opens = (calls / 5).max(1);
    let open_store = dir.path().join("opens");
    let rec = Recorder::start(&open_store, &["--seal-interval", "2s"], placement)?;
    let started = Instant::now();
    run_loop_of("open", opens, placement)?;
    let open_secs = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(200));
    let open_rss = rec.peak_rss_kib();
    default_ring_rss = default_ring_rss.max(rec.ring_rss_kib());
    default_drops += rec.stop()?["kernel_drops"].as_u64().unwrap_or(0);
    let file_rows = table_sizes(&open_store)?
        .iter()
        .find(|(t, _, _)| *t == Table::File)
        .map_or(0, |s| s.1);
    let default_events_per_s = file_rows as f64 / open_secs;
    let default_rss = mixed_rss.max(open_rss);

    // The same open loop without live detection: the recorder's own share of the default mode.
    let bare_store = dir.path().join("opens-no-detect");
    let rec = Recorder::start(
        &bare_store,
        &["--seal-interval", "2s", "--no-detect"],
        placement,
    )?;
    run_loop_of("open", opens, placement)?;
    std::thread::sleep(Duration::from_millis(200));
    let no_detect_rss = rec.peak_rss_kib();
    let no_detect_drops = rec.stop()?["kernel_drops"].as_u64().unwrap_or(0);
    let mut sizes = table_sizes(&mixed_store)?;
    sizes.retain(|(t, _, _)| *t != Table::Syscall);
    sizes.extend(
        sizes_full
            .iter()
            .filter(|(t, _, _)| *t == Table::Syscall)
            .cloned(),
    );
    let report = serde_json::json!({
        "calls": calls,
        "rounds": rounds,
        "pinned": placement == Placement::Pinned,
        "bare_ns_per_call": bare,
        "filtered_ns_per_call": filtered,
        "filtered_ratio": (!filtered_ratios.is_empty()).then(|| median(filtered_ratios.clone())),
        "filtered_ratios": filtered_ratios,
        "recorded_ns_per_call": full,
        "recorded_ratio": median(full_ratios.clone()),
        "recorded_ratios": full_ratios,
        "recorded_exact_times_ns_per_call": full_exact,
        "recorded_exact_times_ratio": median(exact_ratios.clone()),
        "recorded_exact_times_ratios": exact_ratios,
        "recorded_events_per_s": events_per_s,
        "kernel_drops": drops,
        "recorder_peak_rss_mib": rss.map(|k| k as f64 / 1024.0),
        "recorder_peak_rss_default_mode_mib": default_rss.map(|k| k as f64 / 1024.0),
        "recorder_ring_rss_mib": ring_rss.map(|k| k as f64 / 1024.0),
        "recorder_ring_rss_default_mode_mib": default_ring_rss.map(|k| k as f64 / 1024.0),
        "recorder_peak_rss_default_mode_no_detect_mib": no_detect_rss.map(|k| k as f64 / 1024.0),
        "default_mode_no_detect_kernel_drops": no_detect_drops,
        "default_mode_open_loop_ns_per_open": open_secs * 1e9 / opens as f64,
        "default_mode_file_rows_per_s": default_events_per_s,
        "default_mode_kernel_drops": default_drops,
        "bytes_per_row": sizes.iter().map(|(t, rows, bytes)| {
            (t.name().to_string(), serde_json::json!(*bytes as f64 / *rows as f64))
        }).collect::<serde_json::Map<_, _>>(),
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let spread = |ratios: &[f64]| {
            let (lo, hi) = ratios
                .iter()
                .fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
            format!(
                "{:.2}x bare, median of {rounds}; {lo:.2}-{hi:.2}x",
                median(ratios.to_vec())
            )
        };
        println!(
            "getpid loop, {calls} calls, {rounds} rounds (medians){}",
            match placement {
                Placement::Shared => "; loop and recorder placed by the scheduler",
                Placement::Pinned => "; loop pinned to CPU 1, recorder to CPU 0",
            }
        );
        println!("  bare                 {bare:>7.1} ns/call");
        if let Some(f) = filtered {
            println!(
                "  attached, filtered   {f:>7.1} ns/call  ({})",
                spread(&filtered_ratios)
            );
        }
        println!(
            "  fully recorded       {full:>7.1} ns/call  ({})",
            spread(&full_ratios)
        );
        println!(
            "  ... exact times      {full_exact:>7.1} ns/call  ({})",
            spread(&exact_ratios)
        );
        println!(
            "  sustained into Parquet: {:.2} M events/s, {drops} dropped in all rounds, recorder peak RSS {}",
            events_per_s / 1e6,
            mib_with_ring(rss, ring_rss)
        );
        println!(
            "  default mode (no raw stream), mixed workload and an open loop: recorder peak RSS {}",
            mib_with_ring(default_rss, default_ring_rss)
        );
        println!(
            "  default mode, {opens} opens as fast as they go: {:.2} M file rows/s, {default_drops} dropped",
            default_events_per_s / 1e6
        );
        println!(
            "  default mode without live detection (--no-detect), the open loop: recorder peak RSS {}, {no_detect_drops} dropped",
            mib_with_ring(no_detect_rss, default_ring_rss)
        );
        println!("bytes per row on disk:");
        for (t, rows, bytes) in &sizes {
            println!(
                "  {:<10} {:>6.2} B/row  ({rows} rows)",
                t.name(),
                *bytes as f64 / *rows as f64
            );
        }
    }
    Ok(())
}

/// `quarry-bench baseline`: how long a baseline of a plain busybox rootfs takes (the tree the
/// tests' runc containers use: busybox-static and a link per applet), through the same walk
/// and hashing `quarry baseline` and the recorder's automatic baselines use. No root needed.
fn baseline_bench(args: &[&str]) -> anyhow::Result<()> {
    let mut runs = 5usize;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--runs" => runs = it.next().context("--runs N")?.parse::<usize>()?.max(1),
            other => bail!("unknown argument {other}: baseline [--runs N]"),
        }
    }
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("rootfs");
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "www"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox"))
        .context("/bin/busybox (busybox-static; scripts/setup installs it)")?;
    let list = Command::new("/bin/busybox").arg("--list").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    let rootfs = quarry_snapshot::drift::Rootfs {
        host_path: root.clone(),
        overlay: None,
        mount_points: Vec::new(),
    };
    let mut times = Vec::new();
    let mut entries = 0;
    for _ in 0..runs {
        let started = Instant::now();
        let rows = quarry_snapshot::drift::baseline("bench", &rootfs, chrono::Utc::now())?;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        entries = rows.iter().filter(|r| r.kind != "note").count();
    }
    let bytes = std::fs::metadata(root.join("bin/busybox"))?.len();
    let (min, max) = times.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), t| {
        (lo.min(*t), hi.max(*t))
    });
    println!(
        "baseline of a busybox rootfs ({entries} entries, {:.1} MiB of files): median {:.1} ms \
         (min {min:.1}, max {max:.1}) over {runs} runs",
        bytes as f64 / (1 << 20) as f64,
        median(times),
    );
    Ok(())
}
