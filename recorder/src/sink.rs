//! From decoded rows to sealed segments.
//!
//! The drain loop appends rows to per-partition Arrow builders ([`Batches`]). A partition that
//! reaches [`crate::ROWS_PER_CHUNK`] rows (raw stream) or [`crate::DECODED_ROWS_PER_CHUNK`]
//! (decoded tables) is finished and handed to the sealer thread
//! ([`Sealer`]), which writes it as a row group of the partition's open segment
//! ([`quarry_store::SegmentWriter`]); on every seal tick the rest is handed over and the open
//! segments are sealed, as is one that reaches [`crate::MAX_ROWS_PER_SEGMENT`] rows. So memory
//! holds a few row groups, never whole segments. Encoding and fsync happen off the drain loop
//! so a slow disk never holds up draining the ring buffer.
//!
//! A batch whose write fails (a full disk, say) is kept and retried, in a new segment: the rows
//! already written into the failed one went with its staging file, and the sealer reports them
//! ([`Dropped`]) so they are counted and written as `gap` rows. While the disk fails, the
//! sealer refuses work beyond its budget instead of making the drain wait, and the recorder
//! counts those rows as `gap` rows too ([`Refused`]). Sealed raw-stream batches come back
//! ([`Sealer::spent`]) so the next ones are built in their memory ([`Batches::recycle`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};
use quarry_store::schema::{
    FileRow, GapReason, GapRow, NetRow, ProcessFacts, ProcessRow, SyscallBuilder, SyscallRow,
    file_batch, gap_batch, net_batch, process_batch_with_facts,
};
use quarry_store::{Partition, SegmentWriter, Store, StoreError, Table};

use crate::clock::WallClock;
use crate::decode::{RawItem, RawSlots, c_string};
use crate::stats::Stats;
use crate::syscalls::syscall_name;

/// Rows of one partition waiting to be sealed.
enum Pending {
    Process(Vec<ProcessRow>, Vec<ProcessFacts>),
    File(Vec<FileRow>),
    Net(Vec<NetRow>),
    Syscall(Box<SyscallBuilder>),
    Gap(Vec<GapRow>),
}

