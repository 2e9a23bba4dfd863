//! Shipping a store's sealed segments and its manifest to a bucket, once.
//!
//! [`upload_store`] takes a snapshot of the store's manifest (its whole lines, under the
//! manifest's lock so no append is half-read), uploads every segment that snapshot lists as
//! present, then the snapshot's entries the bucket does not have yet as one manifest chunk
//! (see [`crate::manifest`]): what the bucket has is learned by listing the host's manifest
//! directory (never the tables), and the chunk reaching furthest from entry 1 is read back
//! and compared with the snapshot's same entries (the hash chain makes that last chunk stand
//! for all before it), so an upload under another store's host name is refused, not spliced
//! on.
//!
//! Each segment is hashed from the local file against its manifest entry before it leaves (an
//! altered local segment is named, not shipped), written with a create-only PUT (unless a HEAD
//! finds it there already) and read back and hashed again. An object already in the bucket with the right hash is
//! skipped, so a re-run ships only what is new; one with another hash is a conflict, named, never replaced. A request that fails
//! (after the client's retries) ends the run: the bucket is unreachable, and what is left is
//! counted as pending. When anything failed no manifest chunk is written: a chunk in the
//! bucket vouches only for objects that are there.
//!
//! A process that uploads again and again (the recorder's `--upload`, see quarry-recorder's
//! `upload`) passes the same [`Shipped`] to [`upload_new`] each time: what an earlier pass
//! hash-checked in the bucket is not read back again and the manifest directory is listed
//! once, so a pass costs what is new, not the whole store (nor the whole manifest).
//!
//! It must not write to the store (the binary records the upload as an action) or delete
//! anything anywhere.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;

use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use quarry_store::Store;
use quarry_store::layout::{bucket_manifest_key, bucket_segment_key, sanitize_host};
use quarry_store::manifest::{Manifest, ManifestLog};
use serde::Serialize;

use crate::{Bucket, BucketError, Result, sha256_hex};

/// One thing that kept an object from being uploaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UploadProblem {
    /// The local segment does not match its manifest entry (or is gone): not shipped.
    LocalMismatch { path: String, reason: String },
    /// The bucket already holds another object under this key: it was left alone.
    Conflict {
        key: String,
        expected: String,
        actual: String,
    },
    /// The object read back after the upload does not hash as sent.
    ReadBack {
        key: String,
        expected: String,
        actual: String,
    },
    /// The bucket's manifest of this host is not the store's: no chunk was added to it.
    ManifestConflict { key: String, reason: String },
    /// A request failed (after the client's own retries).
    Request { key: String, error: String },
}

impl std::fmt::Display for UploadProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UploadProblem::LocalMismatch { path, reason } => {
                write!(f, "not uploaded: local segment {path} {reason}")
            }
            UploadProblem::Conflict {
                key,
                expected,
                actual,
            } => write!(
                f,
                "conflict: the bucket already holds {key} with sha256 {actual}, the store's is \
                 {expected}; it was left alone (another store uploads under this host name?)"
            ),
            UploadProblem::ReadBack {
                key,
                expected,
                actual,
            } => write!(
                f,
                "{key} reads back with sha256 {actual} after the upload, sent {expected}"
            ),
            UploadProblem::ManifestConflict { key, reason } => write!(
                f,
                "conflict: the bucket's manifest chunk {key} {reason}; no entries were added \
                 to it (another store uploads under this host name?)"
            ),
            UploadProblem::Request { key, error } => write!(f, "{key}: {error}"),
        }
    }
}

/// The outcome of [`upload_store`].
#[derive(Debug, Default, Clone, Serialize)]
pub struct UploadReport {
    pub bucket: String,
    /// The host name the store's objects are filed under.
    pub host: String,
    /// Segments the store's manifest listed as present.
    pub segments: u64,
    /// Of those: uploaded now, and already in the bucket with the right hash.
    pub uploaded: u64,
    pub already_there: u64,
    /// ... and found there by an earlier pass of this process ([`Shipped`]), not read again.
    #[serde(skip_serializing_if = "is_zero")]
    pub known: u64,
    /// Segments (and their bytes) of the snapshot that are not in the bucket after this pass.
    pub pending: u64,
    pub pending_bytes: u64,
    /// Bytes and rows uploaded now.
    pub bytes: u64,
    pub rows: u64,
    /// The manifest chunk that brings the bucket's copy of the host's manifest up to
    /// `manifest_entries` (written now, or there already); None when problems kept it back.
    pub manifest_key: Option<String>,
    pub manifest_entries: u64,
    /// Bytes of manifest written now (the new chunk; 0 when the bucket had every entry).
    pub manifest_bytes: u64,
    pub problems: Vec<UploadProblem>,
}

