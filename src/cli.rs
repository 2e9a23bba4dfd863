//! Argument definitions for every subcommand.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub mod detect;
pub mod fleet;
pub mod parse;

pub use parse::{parse_bind, parse_duration, parse_ring_size, parse_size, parse_time};

/// The store used when nothing else names one.
pub const DEFAULT_STORE: &str = "/var/lib/quarry/store";

/// `--store`, declared once for every command that reads or writes a store.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Store directory [default: $QUARRY_STORE, else the config file's `store`, else the
    /// running recorder's (/run/quarry/recorder.json), else /var/lib/quarry/store]
    #[arg(long = "store", value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

impl StoreArgs {
    /// The store this command uses: --store, else $QUARRY_STORE, else the configuration
    /// file's, else the store a running recorder advertises, else the default. So an action
    /// taken without --store lands in the store the recorder writes.
    pub fn resolve(&self) -> PathBuf {
        self.configured().unwrap_or_else(|| {
            let path = quarry_recorder::advert::path();
            match quarry_recorder::advert::read(&path) {
                quarry_recorder::advert::Lookup::Live(a) => {
                    log::debug!(
                        "using the store {} of the recorder (pid {})",
                        a.store.display(),
                        a.pid
                    );
                    a.store
                }
                quarry_recorder::advert::Lookup::Ignored(why) => {
                    eprintln!("note: {why}; using {DEFAULT_STORE}");
                    PathBuf::from(DEFAULT_STORE)
                }
                quarry_recorder::advert::Lookup::None => PathBuf::from(DEFAULT_STORE),
            }
        })
    }

    /// The store of [`StoreArgs::resolve`], which must exist (for commands that read it).
    pub fn existing(&self) -> anyhow::Result<quarry_store::Store> {
        let store = quarry_store::Store::at(self.resolve());
        anyhow::ensure!(
            store.root().is_dir(),
            "no store at {}; pass the directory `quarry record --store` writes to",
            store.root().display()
        );
        Ok(store)
    }

    /// The store `quarry record` writes: as [`StoreArgs::resolve`], but never another
    /// recorder's.
    pub fn resolve_for_recorder(&self) -> PathBuf {
        self.configured()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STORE))
    }

    /// --store, $QUARRY_STORE or the configuration file's store.
    fn configured(&self) -> Option<PathBuf> {
        self.dir
            .clone()
            .or_else(|| {
                std::env::var_os("QUARRY_STORE")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .or_else(|| crate::config::current().store.clone())
    }
}

/// `--format`, for the commands whose output is a table for people or JSON for machines.
#[derive(Debug, Clone, Copy, Args)]
pub struct OutputArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Parser)]
#[command(
    name = "quarry",
    version,
    about = "Flight recorder and incident-response kit for Linux containers",
    after_help = "\
Examples:
  sudo quarry record                          record into the default store until Ctrl-C
  sudo quarry record --store /tmp/s --duration 30s
  sudo quarry record --containers web,3f2a    only these containers (name or id prefix)
  quarry ps --all                             running containers and those in the store
  sudo quarry isolate web --allow 198.18.0.5:514 --reason 'IR-42: beaconing'
  sudo quarry release web
  sudo quarry snapshot web --case /srv/ir-42/web   live CRIU checkpoint kept as evidence
  sudo quarry restore /srv/ir-42/web               bring it back, isolated, for analysis
  quarry verify --store /tmp/s                re-hash every segment, check the manifest chain
  quarry verify --store /tmp/s --format json
  quarry sql 'SELECT comm, count(*) FROM process GROUP BY comm ORDER BY 2 DESC LIMIT 5'
  quarry timeline web --since 2h --format html -o web.html
  quarry hunt --since 1d --container web
  quarry retain --retain-age 7d --retain-size 50G --dry-run
  sudo quarry hold web --reason 'IR-42: legal hold'
  quarry export web --since 2h --case ./case-42 -o web.qbundle --sign ir.key
  quarry verify web.qbundle --key ir.key.pub  check a bundle: hashes, file list, signature

