//! `quarry export`: one container's evidence, from every table and the case directory, into
//! one hashed (and optionally signed) bundle.
//!
//! Segments are read through the store's verified reader ([`quarry_store::verified`]): only
//! those the manifest lists, each hash-checked before its rows are used, so a bundle never
//! carries rows from a planted or altered file. Files left out are named in the report and in
//! the custody log. The bundle is written as `<output>.partial-<pid>`
//! and linked into place only when complete (never over an existing file): a bundle is never
//! visible half-written.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, BooleanArray};
use arrow::compute::filter_record_batch;
use arrow::datatypes::TimestampMicrosecondType;
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, SecondsFormat, Utc};
use parquet::arrow::ArrowWriter;
use quarry_store::schema::schema_of;
use quarry_store::segment::HashingWriter;
use quarry_store::verified::{self, Listed, Refusal};
use quarry_store::{Manifest, Partition, Store, Table};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::keys::SecretKey;
use crate::manifest::{
    BundleContainer, BundleFile, BundleManifest, BundleSource, FileKind, SignatureFile,
};
use crate::{
    BUNDLE_ROOT, CUSTODY_NAME, EvidenceError, FORMAT, MANIFEST_NAME, Result, SIGNATURE_NAME,
};

/// What to export.
pub struct ExportRequest<'a> {
    pub store: &'a Store,
    pub container_id: String,
    pub container_name: Option<String>,
    /// Rows at or after this time (None: from the start).
    pub since: Option<DateTime<Utc>>,
    /// Rows before this time (None: up to now).
    pub until: Option<DateTime<Utc>>,
    /// A case directory of `quarry snapshot` to include as it is.
    pub case_dir: Option<PathBuf>,
    pub output: PathBuf,
    pub signing_key: Option<&'a SecretKey>,
    /// Who, where and how, for the manifest and the custody log.
    pub actor: String,
    pub host: String,
    pub command: String,
}

/// Progress of an export, in bytes read from the store and the case directory.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    Start { total_bytes: u64 },
    Advance { bytes: u64 },
}

/// What an export wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    pub output: PathBuf,
    /// SHA-256 of the bundle file: keep it elsewhere (it is also in the `action` table).
    pub sha256: String,
    pub bytes: u64,
    pub container_id: String,
    pub container_name: Option<String>,
    pub rows: BTreeMap<String, u64>,
    pub case_files: u64,
    pub segments_read: u64,
    /// Store files in the export's window that were not read: unlisted, gone or altered
    /// (each says which and why; `quarry verify --store` checks the store).
    pub skipped: Vec<String>,
    pub signed_by: Option<String>,
    pub files: Vec<BundleFile>,
}

impl ExportReport {
    /// What the `action` row of this export of `request` records as its detail: the
    /// bundle, its hash and size, the rows per table, the case included, the signature and the
    /// window.
    pub fn action_detail(&self, request: &ExportRequest) -> serde_json::Value {
        serde_json::json!({
            "bundle": self.output, "sha256": self.sha256, "bytes": self.bytes, "rows": self.rows,
            "case": request.case_dir, "case_files": self.case_files, "signed_by": self.signed_by,
            "since": request.since, "until": request.until,
        })
    }

    /// The report for people (`quarry export`): what was exported in `elapsed`, the bundle's
    /// hash and signature, and the command that checks it (with the public key beside
    /// `signing_key`, when signed).
    pub fn render_text(
        &self,
        elapsed: std::time::Duration,
        signing_key: Option<&Path>,
        w: &mut dyn Write,
    ) -> io::Result<()> {
        let rows: u64 = self.rows.values().sum();
        let tables: Vec<String> = self
            .rows
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(t, n)| format!("{t} {n}"))
            .collect();
        writeln!(
            w,
            "exported {} of {} ({}) in {:.1}s: {rows} rows ({}), {} case files, from {} \
             segments",
            self.output.display(),
            quarry_store::text::printable(
                self.container_name.as_deref().unwrap_or(&self.container_id)
            ),
            quarry_store::human::human_bytes(self.bytes),
            elapsed.as_secs_f64(),
            if tables.is_empty() {
                "none".to_string()
            } else {
                tables.join(", ")
            },
            self.case_files,
            self.segments_read
        )?;
        writeln!(w, "bundle sha256: {}", self.sha256)?;
        match &self.signed_by {
            Some(k) => writeln!(w, "signed by {k}")?,
            None => writeln!(w, "not signed (use --sign KEY; `quarry keygen` makes one)")?,
        }
        writeln!(
            w,
            "check it with `quarry verify {}{}`",
            self.output.display(),
            signing_key
                .map(|k| format!(" --key {}", crate::keys::public_path_for(k).display()))
                .unwrap_or_default()
        )
    }
}

