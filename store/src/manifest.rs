//! The store manifest: an append-only, hash-chained log of every segment added or removed.
//!
//! Each line is one JSON [`ManifestEntry`]. Its `hash` is the SHA-256 of the entry's other
//! fields serialized as JSON, and those fields include `prev`, the hash of the line before, so
//! editing, dropping or reordering any line breaks the chain from there on. Publishing the head
//! hash (printed by `quarry verify`) elsewhere also pins the chain's length.
//!
//! Appends take an exclusive `flock` on the manifest so the recorder, retention and on-demand
//! commands can share a store.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Result, StoreError};

/// The `prev` of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ManifestOp {
    /// A segment was sealed into the store.
    Add,
    /// A segment was deleted (by retention or compaction); `reason` says why.
    Remove,
}

/// The hashed content of one manifest line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryBody {
    pub seq: u64,
    /// When the entry was written, RFC 3339 UTC.
    pub at: String,
    pub op: ManifestOp,
    pub table: String,
    /// Segment path relative to the store root, `/`-separated.
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    /// SHA-256 of the segment file, hex.
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// On the `add` of a compacted segment: the segments whose rows it holds, removed by the
    /// entries that follow. Left out when empty, so entries written before it hash the same.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaces: Vec<String>,
    pub prev: String,
}

/// One manifest line: the body and its chained hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    #[serde(flatten)]
    pub body: EntryBody,
    pub hash: String,
}

impl EntryBody {
    /// The chained hash of this body (which includes the previous entry's hash).
    pub fn hash(&self) -> String {
        let json = serde_json::to_vec(self).expect("an entry body always serializes");
        hex::encode(Sha256::digest(&json))
    }
}

/// What a new entry says, before it is numbered and chained.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub op: ManifestOp,
    pub table: String,
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
    pub reason: Option<String>,
    /// See [`EntryBody::replaces`].
    pub replaces: Vec<String>,
}

impl NewEntry {
    /// The `remove` of a segment the manifest listed with `added`, saying why.
    pub fn remove(added: &EntryBody, reason: String) -> NewEntry {
        NewEntry {
            op: ManifestOp::Remove,
            table: added.table.clone(),
            path: added.path.clone(),
            rows: added.rows,
            bytes: added.bytes,
            sha256: added.sha256.clone(),
            reason: Some(reason),
            replaces: Vec::new(),
        }
    }
}

/// A manifest file.
#[derive(Debug, Clone)]
pub struct Manifest {
    path: PathBuf,
}

/// The result of reading a manifest: every entry that parsed, in order, plus what did not.
#[derive(Debug, Default)]
pub struct ManifestLog {
    pub entries: Vec<(usize, ManifestEntry)>,
    /// Lines (1-based) that are not valid entries.
    pub malformed: Vec<(usize, String)>,
    /// The file ends without a newline: an append was cut short.
    pub torn_tail: bool,
}

