//! `quarry retain`, `quarry hold` and `quarry keygen`: what happens to evidence over time.

use anyhow::Context;
use chrono::Utc;
use quarry_store::{Hold, HoldSpec, Store};

use crate::action;
use crate::cli::{Format, HoldArgs, KeygenArgs, RetainArgs};
use crate::exit;
use crate::output::{emit, print_rows};

pub fn retain(args: RetainArgs) -> anyhow::Result<u8> {
    let retention = args.retention.with_config();
    let policy = retention.policy().context(
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
        let (result, row) = store.release_hold_as_action(id, args.reason.clone());
        let recorded = action::record_row(&store_dir, &row);
        let hold = result?;
        emit(args.out.format, &hold, |w| {
            writeln!(w, "{}", hold.released_text())
        })?;
        return Ok(recorded.exit_code());
    }
    let container = match &args.container {
        Some(q) => Some(store.find_container(q)?),
        None => None,
    };
    let reason = args
        .reason
        .clone()
        .context("--reason is required to place a hold")?;
    let (result, row) = store.place_hold_as_action(HoldSpec {
        container_id: container.as_ref().map(|c| c.id.clone()),
        container_name: container.and_then(|c| c.name),
        since: args.since,
        until: args.until,
        reason,
        created_by: quarry_store::action::actor(),
    });
    let recorded = action::record_row(&store_dir, &row);
    let hold = result?;
    emit(args.out.format, &hold, |w| {
        writeln!(w, "{}", hold.placed_text())
    })?;
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
