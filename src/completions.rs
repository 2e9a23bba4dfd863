//! `quarry completions`: shell completion scripts and man pages, generated from the same clap
//! definitions the binary parses with, so they can never describe flags the binary lacks.
//! Packaging (scripts/package) writes them into the Debian package; nothing here reads the store
//! or needs privileges.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs};
use crate::exit;

pub fn run(args: CompletionsArgs) -> Result<u8> {
    let mut cmd = Cli::command();
    if let Some(dir) = args.man {
        write_man_pages(cmd, &dir)?;
        return Ok(exit::OK);
    }
    // clap enforces one of SHELL and --man.
    let shell = args
        .shell
        .context("name a shell (bash, zsh, fish, elvish, powershell)")?;
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "quarry", &mut out);
    std::io::stdout()
        .lock()
        .write_all(&out)
        .context("writing the completion script to standard output")?;
    Ok(exit::OK)
}

/// quarry.1 and one page per command (quarry-record.1, ...), the layout `man quarry-record`
/// finds.
fn write_man_pages(cmd: clap::Command, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Every page's header carries the version, not only quarry.1's.
    clap_mangen::generate_to(cmd.propagate_version(true), dir)
        .with_context(|| format!("writing man pages into {}", dir.display()))?;
    Ok(())
}
