//! The memory budget of a query session: over a small budget a query fails with the error that
//! names the budget and the flag; with a budget below what it would hold in memory, it spills
//! to disk and still gives the answer DuckDB gives on the same files.

// A test fails by panicking: unwrap is how it says what went wrong.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use chrono::{Duration, TimeZone, Utc};
use quarry_query::output::{Format, Writer};
use quarry_query::{Catalog, QueryError, SessionOptions};
use quarry_store::schema::{FileRow, RowIdentity, file_batch};
use quarry_store::{Partition, Store, Table};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A store of `segments` x `rows` file rows with distinct paths (as many groups as rows).
fn build(root: &Path, segments: u64, rows: u64) {
    let store = Store::create(root).unwrap();
    let t0 = Utc.with_ymd_and_hms(2026, 11, 2, 9, 0, 0).unwrap();
    for s in 0..segments {
        let batch: Vec<FileRow> = (0..rows)
            .map(|i| {
                let n = s * rows + i;
                let path = format!("/srv/data/volume-{:03}/object-{n:08}.bin", n % 97);
                FileRow {
                    id: RowIdentity {
                        time: t0 + Duration::microseconds(n as i64),
                        ktime_ns: 1_000_000 + n,
                        pid: 100 + (n % 13) as i32,
                        tid: 100 + (n % 13) as i32,
                        comm: "app".into(),
                        cgroup_id: 5,
                        container_id: Some(format!("c{:063}", n % 3)),
                    },
                    event: "open",
                    syscall: "openat",
                    path: Some(path.clone()),
                    abs_path: Some(path),
                    resolution: "absolute",
                    path2: None,
                    abs_path2: None,
                    flags: Some(0),
                    mode: None,
                    owner_uid: None,
                    owner_gid: None,
                    fd: Some(3),
                    ret: Some((n % 5) as i64),
                    kernel_path: None,
                    path_resolution: None,
                }
            })
            .collect();
        let p = Partition::for_time(Table::File, t0, "node1");
        store.seal(&p, &file_batch("node1", &batch), 1, s).unwrap();
    }
}

/// Groups as many as the rows, sorted: both the aggregation and the sort must hold or spill
/// every row.
const QUERY: &str = "SELECT abs_path, count(*) AS n, sum(ret) AS total, min(ktime_ns) AS first \
                     FROM file GROUP BY abs_path ORDER BY abs_path";

async fn csv(catalog: &mut Catalog, sql: &str) -> Result<String, QueryError> {
    let mut stream = catalog.sql_stream(sql).await?;
    let mut out: Vec<u8> = Vec::new();
    let mut writer = Writer::new(Format::Csv, stream.schema(), &mut out)?;
    while let Some(batch) = stream.next().await {
        writer.write(&batch?)?;
    }
    writer.finish()?;
    Ok(String::from_utf8(out).unwrap())
}

fn duckdb_csv(root: &Path) -> String {
    let script = format!(
        "import duckdb, sys\n\
         con = duckdb.connect()\n\
         con.execute(\"SET enable_progress_bar = false\")\n\
         rows = con.execute(\"\"\"SELECT abs_path, count(*) AS n, sum(ret) AS total, \
         min(ktime_ns) AS first FROM read_parquet('{}/file/**/*.parquet', \
         hive_partitioning=true) GROUP BY abs_path ORDER BY abs_path\"\"\").fetchall()\n\
         print('abs_path,n,total,first')\n\
         for r in rows: print(','.join(str(v) for v in r))\n",
        root.display()
    );
    // The pinned DuckDB of scripts/setup, in the workspace's .venv (not the machine's Python).
    let python = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python3");
    assert!(
        python.is_file(),
        "{} is missing: run `sudo scripts/setup` (it installs duckdb into .venv)",
        python.display()
    );
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "duckdb: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn over_budget_fails_naming_the_budget_and_within_it_spills_to_the_right_answer() {
    let dir = tempfile::tempdir().unwrap();
    let spill = tempfile::tempdir().unwrap();
    build(dir.path(), 6, 50_000);
    rt().block_on(async {
        let options = |limit: u64| SessionOptions {
            memory_limit: Some(limit),
            spill_dir: Some(spill.path().to_path_buf()),
        };

        // Unbounded enough to hold everything: the reference run, and how much it holds.
        let mut roomy = Catalog::open_with(dir.path(), options(1 << 30))
            .await
            .unwrap();
        let expected = csv(&mut roomy, QUERY).await.unwrap();
        assert_eq!(expected.lines().count(), 300_001);
        assert_eq!(
            expected,
            duckdb_csv(dir.path()),
            "quarry and DuckDB disagree"
        );
        drop(roomy);

        // A budget far below one batch's worth: the error names it and the flag.
        let mut tiny = Catalog::open_with(dir.path(), options(1 << 20))
            .await
            .unwrap();
        let err = csv(&mut tiny, QUERY).await.unwrap_err();
        assert!(matches!(err, QueryError::MemoryBudget { .. }), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("budget of 1.0 MiB") && text.contains("--memory-limit"),
            "{text}"
        );
        drop(tiny);

        // A budget below what the query holds in memory: it spills, and the answer is DuckDB's.
        let mut spilling = Catalog::open_with(dir.path(), options(48 << 20))
            .await
            .unwrap();
        let got = csv(&mut spilling, QUERY).await.unwrap();
        assert_eq!(got, expected);
        let analyzed = csv(&mut spilling, &format!("EXPLAIN ANALYZE {QUERY}"))
            .await
            .unwrap();
        let spilled: u64 = analyzed
            .split("spill_count=")
            .skip(1)
            .filter_map(|rest| {
                rest.split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum();
        assert!(spilled > 0, "the query did not spill: {analyzed}");
        // Spill files live in a private directory inside the one given, gone with the session.
        let private: Vec<_> = std::fs::read_dir(spill.path()).unwrap().flatten().collect();
        assert_eq!(private.len(), 1);
        use std::os::unix::fs::PermissionsExt;
        let mode = private[0].metadata().unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        drop(spilling);
        assert_eq!(std::fs::read_dir(spill.path()).unwrap().count(), 0);
    });
}
