//! Evidence lifecycle through the real `quarry` binary: retention (`retain`, and on a schedule
//! inside `record`), legal holds, export bundles and their verification, including tampered and
//! malicious bundles. Stores are built with the store library (real Parquet, real manifest,
//! back-dated hours); the recorder tests need root.

// A test fails by panicking: unwrap is how it says what went wrong.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Output;

use arrow::array::AsArray;
use chrono::{DateTime, Duration, Utc};
use common::*;
use quarry_store::schema::{
    ActionRow, ContainerRow, FileRow, GapReason, GapRow, NetRow, ProcessEvent, ProcessRow,
    RowIdentity, action_batch, container_batch, file_batch, gap_batch, net_batch, process_batch,
};
use quarry_store::{Partition, Store, Table};

const WEB: &str = "1f0e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const DB: &str = "9a8b7c6d5e4f30211203f4e5d6c7b8a99a8b7c6d5e4f30211203f4e5d6c7b8a9";
const HOST: &str = "node-t";

fn hour_start(t: DateTime<Utc>) -> DateTime<Utc> {
    Partition::for_time(Table::Process, t, HOST).hour
}

fn identity(time: DateTime<Utc>, pid: i32, container: &str) -> RowIdentity {
    RowIdentity {
        time,
        ktime_ns: time.timestamp_micros() as u64 * 1000 + pid as u64,
        pid,
        tid: pid,
        comm: "app".into(),
        cgroup_id: 77,
        container_id: Some(container.into()),
    }
}

/// Rows sealed per (table, container) by [`fixture`].
type Sealed = BTreeMap<(&'static str, &'static str), u64>;

/// A store recorded over `hours` hours up to now (hour 0 is the current one) with containers
/// web and db: per hour, per container, process (3 segments of 10 rows), file (1 of 5) and net
/// (1 of 4) segments, a container row, plus one gap segment per hour and one action on web.
fn fixture(root: &Path, hours: i64) -> Sealed {
    fixture_at(root, hours, Utc::now())
}

/// [`fixture`] with hours counted back from `now`.
fn fixture_at(root: &Path, hours: i64, now: DateTime<Utc>) -> Sealed {
    let store = Store::create(root).unwrap();
    let mut sealed = Sealed::new();
    let mut seq = 0u64;
    let mut seal = |table: Table, t: DateTime<Utc>, batch: arrow::record_batch::RecordBatch| {
        seq += 1;
        store
            .seal(&Partition::for_time(table, t, HOST), &batch, 7, seq)
            .unwrap();
    };
    for h in (0..hours).rev() {
        let base = hour_start(now) - Duration::hours(h);
        // Rows of the current hour are in the past (never after now).
        let at = |s: i64| (base + Duration::seconds(s)).min(now - Duration::seconds(1));
        for (c, name) in [(WEB, "web"), (DB, "db")] {
            for s in 0..3 {
                let rows: Vec<ProcessRow> = (0..10)
                    .map(|i| ProcessRow {
                        id: identity(at(s * 10 + i), 100 + i as i32, c),
                        ppid: Some(1),
                        start_ns: Some(5),
                        parent_start_ns: Some(1),
                        event: ProcessEvent::Exec {
                            filename: "/bin/app".into(),
                            argv: vec!["app".into(), name.into()],
                            argv_truncated: false,
                            uid: 0,
                            gid: 0,
                            euid: 0,
                            egid: 0,
                        },
                    })
                    .collect();
                seal(Table::Process, at(s * 10), process_batch(HOST, &rows));
                *sealed.entry(("process", name)).or_default() += 10;
            }
            let files: Vec<FileRow> = (0..5)
                .map(|i| FileRow {
                    id: identity(at(40 + i), 100, c),
                    event: "open",
                    syscall: "openat",
                    path: Some(format!("/etc/{name}-{i}")),
                    abs_path: Some(format!("/etc/{name}-{i}")),
                    resolution: "absolute",
                    path2: None,
                    abs_path2: None,
                    flags: Some(0),
                    mode: None,
                    owner_uid: None,
                    owner_gid: None,
                    fd: Some(3),
                    ret: Some(3),
                    kernel_path: None,
                    path_resolution: None,
                })
                .collect();
            seal(Table::File, at(40), file_batch(HOST, &files));
            *sealed.entry(("file", name)).or_default() += 5;
            let nets: Vec<NetRow> = (0..4)
                .map(|i| NetRow {
                    id: Some(identity(at(50 + i), 100, c)),
                    event: "connect",
                    syscall: Some("connect"),
                    family: Some("inet".into()),
                    remote_addr: Some("198.18.0.9".into()),
                    remote_port: Some(443),
                    ret: Some(0),
                    ..Default::default()
                })
                .collect();
            seal(Table::Net, at(50), net_batch(HOST, &nets));
            *sealed.entry(("net", name)).or_default() += 4;
            let row = ContainerRow {
                time: at(59),
                container_id: c.into(),
                name: Some(name.into()),
                runtime: "runc".into(),
                image: None,
                cgroup_id: Some(77),
                cgroup_path: format!("/q/{c}"),
                init_pid: Some(100),
                netns_inode: None,
                host_network: false,
                created: None,
                pod_uid: None,
                pod_name: None,
                pod_namespace: None,
                first_seen: at(0),
                last_seen: at(59),
                events: 49,
            };
            seal(Table::Container, at(59), container_batch(HOST, &[row]));
            *sealed.entry(("container", name)).or_default() += 1;
        }
        let gap = GapRow {
            time: at(30),
            ktime_ns: 1,
            since: at(29),
            cpu: 1,
            lost: 2,
            reason: GapReason::RingBufferFull,
            lost_table: None,
        };
        seal(Table::Gap, at(30), gap_batch(HOST, &[gap]));
        *sealed.entry(("gap", "-")).or_default() += 1;
    }
    let action = ActionRow {
        time: now - Duration::seconds(2),
        action: "isolate".into(),
        actor: "uid 0".into(),
        container_id: Some(WEB.into()),
        container_name: Some("web".into()),
        reason: Some("IR-1".into()),
        detail: None,
        result: "ok".into(),
        error: None,
        command: "quarry isolate web".into(),
    };
    seal(Table::Action, action.time, action_batch(HOST, &[action]));
    *sealed.entry(("action", "web")).or_default() += 1;
    sealed
}

