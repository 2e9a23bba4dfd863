//! `quarry isolate` and `quarry release`: quarantine a container's network, and lift it.

use anyhow::Context;
use quarry_containers::Inventory;
use quarry_containers::resolve::{Among, Named, resolve_in_order};
use quarry_isolate::{AllowRule, Dropped, Isolation};

use crate::action;
use crate::cli::{Format, IsolateArgs, ReleaseArgs};
use crate::exit;
use crate::output::{emit, print_rows};

pub fn run(args: IsolateArgs) -> anyhow::Result<u8> {
    let store_dir = args.store.resolve();
    if args.status {
        return status(args.out.format);
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
    // --allow replaces the config file's allow-list; without it, the file's applies.
    let allow_list = if args.allow.is_empty() {
        &crate::config::current().isolate.allow
    } else {
        &args.allow
    };
    let allow: Vec<AllowRule> = allow_list
        .iter()
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let target = quarry_isolate::Target::find(query)?;
    let container = &target.container;
    let (cgroup_dir, others_in_netns) = (&target.cgroup_dir, &target.others_in_netns);
    if args.dry_run {
        let plan = quarry_isolate::plan(container, cgroup_dir, &allow, others_in_netns)?;
        emit(args.out.format, &plan, |w| plan.render_text(w))?;
        return Ok(exit::OK);
    }
    let result = quarry_isolate::isolate(
        container,
        cgroup_dir,
        &allow,
        args.reason.as_deref(),
        args.force,
        others_in_netns,
        &quarry_store::action::actor(),
    );

    let (result_word, error, detail) = match &result {
        Ok(o) => (
            if o.changed { "ok" } else { "unchanged" },
            None,
            Some(o.action_detail()),
        ),
        Err(e) => ("error", Some(e.to_string()), None),
    };
    let recorded = action::record_on(
        &store_dir,
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
    emit(args.out.format, &outcome, |w| {
        outcome.render_text(container, query, w)
    })?;
    Ok(recorded.exit_code())
}

fn status(format: Format) -> anyhow::Result<u8> {
    let active: Vec<(Isolation, Option<Dropped>)> = quarry_isolate::list()
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
        Format::Table if active.is_empty() => println!("no container is isolated"),
        Format::Table => print_rows(&Isolation::STATUS_COLUMNS, &active, |(i, d)| {
            i.status_row(d.as_ref())
        }),
    }
    Ok(exit::OK)
}

pub fn release(args: ReleaseArgs) -> anyhow::Result<u8> {
    let store_dir = args.store.resolve();
    // A quarantined container may have exited: look among the quarantines first.
    let isolated: Vec<Named> = quarry_isolate::list()
        .into_iter()
        .map(|i| Named {
            id: i.container_id,
            name: i.container_name,
        })
        .collect();
    let live = Inventory::discover();
    let Named { id, name } = resolve_in_order(
        &args.container,
        &isolated,
        &live.containers,
        Among::IsolatedOrRunning,
    )?;
    let result = quarry_isolate::release(&id);
    let (word, error, detail) = match &result {
        Ok(o) if o.released.is_some() => (
            "ok",
            None,
            Some(serde_json::json!({ "dropped": o.dropped, "notes": o.notes })),
        ),
        Ok(_) => ("unchanged", None, None),
        Err(e) => ("error", Some(e.to_string()), None),
    };
    let recorded = action::record_on(
        &store_dir,
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
    let who = name.as_deref().unwrap_or(&id);
    emit(args.out.format, &outcome, |w| outcome.render_text(who, w))?;
    Ok(recorded.exit_code())
}
