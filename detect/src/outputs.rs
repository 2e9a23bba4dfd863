//! Alert outputs: each has a bounded queue and a thread of its own, so a slow receiver
//! never holds up detection (nor, through it, the recorder); what a full queue or a receiver
//! that keeps failing costs is counted.
//!
//! An alert is one JSON line (see [`quarry_store::alert`]). HTTP outputs POST each alert as
//! `application/json`, retrying a failed POST (connection refused, a status other than 2xx)
//! after 0.2, 0.5, 1, 2 and 4 s before counting it as dropped. `https://` outputs speak TLS
//! (rustls) and check the receiver's certificate against the system's trusted CAs (as
//! `SSL_CERT_FILE` or `SSL_CERT_DIR` name them, else the system store); an untrusted or
//! mismatched certificate is a failed POST, never a silent plain-text one.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use quarry_store::alert::{AlertFormat, format};
use quarry_store::schema::AlertRow;

use crate::DetectError;

/// Alerts an output's queue holds.
pub const QUEUE: usize = 1024;
/// Pauses between the attempts of one HTTP POST.
pub const HTTP_RETRY_AFTER: [Duration; 5] = [
    Duration::from_millis(200),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];
/// How long the end of a recording waits for the outputs to send what they hold.
pub const FINISH_GRACE: Duration = Duration::from_secs(10);

/// One `--alert-output`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputSpec {
    Stdout,
    /// Standard error: where alerts go when standard output carries a machine-read summary
    /// (`quarry record --format json` without `--alert-output`).
    Stderr,
    File(PathBuf),
    Syslog,
    Http {
        host: String,
        port: u16,
        path: String,
        /// `https://`: TLS, the receiver's certificate checked.
        tls: bool,
    },
}

impl std::str::FromStr for OutputSpec {
    type Err = DetectError;

    fn from_str(s: &str) -> Result<OutputSpec, DetectError> {
        let wrong = |spec: &str, problem: &str| DetectError::Output {
            spec: spec.to_string(),
            problem: problem.to_string(),
        };
        if s == "stdout" {
            return Ok(OutputSpec::Stdout);
        }
        if s == "stderr" {
            return Ok(OutputSpec::Stderr);
        }
        if s == "syslog" {
            return Ok(OutputSpec::Syslog);
        }
        if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                return Err(wrong(
                    "file",
                    "needs a path, e.g. file:/var/log/quarry/alerts.json",
                ));
            }
            return Ok(OutputSpec::File(PathBuf::from(path)));
        }
        let scheme = if s.starts_with("https://") {
            Some(("https://", true, 443))
        } else if s.starts_with("http://") {
            Some(("http://", false, 80))
        } else {
            None
        };
        if let Some((prefix, tls, default_port)) = scheme {
            let rest = &s[prefix.len()..];
            let (authority, path) = match rest.find('/') {
                Some(at) => (&rest[..at], &rest[at..]),
                None => (rest, "/"),
            };
            let (host, port) = match authority.rsplit_once(':') {
                Some((h, p)) => (
                    h,
                    p.parse::<u16>().map_err(|source| DetectError::OutputPort {
                        spec: s.to_string(),
                        port: p.to_string(),
                        source,
                    })?,
                ),
                None => (authority, default_port),
            };
            if host.is_empty()
                || path.contains(['\r', '\n', ' '])
                || host.contains(['\r', '\n', ' ', '@'])
            {
                return Err(wrong(
                    s,
                    "not a URL of the form http://HOST[:PORT]/PATH or https://HOST[:PORT]/PATH",
                ));
            }
            return Ok(OutputSpec::Http {
                host: host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
                port,
                path: path.to_string(),
                tls,
            });
        }
        Err(DetectError::UnknownOutput {
            spec: s.to_string(),
        })
    }
}

impl std::fmt::Display for OutputSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OutputSpec::Stdout => f.write_str("stdout"),
            OutputSpec::Stderr => f.write_str("stderr"),
            OutputSpec::File(p) => write!(f, "file:{}", p.display()),
            OutputSpec::Syslog => f.write_str("syslog"),
            OutputSpec::Http {
                host,
                port,
                path,
                tls,
            } => {
                let scheme = if *tls { "https" } else { "http" };
                write!(f, "{scheme}://{host}:{port}{path}")
            }
        }
    }
}

