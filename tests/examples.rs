//! The top-level examples/ run as documented: the custom rule's fixtures pass with
//! `quarry hunt --rules examples/rules --test`, and every question of examples/hunting.sql
//! runs against a store the real recorder wrote (as root), piped into `quarry sql` as the file
//! says and one by one.

// A test fails by panicking: unwrap is how it says what went wrong.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::*;
use nix::sys::signal::Signal;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples")
}

#[test]
fn example_rule_fixtures_pass_and_the_rule_is_listed() {
    let rules = examples().join("rules");
    let out = quarry()
        .args(["hunt", "--test", "--format", "json", "--rules"])
        .arg(&rules)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("EX001"),
        "the example rule did not run: {stdout}"
    );

    // Its fixture really is checked: the same rule with a case expecting one finding too many
    // fails.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        rules.join("outbound-ssh.sql"),
        dir.path().join("outbound-ssh.sql"),
    )
    .unwrap();
    let fixture = std::fs::read_to_string(rules.join("outbound-ssh.test.json")).unwrap();
    assert!(fixture.contains("\"findings\": 2"));
    std::fs::write(
        dir.path().join("outbound-ssh.test.json"),
        fixture.replacen("\"findings\": 2", "\"findings\": 3", 1),
    )
    .unwrap();
    let out = quarry()
        .args(["hunt", "--test", "--no-builtin", "--rules"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0), "{out:?}");

    let out = quarry()
        .args(["hunt", "--list", "--format", "json", "--rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        list.contains("EX001") && list.contains("T1021.004"),
        "{list}"
    );
}

/// The statements of hunting.sql, each with its question's number, comments dropped.
fn hunting_statements() -> Vec<String> {
    let text = std::fs::read_to_string(examples().join("hunting.sql")).unwrap();
    let without_comments: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .map(|l| format!("{l}\n"))
        .collect();
    without_comments
        .split(";\n")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn hunting_questions_run_against_a_recorded_store() {
    if !require_root() {
        return;
    }
    let statements = hunting_statements();
    assert_eq!(statements.len(), 9, "{statements:#?}");

    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mark = marker("hunting");
    let rec = RecorderProcess::start(&store, &["--seal-interval", "1s"]);
    // A shell started by a program that is not a shell (question 5), and a connection over
    // loopback (question 6).
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("/bin/true {mark}; /bin/true"))
        .status()
        .unwrap();
    assert!(status.success());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (mut served, _) = listener.accept().unwrap();
    client.write_all(b"x").unwrap();
    let mut byte = [0u8; 1];
    served.read_exact(&mut byte).unwrap();
    let out = rec.stop_with(Signal::SIGINT);
    assert!(out.status.success(), "recorder failed: {out:?}");

    let mut results = Vec::new();
    for (i, sql) in statements.iter().enumerate() {
        let out = quarry()
            .args(["sql", "--format", "json", "--store"])
            .arg(&store)
            .arg(sql)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "question {} failed: {}\n{sql}",
            i + 1,
            String::from_utf8_lossy(&out.stderr)
        );
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("question {}: {e}", i + 1));
        results.push(rows);
    }
    let shells = &results[4];
    assert!(
        shells
            .iter()
            .any(|r| r["command"].as_str().is_some_and(|c| c.contains(&mark))),
        "question 5 does not show the test's shell: {shells:#?}"
    );
    let connections = &results[5];
    assert!(
        connections
            .iter()
            .any(|r| r["remote_addr"] == "127.0.0.1" && r["remote_port"] == port),
        "question 6 does not show the connection to port {port}: {connections:#?}"
    );
    let programs = &results[3];
    assert!(
        programs.iter().any(|r| r["program"] == "true"),
        "question 4 does not list `true`: {programs:#?}"
    );

    // As the file says to run it: the whole file piped into `quarry sql`.
    let mut child = quarry()
        .args(["sql", "--store"])
        .arg(&store)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let text = std::fs::read(examples().join("hunting.sql")).unwrap();
    child.stdin.take().unwrap().write_all(&text).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(!stderr.contains("error"), "{stderr}");
    assert!(
        stdout.contains(&mark),
        "the piped run lacks the marker: {stdout}"
    );
}

/// examples/webshell/run.sh end to end, as root, with the real recorder, runc, CRIU and the
/// quarantine: its output has the shape examples/webshell/expected.txt gives.
#[test]
fn webshell_example_runs_end_to_end() {
    if !require_root() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg(examples().join("webshell/run.sh"))
        .env("QUARRY", env!("CARGO_BIN_EXE_quarry"))
        .env("WORK", work.path().join("ws"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let expected = std::fs::read_to_string(examples().join("webshell/expected.txt")).unwrap();
    let mut lines = stdout.lines();
    for pattern in expected.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            lines.any(|line| has_shape(pattern, line)),
            "no line of the shape {pattern:?} (in this order) in the output:\n{stdout}\n{stderr}"
        );
    }
    // What the responder keeps: the page and a bundle that verifies on its own.
    let ws = work.path().join("ws");
    let page = std::fs::read_to_string(ws.join("timeline.html")).unwrap();
    assert!(page.contains("/etc/shadow") && page.contains("flagged sev-"));
    let verified = quarry()
        .arg("verify")
        .arg(ws.join("evidence.tar.zst"))
        .output()
        .unwrap();
    assert!(verified.status.success(), "{verified:?}");
}

/// Whether `line` has the shape of `pattern`, where `…` stands for any text.
fn has_shape(pattern: &str, line: &str) -> bool {
    let parts: Vec<&str> = pattern.split('…').collect();
    let (first, rest) = parts.split_first().unwrap();
    let Some(mut left) = line.strip_prefix(first) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return left.is_empty();
    };
    for part in middle {
        match left.find(part) {
            Some(at) => left = &left[at + part.len()..],
            None => return false,
        }
    }
    left.ends_with(last)
}

#[test]
fn shapes_match_with_the_ellipsis_as_any_text() {
    assert!(has_shape(
        "hunt exit code 4 (4: findings)",
        "hunt exit code 4 (4: findings)"
    ));
    assert!(has_shape(
        "finding QH004 …: …",
        "finding QH004 high: Sensitive file read"
    ));
    assert!(has_shape("…running…", "recorder running (pid 7)"));
    assert!(!has_shape("finding QH004 …", "finding QH005 high"));
    assert!(!has_shape("a…b", "a"));
    assert!(!has_shape("exact", "exact and more"));
}