impl Pending {
    fn new(table: Table) -> Pending {
        match table {
            Table::Process => Pending::Process(Vec::new(), Vec::new()),
            Table::File => Pending::File(Vec::new()),
            Table::Net => Pending::Net(Vec::new()),
            Table::Syscall => Pending::Syscall(Box::default()),
            Table::Gap => Pending::Gap(Vec::new()),
            Table::Container | Table::Action | Table::Baseline | Table::Alert | Table::Posture => {
                unreachable!(
                    "container and posture rows are built at seal time; actions, baselines and \
                     alerts are not decoded"
                )
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Pending::Process(v, _) => v.len(),
            Pending::File(v) => v.len(),
            Pending::Net(v) => v.len(),
            Pending::Syscall(b) => b.len(),
            Pending::Gap(v) => v.len(),
        }
    }

    /// Rows at which this partition is a row group to hand to the sealer.
    fn chunk_rows(&self) -> usize {
        match self {
            Pending::Syscall(_) => crate::ROWS_PER_CHUNK,
            _ => crate::DECODED_ROWS_PER_CHUNK,
        }
    }

    fn is_full(&self) -> bool {
        self.len() >= self.chunk_rows()
    }

    /// The rows as a batch; the pending rows are empty after.
    fn finish(&mut self, host: &str) -> RecordBatch {
        match self {
            Pending::Process(v, facts) => {
                let batch = process_batch_with_facts(host, v, facts);
                v.clear();
                facts.clear();
                batch
            }
            Pending::File(v) => {
                let batch = file_batch(host, v);
                v.clear();
                batch
            }
            Pending::Net(v) => {
                let batch = net_batch(host, v);
                v.clear();
                batch
            }
            Pending::Syscall(b) => b.finish(host, |nr| syscall_name(nr.into())),
            Pending::Gap(v) => {
                let batch = gap_batch(host, v);
                v.clear();
                batch
            }
        }
    }
}

/// Microseconds in an hour: partitions are hours.
const HOUR_MICROS: i64 = 3_600_000_000;

/// Rows waiting to be sealed, grouped by table and hour (the partition, minus the host that is
/// the same for all). Keyed by integers so the per-row lookup on the hot path is cheap.
pub struct Batches {
    host: String,
    parts: BTreeMap<(Table, i64), Pending>,
    rows: usize,
    /// The raw stream's builder of the last sealed batch, emptied, for the next partition:
    /// its columns keep their memory (see [`SyscallBuilder`]).
    spare_syscall: Option<Box<SyscallBuilder>>,
}

impl Batches {
    pub fn new(host: String) -> Batches {
        Batches {
            host,
            parts: BTreeMap::new(),
            rows: 0,
            spare_syscall: None,
        }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The pending rows of `table` in the hour `hour` (counted from the epoch).
    fn partition(&mut self, table: Table, hour: i64) -> &mut Pending {
        self.parts.entry((table, hour)).or_insert_with(|| {
            match (table, self.spare_syscall.take()) {
                (Table::Syscall, Some(builder)) => Pending::Syscall(builder),
                _ => Pending::new(table),
            }
        })
    }

    /// Where one more row of `table` at `time` goes.
    fn part(&mut self, table: Table, time: DateTime<Utc>) -> &mut Pending {
        self.rows += 1;
        self.partition(table, time.timestamp_micros().div_euclid(HOUR_MICROS))
    }

    pub fn push_process(&mut self, row: ProcessRow, facts: ProcessFacts) {
        if let Pending::Process(v, f) = self.part(Table::Process, row.id.time) {
            v.push(row);
            f.push(facts);
        }
    }

    pub fn push_file(&mut self, row: FileRow) {
        if let Pending::File(v) = self.part(Table::File, row.id.time) {
            v.push(row);
        }
    }

    pub fn push_net(&mut self, row: NetRow) {
        let time = row.id.as_ref().map(|i| i.time).unwrap_or_else(Utc::now);
        if let Pending::Net(v) = self.part(Table::Net, time) {
            v.push(row);
        }
    }

    pub fn push_gap(&mut self, row: GapRow) {
        if let Pending::Gap(v) = self.part(Table::Gap, row.time) {
            v.push(row);
        }
    }

    /// Appends the calls of one raw-stream batch without building a row struct per call;
    /// `observe` sees the cgroup id of each thread record. Returns the rows appended.
    pub fn push_raw(
        &mut self,
        slots: RawSlots<'_>,
        clock: &WallClock,
        mut observe: impl FnMut(u64),
    ) -> u64 {
        let source = slots.cpu;
        let mut rows = 0u64;
        let mut thread: Option<(i32, String, u64)> = None;
        // The partition being appended to and the thread's comm key in it: a batch spans
        // milliseconds, so both almost never change within one.
        let mut current: Option<(i64, &mut SyscallBuilder)> = None;
        let mut comm_key: Option<i32> = None;
        for item in slots {
            let call = match item {
                RawItem::Thread(t) => {
                    observe(t.cgroup_id);
                    thread = Some((t.pid as i32, c_string(&t.comm), t.cgroup_id));
                    comm_key = None;
                    continue;
                }
                RawItem::Call(call) => call,
            };
            let time_micros = clock.to_micros(call.ktime_ns);
            let hour = time_micros.div_euclid(HOUR_MICROS);
            if current.as_ref().is_none_or(|(h, _)| *h != hour) {
                let Pending::Syscall(b) = self.partition(Table::Syscall, hour) else {
                    unreachable!("syscall partitions hold syscall rows")
                };
                current = Some((hour, b.as_mut()));
                comm_key = None;
            }
            let Some((_, builder)) = current.as_mut() else {
                continue;
            };
            // A batch always names a thread before its first call; a call without one (a
            // kernel/user mismatch) is still kept, attributed to its thread id.
            let (pid, comm, cgroup_id) = match &thread {
                Some((pid, comm, cgroup_id)) => (*pid, comm.as_str(), *cgroup_id),
                None => (call.tid as i32, "", 0),
            };
            let comm = *comm_key.get_or_insert_with(|| builder.intern_comm(comm));
            builder.append(SyscallRow {
                time_micros,
                ktime_ns: call.ktime_ns,
                pid,
                tid: call.tid as i32,
                comm,
                cgroup_id,
                nr: call.nr,
                ret: call.ret,
                ktime_slack_ns: call.ktime_slack_ns,
                source,
            });
            rows += 1;
        }
        self.rows += rows as usize;
        rows
    }

    /// Rows held right now.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether a partition holds a row group ([`Pending::chunk_rows`]): handed over early,
    /// before memory grows.
    pub fn any_full(&self) -> bool {
        self.parts.values().any(Pending::is_full)
    }

    /// Gives a sealed raw-stream batch's memory to the builder of the next one.
    pub fn recycle(&mut self, batch: RecordBatch) {
        let active = self.parts.values_mut().find_map(|pending| match pending {
            Pending::Syscall(builder) => Some(builder),
            _ => None,
        });
        match active {
            Some(builder) => builder.recycle(batch),
            None => self
                .spare_syscall
                .get_or_insert_with(Default::default)
                .recycle(batch),
        }
    }

    /// Calls `f` on every process row of the partitions about to be finished: the full ones
    /// ([`Batches::take_full`]) when `full_only`, else all ([`Batches::take`]), so facts known
    /// late (an exec's hash) go in before the rows are sealed.
    pub fn settle_processes(
        &mut self,
        full_only: bool,
        mut f: impl FnMut(&ProcessRow, &mut ProcessFacts),
    ) {
        for ((table, _), pending) in self.parts.iter_mut() {
            if *table != Table::Process || (full_only && !pending.is_full()) {
                continue;
            }
            if let Pending::Process(rows, facts) = pending {
                rows.iter().zip(facts.iter_mut()).for_each(|(r, x)| f(r, x));
            }
        }
    }

    /// Finishes the partitions that hold a row group ([`Pending::chunk_rows`]) into batches;
    /// the others keep filling.
    pub fn take_full(&mut self) -> Vec<(Partition, RecordBatch)> {
        let host = self.host.clone();
        let mut batches = Vec::new();
        for ((table, hour), pending) in self.parts.iter_mut() {
            let rows = pending.len();
            if rows > 0 && pending.is_full() {
                self.rows -= rows;
                let start = DateTime::from_timestamp_micros(hour * HOUR_MICROS).unwrap_or_default();
                let partition = Partition::for_time(*table, start, &host);
                batches.push((partition, pending.finish(&host)));
            }
        }
        batches
    }

    /// Finishes every partition into a batch.
    pub fn take(&mut self) -> Vec<(Partition, RecordBatch)> {
        self.rows = 0;
        let host = self.host.clone();
        let mut batches = Vec::new();
        for ((table, hour), mut pending) in std::mem::take(&mut self.parts) {
            if pending.len() > 0 {
                let start = DateTime::from_timestamp_micros(hour * HOUR_MICROS).unwrap_or_default();
                let partition = Partition::for_time(table, start, &host);
                batches.push((partition, pending.finish(&host)));
            }
            if let Pending::Syscall(builder) = pending {
                self.spare_syscall = Some(builder);
            }
        }
        batches
    }
}

/// What the drain loop hands the sealer thread.
enum Job {
    /// Rows for the partition's open segment (a row group, or a few).
    Rows(Partition, RecordBatch),
    /// Seal every open segment (the seal tick, and the end).
    Close,
}

/// The sealing thread and the channels to and from it.
pub struct Sealer {
    tx: mpsc::Sender<Job>,
    /// Raw-stream batches that are sealed, for [`Batches::recycle`].
    spent: mpsc::Receiver<RecordBatch>,
    /// Rows of segments that failed after they were handed over ([`Dropped`]).
    dropped: mpsc::Receiver<Dropped>,
    /// Rows handed over and not written yet, by [`queue_weight`].
    queued_rows: Arc<AtomicUsize>,
    /// How the last write or seal went ([`SealHealth`]), for refusing work and for the status
    /// line.
    health: Arc<AtomicU8>,
    thread: JoinHandle<Vec<LostRows>>,
}

/// How long the sealer waits before retrying a batch that failed to seal, while recording.
const RETRY_AFTER: Duration = Duration::from_secs(2);
/// How often it retries once recording has stopped, and for how long at most: a stop must not
/// wait on a disk that stays full.
const RETRY_AT_EXIT: Duration = Duration::from_millis(500);
pub const EXIT_GRACE: Duration = Duration::from_secs(3);

/// Rows that may wait for the sealer, the batch being written included: four row groups
/// ([`crate::ROWS_PER_CHUNK`]). A batch that would go beyond it is refused
/// ([`Sealer::submit`]), never waited for: the drain loop (and with it signals, `--duration`
/// and the status line) must not stop because the disk did. The refused rows are counted and
/// written as `gap` rows (the reason the last seal failed, or [`GapReason::SealerBehind`]).
/// Decoded rows count [`DECODED_ROW_WEIGHT`] times: each holds about as much memory as that
/// many raw-stream rows, so the queue holds four row groups of either kind.
pub const MAX_QUEUED_ROWS: usize = 4 * crate::ROWS_PER_CHUNK;

/// What a decoded row (process, file, net, gap) weighs in the queue, in raw-stream rows.
pub const DECODED_ROW_WEIGHT: usize = crate::ROWS_PER_CHUNK / crate::DECODED_ROWS_PER_CHUNK;

/// What `rows` rows of `table` weigh in the sealer's queue ([`MAX_QUEUED_ROWS`]).
fn queue_weight(table: Table, rows: usize) -> usize {
    match table {
        Table::Syscall => rows,
        _ => rows * DECODED_ROW_WEIGHT,
    }
}

/// The outcome of the last seal attempt, in an `AtomicU8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealHealth {
    Ok = 0,
    DiskFull = 1,
    WriteError = 2,
}

impl SealHealth {
    fn from_u8(v: u8) -> SealHealth {
        match v {
            1 => SealHealth::DiskFull,
            2 => SealHealth::WriteError,
            _ => SealHealth::Ok,
        }
    }