/// One running output.
struct Output {
    name: String,
    tx: Mutex<Option<SyncSender<String>>>,
    queued: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// Every output of a recording.
pub struct Outputs {
    outputs: Vec<Output>,
    format: AlertFormat,
    host: String,
}

/// Per-output counters, for metrics.
pub struct OutputCounters {
    pub name: String,
    pub queued: u64,
    pub dropped: u64,
    pub sent: u64,
}

impl Outputs {
    pub fn start(specs: &[OutputSpec], format: AlertFormat, host: &str) -> Outputs {
        let outputs = specs
            .iter()
            .map(|spec| {
                let (tx, rx) = sync_channel::<String>(QUEUE);
                let queued = Arc::new(AtomicU64::new(0));
                let dropped = Arc::new(AtomicU64::new(0));
                let sent = Arc::new(AtomicU64::new(0));
                let spec2 = spec.clone();
                let (q, d, s) = (queued.clone(), dropped.clone(), sent.clone());
                let thread = std::thread::Builder::new()
                    .name("quarry-alert-out".into())
                    .spawn(move || deliver(spec2, rx, &q, &d, &s))
                    .expect("spawning an alert output thread");
                Output {
                    name: spec.to_string(),
                    tx: Mutex::new(Some(tx)),
                    queued,
                    dropped,
                    sent,
                    thread: Mutex::new(Some(thread)),
                }
            })
            .collect();
        Outputs {
            outputs,
            format,
            host: host.to_string(),
        }
    }

    /// Queues the alert on every output; never waits (a full queue counts a drop).
    pub fn send(&self, alert: &AlertRow) {
        let line = format(self.format, &self.host, alert);
        for out in &self.outputs {
            let tx = out.tx.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(tx) = tx.as_ref() else { continue };
            match tx.try_send(line.clone()) {
                Ok(()) => {
                    out.queued.fetch_add(1, Ordering::Relaxed);
                }
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    out.dropped.fetch_add(1, Ordering::Relaxed);
                    log::warn!("alert output {} is behind: an alert was dropped", out.name);
                }
            }
        }
    }

    /// Alerts dropped over every output.
    pub fn dropped(&self) -> u64 {
        self.outputs
            .iter()
            .map(|o| o.dropped.load(Ordering::Relaxed))
            .sum()
    }

