//! SQL tests over a fixture store that need more than rows: damaged segments, timelines and
//! hunts. Plain queries and their expected rows are `.slt` files in `tests/sql/` (tests/slt.rs).

// A test fails by panicking: unwrap is how it says what went wrong.
#![allow(clippy::unwrap_used)]

mod common;

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use quarry_query::hunt::{self, Scope};
use quarry_query::report::Report;
use quarry_query::timeline::{Request, Timeline};
use quarry_query::{Catalog, QueryError};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn render(batches: &[RecordBatch]) -> Vec<String> {
    let options = FormatOptions::default().with_null("NULL");
    let mut lines = Vec::new();
    for b in batches {
        let formatters: Vec<_> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        for row in 0..b.num_rows() {
            let cells: Vec<String> = formatters
                .iter()
                .map(|f| f.value(row).to_string())
                .collect();
            lines.push(cells.join(" | "));
        }
    }
    lines
}

#[test]
fn truncated_segment_is_skipped_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::build(dir.path());
    let victim = store.segments(quarry_store::Table::Process).unwrap()[1].clone();
    let bytes = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, &bytes[..bytes.len() / 2]).unwrap();
    rt().block_on(async {
        let mut catalog = Catalog::open(dir.path()).await.unwrap();
        let skipped = catalog.skipped().to_vec();
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert_eq!(skipped[0].path, victim);
        assert!(
            skipped[0].reason.contains("truncated"),
            "{}",
            skipped[0].reason
        );
        // The other segment of the table still answers: the first five rows.
        let got = catalog.sql("SELECT count(*) FROM process").await.unwrap();
        assert_eq!(render(&got), vec!["5"]);
    });
}

#[test]
fn segment_damaged_inside_is_found_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::build(dir.path());
    let victim = store.segments(quarry_store::Table::File).unwrap()[0].clone();
    let mut bytes = std::fs::read(&victim).unwrap();
    // Garble the column chunks after the magic, keep the footer intact.
    let end = bytes.len() / 2;
    for b in &mut bytes[4..end] {
        *b ^= 0x5a;
    }
    std::fs::write(&victim, &bytes).unwrap();
    rt().block_on(async {
        let mut catalog = Catalog::open(dir.path()).await.unwrap();
        let got = catalog.sql("SELECT count(*) FROM file").await.unwrap();
        assert_eq!(render(&got), vec!["0"]);
        let skipped = catalog.skipped();
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert_eq!(skipped[0].path, victim);
        // The process table is unaffected.
        let got = catalog.sql("SELECT count(*) FROM process").await.unwrap();
        assert_eq!(render(&got), vec!["13"]);
    });
}

#[test]
fn not_a_store_says_how_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let err = rt().block_on(Catalog::open(dir.path())).err().unwrap();
    assert!(matches!(err, QueryError::NotAStore(_)), "{err}");
    assert!(err.to_string().contains("--store"), "{err}");
}