    /// Why rows are lost while the sealer is in this state.
    pub fn gap_reason(self) -> GapReason {
        match self {
            SealHealth::Ok => GapReason::SealerBehind,
            SealHealth::DiskFull => GapReason::DiskFull,
            SealHealth::WriteError => GapReason::WriteError,
        }
    }

    /// What a failed seal says about the disk: no space (ENOSPC, EDQUOT) or anything else.
    fn of_error(error: &StoreError) -> SealHealth {
        if matches!(error, StoreError::DiskFull { .. }) {
            return SealHealth::DiskFull;
        }
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && matches!(io.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
            {
                return SealHealth::DiskFull;
            }
            source = e.source();
        }
        // Parquet's writer wraps I/O errors as text.
        let text = quarry_store::human::with_causes(error);
        if text.contains("No space left on device") || text.contains("Disk quota exceeded") {
            SealHealth::DiskFull
        } else {
            SealHealth::WriteError
        }
    }
}

/// A batch the sealer did not take, and why its rows are lost.
pub struct Refused {
    pub partition: Partition,
    pub batch: RecordBatch,
    pub reason: GapReason,
}

/// Rows of one table that were handed to the sealer and never sealed (the disk still failing
/// when recording stopped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostRows {
    pub table: Table,
    pub rows: u64,
    pub reason: GapReason,
}

