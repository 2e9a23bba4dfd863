//! Where things live in a store: tables, Hive partitions, segment and staging names.
//!
//! This module is the one place that knows the directory layout; everything else asks it.

use std::fmt;
use std::fs;
use std::path::{Component, Path, PathBuf};

use chrono::{DateTime, Datelike, Timelike, Utc};

use crate::{Result, StoreError};

/// File name of the hash-chained manifest at the root of a store.
pub const MANIFEST_FILE: &str = "manifest.jsonl";
/// Directory where segments are written before they are sealed into their partition.
pub const STAGING_DIR: &str = ".staging";
/// Live status of the recorder writing to the store, replaced every second.
pub const STATUS_FILE: &str = ".status.json";
/// Extension of sealed segments; readers list only these.
pub const SEGMENT_EXTENSION: &str = "parquet";

/// Mode of every directory the store creates: the owner (root) writes, the store's group reads
/// (read-only analysts, see [`Store::share_with_group`]), nobody else gets in. Segments hold
/// argv, paths and addresses of everything on the node.
pub const DIR_MODE: u32 = 0o750;
/// Mode of every file the store creates (segments, manifest, holds): see [`DIR_MODE`].
pub const FILE_MODE: u32 = 0o640;

/// Creates `dir` and any missing parents with [`DIR_MODE`] (narrowed by the umask).
pub fn create_private_dirs(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

/// The tables of a store. Each is a top-level directory holding Hive partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// Process lifecycle: fork, exec (with argv and credentials), exit (with code or signal),
    /// and privilege and escape signals (setuid, capset, ptrace, mount, unshare, setns, ...).
    Process,
    /// File activity: open, create, unlink, rename, chmod, chown, mkdir, link, truncate.
    File,
    /// Network activity: connect, accept, bind, listen, TCP state changes.
    Net,
    /// The raw syscall stream (number, name, result), when enabled.
    Syscall,
    /// Where evidence is missing: records lost per CPU and interval.
    Gap,
    /// Every responder action (isolate, release, snapshot, export): who, what, when, result.
    Action,
    /// The containers the recorder attributed rows to, with when they were first and last seen.
    Container,
    /// A container's root filesystem as it was when a baseline was taken: one row per entry,
    /// with its SHA-256; what `quarry drift` compares a plain rootfs with.
    Baseline,
    /// What the recorder's live detection raised: one row per alert, naming the row behind it.
    Alert,
    /// What a container was allowed to do (least-privilege findings), judged when the recorder
    /// first saw it and again whenever that changed.
    Posture,
}

impl Table {
    /// Every table, in the order they are listed to users.
    pub const ALL: [Table; 10] = [
        Table::Process,
        Table::File,
        Table::Net,
        Table::Syscall,
        Table::Gap,
        Table::Action,
        Table::Container,
        Table::Baseline,
        Table::Alert,
        Table::Posture,
    ];

    /// The table's position in [`Table::ALL`] (declaration order), for per-table arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The table's name, which is also its directory name and its SQL name.
    pub fn name(self) -> &'static str {
        match self {
            Table::Process => "process",
            Table::File => "file",
            Table::Net => "net",
            Table::Syscall => "syscall",
            Table::Gap => "gap",
            Table::Action => "action",
            Table::Container => "container",
            Table::Baseline => "baseline",
            Table::Alert => "alert",
            Table::Posture => "posture",
        }
    }

    /// Looks a table up by name.
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One Hive partition of a table: an hour of one host's recording.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition {
    pub table: Table,
    /// Start of the hour (UTC) the rows fall in.
    pub hour: DateTime<Utc>,
    pub host: String,
}

impl Partition {
    /// The partition holding a row recorded at `time` on `host`.
    pub fn for_time(table: Table, time: DateTime<Utc>, host: &str) -> Partition {
        let hour = time
            .with_minute(0)
            .and_then(|t| t.with_second(0))
            .and_then(|t| t.with_nanosecond(0))
            .expect("zeroing minutes, seconds and nanoseconds is always valid");
        Partition {
            table,
            hour,
            host: host.to_string(),
        }
    }

