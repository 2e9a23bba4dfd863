//! Detection an attacker cannot sidestep, end to end as root: the real recorder, runc busybox
//! containers, and `quarry hunt` over what was recorded.
//!
//! - Evasions (path spellings, a symlink, a second thread rewriting the path buffer, a tool
//!   renamed runc, a relative-path dropper) still raise the finding the plain form raises.
//! - Behaviours of a well-known runtime rule set, re-enacted with busybox, each in its own
//!   `runc exec`, raise their rules.
//! - Two benign containers (an httpd serving requests, a loop writing and removing its own
//!   files under /tmp) raise nothing beyond the generic "shell spawned".
//!
//! Each test finds its own findings by its containers' ids, which carry the test's pid and tag.

// A test fails by panicking: unwrap is how it says what went wrong.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;

use common::containers::RuncContainer;
use common::*;
use nix::sys::signal::Signal;

/// Applets the scenarios need beyond the shared rootfs's.
const EXTRA_APPLETS: &[&str] = &[
    "chmod", "ln", "touch", "base64", "find", "arping", "insmod", "shred", "httpd", "truncate",
    "mount", "printf", "seq",
];

/// One finding as `quarry hunt --format json` prints it.
#[derive(Debug, Clone, serde::Deserialize)]
struct Finding {
    rule: String,
    container_id: Option<String>,
    evidence: String,
}

