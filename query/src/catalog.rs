//! A query session over one store: its tables, its views, and the segments it had to skip.
//!
//! Each store table becomes a DataFusion listing table over `<store>/<table>/`, with the schema
//! the store defines (never inferred, so an empty or damaged table still has its columns) and
//! the Hive partition columns `dt` and `hour`. Filters on `dt`/`hour` prune directories; the
//! timeline adds them from its time window so a container's story reads only its hours.
//!
//! A session reads a local store ([`Catalog::open`]) or a fleet's bucket
//! ([`Catalog::open_bucket`]); only the object store behind the tables differs (see
//! [`crate::segments`] and [`crate::bucket_segments`]). In a bucket, `host` is a partition
//! column too (the `host=` level: the name each store was uploaded under), so filters on it
//! prune hosts; it is the table's last column there.
//!
//! In a local store `host` stays the files' own column, deliberately: the `host=` directory
//! holds the sanitised name ([`quarry_store::layout::sanitize_host`]), not the value the
//! recorder stored, and evidence must read as it was recorded; a local store is one host's, so
//! a partition column would prune nothing that the Parquet statistics (`host` is constant per
//! file) do not already skip; and it would move `host` to the end of `SELECT *` and make the
//! fleet's Ballista plans (`dt`/`hour` constants, byte-identical to the local engine's) carry a
//! third constant, for no reader's gain. In a bucket the directory is the identity (the name a
//! store was uploaded under), so there it is the column.

use std::path::Path;
use std::sync::{Arc, Mutex};

use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::StreamExt;
use object_store::ObjectStore;
use quarry_bucket::{Bucket, BucketUrl};
use quarry_store::layout::MANIFEST_FILE;
use quarry_store::schema::schema_of;
use quarry_store::{Store, Table};

use crate::bucket_segments::BucketSegments;
use crate::budget::{self, SessionOptions, SpillDir};
use crate::segments::{self, SealedSegments};
use crate::{QueryError, Result, guard, views};

pub use crate::segments::Skipped;

/// The URL the store is registered under inside the engine.
const STORE_URL: &str = "quarry://store";

/// The partition columns of every table, from the store's Hive layout.
pub const PARTITION_COLUMNS: [&str; 2] = ["dt", "hour"];

/// The partition columns of a table in a bucket: the store's, then the host.
const BUCKET_PARTITION_COLUMNS: [&str; 3] = ["dt", "hour", "host"];

/// Where an object store reports the segments it refused while reading.
type Refused = Arc<Mutex<Vec<Skipped>>>;

/// Where a session's segments come from.
#[derive(Debug, Clone)]
enum Source {
    Local(Store),
    Bucket(BucketUrl),
}

/// A read-only SQL session over a store.
pub struct Catalog {
    ctx: SessionContext,
    source: Source,
    skipped: Vec<Skipped>,
    /// Segments the object store refused when it opened them (see [`SealedSegments`]).
    refused: Refused,
    options: SessionOptions,
    /// Dropped after `ctx`: the engine's spill files live inside it.
    spill: SpillDir,
}

impl Catalog {
    /// Opens a session over the store at `root`: every table and view registered, damaged
    /// segments left out (see [`Catalog::skipped`]).
    pub async fn open(root: &Path) -> Result<Catalog> {
        Self::open_with(root, SessionOptions::default()).await
    }

    /// [`Catalog::open`] with a memory budget and spill directory other than the defaults.
    pub async fn open_with(root: &Path, options: SessionOptions) -> Result<Catalog> {
        Self::open_excluding(root, Vec::new(), options).await
    }

    async fn open_excluding(
        root: &Path,
        mut known_bad: Vec<Skipped>,
        options: SessionOptions,
    ) -> Result<Catalog> {
        let store = Store::at(root);
        let looks_like_store = root.join(MANIFEST_FILE).exists()
            || Table::ALL.iter().any(|t| store.table_dir(*t).is_dir());
        if !looks_like_store {
            return Err(QueryError::NotAStore(root.to_path_buf()));
        }
        let mut scan = segments::scan(&store)?;
        scan.healthy
            .retain(|_, seg| !known_bad.iter().any(|k| k.path == seg.path));
        for s in scan.skipped {
            if !known_bad.iter().any(|k| k.path == s.path) {
                known_bad.push(s);
            }
        }

        let healthy = scan.healthy;
        let objects = move |_: &Path, refused: Refused| -> Result<Arc<dyn ObjectStore>> {
            Ok(Arc::new(SealedSegments::new(root, healthy, refused)?))
        };
        Self::start(Source::Local(store), objects, known_bad, options).await
    }

