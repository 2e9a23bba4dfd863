//! Network quarantine of a running container.
//!
//! [`isolate`] cuts a container off the network except to and from the allow-listed
//! collectors, while its processes keep running so responders can watch. Three layers, each
//! covering what the one before cannot (the two namespace-level ones are in [`netns`]):
//!
//! 1. **cgroup_skb** ingress and egress programs on the container's cgroup v2 directory: every
//!    IP packet of the container's own processes' inet sockets (TCP, UDP, ICMP, raw IP; IPv4
//!    and IPv6; established connections included), in any namespace, the host's too. Packet
//!    sockets (`AF_PACKET`) never pass these hooks, and a cgroup `sock_create` program could
//!    not refuse them either: the kernel runs it for inet sockets only (`inet_create`,
//!    `inet6_create`). One instance of the programs and maps is loaded once and pinned
//!    (`/sys/fs/bpf/quarry/isolate/shared/`), keyed by cgroup inside, so this layer is a few
//!    map updates and two attachments: milliseconds. Each container's links are pinned in
//!    `/sys/fs/bpf/quarry/isolate/containers/<id>/`, so the quarantine outlives the command.
//! 2. **nftables inside the container's network namespace**: IP of every process in the
//!    namespace (`inet`), and an `egress` chain (`netdev`) on each of its interfaces that stops
//!    every frame it sends (packet sockets with or without `PACKET_QDISC_BYPASS`, ARP, ND)
//!    before it crosses the veth: a capture on the host side sees nothing.
//! 3. **nftables on the host side** of the container's veth pairs (`netdev` ingress and egress
//!    of each host peer): nothing it sends reaches the host's stack or a bridge even if it
//!    could flush its own tables (CAP_NET_ADMIN), and nothing is sent its way, so its packet
//!    sockets cannot sniff either.
//!
//! ARP and ND pass only for allow-listed addresses and the gateways of the routes to them, and
//! only from the container's own addresses on that interface (and its MAC, for ARP), so the
//! allow-list still resolves its neighbours, nothing else does, and no neighbour cache is
//! poisoned through the opening. Layers 2 and 3 act on
//! the whole namespace: they are shared by the quarantined containers in it and
//! reference-counted by its cookie (unlike its inode, never reused while the system runs),
//! and a namespace is only ever entered by a descriptor whose inode and cookie are the ones
//! recorded at isolate time. A container with CAP_NET_ADMIN can delete or change layer 2:
//! status says so (`in_place: false`, and `tampered` when the tables are there but their rules
//! differ from the kernel's listing taken at install); layer 3 is out of its reach. Sockets
//! open before the quarantine are cut like new ones: every layer looks at each packet, none at
//! connection state.
//!
//! A record of who isolated what, when and why sits in `/run/quarry/isolate/<id>.json`.
//! [`release`] undoes all of it; both are idempotent.
//!
//! [`isolate`] puts the cgroup_skb layer in force first (a few map updates and two
//! attachments), while a second thread reads the namespace's interfaces, addresses and routes
//! by netlink and plans the namespace-level layers; once the first layer holds, both of those
//! are applied at the same time, each as one nf_tables netlink batch sent in-process (no `nft`
//! process: `nft -j` only lists them, for status).
//!
//! Where each concept lives: [`allow`] the allow-list, [`programs`] the shared eBPF programs
//! and the cgroup_skb layer, [`netns`] the namespace-level layers and the way into a namespace,
//! [`nft`] their rulesets and the `nft` processes that list them, [`nfnl`] the in-process
//! nf_tables batches that apply them, [`netlink`] the in-process route-netlink
//! queries, [`state`] the records and the lock. This module only sequences them: it must not
//! enter a namespace by pid alone, nor remove a shared layer another quarantine still needs,
//! nor grow knowledge of its own about any layer.

pub mod allow;
pub mod netlink;
pub mod netns;
pub mod nfnl;
pub mod nft;
pub mod programs;
pub mod state;
mod target;
mod text;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use quarry_containers::Container;
use serde::Serialize;

pub use allow::{AllowRule, check_allow_list};
pub use netns::NetnsPlan;
pub use programs::{PIN_ROOT, prepare, unload_if_idle};
pub use state::{Isolation, STATE_ROOT, find, list};
pub use target::{Target, release_target};

use programs::pin_dir;
use state::{Member, NetnsRecord, StateLock};

