//! Container resolution: the one place that turns what a responder types (a full id, a unique
//! id prefix or a name) into one container.
//!
//! Every command resolves through [`resolve`] over whatever it can see: the running
//! containers ([`crate::Inventory`]), the store's `container` history ([`crate::Recorded`],
//! passed in as plain data so this crate reads no store), or the quarantines in place. The
//! rules are the same everywhere:
//!
//! 1. an exact id wins;
//! 2. else a name that exactly one candidate has;
//! 3. else, when no name matched, an id prefix that exactly one candidate starts with.
//!
//! A name is never trusted for identity: when several candidates carry it (a re-created `web`,
//! replicas, a name reused over the store's history) the answer is an error listing their
//! ids, and the responder chooses. This module decides nothing else: it reads no files and
//! never looks a container up by itself.

use std::fmt;

/// Something a container query can match: a running container, a recorded one, a quarantine.
pub trait Candidate {
    /// The runtime's full id.
    fn id(&self) -> &str;
    /// The name, when the runtime keeps one.
    fn name(&self) -> Option<&str>;
    /// How the candidate is listed in an error: its full id (what disambiguates), then what
    /// helps a person choose (name, when it was seen).
    fn describe(&self) -> String {
        match self.name() {
            Some(n) => format!("{} ({n})", self.id()),
            None => self.id().to_string(),
        }
    }
}

/// A container's identity as resolution returns it when the candidates were of several kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub id: String,
    pub name: Option<String>,
}

impl Named {
    fn of(c: &dyn Candidate) -> Named {
        Named {
            id: c.id().to_string(),
            name: c.name().map(str::to_string),
        }
    }
}

impl Candidate for Named {
    fn id(&self) -> &str {
        &self.id
    }
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

/// What the candidates were, for saying where nothing matched and how to look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Among {
    /// Containers running on this host now.
    Running,
    /// Containers the store's `container` table recorded (running or long gone).
    Store,
    /// The store's containers, then the running ones.
    StoreOrRunning,
    /// Containers under quarantine, then the running ones.
    IsolatedOrRunning,
}

impl fmt::Display for Among {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Among::Running => "running container",
            Among::Store => "container in the store",
            Among::StoreOrRunning => "container in the store or running",
            Among::IsolatedOrRunning => "isolated or running container",
        })
    }
}

/// Why a container query did not name exactly one container.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// Nothing among the candidates has this id, id prefix or name. `known` lists the
    /// candidates when they are few enough to be worth reading (running containers).
    #[error("no {among} matches '{query}'; {}", unknown_hint(*.among, .known))]
    Unknown {
        query: String,
        among: Among,
        known: Vec<String>,
    },
    /// Several candidates share the name, or start with the prefix; `candidates` are their
    /// full ids with what tells them apart.
    #[error(
        "'{query}' is ambiguous; it matches: {}; use a longer id prefix or the full id",
        .candidates.join(", ")
    )]
    Ambiguous {
        query: String,
        candidates: Vec<String>,
    },
}

impl ResolveError {
    /// True when nothing matched (as opposed to several things).
    pub fn is_unknown(&self) -> bool {
        matches!(self, ResolveError::Unknown { .. })
    }
}

fn unknown_hint(among: Among, known: &[String]) -> String {
    match among {
        Among::Running if known.is_empty() => "running: none (see `quarry ps`)".into(),
        Among::Running => format!("running: {}", known.join(", ")),
        _ => "give its full id, a unique id prefix or its name; `quarry ps --all` lists the \
              containers the store has seen"
            .into(),
    }
}

/// The one candidate `query` names (see the module's rules), or why there is not one.
pub fn resolve<'c, C: Candidate>(
    query: &str,
    among: Among,
    candidates: &'c [C],
) -> Result<&'c C, ResolveError> {
    if let Some(c) = candidates.iter().find(|c| c.id() == query) {
        return Ok(c);
    }
    let named: Vec<&C> = candidates
        .iter()
        .filter(|c| c.name() == Some(query))
        .collect();
    let matches: Vec<&C> = if !named.is_empty() {
        named
    } else if query.is_empty() {
        Vec::new()
    } else {
        candidates
            .iter()
            .filter(|c| c.id().starts_with(query))
            .collect()
    };
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(ResolveError::Unknown {
            query: query.to_string(),
            among,
            known: match among {
                Among::Running => candidates.iter().map(|c| short(c)).collect(),
                _ => Vec::new(),
            },
        }),
        many => Err(ResolveError::Ambiguous {
            query: query.to_string(),
            candidates: many.iter().map(|c| c.describe()).collect(),
        }),
    }
}

