//! Legal holds: containers and time ranges whose evidence retention must never delete.
//!
//! Holds live in `<store>/holds.json`, rewritten atomically (temporary file, fsync, rename)
//! under the manifest lock, which retention also takes before each batch of deletions: a hold
//! placed while retention runs is seen before anything it covers is deleted. A released hold
//! stays in the file with who released it and when, so the history of holds is kept.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::action::Outcome;
use crate::layout::{self, Partition, Store};
use crate::manifest::{Manifest, ManifestLock};
use crate::schema::ActionRow;
use crate::{Result, StoreError};

/// File name of the holds at the root of a store.
pub const HOLDS_FILE: &str = "holds.json";

/// One legal hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// Short id to name the hold by (`quarry hold --release ID`).
    pub id: String,
    /// The container whose rows are held; None holds every row of the time range.
    pub container_id: Option<String>,
    pub container_name: Option<String>,
    /// Start of the held range (inclusive); None: from the beginning of the recording.
    pub since: Option<DateTime<Utc>>,
    /// End of the held range (exclusive); None: open-ended, including rows still to come.
    pub until: Option<DateTime<Utc>>,
    pub reason: String,
    pub created: DateTime<Utc>,
    pub created_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released: Option<Released>,
}

impl Hold {
    /// The columns of `quarry hold --list` (see [`Hold::row`]).
    pub const COLUMNS: [&'static str; 7] = [
        "ID",
        "CONTAINER",
        "SINCE",
        "UNTIL",
        "PLACED",
        "STATE",
        "REASON",
    ];

    /// The hold as a row under [`Hold::COLUMNS`] (cells unescaped: the table escapes them).
    pub fn row(&self) -> Vec<String> {
        let time = |t: &DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        vec![
            self.id.clone(),
            match (&self.container_name, &self.container_id) {
                (Some(n), _) => n.clone(),
                (None, Some(id)) => quarry_containers::short_id(id).to_string(),
                _ => "(all)".into(),
            },
            self.since.as_ref().map(time).unwrap_or_else(|| "-".into()),
            self.until.as_ref().map(time).unwrap_or_else(|| "-".into()),
            time(&self.created),
            match &self.released {
                Some(r) => format!("released {}", time(&r.at)),
                None => "active".into(),
            },
            self.reason.clone(),
        ]
    }
}

/// When and by whom a hold was lifted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Released {
    pub at: DateTime<Utc>,
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// What a new hold covers, before it gets an id.
#[derive(Debug, Clone)]
pub struct HoldSpec {
    pub container_id: Option<String>,
    pub container_name: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub reason: String,
    pub created_by: String,
}

/// Errors of hold management beyond store I/O.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    /// Reading or writing the holds file failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No hold has this id (or prefix).
    #[error("no hold with id '{0}'; `quarry hold --list` shows them")]
    UnknownHold(String),
    /// The id prefix matches several holds.
    #[error("'{0}' matches several holds ({1}); give the whole id")]
    AmbiguousHold(String, String),
    /// The hold was already released.
    #[error("hold {id} was already released on {at} by {by}")]
    AlreadyReleased { id: String, at: String, by: String },
    /// A hold must cover something bounded: a container, a time range, or both.
    #[error("a hold needs a container, or --since/--until, or both")]
    Empty,
    /// `since` is not before `until`.
    #[error("the hold's --since ({since}) is not before its --until ({until})")]
    EmptyRange { since: String, until: String },
}

impl Hold {
    /// Active unless released.
    pub fn is_active(&self) -> bool {
        self.released.is_none()
    }

    /// Whether the hold's time range overlaps `[start, end)`.
    pub fn overlaps(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> bool {
        self.since.is_none_or(|s| s < end) && self.until.is_none_or(|u| u > start)
    }

    /// Whether the hold's time range overlaps the hour of `partition`.
    pub fn overlaps_partition(&self, partition: &Partition) -> bool {
        self.overlaps(partition.hour, partition.hour_end())
    }

    /// One line for people: what is held, since when, why.
    pub fn describe(&self) -> String {
        let what = match (&self.container_id, &self.container_name) {
            (Some(id), Some(name)) => format!("container {name} ({id})"),
            (Some(id), None) => format!("container {id}"),
            _ => "every container".to_string(),
        };
        let fmt = |t: &Option<DateTime<Utc>>, open: &str| {
            t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_else(|| open.to_string())
        };
        format!(
            "{what} from {} until {}",
            fmt(&self.since, "the start"),
            fmt(&self.until, "further notice")
        )
    }
}

/// `quarry hold` and `quarry hold --release`: a hold placed or released by whoever runs the
/// command, the `action` row that records it (the caller seals it with
/// [`Store::record_action`]: the hold stands whether or not its row can be written), and
/// what is said of it.
impl Store {
    /// Places the hold of `spec` (whose `created_by` is the invoking user).
    pub fn place_hold_as_action(&self, spec: HoldSpec) -> (Result<Hold, HoldError>, ActionRow) {
        let container = spec
            .container_id
            .clone()
            .map(|id| (id, spec.container_name.clone()));
        let reason = spec.reason.clone();
        let result = self.add_hold(spec);
        let outcome = Outcome::of(
            &result,
            |h| serde_json::json!({ "hold": h.id, "since": h.since, "until": h.until }),
        );
        let container = container
            .as_ref()
            .map(|(id, n)| (id.as_str(), n.as_deref()));
        let row = ActionRow::by_user("hold", container, Some(&reason), outcome);
        (result, row)
    }

