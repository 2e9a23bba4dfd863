//! The network-namespace-level layers of a quarantine, and the one safe way into a namespace.
//!
//! Two nftables layers act on frames, whatever socket made them (their rulesets are in
//! [`crate::nft`]):
//!
//! * inside the container's namespace, table `inet quarry_quarantine` (IP of every process in
//!   the namespace, raw IP sockets included) and table `netdev quarry_quarantine`, an `egress`
//!   chain on each of its interfaces: every frame the namespace sends, from packet sockets too
//!   (`AF_PACKET`, with or without `PACKET_QDISC_BYPASS`, whose frames the kernel passes through
//!   the netfilter egress hook), ARP and ND included, is stopped before it crosses the veth, so
//!   even a capture on the host side of the pair sees nothing;
//! * in the host's namespace, table `netdev quarry_q_<netns cookie>` with an `ingress` and an
//!   `egress` chain on the host side of the container's veth pairs (a bridge port, often): what
//!   the container sends never reaches the host's stack, the bridge or other containers, even if
//!   a container with CAP_NET_ADMIN flushed its own tables; and nothing reaches it, so a packet
//!   socket inside cannot even sniff frames sent its way (taps see frames before any hook of
//!   the receiving side, so only the sending side can keep them from a sniffer).
//!
//! Neighbour resolution for the allow-list still works: ARP and ND pass only for allow-listed
//! addresses and the gateways of the namespace's routes to them (not its default gateway,
//! unless a collector lies beyond it), and only when sent from the container's own addresses
//! on that interface (its own MAC too, for ARP). Both layers cut every process of the
//! namespace, so they are shared by the quarantined containers in it and reference-counted by
//! the namespace's cookie (`/run/quarry/isolate/netns/<cookie>.json`): they follow the union of
//! their allow-lists, and go with the last one released. The kernel's listing of each layer's
//! tables is fingerprinted right after install; status compares, so a rule a container with
//! CAP_NET_ADMIN inserted into its inside tables shows as tampering, not just a missing table.
//!
//! A namespace is only ever entered through a descriptor opened from `/proc/<pid>/ns/net` whose
//! inode and cookie are the ones recorded at isolate time: a pid that has been reused by a
//! process of another namespace is never entered, even one whose namespace got the recorded
//! inode (inodes of gone namespaces are handed out again; cookies never are until reboot,
//! when the records in /run and the tables go too). Interfaces, addresses and routes are read
//! by in-process netlink ([`crate::netlink`]) from a thread that joined the namespace.

use std::fs;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::nft::{self, NETNS_TABLE, Ruleset};
use crate::state::{Member, NetnsRecord};
use crate::{AllowRule, IsolateError, netlink, nfnl};

/// A descriptor of a network namespace, checked to be the expected one.
pub struct Netns {
    fd: OwnedFd,
    pub inode: u64,
    /// The kernel's cookie of the namespace: unlike its inode, never given to another
    /// namespace while the system runs.
    pub cookie: u64,
}

/// Opens the network namespace of `pid`; `None` when the process is gone or its namespace is
/// not the expected one: another inode, or (when recorded) another cookie. A pid can be
/// reused, and so can an inode once its namespace is gone (the kernel hands out the lowest
/// free number): only the cookie tells a new namespace from the recorded one.
pub fn open(pid: i32, inode: Option<u64>, cookie: Option<u64>) -> Option<Netns> {
    let path = format!("/proc/{pid}/ns/net");
    let file = fs::File::open(&path).ok()?;
    let ino = file.metadata().ok()?.ino();
    if inode.is_some_and(|e| e != ino) {
        return None;
    }
    let mut ns = Netns {
        fd: file.into(),
        inode: ino,
        cookie: 0,
    };
    let found = ns.within(netns_cookie).ok()?;
    if cookie.is_some_and(|c| c != found) {
        return None;
    }
    ns.cookie = found;
    Some(ns)
}