/// A reader that hashes and counts what passes and reports progress.
struct Hashing<'p, R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
    progress: Option<&'p mut dyn FnMut(Progress)>,
}

impl<R: Read> Read for Hashing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        if let Some(p) = self.progress.as_mut() {
            p(Progress::Advance { bytes: n as u64 });
        }
        Ok(n)
    }
}

/// A file of the case directory, found by a walk that follows no symlink.
struct CaseFile {
    rel: String,
    path: PathBuf,
    bytes: u64,
}

fn walk_case(root: &Path) -> Result<Vec<CaseFile>> {
    let unsafe_case = |path: &Path, reason: &str| EvidenceError::UnsafeCase {
        path: path.to_path_buf(),
        reason: reason.into(),
    };
    let meta = fs::symlink_metadata(root).map_err(|e| EvidenceError::io(root, e))?;
    if !meta.is_dir() {
        return Err(unsafe_case(
            root,
            "the case directory must be a directory, not a symlink or file",
        ));
    }
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let mut items: Vec<_> = fs::read_dir(&dir)
            .map_err(|e| EvidenceError::io(&dir, e))?
            .collect::<io::Result<_>>()
            .map_err(|e| EvidenceError::io(&dir, e))?;
        items.sort_by_key(|i| i.file_name());
        for item in items {
            let path = item.path();
            let name = item
                .file_name()
                .into_string()
                .map_err(|_| unsafe_case(&path, "its name is not UTF-8"))?;
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let ft = item.file_type().map_err(|e| EvidenceError::io(&path, e))?;
            if ft.is_symlink() {
                return Err(unsafe_case(
                    &path,
                    "it is a symlink; evidence never follows symlinks",
                ));
            } else if ft.is_dir() {
                stack.push((path, rel));
            } else if ft.is_file() {
                let bytes = item
                    .metadata()
                    .map_err(|e| EvidenceError::io(&path, e))?
                    .len();
                out.push(CaseFile { rel, path, bytes });
            } else {
                return Err(unsafe_case(
                    &path,
                    "it is a device, socket or fifo, not a file",
                ));
            }
        }
    }
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(out)
}

/// Rows of `batch` of `table` that belong to the export: the container's, inside the window.
/// `gap` rows (no container) are all kept here; the caller picks the hours.
fn select_rows(
    batch: &RecordBatch,
    table: Table,
    container_id: &str,
    since: Option<i64>,
    until: Option<i64>,
) -> Result<RecordBatch> {
    let time = batch
        .column_by_name("time")
        .expect("every table has a time column")
        .as_primitive::<TimestampMicrosecondType>();
    let ids = (table != Table::Gap).then(|| {
        batch
            .column_by_name("container_id")
            .expect("every table but gap has container_id")
            .as_string::<i32>()
    });
    let mask: BooleanArray = (0..batch.num_rows())
        .map(|i| {
            let t = time.value(i);
            let in_window = since.is_none_or(|s| t >= s) && until.is_none_or(|u| t < u);
            let ours = match ids {
                Some(ids) => !ids.is_null(i) && ids.value(i) == container_id,
                None => true,
            };
            Some(in_window && ours)
        })
        .collect();
    Ok(filter_record_batch(batch, &mask)?)
}

/// The error for a segment that vanished during an export, when the manifest now records its
/// removal (None: it vanished without a record, which `verify --store` reports).
fn removed_meanwhile(store: &Store, rel: &str) -> Option<EvidenceError> {
    let log = Manifest::new(store.manifest_path()).read().ok()?;
    let (_, removal) = log
        .entries
        .iter()
        .rev()
        .find(|(_, e)| e.body.path == rel && e.body.op == quarry_store::ManifestOp::Remove)?;
    Some(EvidenceError::RemovedDuringExport {
        path: rel.to_string(),
        reason: removal.body.reason.clone().unwrap_or_default(),
    })
}

