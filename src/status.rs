//! `quarry status`: what the recorder writing into the store says about itself (the status
//! file is quarry-recorder's `status`).

use quarry_recorder::status::StatusFile;
use quarry_store::Store;
use quarry_store::human::human_bytes;

use crate::cli::{Format, StatusArgs};
use crate::exit;

pub fn run(args: StatusArgs) -> anyhow::Result<u8> {
    let status = StatusFile::read(&Store::at(args.store.resolve()))?;
    let (age, running) = (status.age_secs(), status.is_running());
    match args.out.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "running": running, "status": status })
            )?
        ),
        Format::Table => {
            let state = if running { "running" } else { "NOT RUNNING" };
            println!(
                "recorder {state} (pid {}, {}), started {}, status from {} ({age}s ago)",
                status.pid, status.scope, status.started, status.updated
            );
            println!(
                "events: {} total, {:.0}/s; dropped by the kernel: {}; rows not yet sealed: {}",
                status.events, status.events_per_s, status.kernel_drops, status.rows_pending
            );
            for (table, rows) in &status.rows {
                println!(
                    "  {table:<10} {rows:>12} rows  {:>10.0}/s",
                    status.rows_per_s.get(table).copied().unwrap_or(0.0)
                );
            }
            println!(
                "store: {} segments sealed ({} bytes) this run; last: {}",
                status.segments_sealed,
                status.bytes_sealed,
                status.last_segment.as_deref().unwrap_or("none yet")
            );
            if let Some(m) = status.memory_rss_mib {
                println!("memory: {m:.0} MiB resident");
            }
            if let Some(reason) = &status.degraded {
                println!(
                    "DEGRADED ({reason}): still draining the kernel; {} rows not kept so far \
                     (written as gap rows once sealing works again)",
                    status.rows_lost
                );
            } else if status.rows_lost > 0 {
                println!(
                    "{} rows were not kept this run (see the gap table)",
                    status.rows_lost
                );
            }
            if let Some(e) = &status.last_error {
                println!("sealing is failing: {e}");
            }
            if let Some(u) = &status.upload {
                println!(
                    "upload to {} as host {}: {} segments ({}) uploaded this run; backlog: {} \
                     segments ({}){}; last success: {}",
                    u.to,
                    u.host,
                    u.uploaded_segments,
                    human_bytes(u.uploaded_bytes),
                    u.pending_segments,
                    human_bytes(u.pending_bytes),
                    if u.manifest_behind {
                        ", manifest entries behind"
                    } else {
                        ""
                    },
                    u.last_success.as_deref().unwrap_or("none yet")
                );
                if let Some(e) = &u.last_error {
                    println!(
                        "upload failing ({} passes in a row; recording goes on, the store keeps \
                         the backlog): {e}{}",
                        u.failures_in_a_row,
                        u.retry_in_secs
                            .map(|s| format!("; next try in {s}s"))
                            .unwrap_or_default()
                    );
                }
            }
        }
    }
    Ok(if running { exit::OK } else { exit::ERROR })
}
