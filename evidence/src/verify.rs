//! `quarry verify BUNDLE`: safe extraction, then every hash, the file list and the signature.
//!
//! Extraction happens only inside a fresh directory (a temporary one unless the caller names
//! one), one entry at a time:
//! - only regular files and directories are accepted: symlinks, hard links, devices, fifos and
//!   anything else are refused, so nothing can point outside the target;
//! - a path must be relative, made of plain names only (no `..`, no absolute path, no empty
//!   or non-UTF-8 name) and under `quarry-bundle/`;
//! - files are created with `O_EXCL | O_NOFOLLOW` (never over an existing file or through a
//!   link), with mode 0644 whatever the archive says;
//! - decompressed bytes are counted against a limit (by default 200 times the bundle's size,
//!   at least 1 GiB), checked against each entry's declared size before it is read and while
//!   reading; zstd frames asking for a window over 128 MiB are refused.
//!
//! The first unsafe entry stops extraction: the bundle is not trustworthy and nothing after it
//! is written.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::keys::PublicKey;
use crate::manifest::{BundleManifest, FileKind, SignatureFile};
use crate::{BUNDLE_ROOT, EvidenceError, MANIFEST_NAME, Result, SIGNATURE_NAME};

/// How to verify.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// The signer's key the bundle must be signed with.
    pub trusted_key: Option<PublicKey>,
    /// Keep the extracted files here (a new or empty directory); default: a temporary
    /// directory removed afterwards.
    pub extract_to: Option<PathBuf>,
    /// Most bytes extraction may write; default: 200 times the bundle's size, at least 1 GiB.
    pub max_bytes: Option<u64>,
}

/// Smallest default extraction limit.
pub const MIN_EXTRACT_LIMIT: u64 = 1 << 30;
/// Default limit as a multiple of the compressed size.
pub const EXTRACT_RATIO: u64 = 200;
/// Largest zstd window accepted (log2): 128 MiB, zstd's own default limit.
const WINDOW_LOG_MAX: u32 = 27;

/// One thing wrong with a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BundleProblem {
    /// The file is not a readable tar+zstd bundle, or its bytes were damaged (zstd checksum).
    Damaged { detail: String },
    /// An entry that could write outside the target or is not a plain file or directory.
    UnsafeEntry { path: String, reason: String },
    /// Extraction would write more than the limit: a decompression bomb, or a bundle larger
    /// than allowed (raise the limit with --max-size if it is genuine).
    TooLarge { limit: u64, detail: String },
    /// The same path appears twice in the archive.
    DuplicateEntry { path: String },
    /// No MANIFEST.json, or one that does not parse.
    BadManifest { detail: String },
    /// The manifest lists a file the bundle does not have.
    MissingFile { path: String },
    /// The bundle has a file the manifest does not list.
    UnlistedFile { path: String },
    /// A file's content does not match the manifest.
    AlteredFile {
        path: String,
        expected: String,
        actual: String,
    },
    /// A table file's row count does not match the manifest.
    RowCount {
        path: String,
        expected: u64,
        actual: u64,
    },
    /// A key was required but the bundle is not signed.
    NotSigned,
    /// The signature does not verify (the manifest changed after signing, or it is malformed).
    BadSignature { detail: String },
    /// Signed with another key than the one given.
    WrongKey { expected: String, actual: String },
}

impl std::fmt::Display for BundleProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use BundleProblem::*;
        match self {
            Damaged { detail } => write!(f, "damaged bundle: {detail}"),
            UnsafeEntry { path, reason } => {
                write!(
                    f,
                    "unsafe entry refused: {path:?} {reason}; extraction stopped"
                )
            }
            TooLarge { limit, detail } => write!(
                f,
                "decompression bomb refused: {detail} (limit {limit} bytes; --max-size raises it)"
            ),
            DuplicateEntry { path } => write!(f, "duplicate entry: {path} appears twice"),
            BadManifest { detail } => write!(f, "bad manifest: {detail}"),
            MissingFile { path } => {
                write!(
                    f,
                    "missing file: {path} is listed in the manifest but not in the bundle"
                )
            }
            UnlistedFile { path } => {
                write!(
                    f,
                    "unlisted file: {path} is in the bundle but not in the manifest"
                )
            }
            AlteredFile {
                path,
                expected,
                actual,
            } => write!(
                f,
                "altered file: {path} has sha256 {actual}, the manifest says {expected}"
            ),
            RowCount {
                path,
                expected,
                actual,
            } => write!(
                f,
                "row count: {path} holds {actual} rows, the manifest says {expected}"
            ),
            NotSigned => write!(
                f,
                "not signed: a key was given but the bundle has no signature"
            ),
            BadSignature { detail } => write!(f, "bad signature: {detail}"),
            WrongKey { expected, actual } => write!(
                f,
                "wrong key: the bundle is signed by {actual}, not by the given key {expected}"
            ),
        }
    }
}