#[test]
fn timeline_orders_the_story_and_builds_the_tree_across_pid_reuse() {
    let dir = tempfile::tempdir().unwrap();
    common::build(dir.path());
    rt().block_on(async {
        let mut catalog = Catalog::open(dir.path()).await.unwrap();
        let request = Request {
            container: "web".into(),
            since: None,
            until: None,
        };
        let t = Timeline::build(&mut catalog, &request).await.unwrap();
        assert_eq!(t.container.id, common::WEB);
        // One root (the entrypoint) with four children: wget, payload, cat on the reused pid
        // 101 (told apart by their start times), and the memfd program.
        assert_eq!(t.processes.len(), 1, "{:#?}", t.processes);
        let root = &t.processes[0];
        assert_eq!(root.pid, 100);
        let kids: Vec<(i64, u64, &str)> = root
            .children
            .iter()
            .map(|c| (c.pid, c.start_ns, c.exec_chain[0].filename.as_str()))
            .collect();
        assert_eq!(
            kids,
            vec![
                (101, 2000, "/usr/bin/wget"),
                (102, 4000, "/tmp/payload"),
                (101, 9000, "/bin/cat"),
                (103, 11000, "/proc/self/fd/3"),
            ]
        );
        assert_eq!(root.children[2].exit_code, Some(1));
        // Steps in time order, the gap and the responder's action included, the other
        // container's rows not.
        let steps: Vec<(&str, &str)> = t
            .events
            .iter()
            .map(|e| (e.source.as_str(), e.event.as_str()))
            .collect();
        assert_eq!(
            steps,
            vec![
                ("process", "exec"),
                ("process", "fork"),
                ("process", "exec"),
                ("net", "connect"),
                ("file", "open"),
                ("process", "exit"),
                ("process", "fork"),
                ("process", "exec"),
                ("gap", "lost"),
                ("process", "fork"),
                ("process", "exec"),
                ("file", "open"),
                ("file", "open"),
                ("process", "exit"),
                ("process", "fork"),
                ("signal", "memfd_create"),
                ("process", "exec"),
                ("action", "isolate"),
            ]
        );
        // The responder's report: the same story with the built-in rules' findings on it.
        let report = Report::build(&mut catalog, &request, &hunt::builtin_rules())
            .await
            .unwrap();
        assert_eq!(report.timeline.events.len(), t.events.len());
        assert!(
            report
                .findings
                .iter()
                .all(|f| f.container_id.as_deref() == Some(common::WEB)),
            "{:#?}",
            report.findings
        );
        let rules: Vec<&str> = report.findings.iter().map(|f| f.rule.as_str()).collect();
        assert!(!rules.is_empty(), "no finding on the payload container");
        let html = quarry_query::html::render(&report, "test");
        assert!(html.contains("/tmp/payload") && html.contains("isolate by alice"));
        assert!(!html.contains("src=\"http"));
        assert!(
            html.contains("flagged sev-"),
            "no step is marked with its finding"
        );
        for rule in rules {
            assert!(html.contains(&format!(">{rule}</a>")), "{rule} not linked");
        }
    });
}

#[test]
fn unknown_container_names_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    common::build(dir.path());
    rt().block_on(async {
        let mut catalog = Catalog::open(dir.path()).await.unwrap();
        let request = Request {
            container: "nope".into(),
            since: None,
            until: None,
        };
        let err = Timeline::build(&mut catalog, &request).await.unwrap_err();
        assert!(err.to_string().contains("quarry ps --all"), "{err}");
        let request = Request {
            container: "c".into(),
            since: None,
            until: None,
        };
        let err = Timeline::build(&mut catalog, &request).await.unwrap_err();
        assert!(
            matches!(
                err,
                QueryError::Container(quarry_containers::ResolveError::Ambiguous { .. })
            ),
            "{err}"
        );
        let request = Request {
            container: "web' OR '1'='1".into(),
            since: None,
            until: None,
        };
        let err = Timeline::build(&mut catalog, &request).await.unwrap_err();
        assert!(matches!(err, QueryError::Refused(_)), "{err}");
    });
}

