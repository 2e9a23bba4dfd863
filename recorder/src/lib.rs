//! The recorder: loads Quarry's eBPF programs, drains their ring buffer, turns records into
//! rows and seals them into the store.
//!
//! ```text
//! raw tracepoints ──► ring buffer ──(drain tick)──► decode ──► Batches ──(seal tick)──► Sealer ──► store
//!                  └► DROPS (per CPU)
//! ```
//!
//! [`Recorder::start`] does every check and the whole load before returning, so a caller knows
//! recording has begun (or exactly why not); [`Recorder::run`] then records until its shutdown
//! future resolves, drains what is left and seals it before returning.

pub mod attribute;
pub mod btf;
pub mod clock;
pub mod decode;
pub mod preflight;
mod sink;
pub mod stats;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use aya::maps::{HashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::RawTracePoint;
use aya::{Ebpf, EbpfLoader};
use quarry_recorder_common::{DROPS_SLOT, MAX_FILTER_CGROUPS};
use quarry_store::schema::container_batch;
use quarry_store::{Partition, Store, StoreError, Table};
use tokio::time::MissedTickBehavior;

use crate::attribute::Attributor;
use crate::btf::{Btf, BtfError};
use crate::clock::WallClock;
use crate::decode::{Record, decode};
use crate::sink::{Batches, Sealer};
use crate::stats::{Stats, StatsSnapshot};

/// The eBPF object built by build.rs from recorder/ebpf.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/quarry-recorder"));

/// The programs in the object and the raw tracepoints they attach to.
const PROGRAMS: [(&str, &str); 3] = [
    ("sched_process_fork", "sched_process_fork"),
    ("sched_process_exec", "sched_process_exec"),
    ("sched_process_exit", "sched_process_exit"),
];

/// Errors starting or running the recorder.
#[derive(Debug, thiserror::Error)]
pub enum RecorderError {
    /// The process lacks the capabilities to load tracing programs.
    #[error(
        "recording needs {missing} (or CAP_SYS_ADMIN) to load eBPF programs; run it as root, \
         e.g. `sudo quarry record`"
    )]
    NotPrivileged { missing: String },

    /// The kernel publishes no BTF, so field offsets cannot be found.
    #[error(
        "cannot read the kernel's BTF at {path} ({source}); Quarry needs a kernel built with \
         CONFIG_DEBUG_INFO_BTF=y (most distribution kernels since 5.x are)"
    )]
    NoBtf {
        path: PathBuf,
        source: std::io::Error,
    },

    /// The kernel's BTF lacks a structure field the programs read.
    #[error("the kernel's BTF does not describe what Quarry needs: {0}")]
    Btf(#[from] BtfError),

    /// tracefs is neither mounted nor mountable.
    #[error(
        "tracefs is not mounted and could not be mounted ({reason}); mount it with \
         `mount -t tracefs tracefs /sys/kernel/tracing` (needs a kernel with CONFIG_TRACING)"
    )]
    NoTracefs { reason: String },

    /// The store could not be created, recovered or written.
    #[error(transparent)]
    Store(#[from] StoreError),

    /// The kernel refused the eBPF object.
    #[error("loading the eBPF programs failed: {0}")]
    Load(#[from] aya::EbpfError),

    /// A program failed to load or attach.
    #[error("program {program} could not be loaded or attached: {source}")]
    Program {
        program: &'static str,
        source: aya::programs::ProgramError,
    },

    /// More cgroups were given to filter on than the kernel-side map holds.
    #[error("{given} containers given to record; at most {MAX_FILTER_CGROUPS} can be filtered on")]
    TooManyCgroups { given: usize },

    /// A map is missing from the object or could not be opened.
    #[error("eBPF map {map}: {source}")]
    Map {
        map: &'static str,
        source: aya::maps::MapError,
    },
}

/// How to record.
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    pub store: PathBuf,
    /// Host name written into every row and into the partition path.
    pub host: String,
    /// How often open rows are sealed into segments.
    pub seal_interval: Duration,
    /// How often the ring buffer is drained (records are submitted without wakeups).
    pub drain_interval: Duration,
    /// Size of the ring buffer in bytes (a power of two, multiple of the page size).
    pub ring_bytes: u32,
    /// When not empty, record only tasks in these cgroups (by id) or below them.
    pub cgroup_filter: Vec<u64>,
}

