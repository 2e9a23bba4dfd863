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