Exit codes: 0 success, 1 error (the message says what and how to fix it), 2 usage error,
3 verification found missing, altered or unlisted evidence, 4 hunt raised findings, 5 the
action was carried out but could not be recorded in the store (the row is printed on stderr)."
)]
pub struct Cli {
    /// Configuration file [default: /etc/quarry/quarry.toml, if it exists]; flags override it
    #[arg(long, global = true, env = "QUARRY_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of its largest variant (`record`'s flags) costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Record processes on this machine into a store (needs root)
    Record(RecordArgs),
    /// Check a store (every segment re-hashed, the manifest chain intact, nothing unlisted) or a
    /// bundle from `export` (every hash, nothing added or removed, the signature)
    Verify(VerifyArgs),
    /// List running containers (with --all, also those seen in the store)
    Ps(PsArgs),
    /// Show a running recorder's rates, drops, memory and last sealed segment
    Status(StatusArgs),
    /// Quarantine a container's network (it keeps running); --status lists quarantines
    Isolate(IsolateArgs),
    /// Lift a container's quarantine
    Release(ReleaseArgs),
    /// Read-only SQL over the store: one query, or an interactive shell without one
    Sql(SqlArgs),
    /// A container's story in order: process tree, files, connections, signals, actions, gaps
    Timeline(TimelineArgs),
    /// Run the detection rules (SQL with id, severity and ATT&CK technique) over the store
    Hunt(HuntArgs),
    /// Checkpoint a running container with CRIU into a hashed, read-only case directory
    Snapshot(SnapshotArgs),
    /// Bring a snapshot's processes back in an isolated environment, for analysis
    Restore(RestoreArgs),
    /// Apply retention now: age and size caps, oldest first, holds respected (--dry-run shows)
    Retain(RetainArgs),
    /// Place, list or release legal holds that retention never deletes
    Hold(HoldArgs),
    /// Export a container's evidence into one verifiable bundle (tar + zstd, Parquet inside)
    Export(ExportArgs),
    /// Create an ed25519 key pair for signing bundles (KEY and KEY.pub)
    Keygen(KeygenArgs),
    /// Print a shell completion script, or write the man pages (--man DIR)
    Completions(CompletionsArgs),
    /// How much a compromised container could do: capabilities, host namespaces, sensitive
    /// mounts, seccomp, no_new_privs, LSM, limits, devices (findings with the fix)
    Posture(PostureArgs),
    /// Hash a container's root filesystem into the store: what `drift` compares a plain rootfs
    /// (a runc bundle) with
    Baseline(BaselineArgs),
    /// Files added, modified or deleted in a running container relative to its image (overlay
    /// layers) or its baseline, with hashes and whether they were executed
    Drift(DriftArgs),
    /// Ship a store's sealed segments and manifest to an S3-compatible bucket, once
    /// (create-only, hash-checked; a re-run ships only what is new)
    Upload(UploadArgs),
    /// Run an Apache Ballista scheduler or executor: a cluster for `sql --engine ballista`
    Fleet(fleet::FleetArgs),
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  quarry upload --to s3://fleet/prod --host node-7
  AWS_ENDPOINT_URL=http://127.0.0.1:8333 AWS_ALLOW_HTTP=true quarry upload --to s3://fleet

Objects go to <prefix>/<table>/dt=/hour=/host=<host>/<segment>.parquet and the manifest entries
the bucket lacks, as one chunk, to <prefix>/_manifest/host=<host>/<first>-<last>.jsonl. Endpoint,
region and credentials come from the usual AWS environment (AWS_ENDPOINT_URL, AWS_REGION,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ALLOW_HTTP). Nothing in the bucket is ever replaced: an object there with another hash is
named as a conflict. Exit 0: everything is in the bucket; 1: something was not uploaded.")]
pub struct UploadArgs {
    /// The bucket and prefix, s3://BUCKET[/PREFIX]
    #[arg(long, value_name = "s3://BUCKET/PREFIX")]
    pub to: String,
    /// The host name the store's objects are filed under in the bucket (unique per store)
    /// [default: this machine's host name]
    #[arg(long)]
    pub host: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people
    Table,
    /// One JSON document, for machines
    Json,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  sudo quarry record
  sudo quarry record --store /srv/quarry --duration 10m --seal-interval 10s
  sudo quarry record --containers web,db
  sudo quarry record --syscalls all           also keep every syscall (the raw stream)
  sudo quarry record --syscalls all --exact-syscall-times   ... each with its own clock reading
  sudo quarry record --record-module-loads    module loads also where the kernel has no tracepoint
  sudo quarry record --upload s3://fleet/prod --upload-host node-7   ship segments to a bucket

With --upload the store is the spool: every sealed segment and the host's new manifest entries
go to the bucket (create-only, hash-checked, as `quarry upload` does) from a thread of their own. An
unreachable bucket never stops the recording: the upload retries with a backoff of 1s doubling
to 60s, `quarry status` shows the backlog, and retention keeps segments not uploaded yet
(unless --retain-unuploaded). At exit the backlog gets up to --upload-drain to reach the
bucket (a second Ctrl-C ends that at once); the summary says what was uploaded and what was
left.")]
pub struct RecordArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Stop after this long (e.g. 30s, 5m, 2h, 1d); default: until SIGINT/SIGTERM
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// How often buffered rows are sealed into a segment [default: the config file's, else 5s]
    #[arg(long, value_parser = parse_duration)]
    pub seal_interval: Option<Duration>,
    /// Record only these containers (ids, unique id prefixes or names, comma-separated),
    /// including processes in their child cgroups; filtered in the kernel
    #[arg(long, value_delimiter = ',')]
    pub containers: Vec<String>,
    /// Record only tasks in these cgroup v2 directories and below (paths relative to the
    /// cgroup2 mount, e.g. /system.slice/nginx.service, or absolute directories under it)
    #[arg(long = "cgroup-path", value_delimiter = ',')]
    pub cgroup_paths: Vec<PathBuf>,
    /// Record the raw syscall stream (every syscall's number and result) into the `syscall`
    /// table; files, network and privilege signals are decoded either way
    #[arg(long, value_enum, default_value_t = SyscallsArg::Off)]
    pub syscalls: SyscallsArg,
    /// With `--syscalls all`: read the clock on every syscall. By default a thread's calls read
    /// it on its first call on a CPU and every 16th after, and the others are stored with the
    /// window they fall in (`ktime_slack_ns`): the clock is most of a recorded call's cost
    #[arg(long, requires = "syscalls")]
    pub exact_syscall_times: bool,
    /// Record init_module/finit_module attempts also on a kernel without tracepoints for them
    /// (one built without module support): a hook then runs on every syscall's entry and
    /// keeps only those two, which costs every syscall of the machine a little. Kernels with
    /// the tracepoints record them either way
    #[arg(long)]
    pub record_module_loads: bool,
    /// Size of the kernel ring buffer (a power of two of at least 4K, e.g. 16M): larger absorbs
    /// longer bursts before events are dropped (and counted in the `gap` table). Default 8M,
    /// 32M with `--syscalls all`
    #[arg(long, value_parser = parse_ring_size)]
    pub ring_size: Option<u32>,
    /// Hash executed files up to this size (e.g. 256M, the default) into exec rows'
    /// `exe_sha256`, off the recording path; 0 turns exec hashing off
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    pub exe_hash_max: Option<u64>,
    /// Do not judge containers' least-privilege posture (`posture` rows: capabilities,
    /// shared namespaces, host mounts, limits, when first seen and when changed)
    #[arg(long)]
    pub no_posture: bool,
    /// Do not take automatic baselines (`quarry baseline`) of the plain-rootfs containers the
    /// recorder sees for the first time
    #[arg(long)]
    pub no_baseline: bool,
    /// No live status line
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub out: OutputArgs,
    #[command(flatten)]
    pub retention: RetentionFlags,
    /// How often retention runs while recording (with --retain-age or --retain-size)
    /// [default: the config file's, else 5m]
    #[arg(long, value_parser = parse_duration)]
    pub retain_interval: Option<Duration>,
    #[command(flatten)]
    pub upload: RecordUploadArgs,
    #[command(flatten)]
    pub detect: detect::DetectArgs,
}

/// `quarry record --upload ...`: shipping the store to a bucket while recording.
#[derive(Debug, Clone, Args)]
pub struct RecordUploadArgs {
    /// Upload every sealed segment and this host's manifest entries to this bucket while
    /// recording (s3://BUCKET[/PREFIX]; endpoint and credentials from the AWS environment, as
    /// for `quarry upload`) [default: the config file's [upload] to]
    #[arg(long, value_name = "s3://BUCKET/PREFIX")]
    pub upload: Option<String>,
    /// Do not upload, even when the config file names a bucket
    #[arg(long, conflicts_with = "upload")]
    pub no_upload: bool,
    /// The host name the store goes under in the bucket (host=; unique per store)
    /// [default: the config file's, else this machine's host name]
    #[arg(long, value_name = "NAME")]
    pub upload_host: Option<String>,
    /// The least time between two uploads while the bucket answers (e.g. 10s, 1m)
    /// [default: the config file's, else 10s]
    #[arg(long, value_parser = parse_duration)]
    pub upload_interval: Option<Duration>,
    /// At exit, how long to keep trying to ship the backlog [default: the config file's, else
    /// 30s]
    #[arg(long, value_parser = parse_duration)]
    pub upload_drain: Option<Duration>,
    /// Let retention delete segments not uploaded yet (a node that must not fill its disk while
    /// the bucket is away); each is named in its manifest entry ("NOT uploaded to ...")
    #[arg(long)]
    pub retain_unuploaded: bool,
}

impl RecordUploadArgs {
    /// --upload-drain, else the config file's, else 30 s.
    pub fn drain(&self) -> Duration {
        self.upload_drain
            .or(crate::config::current().upload.drain)
            .unwrap_or(Duration::from_secs(30))
    }
}

impl RecordArgs {
    /// --seal-interval, else the config file's, else 5 s.
    pub fn seal_interval(&self) -> Duration {
        self.seal_interval
            .or(crate::config::current().record.seal_interval)
            .unwrap_or(Duration::from_secs(5))
    }