    /// Releases the hold `id` names, for `reason`.
    pub fn release_hold_as_action(
        &self,
        id: &str,
        reason: Option<String>,
    ) -> (Result<Hold, HoldError>, ActionRow) {
        let result = self.release_hold(id, crate::action::actor(), reason.clone());
        let (word, error, container) = match &result {
            Ok(h) => (
                "ok",
                None,
                h.container_id
                    .clone()
                    .map(|c| (c, h.container_name.clone())),
            ),
            Err(e) => ("error", Some(e.to_string()), None),
        };
        let outcome = Outcome {
            result: word,
            error,
            detail: Some(serde_json::json!({ "hold": id })),
        };
        let container = container
            .as_ref()
            .map(|(id, n)| (id.as_str(), n.as_deref()));
        let row = ActionRow::by_user("release-hold", container, reason.as_deref(), outcome);
        (result, row)
    }
}

impl Hold {
    /// What `quarry hold` says it placed.
    pub fn placed_text(&self) -> String {
        format!(
            "placed hold {}: {}; retention will not delete it until `quarry hold --release {}`",
            self.id,
            self.describe(),
            self.id
        )
    }

    /// What `quarry hold --release` says it released.
    pub fn released_text(&self) -> String {
        format!(
            "released hold {}: {}; retention may now delete it",
            self.id,
            self.describe()
        )
    }
}

/// The holds of a store, as read under the manifest lock.
#[derive(Debug, Clone, Default)]
pub struct Holds {
    pub all: Vec<Hold>,
    /// SHA-256 of the file as read: retention re-plans when it changed under it.
    pub fingerprint: String,
}

impl Holds {
    pub fn active(&self) -> impl Iterator<Item = &Hold> {
        self.all.iter().filter(|h| h.is_active())
    }
}

impl Store {
    pub fn holds_path(&self) -> std::path::PathBuf {
        self.root().join(HOLDS_FILE)
    }