fn run(args: &[&str]) -> Output {
    let out = quarry().args(args).output().unwrap();
    eprintln!(
        "$ quarry {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Rows per container name of `table` now in the store.
fn rows_by_container(store: &Path, table: Table) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for b in Store::at(store).read_table(table).unwrap() {
        let c = b.column_by_name("container_id").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            let name = match c.value(i) {
                WEB => "web",
                DB => "db",
                _ => "other",
            };
            *out.entry(name.to_string()).or_default() += 1;
        }
    }
    out
}

/// Actions recorded in the store: (action, result).
fn actions(store: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for b in Store::at(store).read_table(Table::Action).unwrap() {
        let a = b.column_by_name("action").unwrap().as_string::<i32>();
        let r = b.column_by_name("result").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            out.push((a.value(i).to_string(), r.value(i).to_string()));
        }
    }
    out
}

// ---- retention and holds -----------------------------------------------------------------------

#[test]
fn retain_by_age_keeps_recent_hours_and_verify_shows_why() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    fixture(&store, 30);
    let before = Store::at(&store).segments(Table::Process).unwrap().len();
    assert_eq!(before, 30 * 6);

    let dry = run(&[
        "retain",
        "--store",
        s(&store),
        "--retain-age",
        "1d",
        "--dry-run",
    ]);
    assert!(dry.status.success());
    assert!(text(&dry).contains("would remove"), "{}", text(&dry));
    assert_eq!(
        Store::at(&store).segments(Table::Process).unwrap().len(),
        before
    );

    let out = run(&[
        "retain",
        "--store",
        s(&store),
        "--retain-age",
        "1d",
        "--format",
        "json",
    ]);
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Hours 24..29 ago end at least 24h ago... only those wholly older than 1d go: 5 hours
    // (the hour 24 ago ends less than 24h ago unless now is exactly on the hour).
    let removed = report["removed"].as_array().unwrap();
    assert!(!removed.is_empty());
    let cutoff = Utc::now() - Duration::days(1);
    for r in removed {
        let hour: DateTime<Utc> = r["hour"].as_str().unwrap().parse().unwrap();
        assert!(hour + Duration::hours(1) <= cutoff, "{r}");
    }
    let left = Store::at(&store).segments(Table::Process).unwrap().len();
    assert!(left >= 24 * 6 && left < before, "{left}");

    let (code, v) = verify(&store);
    assert_eq!(code, 0, "{v}");
    assert!(v.contains(": age cap 1d"), "{v}");
    assert!(
        actions(&store).contains(&("retain".into(), "ok".into())),
        "retain on demand is recorded"
    );
}