/// Errors isolating or releasing a container.
#[derive(Debug, thiserror::Error)]
pub enum IsolateError {
    /// An `--allow` entry is not `CIDR` or `CIDR:PORT`.
    #[error(
        "'{0}' is not an allow rule; use an address or CIDR, optionally with a port: 198.18.0.5, 198.18.0.0/24:443, [2001:db8::1]:514"
    )]
    BadAllowRule(String),

    /// Two allow rules overlap with different ports, which one trie entry per network cannot
    /// express.
    #[error(
        "allow rules {0} overlap with different ports; give one rule per network (one port, or \
         every port) and do not nest a port rule inside a broader rule"
    )]
    OverlappingAllow(String),

    /// The container shares the host's network namespace: its cgroup's quarantine would cut
    /// only its own processes, which may surprise; refused unless forced.
    #[error(
        "container {0} uses the host's network namespace: quarantining its cgroup cuts only its \
         own processes off the network (the host is untouched, loopback to host services \
         included); pass --force to do it anyway"
    )]
    HostNetwork(String),

    /// The allow-list conflicts with those of isolated containers sharing the network
    /// namespace, whose shared layers follow the union of the lists.
    #[error(
        "the allow-list conflicts with those of {others}, isolated in the same network \
         namespace ({netns}), whose shared layers let the union of the lists through: {detail}; \
         give this container rules compatible with theirs"
    )]
    SharedAllowConflict {
        netns: u64,
        others: String,
        detail: String,
    },

    /// The container has no cgroup v2 directory to attach to.
    #[error(
        "container {container} has no cgroup v2 directory ({path}); is cgroup2 mounted (see /proc/self/mountinfo)?"
    )]
    NoCgroup { container: String, path: String },

    /// The container asked for is not exactly one running container.
    #[error(transparent)]
    Container(#[from] quarry_containers::ResolveError),

    /// There is no cgroup v2 hierarchy to attach to.
    #[error(
        "cgroup v2 is not mounted (see /proc/self/mountinfo); isolate attaches to cgroup2 directories"
    )]
    NoCgroup2,

    /// bpffs is not mounted where pins go.
    #[error("bpffs is not mounted at /sys/fs/bpf; mount it with `mount -t bpf bpf /sys/fs/bpf`")]
    NoBpffs,

    /// Loading or attaching the programs failed.
    #[error("attaching the quarantine programs failed: {0}")]
    Attach(String),

    /// A file of the quarantine could not be written, read or removed.
    #[error("I/O error on {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> IsolateError {
    let path = path.into();
    move |source| IsolateError::Io { path, source }
}

/// Packets one layer dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LayerDrops {
    /// `cgroup_skb`, `netns` (nftables inside the namespace) or `host` (host-side nftables).
    pub layer: String,
    pub egress: u64,
    pub ingress: u64,
    /// Whether the layer was found in force: false when its tables are gone (a container with
    /// CAP_NET_ADMIN can delete those inside its own namespace; the host-side layer, which it
    /// cannot reach, still holds); None when it could not be checked (the namespace cannot be
    /// entered any more).
    pub in_place: Option<bool>,
    /// The layer's tables are there but their rules are not the ones installed (a rule
    /// inserted, changed or deleted since): `in_place` is then false too.
    pub tampered: bool,
    /// Other quarantined containers whose counts these include (namespace-level layers).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shared_with: Vec<String>,
}

/// Packets dropped by a quarantine so far: in total (no packet is counted by two layers) and
/// per layer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Dropped {
    pub egress: u64,
    pub ingress: u64,
    pub layers: Vec<LayerDrops>,
}

/// What [`isolate`] did.
#[derive(Debug, Serialize)]
pub struct IsolateOutcome {
    pub isolation: Isolation,
    /// False when the container was already isolated (nothing was changed).
    pub changed: bool,
    /// Milliseconds from the start of the call until the cgroup_skb layer was in force.
    pub effective_after_ms: f64,
    /// Milliseconds from the start of the call until every layer was in force.
    pub all_layers_after_ms: f64,
    /// Milliseconds from the start of the call until each layer was in force
    /// (`cgroup_skb`, `netns`, `host`; a layer not applied is missing).
    pub layers: Vec<Timed>,
    /// Milliseconds from the start of the call at the end of each step: where the time goes.
    pub steps: Vec<Timed>,
    /// When the cgroup_skb layer was in force (for callers measuring from their own start).
    #[serde(skip)]
    pub attached_at: Option<Instant>,
    /// Why a layer was not applied, when one was not (first line: the nftables layers).
    pub nftables_note: Option<String>,
    /// What else the responder should know: containers sharing the namespace, say.
    pub notes: Vec<String>,
}

