//! Retention: keeping a store within an age and a size cap, oldest segments first, never
//! touching held evidence or the hour being recorded, and writing every deletion to the
//! manifest with its reason so `verify` still passes and shows what went and why.
//!
//! Deleting one segment, under the manifest lock: move it into `.staging/` (under the name a
//! seal would have used, so a crash here is undone by [`Store::recover`], which moves listed
//! staged segments back), append its `remove` entry, unlink it. A crash after the entry leaves
//! an unlisted staged file that recovery deletes. Readers never see a half-deleted segment:
//! it is in its partition or it is not.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::compact::{CompactPolicy, Compaction};
use crate::human::{human_bytes, human_duration};
use crate::layout::{Partition, Store};
use crate::manifest::{EntryBody, Manifest};
use crate::removal::{HoldCheck, Live};
use crate::{Result, StoreError};

/// What to keep.
#[derive(Debug, Clone)]
pub struct RetentionPolicy {
    /// Delete segments whose every row is older than this.
    pub max_age: Option<Duration>,
    /// Delete the oldest segments until the live segments take at most this many bytes.
    pub max_bytes: Option<u64>,
    /// Merge small segments of closed hours first (fewer files, same rows).
    pub compact: Option<CompactPolicy>,
    /// The size cap never deletes segments of an hour that ended less than this long ago (nor
    /// of the hour being recorded): rows of a just-closed hour may still be arriving.
    pub protect_recent: Duration,
    /// While a recorder uploads the store to a bucket: which segments the bucket already
    /// holds, and whether the others may be deleted. None: no upload, nothing changes.
    pub upload: Option<UploadGate>,
}

impl RetentionPolicy {
    /// The policy of an age cap, a size cap and compaction as people ask for them (`quarry
    /// retain`, `quarry record`, the configuration file's `[retention]`), the rest default;
    /// None when they ask for none of the three.
    pub fn from_caps(
        max_age: Option<Duration>,
        max_bytes: Option<u64>,
        compact: bool,
    ) -> Option<RetentionPolicy> {
        if max_age.is_none() && max_bytes.is_none() && !compact {
            return None;
        }
        Some(RetentionPolicy {
            max_age,
            max_bytes,
            compact: compact.then(CompactPolicy::default),
            ..Default::default()
        })
    }
}

/// Retention beside a running upload (`quarry record --upload`): the local store is the
/// upload's spool, so a segment not yet in the bucket is kept unless `delete_unuploaded`
/// says otherwise. A segment deleted anyway says so in its manifest `remove` entry (its
/// reason reads e.g. "age cap 7d, NOT uploaded to s3://b/p; ...", a kind of removal of its
/// own in `quarry verify`), and the report lists it: the loss is on record
/// in the store, and in the bucket with the host's next manifest copy.
#[derive(Debug, Clone, Default)]
pub struct UploadGate {
    /// Where the upload goes (for the reason and the warnings).
    pub to: String,
    /// Store-relative paths of the segments the upload has in the bucket, hash-checked.
    pub uploaded: BTreeSet<String>,
    /// Delete segments not yet uploaded too, when a cap says so (a node that must not fill
    /// its disk while the bucket is away).
    pub delete_unuploaded: bool,
}

impl UploadGate {
    fn has(&self, path: &str) -> bool {
        self.uploaded.contains(path)
    }
}

impl RetentionPolicy {
    /// One line for people, e.g. `age 7d, size 50.0 GiB, compaction`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(a) = self.max_age {
            parts.push(format!("age {}", crate::human::human_duration(a)));
        }
        if let Some(s) = self.max_bytes {
            parts.push(format!("size {}", crate::human::human_bytes(s)));
        }
        if self.compact.is_some() {
            parts.push("compaction".to_string());
        }
        parts.join(", ")
    }
}