impl Manifest {
    pub fn new(path: impl Into<PathBuf>) -> Manifest {
        Manifest { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Takes the manifest's exclusive lock (creating the manifest if needed) until dropped:
    /// appends and store recovery hold it so they never interleave.
    pub fn lock(&self) -> Result<ManifestLock> {
        crate::layout::refuse_symlink(&self.path)?;
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(crate::layout::FILE_MODE)
            .open(&self.path)
            .map_err(|e| StoreError::io(&self.path, e))?;
        let lock = Flock::exclusive(&file, &self.path)?;
        Ok(ManifestLock { _lock: lock, file })
    }

    /// Appends an entry chained to the current last one and fsyncs it before returning.
    pub fn append(&self, new: NewEntry) -> Result<ManifestEntry> {
        let guard = self.lock()?;
        self.append_locked(&guard, new)
    }

    /// [`Manifest::append`] under a lock the caller already holds.
    pub fn append_locked(&self, guard: &ManifestLock, new: NewEntry) -> Result<ManifestEntry> {
        let mut entries = self.append_all_locked(guard, vec![new])?;
        Ok(entries.pop().expect("one entry in, one out"))
    }

    /// Appends several entries, chained in order, in one write and one fsync (retention and
    /// compaction log many removals at once). A killed writer leaves a prefix of whole lines
    /// and at most a torn tail, as with single appends.
    pub fn append_all_locked(
        &self,
        guard: &ManifestLock,
        news: Vec<NewEntry>,
    ) -> Result<Vec<ManifestEntry>> {
        let mut file = &guard.file;
        let (last, torn) = self.read_last_entry(file)?;
        let (mut seq, mut prev) = match last {
            Some(e) => (e.body.seq + 1, e.hash),
            None => (0, GENESIS_HASH.to_string()),
        };
        // A previous writer died mid-line: start on a fresh line, in the same write, so a
        // failure here cannot leave a repaired-looking but unparseable tail.
        let mut lines = if torn { vec![b'\n'] } else { Vec::new() };
        let mut out = Vec::with_capacity(news.len());
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        for new in news {
            let body = EntryBody {
                seq,
                at: at.clone(),
                op: new.op,
                table: new.table,
                path: new.path,
                rows: new.rows,
                bytes: new.bytes,
                sha256: new.sha256,
                reason: new.reason,
                replaces: new.replaces,
                prev,
            };
            let entry = ManifestEntry {
                hash: body.hash(),
                body,
            };
            lines.extend(serde_json::to_vec(&entry).expect("an entry always serializes"));
            lines.push(b'\n');
            seq += 1;
            prev = entry.hash.clone();
            out.push(entry);
        }
        // One write(2): a killed writer leaves whole lines or a torn tail, never a line spliced
        // into another.
        let before = file
            .metadata()
            .map_err(|e| StoreError::io(&self.path, e))?
            .len();
        if let Err(e) = file.write_all(&lines).and_then(|_| file.sync_data()) {
            // A full disk takes part of the write: cut it off again (truncating needs no free
            // space), so the entries on record stay exactly those that were appended whole.
            if let Err(cut) = file.set_len(before) {
                log::error!(
                    "{}: cannot remove a partly written entry ({cut}); the next append starts \
                     a fresh line after it",
                    self.path.display()
                );
            }
            return Err(StoreError::io(&self.path, e));
        }
        Ok(out)
    }

    /// Finds the last complete entry by reading backwards from the end in growing windows.
    fn read_last_entry(&self, mut file: &File) -> Result<(Option<ManifestEntry>, bool)> {
        let len = file
            .metadata()
            .map_err(|e| StoreError::io(&self.path, e))?
            .len();
        if len == 0 {
            return Ok((None, false));
        }
        let mut window = 4096u64;
        loop {
            let start = len.saturating_sub(window);
            let mut buf = vec![0u8; (len - start) as usize];
            file.seek(SeekFrom::Start(start))
                .and_then(|_| file.read_exact(&mut buf))
                .map_err(|e| StoreError::io(&self.path, e))?;
            let torn = buf.last() != Some(&b'\n');
            let complete = match buf.iter().rposition(|&b| b == b'\n') {
                Some(i) => &buf[..i],
                None => &buf[..0],
            };
            // Lines wholly inside the window: skip the first, possibly cut, unless at file start.
            let mut lines: Vec<&[u8]> = complete.split(|&b| b == b'\n').collect();
            if start > 0 && !lines.is_empty() {
                lines.remove(0);
            }
            // The newest line that parses: a torn fragment followed by a newline (left by an
            // older writer) is skipped here and reported by `verify`.
            if let Some(entry) = lines
                .iter()
                .rev()
                .filter(|l| !l.is_empty())
                .find_map(|l| serde_json::from_slice::<ManifestEntry>(l).ok())
            {
                return Ok((Some(entry), torn));
            }
            if start == 0 {
                return Ok((None, torn));
            }
            window *= 4;
        }
    }

    /// Reads every line. A missing manifest reads as empty.
    pub fn read(&self) -> Result<ManifestLog> {
        crate::layout::refuse_symlink(&self.path)?;
        let data = match fs::read(&self.path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ManifestLog::default()),
            Err(e) => return Err(StoreError::io(&self.path, e)),
        };
        Ok(ManifestLog::parse(&data))
    }
}

impl ManifestLog {
    /// Parses a manifest's bytes (a store's file, or a copy of it in a bucket).
    pub fn parse(data: &[u8]) -> ManifestLog {
        let mut log = ManifestLog {
            torn_tail: !data.is_empty() && data.last() != Some(&b'\n'),
            ..Default::default()
        };
        for (i, line) in data.split(|&b| b == b'\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<ManifestEntry>(line) {
                Ok(e) => log.entries.push((i + 1, e)),
                Err(e) => log.malformed.push((i + 1, e.to_string())),
            }
        }
        log
    }

