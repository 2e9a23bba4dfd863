//! `quarry baseline` and `quarry drift`: a container's filesystem against its image (the work
//! is quarry-snapshot's `running`; the recorder's automatic baselines are its
//! `baseline::auto_baselines`).

use quarry_containers::Inventory;
use quarry_snapshot::drift::{Drift, DriftEntry};
use quarry_snapshot::running::Running;

use crate::action::{self, Outcome};
use crate::cli::{BaselineArgs, DriftArgs, Format};
use crate::exit;
use crate::output::print_rows;

pub fn baseline(args: BaselineArgs) -> anyhow::Result<u8> {
    let store_dir = args.store.resolve();
    let inventory = Inventory::discover();
    let target = Running::find(&inventory, &args.container)?;
    let taken = target.take_baseline(&store_dir)?;
    let c = target.container;
    let recorded = action::record_on(
        &store_dir,
        "baseline",
        &c.id,
        c.name.as_deref(),
        None,
        Outcome {
            result: "ok",
            error: None,
            detail: Some(taken.action_detail()),
        },
    );
    match args.out.format {
        Format::Json => println!("{}", serde_json::to_string(&taken)?),
        Format::Table => taken.render_text(&mut std::io::stdout().lock())?,
    }
    Ok(recorded.exit_code())
}

pub fn drift(args: DriftArgs) -> anyhow::Result<u8> {
    let store_dir = args.store.resolve();
    let inventory = Inventory::discover();
    let target = Running::find(&inventory, &args.container)?;
    let result = target.drift(
        &store_dir,
        |s| eprintln!("warning: skipped baseline segment {s:?} (run `quarry verify`)"),
        || executed_paths(&store_dir, &target.container.id),
    )?;
    print(&result, args.out.format)?;
    Ok(if result.entries.is_empty() {
        exit::OK
    } else {
        exit::FINDINGS
    })
}

/// The paths the recorder saw executed in this container; a note when the store cannot say.
#[cfg(feature = "responder")]
fn executed_paths(
    store: &std::path::Path,
    container_id: &str,
) -> Result<std::collections::BTreeSet<String>, &'static str> {
    // The configured query memory limit applies, as to every query of the store.
    let budget = crate::cli::QueryBudget { memory_limit: None };
    crate::runtime()
        .ok()
        .and_then(|rt| {
            rt.block_on(async {
                let mut catalog = crate::query::open(store, &budget).await.ok()?;
                catalog.executed_paths(container_id).await.ok()
            })
        })
        .ok_or("the store could not be queried: `executed` is unknown")
}

#[cfg(not(feature = "responder"))]
fn executed_paths(
    _store: &std::path::Path,
    _container_id: &str,
) -> Result<std::collections::BTreeSet<String>, &'static str> {
    Err("this binary has no query engine: `executed` is unknown (a full build fills it in)")
}

fn print(drift: &Drift, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(drift)?),
        Format::Table => {
            print_rows(&DriftEntry::COLUMNS, &drift.entries, DriftEntry::row);
            if !drift.before_start.is_empty() {
                eprintln!(
                    "note: {} changes made by the runtime before the container started are not listed (see --format json, before_start)",
                    drift.before_start.len()
                );
            }
            for n in &drift.notes {
                eprintln!("note: {}", crate::output::shown(n));
            }
        }
    }
    Ok(())
}
