//! The fleet's bucket: `quarry upload` ships stores of two hosts to one real S3-compatible
//! server (`weed mini` on 127.0.0.1, see tests/common/bucket.rs), create-only and hash-checked,
//! and `quarry verify --store s3://...` checks every host's chain and object. Real Parquet,
//! real manifests, a real server; no root needed.

// A test fails by panicking: unwrap is how it says what went wrong.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use common::bucket::Weed;
use common::*;
use object_store::{ObjectStoreExt, PutPayload};
use quarry_bucket::{Bucket, BucketUrl};
use quarry_store::layout::{bucket_manifest_dir, bucket_manifest_key, bucket_segment_key};
use quarry_store::manifest::ManifestLog;
use quarry_store::schema::{
    ContainerRow, ProcessEvent, ProcessRow, RowIdentity, container_batch, process_batch,
};
use quarry_store::{Partition, Store, Table};

/// A store whose segments say `host`, with `segments` process segments of 40 rows in two
/// hours (of the host, or of `container`).
fn store_of(root: &Path, host: &str, segments: u64, container: Option<&str>) -> Store {
    let store = Store::create(root).unwrap();
    for seq in 0..segments {
        let time = Utc
            .with_ymd_and_hms(2026, 11, 28, 10 + (seq % 2) as u32, 5, seq as u32)
            .unwrap();
        let rows: Vec<ProcessRow> = (0..40)
            .map(|pid| ProcessRow {
                id: RowIdentity {
                    time,
                    ktime_ns: 1_000 + pid as u64,
                    pid,
                    tid: pid,
                    comm: format!("w-{host}"),
                    cgroup_id: 7,
                    container_id: container.map(str::to_string),
                },
                ppid: Some(1),
                start_ns: Some(10),
                parent_start_ns: Some(1),
                event: ProcessEvent::Exit {
                    exit_code: Some(0),
                    signal: None,
                    core_dumped: false,
                },
            })
            .collect();
        let partition = Partition::for_time(Table::Process, time, host);
        store
            .seal(&partition, &process_batch(host, &rows), 1, seq)
            .unwrap();
    }
    store
}

