//! Linux capability sets as the kernel prints them in `/proc/<pid>/status`, and their names.
//!
//! This module only decodes bit masks; which capabilities are dangerous is decided in
//! [`crate::assess`], next to the findings that explain why.

use serde::Serialize;

/// Capability names indexed by number (capability.h, up to CAP_CHECKPOINT_RESTORE = 40).
const NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// One capability set (a 64-bit mask).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapSet(pub u64);

impl CapSet {
    /// Parses the hexadecimal mask of a `CapEff:`-style line.
    pub fn parse_hex(text: &str) -> Option<CapSet> {
        u64::from_str_radix(text.trim(), 16).ok().map(CapSet)
    }

    /// The set holding exactly the named capabilities (names without the `CAP_` prefix).
    pub fn of(names: &[&str]) -> CapSet {
        CapSet(
            names
                .iter()
                .filter_map(|n| number(n))
                .fold(0, |mask, bit| mask | (1 << bit)),
        )
    }

    pub fn contains(self, name: &str) -> bool {
        number(name).is_some_and(|bit| self.0 & (1 << bit) != 0)
    }

    /// True when every capability of `other` is in this set.
    pub fn is_superset_of(self, other: CapSet) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The names in this set, in number order; unknown bits (a newer kernel) as `CAP_<n>`.
    pub fn names(self) -> Vec<String> {
        (0..64)
            .filter(|bit| self.0 & (1u64 << bit) != 0)
            .map(|bit| match NAMES.get(bit) {
                Some(name) => (*name).to_string(),
                None => format!("CAP_{bit}"),
            })
            .collect()
    }
}

impl Serialize for CapSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.names().serialize(s)
    }
}

fn number(name: &str) -> Option<usize> {
    let name = name.strip_prefix("CAP_").unwrap_or(name);
    NAMES.iter().position(|n| n.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_docker_default_set() {
        // Docker's default bounding set.
        let set = CapSet::parse_hex("00000000a80425fb").unwrap();
        assert_eq!(
            set.names(),
            [
                "CHOWN",
                "DAC_OVERRIDE",
                "FOWNER",
                "FSETID",
                "KILL",
                "SETGID",
                "SETUID",
                "SETPCAP",
                "NET_BIND_SERVICE",
                "NET_RAW",
                "SYS_CHROOT",
                "MKNOD",
                "AUDIT_WRITE",
                "SETFCAP"
            ]
        );
        assert!(set.contains("NET_RAW") && set.contains("CAP_NET_RAW"));
        assert!(!set.contains("SYS_ADMIN"));
    }

    #[test]
    fn unknown_bits_keep_their_number() {
        assert_eq!(CapSet(1 << 45).names(), ["CAP_45"]);
        assert_eq!(CapSet::parse_hex("zz"), None);
        assert!(CapSet::of(&["SYS_ADMIN", "BPF"]).is_superset_of(CapSet::of(&["BPF"])));
    }
}