    /// --retain-interval, else the config file's, else 5 min.
    pub fn retain_interval(&self) -> Duration {
        self.retain_interval
            .or(crate::config::current().retention.interval)
            .unwrap_or(Duration::from_secs(300))
    }
}

/// Retention caps, shared by `record` (on a schedule) and `retain` (now).
#[derive(Debug, Clone, Args)]
pub struct RetentionFlags {
    /// Delete segments whose rows are all older than this (e.g. 7d, 36h)
    #[arg(long, value_parser = parse_duration)]
    pub retain_age: Option<Duration>,
    /// Keep the store's segments within this size, deleting the oldest first (e.g. 50G, 800M);
    /// held evidence and the hour being recorded are never deleted
    #[arg(long, value_parser = parse_size)]
    pub retain_size: Option<u64>,
    /// Merge small segments of closed hours into larger ones first (same rows, fewer files)
    #[arg(long)]
    pub compact: bool,
}

impl RetentionFlags {
    /// The flags, each one not given taken from the config file's `[retention]`.
    pub fn with_config(&self) -> RetentionFlags {
        let c = &crate::config::current().retention;
        RetentionFlags {
            retain_age: self.retain_age.or(c.max_age),
            retain_size: self.retain_size.or(c.max_size),
            compact: self.compact || c.compact,
        }
    }

