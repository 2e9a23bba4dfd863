//! Checked copies of a bucket's segments on local disk: what an engine reads instead of the
//! object, so the bytes it decodes are the bytes that were hashed.
//!
//! A copy is made only of bytes [`VouchedSegment::fetch_checked`] passed, and is named by
//! their SHA-256 inside a private directory. The copies kept are bounded in bytes: the oldest
//! go first (a reader that has one open keeps reading it; one asked for again is downloaded
//! and checked again). Both engines read a bucket through this: the local one's bucket
//! sessions and the cluster's executors.
//!
//! This module must not keep bytes that were not checked, and must not name a file by
//! anything but a well-formed hash: the name comes from a manifest a host wrote.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::{Bucket, BucketError, Result, Unusable, VouchedSegment};

/// Bytes of checked copies a reader keeps by default.
pub const DEFAULT_COPY_BYTES: u64 = 2 << 30;

/// Checked copies in one private directory, at most `max_bytes` of them (see the module
/// docs). Clones share the directory and the count.
#[derive(Debug, Clone)]
pub struct CheckedCopies {
    dir: PathBuf,
    max_bytes: u64,
    kept: Arc<Mutex<Kept>>,
}

/// The copies kept, oldest first, as (SHA-256, bytes), and their total bytes.
type Kept = (VecDeque<(String, u64)>, u64);

impl CheckedCopies {
    /// Copies in `dir` (created mode 0700 when missing), at most `max_bytes` of them.
    pub fn new(dir: &Path, max_bytes: u64) -> Result<CheckedCopies> {
        quarry_store::layout::create_private_dirs(dir).map_err(|source| {
            BucketError::LocalCopy {
                path: dir.to_path_buf(),
                source,
            }
        })?;
        Ok(CheckedCopies {
            dir: dir.to_path_buf(),
            max_bytes,
            kept: Arc::new(Mutex::new((VecDeque::new(), 0))),
        })
    }

    /// The local copy of `seg`: the one kept, or its bytes downloaded from `bucket` (whose
    /// prefix its `rel` is below), checked and kept; or why they cannot be used.
    pub async fn copy_of(
        &self,
        seg: &VouchedSegment,
        bucket: &Bucket,
    ) -> Result<std::result::Result<PathBuf, Unusable>> {
        let Some(path) = self.path(&seg.sha256) else {
            return Ok(Err(Unusable::NotSha256));
        };
        if path.is_file() {
            return Ok(Ok(path));
        }
        let data = match seg.fetch_checked(bucket).await? {
            Ok(data) => data,
            Err(unusable) => return Ok(Err(unusable)),
        };
        let (copies, sha256) = (self.clone(), seg.sha256.clone());
        let kept = tokio::task::spawn_blocking(move || copies.keep(&sha256, &data))
            .await
            .map_err(|e| BucketError::LocalCopy {
                path: path.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
        kept.map(Ok)
            .map_err(|source| BucketError::LocalCopy { path, source })
    }

    /// Where the copy of `sha256` lives; None unless it is 64 hex digits.
    fn path(&self, sha256: &str) -> Option<PathBuf> {
        (sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| self.dir.join(format!("{sha256}.parquet")))
    }

    /// Keeps `data` (checked) as the copy of `sha256`, whole or not at all, removing the
    /// oldest copies beyond the budget.
    fn keep(&self, sha256: &str, data: &[u8]) -> std::io::Result<PathBuf> {
        let path = self
            .path(sha256)
            .ok_or_else(|| std::io::Error::other("not a SHA-256"))?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        tmp.write_all(data)?;
        tmp.persist(&path).map_err(|e| e.error)?;
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        let (order, total) = &mut *kept;
        // Two readers that missed the same copy both fetched it: it is counted once.
        if !order.iter().any(|(kept, _)| kept == sha256) {
            order.push_back((sha256.to_string(), data.len() as u64));
            *total += data.len() as u64;
        }
        while *total > self.max_bytes && order.len() > 1 {
            let Some((old, bytes)) = order.pop_front() else {
                break;
            };
            *total -= bytes;
            if old == sha256 {
                // The copy just made is never the one to go.
                order.push_back((old, bytes));
                *total += bytes;
                continue;
            }
            if let Some(p) = self.path(&old) {
                let _ = std::fs::remove_file(p);
            }
        }
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn copies_stay_within_their_budget_and_inside_their_directory() {
        let dir = tempfile::tempdir().unwrap();
        let copies = CheckedCopies::new(&dir.path().join("c"), 10).unwrap();
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let first = copies.keep(&a, b"123456").unwrap();
        assert!(first.starts_with(dir.path().join("c")));
        assert_eq!(copies.path(&a).filter(|p| p.is_file()), Some(first.clone()));
        // Kept twice (two readers fetched it), counted once.
        copies.keep(&a, b"123456").unwrap();
        assert_eq!(copies.kept.lock().unwrap().1, 6);
        copies.keep(&b, b"7890123").unwrap();
        // Over the budget: the oldest copy went, the newest stays.
        assert!(!first.exists());
        assert!(copies.path(&b).unwrap().is_file());
        assert!(copies.keep("../../etc/passwd", b"x").is_err());
        assert_eq!(copies.path("../x"), None);
    }
}