/// Rows of one table the sealer had written into a segment that then failed (its staging file
/// removed), for [`Losses`]: decoded between `since` and `until`, or so.
#[derive(Debug, Clone)]
pub struct Dropped {
    pub table: Table,
    pub rows: u64,
    pub reason: GapReason,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

impl Sealer {
    pub fn spawn(store: Store, run_id: u32, stats: Arc<Stats>) -> Sealer {
        let (tx, rx) = mpsc::channel::<Job>();
        let (spent_tx, spent) = mpsc::channel();
        let (dropped_tx, dropped) = mpsc::channel();
        let queued_rows = Arc::new(AtomicUsize::new(0));
        let health = Arc::new(AtomicU8::new(SealHealth::Ok as u8));
        let mut worker = Worker {
            store,
            run_id,
            seq: 0,
            stats,
            queued_rows: queued_rows.clone(),
            open: Vec::new(),
            dropped: dropped_tx,
        };
        let sealer_health = health.clone();
        let thread = std::thread::Builder::new()
            .name("quarry-sealer".into())
            .spawn(move || {
                let mut queue = VecDeque::new();
                let mut open = true;
                let mut failing = false;
                let mut give_up_at: Option<Instant> = None;
                loop {
                    if open {
                        // Wait for work when there is none, or out the retry delay after a
                        // failure, taking new work meanwhile (`submit` bounds how much).
                        if queue.is_empty() || failing {
                            match rx.recv_timeout(RETRY_AFTER) {
                                Ok(job) => queue.push_back(job),
                                Err(RecvTimeoutError::Timeout) => {}
                                Err(RecvTimeoutError::Disconnected) => open = false,
                            }
                        }
                        loop {
                            match rx.try_recv() {
                                Ok(job) => queue.push_back(job),
                                Err(mpsc::TryRecvError::Empty) => break,
                                Err(mpsc::TryRecvError::Disconnected) => {
                                    open = false;
                                    break;
                                }
                            }
                        }
                    }
                    if queue.is_empty() {
                        if open {
                            continue;
                        }
                        // Everything is written: seal what is still open and stop.
                        let outcome = worker.close_all();
                        sealer_health.store(outcome as u8, Ordering::Release);
                        return Vec::new();
                    }
                    let previous = SealHealth::from_u8(sealer_health.load(Ordering::Acquire));
                    let (spent, outcome) = worker.work(&mut queue, previous);
                    failing = outcome != SealHealth::Ok;
                    sealer_health.store(outcome as u8, Ordering::Release);
                    for batch in spent {
                        // Nobody takes them once the drain stopped: no error then.
                        let _ = spent_tx.send(batch);
                    }
                    if open || !failing {
                        continue;
                    }
                    // Stopping with a failing disk: retry for a short while, then give up on
                    // what is left and say exactly what was lost.
                    let deadline = *give_up_at.get_or_insert_with(|| Instant::now() + EXIT_GRACE);
                    if Instant::now() >= deadline {
                        return worker.abandon(&mut queue, outcome.gap_reason());
                    }
                    std::thread::sleep(RETRY_AT_EXIT);
                }
            })
            .expect("spawning the sealer thread");
        Sealer {
            tx,
            spent,
            dropped,
            queued_rows,
            health,
            thread,
        }
    }

