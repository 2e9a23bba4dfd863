//! `quarry fleet scheduler|executor` (an Apache Ballista cluster from quarry-fleet) and
//! `quarry sql --engine ballista` (a store's SQL run on it).
//!
//! Their flags are `cli/fleet.rs`. The engine itself is the cargo feature `fleet` (on by
//! default): a binary built without it (`cargo build -p quarry --no-default-features
//! --features responder`, which leaves Ballista and its ~90 crates out) keeps the same flags
//! and says how to get the fleet.

#[cfg(feature = "fleet")]
pub use engine::{run, sql};
#[cfg(not(feature = "fleet"))]
pub use without::{run, sql};

/// The commands, with the engine built in.
#[cfg(feature = "fleet")]
mod engine {
    use std::io::Write;

    use anyhow::{Context, bail};
    use futures::StreamExt;
    use quarry_fleet::cluster::{self, ExecutorOptions};
    use quarry_fleet::remote::RemoteSession;
    use quarry_query::output;

    use crate::cli::fleet::{FleetArgs, FleetCommand};
    use crate::cli::{QueryFormat, SqlArgs};
    use crate::exit;

    pub fn run(args: FleetArgs) -> anyhow::Result<u8> {
        let rt = crate::runtime()?;
        rt.block_on(async {
            match args.command {
                FleetCommand::Scheduler(a) => {
                    cluster::run_scheduler(
                        a.bind,
                        |addr| {
                            // Tests and scripts read the port from here (stdout, one line).
                            println!("listening on {addr}");
                            let _ = std::io::stdout().flush();
                        },
                        cluster::stop_signal(),
                    )
                    .await
                    .context("running the scheduler")?;
                    eprintln!("quarry: scheduler stopped");
                }
                FleetCommand::Executor(a) => {
                    let options = ExecutorOptions::for_scheduler(
                        &a.scheduler,
                        a.bind,
                        a.concurrent_tasks,
                        a.connect_timeout,
                    )?;
                    cluster::run_executor(options)
                        .await
                        .context("running the executor")?;
                    eprintln!("quarry: executor stopped");
                }
            }
            Ok(exit::OK)
        })
    }

    /// `quarry sql --engine ballista`: one query on the cluster, written like a local one.
    pub fn sql(args: SqlArgs) -> anyhow::Result<u8> {
        let Some(scheduler) = args.engine.scheduler.clone() else {
            bail!("--engine ballista needs --scheduler df://HOST:PORT (or $QUARRY_SCHEDULER)");
        };
        let Some(query) = args.query.clone() else {
            bail!(
                "--engine ballista runs one query: give it as an argument (the shell is local only)"
            );
        };
        let store_dir = args.store.resolve();
        let bucket = quarry_bucket::BucketUrl::of_store(&store_dir)?;
        if args.format == QueryFormat::Parquet && args.output.is_none() {
            bail!("--format parquet writes a file: add -o FILE");
        }
        let rt = crate::runtime()?;
        rt.block_on(async {
            let opened = match &bucket {
                Some(url) => RemoteSession::open_bucket(&scheduler, url).await,
                None => RemoteSession::open(&scheduler, &store_dir).await,
            };
            let mut session = opened.with_context(|| {
                format!(
                    "opening the store {} on the cluster at {scheduler}",
                    store_dir.display()
                )
            })?;
            let stream = session
                .sql_stream(&query)
                .await
                .context("running the query on the cluster");
            // Segments the manifest does not vouch for, and any refused at the check.
            crate::query::warn_left_out(session.skipped());
            let mut stream = stream?;
            let mut dest = output::Destination::open(args.output.as_deref(), &store_dir)?;
            let mut writer = output::Writer::new(
                crate::query::out_format(args.format),
                stream.schema(),
                dest.writer(),
            )?;
            while let Some(batch) = stream.next().await {
                writer.write(&batch.context("reading results from the cluster")?)?;
            }
            writer.finish()?;
            dest.finish()?;
            Ok(exit::OK)
        })
    }
}

/// The commands in a binary built without the engine: they refuse, naming the fix.
#[cfg(not(feature = "fleet"))]
mod without {
    use anyhow::bail;

    use crate::cli::SqlArgs;
    use crate::cli::fleet::FleetArgs;

    const MISSING: &str = "this quarry was built without the fleet (Apache Ballista): rebuild \
                           with the default features (cargo build --release --bin quarry)";

    pub fn run(_: FleetArgs) -> anyhow::Result<u8> {
        bail!("quarry fleet: {MISSING}");
    }

    pub fn sql(_: SqlArgs) -> anyhow::Result<u8> {
        bail!("quarry sql --engine ballista: {MISSING}");
    }
}
