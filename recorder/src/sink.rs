//! From decoded rows to sealed segments.
//!
//! The drain loop appends rows to per-partition Arrow builders ([`Batches`]); on every seal tick
//! the builders are finished and handed to the sealer thread ([`Sealer`]), which writes them
//! with [`Store::seal`]. Encoding and fsync happen off the drain loop so a slow disk never
//! holds up draining the ring buffer. A batch whose seal fails (a full disk, say) is kept and
//! retried, never dropped. Sealed raw-stream batches come back ([`Sealer::spent`]) so the
//! next ones are built in their memory ([`Batches::recycle`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use chrono::{DateTime, Utc};
use quarry_store::schema::{
    FileRow, GapRow, NetRow, ProcessFacts, ProcessRow, SyscallBuilder, SyscallRow, file_batch,
    gap_batch, net_batch, process_batch_with_facts,
};
use quarry_store::{Partition, Store, Table};

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
            Table::Container | Table::Action => {
                unreachable!("container rows are built at seal time; actions are not recorded")
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

    fn finish(&mut self, host: &str) -> RecordBatch {
        match self {
            Pending::Process(v, facts) => process_batch_with_facts(host, v, facts),
            Pending::File(v) => file_batch(host, v),
            Pending::Net(v) => net_batch(host, v),
            Pending::Syscall(b) => b.finish(host, |nr| syscall_name(nr.into())),
            Pending::Gap(v) => gap_batch(host, v),
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

    /// Rows held in the largest partition (to seal early before memory grows).
    pub fn largest(&self) -> usize {
        self.parts.values().map(Pending::len).max().unwrap_or(0)
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

/// The sealing thread and the channels to and from it.
pub struct Sealer {
    tx: mpsc::Sender<(Partition, RecordBatch)>,
    /// Raw-stream batches that are sealed, for [`Batches::recycle`].
    spent: mpsc::Receiver<RecordBatch>,
    /// Rows handed over and not sealed yet.
    queued_rows: Arc<AtomicUsize>,
    thread: JoinHandle<()>,
}

/// How long the sealer waits before retrying a batch that failed to seal.
const RETRY_AFTER: Duration = Duration::from_secs(2);

/// Rows that may wait for the sealer, the one being sealed included (three of the largest
/// segments: a burst of a few seconds at millions of syscalls a second). When the sealer falls
/// further behind (a flood faster than Parquet encoding, a full disk), `submit` waits, the
/// drain stops, the ring buffer fills and the kernel counts what it cannot take: memory stays
/// bounded and the loss is on record as `gap` rows.
pub const MAX_QUEUED_ROWS: usize = 6_000_000;

impl Sealer {
    pub fn spawn(store: Store, run_id: u32, stats: Arc<Stats>) -> Sealer {
        let (tx, rx) = mpsc::channel::<(Partition, RecordBatch)>();
        let (spent_tx, spent) = mpsc::channel();
        let queued_rows = Arc::new(AtomicUsize::new(0));
        let sealed_rows = queued_rows.clone();
        let thread = std::thread::Builder::new()
            .name("quarry-sealer".into())
            .spawn(move || {
                let mut queue = VecDeque::new();
                let mut seq = 0u64;
                let mut open = true;
                while open || !queue.is_empty() {
                    // Take new work only when what is held is sealed: a batch that keeps
                    // failing holds the queue (and so, through the channel, the drain).
                    if queue.is_empty() {
                        match rx.recv_timeout(RETRY_AFTER) {
                            Ok(job) => queue.push_back(job),
                            Err(RecvTimeoutError::Timeout) => {}
                            Err(RecvTimeoutError::Disconnected) => open = false,
                        }
                    }
                    let spent =
                        seal_queue(&store, run_id, &mut seq, &mut queue, &stats, &sealed_rows);
                    for batch in spent {
                        // Nobody takes them once the drain stopped: no error then.
                        let _ = spent_tx.send(batch);
                    }
                    if open && !queue.is_empty() {
                        std::thread::sleep(RETRY_AFTER);
                    }
                    if !open && !queue.is_empty() {
                        // Shutting down with a failing disk: the rows stay in memory only while
                        // we keep retrying, so say loudly what is at stake.
                        let rows: usize = queue.iter().map(|(_, b)| b.num_rows()).sum();
                        log::error!(
                            "{rows} rows are not sealed yet: {}; retrying",
                            stats
                                .last_error
                                .lock()
                                .unwrap()
                                .as_deref()
                                .unwrap_or("unknown error")
                        );
                        std::thread::sleep(RETRY_AFTER);
                    }
                }
            })
            .expect("spawning the sealer thread");
        Sealer {
            tx,
            spent,
            queued_rows,
            thread,
        }
    }

    /// Raw-stream batches sealed since the last call.
    pub fn spent(&self) -> impl Iterator<Item = RecordBatch> + '_ {
        self.spent.try_iter()
    }

    /// Hands a batch to the sealer, first waiting while more than [`MAX_QUEUED_ROWS`] rows
    /// are waiting for it.
    pub fn submit(&self, partition: Partition, batch: RecordBatch) {
        while self.queued_rows.load(Ordering::Acquire) > MAX_QUEUED_ROWS {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.queued_rows
            .fetch_add(batch.num_rows(), Ordering::AcqRel);
        // The receiver lives until `finish`, which consumes self: send cannot fail before.
        let _ = self.tx.send((partition, batch));
    }

    /// Waits until everything submitted is sealed.
    pub fn finish(self) {
        drop(self.tx);
        let _ = self.thread.join();
    }
}

/// Seals the queue from the front until done or a seal fails; returns the sealed raw-stream
/// batches.
fn seal_queue(
    store: &Store,
    run_id: u32,
    seq: &mut u64,
    queue: &mut VecDeque<(Partition, RecordBatch)>,
    stats: &Stats,
    queued_rows: &AtomicUsize,
) -> Vec<RecordBatch> {
    let mut spent = Vec::new();
    while let Some((partition, batch)) = queue.front() {
        match store.seal(partition, batch, run_id, *seq) {
            Ok(sealed) => {
                *seq += 1;
                queued_rows.fetch_sub(batch.num_rows(), Ordering::AcqRel);
                let rows = batch.num_rows() as u64;
                stats.rows_sealed.fetch_add(rows, Ordering::Relaxed);
                stats.segments_sealed.fetch_add(1, Ordering::Relaxed);
                stats
                    .bytes_sealed
                    .fetch_add(sealed.entry.body.bytes, Ordering::Relaxed);
                *stats.last_segment.lock().unwrap() = Some(sealed.path);
                *stats.last_error.lock().unwrap() = None;
                if let Some((partition, batch)) = queue.pop_front()
                    && partition.table == Table::Syscall
                {
                    spent.push(batch);
                }
            }
            Err(e) => {
                // The sequence number is still bumped: a failed attempt may have left a staging
                // file of that name behind, and names are never reused.
                *seq += 1;
                log::warn!("sealing a {} segment failed: {e}", partition.table);
                *stats.last_error.lock().unwrap() = Some(e.to_string());
                break;
            }
        }
    }
    spent
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