impl RecorderConfig {
    pub fn new(store: impl Into<PathBuf>) -> RecorderConfig {
        RecorderConfig {
            store: store.into(),
            host: local_hostname(),
            seal_interval: Duration::from_secs(5),
            drain_interval: Duration::from_millis(2),
            ring_bytes: 16 << 20,
            cgroup_filter: Vec::new(),
        }
    }
}

/// This machine's host name, or "localhost" when it has none.
pub fn local_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// What a finished recording did.
#[derive(Debug, Clone)]
pub struct Summary {
    pub stats: StatsSnapshot,
    pub recovered_segments: usize,
}

/// A loaded, attached recorder.
pub struct Recorder {
    config: RecorderConfig,
    store: Store,
    ebpf: Ebpf,
    ring: RingBuf<MapData>,
    drops: PerCpuArray<MapData, u64>,
    stats: Arc<Stats>,
    recovered_segments: usize,
}

impl Recorder {
    /// Checks privileges, kernel and store, then loads and attaches the programs. Recording has
    /// begun (into the ring buffer) when this returns.
    pub fn start(config: RecorderConfig) -> Result<Recorder, RecorderError> {
        preflight::check_privileges()?;
        let offsets = Btf::parse(&preflight::read_kernel_btf()?)?.kernel_offsets()?;
        preflight::ensure_tracefs()?;
        let store = Store::create(&config.store)?;
        let (recovered_segments, discarded) = store.recover()?;
        if recovered_segments + discarded > 0 {
            log::info!(
                "store recovery: {recovered_segments} interrupted seals completed, {discarded} \
                 unsealed partial files removed"
            );
        }

        let recorder_tgid = std::process::id();
        let filtering = u32::from(!config.cgroup_filter.is_empty());
        if config.cgroup_filter.len() > MAX_FILTER_CGROUPS as usize {
            return Err(RecorderError::TooManyCgroups {
                given: config.cgroup_filter.len(),
            });
        }
        let mut ebpf = EbpfLoader::new()
            .override_global("RECORDER_TGID", &recorder_tgid, true)
            .override_global("OFFSETS", &offsets, true)
            .override_global("FILTER_CGROUPS", &filtering, true)
            .map_max_entries("EVENTS", config.ring_bytes)
            .load(EBPF_OBJECT)?;
        let ring = RingBuf::try_from(ebpf.take_map("EVENTS").ok_or(RecorderError::Map {
            map: "EVENTS",
            source: aya::maps::MapError::InvalidName {
                name: "EVENTS".into(),
            },
        })?)
        .map_err(|source| RecorderError::Map {
            map: "EVENTS",
            source,
        })?;
        let drops = PerCpuArray::try_from(ebpf.take_map("DROPS").ok_or(RecorderError::Map {
            map: "DROPS",
            source: aya::maps::MapError::InvalidName {
                name: "DROPS".into(),
            },
        })?)
        .map_err(|source| RecorderError::Map {
            map: "DROPS",
            source,
        })?;

        let mut filter: HashMap<_, u64, u8> =
            HashMap::try_from(ebpf.map_mut("CGROUP_FILTER").ok_or(RecorderError::Map {
                map: "CGROUP_FILTER",
                source: aya::maps::MapError::InvalidName {
                    name: "CGROUP_FILTER".into(),
                },
            })?)
            .map_err(|source| RecorderError::Map {
                map: "CGROUP_FILTER",
                source,
            })?;
        for id in &config.cgroup_filter {
            filter
                .insert(id, 1, 0)
                .map_err(|source| RecorderError::Map {
                    map: "CGROUP_FILTER",
                    source,
                })?;
        }

        for (program, tracepoint) in PROGRAMS {
            let err = |source| RecorderError::Program { program, source };
            let prog: &mut RawTracePoint = ebpf
                .program_mut(program)
                .ok_or(RecorderError::Program {
                    program,
                    source: aya::programs::ProgramError::UnexpectedProgramType,
                })?
                .try_into()
                .map_err(err)?;
            prog.load().map_err(err)?;
            prog.attach(tracepoint).map_err(err)?;
        }

        Ok(Recorder {
            config,
            store,
            ebpf,
            ring,
            drops,
            stats: Arc::new(Stats::default()),
            recovered_segments,
        })
    }

