//! Sigma rules for Linux, converted to SQL hunt rules over the views.
//!
//! `quarry hunt --sigma DIR` loads every `*.yml`/`*.yaml` file in DIR (each YAML document in
//! a file is a rule), converts each rule into a [`hunt::Rule`](crate::hunt::Rule) and runs it
//! with the built-in rules: its findings carry the Sigma id and title, its level as the
//! severity (`informational` is `info`) and the ATT&CK techniques among its tags
//! (`attack.t1059.004` is `T1059.004`).
//!
//! What is converted: `logsource` product `linux` with category `process_creation`,
//! `file_event`, `file_access` or `network_connection`; the fields of the
//! [mapping](fields); the modifiers `contains`, `startswith`, `endswith`, `all`, `cased`,
//! `windash`, `re` (with `i`, `m`, `s`), `cidr`, `exists`, `lt`/`lte`/`gt`/`gte`; lists of
//! values and of maps, `null`; conditions with `and`, `or`, `not`, parentheses, `1 of` and
//! `all of` a name pattern or `them`. How matching is converted is in [`convert`].
//!
//! What is refused, with the rule's id, the construct and its line: keyword searches (a value
//! without a field), a field the mapping does not have, other modifiers, aggregations and
//! `timeframe`, other products, services and categories. A refused rule does not stop the
//! others from loading ([`Loaded::refused`]). A file holding one rule may have a fixture
//! beside it (`<name>.test.json`, see [`crate::fixture`]) that `quarry hunt --test` runs.
//!
//! Rule files are hostile input. This module must never put a rule's text into SQL except as
//! a quoted literal of a value it has validated: field names go through the mapping, values
//! through [`crate::timeline::sql_literal`] (and the generated statement through the same
//! read-only [guard](crate::guard) as every rule). It reads only plain files of the directory
//! it is given, never following a symlink, each at most [`MAX_FILE`] bytes.

pub mod cidr;
pub mod convert;
pub mod fields;
pub mod model;
pub mod parse;

use std::path::Path;

use crate::hunt::Rule;
use crate::{QueryError, Result};

/// The largest rule file read: real Sigma rules are a few KiB.
pub const MAX_FILE: u64 = 1 << 20;

/// What is wrong with a Sigma rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The rule uses something Quarry does not convert; `reason` says why or what to do.
    Unsupported { construct: String, reason: String },
    /// The rule is not a valid Sigma rule.
    Malformed(String),
}

/// A Sigma rule that was not loaded: where it is, which rule, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}:{line}: Sigma rule {}: {}", rule.as_deref().unwrap_or("(no id)"), describe(problem))]
pub struct SigmaError {
    pub path: String,
    /// The rule's id, when it got as far as having one.
    pub rule: Option<String>,
    /// 1-based line in the file.
    pub line: usize,
    pub problem: Problem,
}

fn describe(problem: &Problem) -> String {
    match problem {
        Problem::Unsupported { construct, reason } => {
            format!("{construct} is not supported ({reason})")
        }
        Problem::Malformed(text) => text.clone(),
    }
}

/// The rules of a Sigma directory: those converted and those refused.
#[derive(Debug, Default)]
pub struct Loaded {
    pub rules: Vec<Rule>,
    pub refused: Vec<SigmaError>,
}

