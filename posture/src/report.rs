//! One container's posture as `quarry posture` reports it: who it is, its findings, or why it
//! could not be judged. The container is given (found by quarry-containers); this module only
//! gathers its facts and judges them.

use quarry_containers::Container;
use serde::Serialize;

use crate::{Finding, Sources, assess, gather};

/// A container's findings, or why it could not be judged.
#[derive(Debug, Serialize)]
pub struct Report {
    pub container: String,
    pub name: Option<String>,
    pub runtime: &'static str,
    pub pid: Option<i32>,
    pub findings: Vec<Finding>,
    /// Why this container could not be judged, when it could not.
    pub error: Option<String>,
}

impl Report {
    /// The columns of `quarry posture` (see [`Report::rows`]).
    pub const COLUMNS: [&'static str; 7] = [
        "CONTAINER",
        "SEVERITY",
        "FINDING",
        "CIS",
        "WHAT",
        "EVIDENCE",
        "FIX",
    ];

    /// A row per finding under [`Report::COLUMNS`], the container named by its name or short
    /// id (cells unescaped: the table escapes them).
    pub fn rows(&self) -> impl Iterator<Item = Vec<String>> + '_ {
        let who = self
            .name
            .as_deref()
            .unwrap_or(quarry_containers::short_id(&self.container));
        self.findings.iter().map(move |f| {
            vec![
                who.to_string(),
                f.severity.as_str().to_string(),
                f.id.clone(),
                f.cis.unwrap_or("").to_string(),
                f.title.clone(),
                f.evidence.clone(),
                f.fix.to_string(),
            ]
        })
    }
}

/// Gathers `container`'s facts from `sources` and judges them.
pub fn judge(sources: &Sources, container: &Container) -> Report {
    let judged = match container.init_pid {
        Some(pid) => gather(
            sources,
            pid,
            &container.cgroup_path,
            container.bundle.as_deref(),
        )
        .map(|facts| assess(&facts))
        .map_err(|e| quarry_store::human::with_causes(&e)),
        None => Err("no init pid known for it (is it running?)".to_string()),
    };
    let (findings, error) = match judged {
        Ok(f) => (f, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    Report {
        container: container.id.clone(),
        name: container.name.clone(),
        runtime: container.runtime.name(),
        pid: container.init_pid,
        findings,
        error,
    }
}
