//! What the cluster's servers may read: local files as named, and of a fleet's bucket only the
//! segments a host's manifest vouches for, each hash-checked before a byte of it is decoded.
//!
//! [`FleetObjects`] is the object-store registry of the scheduler (which asks the size of each
//! file a plan names) and of every executor (which reads them). For `s3://BUCKET` it serves a
//! [`VouchedBucket`]: a key is answered only when it is a segment path of the fleet layout
//! (`<prefix>/<table>/dt=/hour=/host=/<segment>`) that the manifest of its host under that
//! prefix lists, read from the bucket by the server itself (so a client cannot name what the
//! manifests do not vouch for, and a forged manifest chunk breaks the hash chain). The first
//! read of a segment downloads the whole object, checks its size and SHA-256 against the
//! manifest and keeps the checked copy in the server's private work directory; every read is
//! then served from that copy, so the bytes decoded are the bytes that were hashed. A segment
//! whose bytes differ is refused with [`refusal`]'s text, which the client recognises and
//! leaves the segment out as the local engine does. Sizes come from the manifest, so the
//! scheduler never downloads a segment. Listing and every write, copy and delete are refused:
//! the cluster cannot alter the evidence it reads, whatever plan it is sent.
//!
//! Endpoint and credentials come from each server's own AWS environment (as `quarry upload`
//! takes them). This module must not serve an object no manifest vouches for, and must not
//! write to a bucket.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use datafusion::error::DataFusionError;
use datafusion::execution::object_store::ObjectStoreRegistry;
use futures::stream::{self, BoxStream, StreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    Attributes, GetOptions, GetResult, GetResultPayload, ListResult, ObjectMeta, ObjectStore,
};
use quarry_bucket::copies::DEFAULT_COPY_BYTES;
use quarry_bucket::{Bucket, BucketUrl, CheckedCopies, VouchedSegment};
use quarry_store::layout::split_bucket_segment_key;
use url::Url;

/// A host's manifest is read again for a key it did not list at most this often (the fleet
/// keeps uploading while the cluster serves queries).
const REREAD_AFTER: Duration = Duration::from_secs(2);

/// The text a refused segment's error carries: the client finds the segment's path in it.
pub fn refusal(rel: &str, reason: &str) -> String {
    format!("refused segment <{rel}>: {reason}")
}

/// The object stores a Ballista server reads through (see the module docs).
pub struct FleetObjects {
    local: Arc<LocalFileSystem>,
    cache_root: PathBuf,
    buckets: Mutex<HashMap<String, Arc<VouchedBucket>>>,
}

impl fmt::Debug for FleetObjects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetObjects")
            .field("cache_root", &self.cache_root)
            .finish()
    }
}

impl FleetObjects {
    /// A registry keeping checked copies under `cache_root` (a private directory of the
    /// server's own).
    pub fn new(cache_root: &FsPath) -> FleetObjects {
        FleetObjects {
            local: Arc::new(LocalFileSystem::new()),
            cache_root: cache_root.to_path_buf(),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn bucket(&self, name: &str) -> datafusion::error::Result<Arc<VouchedBucket>> {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(b) = buckets.get(name) {
            return Ok(b.clone());
        }
        let url = BucketUrl::parse(&format!("s3://{name}"))
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let bucket = Bucket::from_env(&url).map_err(|e| DataFusionError::External(Box::new(e)))?;
        // One directory per bucket, named by a counter: a bucket's name is the client's text.
        let dir = self.cache_root.join(format!("bucket-{}", buckets.len()));
        let vouched = Arc::new(VouchedBucket::new(bucket, &dir)?);
        buckets.insert(name.to_string(), vouched.clone());
        Ok(vouched)
    }
}

impl ObjectStoreRegistry for FleetObjects {
    fn register_store(
        &self,
        url: &Url,
        _store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        // Nothing a session registers replaces what the servers read through.
        log::warn!("ignoring an object store registered for {url}: the fleet's stores are fixed");
        None
    }

    fn get_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        match (url.scheme(), url.host_str()) {
            ("file", _) => {
                let local: Arc<dyn ObjectStore> = self.local.clone();
                Ok(local)
            }
            ("s3", Some(name)) if !name.is_empty() => {
                let bucket: Arc<dyn ObjectStore> = self.bucket(name)?;
                Ok(bucket)
            }
            _ => Err(DataFusionError::Execution(format!(
                "{url}: the cluster reads local files (file://) and fleet buckets (s3://) only"
            ))),
        }
    }
}

/// A bucket as the cluster sees it: the segments its hosts vouch for (see the module docs).
pub struct VouchedBucket {
    bucket: Bucket,
    /// Per fleet prefix: its hosts' vouched segments by path below the prefix, and when they
    /// were read.
    fleets: tokio::sync::Mutex<HashMap<String, Fleet>>,
    copies: CheckedCopies,
    /// What heads give as modification time (when this server first opened the bucket).
    opened_at: DateTime<Utc>,
}

/// One fleet prefix's vouched segments, by path below the prefix, and when they were read.
type Fleet = (HashMap<String, VouchedSegment>, Instant);

impl fmt::Debug for VouchedBucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VouchedBucket({})", self.bucket.url())
    }
}

impl fmt::Display for VouchedBucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VouchedBucket({})", self.bucket.url())
    }
}