    /// The partition's directory relative to the store root, e.g.
    /// `process/dt=2026-11-28/hour=15/host=node1`.
    pub fn relative_dir(&self) -> PathBuf {
        PathBuf::from(self.table.name())
            .join(format!("dt={}", self.dt_value()))
            .join(format!("hour={}", self.hour_value()))
            .join(format!("host={}", sanitize_host(&self.host)))
    }

    /// The `dt=` level's value, as the engines show it in the `dt` column: `2026-11-28`.
    pub fn dt_value(&self) -> String {
        let h = &self.hour;
        format!("{:04}-{:02}-{:02}", h.year(), h.month(), h.day())
    }

    /// The `hour=` level's value, as the engines show it in the `hour` column: `15`.
    pub fn hour_value(&self) -> String {
        format!("{:02}", self.hour.hour())
    }
}

impl Partition {
    /// The partition and file name of a segment from its store-relative path (as the manifest
    /// lists it), e.g. `process/dt=2026-11-28/hour=15/host=node1/x.parquet`. None when the path
    /// is not a segment of the layout this module writes.
    pub fn from_segment_path(rel: &str) -> Option<(Partition, String)> {
        let mut parts = rel.split('/');
        let table = Table::from_name(parts.next()?)?;
        let day = parts.next()?.strip_prefix("dt=")?;
        let hour: u32 = parts.next()?.strip_prefix("hour=")?.parse().ok()?;
        let host = parts.next()?.strip_prefix("host=")?.to_string();
        let name = parts.next()?.to_string();
        if parts.next().is_some() || !name.ends_with(&format!(".{SEGMENT_EXTENSION}")) {
            return None;
        }
        let date = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()?;
        let hour = date.and_hms_opt(hour, 0, 0)?.and_utc();
        Some((Partition { table, hour, host }, name))
    }

    /// End of the partition's hour (exclusive): every row in it is older than this.
    pub fn hour_end(&self) -> DateTime<Utc> {
        self.hour + chrono::Duration::hours(1)
    }
}

/// Directory of a bucket (beside its tables) holding each host's store manifest, in chunks:
/// `_manifest/host=<host>/<first>-<last>.jsonl` holds the manifest's entries (lines, counted
/// from 1) `first` to `last`, one chunk per upload that added entries, create-only (an upload
/// never replaces one). The host's manifest is its chunks concatenated in order from entry 1.
pub const BUCKET_MANIFEST_DIR: &str = "_manifest";

/// Where a store segment (its manifest path `rel`) goes in a bucket shared by many hosts: the
/// same Hive layout, with the `host=` level naming `host` (the uploading store's name in the
/// fleet). None when `rel` is not a segment path of this layout.
pub fn bucket_segment_key(rel: &str, host: &str) -> Option<String> {
    let (mut partition, name) = Partition::from_segment_path(rel)?;
    partition.host = host.to_string();
    Some(format!("{}/{name}", partition.relative_dir().display()))
}

/// A bucket key split into the fleet's prefix and the segment path below it (as
/// [`bucket_segment_key`] made it: `<table>/dt=/hour=/host=/<segment>`), e.g.
/// `fleet/prod/process/dt=2026-11-28/hour=15/host=node1/x.parquet` into `fleet/prod` and the
/// rest. None when the key does not end in a segment path of this layout.
pub fn split_bucket_segment_key(key: &str) -> Option<(&str, &str)> {
    // A segment path is exactly five components; the prefix is what comes before them.
    let mut cut = key.len();
    for _ in 0..5 {
        cut = key[..cut].rfind('/').map_or(0, |i| i);
        if cut == 0 {
            break;
        }
    }
    let (prefix, rel) = if cut == 0 {
        ("", key)
    } else {
        (&key[..cut], &key[cut + 1..])
    };
    if rel.split('/').count() != 5 {
        return None;
    }
    Partition::from_segment_path(rel)?;
    Some((prefix, rel))
}

/// Digits of an entry number in a chunk key: zero-padded so keys sort by their first entry.
const ENTRY_DIGITS: usize = 12;

