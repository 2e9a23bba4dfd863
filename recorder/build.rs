//! Builds the eBPF object (recorder/ebpf) with the pinned nightly and bpf-linker, so one
//! `cargo build` builds everything. `scripts/setup` installs both.

use std::process::Command;

/// The nightly that builds aya-ebpf 0.2 here; keep in step with scripts/setup.
const NIGHTLY: &str = "nightly-2026-05-20";

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    for dir in [
        "ebpf/src",
        "ebpf/Cargo.toml",
        "common/src",
        "common/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={manifest_dir}/{dir}");
    }
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
    let ebpf_dir = format!("{manifest_dir}/ebpf");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "quarry-recorder-ebpf",
            root_dir: &ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(NIGHTLY),
    )
}
