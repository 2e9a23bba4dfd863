//! `quarry-bench query`: a synthetic store of realistic shape and size, and the timings and
//! peak memory of `quarry timeline`, `quarry hunt` and `quarry sql` over it, next to DuckDB on
//! the same files.
//!
//! ```text
//! quarry-bench query generate --store DIR [--rows 100000000] [--containers 200] [--hours 24]
//!                             [--segment-rows 1000000]
//! quarry-bench query run --store DIR [--runs 5] [--format json] [--only hunt]
//! ```
//!
//! Each command runs as its own `quarry` process; its peak RSS is that process's own
//! (`wait4`), so the figures are what a responder's shell would see. The hunt over the whole
//! store (every built-in rule) has a target: at most 15 s and 1 GiB on the 100 M-row store.
//!
//! The generator seals through quarry-store exactly as the recorder does (same schemas,
//! clustering, bloom filters, manifest), so what is measured is what a responder would meet.
//! Containers live for different spans of hours, so a timeline prunes partitions as it would
//! on a real node; within an hour every live container's rows are interleaved in time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use arrow::array::{ArrayRef, StringBuilder};
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Duration, TimeZone, Utc};
use quarry_store::schema::*;
use quarry_store::{Partition, Store, Table};

const HOST: &str = "bench-node";

pub fn run(args: &[&str]) -> anyhow::Result<()> {
    match args {
        ["generate", rest @ ..] => generate(&GenerateArgs::parse(rest)?),
        ["run", rest @ ..] => bench(rest),
        _ => bail!(
            "usage: quarry-bench query generate --store DIR [--rows N] [--containers N] \
             [--hours N] [--segment-rows N] | quarry-bench query run --store DIR [--runs N] \
             [--format json]"
        ),
    }
}

struct GenerateArgs {
    store: PathBuf,
    rows: u64,
    containers: u32,
    hours: u32,
    segment_rows: usize,
}

impl GenerateArgs {
    fn parse(args: &[&str]) -> anyhow::Result<GenerateArgs> {
        let mut g = GenerateArgs {
            store: PathBuf::new(),
            rows: 100_000_000,
            containers: 200,
            hours: 24,
            segment_rows: 1_000_000,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || it.next().with_context(|| format!("{a} needs a value"));
            match *a {
                "--store" => g.store = value()?.into(),
                "--rows" => g.rows = value()?.parse()?,
                "--containers" => g.containers = value()?.parse()?,
                "--hours" => g.hours = value()?.parse()?,
                "--segment-rows" => g.segment_rows = value()?.parse()?,
                other => bail!("unknown argument {other}"),
            }
        }
        if g.store.as_os_str().is_empty() {
            bail!("--store DIR is required");
        }
        if g.store.exists() {
            bail!(
                "{} exists; the generator only writes a new store",
                g.store.display()
            );
        }
        Ok(g)
    }
}

/// A small, fast, deterministic generator (xorshift64*): the same store every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// The first hour of the synthetic store.
fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 10, 1, 0, 0, 0)
        .single()
        .expect("a valid fixed date")
}

fn container_id(i: u32) -> String {
    format!("{:064x}", 0xc0ffee_u64 * 1_000_003 + i as u64)
}

/// The hours container `i` is alive: staggered starts, spans from a quarter to three
/// quarters of the store.
fn lifetime(i: u32, hours: u32) -> (u32, u32) {
    let first = (i * 7) % (hours / 2).max(1);
    let span = (hours / 4).max(1) + (i * 13) % (hours / 2).max(1);
    (first, (first + span).min(hours))
}

const COMMS: &[&str] = &[
    "nginx",
    "python3",
    "node",
    "java",
    "sh",
    "postgres",
    "redis-server",
    "envoy",
];
const FILES: &[&str] = &[
    "/var/log/app/access.log",
    "/tmp/cache.db",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/usr/lib/x86_64-linux-gnu/libssl.so.3",
    "/srv/data/index.html",
    "/proc/self/stat",
    "/var/lib/app/state.json",
];
const EVENTS: &[(&str, &str)] = &[
    ("open", "openat"),
    ("open", "openat"),
    ("open", "openat"),
    ("unlink", "unlinkat"),
    ("rename", "renameat2"),
    ("chmod", "fchmodat"),
    ("mkdir", "mkdirat"),
];
const SYSCALLS: &[(i32, &str)] = &[
    (0, "read"),
    (1, "write"),
    (7, "poll"),
    (232, "epoll_wait"),
    (202, "futex"),
    (44, "sendto"),
    (45, "recvfrom"),
];

