//! The one way evidence is read out of a store: only segments the manifest vouches for, each
//! checked against the hash it was sealed with before any of its bytes are used.
//!
//! [`Store::verified_listing`] takes the list of segments from the manifest, never from the
//! directory: a file copied into a partition under a new name is not evidence, however much it
//! looks like a segment. The table directories are walked only to *name* such files, so the
//! reader can warn about them. A listed segment that is gone is skipped with a warning and the
//! rest of the store still answers.
//!
//! [`check`] compares an open segment file with its manifest entry: same size, and the same
//! SHA-256 the first time this process reads it. The verdict is cached by path and by what
//! `fstat` says of the open file (device, inode, size, mtime and ctime: ctime cannot be set
//! back by `touch`), so a process hashes each segment at most once, and a file replaced or
//! rewritten after it was checked is checked again. Readers hash lazily, when they first open
//! a segment, so a query that prunes most partitions hashes only what it reads.
//!
//! A write into a file while a reader already holds it open (after its check) is not seen by
//! that read; the next open, and `quarry verify`, see it.
//!
//! What this module must not do: return rows or bytes of a file the manifest does not list, or
//! of a listed file whose content no longer matches, and it never follows a symlink in place
//! of a segment. What it cannot do: tell a forged manifest line from a real one; `quarry
//! verify` checks the chain and a published head hash pins it.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use arrow::record_batch::RecordBatch;
use sha2::{Digest, Sha256};

use crate::layout::{Partition, SEGMENT_EXTENSION, Store, Table};
use crate::manifest::Manifest;
use crate::{Result, StoreError};

/// A segment the manifest lists as live, found in place as a regular file. Its content is
/// checked by [`check`] when it is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Path relative to the store root, `/`-separated, as the manifest names it.
    pub rel: String,
    /// Where the file is.
    pub path: PathBuf,
    pub partition: Partition,
    pub rows: u64,
    /// Size and SHA-256 (hex) it was sealed with.
    pub bytes: u64,
    pub sha256: String,
    /// Modification time of the file when listed (for engines that want one).
    pub modified: chrono::DateTime<chrono::Utc>,
}

impl Listed {
    pub fn table(&self) -> Table {
        self.partition.table
    }
}

/// Why a file is not read as evidence.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Refusal {
    /// A segment-like file in a table directory that the manifest does not list as live:
    /// planted, copied in, or left by a removal that did not finish.
    Unlisted,
    /// The manifest lists the segment but the file is gone.
    Missing,
    /// The manifest lists the segment and it waits in `.staging/` (the recorder stopped
    /// mid-seal); the next `quarry record` moves it into place.
    Pending,
    /// The path is a symlink, a directory or a special file, not a regular file.
    NotAFile,
    /// The manifest names a path that is not a segment of this store's layout.
    BadPath,
    /// Its size is not the size it was sealed with.
    Resized { bytes: u64, sealed: u64 },
    /// Its content does not hash to what it was sealed with.
    Altered { sha256: String, sealed: String },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Unlisted => {
                f.write_str("not listed in the store manifest (planted or copied in)")
            }
            Refusal::Missing => f.write_str("listed in the manifest but gone"),
            Refusal::Pending => f.write_str(
                "logged but not moved into place yet; the next `quarry record` completes it",
            ),
            Refusal::NotAFile => f.write_str("not a regular file (symlink or special file)"),
            Refusal::BadPath => f.write_str("the manifest path is not a segment of this store"),
            Refusal::Resized { bytes, sealed } => write!(
                f,
                "altered or truncated: {bytes} bytes, sealed with {sealed}"
            ),
            Refusal::Altered { sha256, sealed } => {
                write!(f, "altered: sha256 {sha256}, sealed as {sealed}")
            }
        }
    }
}

/// A file left out of what a reader returns, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub path: PathBuf,
    pub refusal: Refusal,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A planted file's name is the planter's choice: escaped for whoever reads the warning.
        write!(
            f,
            "skipped segment {}: {} (run `quarry verify` to check the store)",
            crate::text::printable(&self.path.display().to_string()),
            self.refusal
        )
    }
}

