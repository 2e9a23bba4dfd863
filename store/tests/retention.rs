//! Retention, holds and compaction on real stores built with the store library: many sealed
//! segments across back-dated hours, two containers, then caps applied and the result verified.

// A test fails by panicking: unwrap is how it says what went wrong.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use chrono::{DateTime, TimeZone, Utc};
use quarry_store::schema::{
    GapReason, GapRow, ProcessEvent, ProcessRow, RowIdentity, gap_batch, process_batch,
};
use quarry_store::{
    CompactPolicy, HoldSpec, Partition, RetentionPolicy, Store, Table, UploadGate, verify_store,
};

/// "Now" for every test: retention is given the time, so hours are closed or open by design.
fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 18, 20, 0).unwrap()
}

fn hour(h: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 28, 18, 0, 0).unwrap() - chrono::Duration::hours(h)
}

/// Seals `per_hour` segments in each of `hours` hours before now (hour 0 is the open one),
/// alternating the rows between containers "aaa" and "bbb", 20 rows each, plus one gap segment
/// per hour. Returns the rows sealed per (container, hours-ago).
fn fixture(store: &Store, hours: i64, per_hour: u64) -> BTreeMap<(String, i64), u64> {
    let mut sealed = BTreeMap::new();
    for h in 0..hours {
        for seq in 0..per_hour {
            let container = if seq % 2 == 0 { "aaa" } else { "bbb" };
            let time = hour(h) + chrono::Duration::seconds(seq as i64 * 7);
            let rows: Vec<ProcessRow> = (0..20)
                .map(|i| ProcessRow {
                    id: RowIdentity {
                        time,
                        ktime_ns: (h as u64) << 32 | seq << 8 | i,
                        pid: 100 + i as i32,
                        tid: 100 + i as i32,
                        comm: "sh".into(),
                        cgroup_id: 9,
                        container_id: Some(container.into()),
                    },
                    ppid: Some(1),
                    start_ns: Some(i),
                    parent_start_ns: Some(1),
                    event: ProcessEvent::Fork,
                })
                .collect();
            let p = Partition::for_time(Table::Process, time, "node");
            store
                .seal(
                    &p,
                    &process_batch("node", &rows),
                    1,
                    (h as u64) * 1000 + seq,
                )
                .unwrap();
            *sealed.entry((container.to_string(), h)).or_default() += 20;
        }
        let gap = GapRow {
            time: hour(h),
            ktime_ns: 1,
            since: hour(h),
            cpu: 0,
            lost: 3,
            reason: GapReason::RingBufferFull,
            lost_table: None,
        };
        store
            .seal(
                &Partition::for_time(Table::Gap, hour(h), "node"),
                &gap_batch("node", &[gap]),
                1,
                (h as u64) * 1000 + 999,
            )
            .unwrap();
    }
    sealed
}

/// Rows per (container, hours-ago) now in the store.
fn rows_by_container_hour(store: &Store) -> BTreeMap<(String, i64), u64> {
    let mut out = BTreeMap::new();
    for batch in store.read_table(Table::Process).unwrap() {
        let c = batch
            .column_by_name("container_id")
            .unwrap()
            .as_string::<i32>();
        let t = batch
            .column_by_name("time")
            .unwrap()
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
        for i in 0..batch.num_rows() {
            let time = DateTime::from_timestamp_micros(t.value(i)).unwrap();
            let ago = (hour(0) - Partition::for_time(Table::Process, time, "n").hour).num_hours();
            *out.entry((c.value(i).to_string(), ago)).or_default() += 1;
        }
    }
    out
}

fn gap_hours(store: &Store) -> Vec<i64> {
    let mut hours: Vec<i64> = store
        .segments(Table::Gap)
        .unwrap()
        .iter()
        .map(|p| {
            let rel = p
                .strip_prefix(store.root())
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (hour(0) - Partition::from_segment_path(&rel).unwrap().0.hour).num_hours()
        })
        .collect();
    hours.sort();
    hours
}

fn assert_verifies(store: &Store) -> quarry_store::VerifyReport {
    let report = verify_store(store).unwrap();
    assert!(report.is_ok(), "verify failed: {:?}", report.problems);
    report
}