impl UploadReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// What the `action` row of `quarry upload` records: `ok` with the report, `error` with
    /// how many objects were not uploaded (and the report), or `error` with what failed.
    pub fn action_outcome(
        result: Result<&UploadReport, &BucketError>,
    ) -> quarry_store::action::Outcome {
        let (word, error, detail) = match result {
            Ok(r) if r.is_ok() => ("ok", None, serde_json::to_value(r).ok()),
            Ok(r) => (
                "error",
                Some(format!("{} objects not uploaded", r.problems.len())),
                serde_json::to_value(r).ok(),
            ),
            Err(e) => ("error", Some(format!("{e:#}")), None),
        };
        quarry_store::action::Outcome {
            result: word,
            error,
            detail,
        }
    }

    /// The report for people (`quarry upload`) of uploading the store at `store_dir`: each
    /// problem, then what was uploaded and where the manifest copy is.
    pub fn render_text(
        &self,
        store_dir: &std::path::Path,
        w: &mut dyn std::io::Write,
    ) -> std::io::Result<()> {
        for p in &self.problems {
            writeln!(w, "✗ {}", quarry_store::text::printable(&p.to_string()))?;
        }
        writeln!(
            w,
            "{}: {} segments of {} as host {}: {} uploaded ({} rows, {} bytes), {} already \
             there{}{}",
            if self.is_ok() {
                "✓ uploaded"
            } else {
                "✗ INCOMPLETE"
            },
            self.segments,
            store_dir.display(),
            self.host,
            self.uploaded,
            self.rows,
            self.bytes,
            self.already_there,
            if self.pending > 0 {
                format!(", {} not uploaded", self.pending)
            } else {
                String::new()
            },
            match &self.manifest_key {
                Some(k) => format!("; manifest {}/{k}", self.bucket),
                None => "; manifest not written (problems above)".to_string(),
            }
        )
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What earlier passes of this process found in the bucket, hash-checked: segments (by store
/// path, with their hash) and how far the host's manifest chunks reach (with the chunk that
/// reaches there). Only ever filled from what was read back from the bucket; a new process
/// starts empty and checks everything once.
#[derive(Debug, Default, Clone)]
pub struct Shipped {
    segments: HashMap<String, String>,
    manifest: Option<(u64, String)>,
}

impl Shipped {
    /// Whether the segment at `path` with `sha256` is known to be in the bucket.
    pub fn has(&self, path: &str, sha256: &str) -> bool {
        self.segments.get(path).is_some_and(|s| s == sha256)
    }

    /// The store paths of the segments known to be in the bucket.
    pub fn paths(&self) -> BTreeSet<String> {
        self.segments.keys().cloned().collect()
    }

    /// How many of the host's manifest entries the bucket holds (as written or found last).
    pub fn manifest_entries(&self) -> Option<u64> {
        self.manifest.as_ref().map(|(entries, _)| *entries)
    }
}

/// Progress of an upload, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub enum UploadProgress {
    /// About to start: this many segments and bytes to look at.
    Start { segments: u64, bytes: u64 },
    /// One segment done (uploaded, skipped or failed).
    Advance { bytes: u64 },
}

/// The store's manifest as whole lines, read under its lock, and what they say.
pub fn manifest_snapshot(store: &Store) -> Result<(Vec<u8>, ManifestLog)> {
    let manifest = Manifest::new(store.manifest_path());
    let _guard = manifest.lock()?;
    let mut data = std::fs::read(store.manifest_path())
        .map_err(|e| quarry_store::StoreError::io(store.manifest_path(), e))?;
    // A torn tail (a writer killed mid-line) is not part of the chain.
    let whole = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    data.truncate(whole);
    let log = ManifestLog::parse(&data);
    Ok((data, log))
}

/// Uploads the store's segments and new manifest entries under `host` (see the module docs).
pub async fn upload_store(
    store: &Store,
    bucket: &Bucket,
    host: &str,
    progress: &(dyn Fn(UploadProgress) + Sync),
) -> Result<UploadReport> {
    upload_new(store, bucket, host, &mut Shipped::default(), progress).await
}

/// [`upload_store`], skipping what `shipped` (earlier passes) already found in the bucket and
/// adding what this pass finds there.
pub async fn upload_new(
    store: &Store,
    bucket: &Bucket,
    host: &str,
    shipped: &mut Shipped,
    progress: &(dyn Fn(UploadProgress) + Sync),
) -> Result<UploadReport> {
    let host = sanitize_host(host);
    let (manifest, log) = manifest_snapshot(store)?;
    let live = log.live();
    let mut report = UploadReport {
        bucket: bucket.url().to_string(),
        host: host.clone(),
        segments: live.len() as u64,
        // Entries are counted as lines, as chunk keys number them.
        manifest_entries: manifest.iter().filter(|&&b| b == b'\n').count() as u64,
        ..UploadReport::default()
    };
    progress(UploadProgress::Start {
        segments: report.segments,
        bytes: live.iter().map(|e| e.body.bytes).sum(),
    });
    // Segments the store no longer lists need not be remembered.
    let listed: std::collections::HashSet<&str> =
        live.iter().map(|e| e.body.path.as_str()).collect();
    shipped
        .segments
        .retain(|path, _| listed.contains(path.as_str()));
    for entry in &live {
        let body = &entry.body;
        if shipped.has(&body.path, &body.sha256) {
            report.known += 1;
            progress(UploadProgress::Advance { bytes: body.bytes });
            continue;
        }
        let Some(rel) = bucket_segment_key(&body.path, &host) else {
            report.problems.push(UploadProblem::LocalMismatch {
                path: body.path.clone(),
                reason: "is not a segment path of the store layout".into(),
            });
            continue;
        };
        let data = match read_local(store, &body.path, &body.sha256, body.bytes) {
            Ok(data) => data,
            Err(reason) => {
                report.problems.push(UploadProblem::LocalMismatch {
                    path: body.path.clone(),
                    reason,
                });
                progress(UploadProgress::Advance { bytes: body.bytes });
                continue;
            }
        };
        match put_create_only(bucket, &rel, data, &body.sha256).await? {
            Put::Written => {
                report.uploaded += 1;
                report.bytes += body.bytes;
                report.rows += body.rows;
                shipped
                    .segments
                    .insert(body.path.clone(), body.sha256.clone());
            }
            Put::AlreadyThere => {
                report.already_there += 1;
                shipped
                    .segments
                    .insert(body.path.clone(), body.sha256.clone());
            }
            Put::Failed(problem) => {
                let unreachable = matches!(problem, UploadProblem::Request { .. });
                report.problems.push(problem);
                progress(UploadProgress::Advance { bytes: body.bytes });
                if unreachable {
                    // The client retried already: the rest would fail alike, one by one. It
                    // stays pending for the next run.
                    break;
                }
                continue;
            }
        }
        progress(UploadProgress::Advance { bytes: body.bytes });
    }
    for entry in &live {
        if !shipped.has(&entry.body.path, &entry.body.sha256) {
            report.pending += 1;
            report.pending_bytes += entry.body.bytes;
        }
    }
    if report.problems.is_empty()
        && report.manifest_entries > 0
        && let Err(problem) = ship_manifest(bucket, &host, &manifest, shipped, &mut report).await?
    {
        report.problems.push(problem);
    }
    Ok(report)
}

/// Adds the snapshot's entries the bucket lacks as one chunk (see the module docs).
async fn ship_manifest(
    bucket: &Bucket,
    host: &str,
    manifest: &[u8],
    shipped: &mut Shipped,
    report: &mut UploadReport,
) -> Result<Result<(), UploadProblem>> {
    let lines = crate::manifest::split_lines(manifest).unwrap_or_default();
    let total = lines.len() as u64;
    let (have, have_key) = match shipped.manifest.clone() {
        Some(known) => known,
        None => match bucket_reach(bucket, host, &lines).await? {
            Ok(reach) => reach,
            Err(problem) => return Ok(Err(problem)),
        },
    };
    if have > total {
        return Ok(Err(UploadProblem::ManifestConflict {
            key: bucket.key(&have_key).to_string(),
            reason: format!("reaches entry {have}, the store's manifest holds {total}"),
        }));
    }
    if have == total {
        shipped.manifest = Some((have, have_key.clone()));
        report.manifest_key = Some(have_key);
        return Ok(Ok(()));
    }
    let key = bucket_manifest_key(host, have + 1, total);
    let chunk = bytes::Bytes::from(lines[have as usize..].concat());
    let sha = sha256_hex(&chunk);
    let size = chunk.len() as u64;
    match put_create_only(bucket, &key, chunk, &sha).await? {
        Put::Written => report.manifest_bytes = size,
        Put::AlreadyThere => {}
        Put::Failed(problem) => {
            // The PUT may have landed all the same (a reply lost): the next pass lists the
            // bucket again rather than write an overlapping chunk.
            shipped.manifest = None;
            return Ok(Err(problem));
        }
    }
    shipped.manifest = Some((total, key.clone()));
    report.manifest_key = Some(key);
    Ok(Ok(()))
}

/// How far the bucket's chunks of `host` reach from entry 1, and the key of the chunk that
/// reaches there (read back: its entries must be the store's `lines` at the same place).
async fn bucket_reach(
    bucket: &Bucket,
    host: &str,
    lines: &[&[u8]],
) -> Result<Result<(u64, String), UploadProblem>> {
    let request = |key: String, source: object_store::Error| UploadProblem::Request {
        key,
        error: source.to_string(),
    };
    let listing = match crate::manifest::list_chunks(bucket, Some(host)).await {
        Ok(listing) => listing,
        Err(BucketError::Request { key, source }) => return Ok(Err(request(key, source))),
        Err(e) => return Err(e),
    };
    let chunks = listing.by_host.get(host).cloned().unwrap_or_default();
    let (reach, Some(chunk)) = crate::manifest::contiguous(&chunks) else {
        return Ok(Ok((0, String::new())));
    };
    let there = match bucket.get(&chunk.rel).await {
        Ok(data) => data.unwrap_or_default(),
        Err(BucketError::Request { key, source }) => return Ok(Err(request(key, source))),
        Err(e) => return Err(e),
    };
    let conflict = |reason: String| {
        Ok(Err(UploadProblem::ManifestConflict {
            key: bucket.key(&chunk.rel).to_string(),
            reason,
        }))
    };
    if reach > lines.len() as u64 {
        return conflict(format!(
            "reaches entry {reach}, the store's manifest holds {}",
            lines.len()
        ));
    }
    let ours = lines[chunk.first as usize - 1..chunk.last as usize].concat();
    if *there != *ours {
        return conflict(format!(
            "holds other entries {}..{} than the store's manifest",
            chunk.first, chunk.last
        ));
    }
    Ok(Ok((reach, chunk.rel.clone())))
}

/// The local segment's bytes when they match its manifest entry; why not otherwise. Never
/// follows a symlink.
fn read_local(store: &Store, rel: &str, sha256: &str, bytes: u64) -> Result<bytes::Bytes, String> {
    let path = store.resolve(rel).map_err(|e| e.to_string())?;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| format!("cannot be opened ({e}); `quarry verify` reports it"))?;
    let mut data = Vec::with_capacity(bytes as usize);
    File::read_to_end(&mut file, &mut data).map_err(|e| format!("cannot be read ({e})"))?;
    let actual = sha256_hex(&data);
    if actual != sha256 {
        return Err(format!(
            "has sha256 {actual}, sealed as {sha256}; `quarry verify` reports it"
        ));
    }
    Ok(bytes::Bytes::from(data))
}

