//! What the engine is allowed to see of a store: the segments the manifest vouches for,
//! hash-checked, read-only.
//!
//! [`scan`] takes the segment list from the store's verified reader
//! ([`quarry_store::verified`]), once per session: segments come from the manifest, never from
//! the directory, and files the manifest does not list, or that are gone, are skipped with a
//! warning naming them. [`SealedSegments`] is the object store DataFusion reads through: it
//! lists only those segments, checks each one's hash the first time the process opens it
//! (cached by the store crate, so a session re-reading a file does not hash it again), serves
//! bytes only from the file it checked, and refuses every write, copy and delete, so no
//! statement can read planted rows or change evidence even if it got past the SQL guard.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};

use futures::stream::{BoxStream, StreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{GetOptions, GetResult, GetResultPayload, ListResult, ObjectMeta};
use quarry_store::Store;
use quarry_store::verified::{self, Listed};

use crate::{QueryError, Result};

/// A segment left out of the session, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// The warning a command prints for it (the path and the reason escaped: both can come from
/// whoever wrote into the store).
impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "skipped segment {}: {} (run `quarry verify` to check the store)",
            quarry_store::text::printable(&self.path.display().to_string()),
            quarry_store::text::printable(&self.reason)
        )
    }
}

impl From<verified::Skipped> for Skipped {
    fn from(s: verified::Skipped) -> Skipped {
        Skipped {
            path: s.path,
            reason: s.refusal.to_string(),
        }
    }
}

/// The result of listing a store: the segments the engine may read and the ones it may not.
#[derive(Debug, Default)]
pub struct Scan {
    /// Keyed by path relative to the store root, `/`-separated, as the object store names
    /// them.
    pub healthy: HashMap<Path, Listed>,
    pub skipped: Vec<Skipped>,
}

/// Lists the segments of `store` the manifest vouches for (see the module docs).
pub fn scan(store: &Store) -> Result<Scan> {
    let listing = store.verified_listing()?;
    let mut out = Scan {
        skipped: listing.skipped.into_iter().map(Skipped::from).collect(),
        ..Scan::default()
    };
    for seg in listing.segments {
        out.healthy.insert(object_path(&seg.rel)?, seg);
    }
    Ok(out)
}

fn object_path(rel: &str) -> Result<Path> {
    Path::parse(rel).map_err(|e| QueryError::Refused(format!("segment path {rel}: {e}")))
}

/// The read-only view of a store's healthy segments that DataFusion reads through.
#[derive(Debug)]
pub struct SealedSegments {
    inner: LocalFileSystem,
    healthy: Arc<HashMap<Path, Listed>>,
    /// Segments refused when opened (their content no longer matches the manifest), for the
    /// session to leave out and warn about.
    refused: Arc<Mutex<Vec<Skipped>>>,
    root: PathBuf,
}

impl SealedSegments {
    /// Serves `healthy` from the store at `root`; refusals found while reading are pushed to
    /// `refused`.
    pub fn new(
        root: &FsPath,
        healthy: HashMap<Path, Listed>,
        refused: Arc<Mutex<Vec<Skipped>>>,
    ) -> Result<Self> {
        let inner = LocalFileSystem::new_with_prefix(root)
            .map_err(|e| QueryError::io(root, std::io::Error::other(e.to_string())))?;
        Ok(SealedSegments {
            inner,
            healthy: Arc::new(healthy),
            refused,
            root: root.to_path_buf(),
        })
    }

    fn allowed(&self, location: &Path) -> object_store::Result<&Listed> {
        self.healthy
            .get(location)
            .ok_or_else(|| object_store::Error::NotFound {
                path: location.to_string(),
                source: "not a segment the store manifest vouches for".into(),
            })
    }

    /// Objects below `prefix` (a directory: whole path components), from the manifest.
    fn below<'a>(
        &'a self,
        prefix: Option<&'a Path>,
    ) -> impl Iterator<Item = (&'a Path, &'a Listed)> {
        self.healthy
            .iter()
            .filter(move |(location, _)| match prefix {
                None => true,
                Some(p) => location.prefix_matches(p),
            })
    }
}

fn meta_of(location: &Path, seg: &Listed) -> ObjectMeta {
    ObjectMeta {
        location: location.clone(),
        last_modified: seg.modified,
        size: seg.bytes,
        e_tag: None,
        version: None,
    }
}

impl fmt::Display for SealedSegments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedSegments({})", self.root.display())
    }
}

pub(crate) fn generic(
    location: &Path,
    e: impl std::error::Error + Send + Sync + 'static,
) -> object_store::Error {
    object_store::Error::Generic {
        store: "quarry store",
        source: format!("{location}: {e}").into(),
    }
}

pub(crate) fn read_only() -> object_store::Error {
    object_store::Error::NotSupported {
        source: "the Quarry store is read-only to queries".into(),
    }
}

quarry_bucket::read_only_object_store!(SealedSegments, read_only, {
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let seg = self.allowed(location)?.clone();
        let result = self.inner.get_opts(location, options).await?;
        // The bytes served come from this open file: check that it is the sealed segment
        // (hashed the first time in this process, then by fstat against the cache).
        let GetResultPayload::File(file, _) = &result.payload else {
            return Err(object_store::Error::NotSupported {
                source: "segments are served only from local files".into(),
            });
        };
        let file = file.try_clone().map_err(|e| generic(location, e))?;
        let checked = seg.clone();
        let verdict = tokio::task::spawn_blocking(move || verified::check(&checked, &file))
            .await
            .map_err(|e| generic(location, e))?
            .map_err(|e| generic(location, e))?;
        match verdict {
            Ok(()) => Ok(result),
            Err(refusal) => {
                let skipped = Skipped {
                    path: seg.path.clone(),
                    reason: refusal.to_string(),
                };
                let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
                if !refused.contains(&skipped) {
                    refused.push(skipped);
                }
                Err(object_store::Error::NotFound {
                    path: location.to_string(),
                    source: format!("refused: {refusal}").into(),
                })
            }
        }
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        list_sorted(self.below(prefix).map(|(l, s)| meta_of(l, s)))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        Ok(list_with_delimiter_below(
            self.below(prefix).map(|(l, s)| meta_of(l, s)),
            prefix,
        ))
    }
});

/// `metas` (the objects below a prefix) as [`ObjectStore::list`] gives them: in key order.
pub(crate) fn list_sorted(
    metas: impl Iterator<Item = ObjectMeta>,
) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
    let mut metas: Vec<ObjectMeta> = metas.collect();
    metas.sort_by(|a, b| a.location.cmp(&b.location));
    futures::stream::iter(metas.into_iter().map(Ok)).boxed()
}

/// `metas` (the objects below `prefix`) as [`ObjectStore::list_with_delimiter`] gives them:
/// the objects directly in `prefix`, and the directories one level down.
pub(crate) fn list_with_delimiter_below(
    metas: impl Iterator<Item = ObjectMeta>,
    prefix: Option<&Path>,
) -> ListResult {
    let depth = prefix.map(|p| p.parts().count()).unwrap_or(0);
    let mut common_prefixes = std::collections::BTreeSet::new();
    let mut objects = Vec::new();
    for meta in metas {
        let parts: Vec<_> = meta.location.parts().collect();
        if parts.len() == depth + 1 {
            objects.push(meta);
        } else if parts.len() > depth + 1 {
            common_prefixes.insert(Path::from_iter(parts.into_iter().take(depth + 1)));
        }
    }
    objects.sort_by(|a, b| a.location.cmp(&b.location));
    ListResult {
        common_prefixes: common_prefixes.into_iter().collect(),
        objects,
    }
}
