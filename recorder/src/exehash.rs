//! SHA-256 of every executed file, computed off the drain loop.
//!
//! The drain loop only offers a request ([`ExeHashes::request`]) to a bounded queue and never
//! waits: a full queue is an exec row whose `exe_hash` says `queue_full`. One hashing thread
//! takes requests in order and, for each:
//!
//! - opens `/proc/PID/exe` beneath a `/proc` directory fd the recorder opened at start. The
//!   kernel resolves that magic link to its own reference to the executed file (the mm's
//!   `exe_file`), so no name inside the container (a symlink, a renamed or replaced path) is
//!   ever looked up, and the path string of the event is never used;
//! - checks that the opened file is the inode the kernel executed: its device and inode must
//!   equal the ones the eBPF program read from `bprm->file` at the exec. A pid reused, or the
//!   process having executed something else since, shows as another inode (`replaced`); a
//!   process gone is `gone`. A file whose status changed after the exec (ctime later than the
//!   exec, or size/mtime/ctime different after hashing) is `changed`: the bytes read are
//!   perhaps not the ones executed, so no hash is written rather than a wrong one;
//! - hashes at most `max_bytes` (larger: `too_big`), reading from that file descriptor only,
//!   at the lowest CPU priority (nice 19);
//! - remembers the hash keyed by device, inode, size, mtime and ctime (ctime because mtime
//!   can be set back by the file's owner; ctime cannot), so a binary run a thousand times is
//!   read once. The cache is bounded; when full it starts over.
//!
//! Results come back to the drain loop ([`ExeHashes::collect`]). When the exec row is sealed
//! ([`ExeHashes::settle`]) its hash is filled in if ready; if not, the row says `pending` and
//! the result, when it arrives, is written as a `process` row with event `exe_hash` carrying
//! the exec row's host, pid, tid, start_ns and ktime_ns (the link) and the hash or the reason
//! there is none. Each pending exec gets exactly one such row. The `execs` view joins it in.
//!
//! What this module must not do: block the drain loop, read a file by a name, or write a hash
//! it could not tie to the executed inode.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;

use quarry_store::schema::{ProcessEvent, ProcessFacts, ProcessRow, RowIdentity};
use sha2::{Digest, Sha256};

/// Requests waiting for the hashing thread at most; more are `queue_full`.
pub const QUEUE: usize = 4096;
/// Files larger than this are not hashed by default (`too_big`).
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;
/// Hashes remembered at most before the cache starts over.
const CACHE_ENTRIES: usize = 16_384;

/// Why an exec row has no hash (or that it has one): the `exe_hash` column's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Hashed,
    Pending,
    QueueFull,
    TooBig,
    Gone,
    Replaced,
    Changed,
    NotRegular,
    Unreadable,
    NoIdentity,
    Off,
}

impl Status {
    pub const ALL: [Status; 11] = [
        Status::Hashed,
        Status::Pending,
        Status::QueueFull,
        Status::TooBig,
        Status::Gone,
        Status::Replaced,
        Status::Changed,
        Status::NotRegular,
        Status::Unreadable,
        Status::NoIdentity,
        Status::Off,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Hashed => "hashed",
            Status::Pending => "pending",
            Status::QueueFull => "queue_full",
            Status::TooBig => "too_big",
            Status::Gone => "gone",
            Status::Replaced => "replaced",
            Status::Changed => "changed",
            Status::NotRegular => "not_regular",
            Status::Unreadable => "unreadable",
            Status::NoIdentity => "no_identity",
            Status::Off => "off",
        }
    }

    fn index(self) -> usize {
        Status::ALL.iter().position(|s| *s == self).unwrap_or(0)
    }
}

/// Counters of what happened to the execs offered (final outcomes; `pending` counts rows sealed
/// before their hash, which are counted again when it arrives). `cached` counts hashes served
/// from the cache, a subset of `hashed`.
#[derive(Debug, Default)]
pub struct ExeHashStats {
    by_status: [AtomicU64; Status::ALL.len()],
    pub cached: AtomicU64,
}