    /// The policy the flags ask for; None when they ask for nothing.
    pub fn policy(&self) -> Option<quarry_store::RetentionPolicy> {
        quarry_store::RetentionPolicy::from_caps(self.retain_age, self.retain_size, self.compact)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SyscallsArg {
    Off,
    All,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  quarry verify --store /var/lib/quarry/store
  quarry verify --store ./case-17/store --format json
  quarry verify web.qbundle                     a bundle: every hash, nothing added or removed
  quarry verify web.qbundle --key ir.key.pub    ... and signed by this key
  quarry verify web.qbundle --extract-to ./web  keep the checked files
  quarry verify --store s3://fleet/prod         a bucket: every host's chain and object")]
pub struct VerifyArgs {
    /// A bundle file from `quarry export` to verify (a directory is verified as a store)
    pub path: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Public key (from `quarry keygen`) the bundle must be signed with
    #[arg(long, requires = "path")]
    pub key: Option<PathBuf>,
    /// Keep the extracted bundle in this new or empty directory
    #[arg(long, requires = "path")]
    pub extract_to: Option<PathBuf>,
    /// Most bytes a bundle may extract to (default: 200x its size, at least 1G)
    #[arg(long, value_parser = parse_size, requires = "path")]
    pub max_size: Option<u64>,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  quarry ps
  quarry ps --all --store /var/lib/quarry/store
  quarry ps --format json")]
pub struct PsArgs {
    /// Also list containers seen in the store that are no longer running
    #[arg(long, short)]
    pub all: bool,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  quarry posture                      # every running container
  quarry posture web --format json
  quarry posture web --fail-on medium # exit 4 when a finding is medium or worse

Exit status: 0 no finding at or above --fail-on, 4 there are, 1 a container could not be read.")]
pub struct PostureArgs {
    /// Container id, id prefix or name (default: every running container)
    pub container: Option<String>,
    #[command(flatten)]
    pub out: OutputArgs,
    /// Exit with status 4 when a finding is at least this severe (info, low, medium, high, critical)
    #[arg(long, default_value = "high", value_parser = parse_severity)]
    pub fail_on: quarry_posture::Severity,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  quarry baseline web
  quarry baseline web --store /srv/quarry --format json

A baseline is one row per entry of the rootfs (path, type, size, mode, owner, mtime, SHA-256) in
the store's `baseline` table, sealed and hashed like every segment. Symlinks are recorded, never
followed; mount points inside the container are left out. A rootfs over 500 000 entries or 4 GiB
is not hashed: a note row says so.")]
pub struct BaselineArgs {
    /// Container id, id prefix or name
    pub container: String,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  quarry drift web
  quarry drift web --format json | jq '.entries[] | select(.executed)'

Overlay roots (Podman, Docker, containerd) are compared with their image layers; a plain rootfs
with its latest baseline (`quarry baseline`). EXEC: x = executable, +x = made executable, ran =
the recorder saw it executed in this container.

Exit status: 0 no drift, 4 drift found, 1 error.")]
pub struct DriftArgs {
    /// Container id, id prefix or name
    pub container: String,
    /// Store with the baseline and the recorded execs
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub out: OutputArgs,
}

fn parse_severity(text: &str) -> Result<quarry_posture::Severity, String> {
    quarry_posture::Severity::parse(text).ok_or_else(|| {
        format!("unknown severity {text:?}; use info, low, medium, high or critical")
    })
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  quarry status
  quarry status --store /srv/quarry --format json")]
pub struct StatusArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  sudo quarry isolate web
  sudo quarry isolate 3f2a --allow 198.18.0.5 --allow 198.18.1.0/24:514 --reason \"IR-42\"
  sudo quarry isolate web --dry-run --format json   what would be attached, and where
  sudo quarry isolate --status
  sudo quarry isolate --prepare                load the programs now, at node start")]
pub struct IsolateArgs {
    /// Container id, unique id prefix or name
    #[arg(required_unless_present_any = ["status", "prepare"])]
    pub container: Option<String>,
    /// Let traffic to and from this collector through: ADDR, CIDR, ADDR:PORT, [IPv6]:PORT
    #[arg(long)]
    pub allow: Vec<String>,
    /// Why, for the record
    #[arg(long)]
    pub reason: Option<String>,
    /// Isolate even a container on the host's network namespace (cuts only its processes)
    #[arg(long)]
    pub force: bool,
    /// List isolated containers, since when, why, allow-list and packets dropped
    #[arg(long, conflicts_with_all = ["allow", "reason", "force", "prepare"])]
    pub status: bool,
    /// Load the quarantine programs ahead of need (e.g. at boot) so the first isolate is as
    /// fast as the rest
    #[arg(long, conflicts_with_all = ["allow", "reason", "force"])]
    pub prepare: bool,
    /// Show what would be attached and where (cgroup, namespace, interfaces, nft rules),
    /// without doing any of it
    #[arg(long, conflicts_with_all = ["status", "prepare"])]
    pub dry_run: bool,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  sudo quarry release web")]
pub struct ReleaseArgs {
    /// Container id, unique id prefix or name (also of a container that has exited)
    pub container: String,
    /// Why, for the record
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub out: OutputArgs,
}

/// Output formats of query results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QueryFormat {
    /// Aligned table, for people
    Table,
    /// CSV with a header row
    Csv,
    /// One JSON array of objects
    Json,
    /// Parquet (needs -o FILE), for other engines
    Parquet,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Tables: process, file, net, syscall, gap, action, container (partitioned by dt and hour).
Views: events (everything in one time-ordered shape), processes (one row per process, with
lineage across PID reuse), execs, connections, file_writes. `\\d` in the shell lists them.

Examples:
  quarry sql                                   interactive shell (history, multi-line, \\d)
  quarry sql \"SELECT * FROM events WHERE container_id LIKE '3f2a%' ORDER BY time LIMIT 50\"
  quarry sql --format json \"SELECT pid, image, parent_image FROM processes WHERE execs > 1\"
  quarry sql --format parquet -o out.parquet \"SELECT * FROM connections\"
  quarry sql \"SELECT * FROM file_writes WHERE dt = '2026-11-28' AND hour = '14'\"
  quarry sql --engine ballista --scheduler df://127.0.0.1:50050 \"SELECT count(*) FROM execs\"
  quarry sql --store s3://fleet/prod \"SELECT host, count(*) FROM process GROUP BY host\"

--store s3://BUCKET/PREFIX (also for timeline and hunt) reads a fleet's bucket (`quarry upload`):
every host's segments its manifest vouches for, each hashed before use, `host` a partition.

Read-only: DDL, DML, COPY and SET are refused; only the store's tables can be read.
A damaged segment is skipped with a warning naming it. Results are written as they are read;
a query gets at most --memory-limit of memory and spills sorts, groups and joins to a private
temporary directory ($TMPDIR) beyond it.")]
pub struct SqlArgs {
    /// The query; without one, an interactive shell starts
    pub query: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    #[arg(long, value_enum, default_value_t = QueryFormat::Table)]
    pub format: QueryFormat,
    /// Write results to this file instead of standard output (never overwrites)
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub budget: QueryBudget,
    #[command(flatten)]
    pub engine: fleet::EngineArgs,
}

/// The memory a query may use (flattened into sql, timeline and hunt).
#[derive(Debug, Clone, Args)]
pub struct QueryBudget {
    /// Memory a query may use before it spills to disk or fails (e.g. 512M, 4G); default:
    /// the smaller of 2G and a quarter of the machine's memory
    #[arg(long, env = "QUARRY_MEMORY_LIMIT", value_name = "SIZE",
          value_parser = crate::cli::parse::parse_query_memory)]
    pub memory_limit: Option<u64>,
}

#[cfg(feature = "responder")]
impl QueryBudget {
    /// The query session's options.
    pub fn session(&self) -> quarry_query::SessionOptions {
        quarry_query::SessionOptions {
            memory_limit: self
                .memory_limit
                .or(crate::config::current().query.memory_limit),
            ..Default::default()
        }
    }
}

/// Output formats of a timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TimelineFormat {
    /// Text for a terminal
    Table,
    /// One JSON document
    Json,
    /// One self-contained HTML page with a time plot and the process tree
    Html,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Times are RFC 3339 (2026-11-28T14:00:00Z) or relative ages (15m, 2h, 1d).

Examples:
  quarry timeline web
  quarry timeline 3f2a --since 2h --until 30m
  quarry timeline web --format html -o web-timeline.html
  quarry timeline web --format json | jq '.events[] | select(.source == \"net\")'")]
pub struct TimelineArgs {
    /// Container name or id prefix (also of a container that has exited)
    #[arg(required_unless_present = "around")]
    pub container: Option<String>,
    /// Open the story at an alert (its alert_id): the container it names, from 5 minutes before
    /// the row behind it to 5 minutes after (--since/--until override either end)
    #[arg(long, value_name = "ALERT_ID", conflicts_with = "container")]
    pub around: Option<String>,
    /// From this time (default: when the container was first seen)
    #[arg(long, value_parser = parse_time)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Until this time (default: when it was last seen)
    #[arg(long, value_parser = parse_time)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    #[command(flatten)]
    pub store: StoreArgs,
    #[arg(long, value_enum, default_value_t = TimelineFormat::Table)]
    pub format: TimelineFormat,
    /// Write to this file instead of standard output (never overwrites)
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub budget: QueryBudget,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Exit codes: 0 no findings, 4 findings, 1 error.

Examples:
  quarry hunt
  quarry hunt --since 1d --container web
  quarry hunt --rules ./my-rules --format json
  quarry hunt --list                            the rules, with severity and ATT&CK technique
  quarry hunt --test --rules ./my-rules         run each rule's positive and negative fixture
                                                (<rule>.test.json beside <rule>.sql)
  quarry hunt --sigma ./sigma                   also run Sigma rules for Linux (*.yml)
  quarry hunt --sigma ./sigma --explain ID      print the SQL a rule runs
  quarry hunt --ioc ./iocs.txt                  also match a list of hashes, paths, IPs/CIDRs
  quarry hunt --ioc ./feed.stix.json            the same from a STIX 2 bundle's indicators

Sigma rules using something Quarry does not convert are reported on stderr (file, line, rule
id and construct) and skipped; the others run.")]
#[command(group(clap::ArgGroup::new("extra_rules").args(["rules", "sigma", "ioc"]).multiple(true)))]
pub struct HuntArgs {
    /// Only rows from this time on (RFC 3339 or relative: 15m, 2h, 1d)
    #[arg(long, value_parser = parse_time)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only rows until this time
    #[arg(long, value_parser = parse_time)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Only this container (name or id prefix)
    #[arg(long)]
    pub container: Option<String>,
    /// Also run the *.sql rules in this directory
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// Also run the Sigma rules (*.yml, *.yaml; logsource product linux) in this directory
    #[arg(long, value_name = "DIR")]
    pub sigma: Option<PathBuf>,
    /// Also match this list of indicators (one a line: executable SHA-256, absolute path,
    /// IP or CIDR, domain; `#` comments; or a STIX 2 JSON bundle) against exec, file and
    /// network rows (rule IOC001)
    #[arg(long, value_name = "FILE")]
    pub ioc: Option<PathBuf>,
    /// Only the rules in --rules, --sigma and --ioc, not the built-in ones
    #[arg(long, requires = "extra_rules")]
    pub no_builtin: bool,
    /// Print the SQL of the rule with this id instead of hunting
    #[arg(long, value_name = "ID", conflicts_with_all = ["list", "test"])]
    pub explain: Option<String>,
    /// List the rules instead of running them
    #[arg(long)]
    pub list: bool,
    /// Run each rule's fixtures (its positive and negative cases) instead of hunting a store;
    /// fails when a case does not raise the findings it expects or a rule has no fixture
    #[arg(long, conflicts_with = "list")]
    pub test: bool,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub out: OutputArgs,
    #[command(flatten)]
    pub budget: QueryBudget,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  quarry retain --retain-age 7d --dry-run      what would go, changing nothing
  quarry retain --retain-age 7d --retain-size 50G
  quarry retain --retain-size 20G --compact    merge small segments of closed hours first

Oldest segments go first. Held evidence (`quarry hold`) and the hour being recorded are never
deleted; when they alone exceed the size cap, retention says so loudly. Every deletion is a
manifest entry with its reason, so `quarry verify` still passes and shows what went and why.")]
pub struct RetainArgs {
    #[command(flatten)]
    pub retention: RetentionFlags,
    /// Say what would be deleted or merged; change nothing
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  quarry hold web --reason 'IR-42: litigation hold'        everything of container web
  quarry hold 3f2a --since 2026-11-28T10:00:00Z --until 2026-11-28T14:00:00Z --reason IR-42
  quarry hold --since 6h --reason 'IR-43: all containers, last 6 hours onwards'
  quarry hold --list
  quarry hold --release h-1a2b3c4d --reason 'case closed'

Times: RFC 3339 (2026-11-28T10:00:00Z), '2026-11-28 10:00' (UTC), a date, or a duration
meaning that long ago (2h, 7d). Retention never deletes held data, even over the size cap.")]
pub struct HoldArgs {
    /// Container id, unique id prefix or name (also one that has exited); omit to hold every
    /// container's rows in --since/--until
    #[arg(conflicts_with_all = ["list", "release"])]
    pub container: Option<String>,
    /// Hold rows from this time on
    #[arg(long, value_parser = parse_time, conflicts_with_all = ["list", "release"])]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Hold rows before this time
    #[arg(long, value_parser = parse_time, conflicts_with_all = ["list", "release"])]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Why (required to place a hold), for the record
    #[arg(long, required_unless_present_any = ["list", "release"])]
    pub reason: Option<String>,
    /// List active holds (with --all, released ones too)
    #[arg(long)]
    pub list: bool,
    /// With --list: released holds too
    #[arg(long, requires = "list")]
    pub all: bool,
    /// Release the hold with this id
    #[arg(long, value_name = "ID", conflicts_with = "list")]
    pub release: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  sudo quarry snapshot web                          case in /var/lib/quarry/cases/web-<time>
  sudo quarry snapshot 3f2a --case /srv/ir-42/web --reason 'IR-42'
  sudo quarry snapshot web --stop                   checkpoint, then stop the container
  quarry snapshot --verify /srv/ir-42/web           re-hash a case against its manifest")]
pub struct SnapshotArgs {
    /// Container id, unique id prefix or name
    #[arg(required_unless_present = "verify")]
    pub container: Option<String>,
    /// New case directory (refused if it exists); default /var/lib/quarry/cases/<name>-<time>
    #[arg(long)]
    pub case: Option<PathBuf>,
    /// Stop the container after the checkpoint (default: it keeps running)
    #[arg(long)]
    pub stop: bool,
    /// Why, for the record
    #[arg(long)]
    pub reason: Option<String>,
    /// CRIU binary (>= 4.1); default: found on $PATH, /usr/local/sbin, /usr/sbin
    #[arg(long, env = "QUARRY_CRIU")]
    pub criu: Option<PathBuf>,
    /// Hash listed for every file in the manifest (BLAKE3 is several times faster on large
    /// memory images; SHA-256 where policy asks for it)
    #[arg(long, value_enum, default_value_t = HashArg::Blake3)]
    pub hash: HashArg,
    /// Re-hash an existing case against its manifest instead of taking a snapshot
    #[arg(long, value_name = "CASE", conflicts_with_all = ["case", "stop", "reason", "hash"])]
    pub verify: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  quarry export web -o web.qbundle
  quarry export 3f2a --since 2026-11-28T10:00:00Z --until 2026-11-28T12:00:00Z -o ir42.qbundle
  quarry export web --case /var/lib/quarry/cases/web-1 --sign ir.key -o web.qbundle

The bundle is one file (tar + zstd): the container's rows of every table as Parquet (DuckDB and
pyarrow read them as they are), the case directory's files, a chain-of-custody log and
MANIFEST.json with every file's SHA-256, size and row count; with --sign, an ed25519 signature.
Check it anywhere with `quarry verify BUNDLE [--key KEY.pub]`.")]
pub struct ExportArgs {
    /// Container id, unique id prefix or name (also one that no longer runs)
    pub container: String,
    /// Rows from this time on (RFC 3339, '2026-11-28 10:00', a date, or 2h = two hours ago)
    #[arg(long, value_parser = parse_time)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Rows before this time
    #[arg(long, value_parser = parse_time)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// A case directory of `quarry snapshot` to include
    #[arg(long)]
    pub case: Option<PathBuf>,
    /// The bundle file to write (never overwritten)
    #[arg(long, short)]
    pub output: PathBuf,
    /// Sign the bundle with this secret key (from `quarry keygen`)
    #[arg(long, value_name = "KEY")]
    pub sign: Option<PathBuf>,
    /// No progress bar
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  sudo quarry restore /srv/ir-42/web --rootfs /srv/images/web-rootfs
  sudo quarry restore /srv/ir-42/web --rootfs /srv/images/web-rootfs --workdir /srv/lab/web \
      --bind /data=/srv/lab/data-copy

The tree comes back on a copy of the image directory given with --rootfs (the root filesystem
the container started from, never the live container's) with the case's changed files laid over
it inside the copy (setuid/setgid bits stripped), in a new network namespace with no way out
(connections keep their local address on a dead-end veth), in a cgroup of its own, with host
bind mounts replaced by the case's copies of small files or empty placeholders unless given with
--bind. End it through its cgroup (printed).")]
pub struct RestoreArgs {
    /// Case directory written by `quarry snapshot`
    pub case: PathBuf,
    /// Directory for the restored root and the logs (default: <case>.restore-<time>)
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// Image directory to restore onto (copied): the root filesystem the container started from
    #[arg(long)]
    pub rootfs: Option<PathBuf>,
    /// Bind a host path at a mount point the container had from the host: MOUNTPOINT=HOSTPATH
    #[arg(long, value_parser = parse_bind)]
    pub bind: Vec<(String, PathBuf)>,
    /// CRIU binary (>= 4.1)
    #[arg(long, env = "QUARRY_CRIU")]
    pub criu: Option<PathBuf>,
    #[command(flatten)]
    pub out: OutputArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HashArg {
    Blake3,
    Sha256,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  quarry keygen -o ir.key        writes ir.key (secret, mode 0600) and ir.key.pub")]
pub struct KeygenArgs {
    /// Secret key file to create; the public key goes to the same name plus .pub
    #[arg(long, short)]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  quarry completions bash > /etc/bash_completion.d/quarry
  quarry completions zsh > /usr/local/share/zsh/site-functions/_quarry
  quarry completions fish > ~/.config/fish/completions/quarry.fish
  quarry completions --man /usr/local/share/man/man1   quarry.1 and quarry-<command>.1 pages")]
pub struct CompletionsArgs {
    /// Shell to complete for
    #[arg(value_enum, required_unless_present = "man")]
    pub shell: Option<clap_complete::Shell>,
    /// Write the man pages (quarry.1 and one per command) into this directory instead
    #[arg(long, value_name = "DIR", conflicts_with = "shell")]
    pub man: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