#[test]
fn age_cap_deletes_only_hours_wholly_older_than_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path()).unwrap();
    let sealed = fixture(&store, 30, 6);
    let policy = RetentionPolicy {
        max_age: Some(Duration::from_secs(24 * 3600)),
        ..Default::default()
    };

    // A dry run says what would go and changes nothing.
    let dry = store.retain(&policy, now(), true).unwrap();
    assert!(dry.dry_run);
    assert_eq!(rows_by_container_hour(&store), sealed);

    let report = store.retain(&policy, now(), false).unwrap();
    assert_eq!(report.removed.len(), dry.removed.len());
    // Hour h covers [18:00-h, 19:00-h); now is 18:20, so h >= 25 is wholly older than 24h.
    let expected: BTreeMap<_, _> = sealed
        .iter()
        .filter(|((_, h), _)| *h < 25)
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    assert_eq!(rows_by_container_hour(&store), expected);
    assert_eq!(
        report.removed.len(),
        5 * 7,
        "5 hours of 6 process + 1 gap segments"
    );
    assert!(
        report
            .removed
            .iter()
            .all(|r| r.reason.starts_with("age cap 1d;"))
    );
    assert_eq!(gap_hours(&store), (0..25).collect::<Vec<_>>());

    let v = assert_verifies(&store);
    assert_eq!(v.removed_segments, 35);
    assert_eq!(v.removals.len(), 1);
    assert_eq!(v.removals[0].reason, "age cap 1d");
    assert_eq!(v.removals[0].segments, 35);
    assert_eq!(v.removals[0].rows, 5 * (6 * 20 + 1));

    // Running again changes nothing.
    let again = store.retain(&policy, now(), false).unwrap();
    assert!(again.removed.is_empty());
}

#[test]
fn size_cap_deletes_oldest_first_and_never_the_open_hour() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path()).unwrap();
    let sealed = fixture(&store, 12, 4);
    let before = verify_store(&store).unwrap().bytes;
    let cap = before / 3;
    let policy = RetentionPolicy {
        max_bytes: Some(cap),
        ..Default::default()
    };
    let report = store.retain(&policy, now(), false).unwrap();
    let v = assert_verifies(&store);
    assert!(v.bytes <= cap, "{} bytes left, cap {cap}", v.bytes);
    assert_eq!(report.bytes_after, v.bytes);
    // What is left is the newest hours, contiguous: oldest went first.
    let left = rows_by_container_hour(&store);
    let newest_gone = sealed
        .keys()
        .filter(|k| !left.contains_key(*k))
        .map(|k| k.1)
        .min()
        .unwrap();
    assert!(left.keys().all(|k| k.1 <= newest_gone), "{left:?}");
    assert!(v.removals[0].reason.starts_with("size cap"));

    // A cap of zero still keeps the hour being recorded (and the one that just closed).
    let report = store
        .retain(
            &RetentionPolicy {
                max_bytes: Some(0),
                ..Default::default()
            },
            now(),
            false,
        )
        .unwrap();
    let left = rows_by_container_hour(&store);
    assert_eq!(
        left.get(&("aaa".to_string(), 0)),
        sealed.get(&("aaa".to_string(), 0))
    );
    assert!(left.keys().all(|k| k.1 == 0), "{left:?}");
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("OVER THE SIZE CAP"))
    );
    assert!(report.kept_recent > 0);
    assert_verifies(&store);
}

