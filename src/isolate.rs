//! `quarry isolate` and `quarry release`: quarantine a container's network, and lift it.

use anyhow::Context;
use quarry_containers::Inventory;
use quarry_containers::resolve::{Among, Named, resolve_in_order};
use quarry_isolate::{AllowRule, Dropped, Isolation, Plan};

use crate::action;
use crate::cli::{Format, IsolateArgs, ReleaseArgs};
use crate::exit;
use crate::output::print_table;

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
        print_plan(&plan, args.out.format)?;
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
    match args.out.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&outcome)?),
        Format::Table => {
            if outcome.changed {
                println!(
                    "isolated {} in {:.1} ms (every layer in {:.1} ms): no packets or frames in or out{}",
                    crate::output::shown(&container.to_string()),
                    outcome.effective_after_ms,
                    outcome.all_layers_after_ms,
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
            for note in &outcome.notes {
                println!("note: {note}");
            }
        }
    }
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
                            d.as_ref().map(layer_drops).unwrap_or_default(),
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
    match args.out.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&outcome)?),
        Format::Table => match &outcome.released {
            Some(i) => {
                println!(
                    "released {} (isolated since {}); the quarantine dropped {} packets out and {} in ({})",
                    crate::output::shown(name.as_deref().unwrap_or(&id)),
                    i.since,
                    outcome.dropped.egress,
                    outcome.dropped.ingress,
                    layer_drops(&outcome.dropped)
                );
                for note in &outcome.notes {
                    println!("note: {note}");
                }
            }
            None => println!(
                "{} is not isolated; nothing to release",
                crate::output::shown(name.as_deref().unwrap_or(&id))
            ),
        },
    }
    Ok(recorded.exit_code())
}

/// Drops per layer, for people: `cgroup_skb 3/0, netns 5/1, host 0/0` (out/in).
fn layer_drops(d: &Dropped) -> String {
    d.layers
        .iter()
        .map(|l| {
            let shared = if l.shared_with.is_empty() {
                String::new()
            } else {
                format!(" shared with {}", l.shared_with.join(","))
            };
            let state = match l.in_place {
                Some(true) => "",
                // A rule inserted, changed or deleted in its tables since isolate.
                Some(false) if l.tampered => " (its rules were CHANGED since isolate)",
                // Deleted from inside by the container (CAP_NET_ADMIN), or by someone else.
                Some(false) => " (its tables are GONE)",
                None => " (not checked: the namespace cannot be entered)",
            };
            format!("{} {}/{}{shared}{state}", l.layer, l.egress, l.ingress)
        })
        .collect::<Vec<_>>()
        .join(", ")
        + " out/in"
}

fn print_plan(plan: &Plan, format: Format) -> anyhow::Result<()> {
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(plan)?);
        return Ok(());
    }
    let who = plan.container_name.as_deref().unwrap_or(&plan.container_id);
    println!("dry run: nothing is attached or changed");
    if plan.already_isolated {
        println!("{who} is already isolated: isolating it again would change nothing");
    }
    let rules = |r: &[AllowRule]| {
        if r.is_empty() {
            "nothing".to_string()
        } else {
            r.iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    println!(
        "1. cgroup_skb ingress+egress on {} (cgroup id {}), links pinned in {}; allows {}",
        plan.cgroup_dir,
        plan.cgroup_id,
        plan.pins,
        rules(&plan.cgroup_allow)
    );
    match &plan.netns {
        Some(n) => {
            println!(
                "2. nftables in network namespace {} (inet input/output; netdev egress on {}); allows {}; ARP/ND only for {}",
                n.netns_inode,
                if n.devices.inside.is_empty() {
                    "no interface".to_string()
                } else {
                    n.devices.inside.join(", ")
                },
                rules(&n.allow),
                rules(&n.neighbours)
            );
            match &n.host_script {
                Some(_) => println!(
                    "3. nftables netdev ingress+egress on the host side: {}",
                    n.devices
                        .host
                        .iter()
                        .map(|h| format!("{} (ifindex {})", h.ifname, h.ifindex))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => println!("3. no host-side layer: no host peer of its interfaces"),
            }
            println!("   shared by: {}", n.members.join(", "));
        }
        None => println!("2./3. no namespace-level layer"),
    }
    for note in &plan.notes {
        println!("note: {note}");
    }
    Ok(())
}