fn run(weed: &Weed, args: &[&str]) -> Output {
    let mut cmd = quarry();
    weed.configure(&mut cmd).args(args);
    cmd.output().unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn client(weed: &Weed, url: &str) -> Bucket {
    let mut builder = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(&weed.bucket)
        .with_allow_http(true);
    for (k, v) in weed.env() {
        builder = builder.with_config(k.to_ascii_lowercase().parse().unwrap(), v);
    }
    Bucket::with_objects(
        BucketUrl::parse(url).unwrap(),
        Arc::new(builder.build().unwrap()),
    )
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// The host's manifest chunks in the bucket put together are the store's manifest but its
/// last entry (the upload's own action row is sealed after the chunk), each entry in the
/// bucket once; every segment of it is there, byte for byte (same SHA-256). Returns how many.
fn assert_all_in_bucket(bucket: &Bucket, store: &Store, host: &str) -> usize {
    let local = std::fs::read(store.manifest_path()).unwrap();
    let local_entries = ManifestLog::parse(&local).entries;
    let together = block_on(quarry_bucket::manifest::host_manifest(bucket, host)).unwrap();
    assert!(together.is_ok(), "{:?}", together.problems);
    assert_eq!(together.entries, local_entries.len() as u64 - 1);
    assert!(
        local.starts_with(&together.data),
        "the chunks are the local chain"
    );
    let chunk_bytes: u64 = block_on(bucket.list(&bucket_manifest_dir(host)))
        .unwrap()
        .iter()
        .map(|(_, size)| size)
        .sum();
    assert_eq!(chunk_bytes, together.data.len() as u64, "each entry once");
    let shipped = ManifestLog::parse(&together.data);
    let live = shipped.live();
    for entry in &live {
        let key = bucket_segment_key(&entry.body.path, host).unwrap();
        let (sha, bytes) = block_on(bucket.hash(&key)).unwrap().expect(&key);
        assert_eq!(
            (sha.as_str(), bytes),
            (entry.body.sha256.as_str(), entry.body.bytes)
        );
    }
    live.len()
}

#[test]
fn two_hosts_upload_to_one_bucket_and_it_verifies_until_an_object_is_altered() {
    let weed = Weed::start("f22-fleet");
    assert!(weed.data_dir().starts_with(weed.dir()));
    let dir = tempfile::tempdir().unwrap();
    // The segments' `host` column names the host they are filed under in the bucket, as with
    // a recorder and `quarry upload` on the same node.
    let a = store_of(&dir.path().join("a"), "f22-a", 3, None);
    let b = store_of(&dir.path().join("b"), "f22-b", 2, None);
    let url = weed.url("fleet");
    let store_a = a.root().to_str().unwrap();
    let store_b = b.root().to_str().unwrap();

    let up = |store: &str, host: &str| {
        run(
            &weed,
            &[
                "upload", "--store", store, "--to", &url, "--host", host, "--format", "json",
            ],
        )
    };
    let first = up(store_a, "f22-a");
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let report = json(&first);
    assert_eq!(report["uploaded"], 3);
    assert_eq!(report["already_there"], 0);
    assert_eq!(report["rows"], 120);
    let up_b = up(store_b, "f22-b");
    assert!(
        up_b.status.success(),
        "{}",
        String::from_utf8_lossy(&up_b.stderr)
    );
    assert_eq!(json(&up_b)["uploaded"], 2);

    // Again: only what is new (the first upload's action row) leaves; the rest is skipped.
    let again = json(&up(store_a, "f22-a"));
    assert_eq!(
        (again["uploaded"].as_u64(), again["already_there"].as_u64()),
        (Some(1), Some(3))
    );

    let bucket = client(&weed, &url);
    // 3 + 1 action row of the first upload, and 2.
    assert_eq!(assert_all_in_bucket(&bucket, &a, "f22-a"), 4);
    assert_eq!(assert_all_in_bucket(&bucket, &b, "f22-b"), 2);
    let keys: Vec<String> = block_on(bucket.list("process"))
        .unwrap()
        .into_iter()
        .map(|k| k.0)
        .collect();
    assert!(keys.iter().any(|k| k.contains("/host=f22-a/")), "{keys:?}");
    assert!(keys.iter().any(|k| k.contains("/host=f22-b/")), "{keys:?}");
    assert!(
        keys.iter()
            .all(|k| k.starts_with("process/dt=2026-11-28/hour=1")),
        "{keys:?}"
    );

    // Another engine reads the bucket as it is: DuckDB over S3 (httpfs), Hive partitions.
    let mut duck = python();
    weed.configure(&mut duck)
        .arg(tests_dir().join("py/read_bucket.py"))
        .args([weed.bucket.as_str(), "fleet"]);
    let duck = duck.output().unwrap();
    assert!(
        duck.status.success(),
        "{}",
        String::from_utf8_lossy(&duck.stderr)
    );
    let duck = json(&duck);
    assert_eq!(
        duck["hosts"],
        serde_json::json!({"f22-a": 120, "f22-b": 80})
    );
    assert_eq!(duck["hours"], serde_json::json!(["10", "11"]));
    assert_eq!(duck["comm_type"], "VARCHAR");

    let verified = run(&weed, &["verify", "--store", &url, "--format", "json"]);
    assert_eq!(
        verified.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
    let v = json(&verified);
    assert_eq!(v["hosts"].as_array().unwrap().len(), 2);
    assert_eq!(v["segments_verified"], 4 + 2);

    // The fleet as one store: the local engine reads every host's vouched segments, `host`
    // (the name each store was uploaded under) a partition column that prunes.
    let sql = |query: &str| {
        let out = run(&weed, &["sql", "--store", &url, "--format", "csv", query]);
        assert!(
            out.status.success(),
            "{query}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let per_host = "SELECT host, count(*) AS n FROM process GROUP BY host ORDER BY host";
    assert_eq!(sql(per_host).0, "host,n\nf22-a,120\nf22-b,80\n");
    assert_eq!(
        sql("SELECT count(*) AS n FROM process WHERE host = 'f22-b' AND hour = '10'").0,
        "n\n40\n"
    );
    // The first upload's action row, shipped by the second; views work as on a store.
    assert_eq!(
        sql("SELECT host, count(*) AS n FROM action GROUP BY host").0,
        "host,n\nf22-a,1\n"
    );
    assert_eq!(
        sql("SELECT count(*) AS n FROM events WHERE source = 'process'").0,
        "n\n200\n"
    );
    let hunt = run(&weed, &["hunt", "--store", &url, "--format", "json"]);
    // Every built-in rule runs over the bucket (0: no findings, 4: findings).
    assert!(
        matches!(hunt.status.code(), Some(0 | 4)),
        "{}",
        String::from_utf8_lossy(&hunt.stderr)
    );
    assert!(json(&hunt).is_array());

    // A store that uploads under a name another store uses: its segments have names of their
    // own, but its manifest is not the host's in the bucket: no chunk is added to that, named.
    let clash = up(store_b, "f22-a");
    assert_eq!(clash.status.code(), Some(1));
    let clash = json(&clash);
    let problems = clash["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{clash}");
    assert_eq!(problems[0]["kind"], "manifest_conflict", "{clash}");
    assert!(
        problems[0]["key"]
            .as_str()
            .unwrap()
            .ends_with("_manifest/host=f22-a/000000000004-000000000004.jsonl"),
        "{clash}"
    );
    assert_eq!(clash["manifest_key"], serde_json::Value::Null);

    // Someone rewrites one object in the bucket: verify names it.
    let victim = keys
        .iter()
        .find(|k| k.contains("/host=f22-b/"))
        .unwrap()
        .clone();
    block_on(bucket.objects().put(
        &bucket.key(&victim),
        PutPayload::from_static(b"PAR1 forged"),
    ))
    .unwrap();
    let unlisted = "process/dt=2026-11-28/hour=10/host=f22-b/planted.parquet";
    block_on(
        bucket
            .objects()
            .put(&bucket.key(unlisted), PutPayload::from_static(b"x")),
    )
    .unwrap();
    let failed = run(&weed, &["verify", "--store", &url]);
    let text = String::from_utf8_lossy(&failed.stdout);
    assert_eq!(failed.status.code(), Some(3), "{text}");
    assert!(
        text.contains(&format!("altered segment: {victim}")),
        "{text}"
    );
    assert!(
        text.contains(&format!("unlisted segment: {unlisted}")),
        "{text}"
    );
    // Queries leave the rewritten object out, naming it, and never read the planted one.
    let (rows, warnings) = sql(per_host);
    assert_eq!(rows, "host,n\nf22-a,120\nf22-b,40\n", "{warnings}");
    assert!(
        warnings.contains(&victim) && warnings.contains("altered"),
        "{warnings}"
    );
    assert!(!warnings.contains("planted"), "{warnings}");
    // And gone: missing.
    block_on(bucket.objects().delete(&bucket.key(&victim))).unwrap();
    let failed = run(&weed, &["verify", "--store", &url]);
    let text = String::from_utf8_lossy(&failed.stdout);
    assert!(
        text.contains(&format!("missing segment: {victim}")),
        "{text}"
    );

    // Someone edits an entry of host a's second manifest chunk (entry 4, the first upload's
    // action row): verify names that chunk, and queries read only the chunk before it.
    let second = bucket_manifest_key("f22-a", 4, 4);
    let chunk = block_on(bucket.get(&second)).unwrap().expect(&second);
    let text = String::from_utf8(chunk.to_vec()).unwrap();
    let edited = text.replacen("\"rows\":", "\"rows\":9", 1);
    assert_ne!(edited, text);
    block_on(
        bucket
            .objects()
            .put(&bucket.key(&second), PutPayload::from(edited.into_bytes())),
    )
    .unwrap();
    let failed = run(&weed, &["verify", "--store", &url]);
    let text = String::from_utf8_lossy(&failed.stdout);
    assert_eq!(failed.status.code(), Some(3), "{text}");
    assert!(
        text.contains(&format!("✗ host f22-a: unexpected entry: {second}"))
            && text.contains("fails the hash chain"),
        "{text}"
    );
    let (rows, warnings) = sql("SELECT host, count(*) AS n FROM action GROUP BY host");
    assert_eq!(rows, "host,n\n", "{warnings}");
    assert!(
        warnings.contains(&second) && warnings.contains("first 3 manifest entries"),
        "{warnings}"
    );
    assert_eq!(
        sql("SELECT count(*) AS n FROM process WHERE host = 'f22-a'").0,
        "n\n120\n"
    );
}

#[test]
fn a_containers_timeline_comes_from_its_hosts_segments_in_the_bucket() {
    let weed = Weed::start("b22m-timeline");
    let dir = tempfile::tempdir().unwrap();
    let id = format!("{:0<64}", "c0ffee");
    let a = store_of(&dir.path().join("a"), "b22m-a", 2, Some(&id));
    let b = store_of(&dir.path().join("b"), "b22m-b", 2, None);
    let first = Utc.with_ymd_and_hms(2026, 11, 28, 10, 0, 0).unwrap();
    let container = ContainerRow {
        time: first,
        container_id: id.clone(),
        name: Some("web-b22m".into()),
        runtime: "runc".into(),
        image: None,
        cgroup_id: Some(7),
        cgroup_path: "/b22m/web".into(),
        init_pid: Some(1),
        netns_inode: None,
        host_network: false,
        created: None,
        pod_uid: None,
        pod_name: None,
        pod_namespace: None,
        first_seen: first,
        last_seen: first + chrono::Duration::hours(2),
        events: 80,
    };
    a.seal(
        &Partition::for_time(Table::Container, first, "b22m-a"),
        &container_batch("b22m-a", &[container]),
        1,
        100,
    )
    .unwrap();
    let url = weed.url("fleet");
    for (store, host) in [(&a, "b22m-a"), (&b, "b22m-b")] {
        let up = run(
            &weed,
            &[
                "upload",
                "--store",
                store.root().to_str().unwrap(),
                "--to",
                &url,
                "--host",
                host,
            ],
        );
        assert!(
            up.status.success(),
            "{}",
            String::from_utf8_lossy(&up.stderr)
        );
    }

    let out = run(
        &weed,
        &["timeline", "web-b22m", "--store", &url, "--format", "json"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let timeline = json(&out);
    assert_eq!(timeline["container"]["id"], id.as_str());
    assert_eq!(timeline["container"]["host"], "b22m-a");
    let events = timeline["events"].as_array().unwrap();
    assert_eq!(events.len(), 80, "{timeline}");
    assert!(events.iter().all(|e| e["comm"] == "w-b22m-a"), "{timeline}");
}
