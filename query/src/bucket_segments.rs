//! What the engine is allowed to see of a bucket (`--store s3://BUCKET/PREFIX`): the segments
//! each host's manifest vouches for, each downloaded whole and hash-checked before a byte of
//! it is used, read-only.
//!
//! The list comes from [`quarry_bucket::vouched_segments`] (per host, the live segments of its
//! manifest chunks' verified prefix), never from listing the bucket, so an object nobody vouches for is
//! never seen. [`BucketSegments`] is the object store DataFusion reads through: `list` answers
//! from that list; the first read of a segment downloads the whole object, checks its size and
//! SHA-256 against the manifest and keeps the checked copy in the session's private directory;
//! every read is then served from that copy, so the bytes the engine decodes are the bytes that
//! were hashed (an object rewritten in the bucket afterwards is not read). An object whose hash
//! differs is refused and reported, as a local store's altered segment is. Every write, copy
//! and delete is refused.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::{BoxStream, StreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use quarry_bucket::{Bucket, VouchedSegment};

use crate::segments::{Skipped, generic, list_sorted, list_with_delimiter_below, read_only};
use crate::{QueryError, Result};

/// The read-only view of a bucket's vouched segments that DataFusion reads through.
pub struct BucketSegments {
    bucket: Bucket,
    healthy: HashMap<Path, VouchedSegment>,
    /// Checked copies, named by their SHA-256.
    cache: LocalFileSystem,
    cache_dir: PathBuf,
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
        std::fs::create_dir_all(cache_dir).map_err(|e| QueryError::io(cache_dir, e))?;
        let cache = LocalFileSystem::new_with_prefix(cache_dir)
            .map_err(|e| QueryError::io(cache_dir, std::io::Error::other(e.to_string())))?;
        Ok(BucketSegments {
            bucket,
            healthy: healthy
                .into_iter()
                .map(|s| (Path::from(s.rel.as_str()), s))
                .collect(),
            cache,
            cache_dir: cache_dir.to_path_buf(),
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

    /// Downloads `seg`, checks it against its manifest entry and keeps the checked copy at
    /// `copy`.
    async fn fetch(
        &self,
        location: &Path,
        seg: &VouchedSegment,
        copy: &FsPath,
    ) -> object_store::Result<()> {
        let data = match seg.fetch_checked(&self.bucket).await {
            Ok(Ok(data)) => data,
            Ok(Err(unusable)) => return Err(self.refuse(location, seg, seg.refusal(&unusable))),
            Err(e) => return Err(generic(location, e)),
        };
        let dir = self.cache_dir.clone();
        let copy = copy.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
            tmp.write_all(&data)?;
            tmp.persist(&copy).map_err(|e| e.error)?;
            Ok::<_, std::io::Error>(())
        })
        .await
        .map_err(|e| generic(location, e))?
        .map_err(|e| generic(location, e))
    }
}

#[async_trait]
impl ObjectStore for BucketSegments {
    async fn put_opts(
        &self,
        _location: &Path,
        _payload: PutPayload,
        _opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        Err(read_only())
    }

    async fn put_multipart_opts(
        &self,
        _location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Err(read_only())
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let seg = self.allowed(location)?.clone();
        // The hash names the copy: it is hex from a manifest that verified, but a copy's name
        // must never be able to leave the directory.
        if seg.sha256.len() != 64 || !seg.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(self.refuse(location, &seg, "its manifest hash is not SHA-256".into()));
        }
        let name = format!("{}.parquet", seg.sha256);
        let copy = self.cache_dir.join(&name);
        if !copy.is_file() {
            self.fetch(location, &seg, &copy).await?;
        }
        let mut result = self.cache.get_opts(&Path::from(name), options).await?;
        result.meta.location = location.clone();
        Ok(result)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        locations.map(|_| Err(read_only())).boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        list_sorted(self.below(prefix))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        Ok(list_with_delimiter_below(self.below(prefix), prefix))
    }

    async fn copy_opts(
        &self,
        _from: &Path,
        _to: &Path,
        _options: CopyOptions,
    ) -> object_store::Result<()> {
        Err(read_only())
    }
}
