//! Measures sealing of the raw syscall stream: the recorder's heaviest steady work.
//!
//! `cargo run --release -p quarry-store --example seal_bench -- [ROWS] [SEGMENTS] [getpid]`
//! builds ROWS-row batches (default 2,000,000: the recorder's largest segment) shaped like a
//! busy node's stream (two CPUs taking turns in 128-slot batches, 60 threads of 20 processes,
//! 12 of them in 3 containers, a skewed mix of 30 syscalls with realistic results) or, with
//! `getpid`, like the recorder benchmark's getpid loop; seals SEGMENTS of them (default 3) into
//! a temporary store and prints the time per segment, rows per second and bytes per row on
//! disk.

// A benchmark stops at its first failure: unwrap says where.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, StringArray};
use arrow::record_batch::RecordBatch;
use chrono::Utc;
use quarry_store::schema::{SyscallBuilder, SyscallRow};
use quarry_store::{Partition, Store, Table};

/// (nr, name, weight): what a busy node's threads call most.
const MIX: &[(i32, &str, u32)] = &[
    (0, "read", 120),
    (1, "write", 90),
    (232, "epoll_wait", 80),
    (202, "futex", 110),
    (45, "recvfrom", 40),
    (44, "sendto", 35),
    (3, "close", 25),
    (257, "openat", 25),
    (5, "fstat", 20),
    (228, "clock_gettime", 30),
    (9, "mmap", 8),
    (11, "munmap", 8),
    (10, "mprotect", 4),
    (7, "poll", 15),
    (23, "select", 5),
    (47, "recvmsg", 15),
    (46, "sendmsg", 12),
    (8, "lseek", 10),
    (17, "pread64", 12),
    (18, "pwrite64", 6),
    (39, "getpid", 6),
    (186, "gettid", 4),
    (13, "rt_sigaction", 3),
    (14, "rt_sigprocmask", 8),
    (72, "fcntl", 6),
    (16, "ioctl", 8),
    (262, "newfstatat", 10),
    (4, "stat", 4),
    (318, "getrandom", 2),
    (230, "clock_nanosleep", 5),
];

/// A small deterministic generator (xorshift), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn stream_batch(rows: usize, rng: &mut Rng, ktime: &mut u64) -> RecordBatch {
    let total_weight: u32 = MIX.iter().map(|m| m.2).sum();
    let containers = ["3f1c9a2b", "8e07d4c1", "c55a19f0"].map(|c| c.repeat(8));
    let comms = [
        "nginx",
        "postgres",
        "java",
        "python3",
        "node",
        "redis-server",
        "containerd",
        "sshd",
        "systemd",
        "kubelet",
    ];
    let mut b = SyscallBuilder::default();
    let mut container_of_row: Vec<Option<&str>> = Vec::with_capacity(rows);
    let mut n = 0;
    while n < rows {
        // One CPU's batch: runs of calls from one thread, then another.
        let mut in_batch = 0;
        while in_batch < 128 && n < rows {
            let process = rng.below(20) as i32;
            let thread = process * 3 + rng.below(3) as i32;
            let pid = 1000 + process * 37;
            let tid = pid + thread % 3;
            let comm = b.intern_comm(comms[process as usize % comms.len()]);
            let container = (process < 12).then(|| containers[process as usize % 3].as_str());
            let cgroup_id = 5000 + process as u64 % 4;
            let run = 1 + rng.below(40) as usize;
            for _ in 0..run.min(128 - in_batch).min(rows - n) {
                let mut w = rng.below(total_weight as u64) as u32;
                let &(nr, _, _) = MIX
                    .iter()
                    .find(|m| {
                        if w < m.2 {
                            true
                        } else {
                            w -= m.2;
                            false
                        }
                    })
                    .unwrap_or(&MIX[0]);
                let ret = match nr {
                    0 | 1 | 17 | 18 | 45 | 44 | 47 | 46 => {
                        if rng.below(10) == 0 {
                            -11
                        } else {
                            rng.below(4096) as i64
                        }
                    }
                    202 => [0, 0, 0, 1, -11][rng.below(5) as usize],
                    232 | 7 | 23 => rng.below(4) as i64,
                    257 => 3 + rng.below(60) as i64,
                    9 => 0x7f00_0000_0000 + (rng.below(1 << 20) << 12) as i64,
                    39 | 186 => tid as i64,
                    _ => 0,
                };
                *ktime += 150 + rng.below(200);
                b.append(SyscallRow {
                    time_micros: 1_764_000_000_000_000 + (*ktime / 1000) as i64,
                    ktime_ns: *ktime,
                    pid,
                    tid,
                    comm,
                    cgroup_id,
                    nr,
                    ret,
                    ktime_slack_ns: None,
                    source: 0,
                });
                container_of_row.push(container);
                in_batch += 1;
                n += 1;
            }
        }
    }
    let name_of = |nr: i32| MIX.iter().find(|m| m.0 == nr).map(|m| m.1);
    let batch = b.finish("node-17.example", name_of);
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    let at = batch.schema().index_of("container_id").unwrap();
    columns[at] = Arc::new(StringArray::from(container_of_row));
    RecordBatch::try_new(batch.schema(), columns).unwrap()
}

