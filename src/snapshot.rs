//! `quarry snapshot` and `quarry restore`: a live CRIU checkpoint kept as evidence, and bringing
//! it back in isolation.

use std::path::Path;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use quarry_containers::Inventory;
use quarry_snapshot::{Mismatch, Options, Progress, RestoreOptions};

use crate::action;
use crate::cli::{Format, HashArg, RestoreArgs, SnapshotArgs};
use crate::exit;
use crate::output::{emit, print_rows};

pub fn run(args: SnapshotArgs) -> anyhow::Result<u8> {
    let store_dir = args.store.resolve();
    if let Some(case) = &args.verify {
        return verify(case, args.out.format);
    }
    let query = args
        .container
        .as_deref()
        .context("name the container to snapshot")?;
    let inventory = Inventory::discover();
    let container = inventory.resolve(query)?;
    let case_dir = args
        .case
        .clone()
        .unwrap_or_else(|| quarry_snapshot::default_case_dir(container));
    let opts = Options {
        case_dir,
        stop: args.stop,
        store: Some(store_dir.clone()),
        criu: args.criu.clone(),
        command: quarry_store::action::command_line(),
        operator: quarry_store::action::actor(),
        host: quarry_store::action::local_hostname(),
        reason: args.reason.clone(),
        hash: match args.hash {
            HashArg::Blake3 => quarry_snapshot::HashAlg::Blake3,
            HashArg::Sha256 => quarry_snapshot::HashAlg::Sha256,
        },
    };

    // Progress goes to stderr, and only to a terminal (indicatif hides itself otherwise).
    let bar = ProgressBar::new_spinner();
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let mut step = String::new();
    let result = quarry_snapshot::snapshot(container, &opts, &mut |p| match p {
        Progress::Step(s) => {
            if let Some(t0) = crate::STARTED.get() {
                log::debug!("{:.0} ms: {s}", t0.elapsed().as_secs_f64() * 1000.0);
            }
            step = s.to_string();
            bar.set_style(ProgressStyle::default_spinner());
            bar.set_message(step.clone());
        }
        Progress::Bytes { done, total } => {
            if bar.length() != Some(total) {
                bar.set_style(
                    ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes}")
                        .expect("valid template")
                        .progress_chars("=> "),
                );
                bar.set_length(total);
                bar.set_message(step.clone());
            }
            bar.set_position(done);
        }
    });
    bar.finish_and_clear();

    let recorded = action::record_on(
        &store_dir,
        "snapshot",
        &container.id,
        container.name.as_deref(),
        args.reason.as_deref(),
        quarry_snapshot::Report::action_outcome(result.as_ref(), &opts.case_dir),
    );
    let r = result?;
    emit(args.out.format, &r, |w| r.render_text(container, w))?;
    Ok(recorded.exit_code())
}

fn verify(case: &Path, format: Format) -> anyhow::Result<u8> {
    let problems = quarry_snapshot::verify_case(case)?;
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "case": case, "ok": problems.is_empty(), "problems": problems
            }))?
        ),
        Format::Table if problems.is_empty() => {
            println!("{}: every file matches the manifest", case.display())
        }
        Format::Table => {
            print_rows(&Mismatch::COLUMNS, &problems, Mismatch::row);
            if let Some(advice) = Mismatch::advice(case, &problems) {
                println!("{advice}");
            }
        }
    }
    Ok(if problems.is_empty() {
        exit::OK
    } else {
        exit::VERIFY_FAILED
    })
}

pub fn restore(args: RestoreArgs) -> anyhow::Result<u8> {
    let r = quarry_snapshot::restore(
        &args.case,
        &RestoreOptions {
            workdir: args.workdir,
            rootfs: args.rootfs,
            binds: args.bind,
            criu: args.criu,
        },
    )?;
    emit(args.out.format, &r, |w| r.render_text(&args.case, w))?;
    Ok(exit::OK)
}
