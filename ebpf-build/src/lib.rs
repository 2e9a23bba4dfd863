//! Builds a Quarry eBPF crate from a build script, so one `cargo build` builds everything.
//!
//! The one place that knows which toolchain builds the no_std eBPF crates; `scripts/setup`
//! installs it (keep the two in step).

use std::process::Command;

/// The nightly that builds aya-ebpf 0.2 here.
pub const NIGHTLY: &str = "nightly-2026-05-20";

/// Builds the eBPF crate `package` in `dir` (relative to the calling crate's manifest
/// directory). Its binary lands in `OUT_DIR/<bin name>`, for `aya::include_bytes_aligned!`.
pub fn build(package: &str, dir: &str) -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let root = format!("{manifest_dir}/{dir}");
    println!("cargo:rerun-if-changed={root}/src");
    println!("cargo:rerun-if-changed={root}/Cargo.toml");
    let nightly_ok = Command::new("rustup")
        .args(["run", NIGHTLY, "rustc", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    let linker_ok = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !nightly_ok || !linker_ok {
        anyhow::bail!(
            "building Quarry's eBPF programs needs the {NIGHTLY} toolchain (with rust-src) and \
             bpf-linker 0.13 on PATH; run `sudo scripts/setup` once (missing: {}{})",
            if nightly_ok { "" } else { "nightly " },
            if linker_ok { "" } else { "bpf-linker" }
        );
    }
    aya_build::build_ebpf(
        [aya_build::Package {
            name: package,
            root_dir: &root,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(NIGHTLY),
    )
}