impl IsolateOutcome {
    /// What the `action` row of an isolation records: `ok` (or `unchanged`, when it was
    /// isolated already) with [`IsolateOutcome::action_detail`], or `error` with
    /// `error_text` of what failed.
    pub fn action_outcome(
        result: Result<&IsolateOutcome, &IsolateError>,
        error_text: impl FnOnce(&IsolateError) -> String,
    ) -> quarry_store::action::Outcome {
        let (result, error, detail) = match result {
            Ok(o) => (
                if o.changed { "ok" } else { "unchanged" },
                None,
                Some(o.action_detail()),
            ),
            Err(e) => ("error", Some(error_text(e)), None),
        };
        quarry_store::action::Outcome {
            result,
            error,
            detail,
        }
    }

    /// What the `action` row of an isolation records as its detail: the allow-list, when
    /// each layer was in force, the namespace, and the notes.
    pub fn action_detail(&self) -> serde_json::Value {
        serde_json::json!({
            "allow": self.isolation.allow.iter().map(|r| r.to_string()).collect::<Vec<_>>(),
            "effective_after_ms": self.effective_after_ms,
            "all_layers_after_ms": self.all_layers_after_ms,
            "layers": self.layers,
            "nftables": self.isolation.nftables,
            "host_layer": self.isolation.host_layer,
            "netns_inode": self.isolation.netns_inode,
            "netns_cookie": self.isolation.netns_cookie,
            "note": self.nftables_note,
            "notes": self.notes,
        })
    }
}

/// A named point in time, in milliseconds from the start of a call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timed {
    pub name: String,
    pub after_ms: f64,
}

fn timed(name: &str, started: Instant, at: Instant) -> Timed {
    Timed {
        name: name.into(),
        after_ms: at.saturating_duration_since(started).as_secs_f64() * 1000.0,
    }
}

/// Packets dropped so far by the quarantine of `id`, per layer. The namespace-level layers
/// count for every quarantined container of the namespace: their entries say which others.
pub fn dropped(id: &str) -> Option<Dropped> {
    let isolation = find(id)?;
    let cg = programs::drops(isolation.cgroup_id);
    let mut layers = vec![LayerDrops {
        layer: "cgroup_skb".into(),
        egress: cg.0,
        ingress: cg.1,
        in_place: Some(programs::links_pinned(id)),
        tampered: false,
        shared_with: Vec::new(),
    }];
    if let Some(rec) = isolation.netns_cookie.and_then(NetnsRecord::load) {
        let shared_with: Vec<String> = rec
            .members
            .iter()
            .map(|m| m.container_id.clone())
            .filter(|c| *c != isolation.container_id)
            .collect();
        let (inside, host) = rec.drops();
        for (on, layer, counted) in [
            (rec.inside_layer, "netns", inside),
            (rec.host_layer, "host", host),
        ] {
            if on {
                layers.push(LayerDrops {
                    layer: layer.into(),
                    egress: counted.egress,
                    ingress: counted.ingress,
                    in_place: counted.in_place,
                    tampered: counted.tampered,
                    shared_with: shared_with.clone(),
                });
            }
        }
    }
    Some(Dropped {
        egress: layers.iter().map(|l| l.egress).sum(),
        ingress: layers.iter().map(|l| l.ingress).sum(),
        layers,
    })
}

/// What `isolate --dry-run` shows: what would be attached, and where.
#[derive(Debug, Serialize)]
pub struct Plan {
    pub container_id: String,
    pub container_name: Option<String>,
    pub already_isolated: bool,
    /// The cgroup_skb layer: programs attached to this directory (inode `cgroup_id`).
    pub cgroup_dir: String,
    pub cgroup_id: u64,
    /// Where its links would be pinned.
    pub pins: String,
    /// The cgroup_skb allow-list (the container's own loopback added when it has its own
    /// namespace).
    pub cgroup_allow: Vec<AllowRule>,
    /// The namespace-level layers (None: host network, or no process to find it by).
    pub netns: Option<NetnsPlan>,
    pub notes: Vec<String>,
}

/// A container's namespace, the members its layers would serve, and its record so far.
type Namespace = (netns::Netns, Vec<Member>, Option<NetnsRecord>);