#[test]
fn holds_keep_a_container_over_the_size_cap_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let sealed = fixture(&store, 8);

    // The container is found by name in the store (it is not running).
    let out = run(&[
        "hold",
        "web",
        "--store",
        s(&store),
        "--reason",
        "IR-9 litigation",
        "--format",
        "json",
    ]);
    assert!(out.status.success());
    let hold: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = hold["id"].as_str().unwrap().to_string();
    assert_eq!(hold["container_id"], WEB);
    let list = run(&["hold", "--list", "--store", s(&store)]);
    assert!(text(&list).contains(&id) && text(&list).contains("IR-9 litigation"));

    let out = run(&["retain", "--store", s(&store), "--retain-size", "0"]);
    assert!(out.status.success());
    let said = text(&out);
    assert!(said.contains("WARNING: OVER THE SIZE CAP"), "{said}");
    assert!(said.contains(&id), "{said}");
    let left = rows_by_container(&store, Table::Process);
    assert_eq!(
        left["web"],
        sealed[&("process", "web")],
        "held rows all kept"
    );
    assert!(left.get("db").copied().unwrap_or(0) < sealed[&("process", "db")]);
    let (code, v) = verify(&store);
    assert_eq!(code, 0, "{v}");
    assert!(v.contains("size cap"), "{v}");

    let out = run(&[
        "hold",
        "--release",
        &id,
        "--store",
        s(&store),
        "--reason",
        "case closed",
    ]);
    assert!(out.status.success());
    let out = run(&["retain", "--store", s(&store), "--retain-size", "0"]);
    assert!(out.status.success());
    let left = rows_by_container(&store, Table::Process);
    assert!(
        left["web"] < sealed[&("process", "web")],
        "released: old rows go"
    );
    assert_eq!(verify(&store).0, 0);
    let list = run(&["hold", "--list", "--all", "--store", s(&store)]);
    assert!(text(&list).contains("released"), "{}", text(&list));
    let acts = actions(&store);
    for a in ["hold", "release-hold", "retain"] {
        assert!(
            acts.contains(&(a.into(), "ok".into())),
            "{a} recorded: {acts:?}"
        );
    }
}

#[test]
fn a_time_range_hold_needs_a_reason_and_covers_every_container() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let started = Utc::now();
    let h0 = hour_start(started);
    fixture_at(&store, 6, started);
    let out = run(&["hold", "--since", "5h", "--store", s(&store)]);
    assert_eq!(out.status.code(), Some(2), "no --reason is a usage error");
    let since = (h0 - Duration::hours(4)).to_rfc3339();
    let until = (h0 - Duration::hours(3)).to_rfc3339();
    let out = run(&[
        "hold",
        "--since",
        &since,
        "--until",
        &until,
        "--reason",
        "IR-10",
        "--store",
        s(&store),
    ]);
    assert!(out.status.success());
    let out = run(&[
        "retain",
        "--store",
        s(&store),
        "--retain-age",
        "1h",
        "--format",
        "json",
    ]);
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let now: DateTime<Utc> = report["now"].as_str().unwrap().parse().unwrap();
    let mut hours: Vec<i64> = Store::at(&store)
        .segments(Table::Process)
        .unwrap()
        .iter()
        .map(|p| {
            let rel = p
                .strip_prefix(&store)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let (part, _) = Partition::from_segment_path(&rel).unwrap();
            (h0 - part.hour).num_hours()
        })
        .collect();
    hours.sort();
    hours.dedup();
    // Hours younger than the cap stay (0 and 1, unless an hour ended while the test ran); hour
    // 4 is held; the rest went.
    let mut expected: Vec<i64> = (0..6)
        .filter(|h| h0 - Duration::hours(*h) + Duration::hours(1) > now - Duration::hours(1))
        .collect();
    expected.push(4);
    expected.sort();
    assert_eq!(hours, expected);
    assert!(expected.contains(&0));
    assert_eq!(verify(&store).0, 0);
}

// ---- export and bundle verification ------------------------------------------------------------

