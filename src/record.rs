//! `quarry record`: run the recorder with a live status line until stopped.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use quarry_recorder::scope::Scope;
use quarry_recorder::status::Publisher;
use quarry_recorder::{Recorder, RecorderConfig, SyscallMode};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::cli::{Format, RecordArgs, SyscallsArg};
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
    let recorder = Recorder::start(config)
        .with_context(|| format!("starting the recorder on {}", store_dir.display()))?;
    let store = recorder.store().root().to_path_buf();
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
        let sources = match &detection {
            Some(d) => d.metrics_sources(stats.clone()),
            None => quarry_detect::metrics::Sources::recorder_only(stats.clone()),
        };
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
            ))
        });
        let publisher = Publisher::new(recorder.store().clone(), &scope);
        let status = tokio::spawn(quarry_recorder::status::every_second(
            stats, publisher, args.quiet,
        ));
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
    if let Some(thread) = baselines
        && !thread.finish_within(Duration::from_secs(5))
    {
        eprintln!("quarry: warning: an automatic baseline was still being taken and is left out");
    }
    if let Some(d) = &detected {
        eprintln!("quarry: {d}");
    }
    match args.out.format {
        Format::Json => println!("{}", summary.to_json(&store)),
        Format::Table => summary.render_text(&store, &mut std::io::stdout().lock())?,
    }
    if let Some(error) = summary.unsealed_error(&store) {
        anyhow::bail!(error);
    }
    if let Some(warning) = summary.lost_warning(&store) {
        eprintln!("quarry: warning: {warning}");
    }
    Ok(exit::OK)
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