fn hunt(store: &Path) -> Vec<Finding> {
    let out = quarry()
        .args(["hunt", "--format", "json", "--store"])
        .arg(store)
        .output()
        .unwrap();
    // Exit 4: findings were raised.
    assert!(
        matches!(out.status.code(), Some(0) | Some(4)),
        "hunt failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A writable busybox container with the extra applets and the files an attack expects.
fn container(id: &str, net_host: bool, args: Option<&[&str]>) -> RuncContainer {
    let tweak = move |config: &mut serde_json::Value, rootfs: &Path| {
        config["root"]["readonly"] = false.into();
        if net_host {
            config["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .retain(|n| n["type"] != "network");
        }
        if let Some(args) = args {
            config["process"]["args"] = serde_json::json!(args);
        }
        // An executable /dev/shm (runc's default mounts it noexec, and a refused exec is no
        // exec event): the behaviour is running a program from there.
        for m in config["mounts"].as_array_mut().unwrap() {
            if m["destination"] == "/dev/shm" {
                m["options"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|o| o != "noexec");
            }
        }
        for applet in EXTRA_APPLETS {
            let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
        }
        let write = |rel: &str, text: &str| {
            let p = rootfs.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        write("etc/shadow", "root:*:19000:0:99999:7:::\n");
        write("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n");
        write("var/log/app.log", "started\n");
        write("var/log/other.log", "started\n");
        write("root/.ash_history", "ls\n");
        write("www/index.html", "hello\n");
        write("etc/hostname", "c18\n");
        build_path_race(&rootfs.join("bin/path-race"));
        for i in 0..60 {
            write(&format!("data/f{i}"), "x");
        }
    };
    // The tweak replaces the `sleep` the container would run when `args` are given.
    RuncContainer::start_tweaked(id, None, tweak)
}

/// A program whose second thread keeps rewriting the path buffer the first one opens, between
/// `/etc/hostname` and `/etc/shadow`: what the recorder reads from the buffer at the syscall's
/// exit need not be what the kernel opened.
const PATH_RACE_C: &str = r#"
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>
static char path[32] = "/etc/hostname";
static volatile int stop, started;
static void *flip(void *arg) {
    (void)arg;
    started = 1;
    while (!stop) {
        memcpy(path, "/etc/shadow", 12);
        __asm__ volatile("" ::: "memory"); /* both stores happen */
        memcpy(path, "/etc/hostname", 14);
        __asm__ volatile("" ::: "memory");
    }
    return 0;
}
int main(void) {
    pthread_t t;
    char buf[64];
    pthread_create(&t, 0, flip, 0);
    while (!started)
        ;
    for (int i = 0; i < 20000; i++) {
        int fd = open(path, O_RDONLY);
        if (fd >= 0) {
            (void)read(fd, buf, sizeof buf);
            close(fd);
        }
    }
    stop = 1;
    pthread_join(t, 0);
    return 0;
}
"#;

/// Compiles [`PATH_RACE_C`] statically to `out` (the container has no libc).
fn build_path_race(out: &Path) {
    let src = out.with_extension("c");
    std::fs::write(&src, PATH_RACE_C).unwrap();
    let status = std::process::Command::new("cc")
        .args(["-static", "-O2", "-pthread", "-o"])
        .arg(out)
        .arg(&src)
        .status()
        .expect("cc (build-essential, which scripts/setup installs) builds the race program");
    assert!(status.success(), "cc failed to build the path race program");
    std::fs::remove_file(src).unwrap();
}

/// Rows of one SQL query, as CSV fields without the header.
fn sql(store: &Path, query: &str) -> Vec<Vec<String>> {
    let out = quarry()
        .args(["sql", "--format", "csv", "--store"])
        .arg(store)
        .arg(query)
        .output()
        .unwrap();
    assert!(out.status.success(), "quarry sql failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

fn sh(c: &RuncContainer, script: &str) {
    // The exit code is not asserted: refused calls (a mount without CAP_SYS_ADMIN, a module
    // load on a kernel without modules) are what is being detected.
    c.exec(&["sh", "-c", script]);
}

fn rules_of(findings: &[Finding], container: &str) -> BTreeSet<String> {
    findings
        .iter()
        .filter(|f| f.container_id.as_deref() == Some(container))
        .map(|f| f.rule.clone())
        .collect()
}

fn raised(findings: &[Finding], container: &str, rule: &str, evidence: &str) -> bool {
    findings.iter().any(|f| {
        f.container_id.as_deref() == Some(container)
            && f.rule == rule
            && f.evidence.contains(evidence)
    })
}

#[test]
fn evasions_still_raise_their_findings() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let rec = RecorderProcess::start(&store, &["--seal-interval", "1s"]);
    let id = format!("qt-c18-evade-{}", std::process::id());
    let c = container(&id, false, None);
    // Each spelling of /etc/shadow in its own process.
    sh(&c, "cd /tmp && cat ../etc/shadow");
    sh(&c, "cat //etc//shadow");
    sh(&c, "cat /etc/./shadow");
    // A symlink to the shadow file: the link raises QH027, the read QH004 on the kernel's path.
    sh(&c, "ln -s /etc/shadow /tmp/s && cat /tmp/s");
    // A second thread rewriting the path buffer during the opens.
    sh(&c, "path-race");
    // A tool renamed runc, mounting: refused without CAP_SYS_ADMIN, but attempted. (busybox
    // picks its applet by argv[0]; the process's comm is the file name, runc.)
    sh(
        &c,
        "cp /bin/busybox /tmp/runc && exec -a mount /tmp/runc -t tmpfs none /mnt",
    );
    // A dropper written and run by a relative path.
    sh(&c, "cd /tmp && cp /bin/busybox ./dropper && ./dropper true");
    // Stopped while the container still runs: rows are attributed to containers at seal time.
    let out = rec.stop_with(Signal::SIGINT);
    assert!(out.status.success(), "{out:?}");
    drop(c);

    let findings = hunt(&store);
    let shadow_reads = findings
        .iter()
        .filter(|f| {
            f.container_id.as_deref() == Some(id.as_str())
                && f.rule == "QH004"
                && f.evidence.starts_with("cat ")
                && f.evidence.ends_with(" opened /etc/shadow")
        })
        .count();
    assert!(
        shadow_reads >= 3,
        "../, // and /./ each raise the sensitive read: {findings:#?}"
    );
    assert!(
        raised(&findings, &id, "QH027", "/tmp/s -> /etc/shadow"),
        "symlink to /etc/shadow: {findings:#?}"
    );
    // The read through the link is the kernel's /etc/shadow, relative to the container's root
    // (on the host the file is in the bundle's rootfs).
    assert!(
        raised(
            &findings,
            &id,
            "QH004",
            "cat opened /tmp/s (kernel: /etc/shadow)"
        ),
        "read through a symlink to /etc/shadow: {findings:#?}"
    );
    let kernel_reads = sql(
        &store,
        &format!(
            "SELECT abs_path, path_resolution FROM file WHERE container_id = '{id}' \
             AND comm = 'cat' AND abs_path = '/tmp/s' AND kernel_path = '/etc/shadow'"
        ),
    );
    assert_eq!(
        kernel_reads,
        vec![vec!["/tmp/s".to_string(), "kernel".to_string()]],
        "the open of /tmp/s has the kernel's path /etc/shadow"
    );
    // Every open in which the kernel opened /etc/shadow raises, whatever the buffer said when
    // the recorder read it.
    let race_opens = sql(
        &store,
        &format!(
            "SELECT count(*) FROM file WHERE container_id = '{id}' AND comm = 'path-race' \
             AND ret >= 0 AND kernel_path = '/etc/shadow'"
        ),
    );
    let race_opens: usize = race_opens[0][0].parse().unwrap();
    // How often the buffer said something else by the time the recorder read it: what a
    // lexical-only recorder would have missed (timing-dependent, so reported, not asserted).
    let disagreed = sql(
        &store,
        &format!(
            "SELECT count(*) FROM file WHERE container_id = '{id}' AND comm = 'path-race' \
             AND ret >= 0 AND kernel_path = '/etc/shadow' AND abs_path <> '/etc/shadow'"
        ),
    );
    eprintln!(
        "path-race: {race_opens} opens of /etc/shadow, {} with another path in the buffer",
        disagreed[0][0]
    );
    let race_findings = findings
        .iter()
        .filter(|f| {
            f.container_id.as_deref() == Some(id.as_str())
                && f.rule == "QH004"
                && f.evidence.starts_with("path-race opened ")
        })
        .count();
    assert!(
        race_opens > 0,
        "20000 opens with the buffer flipping never opened /etc/shadow"
    );
    assert!(
        race_findings >= race_opens,
        "{race_findings} findings for {race_opens} opens of /etc/shadow by path-race"
    );
    assert!(
        raised(&findings, &id, "QH008", "mount"),
        "mount by a tool named runc: {findings:#?}"
    );
    assert!(
        raised(&findings, &id, "QH002", "executed /tmp/dropper"),
        "relative-path dropper: {findings:#?}"
    );
}

#[test]
fn behaviours_raise_their_rules() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // With the entry hook: this kernel has no module syscall tracepoints.
    let rec = RecorderProcess::start(&store, &["--seal-interval", "1s", "--record-module-loads"]);
    let id = format!("qt-c18-behave-{}", std::process::id());
    let c = container(&id, false, None);
    let behaviours: &[(&str, &str)] = &[
        ("QH011", "cp /bin/busybox /tmp/suid && chmod u+s /tmp/suid"),
        (
            "QH012",
            "mkdir -p /tmp/cg && echo /x > /tmp/cg/release_agent",
        ),
        ("QH013", "arping -c 1 -w 1 -I lo 127.0.0.1"),
        ("QH014", "cat /proc/1/environ > /dev/null"),
        ("QH015", "touch /tmp/.hidden"),
        ("QH016", ": > /var/log/app.log && rm /var/log/other.log"),
        ("QH017", "rm /root/.ash_history"),
        ("QH018", "rm -rf /data"),
        ("QH019", "cp /bin/busybox /dev/shm/x && /dev/shm/x true"),
        ("QH020", "echo ZWNobyBoaQo= | base64 -d | sh"),
        ("QH021", "echo x > /tmp/x.ko && insmod /tmp/x.ko"),
        (
            "QH022",
            "mkdir -p /run && touch /run/docker.sock && cat /run/docker.sock",
        ),
        ("QH024", "echo 'evil:x:0:0::/:/bin/sh' >> /etc/passwd"),
        // busybox runs some applets (find among them) inside the shell without an exec:
        // name the binary so there is one to see.
        ("QH025", "/bin/busybox find / -name id_rsa"),
        ("QH026", "echo 'echo hi' > /tmp/p.sh && chmod +x /tmp/p.sh"),
        ("QH027", "ln -s /etc/shadow /tmp/shadow-link"),
        ("QH028", "echo x | nc -w 1 127.0.0.1 3333"),
    ];
    for (_, script) in behaviours {
        sh(&c, script);
    }
    // Stopped while the container still runs: rows are attributed to containers at seal time.
    let out = rec.stop_with(Signal::SIGINT);
    assert!(out.status.success(), "{out:?}");
    drop(c);

    let got = rules_of(&hunt(&store), &id);
    let missed: Vec<&str> = behaviours
        .iter()
        .map(|(rule, _)| *rule)
        .filter(|rule| !got.contains(*rule))
        .collect();
    assert!(missed.is_empty(), "missed {missed:?}; raised {got:?}");
    // insmod's syscall itself, not only its exec, was recorded (refused or not).
    let module_calls = sql(
        &store,
        &format!(
            "SELECT count(*) FROM process WHERE container_id = '{id}' \
             AND event IN ('init_module', 'finit_module')"
        ),
    );
    assert_ne!(module_calls[0][0], "0", "no init_module/finit_module row");
}

/// A TCP request to the httpd on 127.0.0.1:`port`; true when it answered.
fn http_get(port: u16) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("hello")
}

#[test]
fn benign_containers_raise_nothing_but_shell_spawned() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let rec = RecorderProcess::start(&store, &["--seal-interval", "1s"]);
    let pid = std::process::id();
    // A free loopback port for the httpd (host network: the test talks to it directly).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let web_id = format!("qt-c18-web-{pid}");
    let listen = format!("127.0.0.1:{port}");
    let web = container(
        &web_id,
        true,
        Some(&["httpd", "-f", "-p", &listen, "-h", "/www"]),
    );
    let loop_id = format!("qt-c18-loop-{pid}");
    let looper = container(
        &loop_id,
        false,
        Some(&[
            "sh",
            "-c",
            "for i in $(seq 1 40); do echo $i > /tmp/work-$i; done; rm /tmp/work-*; \
             sleep 100000",
        ]),
    );
    let mut served = 0;
    for _ in 0..200 {
        if http_get(port) {
            served += 1;
            if served == 5 {
                break;
            }
        } else {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    assert_eq!(served, 5, "the httpd served requests");
    // Health probes, as an orchestrator runs them.
    for c in [&web, &looper] {
        assert_eq!(c.exec(&["sh", "-c", "test -f /www/index.html"]), 0);
    }
    // The loop has finished its files once its rm ran: wait for it.
    for _ in 0..200 {
        if looper.exec(&["sh", "-c", "! ls /tmp/work-1 2>/dev/null"]) == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = rec.stop_with(Signal::SIGINT);
    assert!(out.status.success(), "{out:?}");
    drop(web);
    drop(looper);

    let findings = hunt(&store);
    for id in [&web_id, &loop_id] {
        let got = rules_of(&findings, id);
        assert!(
            got.iter().all(|r| r == "QH001"),
            "{id} raised more than shell spawned: {:#?}",
            findings
                .iter()
                .filter(|f| f.container_id.as_deref() == Some(id.as_str()) && f.rule != "QH001")
                .collect::<Vec<_>>()
        );
    }
    // The recorder saw the containers at all (their execs are in the store).
    let procs = process_rows(&store);
    assert!(
        procs
            .iter()
            .any(|p| p.container_id.as_deref() == Some(web_id.as_str()) && p.event == "exec"),
        "the web container was recorded"
    );
}