/// Loads every `*.yml` and `*.yaml` file in `dir` (plain files only, not following
/// symlinks), in name order. Fails only when the directory itself cannot be read.
pub fn load_dir(dir: &Path) -> Result<Loaded> {
    let entries = std::fs::read_dir(dir).map_err(|e| QueryError::io(dir, e))?;
    let mut paths: Vec<_> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
        .collect();
    paths.sort();
    let mut loaded = Loaded::default();
    for path in paths {
        let name = path.display().to_string();
        let refuse = |line, problem| SigmaError {
            path: name.clone(),
            rule: None,
            line,
            problem,
        };
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) => {
                loaded
                    .refused
                    .push(refuse(0, Problem::Malformed(format!("cannot read: {e}"))));
                continue;
            }
        };
        if !meta.is_file() {
            continue;
        }
        if meta.len() > MAX_FILE {
            loaded.refused.push(refuse(
                0,
                Problem::Malformed(format!("larger than {MAX_FILE} bytes: not a rule file")),
            ));
            continue;
        }
        match read_plain(&path) {
            Ok(text) => {
                let converted = convert_text(&name, &text);
                // A file of one rule may have a fixture beside it, as SQL rules do
                // (`<name>.test.json`, a plain file), for `quarry hunt --test`.
                let fixture = match converted.as_slice() {
                    [Ok(_)] => read_fixture(&path.with_extension("test.json")),
                    _ => None,
                };
                for rule in converted {
                    match rule {
                        Ok(mut rule) => {
                            rule.fixture = fixture.clone();
                            loaded.rules.push(rule)
                        }
                        Err(e) => loaded.refused.push(e),
                    }
                }
            }
            Err(e) => loaded
                .refused
                .push(refuse(0, Problem::Malformed(format!("cannot read: {e}")))),
        }
    }
    // Two rules with one id would make findings ambiguous: the later file's is refused.
    let mut seen = std::collections::HashSet::new();
    let mut rules = Vec::new();
    for rule in std::mem::take(&mut loaded.rules) {
        if seen.insert(rule.id.clone()) {
            rules.push(rule);
        } else {
            let (path, line) = split_origin(&rule.origin);
            loaded.refused.push(SigmaError {
                path,
                rule: Some(rule.id.clone()),
                line,
                problem: Problem::Malformed("another rule already has this id".into()),
            });
        }
    }
    loaded.rules = rules;
    Ok(loaded)
}

fn read_fixture(path: &Path) -> Option<String> {
    std::fs::symlink_metadata(path)
        .is_ok_and(|m| m.is_file())
        .then(|| read_plain(path).ok())
        .flatten()
}

/// Reads `path` without following a symlink put there after it was listed.
fn read_plain(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let mut text = String::new();
    file.take(MAX_FILE + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE {
        return Err(std::io::Error::other("grew past the size limit while read"));
    }
    Ok(text)
}

fn split_origin(origin: &str) -> (String, usize) {
    match origin.rsplit_once(':') {
        Some((path, line)) => (path.to_string(), line.parse().unwrap_or(0)),
        None => (origin.to_string(), 0),
    }
}

/// Converts every rule of one file's `text`; `path` names it in errors and in each rule's
/// origin (`path:line`).
pub fn convert_text(path: &str, text: &str) -> Vec<std::result::Result<Rule, SigmaError>> {
    let error = |rule: Option<String>, (line, problem): parse::Located| SigmaError {
        path: path.to_string(),
        rule,
        line,
        problem,
    };
    let documents = match parse::documents(text) {
        Ok(d) => d,
        Err(located) => return vec![Err(error(None, located))],
    };
    documents
        .into_iter()
        .map(|doc| {
            let sigma = doc.rule.map_err(|l| error(doc.id.clone(), l))?;
            let sql = convert::to_sql(&sigma).map_err(|l| error(doc.id.clone(), l))?;
            // The converter writes only mapped expressions and literals; the guard checks
            // the result like any rule's SQL all the same.
            crate::guard::check(&sql).map_err(|e| {
                error(
                    doc.id.clone(),
                    (
                        sigma.line,
                        Problem::Malformed(format!("converted SQL refused: {e}")),
                    ),
                )
            })?;
            let mut description = sigma.description.trim().to_string();
            if !sigma.tags.is_empty() {
                if !description.is_empty() {
                    description.push(' ');
                }
                description.push_str(&format!("(Sigma tags: {})", sigma.tags.join(", ")));
            }
            Ok(Rule {
                mitre: sigma.techniques(),
                id: sigma.id,
                title: sigma.title,
                severity: sigma.severity,
                description,
                sql,
                origin: format!("{path}:{}", doc.line),
                fixture: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