/// Default of [`RetentionPolicy::protect_recent`].
pub const PROTECT_RECENT: Duration = Duration::from_secs(300);

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            max_age: None,
            max_bytes: None,
            compact: None,
            protect_recent: PROTECT_RECENT,
            upload: None,
        }
    }
}

/// One segment retention deleted (or, in a dry run, would delete).
#[derive(Debug, Clone, Serialize)]
pub struct Removal {
    pub path: String,
    pub table: String,
    pub hour: DateTime<Utc>,
    pub rows: u64,
    pub bytes: u64,
    pub reason: String,
}

/// A segment a cap would have deleted but a legal hold keeps.
#[derive(Debug, Clone, Serialize)]
pub struct HeldSegment {
    pub path: String,
    pub bytes: u64,
    pub holds: Vec<String>,
}

/// What a retention run did (or would do).
#[derive(Debug, Default, Serialize)]
pub struct RetentionReport {
    pub dry_run: bool,
    pub now: DateTime<Utc>,
    pub segments_before: u64,
    pub bytes_before: u64,
    pub segments_after: u64,
    pub bytes_after: u64,
    pub removed: Vec<Removal>,
    pub compacted: Vec<Compaction>,
    /// Segments a cap would have deleted, kept because a hold covers them.
    pub kept_held: Vec<HeldSegment>,
    /// Segments of the hour being recorded or of one that just closed (see
    /// [`RetentionPolicy::protect_recent`]): never deleted by the size cap.
    pub kept_recent: u64,
    /// Segments a cap would have deleted, kept because an upload has not taken them yet
    /// ([`UploadGate`]): how many, and their bytes.
    pub kept_unuploaded: u64,
    pub kept_unuploaded_bytes: u64,
    /// Of `removed`, the paths of segments deleted before any upload took them
    /// ([`UploadGate::delete_unuploaded`]).
    pub removed_unuploaded: Vec<String>,
    /// Listed segments whose file is gone: left for `verify` to report, never logged as removed.
    pub missing: Vec<String>,
    /// Things a person must act on (the size cap cannot be met because of holds, ...).
    pub warnings: Vec<String>,
}

impl RetentionReport {
    pub fn removed_bytes(&self) -> u64 {
        self.removed.iter().map(|r| r.bytes).sum()
    }

    /// The removals summed per reason, in the order reasons first appear: (reason, segments,
    /// bytes).
    pub fn removed_by_reason(&self) -> Vec<(&str, u64, u64)> {
        let mut by_reason: Vec<(&str, u64, u64)> = Vec::new();
        for rem in &self.removed {
            match by_reason.iter_mut().find(|(r, _, _)| *r == rem.reason) {
                Some(e) => {
                    e.1 += 1;
                    e.2 += rem.bytes;
                }
                None => by_reason.push((&rem.reason, 1, rem.bytes)),
            }
        }
        by_reason
    }

    /// The ids of the holds that kept segments a cap would have removed, sorted, each once.
    pub fn holds_that_kept(&self) -> Vec<&str> {
        let mut holds: Vec<&str> = self
            .kept_held
            .iter()
            .flat_map(|k| k.holds.iter().map(String::as_str))
            .collect();
        holds.sort();
        holds.dedup();
        holds
    }

    /// What the `action` row of a retention run under `policy` records as its detail.
    pub fn action_detail(&self, policy: &RetentionPolicy) -> serde_json::Value {
        serde_json::json!({
            "policy": policy.describe(),
            "removed_segments": self.removed.len(),
            "removed_bytes": self.removed_bytes(),
            "compacted": self.compacted.len(),
            "kept_held": self.kept_held.len(),
            "warnings": self.warnings,
        })
    }

