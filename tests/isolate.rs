//! `quarry isolate` / `quarry release` as root against real runc containers on their own veth
//! pairs (198.18.0.0/15 test addresses configured here): traffic stops both ways, established
//! connections included, the allowed collector still works, the container keeps running, a
//! second container is unaffected, and release restores everything.

// A test fails by panicking: unwrap is how it says what went wrong.
#![allow(clippy::unwrap_used)]

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

/// The host-side and inside interface names `TestNet::new(tag)` gives its veth pair.
fn veth_names(tag: &str) -> (String, String) {
    let pid = std::process::id();
    (format!("qh{tag}{pid}"), format!("qc{tag}{pid}"))
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// IPv6 on a TestNet from 2001:2::/48 (the IPv6 benchmarking range, like 198.18.0.0/15):
/// (host, inside, collector) addresses.
fn add_ipv6(net: &TestNet, tag: &str) -> (String, String, String) {
    let (host_if, inside_if) = veth_names(tag);
    let n: u32 = net.host.split('.').nth(2).unwrap().parse().unwrap();
    let (h, i, c) = (
        format!("2001:2:0:{n:x}::1"),
        format!("2001:2:0:{n:x}::2"),
        format!("2001:2:0:{n:x}::5"),
    );
    ip(&["addr", "add", &format!("{h}/64"), "dev", &host_if, "nodad"]);
    ip(&["addr", "add", &format!("{c}/128"), "dev", &host_if, "nodad"]);
    ip(&[
        "-n",
        &net.netns,
        "addr",
        "add",
        &format!("{i}/64"),
        "dev",
        &inside_if,
        "nodad",
    ]);
    (h, i, c)
}

fn mac_of(netns: Option<&str>, ifname: &str) -> [u8; 6] {
    let mut cmd = Command::new("ip");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    let out = cmd.args(["-j", "link", "show", ifname]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = v[0]["address"].as_str().unwrap();
    let mut mac = [0u8; 6];
    for (i, b) in s.split(':').enumerate() {
        mac[i] = u8::from_str_radix(b, 16).unwrap();
    }
    mac
}

/// Source MAC, EtherType and (ARP only) sender IPv4 address of each frame captured.
type Frames = Arc<std::sync::Mutex<Vec<([u8; 6], u16, Option<[u8; 4]>)>>>;

/// A packet socket on a host interface recording the source MAC, EtherType and ARP sender
/// address of every frame it receives (not the host's own), until dropped.
struct Capture {
    frames: Frames,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Capture {
    fn start(ifname: &str) -> Capture {
        let name = std::ffi::CString::new(ifname).unwrap();
        // SAFETY: plain libc calls on values we own.
        let fd = unsafe {
            let ifindex = libc::if_nametoindex(name.as_ptr());
            assert!(ifindex != 0, "no interface {ifname}");
            let fd = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                (libc::ETH_P_ALL as u16).to_be() as i32,
            );
            assert!(
                fd >= 0,
                "packet socket: {}",
                std::io::Error::last_os_error()
            );
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
            sll.sll_ifindex = ifindex as i32;
            let rc = libc::bind(
                fd,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 100_000,
            };
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
            fd
        };
        let frames = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (f, s) = (frames.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !s.load(Ordering::Relaxed) {
                // SAFETY: receiving into our buffer; the address into our sockaddr_ll.
                let (n, sll) = unsafe {
                    let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                    let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                    let n = libc::recvfrom(
                        fd,
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                        (&mut sll as *mut libc::sockaddr_ll).cast(),
                        &mut len,
                    );
                    (n, sll)
                };
                if n < 14 || sll.sll_pkttype == libc::PACKET_OUTGOING {
                    continue;
                }
                let mut src = [0u8; 6];
                src.copy_from_slice(&buf[6..12]);
                let ethertype = u16::from_be_bytes([buf[12], buf[13]]);
                // Ethernet header (14) + ARP's hardware and protocol fields and the sender's
                // hardware address (14): the sender's IPv4 address.
                let sender =
                    (ethertype == 0x0806 && n >= 32).then(|| [buf[28], buf[29], buf[30], buf[31]]);
                f.lock().unwrap().push((src, ethertype, sender));
            }
            // SAFETY: our descriptor, closed once.
            unsafe { libc::close(fd) };
        });
        Capture {
            frames,
            stop,
            thread: Some(thread),
        }
    }

    /// Frames seen so far whose source is `mac`, emptying the record.
    fn take_from(&self, mac: [u8; 6]) -> Vec<u16> {
        let mut f = self.frames.lock().unwrap();
        let out = f
            .iter()
            .filter(|(m, _, _)| *m == mac)
            .map(|(_, t, _)| *t)
            .collect();
        f.clear();
        out
    }

    /// The sender addresses of the ARP frames seen so far whose source is `mac`, emptying
    /// the record.
    fn take_arp_senders_from(&self, mac: [u8; 6]) -> Vec<std::net::Ipv4Addr> {
        let mut f = self.frames.lock().unwrap();
        let out = f
            .iter()
            .filter(|(m, _, _)| *m == mac)
            .filter_map(|(_, _, s)| s.map(std::net::Ipv4Addr::from))
            .collect();
        f.clear();
        out
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Run inside a container by `quarantine_has_no_holes` (the test binary bind-mounted there):
/// sends from its network namespace a hand-made Ethernet frame on a packet socket, once plainly
/// and once with PACKET_QDISC_BYPASS, and a UDP datagram built by hand on a raw IP socket, to
/// the addresses in QUARRY_TEST_SEND="frames IFNAME DST_IPV4 DST_PORT"; or three ARP requests
/// with the sender address of its choice (QUARRY_TEST_SEND="arp IFNAME SENDER_IPV4
/// TARGET_IPV4", from the interface's own MAC). Not a test by itself.
#[test]
#[ignore = "run inside a container by quarantine_has_no_holes"]
fn raw_sender_helper() {
    let Ok(spec) = std::env::var("QUARRY_TEST_SEND") else {
        return;
    };
    let parts: Vec<&str> = spec.split(' ').collect();
    match parts[0] {
        // Three datagrams to ADDR PORT (busybox nc has no UDP).
        "udp" => {
            let ip: std::net::IpAddr = parts[1].parse().unwrap();
            let dst = SocketAddr::new(ip, parts[2].parse().unwrap());
            let any = if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            let sock = std::net::UdpSocket::bind(any).unwrap();
            for _ in 0..3 {
                let _ = sock.send_to(b"quarry-b19-udp", dst);
            }
            return;
        }
        // Waits for one datagram on PORT (IPv4 and IPv6); fails when none comes.
        "udp-listen" => {
            let sock = std::net::UdpSocket::bind(format!("[::]:{}", parts[1])).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut buf = [0u8; 64];
            sock.recv_from(&mut buf).expect("a datagram");
            return;
        }
        "arp" => {
            let sender: std::net::Ipv4Addr = parts[2].parse().unwrap();
            let target: std::net::Ipv4Addr = parts[3].parse().unwrap();
            send_arp(parts[1], sender, target);
            return;
        }
        _ => {}
    }
    let (ifname, dst, port) = (parts[1], parts[2], parts[3]);
    let dst: std::net::Ipv4Addr = dst.parse().unwrap();
    let port: u16 = port.parse().unwrap();
    let name = std::ffi::CString::new(ifname).unwrap();
    // SAFETY: libc calls with buffers and structures we own.
    unsafe {
        let ifindex = libc::if_nametoindex(name.as_ptr());
        for bypass in [0i32, 1] {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
            assert!(
                fd >= 0,
                "packet socket: {}",
                std::io::Error::last_os_error()
            );
            if bypass == 1 {
                let rc = libc::setsockopt(
                    fd,
                    libc::SOL_PACKET,
                    libc::PACKET_QDISC_BYPASS,
                    (&bypass as *const i32).cast(),
                    4,
                );
                assert_eq!(rc, 0);
            }
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = ifindex as i32;
            sll.sll_halen = 6;
            sll.sll_addr[..6].copy_from_slice(&[0xff; 6]);
            let mut frame = vec![0xffu8; 6];
            frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x19]);
            frame.extend_from_slice(&0x88b5u16.to_be_bytes());
            frame.extend_from_slice(b"quarry-b19-hand-made-frame............................");
            for _ in 0..3 {
                libc::sendto(
                    fd,
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
            }
            libc::close(fd);
        }
        // A raw IP socket: the kernel adds the IP header, the UDP header is ours.
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_UDP);
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        let mut udp = Vec::new();
        udp.extend_from_slice(&40000u16.to_be_bytes());
        udp.extend_from_slice(&port.to_be_bytes());
        let payload = b"quarry-b19-raw";
        udp.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        udp.extend_from_slice(&[0, 0]); // no checksum (allowed for UDP over IPv4)
        udp.extend_from_slice(payload);
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from(dst).to_be(),
            },
            sin_zero: [0; 8],
        };
        for _ in 0..3 {
            libc::sendto(
                fd,
                udp.as_ptr().cast(),
                udp.len(),
                0,
                (&sin as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            );
        }
        libc::close(fd);
    }
}

