//! `quarry`: the command line. Thin by design: it parses arguments, calls the library crates
//! and prints; the work lives in quarry-recorder, quarry-store, quarry-containers and their siblings.

// The recorder-only build (without the `responder` feature) parses the same flags and config
// file as the full one, so some of what they hold, and the helpers for it, go unread there.
#![cfg_attr(not(feature = "responder"), allow(dead_code, unused_imports))]

mod action;
mod cli;
mod completions;
mod config;
mod detect;
#[cfg(feature = "responder")]
mod export;
mod fleet;
mod integrity;
#[cfg(feature = "responder")]
mod isolate;
mod lifecycle;
mod output;
mod posture;
mod ps;
#[cfg(feature = "responder")]
mod query;
mod record;
mod snapshot;
mod status;
mod upload;
mod verify;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

/// Exit codes, documented in `quarry --help`.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The command could not do its work (bad input, missing privileges, I/O failure).
    pub const ERROR: u8 = 1;
    /// Verification ran and found problems: evidence is missing or was altered.
    pub const VERIFY_FAILED: u8 = 3;
    /// A hunt or a posture check raised findings, or drift was found.
    pub const FINDINGS: u8 = 4;
    /// The action was carried out but its row could not be written to the store's action
    /// table; the row was printed on stderr to be recorded by hand.
    pub const UNRECORDED: u8 = 5;
}

/// When this process started, for measuring how fast a command takes effect.
pub static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// The async runtime of a command that talks to a bucket or runs queries.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// What a command that needs the cargo feature `responder` says in a binary built without it:
/// the recorder-only binary `scripts/record` builds first.
#[cfg(not(feature = "responder"))]
pub(crate) fn without_responder() -> anyhow::Result<u8> {
    anyhow::bail!(
        "this is the recorder-only build of quarry (no query engine, live detection, isolation \
         or export); build the full binary: cargo build --release --bin quarry"
    )
}

fn main() -> ExitCode {
    STARTED.get_or_init(std::time::Instant::now);
    // Evidence is private by default: whatever a command creates without an explicit mode is
    // closed to other users, and the store's group only reads (the store itself creates
    // 0750/0640, bundles are 0600, keys 0600).
    // SAFETY: umask(2) only sets the process's file mode creation mask.
    unsafe { libc::umask(0o027) };
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_target(false)
        .init();
    match config::Config::load(cli.config.as_deref()) {
        Ok(c) => config::install(c),
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(exit::ERROR);
        }
    }
    let result = match cli.command {
        Command::Record(args) => record::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Ps(args) => ps::run(args),
        Command::Status(args) => status::run(args),
        Command::Snapshot(args) => snapshot::run(args),
        Command::Restore(args) => snapshot::restore(args),
        Command::Retain(args) => lifecycle::retain(args),
        Command::Hold(args) => lifecycle::hold(args),
        Command::Completions(args) => completions::run(args),
        Command::Posture(args) => posture::run(args),
        Command::Baseline(args) => integrity::baseline(args),
        Command::Drift(args) => integrity::drift(args),
        Command::Fleet(args) => fleet::run(args),
        Command::Upload(args) => upload::run(args),
        #[cfg(feature = "responder")]
        Command::Isolate(args) => isolate::run(args),
        #[cfg(feature = "responder")]
        Command::Release(args) => isolate::release(args),
        #[cfg(feature = "responder")]
        Command::Sql(args) => query::sql(args),
        #[cfg(feature = "responder")]
        Command::Timeline(args) => query::timeline(args),
        #[cfg(feature = "responder")]
        Command::Hunt(args) => query::hunt(args),
        #[cfg(feature = "responder")]
        Command::Export(args) => export::run(args),
        #[cfg(feature = "responder")]
        Command::Keygen(args) => lifecycle::keygen(args),
        #[cfg(not(feature = "responder"))]
        Command::Isolate(_)
        | Command::Release(_)
        | Command::Sql(_)
        | Command::Timeline(_)
        | Command::Hunt(_)
        | Command::Export(_)
        | Command::Keygen(_) => without_responder(),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::ERROR)
        }
    }
}
