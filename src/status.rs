//! `quarry status`: what the recorder writing into the store says about itself (the status
//! file is quarry-recorder's `status`).

use quarry_recorder::status::StatusFile;
use quarry_store::Store;

use crate::cli::{Format, StatusArgs};
use crate::exit;

pub fn run(args: StatusArgs) -> anyhow::Result<u8> {
    let status = StatusFile::read(&Store::at(args.store.resolve()))?;
    let running = status.is_running();
    match args.out.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "running": running, "status": status })
            )?
        ),
        Format::Table => status.render_text(&mut std::io::stdout().lock())?,
    }
    Ok(if running { exit::OK } else { exit::ERROR })
}