    /// The segments the manifest lists as present: every `add` not followed by a `remove` of
    /// the same path, in the order they were added.
    pub fn live(&self) -> Vec<&ManifestEntry> {
        let mut live: Vec<Option<&ManifestEntry>> = Vec::new();
        let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for (_, e) in &self.entries {
            match e.body.op {
                ManifestOp::Add => {
                    index.insert(&e.body.path, live.len());
                    live.push(Some(e));
                }
                ManifestOp::Remove => {
                    if let Some(i) = index.remove(e.body.path.as_str()) {
                        live[i] = None;
                    }
                }
            }
        }
        live.into_iter().flatten().collect()
    }

    /// Hash of the last entry (the chain's head), or the genesis hash of an empty manifest.
    pub fn head(&self) -> String {
        self.entries
            .last()
            .map(|(_, e)| e.hash.clone())
            .unwrap_or_else(|| GENESIS_HASH.to_string())
    }
}

/// The manifest's exclusive lock; see [`Manifest::lock`].
pub struct ManifestLock {
    // Dropped first: unlock before the file closes.
    _lock: Flock,
    file: File,
}

/// An exclusive advisory lock held until dropped.
struct Flock {
    fd: RawFd,
}

impl Flock {
    /// Locks `file`; the lock must be dropped before `file` is closed.
    fn exclusive(file: &File, path: &Path) -> Result<Self> {
        // SAFETY: flock on a valid, open descriptor has no memory-safety requirements.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(StoreError::io(path, std::io::Error::last_os_error()));
        }
        Ok(Flock {
            fd: file.as_raw_fd(),
        })
    }
}

impl Drop for Flock {
    fn drop(&mut self) {
        // SAFETY: as above; unlocking cannot fail in a way we could act on.
        unsafe { libc::flock(self.fd, libc::LOCK_UN) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(path: &str) -> NewEntry {
        NewEntry {
            op: ManifestOp::Add,
            table: "process".into(),
            path: path.into(),
            rows: 1,
            bytes: 2,
            sha256: "ab".into(),
            reason: None,
            replaces: Vec::new(),
        }
    }

    #[test]
    fn entries_chain() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest::new(dir.path().join("manifest.jsonl"));
        let a = m.append(add("a")).unwrap();
        let b = m.append(add("b")).unwrap();
        assert_eq!(a.body.prev, GENESIS_HASH);
        assert_eq!(b.body.prev, a.hash);
        assert_eq!(b.body.seq, 1);
        let log = m.read().unwrap();
        assert_eq!(log.entries.len(), 2);
        assert!(!log.torn_tail && log.malformed.is_empty());
        assert_eq!(log.entries[1].1.body.hash(), b.hash);
    }

    #[test]
    fn several_entries_chain_in_one_append() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest::new(dir.path().join("manifest.jsonl"));
        let a = m.append(add("a")).unwrap();
        let guard = m.lock().unwrap();
        let more = m
            .append_all_locked(&guard, vec![add("b"), add("c"), add("d")])
            .unwrap();
        drop(guard);
        assert_eq!(more[0].body.prev, a.hash);
        assert_eq!(more[2].body.prev, more[1].hash);
        assert_eq!(more[2].body.seq, 3);
        let log = m.read().unwrap();
        assert_eq!(log.entries.len(), 4);
        assert_eq!(log.head(), more[2].hash);
        assert_eq!(log.live().len(), 4);
    }

    #[test]
    fn append_after_torn_tail_starts_a_new_line() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest::new(dir.path().join("manifest.jsonl"));
        let a = m.append(add("a")).unwrap();
        OpenOptions::new()
            .append(true)
            .open(m.path())
            .unwrap()
            .write_all(b"{\"seq\":1,\"at")
            .unwrap();
        let b = m.append(add("b")).unwrap();
        assert_eq!(b.body.prev, a.hash);
        let log = m.read().unwrap();
        assert_eq!(log.entries.len(), 2);
        assert_eq!(log.malformed.len(), 1);
    }

    #[test]
    fn last_entry_found_beyond_first_window() {
        let dir = tempfile::tempdir().unwrap();
        let m = Manifest::new(dir.path().join("manifest.jsonl"));
        let long = "x".repeat(10_000);
        m.append(add(&long)).unwrap();
        let b = m.append(add(&long)).unwrap();
        let c = m.append(add("c")).unwrap();
        assert_eq!(c.body.prev, b.hash);
    }
}
