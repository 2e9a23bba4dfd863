//! Uploading while recording (`quarry record --upload s3://BUCKET/PREFIX`): a thread of its
//! own ships each sealed segment and the host's new manifest entries to the bucket, with
//! quarry-bucket's create-only, hash-checked upload ([`quarry_bucket::upload_new`]).
//!
//! The local store is the spool. A pass starts when the store's manifest has grown (a seal,
//! an action, a baseline) and the last pass is at least [`UploadConfig::interval`] old; a
//! pass that fails (the bucket unreachable, a conflict) is retried with an exponential
//! backoff ([`UploadConfig::backoff_min`] doubling up to [`UploadConfig::backoff_max`]).
//! The backlog (segments and bytes not in the bucket yet, the last error, the last success)
//! is in [`UploadState`], which the status file, the metrics endpoint and the exit summary
//! read; retention reads from it what it may delete ([`UploadState::gate`]).
//!
//! It must never make the recorder wait: the drain loop, the sealer and the signal handlers
//! never touch it, and it reads the store only as a reader does (the manifest under its lock,
//! segments by their manifest hash). It writes nothing to the store.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use quarry_bucket::{Bucket, Shipped, UploadReport, upload_new};
use quarry_store::human::human_bytes;
use quarry_store::{Store, UploadGate};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// How often the thread looks whether the manifest grew.
const POLL: Duration = Duration::from_millis(500);

/// The bucket `record --upload` ships to, from the AWS environment: the client gives up on a
/// request within seconds, and a pass that failed backs off itself ([`UploadConfig::backoff`])
/// instead of the client retrying each request for minutes.
pub fn open_bucket(url: &quarry_bucket::BucketUrl) -> Result<Bucket, quarry_bucket::BucketError> {
    Bucket::from_env_with_retries(url, &[], 3, Duration::from_secs(15))
}

/// How to upload.
#[derive(Debug, Clone)]
pub struct UploadConfig {
    /// The host name the store is filed under in the bucket (`host=`).
    pub host: String,
    /// The least time between the starts of two passes while the bucket answers.
    pub interval: Duration,
    /// The first retry's delay after a failed pass, doubled per failure up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Retention may delete segments not uploaded yet (each is named in its manifest entry).
    pub delete_unuploaded: bool,
}

impl UploadConfig {
    pub fn new(host: impl Into<String>) -> UploadConfig {
        UploadConfig {
            host: host.into(),
            interval: Duration::from_secs(10),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            delete_unuploaded: false,
        }
    }

    /// The delay before the next attempt after `failures` failed passes in a row (at least 1).
    pub fn backoff(&self, failures: u32) -> Duration {
        let doubled = self
            .backoff_min
            .saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)));
        doubled.min(self.backoff_max).max(self.backoff_min)
    }
}

/// The upload's backlog and history, as `quarry status` and the exit summary show it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadStatus {
    /// The bucket URL and the host name the store goes under.
    pub to: String,
    pub host: String,
    /// Segments the store lists that are not in the bucket (as of the last pass).
    pub pending_segments: u64,
    pub pending_bytes: u64,
    /// Whether the store's manifest has entries the bucket lacks (as of the last pass).
    pub manifest_behind: bool,
    /// What this process uploaded, and the manifest chunks (and their bytes) it wrote.
    pub uploaded_segments: u64,
    pub uploaded_bytes: u64,
    pub uploaded_rows: u64,
    /// Of the segments already in the bucket when first looked at (an earlier run's).
    pub found_in_bucket: u64,
    #[serde(default)]
    pub manifest_chunks: u64,
    #[serde(default)]
    pub manifest_bytes: u64,
    pub passes: u64,
    pub failed_passes: u64,
    /// Failed passes since the last one that succeeded.
    pub failures_in_a_row: u32,
    /// When the last pass that left nothing pending ended (RFC 3339).
    pub last_success: Option<String>,
    /// Why the last failed pass failed, and when; cleared by a pass that succeeds.
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    /// Seconds until the next attempt, when a failed pass is waiting for its retry.
    pub retry_in_secs: Option<u64>,
}