#[test]
fn holds_are_never_deleted_even_over_the_size_cap() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path()).unwrap();
    let sealed = fixture(&store, 10, 4);
    let hold = store
        .add_hold(HoldSpec {
            container_id: Some("aaa".into()),
            container_name: Some("web".into()),
            since: None,
            until: None,
            reason: "IR-7".into(),
            created_by: "test".into(),
        })
        .unwrap();
    // A time-range hold on every container for hours 7..=8 ago.
    let range = store
        .add_hold(HoldSpec {
            container_id: None,
            container_name: None,
            since: Some(hour(8)),
            until: Some(hour(6)),
            reason: "IR-8".into(),
            created_by: "test".into(),
        })
        .unwrap();
    let policy = RetentionPolicy {
        max_age: Some(Duration::from_secs(3600)),
        max_bytes: Some(0),
        ..Default::default()
    };
    let report = store.retain(&policy, now(), false).unwrap();
    let left = rows_by_container_hour(&store);
    for (key, rows) in &sealed {
        let (container, h) = (key.0.as_str(), key.1);
        let expect_kept = container == "aaa" || h == 0 || h == 7 || h == 8;
        assert_eq!(left.get(key), expect_kept.then_some(rows), "{key:?}");
    }
    // Gap segments stay where held containers have rows (every hour here).
    assert_eq!(gap_hours(&store), (0..10).collect::<Vec<_>>());
    assert!(report.kept_held.iter().any(|k| k.holds.contains(&hold.id)));
    assert!(report.kept_held.iter().any(|k| k.holds.contains(&range.id)));
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("OVER THE SIZE CAP") && w.contains(&hold.id)),
        "{:?}",
        report.warnings
    );
    assert_verifies(&store);

    // Released, the container's old rows go at the next run; the range hold still holds.
    store.release_hold(&hold.id, "test".into(), None).unwrap();
    store.retain(&policy, now(), false).unwrap();
    let left = rows_by_container_hour(&store);
    assert!(
        left.keys().all(|k| k.1 == 0 || k.1 == 7 || k.1 == 8),
        "{left:?}"
    );
    assert!(left.contains_key(&("aaa".to_string(), 7)));
    assert_verifies(&store);
}

#[test]
fn compaction_keeps_every_row_in_fewer_files_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path()).unwrap();
    let sealed = fixture(&store, 4, 8);
    let files_before = store.segments(Table::Process).unwrap().len();
    let policy = CompactPolicy::default();

    let planned = store.compact(&policy, now(), true).unwrap();
    assert_eq!(store.segments(Table::Process).unwrap().len(), files_before);
    let done = store.compact(&policy, now(), false).unwrap();
    assert_eq!(planned.len(), done.len());
    // Hours 1..3 are closed (and settled): 8 segments each become one. Hour 0 is untouched,
    // and so are the single gap segments.
    assert_eq!(done.len(), 3);
    assert!(done.iter().all(|c| c.sources.len() == 8 && c.rows == 160));
    assert_eq!(
        store.segments(Table::Process).unwrap().len(),
        files_before - 3 * 7
    );
    assert_eq!(rows_by_container_hour(&store), sealed);
    let v = assert_verifies(&store);
    assert_eq!(v.removals[0].reason, "compacted");
    assert_eq!(v.removals[0].segments, 24);
    // Compacting again finds nothing to merge.
    assert!(store.compact(&policy, now(), false).unwrap().is_empty());
}

#[test]
fn an_interrupted_compaction_is_finished_by_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path()).unwrap();
    let sealed = fixture(&store, 3, 2);
    // Do by hand what a compaction does up to its crash: the merged segment is logged (with
    // the sources it replaces) and in place, the sources are still listed.
    let log = quarry_store::Manifest::new(store.manifest_path())
        .read()
        .unwrap();
    let sources: Vec<_> = log
        .live()
        .into_iter()
        .filter(|e| e.body.table == "process" && e.body.path.contains("hour=16"))
        .map(|e| e.body.clone())
        .collect();
    assert_eq!(sources.len(), 2);
    let mut batches = Vec::new();
    for s in &sources {
        batches.extend(quarry_store::read::read_segment(&store.resolve(&s.path).unwrap()).unwrap());
    }
    let rel = sources[0].path.replace(".parquet", "-merged.parquet");
    let path = store.resolve(&rel).unwrap();
    let (bytes, sha256) =
        quarry_store::segment::write_parquet_batches(&path, Table::Process, &batches).unwrap();
    quarry_store::Manifest::new(store.manifest_path())
        .append(quarry_store::manifest::NewEntry {
            op: quarry_store::ManifestOp::Add,
            table: "process".into(),
            path: rel.clone(),
            rows: 40,
            bytes,
            sha256,
            reason: Some("compaction of 2 segments".into()),
            replaces: sources.iter().map(|s| s.path.clone()).collect(),
        })
        .unwrap();
    // Until recovered, the rows of that hour are there twice.
    assert_ne!(rows_by_container_hour(&store), sealed);
    store.recover().unwrap();
    assert_eq!(rows_by_container_hour(&store), sealed);
    let v = assert_verifies(&store);
    assert_eq!(v.removed_segments, 2);
}

