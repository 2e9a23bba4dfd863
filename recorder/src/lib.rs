//! The recorder: loads Quarry's eBPF programs, drains their ring buffer, turns records into
//! rows and seals them into the store.
//!
//! ```text
//! tracepoints ──► ring buffer ──(drain tick)──► decode ──► Batches ──(seal tick)──► Sealer ──► store
//!  │  │                        ▲                              ▲
//!  │  └► sys_exit ──► RawBatch (per CPU), sent when full, 2 ms old, at a context switch
//!  │                  after calls that skipped the clock, or flushed (every 100 ms)
//!  └► DROPS (per CPU) and the programs' recursion_misses ──(gap tick)──► gap rows
//! ```
//!
//! [`Recorder::start`] does every check and the whole load before returning, so a caller knows
//! recording has begun (or exactly why not); [`Recorder::run`] then records until its shutdown
//! future resolves, drains what is left and seals it before returning.

pub mod advert;
pub mod attribute;
pub mod btf;
pub mod calls;
pub mod clock;
pub mod decode;
pub mod exehash;
pub mod posture;
pub mod preflight;
pub mod retain;
pub mod scope;
mod sink;
pub mod stats;
pub mod status;
pub mod stop;
mod summary;
pub mod syscalls;
pub mod tap;
pub mod upload;

use std::collections::HashSet;
use std::future::Future;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::PoisonError;
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use aya::maps::{HashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::{BtfTracePoint, RawTracePoint, TracePoint};
use aya::{Ebpf, EbpfLoader, RawTracePointRunOptions, TestRun};
use quarry_containers::Container;
use quarry_recorder_common::{
    DECODED_SYSCALLS, DROPS_SLOT, ENTRY_ONLY_SYSCALLS, MAX_FILTER_CGROUPS, RAW_CLOCK_EVERY,
};
use quarry_store::schema::{
    GAP_CPU_UNKNOWN, GapReason, GapRow, PostureRow, container_batch, posture_batch,
};
use quarry_store::{Partition, Store, StoreError, Table};
use tokio::time::MissedTickBehavior;

use crate::attribute::Attributor;
use crate::btf::{Btf, BtfError};
use crate::calls::{CallRow, Calls, tcp_state_row};
use crate::clock::WallClock;
use crate::decode::identity;
use crate::decode::{Record, decode};
use crate::exehash::ExeHashes;
pub use crate::posture::PostureWatch;
pub use crate::sink::LostRows;
use crate::sink::{Batches, Losses, Refused, SealHealth, Sealer};
use crate::stats::{Stats, StatsSnapshot};

/// The eBPF object built by build.rs from recorder/ebpf.
static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/quarry-recorder"));

/// The raw-tracepoint programs in the object and the tracepoints they attach to.
const PROGRAMS: [(&str, &str); 3] = [
    ("sched_process_fork", "sched_process_fork"),
    ("sched_process_exec", "sched_process_exec"),
    ("sched_process_exit", "sched_process_exit"),
];

/// How often the kernel's drop counters are turned into `gap` rows.
const GAP_CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// How often a quiet CPU's raw-stream batch is sent for it (a busy CPU sends its own within
/// `RAW_BATCH_MAX_AGE_NS`).
const RAW_FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// A segment this large is sealed at once, whatever the seal interval. It is written a row
/// group at a time, so it does not bound memory; it bounds how much one failed seal loses.
/// Compaction merges small segments later.
pub const MAX_ROWS_PER_SEGMENT: usize = 512 * 1024;
/// A raw-stream partition this large is handed to the sealer as a row group of its open
/// segment: with the sealer's queue ([`sink::MAX_QUEUED_ROWS`]) and the ring buffer it bounds
/// the recorder's memory (~75 bytes a raw-stream row in memory: ~5 MiB here).
pub const ROWS_PER_CHUNK: usize = 64 * 1024;
/// The same for the decoded tables (process, file, net, gap), whose rows are structs with
/// their own strings, ~300-400 bytes each in memory: 8 Ki rows hold ~3 MiB, where 64 Ki held
/// ~25 MiB per partition (and twice that while a partition is turned into a batch), which
/// was most of the default mode's heap.
pub const DECODED_ROWS_PER_CHUNK: usize = 8 * 1024;

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
        "cannot read the kernel's BTF at {path}; Quarry needs a kernel built with \
         CONFIG_DEBUG_INFO_BTF=y (most distribution kernels since 5.x are)"
    )]
    NoBtf {
        path: PathBuf,
        source: std::io::Error,
    },

    /// The kernel's BTF lacks a structure field the programs read.
    #[error("the kernel's BTF does not describe what Quarry needs")]
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
    #[error("loading the eBPF programs failed")]
    Load(#[from] aya::EbpfError),

    /// A program failed to load or attach.
    #[error("program {program} could not be loaded or attached")]
    Program {
        program: &'static str,
        source: aya::programs::ProgramError,
    },

    /// More cgroups were given to filter on than the kernel-side map holds.
    #[error("{given} containers given to record; at most {MAX_FILTER_CGROUPS} can be filtered on")]
    TooManyCgroups { given: usize },

    /// The kernel's BTF could not be parsed to attach a BTF tracepoint.
    #[error("cannot use the kernel's BTF to attach {program}")]
    BtfTracePoint {
        program: &'static str,
        source: aya::BtfError,
    },

    /// A map is missing from the object or could not be opened.
    #[error("eBPF map {map} is missing or could not be opened")]
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
    /// Record the raw syscall stream (`syscall` table).
    pub syscalls: SyscallMode,
    /// Read the clock for every call of the raw stream, instead of for a thread's first call
    /// and every [`RAW_CLOCK_EVERY`]th after it (the others then have a `ktime_slack_ns`).
    pub exact_syscall_times: bool,
    /// On a kernel without init_module/finit_module tracepoints, record them from a hook on
    /// every syscall's entry ([`ENTRY_ONLY_SYSCALLS`]). Off by default: the hook costs every
    /// syscall of the machine, not only the decoded ones.
    pub module_loads_at_entry: bool,
    /// Where live detection reads the rows handed to the sealer ([`tap::Tap`]); none, no
    /// detection.
    pub tap: Option<Arc<tap::Tap>>,
    /// Hash the file of every exec (`exe_sha256`) up to this many bytes; None: off.
    pub exe_hash_max_bytes: Option<u64>,
    /// Judge each container's least-privilege posture when first seen and when it changes
    /// (`posture` rows, [`posture`]).
    pub posture: bool,
    /// Each container rows are attributed to is offered here once per recording, at the seal
    /// after it was first seen (`try_send`: a full queue offers it again at a later seal);
    /// `quarry record` takes baselines of the new ones from it.
    pub new_containers: Option<SyncSender<Arc<Container>>>,
}