    /// Opens a session over what `--store` names: a fleet's bucket (`s3://BUCKET/PREFIX`,
    /// [`Catalog::open_bucket`]) or a store's directory ([`Catalog::open_with`]).
    pub async fn open_location(store: &Path, options: SessionOptions) -> Result<Catalog> {
        let (what, opened) = match BucketUrl::of_store(store).map_err(QueryError::BucketUrl)? {
            Some(url) => (
                format!("the bucket {url}"),
                Self::open_bucket(&url, options).await,
            ),
            None => (
                format!("the store {}", store.display()),
                Self::open_with(store, options).await,
            ),
        };
        opened.map_err(|e| QueryError::Open {
            what,
            source: Box::new(e),
        })
    }

    /// Opens a session over a fleet's bucket, `s3://BUCKET/PREFIX` (endpoint and credentials
    /// from the AWS environment, as `quarry upload` takes them): every host's vouched segments
    /// (see [`quarry_bucket::read`]), the tables with `host` as a partition column, the views.
    /// A host whose manifest does not verify is left out (see [`Catalog::skipped`]).
    pub async fn open_bucket(url: &BucketUrl, options: SessionOptions) -> Result<Catalog> {
        Self::open_bucket_excluding(url, Vec::new(), options).await
    }

    async fn open_bucket_excluding(
        url: &BucketUrl,
        mut known_bad: Vec<Skipped>,
        options: SessionOptions,
    ) -> Result<Catalog> {
        let bucket = Bucket::from_env(url)?;
        let vouched = quarry_bucket::vouched_segments(&bucket).await?;
        if vouched.segments.is_empty() && vouched.left_out.is_empty() {
            return Err(QueryError::EmptyBucket(url.to_string()));
        }
        for left in vouched.left_out {
            let s = Skipped {
                path: BucketSegments::shown_path(&bucket, &left.rel),
                reason: left.reason,
            };
            if !known_bad.contains(&s) {
                known_bad.push(s);
            }
        }
        let healthy: Vec<_> = vouched
            .segments
            .into_iter()
            .filter(|seg| {
                let shown = BucketSegments::shown_path(&bucket, &seg.rel);
                !known_bad.iter().any(|k| k.path == shown)
            })
            .collect();
        let objects = move |spill: &Path, refused: Refused| -> Result<Arc<dyn ObjectStore>> {
            Ok(Arc::new(BucketSegments::new(
                bucket,
                healthy,
                &spill.join("bucket"),
                refused,
            )?))
        };
        Self::start(Source::Bucket(url.clone()), objects, known_bad, options).await
    }

    /// The engine over the object store `objects` builds (given the session's private
    /// directory and where to report refused segments), with every table and view.
    async fn start(
        source: Source,
        objects: impl FnOnce(&Path, Refused) -> Result<Arc<dyn ObjectStore>>,
        known_bad: Vec<Skipped>,
        options: SessionOptions,
    ) -> Result<Catalog> {
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("quarry", "store")
            .set_bool("datafusion.execution.parquet.pushdown_filters", true)
            .set_bool("datafusion.execution.parquet.reorder_filters", true)
            // Statistics of every file would be read at planning; pruning reads the footers
            // of the files that survive the partition filters anyway.
            .set_bool("datafusion.execution.collect_statistics", false)
            .set_usize(
                "datafusion.execution.sort_spill_reservation_bytes",
                budget::sort_spill_reservation(options.limit()),
            );
        let (runtime, spill) = budget::runtime(&options)?;
        let runtime = runtime.build_arc().map_err(QueryError::Engine)?;
        let url = url_of(STORE_URL);
        let refused = Arc::new(Mutex::new(Vec::new()));
        runtime.register_object_store(&url, objects(spill.path(), refused.clone())?);
        let ctx = SessionContext::new_with_config_rt(config, runtime);

        let in_bucket = matches!(source, Source::Bucket(_));
        for table in Table::ALL {
            register_table(&ctx, table, in_bucket).await?;
        }
        views::register(&ctx).await?;
        Ok(Catalog {
            ctx,
            source,
            skipped: known_bad,
            refused,
            options,
            spill,
        })
    }

    /// Segments left out of this session, each with the reason. Callers warn with these.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// The segments left out since the first `already` of [`Catalog::skipped`] (those a
    /// query found that opening the session had not).
    pub fn skipped_since(&self, already: usize) -> &[Skipped] {
        &self.skipped[already.min(self.skipped.len())..]
    }

    /// What this session reads: the store's directory, or the bucket's `s3://` URL.
    pub fn location(&self) -> String {
        match &self.source {
            Source::Local(store) => store.root().display().to_string(),
            Source::Bucket(url) => url.to_string(),
        }
    }

    /// The memory budget of this session's queries, in bytes.
    pub fn memory_limit(&self) -> u64 {
        self.options.limit()
    }

    /// This session's private temporary directory (spill files, a hunt's findings).
    pub(crate) fn spill_path(&self) -> &Path {
        self.spill.path()
    }