#[test]
fn hunt_finds_the_fixture_attack_and_points_at_rows() {
    let dir = tempfile::tempdir().unwrap();
    common::build(dir.path());
    rt().block_on(async {
        let mut catalog = Catalog::open(dir.path()).await.unwrap();
        let rules = hunt::builtin_rules();
        let findings = hunt::run(&mut catalog, &rules, &Scope::default())
            .await
            .unwrap();
        let mut got: Vec<(&str, i64)> = findings
            .iter()
            .map(|f| (f.rule.as_str(), f.pid.unwrap()))
            .collect();
        got.sort();
        // drift (payload written by wget, then executed), sensitive read (/etc/shadow),
        // network tool (wget), fileless exec. The entrypoint shells are not "spawned shells".
        assert_eq!(
            got,
            vec![
                ("QH002", 102),
                ("QH004", 101),
                ("QH009", 101),
                ("QH010", 103)
            ],
            "{findings:#?}"
        );
        // Each finding points at its row.
        for f in &findings {
            let sql = format!(
                "SELECT count(*) FROM {} WHERE host = '{}' AND pid = {} AND ktime_ns = {}",
                f.source_table,
                f.host.as_deref().unwrap(),
                f.pid.unwrap(),
                f.ktime_ns.unwrap()
            );
            let rows = catalog.sql(&sql).await.unwrap();
            assert_eq!(render(&rows), vec!["1"], "{sql}");
        }
        // Scoped to the container's lifetime (partition filters on every table the rules
        // read, both sides of their joins), the same findings; a window after its life,
        // none.
        let web = quarry_query::timeline::find_container(&mut catalog, "web")
            .await
            .unwrap();
        let scope = Scope {
            containers: Some(vec![web.id.clone()]),
            ..Scope::default()
        }
        .within_lifetime(&web);
        assert!(scope.since.is_some() && scope.until.is_some());
        let scoped = hunt::run(&mut catalog, &rules, &scope).await.unwrap();
        let key = |f: &hunt::Finding| (f.rule.clone(), f.pid, f.ktime_ns, f.time);
        assert_eq!(
            scoped.iter().map(key).collect::<Vec<_>>(),
            findings.iter().map(key).collect::<Vec<_>>()
        );
        let later = Scope {
            since: web.last_seen.map(|t| t + chrono::Duration::hours(2)),
            ..Scope::default()
        };
        assert!(
            hunt::run(&mut catalog, &rules, &later)
                .await
                .unwrap()
                .is_empty()
        );
        // Findings come in time order.
        assert!(findings.windows(2).all(|w| w[0].time <= w[1].time));
        // Scoped to the other container: nothing.
        let scope = Scope {
            containers: Some(vec![common::DB.into()]),
            ..Scope::default()
        };
        assert!(
            hunt::run(&mut catalog, &rules, &scope)
                .await
                .unwrap()
                .is_empty()
        );
    });
}

/// A syscall segment sealed before `ktime_slack_ns` existed still answers: its rows read with
/// the column NULL (their times were each read from the clock), next to today's segments.
#[test]
fn syscall_segments_from_before_the_slack_column_read_as_exact() {
    use quarry_store::manifest::NewEntry;
    use quarry_store::schema::{SyscallBuilder, SyscallRow};
    use quarry_store::{Manifest, ManifestOp, Partition, Store, Table};

    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path()).unwrap();
    let partition = Partition::for_time(Table::Syscall, common::t0(), "node-1");
    let batch_of = |slack: [Option<u64>; 3]| {
        let mut b = SyscallBuilder::default();
        let comm = b.intern_comm("sh");
        for (i, ktime_slack_ns) in slack.into_iter().enumerate() {
            b.append(SyscallRow {
                time_micros: common::t0().timestamp_micros() + i as i64,
                ktime_ns: 1_000 + i as u64,
                pid: 7,
                tid: 7,
                comm,
                cgroup_id: 1,
                nr: 39,
                ret: 7,
                ktime_slack_ns,
                source: 0,
            });
        }
        b.finish("node-1", |_| Some("getpid"))
    };
    store
        .seal(&partition, &batch_of([None, Some(300), Some(300)]), 1, 0)
        .unwrap();

    // The older segment: the same kind of rows without the column, logged like any other.
    let mut old = batch_of([None; 3]);
    old.remove_column(old.schema().index_of("ktime_slack_ns").unwrap());
    let rel = format!(
        "{}/old-segment.parquet",
        partition.relative_dir().to_string_lossy()
    );
    let path = dir.path().join(&rel);
    let mut writer = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&path).unwrap(),
        old.schema(),
        None,
    )
    .unwrap();
    writer.write(&old).unwrap();
    writer.close().unwrap();
    Manifest::new(store.manifest_path())
        .append(NewEntry {
            op: ManifestOp::Add,
            table: "syscall".into(),
            path: rel,
            rows: 3,
            bytes: std::fs::metadata(&path).unwrap().len(),
            sha256: quarry_store::segment::sha256_file(&path).unwrap(),
            reason: None,
            replaces: Vec::new(),
        })
        .unwrap();

    rt().block_on(async {
        let mut catalog = Catalog::open(dir.path()).await.unwrap();
        assert!(catalog.skipped().is_empty(), "{:?}", catalog.skipped());
        let got = catalog
            .sql("SELECT count(*), count(ktime_slack_ns), max(ktime_slack_ns) FROM syscall")
            .await
            .unwrap();
        assert_eq!(render(&got), vec!["6 | 2 | 300"]);
    });
}