/// Rows per table per hour, from the total: the raw syscall stream dominates, as it does
/// on a node recording with `--syscalls all`.
fn split(rows: u64, hours: u32) -> [(Table, u64); 4] {
    let per_hour = rows / hours as u64;
    [
        (Table::Process, per_hour / 20),
        (Table::File, per_hour * 3 / 10),
        (Table::Net, per_hour / 10),
        (
            Table::Syscall,
            per_hour - per_hour / 20 - per_hour * 3 / 10 - per_hour / 10,
        ),
    ]
}

fn generate(g: &GenerateArgs) -> anyhow::Result<()> {
    let store = Store::create(&g.store)?;
    let started = Instant::now();
    let hours: Vec<u32> = (0..g.hours).collect();
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunks: Vec<Vec<u32>> = (0..workers)
        .map(|w| {
            hours
                .iter()
                .copied()
                .filter(|h| *h as usize % workers == w)
                .collect()
        })
        .collect();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|my_hours| {
                let store = &store;
                scope.spawn(move || -> anyhow::Result<()> {
                    for hour in my_hours {
                        generate_hour(store, g, hour)?;
                        eprintln!("generated hour {hour} ({:.0?})", started.elapsed());
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().expect("generator thread")?;
        }
        Ok(())
    })?;
    let bytes = dir_size(&g.store);
    println!(
        "generated {} rows for {} containers over {} hours in {:.1?}: {:.1} MiB",
        g.rows,
        g.containers,
        g.hours,
        started.elapsed(),
        bytes as f64 / (1 << 20) as f64
    );
    Ok(())
}

fn generate_hour(store: &Store, g: &GenerateArgs, hour: u32) -> anyhow::Result<()> {
    let hour_start = start() + Duration::hours(hour as i64);
    let alive: Vec<u32> = (0..g.containers)
        .filter(|i| {
            let (a, b) = lifetime(*i, g.hours);
            (a..b).contains(&hour)
        })
        .collect();
    if alive.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = alive.iter().map(|i| container_id(*i)).collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (hour as u64 + 1));
    let mut seq = hour as u64 * 1_000_000;
    let run_id = 4242;
    for (table, count) in split(g.rows, g.hours) {
        let mut done = 0u64;
        while done < count {
            let n = (count - done).min(g.segment_rows as u64) as usize;
            // Times advance through the hour across segments, as seals would.
            let base_us = (done as f64 / count as f64 * 3.6e9) as i64;
            let step_us = ((3.6e9 / count as f64) as i64).max(1);
            let row_time =
                |k: usize| hour_start + Duration::microseconds(base_us + k as i64 * step_us);
            let ktime = |k: usize| {
                (hour as u64 * 3_600_000_000_000) + ((base_us + k as i64 * step_us) as u64) * 1000
            };
            let pick = |rng: &mut Rng, k: usize| {
                let c = rng.below(ids.len() as u64) as usize;
                let pid = 1000 + alive[c] as i32 * 100 + rng.below(40) as i32;
                RowIdentity {
                    time: row_time(k),
                    ktime_ns: ktime(k),
                    pid,
                    tid: pid,
                    comm: rng.pick(COMMS).to_string(),
                    cgroup_id: 10_000 + alive[c] as u64,
                    container_id: Some(ids[c].clone()),
                }
            };
            let batch = match table {
                Table::Process => {
                    let rows: Vec<ProcessRow> = (0..n)
                        .map(|k| {
                            let id = pick(&mut rng, k);
                            let start_ns = id.ktime_ns.saturating_sub(rng.below(1_000_000_000));
                            let event = match k % 3 {
                                0 => ProcessEvent::Fork,
                                1 => ProcessEvent::Exec {
                                    filename: format!("/usr/bin/{}", id.comm),
                                    argv: vec![
                                        id.comm.clone(),
                                        "--serve".into(),
                                        format!("--port={}", 8000 + k % 100),
                                    ],
                                    argv_truncated: false,
                                    uid: 1000,
                                    gid: 1000,
                                    euid: 1000,
                                    egid: 1000,
                                },
                                _ => ProcessEvent::Exit {
                                    exit_code: Some(0),
                                    signal: None,
                                    core_dumped: false,
                                },
                            };
                            ProcessRow {
                                ppid: Some(id.pid - 1),
                                start_ns: Some(start_ns),
                                parent_start_ns: Some(start_ns / 2),
                                id,
                                event,
                            }
                        })
                        .collect();
                    process_batch(HOST, &rows)
                }
                Table::File => {
                    let rows: Vec<FileRow> = (0..n)
                        .map(|k| {
                            let id = pick(&mut rng, k);
                            let (event, syscall) = *rng.pick(EVENTS);
                            let path = rng.pick(FILES).to_string();
                            FileRow {
                                id,
                                event,
                                syscall,
                                abs_path: Some(path.clone()),
                                path: Some(path),
                                resolution: "absolute",
                                path2: None,
                                abs_path2: None,
                                flags: Some(if k % 4 == 0 { 0o1101 } else { 0 }),
                                mode: Some(0o644),
                                owner_uid: None,
                                owner_gid: None,
                                fd: Some(3 + (k % 20) as i32),
                                ret: Some(3),
                                kernel_path: None,
                                path_resolution: None,
                            }
                        })
                        .collect();
                    file_batch(HOST, &rows)
                }
                Table::Net => {
                    let rows: Vec<NetRow> = (0..n)
                        .map(|k| {
                            let id = pick(&mut rng, k);
                            NetRow {
                                id: Some(id),
                                event: if k % 2 == 0 { "connect" } else { "accept" },
                                syscall: Some(if k % 2 == 0 { "connect" } else { "accept4" }),
                                fd: Some(5),
                                family: Some("inet".into()),
                                protocol: Some("tcp"),
                                local_addr: Some("10.88.0.5".into()),
                                local_port: Some((30000 + k % 30000) as u16),
                                remote_addr: Some(format!("10.88.{}.{}", k % 4, k % 250)),
                                remote_port: Some(443),
                                ret: Some(0),
                                ..Default::default()
                            }
                        })
                        .collect();
                    net_batch(HOST, &rows)
                }
                _ => {
                    let mut b = SyscallBuilder::default();
                    let mut containers = StringBuilder::with_capacity(n, n * 64);
                    for k in 0..n {
                        let id = pick(&mut rng, k);
                        let (nr, _) = *rng.pick(SYSCALLS);
                        let comm = b.intern_comm(&id.comm);
                        b.append(SyscallRow {
                            time_micros: id.time.timestamp_micros(),
                            ktime_ns: id.ktime_ns,
                            pid: id.pid,
                            tid: id.tid,
                            comm,
                            cgroup_id: id.cgroup_id,
                            nr,
                            ret: (k % 4096) as i64,
                            ktime_slack_ns: None,
                            source: 0,
                        });
                        containers.append_option(id.container_id.as_deref());
                    }
                    let batch = b.finish(HOST, |nr| {
                        SYSCALLS
                            .iter()
                            .find(|(n, _)| *n == nr)
                            .map(|(_, name)| *name)
                    });
                    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
                    let at = batch.schema().index_of("container_id")?;
                    columns[at] = Arc::new(containers.finish());
                    RecordBatch::try_new(batch.schema(), columns)?
                }
            };
            seq += 1;
            store.seal(
                &Partition::for_time(table, hour_start, HOST),
                &batch,
                run_id,
                seq,
            )?;
            done += n as u64;
        }
    }
    // One container row per live container per hour, as the recorder writes per interval.
    let rows: Vec<ContainerRow> = alive
        .iter()
        .map(|i| {
            let (first, last) = lifetime(*i, g.hours);
            ContainerRow {
                time: hour_start + Duration::minutes(59),
                container_id: container_id(*i),
                name: Some(format!("svc-{i}")),
                runtime: "runc".into(),
                image: Some(format!("registry.example/svc-{}:1.{}", i % 17, i % 5)),
                cgroup_id: Some(10_000 + *i as u64),
                cgroup_path: format!("/system.slice/svc-{i}"),
                init_pid: Some(1000 + *i as i32 * 100),
                netns_inode: Some(4_026_532_000 + *i as u64),
                host_network: false,
                created: None,
                pod_uid: None,
                pod_name: None,
                pod_namespace: None,
                first_seen: start() + Duration::hours(first as i64),
                last_seen: start() + Duration::hours(last as i64) - Duration::seconds(1),
                events: 1,
            }
        })
        .collect();
    store.seal(
        &Partition::for_time(Table::Container, hour_start, HOST),
        &container_batch(HOST, &rows),
        run_id,
        seq + 1,
    )?;
    Ok(())
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            total += if meta.is_dir() {
                dir_size(&e.path())
            } else {
                meta.len()
            };
        }
    }
    total
}

