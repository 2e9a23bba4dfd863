//! `quarry-bench fleet`: the same queries over one store on the local engine and on a Ballista
//! cluster (`quarry fleet`) with 1 and 2 executors, each a separate process on 127.0.0.1.
//!
//! ```text
//! quarry-bench fleet --store DIR [--hosts N] [--runs 3] [--tasks 2] [--format json]
//! ```
//!
//! DIR is a store from `quarry-bench query generate` (one big store standing in for the
//! segments of many hosts). With `--hosts N` a SeaweedFS server on 127.0.0.1 (as the upload
//! bench starts it) gets DIR uploaded under N host names, a fleet bucket of N simulated nodes,
//! and every engine also reads that (N times the rows of DIR). Each timing is one whole `quarry sql` process, as a
//! user would run it: for Ballista that includes connecting, registering the segments and,
//! for a store, the client-side hash check of every segment the query reads (a bucket's are
//! checked by the executors). The cluster is started once per executor count and stopped
//! (SIGTERM) afterwards. Timings are reported, never asserted.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::query_bench::{median, time_quarry_with};
use crate::upload_bench::weed::Weed;

const QUERIES: &[(&str, &str)] = &[
    ("count", "SELECT count(*) FROM process"),
    (
        "group by",
        "SELECT container_id, event, count(*) FROM process GROUP BY container_id, event",
    ),
    (
        "join",
        "SELECT c.name, count(*) FROM file f JOIN (SELECT DISTINCT container_id, name FROM \
         container) c ON f.container_id = c.container_id GROUP BY c.name",
    ),
    ("one hour", "SELECT count(*) FROM net WHERE hour = '05'"),
];

/// A `quarry fleet` server, stopped with SIGTERM and reaped on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own unwaited child.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        for _ in 0..100 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `quarry fleet ARGS` (with `env` added) and waits for a line containing `ready` on
/// stdout or stderr; returns the server and that line.
fn start(args: &[&str], ready: &str, env: &[(&str, String)]) -> anyhow::Result<(Server, String)> {
    let exe = std::env::current_exe()?.with_file_name("quarry");
    let mut child = Command::new(exe)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .arg("fleet")
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting quarry fleet")?;
    let (tx, rx) = mpsc::channel();
    for out in [
        Box::new(child.stdout.take().context("stdout")?) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().context("stderr")?),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let server = Server(child);
    loop {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(line) if line.contains(ready) => return Ok((server, line)),
            Ok(_) => {}
            Err(_) => bail!("quarry fleet {args:?} did not print {ready:?}"),
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub fn run(args: &[&str]) -> anyhow::Result<()> {
    let mut store = None;
    let mut hosts = 0usize;
    let mut runs = 3;
    let mut tasks = 2;
    let mut json = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--store" => store = it.next().map(PathBuf::from),
            "--hosts" => hosts = it.next().context("--hosts N")?.parse()?,
            "--runs" => runs = it.next().context("--runs N")?.parse()?,
            "--tasks" => tasks = it.next().context("--tasks N")?.parse()?,
            "--format" => json = it.next() == Some(&"json"),
            other => bail!("unknown argument {other}"),
        }
    }
    let store = store.context("--store DIR (made by `quarry-bench query generate`)")?;
    let s = store
        .to_str()
        .context("store path must be UTF-8")?
        .to_string();
    let tasks = tasks.to_string();
    // Where each engine reads: the store, and the bucket of `hosts` nodes when asked.
    let mut sources = vec![("store", s.clone())];
    let server = (hosts > 0).then(|| Weed::start("bench-fleet"));
    let env = server.as_ref().map(|w| w.env()).unwrap_or_default();
    if let Some(server) = &server {
        let url = server.url("fleet");
        let bucket = quarry_bucket::Bucket::from_env_with(
            &quarry_bucket::BucketUrl::parse(&url)?,
            &server.env(),
        )?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let local = quarry_store::Store::at(&store);
        for i in 0..hosts {
            let host = format!("node-{i}");
            let report =
                runtime.block_on(quarry_bucket::upload_store(&local, &bucket, &host, &|_| {}))?;
            anyhow::ensure!(report.is_ok(), "upload failed: {:?}", report.problems);
            eprintln!("uploaded {} rows as {host}", report.rows);
        }
        sources.push(("bucket", url));
    }

    // columns: (label, median seconds per query)
    let mut columns: Vec<(String, Vec<f64>)> = Vec::new();
    // The median of `runs` whole `quarry ARGS` processes, after one warm-up (a bucket's first
    // read fills its server's cache; a fresh cluster's first job starts its sessions and, over
    // a bucket, the executors' checked copies).
    let timed = |args: &[&str]| -> anyhow::Result<f64> {
        time_quarry_with(args, &env)?;
        let times = (0..runs)
            .map(|_| time_quarry_with(args, &env).map(|r| r.secs))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(median(times))
    };
    for (where_, source) in &sources {
        let secs = QUERIES
            .iter()
            .map(|(_, q)| timed(&["sql", "--store", source, "--format", "csv", q]))
            .collect::<anyhow::Result<Vec<_>>>()?;
        columns.push((format!("local {where_}"), secs));
    }
    for executors in [1usize, 2] {
        let (_scheduler, line) = start(
            &["scheduler", "--bind", "127.0.0.1:0"],
            "listening on ",
            &env,
        )?;
        let addr = line.trim_start_matches("listening on ").trim().to_string();
        let mut members = Vec::new();
        for _ in 0..executors {
            let bind = format!("127.0.0.1:{}", free_port()?);
            let args = [
                "executor",
                "--scheduler",
                &addr,
                "--bind",
                &bind,
                "--concurrent-tasks",
                &tasks,
            ];
            members.push(start(&args, "Connected to scheduler", &env)?.0);
        }
        let url = format!("df://{addr}");
        for (where_, source) in &sources {
            let secs = QUERIES
                .iter()
                .map(|(_, q)| {
                    timed(&[
                        "sql",
                        "--store",
                        source,
                        "--engine",
                        "ballista",
                        "--scheduler",
                        &url,
                        "--format",
                        "csv",
                        q,
                    ])
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            columns.push((format!("ballista x{executors} {where_}"), secs));
        }
    }
    if json {
        let rows: Vec<_> = QUERIES
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                let mut row = serde_json::Map::new();
                row.insert("query".into(), (*name).into());
                for (label, secs) in &columns {
                    row.insert(format!("{}_s", label.replace(' ', "_")), secs[i].into());
                }
                row.insert("tasks_per_executor".into(), tasks.clone().into());
                serde_json::Value::Object(row)
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{:<10}", "query");
        for (label, _) in &columns {
            print!(" {label:>18}");
        }
        println!("   (median of {runs}, s; {tasks} tasks per executor)");
        for (i, (name, _)) in QUERIES.iter().enumerate() {
            print!("{name:<10}");
            for (_, secs) in &columns {
                print!(" {:>18.3}", secs[i]);
            }
            println!();
        }
    }
    Ok(())
}