/// The table a person reads shows control, zero-width and bidi characters as escapes, also
/// inside lists; CSV and JSON keep the raw value.
#[test]
fn table_output_escapes_what_would_rewrite_the_terminal() {
    use quarry_query::output::{Format, write};
    let dir = tempfile::tempdir().unwrap();
    common::build(dir.path());
    rt().block_on(async {
        let mut catalog = Catalog::open(dir.path()).await.unwrap();
        let batches = catalog
            .sql(
                "SELECT concat('a', chr(27), ']0;owned', chr(7), chr(8238), 'gpj.sh') AS v, \
                 make_array(concat('x', chr(10), 'y')) AS argv",
            )
            .await
            .unwrap();
        let render_as = |format| {
            let mut out: Vec<u8> = Vec::new();
            // CSV has no lists: the scalar column only.
            let batches: Vec<RecordBatch> = match format {
                Format::Csv => batches.iter().map(|b| b.project(&[0]).unwrap()).collect(),
                _ => batches.clone(),
            };
            write(&batches, format, &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        let table = render_as(Format::Table);
        assert!(
            table.contains("a\\u{1b}]0;owned\\u{7}\\u{202e}gpj.sh"),
            "{table}"
        );
        assert!(table.contains("x\\ny"), "{table}");
        assert!(
            !table.contains('\u{1b}') && !table.contains('\u{202e}') && !table.contains('\u{7}'),
            "{table:?}"
        );
        let csv = render_as(Format::Csv);
        assert!(
            csv.contains("a\u{1b}]0;owned\u{7}\u{202e}gpj.sh"),
            "{csv:?}"
        );
        let json = render_as(Format::Json);
        assert!(json.contains("\\u001b]0;owned"), "{json}");
    });
}

/// A copy of a sealed segment under a new name is not read, by SQL, timelines or hunts, and is
/// named in the session's skipped list.
#[test]
fn planted_copy_of_a_segment_is_not_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::build(dir.path());
    let original = store.segments(quarry_store::Table::Process).unwrap()[1].clone();
    let planted = original.with_file_name("20260101T000000.000000Z-00000007-000099.parquet");
    std::fs::copy(&original, &planted).unwrap();
    rt().block_on(async {
        let mut catalog = Catalog::open(dir.path()).await.unwrap();
        assert_eq!(catalog.skipped().len(), 1, "{:?}", catalog.skipped());
        assert_eq!(catalog.skipped()[0].path, planted);
        assert!(catalog.skipped()[0].reason.contains("not listed"));
        let got = catalog.sql("SELECT count(*) FROM process").await.unwrap();
        assert_eq!(render(&got), vec!["13"]);
        let request = Request {
            container: "web".into(),
            since: None,
            until: None,
        };
        let t = Timeline::build(&mut catalog, &request).await.unwrap();
        assert_eq!(t.processes[0].children.len(), 4);
        let findings = hunt::run(&mut catalog, &hunt::builtin_rules(), &Scope::default())
            .await
            .unwrap();
        assert_eq!(findings.len(), 4, "{findings:#?}");
    });
}

/// A segment altered after the session listed it is refused when first read, and the statement
/// answers from the others.
#[test]
fn segment_altered_after_listing_is_refused_when_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::build(dir.path());
    let victim = store.segments(quarry_store::Table::Process).unwrap()[0].clone();
    rt().block_on(async {
        let mut catalog = Catalog::open(dir.path()).await.unwrap();
        assert!(catalog.skipped().is_empty());
        let mut bytes = std::fs::read(&victim).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x01;
        std::fs::write(&victim, &bytes).unwrap();
        let got = catalog.sql("SELECT count(*) FROM process").await.unwrap();
        assert_eq!(render(&got), vec!["8"]);
        assert_eq!(catalog.skipped().len(), 1, "{:?}", catalog.skipped());
        assert!(catalog.skipped()[0].reason.contains("altered"));
    });
}

