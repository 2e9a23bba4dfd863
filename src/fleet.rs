//! `quarry fleet scheduler|executor` (an Apache Ballista cluster from quarry-fleet) and
//! `quarry sql --engine ballista` (a store's SQL run on it).
//!
//! The argument structs live here rather than in cli.rs so the fleet's flags stay in one
//! place; cli.rs only names them. The engine itself is the cargo feature `fleet` (on by
//! default): a binary built without it (`cargo build -p quarry --no-default-features
//! --features responder`, which leaves Ballista and its ~90 crates out) keeps the same flags
//! and says how to get the fleet.

// Without the engine the flags are still parsed (the CLI is the same) but never read.
#![cfg_attr(not(feature = "fleet"), allow(dead_code))]

use std::net::SocketAddr;

use clap::{Args, Subcommand, ValueEnum};

#[cfg(feature = "fleet")]
pub use engine::{run, sql};
#[cfg(not(feature = "fleet"))]
pub use without::{run, sql};

/// The engine `quarry sql` runs a query on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Engine {
    /// DataFusion in this process
    #[default]
    Local,
    /// An Apache Ballista cluster (`quarry fleet`), at --scheduler
    Ballista,
}

/// `quarry sql`'s choice of engine (flattened into its arguments).
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Where the query runs: here, or on a Ballista cluster started with `quarry fleet`
    #[arg(long, value_enum, default_value_t = Engine::Local)]
    pub engine: Engine,
    /// The cluster's scheduler, df://HOST:PORT (with --engine ballista)
    #[arg(long, value_name = "URL", env = "QUARRY_SCHEDULER")]
    pub scheduler: Option<String>,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  quarry fleet scheduler --bind 127.0.0.1:50050
  quarry fleet executor --scheduler 127.0.0.1:50050 --bind 127.0.0.1:50051
  quarry fleet executor --scheduler 127.0.0.1:50050 --bind 127.0.0.1:50052 --concurrent-tasks 2
  quarry sql --engine ballista --scheduler df://127.0.0.1:50050 \"SELECT count(*) FROM process\"

The servers are Apache Ballista's own (pull-staged scheduling), started in this process; they
log to stderr and stop on SIGINT or SIGTERM. Executors read the segment files a query names at
the paths the client sees them, so run them where the store is (or where it is mounted at the
same path).")]
pub struct FleetArgs {
    #[command(subcommand)]
    pub command: FleetCommand,
}

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Run a Ballista scheduler: clients submit queries to it, executors take tasks from it
    Scheduler(SchedulerArgs),
    /// Run a Ballista executor that takes tasks from a scheduler
    Executor(ExecutorArgs),
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  quarry fleet scheduler                          on 127.0.0.1:50050
  quarry fleet scheduler --bind 127.0.0.1:0       on a free port (printed on stdout)")]
pub struct SchedulerArgs {
    /// Address to listen on (port 0: any free port, printed as `listening on ADDR`)
    #[arg(long, default_value = "127.0.0.1:50050")]
    pub bind: SocketAddr,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  quarry fleet executor --scheduler 127.0.0.1:50050 --bind 127.0.0.1:50051
  quarry fleet executor --scheduler 127.0.0.1:50050 --bind 127.0.0.1:50061 --concurrent-tasks 1")]
pub struct ExecutorArgs {
    /// The scheduler, HOST:PORT (or df://HOST:PORT)
    #[arg(long, default_value = "127.0.0.1:50050")]
    pub scheduler: String,
    /// Address of this executor's Flight server (results and shuffle data); also the address
    /// it advertises to the cluster
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub bind: SocketAddr,
    /// Tasks run at once [default: one per CPU]
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    pub concurrent_tasks: usize,
    /// Seconds to keep trying to reach the scheduler at start
    #[arg(long, default_value_t = 30)]
    pub connect_timeout: u16,
}

/// The commands, with the engine built in.
#[cfg(feature = "fleet")]
mod engine {
    use std::io::Write;

    use anyhow::{Context, bail};
    use futures::StreamExt;
    use quarry_fleet::cluster::{self, ExecutorOptions};
    use quarry_fleet::remote::{self, RemoteSession};
    use quarry_query::output;

    use super::{FleetArgs, FleetCommand};
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
                        shutdown_signal(),
                    )
                    .await
                    .context("running the scheduler")?;
                    eprintln!("quarry: scheduler stopped");
                }
                FleetCommand::Executor(a) => {
                    let url = remote::scheduler_url(&a.scheduler)?;
                    let hostport = url.trim_start_matches("df://");
                    let (host, port) = hostport
                        .rsplit_once(':')
                        .context("the scheduler address has no port")?;
                    cluster::run_executor(ExecutorOptions {
                        scheduler_host: host.to_string(),
                        scheduler_port: port.parse().context("the scheduler port")?,
                        bind: a.bind,
                        concurrent_tasks: a.concurrent_tasks,
                        connect_timeout_secs: a.connect_timeout,
                    })
                    .await
                    .context("running the executor")?;
                    eprintln!("quarry: executor stopped");
                }
            }
            Ok(exit::OK)
        })
    }

    /// Completes on SIGINT or SIGTERM.
    async fn shutdown_signal() {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                log::warn!("cannot watch SIGTERM ({e}); stopping on SIGINT only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
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
        if crate::query::bucket_url(&store_dir)?.is_some() {
            bail!(
                "--engine ballista reads local stores (the executors open the segment files the \
                 client names); query a bucket with the local engine: quarry sql --store s3://..."
            );
        }
        if args.format == QueryFormat::Parquet && args.output.is_none() {
            bail!("--format parquet writes a file: add -o FILE");
        }
        let rt = crate::runtime()?;
        rt.block_on(async {
            let mut session = RemoteSession::open(&scheduler, &store_dir)
                .await
                .with_context(|| {
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
            for s in session.skipped() {
                eprintln!(
                    "warning: skipped segment {}: {} (run `quarry verify` to check the store)",
                    crate::output::shown(&s.path.display().to_string()),
                    crate::output::shown(&s.reason)
                );
            }
            let mut stream = stream?;
            let mut out = crate::query::sink(args.output.as_ref(), &store_dir)?;
            let written = async {
                let mut writer = output::Writer::new(
                    crate::query::out_format(args.format),
                    stream.schema(),
                    &mut *out,
                )?;
                while let Some(batch) = stream.next().await {
                    writer.write(&batch.context("reading results from the cluster")?)?;
                }
                writer.finish()?;
                anyhow::Ok(())
            }
            .await;
            let written = written.and_then(|()| Ok(out.flush()?));
            if let (Err(_), Some(path)) = (&written, &args.output) {
                // A partial result must not pass for a whole one.
                drop(out);
                let _ = std::fs::remove_file(path);
            }
            written?;
            Ok(exit::OK)
        })
    }
}

/// The commands in a binary built without the engine: they refuse, naming the fix.
#[cfg(not(feature = "fleet"))]
mod without {
    use anyhow::bail;

    use super::FleetArgs;
    use crate::cli::SqlArgs;

    const MISSING: &str = "this quarry was built without the fleet (Apache Ballista): rebuild \
                           with the default features (cargo build --release --bin quarry)";

    pub fn run(_: FleetArgs) -> anyhow::Result<u8> {
        bail!("quarry fleet: {MISSING}");
    }

    pub fn sql(_: SqlArgs) -> anyhow::Result<u8> {
        bail!("quarry sql --engine ballista: {MISSING}");
    }
}
