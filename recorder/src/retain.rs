//! Retention while recording: the store's retention policy applied at start and then on a
//! schedule, beside the drain loop.
//!
//! Sealing goes on meanwhile: retention and seals share the store through the manifest lock,
//! and the hour being recorded is never deleted. What retention removes is the store's to
//! decide (`Store::retain`); this module only runs it, off the async thread, and logs what it
//! did. A failed run never stops the recording. Beside `--upload`, segments the bucket does
//! not have yet are kept unless the upload's configuration allows deleting them (see
//! `quarry_store::UploadGate`: a segment deleted anyway is named in its manifest entry and
//! in a warning logged here).

use std::sync::Arc;
use std::time::Duration;

use quarry_store::human::human_bytes;
use quarry_store::{RetentionPolicy, Store};

use crate::upload::UploadState;

/// Applies `policy` to `store` at once and then every `interval` (at least every second),
/// until the task is dropped or aborted. Beside an upload, each run takes from it which
/// segments the bucket has ([`UploadState::gate`]): by default only those may be deleted.
pub async fn every(
    store: Store,
    policy: RetentionPolicy,
    interval: Duration,
    upload: Option<Arc<UploadState>>,
) {
    // A zero interval would make tokio panic; more often than every second is never needed.
    let mut tick = tokio::time::interval(interval.max(Duration::from_secs(1)));
    loop {
        tick.tick().await;
        let (store, mut policy) = (store.clone(), policy.clone());
        policy.upload = upload.as_ref().map(|u| u.gate());
        let run =
            tokio::task::spawn_blocking(move || store.retain(&policy, chrono::Utc::now(), false))
                .await;
        match run {
            Ok(Ok(report)) => {
                for w in &report.warnings {
                    log::warn!("retention: {w}");
                }
                if report.kept_unuploaded > 0 {
                    log::info!(
                        "retention: kept {} segments ({}) a cap would delete until they are \
                         uploaded",
                        report.kept_unuploaded,
                        human_bytes(report.kept_unuploaded_bytes)
                    );
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