/// Whether the raw syscall stream is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyscallMode {
    /// No `syscall` rows (files, network and signals are still decoded).
    Off,
    /// Every syscall's number, name and result.
    All,
}

impl SyscallMode {
    /// The ring buffer a recording in this mode gets unless told otherwise: 8 MiB, 32 MiB
    /// with the raw stream. The raw stream runs at millions of events a second: the larger
    /// buffer carries it over the drain loop's pauses (finishing a batch, a sealer catching
    /// up) without drops. Its pages are resident once read, so it counts fully against the
    /// recorder's memory.
    pub fn ring_bytes(self) -> u32 {
        match self {
            SyscallMode::Off => 8 << 20,
            SyscallMode::All => 32 << 20,
        }
    }
}

impl RecorderConfig {
    pub fn new(store: impl Into<PathBuf>) -> RecorderConfig {
        RecorderConfig {
            store: store.into(),
            host: quarry_store::action::local_hostname(),
            seal_interval: Duration::from_secs(5),
            drain_interval: Duration::from_millis(2),
            ring_bytes: 16 << 20,
            cgroup_filter: Vec::new(),
            syscalls: SyscallMode::Off,
            exact_syscall_times: false,
            module_loads_at_entry: false,
            tap: None,
            exe_hash_max_bytes: Some(exehash::DEFAULT_MAX_BYTES),
            posture: true,
            new_containers: None,
        }
    }
}

/// What a finished recording did.
#[derive(Debug, Clone)]
pub struct Summary {
    pub stats: StatsSnapshot,
    pub recovered_segments: usize,
    /// Rows decoded and never sealed, by table and reason (the disk still failing at exit):
    /// not even their `gap` rows could be written.
    pub unsealed: Vec<LostRows>,
}

/// A loaded, attached recorder.
pub struct Recorder {
    config: RecorderConfig,
    store: Store,
    ebpf: Ebpf,
    ring: RingBuf<MapData>,
    drops: PerCpuArray<MapData, u64>,
    misses: RecursionMisses,
    stats: Arc<Stats>,
    recovered_segments: usize,
}

