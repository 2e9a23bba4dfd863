//! `quarry export`: a container's evidence into one verifiable bundle.

use anyhow::Context;
use quarry_evidence::{ExportRequest, Progress, SecretKey};
use quarry_store::human::human_bytes;

use crate::action;
use crate::cli::{ExportArgs, Format};
use crate::lifecycle::resolve_container;

pub fn run(args: ExportArgs) -> anyhow::Result<u8> {
    let store = args.store.existing()?;
    let store_dir = store.root().to_path_buf();
    let (id, name) = resolve_container(&store, &args.container)?;
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
    let outcome = action::Outcome::of(&result, |r| {
        serde_json::json!({
            "bundle": r.output, "sha256": r.sha256, "bytes": r.bytes, "rows": r.rows,
            "case": args.case, "case_files": r.case_files, "signed_by": r.signed_by,
            "since": args.since, "until": args.until,
        })
    });
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
    match args.out.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Table => {
            let rows: u64 = report.rows.values().sum();
            let tables: Vec<String> = report
                .rows
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(t, n)| format!("{t} {n}"))
                .collect();
            println!(
                "exported {} of {} ({}) in {:.1}s: {rows} rows ({}), {} case files, from {} \
                 segments",
                report.output.display(),
                crate::output::shown(name.as_deref().unwrap_or(&id)),
                human_bytes(report.bytes),
                started.elapsed().as_secs_f64(),
                if tables.is_empty() {
                    "none".to_string()
                } else {
                    tables.join(", ")
                },
                report.case_files,
                report.segments_read
            );
            println!("bundle sha256: {}", report.sha256);
            match &report.signed_by {
                Some(k) => println!("signed by {k}"),
                None => println!("not signed (use --sign KEY; `quarry keygen` makes one)"),
            }
            println!(
                "check it with `quarry verify {}{}`",
                report.output.display(),
                args.sign
                    .as_ref()
                    .map(|k| format!(
                        " --key {}",
                        quarry_evidence::keys::public_path_for(k).display()
                    ))
                    .unwrap_or_default()
            );
        }
    }
    Ok(recorded.exit_code())
}
