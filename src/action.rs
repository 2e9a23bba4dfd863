//! Writing responder actions to the store's `action` table, so every isolate, release,
//! snapshot, export, hold and retention run is on the record, and who ran it.
//!
//! A row is written once the action's outcome is known. Writing it can fail (a full disk, a
//! store someone tampered with) after the action itself succeeded: then the row is tried again,
//! and if it still cannot be written it is printed on stderr in full, to be recorded by hand,
//! and the command exits with [`crate::exit::UNRECORDED`], so neither the action nor the
//! missing record is hidden. Recording never undoes or hides the action.

use std::path::Path;

use quarry_store::Store;
use quarry_store::action::{actor, command_line, unrecorded};
use quarry_store::schema::ActionRow;

/// What happened, for the record.
pub struct Outcome<'a> {
    /// ok | unchanged | error
    pub result: &'a str,
    pub error: Option<String>,
    pub detail: Option<serde_json::Value>,
}

impl Outcome<'static> {
    /// `ok` with the detail of what was done, or `error` with what failed.
    pub fn of<T, E: std::fmt::Display>(
        result: &Result<T, E>,
        detail: impl FnOnce(&T) -> serde_json::Value,
    ) -> Outcome<'static> {
        match result {
            Ok(r) => Outcome {
                result: "ok",
                error: None,
                detail: Some(detail(r)),
            },
            Err(e) => Outcome {
                result: "error",
                error: Some(e.to_string()),
                detail: None,
            },
        }
    }
}

/// Whether the action's row made it into the store.
#[must_use = "the exit code must say when an action is not on the record"]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Yes,
    /// It could not be written; the row was printed on stderr.
    No,
}

impl Recorded {
    /// The exit code of a command whose action succeeded.
    pub fn exit_code(self) -> u8 {
        match self {
            Recorded::Yes => crate::exit::OK,
            Recorded::No => crate::exit::UNRECORDED,
        }
    }
}

/// Records `action` on a container by the invoking user, now, with the exact command line.
pub fn record_on(
    store: &Path,
    action: &str,
    container_id: &str,
    container_name: Option<&str>,
    reason: Option<&str>,
    outcome: Outcome<'_>,
) -> Recorded {
    record_maybe_on(
        store,
        action,
        Some((container_id, container_name)),
        reason,
        outcome,
    )
}

/// Records `action` by the invoking user, now, on a container when one is concerned (`retain`
/// concerns the whole store; a hold may cover every container).
pub fn record_maybe_on(
    store: &Path,
    action: &str,
    container: Option<(&str, Option<&str>)>,
    reason: Option<&str>,
    outcome: Outcome<'_>,
) -> Recorded {
    record(
        store,
        ActionRow {
            time: chrono::Utc::now(),
            action: action.into(),
            actor: actor(),
            container_id: container.map(|c| c.0.into()),
            container_name: container.and_then(|c| c.1.map(Into::into)),
            reason: reason.map(Into::into),
            detail: outcome.detail.map(|d| d.to_string()),
            result: outcome.result.into(),
            error: outcome.error,
            command: command_line(),
        },
    )
}

/// Seals one action row into the store at `store` (created if missing; the store tries
/// again on failure); if it cannot, prints the row on stderr so it can be recorded by hand.
fn record(store: &Path, row: ActionRow) -> Recorded {
    match Store::record_action(store, &row) {
        Ok(_) => Recorded::Yes,
        Err(e) => {
            eprintln!("error: {}", unrecorded(store, &row, &e));
            Recorded::No
        }
    }
}