enum Put {
    Written,
    AlreadyThere,
    Failed(UploadProblem),
}

/// Writes `data` to `rel` unless an object is there; reads what is there back and compares
/// its hash with `sha256` either way.
async fn put_create_only(
    bucket: &Bucket,
    rel: &str,
    data: bytes::Bytes,
    sha256: &str,
) -> Result<Put> {
    let key = bucket.key(rel);
    let options = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    // An object already there (an earlier run's) is not sent again only to be refused: a
    // restarted uploader checks a large store without uploading it twice. The PUT stays
    // create-only for one that appears meanwhile.
    let there = match bucket.objects().head(&key).await {
        Ok(_) => true,
        Err(object_store::Error::NotFound { .. }) => false,
        Err(e) => {
            return Ok(Put::Failed(UploadProblem::Request {
                key: key.to_string(),
                error: e.to_string(),
            }));
        }
    };
    let written = if there {
        false
    } else {
        match bucket
            .objects()
            .put_opts(&key, PutPayload::from_bytes(data), options)
            .await
        {
            Ok(_) => true,
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => false,
            Err(e) => {
                return Ok(Put::Failed(UploadProblem::Request {
                    key: key.to_string(),
                    error: e.to_string(),
                }));
            }
        }
    };
    let actual = match bucket.hash(rel).await {
        Ok(Some((actual, _))) => actual,
        Ok(None) => "nothing (the object is gone)".to_string(),
        Err(BucketError::Request { source, .. }) => {
            return Ok(Put::Failed(UploadProblem::Request {
                key: key.to_string(),
                error: source.to_string(),
            }));
        }
        Err(e) => return Err(e),
    };
    Ok(match (written, actual == sha256) {
        (true, true) => Put::Written,
        (false, true) => Put::AlreadyThere,
        (true, false) => Put::Failed(UploadProblem::ReadBack {
            key: key.to_string(),
            expected: sha256.to_string(),
            actual,
        }),
        (false, false) => Put::Failed(UploadProblem::Conflict {
            key: key.to_string(),
            expected: sha256.to_string(),
            actual,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BucketUrl;
    use object_store::ObjectStoreExt;
    use std::sync::Arc;

    fn store(root: &std::path::Path, segments: u64) -> Store {
        let store = Store::create(root).unwrap();
        for seq in 0..segments {
            quarry_store::fixture::seal_one_gap_row(&store, "n1", seq).unwrap();
        }
        store
    }

    fn memory_bucket() -> Bucket {
        Bucket::with_objects(
            BucketUrl::parse("s3://b/fleet").unwrap(),
            Arc::new(object_store::memory::InMemory::new()),
        )
    }

    #[tokio::test]
    async fn a_rerun_ships_only_what_is_new_and_a_local_alteration_is_not_shipped() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), 2);
        let bucket = memory_bucket();
        let first = upload_store(&s, &bucket, "h1", &|_| {}).await.unwrap();
        assert!(first.is_ok(), "{:?}", first.problems);
        assert_eq!((first.uploaded, first.already_there), (2, 0));
        assert_eq!(
            first.manifest_key.as_deref(),
            Some("_manifest/host=h1/000000000001-000000000002.jsonl")
        );
        let again = upload_store(&s, &bucket, "h1", &|_| {}).await.unwrap();
        assert_eq!((again.uploaded, again.already_there), (0, 2));

        // A third segment, then the first one altered on disk: the new one ships, the altered
        // one is named and not shipped, and no manifest chunk vouches for the upload.
        let s = store(dir.path(), 1);
        let live = Manifest::new(s.manifest_path()).read().unwrap();
        let victim = s.resolve(&live.live()[0].body.path).unwrap();
        let mut bytes = std::fs::read(&victim).unwrap();
        bytes[10] ^= 1;
        std::fs::write(&victim, bytes).unwrap();
        let third = upload_store(&s, &bucket, "h1", &|_| {}).await.unwrap();
        assert_eq!(third.problems.len(), 1, "{:?}", third.problems);
        assert!(matches!(
            third.problems[0],
            UploadProblem::LocalMismatch { .. }
        ));
        assert_eq!(third.manifest_key, None);
        assert_eq!(third.already_there, 1);
    }

    #[tokio::test]
    async fn passes_with_a_memory_of_what_was_shipped_upload_only_what_is_new() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), 2);
        let bucket = memory_bucket();
        let mut shipped = Shipped::default();
        let first = upload_new(&s, &bucket, "h1", &mut shipped, &|_| {})
            .await
            .unwrap();
        assert_eq!((first.uploaded, first.known, first.pending), (2, 0, 0));
        assert_eq!(shipped.paths().len(), 2);
        assert_eq!(shipped.manifest_entries(), Some(2));
        // Nothing new: nothing read back, no second copy of the same manifest.
        let idle = upload_new(&s, &bucket, "h1", &mut shipped, &|_| {})
            .await
            .unwrap();
        assert_eq!((idle.uploaded, idle.already_there, idle.known), (0, 0, 2));
        assert!(idle.manifest_key.is_some());
        let s = store(dir.path(), 1);
        let next = upload_new(&s, &bucket, "h1", &mut shipped, &|_| {})
            .await
            .unwrap();
        assert_eq!((next.uploaded, next.known, next.pending), (1, 2, 0));
        // Two chunks, each entry once: together exactly the store's manifest.
        let chunks = bucket.list("_manifest").await.unwrap();
        let keys: Vec<&str> = chunks.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "_manifest/host=h1/000000000001-000000000002.jsonl",
                "_manifest/host=h1/000000000003-000000000003.jsonl"
            ]
        );
        let local = std::fs::read(s.manifest_path()).unwrap();
        assert_eq!(
            next.manifest_bytes + first.manifest_bytes,
            local.len() as u64
        );
        let together = crate::manifest::host_manifest(&bucket, "h1").await.unwrap();
        assert!(together.is_ok(), "{:?}", together.problems);
        assert_eq!(together.data, local);
        // A fresh memory checks everything once again, and finds it there.
        let fresh = upload_new(&s, &bucket, "h1", &mut Shipped::default(), &|_| {})
            .await
            .unwrap();
        assert_eq!((fresh.already_there, fresh.known), (3, 0));
        assert_eq!(fresh.manifest_bytes, 0);
        assert_eq!(fresh.manifest_key.as_deref(), Some(keys[1]));
        assert_eq!(bucket.list("_manifest").await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn an_object_there_with_another_hash_is_a_conflict_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), 1);
        let bucket = memory_bucket();
        let log = Manifest::new(s.manifest_path()).read().unwrap();
        let rel = bucket_segment_key(&log.live()[0].body.path, "h1").unwrap();
        bucket
            .objects()
            .put(&bucket.key(&rel), PutPayload::from_static(b"not it"))
            .await
            .unwrap();
        let report = upload_store(&s, &bucket, "h1", &|_| {}).await.unwrap();
        assert!(
            matches!(&report.problems[..], [UploadProblem::Conflict { key, .. }] if key.ends_with(&rel))
        );
        assert_eq!(bucket.get(&rel).await.unwrap().unwrap().as_ref(), b"not it");
        assert!(bucket.list("_manifest").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_restarted_upload_continues_after_the_bucket_chunks_and_refuses_another_history() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path(), 2);
        let bucket = memory_bucket();
        let first = upload_store(&s, &bucket, "h1", &|_| {}).await.unwrap();
        assert!(first.is_ok(), "{:?}", first.problems);
        // A new process (no memory) after two more seals: only entries 3..4 leave.
        let s = store(dir.path(), 2);
        let second = upload_store(&s, &bucket, "h1", &|_| {}).await.unwrap();
        assert!(second.is_ok(), "{:?}", second.problems);
        assert_eq!(
            second.manifest_key.as_deref(),
            Some("_manifest/host=h1/000000000003-000000000004.jsonl")
        );

        // Another store under the same host name: its manifest is not the bucket's, so no
        // chunk is spliced onto the host's chain (its segments are new names, so they ship).
        let other = tempfile::tempdir().unwrap();
        let o = store(other.path(), 5);
        let clash = upload_store(&o, &bucket, "h1", &|_| {}).await.unwrap();
        assert!(
            matches!(&clash.problems[..], [UploadProblem::ManifestConflict { key, .. }]
                if key.ends_with("000000000003-000000000004.jsonl")),
            "{:?}",
            clash.problems
        );
        assert_eq!(clash.manifest_key, None);
        assert_eq!(bucket.list("_manifest").await.unwrap().len(), 2);
        let together = crate::manifest::host_manifest(&bucket, "h1").await.unwrap();
        assert!(together.is_ok(), "{:?}", together.problems);
        assert_eq!(together.data, std::fs::read(s.manifest_path()).unwrap());
    }
}
