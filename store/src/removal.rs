//! Removing segments from a store, the one way retention, compaction and crash recovery all
//! take: each segment moved into staging, its `remove` entry (with the reason) appended to the
//! manifest under the lock, then unlinked; and the rules that say what may not go (holds).
//!
//! Retention decides what to delete and compaction what to merge; both come here to remove.
//! Recovery comes here to finish a compaction a crash cut short. This module decides no policy
//! and calls neither of them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;

use chrono::{DateTime, Utc};

use crate::holds::{Hold, Holds};
use crate::layout::{self, Partition, Store, Table};
use crate::manifest::{EntryBody, Manifest, ManifestLock, NewEntry};
use crate::read::segment_container_ids;
use crate::{Result, StoreError};

/// A live segment, as retention sees it.
#[derive(Debug, Clone)]
pub(crate) struct Live {
    pub(crate) body: EntryBody,
    pub(crate) partition: Partition,
}

/// Decides which segments holds cover, reading a segment's container ids only when a
/// container hold needs them (and once).
pub(crate) struct HoldCheck<'a> {
    store: &'a Store,
    holds: Vec<&'a Hold>,
    ids: HashMap<String, BTreeSet<String>>,
    /// Live container-bearing segments by (hour, host), for deciding on `gap` segments.
    by_hour: BTreeMap<(DateTime<Utc>, String), Vec<String>>,
}

impl<'a> HoldCheck<'a> {
    pub(crate) fn new(store: &'a Store, holds: &'a Holds, live: &[Live]) -> Self {
        let mut by_hour: BTreeMap<_, Vec<String>> = BTreeMap::new();
        for l in live {
            if has_container_column(l.partition.table) {
                by_hour
                    .entry((l.partition.hour, l.partition.host.clone()))
                    .or_default()
                    .push(l.body.path.clone());
            }
        }
        HoldCheck {
            store,
            holds: holds.active().collect(),
            ids: HashMap::new(),
            by_hour,
        }
    }

    fn container_ids(&mut self, rel: &str) -> Result<&BTreeSet<String>> {
        if !self.ids.contains_key(rel) {
            let path = self.store.resolve(rel)?;
            let ids = match segment_container_ids(&path) {
                Ok(ids) => ids,
                // Unreadable: it cannot be shown to hold nothing of a held container, so it is
                // treated as holding every container (kept).
                Err(e) => {
                    log::warn!(
                        "{}: kept, since holds cannot be checked against it",
                        crate::human::with_causes(&e)
                    );
                    return Err(e);
                }
            };
            self.ids.insert(rel.to_string(), ids);
        }
        Ok(&self.ids[rel])
    }

    /// The ids of the holds covering segment `l` (empty: not held).
    pub(crate) fn covering(&mut self, l: &Live) -> Vec<String> {
        let mut out = Vec::new();
        for i in 0..self.holds.len() {
            let hold = self.holds[i];
            if !hold.overlaps_partition(&l.partition) {
                continue;
            }
            let held = match &hold.container_id {
                None => true,
                Some(id) if has_container_column(l.partition.table) => self
                    .container_ids(&l.body.path)
                    .map(|ids| ids.contains(id))
                    .unwrap_or(true),
                // A gap segment of an hour in which the held container has rows: it says where
                // that container's evidence is incomplete.
                Some(id) => {
                    let key = (l.partition.hour, l.partition.host.clone());
                    let peers = self.by_hour.get(&key).cloned().unwrap_or_default();
                    peers.iter().any(|p| {
                        self.container_ids(p)
                            .map(|ids| ids.contains(id))
                            .unwrap_or(true)
                    })
                }
            };
            if held {
                out.push(hold.id.clone());
            }
        }
        out
    }
}

fn has_container_column(table: Table) -> bool {
    crate::schema::schema_of(table)
        .field_with_name("container_id")
        .is_ok()
}

impl Store {
    /// The live segments of the manifest with their partitions; paths that are not segments of
    /// this layout are skipped (retention only deletes what it understands).
    pub(crate) fn live_segments(&self, log: &crate::manifest::ManifestLog) -> Vec<Live> {
        let mut live: Vec<Live> = log
            .live()
            .into_iter()
            .filter_map(|e| {
                Partition::from_segment_path(&e.body.path).map(|(partition, _)| Live {
                    body: e.body.clone(),
                    partition,
                })
            })
            .collect();
        live.sort_by(|a, b| {
            (a.partition.hour, &a.body.path).cmp(&(b.partition.hour, &b.body.path))
        });
        live
    }

