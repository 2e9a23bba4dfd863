//! `quarry record`: run the recorder with a live status line until stopped.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use quarry_bucket::{Bucket, BucketUrl};
use quarry_containers::{CgroupFs, Inventory};
use quarry_recorder::stats::Stats;
use quarry_recorder::status::Publisher;
use quarry_recorder::upload::{UploadConfig, UploadStatus, Uploader};
use quarry_recorder::{Recorder, RecorderConfig, SyscallMode};
use quarry_store::human::human_bytes;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::cli::{Format, RecordArgs, RecordUploadArgs, SyscallsArg};
use crate::exit;

pub fn run(args: RecordArgs) -> anyhow::Result<u8> {
    // One malloc arena for all the recorder's threads: rows are built on the drain thread and
    // freed on the sealer's, and with an arena per thread the sealer's grew to ~20 MiB of its
    // own beside the main heap. The threads share little else to contend on.
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only tunes glibc's allocator; it runs before the recorder's threads start.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    let store_dir = args.store.resolve_for_recorder();
    let retention = args.retention.with_config();
    let mut config = RecorderConfig::new(&store_dir);
    config.seal_interval = args.seal_interval();
    config.syscalls = match args.syscalls {
        SyscallsArg::Off => SyscallMode::Off,
        SyscallsArg::All => SyscallMode::All,
    };
    config.exact_syscall_times = args.exact_syscall_times;
    config.module_loads_at_entry = args.record_module_loads;
    if let Some(max) = args.exe_hash_max {
        config.exe_hash_max_bytes = (max > 0).then_some(max);
    }
    config.posture = !args.no_posture;
    // Automatic baselines of plain-rootfs containers, on a thread of their own.
    let baselines = if args.no_baseline {
        None
    } else {
        let (tx, rx) = std::sync::mpsc::sync_channel(64);
        match crate::integrity::auto_baselines(store_dir.clone(), rx) {
            Ok(thread) => {
                config.new_containers = Some(tx);
                Some(thread)
            }
            Err(e) => {
                eprintln!("quarry: warning: automatic baselines off: {e}");
                None
            }
        }
    };
    config.ring_bytes = args.ring_size.unwrap_or(config.syscalls.ring_bytes());
    let mut scope = "all processes".to_string();
    if !args.containers.is_empty() {
        let inventory = Inventory::discover();
        let mut names = Vec::new();
        for query in &args.containers {
            let c = inventory.resolve(query)?;
            let id = c.cgroup_id.with_context(|| {
                format!(
                    "container {c} has no cgroup v2 directory to filter on ({})",
                    c.cgroup_path
                )
            })?;
            config.cgroup_filter.push(id);
            names.push(c.to_string());
        }
        scope = format!("containers {}", names.join(", "));
    }
    if !args.cgroup_paths.is_empty() {
        let fs = CgroupFs::detect().context(
            "no cgroup v2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup/unified)",
        )?;
        for path in &args.cgroup_paths {
            let id = fs.id_of_dir(path).with_context(|| {
                format!(
                    "{} is not a cgroup v2 directory under {}",
                    path.display(),
                    fs.mount().display()
                )
            })?;
            config.cgroup_filter.push(id);
        }
        let paths: Vec<String> = args
            .cgroup_paths
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        scope = if args.containers.is_empty() {
            format!("cgroups {}", paths.join(", "))
        } else {
            format!("{scope} and cgroups {}", paths.join(", "))
        };
    }
    // Checked before recording starts: a rule or output that cannot work is an error now.
    let detect_plan = match args.detect.config()? {
        Some(c) => Some(quarry_detect::Plan::new(&c, &store_dir)?),
        None => None,
    };
    for skipped in detect_plan.iter().flat_map(|p| &p.skipped) {
        eprintln!("quarry: skipped {skipped}");
    }
    let tap = detect_plan.as_ref().map(|_| quarry_detect::tap());
    config.tap = tap.as_ref().map(|(t, _)| t.clone());
    let host = config.host.clone();
    // Checked before recording starts, like detection: a bad URL is an error now.
    let upload = upload_plan(&args.upload, &host)?;
    let recorder = Recorder::start(config)
        .with_context(|| format!("starting the recorder on {}", store_dir.display()))?;
    let store = recorder.store().root().to_path_buf();
    let uploader = match upload {
        Some((bucket, config)) => {
            let (to, as_host) = (bucket.url().to_string(), config.host.clone());
            let uploader = Uploader::start(recorder.store().clone(), bucket, config)
                .context("starting the upload thread")?;
            eprintln!("quarry: uploading to {to} as host {as_host}");
            Some(uploader)
        }
        None => None,
    };
    let upload_state = uploader.as_ref().map(Uploader::state);
    // Commands run without --store find this store through the advertisement; it is
    // withdrawn when `_advert` drops, on every way out of this function.
    let advert_path = quarry_recorder::advert::path();
    let _advert = quarry_recorder::advert::publish(&advert_path, &store)
        .map_err(|e| {
            log::warn!(
                "{:#}; commands without --store will not find this store",
                anyhow::Error::new(e)
            )
        })
        .ok();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let stats = recorder.stats();
    let detection = detect_plan.zip(tap).map(|(plan, (tap, rx))| {
        let outputs: Vec<String> = plan.outputs.iter().map(|o| o.to_string()).collect();
        eprintln!(
            "quarry: live detection: {} rules, alerts to {}",
            plan.rules.len(),
            outputs.join(", ")
        );
        quarry_detect::Detection::start(plan, recorder.store().clone(), host, tap, rx)
    });
    if let Some(addr) = args.detect.metrics {
        let mut sources = match &detection {
            Some(d) => d.metrics_sources(stats.clone()),
            None => quarry_detect::metrics::Sources::recorder_only(stats.clone()),
        };
        sources.upload = upload_state.clone();
        match quarry_detect::metrics::serve(addr, sources) {
            Ok(()) => eprintln!("quarry: metrics on http://{addr}/metrics"),
            Err(e) => log::error!(
                "--metrics {addr}: cannot listen ({e}); recording goes on without metrics"
            ),
        }
    }
    let summary = runtime.block_on(async {
        // Handlers go in before anyone is told recording began, so a stop signal sent right
        // after that message is always a graceful stop.
        let term = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
        let int = signal(SignalKind::interrupt()).context("installing a SIGINT handler")?;
        eprintln!(
            "quarry: recording {scope} into {} (sealed every {:?}; stop with Ctrl-C)",
            store.display(),
            args.seal_interval()
        );
        let retention = crate::lifecycle::policy(&retention).map(|policy| {
            eprintln!(
                "quarry: retention every {:?}: {}",
                args.retain_interval(),
                policy.describe()
            );
            let store = recorder.store().clone();
            tokio::spawn(quarry_recorder::retain::every(
                store,
                policy,
                args.retain_interval(),
                upload_state.clone(),
            ))
        });
        let mut publisher = Publisher::new(recorder.store().clone(), &scope);
        if let Some(state) = &upload_state {
            publisher = publisher.with_upload(state.clone());
        }
        let status = tokio::spawn(status_line(stats, publisher, args.quiet));
        let summary = recorder.run(shutdown(term, int, args.duration)).await;
        status.abort();
        if let Some(r) = retention {
            r.abort();
        }
        anyhow::Ok(summary?)
    })?;
    if !args.quiet && std::io::stderr().is_terminal() {
        eprintln!();
    }
    let detected = detection.map(|d| d.finish());
    if let Some(thread) = baselines {
        // The recorder is gone, and with it the queue's sender: what was offered is finished,
        // for a few seconds at most (a baseline cut short is never a visible segment).
        let deadline = Instant::now() + Duration::from_secs(5);
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if !thread.is_finished() {
            eprintln!(
                "quarry: warning: an automatic baseline was still being taken and is left out"
            );
        }
    }
    if let Some(d) = &detected {
        eprintln!(
            "quarry: live detection raised {} alerts{}{}",
            d.alerts,
            if d.behind_rows > 0 {
                format!(
                    "; it fell behind and did not evaluate {} recorded rows (`quarry hunt` covers them)",
                    d.behind_rows
                )
            } else {
                String::new()
            },
            if d.output_drops > 0 {
                format!(
                    "; outputs dropped {} alerts (all are in the alert table)",
                    d.output_drops
                )
            } else {
                String::new()
            }
        );
    }

    // Everything is sealed now (the recording, alerts, baselines): the rest of the backlog
    // gets its bounded last chance.
    let uploaded = uploader.map(|u| {
        let pending = upload_state.as_ref().map(|s| s.status());
        let notice = pending.filter(|p| !p.is_caught_up()).map(|p| {
            format!(
                "quarry: shipping the rest to {} (up to {:?}){}",
                p.to,
                args.upload.drain(),
                p.last_error
                    .as_deref()
                    .map(|e| format!("; last error: {e}"))
                    .unwrap_or_default()
            )
        });
        finish_upload(&runtime, u, args.upload.drain(), notice)
    });

    let s = &summary.stats;
    let unsealed: u64 = summary.unsealed.iter().map(|l| l.rows).sum();
    match args.out.format {
        Format::Json => println!(
            "{}",
            serde_json::json!({
                "store": store,
                "events": s.events,
                "rows_sealed": s.rows_sealed,
                "segments_sealed": s.segments_sealed,
                "bytes_sealed": s.bytes_sealed,
                "kernel_drops": s.kernel_drops,
                "undecodable": s.undecodable,
                "rows_pending": s.rows_pending,
                "rows_lost": s.rows_lost,
                "rows_unsealed_at_exit": summary.unsealed.iter().map(|l| serde_json::json!({
                    "table": l.table.name(), "rows": l.rows, "reason": l.reason.as_str(),
                })).collect::<Vec<_>>(),
                "recovered_segments": summary.recovered_segments,
                "exe_hash": s.exe_hash.iter()
                    .map(|(k, v)| ((*k).to_string(), serde_json::Value::from(*v)))
                    .collect::<serde_json::Map<_, _>>(),
                "exe_hash_cached": s.exe_hash_cached,
                "upload": uploaded,
            })
        ),
        Format::Table => println!(
            "quarry: stopped; sealed {} rows in {} segments ({}) into {}; {} events dropped by \
             the kernel; {} rows not kept",
            s.rows_sealed,
            s.segments_sealed,
            human_bytes(s.bytes_sealed),
            store.display(),
            s.kernel_drops,
            s.rows_lost,
        ),
    }
    if args.out.format == Format::Table && !s.exe_hash.is_empty() {
        let counts: Vec<String> = s.exe_hash.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!(
            "quarry: exec hashes: {} ({} of the hashed from the cache)",
            counts.join(", "),
            s.exe_hash_cached
        );
    }
    if let Some(u) = &uploaded {
        let line = format!(
            "quarry: uploaded {} segments ({}, {} rows) to {} as host {}{}",
            u.uploaded_segments,
            human_bytes(u.uploaded_bytes),
            u.uploaded_rows,
            u.to,
            u.host,
            if u.found_in_bucket > 0 {
                format!("; {} were there already", u.found_in_bucket)
            } else {
                String::new()
            }
        );
        if args.out.format == Format::Table {
            println!("{line}");
        }
        if !u.is_caught_up() {
            // Not lost: the segments stay in the store, and the next run (or `quarry upload`)
            // ships them.
            eprintln!(
                "quarry: warning: the bucket is behind: {} segments ({}) {}not uploaded ({}); \
                 they stay in {}; `quarry upload --store {} --to {} --host {}` ships them",
                u.pending_segments,
                human_bytes(u.pending_bytes),
                if u.manifest_behind {
                    "and the manifest entries "
                } else {
                    ""
                },
                u.last_error
                    .as_deref()
                    .unwrap_or("the exit deadline passed"),
                store.display(),
                store.display(),
                u.to,
                u.host
            );
        }
    }
    if unsealed > 0 {
        let what: Vec<String> = summary
            .unsealed
            .iter()
            .map(|l| format!("{} {} rows ({})", l.rows, l.table.name(), l.reason))
            .collect();
        anyhow::bail!(
            "{} could not be sealed before stopping, and no gap row for them could be written \
             ({}); free space in {} (or fix the write error) and restart the recorder; what was \
             sealed before is intact (`quarry verify --store {}`)",
            what.join(", "),
            s.last_error.as_deref().unwrap_or("unknown error"),
            store.display(),
            store.display()
        );
    }
    if s.rows_lost > 0 {
        // Like the kernel's drops: on record as gap rows, so the recording itself succeeded.
        eprintln!(
            "quarry: warning: {} rows could not be kept while sealing was failing or behind \
             ({}); they are counted in the store's gap table; check the space and health of {}",
            s.rows_lost,
            s.last_error.as_deref().unwrap_or("the sealer fell behind"),
            store.display()
        );
    }
    Ok(exit::OK)
}

