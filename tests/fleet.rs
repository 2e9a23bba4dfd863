//! The distributed engine end to end: a Ballista scheduler and two executors, each its own
//! `quarry fleet` process on free 127.0.0.1 ports, answer the same queries over a generated
//! store, and over a fleet bucket two hosts uploaded it to (a SeaweedFS server on 127.0.0.1),
//! exactly as the local engine does; a segment altered after sealing (or in the bucket) is left
//! out by both, with a warning naming it.

// A test fails by panicking: unwrap is how it says what went wrong.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::bucket::Weed;
use common::quarry;
use object_store::ObjectStoreExt;
use quarry_bucket::{Bucket, BucketUrl};

/// A `quarry fleet` server, stopped (SIGTERM, then SIGKILL) and reaped on drop, also when
/// the test fails.
struct Server {
    child: Child,
    name: &'static str,
    lines: mpsc::Receiver<String>,
}

impl Server {
    /// A server with `weed`'s bucket environment (when given) instead of the machine's.
    fn start_in(name: &'static str, args: &[&str], weed: Option<&Weed>) -> Server {
        let mut cmd = quarry();
        if let Some(weed) = weed {
            weed.configure(&mut cmd);
        }
        let mut child = cmd
            .arg("fleet")
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting quarry fleet");
        let (tx, lines) = mpsc::channel();
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    eprintln!("[{name}] {line}");
                    let _ = tx.send(line);
                }
            });
        }
        Server { child, name, lines }
    }

    /// The first line containing `needle`; panics if the server exits first. The deadline
    /// only keeps a broken build from hanging the suite.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(300);
        while Instant::now() < deadline {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => {
                    if let Some(status) = self.child.try_wait().unwrap() {
                        panic!("{} exited ({status}) before printing {needle:?}", self.name);
                    }
                }
            }
        }
        panic!("{} never printed {needle:?}", self.name);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Generates a small store of the benchmark's shape: several containers over three hours,
