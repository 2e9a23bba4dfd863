//! The quarantine for people: what `quarry isolate`, `isolate --status`, `--dry-run` and
//! `quarry release` print. Every name a container chose (its name, its runtime's id) is
//! escaped with [`quarry_store::text::printable`]; the machine form is each type's JSON.
//!
//! It must not decide anything: it only words what the other modules did or would do.

use std::io::{self, Write};

use quarry_containers::Container;
use quarry_store::text::printable as shown;

use crate::{AllowRule, Dropped, IsolateOutcome, Isolation, Plan, ReleaseOutcome};

/// `a, b, c`: rules in the words of `--allow`.
fn joined(rules: &[AllowRule], sep: &str) -> String {
    rules
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(sep)
}

impl IsolateOutcome {
    /// What `quarry isolate` says it did to `container` (named by the user as `query`).
    pub fn render_text(
        &self,
        container: &Container,
        query: &str,
        w: &mut dyn Write,
    ) -> io::Result<()> {
        if self.changed {
            writeln!(
                w,
                "isolated {} in {:.1} ms (every layer in {:.1} ms): no packets or frames in or out{}",
                shown(&container.to_string()),
                self.effective_after_ms,
                self.all_layers_after_ms,
                if self.isolation.allow.is_empty() {
                    String::new()
                } else {
                    format!(" except {}", joined(&self.isolation.allow, ", "))
                }
            )?;
            writeln!(
                w,
                "its processes keep running; lift it with `quarry release {query}`"
            )?;
        } else {
            writeln!(
                w,
                "{} is already isolated (since {}); nothing changed",
                shown(&container.to_string()),
                self.isolation.since
            )?;
        }
        if let (true, Some(note)) = (self.changed, &self.nftables_note) {
            writeln!(w, "note: {note}")?;
        }
        for note in &self.notes {
            writeln!(w, "note: {note}")?;
        }
        Ok(())
    }
}

impl Isolation {
    /// The columns of `quarry isolate --status` (see [`Isolation::status_row`]).
    pub const STATUS_COLUMNS: [&'static str; 6] = [
        "CONTAINER ID",
        "NAME",
        "SINCE",
        "ALLOW",
        "DROPPED",
        "REASON",
    ];

    /// The quarantine as a row under [`Isolation::STATUS_COLUMNS`], with what it dropped
    /// (cells unescaped: the table escapes them).
    pub fn status_row(&self, dropped: Option<&Dropped>) -> Vec<String> {
        vec![
            quarry_containers::short_id(&self.container_id).to_string(),
            self.container_name.clone().unwrap_or_default(),
            self.since.clone(),
            joined(&self.allow, ","),
            dropped.map(Dropped::per_layer).unwrap_or_default(),
            self.reason.clone().unwrap_or_default(),
        ]
    }
}

impl Dropped {
    /// Drops per layer: `cgroup_skb 3/0, netns 5/1, host 0/0 out/in`, with a layer that is no
    /// longer in place said so.
    pub fn per_layer(&self) -> String {
        self.layers
            .iter()
            .map(|l| {
                let shared = if l.shared_with.is_empty() {
                    String::new()
                } else {
                    format!(" shared with {}", l.shared_with.join(","))
                };
                let state = match l.in_place {
                    Some(true) => "",
                    // A rule inserted, changed or deleted in its tables since isolate.
                    Some(false) if l.tampered => " (its rules were CHANGED since isolate)",
                    // Deleted from inside by the container (CAP_NET_ADMIN), or by someone else.
                    Some(false) => " (its tables are GONE)",
                    None => " (not checked: the namespace cannot be entered)",
                };
                format!("{} {}/{}{shared}{state}", l.layer, l.egress, l.ingress)
            })
            .collect::<Vec<_>>()
            .join(", ")
            + " out/in"
    }
}

impl ReleaseOutcome {
    /// What `quarry release` says it did to the container named `who`.
    pub fn render_text(&self, who: &str, w: &mut dyn Write) -> io::Result<()> {
        match &self.released {
            Some(i) => {
                writeln!(
                    w,
                    "released {} (isolated since {}); the quarantine dropped {} packets out and {} in ({})",
                    shown(who),
                    i.since,
                    self.dropped.egress,
                    self.dropped.ingress,
                    self.dropped.per_layer()
                )?;
                for note in &self.notes {
                    writeln!(w, "note: {note}")?;
                }
                Ok(())
            }
            None => writeln!(w, "{} is not isolated; nothing to release", shown(who)),
        }
    }
}

impl Plan {
    /// What `quarry isolate --dry-run` says it would attach, layer by layer.
    pub fn render_text(&self, w: &mut dyn Write) -> io::Result<()> {
        let who = shown(self.container_name.as_deref().unwrap_or(&self.container_id));
        writeln!(w, "dry run: nothing is attached or changed")?;
        if self.already_isolated {
            writeln!(
                w,
                "{who} is already isolated: isolating it again would change nothing"
            )?;
        }
        let rules = |r: &[AllowRule]| {
            if r.is_empty() {
                "nothing".to_string()
            } else {
                joined(r, ", ")
            }
        };
        writeln!(
            w,
            "1. cgroup_skb ingress+egress on {} (cgroup id {}), links pinned in {}; allows {}",
            self.cgroup_dir,
            self.cgroup_id,
            self.pins,
            rules(&self.cgroup_allow)
        )?;
        match &self.netns {
            Some(n) => {
                writeln!(
                    w,
                    "2. nftables in network namespace {} (inet input/output; netdev egress on {}); allows {}; ARP/ND only for {}",
                    n.netns_inode,
                    if n.devices.inside.is_empty() {
                        "no interface".to_string()
                    } else {
                        n.devices.inside.join(", ")
                    },
                    rules(&n.allow),
                    rules(&n.neighbours)
                )?;
                match &n.host_script {
                    Some(_) => writeln!(
                        w,
                        "3. nftables netdev ingress+egress on the host side: {}",
                        n.devices
                            .host
                            .iter()
                            .map(|h| format!("{} (ifindex {})", h.ifname, h.ifindex))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )?,
                    None => writeln!(w, "3. no host-side layer: no host peer of its interfaces")?,
                }
                writeln!(w, "   shared by: {}", n.members.join(", "))?;
            }
            None => writeln!(w, "2./3. no namespace-level layer")?,
        }
        for note in &self.notes {
            writeln!(w, "note: {note}")?;
        }
        Ok(())
    }
}