/// What [`Store::verified_listing`] found: the segments a reader may open, and the files it
/// must not read, each named.
#[derive(Debug, Default, Clone)]
pub struct Listing {
    /// Manifest order (the order they were sealed).
    pub segments: Vec<Listed>,
    pub skipped: Vec<Skipped>,
    /// Hash of the manifest's last entry when it was read (see [`crate::ManifestLog::head`]).
    pub head: String,
}

impl Listing {
    /// The listed segments of `table`.
    pub fn of(&self, table: Table) -> impl Iterator<Item = &Listed> {
        self.segments.iter().filter(move |s| s.table() == table)
    }
}

impl Store {
    /// The segments the manifest lists as live and that are in place as regular files, plus
    /// every file that is skipped: listed but gone or not a file, and segment-like files in
    /// the table directories the manifest does not list. Reads the manifest and stats files;
    /// hashes nothing (see [`check`]).
    pub fn verified_listing(&self) -> Result<Listing> {
        let log = Manifest::new(self.manifest_path()).read()?;
        let mut out = Listing {
            head: log.head(),
            ..Listing::default()
        };
        let mut live = BTreeSet::new();
        for entry in log.live() {
            let body = &entry.body;
            live.insert(body.path.clone());
            let (path, partition) = match (
                self.resolve(&body.path),
                Partition::from_segment_path(&body.path),
            ) {
                (Ok(path), Some((partition, _))) => (path, partition),
                (path, _) => {
                    out.skipped.push(Skipped {
                        path: path.unwrap_or_else(|_| PathBuf::from(&body.path)),
                        refusal: Refusal::BadPath,
                    });
                    continue;
                }
            };
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let refusal = if self.staging_path_for(&body.path).is_file() {
                        Refusal::Pending
                    } else {
                        Refusal::Missing
                    };
                    out.skipped.push(Skipped { path, refusal });
                    continue;
                }
                Err(e) => return Err(StoreError::io(&path, e)),
            };
            if !meta.file_type().is_file() {
                out.skipped.push(Skipped {
                    path,
                    refusal: Refusal::NotAFile,
                });
                continue;
            }
            if meta.len() != body.bytes {
                out.skipped.push(Skipped {
                    path,
                    refusal: Refusal::Resized {
                        bytes: meta.len(),
                        sealed: body.bytes,
                    },
                });
                continue;
            }
            let modified = meta
                .modified()
                .map(chrono::DateTime::<chrono::Utc>::from)
                .unwrap_or_default();
            out.segments.push(Listed {
                rel: body.path.clone(),
                path,
                partition,
                rows: body.rows,
                bytes: body.bytes,
                sha256: body.sha256.clone(),
                modified,
            });
        }
        for table in Table::ALL {
            name_unlisted(self.root(), &self.table_dir(table), &live, &mut out.skipped)?;
        }
        Ok(out)
    }
}

/// Walks a table directory without following symlinks and names the segment-like files the
/// manifest does not list as live. Other files are not segments and not evidence; `quarry
/// verify` reports them.
fn name_unlisted(
    root: &Path,
    dir: &Path,
    live: &BTreeSet<String>,
    skipped: &mut Vec<Skipped>,
) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io(dir, e)),
    };
    let mut items: Vec<_> = entries
        .collect::<io::Result<_>>()
        .map_err(|e| StoreError::io(dir, e))?;
    items.sort_by_key(|i| i.file_name());
    for item in items {
        let path = item.path();
        let ft = item.file_type().map_err(|e| StoreError::io(&path, e))?;
        if ft.is_dir() {
            name_unlisted(root, &path, live, skipped)?;
            continue;
        }
        if path.extension().is_none_or(|e| e != SEGMENT_EXTENSION) {
            continue;
        }
        let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy();
        if !live.contains(rel.as_ref()) {
            skipped.push(Skipped {
                path,
                refusal: Refusal::Unlisted,
            });
        }
    }
    Ok(())
}

