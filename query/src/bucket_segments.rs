//! What the engine is allowed to see of a bucket (`--store s3://BUCKET/PREFIX`): the segments
//! each host's manifest vouches for, each downloaded whole and hash-checked before a byte of
//! it is used, read-only.
//!
//! The list comes from [`quarry_bucket::vouched_segments`] (per host, the live segments of
//! its manifest chunks' verified prefix), never from listing the bucket, so an object nobody
//! vouches for is never seen. [`BucketSegments`] is the object store DataFusion reads through:
//! `list` answers from that list; the first read of a segment downloads the whole object,
//! checks its size and SHA-256 against the manifest and keeps the checked copy in the
//! session's private directory ([`quarry_bucket::CheckedCopies`], bounded in bytes); every
//! read is then served from a checked copy, so the bytes the engine decodes are the bytes that
//! were hashed (an object rewritten in the bucket afterwards is not read). An object whose
//! hash differs is refused and reported, as a local store's altered segment is. Every write,
//! copy and delete is refused.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{GetOptions, GetResult, ListResult, ObjectMeta};
use quarry_bucket::copies::DEFAULT_COPY_BYTES;
use quarry_bucket::{Bucket, CheckedCopies, VouchedSegment};

use crate::Result;
use crate::segments::{Skipped, generic, list_sorted, list_with_delimiter_below, read_only};

/// The read-only view of a bucket's vouched segments that DataFusion reads through.
pub struct BucketSegments {
    bucket: Bucket,
    healthy: HashMap<Path, VouchedSegment>,
    /// Checked copies, in the session's private directory.
    copies: CheckedCopies,
    /// Objects refused when read, for the session to leave out and warn about.
    refused: Arc<Mutex<Vec<Skipped>>>,
    /// What listings give as the objects' modification time (the session's start).
    listed_at: DateTime<Utc>,
}

impl fmt::Debug for BucketSegments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BucketSegments")
            .field("bucket", &self.bucket.url().to_string())
            .field("segments", &self.healthy.len())
            .finish()
    }
}

impl fmt::Display for BucketSegments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BucketSegments({})", self.bucket.url())
    }
}

impl BucketSegments {
    /// Serves `healthy` from `bucket`, keeping checked copies in `cache_dir` (a private
    /// directory that lives as long as the session); refusals are pushed to `refused`.
    pub fn new(
        bucket: Bucket,
        healthy: Vec<VouchedSegment>,
        cache_dir: &FsPath,
        refused: Arc<Mutex<Vec<Skipped>>>,
    ) -> Result<Self> {
        let copies = CheckedCopies::new(cache_dir, DEFAULT_COPY_BYTES)?;
        Ok(BucketSegments {
            bucket,
            healthy: healthy
                .into_iter()
                .map(|s| (Path::from(s.rel.as_str()), s))
                .collect(),
            copies,
            refused,
            listed_at: Utc::now(),
        })
    }

    /// Where a segment of the bucket is named in warnings: its full `s3://` URL.
    pub fn shown_path(bucket: &Bucket, rel: &str) -> PathBuf {
        PathBuf::from(format!("{}/{rel}", bucket.url()))
    }

    fn allowed(&self, location: &Path) -> object_store::Result<&VouchedSegment> {
        self.healthy
            .get(location)
            .ok_or_else(|| object_store::Error::NotFound {
                path: location.to_string(),
                source: "not a segment any host's manifest vouches for".into(),
            })
    }

    fn below<'a>(&'a self, prefix: Option<&'a Path>) -> impl Iterator<Item = ObjectMeta> + 'a {
        self.healthy
            .iter()
            .filter(move |(location, _)| prefix.is_none_or(|p| location.prefix_matches(p)))
            .map(|(location, seg)| ObjectMeta {
                location: location.clone(),
                last_modified: self.listed_at,
                size: seg.bytes,
                e_tag: None,
                version: None,
            })
    }

    /// Records `seg` as refused for `reason` and gives the error the engine sees.
    fn refuse(&self, location: &Path, seg: &VouchedSegment, reason: String) -> object_store::Error {
        let skipped = Skipped {
            path: Self::shown_path(&self.bucket, &seg.rel),
            reason: reason.clone(),
        };
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        if !refused.contains(&skipped) {
            refused.push(skipped);
        }
        object_store::Error::NotFound {
            path: location.to_string(),
            source: format!("refused: {reason}").into(),
        }
    }

    /// The checked local copy of `seg` (downloaded whole and checked the first time).
    async fn fetch(&self, location: &Path, seg: &VouchedSegment) -> object_store::Result<PathBuf> {
        match self.copies.copy_of(seg, &self.bucket).await {
            Ok(Ok(copy)) => Ok(copy),
            Ok(Err(unusable)) => Err(self.refuse(location, seg, seg.refusal(&unusable))),
            Err(e) => Err(generic(location, e)),
        }
    }
}

quarry_bucket::read_only_object_store!(BucketSegments, read_only, {
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let seg = self.allowed(location)?.clone();
        let copy = self.fetch(location, &seg).await?;
        let copy = Path::from_absolute_path(&copy).map_err(|e| generic(location, e))?;
        let mut result = LocalFileSystem::new().get_opts(&copy, options).await?;
        result.meta.location = location.clone();
        Ok(result)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        list_sorted(self.below(prefix))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        Ok(list_with_delimiter_below(self.below(prefix), prefix))
    }
});
