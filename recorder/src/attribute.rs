//! Attributing rows to containers.
//!
//! Events carry only a cgroup id. The drain loop calls [`Attributor::observe`] on each, which
//! costs a hash lookup except the first time a cgroup id appears, when its path is looked up
//! (while the cgroup certainly still exists). At seal time [`Attributor::fill_container_ids`]
//! maps each batch's `cgroup_id` column to container ids. Seal time rather than event time,
//! because a runtime writes its state files a moment after the container's first processes
//! start: seconds later the container is known.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, AsArray, StringBuilder, TimestampMicrosecondArray};
use arrow::datatypes::UInt64Type;
use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};
use quarry_containers::pattern::parse_cgroup_path;
use quarry_containers::{CgroupFs, Container, Inventory};
use quarry_store::schema::ContainerRow;

/// How often the container inventory may be re-read when a cgroup judged the host's before
/// shows up again.
const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// How often it may be re-read for a cgroup never seen before: a container started since the
/// last read. Batches are attributed every half second when live detection taps them, so the
/// once-a-second limit alone would judge a new container's cgroup the host's for [`HOST_TTL`].
const REFRESH_NEW: Duration = Duration::from_millis(100);
/// How long "this cgroup is the host's" is believed before it is checked again.
const HOST_TTL: Duration = Duration::from_secs(30);

enum Owner {
    Container(Arc<Container>),
    Host { until: Instant },
}

/// Per-container tallies for the `container` table, gathered while filling batches.
#[derive(Default)]
struct Seen {
    first: i64,
    last: i64,
    events: u64,
}

/// Maps cgroup ids to containers, with caches so the common case is a hash lookup.
pub struct Attributor {
    fs: Option<CgroupFs>,
    inventory: Inventory,
    refreshed: Instant,
    paths: HashMap<u64, Option<String>>,
    owners: HashMap<u64, Owner>,
    seen: BTreeMap<String, (Arc<Container>, Seen)>,
    last_observed: Option<u64>,
}

impl Attributor {
    pub fn new() -> Attributor {
        Attributor {
            fs: CgroupFs::detect(),
            inventory: Inventory::discover(),
            refreshed: Instant::now(),
            paths: HashMap::new(),
            owners: HashMap::new(),
            seen: BTreeMap::new(),
            last_observed: None,
        }
    }

    /// Notes a cgroup id seen in an event, resolving its path the first time.
    #[inline]
    pub fn observe(&mut self, cgroup_id: u64) {
        // Events come in runs from the same task: skip the lookup for a repeat.
        if self.last_observed == Some(cgroup_id) {
            return;
        }
        self.last_observed = Some(cgroup_id);
        if !self.paths.contains_key(&cgroup_id) {
            let path = self.fs.as_ref().and_then(|fs| fs.path_of_id(cgroup_id));
            self.paths.insert(cgroup_id, path);
        }
    }

    /// The container owning `cgroup_id`, or None for the host.
    fn owner(&mut self, cgroup_id: u64) -> Option<Arc<Container>> {
        match self.owners.get(&cgroup_id) {
            Some(Owner::Container(c)) => return Some(c.clone()),
            Some(Owner::Host { until }) if *until > Instant::now() => return None,
            _ => {}
        }
        let due = if self.owners.contains_key(&cgroup_id) {
            REFRESH_EVERY
        } else {
            REFRESH_NEW
        };
        let found = self.lookup(cgroup_id).or_else(|| {
            if self.refreshed.elapsed() >= due {
                self.inventory = Inventory::discover();
                self.refreshed = Instant::now();
                self.lookup(cgroup_id)
            } else {
                None
            }
        });
        let owner = match &found {
            Some(c) => Owner::Container(c.clone()),
            None if self.refreshed.elapsed() < REFRESH_NEW => Owner::Host {
                until: Instant::now() + HOST_TTL,
            },
            // Judged on an inventory older than the cgroup may be: not remembered, so the
            // next rows of it read the inventory again.
            None => return None,
        };
        self.owners.insert(cgroup_id, owner);
        found
    }

