//! `quarry isolate` / `quarry release` as root against real runc containers on their own veth
//! pairs (198.18.0.0/15 test addresses configured here): traffic stops both ways, established
//! connections included, the allowed collector still works, the container keeps running, a
//! second container is unaffected, and release restores everything.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::containers::{RuncContainer, TestNet};
use common::*;

/// An echo server on `addr` (one thread per connection), counting lines received.
fn echo_server(addr: &str) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind(addr).unwrap();
    let local = listener.local_addr().unwrap();
    let lines = Arc::new(AtomicU64::new(0));
    let counter = lines.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut out = stream.try_clone().unwrap();
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    counter.fetch_add(1, Ordering::Relaxed);
                    let _ = writeln!(out, "{line}");
                }
            });
        }
    });
    (local, lines)
}

/// From inside the container: send a line to addr:port and expect it echoed back.
fn exchange_from(c: &RuncContainer, ip: &str, port: u16) -> bool {
    let out = Command::new("runc")
        .args([
            "exec",
            &c.id,
            "sh",
            "-c",
            &format!("echo ping | nc -w 2 {ip} {port}"),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains("ping")
}

/// From the host: connect to a listener in the container and send a line.
fn reach_into(ip: &str, port: u16) -> bool {
    let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
    match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(mut s) => s.write_all(b"hello\n").is_ok(),
        Err(_) => false,
    }
}

/// Starts `nc -l` in the container (one connection) and waits until it listens.
fn listen_inside(c: &RuncContainer, port: u16) -> Child {
    let child = Command::new("runc")
        .args(["exec", &c.id, "nc", "-l", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    child
}

fn isolate(args: &[&str]) -> (i32, String) {
    let out = quarry().arg("isolate").args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Releases on drop, so a failing test leaves no quarantine behind.
struct Released(String);
impl Drop for Released {
    fn drop(&mut self) {
        let _ = quarry()
            .args(["release", &self.0, "--store", "/tmp/quarry-test-unused"])
            .output();
        let _ = std::fs::remove_dir_all("/tmp/quarry-test-unused");
        // The shared programs this test caused to be loaded go too, unless others use them.
        let _ = quarry_isolate::unload_if_idle();
    }
}

#[test]
fn quarantine_cuts_both_ways_keeps_running_and_releases() {
    if !require_root() {
        return;
    }
    let pid = std::process::id();
    let net_a = TestNet::new("a");
    let net_b = TestNet::new("b");
    let a = RuncContainer::start_in_netns(&format!("qt-iso-a-{pid}"), Some(&net_a.netns));
    let b = RuncContainer::start_in_netns(&format!("qt-iso-b-{pid}"), Some(&net_b.netns));
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let store_arg = store.display().to_string();

    let (srv_a, _) = echo_server(&format!("{}:0", net_a.host));
    let (srv_b, _) = echo_server(&format!("{}:0", net_b.host));
    let (collector, _) = echo_server(&format!("{}:0", net_a.collector));
    let (stream_srv, streamed) = echo_server(&format!("{}:0", net_a.host));

    // Before: both directions work.
    assert!(
        exchange_from(&a, &net_a.host, srv_a.port()),
        "container reaches the host"
    );
    let mut l = listen_inside(&a, 9000);
    assert!(
        reach_into(&net_a.inside, 9000),
        "host reaches the container"
    );
    let _ = l.wait();

    // An established connection that keeps carrying data: a line every 100 ms.
    let mut ticker = Command::new("runc")
        .args([
            "exec",
            &a.id,
            "sh",
            "-c",
            &format!(
                "while true; do echo tick; sleep 0.1; done | nc {} {}",
                net_a.host,
                stream_srv.port()
            ),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        streamed.load(Ordering::Relaxed) > 0,
        "the established connection carries data"
    );

    // Isolate, allowing only the collector's port. The command exits; the quarantine stays.
    let _guard = Released(a.id.clone());
    let allow = format!("{}:{}", net_a.collector, collector.port());
    let (code, out) = isolate(&[
        &a.id, "--allow", &allow, "--reason", "test", "--store", &store_arg,
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("isolated"), "{out}");

    let before = streamed.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(1000));
    let after = streamed.load(Ordering::Relaxed);
    assert!(
        after <= before + 1,
        "the established connection stopped carrying data ({before} -> {after})"
    );
    assert!(
        !exchange_from(&a, &net_a.host, srv_a.port()),
        "no new connection out"
    );
    let mut l = listen_inside(&a, 9001);
    assert!(!reach_into(&net_a.inside, 9001), "no new connection in");
    let _ = l.kill();
    let _ = l.wait();
    assert!(
        exchange_from(&a, &net_a.collector, collector.port()),
        "the allowed collector still works"
    );
    assert!(
        exchange_from(&b, &net_b.host, srv_b.port()),
        "the other container is unaffected"
    );
    // The container and its processes keep running.
    assert!(std::path::Path::new(&format!("/proc/{}", a.pid())).exists());
    assert_eq!(
        ticker.try_wait().unwrap(),
        None,
        "the attacker's process is still running"
    );

    // Idempotent, and visible with its drop counts.
    let (code, out) = isolate(&[&a.id, "--store", &store_arg]);
    assert_eq!(code, 0);
    assert!(out.contains("already isolated"), "{out}");
    let (_, status) = isolate(&["--status", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    let entry = v
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["isolation"]["container_id"] == a.id.as_str())
        .unwrap();
    assert_eq!(entry["isolation"]["reason"], "test");
    let dropped = entry["dropped"]["egress"].as_u64().unwrap()
        + entry["dropped"]["ingress"].as_u64().unwrap();
    assert!(dropped > 0, "drops are counted: {entry}");

    // Release: traffic flows again; releasing twice says so.
    let out = quarry()
        .args(["release", &a.id, "--store", &store_arg])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("released"));
    assert!(
        exchange_from(&a, &net_a.host, srv_a.port()),
        "traffic flows after release"
    );
    let out = quarry()
        .args(["release", &a.id, "--store", &store_arg])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("not isolated"));
    assert!(
        !std::path::Path::new(&format!("/sys/fs/bpf/quarry/isolate/{}", a.id)).exists(),
        "no pins left"
    );

    // Every action is on the record.
    let actions: Vec<(String, String)> = quarry_store::Store::at(&store)
        .read_table(quarry_store::Table::Action)
        .unwrap()
        .iter()
        .flat_map(|batch| {
            use arrow::array::AsArray;
            let act = batch
                .column_by_name("action")
                .unwrap()
                .as_string::<i32>()
                .clone();
            let res = batch
                .column_by_name("result")
                .unwrap()
                .as_string::<i32>()
                .clone();
            (0..batch.num_rows()).map(move |i| (act.value(i).to_string(), res.value(i).to_string()))
        })
        .collect();
    for expected in [
        ("isolate", "ok"),
        ("isolate", "unchanged"),
        ("release", "ok"),
        ("release", "unchanged"),
    ] {
        assert!(
            actions
                .iter()
                .any(|(a, r)| a == expected.0 && r == expected.1),
            "{expected:?} in {actions:?}"
        );
    }
    let _ = ticker.kill();
    let _ = ticker.wait();
}

#[test]
fn unknown_container_is_a_clear_error() {
    if !require_root() {
        return;
    }
    let (code, out) = isolate(&[
        "no-such-container-xyz",
        "--store",
        "/tmp/quarry-test-unused2",
    ]);
    let _ = std::fs::remove_dir_all("/tmp/quarry-test-unused2");
    assert_eq!(code, 1);
    assert!(
        out.contains("no running container matches 'no-such-container-xyz'"),
        "{out}"
    );
}

#[test]
fn release_after_the_container_exited_leaves_nothing_behind() {
    if !require_root() {
        return;
    }
    let pid = std::process::id();
    let net = TestNet::new("x");
    let name = format!("qt-iso-x-{pid}");
    let c = RuncContainer::start_in_netns(&name, Some(&net.netns));
    let _guard = Released(name.clone());
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store").display().to_string();
    let (code, out) = isolate(&[&name, "--store", &store]);
    assert_eq!(code, 0, "{out}");
    drop(c); // the container exits (killed and deleted) while isolated
    let out = quarry()
        .args(["release", &name, "--store", &store])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("released"));
    assert!(
        !std::path::Path::new(&format!("/sys/fs/bpf/quarry/isolate/containers/{name}")).exists()
    );
    assert!(!std::path::Path::new(&format!("/run/quarry/isolate/{name}.json")).exists());
    let (_, status) = isolate(&["--status", "--format", "json"]);
    assert!(!status.contains(&name), "{status}");
}