/// The cookie of the calling thread's namespace, read from a socket made in it.
fn netns_cookie() -> std::io::Result<u64> {
    const SO_NETNS_COOKIE: libc::c_int = 71;
    // SAFETY: a socket we close; getsockopt into a u64 we own.
    unsafe {
        // A unix socket: belongs to the namespace, never touches the network.
        let sock = libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut cookie = 0u64;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        let rc = libc::getsockopt(
            sock,
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        );
        let err = std::io::Error::last_os_error();
        libc::close(sock);
        if rc != 0 {
            return Err(err);
        }
        Ok(cookie)
    }
}

impl Netns {
    /// `program` run inside this namespace (joined before exec, from the descriptor checked
    /// at open).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        let fd = self.fd.as_raw_fd();
        // SAFETY: setns is async-signal-safe; the descriptor stays open in the parent until
        // the child has exec'd (spawn waits for that).
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    /// Runs `f` in a thread that joins this namespace for it and ends (the rest of the
    /// process stays where it is): what `f` opens belongs to this namespace.
    pub fn within<T: Send>(
        &self,
        f: impl FnOnce() -> std::io::Result<T> + Send,
    ) -> std::io::Result<T> {
        std::thread::scope(|s| {
            self.spawn_within(s, f)
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("namespace thread panicked")))
        })
    }

    /// [`Netns::within`] without waiting: the thread runs in `scope` while the caller goes on.
    pub fn spawn_within<'scope, T: Send + 'scope>(
        &self,
        scope: &'scope std::thread::Scope<'scope, '_>,
        f: impl FnOnce() -> std::io::Result<T> + Send + 'scope,
    ) -> std::thread::ScopedJoinHandle<'scope, std::io::Result<T>> {
        let raw = self.fd.as_raw_fd();
        scope.spawn(move || {
            // SAFETY: setns on a descriptor the caller keeps open for the scope, in this
            // thread only.
            if unsafe { libc::setns(raw, libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            f()
        })
    }
}

/// An interface on the host side of one of the container's veth pairs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostDevice {
    pub ifname: String,
    pub ifindex: u32,
    /// Index of its peer inside the namespace (the interface whose addresses it carries).
    #[serde(default)]
    pub peer_ifindex: Option<u32>,
}

/// The container's own addresses on one of its interfaces: the only senders of the ARP/ND
/// the quarantine lets out through it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnAddresses {
    pub ifname: String,
    pub ifindex: u32,
    #[serde(default)]
    pub mac: Option<[u8; 6]>,
    pub addrs: Vec<IpAddr>,
}

/// The interfaces of a namespace: its own (but loopback) and their host-side peers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Devices {
    /// Interfaces inside the namespace (the `egress` chain's devices).
    pub inside: Vec<String>,
    /// Host-side peers of its veth pairs (the host table's devices).
    pub host: Vec<HostDevice>,
    /// Interfaces inside whose names nft cannot be given safely: not in the inside layer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unsafe_inside: Vec<String>,
    /// The addresses of each interface inside (but loopback), as isolate found them.
    #[serde(default)]
    pub own: Vec<OwnAddresses>,
}