    /// The engine session, for callers that build DataFrames themselves.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Runs one read-only statement and collects its result. A segment that turns out to be
    /// damaged inside (past the framing checked at open) is found, left out with a warning in
    /// [`Catalog::skipped`], and the statement run again.
    pub async fn sql(&mut self, sql: &str) -> Result<Vec<RecordBatch>> {
        guard::check(sql)?;
        self.run_resilient(sql).await
    }

    /// What `\d` shows: the store's tables and views (`None`), or the columns of one table
    /// or view (`Some(name)`; a name that is not a plain identifier is refused, not quoted).
    pub async fn describe(&mut self, name: Option<&str>) -> Result<Vec<RecordBatch>> {
        let sql = match name {
            None => "SELECT table_name, table_type FROM information_schema.tables WHERE \
                     table_schema = 'store' ORDER BY table_type, table_name"
                .to_string(),
            Some(name) if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => format!(
                "SELECT column_name, data_type, is_nullable FROM information_schema.columns \
                 WHERE table_schema = 'store' AND table_name = '{name}' ORDER BY \
                 ordinal_position"
            ),
            Some(name) => {
                return Err(QueryError::Refused(format!(
                    "{name:?} is not a table or view name"
                )));
            }
        };
        self.run_resilient(&sql).await
    }

    /// Runs SQL built inside this crate (no statement check; the plan-level read-only
    /// options still apply), leaving out segments refused (altered since they were sealed)
    /// or found damaged while reading: the session is reopened without them and the statement
    /// run again, until it answers from the segments that pass.
    pub(crate) async fn run_resilient(&mut self, sql: &str) -> Result<Vec<RecordBatch>> {
        loop {
            match self.run(sql).await {
                Ok(batches) => return Ok(batches),
                Err(e) => self.leave_out_bad(e).await?,
            }
        }
    }

    /// Runs one read-only statement and returns its result as a stream: batches are read
    /// from the store as the caller pulls them, so memory stays within the session's budget
    /// however large the result. A segment found damaged before the first batch is left out
    /// and the statement run again, as [`Catalog::sql`] does; one found later ends the stream
    /// with the error.
    pub async fn sql_stream(&mut self, sql: &str) -> Result<ResultStream> {
        guard::check(sql)?;
        self.stream_resilient(sql).await
    }

    /// [`Catalog::sql_stream`] for SQL built inside this crate.
    pub(crate) async fn stream_resilient(&mut self, sql: &str) -> Result<ResultStream> {
        loop {
            match self.stream(sql).await {
                Ok(stream) => return Ok(stream),
                Err(e) => self.leave_out_bad(e).await?,
            }
        }
    }

    /// After the data error `e`: leaves out the segments that fail to decode or were refused.
    pub(crate) async fn leave_out_damaged(&mut self, e: DataFusionError) -> Result<()> {
        self.leave_out_bad(QueryError::Engine(e)).await
    }

    /// After the error `err`: takes the segments the object store refused meanwhile, or (a
    /// data error) finds those that fail to decode, and reopens the session without them;
    /// `err` itself when there are none new.
    async fn leave_out_bad(&mut self, err: QueryError) -> Result<()> {
        let mut newly_bad: Vec<Skipped> =
            std::mem::take(&mut *self.refused.lock().unwrap_or_else(|p| p.into_inner()));
        if newly_bad.is_empty() && matches!(&err, QueryError::Engine(e) if is_data_error(e)) {
            newly_bad = self.deep_check()?;
        }
        newly_bad.retain(|b| !self.skipped.iter().any(|s| s.path == b.path));
        if newly_bad.is_empty() {
            return Err(err);
        }
        let mut bad = self.skipped.clone();
        bad.extend(newly_bad);
        *self = match &self.source {
            Source::Local(store) => {
                Catalog::open_excluding(store.root(), bad, self.options.clone()).await?
            }
            Source::Bucket(url) => {
                Catalog::open_bucket_excluding(url, bad, self.options.clone()).await?
            }
        };
        Ok(())
    }

    /// Plans and starts `sql` with the read-only options (no statement check) and reads its
    /// first batch, so errors of opening the data surface here.
    pub(crate) async fn stream(&self, sql: &str) -> Result<ResultStream> {
        let frame = self
            .ctx
            .sql_with_options(sql, guard::read_only_options())
            .await
            .map_err(plan_error)?;
        let limit = self.memory_limit();
        let mut rest = frame
            .execute_stream()
            .await
            .map_err(|e| budget::engine_error(e, limit))?;
        let first = match rest.next().await {
            Some(Ok(b)) => Some(b),
            Some(Err(e)) => return Err(budget::engine_error(e, limit)),
            None => None,
        };
        Ok(ResultStream {
            schema: rest.schema(),
            first,
            rest,
            limit,
        })
    }

