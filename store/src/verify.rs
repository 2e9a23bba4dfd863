//! Verifying a store: every sealed segment re-hashed, the manifest chain checked, and every
//! file in the table directories accounted for.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::layout::{SEGMENT_EXTENSION, Store, Table};
use crate::manifest::{GENESIS_HASH, Manifest, ManifestEntry, ManifestLog, ManifestOp};
use crate::segment::sha256_file;
use crate::{Result, StoreError};

/// One thing wrong with a store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Problem {
    /// The manifest lists the segment but the file is gone.
    Missing { path: String },
    /// The segment's content no longer matches the hash it was sealed with.
    Altered {
        path: String,
        expected: String,
        actual: String,
    },
    /// A segment-like file sits in a table directory but the manifest never listed it (or
    /// listed it as removed).
    Unlisted { path: String },
    /// Something in a table directory is a symlink or not a regular file.
    Unexpected { path: String, what: String },
    /// A manifest line does not parse.
    MalformedEntry { line: usize, error: String },
    /// A manifest line's content does not match its own hash: it was edited.
    TamperedEntry { line: usize, seq: u64 },
    /// A manifest line does not chain to the line before it: lines were removed, inserted or
    /// reordered.
    BrokenChain { line: usize, seq: u64 },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing { path } => write!(
                f,
                "missing segment: {path} is listed in the manifest but gone"
            ),
            Problem::Altered {
                path,
                expected,
                actual,
            } => write!(
                f,
                "altered segment: {path} has sha256 {actual}, sealed as {expected}"
            ),
            Problem::Unlisted { path } => {
                write!(f, "unlisted segment: {path} is not in the manifest")
            }
            Problem::Unexpected { path, what } => write!(f, "unexpected entry: {path} is {what}"),
            Problem::MalformedEntry { line, error } => {
                write!(f, "manifest line {line} is not a valid entry: {error}")
            }
            Problem::TamperedEntry { line, seq } => write!(
                f,
                "manifest line {line} (seq {seq}) does not match its hash: it was edited"
            ),
            Problem::BrokenChain { line, seq } => write!(
                f,
                "manifest line {line} (seq {seq}) does not chain to the line before: entries were \
                 removed, inserted or reordered"
            ),
        }
    }
}

/// A staged segment the manifest lists but that was not yet moved into place (the recorder was
/// stopped between the two steps). Not a problem: the next `quarry record` finishes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pending {
    pub path: String,
}

/// Segments the manifest records as deleted, grouped by why (retention's age cap, its size cap,
/// compaction), so a verified store also says what is no longer there and for what reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RemovalSummary {
    /// The reason's kind, e.g. `age cap 7d`, `size cap 50.0 GiB`, `compacted`.
    pub reason: String,
    pub segments: u64,
    pub rows: u64,
    pub bytes: u64,
    /// When the first and the last of these removals were logged (RFC 3339).
    pub first: String,
    pub last: String,
}

/// A store entry that users other than its owner and group can get at. Evidence holds argv,
/// paths and addresses of everything on the node, so a fresh store is 0750/0640
/// ([`crate::layout::DIR_MODE`], [`crate::layout::FILE_MODE`]). This is a finding, not a
/// problem: the evidence is intact (its hashes say so), but it was open to every local user, and
/// a world-writable entry could have been changed by any of them (the hashes catch a change,
/// not who made it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Exposed {
    /// Relative to the store root (`.` for the root itself).
    pub path: String,
    /// Permission bits, octal, e.g. `0644`.
    pub mode: String,
    /// Others may write (not only read or search).
    pub world_writable: bool,
}