/// The namespace of `container` (checked against the inode its inventory saw) and the
/// members its layers would serve with `allow` added for it; None when it has none to enter.
fn container_netns(
    container: &Container,
    allow: &[AllowRule],
) -> Result<Option<Namespace>, IsolateError> {
    if container.host_network {
        return Ok(None);
    }
    let Some(pid) = container.init_pid else {
        return Ok(None);
    };
    let Some(ns) = netns::open(pid, container.netns_inode, None) else {
        return Ok(None);
    };
    let was = NetnsRecord::load(ns.cookie);
    let mut members: Vec<Member> = was.as_ref().map(|r| r.members.clone()).unwrap_or_default();
    members.retain(|m| m.container_id != container.id);
    members.push(Member {
        container_id: container.id.clone(),
        init_pid: Some(pid),
        allow: allow.to_vec(),
    });
    let union = allow::union(members.iter().map(|m| m.allow.as_slice()));
    if members.len() > 1
        && let Err(IsolateError::OverlappingAllow(detail)) = check_allow_list(&union)
    {
        return Err(IsolateError::SharedAllowConflict {
            netns: ns.inode,
            others: members[..members.len() - 1]
                .iter()
                .map(|m| m.container_id.clone())
                .collect::<Vec<_>>()
                .join(", "),
            detail,
        });
    }
    Ok(Some((ns, members, was)))
}

fn sharing_notes(
    ino: u64,
    members: &[Member],
    me: &str,
    others_in_netns: &[String],
) -> Vec<String> {
    let isolated: Vec<&str> = members
        .iter()
        .map(|m| m.container_id.as_str())
        .filter(|c| *c != me)
        .collect();
    let not_isolated: Vec<&str> = others_in_netns
        .iter()
        .map(String::as_str)
        .filter(|c| *c != me && !isolated.contains(c))
        .collect();
    let mut notes = Vec::new();
    if !not_isolated.is_empty() {
        notes.push(format!(
            "network namespace {ino} is shared with {}: the namespace-level layers cut them \
             too (every process and frame of the namespace, except to the allow-list); only \
             this container's own processes get the cgroup_skb layer",
            not_isolated.join(", ")
        ));
    }
    if !isolated.is_empty() {
        notes.push(format!(
            "network namespace {ino} is shared with the isolated {}: its namespace-level \
             layers now let the union of their allow-lists through, and stay until the last \
             of them is released",
            isolated.join(", ")
        ));
    }
    notes
}

/// What [`isolate`] would do, without doing any of it.
pub fn plan(
    container: &Container,
    cgroup_dir: &Path,
    allow: &[AllowRule],
    others_in_netns: &[String],
) -> Result<Plan, IsolateError> {
    check_allow_list(allow)?;
    let cgroup_id =
        std::os::unix::fs::MetadataExt::ino(&fs::metadata(cgroup_dir).map_err(io(cgroup_dir))?);
    let mut notes = Vec::new();
    if container.host_network {
        notes.push(
            "host network namespace: only the cgroup_skb layer (needs --force); no \
             namespace-level layer"
                .into(),
        );
    }
    let netns = match container_netns(container, allow)? {
        Some((ns, members, was)) => {
            notes.extend(sharing_notes(
                ns.inode,
                &members,
                &container.id,
                others_in_netns,
            ));
            Some(netns::plan(
                ns.inode,
                ns.cookie,
                Some(&ns),
                &members,
                was.as_ref(),
            ))
        }
        None => {
            if !container.host_network {
                notes.push(
                    "the container's network namespace cannot be entered (no init pid, or it \
                     changed): only the cgroup_skb layer"
                        .into(),
                );
            }
            None
        }
    };
    Ok(Plan {
        container_id: container.id.clone(),
        container_name: container.name.clone(),
        already_isolated: find(&container.id).is_some(),
        cgroup_dir: cgroup_dir.display().to_string(),
        cgroup_id,
        pins: pin_dir(&container.id).display().to_string(),
        cgroup_allow: allow::cgroup_rules(container, allow),
        netns,
        notes,
    })
}