impl Recorder {
    /// Checks privileges, kernel and store, then loads and attaches the programs. Recording has
    /// begun (into the ring buffer) when this returns.
    pub fn start(config: RecorderConfig) -> Result<Recorder, RecorderError> {
        preflight::check_privileges()?;
        let btf = Btf::parse(&preflight::read_kernel_btf()?)?;
        let mut offsets = btf.kernel_offsets()?;
        if let Err(missing) = btf.path_walk_offsets(&mut offsets) {
            // Without the walk the recording is still complete, only its paths are lexical
            // (path_resolution = lexical on every row), so this is a warning, not a refusal.
            log::warn!(
                "kernel path walk off ({missing}): file and exec paths are recorded as the \
                 process gave them, normalized lexically (path_resolution = lexical)"
            );
        }
        drop(btf);
        let tracefs = preflight::ensure_tracefs()?;
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
        let clock_every: u32 = if config.exact_syscall_times {
            1
        } else {
            RAW_CLOCK_EVERY
        };
        let mut ebpf = EbpfLoader::new()
            .override_global("RECORDER_TGID", &recorder_tgid, true)
            .override_global("OFFSETS", &offsets, true)
            .override_global("FILTER_CGROUPS", &filtering, true)
            .override_global("RAW_CLOCK_EVERY_CALLS", &clock_every, true)
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
            attach_raw(&mut ebpf, program, tracepoint)?;
        }
        attach_decoded_syscalls(&mut ebpf, config.module_loads_at_entry)?;
        if config.syscalls == SyscallMode::All {
            attach_raw_stream(&mut ebpf)?;
        }
        attach_tcp_state(&mut ebpf, &tracefs)?;
        let misses = RecursionMisses::of(&ebpf);

        Ok(Recorder {
            config,
            store,
            ebpf,
            ring,
            drops,
            misses,
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

    /// The exec hasher as configured; one that cannot start is off, with a warning (the
    /// recording goes on, every exec row says `off`).
    fn exe_hashes(&self) -> ExeHashes {
        let stats = self.stats.exe_hash.clone();
        let Some(max) = self.config.exe_hash_max_bytes else {
            return ExeHashes::off(stats);
        };
        match exehash::open_proc().and_then(|proc| ExeHashes::start(proc, max, stats.clone())) {
            Ok(h) => h,
            Err(e) => {
                log::warn!("exec hashing off: {e}");
                ExeHashes::off(stats)
            }
        }
    }

    /// The posture thread, when asked for; one that cannot start is off, with a warning.
    fn posture_watch(&self) -> Option<PostureWatch> {
        if !self.config.posture {
            return None;
        }
        PostureWatch::start()
            .inspect_err(|e| log::warn!("container posture off: {e}"))
            .ok()
    }

    /// Records until `shutdown` resolves, then detaches, drains, seals and returns.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<Summary, RecorderError> {
        let run_id = (std::process::id() ^ (WallClock::monotonic_now_ns() as u32)).rotate_left(16);
        let sealer = Sealer::spawn(self.store.clone(), run_id, self.stats.clone());
        let mut st = DrainState {
            batches: Batches::new(self.config.host.clone()),
            attributor: Attributor::new(),
            calls: Calls::new(),
            gaps: GapTracker::new(),
            losses: Losses::default(),
            last_submit: chrono::Utc::now(),
            tap: self.config.tap.clone(),
            exe: self.exe_hashes(),
            posture: self.posture_watch(),
            posture_rows: Vec::new(),
            new_containers: self.config.new_containers.clone(),
            announced: HashSet::new(),
        };
        let mut clock = WallClock::measure();

        let mut drain = tokio::time::interval(self.config.drain_interval);
        drain.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut seal = tokio::time::interval(self.config.seal_interval);
        seal.set_missed_tick_behavior(MissedTickBehavior::Delay);
        seal.tick().await;
        let mut gap_check = tokio::time::interval(GAP_CHECK_INTERVAL);
        gap_check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut raw_flush = tokio::time::interval(RAW_FLUSH_INTERVAL);
        raw_flush.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let raw_stream = self.config.syscalls == SyscallMode::All;
        let tapped = st.tap.is_some();
        let mut tap_flush = tokio::time::interval(
            st.tap
                .as_ref()
                .map_or(Duration::from_secs(1), |t| t.interval()),
        );
        tap_flush.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Read once: every CPU that may ever run (one brought online later is included; an
        // offline one just refuses the flush).
        let cpus: Vec<u32> = (0..aya::util::nr_cpus().unwrap_or(0) as u32).collect();
        tokio::pin!(shutdown);

        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = drain.tick() => {
                    // A sealer that works but is behind (a flood faster than encoding): leave
                    // the records in the ring buffer, where the kernel counts what it cannot
                    // keep. A failing sealer is not waited for: rows are drained and counted.
                    if sealer.backlogged() && sealer.health() == SealHealth::Ok {
                        continue;
                    }
                    drain_ring(&mut self.ring, &mut st, &clock, &self.stats);
                    // Bound memory: a full partition goes to its segment as a row group.
                    submit_chunks(&mut st, &sealer, &self.stats);
                }
                _ = gap_check.tick() => {
                    st.gaps.read(&self.drops, &self.misses, &mut st.batches, &self.stats);
                    st.account_losses(&sealer, &self.stats, false);
                }
                _ = tap_flush.tick(), if tapped => {
                    // Rows reach detection within the tap's interval, not the seal interval:
                    // handed over as row groups, sealed on the seal tick as before.
                    if !(sealer.backlogged() && sealer.health() == SealHealth::Ok) {
                        drain_ring(&mut self.ring, &mut st, &clock, &self.stats);
                        submit_rows(&mut st, &sealer, &self.stats);
                    }
                }
                _ = raw_flush.tick(), if raw_stream => {
                    flush_raw_batches(&self.ebpf, &cpus, false);
                }
                _ = seal.tick() => {
                    if !(sealer.backlogged() && sealer.health() == SealHealth::Ok) {
                        drain_ring(&mut self.ring, &mut st, &clock, &self.stats);
                        submit_all(&mut st, &sealer, &self.stats);
                    } else {
                        sealer.close();
                    }
                    clock = WallClock::measure();
                }
            }
        }

        // Detach first so nothing new arrives, send what the CPUs' raw-stream batches still
        // hold, then take everything the buffer has.
        let Recorder {
            mut ring,
            drops,
            misses,
            stats,
            mut ebpf,
            ..
        } = self;
        if raw_stream {
            for program in RAW_STREAM_PROGRAMS {
                if let Ok(prog) = program_mut::<BtfTracePoint>(&mut ebpf, program) {
                    let _ = prog.unload();
                }
            }
            flush_raw_batches(&ebpf, &cpus, true);
        }
        drop(ebpf);
        // Nothing is attached any more: what is in the buffer is all there is. It goes to the
        // sealer a row group at a time, waiting for it (while it works) rather than holding
        // the whole buffer's rows at once.
        while drain_ring_until(&mut ring, &mut st, &clock, &stats, None) {
            while sealer.backlogged() && sealer.health() == SealHealth::Ok {
                std::thread::sleep(Duration::from_millis(1));
            }
            submit_chunks(&mut st, &sealer, &stats);
        }
        st.gaps.read(&drops, &misses, &mut st.batches, &stats);
        // The hashes still queued are finished, so every pending exec gets its row.
        st.exe.finish();
        st.push_late_hashes(&stats);
        if let Some(watch) = st.posture.take() {
            st.posture_rows = watch.finish();
        }
        submit_all(&mut st, &sealer, &stats);
        st.push_late_hashes(&stats);
        // What this last submit could not hand over is on record too, if the disk lets it be.
        st.account_losses(&sealer, &stats, true);
        submit_all(&mut st, &sealer, &stats);
        let unsealed = sealer.finish();
        Ok(Summary {
            stats: stats.snapshot(),
            recovered_segments: self.recovered_segments,
            unsealed,
        })
    }
}