/// The outcome of [`verify_bundle`].
#[derive(Debug, Default, Serialize)]
pub struct BundleReport {
    pub bundle: PathBuf,
    pub sha256: String,
    pub compressed_bytes: u64,
    pub extracted_bytes: u64,
    pub files_verified: u64,
    /// Fingerprint of the key the bundle is signed with (checked as valid), if signed.
    pub signed_by: Option<String>,
    /// Whether that key is the trusted one given.
    pub key_trusted: bool,
    /// Where the files were extracted, when kept.
    pub extracted_to: Option<PathBuf>,
    pub manifest: Option<BundleManifest>,
    pub problems: Vec<BundleProblem>,
}

impl BundleReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    /// The report for people (`quarry verify BUNDLE`): problems, whose bundle it is, the
    /// signature, and the verdict. The manifest's fields are the bundle maker's text and are
    /// escaped.
    pub fn render_text(&self, w: &mut dyn io::Write) -> io::Result<()> {
        use quarry_store::text::printable as shown;
        for p in &self.problems {
            writeln!(w, "✗ {}", shown(&p.to_string()))?;
        }
        if let Some(m) = &self.manifest {
            writeln!(
                w,
                "bundle of container {}{} from {} by {} at {} ({})",
                shown(m.container.name.as_deref().unwrap_or(&m.container.id)),
                if m.container.name.is_some() {
                    format!(" ({})", shown(&m.container.id))
                } else {
                    String::new()
                },
                shown(&m.host),
                shown(&m.actor),
                shown(&m.created),
                shown(&m.tool)
            )?;
        }
        match (&self.signed_by, self.key_trusted) {
            (Some(k), true) => writeln!(w, "signature: valid, by the given key {k}")?,
            (Some(k), false) => writeln!(
                w,
                "signature: valid, by {k} (not checked against a trusted key: pass --key)"
            )?,
            (None, _) if self.problems.is_empty() => {
                writeln!(w, "signature: none (the bundle is not signed)")?
            }
            (None, _) => {}
        }
        let verdict = if self.is_ok() {
            "✓ verified"
        } else {
            "✗ FAILED"
        };
        writeln!(
            w,
            "{verdict}: {} files, {} bytes extracted from {} bytes; {} problems\nbundle \
             sha256: {}",
            self.files_verified,
            self.extracted_bytes,
            self.compressed_bytes,
            self.problems.len(),
            self.sha256
        )?;
        if let Some(dir) = &self.extracted_to {
            writeln!(w, "extracted to {}", dir.display())?;
        }
        Ok(())
    }
}

/// Counts decompressed bytes and fails past the limit.
struct Limited<R> {
    inner: R,
    read: u64,
    limit: u64,
}

/// Marker error for [`Limited`].
#[derive(Debug)]
struct OverLimit;
impl std::fmt::Display for OverLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("decompressed data exceeds the limit")
    }
}
impl std::error::Error for OverLimit {}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.limit {
            return Err(io::Error::other(OverLimit));
        }
        Ok(n)
    }
}

fn is_over_limit(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|i| i.is::<OverLimit>())
}

/// Checks an entry path: relative plain names under the bundle root. Returns the path inside
/// the root, or why it is refused.
fn safe_path(raw: &[u8]) -> std::result::Result<String, String> {
    let s = std::str::from_utf8(raw).map_err(|_| "is not UTF-8".to_string())?;
    if s.starts_with('/') {
        return Err("is an absolute path".into());
    }
    let p = Path::new(s);
    let mut parts = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => parts.push(n.to_str().unwrap_or_default().to_string()),
            Component::CurDir => {}
            Component::ParentDir => return Err("contains '..' (path traversal)".into()),
            Component::RootDir | Component::Prefix(_) => {
                return Err("is an absolute path".into());
            }
        }
    }
    if parts.first().map(String::as_str) != Some(BUNDLE_ROOT) {
        return Err(format!(
            "is outside the bundle's root directory {BUNDLE_ROOT}/"
        ));
    }
    if s.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    Ok(parts[1..].join("/"))
}