/// A case directory like `quarry snapshot` makes: a manifest and nested files.
fn case_dir(root: &Path) -> PathBuf {
    let case = root.join("case-1");
    fs::create_dir_all(case.join("images")).unwrap();
    fs::write(case.join("images/pages-1.img"), vec![7u8; 50_000]).unwrap();
    fs::write(case.join("facts.json"), br#"{"pid": 100}"#).unwrap();
    fs::write(case.join("manifest.json"), br#"{"files": []}"#).unwrap();
    case
}

/// Exports web (with a case and a signature); returns (bundle, public key).
fn export_web(dir: &Path, store: &Path) -> (PathBuf, PathBuf) {
    let key = dir.join("ir.key");
    assert!(run(&["keygen", "-o", s(&key)]).status.success());
    let bundle = dir.join("web.qbundle");
    let case = case_dir(dir);
    let out = run(&[
        "export",
        "web",
        "--store",
        s(store),
        "--case",
        s(&case),
        "--sign",
        s(&key),
        "-o",
        s(&bundle),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    (bundle, dir.join("ir.key.pub"))
}

#[test]
fn an_export_verifies_and_its_parquet_opens_in_pyarrow_and_duckdb() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let sealed = fixture(&store, 3);
    let (bundle, public) = export_web(dir.path(), &store);

    let target = dir.path().join("extracted");
    let out = run(&[
        "verify",
        s(&bundle),
        "--key",
        s(&public),
        "--extract-to",
        s(&target),
        "--format",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(report["key_trusted"].as_bool().unwrap());
    let m = &report["manifest"];
    assert_eq!(m["container"]["id"], WEB);
    assert_eq!(m["container"]["name"], "web");
    assert!(m["command"].as_str().unwrap().contains("export web"));
    let files = m["files"].as_array().unwrap();
    let rows = |t: &str| {
        files
            .iter()
            .find(|f| f["path"] == format!("tables/{t}.parquet"))
            .unwrap()["rows"]
            .as_u64()
            .unwrap()
    };
    for t in ["process", "file", "net", "container"] {
        assert_eq!(rows(t), sealed[&(t, "web")], "{t}");
    }
    assert_eq!(rows("gap"), 3, "the gap rows of the hours web has rows in");
    assert!(rows("action") >= 1);
    for f in [
        "case/images/pages-1.img",
        "case/facts.json",
        "case/manifest.json",
        "custody.log",
    ] {
        assert!(files.iter().any(|x| x["path"] == f), "{f} listed");
        assert!(target.join(f).is_file(), "{f} extracted");
    }
    let custody = fs::read_to_string(target.join("custody.log")).unwrap();
    assert!(custody.contains("\"collected\"") && custody.contains("\"sealed\""));

    // Engines that are not Quarry read the tables as they are: only web's rows.
    let script = tests_dir().join("py/read_bundle.py");
    let py = python()
        .arg(script)
        .arg(target.join("tables"))
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let counts: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
    assert_eq!(counts["process"]["rows"], sealed[&("process", "web")]);
    for t in [
        "process",
        "file",
        "net",
        "gap",
        "action",
        "container",
        "syscall",
    ] {
        assert_eq!(
            counts[t]["duckdb_rows"], counts[t]["rows"],
            "DuckDB reads {t} too"
        );
    }
    assert_eq!(counts["process"]["containers"], serde_json::json!([WEB]));
    assert_eq!(counts["file"]["rows"], sealed[&("file", "web")]);
    assert_eq!(counts["net"]["containers"], serde_json::json!([WEB]));
    assert!(actions(&store).contains(&("export".into(), "ok".into())));
}

#[test]
fn export_window_and_id_prefix_of_a_gone_container() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let sealed = fixture(&store, 4);
    let bundle = dir.path().join("db.qbundle");
    let since = (hour_start(Utc::now()) - Duration::hours(2)).to_rfc3339();
    let until = (hour_start(Utc::now()) - Duration::hours(1)).to_rfc3339();
    let out = run(&[
        "export",
        &DB[..8],
        "--since",
        &since,
        "--until",
        &until,
        "--store",
        s(&store),
        "-o",
        s(&bundle),
        "--format",
        "json",
    ]);
    assert!(out.status.success());
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["container_id"], DB);
    assert_eq!(
        r["rows"]["process"],
        sealed[&("process", "db")] / 4,
        "one hour of four"
    );
    assert_eq!(run(&["verify", s(&bundle)]).status.code(), Some(0));
    // Never overwritten.
    let again = run(&["export", "db", "--store", s(&store), "-o", s(&bundle)]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again).contains("never overwritten"));
}

/// The entries of a bundle: (path, entry type, data).
type Entries = Vec<(Vec<u8>, tar::EntryType, Vec<u8>)>;

fn unpack(bundle: &Path) -> Entries {
    let data = zstd::decode_all(fs::File::open(bundle).unwrap()).unwrap();
    let mut archive = tar::Archive::new(data.as_slice());
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = e.path_bytes().into_owned();
            let kind = e.header().entry_type();
            let mut buf = Vec::new();
            e.read_to_end(&mut buf).unwrap();
            (path, kind, buf)
        })
        .collect()
}

/// Writes entries as a tar.zst, paths and types exactly as given (no sanitizing).
fn pack(entries: &Entries, out: &Path) {
    let mut tar_bytes = Vec::new();
    {
        let mut b = tar::Builder::new(&mut tar_bytes);
        for (path, kind, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.as_old_mut().name[..path.len()].copy_from_slice(path);
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_size(if kind.is_file() { data.len() as u64 } else { 0 });
            if kind.is_symlink() || kind.is_hard_link() {
                h.set_link_name_literal(data).unwrap();
            }
            h.set_cksum();
            let body: &[u8] = if kind.is_file() { data } else { &[] };
            b.append(&h, body).unwrap();
        }
        b.finish().unwrap();
    }
    fs::write(out, zstd::encode_all(tar_bytes.as_slice(), 3).unwrap()).unwrap();
}

fn verify_bundle(bundle: &Path, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["verify", s(bundle)];
    args.extend_from_slice(extra);
    let out = run(&args);
    (out.status.code().unwrap_or(-1), text(&out))
}

fn named(entries: &mut Entries, name: &str) -> usize {
    entries
        .iter()
        .position(|e| e.0 == format!("quarry-bundle/{name}").as_bytes())
        .unwrap_or_else(|| panic!("{name} in the bundle"))
}

