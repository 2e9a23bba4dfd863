//! `quarry ps`: the containers running here (and, with --all, those seen in the store).

use anyhow::Context;
use quarry_containers::{Inventory, history, short_id};
use quarry_store::Store;
use serde::Serialize;

use crate::cli::{Format, PsArgs};
use crate::exit;
use crate::output::print_table;

/// One line of `quarry ps`.
#[derive(Debug, Serialize)]
struct PsEntry {
    id: String,
    name: Option<String>,
    runtime: String,
    image: Option<String>,
    init_pid: Option<i32>,
    cgroup_path: String,
    cgroup_id: Option<u64>,
    netns_inode: Option<u64>,
    host_network: bool,
    pod_name: Option<String>,
    pod_namespace: Option<String>,
    running: bool,
    /// From the store: when rows were first and last attributed to it.
    first_seen: Option<String>,
    last_seen: Option<String>,
}

pub fn run(args: PsArgs) -> anyhow::Result<u8> {
    let store_dir = args.store.resolve();
    let inventory = Inventory::discover();
    let recorded = if args.all {
        Store::at(&store_dir)
            .container_history()
            .with_context(|| format!("reading containers from {}", store_dir.display()))?
    } else {
        Vec::new()
    };
    let secs =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let entries: Vec<PsEntry> = history::listing(&inventory, recorded)
        .into_iter()
        .map(|l| {
            let c = l.container;
            PsEntry {
                id: c.id,
                name: c.name,
                runtime: c.runtime.name().to_string(),
                image: c.image,
                init_pid: c.init_pid,
                cgroup_path: c.cgroup_path,
                cgroup_id: c.cgroup_id,
                netns_inode: c.netns_inode,
                host_network: c.host_network,
                pod_name: c.pod_name,
                pod_namespace: c.pod_namespace,
                running: l.running,
                first_seen: l.first_seen.map(secs),
                last_seen: l.last_seen.map(secs),
            }
        })
        .collect();
    match args.out.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&entries)?),
        Format::Table => {
            let mut header = vec!["CONTAINER ID", "NAME", "RUNTIME", "PID", "IMAGE", "CGROUP"];
            if args.all {
                header.extend(["STATE", "LAST SEEN"]);
            }
            let rows: Vec<Vec<String>> = entries
                .iter()
                .map(|e| {
                    let mut r = vec![
                        short_id(&e.id).to_string(),
                        e.name.clone().unwrap_or_default(),
                        e.runtime.clone(),
                        e.init_pid.map(|p| p.to_string()).unwrap_or_default(),
                        e.image.clone().unwrap_or_default(),
                        e.cgroup_path.clone(),
                    ];
                    if args.all {
                        r.push(if e.running { "running" } else { "gone" }.into());
                        r.push(e.last_seen.clone().unwrap_or_default());
                    }
                    r
                })
                .collect();
            print_table(&header, &rows);
        }
    }
    Ok(exit::OK)
}
