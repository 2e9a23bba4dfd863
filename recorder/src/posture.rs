//! Least-privilege posture of the containers the recorder sees, judged off the drain loop.
//!
//! At each seal the drain loop offers the containers it attributed rows to
//! ([`PostureWatch::offer`]: a `try_send` into a bounded queue, so it never waits). A thread of
//! its own, at nice 19, reads a container's facts (`quarry-posture`: the kernel's view of its
//! init process, its cgroup limits, its OCI config) at most once per [`REASSESS_EVERY`] and
//! keeps the result only when it differs from the last one recorded for that container: the
//! first assessment and every change become `posture` rows, an unchanged posture writes
//! nothing. The drain loop takes ready rows at the next seal ([`PostureWatch::take_rows`]).
//!
//! The facts are read through the kernel's records, never the container's files: a pid no
//! longer in the container's cgroup is refused by `quarry-posture` (a stale or reused pid),
//! and is tried again at a later seal. This module must not block the drain loop or change
//! anything it looks at.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use quarry_containers::{CgroupFs, Container};
use quarry_posture::{Finding, Sources, assess, gather};
use quarry_store::schema::PostureRow;
use sha2::{Digest, Sha256};

/// A container is judged again at most this often (posture changes are rare: a capability
/// granted by `setpriv`, a mount added with `nsenter`).
pub const REASSESS_EVERY: Duration = Duration::from_secs(60);
/// Containers waiting to be judged; more are offered again at the next seal.
const QUEUE: usize = 256;
/// Assessments ready and not yet taken by the drain loop.
const READY: usize = 1024;
/// How long the end of a recording waits for assessments still being made.
pub const FINISH_WAIT: Duration = Duration::from_secs(2);

/// The posture thread and its queues.
pub struct PostureWatch {
    requests: Option<SyncSender<Arc<Container>>>,
    ready: Receiver<Vec<PostureRow>>,
    thread: Option<JoinHandle<()>>,
    /// When each container was last offered, so a busy container is not offered every seal.
    offered: HashMap<String, Instant>,
}

impl PostureWatch {
    /// Starts the thread.
    pub fn start() -> std::io::Result<PostureWatch> {
        let (requests, incoming) = sync_channel::<Arc<Container>>(QUEUE);
        let (done, ready) = sync_channel::<Vec<PostureRow>>(READY);
        let thread = std::thread::Builder::new()
            .name("quarry-posture".into())
            .spawn(move || {
                // SAFETY: setpriority on this thread (who 0 = the caller) changes only its
                // own scheduling priority.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
                judge(incoming, done)
            })?;
        Ok(PostureWatch {
            requests: Some(requests),
            ready,
            thread: Some(thread),
            offered: HashMap::new(),
        })
    }

    /// Offers containers rows were attributed to; never waits (a full queue drops the offer,
    /// the container is offered again at a later seal).
    pub fn offer(&mut self, containers: impl IntoIterator<Item = Arc<Container>>) {
        let Some(requests) = &self.requests else {
            return;
        };
        let now = Instant::now();
        for c in containers {
            if c.init_pid.is_none() {
                continue;
            }
            if self
                .offered
                .get(&c.id)
                .is_some_and(|at| now.duration_since(*at) < REASSESS_EVERY)
            {
                continue;
            }
            if requests.try_send(c.clone()).is_ok() {
                self.offered.insert(c.id.clone(), now);
            }
        }
        // Containers not offered for a day are forgotten (they are gone).
        self.offered
            .retain(|_, at| now.duration_since(*at) < Duration::from_secs(24 * 3600));
    }

    /// The posture rows ready now.
    pub fn take_rows(&mut self) -> Vec<PostureRow> {
        let mut rows = Vec::new();
        loop {
            match self.ready.try_recv() {
                Ok(mut r) => rows.append(&mut r),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return rows,
            }
        }
    }