impl ExeHashStats {
    fn count(&self, s: Status) {
        self.by_status[s.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// (status, count) for every status seen at least once.
    pub fn by_status(&self) -> Vec<(&'static str, u64)> {
        Status::ALL
            .iter()
            .map(|s| {
                (
                    s.as_str(),
                    self.by_status[s.index()].load(Ordering::Relaxed),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// The executed file as the kernel named it at the exec: `bprm->file`'s device (kernel
/// encoding, `MAJOR << 20 | MINOR`) and inode number. Zero inode: unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExeIdentity {
    pub dev: u32,
    pub ino: u64,
}

impl ExeIdentity {
    /// The device as `stat` reports it.
    fn st_dev(self) -> u64 {
        libc::makedev(self.dev >> 20, self.dev & 0xf_ffff)
    }
}

/// What links a result to its exec row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ExecKey {
    pid: i32,
    start_ns: u64,
    ktime_ns: u64,
}

impl ExecKey {
    fn of(row: &ProcessRow) -> ExecKey {
        ExecKey {
            pid: row.id.pid,
            start_ns: row.start_ns.unwrap_or(0),
            ktime_ns: row.id.ktime_ns,
        }
    }
}

struct Request {
    key: ExecKey,
    exe: ExeIdentity,
    /// Wall time of the exec, ns since the epoch: a file changed after it is not what ran.
    exec_unix_ns: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Hashed(String),
    Skipped(Status),
}

impl Outcome {
    fn into_facts(self) -> (Option<String>, Status) {
        match self {
            Outcome::Hashed(h) => (Some(h), Status::Hashed),
            Outcome::Skipped(s) => (None, s),
        }
    }
}

/// The drain loop's side of exec hashing: see the module doc.
pub struct ExeHashes {
    queue: Option<SyncSender<Request>>,
    results: Option<Receiver<(ExecKey, Outcome)>>,
    worker: Option<JoinHandle<()>>,
    /// Results whose exec row is not sealed yet.
    ready: HashMap<ExecKey, Outcome>,
    /// Exec rows sealed as `pending`: what their `exe_hash` row needs of them.
    sealed: HashMap<ExecKey, (RowIdentity, Option<i32>, Option<u64>)>,
    stats: Arc<ExeHashStats>,
}

impl ExeHashes {
    /// Hashing off: every exec row says `off`.
    pub fn off(stats: Arc<ExeHashStats>) -> ExeHashes {
        ExeHashes {
            queue: None,
            results: None,
            worker: None,
            ready: HashMap::new(),
            sealed: HashMap::new(),
            stats,
        }
    }

    /// Starts the hashing thread. `proc` is the host's `/proc`; files above `max_bytes` are
    /// not hashed.
    pub fn start(
        proc: OwnedFd,
        max_bytes: u64,
        stats: Arc<ExeHashStats>,
    ) -> std::io::Result<ExeHashes> {
        let (queue, requests) = mpsc::sync_channel::<Request>(QUEUE);
        // Unbounded, but never longer than the requests queued: one result per request.
        let (done, results) = mpsc::channel();
        let worker_stats = stats.clone();
        let worker = std::thread::Builder::new()
            .name("quarry-exehash".into())
            .spawn(move || {
                // Hashing is the recorder's least urgent work: at the lowest priority it takes
                // idle CPU from the workload rather than its share, and when it falls behind
                // the queue fills and the rows say `queue_full`.
                // SAFETY: setpriority on this thread's own id; no memory is involved.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19) };
                let mut cache = Cache::default();
                for req in requests {
                    let hits = cache.hits;
                    let outcome = hash_exe(&proc, &req, max_bytes, &mut cache);
                    if cache.hits != hits {
                        worker_stats.cached.fetch_add(1, Ordering::Relaxed);
                    }
                    if done.send((req.key, outcome)).is_err() {
                        break;
                    }
                }
            })?;
        Ok(ExeHashes {
            queue: Some(queue),
            results: Some(results),
            worker: Some(worker),
            ready: HashMap::new(),
            sealed: HashMap::new(),
            stats,
        })
    }

    /// Offers an exec row's file for hashing; marks the row `pending` (or why not).
    pub fn request(&mut self, row: &ProcessRow, exe: ExeIdentity, facts: &mut ProcessFacts) {
        if !matches!(row.event, ProcessEvent::Exec { .. }) {
            return;
        }
        let status = match &self.queue {
            None => Status::Off,
            Some(_) if exe.ino == 0 => Status::NoIdentity,
            Some(queue) => {
                let req = Request {
                    key: ExecKey::of(row),
                    exe,
                    exec_unix_ns: row.id.time.timestamp_nanos_opt().unwrap_or(i64::MAX),
                };
                match queue.try_send(req) {
                    Ok(()) => Status::Pending,
                    Err(TrySendError::Full(_)) => Status::QueueFull,
                    Err(TrySendError::Disconnected(_)) => Status::Off,
                }
            }
        };
        if status != Status::Pending {
            self.stats.count(status);
        }
        facts.exe_hash = Some(status.as_str());
    }

    /// Takes the results the hashing thread has finished; those of rows already sealed come
    /// back as `exe_hash` rows to push.
    pub fn collect(&mut self) -> Vec<(ProcessRow, ProcessFacts)> {
        let mut late = Vec::new();
        let Some(results) = &self.results else {
            return late;
        };
        while let Ok((key, outcome)) = results.try_recv() {
            match self.sealed.remove(&key) {
                Some((id, ppid, parent_start_ns)) => {
                    let (exe_sha256, status) = outcome.into_facts();
                    self.stats.count(status);
                    if status == Status::Hashed {
                        self.stats.count(Status::Pending);
                    }
                    let row = ProcessRow {
                        id,
                        ppid,
                        start_ns: Some(key.start_ns),
                        parent_start_ns,
                        event: ProcessEvent::ExeHash,
                    };
                    let facts = ProcessFacts {
                        exe_sha256,
                        exe_hash: Some(status.as_str()),
                        ..Default::default()
                    };
                    late.push((row, facts));
                }
                None => {
                    self.ready.insert(key, outcome);
                }
            }
        }
        late
    }

    /// An exec row is being sealed: its hash if ready, else it stays `pending` and its result
    /// becomes an `exe_hash` row.
    pub fn settle(&mut self, row: &ProcessRow, facts: &mut ProcessFacts) {
        if facts.exe_hash != Some(Status::Pending.as_str()) {
            return;
        }
        let key = ExecKey::of(row);
        match self.ready.remove(&key) {
            Some(outcome) => {
                let (hash, status) = outcome.into_facts();
                self.stats.count(status);
                facts.exe_sha256 = hash;
                facts.exe_hash = Some(status.as_str());
            }
            None => {
                self.sealed
                    .insert(key, (row.id.clone(), row.ppid, row.parent_start_ns));
            }
        }
    }

    /// Stops taking requests and waits for the thread to finish those queued; what they
    /// give is in the next [`ExeHashes::collect`].
    pub fn finish(&mut self) {
        self.queue = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct CacheKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl CacheKey {
    fn of(m: &std::fs::Metadata) -> CacheKey {
        CacheKey {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

#[derive(Default)]
struct Cache {
    hashes: HashMap<CacheKey, String>,
    hits: u64,
}

/// Opens the executed file through the kernel's reference to it and hashes it, or says why
/// not (see the module doc).
fn hash_exe(proc: &OwnedFd, req: &Request, max_bytes: u64, cache: &mut Cache) -> Outcome {
    let file = match open_exe(proc, req.key.pid) {
        Ok(f) => f,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) => {
            return Outcome::Skipped(Status::Gone);
        }
        Err(_) => return Outcome::Skipped(Status::Unreadable),
    };
    let Ok(before) = file.metadata() else {
        return Outcome::Skipped(Status::Unreadable);
    };
    if !before.file_type().is_file() {
        return Outcome::Skipped(Status::NotRegular);
    }
    if before.ino() != req.exe.ino || before.dev() != req.exe.st_dev() {
        return Outcome::Skipped(Status::Replaced);
    }
    let ctime_ns = before.ctime() as i128 * 1_000_000_000 + before.ctime_nsec() as i128;
    if ctime_ns > req.exec_unix_ns as i128 {
        return Outcome::Skipped(Status::Changed);
    }
    if before.size() > max_bytes {
        return Outcome::Skipped(Status::TooBig);
    }
    let key = CacheKey::of(&before);
    if let Some(h) = cache.hashes.get(&key) {
        cache.hits += 1;
        return Outcome::Hashed(h.clone());
    }
    let Ok(hash) = sha256_of(&file, before.size()) else {
        return Outcome::Skipped(Status::Unreadable);
    };
    match (hash, file.metadata()) {
        (Some(hash), Ok(after)) if CacheKey::of(&after) == key => {
            if cache.hashes.len() >= CACHE_ENTRIES {
                cache.hashes.clear();
            }
            cache.hashes.insert(key, hash.clone());
            Outcome::Hashed(hash)
        }
        _ => Outcome::Skipped(Status::Changed),
    }
}

/// `/proc/PID/exe`, opened beneath `proc`: the kernel follows the magic link to the file it
/// holds; nothing else on the way is a name anyone but the kernel controls.
fn open_exe(proc: &OwnedFd, pid: i32) -> std::io::Result<std::fs::File> {
    let name = std::ffi::CString::new(format!("{pid}/exe")).expect("no NUL in a number");
    // SAFETY: a valid directory fd and NUL-terminated name; the returned fd is ours.
    let fd = unsafe {
        libc::openat(
            proc.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// The file's SHA-256 in hex, or None when it did not hold exactly `size` bytes.
fn sha256_of(mut file: &std::fs::File, size: u64) -> std::io::Result<Option<String>> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > size {
            return Ok(None);
        }
        hasher.update(&buf[..n]);
    }
    if total != size {
        return Ok(None);
    }
    Ok(Some(hex::encode(hasher.finalize())))
}

/// Opens the host's `/proc` as a directory, refusing a symlink.
pub fn open_proc() -> std::io::Result<OwnedFd> {
    // SAFETY: a constant NUL-terminated path; the returned fd is ours.
    let fd = unsafe {
        libc::open(
            c"/proc".as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec_row(pid: i32, ktime_ns: u64) -> ProcessRow {
        ProcessRow {
            id: RowIdentity {
                time: chrono::Utc::now(),
                ktime_ns,
                pid,
                tid: pid,
                comm: "t".into(),
                cgroup_id: 1,
                container_id: None,
            },
            ppid: Some(1),
            start_ns: Some(7),
            parent_start_ns: Some(1),
            event: ProcessEvent::Exec {
                filename: "/x".into(),
                argv: vec![],
                argv_truncated: false,
                uid: 0,
                gid: 0,
                euid: 0,
                egid: 0,
            },
        }
    }

    fn own_exe() -> ExeIdentity {
        let m = std::fs::metadata("/proc/self/exe").unwrap();
        let (major, minor) = (libc::major(m.dev()), libc::minor(m.dev()));
        ExeIdentity {
            dev: (major << 20) | minor,
            ino: m.ino(),
        }
    }

    fn wait_for(h: &mut ExeHashes) -> Vec<(ProcessRow, ProcessFacts)> {
        h.finish();
        h.collect()
    }

    #[test]
    fn our_own_executable_hashes_to_what_sha256_of_its_bytes_is() {
        let mut h =
            ExeHashes::start(open_proc().unwrap(), DEFAULT_MAX_BYTES, Arc::default()).unwrap();
        let row = exec_row(std::process::id() as i32, 10);
        let mut facts = ProcessFacts::default();
        h.request(&row, own_exe(), &mut facts);
        assert_eq!(facts.exe_hash, Some("pending"));
        assert!(wait_for(&mut h).is_empty());
        h.settle(&row, &mut facts);
        let bytes = std::fs::read("/proc/self/exe").unwrap();
        let want = hex::encode(Sha256::digest(&bytes));
        assert_eq!(facts.exe_sha256.as_deref(), Some(want.as_str()));
        assert_eq!(facts.exe_hash, Some("hashed"));
    }

    #[test]
    fn another_inode_or_a_missing_process_gives_no_hash() {
        let mut h =
            ExeHashes::start(open_proc().unwrap(), DEFAULT_MAX_BYTES, Arc::default()).unwrap();
        let me = std::process::id() as i32;
        let mut other = own_exe();
        other.ino += 1;
        let rows = [exec_row(me, 1), exec_row(i32::MAX, 2), exec_row(me, 3)];
        let mut facts = vec![ProcessFacts::default(); 3];
        h.request(&rows[0], other, &mut facts[0]);
        h.request(&rows[1], own_exe(), &mut facts[1]);
        h.request(&rows[2], ExeIdentity::default(), &mut facts[2]);
        wait_for(&mut h);
        for (r, f) in rows.iter().zip(facts.iter_mut()) {
            h.settle(r, f);
        }
        let got: Vec<_> = facts
            .iter()
            .map(|f| (f.exe_sha256.clone(), f.exe_hash))
            .collect();
        assert_eq!(
            got,
            vec![
                (None, Some("replaced")),
                (None, Some("gone")),
                (None, Some("no_identity"))
            ]
        );
    }

    #[test]
    fn a_row_sealed_before_its_hash_gets_a_linked_exe_hash_row() {
        let mut h = ExeHashes::start(open_proc().unwrap(), 1, Arc::default()).unwrap();
        let row = exec_row(std::process::id() as i32, 42);
        let mut facts = ProcessFacts::default();
        h.request(&row, own_exe(), &mut facts);
        // Sealed before the thread is waited for: stays pending.
        h.settle(&row, &mut facts);
        assert_eq!(
            (facts.exe_sha256.as_deref(), facts.exe_hash),
            (None, Some("pending"))
        );
        let late = wait_for(&mut h);
        assert_eq!(late.len(), 1);
        let (r, f) = &late[0];
        assert_eq!(r.event, ProcessEvent::ExeHash);
        assert_eq!(
            (r.id.pid, r.id.ktime_ns, r.start_ns),
            (row.id.pid, 42, Some(7))
        );
        // The size cap of 1 byte: no hash, and why.
        assert_eq!(
            (f.exe_sha256.as_deref(), f.exe_hash),
            (None, Some("too_big"))
        );
    }

    #[test]
    fn hashing_off_says_so() {
        let mut h = ExeHashes::off(Arc::default());
        let mut facts = ProcessFacts::default();
        h.request(&exec_row(1, 1), own_exe(), &mut facts);
        assert_eq!(facts.exe_hash, Some("off"));
    }
}