    /// Raw-stream batches sealed since the last call.
    pub fn spent(&self) -> impl Iterator<Item = RecordBatch> + '_ {
        self.spent.try_iter()
    }

    /// Rows of failed segments reported since the last call.
    pub fn dropped(&self) -> impl Iterator<Item = Dropped> + '_ {
        self.dropped.try_iter()
    }

    /// Whether another row group would not fit in the queue: the drain loop then leaves
    /// records in the ring buffer while the sealer works (and drains on when it fails).
    pub fn backlogged(&self) -> bool {
        self.queued_rows.load(Ordering::Acquire) + crate::ROWS_PER_CHUNK > MAX_QUEUED_ROWS
    }

    /// How the last seal went.
    pub fn health(&self) -> SealHealth {
        SealHealth::from_u8(self.health.load(Ordering::Acquire))
    }

    /// Hands a batch to the sealer, or gives it back when taking it would put more than
    /// [`MAX_QUEUED_ROWS`] rows in its queue. Never waits. `gap` batches are always taken:
    /// they are a few rows, and they are what says how much else was lost.
    pub fn submit(&self, partition: Partition, batch: RecordBatch) -> Result<(), Refused> {
        let rows = queue_weight(partition.table, batch.num_rows());
        let queued = self.queued_rows.load(Ordering::Acquire);
        if partition.table != Table::Gap && queued > 0 && queued + rows > MAX_QUEUED_ROWS {
            return Err(Refused {
                partition,
                batch,
                reason: self.health().gap_reason(),
            });
        }
        self.queued_rows.fetch_add(rows, Ordering::AcqRel);
        // The receiver lives until `finish`, which consumes self: send cannot fail before.
        let _ = self.tx.send(Job::Rows(partition, batch));
        Ok(())
    }

    /// Seals the open segments once what was submitted before is written.
    pub fn close(&self) {
        let _ = self.tx.send(Job::Close);
    }

    /// Waits until everything submitted is sealed, or, when sealing keeps failing, at most
    /// [`EXIT_GRACE`] more; returns what had to be given up, with the rows of segments that
    /// failed after the drain loop last asked ([`Sealer::dropped`]).
    pub fn finish(self) -> Vec<LostRows> {
        drop(self.tx);
        let mut lost = self.thread.join().unwrap_or_default();
        for dropped in self.dropped.try_iter() {
            log::error!(
                "{} {} rows were lost with a segment that could not be sealed ({})",
                dropped.rows,
                dropped.table,
                dropped.reason
            );
            lost.push(LostRows {
                table: dropped.table,
                rows: dropped.rows,
                reason: dropped.reason,
            });
        }
        lost
    }
}

