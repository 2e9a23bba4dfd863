//! Retention while recording: the store's retention policy applied at start and then on a
//! schedule, beside the drain loop.
//!
//! Sealing goes on meanwhile: retention and seals share the store through the manifest lock,
//! and the hour being recorded is never deleted. What retention removes is the store's to
//! decide (`Store::retain`); this module only runs it, off the async thread, and logs what it
//! did. A failed run never stops the recording.

use std::time::Duration;

use quarry_store::human::human_bytes;
use quarry_store::{RetentionPolicy, Store};

/// Applies `policy` to `store` at once and then every `interval` (at least every second),
/// until the task is dropped or aborted.
pub async fn every(store: Store, policy: RetentionPolicy, interval: Duration) {
    // A zero interval would make tokio panic; more often than every second is never needed.
    let mut tick = tokio::time::interval(interval.max(Duration::from_secs(1)));
    loop {
        tick.tick().await;
        let (store, policy) = (store.clone(), policy.clone());
        let run =
            tokio::task::spawn_blocking(move || store.retain(&policy, chrono::Utc::now(), false))
                .await;
        match run {
            Ok(Ok(report)) => {
                for w in &report.warnings {
                    log::warn!("retention: {w}");
                }
                if !report.removed.is_empty() || !report.compacted.is_empty() {
                    log::info!(
                        "retention: removed {} segments ({}), merged {} groups; {} segments ({}) \
                         kept",
                        report.removed.len(),
                        human_bytes(report.removed_bytes()),
                        report.compacted.len(),
                        report.segments_after,
                        human_bytes(report.bytes_after)
                    );
                }
            }
            Ok(Err(e)) => log::error!(
                "retention failed (recording goes on): {}",
                quarry_store::human::with_causes(&e)
            ),
            Err(e) => log::error!("retention task failed (recording goes on): {e}"),
        }
    }
}