/// The recorder benchmark's stream: one host thread calling getpid, its rows arriving in
/// 128-call batches that switch CPU now and then (interleaved with the other CPU's batches).
fn getpid_batch(rows: usize, rng: &mut Rng, ktime: &mut u64) -> RecordBatch {
    let mut b = SyscallBuilder::default();
    let comm = b.intern_comm("quarry-bench");
    let mut cpu_clock = [*ktime, *ktime];
    let mut cpu = 0;
    let mut n = 0;
    while n < rows {
        if rng.below(8) == 0 {
            cpu ^= 1;
            cpu_clock[cpu] = cpu_clock[cpu].max(cpu_clock[cpu ^ 1] - 1_000_000);
        }
        // As the kernel side writes them: the clock read every RAW_CLOCK_EVERY (16) calls,
        // the calls between at the last reading plus one ns each, with the span as slack.
        let (mut reading, mut slack) = (0, None);
        for i in 0..128.min(rows - n) {
            cpu_clock[cpu] += 230 + rng.below(20);
            let k = if i % 16 == 0 {
                reading = cpu_clock[cpu];
                slack = None;
                reading
            } else {
                slack = slack.or(Some(16 * 240 + rng.below(320)));
                reading + (i % 16) as u64
            };
            b.append(SyscallRow {
                time_micros: 1_764_000_000_000_000 + (k / 1000) as i64,
                ktime_ns: k,
                pid: 4242,
                tid: 4242,
                comm,
                cgroup_id: 1,
                nr: 39,
                ret: 4242,
                ktime_slack_ns: slack,
                source: cpu as u32,
            });
            n += 1;
        }
    }
    *ktime = cpu_clock[0].max(cpu_clock[1]);
    b.finish("node-17.example", |_| Some("getpid"))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rows: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let segments: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let getpid = args.next().as_deref() == Some("getpid");
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(dir.path()).unwrap();
    let partition = Partition::for_time(Table::Syscall, Utc::now(), "node-17.example");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut ktime = 1_000_000_000u64;
    let (mut secs, mut bytes) = (0.0, 0u64);
    for seq in 0..segments {
        let batch = if getpid {
            getpid_batch(rows, &mut rng, &mut ktime)
        } else {
            stream_batch(rows, &mut rng, &mut ktime)
        };
        let t = Instant::now();
        let sealed = store.seal(&partition, &batch, 1, seq).unwrap();
        let took = t.elapsed().as_secs_f64();
        secs += took;
        bytes += sealed.entry.body.bytes;
        println!(
            "segment {seq}: {rows} rows sealed in {:.0} ms, {:.2} B/row",
            took * 1e3,
            sealed.entry.body.bytes as f64 / rows as f64
        );
    }
    let total = rows as f64 * segments as f64;
    println!(
        "syscall stream: {:.2} M rows/s sealed on one core, {:.2} B/row on disk",
        total / secs / 1e6,
        bytes as f64 / total
    );
}