/// A segment being written and since when.
struct OpenSegment {
    partition: Partition,
    writer: SegmentWriter,
    since: DateTime<Utc>,
}

/// The sealer thread's state: the segments it is writing.
struct Worker {
    store: Store,
    run_id: u32,
    seq: u64,
    stats: Arc<Stats>,
    queued_rows: Arc<AtomicUsize>,
    open: Vec<OpenSegment>,
    dropped: mpsc::Sender<Dropped>,
}

impl Worker {
    /// Works the queue from the front until done or a write or seal fails; returns the written
    /// raw-stream batches and how the last attempt went.
    fn work(
        &mut self,
        queue: &mut VecDeque<Job>,
        previous: SealHealth,
    ) -> (Vec<RecordBatch>, SealHealth) {
        let mut spent = Vec::new();
        while let Some(job) = queue.front() {
            let (partition, batch) = match job {
                Job::Close => {
                    queue.pop_front();
                    let outcome = self.close_all();
                    if outcome != SealHealth::Ok {
                        return (spent, outcome);
                    }
                    continue;
                }
                Job::Rows(partition, batch) => (partition, batch),
            };
            // A disk that was full and still has less free space than this batch needs: do
            // not encode it only to fail at the write (the CPU the drain needs).
            if previous == SealHealth::DiskFull
                && free_bytes(self.store.root())
                    .is_some_and(|free| free < bytes_needed(partition, batch))
            {
                return (spent, SealHealth::DiskFull);
            }
            if let Err(health) = self.write(partition, batch) {
                return (spent, health);
            }
            self.queued_rows.fetch_sub(
                queue_weight(partition.table, batch.num_rows()),
                Ordering::AcqRel,
            );
            let full = self
                .open
                .iter()
                .position(|o| o.partition == *partition)
                .filter(|&at| self.open[at].writer.rows() >= crate::MAX_ROWS_PER_SEGMENT as u64);
            if let Some(Job::Rows(partition, batch)) = queue.pop_front()
                && partition.table == Table::Syscall
            {
                spent.push(batch);
            }
            if let Some(at) = full {
                let segment = self.open.swap_remove(at);
                if let Err(health) = self.seal(segment) {
                    return (spent, health);
                }
            }
        }
        (spent, SealHealth::Ok)
    }

    /// Writes `batch` into its partition's open segment (opening one if needed). On failure
    /// the segment is given up (its rows reported as dropped); the batch stays the caller's.
    fn write(&mut self, partition: &Partition, batch: &RecordBatch) -> Result<(), SealHealth> {
        let at = match self.open.iter().position(|o| o.partition == *partition) {
            Some(at) => at,
            None => {
                // The sequence number is used up even by a failed open: a staging file of
                // that name may be left behind, and names are never reused.
                self.seq += 1;
                match self.store.open_segment(partition, self.run_id, self.seq) {
                    Ok(writer) => {
                        self.open.push(OpenSegment {
                            partition: partition.clone(),
                            writer,
                            since: Utc::now(),
                        });
                        self.open.len() - 1
                    }
                    Err(e) => return Err(self.failed(partition.table, &e)),
                }
            }
        };
        match self.open[at].writer.write(batch) {
            Ok(()) => Ok(()),
            Err(e) => {
                let health = self.failed(partition.table, &e);
                let segment = self.open.swap_remove(at);
                self.drop_segment(segment, health.gap_reason());
                Err(health)
            }
        }
    }

    /// Seals every open segment; the outcome of the last failure, if any.
    fn close_all(&mut self) -> SealHealth {
        let mut outcome = SealHealth::Ok;
        for segment in std::mem::take(&mut self.open) {
            if let Err(health) = self.seal(segment) {
                outcome = health;
            }
        }
        outcome
    }