    /// The report for people (`quarry retain`): merges, removals per reason, what holds kept,
    /// and the store's size before and after. The warnings are not in it: they are for
    /// stderr.
    pub fn render_text(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        let verb = if self.dry_run {
            "would remove"
        } else {
            "removed"
        };
        for c in &self.compacted {
            writeln!(
                w,
                "{} {} segments ({}, {} rows) into {}",
                if self.dry_run {
                    "would merge"
                } else {
                    "merged"
                },
                c.sources.len(),
                human_bytes(c.bytes_before),
                c.rows,
                c.path
            )?;
        }
        for (reason, n, bytes) in self.removed_by_reason() {
            writeln!(w, "{verb} {n} segments ({}): {reason}", human_bytes(bytes))?;
        }
        if !self.kept_held.is_empty() {
            let bytes: u64 = self.kept_held.iter().map(|k| k.bytes).sum();
            writeln!(
                w,
                "kept {} segments ({}) a cap would remove: under legal hold {}",
                self.kept_held.len(),
                human_bytes(bytes),
                self.holds_that_kept().join(", ")
            )?;
        }
        writeln!(
            w,
            "{}: {} segments, {} before; {} segments, {} after{}",
            if self.dry_run { "dry run" } else { "done" },
            self.segments_before,
            human_bytes(self.bytes_before),
            self.segments_after,
            human_bytes(self.bytes_after),
            if self.dry_run {
                " (nothing was changed)"
            } else {
                ""
            }
        )
    }
}

/// Deletions applied per manifest lock, so a recorder sealing meanwhile waits only briefly.
const BATCH: usize = 128;

