//! A fleet's stores in one S3-compatible bucket: what a bucket holds, uploading a store to it
//! and verifying it.
//!
//! A bucket holds the store layout of every host that uploads to it, so any Parquet engine
//! reads the fleet as one Hive-partitioned data set:
//!
//! ```text
//! <prefix>/<table>/dt=YYYY-MM-DD/hour=HH/host=<host>/<segment>.parquet   sealed segments
//! <prefix>/_manifest/host=<host>/<first>-<last>.jsonl                    each host's manifest,
//!                                                                        in chunks
//! ```
//!
//! The keys come from the store's layout ([`quarry_store::layout::bucket_segment_key`],
//! [`quarry_store::layout::bucket_manifest_key`]). Every object is written create-only (a
//! conditional PUT): an upload never replaces what a bucket holds, and what it wrote is read
//! back and hashed against the store's manifest before it counts as uploaded. Each upload
//! adds the manifest entries the bucket lacks as one chunk, written only after every segment
//! they add is in the bucket, so a chunk vouches for objects that are there; a host's
//! manifest is its chunks put together ([`manifest`]).
//!
//! This crate must not write to a store (the binary records the upload as an action) and
//! must not trust an object it did not hash: verification ([`verify::verify_bucket`]) reads
//! every object back, and what engines may read ([`read::vouched_segments`]) comes with the
//! hash each object must have.

pub mod copies;
pub mod manifest;
pub mod read;
pub mod read_only;
pub mod upload;
pub mod verify;

use std::fmt;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use sha2::{Digest, Sha256};

pub use copies::CheckedCopies;
pub use read::{LeftOut, Unusable, Vouched, VouchedSegment, vouched_segments};
pub use upload::{Shipped, UploadProgress, UploadReport, upload_new, upload_store};
pub use verify::{BucketReport, HostReport, verify_bucket};

/// Errors of reaching or using a bucket.
#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    /// The `s3://` URL is not one this tool takes.
    #[error("{url:?} is not a bucket URL: {reason} (expected s3://BUCKET or s3://BUCKET/PREFIX)")]
    BadUrl { url: String, reason: String },

    /// The S3 client could not be configured from the environment.
    #[error(
        "cannot configure the S3 client for {url}; set AWS_ENDPOINT_URL (and AWS_ALLOW_HTTP=true \
         for a plain-http server), AWS_REGION and credentials (AWS_ACCESS_KEY_ID, \
         AWS_SECRET_ACCESS_KEY)"
    )]
    Configure {
        url: String,
        source: object_store::Error,
    },

    /// A request to the bucket failed.
    #[error("bucket request for {key} failed")]
    Request {
        key: String,
        source: object_store::Error,
    },

    /// A checked copy of a segment could not be kept on local disk.
    #[error("keeping a checked copy at {}", path.display())]
    LocalCopy {
        path: std::path::PathBuf,
        source: std::io::Error,
    },

    /// Reading the local store failed.
    #[error("reading the store")]
    Store(#[from] quarry_store::StoreError),
}

pub type Result<T, E = BucketError> = std::result::Result<T, E>;

/// A bucket URL: `s3://BUCKET/PREFIX` (the prefix may be empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketUrl {
    pub bucket: String,
    /// Without leading or trailing `/`.
    pub prefix: String,
}

