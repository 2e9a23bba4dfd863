//! Snapshots, restores, case checks and drift for people (and a snapshot for its `action`
//! row): what `quarry snapshot`, `restore`,
//! `snapshot --verify` and `drift` print. Names a container chose are escaped with
//! [`quarry_store::text::printable`] (table cells are escaped by the table that prints them);
//! the machine form is each type's JSON.
//!
//! It must not decide anything: it only words what the other modules did.

use std::io::{self, Write};
use std::path::Path;

use quarry_containers::Container;
use quarry_store::text::printable as shown;

use crate::case::Mismatch;
use crate::drift::DriftEntry;
use crate::{Report, Restored};

impl Report {
    /// What the `action` row of a snapshot records as its detail: where the case is, its
    /// manifest's hash, how long the container was frozen, and what was dumped.
    pub fn action_detail(&self) -> serde_json::Value {
        serde_json::json!({
            "case_dir": self.case_dir,
            "manifest_sha256": self.manifest_sha256,
            "left_running": self.left_running,
            "frozen_ms": self.timings.frozen_ms,
            "total_ms": self.timings.total_ms,
            "images_bytes": self.images_bytes,
            "processes": self.processes,
        })
    }

    /// What the `action` row of a snapshot records: `ok` with [`Report::action_detail`], or
    /// `error` with what failed and the case directory it was to go into.
    pub fn action_outcome(
        result: Result<&Report, &crate::SnapshotError>,
        case_dir: &Path,
    ) -> quarry_store::action::Outcome {
        let (result, error, detail) = match result {
            Ok(r) => ("ok", None, r.action_detail()),
            Err(e) => (
                "error",
                Some(e.to_string()),
                serde_json::json!({ "case_dir": case_dir }),
            ),
        };
        quarry_store::action::Outcome {
            result,
            error,
            detail: Some(detail),
        }
    }

    /// What `quarry snapshot` says it made of `container`.
    pub fn render_text(&self, container: &Container, w: &mut dyn Write) -> io::Result<()> {
        writeln!(
            w,
            "snapshot of {} in {}: {} processes, {:.1} MiB of images, {} files",
            shown(&container.to_string()),
            self.case_dir.display(),
            self.processes,
            self.images_bytes as f64 / (1 << 20) as f64,
            self.files
        )?;
        writeln!(
            w,
            "frozen {:.0} ms ({:.0} ms of it copying the filesystem changes; CRIU dump {:.0} \
             ms, total {:.0} ms); the container {}",
            self.timings.frozen_ms,
            self.timings.fs_copy_ms,
            self.timings.dump_ms,
            self.timings.total_ms,
            if self.left_running {
                "keeps running"
            } else {
                "was stopped"
            }
        )?;
        writeln!(
            w,
            "manifest sha256 {} (also in the store's action table)",
            self.manifest_sha256
        )?;
        for warning in &self.warnings {
            writeln!(w, "warning: {warning}")?;
        }
        writeln!(
            w,
            "restore it, isolated: sudo quarry restore {}",
            self.case_dir.display()
        )
    }
}

impl Restored {
    /// What `quarry restore` says it brought back from `case`, and how to end it.
    pub fn render_text(&self, case: &Path, w: &mut dyn Write) -> io::Result<()> {
        writeln!(
            w,
            "restored {} as pid {} in {:.0} ms, isolated: new network namespace with no way out, root {}",
            case.display(),
            self.pid,
            self.restore_ms,
            self.root.display()
        )?;
        if !self.placeholders.is_empty() {
            writeln!(
                w,
                "empty placeholders stand for the host mounts {} (give them with --bind)",
                self.placeholders.join(", ")
            )?;
        }
        for n in &self.notes {
            writeln!(w, "note: {n}")?;
        }
        writeln!(
            w,
            "CRIU log: {}; the tree runs in the cgroup {}; end it with: echo 1 > {}/cgroup.kill; \
             rmdir {}",
            self.log.display(),
            self.cgroup.display(),
            self.cgroup.display(),
            self.cgroup.display()
        )
    }
}

impl Mismatch {
    /// The columns of `quarry snapshot --verify` (see [`Mismatch::row`]).
    pub const COLUMNS: [&'static str; 2] = ["PROBLEM", "FILE"];

    /// The mismatch as a row under [`Mismatch::COLUMNS`].
    pub fn row(&self) -> Vec<String> {
        vec![self.problem.to_string(), self.path.clone()]
    }

    /// What to do about `problems` of the case at `case` beyond the table: close it when other
    /// users can read it.
    pub fn advice(case: &Path, problems: &[Mismatch]) -> Option<String> {
        problems
            .iter()
            .any(|m| m.problem == "world_accessible")
            .then(|| {
                format!(
                    "other users can read parts of this case (memory images and environments \
                     hold secrets): chmod -R go-rwx {}",
                    case.display()
                )
            })
    }
}

impl DriftEntry {
    /// The columns of `quarry drift` (see [`DriftEntry::row`]).
    pub const COLUMNS: [&'static str; 7] =
        ["CHANGE", "TYPE", "PATH", "SIZE", "MODE", "SHA256", "EXEC"];

    /// The entry as a row under [`DriftEntry::COLUMNS`]: EXEC says `+x` (made executable),
    /// `x` (executable as in the image) and `ran` (the recorder saw it executed).
    pub fn row(&self) -> Vec<String> {
        let exec = [
            self.made_executable
                .then_some("+x")
                .or(self.executable.then_some("x")),
            self.executed.then_some("ran"),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(",");
        vec![
            self.change.to_string(),
            self.kind.clone(),
            self.path.clone(),
            self.size.map(|s| s.to_string()).unwrap_or_default(),
            self.mode.clone().unwrap_or_default(),
            self.sha256
                .as_deref()
                .map(|s| s[..s.len().min(16)].to_string())
                .unwrap_or_default(),
            exec,
        ]
    }
}