/// One run of a `quarry` command.
pub(crate) struct Run {
    pub(crate) secs: f64,
    /// Bytes it wrote to standard output.
    bytes: u64,
    /// Its peak resident memory.
    peak_rss: u64,
}

/// Runs the `quarry` binary next to this one, counting (not keeping) what it prints.
pub(crate) fn time_quarry(args: &[&str]) -> anyhow::Result<Run> {
    time_quarry_with(args, &[])
}

/// [`time_quarry`] with `env` added to the child's environment.
pub(crate) fn time_quarry_with(args: &[&str], env: &[(&str, String)]) -> anyhow::Result<Run> {
    use std::io::Read;
    let exe = std::env::current_exe()?.with_file_name("quarry");
    let started = Instant::now();
    let mut child = Command::new(&exe)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", exe.display()))?;
    let mut stderr = child.stderr.take().context("stderr is piped")?;
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let bytes = std::io::copy(
        &mut child.stdout.take().context("stdout is piped")?,
        &mut std::io::sink(),
    )?;
    // wait4 gives this child's own peak RSS (getrusage of the children is the largest of all).
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pid is our unwaited child; status and usage are valid for writes.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    if pid < 0 {
        return Err(std::io::Error::last_os_error()).context("waiting for quarry");
    }
    let secs = started.elapsed().as_secs_f64();
    let errors = errors.join().unwrap_or_default();
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    if code != Some(0) && code != Some(4) {
        bail!("quarry {args:?} failed ({code:?}): {errors}");
    }
    Ok(Run {
        secs,
        bytes,
        // ru_maxrss is in KiB on Linux.
        peak_rss: usage.ru_maxrss as u64 * 1024,
    })
}