impl BucketUrl {
    /// Parses `s3://BUCKET[/PREFIX]`.
    pub fn parse(text: &str) -> Result<BucketUrl> {
        let bad = |reason: &str| BucketError::BadUrl {
            url: text.to_string(),
            reason: reason.to_string(),
        };
        let rest = text
            .strip_prefix("s3://")
            .ok_or_else(|| bad("only s3:// URLs are supported"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("the bucket name is empty"));
        }
        let prefix = prefix.trim_matches('/');
        if prefix
            .split('/')
            .any(|part| part == "." || part == ".." || (part.is_empty() && !prefix.is_empty()))
        {
            return Err(bad("the prefix must be plain path components"));
        }
        Ok(BucketUrl {
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }

    /// Whether `text` names a bucket rather than a local directory.
    pub fn is_bucket(text: &str) -> bool {
        text.starts_with("s3://")
    }

    /// The bucket a `--store` names, when it names one (`s3://...`) rather than a directory:
    /// the one place that tells the two apart.
    pub fn of_store(store: &std::path::Path) -> Result<Option<BucketUrl>> {
        match store.to_str() {
            Some(text) if BucketUrl::is_bucket(text) => BucketUrl::parse(text).map(Some),
            _ => Ok(None),
        }
    }
}

impl fmt::Display for BucketUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// An open bucket: the client and where below the bucket the fleet's layout starts.
#[derive(Debug, Clone)]
pub struct Bucket {
    url: BucketUrl,
    objects: Arc<dyn ObjectStore>,
}

impl Bucket {
    /// Connects with the usual AWS environment (`AmazonS3Builder::from_env`): endpoint
    /// (`AWS_ENDPOINT_URL`, path-style requests unless `AWS_VIRTUAL_HOSTED_STYLE_REQUEST`),
    /// `AWS_ALLOW_HTTP`, region and credentials. Nothing is sent until the first request.
    pub fn from_env(url: &BucketUrl) -> Result<Bucket> {
        Bucket::configure(url, &[], object_store::RetryConfig::default())
    }

    /// [`Bucket::from_env`] with `settings` (named as the environment names them, e.g.
    /// `AWS_ENDPOINT_URL`) over the environment's: for a program that talks to a server of its
    /// own (a benchmark, a test) without changing its process environment.
    pub fn from_env_with(url: &BucketUrl, settings: &[(&str, String)]) -> Result<Bucket> {
        Bucket::configure(url, settings, object_store::RetryConfig::default())
    }

    /// [`Bucket::from_env_with`], the client retrying a failed request at most `retries` times
    /// within `timeout` (the default retries one request for up to 3 minutes; an uploader with
    /// a backoff of its own wants to hear of an unreachable bucket sooner).
    pub fn from_env_with_retries(
        url: &BucketUrl,
        settings: &[(&str, String)],
        retries: usize,
        timeout: std::time::Duration,
    ) -> Result<Bucket> {
        let retry = object_store::RetryConfig {
            max_retries: retries,
            retry_timeout: timeout,
            ..object_store::RetryConfig::default()
        };
        Bucket::configure(url, settings, retry)
    }

    fn configure(
        url: &BucketUrl,
        settings: &[(&str, String)],
        retry: object_store::RetryConfig,
    ) -> Result<Bucket> {
        let configure = |source| BucketError::Configure {
            url: url.to_string(),
            source,
        };
        let mut builder = AmazonS3Builder::from_env().with_retry(retry);
        for (name, value) in settings {
            builder =
                builder.with_config(name.to_ascii_lowercase().parse().map_err(configure)?, value);
        }
        let objects = builder
            .with_bucket_name(&url.bucket)
            .build()
            .map_err(configure)?;
        Ok(Bucket::with_objects(url.clone(), Arc::new(objects)))
    }

    /// A bucket served by `objects` (any object store; tests and engines pass their own).
    pub fn with_objects(url: BucketUrl, objects: Arc<dyn ObjectStore>) -> Bucket {
        Bucket { url, objects }
    }

    pub fn url(&self) -> &BucketUrl {
        &self.url
    }

    /// The client, for engines that read the bucket themselves.
    pub fn objects(&self) -> &Arc<dyn ObjectStore> {
        &self.objects
    }

    /// The object key of `rel` (a path in the fleet layout) below the prefix.
    pub fn key(&self, rel: &str) -> Path {
        if self.url.prefix.is_empty() {
            Path::from(rel)
        } else {
            Path::from(format!("{}/{rel}", self.url.prefix))
        }
    }

    /// `key` relative to the prefix; None when it lies outside it.
    pub fn relative(&self, key: &Path) -> Option<String> {
        let key = key.as_ref();
        if self.url.prefix.is_empty() {
            return Some(key.to_string());
        }
        key.strip_prefix(self.url.prefix.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .map(str::to_string)
    }

    /// Every object below `rel` (a directory of the layout, or "" for all), as keys relative to
    /// the prefix with their sizes.
    pub async fn list(&self, rel: &str) -> Result<Vec<(String, u64)>> {
        let prefix = if rel.is_empty() && self.url.prefix.is_empty() {
            None
        } else if rel.is_empty() {
            Some(Path::from(self.url.prefix.as_str()))
        } else {
            Some(self.key(rel))
        };
        let metas: Vec<_> = self
            .objects
            .list(prefix.as_ref())
            .try_collect()
            .await
            .map_err(|source| BucketError::Request {
                key: prefix.map(|p| p.to_string()).unwrap_or_default(),
                source,
            })?;
        Ok(metas
            .into_iter()
            .filter_map(|m| self.relative(&m.location).map(|r| (r, m.size)))
            .collect())
    }

    /// The whole object at `rel`; None when there is none.
    pub async fn get(&self, rel: &str) -> Result<Option<bytes::Bytes>> {
        let key = self.key(rel);
        let request = |source| BucketError::Request {
            key: key.to_string(),
            source,
        };
        match self.objects.get(&key).await {
            Ok(result) => Ok(Some(result.bytes().await.map_err(request)?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(request(e)),
        }
    }

    /// SHA-256 (hex) and size of the object at `rel`, read back in full; None when absent.
    pub async fn hash(&self, rel: &str) -> Result<Option<(String, u64)>> {
        Ok(self
            .get(rel)
            .await?
            .map(|data| (sha256_hex(&data), data.len() as u64)))
    }
}

/// SHA-256 of `data`, hex (the store manifest's hash).
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_urls_parse_and_refuse_what_is_not_one() {
        let u = BucketUrl::parse("s3://fleet/prod/eu/").unwrap();
        assert_eq!((u.bucket.as_str(), u.prefix.as_str()), ("fleet", "prod/eu"));
        assert_eq!(u.to_string(), "s3://fleet/prod/eu");
        assert_eq!(BucketUrl::parse("s3://fleet").unwrap().prefix, "");
        for bad in [
            "/var/lib/quarry",
            "s3://",
            "s3:///x",
            "s3://b/a/../c",
            "s3://b/a//c",
        ] {
            assert!(BucketUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_store_argument_is_a_bucket_only_with_s3() {
        let of = |p: &str| BucketUrl::of_store(std::path::Path::new(p));
        assert_eq!(
            of("s3://fleet/p").unwrap().unwrap().to_string(),
            "s3://fleet/p"
        );
        assert!(of("/var/lib/quarry/store").unwrap().is_none());
        assert!(of("./s3:/x").unwrap().is_none());
        assert!(of("s3://").is_err());
    }

    #[tokio::test]
    async fn keys_stay_below_the_prefix() {
        let url = BucketUrl::parse("s3://b/fleet").unwrap();
        let bucket = Bucket::with_objects(url, Arc::new(object_store::memory::InMemory::new()));
        let key = bucket.key("net/x.parquet");
        assert_eq!(key.as_ref(), "fleet/net/x.parquet");
        assert_eq!(bucket.relative(&key).unwrap(), "net/x.parquet");
        assert_eq!(bucket.relative(&Path::from("fleetx/net")), None);
    }
}
