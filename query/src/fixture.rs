//! Rule fixtures: each rule's positive and negative cases, as rows written out in JSON, sealed
//! into a throw-away store and hunted with the same code as a real hunt (`quarry hunt --test`).
//!
//! A fixture sits next to its rule (`<name>.test.json` beside `<name>.sql`):
//!
//! ```json
//! {"cases": [
//!   {"name": "chmod u+s", "findings": 1, "rows": [
//!     {"table": "file", "ms": 0, "pid": 10, "comm": "chmod", "event": "chmod",
//!      "syscall": "fchmodat", "path": "/tmp/x", "mode": 2541, "ret": 0}]},
//!   {"name": "chmod 755", "findings": 0, "rows": [...]}]}
//! ```
//!
//! Rows belong to one container (`FIXTURE_CONTAINER`, init pid `init_pid`, default 1) unless
//! they say `"host_side": true`. Times are milliseconds after a fixed instant. Only the names
//! the recorder writes are accepted for events, so a fixture cannot test a row that cannot
//! exist. This module must not touch any store but the one it creates.

use chrono::{DateTime, Duration, TimeZone, Utc};
use quarry_store::schema::{
    BaselineRow, ContainerRow, FileRow, Ids, NetRow, ProcessEvent, ProcessFacts, ProcessRow,
    RowIdentity, baseline_batch, container_batch, file_batch, net_batch, path_resolution,
    process_batch_with_facts,
};
use quarry_store::{Partition, Store, Table};
use serde::Deserialize;

use crate::hunt::{self, Rule, Scope};
use crate::{Catalog, QueryError, Result};

/// The container id of fixture rows.
pub const FIXTURE_CONTAINER: &str =
    "f1c7000000000000000000000000000000000000000000000000000000000001";
const HOST: &str = "fixture-host";
const CGROUP: u64 = 11;

/// A rule's fixture file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixture {
    #[serde(default = "one")]
    pub init_pid: i32,
    pub cases: Vec<Case>,
}

fn one() -> i32 {
    1
}

/// One case: rows, and how many findings the rule must raise over them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    pub findings: usize,
    pub rows: Vec<Row>,
}

/// One row of a case; which fields apply depends on `table`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Row {
    pub table: String,
    pub ms: i64,
    pub pid: i32,
    pub comm: String,
    pub host_side: bool,
    pub event: String,
    pub ret: Option<i64>,
    // process
    pub ppid: Option<i32>,
    pub start_ns: Option<u64>,
    pub filename: Option<String>,
    pub argv: Vec<String>,
    pub uid: Option<u32>,
    pub euid: Option<u32>,
    pub target_pid: Option<i32>,
    pub flags: Option<u64>,
    pub detail: Option<String>,
    pub cwd: Option<String>,
    pub exe_path: Option<String>,
    pub mnt_ns: Option<u32>,
    pub host_image: Option<bool>,
    // file
    pub syscall: Option<String>,
    pub path: Option<String>,
    pub path2: Option<String>,
    pub mode: Option<u32>,
    pub fd: Option<i32>,
    // file and exec: the path the kernel resolved, and how (default: kernel when a
    // kernel_path is given, else lexical).
    pub kernel_path: Option<String>,
    // exec: the executed file's SHA-256 (hex), as the recorder's exec hashing writes it.
    pub exe_sha256: Option<String>,
    // baseline (`quarry baseline` rows of the fixture container): `path`, `kind` (default
    // file) and `sha256`.
    pub kind: Option<String>,
    pub sha256: Option<String>,
    pub path_resolution: Option<String>,
    // net
    pub family: Option<String>,
    pub protocol: Option<String>,
    pub remote_addr: Option<String>,
    pub remote_port: Option<u16>,
    pub unix_path: Option<String>,
}

/// The outcome of one case.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaseResult {
    pub rule: String,
    pub case: String,
    pub expected: usize,
    pub got: usize,
    pub evidence: Vec<String>,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.expected == self.got
    }
}

/// Names the recorder writes, so fixture rows can borrow them for `'static`.
const FILE_EVENTS: &[&str] = &[
    "open", "create", "unlink", "rename", "chmod", "chown", "mkdir", "rmdir", "link", "symlink",
    "truncate",
];
const NET_EVENTS: &[&str] = &["connect", "accept", "bind", "listen", "socket", "tcp_state"];
const SIGNALS: &[&str] = &[
    "setuid",
    "setgid",
    "setreuid",
    "setregid",
    "setresuid",
    "setresgid",
    "capset",
    "ptrace",
    "mount",
    "umount",
    "unshare",
    "setns",
    "init_module",
    "finit_module",
    "bpf",
    "memfd_create",
    "mmap_exec",
    "mprotect_exec",
];
const PROTOCOLS: &[&str] = &[
    "tcp",
    "udp",
    "sctp",
    "mptcp",
    "stream",
    "dgram",
    "raw",
    "seqpacket",
    "packet",
    "other",
];
const SYSCALLS: &[&str] = &[
    "open",
    "openat",
    "openat2",
    "creat",
    "unlink",
    "unlinkat",
    "rename",
    "renameat",
    "renameat2",
    "chmod",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "chown",
    "fchown",
    "fchownat",
    "lchown",
    "mkdir",
    "mkdirat",
    "rmdir",
    "link",
    "linkat",
    "symlink",
    "symlinkat",
    "truncate",
    "ftruncate",
    "connect",
    "accept",
    "accept4",
    "bind",
    "listen",
    "socket",
];