    /// Plans and runs `sql` with the read-only options, without the statement check (callers
    /// inside this crate build their own SQL).
    async fn run(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let frame = self
            .ctx
            .sql_with_options(sql, guard::read_only_options())
            .await
            .map_err(plan_error)?;
        let schema = std::sync::Arc::new(frame.schema().as_arrow().clone());
        let limit = self.memory_limit();
        let mut batches = frame
            .collect()
            .await
            .map_err(|e| budget::engine_error(e, limit))?;
        if batches.is_empty() {
            // Keep the columns of an empty answer: CSV headers and Parquet schemas need them.
            batches.push(RecordBatch::new_empty(schema));
        }
        Ok(batches)
    }

    /// Reads every listed segment in full (through the verified reader) and returns those
    /// that are refused or fail to decode.
    fn deep_check(&self) -> Result<Vec<Skipped>> {
        let mut bad = Vec::new();
        // A bucket's segments are hashed whole before anything reads them: one that fails to
        // decode is as its host sealed it, and reading the whole fleet would not find another.
        let Source::Local(store) = &self.source else {
            return Ok(bad);
        };
        for seg in store.verified_listing()?.segments {
            if self.skipped.iter().any(|s| s.path == seg.path) {
                continue;
            }
            match quarry_store::verified::read(&seg) {
                Ok(Ok(_)) => {}
                Ok(Err(refusal)) => bad.push(Skipped {
                    path: seg.path,
                    reason: refusal.to_string(),
                }),
                Err(e) => bad.push(Skipped {
                    path: seg.path,
                    reason: format!("damaged inside: {e}"),
                }),
            }
        }
        Ok(bad)
    }
}

/// The batches of a running statement, in order (see [`Catalog::sql_stream`]).
pub struct ResultStream {
    schema: SchemaRef,
    first: Option<RecordBatch>,
    rest: SendableRecordBatchStream,
    limit: u64,
}

impl ResultStream {
    /// The columns of the result, also when it has no rows.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// The next batch; None at the end.
    pub async fn next(&mut self) -> Option<Result<RecordBatch>> {
        if let Some(first) = self.first.take() {
            return Some(Ok(first));
        }
        let limit = self.limit;
        self.rest
            .next()
            .await
            .map(|r| r.map_err(|e| budget::engine_error(e, limit)))
    }
}

fn url_of(text: &str) -> url::Url {
    url::Url::parse(text).expect("the store URL is a constant, valid URL")
}

/// How a table is read: the partition columns its directory levels give (in the order they
/// follow the file columns) and the columns read from its files. In a bucket (`in_bucket`)
/// `host` is a partition column and the files' own `host` column gives way to the `host=`
/// level's. Every engine over a store (this catalog, the distributed one) shows a table so.
pub fn table_columns(table: Table, in_bucket: bool) -> (&'static [&'static str], SchemaRef) {
    if in_bucket {
        let stored = schema_of(table);
        let fields: Vec<_> = stored
            .fields()
            .iter()
            .filter(|f| f.name() != "host")
            .cloned()
            .collect();
        (&BUCKET_PARTITION_COLUMNS[..], Arc::new(Schema::new(fields)))
    } else {
        (&PARTITION_COLUMNS[..], schema_of(table))
    }
}

/// Registers `table` over its directory, with the columns of [`table_columns`].
async fn register_table(ctx: &SessionContext, table: Table, in_bucket: bool) -> Result<()> {
    let url = ListingTableUrl::parse(format!("{STORE_URL}/{}/", table.name()))?;
    let (partitions, schema) = table_columns(table, in_bucket);
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(
            partitions
                .iter()
                .map(|c| (c.to_string(), DataType::Utf8))
                .collect(),
        );
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(schema);
    let provider = ListingTable::try_new(config)?;
    ctx.register_table(table.name(), Arc::new(provider))?;
    Ok(())
}

/// Turns planning errors into [`QueryError::Refused`] when the read-only options stopped them
/// and [`QueryError::Sql`] otherwise, so users see the problem without engine internals.
fn plan_error(e: DataFusionError) -> QueryError {
    let text = e.strip_backtrace().to_string();
    if text.contains("not supported: ") {
        QueryError::Refused(format!(
            "{text}: `quarry sql` is read-only (SELECT, EXPLAIN, SHOW only)"
        ))
    } else {
        QueryError::Sql(text)
    }
}

/// Errors that come from reading data, as opposed to planning it.
pub(crate) fn is_data_error(e: &DataFusionError) -> bool {
    // Only errors of reading Parquet: a division by zero or a bad cast in the query must not
    // send the session decoding every segment of the store.
    match e {
        DataFusionError::ParquetError(_) | DataFusionError::ObjectStore(_) => true,
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            is_data_error(inner)
        }
        _ => {
            let text = e.to_string();
            text.contains("Parquet") || text.contains("parquet")
        }
    }
}
