//! `quarry ps`: the containers running here (and, with --all, those seen in the store).

use anyhow::Context;
use quarry_containers::Inventory;
use quarry_containers::history::{self, Entry};
use quarry_store::Store;

use crate::cli::{Format, PsArgs};
use crate::exit;
use crate::output::print_rows;

pub fn run(args: PsArgs) -> anyhow::Result<u8> {
    let store_dir = args.store.resolve();
    let recorded = if args.all {
        Store::at(&store_dir)
            .container_history()
            .with_context(|| format!("reading containers from {}", store_dir.display()))?
    } else {
        Vec::new()
    };
    let entries: Vec<Entry> = history::listing(&Inventory::discover(), recorded)
        .into_iter()
        .map(Entry::from)
        .collect();
    match args.out.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&entries)?),
        Format::Table => print_rows(&Entry::columns(args.all), &entries, |e| e.row(args.all)),
    }
    Ok(exit::OK)
}