impl Store {
    /// Applies `policy` as of `now`: compacts first (when asked), then deletes by age, then by
    /// size, oldest first. With `dry_run` nothing changes and the report says what would.
    pub fn retain(
        &self,
        policy: &RetentionPolicy,
        now: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<RetentionReport> {
        let mut compacted = Vec::new();
        if let Some(cp) = &policy.compact {
            compacted = self.compact(cp, now, dry_run)?;
        }
        // A hold placed between planning and deleting changes the plan: re-plan (bounded).
        for _ in 0..8 {
            let (mut report, plan, fingerprint) = self.plan_retention(policy, now)?;
            report.dry_run = dry_run;
            report.compacted = std::mem::take(&mut compacted);
            if dry_run || plan.is_empty() {
                return Ok(report);
            }
            match self.apply_removals(&plan, &fingerprint)? {
                Applied::Done { missing } => {
                    let gone: BTreeSet<&str> = missing.iter().map(String::as_str).collect();
                    let (dropped, kept): (Vec<Removal>, Vec<Removal>) = report
                        .removed
                        .into_iter()
                        .partition(|r| gone.contains(r.path.as_str()));
                    report.removed = kept;
                    for d in dropped {
                        report.segments_after += 1;
                        report.bytes_after += d.bytes;
                    }
                    report.missing.extend(missing);
                    if !report.missing.is_empty() {
                        report.warnings.push(format!(
                            "{} listed segments are missing from disk and were left for \
                             `quarry verify` to report (never logged as removed)",
                            report.missing.len()
                        ));
                    }
                    return Ok(report);
                }
                Applied::HoldsChanged => {
                    compacted = report.compacted;
                    continue;
                }
            }
        }
        Err(StoreError::Io {
            path: self.holds_path(),
            source: std::io::Error::other("holds keep changing while retention runs; try again"),
        })
    }

    /// Decides what to delete. Returns the report (as if applied), the removals and the holds
    /// fingerprint the plan was made against.
    fn plan_retention(
        &self,
        policy: &RetentionPolicy,
        now: DateTime<Utc>,
    ) -> Result<(RetentionReport, Plan, String)> {
        let log = Manifest::new(self.manifest_path()).read()?;
        let holds = self.holds()?;
        let live = self.live_segments(&log);
        let mut check = HoldCheck::new(self, &holds, &live);
        let mut report = RetentionReport {
            now,
            segments_before: live.len() as u64,
            bytes_before: live.iter().map(|l| l.body.bytes).sum(),
            ..Default::default()
        };
        let mut remove = vec![false; live.len()];
        let mut plan = Vec::new();
        let mut held_paths = BTreeSet::new();
        let mut keep_held = |l: &Live, ids: Vec<String>, report: &mut RetentionReport| {
            if held_paths.insert(l.body.path.clone()) {
                report.kept_held.push(HeldSegment {
                    path: l.body.path.clone(),
                    bytes: l.body.bytes,
                    holds: ids,
                });
            }
        };

        if let Some(age) = policy.max_age {
            let cutoff = now - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
            let reason = format!(
                "age cap {}; every row older than {}",
                human_duration(age),
                cutoff.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            for (i, l) in live.iter().enumerate() {
                if l.partition.hour_end() > cutoff {
                    continue;
                }
                let ids = check.covering(l);
                if !ids.is_empty() {
                    keep_held(l, ids, &mut report);
                    continue;
                }
                match upload_reason(policy, l, &reason) {
                    Some(reason) => {
                        remove[i] = true;
                        plan.push((l.body.clone(), reason));
                    }
                    None => {
                        report.kept_unuploaded += 1;
                        report.kept_unuploaded_bytes += l.body.bytes;
                    }
                }
            }
        }

        let mut total: u64 = live
            .iter()
            .zip(&remove)
            .filter(|(_, r)| !**r)
            .map(|(l, _)| l.body.bytes)
            .sum();
        if let Some(cap) = policy.max_bytes
            && total > cap
        {
            let reason = format!(
                "size cap {}; the store held {} of segments",
                human_bytes(cap),
                human_bytes(total)
            );
            let recent = now
                - chrono::Duration::from_std(policy.protect_recent)
                    .unwrap_or(chrono::Duration::zero());
            let (mut held_bytes, mut open_bytes, mut unuploaded_bytes) = (0u64, 0u64, 0u64);
            for (i, l) in live.iter().enumerate() {
                if remove[i] {
                    continue;
                }
                if total <= cap {
                    break;
                }
                if l.partition.hour_end() > recent || l.partition.hour_end() > now {
                    open_bytes += l.body.bytes;
                    report.kept_recent += 1;
                    continue;
                }
                let ids = check.covering(l);
                if !ids.is_empty() {
                    held_bytes += l.body.bytes;
                    keep_held(l, ids, &mut report);
                    continue;
                }
                let Some(reason) = upload_reason(policy, l, &reason) else {
                    report.kept_unuploaded += 1;
                    report.kept_unuploaded_bytes += l.body.bytes;
                    unuploaded_bytes += l.body.bytes;
                    continue;
                };
                remove[i] = true;
                total -= l.body.bytes;
                plan.push((l.body.clone(), reason));
            }
            if total > cap {
                report.warnings.push(format!(
                    "OVER THE SIZE CAP: the store keeps {} of segments, {} more than the cap of \
                     {}, because {} are under legal hold ({}) and {} belong to the hour being \
                     recorded or one that just closed{}; nothing held was deleted. Release holds that are no longer needed \
                     (`quarry hold --list`), export and move evidence off this machine, or raise \
                     the cap.",
                    human_bytes(total),
                    human_bytes(total - cap),
                    human_bytes(cap),
                    human_bytes(held_bytes),
                    {
                        let mut ids: Vec<&str> = report
                            .kept_held
                            .iter()
                            .flat_map(|k| k.holds.iter().map(String::as_str))
                            .collect();
                        ids.sort();
                        ids.dedup();
                        if ids.is_empty() {
                            "none".to_string()
                        } else {
                            ids.join(", ")
                        }
                    },
                    human_bytes(open_bytes),
                    match &policy.upload {
                        Some(gate) if unuploaded_bytes > 0 => format!(
                            ", and {} are not uploaded to {} yet (see `quarry status`)",
                            human_bytes(unuploaded_bytes),
                            gate.to
                        ),
                        _ => String::new(),
                    }
                ));
            }
        }
        report.removed = plan
            .iter()
            .map(|(b, reason)| {
                let hour = Partition::from_segment_path(&b.path)
                    .map(|(p, _)| p.hour)
                    .unwrap_or_default();
                Removal {
                    path: b.path.clone(),
                    table: b.table.clone(),
                    hour,
                    rows: b.rows,
                    bytes: b.bytes,
                    reason: reason.clone(),
                }
            })
            .collect();
        if let Some(gate) = &policy.upload {
            report.removed_unuploaded = plan
                .iter()
                .filter(|(b, _)| !gate.has(&b.path))
                .map(|(b, _)| b.path.clone())
                .collect();
            if !report.removed_unuploaded.is_empty() {
                report.warnings.push(format!(
                    "{} segments were deleted before they were uploaded to {} (retention may \
                     delete what is not uploaded yet): {}; their manifest entries say so",
                    report.removed_unuploaded.len(),
                    gate.to,
                    report.removed_unuploaded.join(", ")
                ));
            }
        }
        report.segments_after = report.segments_before - plan.len() as u64;
        report.bytes_after = report.bytes_before - report.removed_bytes();
        Ok((report, plan, holds.fingerprint))
    }

    /// Deletes the planned segments in batches under the manifest lock, checking first in each
    /// batch that the holds are still those the plan was made against.
    fn apply_removals(&self, plan: &[(EntryBody, String)], fingerprint: &str) -> Result<Applied> {
        let manifest = Manifest::new(self.manifest_path());
        let mut missing = Vec::new();
        for chunk in plan.chunks(BATCH) {
            let guard = manifest.lock()?;
            if self.holds()?.fingerprint != fingerprint {
                return Ok(Applied::HoldsChanged);
            }
            // Another retention (the recorder's, or a `quarry retain`) may have run meanwhile.
            let log = manifest.read()?;
            let live: BTreeSet<&str> = log
                .live()
                .into_iter()
                .map(|e| e.body.path.as_str())
                .collect();
            let todo: Vec<(EntryBody, String)> = chunk
                .iter()
                .filter(|(body, _)| live.contains(body.path.as_str()))
                .cloned()
                .collect();
            let done = self.remove_segments_locked(&guard, &manifest, &todo)?;
            for ((body, _), removed) in todo.iter().zip(done) {
                if !removed {
                    missing.push(body.path.clone());
                }
            }
        }
        Ok(Applied::Done { missing })
    }
}

/// Segments to remove, each with the reason for its manifest entry.
type Plan = Vec<(EntryBody, String)>;

/// The reason to delete `l` for, given the upload beside retention; None: keep it (the
/// upload has not taken it yet).
fn upload_reason(policy: &RetentionPolicy, l: &Live, reason: &str) -> Option<String> {
    match &policy.upload {
        None => Some(reason.to_string()),
        Some(gate) if gate.has(&l.body.path) => Some(reason.to_string()),
        Some(gate) if gate.delete_unuploaded => {
            // In the reason's first part, the kind `quarry verify` sums removals by.
            let (kind, rest) = reason.split_once(';').unwrap_or((reason, ""));
            let sep = if rest.is_empty() { "" } else { ";" };
            Some(format!("{kind}, NOT uploaded to {}{sep}{rest}", gate.to))
        }
        Some(_) => None,
    }
}

enum Applied {
    Done { missing: Vec<String> },
    HoldsChanged,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_make_a_policy_only_when_one_is_asked_for() {
        assert!(RetentionPolicy::from_caps(None, None, false).is_none());
        let p = RetentionPolicy::from_caps(Some(Duration::from_secs(3600)), None, true).unwrap();
        assert_eq!(p.max_age, Some(Duration::from_secs(3600)));
        assert!(p.max_bytes.is_none() && p.compact.is_some() && p.upload.is_none());
        let p = RetentionPolicy::from_caps(None, Some(1 << 30), false).unwrap();
        assert!(p.compact.is_none());
        assert_eq!(p.protect_recent, RetentionPolicy::default().protect_recent);
    }
}