/// Three ARP requests for `target` on `ifname` from its own MAC, claiming to be `sender`.
fn send_arp(ifname: &str, sender: std::net::Ipv4Addr, target: std::net::Ipv4Addr) {
    let name = std::ffi::CString::new(ifname).unwrap();
    let mac: [u8; 6] = std::fs::read_to_string(format!("/sys/class/net/{ifname}/address"))
        .unwrap()
        .trim()
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect::<Vec<u8>>()
        .try_into()
        .unwrap();
    let mut frame = vec![0xffu8; 6];
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&0x0806u16.to_be_bytes());
    // Ethernet/IPv4, request; sender MAC and IP; target MAC (unknown) and IP.
    frame.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    frame.extend_from_slice(&mac);
    frame.extend_from_slice(&sender.octets());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&target.octets());
    frame.resize(60, 0);
    // SAFETY: libc calls with buffers and structures we own.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        assert!(
            fd >= 0,
            "packet socket: {}",
            std::io::Error::last_os_error()
        );
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        for _ in 0..3 {
            libc::sendto(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
        }
        libc::close(fd);
    }
}

/// ARP requests for `target` from the container's `inside_if` with sender address `sender`.
fn arp_from(c: &RuncContainer, inside_if: &str, sender: &str, target: &str) {
    raw_exec(
        c,
        &[&format!(
            "QUARRY_TEST_SEND=arp {inside_if} {sender} {target}"
        )],
        HELPER,
    );
}