    fn seal(&mut self, segment: OpenSegment) -> Result<(), SealHealth> {
        let OpenSegment {
            partition,
            writer,
            since,
        } = segment;
        let rows = writer.rows();
        if rows == 0 {
            return Ok(());
        }
        match writer.seal() {
            Ok(sealed) => {
                let stats = &self.stats;
                stats.rows_sealed.fetch_add(rows, Ordering::Relaxed);
                stats.segments_sealed.fetch_add(1, Ordering::Relaxed);
                stats
                    .bytes_sealed
                    .fetch_add(sealed.entry.body.bytes, Ordering::Relaxed);
                *stats
                    .last_segment
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(sealed.path);
                *stats
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = None;
                Ok(())
            }
            Err(e) => {
                let health = self.failed(partition.table, &e);
                self.report(partition.table, rows, health.gap_reason(), since);
                Err(health)
            }
        }
    }

    /// Gives up an open segment (its staging file goes with the writer): its rows are lost.
    fn drop_segment(&mut self, segment: OpenSegment, reason: GapReason) {
        let rows = segment.writer.rows();
        let (table, since) = (segment.partition.table, segment.since);
        drop(segment);
        if rows > 0 {
            self.report(table, rows, reason, since);
        }
    }

    fn report(&self, table: Table, rows: u64, reason: GapReason, since: DateTime<Utc>) {
        self.stats.rows_lost.fetch_add(rows, Ordering::Relaxed);
        self.stats.rows_abandoned.fetch_add(rows, Ordering::Relaxed);
        // Nobody reads them once the drain stopped; `Sealer::finish` then does.
        let _ = self.dropped.send(Dropped {
            table,
            rows,
            reason,
            since,
            until: Utc::now(),
        });
    }

    /// Records a failed write or seal: the health it means, logged once per episode.
    fn failed(&self, table: Table, error: &StoreError) -> SealHealth {
        let health = SealHealth::of_error(error);
        let message = quarry_store::human::with_causes(error);
        let mut last = self
            .stats
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Once per episode, not every retry: a full disk can last for hours.
        if last.is_none() {
            log::warn!(
                "sealing a {table} segment failed ({}): {message}; retrying every {:?}, \
                 counting what cannot be kept as gap rows",
                health.gap_reason(),
                RETRY_AFTER
            );
        }
        *last = Some(message);
        health
    }

    /// Empties the queue and the open segments of a sealer that gives up, counting their rows
    /// by table.
    fn abandon(&mut self, queue: &mut VecDeque<Job>, reason: GapReason) -> Vec<LostRows> {
        let mut lost: BTreeMap<Table, u64> = BTreeMap::new();
        for job in queue.drain(..) {
            if let Job::Rows(partition, batch) = job {
                *lost.entry(partition.table).or_default() += batch.num_rows() as u64;
            }
        }
        let queued: u64 = lost.values().sum();
        self.stats
            .rows_abandoned
            .fetch_add(queued, Ordering::Relaxed);
        self.stats.rows_lost.fetch_add(queued, Ordering::Relaxed);
        for segment in std::mem::take(&mut self.open) {
            let rows = segment.writer.rows();
            *lost.entry(segment.partition.table).or_default() += rows;
            self.stats.rows_abandoned.fetch_add(rows, Ordering::Relaxed);
            self.stats.rows_lost.fetch_add(rows, Ordering::Relaxed);
        }
        let total: u64 = lost.values().sum();
        log::error!(
            "giving up on {total} rows that could not be sealed ({reason}): {}",
            self.stats
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_deref()
                .unwrap_or("unknown error")
        );
        lost.into_iter()
            .map(|(table, rows)| LostRows {
                table,
                rows,
                reason,
            })
            .collect()
    }
}

/// Rows not kept, by why and table, until they are written as `gap` rows: as soon as the
/// sealer works again, so the gap rows themselves reach the disk (see [`Sealer::submit`]).
#[derive(Debug, Default)]
pub struct Losses {
    open: BTreeMap<(GapReason, Table), Lost>,
}

#[derive(Debug, Clone, Copy)]
struct Lost {
    rows: u64,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
}