/// The outcome of [`verify_store`].
#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    pub store: PathBuf,
    pub segments_verified: u64,
    pub rows: u64,
    pub bytes: u64,
    pub removed_segments: u64,
    /// What was removed and why (see [`RemovalSummary`]).
    pub removals: Vec<RemovalSummary>,
    pub manifest_entries: u64,
    /// Hash of the last manifest entry: publish it elsewhere to pin the chain's length.
    pub head_hash: String,
    pub torn_tail: bool,
    pub pending: Vec<Pending>,
    pub problems: Vec<Problem>,
    /// Entries readable or writable by every local user (see [`Exposed`]); they do not fail
    /// verification.
    pub exposed: Vec<Exposed>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The report for people (`quarry verify`): problems, pending seals, entries open to
    /// every user, removals, and the verdict with the manifest's head. Paths and problems are
    /// escaped ([`crate::text::printable`]).
    pub fn render_text(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        use crate::text::printable as shown;
        for p in &self.problems {
            writeln!(w, "✗ {}", shown(&p.to_string()))?;
        }
        for p in &self.pending {
            writeln!(
                w,
                "… pending: {} is logged but was not moved into place (the recorder \
                 stopped mid-seal); the next `quarry record` on this store completes it",
                shown(&p.path)
            )?;
        }
        if !self.exposed.is_empty() {
            let writable = self.exposed.iter().filter(|e| e.world_writable).count();
            writeln!(
                w,
                "! {} store entries are open to every local user{}: evidence holds argv, \
                 paths and addresses of the whole node; `chmod -R o-rwx {}` (the recorder \
                 creates 0750/0640)",
                self.exposed.len(),
                if writable > 0 {
                    format!(" ({writable} writable by anyone)")
                } else {
                    String::new()
                },
                self.store.display()
            )?;
            for e in self.exposed.iter().take(5) {
                writeln!(w, "  {} {}", e.mode, shown(&e.path))?;
            }
            if self.exposed.len() > 5 {
                writeln!(
                    w,
                    "  … and {} more (--format json lists all)",
                    self.exposed.len() - 5
                )?;
            }
        }
        if self.torn_tail {
            writeln!(
                w,
                "… the manifest ends in a cut-off line (a writer was killed mid-append); \
                 entries before it are intact"
            )?;
        }
        let verdict = if self.is_ok() {
            "✓ verified"
        } else {
            "✗ FAILED"
        };
        for r in &self.removals {
            writeln!(
                w,
                "- removed {} segments ({} rows, {} bytes) between {} and {}: {}",
                r.segments, r.rows, r.bytes, r.first, r.last, r.reason
            )?;
        }
        writeln!(
            w,
            "{verdict}: {} segments, {} rows, {} bytes; {} manifest entries ({} removals); \
             {} problems\nmanifest head: {}",
            self.segments_verified,
            self.rows,
            self.bytes,
            self.manifest_entries,
            self.removed_segments,
            self.problems.len(),
            self.head_hash
        )
    }
}

/// Checks the whole store and returns every problem found (it does not stop at the first).
/// What is wrong with a manifest's chain: entries that do not match their own hash (edited) or
/// do not point at the entry before (removed, inserted or reordered). A store's manifest and a
/// bucket's per-host copies are checked alike.
pub fn chain_problems(log: &ManifestLog) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut prev = GENESIS_HASH;
    for (line, entry) in &log.entries {
        if entry.body.hash() != entry.hash {
            problems.push(Problem::TamperedEntry {
                line: *line,
                seq: entry.body.seq,
            });
        }
        if entry.body.prev != prev {
            problems.push(Problem::BrokenChain {
                line: *line,
                seq: entry.body.seq,
            });
        }
        prev = &entry.hash;
    }
    problems
}