fn known(list: &'static [&'static str], what: &str, value: &str) -> Result<&'static str> {
    list.iter()
        .copied()
        .find(|v| *v == value)
        .ok_or_else(|| QueryError::Fixture(format!("unknown {what} {value:?}")))
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 10, 0, 0)
        .single()
        .expect("a valid fixed date")
}

fn identity(r: &Row) -> RowIdentity {
    RowIdentity {
        time: t0() + Duration::milliseconds(r.ms),
        ktime_ns: 1_000_000_000 + r.ms as u64 * 1_000_000 + r.pid as u64,
        pid: r.pid,
        tid: r.pid,
        comm: r.comm.clone(),
        cgroup_id: if r.host_side { 1 } else { CGROUP },
        container_id: (!r.host_side).then(|| FIXTURE_CONTAINER.to_string()),
    }
}

fn process_row(r: &Row) -> Result<(ProcessRow, ProcessFacts)> {
    let event = match r.event.as_str() {
        "fork" => ProcessEvent::Fork,
        "exec" => ProcessEvent::Exec {
            filename: r.filename.clone().unwrap_or_default(),
            argv: r.argv.clone(),
            argv_truncated: false,
            uid: r.uid.unwrap_or(0),
            gid: 0,
            euid: r.euid.or(r.uid).unwrap_or(0),
            egid: 0,
        },
        "exit" => ProcessEvent::Exit {
            exit_code: Some(0),
            signal: None,
            core_dumped: false,
        },
        other => ProcessEvent::Signal {
            name: known(SIGNALS, "process event", other)?,
            ids: Ids {
                uid: r.uid,
                euid: r.euid,
                ..Default::default()
            },
            target_pid: r.target_pid,
            flags: r.flags,
            detail: r.detail.clone(),
            ret: r.ret,
        },
    };
    let row = ProcessRow {
        id: identity(r),
        ppid: r.ppid,
        start_ns: Some(r.start_ns.unwrap_or(r.pid as u64 * 1000)),
        parent_start_ns: r.ppid.map(|p| p as u64 * 1000),
        event,
    };
    let facts = ProcessFacts {
        cwd: r.cwd.clone(),
        exe_path: r.exe_path.clone(),
        mnt_ns: r.mnt_ns,
        image_mnt_ns: r.mnt_ns,
        host_image: r.host_image,
        kernel_path: r.kernel_path.clone(),
        path_resolution: (r.event == "exec").then(|| resolution_of(r)).transpose()?,
        exe_sha256: r.exe_sha256.clone(),
        exe_hash: r.exe_sha256.as_ref().map(|_| "hashed"),
    };
    Ok((row, facts))
}

fn file_row(r: &Row) -> Result<FileRow> {
    let event = known(FILE_EVENTS, "file event", &r.event)?;
    let syscall = known(
        SYSCALLS,
        "syscall",
        r.syscall.as_deref().unwrap_or(&r.event),
    )?;
    // Paths in fixtures are what the recorder would store: absolute and normalized (a
    // symlink's target as written).
    let absolute = |p: &Option<String>| p.clone().filter(|p| p.starts_with('/'));
    Ok(FileRow {
        id: identity(r),
        event,
        syscall,
        path: r.path.clone(),
        abs_path: if event == "symlink" {
            None
        } else {
            absolute(&r.path)
        },
        resolution: if event == "symlink" {
            "none"
        } else {
            "absolute"
        },
        path2: r.path2.clone(),
        abs_path2: absolute(&r.path2),
        flags: r.flags,
        mode: r.mode,
        owner_uid: None,
        owner_gid: None,
        fd: r.fd,
        ret: Some(r.ret.unwrap_or(0)),
        kernel_path: r.kernel_path.clone(),
        path_resolution: Some(resolution_of(r)?),
    })
}

/// A row's `path_resolution`: as given (one the recorder writes), else what its kernel_path
/// implies.
fn resolution_of(r: &Row) -> Result<&'static str> {
    match (&r.path_resolution, &r.kernel_path) {
        (Some(given), _) => known(&path_resolution::ALL, "path_resolution", given),
        (None, Some(_)) => Ok(path_resolution::KERNEL),
        (None, None) => Ok(path_resolution::LEXICAL),
    }
}