fn program_mut<'a, T>(ebpf: &'a mut Ebpf, program: &'static str) -> Result<&'a mut T, RecorderError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(program)
        .ok_or(RecorderError::Program {
            program,
            source: aya::programs::ProgramError::UnexpectedProgramType,
        })?
        .try_into()
        .map_err(|source| RecorderError::Program { program, source })
}

/// Loads a raw-tracepoint program and attaches it.
fn attach_raw(
    ebpf: &mut Ebpf,
    program: &'static str,
    tracepoint: &str,
) -> Result<(), RecorderError> {
    let err = |source| RecorderError::Program { program, source };
    let prog: &mut RawTracePoint = program_mut(ebpf, program)?;
    prog.load().map_err(err)?;
    prog.attach(tracepoint).map_err(err)?;
    Ok(())
}

/// BTF tracepoints of the raw stream: every syscall's exit, and the context switches that
/// end a thread's run of calls on a CPU (see the kernel side).
const RAW_STREAM_PROGRAMS: [&str; 2] = ["sys_exit", "sched_switch"];

/// Attaches the raw stream's programs and loads the one that sends a quiet CPU's batch.
fn attach_raw_stream(ebpf: &mut Ebpf) -> Result<(), RecorderError> {
    let btf = aya::Btf::from_sys_fs().map_err(|source| RecorderError::BtfTracePoint {
        program: RAW_STREAM_PROGRAMS[0],
        source,
    })?;
    for program in RAW_STREAM_PROGRAMS {
        let err = |source| RecorderError::Program { program, source };
        let prog: &mut BtfTracePoint = program_mut(ebpf, program)?;
        prog.load(program, &btf).map_err(err)?;
        prog.attach().map_err(err)?;
    }
    let program = "flush_raw_batch";
    let prog: &mut RawTracePoint = program_mut(ebpf, program)?;
    prog.load()
        .map_err(|source| RecorderError::Program { program, source })?;
    Ok(())
}