pub fn verify_store(store: &Store) -> Result<VerifyReport> {
    let mut report = VerifyReport {
        store: store.root().to_path_buf(),
        head_hash: GENESIS_HASH.to_string(),
        ..Default::default()
    };
    if !store.root().is_dir() {
        return Err(StoreError::Io {
            path: store.root().to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no store here; pass the directory `quarry record --store` wrote to",
            ),
        });
    }
    for (rel, path) in [
        (".", store.root().to_path_buf()),
        (crate::layout::MANIFEST_FILE, store.manifest_path()),
        (crate::layout::STAGING_DIR, store.staging_dir()),
    ] {
        if let Ok(meta) = fs::symlink_metadata(&path) {
            note_exposed(rel.to_string(), &meta, &mut report.exposed);
        }
    }
    let log = Manifest::new(store.manifest_path()).read()?;
    report.torn_tail = log.torn_tail;
    report.manifest_entries = log.entries.len() as u64;
    for (line, error) in &log.malformed {
        // A torn final line is what a killed appender leaves; it is reported via `torn_tail`.
        let is_tail = log.torn_tail && Some(*line) == log.malformed.last().map(|m| m.0);
        if !is_tail {
            report.problems.push(Problem::MalformedEntry {
                line: *line,
                error: error.clone(),
            });
        }
    }

    report.problems.extend(chain_problems(&log));
    let mut live: BTreeMap<String, &ManifestEntry> = BTreeMap::new();
    for (_, entry) in &log.entries {
        match entry.body.op {
            ManifestOp::Add => {
                live.insert(entry.body.path.clone(), entry);
            }
            ManifestOp::Remove => {
                live.remove(&entry.body.path);
                report.removed_segments += 1;
                let reason = entry.body.reason.as_deref().unwrap_or("no reason given");
                let kind = reason
                    .split(';')
                    .next()
                    .unwrap_or(reason)
                    .trim()
                    .to_string();
                match report.removals.iter_mut().find(|r| r.reason == kind) {
                    Some(r) => {
                        r.segments += 1;
                        r.rows += entry.body.rows;
                        r.bytes += entry.body.bytes;
                        r.last = entry.body.at.clone();
                    }
                    None => report.removals.push(RemovalSummary {
                        reason: kind,
                        segments: 1,
                        rows: entry.body.rows,
                        bytes: entry.body.bytes,
                        first: entry.body.at.clone(),
                        last: entry.body.at.clone(),
                    }),
                }
            }
        }
    }
    report.head_hash = log.head();

    // Every live segment: present, same bytes.
    for (rel, entry) in &live {
        let path = match store.resolve(rel) {
            Ok(p) => p,
            Err(_) => {
                report.problems.push(Problem::Unexpected {
                    path: rel.clone(),
                    what: "a manifest path that leaves the store".into(),
                });
                continue;
            }
        };
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_file() => match sha256_file(&path) {
                Ok(actual) if actual == entry.body.sha256 => {
                    report.segments_verified += 1;
                    report.rows += entry.body.rows;
                    report.bytes += m.len();
                }
                Ok(actual) => report.problems.push(Problem::Altered {
                    path: rel.clone(),
                    expected: entry.body.sha256.clone(),
                    actual,
                }),
                Err(e) => return Err(StoreError::io(&path, e)),
            },
            Ok(_) => report.problems.push(Problem::Unexpected {
                path: rel.clone(),
                what: "not a regular file (symlink or special file)".into(),
            }),
            Err(_) => {
                let staged = store.staging_path_for(rel);
                if sha256_file(&staged).ok().as_deref() == Some(&entry.body.sha256) {
                    report.pending.push(Pending { path: rel.clone() });
                } else {
                    report.problems.push(Problem::Missing { path: rel.clone() });
                }
            }
        }
    }

    // Every file on disk: listed.
    let listed: BTreeSet<&str> = live.keys().map(String::as_str).collect();
    for table in Table::ALL {
        if let Ok(meta) = fs::symlink_metadata(store.table_dir(table)) {
            note_exposed(table.name().to_string(), &meta, &mut report.exposed);
        }
        walk(store.root(), &store.table_dir(table), &listed, &mut report)?;
    }
    Ok(report)
}

fn note_exposed(path: String, meta: &fs::Metadata, exposed: &mut Vec<Exposed>) {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o007 != 0 && !meta.file_type().is_symlink() {
        exposed.push(Exposed {
            path,
            mode: format!("{mode:04o}"),
            world_writable: mode & 0o002 != 0,
        });
    }
}

/// Walks a table directory without following symlinks, reporting files the manifest does not
/// account for.
fn walk(root: &Path, dir: &Path, listed: &BTreeSet<&str>, report: &mut VerifyReport) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io(dir, e)),
    };
    for item in entries {
        let item = item.map_err(|e| StoreError::io(dir, e))?;
        let path = item.path();
        let rel = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        let ft = item.file_type().map_err(|e| StoreError::io(&path, e))?;
        if !ft.is_symlink()
            && let Ok(meta) = item.metadata()
        {
            note_exposed(rel.clone(), &meta, &mut report.exposed);
        }
        if ft.is_dir() {
            walk(root, &path, listed, report)?;
        } else if ft.is_symlink() {
            report.problems.push(Problem::Unexpected {
                path: rel,
                what: "a symlink".into(),
            });
        } else if !listed.contains(rel.as_str()) {
            let is_segment = path.extension().is_some_and(|e| e == SEGMENT_EXTENSION);
            if is_segment {
                report.problems.push(Problem::Unlisted { path: rel });
            } else {
                report.problems.push(Problem::Unexpected {
                    path: rel,
                    what: "a file that is not a segment".into(),
                });
            }
        }
    }
    Ok(())
}
