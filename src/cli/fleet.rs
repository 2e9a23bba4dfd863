//! The flags of `quarry fleet scheduler|executor` and of `quarry sql --engine` (the commands
//! are `crate::fleet`). Kept together so the fleet's flags are in one place; a binary built
//! without the `fleet` feature parses the same flags and refuses them.

// Without the engine the flags are still parsed (the CLI is the same) but never read.
#![cfg_attr(not(feature = "fleet"), allow(dead_code))]

use std::net::SocketAddr;

use clap::{Args, Subcommand, ValueEnum};

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
same path). A fleet bucket (sql --store s3://BUCKET/PREFIX) is read by every server with its own
AWS environment (AWS_ENDPOINT_URL, credentials): only the segments its hosts' manifests vouch
for, each hash-checked before it is decoded, never written.")]
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