#[test]
fn tampering_with_a_bundle_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    fixture(&store, 2);
    let (bundle, public) = export_web(dir.path(), &store);
    let pubkey = s(&public).to_string();
    assert_eq!(verify_bundle(&bundle, &["--key", &pubkey]).0, 0);
    let original = unpack(&bundle);
    let t = |name: &str| dir.path().join(name);

    // One byte flipped anywhere in the bundle file: damaged (zstd checksum) or, where it hits
    // the payload of a file, that file is named.
    let bytes = fs::read(&bundle).unwrap();
    for pos in [0, 7, bytes.len() / 3, bytes.len() / 2, bytes.len() - 5] {
        let mut b = bytes.clone();
        b[pos] ^= 0x20;
        fs::write(t("flip.qbundle"), &b).unwrap();
        let (code, out) = verify_bundle(&t("flip.qbundle"), &["--key", &pubkey]);
        assert_eq!(code, 3, "flip at {pos}: {out}");
        assert!(out.contains("✗"), "{out}");
    }

    // A byte of a table changed inside, bundle re-packed: that file is named.
    let mut e = original.clone();
    let i = named(&mut e, "tables/process.parquet");
    let mid = e[i].2.len() / 2;
    e[i].2[mid] ^= 1;
    pack(&e, &t("altered.qbundle"));
    let (code, out) = verify_bundle(&t("altered.qbundle"), &[]);
    assert_eq!(code, 3);
    assert!(
        out.contains("altered file: tables/process.parquet"),
        "{out}"
    );

    // A file added, a file removed.
    let mut e = original.clone();
    e.push((
        b"quarry-bundle/case/planted.sh".to_vec(),
        tar::EntryType::Regular,
        b"x".to_vec(),
    ));
    let i = named(&mut e, "case/facts.json");
    e.remove(i);
    pack(&e, &t("changed.qbundle"));
    let (code, out) = verify_bundle(&t("changed.qbundle"), &[]);
    assert_eq!(code, 3);
    assert!(out.contains("unlisted file: case/planted.sh"), "{out}");
    assert!(out.contains("missing file: case/facts.json"), "{out}");

    // The manifest edited to match an altered file: the signature no longer verifies.
    let mut e = original.clone();
    let i = named(&mut e, "MANIFEST.json");
    let m = String::from_utf8(e[i].2.clone()).unwrap();
    e[i].2 = m
        .replacen("\"actor\": \"", "\"actor\": \"someone else, ", 1)
        .into_bytes();
    pack(&e, &t("resigned.qbundle"));
    let (code, out) = verify_bundle(&t("resigned.qbundle"), &[]);
    assert_eq!(code, 3);
    assert!(
        out.contains("bad signature") && out.contains("changed after signing"),
        "{out}"
    );

    // Another key, and no signature where a key is required.
    let other = t("other.key");
    assert!(run(&["keygen", "-o", s(&other)]).status.success());
    let (code, out) = verify_bundle(&bundle, &["--key", &format!("{}.pub", s(&other))]);
    assert_eq!(code, 3);
    assert!(
        out.contains("wrong key: the bundle is signed by ed25519:"),
        "{out}"
    );
    let mut e = original.clone();
    let i = named(&mut e, "MANIFEST.json.sig");
    e.remove(i);
    pack(&e, &t("unsigned.qbundle"));
    assert_eq!(
        verify_bundle(&t("unsigned.qbundle"), &[]).0,
        0,
        "unsigned is fine without --key"
    );
    let (code, out) = verify_bundle(&t("unsigned.qbundle"), &["--key", &pubkey]);
    assert_eq!(code, 3);
    assert!(out.contains("not signed"), "{out}");
}