/// The median of `v` (the upper one of an even count).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn bench(args: &[&str]) -> anyhow::Result<()> {
    let mut store = None;
    let mut runs = 5;
    let mut json = false;
    let mut only: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--store" => store = it.next().map(PathBuf::from),
            "--runs" => runs = it.next().context("--runs N")?.parse()?,
            "--format" => json = it.next() == Some(&"json"),
            "--only" => only = Some(it.next().context("--only WORD")?.to_string()),
            other => bail!("unknown argument {other}"),
        }
    }
    let store = store.context("--store DIR (made by `quarry-bench query generate`)")?;
    let s = store.to_str().context("store path must be UTF-8")?;
    // A container that lives a middle-sized span, and one of the longest-lived.
    let short = container_id(3);
    let long = container_id(11);
    let results = std::cell::RefCell::new(serde_json::Map::new());
    let measure = |name: &str, args: Vec<&str>| -> anyhow::Result<()> {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            return Ok(());
        }
        let mut times = Vec::new();
        let mut bytes = 0;
        let mut peak = 0;
        for _ in 0..runs {
            let run = time_quarry(&args)?;
            times.push(run.secs);
            bytes = run.bytes;
            peak = peak.max(run.peak_rss);
        }
        let first = times[0];
        let med = median(times.clone());
        let mib = peak as f64 / (1 << 20) as f64;
        if !json {
            println!(
                "{name:<44} first {first:>7.3}s  median {med:>7.3}s  peak RSS {mib:>7.1} MiB  \
                 ({bytes} bytes out)"
            );
        }
        results.borrow_mut().insert(
            name.into(),
            serde_json::json!({"first_s": first, "median_s": med, "runs": runs,
                               "output_bytes": bytes, "peak_rss_bytes": peak}),
        );
        Ok(())
    };
    measure(
        "timeline (container alive 9 of 24h)",
        vec!["timeline", &short, "--store", s, "--format", "json"],
    )?;
    measure(
        "timeline (container alive 17 of 24h)",
        vec!["timeline", &long, "--store", s, "--format", "json"],
    )?;
    measure(
        "hunt, all rules, whole store",
        vec!["hunt", "--store", s, "--format", "json"],
    )?;
    if !json
        && only
            .as_deref()
            .is_none_or(|o| "hunt, all rules, whole store".contains(o))
    {
        println!("{:<44} (target on 100 M rows: <= 15 s, <= 1024 MiB)", "");
    }
    measure(
        "hunt, all rules, last 6 hours of the store",
        vec![
            "hunt",
            "--since",
            "2026-10-01T18:00:00Z",
            "--store",
            s,
            "--format",
            "json",
        ],
    )?;
    measure(
        "hunt, all rules, one container",
        vec![
            "hunt",
            "--container",
            &short,
            "--store",
            s,
            "--format",
            "json",
        ],
    )?;
    let count = "SELECT count(*) FROM syscall";
    measure(
        "sql: count(*) over the syscall table",
        vec!["sql", count, "--store", s, "--format", "csv"],
    )?;

    // DuckDB on the same files: the timeline's scans (the container's process, file and
    // net rows, ordered) and the same count.
    let script = format!(
        r#"
import duckdb, time, json, sys
store = {store:?}
cid = {short:?}
con = duckdb.connect()
def t(sql):
    times = []
    for _ in range({runs}):
        s = time.perf_counter(); con.execute(sql).to_arrow_table(); times.append(time.perf_counter() - s)
    return times
def src(table):
    return f"read_parquet('{{store}}/{{table}}/**/*.parquet', hive_partitioning=true)"
timeline = " UNION ALL ".join(
    f"SELECT time, ktime_ns, pid, comm FROM {{src(t)}} WHERE container_id = '{{cid}}'" for t in ("process", "file", "net")
) + " ORDER BY time, ktime_ns"
out = {{"duckdb: timeline scans (9 of 24h)": t(timeline), "duckdb count(*) syscall": t(f"SELECT count(*) FROM {{src('syscall')}}")}}
print(json.dumps(out))
"#
    );
    // With --only, DuckDB is left out too.
    let out = match &only {
        None => Some(Command::new(python()).arg("-c").arg(&script).output()?),
        Some(_) => None,
    };
    if let Some(out) = out.as_ref().filter(|o| o.status.success()) {
        let duck: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&out.stdout)?;
        for (name, times) in duck {
            let times: Vec<f64> = serde_json::from_value(times)?;
            let (first, med) = (times[0], median(times.clone()));
            if !json {
                println!("{name:<44} first {first:>7.3}s  median {med:>7.3}s");
            }
            results.borrow_mut().insert(
                name,
                serde_json::json!({"first_s": first, "median_s": med, "runs": runs}),
            );
        }
    } else if let Some(out) = out {
        eprintln!(
            "duckdb comparison skipped: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The same timeline scans through quarry sql, for the like-for-like comparison.
    let same = format!(
        "SELECT time, ktime_ns, pid, comm FROM process WHERE container_id = '{short}' UNION ALL \
         SELECT time, ktime_ns, pid, comm FROM file WHERE container_id = '{short}' UNION ALL \
         SELECT time, ktime_ns, pid, comm FROM net WHERE container_id = '{short}' ORDER BY time, ktime_ns"
    );
    measure(
        "quarry sql: the same timeline scans",
        vec!["sql", &same, "--store", s, "--format", "csv"],
    )?;
    if json {
        println!("{}", serde_json::Value::Object(results.into_inner()));
    }
    Ok(())
}

/// The Python that has DuckDB: $QUARRY_PYTHON, else the checkout's virtual environment where
/// scripts/setup installs the pinned test readers (the benchmark is run from a checkout), else
/// whatever `python3` is on PATH.
fn python() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("QUARRY_PYTHON") {
        return p.into();
    }
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python3");
    if venv.is_file() {
        venv
    } else {
        "python3".into()
    }
}