    pub fn counters(&self) -> Vec<OutputCounters> {
        self.outputs
            .iter()
            .map(|o| OutputCounters {
                name: o.name.clone(),
                queued: o.queued.load(Ordering::Relaxed),
                dropped: o.dropped.load(Ordering::Relaxed),
                sent: o.sent.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Closes the queues and waits (at most [`FINISH_GRACE`]) for them to be sent.
    pub fn finish(&self) {
        for out in &self.outputs {
            out.tx.lock().unwrap_or_else(PoisonError::into_inner).take();
        }
        let deadline = Instant::now() + FINISH_GRACE;
        for out in &self.outputs {
            let Some(thread) = out
                .thread
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
            else {
                continue;
            };
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if thread.is_finished() {
                let _ = thread.join();
            } else {
                let left = out.queued.load(Ordering::Relaxed);
                log::warn!(
                    "alert output {} did not take its last {left} alerts in time; they are in the \
                     store's alert table",
                    out.name
                );
            }
        }
    }
}

/// One alert to a standard stream, flushed at once (a reader follows alerts as they come).
fn write_line(mut out: impl Write, line: &str) -> bool {
    writeln!(out, "{line}").and_then(|_| out.flush()).is_ok()
}

fn deliver(
    spec: OutputSpec,
    rx: Receiver<String>,
    queued: &AtomicU64,
    dropped: &AtomicU64,
    sent: &AtomicU64,
) {
    let mut file: Option<File> = None;
    let mut syslog: Option<UnixDatagram> = None;
    let mut tls_config: Option<Arc<rustls::ClientConfig>> = None;
    for line in rx {
        queued.fetch_sub(1, Ordering::Relaxed);
        let ok = match &spec {
            OutputSpec::Stdout => write_line(std::io::stdout().lock(), &line),
            OutputSpec::Stderr => write_line(std::io::stderr().lock(), &line),
            OutputSpec::File(path) => {
                if file.is_none() {
                    // Appended, created private, never through a symlink.
                    match OpenOptions::new()
                        .append(true)
                        .create(true)
                        .mode(0o640)
                        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                        .open(path)
                    {
                        Ok(f) => file = Some(f),
                        Err(e) => log::error!("alert output file:{}: {e}", path.display()),
                    }
                }
                match file.as_mut() {
                    // One write per line: with O_APPEND, lines of concurrent writers never mix.
                    Some(f) => f.write_all(format!("{line}\n").as_bytes()).is_ok(),
                    None => false,
                }
            }
            OutputSpec::Syslog => {
                if syslog.is_none() {
                    syslog = UnixDatagram::unbound()
                        .and_then(|s| s.connect("/dev/log").map(|_| s))
                        .map_err(|e| log::error!("alert output syslog (/dev/log): {e}"))
                        .ok();
                }
                // <facility security/authorization (10) * 8 + warning (4)>
                let msg = format!("<84>quarry[{}]: {line}", std::process::id());
                match &syslog {
                    Some(s) => s.send(msg.as_bytes()).is_ok(),
                    None => false,
                }
            }
            OutputSpec::Http {
                host,
                port,
                path,
                tls,
            } => {
                if *tls && tls_config.is_none() {
                    match client_tls() {
                        Ok(config) => tls_config = Some(config),
                        Err(e) => log::error!("alert output {spec}: {e}"),
                    }
                }
                match (*tls, &tls_config) {
                    // No TLS client could be made: the alert is not sent in plain text.
                    (true, None) => false,
                    (true, Some(config)) => {
                        post_with_retries(&spec, host, *port, path, Some(config), &line)
                    }
                    (false, _) => post_with_retries(&spec, host, *port, path, None, &line),
                }
            }
        };
        if ok {
            sent.fetch_add(1, Ordering::Relaxed);
        } else {
            dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The TLS client of `https://` outputs: the system's trusted CAs, rustls' safe defaults.
fn client_tls() -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        // A certificate of the store that rustls cannot use is skipped, not fatal.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(format!(
            "no trusted CA certificate found (install ca-certificates, or name a bundle with \
             SSL_CERT_FILE){}",
            found
                .errors
                .first()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn post_with_retries(
    spec: &OutputSpec,
    host: &str,
    port: u16,
    path: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
    body: &str,
) -> bool {
    let mut last = String::new();
    for attempt in 0..=HTTP_RETRY_AFTER.len() {
        match post(host, port, path, tls, body) {
            Ok(()) => return true,
            Err(e) => last = e.to_string(),
        }
        if let Some(pause) = HTTP_RETRY_AFTER.get(attempt) {
            std::thread::sleep(*pause);
        }
    }
    log::warn!(
        "alert output {spec}: an alert was dropped after {} attempts: {last}",
        HTTP_RETRY_AFTER.len() + 1
    );
    false
}

/// One HTTP/1.1 POST, over TLS when `tls` is given; Ok on a 2xx status.
fn post(
    host: &str,
    port: u16,
    path: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
    body: &str,
) -> std::io::Result<()> {
    let addr = (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("the host has no address"))?;
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let host_header = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: quarry/{}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    match tls {
        None => exchange(s, &request),
        Some(config) => {
            // The certificate must name the host as given (a name or an IP address).
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|e| std::io::Error::other(format!("{host} as a TLS name: {e}")))?;
            let conn = rustls::ClientConnection::new(config.clone(), name)
                .map_err(std::io::Error::other)?;
            exchange(rustls::StreamOwned::new(conn, s), &request)
        }
    }
}

/// Sends `request` and reads the answer's status line; Ok on a 2xx status.
fn exchange(mut s: impl Read + Write, request: &str) -> std::io::Result<()> {
    s.write_all(request.as_bytes())?;
    s.flush()?;
    // The status line is all that is needed; read a bounded amount.
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let got = s.read(&mut head[n..])?;
        if got == 0 {
            break;
        }
        n += got;
    }
    let text = String::from_utf8_lossy(&head[..n]);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| std::io::Error::other("no HTTP status line in the answer"))?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("HTTP status {status}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_parse_and_refuse_clearly() {
        assert_eq!("stdout".parse::<OutputSpec>().unwrap(), OutputSpec::Stdout);
        assert_eq!("stderr".parse::<OutputSpec>().unwrap(), OutputSpec::Stderr);
        assert_eq!(
            "http://127.0.0.1:8080/alerts"
                .parse::<OutputSpec>()
                .unwrap(),
            OutputSpec::Http {
                host: "127.0.0.1".into(),
                port: 8080,
                path: "/alerts".into(),
                tls: false,
            }
        );
        let https = "https://alerts.example.com/in"
            .parse::<OutputSpec>()
            .unwrap();
        assert_eq!(
            https,
            OutputSpec::Http {
                host: "alerts.example.com".into(),
                port: 443,
                path: "/in".into(),
                tls: true,
            }
        );
        assert_eq!(https.to_string(), "https://alerts.example.com:443/in");
        assert!("ftp://x".parse::<OutputSpec>().is_err());
        assert!("http://a b/".parse::<OutputSpec>().is_err());
    }
}
