//! `quarry ps`: the containers running here (and, with --all, those seen in the store).

use std::collections::BTreeMap;

use anyhow::Context;
use quarry_containers::{Inventory, short_id};
use quarry_store::schema::{ContainerRow, container_rows};
use quarry_store::{Store, Table};
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
    let inventory = Inventory::discover();
    let mut entries: BTreeMap<String, PsEntry> = inventory
        .containers
        .iter()
        .map(|c| {
            (
                c.id.clone(),
                PsEntry {
                    id: c.id.clone(),
                    name: c.name.clone(),
                    runtime: c.runtime.name().to_string(),
                    image: c.image.clone(),
                    init_pid: c.init_pid,
                    cgroup_path: c.cgroup_path.clone(),
                    cgroup_id: c.cgroup_id,
                    netns_inode: c.netns_inode,
                    host_network: c.host_network,
                    pod_name: c.pod_name.clone(),
                    pod_namespace: c.pod_namespace.clone(),
                    running: true,
                    first_seen: None,
                    last_seen: None,
                },
            )
        })
        .collect();

    if args.all {
        let store = Store::at(&args.store);
        let batches = store
            .read_table(Table::Container)
            .with_context(|| format!("reading containers from {}", args.store.display()))?;
        let mut seen: BTreeMap<String, ContainerRow> = BTreeMap::new();
        let expected = quarry_store::schema::schema_of(Table::Container);
        let (good, foreign): (Vec<_>, Vec<_>) =
            batches.iter().partition(|b| b.schema() == expected);
        if !foreign.is_empty() {
            log::warn!(
                "skipped {} batches of the container table with an unexpected schema (run `quarry verify`)",
                foreign.len()
            );
        }
        for row in good.into_iter().flat_map(container_rows) {
            match seen.get_mut(&row.container_id) {
                Some(s) => {
                    s.first_seen = s.first_seen.min(row.first_seen);
                    if row.last_seen >= s.last_seen {
                        let first = s.first_seen;
                        *s = row;
                        s.first_seen = first;
                    }
                }
                None => {
                    seen.insert(row.container_id.clone(), row);
                }
            }
        }
        for (id, row) in seen {
            let fmt = |t: chrono::DateTime<chrono::Utc>| {
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            };
            let e = entries.entry(id.clone()).or_insert_with(|| PsEntry {
                id,
                name: row.name.clone(),
                runtime: row.runtime.clone(),
                image: row.image.clone(),
                init_pid: row.init_pid,
                cgroup_path: row.cgroup_path.clone(),
                cgroup_id: row.cgroup_id,
                netns_inode: row.netns_inode,
                host_network: row.host_network,
                pod_name: row.pod_name.clone(),
                pod_namespace: row.pod_namespace.clone(),
                running: false,
                first_seen: None,
                last_seen: None,
            });
            e.first_seen = Some(fmt(row.first_seen));
            e.last_seen = Some(fmt(row.last_seen));
        }
    }

    let entries: Vec<PsEntry> = entries.into_values().collect();
    match args.format {
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
