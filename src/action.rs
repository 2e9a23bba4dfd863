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