/// The upload's last attempt, bounded by `within`; a stop signal meanwhile (the second one of
/// this run) ends it at once. `notice` is printed once stop signals are listened for. The
/// backlog as the upload thread left it.
fn finish_upload(
    runtime: &tokio::runtime::Runtime,
    uploader: Uploader,
    within: Duration,
    notice: Option<String>,
) -> UploadStatus {
    let (state, stopper) = (uploader.state(), uploader.stopper());
    runtime.block_on(async move {
        let (term, int) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        // Said only once the signals are listened for: a stop signal sent on seeing it is
        // never lost between the two.
        if let Some(notice) = notice {
            eprintln!("{notice}");
        }
        let last = tokio::task::spawn_blocking(move || uploader.finish(within));
        let stop = async {
            if let (Ok(mut term), Ok(mut int)) = (term, int) {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                eprintln!("quarry: stop signal: no more upload attempts");
                stopper.stop_now();
            }
            std::future::pending::<()>().await
        };
        tokio::select! {
            done = last => done.unwrap_or_else(|_| state.status()),
            _ = stop => unreachable!("never resolves"),
        }
    })
}

/// The bucket and settings of `--upload` (flags over the config file's `[upload]`); None
/// when no upload is asked for.
fn upload_plan(
    args: &RecordUploadArgs,
    recorder_host: &str,
) -> anyhow::Result<Option<(Bucket, UploadConfig)>> {
    let c = &crate::config::current().upload;
    if args.no_upload {
        return Ok(None);
    }
    let Some(to) = args.upload.as_deref().or(c.to.as_deref()) else {
        return Ok(None);
    };
    let url = BucketUrl::parse(to)?;
    // A pass learns of an unreachable bucket within seconds and backs off itself, instead of
    // the client retrying each request for minutes.
    let bucket = Bucket::from_env_with_retries(&url, &[], 3, Duration::from_secs(15))
        .with_context(|| format!("--upload {url}"))?;
    let mut config = UploadConfig::new(
        args.upload_host
            .clone()
            .or(c.host.clone())
            .unwrap_or_else(|| recorder_host.to_string()),
    );
    if let Some(i) = args.upload_interval.or(c.interval) {
        config.interval = i;
    }
    config.delete_unuploaded = args.retain_unuploaded || c.retain_unuploaded;
    Ok(Some((bucket, config)))
}

