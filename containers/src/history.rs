//! Containers as the store remembers them, and the one view that joins them with what runs
//! now (`quarry ps --all`).
//!
//! The store's `container` table holds one row per container per sealed interval; a
//! container's entries are merged here into one [`Recorded`]. The rows come in as plain data
//! (the store crate converts its rows): this module reads no files and knows no schema.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::resolve::Candidate;
use crate::{Container, Inventory};

/// A container the store recorded: its latest facts and the span its rows cover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recorded {
    pub container: Container,
    /// The host whose recorder saw it.
    pub host: Option<String>,
    /// When rows were first and last attributed to it.
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
}

impl Candidate for Recorded {
    fn id(&self) -> &str {
        &self.container.id
    }
    fn name(&self) -> Option<&str> {
        self.container.name.as_deref()
    }
    fn describe(&self) -> String {
        let secs = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        format!(
            "{} (seen {} .. {})",
            Candidate::describe(&self.container),
            secs(self.first_seen),
            secs(self.last_seen)
        )
    }
}

/// Merges the store's entries into one per container id, in id order: the earliest
/// `first_seen`, and otherwise the facts of the entry seen last (a re-named or re-imaged
/// container shows as it is now).
pub fn merge(entries: impl IntoIterator<Item = Recorded>) -> Vec<Recorded> {
    let mut by_id: BTreeMap<String, Recorded> = BTreeMap::new();
    for e in entries {
        match by_id.get_mut(&e.container.id) {
            Some(seen) => {
                let first = seen.first_seen.min(e.first_seen);
                if e.last_seen >= seen.last_seen {
                    *seen = e;
                }
                seen.first_seen = first;
            }
            None => {
                by_id.insert(e.container.id.clone(), e);
            }
        }
    }
    by_id.into_values().collect()
}

/// One container of a listing: running now, recorded, or both.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The running container's facts when it runs, else the store's.
    pub container: Container,
    pub running: bool,
    pub first_seen: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
}

/// One line of `quarry ps`: a [`Listed`] container's facts, flat, for JSON and the table.
#[derive(Debug, Serialize)]
pub struct Entry {
    pub id: String,
    pub name: Option<String>,
    pub runtime: String,
    pub image: Option<String>,
    pub init_pid: Option<i32>,
    pub cgroup_path: String,
    pub cgroup_id: Option<u64>,
    pub netns_inode: Option<u64>,
    pub host_network: bool,
    pub pod_name: Option<String>,
    pub pod_namespace: Option<String>,
    pub running: bool,
    /// From the store: when rows were first and last attributed to it (RFC 3339, seconds).
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
}

impl From<Listed> for Entry {
    fn from(l: Listed) -> Entry {
        let secs = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let c = l.container;
        Entry {
            id: c.id,
            name: c.name,
            runtime: c.runtime.name().to_string(),
            image: c.image,
            init_pid: c.init_pid,
            cgroup_path: c.cgroup_path,
            cgroup_id: c.cgroup_id,
            netns_inode: c.netns_inode,
            host_network: c.host_network,
            pod_name: c.pod_name,
            pod_namespace: c.pod_namespace,
            running: l.running,
            first_seen: l.first_seen.map(secs),
            last_seen: l.last_seen.map(secs),
        }
    }
}

impl Entry {
    /// The columns of `quarry ps` (with `--all`, whether it runs and when it was last seen).
    pub fn columns(all: bool) -> Vec<&'static str> {
        let mut header = vec!["CONTAINER ID", "NAME", "RUNTIME", "PID", "IMAGE", "CGROUP"];
        if all {
            header.extend(["STATE", "LAST SEEN"]);
        }
        header
    }

    /// The entry as a row under [`Entry::columns`] (cells unescaped: the table escapes them).
    pub fn row(&self, all: bool) -> Vec<String> {
        let mut r = vec![
            crate::short_id(&self.id).to_string(),
            self.name.clone().unwrap_or_default(),
            self.runtime.clone(),
            self.init_pid.map(|p| p.to_string()).unwrap_or_default(),
            self.image.clone().unwrap_or_default(),
            self.cgroup_path.clone(),
        ];
        if all {
            r.push(if self.running { "running" } else { "gone" }.into());
            r.push(self.last_seen.clone().unwrap_or_default());
        }
        r
    }
}

/// What runs now and, with the store's merged history, what ran: in id order, a running
/// container's facts taken from the host, its span from the store.
pub fn listing(live: &Inventory, recorded: Vec<Recorded>) -> Vec<Listed> {
    let mut out: BTreeMap<String, Listed> = live
        .containers
        .iter()
        .map(|c| {
            let entry = Listed {
                container: c.clone(),
                running: true,
                first_seen: None,
                last_seen: None,
            };
            (c.id.clone(), entry)
        })
        .collect();
    for r in recorded {
        let e = out.entry(r.container.id.clone()).or_insert_with(|| Listed {
            container: r.container.clone(),
            running: false,
            first_seen: None,
            last_seen: None,
        });
        e.first_seen = Some(r.first_seen);
        e.last_seen = Some(r.last_seen);
    }
    out.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::c;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).unwrap()
    }

    fn rec(id: &str, name: &str, first: i64, last: i64) -> Recorded {
        Recorded {
            container: c(id, Some(name)),
            host: Some("h".into()),
            first_seen: at(first),
            last_seen: at(last),
        }
    }

    #[test]
    fn merge_keeps_the_first_sighting_and_the_latest_facts() {
        let merged = merge([
            rec("b", "db", 50, 60),
            rec("a", "old", 10, 20),
            rec("a", "new", 30, 40),
        ]);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[0].container.name.as_deref(), Some("new"));
        assert_eq!(
            (merged[0].first_seen, merged[0].last_seen),
            (at(10), at(40))
        );
    }

    #[test]
    fn listing_joins_running_and_recorded() {
        let live = Inventory {
            containers: vec![c("a", Some("live-name"))],
        };
        let l = listing(&live, merge([rec("a", "x", 1, 2), rec("g", "gone", 3, 4)]));
        assert_eq!(l.len(), 2);
        assert!(l[0].running && l[0].container.name.as_deref() == Some("live-name"));
        assert_eq!(l[0].last_seen, Some(at(2)));
        assert!(!l[1].running && l[1].container.id == "g");
    }
}
