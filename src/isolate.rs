//! `quarry isolate` and `quarry release`: quarantine a container's network, and lift it.

use anyhow::Context;
use quarry_containers::resolve::Named;
use quarry_isolate::{AllowRule, IsolateOutcome, Isolation, ReleaseOutcome};

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
    let recorded = action::record_on(
        &store_dir,
        "isolate",
        &container.id,
        container.name.as_deref(),
        args.reason.as_deref(),
        IsolateOutcome::action_outcome(result.as_ref(), |e| e.to_string()),
    );
    let outcome = result?;
    emit(args.out.format, &outcome, |w| {
        outcome.render_text(container, query, w)
    })?;
    Ok(recorded.exit_code())
}

fn status(format: Format) -> anyhow::Result<u8> {
    let active = quarry_isolate::status();
    match format {
        // As a JSON value first: the keys of every object in name order.
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::to_value(&active)?)?
        ),
        Format::Table if active.is_empty() => println!("no container is isolated"),
        Format::Table => print_rows(&Isolation::STATUS_COLUMNS, &active, |s| {
            s.isolation.status_row(s.dropped.as_ref())
        }),
    }
    Ok(exit::OK)
}

pub fn release(args: ReleaseArgs) -> anyhow::Result<u8> {
    let store_dir = args.store.resolve();
    let Named { id, name } = quarry_isolate::release_target(&args.container)?;
    let result = quarry_isolate::release(&id);
    let recorded = action::record_on(
        &store_dir,
        "release",
        &id,
        name.as_deref(),
        args.reason.as_deref(),
        ReleaseOutcome::action_outcome(result.as_ref()),
    );
    let outcome = result?;
    let who = name.as_deref().unwrap_or(&id);
    emit(args.out.format, &outcome, |w| outcome.render_text(who, w))?;
    Ok(recorded.exit_code())
}