    fn lookup(&self, cgroup_id: u64) -> Option<Arc<Container>> {
        if let Some(c) = self.inventory.by_cgroup_id(cgroup_id) {
            return Some(Arc::new(c.clone()));
        }
        let path = self.paths.get(&cgroup_id)?.as_deref()?;
        if let Some(c) = self.inventory.by_cgroup_path(path) {
            return Some(Arc::new(c.clone()));
        }
        // A container whose runtime keeps no state we can read: its path still names it.
        let m = parse_cgroup_path(path)?;
        Some(Arc::new(m.into_container(self.fs.as_ref())))
    }

    /// Returns `batch` with its `container_id` column filled from its `cgroup_id` column, and
    /// tallies each container's first/last seen times for [`Attributor::take_container_rows`].
    pub fn fill_container_ids(&mut self, batch: RecordBatch) -> RecordBatch {
        let schema = batch.schema();
        let (Ok(cg_idx), Ok(ct_idx), Ok(time_idx)) = (
            schema.index_of("cgroup_id"),
            schema.index_of("container_id"),
            schema.index_of("time"),
        ) else {
            return batch;
        };
        let cgroups = batch.column(cg_idx).as_primitive::<UInt64Type>().clone();
        let times = batch
            .column(time_idx)
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .cloned();
        let mut ids = StringBuilder::with_capacity(batch.num_rows(), batch.num_rows() * 16);
        // Rows come in runs from the same cgroup: look the owner up and tally once per run.
        let cgroups = cgroups.values();
        let mut start = 0;
        while start < cgroups.len() {
            let cg = cgroups[start];
            let end = start
                + cgroups[start..]
                    .iter()
                    .position(|&c| c != cg)
                    .unwrap_or(cgroups.len() - start);
            match self.owner(cg) {
                Some(c) => {
                    (start..end).for_each(|_| ids.append_value(&c.id));
                    let (first, last) = times.as_ref().map_or((0, 0), |t| {
                        let run = &t.values()[start..end];
                        (
                            run.iter().copied().min().unwrap_or(0),
                            run.iter().copied().max().unwrap_or(0),
                        )
                    });
                    let entry = self.seen.entry(c.id.clone()).or_insert_with(|| {
                        (
                            c.clone(),
                            Seen {
                                first,
                                last,
                                events: 0,
                            },
                        )
                    });
                    entry.1.first = entry.1.first.min(first);
                    entry.1.last = entry.1.last.max(last);
                    entry.1.events += (end - start) as u64;
                }
                None => ids.append_nulls(end - start),
            }
            start = end;
        }
        let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
        columns[ct_idx] = Arc::new(ids.finish());
        RecordBatch::try_new(schema, columns).expect("same schema, same length")
    }

    /// The containers rows were attributed to since the last [`Attributor::take_container_rows`].
    pub fn seen_containers(&self) -> Vec<Arc<Container>> {
        self.seen.values().map(|(c, _)| c.clone()).collect()
    }

    /// The `container` rows for everything attributed since the last call.
    pub fn take_container_rows(&mut self, now: DateTime<Utc>) -> Vec<ContainerRow> {
        let micros = |t: i64| DateTime::from_timestamp_micros(t).unwrap_or(now);
        std::mem::take(&mut self.seen)
            .into_values()
            .map(|(c, seen)| ContainerRow {
                time: now,
                container_id: c.id.clone(),
                name: c.name.clone(),
                runtime: c.runtime.name().to_string(),
                image: c.image.clone(),
                cgroup_id: c.cgroup_id,
                cgroup_path: c.cgroup_path.clone(),
                init_pid: c.init_pid,
                netns_inode: c.netns_inode,
                host_network: c.host_network,
                created: c.created.clone(),
                pod_uid: c.pod_uid.clone(),
                pod_name: c.pod_name.clone(),
                pod_namespace: c.pod_namespace.clone(),
                first_seen: micros(seen.first),
                last_seen: micros(seen.last),
                events: seen.events,
            })
            .collect()
    }
}

impl Default for Attributor {
    fn default() -> Self {
        Attributor::new()
    }
}