impl VouchedBucket {
    fn new(bucket: Bucket, dir: &FsPath) -> datafusion::error::Result<VouchedBucket> {
        Ok(VouchedBucket {
            bucket,
            fleets: tokio::sync::Mutex::new(HashMap::new()),
            copies: CheckedCopies::new(dir, DEFAULT_COPY_BYTES)
                .map_err(|e| DataFusionError::External(Box::new(e)))?,
            opened_at: Utc::now(),
        })
    }

    /// The fleet whose layout starts at `prefix` in this bucket (the same client).
    fn below(&self, prefix: &str) -> Bucket {
        let url = BucketUrl {
            bucket: self.bucket.url().bucket.clone(),
            prefix: prefix.to_string(),
        };
        Bucket::with_objects(url, self.bucket.objects().clone())
    }

    /// The manifest entry vouching for `key`, reading the prefix's manifests again when they
    /// do not list it and were read a while ago.
    async fn vouched(&self, key: &Path) -> object_store::Result<VouchedSegment> {
        let Some((prefix, rel)) = split_bucket_segment_key(key.as_ref()) else {
            return Err(refused(key, "not a segment path of the fleet layout"));
        };
        let mut fleets = self.fleets.lock().await;
        let fresh = |read_at: &Instant| read_at.elapsed() < REREAD_AFTER;
        match fleets.get(prefix) {
            Some((segments, _)) if segments.contains_key(rel) => return Ok(segments[rel].clone()),
            Some((_, read_at)) if fresh(read_at) => {}
            _ => {
                let below = self.below(prefix);
                let vouched = quarry_bucket::vouched_segments(&below)
                    .await
                    .map_err(|e| generic(key, e))?;
                for left in &vouched.left_out {
                    log::warn!("{}/{}: left out: {}", below.url(), left.rel, left.reason);
                }
                let segments = vouched
                    .segments
                    .into_iter()
                    .map(|s| (s.rel.clone(), s))
                    .collect();
                fleets.insert(prefix.to_string(), (segments, Instant::now()));
            }
        }
        fleets
            .get(prefix)
            .and_then(|(segments, _)| segments.get(rel))
            .cloned()
            .ok_or_else(|| {
                refused(
                    key,
                    &refusal(rel, "not a segment its host's manifest vouches for"),
                )
            })
    }

    /// The checked local copy of `seg` (downloaded whole and checked the first time).
    async fn fetch(&self, key: &Path, seg: &VouchedSegment) -> object_store::Result<PathBuf> {
        // `seg.rel` is below the fleet's prefix: read it through a bucket at that prefix.
        let prefix = split_bucket_segment_key(key.as_ref()).map_or("", |(p, _)| p);
        match self.copies.copy_of(seg, &self.below(prefix)).await {
            Ok(Ok(copy)) => Ok(copy),
            Ok(Err(unusable)) => Err(refused(key, &refusal(&seg.rel, &seg.refusal(&unusable)))),
            Err(e) => Err(generic(key, e)),
        }
    }
}

quarry_bucket::read_only_object_store!(VouchedBucket, read_only, {
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let seg = self.vouched(location).await?;
        let meta = ObjectMeta {
            location: location.clone(),
            last_modified: self.opened_at,
            size: seg.bytes,
            e_tag: None,
            version: None,
        };
        if options.head {
            // The size the host sealed: the scheduler plans without downloading anything.
            return Ok(GetResult {
                payload: GetResultPayload::Stream(
                    stream::empty::<object_store::Result<bytes::Bytes>>().boxed(),
                ),
                meta,
                range: 0..seg.bytes,
                attributes: Attributes::default(),
            });
        }
        let copy = self.fetch(location, &seg).await?;
        let file = LocalFileSystem::new();
        let copy_path = Path::from_absolute_path(&copy).map_err(|e| generic(location, e))?;
        let mut result = file.get_opts(&copy_path, options).await?;
        result.meta = meta;
        Ok(result)
    }

    fn list(&self, _prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        // An error, not an empty listing: a plan naming a directory must fail, never read as
        // an empty table.
        stream::once(async { Err(not_listed()) }).boxed()
    }

    async fn list_with_delimiter(
        &self,
        _prefix: Option<&Path>,
    ) -> object_store::Result<ListResult> {
        Err(not_listed())
    }
});

fn refused(location: &Path, text: &str) -> object_store::Error {
    // Not NotFound: a file the listing cannot find is retried as a directory and read as
    // empty; a refused segment must fail the task, naming it.
    object_store::Error::PermissionDenied {
        path: location.to_string(),
        source: text.to_string().into(),
    }
}

fn generic(location: &Path, e: impl fmt::Display) -> object_store::Error {
    object_store::Error::Generic {
        store: "quarry fleet",
        source: format!("{location}: {e}").into(),
    }
}

fn read_only() -> object_store::Error {
    object_store::Error::NotSupported {
        source: "the fleet's bucket is read-only to the cluster".into(),
    }
}

fn not_listed() -> object_store::Error {
    object_store::Error::NotSupported {
        source: "the cluster reads the segments a plan names; it never lists a bucket".into(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn refusals_name_the_segment_for_the_client() {
        let text = refusal("process/dt=2026-11-28/hour=15/host=a/x.parquet", "altered");
        assert!(text.contains("<process/dt=2026-11-28/hour=15/host=a/x.parquet>"));
    }
}
