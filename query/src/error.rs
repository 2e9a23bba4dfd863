//! The errors of the query crate.

use std::path::PathBuf;

/// Result of query operations.
pub type Result<T, E = QueryError> = std::result::Result<T, E>;

/// What can go wrong between a question and its answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The directory is not a Quarry store.
    #[error(
        "{0} is not a Quarry store (no manifest.jsonl and no table directories): pass the store \
         `quarry record` writes to with --store"
    )]
    NotAStore(PathBuf),
    /// The bucket holds no host's manifest: nothing was uploaded to it (or another prefix).
    #[error(
        "{0} holds no host's manifest (_manifest/host=*/): upload a store to it with `quarry \
         upload --to {0}`, or check the prefix"
    )]
    EmptyBucket(String),
    /// `--store` names a bucket by a malformed URL.
    #[error(transparent)]
    BucketUrl(quarry_bucket::BucketError),
    /// The store or bucket `--store` names could not be opened (`what` names it).
    #[error("opening {what}")]
    Open {
        what: String,
        #[source]
        source: Box<QueryError>,
    },
    /// SQL the user typed is not valid for this store ([`QueryError::explained`]).
    #[error("the query is not valid SQL for this store (`\\d` lists tables and columns)")]
    InvalidSql(#[source] Box<QueryError>),
    /// The SQL shell's line editor could not start or read a line.
    #[error("{what}")]
    LineEditor {
        what: &'static str,
        #[source]
        source: rustyline::error::ReadlineError,
    },
    /// `hunt --explain ID`: no loaded rule has that id.
    #[error(
        "no rule with id {0:?}: `quarry hunt --list` (with the same --rules and --sigma) lists them"
    )]
    NoRule(String),
    /// `hunt --explain ID`: the Sigma rule of that id could not be converted (the reason).
    #[error("rule {id} was not converted: {reason}")]
    NotConverted { id: String, reason: String },
    /// The bucket could not be reached or read.
    #[error("reading the bucket")]
    Bucket(#[from] quarry_bucket::BucketError),
    /// The statement would change something or reach outside the store.
    #[error("refused: {0}")]
    Refused(String),
    /// The SQL could not be parsed or planned (names the problem as DataFusion saw it).
    #[error("{0}")]
    Sql(String),
    /// A time given on the command line could not be read.
    #[error(
        "cannot read the time {0:?}: give RFC 3339 (2026-11-28T14:00:00Z) or a relative age \
         such as 15m, 2h or 1d"
    )]
    Time(String),
    /// The container given is not in the store, or not exactly one of its containers.
    #[error(transparent)]
    Container(#[from] quarry_containers::ResolveError),
    /// `timeline --around`: not an alert id, no such alert in the store, or an alert about
    /// the host rather than a container (says which, and the query that shows it).
    #[error("{0}")]
    Around(String),
    /// A directory of SQL rules could not be read, or a rule in it is malformed (the source
    /// says which).
    #[error("loading rules from {}", dir.display())]
    RuleDir {
        dir: PathBuf,
        #[source]
        source: Box<QueryError>,
    },
    /// A directory of Sigma rules could not be read.
    #[error("loading Sigma rules from {}", dir.display())]
    SigmaDir {
        dir: PathBuf,
        #[source]
        source: Box<QueryError>,
    },
    /// A container's timeline (or its report) could not be built.
    #[error("building the timeline of {container}")]
    Timeline {
        container: String,
        #[source]
        source: Box<QueryError>,
    },
    /// A result could not be put as JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A hunt rule file is malformed.
    #[error("hunt rule {path}: {problem}")]
    Rule { path: String, problem: String },
    /// An indicator list (`hunt --ioc`) could not be read (the source says why).
    #[error("reading indicators from {}", path.display())]
    Indicators {
        path: PathBuf,
        #[source]
        source: Box<QueryError>,
    },
    /// A line of an indicator list (`hunt --ioc`) is not an indicator.
    #[error("indicator list {path}, line {line}: {problem}")]
    Ioc {
        path: String,
        line: usize,
        problem: String,
    },
    /// Running a rule's fixture failed (the source says how).
    #[error("running the fixture of rule {rule}")]
    FixtureOf {
        rule: String,
        #[source]
        source: Box<QueryError>,
    },
    /// A rule's fixture file is malformed (names the rule, the case and the problem).
    #[error("rule fixture {0}")]
    Fixture(String),
    /// A result file was asked for inside the store, where it would pass for evidence.
    #[error("{} is inside the store {}: write results elsewhere", path.display(), store.display())]
    ResultInStore { path: PathBuf, store: PathBuf },
    /// The result file could not be created (it exists already, or its directory does not).
    #[error("creating {} (it must not exist yet; choose another name)", path.display())]
    ResultFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing a file failed.
    #[error("I/O error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The query needed more memory than its budget, even spilling what could be spilled to
    /// disk. Names the budget and the flag that raises it; the engine's account of which
    /// operator asked for what is the source.
    #[error(
        "the query needs more memory than its budget of {}: raise it with --memory-limit \
         (e.g. --memory-limit {}), or narrow the query (--since/--until, a container, fewer \
         columns or groups)",
        crate::budget::human_size(*limit),
        crate::budget::suggest_double(*limit)
    )]
    MemoryBudget {
        limit: u64,
        #[source]
        source: Box<datafusion::error::DataFusionError>,
    },
    /// The engine failed while running a query.
    #[error(transparent)]
    Engine(#[from] datafusion::error::DataFusionError),
    /// Arrow failed while formatting results.
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    /// Parquet failed while writing results.
    #[error(transparent)]
    Parquet(#[from] parquet::errors::ParquetError),
    /// The store could not be read.
    #[error(transparent)]
    Store(#[from] quarry_store::StoreError),
}

impl QueryError {
    /// This error with what to do next, when the SQL a user typed caused it (the shell's
    /// `\\d` lists what there is); any other error as it is.
    pub fn explained(self) -> QueryError {
        match self {
            QueryError::Sql(_) => QueryError::InvalidSql(Box::new(self)),
            other => other,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        QueryError::Io {
            path: path.into(),
            source,
        }
    }
}