/// A manifest chunk's key, as [`parse_bucket_manifest_key`] reads it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ManifestChunkKey {
    /// The host as filed in the bucket (already sanitized).
    pub host: String,
    /// The first and last entry (manifest line, from 1) the chunk holds.
    pub first: u64,
    pub last: u64,
}

/// The directory of `host`'s manifest chunks in a bucket (what an uploader lists to learn
/// what the bucket has).
pub fn bucket_manifest_dir(host: &str) -> String {
    format!("{BUCKET_MANIFEST_DIR}/host={}", sanitize_host(host))
}

/// The bucket key of the chunk of `host`'s manifest holding entries `first` to `last`.
pub fn bucket_manifest_key(host: &str, first: u64, last: u64) -> String {
    format!(
        "{}/{first:0w$}-{last:0w$}.jsonl",
        bucket_manifest_dir(host),
        w = ENTRY_DIGITS
    )
}

/// The host and entry range of a bucket manifest key made by [`bucket_manifest_key`]. A whole
/// copy of an earlier release (`<entries>.jsonl`, the first `entries` entries) reads as the
/// chunk from entry 1. None for anything else (a range that is empty or runs backwards, a host
/// component that is not a sanitized name).
pub fn parse_bucket_manifest_key(key: &str) -> Option<ManifestChunkKey> {
    let mut parts = key.split('/');
    if parts.next()? != BUCKET_MANIFEST_DIR {
        return None;
    }
    let host = parts.next()?.strip_prefix("host=")?.to_string();
    let name = parts.next()?.strip_suffix(".jsonl")?;
    if parts.next().is_some() || sanitize_host(&host) != host {
        return None;
    }
    let number = |text: &str| -> Option<u64> {
        if text.len() != ENTRY_DIGITS || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        text.parse().ok()
    };
    let (first, last) = match name.split_once('-') {
        Some((first, last)) => (number(first)?, number(last)?),
        None => (1, number(name)?),
    };
    if first == 0 || last < first {
        return None;
    }
    Some(ManifestChunkKey { host, first, last })
}

/// Makes a host name safe as one path component: anything but `[A-Za-z0-9._-]` becomes `_`, and
/// names made only of dots (`.`, `..`) are prefixed so they can never mean a parent directory.
pub fn sanitize_host(host: &str) -> String {
    let mut s: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.chars().all(|c| c == '.') {
        s.insert(0, '_');
    }
    s
}

/// A store rooted at a directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens an existing store (or a directory that will become one) without touching it.
    pub fn at(root: impl Into<PathBuf>) -> Store {
        Store { root: root.into() }
    }

    /// Creates the store directory if needed and checks it can be written, so a recorder fails
    /// before it loads anything rather than at its first seal.
    pub fn create(root: impl Into<PathBuf>) -> Result<Store> {
        let store = Store::at(root);
        let unwritable = |source| StoreError::Unwritable {
            path: store.root.clone(),
            source,
        };
        create_private_dirs(&store.root).map_err(unwritable)?;
        refuse_symlink(&store.root.join(STAGING_DIR))?;
        create_private_dirs(&store.staging_dir()).map_err(unwritable)?;
        let probe = store
            .staging_dir()
            .join(format!(".probe-{}", std::process::id()));
        fs::write(&probe, b"").map_err(unwritable)?;
        fs::remove_file(&probe).map_err(unwritable)?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn manifest_path(&self) -> PathBuf {
        self.root.join(MANIFEST_FILE)
    }

    /// Where a running recorder publishes its live status (`quarry status` reads it).
    pub fn status_path(&self) -> PathBuf {
        self.root.join(STATUS_FILE)
    }

    pub fn staging_dir(&self) -> PathBuf {
        self.root.join(STAGING_DIR)
    }

    pub fn table_dir(&self, table: Table) -> PathBuf {
        self.root.join(table.name())
    }

    /// Where the segment with relative path `rel` waits while it is being sealed. The name is a
    /// pure function of `rel` so an interrupted seal can be matched to its manifest entry.
    pub fn staging_path_for(&self, rel: &str) -> PathBuf {
        self.staging_dir()
            .join(format!("{}.partial", rel.replace('/', "+")))
    }

    /// Resolves a manifest-relative path, refusing anything that could leave the store.
    pub fn resolve(&self, rel: &str) -> Result<PathBuf> {
        let p = Path::new(rel);
        let ok = !rel.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
        if !ok {
            return Err(StoreError::UnsafePath {
                path: p.to_path_buf(),
                reason: "a store path must be relative and must not contain '..'".into(),
            });
        }
        Ok(self.root.join(p))
    }
}

