//! Least-privilege posture: how much a compromised container could do.
//!
//! For each running container this crate reads the kernel's view of its init process
//! ([`facts`]: capabilities, namespaces, mounts, seccomp, no_new_privs, LSM label, cgroup
//! limits, and the device rules of its OCI config) and judges it ([`assess`]) into
//! [`Finding`]s, each with a severity, why it matters, the fix, and the CIS Docker Benchmark
//! recommendation it matches where there is one (numbering of CIS Docker Benchmark 1.2.0,
//! section 5 unless noted).
//!
//! This crate must not find containers (that is `quarry-containers`), write to a store, or
//! change anything it looks at: posture is read-only.

pub mod caps;
pub mod facts;
mod report;

use std::path::PathBuf;

use serde::Serialize;

pub use caps::CapSet;
pub use facts::{Facts, Sources, gather};
pub use report::{Report, judge};

/// Why facts could not be read.
#[derive(Debug, thiserror::Error)]
pub enum GatherError {
    /// The process exited, or its pid now names another process.
    #[error("process {pid} is gone (or its pid was reused) while it was being read")]
    Gone { pid: i32 },
    /// The process is not in the container's cgroup: the pid is stale.
    #[error("process {pid} is not in cgroup {cgroup}; the container's init pid is stale")]
    NotInContainer { pid: i32, cgroup: String },
    /// A file the facts come from could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The runtime's OCI config is not what a runtime writes.
    #[error("OCI config {} is not usable: {problem}", path.display())]
    Config { path: PathBuf, problem: String },
}

pub use quarry_store::severity::Severity;

/// One thing a compromised container could exploit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable identifier, e.g. `cap-sys-admin`, `host-net`, `runtime-socket`.
    pub id: String,
    pub severity: Severity,
    pub title: String,
    /// The fact behind it, e.g. the mount point or the capability set.
    pub evidence: String,
    pub why: &'static str,
    pub fix: &'static str,
    /// CIS Docker Benchmark recommendation, where one matches.
    pub cis: Option<&'static str>,
}

/// Capabilities that break containment or reach the host, with why and how bad.
const DANGEROUS_CAPS: &[(&str, Severity, &str)] = &[
    (
        "SYS_ADMIN",
        Severity::Critical,
        "mount filesystems, use most namespaces and many kernel interfaces: the usual first step of a container escape",
    ),
    (
        "SYS_MODULE",
        Severity::Critical,
        "load kernel modules: code in the host kernel",
    ),
    (
        "SYS_PTRACE",
        Severity::High,
        "trace and inject into processes it can see (all host processes with a shared pid namespace)",
    ),
    (
        "SYS_RAWIO",
        Severity::High,
        "raw I/O ports and /dev/mem-style access",
    ),
    (
        "DAC_READ_SEARCH",
        Severity::High,
        "open files by handle (open_by_handle_at), which reads host files outside the container's root",
    ),
    (
        "BPF",
        Severity::High,
        "load eBPF programs and read kernel memory through them",
    ),
    (
        "NET_ADMIN",
        Severity::High,
        "reconfigure interfaces, routes and firewall rules of its network namespace (the host's, if shared)",
    ),
    (
        "MAC_ADMIN",
        Severity::High,
        "change the mandatory access control policy",
    ),
    (
        "MAC_OVERRIDE",
        Severity::High,
        "bypass the mandatory access control policy",
    ),
    (
        "PERFMON",
        Severity::Medium,
        "perf events and kernel profiling, a side channel into the host",
    ),
    (
        "SYS_BOOT",
        Severity::Medium,
        "reboot the host or load a new kernel with kexec",
    ),
    (
        "SYS_TIME",
        Severity::Medium,
        "set the host's clock (time is not namespaced), corrupting every log's timestamps",
    ),
    (
        "SYSLOG",
        Severity::Medium,
        "read and clear the kernel log, which leaks kernel addresses",
    ),
    (
        "NET_RAW",
        Severity::Medium,
        "raw and packet sockets: forge any frame, spoof addresses, sniff its network namespace",
    ),
];