impl UploadStatus {
    /// Whether everything the store holds is in the bucket (as of the last pass).
    pub fn is_caught_up(&self) -> bool {
        self.passes > 0 && self.pending_segments == 0 && !self.manifest_behind
    }

    /// What the exit says before the backlog's last chance of `within` (None when there is
    /// no backlog).
    pub fn drain_notice(&self, within: Duration) -> Option<String> {
        if self.is_caught_up() {
            return None;
        }
        Some(format!(
            "quarry: shipping the rest to {} (up to {within:?}){}",
            self.to,
            self.last_error
                .as_deref()
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default()
        ))
    }

    /// The exit summary's line: what this run uploaded, and where.
    pub fn exit_line(&self) -> String {
        format!(
            "uploaded {} segments ({}, {} rows) to {} as host {}{}",
            self.uploaded_segments,
            human_bytes(self.uploaded_bytes),
            self.uploaded_rows,
            self.to,
            self.host,
            if self.found_in_bucket > 0 {
                format!("; {} were there already", self.found_in_bucket)
            } else {
                String::new()
            }
        )
    }

    /// What is still behind at exit, and the command that ships it; None when caught up.
    pub fn behind_warning(&self, store: &std::path::Path) -> Option<String> {
        if self.is_caught_up() {
            return None;
        }
        Some(format!(
            "the bucket is behind: {} segments ({}) {}not uploaded ({}); they stay in {}; \
             `quarry upload --store {} --to {} --host {}` ships them",
            self.pending_segments,
            human_bytes(self.pending_bytes),
            if self.manifest_behind {
                "and the manifest entries "
            } else {
                ""
            },
            self.last_error
                .as_deref()
                .unwrap_or("the exit deadline passed"),
            store.display(),
            store.display(),
            self.to,
            self.host
        ))
    }
}

/// What the upload thread shares with the rest of the recorder.
#[derive(Debug)]
pub struct UploadState {
    status: Mutex<UploadStatus>,
    /// Store paths of segments hash-checked in the bucket (what retention may delete).
    uploaded: Mutex<BTreeSet<String>>,
    /// When the current retry delay ends (for `retry_in_secs`).
    retry_at: Mutex<Option<Instant>>,
    delete_unuploaded: bool,
}

impl UploadState {
    /// A copy of the backlog now.
    pub fn status(&self) -> UploadStatus {
        let mut s = self
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        s.retry_in_secs = self
            .retry_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map(|at| at.saturating_duration_since(Instant::now()).as_secs());
        s
    }

    /// What retention may delete beside this upload (see [`UploadGate`]).
    pub fn gate(&self) -> UploadGate {
        UploadGate {
            to: self
                .status
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .to
                .clone(),
            uploaded: self
                .uploaded
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            delete_unuploaded: self.delete_unuploaded,
        }
    }

