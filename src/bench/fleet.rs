//! `quarry-bench fleet`: the same queries over one store on the local engine and on a Ballista
//! cluster (`quarry fleet`) with 1 and 2 executors, each a separate process on 127.0.0.1.
//!
//! ```text
//! quarry-bench fleet --store DIR [--runs 3] [--tasks 2] [--format json]
//! ```
//!
//! DIR is a store from `quarry-bench query generate` (one big store standing in for the
//! segments of N hosts). Each timing is one whole `quarry sql` process, as a user would run it:
//! for Ballista that includes connecting, registering the store's segments and the client-side
//! hash check of every segment the query reads. The cluster is started once per executor
//! count and stopped (SIGTERM) afterwards. Timings are reported, never asserted.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::query_bench::{median, time_quarry};

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

/// Starts `quarry fleet ARGS` and waits for a line containing `ready` on stdout or stderr;
/// returns the server and that line.
fn start(args: &[&str], ready: &str) -> anyhow::Result<(Server, String)> {
    let exe = std::env::current_exe()?.with_file_name("quarry");
    let mut child = Command::new(exe)
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
    let mut runs = 3;
    let mut tasks = 2;
    let mut json = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match *a {
            "--store" => store = it.next().map(PathBuf::from),
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

    // results[query] = (local, 1 executor, 2 executors) medians in seconds.
    let mut results: Vec<(&str, [f64; 3])> = QUERIES.iter().map(|(n, _)| (*n, [0.0; 3])).collect();
    for (i, (_, q)) in QUERIES.iter().enumerate() {
        let secs = (0..runs)
            .map(|_| time_quarry(&["sql", "--store", &s, "--format", "csv", q]).map(|r| r.secs))
            .collect::<anyhow::Result<Vec<_>>>()?;
        results[i].1[0] = median(secs);
    }
    for executors in [1usize, 2] {
        let (_scheduler, line) = start(&["scheduler", "--bind", "127.0.0.1:0"], "listening on ")?;
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
            members.push(start(&args, "Connected to scheduler")?.0);
        }
        let url = format!("df://{addr}");
        for (i, (_, q)) in QUERIES.iter().enumerate() {
            let args = [
                "sql",
                "--store",
                &s,
                "--engine",
                "ballista",
                "--scheduler",
                &url,
                "--format",
                "csv",
                q,
            ];
            // One warm-up: the first job of a fresh cluster also starts its sessions.
            time_quarry(&args)?;
            let secs = (0..runs)
                .map(|_| time_quarry(&args).map(|r| r.secs))
                .collect::<anyhow::Result<Vec<_>>>()?;
            results[i].1[executors] = median(secs);
        }
    }
    if json {
        let rows: Vec<_> = results
            .iter()
            .map(|(name, [l, one, two])| {
                serde_json::json!({"query": name, "local_s": l, "ballista_1_s": one,
                                   "ballista_2_s": two, "tasks_per_executor": tasks})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "{:<10} {:>9} {:>14} {:>14}   (median of {runs}, s; {tasks} tasks per executor)",
            "query", "local", "ballista x1", "ballista x2"
        );
        for (name, [l, one, two]) in &results {
            println!("{name:<10} {l:>9.3} {one:>14.3} {two:>14.3}");
        }
    }
    Ok(())
}