#[test]
fn retention_while_sealing_loses_no_row_of_the_current_hour() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path()).unwrap();
    fixture(&store, 6, 3);
    // A writer seals into the current hour while retention with a zero size cap runs over and
    // over: every row it sealed is still there at the end.
    let writer_store = store.clone();
    let writer = std::thread::spawn(move || {
        let mut sealed = 0u64;
        for seq in 0..60u64 {
            let rows: Vec<ProcessRow> = (0..5)
                .map(|i| ProcessRow {
                    id: RowIdentity {
                        time: Utc::now(),
                        ktime_ns: seq << 8 | i,
                        pid: 7,
                        tid: 7,
                        comm: "live".into(),
                        cgroup_id: 1,
                        container_id: Some("live".into()),
                    },
                    ppid: None,
                    start_ns: None,
                    parent_start_ns: None,
                    event: ProcessEvent::Fork,
                })
                .collect();
            let p = Partition::for_time(Table::Process, rows[0].id.time, "node");
            writer_store
                .seal(&p, &process_batch("node", &rows), 2, 10_000 + seq)
                .unwrap();
            sealed += 5;
        }
        sealed
    });
    let policy = RetentionPolicy {
        max_bytes: Some(0),
        ..Default::default()
    };
    let mut runs = 0;
    while !writer.is_finished() {
        store.retain(&policy, Utc::now(), false).unwrap();
        runs += 1;
    }
    let sealed = writer.join().unwrap();
    store.retain(&policy, Utc::now(), false).unwrap();
    let live_rows: u64 = store
        .read_table(Table::Process)
        .unwrap()
        .iter()
        .map(|b| {
            let c = b.column_by_name("container_id").unwrap().as_string::<i32>();
            (0..b.num_rows())
                .filter(|&i| !c.is_null(i) && c.value(i) == "live")
                .count() as u64
        })
        .sum();
    assert!(runs >= 1);
    assert_eq!(live_rows, sealed);
    assert_verifies(&store);
}

/// Raw-stream segments are a few bytes a row: merging by bytes alone would decode tens of
/// millions of rows at once. Merges stop at the row bound, and each merged segment keeps the
/// rows grouped by container, each container's rows in the order they were sealed.
#[test]
fn merges_of_raw_stream_segments_respect_the_row_bound_and_keep_containers_together() {
    use arrow::array::{ArrayRef, StringArray};
    use quarry_store::schema::{SyscallBuilder, SyscallRow};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path()).unwrap();
    let (segments, per_segment) = (30u64, 4000usize);
    let containers = [None, Some("c1"), Some("c2"), Some("c3")];
    let mut sealed: BTreeMap<Option<String>, u64> = BTreeMap::new();
    for seq in 0..segments {
        let time = hour(2) + chrono::Duration::seconds(seq as i64 * 60);
        let mut b = SyscallBuilder::default();
        let mut ids = Vec::new();
        for i in 0..per_segment {
            let comm = b.intern_comm("app");
            b.append(SyscallRow {
                time_micros: time.timestamp_micros() + i as i64,
                ktime_ns: seq * 1_000_000 + i as u64,
                pid: 100 + (i % 7) as i32,
                tid: 100 + (i % 7) as i32,
                comm,
                cgroup_id: 9,
                nr: 0,
                ret: 1,
                ktime_slack_ns: None,
                source: 0,
            });
            // Interleaved, as rows arrive: sealing groups them.
            let c = containers[(i * 7 + seq as usize) % containers.len()];
            ids.push(c);
            *sealed.entry(c.map(String::from)).or_default() += 1;
        }
        let batch = b.finish("node", |_| Some("read"));
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        let at = batch.schema().index_of("container_id").unwrap();
        columns[at] = Arc::new(StringArray::from(ids));
        let batch = arrow::record_batch::RecordBatch::try_new(batch.schema(), columns).unwrap();
        let p = Partition::for_time(Table::Syscall, time, "node");
        store.seal(&p, &batch, 1, seq).unwrap();
    }
    let bound = 25_000;
    let policy = CompactPolicy {
        max_rows: bound,
        ..CompactPolicy::default()
    };
    assert!(CompactPolicy::default().max_rows <= 2_000_000);
    let done = store.compact(&policy, now(), false).unwrap();
    // 120 000 rows in merges of at most 6 segments (24 000 rows): 5 merges.
    assert_eq!(done.len(), 5, "{done:#?}");
    assert!(done.iter().all(|c| c.rows <= bound), "{done:#?}");
    assert_eq!(done.iter().map(|c| c.rows).sum::<u64>(), 120_000);
    assert_eq!(store.segments(Table::Syscall).unwrap().len(), 5);

    let mut kept: BTreeMap<Option<String>, u64> = BTreeMap::new();
    for path in store.segments(Table::Syscall).unwrap() {
        let batches = quarry_store::read::read_segment(&path).unwrap();
        let mut order: Vec<(Option<String>, u64)> = Vec::new();
        for batch in &batches {
            let c = batch
                .column_by_name("container_id")
                .unwrap()
                .as_string::<i32>();
            let k = batch
                .column_by_name("ktime_ns")
                .unwrap()
                .as_primitive::<arrow::datatypes::UInt64Type>();
            for i in 0..batch.num_rows() {
                let id = (!c.is_null(i)).then(|| c.value(i).to_string());
                *kept.entry(id.clone()).or_default() += 1;
                order.push((id, k.value(i)));
            }
        }
        // Grouped by container (the host's rows first), in sealing order inside each.
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "{} is not clustered by container and time",
            path.display()
        );
    }
    assert_eq!(kept, sealed);
    assert_verifies(&store);
}