/// What `fstat` says of an open file, as far as its content could have changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Fingerprint {
    fn of(meta: &fs::Metadata) -> Fingerprint {
        Fingerprint {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// The SHA-256 this process computed of a file, with the fingerprint it had then.
type Hashed = Option<(Fingerprint, String)>;

/// Process-wide: one slot per path, locked while that path is hashed so concurrent first
/// reads of one segment (an engine reading its footer and its pages at once) hash it once.
fn cache() -> &'static Mutex<HashMap<PathBuf, Arc<Mutex<Hashed>>>> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Arc<Mutex<Hashed>>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// How many segments this process has hashed (for tests and measurements).
pub fn hashed_count() -> u64 {
    HASHED.load(std::sync::atomic::Ordering::Relaxed)
}

static HASHED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Checks that `file`, opened from `seg.path`, is the segment the manifest vouches for: a
/// regular file of the sealed size whose SHA-256 is the sealed one. Hashes at most once per
/// process per file content (see the module docs). `Ok(Err(_))` is a file to skip; `Err` an
/// I/O failure reading it.
pub fn check(seg: &Listed, file: &File) -> Result<Result<(), Refusal>> {
    let meta = file.metadata().map_err(|e| StoreError::io(&seg.path, e))?;
    if !meta.file_type().is_file() {
        return Ok(Err(Refusal::NotAFile));
    }
    if meta.len() != seg.bytes {
        return Ok(Err(Refusal::Resized {
            bytes: meta.len(),
            sealed: seg.bytes,
        }));
    }
    let print = Fingerprint::of(&meta);
    let slot = cache()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(seg.path.clone())
        .or_default()
        .clone();
    let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
    let sha256 = match &*slot {
        Some((seen, sha256)) if *seen == print => sha256.clone(),
        _ => {
            let sha256 = hash_open(file).map_err(|e| StoreError::io(&seg.path, e))?;
            HASHED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            *slot = Some((print, sha256.clone()));
            sha256
        }
    };
    if sha256 == seg.sha256 {
        Ok(Ok(()))
    } else {
        Ok(Err(Refusal::Altered {
            sha256,
            sealed: seg.sha256.clone(),
        }))
    }
}

/// SHA-256 of an open file, read with positioned reads (the file's offset is left alone).
fn hash_open(file: &File) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        let n = file.read_at(&mut buf, offset)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Opens a listed segment without following a symlink in its place and [`check`]s it.
pub fn open(seg: &Listed) -> Result<Result<File, Refusal>> {
    let file = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&seg.path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Err(Refusal::Missing)),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(Err(Refusal::NotAFile)),
        Err(e) => return Err(StoreError::io(&seg.path, e)),
    };
    Ok(check(seg, &file)?.map(|()| file))
}

