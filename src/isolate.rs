//! `quarry isolate` and `quarry release`: quarantine a container's network, and lift it.

use anyhow::Context;
use quarry_containers::{CgroupFs, Inventory};
use quarry_isolate::{AllowRule, Isolation};

use crate::action;
use crate::cli::{Format, IsolateArgs, ReleaseArgs};
use crate::exit;
use crate::output::print_table;

pub fn run(args: IsolateArgs) -> anyhow::Result<u8> {
    if args.status {
        return status(args.format);
    }
    if args.prepare {
        quarry_isolate::prepare()?;
        println!("quarantine programs loaded and pinned; isolating now only attaches them");
        return Ok(exit::OK);
    }
    let query = args
        .container
        .as_deref()
        .context("name the container to isolate (or pass --status)")?;
    let allow: Vec<AllowRule> = args
        .allow
        .iter()
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let inventory = Inventory::discover();
    let container = inventory.resolve(query)?;
    let fs = CgroupFs::detect().context(
        "cgroup v2 is not mounted (see /proc/self/mountinfo); isolate attaches to cgroup2 directories",
    )?;
    let cgroup_dir = fs.dir(&container.cgroup_path);
    let result = quarry_isolate::isolate(
        container,
        &cgroup_dir,
        &allow,
        args.reason.as_deref(),
        args.force,
    );

    let (result_word, error, detail) = match &result {
        Ok(o) => (
            if o.changed { "ok" } else { "unchanged" },
            None,
            Some(serde_json::json!({
                "allow": o.isolation.allow.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
                "effective_after_ms": o.effective_after_ms,
                "nftables": o.isolation.nftables,
                "note": o.nftables_note,
            })),
        ),
        Err(e) => ("error", Some(e.to_string()), None),
    };
    let recorded = action::record_on(
        &args.store,
        "isolate",
        &container.id,
        container.name.as_deref(),
        args.reason.as_deref(),
        action::Outcome {
            result: result_word,
            error,
            detail,
        },
    );
    let outcome = result?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&outcome)?),
        Format::Table => {
            if outcome.changed {
                println!(
                    "isolated {} in {:.1} ms: no packets in or out{}",
                    crate::output::shown(&container.to_string()),
                    outcome.effective_after_ms,
                    if outcome.isolation.allow.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " except {}",
                            outcome
                                .isolation
                                .allow
                                .iter()
                                .map(|r| r.to_string())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                );
                println!("its processes keep running; lift it with `quarry release {query}`");
            } else {
                println!(
                    "{} is already isolated (since {}); nothing changed",
                    crate::output::shown(&container.to_string()),
                    outcome.isolation.since
                );
            }
            if let (true, Some(note)) = (outcome.changed, &outcome.nftables_note) {
                println!("note: {note}");
            }
        }
    }
    Ok(recorded.exit_code())
}

fn status(format: Format) -> anyhow::Result<u8> {
    let active: Vec<(Isolation, Option<quarry_isolate::Dropped>)> = quarry_isolate::list()
        .into_iter()
        .map(|i| {
            let d = quarry_isolate::dropped(&i.container_id);
            (i, d)
        })
        .collect();
    match format {
        Format::Json => {
            let v: Vec<_> = active
                .iter()
                .map(|(i, d)| serde_json::json!({ "isolation": i, "dropped": d }))
                .collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        Format::Table => {
            if active.is_empty() {
                println!("no container is isolated");
            } else {
                let rows: Vec<Vec<String>> = active
                    .iter()
                    .map(|(i, d)| {
                        vec![
                            quarry_containers::short_id(&i.container_id).to_string(),
                            i.container_name.clone().unwrap_or_default(),
                            i.since.clone(),
                            i.allow
                                .iter()
                                .map(|r| r.to_string())
                                .collect::<Vec<_>>()
                                .join(","),
                            d.map(|d| format!("{} out / {} in", d.egress, d.ingress))
                                .unwrap_or_default(),
                            i.reason.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                print_table(
                    &[
                        "CONTAINER ID",
                        "NAME",
                        "SINCE",
                        "ALLOW",
                        "DROPPED",
                        "REASON",
                    ],
                    &rows,
                );
            }
        }
    }
    Ok(exit::OK)
}

pub fn release(args: ReleaseArgs) -> anyhow::Result<u8> {
    // A quarantined container may have exited: look among the quarantines first.
    let active = quarry_isolate::list();
    let by_query: Vec<&Isolation> = active
        .iter()
        .filter(|i| {
            i.container_id == args.container
                || i.container_name.as_deref() == Some(args.container.as_str())
                || i.container_id.starts_with(&args.container)
        })
        .collect();
    let (id, name) = match by_query.as_slice() {
        [one] => (one.container_id.clone(), one.container_name.clone()),
        [] => {
            let inventory = Inventory::discover();
            let c = inventory.resolve(&args.container)?;
            (c.id.clone(), c.name.clone())
        }
        many => anyhow::bail!(
            "'{}' matches several isolated containers: {}; give more of the id",
            args.container,
            many.iter()
                .map(|i| i.container_id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let result = quarry_isolate::release(&id);
    let (word, error, detail) = match &result {
        Ok(o) if o.released.is_some() => (
            "ok",
            None,
            Some(serde_json::json!({ "dropped": o.dropped })),
        ),
        Ok(_) => ("unchanged", None, None),
        Err(e) => ("error", Some(e.to_string()), None),
    };
    let recorded = action::record_on(
        &args.store,
        "release",
        &id,
        name.as_deref(),
        args.reason.as_deref(),
        action::Outcome {
            result: word,
            error,
            detail,
        },
    );
    let outcome = result?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&outcome)?),
        Format::Table => match &outcome.released {
            Some(i) => println!(
                "released {} (isolated since {}); the quarantine dropped {} packets out and {} in",
                crate::output::shown(name.as_deref().unwrap_or(&id)),
                i.since,
                outcome.dropped.egress,
                outcome.dropped.ingress
            ),
            None => println!(
                "{} is not isolated; nothing to release",
                crate::output::shown(name.as_deref().unwrap_or(&id))
            ),
        },
    }
    Ok(recorded.exit_code())
}