#[test]
fn beside_an_upload_only_uploaded_segments_go_unless_told_and_then_the_loss_is_on_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path()).unwrap();
    fixture(&store, 30, 2);
    let log = quarry_store::Manifest::new(store.manifest_path())
        .read()
        .unwrap();
    let old: Vec<String> = log
        .live()
        .iter()
        .map(|e| e.body.path.clone())
        .filter(|p| {
            let (partition, _) = Partition::from_segment_path(p).unwrap();
            (hour(0) - partition.hour).num_hours() >= 25
        })
        .collect();
    assert_eq!(old.len(), 5 * 3);
    // The bucket has the first of them only.
    let mut gate = UploadGate {
        to: "s3://fleet/prod".into(),
        uploaded: old[..1].iter().cloned().collect(),
        delete_unuploaded: false,
    };
    let policy = |gate: &UploadGate| RetentionPolicy {
        max_age: Some(Duration::from_secs(24 * 3600)),
        upload: Some(gate.clone()),
        ..Default::default()
    };
    let report = store.retain(&policy(&gate), now(), false).unwrap();
    assert_eq!(report.removed.len(), 1);
    assert_eq!(report.removed[0].path, old[0]);
    assert_eq!(
        (report.kept_unuploaded, report.removed_unuploaded.len()),
        (14, 0)
    );
    assert_verifies(&store);

    // Told to delete what is not uploaded: it goes, each one named, and its manifest entry
    // says it never reached the bucket.
    gate.delete_unuploaded = true;
    let report = store.retain(&policy(&gate), now(), false).unwrap();
    assert_eq!(report.removed.len(), 14);
    let mut removed = report.removed_unuploaded.clone();
    removed.sort();
    let mut expected = old[1..].to_vec();
    expected.sort();
    assert_eq!(removed, expected);
    assert!(
        report.warnings.iter().any(
            |w| w.contains("before they were uploaded to s3://fleet/prod") && w.contains(&old[1])
        ),
        "{:?}",
        report.warnings
    );
    let v = assert_verifies(&store);
    let kinds: Vec<(&str, u64)> = v
        .removals
        .iter()
        .map(|r| (r.reason.as_str(), r.segments))
        .collect();
    assert_eq!(
        kinds,
        [
            ("age cap 1d", 1),
            ("age cap 1d, NOT uploaded to s3://fleet/prod", 14)
        ]
    );
}
