//! `quarry baseline` and `quarry drift`: a container's filesystem against its image.

use anyhow::Context;
use quarry_containers::{Container, Inventory};
use quarry_snapshot::drift::{self, Drift};
use quarry_store::schema::{BaselineRow, baseline_batch, baseline_rows};
use quarry_store::{Partition, Store, Table};

use crate::action::{self, Outcome};
use crate::cli::{BaselineArgs, DriftArgs, Format};
use crate::exit;
use crate::output::print_table;

/// Rows per sealed segment of a baseline: a big rootfs is several segments, not one huge batch.
const BASELINE_ROWS_PER_SEGMENT: usize = 50_000;

fn running(inventory: &Inventory, query: &str) -> anyhow::Result<(Container, i32)> {
    let c = inventory
        .resolve(query)
        .with_context(|| format!("container {query:?}"))?
        .clone();
    let pid = c.init_pid.with_context(|| {
        format!(
            "container {query:?} has no running init process; drift and baselines need it running"
        )
    })?;
    Ok((c, pid))
}

pub fn baseline(args: BaselineArgs) -> anyhow::Result<u8> {
    let store_dir = args.store.resolve();
    let inventory = Inventory::discover();
    let (c, pid) = running(&inventory, &args.container)?;
    let rootfs = drift::rootfs_of(std::path::Path::new("/proc"), pid)
        .with_context(|| format!("finding the root filesystem of {}", c.display_name()))?;
    if rootfs.overlay.is_some() {
        anyhow::bail!(
            "{} has an overlay root: its image layers are the baseline already; run `quarry drift {}`",
            crate::output::shown(c.display_name()),
            crate::output::shown(&args.container)
        );
    }
    let now = chrono::Utc::now();
    let rows = drift::baseline(&c.id, &rootfs, now)
        .with_context(|| format!("hashing the rootfs of {}", c.display_name()))?;
    let store = Store::create(&store_dir)
        .with_context(|| format!("opening the store {}", store_dir.display()))?;
    let host = quarry_store::action::local_hostname();
    let partition = Partition::for_time(Table::Baseline, now, &host);
    for chunk in rows.chunks(BASELINE_ROWS_PER_SEGMENT) {
        store
            .seal(
                &partition,
                &baseline_batch(&host, chunk),
                std::process::id(),
                0,
            )
            .context("sealing the baseline into the store")?;
    }
    let entries = rows.iter().filter(|r| r.kind != "note").count();
    let notes: Vec<&str> = rows.iter().filter_map(|r| r.note.as_deref()).collect();
    let id = rows
        .first()
        .map(|r| r.baseline_id.clone())
        .unwrap_or_default();
    let recorded = action::record_on(
        &store_dir,
        "baseline",
        &c.id,
        c.name.as_deref(),
        None,
        Outcome {
            result: "ok",
            error: None,
            detail: Some(serde_json::json!({
                "baseline_id": id, "entries": entries, "rootfs": rootfs.host_path, "notes": notes,
            })),
        },
    );
    match args.out.format {
        Format::Json => println!(
            "{}",
            serde_json::json!({"baseline_id": id, "container": c.id, "entries": entries, "notes": notes})
        ),
        Format::Table => {
            println!(
                "baseline {} of {}: {entries} entries",
                crate::output::shown(&id),
                crate::output::shown(c.display_name())
            );
            for n in notes {
                println!("note: {}", crate::output::shown(n));
            }
        }
    }
    Ok(recorded.exit_code())
}

pub fn drift(args: DriftArgs) -> anyhow::Result<u8> {
    let store_dir = args.store.resolve();
    let inventory = Inventory::discover();
    let (c, pid) = running(&inventory, &args.container)?;
    let rootfs = drift::rootfs_of(std::path::Path::new("/proc"), pid)
        .with_context(|| format!("finding the root filesystem of {}", c.display_name()))?;
    let mut result = if rootfs.overlay.is_some() {
        drift::overlay_drift(
            &rootfs,
            drift::started_ns(std::path::Path::new("/proc"), pid),
        )
    } else {
        let rows = stored_baseline(&store_dir, &c.id)?;
        drift::baseline_drift(&c.id, &rootfs, &rows)
    }
    .with_context(|| format!("working out the drift of {}", c.display_name()))?;
    mark_executed(&store_dir, &c.id, &mut result);
    print(&result, args.out.format)?;
    Ok(if result.entries.is_empty() {
        exit::OK
    } else {
        exit::FINDINGS
    })
}

/// The container's baseline rows, from verified segments only.
fn stored_baseline(
    store: &std::path::Path,
    container_id: &str,
) -> anyhow::Result<Vec<BaselineRow>> {
    if !store.is_dir() {
        return Ok(Vec::new());
    }
    let (batches, skipped) = Store::at(store)
        .read_table_verified(Table::Baseline)
        .with_context(|| format!("reading baselines from {}", store.display()))?;
    for s in &skipped {
        eprintln!("warning: skipped baseline segment {s:?} (run `quarry verify`)");
    }
    Ok(batches
        .iter()
        .flat_map(baseline_rows)
        .filter(|r| r.container_id == container_id)
        .collect())
}

/// Marks entries the recorder saw executed in this container (by the path it resolved).
fn mark_executed(store: &std::path::Path, container_id: &str, drift: &mut Drift) {
    if drift.entries.is_empty() || !store.is_dir() {
        return;
    }
    let sql = format!(
        "select distinct exe_path from process where container_id = '{}' and exe_path is not null",
        container_id.replace('\'', "''")
    );
    // The configured query memory limit applies, as to every query of the store.
    let budget = crate::cli::QueryBudget { memory_limit: None };
    let paths = crate::query::runtime().ok().and_then(|rt| {
        rt.block_on(async {
            let mut catalog = crate::query::open(store, &budget).await.ok()?;
            catalog.sql(&sql).await.ok()
        })
    });
    let Some(batches) = paths else {
        drift
            .notes
            .push("the store could not be queried: `executed` is unknown".into());
        return;
    };
    use arrow::array::{Array, AsArray};
    let executed: std::collections::BTreeSet<String> = batches
        .iter()
        .flat_map(|b| {
            let a = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8)
                .expect("text column");
            let a = a.as_string::<i32>().clone();
            (0..a.len())
                .filter(|i| !a.is_null(*i))
                .map(|i| a.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    for e in &mut drift.entries {
        e.executed = executed.contains(&e.path);
    }
}

fn print(drift: &Drift, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(drift)?),
        Format::Table => {
            let rows: Vec<Vec<String>> = drift
                .entries
                .iter()
                .map(|e| {
                    let exec = [
                        e.made_executable
                            .then_some("+x")
                            .or(e.executable.then_some("x")),
                        e.executed.then_some("ran"),
                    ]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(",");
                    vec![
                        e.change.to_string(),
                        e.kind.clone(),
                        e.path.clone(),
                        e.size.map(|s| s.to_string()).unwrap_or_default(),
                        e.mode.clone().unwrap_or_default(),
                        e.sha256
                            .as_deref()
                            .map(|s| s[..s.len().min(16)].to_string())
                            .unwrap_or_default(),
                        exec,
                    ]
                })
                .collect();
            print_table(
                &["CHANGE", "TYPE", "PATH", "SIZE", "MODE", "SHA256", "EXEC"],
                &rows,
            );
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