/// Every built-in rule has a fixture with a positive and a negative case, and raises exactly
/// the findings each case expects (what `quarry hunt --test` runs).
#[test]
fn builtin_rules_pass_their_fixtures() {
    rt().block_on(async {
        let mut failures = Vec::new();
        for rule in hunt::builtin_rules() {
            let text = rule
                .fixture
                .as_deref()
                .expect("every built-in rule has a fixture");
            let results = match quarry_query::fixture::run(&rule, text).await {
                Ok(r) => r,
                Err(e) => {
                    failures.push(format!("{}: {e}", rule.id));
                    continue;
                }
            };
            assert!(
                results.iter().any(|r| r.expected > 0) && results.iter().any(|r| r.expected == 0),
                "{}: needs a positive and a negative case",
                rule.id
            );
            failures.extend(
                results
                    .into_iter()
                    .filter(|r| !r.passed())
                    .map(|r| format!("{r:?}")),
            );
        }
        assert!(failures.is_empty(), "{failures:#?}");
    });
}

/// The rule an indicator list becomes (`hunt --ioc`), over fixtures: each kind of indicator
/// matches its rows, and rows near them do not.
#[test]
fn an_indicator_list_matches_hashes_paths_and_networks() {
    let list = quarry_query::ioc::IocList::parse(
        "# hashes, a path, a network\naaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n/tmp/miner\n203.0.113.0/24\nevil.example.com\n",
    )
    .unwrap();
    let rule = list.rule("test.txt");
    let fixture = r#"{"cases": [
      {"name": "an exec whose hash is listed", "findings": 1, "rows": [
        {"table": "process", "ms": 0, "pid": 6, "comm": "x", "event": "exec", "filename": "/opt/x", "argv": ["x"], "ppid": 2, "exe_path": "/opt/x", "exe_sha256": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}
      ]},
      {"name": "a listed path written, then executed", "findings": 2, "rows": [
        {"table": "file", "ms": 0, "pid": 5, "comm": "cp", "event": "open", "path": "/tmp/miner", "syscall": "openat", "flags": 577, "ret": 3},
        {"table": "process", "ms": 10, "pid": 6, "comm": "miner", "event": "exec", "filename": "/tmp/miner", "argv": ["miner"], "ppid": 2, "exe_path": "/tmp/miner"}
      ]},
      {"name": "a connect into the listed network", "findings": 1, "rows": [
        {"table": "net", "ms": 0, "pid": 6, "comm": "x", "event": "connect", "family": "inet", "protocol": "tcp", "remote_addr": "203.0.113.9", "remote_port": 443, "ret": -115}
      ]},
      {"name": "another hash, path and address", "findings": 0, "rows": [
        {"table": "process", "ms": 0, "pid": 6, "comm": "x", "event": "exec", "filename": "/tmp/miner2", "argv": ["x"], "ppid": 2, "exe_path": "/tmp/miner2", "exe_sha256": "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"},
        {"table": "net", "ms": 5, "pid": 6, "comm": "x", "event": "connect", "family": "inet", "protocol": "tcp", "remote_addr": "203.0.114.9", "remote_port": 443, "ret": -115}
      ]}
    ]}"#;
    rt().block_on(async {
        let results = quarry_query::fixture::run(&rule, fixture).await.unwrap();
        let failed: Vec<_> = results.iter().filter(|r| !r.passed()).collect();
        assert!(failed.is_empty(), "{failed:?}");
    });
}
