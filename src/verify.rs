//! `quarry verify`: re-hash a store and check its manifest chain.

use anyhow::Context;
use quarry_store::{Store, verify_store};

use crate::cli::{Format, VerifyArgs};
use crate::exit;

pub fn run(args: VerifyArgs) -> anyhow::Result<u8> {
    let store = Store::at(&args.store);
    let report = verify_store(&store)
        .with_context(|| format!("verifying the store at {}", args.store.display()))?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Table => {
            for p in &report.problems {
                println!("✗ {p}");
            }
            for p in &report.pending {
                println!(
                    "… pending: {} is logged but was not moved into place (the recorder \
                     stopped mid-seal); the next `quarry record` on this store completes it",
                    p.path
                );
            }
            if report.torn_tail {
                println!(
                    "… the manifest ends in a cut-off line (a writer was killed mid-append); \
                     entries before it are intact"
                );
            }
            let verdict = if report.is_ok() {
                "✓ verified"
            } else {
                "✗ FAILED"
            };
            println!(
                "{verdict}: {} segments, {} rows, {} bytes; {} manifest entries ({} removals); \
                 {} problems\nmanifest head: {}",
                report.segments_verified,
                report.rows,
                report.bytes,
                report.manifest_entries,
                report.removed_segments,
                report.problems.len(),
                report.head_hash
            );
        }
    }
    Ok(if report.is_ok() {
        exit::OK
    } else {
        exit::VERIFY_FAILED
    })
}