/// Creates `rel`'s parent directories under `root`, refusing anything that is not a plain
/// directory on the way.
fn make_parents(root: &Path, rel: &str) -> io::Result<PathBuf> {
    let mut dir = root.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for part in &parts[..parts.len().saturating_sub(1)] {
        dir.push(part);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::other(format!(
                    "{} exists and is not a directory",
                    dir.display()
                )));
            }
            Err(_) => fs::create_dir(&dir)?,
        }
    }
    Ok(root.join(rel))
}

/// What was extracted: path inside the root -> (sha256, bytes, local path).
type Extracted = BTreeMap<String, (String, u64, PathBuf)>;

/// Extracts `bundle` into `target` (which exists and is empty; an entry
/// `quarry-bundle/tables/x.parquet` becomes `target/tables/x.parquet`), recording problems.
/// Returns what was written.
fn extract(
    bundle: &Path,
    target: &Path,
    limit: u64,
    report: &mut BundleReport,
) -> Result<Extracted> {
    let mut out = Extracted::new();
    let file = File::open(bundle).map_err(|e| EvidenceError::io(bundle, e))?;
    let mut decoder = match zstd::stream::read::Decoder::new(io::BufReader::new(file)) {
        Ok(d) => d,
        Err(e) => {
            report.problems.push(BundleProblem::Damaged {
                detail: format!("not a zstd stream: {e}"),
            });
            return Ok(out);
        }
    };
    if let Err(e) = decoder.window_log_max(WINDOW_LOG_MAX) {
        return Err(EvidenceError::io(bundle, e));
    }
    let limited = Limited {
        inner: decoder,
        read: 0,
        limit,
    };
    let mut archive = tar::Archive::new(limited);
    let fail = |report: &mut BundleReport, e: io::Error, what: &str| {
        if is_over_limit(&e) {
            report.problems.push(BundleProblem::TooLarge {
                limit,
                detail: format!("the archive decompresses to more than the limit ({what})"),
            });
        } else {
            report.problems.push(BundleProblem::Damaged {
                detail: format!("{what}: {e}"),
            });
        }
    };
    let entries = match archive.entries() {
        Ok(e) => e,
        Err(e) => {
            fail(report, e, "reading the archive");
            return Ok(out);
        }
    };
    for entry in entries {
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) => {
                fail(report, e, "reading an archive header");
                return Ok(out);
            }
        };
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let kind = entry.header().entry_type();
        let refuse = |report: &mut BundleReport, reason: String| {
            report.problems.push(BundleProblem::UnsafeEntry {
                path: shown.clone(),
                reason,
            });
        };
        let rel = match safe_path(&raw) {
            Ok(r) => r,
            Err(reason) => {
                refuse(report, reason);
                return Ok(out);
            }
        };
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            tar::EntryType::Directory => {
                if !rel.is_empty() {
                    let result = make_parents(target, &format!("{rel}/x")).map(|_| ());
                    if let Err(e) = result {
                        refuse(report, format!("cannot be created safely: {e}"));
                        return Ok(out);
                    }
                }
                continue;
            }
            tar::EntryType::Symlink => {
                refuse(report, "is a symlink; bundles hold only plain files".into());
                return Ok(out);
            }
            tar::EntryType::Link => {
                refuse(
                    report,
                    "is a hard link; bundles hold only plain files".into(),
                );
                return Ok(out);
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                refuse(
                    report,
                    "is a device file; bundles hold only plain files".into(),
                );
                return Ok(out);
            }
            tar::EntryType::Fifo => {
                refuse(report, "is a fifo; bundles hold only plain files".into());
                return Ok(out);
            }
            other => {
                refuse(report, format!("has an unsupported entry type {other:?}"));
                return Ok(out);
            }
        }
        if rel.is_empty() {
            refuse(report, "is the bundle root itself, not a file".into());
            return Ok(out);
        }
        let size = entry.size();
        if report.extracted_bytes.saturating_add(size) > limit {
            report.problems.push(BundleProblem::TooLarge {
                limit,
                detail: format!(
                    "{shown} declares {size} bytes, {} were extracted before it",
                    report.extracted_bytes
                ),
            });
            return Ok(out);
        }
        if out.contains_key(&rel) {
            report
                .problems
                .push(BundleProblem::DuplicateEntry { path: rel.clone() });
            return Ok(out);
        }
        let dest = match make_parents(target, &rel) {
            Ok(d) => d,
            Err(e) => {
                refuse(report, format!("cannot be created safely: {e}"));
                return Ok(out);
            }
        };
        let mut f = match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&dest)
        {
            Ok(f) => f,
            Err(e) => {
                refuse(report, format!("cannot be created safely: {e}"));
                return Ok(out);
            }
        };
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut written = 0u64;
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    fail(report, e, &format!("reading {shown}"));
                    return Ok(out);
                }
            };
            hasher.update(&buf[..n]);
            f.write_all(&buf[..n])
                .map_err(|e| EvidenceError::io(&dest, e))?;
            written += n as u64;
        }
        report.extracted_bytes += written;
        out.insert(rel, (hex::encode(hasher.finalize()), written, dest));
    }
    // Read to the end of the zstd frame so its checksum is checked, and nothing hides after
    // the archive: past the end-of-archive blocks only zero padding may follow.
    let mut rest = archive.into_inner();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match rest.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if buf[..n].iter().any(|&b| b != 0) {
                    report.problems.push(BundleProblem::Damaged {
                        detail: "data after the end of the archive".into(),
                    });
                    return Ok(out);
                }
            }
            Err(e) => {
                fail(report, e, "reading the end of the bundle");
                return Ok(out);
            }
        }
    }
    Ok(out)
}

