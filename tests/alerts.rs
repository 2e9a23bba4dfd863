//! Live detection end to end as root: the real recorder with detection on, a runc busybox
//! container doing a scripted attack, and the alerts on every output, in the `alert` table,
//! in the timeline and acted on by `--respond`.
//!
//! Each test finds its own alerts by its container's id (which carries the test's pid).

// A test fails by panicking: unwrap is how it says what went wrong.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use common::containers::RuncContainer;
use common::*;
use nix::sys::signal::Signal;

/// A writable busybox container with an /etc/shadow to read and a `mount` applet.
fn container(id: &str) -> RuncContainer {
    RuncContainer::start_tweaked(id, None, |config, rootfs| {
        config["root"]["readonly"] = false.into();
        let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin/mount"));
        std::fs::create_dir_all(rootfs.join("etc")).unwrap();
        std::fs::write(rootfs.join("etc/shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
    })
}

/// A `quarry record` whose stdout lines (the stdout alert output) arrive on a channel.
struct Recording {
    child: Option<std::process::Child>,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

impl Recording {
    fn start(store: &Path, args: &[&str]) -> Recording {
        Recording::start_with_env(store, args, &[])
    }

    fn start_with_env(store: &Path, args: &[&str], env: &[(&str, &Path)]) -> Recording {
        let mut child = quarry()
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .arg("record")
            .arg("--store")
            .arg(store)
            .args(["--seal-interval", "2s"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = |r: Box<dyn Read + Send>, tag: &'static str| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(r).lines().map_while(Result::ok) {
                    eprintln!("[{tag}] {line}");
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            rx
        };
        let stdout = lines(Box::new(child.stdout.take().unwrap()), "stdout");
        let stderr = lines(Box::new(child.stderr.take().unwrap()), "recorder");
        let rec = Recording {
            child: Some(child),
            stdout,
            stderr,
        };
        loop {
            match rec.stderr.recv_timeout(Duration::from_secs(90)) {
                Ok(line) if line.starts_with("quarry: recording ") => break,
                Ok(_) => continue,
                Err(_) => panic!("the recorder did not start"),
            }
        }
        rec
    }

    /// Waits for a stdout alert line `pick` accepts (the recorder's own deadline: 120 s, so
    /// a loaded machine does not fail the test; nothing here measures time).
    fn alert(
        &self,
        seen: &mut Vec<String>,
        pick: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            for line in seen.iter() {
                let v: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
                if pick(&v) {
                    return v;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no such alert on stdout; saw {seen:#?}");
            if let Ok(line) = self.stdout.recv_timeout(left.min(Duration::from_secs(1))) {
                seen.push(line);
            }
        }
    }

    fn stop(mut self) -> std::process::Output {
        let child = self.child.take().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            Signal::SIGINT,
        )
        .unwrap();
        child.wait_with_output().unwrap()
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A receiver on 127.0.0.1 that answers 503 to its first `fail_first` requests, then 200, and
/// keeps the bodies of the requests it accepted.
struct Receiver {
    port: u16,
    bodies: Arc<Mutex<Vec<String>>>,
    requests: Arc<AtomicUsize>,
}

/// A connection the receiver reads a request from and answers on (plain or TLS).
trait Connection: Read + Write {}
impl<T: Read + Write> Connection for T {}

impl Receiver {
    /// Whether a request body holding `text` was accepted.
    fn received(&self, text: &str) -> bool {
        self.bodies.lock().unwrap().iter().any(|b| b.contains(text))
    }

    fn start(fail_first: usize) -> Receiver {
        Receiver::start_wrapped(fail_first, |tcp| Some(Box::new(tcp)))
    }

    /// The same receiver speaking TLS with the certificate and key in these PEM files.
    fn start_tls(fail_first: usize, cert: &Path, key: &Path) -> Receiver {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap(),
        );
        Receiver::start_wrapped(fail_first, move |tcp| {
            let conn = rustls::ServerConnection::new(config.clone()).ok()?;
            Some(Box::new(rustls::StreamOwned::new(conn, tcp)))
        })
    }

    fn start_wrapped(
        fail_first: usize,
        wrap: impl Fn(std::net::TcpStream) -> Option<Box<dyn Connection>> + Send + 'static,
    ) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(AtomicUsize::new(0));
        let (b, r) = (bodies.clone(), requests.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let Some(conn) = wrap(conn) else { continue };
                let mut reader = BufReader::new(conn);
                let mut length = 0usize;
                let mut line = String::new();
                let mut complete = false;
                loop {
                    line.clear();
                    // A failed handshake (an untrusted certificate) ends here.
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    if line == "\r\n" {
                        complete = true;
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                if !complete {
                    continue;
                }
                let n = r.fetch_add(1, Ordering::SeqCst);
                let mut body = vec![0u8; length];
                let _ = reader.read_exact(&mut body);
                let conn = reader.get_mut();
                if n < fail_first {
                    let _ = conn.write_all(
                        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
                    );
                } else {
                    b.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&body).into_owned());
                    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
                }
                let _ = conn.flush();
            }
        });
        Receiver {
            port,
            bodies,
            requests,
        }
    }
}

/// A CA and a certificate it signed for 127.0.0.1 (made with openssl), in `dir`: returns the
/// CA's, the server certificate's and its key's paths.
fn test_certificates(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let (ca, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
    let (cert, key, csr) = (
        dir.join("server.pem"),
        dir.join("server.key"),
        dir.join("server.csr"),
    );
    let ext = dir.join("server.ext");
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    };
    let p = |p: &Path| p.to_str().unwrap().to_string();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &p(&ca_key),
        "-out",
        &p(&ca),
        "-days",
        "2",
        "-subj",
        "/CN=quarry test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &p(&key),
        "-out",
        &p(&csr),
        "-subj",
        "/CN=127.0.0.1",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &p(&csr),
        "-CA",
        &p(&ca),
        "-CAkey",
        &p(&ca_key),
        "-CAcreateserial",
        "-out",
        &p(&cert),
        "-days",
        "2",
        "-extfile",
        &p(&ext),
    ]);
    (ca, cert, key)
}

fn sql_json(store: &Path, query: &str) -> Vec<serde_json::Value> {
    let out = quarry()
        .args(["sql", "--format", "json", "--store"])
        .arg(store)
        .arg(query)
        .output()
        .unwrap();
    assert!(out.status.success(), "quarry sql failed: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// Checks the Falco shape of one alert line.
fn assert_falco(v: &serde_json::Value) {
    for key in ["time", "rule", "priority", "source", "hostname", "output"] {
        assert!(v[key].is_string(), "Falco alert without {key}: {v}");
    }
    assert!(v["output_fields"].is_object(), "{v}");
    assert!(v["tags"].is_array(), "{v}");
}

/// Checks the OCSF Detection Finding shape of one alert line.
fn assert_ocsf(v: &serde_json::Value) {
    assert_eq!(v["class_uid"], 2004, "{v}");
    assert!(v["finding_info"].is_object(), "{v}");
    assert!(v["time"].is_number(), "{v}");
    assert!(v["severity_id"].is_number(), "{v}");
}

#[test]
fn a_scripted_attack_raises_alerts_on_every_output_and_in_the_store() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let file = dir.path().join("alerts.json");
    let id = format!("q-s20-alerts-{}", std::process::id());
    let c = container(&id);
    let receiver = Receiver::start(2);
    let http = format!("http://127.0.0.1:{}/alerts", receiver.port);
    let file_arg = format!("file:{}", file.display());
    let rec = Recording::start(
        &store,
        &[
            "--containers",
            &id,
            "--alert-output",
            "stdout",
            "--alert-output",
            &file_arg,
            "--alert-output",
            &http,
        ],
    );
    // The attack: a shell in the container reading the shadow file.
    assert_eq!(
        c.exec(&["sh", "-c", "cat /etc/shadow > /dev/null; echo done"]),
        0
    );
    let mut seen = Vec::new();
    let ours = |v: &serde_json::Value, rule: &str| {
        v["output_fields"]["quarry.rule_id"] == rule
            && v["output_fields"]["container.id"] == id.as_str()
    };
    let shadow = rec.alert(&mut seen, |v| ours(v, "QH004"));
    let alert_id = shadow["output_fields"]["quarry.alert_id"]
        .as_str()
        .unwrap_or_else(|| panic!("the alert names no alert id: {shadow}"))
        .to_string();

    // The file and the HTTP receiver (after two refused POSTs) get it too.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let in_file = std::fs::read_to_string(&file)
            .unwrap_or_default()
            .contains(&alert_id);
        let in_http = receiver.received(&alert_id);
        if in_file && in_http {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alert {alert_id} not delivered (file: {in_file}, http: {in_http})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = rec.stop();
    assert!(out.status.success(), "record failed: {out:?}");
    assert!(receiver.requests.load(Ordering::SeqCst) >= 3);
    // Every line of every output is one valid Falco alert.
    seen.extend(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string),
    );
    for line in seen.iter().filter(|l| l.contains("\"rule\"")) {
        assert_falco(&serde_json::from_str(line).unwrap());
    }
    for line in std::fs::read_to_string(&file).unwrap().lines() {
        assert_falco(&serde_json::from_str(line).unwrap());
    }
    for body in receiver.bodies.lock().unwrap().iter() {
        assert_falco(&serde_json::from_str(body).unwrap());
    }
    // The alert table holds it, naming the row behind it, and the store verifies.
    let rows = sql_json(
        &store,
        &format!(
            "SELECT a.rule, a.source_table, f.event FROM alert a JOIN file f \
             ON f.host = a.host AND f.ktime_ns = a.ktime_ns AND f.pid = a.pid \
             WHERE a.alert_id = '{alert_id}'"
        ),
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["rule"], "QH004");
    assert_eq!(rows[0]["source_table"], "file");
    let (code, text) = verify(&store);
    assert_eq!(code, 0, "verify failed: {text}");
    // The timeline opens at the alert and shows it.
    let out = quarry()
        .args(["timeline", "--around", &alert_id, "--store"])
        .arg(&store)
        .output()
        .unwrap();
    assert!(out.status.success(), "timeline --around: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&alert_id) && text.contains("shadow"),
        "{text}"
    );
}

#[test]
fn alerts_are_ocsf_detection_findings_with_that_format() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let file = dir.path().join("alerts.json");
    let id = format!("q-s20-ocsf-{}", std::process::id());
    let c = container(&id);
    let file_arg = format!("file:{}", file.display());
    let rec = Recording::start(
        &store,
        &[
            "--containers",
            &id,
            "--alert-format",
            "ocsf",
            "--alert-output",
            &file_arg,
            "--alert-output",
            "stdout",
        ],
    );
    assert_eq!(c.exec(&["sh", "-c", "cat /etc/shadow > /dev/null"]), 0);
    let mut seen = Vec::new();
    let alert = rec.alert(&mut seen, |v| {
        v["finding_info"]["analytic"]["uid"] == "QH004"
    });
    assert_ocsf(&alert);
    assert!(
        alert.to_string().contains(&id),
        "the finding names its container: {alert}"
    );
    let out = rec.stop();
    assert!(out.status.success(), "record failed: {out:?}");
    for line in std::fs::read_to_string(&file).unwrap().lines() {
        assert_ocsf(&serde_json::from_str(line).unwrap());
    }
}

/// Releases the quarantine on drop, so a failing test leaves none behind.
struct Released(String);
impl Drop for Released {
    fn drop(&mut self) {
        let _ = quarry()
            .args(["release", &self.0, "--store", "/tmp/quarry-test-s20-unused"])
            .output();
        let _ = std::fs::remove_dir_all("/tmp/quarry-test-s20-unused");
        let _ = quarry_isolate::unload_if_idle();
    }
}

#[test]
fn respond_isolates_the_container_on_a_critical_alert() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let id = format!("q-s20-respond-{}", std::process::id());
    let c = container(&id);
    let _released = Released(id.clone());
    let rec = Recording::start(
        &store,
        &["--containers", &id, "--respond", "critical=isolate"],
    );
    // A mount from inside the container: an escape signal (critical), refused or not.
    let _ = c.exec(&["mount", "-t", "tmpfs", "none", "/mnt"]);
    let mut seen = Vec::new();
    let alert = rec.alert(&mut seen, |v| {
        v["output_fields"]["quarry.rule_id"] == "QH008"
            && v["output_fields"]["container.id"] == id.as_str()
    });
    let alert_id = alert["output_fields"]["quarry.alert_id"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(120);
    let action = loop {
        let rows = sql_json(
            &store,
            &format!(
                "SELECT actor, reason, result FROM action WHERE action = 'isolate' \
                 AND container_id = '{id}'"
            ),
        );
        if let Some(r) = rows.into_iter().next() {
            break r;
        }
        assert!(Instant::now() < deadline, "no isolate action row");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(action["result"], "ok", "{action}");
    assert!(
        action["actor"].as_str().unwrap().contains("recorder"),
        "{action}"
    );
    assert!(
        action["reason"].as_str().unwrap().contains(&alert_id),
        "{action}"
    );
    let status = Command::new(env!("CARGO_BIN_EXE_quarry"))
        .args(["isolate", "--status", "--format", "json"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&status.stdout).contains(&id),
        "{status:?}"
    );
    let out = rec.stop();
    assert!(out.status.success(), "record failed: {out:?}");
}

/// An https output: alerts arrive over TLS at a receiver whose certificate the recorder is told
/// to trust (SSL_CERT_FILE); with only the system's CAs, the same receiver gets none of them.
#[test]
fn an_https_output_delivers_over_tls_and_only_to_a_trusted_certificate() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_certificates(dir.path());
    let id = format!("q-s20-https-{}", std::process::id());
    let c = container(&id);
    let trusted = Receiver::start_tls(0, &cert, &key);
    let untrusted = Receiver::start_tls(0, &cert, &key);
    let store = dir.path().join("store");
    let to_trusted = format!("https://127.0.0.1:{}/alerts", trusted.port);
    let rec = Recording::start_with_env(
        &store,
        &[
            "--containers",
            &id,
            "--alert-output",
            "stdout",
            "--alert-output",
            &to_trusted,
        ],
        &[("SSL_CERT_FILE", &ca)],
    );
    let store2 = dir.path().join("store2");
    let to_untrusted = format!("https://127.0.0.1:{}/alerts", untrusted.port);
    let rec2 = Recording::start(
        &store2,
        &[
            "--containers",
            &id,
            "--alert-output",
            "stdout",
            "--alert-output",
            &to_untrusted,
        ],
    );
    assert_eq!(
        c.exec(&["sh", "-c", "cat /etc/shadow > /dev/null; echo done"]),
        0
    );
    let ours = |v: &serde_json::Value| {
        v["output_fields"]["quarry.rule_id"] == "QH004"
            && v["output_fields"]["container.id"] == id.as_str()
    };
    let alert = rec.alert(&mut Vec::new(), ours);
    let alert_id = alert["output_fields"]["quarry.alert_id"]
        .as_str()
        .unwrap()
        .to_string();
    rec2.alert(&mut Vec::new(), ours);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !trusted.received(&alert_id) {
        assert!(
            Instant::now() < deadline,
            "alert {alert_id} not delivered over TLS"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The other recorder tried (and retried) and was refused by its certificate check: stopped,
    // it has given up or is still retrying, and nothing reached the receiver.
    let out = rec2.stop();
    assert!(out.status.success(), "{out:?}");
    assert!(
        untrusted.bodies.lock().unwrap().is_empty(),
        "an alert went to an untrusted receiver"
    );
    let out = rec.stop();
    assert!(out.status.success(), "{out:?}");
    for body in trusted.bodies.lock().unwrap().iter() {
        assert_falco(&serde_json::from_str(body).unwrap());
    }
    drop(c);
}
