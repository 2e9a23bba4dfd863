//! Writing responder actions to the store's `action` table, so every isolate, release,
//! snapshot, export, hold and retention run is on the record, and who ran it (the row and its
//! sealing are quarry-store's `action`).
//!
//! A row is written once the action's outcome is known. Writing it can fail (a full disk, a
//! store someone tampered with) after the action itself succeeded: then the row is tried again,
//! and if it still cannot be written it is printed on stderr in full, to be recorded by hand,
//! and the command exits with [`crate::exit::UNRECORDED`], so neither the action nor the
//! missing record is hidden. Recording never undoes or hides the action.

use std::path::Path;

use quarry_store::Store;
pub use quarry_store::action::Outcome;
use quarry_store::action::unrecorded;
use quarry_store::schema::ActionRow;

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
    outcome: Outcome,
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
/// concerns the whole store; a hold may cover every container). The store is created if
/// missing and tries again on failure; a row it still cannot write is printed on stderr.
pub fn record_maybe_on(
    store: &Path,
    action: &str,
    container: Option<(&str, Option<&str>)>,
    reason: Option<&str>,
    outcome: Outcome,
) -> Recorded {
    record_row(
        store,
        &ActionRow::by_user(action, container, reason, outcome),
    )
}

/// Seals `row` into the store's `action` table (see [`record_maybe_on`]).
pub fn record_row(store: &Path, row: &ActionRow) -> Recorded {
    match Store::record_action(store, row) {
        Ok(_) => Recorded::Yes,
        Err(e) => {
            eprintln!("error: {}", unrecorded(store, row, &e));
            Recorded::No
        }
    }
}