/// Exports one container's evidence into a bundle at `req.output`.
pub fn export(req: &ExportRequest<'_>, progress: &mut dyn FnMut(Progress)) -> Result<ExportReport> {
    if fs::symlink_metadata(&req.output).is_ok() {
        return Err(EvidenceError::OutputExists(req.output.clone()));
    }
    let created = Utc::now();
    let out_dir = match req.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let work = tempfile::Builder::new()
        .prefix(".quarry-export-")
        .tempdir_in(&out_dir)
        .map_err(|e| EvidenceError::io(&out_dir, e))?;

    // What to read: segments the manifest vouches for whose hour overlaps the window.
    let listing = req.store.verified_listing()?;
    let head = listing.head.clone();
    let overlaps = |partition: &Partition| {
        req.since.is_none_or(|s| partition.hour_end() > s)
            && req.until.is_none_or(|u| partition.hour < u)
    };
    let mut skipped: Vec<String> = listing
        .skipped
        .iter()
        .filter(|s| {
            let rel = s.path.strip_prefix(req.store.root()).unwrap_or(&s.path);
            rel.to_str()
                .and_then(Partition::from_segment_path)
                .is_none_or(|(p, _)| overlaps(&p))
        })
        .map(ToString::to_string)
        .collect();
    let mut by_table: BTreeMap<Table, Vec<Listed>> = BTreeMap::new();
    for seg in listing.segments {
        if overlaps(&seg.partition) {
            by_table.entry(seg.table()).or_default().push(seg);
        }
    }
    let case_files = match &req.case_dir {
        Some(dir) => walk_case(dir)?,
        None => Vec::new(),
    };
    let total: u64 = by_table.values().flatten().map(|s| s.bytes).sum::<u64>()
        + case_files.iter().map(|c| c.bytes).sum::<u64>();
    progress(Progress::Start { total_bytes: total });

    // Tables: the container's rows into one Parquet file each (gap last: it keeps the rows of
    // hours in which the container has rows).
    let since = req.since.map(|t| t.timestamp_micros());
    let until = req.until.map(|t| t.timestamp_micros());
    let mut rows: BTreeMap<String, u64> = BTreeMap::new();
    let mut hours_with_rows: BTreeSet<(DateTime<Utc>, String)> = BTreeSet::new();
    let mut segments_read = 0u64;
    let mut table_files = Vec::new();
    let mut order: Vec<Table> = Table::ALL
        .iter()
        .copied()
        .filter(|t| *t != Table::Gap)
        .collect();
    order.push(Table::Gap);
    for table in order {
        let path = work.path().join(format!("{}.parquet", table.name()));
        let file = File::create(&path).map_err(|e| EvidenceError::io(&path, e))?;
        let parquet_err = |source| EvidenceError::Parquet {
            path: path.clone(),
            source,
        };
        let mut writer = ArrowWriter::try_new(
            file,
            schema_of(table),
            Some(quarry_store::segment::writer_properties(table)),
        )
        .map_err(parquet_err)?;
        let mut n = 0u64;
        for seg in by_table.get(&table).map(Vec::as_slice).unwrap_or(&[]) {
            let partition = &seg.partition;
            if table == Table::Gap
                && !hours_with_rows.contains(&(partition.hour, partition.host.clone()))
            {
                progress(Progress::Advance { bytes: seg.bytes });
                continue;
            }
            let file = match verified::open(seg)? {
                Ok(f) => f,
                Err(refusal) => {
                    if refusal == Refusal::Missing
                        && let Some(e) = removed_meanwhile(req.store, &seg.rel)
                    {
                        return Err(e);
                    }
                    let s = verified::Skipped {
                        path: seg.path.clone(),
                        refusal,
                    };
                    skipped.push(s.to_string());
                    progress(Progress::Advance { bytes: seg.bytes });
                    continue;
                }
            };
            progress(Progress::Advance { bytes: seg.bytes });
            segments_read += 1;
            let seg_err = |source| EvidenceError::Parquet {
                path: seg.path.clone(),
                source,
            };
            let reader = quarry_store::read::segment_reader(file, table)
                .map_err(seg_err)?
                .build()
                .map_err(seg_err)?;
            for batch in reader {
                let batch = batch?;
                let selected = select_rows(&batch, table, &req.container_id, since, until)?;
                if selected.num_rows() > 0 {
                    n += selected.num_rows() as u64;
                    hours_with_rows.insert((partition.hour, partition.host.clone()));
                    writer.write(&selected).map_err(parquet_err)?;
                }
            }
        }
        let file = writer.into_inner().map_err(parquet_err)?;
        file.sync_all().map_err(|e| EvidenceError::io(&path, e))?;
        rows.insert(table.name().to_string(), n);
        table_files.push((table, path, n));
    }

    // The bundle: files first (hashed as they go in), then custody log, manifest, signature.
    let partial = out_dir.join(format!(
        ".{}.partial-{}",
        req.output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "bundle".into()),
        std::process::id()
    ));
    let result = write_bundle(
        req,
        &partial,
        created,
        &head,
        segments_read,
        &table_files,
        &case_files,
        &skipped,
        progress,
    );
    let (files, sha256, bytes) = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = fs::remove_file(&partial);
            return Err(e);
        }
    };
    // Into place without ever replacing a file that appeared meanwhile.
    let linked = fs::hard_link(&partial, &req.output);
    let _ = fs::remove_file(&partial);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(EvidenceError::OutputExists(req.output.clone()));
        }
        Err(e) => return Err(EvidenceError::io(&req.output, e)),
    }
    if let Ok(d) = File::open(&out_dir) {
        let _ = d.sync_all();
    }
    Ok(ExportReport {
        output: req.output.clone(),
        sha256,
        bytes,
        container_id: req.container_id.clone(),
        container_name: req.container_name.clone(),
        rows,
        case_files: case_files.len() as u64,
        segments_read,
        skipped,
        signed_by: req.signing_key.map(|k| k.public().fingerprint()),
        files,
    })
}