/// Whether the host has a neighbour entry for `addr` on `dev` (an ARP request claiming it
/// reached the host's stack).
fn host_neighbour(addr: &str, dev: &str) -> bool {
    let out = Command::new("ip")
        .args(["neigh", "show", addr, "dev", dev])
        .output()
        .unwrap();
    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

/// A runc container that can run the test binary (`/helper`, with the host's /usr for its
/// libraries) and the busybox applets that need CAP_NET_RAW (ping, ping6, arping); exec with
/// `--cap CAP_NET_RAW`, as Docker grants it by default.
fn raw_capable_container(id: &str, netns: &str) -> RuncContainer {
    let exe = std::env::current_exe().unwrap();
    RuncContainer::start_tweaked(id, Some(netns), |config, rootfs| {
        for applet in ["ping", "ping6", "arping"] {
            let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
        }
        std::fs::create_dir_all(rootfs.join("usr")).unwrap();
        std::os::unix::fs::symlink("usr/lib", rootfs.join("lib")).unwrap();
        std::os::unix::fs::symlink("usr/lib64", rootfs.join("lib64")).unwrap();
        std::fs::write(rootfs.join("helper"), b"").unwrap();
        let mounts = config["mounts"].as_array_mut().unwrap();
        mounts.push(serde_json::json!({
            "destination": "/usr", "type": "bind", "source": "/usr",
            "options": ["rbind", "ro"]
        }));
        mounts.push(serde_json::json!({
            "destination": "/helper", "type": "bind", "source": exe,
            "options": ["bind", "ro"]
        }));
    })
}

/// Runs `sh -c script` in the container with CAP_NET_RAW; true when it exits 0.
fn raw_exec(c: &RuncContainer, env: &[&str], script: &str) -> bool {
    let mut cmd = Command::new("runc");
    cmd.args(["exec", "--cap", "CAP_NET_RAW"]);
    for e in env {
        cmd.args(["--env", e]);
    }
    cmd.args([&c.id, "sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// A UDP echo server on `addr`, counting datagrams.
fn udp_echo(addr: &str) -> (SocketAddr, Arc<AtomicU64>) {
    let sock = std::net::UdpSocket::bind(addr).unwrap();
    let local = sock.local_addr().unwrap();
    let n = Arc::new(AtomicU64::new(0));
    let counter = n.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((len, from)) = sock.recv_from(&mut buf) {
            counter.fetch_add(1, Ordering::Relaxed);
            let _ = sock.send_to(&buf[..len], from);
        }
    });
    (local, n)
}

/// Everything the container tries, both ways; returns what got through, by name.
#[allow(clippy::too_many_arguments)]
fn attempts(
    c: &RuncContainer,
    inside_if: &str,
    net: &TestNet,
    v6: &(String, String, String),
    tcp: SocketAddr,
    tcp6: SocketAddr,
    udp: (SocketAddr, &AtomicU64),
    udp6: (SocketAddr, &AtomicU64),
) -> Vec<&'static str> {
    let mut through = Vec::new();
    if exchange_from(c, &net.host, tcp.port()) {
        through.push("tcp out");
    }
    if exchange_from(c, &v6.0, tcp6.port()) {
        through.push("tcp6 out");
    }
    for (name, (addr, count), host) in [("udp out", udp, &net.host), ("udp6 out", udp6, &v6.0)] {
        let before = count.load(Ordering::Relaxed);
        udp_from(c, host, addr.port());
        std::thread::sleep(Duration::from_millis(200));
        if count.load(Ordering::Relaxed) > before {
            through.push(name);
        }
    }
    if raw_exec(c, &[], &format!("ping -c 1 -W 1 {}", net.host)) {
        through.push("icmp echo");
    }
    if raw_exec(c, &[], &format!("ping6 -c 1 -W 1 {}", v6.0)) {
        through.push("icmpv6 echo");
    }
    if raw_exec(
        c,
        &[],
        &format!("arping -c 1 -w 1 -I {inside_if} {}", net.host),
    ) {
        through.push("arp");
    }
    let before = udp.1.load(Ordering::Relaxed);
    raw_exec(
        c,
        &[&format!(
            "QUARRY_TEST_SEND=frames {inside_if} {} {}",
            net.host,
            udp.0.port()
        )],
        HELPER,
    );
    std::thread::sleep(Duration::from_millis(200));
    if udp.1.load(Ordering::Relaxed) > before {
        through.push("raw ip");
    }
    let mut l = listen_inside(c, 9100);
    if reach_into(&net.inside, 9100) {
        through.push("tcp in");
    }
    let _ = l.kill();
    let _ = l.wait();
    let mut l = listen_inside(c, 9101);
    if reach_into(&format!("[{}]", v6.1), 9101) {
        through.push("tcp6 in");
    }
    let _ = l.kill();
    let _ = l.wait();
    for (name, addr) in [
        ("udp in", net.inside.clone()),
        ("udp6 in", format!("[{}]", v6.1)),
    ] {
        if udp_into(c, &addr, 9102) {
            through.push(name);
        }
    }
    through
}

/// How a container runs the test binary's `raw_sender_helper`.
const HELPER: &str = "/helper --ignored --exact raw_sender_helper --test-threads 1 --nocapture";

/// From inside the container: three UDP datagrams to addr:port.
fn udp_from(c: &RuncContainer, addr: &str, port: u16) {
    raw_exec(c, &[&format!("QUARRY_TEST_SEND=udp {addr} {port}")], HELPER);
}

/// From the host: UDP datagrams to a listener in the container (`addr` as in a socket
/// address: IPv6 in brackets); true when it got one.
fn udp_into(c: &RuncContainer, addr: &str, port: u16) -> bool {
    let mut cmd = Command::new("runc");
    let mut listener = cmd
        .args(["exec", "--env"])
        .arg(format!("QUARRY_TEST_SEND=udp-listen {port}"))
        .args([&c.id, "sh", "-c", HELPER])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let dst: SocketAddr = format!("{addr}:{port}").parse().unwrap();
    let any = if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let sock = std::net::UdpSocket::bind(any).unwrap();
    for _ in 0..3 {
        let _ = sock.send_to(b"quarry-b19-udp-in", dst);
        std::thread::sleep(Duration::from_millis(50));
    }
    listener.wait().unwrap().success()
}

#[test]
fn quarantine_has_no_holes() {
    if !require_root() {
        return;
    }
    let pid = std::process::id();
    let net = TestNet::new("h");
    let v6 = add_ipv6(&net, "h");
    let (host_if, inside_if) = veth_names("h");
    let net_b = TestNet::new("i");
    let c = raw_capable_container(&format!("qt-iso-h-{pid}"), &net.netns);
    let b = RuncContainer::start_in_netns(&format!("qt-iso-i-{pid}"), Some(&net_b.netns));
    let _guard = Released(c.id.clone());
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store").display().to_string();
    let mac = mac_of(Some(&net.netns), &inside_if);

    let (tcp, _) = echo_server(&format!("{}:0", net.host));
    let (tcp6, _) = echo_server(&format!("[{}]:0", v6.0));
    let (udp, udp_n) = udp_echo(&format!("{}:0", net.host));
    let (udp6, udp6_n) = udp_echo(&format!("[{}]:0", v6.0));
    let (collector, _) = echo_server(&format!("{}:0", net.collector));
    // One allow rule (one port per network) for the collector over TCP and UDP.
    let (ucollector, ucollector_n) = udp_echo(&format!("{}:{}", net.collector, collector.port()));
    let (srv_b, _) = echo_server(&format!("{}:0", net_b.host));
    let all = [
        "tcp out",
        "tcp6 out",
        "udp out",
        "udp6 out",
        "icmp echo",
        "icmpv6 echo",
        "arp",
        "raw ip",
        "tcp in",
        "tcp6 in",
        "udp in",
        "udp6 in",
    ];
    let run = || {
        attempts(
            &c,
            &inside_if,
            &net,
            &v6,
            tcp,
            tcp6,
            (udp, &udp_n),
            (udp6, &udp6_n),
        )
    };

    // Before: everything gets through, and the capture on the host side sees the frames.
    let capture = Capture::start(&host_if);
    assert_eq!(run(), all, "before the quarantine everything works");
    let seen = capture.take_from(mac);
    for ethertype in [0x0800, 0x86dd, 0x0806] {
        assert!(
            seen.contains(&ethertype),
            "{ethertype:#x} captured: {seen:x?}"
        );
    }
    // An ARP request claiming an address that is not the container's reaches the host's
    // stack (it learns a neighbour from it) while nothing stops it.
    let base = net.host.rsplit_once('.').unwrap().0.to_string();
    let (spoof_a, spoof_b) = (format!("{base}.3"), format!("{base}.4"));
    arp_from(&c, &inside_if, &spoof_a, &net.collector);
    std::thread::sleep(Duration::from_millis(200));
    let senders = capture.take_arp_senders_from(mac);
    assert!(
        senders.contains(&spoof_a.parse().unwrap()),
        "the spoofed ARP is seen before: {senders:?}"
    );
    assert!(
        host_neighbour(&spoof_a, &host_if),
        "the host learnt the spoofed address before"
    );

    // Dry run: shows all three layers, attaches nothing.
    let allow = format!("{}:{}", net.collector, collector.port());
    let (code, out) = isolate(&[
        &c.id,
        "--allow",
        &allow,
        "--dry-run",
        "--format",
        "json",
        "--store",
        &store,
    ]);
    assert_eq!(code, 0, "{out}");
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        plan["netns"]["devices"]["host"][0]["ifname"],
        host_if.as_str(),
        "{plan}"
    );
    assert_eq!(
        plan["netns"]["devices"]["inside"][0],
        inside_if.as_str(),
        "{plan}"
    );
    assert!(
        quarry_isolate::find(&c.id).is_none(),
        "a dry run isolates nothing"
    );
    assert_eq!(run(), all, "a dry run changes nothing");

    let (code, out) = isolate(&[&c.id, "--allow", &allow, "--store", &store]);
    assert_eq!(code, 0, "{out}");
    capture.take_from(mac);
    assert_eq!(
        run(),
        Vec::<&str>::new(),
        "nothing gets through the quarantine"
    );
    // The interfaces' own chatter (router solicitations, say) is cut too: nothing at all.
    assert_eq!(
        capture.take_from(mac),
        Vec::<u16>::new(),
        "the host side sees no frame"
    );

    // The allow-listed collector still works, over TCP and UDP (its neighbour resolves).
    let _ = Command::new("ip")
        .args(["-n", &net.netns, "neigh", "flush", "all"])
        .output();
    assert!(
        exchange_from(&c, &net.collector, collector.port()),
        "collector over TCP"
    );
    let before = ucollector_n.load(Ordering::Relaxed);
    udp_from(&c, &net.collector, ucollector.port());
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        ucollector_n.load(Ordering::Relaxed) > before,
        "collector over UDP"
    );
    assert!(
        exchange_from(&b, &net_b.host, srv_b.port()),
        "the other container is unaffected"
    );

    // ARP to the allow-listed collector leaves only from the container's own address: the
    // same request claiming another address is stopped inside.
    capture.take_from(mac);
    arp_from(&c, &inside_if, &spoof_b, &net.collector);
    arp_from(&c, &inside_if, &net.inside, &net.collector);
    std::thread::sleep(Duration::from_millis(200));
    let senders = capture.take_arp_senders_from(mac);
    assert!(
        senders.contains(&net.inside.parse().unwrap()),
        "ARP from its own address to the collector passes: {senders:?}"
    );
    assert!(
        !senders.contains(&spoof_b.parse().unwrap()),
        "ARP claiming another address does not: {senders:?}"
    );
    assert!(!host_neighbour(&spoof_b, &host_if));

    // Each layer counts its own drops.
    let (_, status) = isolate(&["--status", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    let entry = v
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["isolation"]["container_id"] == c.id.as_str())
        .unwrap();
    let layers = entry["dropped"]["layers"].as_array().unwrap();
    let names: Vec<&str> = layers
        .iter()
        .map(|l| l["layer"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cgroup_skb", "netns", "host"], "{entry}");
    let netns_layer = &layers[1];
    assert!(netns_layer["egress"].as_u64().unwrap() > 0, "{entry}");
    assert!(
        layers.iter().all(|l| l["in_place"] == true),
        "every layer in place: {entry}"
    );

    // A container with CAP_NET_ADMIN inserts an accept rule into its inside table (the host's
    // nft, through the /usr it sees): the table is still there, but status tells its rules are
    // not the ones installed; the host-side layer is untouched.
    let insert = Command::new("runc")
        .args([
            "exec",
            "--cap",
            "CAP_NET_ADMIN",
            &c.id,
            "/usr/sbin/nft",
            "insert",
            "rule",
            "inet",
            "quarry_quarantine",
            "output",
            "accept",
        ])
        .output()
        .unwrap();
    assert!(
        insert.status.success(),
        "{}",
        String::from_utf8_lossy(&insert.stderr)
    );
    let (_, status) = isolate(&["--status", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    let entry = v
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["isolation"]["container_id"] == c.id.as_str())
        .unwrap();
    let layers = entry["dropped"]["layers"].as_array().unwrap();
    assert_eq!(
        (&layers[1]["in_place"], &layers[1]["tampered"]),
        (&serde_json::json!(false), &serde_json::json!(true)),
        "status tells the inside rules changed: {entry}"
    );
    assert_eq!(
        (&layers[2]["in_place"], &layers[2]["tampered"]),
        (&serde_json::json!(true), &serde_json::json!(false)),
        "{entry}"
    );
    let (_, text) = isolate(&["--status"]);
    assert!(text.contains("CHANGED"), "{text}");

    // A container with CAP_NET_ADMIN deletes the tables in its own namespace (the host's nft,
    // through the /usr it sees): the host-side layer still holds. A capture on the host side
    // now sees its frames (taps come before the ingress hook) but nothing reaches the host.
    let tamper = Command::new("runc")
        .args([
            "exec",
            "--cap",
            "CAP_NET_ADMIN",
            &c.id,
            "sh",
            "-c",
            "/usr/sbin/nft delete table inet quarry_quarantine && \
             /usr/sbin/nft delete table netdev quarry_quarantine",
        ])
        .output()
        .unwrap();
    assert!(
        tamper.status.success(),
        "{}",
        String::from_utf8_lossy(&tamper.stderr)
    );
    assert_eq!(
        run(),
        Vec::<&str>::new(),
        "nothing gets through with the tables inside deleted"
    );
    let (_, status) = isolate(&["--status", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    let entry = v
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["isolation"]["container_id"] == c.id.as_str())
        .unwrap();
    let layers = entry["dropped"]["layers"].as_array().unwrap();
    assert_eq!(layers[1]["in_place"], false, "status tells: {entry}");
    assert_eq!(layers[2]["in_place"], true, "{entry}");
    assert!(layers[2]["egress"].as_u64().unwrap() > 0, "{entry}");
    // Spoofed ARP now reaches the host side, but not the host's stack.
    capture.take_from(mac);
    arp_from(&c, &inside_if, &spoof_b, &net.collector);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        capture
            .take_arp_senders_from(mac)
            .contains(&spoof_b.parse().unwrap()),
        "the inside layer is gone: the frames arrive"
    );
    assert!(
        !host_neighbour(&spoof_b, &host_if),
        "the host-side layer stops ARP claiming another address"
    );

    // Release restores everything.
    let out = quarry()
        .args(["release", &c.id, "--store", &store])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    capture.take_from(mac);
    assert_eq!(run(), all, "after release everything works again");
    let nft = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    // Only this namespace's table: other tests' quarantines may be in force meanwhile.
    let table = format!(
        "quarry_q_{}",
        plan["netns"]["netns_cookie"].as_u64().unwrap()
    );
    assert!(
        !String::from_utf8_lossy(&nft.stdout)
            .split_whitespace()
            .any(|w| w == table),
        "no host-side table {table} left"
    );
}

#[test]
fn shared_netns_stays_cut_until_the_last_release() {
    if !require_root() {
        return;
    }
    let pid = std::process::id();
    let net = TestNet::new("s");
    let a = RuncContainer::start_in_netns(&format!("qt-iso-sa-{pid}"), Some(&net.netns));
    let b = RuncContainer::start_in_netns(&format!("qt-iso-sb-{pid}"), Some(&net.netns));
    let (_ga, _gb) = (Released(a.id.clone()), Released(b.id.clone()));
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store").display().to_string();
    let (srv, _) = echo_server(&format!("{}:0", net.host));
    assert!(exchange_from(&b, &net.host, srv.port()));

    let (code, out) = isolate(&[&a.id, "--store", &store]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("is shared with") && out.contains(&b.id),
        "A's isolation names B: {out}"
    );
    assert!(
        !exchange_from(&b, &net.host, srv.port()),
        "the namespace-level layer cuts B too"
    );
    let (code, out) = isolate(&[&b.id, "--store", &store]);
    assert_eq!(code, 0, "{out}");

    let out = quarry()
        .args(["release", &a.id, "--store", &store])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("still-isolated"),
        "{text}"
    );
    assert!(
        !exchange_from(&b, &net.host, srv.port()),
        "B stays cut after A's release"
    );
    assert!(
        !exchange_from(&a, &net.host, srv.port()),
        "A shares B's namespace: still cut by it"
    );

    let out = quarry()
        .args(["release", &b.id, "--store", &store])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        exchange_from(&b, &net.host, srv.port()),
        "the last release lifts it"
    );
}

#[test]
fn release_never_enters_the_namespace_of_a_reused_pid() {
    if !require_root() {
        return;
    }
    let pid = std::process::id();
    let net = TestNet::new("r");
    let name = format!("qt-iso-r-{pid}");
    let c = RuncContainer::start_in_netns(&name, Some(&net.netns));
    let _guard = Released(name.clone());
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store").display().to_string();
    let (code, out) = isolate(&[&name, "--store", &store]);
    assert_eq!(code, 0, "{out}");
    let old_pid = c.pid();
    let record_path = format!("/run/quarry/isolate/{name}.json");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
    assert_eq!(record["init_pid"].as_i64().unwrap() as i32, old_pid);
    drop(c); // exits while isolated
    for _ in 0..200 {
        if !std::path::Path::new(&format!("/proc/{old_pid}")).exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // Another process, in a namespace of its own with a table of the quarantine's name, really
    // takes the recorded pid.
    let other = TestNet::new("o");
    let out = Command::new("ip")
        .args(["netns", "exec", &other.netns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .and_then(|mut ch| {
            ch.stdin.take().unwrap().write_all(
                b"table inet quarry_quarantine {\n chain output {\n type filter hook output priority 0;\n }\n}\n",
            )?;
            ch.wait()
        })
        .unwrap();
    assert!(out.success());
    let decoy = Decoy(spawn_with_pid(old_pid, || {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &other.netns, "sleep", "100"]);
        cmd
    }));
    let ino = |p: &str| std::fs::metadata(p).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
    let other_ino = ino(&format!("/var/run/netns/{}", other.netns)).unwrap();
    // Until `ip netns exec` has joined the namespace and exec'd sleep.
    for _ in 0..200 {
        if ino(&format!("/proc/{old_pid}/ns/net")).ok() == Some(other_ino) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(ino(&format!("/proc/{old_pid}/ns/net")).unwrap(), other_ino);
    assert_ne!(
        other_ino,
        record["netns_inode"].as_u64().unwrap(),
        "the decoy lives in another namespace"
    );

    let out = quarry()
        .args(["release", &name, "--store", &store])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("nothing inside any namespace was touched"),
        "{text}"
    );
    let tables = Command::new("ip")
        .args(["netns", "exec", &other.netns, "nft", "list", "tables"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&tables.stdout).contains("quarry_quarantine"),
        "the new process's namespace is untouched"
    );
    drop(decoy);
}

/// Kills and reaps its process when dropped, also on failure.
struct Decoy(std::process::Child);
impl Drop for Decoy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `cmd()` as process `pid` (which must be free): the kernel hands out the pid after
/// `ns_last_pid`, so set it just below and retry when another process of the machine took it
/// first.
fn spawn_with_pid(pid: i32, cmd: impl Fn() -> Command) -> std::process::Child {
    for _ in 0..500 {
        std::fs::write("/proc/sys/kernel/ns_last_pid", (pid - 1).to_string()).unwrap();
        let mut child = cmd()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if child.id() as i32 == pid {
            return child;
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!("could not get pid {pid} for the decoy");
}