#[test]
fn malicious_bundles_are_refused_without_writing_outside_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    fs::create_dir_all(&work).unwrap();
    let outside = dir.path().join("escaped");
    let abs = dir.path().join("absolute-target");
    let ok = (
        b"quarry-bundle/ok.txt".to_vec(),
        tar::EntryType::Regular,
        b"fine".to_vec(),
    );
    let cases: Vec<(&str, Entries, &str)> = vec![
        (
            "dotdot",
            vec![
                ok.clone(),
                (
                    b"quarry-bundle/../../escaped".to_vec(),
                    tar::EntryType::Regular,
                    b"pwned".to_vec(),
                ),
            ],
            "contains '..' (path traversal)",
        ),
        (
            "absolute",
            vec![(
                format!("{}", abs.display()).into_bytes(),
                tar::EntryType::Regular,
                b"pwned".to_vec(),
            )],
            "is an absolute path",
        ),
        (
            "symlink",
            vec![
                (
                    b"quarry-bundle/link".to_vec(),
                    tar::EntryType::Symlink,
                    s(dir.path()).as_bytes().to_vec(),
                ),
                (
                    b"quarry-bundle/link/escaped".to_vec(),
                    tar::EntryType::Regular,
                    b"pwned".to_vec(),
                ),
            ],
            "is a symlink",
        ),
        (
            "hardlink",
            vec![(
                b"quarry-bundle/passwd".to_vec(),
                tar::EntryType::Link,
                b"/etc/passwd".to_vec(),
            )],
            "is a hard link",
        ),
        (
            "device",
            vec![(
                b"quarry-bundle/mem".to_vec(),
                tar::EntryType::Char,
                Vec::new(),
            )],
            "is a device file",
        ),
    ];
    for (name, entries, expect) in cases {
        let bundle = work.join(format!("{name}.qbundle"));
        pack(&entries, &bundle);
        let target = work.join(format!("{name}-out"));
        let (code, out) = verify_bundle(&bundle, &["--extract-to", s(&target)]);
        assert_eq!(code, 3, "{name}: {out}");
        assert!(
            out.contains("unsafe entry refused") && out.contains(expect),
            "{name}: {out}"
        );
        assert!(
            !outside.exists() && !abs.exists(),
            "{name} wrote outside the target"
        );
        assert!(
            !work.join("escaped").exists(),
            "{name} wrote outside the target"
        );
        // Nothing but plain files and directories inside the target either.
        for e in walk(&target) {
            let m = fs::symlink_metadata(&e).unwrap();
            assert!(
                m.is_file() || m.is_dir(),
                "{name}: {} is neither",
                e.display()
            );
        }
    }

    // A zstd bomb: 1.06 GiB of zeros declared as one file compresses to a few hundred KiB.
    let bomb = work.join("bomb.qbundle");
    {
        let f = fs::File::create(&bomb).unwrap();
        let enc = zstd::Encoder::new(f, 1).unwrap().auto_finish();
        let mut b = tar::Builder::new(enc);
        let mut h = tar::Header::new_gnu();
        h.set_path("quarry-bundle/zeros").unwrap();
        h.set_size((1 << 30) + (64 << 20));
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, std::io::repeat(0).take((1 << 30) + (64 << 20)))
            .unwrap();
        b.into_inner().unwrap().flush().unwrap();
    }
    let size = fs::metadata(&bomb).unwrap().len();
    assert!(size < 1 << 20, "the bomb is small: {size}");
    let target = work.join("bomb-out");
    let (code, out) = verify_bundle(&bomb, &["--extract-to", s(&target)]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("decompression bomb refused"), "{out}");
    assert!(dir_bytes(&target) == 0, "nothing of the bomb was written");

    // Zeros with no tar header at all (an endless end-of-archive): caught while draining.
    let raw = work.join("raw-bomb.qbundle");
    {
        let f = fs::File::create(&raw).unwrap();
        let mut enc = zstd::Encoder::new(f, 1).unwrap().auto_finish();
        std::io::copy(&mut std::io::repeat(0).take(96 << 20), &mut enc).unwrap();
    }
    let (code, out) = verify_bundle(&raw, &["--max-size", "64M"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("decompression bomb refused"), "{out}");

    // Not a bundle at all.
    let junk = work.join("junk.qbundle");
    fs::write(&junk, b"certainly not zstd").unwrap();
    let (code, out) = verify_bundle(&junk, &[]);
    assert_eq!(code, 3);
    assert!(out.contains("damaged bundle"), "{out}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.clone());
            if e.file_type().unwrap().is_dir() {
                out.extend(walk(&p));
            }
        }
    }
    out
}

