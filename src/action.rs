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
use quarry_store::action::{RETRY_AFTER, actor, command_line};
use quarry_store::schema::ActionRow;

/// What happened, for the record.
pub struct Outcome<'a> {
    /// ok | unchanged | error
    pub result: &'a str,
    pub error: Option<String>,
    pub detail: Option<serde_json::Value>,
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
pub fn record(store: &Path, row: ActionRow) -> Recorded {
    let Err(e) = Store::record_action(store, &row) else {
        return Recorded::Yes;
    };
    let row_json = serde_json::json!({
        "time": row.time.to_rfc3339(), "action": row.action, "actor": row.actor,
        "container_id": row.container_id, "container_name": row.container_name,
        "reason": row.reason, "detail": row.detail, "result": row.result, "error": row.error,
        "command": row.command,
    });
    let e = anyhow::Error::new(e).context(format!(
        "sealing the action into the store {}",
        store.display()
    ));
    eprintln!(
        "error: the {} (result: {}) is NOT on the record: writing its row to the action table \
         of {} failed {} times: {e:#}\nrecord it by hand; the row: {row_json}",
        row.action,
        row.result,
        store.display(),
        RETRY_AFTER.len() + 1
    );
    Recorded::No
}