    /// Every hold, active and released. A store without holds reads as empty.
    pub fn holds(&self) -> Result<Holds> {
        let path = self.holds_path();
        layout::refuse_symlink(&path)?;
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Holds::default()),
            Err(e) => return Err(StoreError::io(&path, e)),
        };
        let all = serde_json::from_slice(&data).map_err(|e| StoreError::Manifest {
            path: path.clone(),
            line: e.line(),
            reason: format!("the holds file does not parse ({e}); no retention runs until fixed"),
        })?;
        Ok(Holds {
            all,
            fingerprint: hex::encode(Sha256::digest(&data)),
        })
    }

    /// Places a hold and returns it.
    pub fn add_hold(&self, spec: HoldSpec) -> Result<Hold, HoldError> {
        if spec.container_id.is_none() && spec.since.is_none() && spec.until.is_none() {
            return Err(HoldError::Empty);
        }
        if let (Some(s), Some(u)) = (spec.since, spec.until)
            && s >= u
        {
            return Err(HoldError::EmptyRange {
                since: s.to_rfc3339(),
                until: u.to_rfc3339(),
            });
        }
        let manifest = Manifest::new(self.manifest_path());
        let guard = manifest.lock()?;
        let mut holds = self.holds()?.all;
        let created = Utc::now();
        let seed = format!(
            "{created:?}{:?}{:?}{:?}{}{}",
            spec.container_id,
            spec.since,
            spec.until,
            spec.reason,
            holds.len()
        );
        let hold = Hold {
            id: format!("h-{}", &hex::encode(Sha256::digest(seed.as_bytes()))[..8]),
            container_id: spec.container_id,
            container_name: spec.container_name,
            since: spec.since,
            until: spec.until,
            reason: spec.reason,
            created,
            created_by: spec.created_by,
            released: None,
        };
        holds.push(hold.clone());
        self.write_holds(&guard, &holds)?;
        Ok(hold)
    }

    /// Releases the hold whose id is `id` (or starts with it) and returns it.
    pub fn release_hold(
        &self,
        id: &str,
        by: String,
        reason: Option<String>,
    ) -> Result<Hold, HoldError> {
        let manifest = Manifest::new(self.manifest_path());
        let guard = manifest.lock()?;
        let mut holds = self.holds()?.all;
        let matching: Vec<usize> = holds
            .iter()
            .enumerate()
            .filter(|(_, h)| h.id == id || (!id.is_empty() && h.id.starts_with(id)))
            .map(|(i, _)| i)
            .collect();
        let i = match matching.as_slice() {
            [i] => *i,
            [] => return Err(HoldError::UnknownHold(id.into())),
            many => {
                let exact = many.iter().find(|&&i| holds[i].id == id);
                match exact {
                    Some(&i) => i,
                    None => {
                        let ids: Vec<&str> = many.iter().map(|&i| holds[i].id.as_str()).collect();
                        return Err(HoldError::AmbiguousHold(id.into(), ids.join(", ")));
                    }
                }
            }
        };
        if let Some(r) = &holds[i].released {
            return Err(HoldError::AlreadyReleased {
                id: holds[i].id.clone(),
                at: r.at.to_rfc3339(),
                by: r.by.clone(),
            });
        }
        holds[i].released = Some(Released {
            at: Utc::now(),
            by,
            reason,
        });
        self.write_holds(&guard, &holds)?;
        Ok(holds[i].clone())
    }

    /// Replaces the holds file atomically; the caller holds the manifest lock.
    fn write_holds(&self, _guard: &ManifestLock, holds: &[Hold]) -> Result<()> {
        let path = self.holds_path();
        layout::refuse_symlink(&path)?;
        let tmp = self
            .root()
            .join(format!(".{HOLDS_FILE}.{}", std::process::id()));
        let data = serde_json::to_vec_pretty(holds).expect("holds always serialize");
        let write = || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(layout::FILE_MODE)
                .open(&tmp)?;
            f.write_all(&data)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            StoreError::io(&path, e)
        })?;
        layout::fsync_dir(self.root())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn spec(container: Option<&str>) -> HoldSpec {
        HoldSpec {
            container_id: container.map(Into::into),
            container_name: None,
            since: None,
            until: None,
            reason: "IR-1".into(),
            created_by: "tester".into(),
        }
    }

    #[test]
    fn placing_and_releasing_a_hold_make_its_action_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        let (placed, row) = store.place_hold_as_action(spec(Some("abc")));
        let placed = placed.unwrap();
        assert_eq!((row.action.as_str(), row.result.as_str()), ("hold", "ok"));
        assert_eq!(row.container_id.as_deref(), Some("abc"));
        assert_eq!(row.reason.as_deref(), Some("IR-1"));
        assert!(
            placed
                .placed_text()
                .contains(&format!("quarry hold --release {}", placed.id))
        );
        let (released, row) = store.release_hold_as_action(&placed.id, Some("done".into()));
        assert!(
            released
                .unwrap()
                .released_text()
                .starts_with("released hold")
        );
        assert_eq!(
            (row.action.as_str(), row.result.as_str()),
            ("release-hold", "ok")
        );
        let (again, row) = store.release_hold_as_action(&placed.id, None);
        assert!(again.is_err());
        assert_eq!(row.result, "error");
        assert!(row.error.is_some() && row.container_id.is_none());
    }

    #[test]
    fn holds_are_placed_listed_and_released_with_history() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        assert!(store.holds().unwrap().all.is_empty());
        let a = store.add_hold(spec(Some("abc"))).unwrap();
        let b = store.add_hold(spec(Some("def"))).unwrap();
        assert_ne!(a.id, b.id);
        assert_eq!(store.holds().unwrap().active().count(), 2);
        let released = store.release_hold(&a.id, "me".into(), None).unwrap();
        assert_eq!(released.released.as_ref().unwrap().by, "me");
        let holds = store.holds().unwrap();
        assert_eq!(holds.all.len(), 2, "released holds stay on record");
        assert_eq!(holds.active().map(|h| &h.id).collect::<Vec<_>>(), [&b.id]);
        assert!(matches!(
            store.release_hold(&a.id, "me".into(), None),
            Err(HoldError::AlreadyReleased { .. })
        ));
        assert!(matches!(
            store.release_hold("h-nope", "me".into(), None),
            Err(HoldError::UnknownHold(_))
        ));
    }

    #[test]
    fn empty_holds_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::create(dir.path()).unwrap();
        assert!(matches!(store.add_hold(spec(None)), Err(HoldError::Empty)));
        let t = Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap();
        let mut s = spec(None);
        s.since = Some(t);
        s.until = Some(t);
        assert!(matches!(
            store.add_hold(s),
            Err(HoldError::EmptyRange { .. })
        ));
    }

    #[test]
    fn ranges_overlap_hours() {
        let t = |h| Utc.with_ymd_and_hms(2026, 11, 28, h, 0, 0).unwrap();
        let h = Hold {
            id: "h".into(),
            container_id: None,
            container_name: None,
            since: Some(t(10)),
            until: Some(t(12)),
            reason: String::new(),
            created: t(0),
            created_by: String::new(),
            released: None,
        };
        assert!(!h.overlaps(t(9), t(10)));
        assert!(h.overlaps(t(10), t(11)));
        assert!(h.overlaps(t(11), t(12)));
        assert!(!h.overlaps(t(12), t(13)));
    }
}