/// Finds the namespace's interfaces, their addresses and the host-side peers of its veths: a
/// host interface is a peer when its own peer lives in this namespace (by the id the host gives
/// the namespace, not by a name or index the container could choose) and is one of these
/// interfaces. Also returns the gateways the namespace reaches the allow-listed networks
/// through (its routes to them): the only neighbours beyond the allow-list itself that ARP/ND
/// is let through for. Not every gateway: the default one is, typically, the host-side
/// address, and ARP to it must stay cut when no allow-listed collector lies beyond it. A
/// network spread over several routes is looked up by its first address.
pub fn devices(ns: &Netns, allow: &[AllowRule]) -> Result<(Devices, Vec<IpAddr>), String> {
    let dsts: Vec<IpAddr> = allow.iter().map(|r| r.addr).collect();
    // One thread in the namespace for all three questions: on a loaded machine, starting a
    // thread can cost more than the questions.
    let (inside, addrs, gateways) = ns
        .within(move || {
            let mut gateways = Vec::new();
            for dst in dsts {
                if let Ok(Some(g)) = netlink::route_gateway(dst)
                    && !gateways.contains(&g)
                {
                    gateways.push(g);
                }
            }
            Ok((netlink::links()?, netlink::addrs()?, gateways))
        })
        .map_err(|e| format!("listing the namespace's interfaces: {e}"))?;
    // The host's dump first: listing a veth gives its peer's namespace an id.
    let host = netlink::links().map_err(|e| format!("listing the host's interfaces: {e}"))?;
    let nsid = netlink::nsid(ns.fd.as_raw_fd()).map_err(|e| format!("RTM_GETNSID: {e}"))?;
    let mut d = Devices::default();
    for l in &inside {
        // Loopback by its type, not its name: with CAP_NET_ADMIN a container can rename its
        // veth `lo` (and its loopback something else).
        if l.loopback {
            continue;
        }
        // Names inside the namespace are the container's to choose (with CAP_NET_ADMIN):
        // only names that cannot change the meaning of a ruleset go into one. A name that
        // cannot is left out of the inside layer (and said so), never a reason to skip the
        // host-side layer, which finds its devices by index.
        if safe_ifname(&l.ifname) {
            d.inside.push(l.ifname.clone());
        } else {
            d.unsafe_inside.push(l.ifname.clone());
        }
        d.own.push(OwnAddresses {
            ifname: l.ifname.clone(),
            ifindex: l.ifindex,
            mac: l.mac,
            addrs: addrs
                .iter()
                .filter(|a| a.ifindex == l.ifindex)
                .map(|a| a.addr)
                .collect(),
        });
    }
    if let Some(nsid) = nsid {
        for h in &host {
            if h.link_netnsid == Some(nsid)
                && let Some(peer) = h.link_index
                && inside
                    .iter()
                    .any(|c| c.ifindex == peer && c.link_index == Some(h.ifindex))
                && safe_ifname(&h.ifname)
            {
                d.host.push(HostDevice {
                    ifname: h.ifname.clone(),
                    ifindex: h.ifindex,
                    peer_ifindex: Some(peer),
                });
            }
        }
    }
    Ok((d, gateways))
}

fn safe_ifname(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
}

/// What the namespace-level layers of one namespace are to be.
#[derive(Debug, Clone, Serialize)]
pub struct NetnsPlan {
    pub netns_inode: u64,
    /// Its cookie: the name of the host-side table is made from it.
    pub netns_cookie: u64,
    /// The quarantined containers of the namespace these layers serve.
    pub members: Vec<String>,
    /// The union of their allow-lists: what these layers let through.
    pub allow: Vec<AllowRule>,
    pub devices: Devices,
    /// ARP/ND is let through for these only.
    pub neighbours: Vec<AllowRule>,
    /// What is applied inside the namespace, as an nft script.
    pub netns_script: String,
    /// What is applied in the host's namespace (None: no host-side peer was found).
    pub host_script: Option<String>,
    #[serde(skip)]
    netns_rules: Ruleset,
    #[serde(skip)]
    host_rules: Option<Ruleset>,
    /// Why the interfaces could not be listed, when they could not.
    pub devices_error: Option<String>,
}

/// Plans the namespace-level layers for `members`: reads the interfaces and gateways inside
/// `ns` when given (else keeps `known` ones: the namespace could not be entered).
pub fn plan(
    ino: u64,
    cookie: u64,
    ns: Option<&Netns>,
    members: &[Member],
    known: Option<&NetnsRecord>,
) -> NetnsPlan {
    let allow = crate::allow::union(members.iter().map(|m| m.allow.as_slice()));
    let (devices, gateways, devices_error) = match ns {
        Some(ns) => match devices(ns, &allow) {
            Ok((d, g)) => (d, g, None),
            Err(e) => (Devices::default(), Vec::new(), Some(e)),
        },
        None => (
            known.map(|k| k.devices.clone()).unwrap_or_default(),
            Vec::new(),
            None,
        ),
    };
    let neighbours = match (ns, known) {
        (None, Some(k)) => k.neighbours.clone(),
        _ => nft::neighbours(&allow, &gateways),
    };
    // When the interfaces could not be listed, the inside script filters IP only: its
    // netdev table needs their names.
    let netns_rules = nft::netns_ruleset(&allow, &neighbours, &devices);
    let host_rules = (!devices.host.is_empty())
        .then(|| nft::host_ruleset(cookie, &allow, &neighbours, &devices));
    NetnsPlan {
        netns_inode: ino,
        netns_cookie: cookie,
        members: members.iter().map(|m| m.container_id.clone()).collect(),
        allow,
        devices,
        neighbours,
        netns_script: netns_rules.script(),
        host_script: host_rules.as_ref().map(Ruleset::script),
        netns_rules,
        host_rules,
        devices_error,
    }
}