    /// Live counters, for a status line.
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Records until `shutdown` resolves, then detaches, drains, seals and returns.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<Summary, RecorderError> {
        let run_id = (std::process::id() ^ (WallClock::monotonic_now_ns() as u32)).rotate_left(16);
        let sealer = Sealer::spawn(self.store.clone(), run_id, self.stats.clone());
        let mut batches = Batches::new(self.config.host.clone());
        let mut attributor = Attributor::new();
        let mut clock = WallClock::measure();

        let mut drain = tokio::time::interval(self.config.drain_interval);
        drain.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut seal = tokio::time::interval(self.config.seal_interval);
        seal.set_missed_tick_behavior(MissedTickBehavior::Delay);
        seal.tick().await;
        tokio::pin!(shutdown);

        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = drain.tick() => {
                    drain_ring(&mut self.ring, &mut batches, &mut attributor, &clock, &self.stats);
                    read_drops(&self.drops, &self.stats);
                }
                _ = seal.tick() => {
                    drain_ring(&mut self.ring, &mut batches, &mut attributor, &clock, &self.stats);
                    submit_all(&mut batches, &mut attributor, &sealer, &self.stats);
                    clock = WallClock::measure();
                }
            }
        }

        // Detach first so nothing new arrives, then take everything the buffer still holds.
        let Recorder {
            mut ring,
            drops,
            stats,
            ebpf,
            ..
        } = self;
        drop(ebpf);
        drain_ring(&mut ring, &mut batches, &mut attributor, &clock, &stats);
        read_drops(&drops, &stats);
        submit_all(&mut batches, &mut attributor, &sealer, &stats);
        sealer.finish();
        Ok(Summary {
            stats: stats.snapshot(),
            recovered_segments: self.recovered_segments,
        })
    }
}

fn drain_ring(
    ring: &mut RingBuf<MapData>,
    batches: &mut Batches,
    attributor: &mut Attributor,
    clock: &WallClock,
    stats: &Stats,
) {
    let mut n = 0u64;
    while let Some(item) = ring.next() {
        match decode(&item, clock) {
            Ok(Record::Process(row)) => {
                attributor.observe(row.id.cgroup_id);
                batches.push_process(&row);
            }
            Err(e) => {
                stats.undecodable.fetch_add(1, Ordering::Relaxed);
                log::debug!("undecodable record: {e:?}");
            }
        }
        n += 1;
    }
    stats.events.fetch_add(n, Ordering::Relaxed);
    stats
        .rows_buffered
        .store(batches.len() as u64, Ordering::Relaxed);
}

/// Attributes every finished batch to containers and hands it to the sealer, followed by the
/// `container` rows for what was attributed.
fn submit_all(batches: &mut Batches, attributor: &mut Attributor, sealer: &Sealer, stats: &Stats) {
    let submit = |partition, batch: RecordBatch| {
        stats
            .rows_submitted
            .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
        sealer.submit(partition, batch);
    };
    for (partition, batch) in batches.take() {
        submit(partition, attributor.fill_container_ids(batch));
    }
    let now = chrono::Utc::now();
    let containers = attributor.take_container_rows(now);
    if !containers.is_empty() {
        let host = batches.host();
        let partition = Partition::for_time(Table::Container, now, host);
        submit(partition, container_batch(host, &containers));
    }
    stats.rows_buffered.store(0, Ordering::Relaxed);
}

fn read_drops(drops: &PerCpuArray<MapData, u64>, stats: &Stats) {
    if let Ok(per_cpu) = drops.get(&DROPS_SLOT, 0) {
        stats
            .kernel_drops
            .store(per_cpu.iter().sum(), Ordering::Relaxed);
    }
}
