//! What the engine is allowed to see of a store: sealed, healthy segments, read-only.
//!
//! [`scan`] walks the store once per session with the store's own layout knowledge and sorts
//! segments into healthy ones and ones to skip (truncated, not Parquet, a half-written tail),
//! so a damaged file costs a warning naming it instead of a failed query. [`SealedSegments`] is
//! the object store DataFusion reads through: it lists only the healthy segments, serves only
//! them, and refuses every write, copy and delete, so no statement can change evidence even if
//! it got past the SQL guard.

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use quarry_store::{Store, Table};

use crate::{QueryError, Result};

/// A segment left out of the session, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// The result of walking a store: the segments the engine may read and the ones it may not.
#[derive(Debug, Default)]
pub struct Scan {
    /// Paths relative to the store root, `/`-separated, as the object store names them.
    pub healthy: HashSet<Path>,
    pub skipped: Vec<Skipped>,
}

/// Walks every table of `store` and checks each segment's Parquet framing.
pub fn scan(store: &Store) -> Result<Scan> {
    let mut out = Scan::default();
    for table in Table::ALL {
        for path in store.segments(table)? {
            match check_framing(&path) {
                Ok(()) => {
                    let rel = path
                        .strip_prefix(store.root())
                        .expect("segments are listed below the store root");
                    out.healthy.insert(object_path(rel)?);
                }
                Err(reason) => out.skipped.push(Skipped { path, reason }),
            }
        }
    }
    Ok(out)
}

fn object_path(rel: &FsPath) -> Result<Path> {
    let text = rel.to_str().ok_or_else(|| {
        QueryError::Refused(format!("segment path {} is not UTF-8", rel.display()))
    })?;
    Path::parse(text).map_err(|e| QueryError::Refused(format!("segment path {text}: {e}")))
}

/// Checks that `path` is framed as a complete Parquet file: magic at both ends and a footer
/// length that fits. A segment cut short by a full disk or a copy fails here, before the
/// engine would fail the whole query on it. Damage inside pages is caught later, by
/// [`crate::Catalog`]'s retry.
pub fn check_framing(path: &FsPath) -> std::result::Result<(), String> {
    const MAGIC: &[u8; 4] = b"PAR1";
    let mut file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len < 12 {
        return Err(format!("truncated: {len} bytes, too short for Parquet"));
    }
    let mut head = [0u8; 4];
    file.read_exact(&mut head).map_err(|e| e.to_string())?;
    let mut tail = [0u8; 8];
    file.seek(SeekFrom::End(-8)).map_err(|e| e.to_string())?;
    file.read_exact(&mut tail).map_err(|e| e.to_string())?;
    if &head != MAGIC {
        return Err("not a Parquet file (no PAR1 magic at the start)".into());
    }
    if &tail[4..] != MAGIC {
        return Err("truncated or damaged: no PAR1 magic at the end".into());
    }
    let footer = u32::from_le_bytes(tail[..4].try_into().expect("4 bytes")) as u64;
    if footer + 12 > len {
        return Err(format!(
            "damaged footer: claims {footer} bytes in a {len}-byte file"
        ));
    }
    Ok(())
}

/// The read-only view of a store's healthy segments that DataFusion reads through.
#[derive(Debug)]
pub struct SealedSegments {
    inner: LocalFileSystem,
    healthy: Arc<HashSet<Path>>,
    root: PathBuf,
}

impl SealedSegments {
    pub fn new(root: &FsPath, healthy: HashSet<Path>) -> Result<Self> {
        let inner = LocalFileSystem::new_with_prefix(root)
            .map_err(|e| QueryError::io(root, std::io::Error::other(e.to_string())))?;
        Ok(SealedSegments {
            inner,
            healthy: Arc::new(healthy),
            root: root.to_path_buf(),
        })
    }

    fn allowed(&self, location: &Path) -> object_store::Result<()> {
        if self.healthy.contains(location) {
            Ok(())
        } else {
            Err(object_store::Error::NotFound {
                path: location.to_string(),
                source: "not a sealed, healthy segment of this store".into(),
            })
        }
    }
}

impl fmt::Display for SealedSegments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedSegments({})", self.root.display())
    }
}

fn read_only() -> object_store::Error {
    object_store::Error::NotSupported {
        source: "the Quarry store is read-only to queries".into(),
    }
}

#[async_trait]
impl ObjectStore for SealedSegments {
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
        self.allowed(location)?;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        locations.map(|_| Err(read_only())).boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let healthy = self.healthy.clone();
        self.inner
            .list(prefix)
            .try_filter(move |meta| futures::future::ready(healthy.contains(&meta.location)))
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let mut listed = self.inner.list_with_delimiter(prefix).await?;
        listed
            .objects
            .retain(|meta| self.healthy.contains(&meta.location));
        Ok(listed)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_names_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short.parquet");
        std::fs::write(&short, b"PAR1").unwrap();
        assert!(check_framing(&short).unwrap_err().contains("truncated"));
        let text = dir.path().join("text.parquet");
        std::fs::write(&text, b"hello, this is not parquet at all").unwrap();
        assert!(
            check_framing(&text)
                .unwrap_err()
                .contains("not a Parquet file")
        );
        let cut = dir.path().join("cut.parquet");
        std::fs::write(&cut, b"PAR1 some pages but the footer is gone").unwrap();
        assert!(
            check_framing(&cut)
                .unwrap_err()
                .contains("no PAR1 magic at the end")
        );
        let lying = dir.path().join("lying.parquet");
        let mut bytes = b"PAR1xxxx".to_vec();
        bytes.extend(1000u32.to_le_bytes());
        bytes.extend(b"PAR1");
        std::fs::write(&lying, bytes).unwrap();
        assert!(
            check_framing(&lying)
                .unwrap_err()
                .contains("damaged footer")
        );
    }
}
