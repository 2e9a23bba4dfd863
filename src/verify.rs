//! `quarry verify`: re-hash a store and check its manifest chain.

use anyhow::Context;
use quarry_store::{Store, verify_store};

use crate::cli::{Format, VerifyArgs};
use crate::exit;
use crate::output::shown;

pub fn run(args: VerifyArgs) -> anyhow::Result<u8> {
    if let Some(url) = args
        .store
        .dir
        .as_deref()
        .and_then(|d| d.to_str())
        .filter(|d| quarry_bucket::BucketUrl::is_bucket(d))
    {
        return bucket(url, &args);
    }
    let store_dir = match &args.path {
        Some(p) if p.is_dir() => p.clone(),
        Some(p) => return bundle(p, &args),
        None => args.store.resolve(),
    };
    let store = Store::at(&store_dir);
    let report = verify_store(&store)
        .with_context(|| format!("verifying the store at {}", store_dir.display()))?;
    match args.out.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Table => {
            for p in &report.problems {
                println!("✗ {}", shown(&p.to_string()));
            }
            for p in &report.pending {
                println!(
                    "… pending: {} is logged but was not moved into place (the recorder \
                     stopped mid-seal); the next `quarry record` on this store completes it",
                    shown(&p.path)
                );
            }
            if !report.exposed.is_empty() {
                let writable = report.exposed.iter().filter(|e| e.world_writable).count();
                println!(
                    "! {} store entries are open to every local user{}: evidence holds argv, \
                     paths and addresses of the whole node; `chmod -R o-rwx {}` (the recorder \
                     creates 0750/0640)",
                    report.exposed.len(),
                    if writable > 0 {
                        format!(" ({writable} writable by anyone)")
                    } else {
                        String::new()
                    },
                    store_dir.display()
                );
                for e in report.exposed.iter().take(5) {
                    println!("  {} {}", e.mode, shown(&e.path));
                }
                if report.exposed.len() > 5 {
                    println!(
                        "  … and {} more (--format json lists all)",
                        report.exposed.len() - 5
                    );
                }
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
            for r in &report.removals {
                println!(
                    "- removed {} segments ({} rows, {} bytes) between {} and {}: {}",
                    r.segments, r.rows, r.bytes, r.first, r.last, r.reason
                );
            }
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

#[cfg(not(feature = "responder"))]
fn bundle(_path: &std::path::Path, _args: &VerifyArgs) -> anyhow::Result<u8> {
    crate::without_responder()
}

/// `quarry verify --store s3://...`: every host's manifest chain, every object read back.
fn bucket(url: &str, args: &VerifyArgs) -> anyhow::Result<u8> {
    let url = quarry_bucket::BucketUrl::parse(url)?;
    let bucket = quarry_bucket::Bucket::from_env(&url)?;
    let rt = crate::runtime()?;
    let report = rt
        .block_on(quarry_bucket::verify_bucket(&bucket))
        .with_context(|| format!("verifying the bucket {url}"))?;
    match args.out.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Table => {
            for (host, p) in report.all_problems() {
                match host {
                    "" => println!("✗ {}", shown(&p.to_string())),
                    h => println!("✗ host {}: {}", shown(h), shown(&p.to_string())),
                }
            }
            for h in &report.hosts {
                println!(
                    "- host {}: {} segments, {} rows; {} manifest entries, head {}",
                    shown(&h.host),
                    h.segments_verified,
                    h.rows,
                    h.manifest_entries,
                    h.head_hash
                );
            }
            println!(
                "{}: {} hosts, {} segments, {} rows ({} kept after their store removed them); \
                 {} problems",
                if report.is_ok() {
                    "✓ verified"
                } else {
                    "✗ FAILED"
                },
                report.hosts.len(),
                report.segments_verified,
                report.rows,
                report.kept_after_removal,
                report.all_problems().count()
            );
        }
    }
    Ok(if report.is_ok() {
        exit::OK
    } else {
        exit::VERIFY_FAILED
    })
}

/// `quarry verify BUNDLE`: safe extraction, every hash, the file list, the signature.
#[cfg(feature = "responder")]
fn bundle(path: &std::path::Path, args: &VerifyArgs) -> anyhow::Result<u8> {
    let options = quarry_evidence::VerifyOptions {
        trusted_key: match &args.key {
            Some(k) => Some(quarry_evidence::PublicKey::load(k)?),
            None => None,
        },
        extract_to: args.extract_to.clone(),
        max_bytes: args.max_size,
    };
    let report = quarry_evidence::verify_bundle(path, &options)
        .with_context(|| format!("verifying the bundle {}", path.display()))?;
    match args.out.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Table => {
            for p in &report.problems {
                println!("✗ {}", shown(&p.to_string()));
            }
            if let Some(m) = &report.manifest {
                println!(
                    "bundle of container {}{} from {} by {} at {} ({})",
                    shown(m.container.name.as_deref().unwrap_or(&m.container.id)),
                    if m.container.name.is_some() {
                        format!(" ({})", shown(&m.container.id))
                    } else {
                        String::new()
                    },
                    shown(&m.host),
                    shown(&m.actor),
                    shown(&m.created),
                    shown(&m.tool)
                );
            }
            match (&report.signed_by, report.key_trusted) {
                (Some(k), true) => println!("signature: valid, by the given key {k}"),
                (Some(k), false) => println!(
                    "signature: valid, by {k} (not checked against a trusted key: pass --key)"
                ),
                (None, _) if report.problems.is_empty() => {
                    println!("signature: none (the bundle is not signed)")
                }
                (None, _) => {}
            }
            let verdict = if report.is_ok() {
                "✓ verified"
            } else {
                "✗ FAILED"
            };
            println!(
                "{verdict}: {} files, {} bytes extracted from {} bytes; {} problems\nbundle \
                 sha256: {}",
                report.files_verified,
                report.extracted_bytes,
                report.compressed_bytes,
                report.problems.len(),
                report.sha256
            );
            if let Some(dir) = &report.extracted_to {
                println!("extracted to {}", dir.display());
            }
        }
    }
    Ok(if report.is_ok() {
        exit::OK
    } else {
        exit::VERIFY_FAILED
    })
}