fn net_row(r: &Row) -> Result<NetRow> {
    Ok(NetRow {
        id: Some(identity(r)),
        event: known(NET_EVENTS, "net event", &r.event)?,
        syscall: Some(known(
            SYSCALLS,
            "syscall",
            r.syscall.as_deref().unwrap_or(&r.event),
        )?),
        fd: r.fd,
        family: r.family.clone(),
        protocol: r
            .protocol
            .as_deref()
            .map(|p| known(PROTOCOLS, "protocol", p))
            .transpose()?,
        remote_addr: r.remote_addr.clone(),
        remote_port: r.remote_port,
        unix_path: r.unix_path.clone(),
        ret: Some(r.ret.unwrap_or(0)),
        ..Default::default()
    })
}

/// Seals one case's rows (and the fixture container) into a new store at `root`.
pub(crate) fn build(root: &std::path::Path, fixture: &Fixture, case: &Case) -> Result<()> {
    let store = Store::create(root)?;
    let (mut procs, mut facts, mut files, mut nets) = (Vec::new(), Vec::new(), vec![], vec![]);
    let mut baselines = Vec::new();
    for r in &case.rows {
        match r.table.as_str() {
            "baseline" => baselines.push(BaselineRow {
                // One baseline per case: every row of it has the time it was taken.
                time: t0(),
                baseline_id: format!("{FIXTURE_CONTAINER}@fixture"),
                container_id: FIXTURE_CONTAINER.into(),
                path: r.path.clone().unwrap_or_default(),
                kind: r.kind.clone().unwrap_or_else(|| "file".into()),
                size: None,
                mode: r.mode,
                uid: None,
                gid: None,
                mtime: None,
                sha256: r.sha256.clone(),
                symlink_target: None,
                note: None,
            }),
            "process" => {
                let (p, f) = process_row(r)?;
                procs.push(p);
                facts.push(f);
            }
            "file" => files.push(file_row(r)?),
            "net" => nets.push(net_row(r)?),
            other => return Err(QueryError::Fixture(format!("unknown table {other:?}"))),
        }
    }
    let container = ContainerRow {
        time: t0(),
        container_id: FIXTURE_CONTAINER.into(),
        name: Some("fixture".into()),
        runtime: "runc".into(),
        image: None,
        cgroup_id: Some(CGROUP),
        cgroup_path: "/fixture".into(),
        init_pid: Some(fixture.init_pid),
        netns_inode: None,
        host_network: false,
        created: None,
        pod_uid: None,
        pod_name: None,
        pod_namespace: None,
        first_seen: t0(),
        last_seen: t0() + Duration::hours(1),
        events: case.rows.len() as u64,
    };
    let batches = [
        (
            Table::Process,
            process_batch_with_facts(HOST, &procs, &facts),
        ),
        (Table::File, file_batch(HOST, &files)),
        (Table::Net, net_batch(HOST, &nets)),
        (Table::Container, container_batch(HOST, &[container])),
        (Table::Baseline, baseline_batch(HOST, &baselines)),
    ];
    for (seq, (table, batch)) in batches.into_iter().enumerate() {
        if batch.num_rows() == 0 {
            continue;
        }
        store.seal(
            &Partition::for_time(table, t0(), HOST),
            &batch,
            1,
            seq as u64,
        )?;
    }
    Ok(())
}

/// What `quarry hunt --test` found: every case of every rule with a fixture, and the origins
/// of the rules without one.
#[derive(Debug, Default)]
pub struct Tested {
    pub results: Vec<CaseResult>,
    pub untested: Vec<String>,
}

impl Tested {
    /// Cases whose finding count was not the expected one.
    pub fn failed(&self) -> usize {
        self.results.iter().filter(|r| !r.passed()).count()
    }
}

/// Runs the fixture of every rule of `rules` that has one, each case over a throw-away store.
pub async fn run_all(rules: &[Rule]) -> Result<Tested> {
    let mut tested = Tested::default();
    for rule in rules {
        match &rule.fixture {
            Some(text) => {
                tested
                    .results
                    .extend(run(rule, text).await.map_err(|e| QueryError::FixtureOf {
                        rule: rule.id.clone(),
                        source: Box::new(e),
                    })?)
            }
            None => tested.untested.push(rule.origin.clone()),
        }
    }
    Ok(tested)
}

/// Runs every case of `rule`'s fixture (`text`, the fixture file's JSON).
pub async fn run(rule: &Rule, text: &str) -> Result<Vec<CaseResult>> {
    let fixture: Fixture = serde_json::from_str(text)
        .map_err(|e| QueryError::Fixture(format!("{}: {e}", rule.origin)))?;
    let mut results = Vec::new();
    for case in &fixture.cases {
        let dir = tempfile::tempdir().map_err(|e| QueryError::io(std::env::temp_dir(), e))?;
        build(dir.path(), &fixture, case)
            .map_err(|e| QueryError::Fixture(format!("{} case {:?}: {e}", rule.id, case.name)))?;
        let mut catalog = Catalog::open(dir.path()).await?;
        let findings =
            hunt::run(&mut catalog, std::slice::from_ref(rule), &Scope::default()).await?;
        results.push(CaseResult {
            rule: rule.id.clone(),
            case: case.name.clone(),
            expected: case.findings,
            got: findings.len(),
            evidence: findings.into_iter().map(|f| f.evidence).collect(),
        });
    }
    Ok(results)
}