/// Every row of a listed segment, read from the file that was checked.
pub fn read(seg: &Listed) -> Result<Result<Vec<RecordBatch>, Refusal>> {
    let file = match open(seg)? {
        Ok(f) => f,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let parquet_err = |source| StoreError::Parquet {
        path: seg.path.clone(),
        source,
    };
    let reader = crate::read::segment_reader(file, seg.table())
        .map_err(parquet_err)?
        .build()
        .map_err(parquet_err)?;
    let mut batches = Vec::new();
    for b in reader {
        batches.push(b?);
    }
    Ok(Ok(batches))
}

impl Store {
    /// Every row of `table` from the segments the manifest vouches for, each hash-checked;
    /// files skipped are returned with the rows so the caller can warn.
    pub fn read_table_verified(&self, table: Table) -> Result<(Vec<RecordBatch>, Vec<Skipped>)> {
        let listing = self.verified_listing()?;
        let mut skipped: Vec<Skipped> = listing
            .skipped
            .iter()
            .filter(|s| is_below(&s.path, &self.table_dir(table)))
            .cloned()
            .collect();
        let mut batches = Vec::new();
        for seg in listing.of(table) {
            match read(seg)? {
                Ok(b) => batches.extend(b),
                Err(refusal) => skipped.push(Skipped {
                    path: seg.path.clone(),
                    refusal,
                }),
            }
        }
        Ok((batches, skipped))
    }
}

fn is_below(path: &Path, dir: &Path) -> bool {
    path.starts_with(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ActionRow, action_batch};

    fn row(container: &str) -> ActionRow {
        ActionRow {
            time: chrono::Utc::now(),
            action: "isolate".into(),
            actor: "uid 0".into(),
            container_id: Some(container.into()),
            container_name: None,
            reason: None,
            detail: None,
            result: "ok".into(),
            error: None,
            command: "quarry isolate".into(),
        }
    }

    fn store_with_two(dir: &Path) -> (Store, Vec<PathBuf>) {
        let store = Store::create(dir).unwrap();
        let p = Partition::for_time(Table::Action, chrono::Utc::now(), "h");
        let a = store
            .seal(&p, &action_batch("h", &[row("a")]), 1, 0)
            .unwrap();
        let b = store
            .seal(&p, &action_batch("h", &[row("b"), row("b")]), 1, 1)
            .unwrap();
        (store, vec![a.path, b.path])
    }

    fn rows(store: &Store) -> (usize, Vec<Skipped>) {
        let (batches, skipped) = store.read_table_verified(Table::Action).unwrap();
        (batches.iter().map(|b| b.num_rows()).sum(), skipped)
    }

    #[test]
    fn planted_copy_is_named_and_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let (store, segs) = store_with_two(dir.path());
        let planted = segs[1].with_file_name("planted.parquet");
        fs::copy(&segs[1], &planted).unwrap();
        let (n, skipped) = rows(&store);
        assert_eq!(n, 3);
        assert_eq!(
            skipped,
            vec![Skipped {
                path: planted,
                refusal: Refusal::Unlisted
            }]
        );
        assert!(skipped[0].to_string().contains("quarry verify"));
    }

    #[test]
    fn altered_and_missing_segments_are_skipped_and_the_rest_answers() {
        let dir = tempfile::tempdir().unwrap();
        let (store, segs) = store_with_two(dir.path());
        // Same size, one byte different: only the hash tells.
        let mut data = fs::read(&segs[0]).unwrap();
        let mid = data.len() / 2;
        data[mid] ^= 1;
        fs::write(&segs[0], &data).unwrap();
        let (n, skipped) = rows(&store);
        assert_eq!(n, 2);
        assert!(
            matches!(skipped.as_slice(), [Skipped { path, refusal: Refusal::Altered { .. } }] if *path == segs[0]),
            "{skipped:?}"
        );
        fs::remove_file(&segs[1]).unwrap();
        let (n, skipped) = rows(&store);
        assert_eq!(n, 0);
        assert_eq!(skipped.len(), 2);
        let missing = skipped.iter().find(|s| s.path == segs[1]).unwrap();
        assert_eq!(missing.refusal, Refusal::Missing);
        assert!(missing.to_string().contains(&segs[1].display().to_string()));
    }

    #[test]
    fn a_segment_is_hashed_once_per_process_until_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (store, segs) = store_with_two(dir.path());
        let listing = store.verified_listing().unwrap();
        let seg = listing.segments[0].clone();
        let slot = |p: &Path| {
            cache()
                .lock()
                .unwrap()
                .get(p)
                .and_then(|s| s.lock().unwrap().clone())
        };
        assert!(open(&seg).unwrap().is_ok());
        let first = slot(&seg.path).expect("hashed and cached");
        assert!(open(&seg).unwrap().is_ok());
        assert_eq!(slot(&seg.path), Some(first.clone()), "not hashed again");
        // Rewritten in place with the same bytes: ctime moves, so it is hashed again (and
        // still matches).
        std::thread::sleep(std::time::Duration::from_millis(20));
        let data = fs::read(&segs[0]).unwrap();
        fs::write(&segs[0], &data).unwrap();
        assert!(open(&seg).unwrap().is_ok());
        assert_ne!(slot(&seg.path).unwrap().0, first.0);
    }

    #[test]
    fn a_symlink_in_place_of_a_segment_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let (store, segs) = store_with_two(dir.path());
        let listing = store.verified_listing().unwrap();
        let copy = dir.path().join("elsewhere.parquet");
        fs::rename(&segs[0], &copy).unwrap();
        std::os::unix::fs::symlink(&copy, &segs[0]).unwrap();
        let seg = listing.segments[0].clone();
        assert_eq!(open(&seg).unwrap().unwrap_err(), Refusal::NotAFile);
        let again = store.verified_listing().unwrap();
        assert_eq!(again.segments.len(), 1);
        assert_eq!(again.skipped[0].refusal, Refusal::NotAFile);
    }
}