impl Losses {
    /// Counts `rows` of `table` lost for `reason`, decoded between `since` and `until`.
    pub fn add(
        &mut self,
        reason: GapReason,
        table: Table,
        rows: u64,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) {
        let lost = self.open.entry((reason, table)).or_insert(Lost {
            rows: 0,
            since,
            until,
        });
        lost.rows += rows;
        lost.since = lost.since.min(since);
        lost.until = lost.until.max(until);
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// The losses so far as `gap` rows (one per reason and table), forgetting them.
    pub fn take_rows(&mut self, ktime_ns: u64) -> Vec<GapRow> {
        std::mem::take(&mut self.open)
            .into_iter()
            .map(|((reason, table), lost)| GapRow {
                time: lost.until,
                ktime_ns,
                since: lost.since,
                cpu: quarry_store::schema::GAP_CPU_UNKNOWN,
                lost: lost.rows,
                reason,
                lost_table: Some(table),
            })
            .collect()
    }
}

/// Free bytes for an unprivileged writer on the file system holding `path`.
fn free_bytes(path: &std::path::Path) -> Option<u64> {
    let stat = nix::sys::statvfs::statvfs(path).ok()?;
    Some(stat.blocks_available() as u64 * stat.fragment_size() as u64)
}

/// A generous guess of a segment's size on disk (raw-stream rows take ~0.5 bytes, others up to
/// ~12), with room for Parquet's footer and the manifest line.
fn bytes_needed(partition: &Partition, batch: &RecordBatch) -> u64 {
    let per_row = if partition.table == Table::Syscall {
        1
    } else {
        32
    };
    batch.num_rows() as u64 * per_row + 64 * 1024
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::raw_batch_bytes::{call, encode, thread};
    use crate::decode::{Record, decode};
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int32Type, Int64Type, UInt64Type};

    /// Text of a dictionary-encoded column.
    fn texts(batch: &RecordBatch, column: &str) -> Vec<String> {
        let dict = batch
            .column_by_name(column)
            .unwrap()
            .as_dictionary::<Int32Type>();
        let values = dict.values().as_string::<i32>();
        dict.keys()
            .iter()
            .map(|k| values.value(k.unwrap() as usize).to_string())
            .collect()
    }

    #[test]
    fn raw_batches_become_rows_with_their_threads() {
        let clock = WallClock::with_offset_ns(1_700_000_000_000_000_000);
        let mut batches = Batches::new("node-1".into());
        let mut observed = Vec::new();
        for bytes in [
            encode(&[
                thread(10, 11, 7, "sh"),
                call(11, 39, 1_000, 10),
                thread(20, 21, 8, "nginx"),
                call(21, 0, 2_000, -11),
                thread(10, 11, 7, "sh"),
                call(11, 1000, 3_000, 0),
            ]),
            encode(&[thread(10, 12, 7, "worker"), call(12, 39, 4_000, 10)]),
        ] {
            let Ok(Record::RawBatch(slots)) = decode(&bytes, &clock) else {
                panic!("a raw batch");
            };
            batches.push_raw(slots, &clock, |cg| observed.push(cg));
        }
        assert_eq!(batches.len(), 4);
        assert_eq!(observed, [7, 8, 7, 7]);
        let taken = batches.take();
        assert_eq!(taken.len(), 1, "one hour, one partition");
        let (partition, batch) = &taken[0];
        assert_eq!(partition.table, Table::Syscall);
        assert_eq!(batch.num_rows(), 4);
        let pid = batch
            .column_by_name("pid")
            .unwrap()
            .as_primitive::<Int32Type>();
        let tid = batch
            .column_by_name("tid")
            .unwrap()
            .as_primitive::<Int32Type>();
        let ret = batch
            .column_by_name("ret")
            .unwrap()
            .as_primitive::<Int64Type>();
        let ktime = batch
            .column_by_name("ktime_ns")
            .unwrap()
            .as_primitive::<UInt64Type>();
        assert_eq!(pid.values(), &[10, 20, 10, 10]);
        assert_eq!(tid.values(), &[11, 21, 11, 12]);
        assert_eq!(ret.values(), &[10, -11, 0, 10]);
        assert_eq!(ktime.values(), &[1_000, 2_000, 3_000, 4_000]);
        assert_eq!(texts(batch, "comm"), ["sh", "nginx", "sh", "worker"]);
        assert_eq!(
            texts(batch, "name"),
            ["getpid", "read", "unknown", "getpid"]
        );
        let host = batch.column_by_name("host").unwrap().as_string::<i32>();
        assert!(host.iter().all(|h| h == Some("node-1")));
        assert_eq!(
            batch.column_by_name("container_id").unwrap().null_count(),
            4,
            "filled at seal time"
        );
    }
}