fn dir_bytes(dir: &Path) -> u64 {
    walk(dir)
        .iter()
        .filter_map(|p| fs::symlink_metadata(p).ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

#[test]
fn export_refuses_symlinks_in_the_case_directory() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    fixture(&store, 1);
    let case = case_dir(dir.path());
    std::os::unix::fs::symlink("/etc/shadow", case.join("images/shadow")).unwrap();
    let bundle = dir.path().join("b.qbundle");
    let out = run(&[
        "export",
        "web",
        "--store",
        s(&store),
        "--case",
        s(&case),
        "-o",
        s(&bundle),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("it is a symlink"), "{}", text(&out));
    assert!(!bundle.exists());
}

// ---- retention inside the recorder (root) ------------------------------------------------------

/// The recorder applies retention on a schedule while it records: old hours go, the rows it is
/// recording now stay, and the store verifies.
#[test]
fn recorder_applies_retention_while_recording() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    fixture(&store, 6);
    let old_hours_segments = Store::at(&store).segments(Table::Process).unwrap().len();
    let mark = marker("retain");
    let rec = RecorderProcess::start(
        &store,
        &[
            "--seal-interval",
            "1s",
            "--retain-size",
            "1",
            "--retain-interval",
            "1s",
        ],
    );
    // Wait until retention has run (it logs what it removed) while recording goes on.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut seen = false;
    while std::time::Instant::now() < deadline && !seen {
        std::process::Command::new("/bin/true")
            .arg(&mark)
            .status()
            .unwrap();
        if let Ok(line) = rec
            .stderr_lines
            .recv_timeout(std::time::Duration::from_secs(1))
        {
            seen = line.contains("retention: removed");
        }
    }
    assert!(seen, "the recorder reported a retention run");
    std::process::Command::new("/bin/true")
        .arg(&mark)
        .status()
        .unwrap();
    let out = rec.stop_with(nix::sys::signal::Signal::SIGINT);
    assert!(out.status.success(), "{out:?}");

    let rows = process_rows(&store);
    let marked = rows_with_marker(&rows, &mark);
    assert!(
        marked.len() >= 2,
        "rows recorded during retention are kept: {}",
        marked.len()
    );
    let left = Store::at(&store).segments(Table::Process).unwrap().len();
    assert!(left > 0);
    // Every segment of the hours that closed more than five minutes ago is gone.
    let cutoff = Utc::now() - Duration::minutes(5);
    for p in Store::at(&store).segments(Table::Process).unwrap() {
        let rel = p
            .strip_prefix(&store)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let (part, _) = Partition::from_segment_path(&rel).unwrap();
        assert!(
            part.hour_end() > cutoff - Duration::seconds(30),
            "{rel} kept"
        );
    }
    assert!(old_hours_segments > 0);
    let (code, v) = verify(&store);
    assert_eq!(code, 0, "{v}");
    assert!(v.contains("size cap"), "{v}");
}

/// A real container recorded by the real recorder, exported by its id after it is gone, and
/// the bundle verifies and holds its rows (and nothing of the host).
#[test]
fn an_export_of_a_recorded_container_verifies() {
    if !require_root() {
        return;
    }
    let name = format!("qt-export-{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (inside, outside) = (marker("exp-in"), marker("exp-out"));
    {
        let c = common::containers::RuncContainer::start(&name);
        let rec = RecorderProcess::start(&store, &["--seal-interval", "1s"]);
        assert_eq!(
            c.exec(&["/bin/sh", "-c", &format!("/bin/true {inside}; exit 4")]),
            4
        );
        std::process::Command::new("/bin/true")
            .arg(&outside)
            .status()
            .unwrap();
        let out = rec.stop_with(nix::sys::signal::Signal::SIGINT);
        assert!(out.status.success(), "{out:?}");
    } // the container is deleted here: export finds it in the store
    let key = dir.path().join("k");
    assert!(run(&["keygen", "-o", s(&key)]).status.success());
    let bundle = dir.path().join("c.qbundle");
    let out = run(&[
        "export",
        &name,
        "--store",
        s(&store),
        "--sign",
        s(&key),
        "-o",
        s(&bundle),
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["container_id"], name.as_str());
    assert!(r["rows"]["process"].as_u64().unwrap() >= 2, "{r}");

    let target = dir.path().join("x");
    let (code, said) = verify_bundle(
        &bundle,
        &[
            "--key",
            &format!("{}.pub", s(&key)),
            "--extract-to",
            s(&target),
        ],
    );
    assert_eq!(code, 0, "{said}");
    assert!(
        said.contains("signature: valid, by the given key"),
        "{said}"
    );
    let py = python()
        .arg(tests_dir().join("py/read_bundle.py"))
        .arg(target.join("tables"))
        .output()
        .unwrap();
    assert!(
        py.status.success(),
        "{}",
        String::from_utf8_lossy(&py.stderr)
    );
    let counts: serde_json::Value = serde_json::from_slice(&py.stdout).unwrap();
    assert_eq!(counts["process"]["containers"], serde_json::json!([name]));
    let batches = quarry_store::read::read_segment(&target.join("tables/process.parquet")).unwrap();
    let mut argvs = Vec::new();
    for b in &batches {
        let argv = b.column_by_name("argv").unwrap().as_list::<i32>();
        for i in 0..b.num_rows() {
            if !arrow::array::Array::is_null(argv, i) {
                let v = argv.value(i);
                let v = v.as_string::<i32>();
                argvs.extend((0..arrow::array::Array::len(v)).map(|j| v.value(j).to_string()));
            }
        }
    }
    assert!(
        argvs.iter().any(|a| a.contains(&inside)),
        "the container's exec is exported"
    );
    assert!(
        !argvs.iter().any(|a| a.contains(&outside)),
        "nothing of the host is"
    );
}

// ---- only verified segments are evidence ------------------------------------------------------

/// `quarry sql` with CSV output: (the one value the query returns, stderr).
fn sql_value(store: &Path, query: &str) -> (String, String) {
    let out = run(&["sql", "--store", s(store), "--format", "csv", query]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let value = stdout.lines().nth(1).unwrap_or_default().to_string();
    (value, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// JSON stdout of a command, and its stderr.
fn json_of(args: &[&str]) -> (serde_json::Value, String) {
    let out = run(args);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    (v, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn planted_altered_and_deleted_segments_are_never_read_as_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let sealed = fixture(&store, 1);
    let total = sealed[&("process", "web")] + sealed[&("process", "db")];
    let count = "SELECT count(*) FROM process";
    assert_eq!(sql_value(&store, count).0, total.to_string());
    let timeline =
        |store: &Path| json_of(&["timeline", "web", "--store", s(store), "--format", "json"]);
    let hunt = |store: &Path| json_of(&["hunt", "--store", s(store), "--format", "json"]);
    let (before_timeline, _) = timeline(&store);
    let (before_hunt, _) = hunt(&store);
    let events = |t: &serde_json::Value| t["events"].as_array().unwrap().len();

    // A sealed segment of web copied in under a name that looks like any other.
    let segments = Store::at(&store).segments(Table::Process).unwrap();
    let web_segment = segments
        .iter()
        .find(|p| rows_by_container_of(p).contains_key("web"))
        .unwrap()
        .clone();
    let planted = web_segment.with_file_name("20000101T000000.000000Z-00000007-999999.parquet");
    fs::copy(&web_segment, &planted).unwrap();
    let warned = |stderr: &str, path: &Path, why: &str| {
        assert!(
            stderr.contains(&format!("skipped segment {}", path.display()))
                && stderr.contains(why)
                && stderr.contains("quarry verify"),
            "no warning about {} ({why}): {stderr}",
            path.display()
        );
    };
    let (n, stderr) = sql_value(&store, count);
    assert_eq!(n, total.to_string(), "the planted copy is not counted");
    warned(&stderr, &planted, "not listed in the store manifest");
    let (t, stderr) = timeline(&store);
    assert_eq!(events(&t), events(&before_timeline));
    warned(&stderr, &planted, "not listed");
    let (h, stderr) = hunt(&store);
    assert_eq!(h, before_hunt);
    warned(&stderr, &planted, "not listed");
    let bundle = dir.path().join("web.qbundle");
    let (report, stderr) = json_of(&[
        "export",
        "web",
        "--store",
        s(&store),
        "-o",
        s(&bundle),
        "--format",
        "json",
    ]);
    assert_eq!(report["rows"]["process"], sealed[&("process", "web")]);
    warned(&stderr, &planted, "not listed");
    assert!(report["skipped"][0].as_str().unwrap().contains(s(&planted)));
    assert_eq!(run(&["verify", s(&bundle)]).status.code(), Some(0));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&bundle).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600, "a bundle is the exporter's alone");
    }

    // Altered in place (same size, one byte): only the hash tells, and its rows are left out.
    let mut data = fs::read(&segments[0]).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x01;
    fs::write(&segments[0], &data).unwrap();
    let (n, stderr) = sql_value(&store, count);
    assert_eq!(n, (total - 10).to_string());
    warned(&stderr, &segments[0], "altered");

    // Deleted behind the manifest's back: the rest of the store still answers.
    fs::remove_file(&segments[1]).unwrap();
    let (n, stderr) = sql_value(&store, count);
    assert_eq!(n, (total - 20).to_string());
    warned(&stderr, &segments[1], "listed in the manifest but gone");
    assert_eq!(verify(&store).0, 3, "verify still fails the store");
}

/// Rows per container name in one segment file.
fn rows_by_container_of(segment: &Path) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for b in quarry_store::read::read_segment(segment).unwrap() {
        let c = b.column_by_name("container_id").unwrap().as_string::<i32>();
        for i in 0..b.num_rows() {
            let name = if c.value(i) == WEB { "web" } else { "other" };
            *out.entry(name.to_string()).or_default() += 1;
        }
    }
    out
}

/// An action that succeeded but whose row cannot be written is not reported as a failure, nor
/// as a plain success: the row is printed, and the exit code (5) says it is not on the record.
#[test]
fn an_export_that_cannot_be_recorded_says_so_and_keeps_the_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    fixture(&store, 1);
    // The store refuses to write through a symlinked staging directory.
    let elsewhere = dir.path().join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    fs::remove_dir_all(store.join(".staging")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, store.join(".staging")).unwrap();
    let bundle = dir.path().join("web.qbundle");
    let out = run(&["export", "web", "--store", s(&store), "-o", s(&bundle)]);
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the export (result: ok) is NOT on the record")
            && stderr.contains("record it by hand; the row: {"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("exported"));
    assert_eq!(run(&["verify", s(&bundle)]).status.code(), Some(0));
    assert!(
        fs::read_dir(&elsewhere).unwrap().next().is_none(),
        "nothing written through the link"
    );
}