/// Row count of an extracted Parquet file, from its footer.
fn parquet_rows(path: &Path) -> Option<u64> {
    let f = File::open(path).ok()?;
    let reader = parquet::file::reader::SerializedFileReader::new(f).ok()?;
    use parquet::file::reader::FileReader;
    Some(reader.metadata().file_metadata().num_rows() as u64)
}

/// Verifies the bundle at `bundle`; every problem found is in the report (errors are only for
/// not being able to look at all: an unreadable bundle path, an unusable target).
pub fn verify_bundle(bundle: &Path, options: &VerifyOptions) -> Result<BundleReport> {
    let meta = fs::metadata(bundle).map_err(|e| EvidenceError::io(bundle, e))?;
    let mut report = BundleReport {
        bundle: bundle.to_path_buf(),
        compressed_bytes: meta.len(),
        sha256: quarry_store::segment::sha256_file(bundle)
            .map_err(|e| EvidenceError::io(bundle, e))?,
        ..Default::default()
    };
    let limit = options
        .max_bytes
        .unwrap_or_else(|| MIN_EXTRACT_LIMIT.max(meta.len().saturating_mul(EXTRACT_RATIO)));

    let temp;
    let target: PathBuf = match &options.extract_to {
        Some(dir) => {
            match fs::symlink_metadata(dir) {
                Ok(m) if m.is_dir() => {
                    let empty = fs::read_dir(dir)
                        .map_err(|e| EvidenceError::io(dir, e))?
                        .next()
                        .is_none();
                    if !empty {
                        return Err(EvidenceError::TargetNotEmpty(dir.clone()));
                    }
                }
                Ok(_) => return Err(EvidenceError::TargetNotEmpty(dir.clone())),
                Err(_) => fs::create_dir_all(dir).map_err(|e| EvidenceError::io(dir, e))?,
            }
            report.extracted_to = Some(dir.clone());
            dir.clone()
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("quarry-verify-")
                .tempdir()
                .map_err(|e| EvidenceError::io(std::env::temp_dir(), e))?;
            temp.path().to_path_buf()
        }
    };
    let mut extracted = extract(bundle, &target, limit, &mut report)?;
    if !report.problems.is_empty() {
        // Damaged or unsafe: the contents are not checked against a manifest that cannot be
        // trusted to be whole.
        return Ok(report);
    }

    let Some((_, _, manifest_path)) = extracted.remove(MANIFEST_NAME) else {
        report.problems.push(BundleProblem::BadManifest {
            detail: format!("the bundle has no {MANIFEST_NAME}"),
        });
        return Ok(report);
    };
    let manifest_bytes =
        fs::read(&manifest_path).map_err(|e| EvidenceError::io(&manifest_path, e))?;

    // The signature, over the exact manifest bytes.
    match extracted.remove(SIGNATURE_NAME) {
        Some((_, _, sig_path)) => {
            let sig: std::result::Result<SignatureFile, String> = fs::read(&sig_path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()));
            match sig {
                Err(e) => report.problems.push(BundleProblem::BadSignature {
                    detail: format!("{SIGNATURE_NAME} does not parse: {e}"),
                }),
                Ok(sig) if sig.algorithm != "ed25519" => {
                    report.problems.push(BundleProblem::BadSignature {
                        detail: format!("unknown algorithm {}", sig.algorithm),
                    })
                }
                Ok(sig) => match PublicKey::from_hex(&sig.public_key) {
                    Err(e) => report.problems.push(BundleProblem::BadSignature {
                        detail: format!("the signer's public key is invalid: {e}"),
                    }),
                    Ok(signer) => {
                        if let Some(trusted) = &options.trusted_key
                            && *trusted != signer
                        {
                            report.problems.push(BundleProblem::WrongKey {
                                expected: trusted.fingerprint(),
                                actual: signer.fingerprint(),
                            });
                        }
                        if signer.verifies(&manifest_bytes, &sig.signature) {
                            report.signed_by = Some(signer.fingerprint());
                            report.key_trusted = options.trusted_key == Some(signer);
                        } else {
                            report.problems.push(BundleProblem::BadSignature {
                                detail: format!(
                                    "the signature by {} does not match {MANIFEST_NAME}: it was \
                                     changed after signing",
                                    signer.fingerprint()
                                ),
                            });
                        }
                    }
                },
            }
        }
        None if options.trusted_key.is_some() => report.problems.push(BundleProblem::NotSigned),
        None => {}
    }

    let manifest: BundleManifest = match serde_json::from_slice(&manifest_bytes) {
        Ok(m) => m,
        Err(e) => {
            report.problems.push(BundleProblem::BadManifest {
                detail: format!("{MANIFEST_NAME} does not parse: {e}"),
            });
            return Ok(report);
        }
    };
    let mut listed = std::collections::BTreeSet::new();
    for f in &manifest.files {
        if !listed.insert(f.path.as_str()) {
            report.problems.push(BundleProblem::BadManifest {
                detail: format!("{} is listed twice", f.path),
            });
        }
        match extracted.get(&f.path) {
            None => report.problems.push(BundleProblem::MissingFile {
                path: f.path.clone(),
            }),
            Some((sha, bytes, local)) => {
                if *sha != f.sha256 || *bytes != f.bytes {
                    report.problems.push(BundleProblem::AlteredFile {
                        path: f.path.clone(),
                        expected: f.sha256.clone(),
                        actual: sha.clone(),
                    });
                    continue;
                }
                if let (FileKind::Table, Some(expected)) = (f.kind, f.rows) {
                    let actual = parquet_rows(local);
                    if actual != Some(expected) {
                        report.problems.push(BundleProblem::RowCount {
                            path: f.path.clone(),
                            expected,
                            actual: actual.unwrap_or(0),
                        });
                        continue;
                    }
                }
                report.files_verified += 1;
            }
        }
    }
    for path in extracted.keys() {
        if !listed.contains(path.as_str()) {
            report
                .problems
                .push(BundleProblem::UnlistedFile { path: path.clone() });
        }
    }
    report.manifest = Some(manifest);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths() {
        assert_eq!(
            safe_path(b"quarry-bundle/tables/x.parquet").unwrap(),
            "tables/x.parquet"
        );
        assert_eq!(safe_path(b"./quarry-bundle/a").unwrap(), "a");
        assert!(safe_path(b"quarry-bundle/../x").unwrap_err().contains(".."));
        assert!(safe_path(b"/etc/passwd").unwrap_err().contains("absolute"));
        assert!(safe_path(b"other/x").unwrap_err().contains("outside"));
        assert!(
            safe_path(b"quarry-bundle/\xff")
                .unwrap_err()
                .contains("UTF-8")
        );
    }
}