/// Resolves on SIGINT, SIGTERM or when `duration` has passed.
async fn shutdown(mut term: Signal, mut int: Signal, duration: Option<Duration>) {
    let deadline = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = term.recv() => log::info!("SIGTERM: sealing and stopping"),
        _ = int.recv() => log::info!("SIGINT: sealing and stopping"),
        _ = deadline => {}
    }
}

/// Every second: publishes the status file for `quarry status`, and prints a status line (in
/// place on a terminal, every tenth second otherwise) unless quiet.
async fn status_line(stats: Arc<Stats>, mut publisher: Publisher, quiet: bool) {
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let (mut last_rows, mut last_line_at) = (0u64, Instant::now());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    for n in 1u64.. {
        tick.tick().await;
        let s = stats.snapshot();
        publisher.publish(s.clone());
        if quiet || !(tty || n % 10 == 0) {
            continue;
        }
        let rows: u64 = s.table_rows.iter().map(|(_, n)| n).sum();
        let rate = (rows - last_rows) as f64 / last_line_at.elapsed().as_secs_f64().max(1e-3);
        let line = format!(
            "[{:>4}s] {} rows ({:.0}/s) | {} segments, {} | {} dropped | {} pending{}{}",
            started.elapsed().as_secs(),
            rows,
            rate,
            s.segments_sealed,
            human_bytes(s.bytes_sealed),
            s.kernel_drops,
            s.rows_pending,
            match (s.degraded, s.rows_lost) {
                (Some(reason), lost) =>
                    format!(" | DEGRADED ({reason}): {lost} rows not kept, still draining"),
                (None, 0) => String::new(),
                (None, lost) => format!(" | {lost} rows not kept (gap rows)"),
            },
            s.last_error
                .as_deref()
                .map(|e| format!(" | seal failing: {e}"))
                .unwrap_or_default()
        );
        if tty {
            eprint!("\r\x1b[2K{line}");
            let _ = std::io::stderr().flush();
        } else {
            eprintln!("{line}");
        }
        // The rate is over the time since the line before, so every printed line's figure
        // covers what happened since the reader last saw one.
        last_rows = rows;
        last_line_at = Instant::now();
    }
}
