//! `quarry posture`: each running container's least-privilege findings.

use anyhow::Context;
use quarry_containers::{CgroupFs, Container, Inventory};
use quarry_posture::{Report, Sources, judge};

use crate::cli::{Format, PostureArgs};
use crate::exit;
use crate::output::print_table;

pub fn run(args: PostureArgs) -> anyhow::Result<u8> {
    let inventory = Inventory::discover();
    let containers: Vec<&Container> = match &args.container {
        Some(query) => vec![
            inventory
                .resolve(query)
                .with_context(|| format!("container {query:?}"))?,
        ],
        None => inventory.containers.iter().collect(),
    };
    let sources = Sources {
        cgroup2: CgroupFs::detect().map(|fs| fs.mount().to_path_buf()),
        ..Sources::default()
    };
    let reports: Vec<Report> = containers.iter().map(|c| judge(&sources, c)).collect();

    match args.out.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&reports)?),
        Format::Table => {
            let rows: Vec<Vec<String>> = reports.iter().flat_map(Report::rows).collect();
            print_table(&Report::COLUMNS, &rows);
        }
    }
    let mut code = exit::OK;
    for r in &reports {
        if let Some(e) = &r.error {
            eprintln!(
                "quarry: posture of {}: {e}",
                crate::output::shown(&r.container)
            );
            code = exit::ERROR;
        }
    }
    if code == exit::OK
        && reports
            .iter()
            .flat_map(|r| &r.findings)
            .any(|f| f.severity >= args.fail_on)
    {
        code = exit::FINDINGS;
    }
    Ok(code)
}
