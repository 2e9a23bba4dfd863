//! `quarry export`: a container's evidence into one verifiable bundle.

use anyhow::Context;
use quarry_evidence::{ExportRequest, Progress, SecretKey};

use crate::action;
use crate::cli::ExportArgs;
use crate::output::emit;

pub fn run(args: ExportArgs) -> anyhow::Result<u8> {
    let store = args.store.existing()?;
    let store_dir = store.root().to_path_buf();
    let quarry_containers::resolve::Named { id, name } = store.find_container(&args.container)?;
    let key = match &args.sign {
        Some(p) => Some(SecretKey::load(p)?),
        None => None,
    };
    if let (Some(s), Some(u)) = (args.since, args.until) {
        anyhow::ensure!(s < u, "--since ({s}) must be before --until ({u})");
    }
    let request = ExportRequest {
        store: &store,
        container_id: id.clone(),
        container_name: name.clone(),
        since: args.since,
        until: args.until,
        case_dir: args.case.clone(),
        output: args.output.clone(),
        signing_key: key.as_ref(),
        actor: quarry_store::action::actor(),
        host: quarry_store::action::local_hostname(),
        command: quarry_store::action::command_line(),
    };
    let bar = crate::output::byte_progress("exporting", args.quiet);
    let started = std::time::Instant::now();
    let result = quarry_evidence::export(&request, &mut |p| match p {
        Progress::Start { total_bytes } => bar.set_length(total_bytes),
        Progress::Advance { bytes } => bar.inc(bytes),
    });
    bar.finish_and_clear();
    let outcome = action::Outcome::of(&result, |r| r.action_detail(&request));
    let recorded = action::record_maybe_on(
        &store_dir,
        "export",
        Some((&id, name.as_deref())),
        None,
        outcome,
    );
    let report = result.with_context(|| format!("exporting {}", args.container))?;
    for s in &report.skipped {
        eprintln!("warning: {}", crate::output::shown(s));
    }
    let elapsed = started.elapsed();
    emit(args.out.format, &report, |w| {
        report.render_text(elapsed, args.sign.as_deref(), w)
    })?;
    Ok(recorded.exit_code())
}
