//! `quarry record`: run the recorder with a live status line until stopped.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use quarry_bucket::{Bucket, BucketUrl};
use quarry_recorder::scope::Scope;
use quarry_recorder::status::Publisher;
use quarry_recorder::stop::StopSignals;
use quarry_recorder::upload::{UploadConfig, Uploader};
use quarry_recorder::{Recorder, RecorderConfig, SyscallMode};

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
        match quarry_snapshot::baseline::auto_baselines(store_dir.clone(), rx) {
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
    let scope = Scope::resolve(&args.containers, &args.cgroup_paths)?;
    config.cgroup_filter = scope.cgroup_ids;
    let scope = scope.description;
    // A JSON summary on standard output is read by machines: alerts asked to go nowhere in
    // particular go to standard error then, so the summary stays the only thing there.
    let mut detect = args.detect.clone();
    if args.out.format == Format::Json && detect.alert_output.is_empty() {
        detect.alert_output.push("stderr".to_string());
    }
    let mut live = crate::detect::Live::plan(&detect, &store_dir, &mut config)?;
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
    live.start(&recorder, host, upload_state.clone());
    let summary = runtime.block_on(async {
        let stop = StopSignals::listen()?;
        eprintln!(
            "quarry: recording {scope} into {} (sealed every {:?}; stop with Ctrl-C)",
            store.display(),
            args.seal_interval()
        );
        let retention = retention.policy().map(|policy| {
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
        let status = tokio::spawn(quarry_recorder::status::every_second(
            stats, publisher, args.quiet,
        ));
        let summary = recorder.run(stop.or_after(args.duration)).await;
        status.abort();
        if let Some(r) = retention {
            r.abort();
        }
        anyhow::Ok(summary?)
    })?;
    if !args.quiet && std::io::stderr().is_terminal() {
        eprintln!();
    }
    live.finish();
    if let Some(thread) = baselines
        && !thread.finish_within(Duration::from_secs(5))
    {
        eprintln!("quarry: warning: an automatic baseline was still being taken and is left out");
    }
    // Everything is sealed now (the recording, alerts, baselines): the rest of the backlog
    // gets its bounded last chance.
    let uploaded = uploader.map(|u| {
        let notice = u.state().status().drain_notice(args.upload.drain());
        u.finish_unless_stopped(&runtime, args.upload.drain(), notice)
    });
    match args.out.format {
        Format::Json => {
            let mut json = summary.to_json(&store);
            json["upload"] = serde_json::to_value(&uploaded)?;
            println!("{json}");
        }
        Format::Table => {
            summary.render_text(&store, &mut std::io::stdout().lock())?;
            if let Some(u) = &uploaded {
                println!("quarry: {}", u.exit_line());
            }
        }
    }
    if let Some(warning) = uploaded.as_ref().and_then(|u| u.behind_warning(&store)) {
        // Not lost: the segments stay in the store, and the next run (or `quarry upload`)
        // ships them.
        eprintln!("quarry: warning: {warning}");
    }
    if let Some(error) = summary.unsealed_error(&store) {
        anyhow::bail!(error);
    }
    if let Some(warning) = summary.lost_warning(&store) {
        eprintln!("quarry: warning: {warning}");
    }
    Ok(exit::OK)
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
    let bucket =
        quarry_recorder::upload::open_bucket(&url).with_context(|| format!("--upload {url}"))?;
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