/// The tables of the layer inside the namespace, as `(family, name)`.
fn inside_tables(devices: &Devices) -> Vec<(&'static str, &'static str)> {
    let mut t = vec![("inet", NETNS_TABLE)];
    if !devices.inside.is_empty() {
        t.push(("netdev", NETNS_TABLE));
    }
    t
}

/// Applies `ruleset` in `ns` (the host's namespace when None) by in-process netlink; falls
/// back to `nft -f` should the kernel refuse the batch (the note says why: nft's own error
/// messages are the better diagnosis when both fail).
pub fn apply_ruleset(ns: Option<&Netns>, ruleset: &Ruleset) -> Result<Option<String>, String> {
    let direct = match ns {
        Some(ns) => ns.within(|| nfnl::apply(ruleset)),
        None => nfnl::apply(ruleset),
    };
    fallback(ns, ruleset, direct)
}

/// What [`apply_ruleset`] does once the in-process attempt came back with `direct`.
fn fallback(
    ns: Option<&Netns>,
    ruleset: &Ruleset,
    direct: std::io::Result<()>,
) -> Result<Option<String>, String> {
    match direct {
        Ok(()) => Ok(None),
        Err(e) => nft::run(ns, &ruleset.script())
            .map(|()| {
                Some(format!(
                    "in-process nf_tables netlink failed ({e}); applied with nft instead"
                ))
            })
            .map_err(|n| format!("{n} (in-process: {e})")),
    }
}

/// When the layers of [`apply`] were in force, and what it left.
pub struct Applied {
    pub record: NetnsRecord,
    /// What failed, for the responder.
    pub notes: Vec<String>,
    pub inside_at: Option<Instant>,
    pub host_at: Option<Instant>,
}

