//! Builds the quarantine programs (isolate/ebpf) with the pinned nightly; see quarry-ebpf-build.

fn main() -> anyhow::Result<()> {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    println!("cargo:rerun-if-changed={manifest_dir}/common/src");
    println!("cargo:rerun-if-changed={manifest_dir}/common/Cargo.toml");
    quarry_ebpf_build::build("quarry-isolate-ebpf", "ebpf")
}
