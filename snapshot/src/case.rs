//! The case directory: evidence that is never overwritten, hashed file by file, left read-only
//! and private to root (directories 0700, files 0400: memory images and environments hold
//! secrets). [`exposed`] finds what other users can read.
//!
//! `manifest.json` lists every other file with its size and hash (BLAKE3 by default: it hashes
//! hundreds of MiB of memory images several times faster than SHA-256 here; SHA-256 on
//! request) beside who, where, when and how it was taken; `B3SUMS` or `SHA256SUMS` holds the
//! same hashes for `b3sum -c` / `sha256sum -c`. The manifest's own SHA-256 goes into the store's
//! `action` row, whose segment is hash-chained: so the case is pinned by the store's chain too.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::SnapshotError;

pub const MANIFEST: &str = "manifest.json";

/// The hash every file of a case is listed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HashAlg {
    #[default]
    Blake3,
    Sha256,
}

impl HashAlg {
    /// The checksum file, named as `b3sum -c` / `sha256sum -c` users expect.
    pub fn sums_file(self) -> &'static str {
        match self {
            HashAlg::Blake3 => "B3SUMS",
            HashAlg::Sha256 => "SHA256SUMS",
        }
    }

    /// Hex digest of a file.
    pub fn file(self, path: &Path) -> io::Result<String> {
        match self {
            HashAlg::Sha256 => quarry_store::segment::sha256_file(path),
            HashAlg::Blake3 => {
                let mut h = blake3::Hasher::new();
                // Memory-mapped and on every core for large files; plain reads for small ones.
                h.update_mmap_rayon(path)?;
                Ok(h.finalize().to_hex().to_string())
            }
        }
    }
}

/// One file of the case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative to the case directory.
    pub path: String,
    pub size: u64,
    /// Hex digest, with the manifest's `hash` algorithm.
    pub hash: String,
}

/// Creates the case directory, refusing one that exists: evidence is never overwritten.
pub fn create(dir: &Path) -> Result<(), SnapshotError> {
    if dir.symlink_metadata().is_ok() {
        return Err(SnapshotError::CaseExists {
            path: dir.to_path_buf(),
        });
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| SnapshotError::io(parent, e))?;
    }
    // 0700 from its creation: the umask can only take bits away.
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(SnapshotError::CaseExists {
            path: dir.to_path_buf(),
        }),
        Err(e) => Err(SnapshotError::io(dir, e)),
    }
}

/// A new directory inside the case (and its missing parents), 0700.
pub fn make_dir(dir: &Path) -> Result<(), SnapshotError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| SnapshotError::io(dir, e))
}