/// Quarantines `container`. Isolating an isolated container changes nothing and says so.
/// `others_in_netns`: ids of the other containers known to share its network namespace (the
/// outcome says what the quarantine means for them). `actor`: who asked, for the record.
pub fn isolate(
    container: &Container,
    cgroup_dir: &Path,
    allow: &[AllowRule],
    reason: Option<&str>,
    force: bool,
    others_in_netns: &[String],
    actor: &str,
) -> Result<IsolateOutcome, IsolateError> {
    let started = Instant::now();
    check_allow_list(allow)?;
    let _lock = StateLock::acquire()?;
    if let Some(existing) = find(&container.id) {
        return Ok(IsolateOutcome {
            isolation: existing,
            changed: false,
            effective_after_ms: 0.0,
            all_layers_after_ms: 0.0,
            layers: Vec::new(),
            steps: Vec::new(),
            attached_at: None,
            nftables_note: Some("already isolated; nothing changed".into()),
            notes: Vec::new(),
        });
    }
    if container.host_network && !force {
        return Err(IsolateError::HostNetwork(container.to_string()));
    }
    if !cgroup_dir.is_dir() {
        return Err(IsolateError::NoCgroup {
            container: container.to_string(),
            path: cgroup_dir.display().to_string(),
        });
    }
    if !programs::bpffs_mounted() {
        return Err(IsolateError::NoBpffs);
    }
    if programs::any_link_pinned(&container.id) {
        // Links pinned without a record: an earlier isolate died before writing it. The
        // quarantine may be live: never undo it from here; `release` clears it.
        return Err(IsolateError::Attach(format!(
            "{} already has quarantine links pinned in {} but no record; run `quarry release {}` \
             and isolate again",
            container,
            pin_dir(&container.id).display(),
            container.id
        )));
    }
    let mut steps = vec![timed("checked", started, Instant::now())];
    // Before anything is attached: a conflict with the allow-lists of containers sharing the
    // namespace is refused, not half applied.
    let namespace = container_netns(container, allow)?;
    steps.push(timed("namespace opened", started, Instant::now()));
    let rules = allow::cgroup_rules(container, allow);
    let cgroup_id =
        std::os::unix::fs::MetadataExt::ino(&fs::metadata(cgroup_dir).map_err(io(cgroup_dir))?);

    // The namespace-level layers are planned meanwhile (interfaces, addresses, routes), in a
    // thread of their own; they are applied only once the cgroup_skb layer holds (so a failed
    // attach leaves nothing behind), and never if it failed.
    let (attached, worker) = std::thread::scope(|s| {
        let (go, wait_go) = std::sync::mpsc::channel::<bool>();
        let worker = namespace.as_ref().map(|(ns, members, was)| {
            s.spawn(move || {
                let plan = netns::plan(ns.inode, ns.cookie, Some(ns), members, was.as_ref());
                let planned_at = Instant::now();
                if wait_go.recv() != Ok(true) {
                    return None;
                }
                let applied = netns::apply(plan, Some(ns), members.clone(), was.as_ref());
                Some((planned_at, applied, Instant::now()))
            })
        });
        let attached =
            programs::attach(&container.id, cgroup_dir, cgroup_id, &rules).map(|()| Instant::now());
        let _ = go.send(attached.is_ok());
        let worker = worker.and_then(|w| w.join().ok().flatten());
        (attached, worker)
    });
    let attached_at = attached?;
    let effective_after_ms = (attached_at - started).as_secs_f64() * 1000.0;
    let mut layers = vec![timed("cgroup_skb", started, attached_at)];
    steps.push(timed("cgroup_skb attached", started, attached_at));

    let mut notes = Vec::new();
    let (nftables, host_layer, netns_id, nftables_note) = match (&namespace, worker) {
        (None, _) if container.host_network => (
            false,
            false,
            None,
            Some("host network namespace: no namespace-level layer".to_string()),
        ),
        (None, _) => (
            false,
            false,
            None,
            Some(
                "the network namespace cannot be entered (no init pid, or its namespace is \
                 not the one the inventory saw): only the cgroup_skb layer"
                    .to_string(),
            ),
        ),
        (Some((ns, members, _)), None) => {
            notes.extend(sharing_notes(
                ns.inode,
                members,
                &container.id,
                others_in_netns,
            ));
            (
                false,
                false,
                Some((ns.inode, ns.cookie)),
                Some("the namespace-level layers were not applied (their thread failed)".into()),
            )
        }
        (Some((ns, members, _)), Some((planned_at, applied, listed_at))) => {
            notes.extend(sharing_notes(
                ns.inode,
                members,
                &container.id,
                others_in_netns,
            ));
            steps.push(timed("namespace read, planned", started, planned_at));
            for (name, at) in [("netns", applied.inside_at), ("host", applied.host_at)] {
                if let Some(at) = at {
                    layers.push(timed(name, started, at));
                    steps.push(timed(&format!("{name} applied"), started, at));
                }
            }
            steps.push(timed("rules listed", started, listed_at));
            applied.record.save()?;
            let note = (!applied.notes.is_empty()).then(|| applied.notes.join("; "));
            (
                applied.record.inside_layer,
                applied.record.host_layer,
                Some((ns.inode, ns.cookie)),
                note,
            )
        }
    };
    let all_layers_after_ms = layers
        .iter()
        .map(|l| l.after_ms)
        .fold(effective_after_ms, f64::max);

    let isolation = Isolation {
        container_id: container.id.clone(),
        container_name: container.name.clone(),
        cgroup_path: container.cgroup_path.clone(),
        since: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        reason: reason.map(str::to_string),
        allow: allow.to_vec(),
        actor: actor.to_string(),
        nftables,
        host_layer,
        init_pid: container.init_pid,
        netns_inode: netns_id.map(|n| n.0),
        netns_cookie: netns_id.map(|n| n.1),
        cgroup_id,
    };
    state::save(&isolation)?;
    steps.push(timed("recorded", started, Instant::now()));
    Ok(IsolateOutcome {
        isolation,
        changed: true,
        effective_after_ms,
        all_layers_after_ms,
        layers,
        steps,
        attached_at: Some(attached_at),
        nftables_note,
        notes,
    })
}

