//! Checks made before anything is loaded, so a recorder that cannot work says why and how to
//! fix it instead of failing deep inside a bpf(2) call.

use std::fs;
use std::path::{Path, PathBuf};

use crate::RecorderError;
use crate::btf::VMLINUX_BTF;

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Parses the effective capability set from the text of /proc/self/status.
pub fn effective_caps(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// Names of the capabilities loading and attaching tracing programs needs but `caps` lacks.
pub fn missing_caps(caps: u64) -> Vec<&'static str> {
    let has = |c: u32| caps & (1u64 << c) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        return Vec::new();
    }
    let mut missing = Vec::new();
    if !has(CAP_BPF) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) {
        missing.push("CAP_PERFMON");
    }
    missing
}

/// Fails unless this process may load and attach tracing programs.
pub fn check_privileges() -> Result<(), RecorderError> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let caps = effective_caps(&status).unwrap_or(0);
    let missing = missing_caps(caps);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(RecorderError::NotPrivileged {
            missing: missing.join(", "),
        })
    }
}

/// Reads the running kernel's BTF, which the programs' field offsets come from.
pub fn read_kernel_btf() -> Result<Vec<u8>, RecorderError> {
    fs::read(VMLINUX_BTF).map_err(|source| RecorderError::NoBtf {
        path: PathBuf::from(VMLINUX_BTF),
        source,
    })
}

/// Returns the tracefs mount, mounting it at /sys/kernel/tracing when it is not mounted yet.
pub fn ensure_tracefs() -> Result<PathBuf, RecorderError> {
    for candidate in ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"] {
        if Path::new(candidate).join("events").is_dir() {
            return Ok(PathBuf::from(candidate));
        }
    }
    let target = Path::new("/sys/kernel/tracing");
    nix::mount::mount(
        Some("tracefs"),
        target,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|errno| RecorderError::NoTracefs {
        reason: errno.desc().to_string(),
    })?;
    if target.join("events").is_dir() {
        Ok(target.to_path_buf())
    } else {
        Err(RecorderError::NoTracefs {
            reason: "mounted, but it has no events directory".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cap_eff() {
        let s = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(effective_caps(s), Some(0x1ff_ffff_ffff));
        assert_eq!(effective_caps("nothing"), None);
    }

    #[test]
    fn which_caps_are_enough() {
        assert!(missing_caps(1 << CAP_SYS_ADMIN).is_empty());
        assert!(missing_caps((1 << CAP_BPF) | (1 << CAP_PERFMON)).is_empty());
        assert_eq!(missing_caps(1 << CAP_BPF), vec!["CAP_PERFMON"]);
        assert_eq!(missing_caps(0), vec!["CAP_BPF", "CAP_PERFMON"]);
    }
}