    fn update(&self, f: impl FnOnce(&mut UploadStatus)) {
        f(&mut self.status.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

/// The running upload thread.
pub struct Uploader {
    state: Arc<UploadState>,
    stop: Arc<watch::Sender<Option<Instant>>>,
    thread: JoinHandle<()>,
}

impl Uploader {
    /// Starts uploading `store` to `bucket` on a thread of its own; the first pass starts at
    /// once. Fails only when the thread (or its runtime) cannot be started.
    pub fn start(store: Store, bucket: Bucket, config: UploadConfig) -> std::io::Result<Uploader> {
        let state = Arc::new(UploadState {
            status: Mutex::new(UploadStatus {
                to: bucket.url().to_string(),
                host: quarry_store::layout::sanitize_host(&config.host),
                manifest_behind: true,
                ..UploadStatus::default()
            }),
            uploaded: Mutex::new(BTreeSet::new()),
            retry_at: Mutex::new(None),
            delete_unuploaded: config.delete_unuploaded,
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = watch::channel(None);
        let stop = Arc::new(stop);
        let worker = Worker {
            store,
            bucket,
            config,
            state: state.clone(),
            shipped: Shipped::default(),
        };
        let thread = std::thread::Builder::new()
            .name("quarry-upload".into())
            .spawn(move || runtime.block_on(worker.run(stopped)))?;
        Ok(Uploader {
            state,
            stop,
            thread,
        })
    }

    pub fn state(&self) -> Arc<UploadState> {
        self.state.clone()
    }

    /// A handle that cuts [`Uploader::finish`]'s last attempt short (a second stop signal).
    pub fn stopper(&self) -> UploadStopper {
        UploadStopper(self.stop.clone())
    }

    /// [`Uploader::finish`] on `runtime`, unless a stop signal (the second of this run) comes
    /// first: then the last attempt ends at once. `notice` is printed on stderr once the stop
    /// signals are listened for, so a stop signal sent on seeing it is never lost between the
    /// two. The backlog as the upload thread left it.
    pub fn finish_unless_stopped(
        self,
        runtime: &tokio::runtime::Runtime,
        within: Duration,
        notice: Option<String>,
    ) -> UploadStatus {
        let (state, stopper) = (self.state(), self.stopper());
        runtime.block_on(async move {
            let signals = crate::stop::StopSignals::listen();
            if let Some(notice) = notice {
                eprintln!("{notice}");
            }
            let last = tokio::task::spawn_blocking(move || self.finish(within));
            let stop = async {
                if let Ok(mut signals) = signals {
                    signals.next().await;
                    eprintln!("quarry: stop signal: no more upload attempts");
                    stopper.stop_now();
                }
                std::future::pending::<()>().await
            };
            tokio::select! {
                done = last => done.unwrap_or_else(|_| state.status()),
                _ = stop => unreachable!("never resolves"),
            }
        })
    }

    /// Ships what is left, trying until everything is in the bucket or `within` has passed,
    /// then stops the thread and returns the backlog. Call it once nothing more is sealed.
    pub fn finish(self, within: Duration) -> UploadStatus {
        let deadline = Instant::now() + within;
        // A stop asked for already (a second signal that came first) is never put off.
        self.stop
            .send_modify(|d| *d = Some(d.map_or(deadline, |s| s.min(deadline))));
        if self.thread.join().is_err() {
            log::error!("the upload thread panicked; the backlog below is its last word");
        }
        self.state.status()
    }
}

/// Stops an upload's last attempt now (see [`Uploader::stopper`]).
#[derive(Clone)]
pub struct UploadStopper(Arc<watch::Sender<Option<Instant>>>);

impl UploadStopper {
    pub fn stop_now(&self) {
        let _ = self.0.send(Some(Instant::now()));
    }
}

struct Worker {
    store: Store,
    bucket: Bucket,
    config: UploadConfig,
    state: Arc<UploadState>,
    shipped: Shipped,
}

/// The length of the store's manifest: it grows with every entry, so a pass is due when it
/// differs from the one the last good pass saw.
fn manifest_len(store: &Store) -> Option<u64> {
    std::fs::metadata(store.manifest_path())
        .ok()
        .map(|m| m.len())
}

/// Resolves once a stop was asked for and its deadline has passed; a later, earlier deadline
/// (a second signal: stop now) takes over.
async fn deadline_passed(stop: &mut watch::Receiver<Option<Instant>>) {
    loop {
        let stop_at = *stop.borrow_and_update();
        let changed = match stop_at {
            Some(deadline) => tokio::select! {
                _ = tokio::time::sleep_until(deadline.into()) => return,
                r = stop.changed() => r,
            },
            None => stop.changed().await,
        };
        if changed.is_err() {
            // The Uploader is gone without finish: stop now.
            return;
        }
    }
}

impl Worker {
    async fn run(mut self, mut stop: watch::Receiver<Option<Instant>>) {
        let mut next = Instant::now();
        let mut seen: Option<u64> = None;
        let mut failures = 0u32;
        loop {
            // Copied out: the watch's lock is not held across the drain.
            let stop_at = *stop.borrow();
            if stop_at.is_some() {
                return self.drain(&mut stop, failures).await;
            }
            let due = failures > 0 || manifest_len(&self.store) != seen;
            if due && Instant::now() >= next {
                let len = manifest_len(&self.store);
                let started = Instant::now();
                let outcome = tokio::select! {
                    r = self.pass() => r,
                    _ = deadline_passed(&mut stop) => return,
                };
                if outcome {
                    failures = 0;
                    seen = len;
                    next = started + self.config.interval;
                } else {
                    failures = failures.saturating_add(1);
                    next = Instant::now() + self.config.backoff(failures);
                    *self
                        .state
                        .retry_at
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(next);
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                r = stop.changed() => {
                    if r.is_err() {
                        return;
                    }
                }
            }
        }
    }

    /// At exit: passes until nothing is pending or the stop's deadline, backing off between
    /// failures (never past the deadline).
    async fn drain(&mut self, stop: &mut watch::Receiver<Option<Instant>>, mut failures: u32) {
        loop {
            let caught_up = tokio::select! {
                r = self.pass() => r,
                _ = deadline_passed(stop) => {
                    log::warn!("upload: stopped waiting for the bucket at the exit deadline");
                    return;
                }
            };
            if caught_up {
                return;
            }
            failures = failures.saturating_add(1);
            tokio::select! {
                _ = tokio::time::sleep(self.config.backoff(failures)) => {}
                _ = deadline_passed(stop) => return,
            }
        }
    }

    /// One pass; whether it left the bucket caught up with the store.
    async fn pass(&mut self) -> bool {
        let result = upload_new(
            &self.store,
            &self.bucket,
            &self.config.host,
            &mut self.shipped,
            &|_| {},
        )
        .await;
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        *self
            .state
            .uploaded
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = self.shipped.paths();
        let ok = match &result {
            Ok(r) => r.is_ok() && r.pending == 0,
            Err(_) => false,
        };
        if ok {
            *self
                .state
                .retry_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = None;
        }
        let was_failing = self.state.status().failures_in_a_row > 0;
        self.state.update(|s| {
            s.passes += 1;
            match &result {
                Ok(r) => {
                    record_report(s, r);
                    if r.is_ok() && r.pending == 0 {
                        s.failures_in_a_row = 0;
                        s.last_success = Some(now.clone());
                        s.last_error = None;
                        s.last_error_at = None;
                    } else {
                        s.failed_passes += 1;
                        s.failures_in_a_row = s.failures_in_a_row.saturating_add(1);
                        s.last_error = Some(match r.problems.first() {
                            Some(p) if r.problems.len() > 1 => {
                                format!("{p} (and {} more)", r.problems.len() - 1)
                            }
                            Some(p) => p.to_string(),
                            None => format!("{} segments still pending", r.pending),
                        });
                        s.last_error_at = Some(now.clone());
                    }
                }
                Err(e) => {
                    s.failed_passes += 1;
                    s.failures_in_a_row = s.failures_in_a_row.saturating_add(1);
                    s.last_error = Some(quarry_store::human::with_causes(e));
                    s.last_error_at = Some(now.clone());
                }
            }
        });
        let status = self.state.status();
        if !ok && !was_failing {
            log::warn!(
                "upload to {} failing (recording goes on, {} segments wait in the store): {}",
                status.to,
                status.pending_segments,
                status.last_error.as_deref().unwrap_or("unknown error")
            );
        } else if ok && was_failing {
            log::info!("upload to {} caught up", status.to);
        }
        ok
    }
}

/// Adds a pass's report to the status.
fn record_report(s: &mut UploadStatus, r: &UploadReport) {
    s.uploaded_segments += r.uploaded;
    s.uploaded_bytes += r.bytes;
    s.uploaded_rows += r.rows;
    s.found_in_bucket += r.already_there;
    s.pending_segments = r.pending;
    s.pending_bytes = r.pending_bytes;
    s.manifest_behind = r.manifest_key.is_none() && r.manifest_entries > 0;
    if r.manifest_bytes > 0 {
        s.manifest_chunks += 1;
        s.manifest_bytes += r.manifest_bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_bucket::BucketUrl;

    fn seal(store: &Store, seq: u64) {
        quarry_store::fixture::seal_one_gap_row(store, "n1", seq).unwrap();
    }

    #[test]
    fn the_exit_names_the_backlog_it_tries_to_ship_and_nothing_when_caught_up() {
        let mut s = UploadStatus {
            to: "s3://b/p".into(),
            pending_segments: 2,
            last_error: Some("connection refused".into()),
            ..UploadStatus::default()
        };
        assert_eq!(
            s.drain_notice(Duration::from_secs(30)).unwrap(),
            "quarry: shipping the rest to s3://b/p (up to 30s); last error: connection refused"
        );
        (s.passes, s.pending_segments) = (1, 0);
        assert!(s.drain_notice(Duration::from_secs(30)).is_none());
    }

    #[test]
    fn backoff_doubles_from_the_minimum_up_to_the_cap() {
        let c = UploadConfig::new("h");
        let secs: Vec<u64> = (1..=9).map(|f| c.backoff(f).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(c.backoff(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn an_unreachable_bucket_leaves_the_backlog_named_and_finish_returns_at_its_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        seal(&store, 1);
        // A real client against a port nothing listens on (the discard port, closed here).
        let settings = [
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9".to_string()),
            ("AWS_ALLOW_HTTP", "true".to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ACCESS_KEY_ID", "k".to_string()),
            ("AWS_SECRET_ACCESS_KEY", "s".to_string()),
        ];
        let url = BucketUrl::parse("s3://gone/fleet").unwrap();
        let bucket =
            Bucket::from_env_with_retries(&url, &settings, 0, Duration::from_secs(1)).unwrap();
        let mut config = UploadConfig::new("h1");
        config.backoff_min = Duration::from_millis(50);
        let uploader = Uploader::start(store.clone(), bucket, config).unwrap();
        let state = uploader.state();
        let status = uploader.finish(Duration::from_secs(2));
        assert!(!status.is_caught_up(), "{status:?}");
        assert_eq!((status.pending_segments, status.uploaded_segments), (1, 0));
        assert!(status.failed_passes > 0 && status.last_success.is_none());
        assert!(
            status
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("127.0.0.1:9")),
            "{status:?}"
        );
        // Nothing is in the bucket: retention may delete nothing.
        assert!(state.gate().uploaded.is_empty());

        // A stop asked for before the exit's last chance began (a second signal that came
        // first) is not put off by its deadline.
        let bucket =
            Bucket::from_env_with_retries(&url, &settings, 0, Duration::from_secs(1)).unwrap();
        let uploader = Uploader::start(store, bucket, UploadConfig::new("h1")).unwrap();
        uploader.stopper().stop_now();
        let started = Instant::now();
        let status = uploader.finish(Duration::from_secs(3600));
        assert!(started.elapsed() < Duration::from_secs(30), "{status:?}");
    }

    #[test]
    fn what_is_sealed_before_finish_is_shipped_and_retention_may_delete_only_that() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        seal(&store, 1);
        let bucket = Bucket::with_objects(
            BucketUrl::parse("s3://b/fleet").unwrap(),
            Arc::new(object_store::memory::InMemory::new()),
        );
        let mut config = UploadConfig::new("h1");
        config.interval = Duration::from_millis(10);
        let uploader = Uploader::start(store.clone(), bucket, config).unwrap();
        let state = uploader.state();
        seal(&store, 2);
        let status = uploader.finish(Duration::from_secs(30));
        assert!(status.is_caught_up(), "{status:?}");
        assert_eq!(status.uploaded_segments, 2);
        assert_eq!(status.last_error, None);
        // Each entry reached the bucket once, in however many chunks the passes wrote.
        let manifest = std::fs::read(store.manifest_path()).unwrap();
        assert_eq!(status.manifest_bytes, manifest.len() as u64);
        assert!((1..=2).contains(&status.manifest_chunks), "{status:?}");
        let gate = state.gate();
        assert_eq!(gate.uploaded.len(), 2);
        assert_eq!(gate.to, "s3://b/fleet");
        assert!(!gate.delete_unuploaded);
    }
}