/// Resolves among `first`, and only when nothing there matches, among `then` (e.g. the store's
/// history before the running containers, so a container long gone is still found). An
/// ambiguity in `first` is final: it is not hidden by a unique match in `then`.
pub fn resolve_in_order<A: Candidate, B: Candidate>(
    query: &str,
    first: &[A],
    then: &[B],
    among: Among,
) -> Result<Named, ResolveError> {
    let widen = |e: ResolveError| match e {
        ResolveError::Unknown { query, .. } => ResolveError::Unknown {
            query,
            among,
            known: Vec::new(),
        },
        other => other,
    };
    match resolve(query, among, first) {
        Ok(c) => Ok(Named::of(c)),
        Err(e) if e.is_unknown() => resolve(query, among, then)
            .map(|c| Named::of(c))
            .map_err(widen),
        Err(e) => Err(e),
    }
}

/// The short form used when listing what is running: the id as container tools print it,
/// with the name.
fn short<C: Candidate>(c: &C) -> String {
    let id = crate::short_id(c.id());
    match c.name() {
        Some(n) => format!("{id} ({n})"),
        None => id.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(id: &str, name: Option<&str>) -> Named {
        Named {
            id: id.into(),
            name: name.map(Into::into),
        }
    }

    #[test]
    fn exact_id_then_unique_name_then_unique_prefix() {
        let c = [
            n("abc123", Some("web")),
            n("abc999", Some("db")),
            n("web000", None),
        ];
        assert_eq!(resolve("abc999", Among::Store, &c).unwrap().id, "abc999");
        assert_eq!(resolve("web", Among::Store, &c).unwrap().id, "abc123");
        assert_eq!(resolve("web0", Among::Store, &c).unwrap().id, "web000");
        assert_eq!(resolve("abc1", Among::Store, &c).unwrap().id, "abc123");
    }

    #[test]
    fn a_shared_name_is_an_error_listing_ids() {
        let c = [n("aaa111", Some("web")), n("bbb222", Some("web"))];
        let e = resolve("web", Among::Store, &c).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, ResolveError::Ambiguous { .. }));
        assert!(
            text.contains("aaa111 (web)") && text.contains("bbb222 (web)"),
            "{text}"
        );
        assert!(text.contains("use a longer id prefix"), "{text}");
    }

    #[test]
    fn unknown_says_where_it_looked_and_how_to_find_it() {
        let c = [n("abc123", Some("web"))];
        let e = resolve("nope", Among::Running, &c).unwrap_err().to_string();
        assert_eq!(
            e,
            "no running container matches 'nope'; running: abc123 (web)"
        );
        let e = resolve("nope", Among::Store, &c).unwrap_err().to_string();
        assert!(e.contains("quarry ps --all"), "{e}");
        let none: [Named; 0] = [];
        let e = resolve("x", Among::Running, &none).unwrap_err().to_string();
        assert!(e.contains("none (see `quarry ps`)"), "{e}");
        assert!(resolve("", Among::Store, &c).unwrap_err().is_unknown());
    }

    #[test]
    fn in_order_falls_through_only_when_nothing_matched() {
        let store = [n("aaa111", Some("web")), n("aaa222", None)];
        let live = [n("ccc333", Some("db"))];
        let found = resolve_in_order("db", &store, &live, Among::StoreOrRunning).unwrap();
        assert_eq!(found.id, "ccc333");
        let e = resolve_in_order("aaa", &store, &live, Among::StoreOrRunning).unwrap_err();
        assert!(matches!(e, ResolveError::Ambiguous { .. }), "{e}");
        let e = resolve_in_order("zzz", &store, &live, Among::StoreOrRunning).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("no container in the store or running matches 'zzz'"),
            "{e}"
        );
    }
}