type Written = (Vec<BundleFile>, String, u64);

#[allow(clippy::too_many_arguments)]
fn write_bundle(
    req: &ExportRequest<'_>,
    partial: &Path,
    created: DateTime<Utc>,
    head: &str,
    segments_read: u64,
    table_files: &[(Table, PathBuf, u64)],
    case_files: &[CaseFile],
    skipped: &[String],
    progress: &mut dyn FnMut(Progress),
) -> Result<Written> {
    // Only the exporter reads a bundle until it is handed on: it holds the container's argv,
    // files and, with a case, its memory.
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(partial)
        .map_err(|e| EvidenceError::io(partial, e))?;
    let sink = HashingWriter::new(io::BufWriter::with_capacity(1 << 20, file));
    let io_err = |e| EvidenceError::io(partial, e);
    let mut encoder = zstd::stream::write::Encoder::new(sink, 3).map_err(io_err)?;
    encoder.include_checksum(true).map_err(io_err)?;
    let mut tar = tar::Builder::new(encoder);
    let mtime = created.timestamp().max(0) as u64;
    let mut files = Vec::new();

    let append = |tar: &mut tar::Builder<_>,
                  rel: &str,
                  source: &mut dyn Read,
                  size: u64,
                  progress: Option<&mut dyn FnMut(Progress)>|
     -> Result<(String, u64)> {
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(0o644);
        header.set_mtime(mtime);
        header.set_entry_type(tar::EntryType::Regular);
        let mut reader = Hashing {
            inner: source.take(size),
            hasher: Sha256::new(),
            bytes: 0,
            progress,
        };
        tar.append_data(&mut header, format!("{BUNDLE_ROOT}/{rel}"), &mut reader)
            .map_err(io_err)?;
        if reader.bytes != size {
            return Err(EvidenceError::io(
                rel,
                io::Error::other(format!(
                    "changed while being exported ({} bytes read, {size} expected)",
                    reader.bytes
                )),
            ));
        }
        Ok((hex::encode(reader.hasher.finalize()), size))
    };

    for (table, path, rows) in table_files {
        let mut f = File::open(path).map_err(|e| EvidenceError::io(path, e))?;
        let size = f.metadata().map_err(|e| EvidenceError::io(path, e))?.len();
        let rel = format!("tables/{}.parquet", table.name());
        let (sha256, bytes) = append(&mut tar, &rel, &mut f, size, None)?;
        files.push(BundleFile {
            path: rel,
            kind: FileKind::Table,
            sha256,
            bytes,
            table: Some(table.name().to_string()),
            rows: Some(*rows),
        });
    }
    for c in case_files {
        let mut f = File::open(&c.path).map_err(|e| EvidenceError::io(&c.path, e))?;
        let rel = format!("case/{}", c.rel);
        let (sha256, bytes) = append(&mut tar, &rel, &mut f, c.bytes, Some(&mut *progress))?;
        files.push(BundleFile {
            path: rel,
            kind: FileKind::Case,
            sha256,
            bytes,
            table: None,
            rows: None,
        });
    }

    let at = created.to_rfc3339_opts(SecondsFormat::Micros, true);
    let total_rows: u64 = table_files.iter().map(|t| t.2).sum();
    let mut custody = vec![serde_json::json!({
        "at": at, "event": "collected", "actor": req.actor, "host": req.host,
        "command": req.command,
        "detail": format!(
            "{total_rows} rows of container {} from the store at {} (manifest head {head}; {segments_read} \
             segments, each re-hashed against the store manifest before use{})",
            req.container_id, req.store.root().display(),
            if skipped.is_empty() {
                String::new()
            } else {
                format!("; {} files not read: {}", skipped.len(), skipped.join("; "))
            }),
    })];
    if let Some(dir) = &req.case_dir {
        custody.push(serde_json::json!({
            "at": at, "event": "case_included", "actor": req.actor, "host": req.host,
            "detail": format!("case directory {}: {} files, {} bytes, hashed while copied",
                dir.display(), case_files.len(), case_files.iter().map(|c| c.bytes).sum::<u64>()),
        }));
    }
    custody.push(serde_json::json!({
        "at": Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true), "event": "sealed",
        "actor": req.actor, "host": req.host,
        "detail": format!("bundle {} written; MANIFEST.json lists {} files{}",
            req.output.display(), files.len() + 1,
            req.signing_key.map(|k| format!("; signed with {}", k.public().fingerprint())).unwrap_or_default()),
    }));
    let custody: String = custody.iter().map(|v| format!("{v}\n")).collect();
    let (sha256, bytes) = append(
        &mut tar,
        CUSTODY_NAME,
        &mut custody.as_bytes(),
        custody.len() as u64,
        None,
    )?;
    files.push(BundleFile {
        path: CUSTODY_NAME.into(),
        kind: FileKind::Custody,
        sha256,
        bytes,
        table: None,
        rows: None,
    });

    let fmt = |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true));
    let manifest = BundleManifest {
        format: FORMAT.into(),
        tool: format!("quarry {}", env!("CARGO_PKG_VERSION")),
        created: at,
        host: req.host.clone(),
        actor: req.actor.clone(),
        command: req.command.clone(),
        container: BundleContainer {
            id: req.container_id.clone(),
            name: req.container_name.clone(),
        },
        since: fmt(req.since),
        until: fmt(req.until),
        source: BundleSource {
            store: req.store.root().display().to_string(),
            manifest_head: head.to_string(),
            segments_read,
        },
        case_dir: req.case_dir.as_ref().map(|d| d.display().to_string()),
        files: files.clone(),
    };
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).expect("the manifest serializes");
    append(
        &mut tar,
        MANIFEST_NAME,
        &mut manifest_bytes.as_slice(),
        manifest_bytes.len() as u64,
        None,
    )?;
    if let Some(key) = req.signing_key {
        let sig = SignatureFile {
            algorithm: "ed25519".into(),
            public_key: key.public().to_hex(),
            signature: key.sign(&manifest_bytes),
        };
        let sig_bytes = serde_json::to_vec_pretty(&sig).expect("a signature serializes");
        append(
            &mut tar,
            SIGNATURE_NAME,
            &mut sig_bytes.as_slice(),
            sig_bytes.len() as u64,
            None,
        )?;
    }
    let encoder = tar.into_inner().map_err(io_err)?;
    let mut sink = encoder.finish().map_err(io_err)?;
    sink.flush().map_err(io_err)?;
    let (buffered, sha256, bytes) = sink.finish();
    let file = buffered.into_inner().map_err(|e| io_err(e.into_error()))?;
    file.sync_all().map_err(io_err)?;
    Ok((files, sha256, bytes))
}