impl Store {
    /// Lets the members of group `gid` read the store (read-only analysts): every directory,
    /// segment and the manifest get that group, without following a symlink, and directories
    /// get the setgid bit so what the recorder creates later inherits the group. Modes stay
    /// [`DIR_MODE`] and [`FILE_MODE`]: the group reads, only the owner writes. Returns how many
    /// entries were changed.
    pub fn share_with_group(&self, gid: u32) -> Result<u64> {
        fn walk(path: &Path, gid: u32, changed: &mut u64) -> Result<()> {
            let meta = fs::symlink_metadata(path).map_err(|e| StoreError::io(path, e))?;
            let ft = meta.file_type();
            if ft.is_symlink() {
                return Err(StoreError::UnsafePath {
                    path: path.to_path_buf(),
                    reason: "it is a symlink; the store never follows symlinks".into(),
                });
            }
            let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
                .map_err(|e| StoreError::io(path, std::io::Error::other(e)))?;
            // SAFETY: a valid C string; lchown never follows a symlink.
            if unsafe { libc::lchown(c.as_ptr(), u32::MAX, gid) } != 0 {
                return Err(StoreError::io(path, std::io::Error::last_os_error()));
            }
            use std::os::unix::fs::PermissionsExt;
            let mode = if ft.is_dir() {
                DIR_MODE | 0o2000
            } else {
                FILE_MODE
            };
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .map_err(|e| StoreError::io(path, e))?;
            *changed += 1;
            if ft.is_dir() {
                for item in fs::read_dir(path).map_err(|e| StoreError::io(path, e))? {
                    let item = item.map_err(|e| StoreError::io(path, e))?;
                    walk(&item.path(), gid, changed)?;
                }
            }
            Ok(())
        }
        let mut changed = 0;
        walk(&self.root, gid, &mut changed)?;
        Ok(changed)
    }
}

/// Builds a segment's file name. It sorts by seal time and is unique per recorder run.
pub fn segment_file_name(sealed_at: DateTime<Utc>, run_id: u32, seq: u64) -> String {
    format!(
        "{}-{run_id:08x}-{seq:06}.{SEGMENT_EXTENSION}",
        sealed_at.format("%Y%m%dT%H%M%S%.6fZ")
    )
}

/// Fails if `path` exists and is a symlink: evidence is never written through one.
pub fn refuse_symlink(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(StoreError::UnsafePath {
            path: path.to_path_buf(),
            reason: "it is a symlink; the store never follows symlinks".into(),
        }),
        _ => Ok(()),
    }
}

/// Creates `rel` (a directory relative to `root`) one component at a time, refusing symlinks on
/// the way, and fsyncs each directory it creates together with its parent so the new entry
/// survives a crash.
pub fn create_dir_durable(root: &Path, rel: &Path) -> Result<PathBuf> {
    let mut dir = root.to_path_buf();
    for comp in rel.components() {
        let Component::Normal(name) = comp else {
            return Err(StoreError::UnsafePath {
                path: rel.to_path_buf(),
                reason: "partition directories must be plain relative names".into(),
            });
        };
        let parent = dir.clone();
        dir.push(name);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => {
                return Err(StoreError::UnsafePath {
                    path: dir,
                    reason: "expected a directory (symlinks are refused)".into(),
                });
            }
            Err(_) => {
                match create_private_dirs(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(StoreError::io(&dir, e)),
                }
                fsync_dir(&parent)?;
            }
        }
    }
    Ok(dir)
}

