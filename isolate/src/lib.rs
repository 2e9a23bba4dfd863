//! Network quarantine of a running container.
//!
//! This room will attach cgroup_skb ingress and egress programs to the container's cgroup v2
//! directory and pin their links in bpffs, so the quarantine outlives the command that set it;
//! an allow-list map lets the forensic collector through, and `release` undoes it exactly.
