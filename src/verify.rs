//! `quarry verify`: re-hash a store (or a fleet's bucket) and check its manifest chain, or
//! check an exported bundle.

use anyhow::Context;
use quarry_store::{Store, verify_store};

use crate::cli::VerifyArgs;
use crate::exit;
use crate::output::emit;

pub fn run(args: VerifyArgs) -> anyhow::Result<u8> {
    if let Some(dir) = &args.store.dir
        && let Some(url) = quarry_bucket::BucketUrl::of_store(dir)?
    {
        return bucket(&url, &args);
    }
    let store_dir = match &args.path {
        Some(p) if p.is_dir() => p.clone(),
        Some(p) => return bundle(p, &args),
        None => args.store.resolve(),
    };
    let report = verify_store(&Store::at(&store_dir))
        .with_context(|| format!("verifying the store at {}", store_dir.display()))?;
    emit(args.out.format, &report, |w| report.render_text(w))?;
    Ok(verdict(report.is_ok()))
}

#[cfg(not(feature = "responder"))]
fn bundle(_path: &std::path::Path, _args: &VerifyArgs) -> anyhow::Result<u8> {
    crate::without_responder()
}

/// `quarry verify --store s3://...`: every host's manifest chain, every object read back.
fn bucket(url: &quarry_bucket::BucketUrl, args: &VerifyArgs) -> anyhow::Result<u8> {
    let bucket = quarry_bucket::Bucket::from_env(url)?;
    let report = crate::runtime()?
        .block_on(quarry_bucket::verify_bucket(&bucket))
        .with_context(|| format!("verifying the bucket {url}"))?;
    emit(args.out.format, &report, |w| report.render_text(w))?;
    Ok(verdict(report.is_ok()))
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
    emit(args.out.format, &report, |w| report.render_text(w))?;
    Ok(verdict(report.is_ok()))
}

fn verdict(ok: bool) -> u8 {
    if ok { exit::OK } else { exit::VERIFY_FAILED }
}