/// many segments per table.
fn generate(store: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_quarry-bench"))
        .args(["query", "generate", "--store"])
        .arg(store)
        .args(["--rows", "40000", "--containers", "6", "--hours", "3"])
        .args(["--segment-rows", "3000"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "generate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `quarry sql` on `engine`: (exit code, stdout, stderr).
fn sql(store: &Path, engine: &[&str], format: &str, query: &str) -> (i32, String, String) {
    sql_in(store.as_os_str(), None, engine, format, query)
}

/// `quarry sql --store STORE` on `engine`, with `weed`'s bucket environment when given.
fn sql_in(
    store: &std::ffi::OsStr,
    weed: Option<&Weed>,
    engine: &[&str],
    format: &str,
    query: &str,
) -> (i32, String, String) {
    let mut cmd = quarry();
    if let Some(weed) = weed {
        weed.configure(&mut cmd);
    }
    let out = cmd
        .arg("sql")
        .arg("--store")
        .arg(store)
        .args(engine)
        .args(["--format", format, query])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const QUERIES: &[(&str, &str)] = &[
    ("csv", "SELECT count(*) AS n FROM process"),
    (
        "csv",
        "SELECT container_id, event, count(*) AS n FROM process \
         GROUP BY container_id, event ORDER BY container_id, event",
    ),
    // Partition pruning on the constant dt/hour columns.
    (
        "csv",
        "SELECT dt, hour, count(*) AS n, count(DISTINCT pid) AS pids FROM process \
         WHERE hour = '00' GROUP BY dt, hour ORDER BY dt, hour",
    ),
    // A join of two tables and a view.
    (
        "csv",
        "SELECT c.name, count(*) AS execs FROM execs e JOIN \
         (SELECT DISTINCT container_id, name FROM container) c \
         ON e.container_id = c.container_id GROUP BY c.name ORDER BY c.name",
    ),
    (
        "json",
        "SELECT time, source, event, summary FROM events \
         ORDER BY time, source, event, summary LIMIT 40",
    ),
    // Nothing survives pruning: the columns still come back.
    (
        "csv",
        "SELECT pid, comm FROM process WHERE dt = '1999-01-01'",
    ),
    (
        "csv",
        "SELECT program, count(*) AS n FROM execs GROUP BY program ORDER BY n DESC, program",
    ),
    // Quarry's own function (what Sigma's cidr modifier becomes) runs on the executors too.
    (
        "csv",
        "SELECT cidr_match(remote_addr, '10.88.2.0/24') AS inside, count(*) AS n FROM net \
         GROUP BY inside ORDER BY inside",
    ),
];

/// A scheduler and two executors (one and two concurrent tasks), with `weed`'s environment
/// when given, and the scheduler's `df://` URL.
fn cluster(weed: Option<&Weed>) -> (Server, Vec<Server>, String) {
    let mut scheduler =
        Server::start_in("scheduler", &["scheduler", "--bind", "127.0.0.1:0"], weed);
    let line = scheduler.wait_for("listening on ");
    let addr = line.trim_start_matches("listening on ").trim().to_string();
    let mut executors = Vec::new();
    for (i, name) in ["executor-1", "executor-2"].into_iter().enumerate() {
        let bind = format!("127.0.0.1:{}", free_port());
        let tasks = (i + 1).to_string();
        let mut e = Server::start_in(
            name,
            &[
                "executor",
                "--scheduler",
                &addr,
                "--bind",
                &bind,
                "--concurrent-tasks",
                &tasks,
            ],
            weed,
        );
        e.wait_for("Connected to scheduler");
        executors.push(e);
    }
    (scheduler, executors, format!("df://{addr}"))
}

#[test]
fn ballista_cluster_answers_like_the_local_engine() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    generate(&store);

    let (scheduler, executors, url) = cluster(None);
    let ballista = ["--engine", "ballista", "--scheduler", url.as_str()];

    for (format, query) in QUERIES {
        let (lc, local, lerr) = sql(&store, &[], format, query);
        assert_eq!(lc, 0, "local {query}: {lerr}");
        let (bc, remote, berr) = sql(&store, &ballista, format, query);
        assert_eq!(bc, 0, "ballista {query}: {berr}");
        // Some answers are a header alone (CSV) or one line (JSON): only nothing is wrong.
        assert!(!local.trim().is_empty(), "{query} returned nothing");
        assert_eq!(local, remote, "{query}");
    }

    // Read-only on the cluster too.
    let (code, _, err) = sql(&store, &ballista, "csv", "DROP TABLE process");
    assert_ne!(code, 0);
    assert!(err.contains("read-only"), "{err}");

    // A segment altered after sealing: both engines leave it out, say so, and agree.
    let victim = walk_parquet(&store.join("process"))
        .into_iter()
        .next()
        .expect("a process segment");
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&victim, bytes).unwrap();
    let q = "SELECT count(*) AS n FROM process";
    let (lc, local, lerr) = sql(&store, &[], "csv", q);
    let (bc, remote, berr) = sql(&store, &ballista, "csv", q);
    assert_eq!((lc, bc), (0, 0), "{lerr}\n{berr}");
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    assert!(lerr.contains(&name), "local did not name {name}: {lerr}");
    assert!(berr.contains(&name), "ballista did not name {name}: {berr}");
    assert_eq!(local, remote);
    drop(executors);
    drop(scheduler);
}

#[test]
fn ballista_reads_a_fleet_bucket_like_the_local_engine() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    generate(&store);
    let weed = Weed::start("fleet-ballista");
    let bucket_url = weed.url("fleet");
    // Two hosts of the fleet (the same recording, uploaded under two names).
    for host in ["node-a", "node-b"] {
        let mut cmd = quarry();
        weed.configure(&mut cmd)
            .args(["upload", "--store"])
            .arg(&store)
            .args(["--to", &bucket_url, "--host", host]);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "upload as {host}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (scheduler, executors, url) = cluster(Some(&weed));
    let ballista = ["--engine", "ballista", "--scheduler", url.as_str()];
    let on_bucket = |engine: &[&str], format: &str, query: &str| {
        sql_in(
            std::ffi::OsStr::new(&bucket_url),
            Some(&weed),
            engine,
            format,
            query,
        )
    };
    let by_host = [
        (
            "csv",
            "SELECT host, count(*) AS n FROM process GROUP BY host ORDER BY host",
        ),
        // Pruning on the host level, and the bucket's column order (host last).
        (
            "csv",
            "SELECT * FROM net WHERE host = 'node-b' ORDER BY ktime_ns, pid LIMIT 5",
        ),
    ];
    for (format, query) in QUERIES.iter().chain(by_host.iter()) {
        let (lc, local, lerr) = on_bucket(&[], format, query);
        assert_eq!(lc, 0, "local {query}: {lerr}");
        let (bc, remote, berr) = on_bucket(&ballista, format, query);
        assert_eq!(bc, 0, "ballista {query}: {berr}");
        assert!(!local.trim().is_empty(), "{query} returned nothing");
        assert_eq!(local, remote, "{query}");
    }
    let (_, per_host, _) = on_bucket(&ballista, "csv", by_host[0].1);
    let (_, whole, _) = sql(&store, &[], "csv", "SELECT count(*) AS n FROM process");
    let n = whole.lines().nth(1).unwrap();
    assert_eq!(per_host, format!("host,n\nnode-a,{n}\nnode-b,{n}\n"));

    // An object rewritten in the bucket: the executor that reads it refuses it, and both
    // engines leave it out, name it and agree.
    let bucket =
        Bucket::from_env_with(&BucketUrl::parse(&bucket_url).unwrap(), &weed.env()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let keys = rt.block_on(bucket.list("process")).unwrap();
    let victim = keys
        .iter()
        .map(|(k, _)| k.clone())
        .find(|k| k.contains("/host=node-b/"))
        .unwrap();
    rt.block_on(bucket.objects().put(
        &bucket.key(&victim),
        object_store::PutPayload::from_static(b"PAR1 forged"),
    ))
    .unwrap();
    let q = "SELECT host, count(*) AS n FROM process GROUP BY host ORDER BY host";
    // Executors that checked the object before keep decoding their checked copy (the bytes
    // the manifest vouches for), not what the bucket now holds.
    let (bc, remote, berr) = on_bucket(&ballista, "csv", q);
    assert_eq!(bc, 0, "{berr}");
    assert_eq!(remote, per_host, "{berr}");
    // A fresh cluster has no copies: the executor that reads the object refuses it.
    drop(executors);
    drop(scheduler);
    let (scheduler, executors, url) = cluster(Some(&weed));
    let ballista = ["--engine", "ballista", "--scheduler", url.as_str()];
    let (lc, local, lerr) = on_bucket(&[], "csv", q);
    let (bc, remote, berr) = on_bucket(&ballista, "csv", q);
    assert_eq!((lc, bc), (0, 0), "{lerr}\n{berr}");
    assert!(
        lerr.contains(&victim),
        "local did not name {victim}: {lerr}"
    );
    assert!(
        berr.contains(&victim),
        "ballista did not name {victim}: {berr}"
    );
    assert!(berr.contains("altered"), "{berr}");
    assert_eq!(local, remote);
    assert_ne!(
        remote, per_host,
        "the altered segment's rows are still counted"
    );
    drop(executors);
    drop(scheduler);
}

fn walk_parquet(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