/// Applies `plan`, both layers at once (they are independent); then lists what the kernel
/// holds, for the fingerprints status compares against. The old host table goes when there
/// is no peer any more.
pub fn apply(
    plan: NetnsPlan,
    ns: Option<&Netns>,
    members: Vec<Member>,
    was: Option<&NetnsRecord>,
) -> Applied {
    let host_rules = plan
        .host_rules
        .clone()
        .unwrap_or_else(|| nft::host_delete(plan.netns_cookie));
    // The inside batch from a thread in the namespace, the host's from this one, at once.
    let ((inside, inside_at), (host, host_at)) = std::thread::scope(|s| {
        let rules = &plan.netns_rules;
        let inside = ns.map(|n| {
            n.spawn_within(s, move || {
                let r = nfnl::apply(rules);
                Ok((r, Instant::now()))
            })
        });
        let h = apply_ruleset(None, &host_rules);
        let host_at = Instant::now();
        let inside = match (ns, inside) {
            (Some(n), Some(handle)) => {
                let (direct, at) = match handle.join() {
                    Ok(Ok((r, at))) => (r, at),
                    Ok(Err(e)) => (Err(e), Instant::now()),
                    Err(_) => (
                        Err(std::io::Error::other("the applying thread panicked")),
                        Instant::now(),
                    ),
                };
                let done = fallback(Some(n), rules, direct);
                // A fallback to nft takes its own time: the layer holds once it is done.
                let at = if matches!(done, Ok(Some(_))) {
                    Instant::now()
                } else {
                    at
                };
                (Some(done), at)
            }
            _ => (None, Instant::now()),
        };
        (inside, (h, host_at))
    });
    let mut notes = Vec::new();
    let (inside, host) = (
        inside.map(|r| r.map(|note| notes.extend(note))),
        host.map(|note| notes.extend(note)),
    );
    let inside_layer = match inside {
        Some(Ok(())) => true,
        Some(Err(e)) => {
            notes.push(format!(
                "the nftables layer inside the network namespace was not applied ({e})"
            ));
            false
        }
        None => was.is_some_and(|w| w.inside_layer),
    };
    let host_layer = match (&plan.host_script, host) {
        (Some(_), Ok(())) => true,
        (Some(_), Err(e)) => {
            notes.push(format!(
                "the host-side nftables layer was not applied ({e})"
            ));
            false
        }
        (None, _) => {
            notes.push(
                "no host-side peer of the container's interfaces in the host's namespace \
                     (not a veth, or its peer is elsewhere): no host-side layer"
                    .into(),
            );
            false
        }
    };
    if !plan.devices.unsafe_inside.is_empty() {
        notes.push(format!(
            "interfaces {:?} inside the namespace have names nft cannot be given safely: the \
                 inside layer filters their IP only; the host-side layer still covers their peers",
            plan.devices.unsafe_inside
        ));
    }
    if let Some(e) = &plan.devices_error {
        notes.push(format!(
                "the namespace's interfaces could not be listed ({e}): only its IP is filtered inside it"
            ));
    }
    let host_t = nft::host_table(plan.netns_cookie);
    let inside_t = inside_tables(&plan.devices);
    let (inside_rules, host_rules) = std::thread::scope(|s| {
        let i = s.spawn(|| match (ns, inside_layer) {
            (Some(ns), true) => nft::list(Some(ns), &inside_t).map(|l| l.fingerprint),
            // Not entered this time: the rules installed before are still the reference.
            (None, true) => was.and_then(|w| w.inside_rules.clone()),
            _ => None,
        });
        let h = host_layer
            .then(|| nft::list(None, &[("netdev", &host_t)]).map(|l| l.fingerprint))
            .flatten();
        (i.join().ok().flatten(), h)
    });
    let record = NetnsRecord {
        netns_inode: plan.netns_inode,
        netns_cookie: plan.netns_cookie,
        members,
        devices: plan.devices.clone(),
        neighbours: plan.neighbours.clone(),
        inside_layer,
        host_layer,
        inside_rules,
        host_rules,
    };
    Applied {
        record,
        notes,
        inside_at: inside_layer.then_some(inside_at),
        host_at: host_layer.then_some(host_at),
    }
}

