//! `quarry record --upload`: two recorders (two stores, two `--upload-host` names) ship to one
//! real S3-compatible server (`weed mini` on 127.0.0.1, tests/common/bucket.rs), which is
//! killed mid-run and started again on the same data and ports. Recording goes on while the
//! bucket is away, the backlog shows in `quarry status` and the metrics, the upload catches up
//! after the restart, and what is sealed last reaches the bucket at exit. Then every local
//! segment of both stores is in the bucket with its SHA-256, `quarry sql --store s3://...`
//! counts both hosts' rows, and `quarry verify --store s3://...` passes until an object is
//! altered. Needs root (the recorders load eBPF programs).

// A test fails by panicking: unwrap is how it says what went wrong.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::bucket::Weed;
use common::*;
use object_store::{ObjectStoreExt, PutPayload};
use quarry_bucket::{Bucket, BucketUrl};
use quarry_recorder::status::StatusFile;
use quarry_recorder::upload::UploadStatus;
use quarry_store::Store;
use quarry_store::layout::{bucket_manifest_dir, bucket_segment_key};
use quarry_store::manifest::{Manifest, ManifestLog};

fn client(weed: &Weed, url: &str) -> Bucket {
    Bucket::from_env_with(&BucketUrl::parse(url).unwrap(), &weed.env()).unwrap()
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// The upload part of the recorder's status file (None until the first status is written).
fn upload_status(store: &Path) -> Option<UploadStatus> {
    StatusFile::read(&Store::at(store)).ok()?.upload
}

/// Polls `cond` until it holds; a deadline only so that a broken recorder fails the test
/// instead of hanging it (not a threshold on how fast anything is).
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(240);
    while !cond() {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Runs a few short processes whose argv carries `marker`, for the recorders to see.
fn run_marked(marker: &str) {
    for _ in 0..3 {
        let status = Command::new("/bin/sh")
            .args(["-c", "true", marker])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The metrics endpoint's text.
fn scrape(port: u16) -> String {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).unwrap();
    body
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every segment the store lists is in the bucket under `host`, byte for byte (same size and
/// SHA-256), and the host's manifest chunks in the bucket put together are the store's whole
/// manifest, each entry in the bucket once (however many passes wrote chunks). Returns how
/// many segments.
fn assert_store_in_bucket(bucket: &Bucket, store: &Path, host: &str) -> usize {
    let manifest = std::fs::read(Store::at(store).manifest_path()).unwrap();
    let local = ManifestLog::parse(&manifest);
    let together = block_on(quarry_bucket::manifest::host_manifest(bucket, host)).unwrap();
    assert!(together.is_ok(), "{host}: {:?}", together.problems);
    assert_eq!(
        together.data, manifest,
        "{host}: the chunks are the local chain"
    );
    let chunks = block_on(bucket.list(&bucket_manifest_dir(host))).unwrap();
    let chunk_bytes: u64 = chunks.iter().map(|(_, size)| size).sum();
    assert_eq!(chunk_bytes, manifest.len() as u64, "{host}: {chunks:?}");
    let live = local.live();
    for entry in &live {
        let key = bucket_segment_key(&entry.body.path, host).unwrap();
        let (sha, bytes) = block_on(bucket.hash(&key))
            .unwrap()
            .unwrap_or_else(|| panic!("{key} of {} is not in the bucket", store.display()));
        assert_eq!(
            (sha.as_str(), bytes),
            (entry.body.sha256.as_str(), entry.body.bytes),
            "{key}"
        );
    }
    live.len()
}

#[test]
fn two_recorders_upload_through_a_bucket_restart_and_nothing_is_lost() {
    if !require_root() {
        return;
    }
    let mut weed = Weed::start("u22-fleet");
    let dir = tempfile::tempdir().unwrap();
    let url = weed.url("fleet");
    let hosts = ["u22-a", "u22-b"];
    let stores: Vec<PathBuf> = hosts.iter().map(|h| dir.path().join(h)).collect();
    let metrics = free_port();
    let metrics_addr = format!("127.0.0.1:{metrics}");
    let mut recorders: Vec<RecorderProcess> = hosts
        .iter()
        .zip(&stores)
        .enumerate()
        .map(|(i, (host, store))| {
            let mut cmd = quarry();
            weed.configure(&mut cmd);
            cmd.arg("record")
                .arg("--store")
                .arg(store)
                .args(["--upload", &url, "--upload-host", host])
                .args(["--upload-interval", "1s", "--seal-interval", "2s"])
                .args(["--no-detect", "--no-baseline", "--no-posture", "--quiet"])
                .args(["--format", "json"]);
            if i == 0 {
                cmd.args(["--metrics", &metrics_addr]);
            }
            RecorderProcess::spawn(cmd)
        })
        .collect();
    let all = |what: &str, cond: &dyn Fn(&UploadStatus) -> bool| {
        wait_until(what, || {
            stores
                .iter()
                .all(|s| upload_status(s).is_some_and(|u| cond(&u)))
        })
    };

    // The bucket answers: segments go up.
    let before = marker("u22-before");
    run_marked(&before);
    all("both recorders upload", &|u| {
        u.uploaded_segments > 0 && u.last_success.is_some()
    });
    let served = scrape(metrics);
    assert!(
        served.contains("quarry_upload_segments_total")
            && served.contains("quarry_upload_manifest_bytes_total"),
        "the metrics serve the upload: {served}"
    );

    // The bucket goes away: recording goes on, the backlog grows and is shown.
    weed.stop();
    let sealed_at_stop: Vec<u64> = stores
        .iter()
        .map(|s| StatusFile::read(&Store::at(s)).unwrap().segments_sealed)
        .collect();
    let during = marker("u22-during");
    run_marked(&during);
    all("both uploads fail and keep a backlog", &|u| {
        u.last_error.is_some() && u.pending_segments > 0 && u.failures_in_a_row > 0
    });
    for (store, at_stop) in stores.iter().zip(&sealed_at_stop) {
        wait_until("sealing goes on while the bucket is away", || {
            StatusFile::read(&Store::at(store)).unwrap().segments_sealed > *at_stop
        });
    }
    let status = quarry()
        .args(["status", "--store"])
        .arg(&stores[0])
        .output()
        .unwrap();
    let text = stdout(&status);
    assert!(
        text.contains(&format!("upload to {url} as host u22-a"))
            && text.contains("upload failing")
            && text.contains("backlog: "),
        "{text}"
    );
    let scraped = scrape(metrics);
    let backlog: u64 = scraped
        .lines()
        .find_map(|l| l.strip_prefix("quarry_upload_backlog_segments "))
        .unwrap_or_else(|| panic!("{scraped}"))
        .parse()
        .unwrap();
    assert!(backlog > 0, "{scraped}");

    // Back on the same data and ports: the retries catch up.
    weed.restart();
    all("both uploads catch up after the restart", &|u| {
        u.last_error.is_none() && u.pending_segments == 0 && !u.manifest_behind
    });

    // What is sealed at exit goes up in the exit's last attempt.
    let after = marker("u22-after");
    run_marked(&after);
    let mut summaries = Vec::new();
    for rec in recorders.drain(..) {
        let out = rec.stop_with(nix::sys::signal::Signal::SIGINT);
        assert!(
            out.status.success(),
            "{}\n{}",
            stdout(&out),
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)));
        summaries.push(summary);
    }
    for (summary, host) in summaries.iter().zip(hosts) {
        let u: UploadStatus = serde_json::from_value(summary["upload"].clone()).unwrap();
        assert_eq!(u.host, host);
        assert_eq!(u.to, url);
        assert!(u.is_caught_up(), "{u:?}");
        assert!(u.failed_passes > 0, "the outage was seen: {u:?}");
        assert_eq!(u.last_error, None);
    }

    // Nothing lost: every local segment of both stores is in the bucket, same hash.
    let bucket = client(&weed, &url);
    let mut segments = 0;
    for (store, host) in stores.iter().zip(hosts) {
        segments += assert_store_in_bucket(&bucket, store, host);
    }

    // The fleet's rows: each host's marked processes, as many in the bucket as in its store.
    let sql = |store: &str, query: &str| {
        let mut cmd = quarry();
        weed.configure(&mut cmd)
            .args(["sql", "--store", store, "--format", "csv", query]);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{query}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout(&out)
    };
    for m in [&before, &during, &after] {
        let query = format!(
            "SELECT host, count(*) AS n FROM process WHERE event = 'exec' AND \
             array_to_string(argv, ' ') LIKE '%{m}%' GROUP BY host ORDER BY host"
        );
        let fleet = sql(&url, &query);
        let mut expected = String::from("host,n\n");
        for (store, host) in stores.iter().zip(hosts) {
            let local = sql(
                store.to_str().unwrap(),
                &format!(
                    "SELECT count(*) AS n FROM process WHERE event = 'exec' AND \
                     array_to_string(argv, ' ') LIKE '%{m}%'"
                ),
            );
            let n: u64 = local.lines().nth(1).unwrap().parse().unwrap();
            assert!(n >= 3, "{} recorded its marked processes: {local}", host);
            expected.push_str(&format!("{host},{n}\n"));
        }
        assert_eq!(fleet, expected, "{m}");
    }

    let verify = |url: &str| {
        let mut cmd = quarry();
        weed.configure(&mut cmd)
            .args(["verify", "--store", url, "--format", "json"]);
        cmd.output().unwrap()
    };
    let verified = verify(&url);
    assert_eq!(verified.status.code(), Some(0), "{}", stdout(&verified));
    let report: serde_json::Value = serde_json::from_slice(&verified.stdout).unwrap();
    assert_eq!(report["hosts"].as_array().unwrap().len(), 2);
    assert_eq!(report["segments_verified"], segments as u64);

    // Someone alters one of u22-b's objects: verify fails and names it.
    let local = Manifest::new(Store::at(&stores[1]).manifest_path())
        .read()
        .unwrap();
    let victim = bucket_segment_key(&local.live()[0].body.path, "u22-b").unwrap();
    block_on(bucket.objects().put(
        &bucket.key(&victim),
        PutPayload::from_static(b"PAR1 altered by u22"),
    ))
    .unwrap();
    let mut cmd = quarry();
    weed.configure(&mut cmd).args(["verify", "--store", &url]);
    let failed = cmd.output().unwrap();
    let text = stdout(&failed);
    assert_eq!(failed.status.code(), Some(3), "{text}");
    assert!(
        text.contains(&format!("altered segment: {victim}")),
        "{text}"
    );
}

#[test]
fn a_bucket_away_at_exit_leaves_the_backlog_in_the_store_and_quarry_upload_ships_it_later() {
    if !require_root() {
        return;
    }
    let mut weed = Weed::start("u22-exit");
    let dir = tempfile::tempdir().unwrap();
    let url = weed.url("fleet");
    let store = dir.path().join("u22-c");
    let mut cmd = quarry();
    weed.configure(&mut cmd);
    cmd.arg("record")
        .arg("--store")
        .arg(&store)
        .args(["--upload", &url, "--upload-host", "u22-c"])
        .args(["--upload-interval", "1s", "--seal-interval", "2s"])
        // Long enough that only the second signal can end the last attempt.
        .args(["--upload-drain", "1h"])
        .args(["--no-detect", "--no-baseline", "--no-posture", "--quiet"])
        .args(["--format", "json"]);
    let rec = RecorderProcess::spawn(cmd);
    wait_until("the upload works", || {
        upload_status(&store).is_some_and(|u| u.last_success.is_some())
    });
    weed.stop();
    let marked = marker("u22-exit");
    run_marked(&marked);
    wait_until("the upload fails with a backlog", || {
        upload_status(&store).is_some_and(|u| u.last_error.is_some() && u.pending_segments > 0)
    });

    // Stop: the last attempt starts and cannot succeed; a second signal ends it.
    let (child, lines) = rec.into_child();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    // Reaped below; killed if the test fails before.
    struct Reap(Option<std::process::Child>);
    impl Drop for Reap {
        fn drop(&mut self) {
            if let Some(mut c) = self.0.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let mut child = Reap(Some(child));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let mut stderr = Vec::new();
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(240))
            .expect("the recorder says it ships the rest");
        let last = line.starts_with("quarry: shipping the rest to ");
        stderr.push(line);
        if last {
            break;
        }
    }
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.0.take().unwrap().wait_with_output().unwrap();
    stderr.extend(lines.try_iter());
    let stderr = stderr.join("\n");
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("no more upload attempts") && stderr.contains("the bucket is behind"),
        "{stderr}"
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let u: UploadStatus = serde_json::from_value(summary["upload"].clone()).unwrap();
    assert!(!u.is_caught_up() && u.pending_segments > 0, "{u:?}");

    // The backlog waited in the store: once the bucket is back, `quarry upload` ships it.
    weed.restart();
    let mut cmd = quarry();
    weed.configure(&mut cmd)
        .args(["upload", "--store"])
        .arg(&store)
        .args(["--to", &url, "--host", "u22-c", "--format", "json"]);
    let up = cmd.output().unwrap();
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&up.stdout).unwrap();
    assert_eq!(report["pending"], 0, "{report}");
    assert!(
        report["uploaded"].as_u64().unwrap() >= u.pending_segments,
        "{report}"
    );
    let bucket = client(&weed, &url);
    let local = Manifest::new(Store::at(&store).manifest_path())
        .read()
        .unwrap();
    // Every segment the recorder sealed (all but `quarry upload`'s own action row, sealed
    // after its manifest chunk) is there with its hash.
    for entry in &local.live()[..local.live().len() - 1] {
        let key = bucket_segment_key(&entry.body.path, "u22-c").unwrap();
        let (sha, _) = block_on(bucket.hash(&key)).unwrap().expect(&key);
        assert_eq!(sha, entry.body.sha256, "{key}");
    }
    let mut cmd = quarry();
    weed.configure(&mut cmd)
        .args(["sql", "--store", &url, "--format", "csv"])
        .arg(format!(
            "SELECT count(*) AS n FROM process WHERE event = 'exec' AND \
         array_to_string(argv, ' ') LIKE '%{marked}%'"
        ));
    let out = cmd.output().unwrap();
    let n: u64 = stdout(&out).lines().nth(1).unwrap().parse().unwrap();
    assert!(
        n >= 3,
        "the rows sealed while the bucket was away: {}",
        stdout(&out)
    );
}