/// What [`release`] did.
#[derive(Debug, Serialize)]
pub struct ReleaseOutcome {
    /// The quarantine that was lifted; None when the container was not isolated.
    pub released: Option<Isolation>,
    pub dropped: Dropped,
    /// What was left as it was, and why (a shared namespace, a namespace that is gone).
    pub notes: Vec<String>,
}

impl ReleaseOutcome {
    /// What the `action` row of a release records: `ok` with what the quarantine dropped and
    /// the notes, `unchanged` when there was none, or `error` with what failed.
    pub fn action_outcome(
        result: Result<&ReleaseOutcome, &IsolateError>,
    ) -> quarry_store::action::Outcome {
        let (result, error, detail) = match result {
            Ok(o) if o.released.is_some() => (
                "ok",
                None,
                Some(serde_json::json!({ "dropped": o.dropped, "notes": o.notes })),
            ),
            Ok(_) => ("unchanged", None, None),
            Err(e) => ("error", Some(e.to_string()), None),
        };
        quarry_store::action::Outcome {
            result,
            error,
            detail,
        }
    }
}

/// One quarantine in force and what it has dropped so far (`quarry isolate --status`).
#[derive(Debug, Serialize)]
pub struct Status {
    pub dropped: Option<Dropped>,
    pub isolation: Isolation,
}

/// Every quarantine in force, with its drops.
pub fn status() -> Vec<Status> {
    list()
        .into_iter()
        .map(|isolation| Status {
            dropped: dropped(&isolation.container_id),
            isolation,
        })
        .collect()
}

/// Lifts the quarantine of container `id` exactly: unpins the links (which detaches the
/// programs), removes its map entries and the record, and its share of the namespace-level
/// layers: those go with the last quarantined container of the namespace, and until then
/// follow the others' allow-lists. Works after the container has exited too; a namespace is
/// entered only when a recorded pid still lives in the recorded one.
pub fn release(id: &str) -> Result<ReleaseOutcome, IsolateError> {
    let _lock = StateLock::acquire()?;
    let Some(isolation) = find(id) else {
        // Clean up anything stale left by an interrupted isolate.
        programs::remove_stale(id);
        let _ = state::remove(id, false);
        return Ok(ReleaseOutcome {
            released: None,
            dropped: Dropped::default(),
            notes: Vec::new(),
        });
    };
    let dropped = dropped(id).unwrap_or_default();
    programs::detach(id, isolation.cgroup_id)?;
    let mut notes = Vec::new();
    match isolation.netns_cookie {
        Some(cookie) => netns::release_share(cookie, id, &mut notes)?,
        None if isolation.nftables => notes.push(format!(
            "this quarantine was recorded without its network namespace's inode: its nftables \
             table is left as it is (no pid is trusted to find the namespace; pid {} may be \
             another process's now)",
            isolation
                .init_pid
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".into())
        )),
        None => {}
    }
    state::remove(id, true)?;
    Ok(ReleaseOutcome {
        released: Some(isolation),
        dropped,
        notes,
    })
}