    /// Removes live segments under the lock: each into staging, then all their `remove`
    /// entries in one append, then the staged files are unlinked. Returns, per segment, whether
    /// it was removed (false: its file was not there, and nothing was logged for it).
    pub(crate) fn remove_segments_locked(
        &self,
        guard: &ManifestLock,
        manifest: &Manifest,
        items: &[(EntryBody, String)],
    ) -> Result<Vec<bool>> {
        layout::refuse_symlink(&self.staging_dir())?;
        layout::create_private_dirs(&self.staging_dir())
            .map_err(|e| StoreError::io(self.staging_dir(), e))?;
        let mut moved = Vec::new();
        let mut done = vec![false; items.len()];
        let mut failure = None;
        for (i, (body, _)) in items.iter().enumerate() {
            let path = self.resolve(&body.path)?;
            match fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_file() => {}
                _ => continue,
            }
            let staged = self.staging_path_for(&body.path);
            if let Err(e) = fs::rename(&path, &staged) {
                failure = Some(StoreError::io(&path, e));
                break;
            }
            moved.push((i, path, staged));
        }
        // Log what was moved (also when a later rename failed: those moved are out of place).
        let entries: Vec<NewEntry> = moved
            .iter()
            .map(|(i, _, _)| NewEntry::remove(&items[*i].0, items[*i].1.clone()))
            .collect();
        if !entries.is_empty() {
            manifest.append_all_locked(guard, entries)?;
        }
        let mut dirs = std::collections::BTreeSet::new();
        for (i, path, staged) in &moved {
            fs::remove_file(staged).map_err(|e| StoreError::io(staged, e))?;
            done[*i] = true;
            if let Some(d) = path.parent() {
                dirs.insert(d.to_path_buf());
            }
        }
        for dir in &dirs {
            layout::fsync_dir(dir)?;
            self.prune_empty_dirs(dir);
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }

    /// Removes `dir` and its parents up to the table directory while they are empty.
    pub(crate) fn prune_empty_dirs(&self, dir: &std::path::Path) {
        let mut dir = dir.to_path_buf();
        // host=, hour=, dt= below the table directory.
        for _ in 0..3 {
            if !dir.starts_with(self.root()) || fs::remove_dir(&dir).is_err() {
                return;
            }
            match dir.parent() {
                Some(p) => {
                    let _ = layout::fsync_dir(p);
                    dir = p.to_path_buf();
                }
                None => return,
            }
        }
    }

    /// Finishes compactions a crash interrupted: sources a live merged segment `replaces` that
    /// are still listed are removed. Called by [`Store::recover`](crate::segment) under the manifest lock.
    pub(crate) fn finish_compactions(
        &self,
        guard: &ManifestLock,
        manifest: &Manifest,
    ) -> Result<usize> {
        let log = manifest.read()?;
        let live = log.live();
        let by_path: BTreeMap<&str, &EntryBody> = live
            .iter()
            .map(|e| (e.body.path.as_str(), &e.body))
            .collect();
        let mut todo = Vec::new();
        for e in &live {
            for src in &e.body.replaces {
                if let Some(body) = by_path.get(src.as_str()) {
                    let merged_present = self
                        .resolve(&e.body.path)
                        .map(|p| p.is_file())
                        .unwrap_or(false);
                    if merged_present {
                        todo.push(((*body).clone(), e.body.path.clone()));
                    }
                }
            }
        }
        let todo: Vec<(EntryBody, String)> = todo
            .into_iter()
            .map(|(body, merged)| (body, compacted_reason(&merged, true)))
            .collect();
        let done = self.remove_segments_locked(guard, manifest, &todo)?;
        Ok(done.into_iter().filter(|d| *d).count())
    }
}

pub(crate) fn compacted_reason(merged: &str, after_crash: bool) -> String {
    format!(
        "compacted; rows now in {merged}{}",
        if after_crash {
            " (finished after an interruption)"
        } else {
            ""
        }
    )
}