/// Host directories whose bind mount into a container exposes the host.
const SENSITIVE_HOST_DIRS: &[&str] = &[
    "/",
    "/etc",
    "/boot",
    "/dev",
    "/proc",
    "/sys",
    "/root",
    "/home",
    "/usr",
    "/lib",
    "/bin",
    "/sbin",
    "/var/run",
    "/run",
    "/var/lib/docker",
    "/var/lib/containerd",
    "/var/lib/kubelet",
    "/var/log",
];

/// Filesystems the kernel synthesises, never a host directory bound in.
const PSEUDO_FILESYSTEMS: &[&str] = &[
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "devpts",
    "mqueue",
    "securityfs",
    "debugfs",
    "tracefs",
    "bpf",
    "pstore",
    "configfs",
    "fusectl",
    "hugetlbfs",
];

/// File names of container runtime API sockets.
const RUNTIME_SOCKETS: &[&str] = &[
    "docker.sock",
    "containerd.sock",
    "crio.sock",
    "podman.sock",
    "cri-dockerd.sock",
    "dockershim.sock",
];

/// Judges the facts of one container; findings are sorted most severe first.
pub fn assess(f: &Facts) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut add = |id: String,
                   severity,
                   title: String,
                   evidence: String,
                   why,
                   fix,
                   cis: Option<&'static str>| {
        out.push(Finding {
            id,
            severity,
            title,
            evidence,
            why,
            fix,
            cis,
        })
    };

    let privileged = !f.host_bounding.is_empty() && f.bounding.is_superset_of(f.host_bounding);
    if privileged {
        add(
            "privileged".into(),
            Severity::Critical,
            "runs privileged: every capability the host has".into(),
            format!(
                "bounding set = host's ({} capabilities)",
                f.bounding.names().len()
            ),
            "a privileged container can mount the host's disks, load modules and leave the container at will",
            "do not run it privileged; grant only the capabilities it needs",
            Some("5.4"),
        );
    }
    for (cap, severity, why) in DANGEROUS_CAPS {
        if !f.bounding.contains(cap) || privileged {
            continue;
        }
        let state = if f.effective.contains(cap) {
            "effective in the init process"
        } else {
            "in the bounding set (any process can regain it, e.g. through a setuid or file-capability binary)"
        };
        add(
            format!("cap-{}", cap.to_ascii_lowercase().replace('_', "-")),
            *severity,
            format!("capability CAP_{cap}"),
            state.to_string(),
            why,
            "drop it (--cap-drop, or remove it from the OCI config's capabilities); drop ALL and add back only what is needed",
            Some("5.3"),
        );
    }
    if !f.ambient.is_empty() {
        add(
            "ambient-caps".into(),
            Severity::Low,
            "ambient capabilities set".into(),
            f.ambient.names().join(","),
            "ambient capabilities survive exec of unprivileged programs",
            "clear the ambient set unless a program needs it",
            None,
        );
    }

    let shares = |ns: &str| f.shared_namespaces.get(ns).copied().unwrap_or(false);
    if f.euid == 0 && shares("user") {
        add(
            "root-without-userns".into(),
            Severity::High,
            "root inside without a user namespace".into(),
            "euid 0 in the host's user namespace".into(),
            "root in the container is root on the host: any escape lands as host root",
            "run as a non-root user, or enable user namespace remapping",
            Some("4.1, 5.30"),
        );
    }
    for (ns, severity, cis, why, fix) in [
        (
            "mnt",
            Severity::Critical,
            None,
            "it sees and changes the host's mounts and files",
            "give the container its own mount namespace",
        ),
        (
            "pid",
            Severity::High,
            Some("5.15"),
            "it sees every host process, and can signal or trace them with the right capability",
            "do not use --pid=host / hostPID",
        ),
        (
            "net",
            Severity::High,
            Some("5.9"),
            "it uses the host's interfaces and services on localhost; quarantine cannot separate it from the host",
            "do not use --network=host / hostNetwork",
        ),
        (
            "ipc",
            Severity::Medium,
            Some("5.16"),
            "it reaches the host's shared memory and message queues",
            "do not use --ipc=host / hostIPC",
        ),
        (
            "uts",
            Severity::Low,
            Some("5.20"),
            "it can change the host's hostname",
            "do not use --uts=host",
        ),
        (
            "cgroup",
            Severity::Low,
            None,
            "it sees the host's whole cgroup tree",
            "give it its own cgroup namespace",
        ),
    ] {
        if shares(ns) {
            add(
                format!("host-{ns}"),
                severity,
                format!("shares the host's {ns} namespace"),
                format!("same {ns} namespace inode as the host"),
                why,
                fix,
                cis,
            );
        }
    }

    for (i, m) in f.mounts.iter().enumerate() {
        let host = f.host_paths.get(i).cloned().flatten();
        let host_text = host.as_ref().map(|p| p.display().to_string());
        let file_name = |p: &str| p.rsplit('/').next().unwrap_or("").to_string();
        let is_runtime_socket = RUNTIME_SOCKETS.contains(&file_name(&m.mount_point).as_str())
            || host_text
                .as_deref()
                .is_some_and(|h| RUNTIME_SOCKETS.contains(&file_name(h).as_str()));
        let where_ = format!(
            "{} (host {}){}",
            m.mount_point,
            host_text.as_deref().unwrap_or("?"),
            if m.read_only() {
                ", read-only"
            } else {
                ", writable"
            }
        );
        if is_runtime_socket {
            add(
                "runtime-socket".into(),
                Severity::Critical,
                "container runtime socket mounted".into(),
                where_.clone(),
                "whoever can talk to the runtime's API can start a privileged container on the host",
                "do not mount the runtime socket; use a narrowly scoped API proxy if a tool needs it",
                Some("5.31"),
            );
            continue;
        }
        if f.host_sockets.get(i).copied().unwrap_or(false) {
            add(
                "host-socket".into(),
                Severity::Medium,
                "host unix socket mounted".into(),
                where_.clone(),
                "a host service's API is reachable from the container",
                "mount only sockets the workload needs, and check what that service allows",
                None,
            );
        }
        // Kernel filesystems (a container's own /sys, /proc, cgroupfs) have their own checks
        // below; this one is about host directories bound in.
        let kernel_fs = PSEUDO_FILESYSTEMS.contains(&m.fstype.as_str());
        if let Some(h) = &host_text
            && !kernel_fs
            && m.mount_point != "/"
            && SENSITIVE_HOST_DIRS.contains(&h.as_str())
        {
            let (severity, id) = if m.read_only() {
                (Severity::Medium, "sensitive-host-mount")
            } else {
                (Severity::High, "sensitive-host-mount-writable")
            };
            let severity = if h == "/" {
                Severity::Critical
            } else {
                severity
            };
            add(
                id.into(),
                severity,
                format!("host directory {h} mounted"),
                where_.clone(),
                "host configuration, credentials or devices are readable (or changeable) from the container",
                "do not bind-mount host system directories; mount a narrow, read-only path if one is needed",
                Some("5.5"),
            );
        }
        if m.fstype == "sysfs" && !m.read_only() {
            add(
                "sysfs-writable".into(),
                Severity::High,
                "sysfs mounted writable".into(),
                where_.clone(),
                "writable /sys changes host kernel and device settings",
                "mount /sys read-only (the runtimes' default)",
                None,
            );
        }
        // Runtimes bind parts of the container's own /proc read-only over themselves
        // (/proc/sys, /proc/bus, ...): only a procfs outside /proc is a second one.
        if m.fstype == "proc" && m.mount_point != "/proc" && !m.mount_point.starts_with("/proc/") {
            add(
                "extra-procfs".into(),
                Severity::High,
                "a second procfs mounted".into(),
                where_.clone(),
                "an unmasked procfs exposes /proc/sys, /proc/kcore and the host's sysrq trigger",
                "remove the extra proc mount",
                None,
            );
        }
        if m.mount_point == "/" && !m.read_only() {
            add(
                "rootfs-writable".into(),
                Severity::Medium,
                "root filesystem writable".into(),
                where_.clone(),
                "an intruder can change the container's programs and plant tools that survive in its layer",
                "run with a read-only root (--read-only, readonly: true) and tmpfs for scratch",
                Some("5.12"),
            );
        }
        if m.shared() && m.mount_point != "/" {
            add(
                "mount-propagation-shared".into(),
                Severity::Low,
                "mount propagation shared with the host".into(),
                where_,
                "mounts made inside appear on the host",
                "use private or slave propagation",
                Some("5.19"),
            );
        }
    }

    match f.seccomp {
        Some(0) => add(
            "seccomp-off".into(),
            Severity::High,
            "no seccomp filter".into(),
            "Seccomp: 0".into(),
            "every system call is reachable, including the rarely used ones most kernel exploits need",
            "run with the runtime's default seccomp profile",
            Some("5.21"),
        ),
        Some(_) => {}
        None => add(
            "seccomp-unknown".into(),
            Severity::Info,
            "seccomp mode unknown".into(),
            "no Seccomp line in status".into(),
            "the kernel did not say whether a filter is set",
            "check the kernel's CONFIG_SECCOMP",
            None,
        ),
    }
    if f.no_new_privs == Some(false) {
        add(
            "new-privileges".into(),
            Severity::Medium,
            "processes can gain privileges (no_new_privs off)".into(),
            "NoNewPrivs: 0".into(),
            "setuid and file-capability binaries raise privileges inside",
            "run with --security-opt no-new-privileges (OCI: process.noNewPrivileges)",
            Some("5.25"),
        );
    }
    match f.lsm_label.as_deref() {
        None => add(
            "no-lsm".into(),
            Severity::Info,
            "no labelling LSM active on the host".into(),
            "attr/current unavailable".into(),
            "neither AppArmor nor SELinux confines the container",
            "enable AppArmor or SELinux on the host",
            Some("5.1, 5.2"),
        ),
        Some(label)
            if label.is_empty()
                || label == "unconfined"
                || label.contains("unconfined_t")
                || label.contains("spc_t") =>
        {
            add(
                "lsm-unconfined".into(),
                Severity::Medium,
                "no AppArmor/SELinux profile".into(),
                label.to_string(),
                "the mandatory access control layer does not confine the container",
                "run with the runtime's default AppArmor profile or SELinux type",
                Some("5.1, 5.2"),
            )
        }
        Some(_) => {}
    }
    for (id, limit, title, why, fix, cis, severity) in [
        (
            "no-memory-limit",
            f.limits.memory,
            "no memory limit",
            "one container can exhaust the node's memory and trigger the host's OOM killer",
            "set a memory limit (--memory, resources.limits.memory)",
            "5.10",
            Severity::Medium,
        ),
        (
            "no-pids-limit",
            f.limits.pids,
            "no pids limit",
            "a fork bomb inside takes the whole node down",
            "set a pids limit (--pids-limit)",
            "5.28",
            Severity::Medium,
        ),
        (
            "no-cpu-limit",
            f.limits.cpu_quota,
            "no CPU limit",
            "one container can starve the node's other workloads (and its recorder)",
            "set a CPU quota (--cpus, resources.limits.cpu)",
            "5.11",
            Severity::Low,
        ),
    ] {
        match limit {
            Some(None) => add(
                id.into(),
                severity,
                title.into(),
                "max".into(),
                why,
                fix,
                Some(cis),
            ),
            Some(Some(_)) => {}
            None => add(
                format!("{id}-unknown"),
                Severity::Info,
                format!("{title}: controller not found"),
                "no limit file for this cgroup".into(),
                "the controller is not enabled for this cgroup, so nothing limits it",
                fix,
                Some(cis),
            ),
        }
    }
    if let Some(d) = &f.devices {
        if d.all_allowed {
            add(
                "all-devices".into(),
                Severity::Critical,
                "every host device allowed".into(),
                "device cgroup rule allows type a".into(),
                "block devices of the host's disks can be opened and mounted",
                "allow only the devices the workload needs",
                Some("5.17"),
            );
        }
        for node in &d.nodes {
            add(
                "host-device".into(),
                Severity::High,
                format!("host device {node} exposed"),
                node.clone(),
                "a host device node gives direct access to that hardware or kernel interface",
                "do not pass host devices (--device) unless required",
                Some("5.17"),
            );
        }
    }
    out.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.id.cmp(&b.id)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use quarry_containers::mountinfo::parse_mountinfo;
    use std::collections::BTreeMap;

    fn minimal() -> Facts {
        Facts {
            pid: 42,
            effective: CapSet::default(),
            permitted: CapSet::default(),
            bounding: CapSet::of(&["CHOWN", "KILL"]),
            ambient: CapSet::default(),
            host_bounding: CapSet(0x1ff_ffff_ffff),
            euid: 1000,
            shared_namespaces: facts::NAMESPACES
                .iter()
                .map(|n| (n.to_string(), false))
                .collect::<BTreeMap<_, _>>(),
            uid_map: None,
            seccomp: Some(2),
            no_new_privs: Some(true),
            lsm_label: Some("docker-default (enforce)".into()),
            mounts: parse_mountinfo("1 0 8:1 /var/lib/c/rootfs / ro,relatime - ext4 /dev/vda ro\n"),
            host_paths: vec![Some("/var/lib/c/rootfs".into())],
            host_sockets: vec![false],
            limits: facts::Limits {
                memory: Some(Some(1 << 30)),
                pids: Some(Some(100)),
                cpu_quota: Some(Some(50_000)),
            },
            devices: Some(facts::Devices::default()),
        }
    }

    fn ids(f: &Facts) -> Vec<String> {
        assess(f).into_iter().map(|x| x.id).collect()
    }

    #[test]
    fn minimal_container_has_no_findings() {
        assert_eq!(ids(&minimal()), Vec::<String>::new());
    }

    #[test]
    fn each_weakness_is_named() {
        let mut f = minimal();
        f.bounding = CapSet::of(&["SYS_ADMIN", "NET_RAW"]);
        f.effective = CapSet::of(&["SYS_ADMIN"]);
        f.shared_namespaces.insert("net".into(), true);
        f.euid = 0;
        f.shared_namespaces.insert("user".into(), true);
        f.seccomp = Some(0);
        f.limits.pids = Some(None);
        let mut mounts = parse_mountinfo(
            "1 0 8:1 /c/rootfs / rw - ext4 /dev/vda rw\n2 1 0:5 /docker.sock /run/docker.sock rw - tmpfs tmpfs rw\n3 1 8:1 /etc /host-etc rw - ext4 /dev/vda rw\n",
        );
        f.host_paths = vec![
            Some("/c/rootfs".into()),
            Some("/run/docker.sock".into()),
            Some("/etc".into()),
        ];
        f.host_sockets = vec![false, true, false];
        f.mounts.clear();
        f.mounts.append(&mut mounts);
        let found = ids(&f);
        for id in [
            "cap-sys-admin",
            "cap-net-raw",
            "host-net",
            "root-without-userns",
            "seccomp-off",
            "no-pids-limit",
            "runtime-socket",
            "sensitive-host-mount-writable",
            "rootfs-writable",
        ] {
            assert!(found.contains(&id.to_string()), "{id} missing in {found:?}");
        }
        let all = assess(&f);
        assert_eq!(
            all[0].severity,
            Severity::Critical,
            "sorted most severe first"
        );
        let admin = all.iter().find(|x| x.id == "cap-sys-admin").unwrap();
        assert!(admin.evidence.contains("effective"));
        assert_eq!(admin.cis, Some("5.3"));
    }

    #[test]
    fn full_bounding_set_is_privileged_not_a_list_of_caps() {
        let mut f = minimal();
        f.bounding = f.host_bounding;
        let found = ids(&f);
        assert_eq!(found, ["privileged"]);
    }
}
