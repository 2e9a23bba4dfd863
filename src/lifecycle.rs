//! `quarry retain`, `quarry hold` and `quarry keygen`: what happens to evidence over time.

use anyhow::Context;
use chrono::Utc;
use quarry_containers::resolve::{Among, resolve_in_order};
use quarry_store::{CompactPolicy, Hold, HoldSpec, RetentionPolicy, Store};

use crate::action;
use crate::cli::{Format, HoldArgs, KeygenArgs, RetainArgs, RetentionFlags};
use crate::exit;
use crate::output::{emit, print_rows};

/// The policy the flags ask for; None when they ask for nothing.
pub fn policy(flags: &RetentionFlags) -> Option<RetentionPolicy> {
    if flags.retain_age.is_none() && flags.retain_size.is_none() && !flags.compact {
        return None;
    }
    Some(RetentionPolicy {
        max_age: flags.retain_age,
        max_bytes: flags.retain_size,
        compact: flags.compact.then(CompactPolicy::default),
        ..Default::default()
    })
}

/// Resolves a container by id, id prefix or name: first among those the store recorded (so
/// containers long gone are found), then among running ones.
pub fn resolve_container(store: &Store, query: &str) -> anyhow::Result<(String, Option<String>)> {
    let recorded = store
        .container_history()
        .with_context(|| format!("reading the containers of {}", store.root().display()))?;
    let live = quarry_containers::Inventory::discover();
    let found = resolve_in_order(query, &recorded, &live.containers, Among::StoreOrRunning)?;
    Ok((found.id, found.name))
}

pub fn retain(args: RetainArgs) -> anyhow::Result<u8> {
    let retention = args.retention.with_config();
    let policy = policy(&retention).context(
        "say what to keep: --retain-age (e.g. 7d), --retain-size (e.g. 50G) and/or --compact",
    )?;
    let store = args.store.existing()?;
    let store_dir = store.root().to_path_buf();
    let result = store.retain(&policy, Utc::now(), args.dry_run);
    let mut recorded = action::Recorded::Yes;
    if !args.dry_run {
        let outcome = action::Outcome::of(&result, |r| r.action_detail(&policy));
        recorded = action::record_maybe_on(&store_dir, "retain", None, None, outcome);
    }
    let report = result.context("applying retention")?;
    emit(args.out.format, &report, |w| report.render_text(w))?;
    if args.out.format == Format::Table {
        for w in &report.warnings {
            eprintln!("WARNING: {w}");
        }
    }
    Ok(recorded.exit_code())
}

pub fn hold(args: HoldArgs) -> anyhow::Result<u8> {
    let store_dir = args.store.resolve();
    let store = Store::at(&store_dir);
    if args.list {
        let holds = store.holds()?;
        let shown: Vec<_> = holds
            .all
            .iter()
            .filter(|h| args.all || h.is_active())
            .collect();
        match args.out.format {
            Format::Json => println!("{}", serde_json::to_string_pretty(&shown)?),
            Format::Table if shown.is_empty() => println!("no holds"),
            Format::Table => print_rows(&Hold::COLUMNS, shown, Hold::row),
        }
        return Ok(exit::OK);
    }
    Store::create(&store_dir)
        .with_context(|| format!("opening the store {}", store_dir.display()))?;
    if let Some(id) = &args.release {
        let result = store.release_hold(id, quarry_store::action::actor(), args.reason.clone());
        let (word, error, container) = match &result {
            Ok(h) => (
                "ok",
                None,
                h.container_id
                    .clone()
                    .map(|c| (c, h.container_name.clone())),
            ),
            Err(e) => ("error", Some(e.to_string()), None),
        };
        let recorded = action::record_maybe_on(
            &store_dir,
            "release-hold",
            container
                .as_ref()
                .map(|(id, n)| (id.as_str(), n.as_deref())),
            args.reason.as_deref(),
            action::Outcome {
                result: word,
                error,
                detail: Some(serde_json::json!({ "hold": id })),
            },
        );
        let hold = result?;
        match args.out.format {
            Format::Json => println!("{}", serde_json::to_string_pretty(&hold)?),
            Format::Table => println!(
                "released hold {}: {}; retention may now delete it",
                hold.id,
                hold.describe()
            ),
        }
        return Ok(recorded.exit_code());
    }
    let container = match &args.container {
        Some(q) => Some(resolve_container(&store, q)?),
        None => None,
    };
    let reason = args
        .reason
        .clone()
        .context("--reason is required to place a hold")?;
    let result = store.add_hold(HoldSpec {
        container_id: container.as_ref().map(|c| c.0.clone()),
        container_name: container.as_ref().and_then(|c| c.1.clone()),
        since: args.since,
        until: args.until,
        reason: reason.clone(),
        created_by: quarry_store::action::actor(),
    });
    let outcome = action::Outcome::of(
        &result,
        |h| serde_json::json!({ "hold": h.id, "since": h.since, "until": h.until }),
    );
    let recorded = action::record_maybe_on(
        &store_dir,
        "hold",
        container
            .as_ref()
            .map(|(id, n)| (id.as_str(), n.as_deref())),
        Some(&reason),
        outcome,
    );
    let hold = result?;
    match args.out.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&hold)?),
        Format::Table => println!(
            "placed hold {}: {}; retention will not delete it until `quarry hold --release {}`",
            hold.id,
            hold.describe(),
            hold.id
        ),
    }
    Ok(recorded.exit_code())
}

#[cfg(feature = "responder")]
pub fn keygen(args: KeygenArgs) -> anyhow::Result<u8> {
    let (secret, public) = quarry_evidence::generate_keypair()?;
    let pub_path = quarry_evidence::keys::public_path_for(&args.output);
    anyhow::ensure!(
        !pub_path.exists(),
        "{} exists already; keys are never overwritten",
        pub_path.display()
    );
    secret.save(&args.output)?;
    public.save(&pub_path)?;
    println!(
        "secret key: {} (mode 0600: keep it safe; sign with `quarry export --sign {}`)\npublic \
         key: {} ({}; give it to whoever verifies: `quarry verify BUNDLE --key {}`)",
        args.output.display(),
        args.output.display(),
        pub_path.display(),
        public.fingerprint(),
        pub_path.display()
    );
    Ok(exit::OK)
}