/// Runs the flush program on each of `cpus`, so each sends its raw-stream batch: one older
/// than `RAW_BATCH_MAX_AGE_NS`, or with `all` any non-empty one (at shutdown, after the raw
/// stream is detached). A batch being written at that instant is retried a few times.
fn flush_raw_batches(ebpf: &Ebpf, cpus: &[u32], all: bool) {
    let Some(prog) = ebpf
        .program("flush_raw_batch")
        .and_then(|p| <&RawTracePoint>::try_from(p).ok())
    else {
        return;
    };
    for &cpu in cpus {
        for _ in 0..if all { 100 } else { 1 } {
            let mut opts = RawTracePointRunOptions::new();
            opts.args[0] = u64::from(all);
            opts.cpu = Some(cpu);
            match prog.test_run(opts) {
                // 1: a writer was mid-batch on that CPU.
                Ok(r) if r.return_value == 1 => std::thread::sleep(Duration::from_micros(100)),
                Ok(_) => break,
                Err(e) => {
                    log::debug!("flushing CPU {cpu}'s raw-stream batch: {e}");
                    break;
                }
            }
        }
    }
}

/// Attaches the decoding programs to syscalls:sys_{enter,exit}_<name> of every decoded
/// syscall. A syscall this kernel lacks is skipped with a warning.
fn attach_decoded_syscalls(ebpf: &mut Ebpf, entry_hook: bool) -> Result<(), RecorderError> {
    let mut missing = std::collections::BTreeSet::new();
    for (program, phase) in [("sys_enter_decoded", "enter"), ("sys_exit_decoded", "exit")] {
        let err = |source| RecorderError::Program { program, source };
        let prog: &mut TracePoint = program_mut(ebpf, program)?;
        prog.load().map_err(err)?;
        for (_, name) in DECODED_SYSCALLS {
            if prog
                .attach("syscalls", &format!("sys_{phase}_{name}"))
                .is_err()
            {
                missing.insert(name);
            }
        }
    }
    // E.g. init_module/finit_module on a kernel built without module support: recorded at
    // entry from the raw sys_enter tracepoint instead.
    let entry_only: Vec<&str> = DECODED_SYSCALLS
        .iter()
        .filter(|(nr, name)| ENTRY_ONLY_SYSCALLS.contains(nr) && missing.contains(name))
        .map(|(_, name)| *name)
        .collect();
    if !entry_only.is_empty() && entry_hook {
        attach_entry_only(ebpf)?;
        entry_only.iter().for_each(|name| {
            missing.remove(name);
        });
    } else if !entry_only.is_empty() {
        log::info!(
            "this kernel has no tracepoints for {}: not recorded unless asked for with \
             --record-module-loads (a hook on every syscall's entry)",
            entry_only.join(", ")
        );
        entry_only.iter().for_each(|name| {
            missing.remove(name);
        });
    }
    if !missing.is_empty() {
        log::warn!(
            "this kernel has no tracepoints for {}: those syscalls are not recorded",
            missing.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

/// Attaches the program that records [`ENTRY_ONLY_SYSCALLS`] from the raw sys_enter
/// tracepoint (a BTF tracepoint: it runs on every syscall, so it must be the cheapest kind).
fn attach_entry_only(ebpf: &mut Ebpf) -> Result<(), RecorderError> {
    let program = "sys_enter_entry_only";
    let btf = aya::Btf::from_sys_fs()
        .map_err(|source| RecorderError::BtfTracePoint { program, source })?;
    let err = |source| RecorderError::Program { program, source };
    let prog: &mut BtfTracePoint = program_mut(ebpf, program)?;
    prog.load("sys_enter", &btf).map_err(err)?;
    prog.attach().map_err(err)?;
    Ok(())
}

/// The tracepoint format the `inet_sock_set_state` program reads by fixed offsets.
const TCP_STATE_FIELDS: [(&str, usize); 10] = [
    ("oldstate", 16),
    ("newstate", 20),
    ("sport", 24),
    ("dport", 26),
    ("family", 28),
    ("protocol", 30),
    ("saddr", 32),
    ("daddr", 36),
    ("saddr_v6", 40),
    ("daddr_v6", 56),
];

/// Attaches the TCP state program when this kernel's tracepoint has the layout it reads;
/// otherwise records without TCP state changes and says so.
fn attach_tcp_state(ebpf: &mut Ebpf, tracefs: &std::path::Path) -> Result<(), RecorderError> {
    let format_path = tracefs.join("events/sock/inet_sock_set_state/format");
    let format = std::fs::read_to_string(&format_path).unwrap_or_default();
    let matches = TCP_STATE_FIELDS.iter().all(|(name, offset)| {
        format.lines().any(|l| {
            l.contains(&format!(" {name};")) || l.contains(&format!(" {name}["))
        } && l.contains(&format!("offset:{offset};")))
    });
    if !matches {
        log::warn!(
            "{} is missing or has an unexpected layout: TCP state changes are not recorded",
            format_path.display()
        );
        return Ok(());
    }
    let program = "inet_sock_set_state";
    let err = |source| RecorderError::Program { program, source };
    let prog: &mut TracePoint = program_mut(ebpf, program)?;
    prog.load().map_err(err)?;
    prog.attach("sock", "inet_sock_set_state").map_err(err)?;
    Ok(())
}

/// What the drain loop carries between drains.
struct DrainState {
    batches: Batches,
    attributor: Attributor,
    calls: Calls,
    gaps: GapTracker,
    /// Rows the sealer refused, not yet written as gap rows.
    losses: Losses,
    /// When batches were last handed to the sealer: the rows of the next ones are newer.
    last_submit: chrono::DateTime<chrono::Utc>,
    /// Live detection's copy of what the sealer took.
    tap: Option<Arc<tap::Tap>>,
    /// Exec hashing (`exe_sha256`), off the drain loop.
    exe: ExeHashes,
    /// Containers' posture, judged off the drain loop; None when off.
    posture: Option<PostureWatch>,
    /// Posture rows taken from the watch and not yet handed to the sealer.
    posture_rows: Vec<PostureRow>,
    /// Where new containers are announced ([`RecorderConfig::new_containers`]), and those
    /// announced so far.
    new_containers: Option<SyncSender<Arc<Container>>>,
    announced: HashSet<String>,
}

impl DrainState {
    /// Publishes the sealer's health, and turns what was lost into `gap` rows once the sealer
    /// works again (or, with `now`, at once: recording is stopping).
    fn account_losses(&mut self, sealer: &Sealer, stats: &Stats, now: bool) {
        for d in sealer.dropped() {
            self.losses.add(d.reason, d.table, d.rows, d.since, d.until);
        }
        let health = sealer.health();
        *stats
            .degraded
            .lock()
            .unwrap_or_else(PoisonError::into_inner) =
            (health != SealHealth::Ok).then(|| health.gap_reason().as_str());
        if self.losses.is_empty() || !(now || health == SealHealth::Ok) {
            return;
        }
        for row in self.losses.take_rows(WallClock::monotonic_now_ns()) {
            stats.count(Table::Gap);
            self.batches.push_gap(row);
        }
    }

    /// Hands one batch to the sealer; a refused one is counted as lost.
    fn submit(&mut self, sealer: &Sealer, stats: &Stats, partition: Partition, batch: RecordBatch) {
        let rows = batch.num_rows() as u64;
        let table = partition.table;
        let copy = self.tap.as_ref().map(|_| batch.clone());
        match sealer.submit(partition, batch) {
            Ok(()) => {
                stats.rows_submitted.fetch_add(rows, Ordering::Relaxed);
                if let (Some(tap), Some(copy)) = (&self.tap, copy) {
                    tap.offer(table, &copy);
                }
            }
            Err(Refused {
                partition,
                batch,
                reason,
            }) => {
                stats.rows_lost.fetch_add(rows, Ordering::Relaxed);
                self.losses.add(
                    reason,
                    partition.table,
                    rows,
                    self.last_submit,
                    chrono::Utc::now(),
                );
                if partition.table == Table::Syscall {
                    self.batches.recycle(batch);
                }
            }
        }
    }

    /// Pushes the `exe_hash` rows of execs sealed before their hash was ready.
    fn push_late_hashes(&mut self, stats: &Stats) {
        for (row, facts) in self.exe.collect() {
            stats.count(Table::Process);
            self.batches.push_process(row, facts);
        }
    }

    fn push_call(&mut self, row: CallRow, stats: &Stats) {
        match row {
            CallRow::Process(r, facts) => {
                stats.count(Table::Process);
                self.batches.push_process(r, facts)
            }
            CallRow::File(r) => {
                stats.count(Table::File);
                self.batches.push_file(r)
            }
            CallRow::Net(r) => {
                stats.count(Table::Net);
                self.batches.push_net(r)
            }
        }
    }
}

/// How long one drain may take at most: a producer faster than the drain must not keep it in
/// one call, away from signals, the seal tick and the status line. (At full rate a 2 ms tick
/// finds ~100 raw-stream records, well under a millisecond of work.)
const MAX_DRAIN_TIME: Duration = Duration::from_millis(20);

fn drain_ring(ring: &mut RingBuf<MapData>, st: &mut DrainState, clock: &WallClock, stats: &Stats) {
    drain_ring_until(
        ring,
        st,
        clock,
        stats,
        Some(Instant::now() + MAX_DRAIN_TIME),
    );
}

/// Drains until the buffer is empty, `deadline` passes or a partition is full (a row group,
/// [`ROWS_PER_CHUNK`] or [`DECODED_ROWS_PER_CHUNK`]); true when it stopped before the buffer
/// was empty.
fn drain_ring_until(
    ring: &mut RingBuf<MapData>,
    st: &mut DrainState,
    clock: &WallClock,
    stats: &Stats,
    deadline: Option<Instant>,
) -> bool {
    let mut n = 0u64;
    let mut more = false;
    while let Some(item) = ring.next() {
        n += 1;
        decode_one(&item, st, clock, stats);
        drop(item);
        // Checked every 64 records: a raw-stream record is up to 128 rows.
        if n.is_multiple_of(64)
            && (st.batches.any_full() || deadline.is_some_and(|d| Instant::now() >= d))
        {
            more = true;
            break;
        }
    }
    st.push_late_hashes(stats);
    stats.events.fetch_add(n, Ordering::Relaxed);
    stats
        .rows_buffered
        .store(st.batches.len() as u64, Ordering::Relaxed);
    more
}

/// Turns one ring-buffer record into rows.
fn decode_one(item: &[u8], st: &mut DrainState, clock: &WallClock, stats: &Stats) {
    let record = match decode(item, clock) {
        Ok(r) => r,
        Err(e) => {
            stats.undecodable.fetch_add(1, Ordering::Relaxed);
            log::debug!("undecodable record: {e:?}");
            return;
        }
    };
    match record {
        Record::Process(row, mut facts, exe) => {
            st.attributor.observe(row.id.cgroup_id);
            st.calls.process(&row, &mut facts);
            st.exe.request(&row, exe, &mut facts);
            stats.count(Table::Process);
            st.batches.push_process(row, *facts);
        }
        Record::RawBatch(slots) => {
            let attributor = &mut st.attributor;
            let rows = st
                .batches
                .push_raw(slots, clock, |cgroup| attributor.observe(cgroup));
            stats.count_many(Table::Syscall, rows);
        }
        Record::Call(ev) => {
            st.attributor.observe(ev.header.cgroup_id);
            let id = identity(&ev.header, clock);
            if let Some(row) = st.calls.call(&ev, id) {
                st.push_call(row, stats);
            }
        }
        Record::TcpState(ev) => {
            let id = identity(&ev.header, clock);
            stats.count(Table::Net);
            st.batches.push_net(tcp_state_row(&ev, id));
        }
    }
}

/// Runs the kernel skipped: a tracing program does not run on a CPU where it is already
/// running (an instance preempted mid-run, a tracepoint hit from inside a program), and the
/// kernel only counts those skips, per program, in the program's fdinfo (`recursion_misses`).
/// Each skip is a syscall or event not recorded; the count is read like the ring buffer's drops.
struct RecursionMisses {
    /// A duplicate of each program's fd, so the count stays readable after a program is
    /// detached at shutdown (the kernel keeps a program while an fd refers to it).
    programs: Vec<OwnedFd>,
}

impl RecursionMisses {
    fn of(ebpf: &Ebpf) -> RecursionMisses {
        let programs = ebpf
            .programs()
            .filter_map(|(_, program)| program.fd().ok())
            .filter_map(|fd| fd.as_fd().try_clone_to_owned().ok())
            .collect();
        RecursionMisses { programs }
    }

    /// Runs skipped so far, all programs together.
    fn total(&self) -> u64 {
        self.programs
            .iter()
            .filter_map(|fd| {
                let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
                    .ok()?;
                fdinfo_recursion_misses(&info)
            })
            .sum()
    }
}

/// The `recursion_misses` line of a BPF program's fdinfo.
fn fdinfo_recursion_misses(fdinfo: &str) -> Option<u64> {
    fdinfo
        .lines()
        .find_map(|line| line.strip_prefix("recursion_misses:"))
        .and_then(|count| count.trim().parse().ok())
}

/// Turns the kernel's per-CPU drop counters into `gap` rows: each increase of a CPU's counter
/// between two reads is a gap on that CPU in that interval. Runs skipped by recursion
/// protection become gap rows too, on [`GAP_CPU_UNKNOWN`].
struct GapTracker {
    last: Vec<u64>,
    last_misses: u64,
    since: chrono::DateTime<chrono::Utc>,
}

impl GapTracker {
    fn new() -> GapTracker {
        GapTracker {
            last: Vec::new(),
            last_misses: 0,
            since: chrono::Utc::now(),
        }
    }

    fn read(
        &mut self,
        drops: &PerCpuArray<MapData, u64>,
        misses: &RecursionMisses,
        batches: &mut Batches,
        stats: &Stats,
    ) {
        let Ok(per_cpu) = drops.get(&DROPS_SLOT, 0) else {
            return;
        };
        let missed = misses.total();
        let now = chrono::Utc::now();
        let now_ktime = WallClock::monotonic_now_ns();
        let mut gap = |cpu: i32, lost: u64, reason: GapReason| {
            stats.count(Table::Gap);
            batches.push_gap(GapRow {
                time: now,
                ktime_ns: now_ktime,
                since: self.since,
                cpu,
                lost,
                reason,
                lost_table: None,
            });
        };
        self.last.resize(per_cpu.len(), 0);
        for (cpu, (&count, last)) in per_cpu.iter().zip(self.last.iter_mut()).enumerate() {
            if count > *last {
                gap(cpu as i32, count - *last, GapReason::RingBufferFull);
                *last = count;
            }
        }
        if missed > self.last_misses {
            gap(
                GAP_CPU_UNKNOWN,
                missed - self.last_misses,
                GapReason::ProgramRecursion,
            );
            self.last_misses = missed;
        }
        self.since = now;
        stats
            .kernel_drops
            .store(per_cpu.iter().sum::<u64>() + missed, Ordering::Relaxed);
    }
}

/// Hands the partitions that hold a row group ([`ROWS_PER_CHUNK`], [`DECODED_ROWS_PER_CHUNK`])
/// to the sealer, attributed to containers.
fn submit_chunks(st: &mut DrainState, sealer: &Sealer, stats: &Stats) {
    if !st.batches.any_full() {
        return;
    }
    for spent in sealer.spent() {
        st.batches.recycle(spent);
    }
    let exe = &mut st.exe;
    st.batches.settle_processes(true, |r, f| exe.settle(r, f));
    for (partition, batch) in st.batches.take_full() {
        let batch = st.attributor.fill_container_ids(batch);
        st.submit(sealer, stats, partition, batch);
    }
    stats
        .rows_buffered
        .store(st.batches.len() as u64, Ordering::Relaxed);
}

/// Hands every partition's rows to the sealer as row groups of their open segments, attributed
/// to containers (the tap's tick: the segments are sealed on the seal tick).
fn submit_rows(st: &mut DrainState, sealer: &Sealer, stats: &Stats) {
    for spent in sealer.spent() {
        st.batches.recycle(spent);
    }
    // Rows handed over are as good as sealed: exec hashes not ready become exe_hash rows.
    let exe = &mut st.exe;
    st.batches.settle_processes(false, |r, f| exe.settle(r, f));
    for (partition, batch) in st.batches.take() {
        let batch = st.attributor.fill_container_ids(batch);
        st.submit(sealer, stats, partition, batch);
    }
    stats.rows_buffered.store(0, Ordering::Relaxed);
}

/// Most container ids remembered as announced ([`RecorderConfig::new_containers`]).
const MAX_ANNOUNCED: usize = 65_536;

/// Hands every partition's rows to the sealer ([`submit_rows`]), followed by the `container`
/// rows for what was attributed, and has the sealer seal its open segments.
fn submit_all(st: &mut DrainState, sealer: &Sealer, stats: &Stats) {
    submit_rows(st, sealer, stats);
    let now = chrono::Utc::now();
    let seen = st.attributor.seen_containers();
    if let Some(watch) = &mut st.posture {
        watch.offer(seen.iter().cloned());
        st.posture_rows.append(&mut watch.take_rows());
    }
    if let Some(tx) = &st.new_containers {
        // A recorder on a node that starts this many containers announces them again.
        if st.announced.len() > MAX_ANNOUNCED {
            st.announced.clear();
        }
        for c in seen {
            if !st.announced.contains(&c.id) && tx.try_send(c.clone()).is_ok() {
                st.announced.insert(c.id.clone());
            }
        }
    }
    let containers = st.attributor.take_container_rows(now);
    if !containers.is_empty() {
        let host = st.batches.host();
        let partition = Partition::for_time(Table::Container, now, host);
        let batch = container_batch(host, &containers);
        st.submit(sealer, stats, partition, batch);
    }
    if !st.posture_rows.is_empty() {
        let rows = std::mem::take(&mut st.posture_rows);
        let host = st.batches.host();
        let partition = Partition::for_time(Table::Posture, now, host);
        let batch = posture_batch(host, &rows);
        st.submit(sealer, stats, partition, batch);
    }
    sealer.close();
    st.last_submit = now;
    stats.rows_buffered.store(0, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recursion_misses_are_read_from_fdinfo() {
        let fdinfo = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t2061\nprog_type:\t26\n\
                      prog_jited:\t1\nprog_tag:\tb2a645855b0ad254\nmemlock:\t4096\nprog_id:\t91\n\
                      run_time_ns:\t0\nrun_cnt:\t0\nrecursion_misses:\t17\nverified_insns:\t212\n";
        assert_eq!(fdinfo_recursion_misses(fdinfo), Some(17));
        // Kernels before the counter existed: nothing to add.
        assert_eq!(fdinfo_recursion_misses("prog_type:\t26\n"), None);
    }
}
