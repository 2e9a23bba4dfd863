//! Writing responder actions to the store's `action` table, so every isolate, release,
//! snapshot and export is on the record.

use std::path::Path;

use anyhow::Context;
use quarry_store::schema::{ActionRow, action_batch};
use quarry_store::{Partition, Store, Table};

/// The exact command line, for the record.
pub fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

/// What happened, for the record.
pub struct Outcome<'a> {
    /// ok | unchanged | error
    pub result: &'a str,
    pub error: Option<String>,
    pub detail: Option<serde_json::Value>,
}

/// Records `action` on a container by the invoking user, now, with the exact command line.
pub fn record_on(
    store: &Path,
    action: &str,
    container_id: &str,
    container_name: Option<&str>,
    reason: Option<&str>,
    outcome: Outcome<'_>,
) -> anyhow::Result<()> {
    record(
        store,
        ActionRow {
            time: chrono::Utc::now(),
            action: action.into(),
            actor: quarry_isolate::actor(),
            container_id: Some(container_id.into()),
            container_name: container_name.map(Into::into),
            reason: reason.map(Into::into),
            detail: outcome.detail.map(|d| d.to_string()),
            result: outcome.result.into(),
            error: outcome.error,
            command: command_line(),
        },
    )
}

/// Seals one action row into the store at `store` (created if missing).
pub fn record(store: &Path, row: ActionRow) -> anyhow::Result<()> {
    let store = Store::create(store)
        .with_context(|| format!("opening the store {} to record the action", store.display()))?;
    let host = quarry_recorder::local_hostname();
    let partition = Partition::for_time(Table::Action, row.time, &host);
    store
        .seal(
            &partition,
            &action_batch(&host, &[row]),
            std::process::id(),
            0,
        )
        .context("sealing the action into the store")?;
    Ok(())
}

/// Records `action` by the invoking user, now, on a container when one is concerned (`retain`
/// concerns the whole store; a hold may cover every container).
pub fn record_maybe_on(
    store: &Path,
    action: &str,
    container: Option<(&str, Option<&str>)>,
    reason: Option<&str>,
    outcome: Outcome<'_>,
) -> anyhow::Result<()> {
    record(
        store,
        ActionRow {
            time: chrono::Utc::now(),
            action: action.into(),
            actor: quarry_isolate::actor(),
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