/// fsyncs a directory so renames and creations inside it are durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn index_is_position_in_all() {
        for (i, t) in Table::ALL.iter().enumerate() {
            assert_eq!(t.index(), i);
        }
    }

    #[test]
    fn bucket_keys_split_into_prefix_and_segment_path() {
        let rel = "process/dt=2026-11-28/hour=15/host=node1/x.parquet";
        assert_eq!(split_bucket_segment_key(rel), Some(("", rel)));
        let key = format!("fleet/prod/{rel}");
        assert_eq!(split_bucket_segment_key(&key), Some(("fleet/prod", rel)));
        // A table name deeper in the prefix does not confuse it: the last five components.
        let key = format!("process/dt=2026-11-28/{rel}");
        assert_eq!(
            split_bucket_segment_key(&key),
            Some(("process/dt=2026-11-28", rel))
        );
        for bad in [
            "process/dt=2026-11-28/hour=15/x.parquet",
            "fleet/process/dt=2026-11-28/hour=15/host=node1/x.txt",
            "fleet/_manifest/host=node1/000000000001-000000000002.jsonl",
            "/process/dt=2026-11-28/hour=15/host=node1",
            "",
        ] {
            assert_eq!(split_bucket_segment_key(bad), None, "{bad}");
        }
        let (p, _) = Partition::from_segment_path(rel).unwrap();
        assert_eq!(
            (p.dt_value(), p.hour_value()),
            ("2026-11-28".into(), "15".into())
        );
    }

    #[test]
    fn partition_dir_is_hive_layout() {
        let t = Utc.with_ymd_and_hms(2026, 11, 28, 15, 47, 12).unwrap();
        let p = Partition::for_time(Table::Process, t, "node-1");
        assert_eq!(
            p.hour,
            Utc.with_ymd_and_hms(2026, 11, 28, 15, 0, 0).unwrap()
        );
        assert_eq!(
            p.relative_dir(),
            PathBuf::from("process/dt=2026-11-28/hour=15/host=node-1")
        );
    }

    #[test]
    fn segment_paths_parse_back_into_partitions() {
        let t = Utc.with_ymd_and_hms(2026, 11, 28, 15, 47, 12).unwrap();
        let p = Partition::for_time(Table::Net, t, "node-1");
        let rel = format!("{}/x-1.parquet", p.relative_dir().display());
        let (back, name) = Partition::from_segment_path(&rel).unwrap();
        assert_eq!((back, name.as_str()), (p.clone(), "x-1.parquet"));
        assert_eq!(
            p.hour_end(),
            Utc.with_ymd_and_hms(2026, 11, 28, 16, 0, 0).unwrap()
        );
        assert!(Partition::from_segment_path("net/dt=2026-11-28/hour=15/x.parquet").is_none());
        assert!(
            Partition::from_segment_path("nope/dt=2026-11-28/hour=15/host=a/x.parquet").is_none()
        );
        assert!(Partition::from_segment_path(&format!("{rel}/extra")).is_none());
    }

    #[test]
    fn bucket_keys_name_the_uploading_host() {
        let rel = "net/dt=2026-11-28/hour=15/host=node-1/x-1.parquet";
        assert_eq!(
            bucket_segment_key(rel, "edge/7").unwrap(),
            "net/dt=2026-11-28/hour=15/host=edge_7/x-1.parquet"
        );
        assert!(bucket_segment_key("net/x.parquet", "a").is_none());
        let key = bucket_manifest_key("node-1", 43, 1042);
        assert_eq!(key, "_manifest/host=node-1/000000000043-000000001042.jsonl");
        let chunk = |host: &str, first, last| {
            Some(ManifestChunkKey {
                host: host.into(),
                first,
                last,
            })
        };
        assert_eq!(parse_bucket_manifest_key(&key), chunk("node-1", 43, 1042));
        // A whole copy of an earlier release: the chunk from entry 1.
        assert_eq!(
            parse_bucket_manifest_key("_manifest/host=n/000000000042.jsonl"),
            chunk("n", 1, 42)
        );
        for bad in [
            "_manifest/host=../000000000001.jsonl",
            "_manifest/host=n/000000000000.jsonl",
            "_manifest/host=n/000000000005-000000000004.jsonl",
            "_manifest/host=n/000000000000-000000000004.jsonl",
            "_manifest/host=n/1-4.jsonl",
            "_manifest/host=n/+00000000001-000000000004.jsonl",
            "_manifest/host=n/000000000001-000000000004.json",
            "_manifest/host=n/x/000000000001-000000000004.jsonl",
        ] {
            assert_eq!(parse_bucket_manifest_key(bad), None, "{bad}");
        }
        assert_eq!(parse_bucket_manifest_key("net/host=a/1.jsonl"), None);
    }

    #[test]
    fn hostile_host_names_stay_one_component() {
        assert_eq!(sanitize_host("../../etc"), ".._.._etc");
        assert_eq!(sanitize_host(".."), "_..");
        assert_eq!(sanitize_host(""), "_");
        assert_eq!(sanitize_host("a/b c"), "a_b_c");
    }

    #[test]
    fn resolve_refuses_escapes() {
        let s = Store::at("/tmp/store");
        assert!(s.resolve("../x").is_err());
        assert!(s.resolve("/etc/passwd").is_err());
        assert!(s.resolve("process/a/../../x").is_err());
        assert_eq!(
            s.resolve("process/x.parquet").unwrap(),
            PathBuf::from("/tmp/store/process/x.parquet")
        );
    }

    #[test]
    fn segment_names_sort_by_time() {
        let a = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 1).unwrap();
        let b = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 2).unwrap();
        assert!(segment_file_name(a, 7, 9) < segment_file_name(b, 1, 0));
        assert!(segment_file_name(a, 7, 9).ends_with(".parquet"));
    }

    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn sealed_store(root: &Path) -> (Store, PathBuf) {
        use crate::schema::{ActionRow, action_batch};
        let store = Store::create(root.join("store")).unwrap();
        let row = ActionRow {
            time: Utc::now(),
            action: "isolate".into(),
            actor: "uid 0".into(),
            container_id: None,
            container_name: None,
            reason: None,
            detail: None,
            result: "ok".into(),
            error: None,
            command: "quarry isolate".into(),
        };
        let p = Partition::for_time(Table::Action, row.time, "h");
        let seg = store.seal(&p, &action_batch("h", &[row]), 1, 0).unwrap();
        (store, seg.path)
    }

    #[test]
    fn a_fresh_store_is_closed_to_other_users() {
        let dir = tempfile::tempdir().unwrap();
        let (store, segment) = sealed_store(dir.path());
        assert_eq!(mode(store.root()), DIR_MODE);
        assert_eq!(mode(&store.staging_dir()), DIR_MODE);
        let mut d = segment.parent().unwrap();
        while d != store.root() {
            assert_eq!(mode(d), DIR_MODE, "{}", d.display());
            d = d.parent().unwrap();
        }
        assert_eq!(mode(&segment), FILE_MODE);
        assert_eq!(mode(&store.manifest_path()), FILE_MODE);
    }

    #[test]
    fn a_store_shared_with_a_group_keeps_new_segments_in_it() {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipping: changing a file's group to one we are not in needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (store, segment) = sealed_store(dir.path());
        let gid = 4217;
        assert!(store.share_with_group(gid).unwrap() >= 6);
        assert_eq!(fs::metadata(&segment).unwrap().gid(), gid);
        assert_eq!(mode(&segment), FILE_MODE);
        assert_eq!(mode(store.root()), DIR_MODE | 0o2000);
        // A segment sealed later, into a new partition, inherits the group.
        let later = Utc::now() + chrono::Duration::hours(3);
        let p = Partition::for_time(Table::Gap, later, "h");
        let batch = crate::schema::gap_batch(
            "h",
            &[crate::schema::GapRow {
                time: later,
                ktime_ns: 1,
                since: later,
                cpu: 0,
                lost: 1,
                reason: crate::schema::GapReason::RingBufferFull,
                lost_table: None,
            }],
        );
        let new = store.seal(&p, &batch, 1, 1).unwrap().path;
        assert_eq!(fs::metadata(&new).unwrap().gid(), gid);
        assert_eq!(fs::metadata(new.parent().unwrap()).unwrap().gid(), gid);
        assert_eq!(mode(&new), FILE_MODE);
        // Symlinks are refused, not followed.
        std::os::unix::fs::symlink("/etc/passwd", segment.with_file_name("x.parquet")).unwrap();
        assert!(store.share_with_group(gid).is_err());
    }
}