/// Takes container `id` out of the namespace-level layers of the namespace with `cookie`.
pub(crate) fn release_share(
    cookie: u64,
    id: &str,
    notes: &mut Vec<String>,
) -> Result<(), IsolateError> {
    let Some(rec) = NetnsRecord::load(cookie) else {
        return Ok(());
    };
    let ino = rec.netns_inode;
    // The way in, found before this member goes: its own pid may be the only one left.
    let ns = rec.enter();
    let mut remaining = rec.members.clone();
    remaining.retain(|m| m.container_id != id);
    if remaining.is_empty() {
        let (inside, host) = std::thread::scope(|s| {
            let inside = s.spawn(|| match &ns {
                Some(ns) if rec.inside_layer => Some(apply_ruleset(Some(ns), &nft::netns_delete())),
                _ => None,
            });
            let host = apply_ruleset(None, &nft::host_delete(cookie));
            (inside.join().unwrap_or(None), host)
        });
        if let Some(Err(e)) = inside {
            notes.push(format!(
                "the nftables tables inside network namespace {ino} were not removed ({e})"
            ));
        }
        if ns.is_none() {
            notes.push(format!(
                "network namespace {ino} is gone, or none of the recorded pids ({}) is in it any \
                 more (a pid may have been reused): nothing inside any namespace was touched",
                rec.members
                    .iter()
                    .filter_map(|m| m.init_pid)
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if let Err(e) = host {
            notes.push(format!(
                "the host-side table {} was not removed ({e})",
                nft::host_table(cookie)
            ));
        }
        return NetnsRecord::remove(cookie);
    }
    // Others in the namespace are still isolated: their layers stay, narrowed to their
    // allow-lists (entered through one of theirs when this one's pid is gone).
    let ns = rec
        .members
        .iter()
        .filter(|m| m.container_id != id)
        .filter_map(|m| m.init_pid)
        .find_map(|pid| open(pid, Some(ino), Some(cookie)))
        .or(ns);
    let others: Vec<String> = remaining.iter().map(|m| m.container_id.clone()).collect();
    let planned = plan(ino, cookie, ns.as_ref(), &remaining, Some(&rec));
    let applied = apply(planned, ns.as_ref(), remaining, Some(&rec));
    applied.record.save()?;
    notes.push(format!(
        "network namespace {ino} is shared with the still-isolated {}: its namespace-level \
         layers stay",
        others.join(", ")
    ));
    notes.extend(applied.notes);
    Ok(())
}

impl NetnsRecord {
    /// The namespace, entered through any member's pid whose namespace is still this one.
    pub fn enter(&self) -> Option<Netns> {
        self.members
            .iter()
            .filter_map(|m| m.init_pid)
            .find_map(|pid| open(pid, Some(self.netns_inode), Some(self.netns_cookie)))
    }

    /// Drops counted by the layer inside the namespace and by the host-side table, and
    /// whether each is still the one installed.
    pub fn drops(&self) -> (Counted, Counted) {
        let host_t = nft::host_table(self.netns_cookie);
        std::thread::scope(|s| {
            let inside = s.spawn(|| match self.enter() {
                Some(ns) => Counted::from_listing(
                    nft::list(Some(&ns), &inside_tables(&self.devices)),
                    self.inside_rules.as_deref(),
                ),
                None => Counted::default(),
            });
            let host = Counted::from_listing(
                nft::list(None, &[("netdev", &host_t)]),
                self.host_rules.as_deref(),
            );
            (inside.join().unwrap_or_default(), host)
        })
    }
}

/// What one namespace-level layer counted, and whether its tables were found as installed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counted {
    /// None: not checked (the namespace cannot be entered any more). Some(false): a table
    /// is gone, or its rules are not the ones installed.
    pub in_place: Option<bool>,
    /// The tables are there but their rules differ from those installed.
    pub tampered: bool,
    pub egress: u64,
    pub ingress: u64,
}

impl Counted {
    /// From a listing of the layer's tables and the fingerprint taken at install (None: a
    /// record from before fingerprints; only the tables' presence is checked).
    fn from_listing(listing: Option<nft::Listing>, installed: Option<&str>) -> Counted {
        match listing {
            None => Counted::default(),
            Some(l) => {
                let tampered = l.complete && installed.is_some_and(|f| f != l.fingerprint);
                Counted {
                    in_place: Some(l.complete && !tampered),
                    tampered,
                    egress: l.egress,
                    ingress: l.ingress,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_listing_is_tampering_a_missing_table_is_not_in_place() {
        let listing = |fingerprint: &str, complete| nft::Listing {
            egress: 3,
            ingress: 1,
            fingerprint: fingerprint.into(),
            complete,
        };
        let same = Counted::from_listing(Some(listing("a", true)), Some("a"));
        assert_eq!(
            (same.in_place, same.tampered, same.egress),
            (Some(true), false, 3)
        );
        let changed = Counted::from_listing(Some(listing("b", true)), Some("a"));
        assert_eq!((changed.in_place, changed.tampered), (Some(false), true));
        let gone = Counted::from_listing(Some(listing("c", false)), Some("a"));
        assert_eq!((gone.in_place, gone.tampered), (Some(false), false));
        let old_record = Counted::from_listing(Some(listing("b", true)), None);
        assert_eq!(old_record.in_place, Some(true));
        assert_eq!(Counted::from_listing(None, Some("a")).in_place, None);
    }

    #[test]
    fn interface_names_that_could_change_a_ruleset_are_refused() {
        for ok in ["eth0", "veth-1.2", "v@x_y"] {
            assert!(safe_ifname(ok), "{ok}");
        }
        for bad in ["", "a\"b", "a b", "a;b", "a}b", "a\nb"] {
            assert!(!safe_ifname(bad), "{bad:?}");
        }
    }
}
