//! `quarry upload`: ship a store's sealed backlog to a bucket once, and record that it did.

use anyhow::Context;
use quarry_bucket::{Bucket, BucketUrl, UploadProgress, UploadReport, upload_store};
use quarry_store::Store;

use crate::action;
use crate::cli::UploadArgs;
use crate::exit;
use crate::output::emit;

pub fn run(args: UploadArgs) -> anyhow::Result<u8> {
    let url = BucketUrl::parse(&args.to)?;
    let store_dir = args.store.resolve();
    let store = Store::at(&store_dir);
    if !store.manifest_path().is_file() {
        anyhow::bail!(
            "{} is not a store (no manifest); pass the directory `quarry record --store` wrote to",
            store_dir.display()
        );
    }
    let host = args
        .host
        .clone()
        .unwrap_or_else(quarry_store::action::local_hostname);
    let bucket = Bucket::from_env(&url)?;
    let bar = crate::output::byte_progress("uploading", false);
    let rt = crate::runtime()?;
    let result = rt.block_on(upload_store(&store, &bucket, &host, &|p| match p {
        UploadProgress::Start { bytes, .. } => bar.set_length(bytes),
        UploadProgress::Advance { bytes } => bar.inc(bytes),
    }));
    bar.finish_and_clear();
    let outcome = UploadReport::action_outcome(result.as_ref());
    let recorded = action::record_maybe_on(&store_dir, "upload", None, None, outcome);
    let report = result.with_context(|| format!("uploading {} to {url}", store_dir.display()))?;
    emit(args.out.format, &report, |w| {
        report.render_text(&store_dir, w)
    })?;
    if !report.is_ok() {
        return Ok(exit::ERROR);
    }
    Ok(recorded.exit_code())
}