/// Every regular file below `dir` (relative paths, sorted), except the manifest and sums.
pub fn list(dir: &Path) -> io::Result<Vec<PathBuf>> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
        for e in fs::read_dir(d)? {
            let e = e?;
            let ft = e.file_type()?;
            let p = e.path();
            if ft.is_dir() {
                walk(base, &p, out)?;
            } else {
                out.push(p.strip_prefix(base).unwrap_or(&p).to_path_buf());
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.retain(|p| {
        p != Path::new(MANIFEST)
            && p != Path::new(HashAlg::Blake3.sums_file())
            && p != Path::new(HashAlg::Sha256.sums_file())
    });
    out.sort();
    Ok(out)
}

/// Hashes every file of the case, calling `progress(done_bytes, total_bytes)` as it goes.
pub fn hash_all(
    dir: &Path,
    alg: HashAlg,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Vec<FileEntry>, SnapshotError> {
    let files = list(dir).map_err(|e| SnapshotError::io(dir, e))?;
    let total: u64 = files
        .iter()
        .filter_map(|f| fs::symlink_metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum();
    let mut done = 0;
    let mut out = Vec::new();
    for f in files {
        let p = dir.join(&f);
        let m = fs::symlink_metadata(&p).map_err(|e| SnapshotError::io(&p, e))?;
        if !m.is_file() {
            // CRIU writes only regular files; anything else is listed by its target.
            continue;
        }
        let hash = alg.file(&p).map_err(|e| SnapshotError::io(&p, e))?;
        done += m.len();
        progress(done, total);
        out.push(FileEntry {
            path: f.display().to_string(),
            size: m.len(),
            hash,
        });
    }
    Ok(out)
}

/// Writes `B3SUMS` / `SHA256SUMS` in the format `b3sum -c` / `sha256sum -c` read, the
/// manifest included.
pub fn write_sums(dir: &Path, alg: HashAlg, files: &[FileEntry]) -> io::Result<()> {
    let mut text = String::new();
    for f in files {
        text.push_str(&format!("{}  {}\n", f.hash, f.path));
    }
    let manifest = alg.file(&dir.join(MANIFEST))?;
    text.push_str(&format!("{manifest}  {MANIFEST}\n"));
    fs::write(dir.join(alg.sums_file()), text)
}

/// Makes every file 0400 (read-only, root's) and every directory 0700 (root's alone).
pub fn seal(dir: &Path) -> io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let p = e.path();
        if e.file_type()?.is_dir() {
            seal(&p)?;
        } else if e.file_type()?.is_file() {
            fs::set_permissions(&p, fs::Permissions::from_mode(0o400))?;
        }
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// The case itself and every file or directory in it that users other than its owner and
/// group can read, write or enter (relative paths, `.` for the case directory), symlinks not
/// followed.
pub fn exposed(dir: &Path) -> io::Result<Vec<String>> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) -> io::Result<()> {
        for e in fs::read_dir(d)? {
            let e = e?;
            let p = e.path();
            let m = fs::symlink_metadata(&p)?;
            if !m.file_type().is_symlink() && m.permissions().mode() & 0o007 != 0 {
                out.push(p.strip_prefix(base).unwrap_or(&p).display().to_string());
            }
            if m.is_dir() {
                walk(base, &p, out)?;
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    if fs::symlink_metadata(dir)?.permissions().mode() & 0o007 != 0 {
        out.push(".".into());
    }
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// A file of the case that does not match its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    pub path: String,
    /// missing | altered | unlisted | world_accessible (readable or enterable by other users)
    pub problem: &'static str,
}

/// Re-hashes a case against its manifest.
pub fn verify(dir: &Path) -> Result<Vec<Mismatch>, SnapshotError> {
    let path = dir.join(MANIFEST);
    let text = fs::read_to_string(&path).map_err(|e| SnapshotError::io(&path, e))?;
    let manifest: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| SnapshotError::BadCase {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    let listed: Vec<FileEntry> =
        serde_json::from_value(manifest["files"].clone()).map_err(|e| SnapshotError::BadCase {
            path: path.clone(),
            reason: format!("files: {e}"),
        })?;
    let alg: HashAlg =
        serde_json::from_value(manifest["hash"].clone()).map_err(|e| SnapshotError::BadCase {
            path: path.clone(),
            reason: format!("hash: {e}"),
        })?;
    let mut out = Vec::new();
    for f in &listed {
        let p = dir.join(&f.path);
        match alg.file(&p) {
            Err(_) => out.push(Mismatch {
                path: f.path.clone(),
                problem: "missing",
            }),
            Ok(h) if h != f.hash || fs::metadata(&p).map(|m| m.len()).ok() != Some(f.size) => out
                .push(Mismatch {
                    path: f.path.clone(),
                    problem: "altered",
                }),
            Ok(_) => {}
        }
    }
    for p in list(dir).map_err(|e| SnapshotError::io(dir, e))? {
        let s = p.display().to_string();
        if !listed.iter().any(|f| f.path == s) {
            out.push(Mismatch {
                path: s,
                problem: "unlisted",
            });
        }
    }
    Ok(out)
}

/// Bytes available on the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let s = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(s.blocks_available() as u64 * s.fragment_size() as u64)
}

/// Bytes used on the filesystem mounted at `mount`.
pub fn used_bytes(mount: &Path) -> Option<u64> {
    let s = nix::sys::statvfs::statvfs(mount).ok()?;
    Some((s.blocks() - s.blocks_free()) as u64 * s.fragment_size() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn existing_case_is_refused_and_tampering_found() {
        let dir = tempfile::tempdir().unwrap();
        let case = dir.path().join("case");
        create(&case).unwrap();
        assert!(matches!(
            create(&case),
            Err(SnapshotError::CaseExists { .. })
        ));
        fs::create_dir(case.join("images")).unwrap();
        fs::write(case.join("images/a.img"), "aaaa").unwrap();
        fs::write(case.join("b.json"), "{}").unwrap();
        let files = hash_all(&case, HashAlg::Blake3, &mut |_, _| {}).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(
            files[1].hash,
            blake3::hash(b"aaaa").to_hex().to_string(),
            "{files:?}"
        );
        let manifest = serde_json::json!({ "hash": "blake3", "files": files });
        fs::write(case.join(MANIFEST), manifest.to_string()).unwrap();
        assert!(verify(&case).unwrap().is_empty());
        fs::write(case.join("images/a.img"), "aaab").unwrap();
        fs::write(case.join("extra"), "").unwrap();
        let bad = verify(&case).unwrap();
        assert_eq!(
            bad,
            vec![
                Mismatch {
                    path: "images/a.img".into(),
                    problem: "altered"
                },
                Mismatch {
                    path: "extra".into(),
                    problem: "unlisted"
                }
            ]
        );
        assert!(free_bytes(dir.path()).unwrap() > 0);
        seal(&case).unwrap();
        assert!(exposed(&case).unwrap().is_empty());
        let mode = |p: &str| fs::metadata(case.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(
            (mode("."), mode("images"), mode("images/a.img")),
            (0o700, 0o700, 0o400)
        );
        fs::set_permissions(case.join("b.json"), fs::Permissions::from_mode(0o444)).unwrap();
        fs::set_permissions(&case, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(exposed(&case).unwrap(), [".", "b.json"]);
    }
}