    /// Stops the thread once it has judged what it was offered, waiting at most
    /// [`FINISH_WAIT`], and returns the rows still to seal.
    pub fn finish(mut self) -> Vec<PostureRow> {
        self.requests = None;
        let deadline = Instant::now() + FINISH_WAIT;
        let mut rows = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.ready.recv_timeout(left) {
                Ok(mut r) => rows.append(&mut r),
                // Done (the thread ended), or out of time: it is left to end on its own.
                Err(_) => break,
            }
        }
        if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
            let _ = self.thread.take().map(JoinHandle::join);
        }
        rows
    }
}

/// The thread: judges each container offered, hands on the assessments that changed.
fn judge(incoming: Receiver<Arc<Container>>, done: SyncSender<Vec<PostureRow>>) {
    let sources = Sources {
        cgroup2: CgroupFs::detect().map(|fs| fs.mount().to_path_buf()),
        ..Sources::default()
    };
    // The last assessment recorded for each container.
    let mut recorded: HashMap<String, String> = HashMap::new();
    while let Ok(c) = incoming.recv() {
        let Some(pid) = c.init_pid else { continue };
        let findings = match gather(&sources, pid, &c.cgroup_path, c.bundle.as_deref()) {
            Ok(facts) => assess(&facts),
            Err(e) => {
                log::debug!("posture of container {}: {e}", c.id);
                continue;
            }
        };
        let id = posture_id(&findings);
        if recorded.get(&c.id) == Some(&id) {
            continue;
        }
        let rows = rows(&c.id, pid, &id, &findings, chrono::Utc::now());
        if done.send(rows).is_err() {
            return;
        }
        recorded.insert(c.id.clone(), id);
    }
}

/// The digest of an assessment: its findings' ids, severities and evidence, sorted.
pub fn posture_id(findings: &[Finding]) -> String {
    let mut parts: Vec<String> = findings
        .iter()
        .map(|f| format!("{}\0{}\0{}", f.id, f.severity.as_str(), f.evidence))
        .collect();
    parts.sort();
    let digest = Sha256::digest(parts.join("\n").as_bytes());
    hex::encode(&digest[..8])
}

/// The `posture` rows of one assessment (one `none` row when it found nothing).
pub fn rows(
    container_id: &str,
    init_pid: i32,
    posture_id: &str,
    findings: &[Finding],
    time: chrono::DateTime<chrono::Utc>,
) -> Vec<PostureRow> {
    if findings.is_empty() {
        return vec![PostureRow {
            time,
            container_id: container_id.into(),
            posture_id: posture_id.into(),
            check_id: "none".into(),
            severity: "info".into(),
            title: "No least-privilege finding".into(),
            evidence: String::new(),
            why: None,
            fix: None,
            cis: None,
            init_pid: Some(init_pid),
        }];
    }
    findings
        .iter()
        .map(|f| PostureRow {
            time,
            container_id: container_id.into(),
            posture_id: posture_id.into(),
            check_id: f.id.clone(),
            severity: f.severity.as_str().into(),
            title: f.title.clone(),
            evidence: f.evidence.clone(),
            why: Some(f.why.into()),
            fix: Some(f.fix.into()),
            cis: f.cis.map(str::to_string),
            init_pid: Some(init_pid),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_posture::Severity;

    fn finding(id: &str, evidence: &str) -> Finding {
        Finding {
            id: id.into(),
            severity: Severity::High,
            title: "t".into(),
            evidence: evidence.into(),
            why: "w",
            fix: "f",
            cis: Some("5.3"),
        }
    }

    #[test]
    fn the_id_follows_the_findings_not_their_order() {
        let a = [finding("cap-sys-admin", "x"), finding("host-net", "y")];
        let b = [finding("host-net", "y"), finding("cap-sys-admin", "x")];
        assert_eq!(posture_id(&a), posture_id(&b));
        assert_ne!(posture_id(&a), posture_id(&a[..1]));
        assert_ne!(
            posture_id(&[finding("cap-sys-admin", "other")]),
            posture_id(&a[..1])
        );
    }

    #[test]
    fn a_clean_assessment_is_one_none_row() {
        let now = chrono::Utc::now();
        let rows = rows("c1", 7, &posture_id(&[]), &[], now);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].check_id, "none");
        let rows = super::rows("c1", 7, "id", &[finding("host-net", "y")], now);
        assert_eq!(rows[0].cis.as_deref(), Some("5.3"));
    }
}
