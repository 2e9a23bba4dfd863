//! A query session on a Ballista cluster over one store (`quarry sql --engine ballista`).
//!
//! The cluster runs Ballista's default codecs, so the session hands it only plans those can
//! ship: each store table is a view whose plan is a union, one branch per `dt`/`hour`
//! directory, of a Parquet listing scan naming that directory's segment *files* (never a
//! directory the scheduler would list) with `dt` and `hour` added as constants. The segments
//! come from the store's verified reader, as the local engine's do
//! ([`quarry_query::segments::scan`]): what the manifest does not vouch for is never named,
//! and skipped segments are reported the same way. Filters on `dt`/`hour` fold to false on the
//! branches they exclude and those branches leave the plan, so they prune like the local
//! engine's partition columns. The store's views are registered on top, with the same SQL.
//!
//! Before a statement is submitted, every segment its optimised plan still reads is hashed
//! against the manifest here, on the client; a mismatch refuses the statement naming the
//! segment. The executors then open the same paths themselves: a file swapped between this
//! check and their read is not caught (the local engine checks the very file it reads). That
//! window is the price of Ballista's default codec; closing it needs an executor-side reader
//! that checks hashes, i.e. a Quarry codec on the cluster.
//!
//! Over a fleet's bucket (`--store s3://BUCKET/PREFIX`) the branches are one per `dt`/`hour`/
//! `host` directory, naming the `s3://` objects every host's manifest vouches for (read from the
//! bucket here, as the local engine reads it), with the bucket's columns
//! ([`quarry_query::catalog::table_columns`]: `host` a partition column). Nothing is hashed on
//! the client: the servers read the bucket through [`crate::objects`], which serves only vouched
//! segments and checks each one's hash before it is decoded. A segment a server refused is
//! named in the failed job's error; the client leaves it out and runs the statement again, as
//! the local engine leaves out an altered segment.
//!
//! This module must not write anything, and must not register a table over a directory.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use ballista::prelude::{SessionConfigExt, SessionContextExt};
use datafusion::catalog::TableProvider;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::{ViewTable, provider_as_source, source_as_provider};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{EmptyRelation, Expr, LogicalPlan, LogicalPlanBuilder};
use datafusion::physical_plan::EmptyRecordBatchStream;
use datafusion::prelude::{SessionConfig, SessionContext, ident, lit};
use futures::StreamExt;
use quarry_bucket::{Bucket, BucketUrl, VouchedSegment};
use quarry_query::bucket_segments::BucketSegments;
use quarry_query::catalog::table_columns;
use quarry_query::{Skipped, guard, segments, views};
use quarry_store::layout::{MANIFEST_FILE, Partition};
use quarry_store::verified::{self, Listed};
use quarry_store::{Store, Table};

use crate::{FleetError, Result};

/// The scheduler URL Ballista's client takes, from `df://HOST:PORT` or `HOST:PORT`.
pub fn scheduler_url(text: &str) -> Result<String> {
    let rest = text.strip_prefix("df://").unwrap_or(text);
    let bad = || FleetError::BadScheduler(text.to_string());
    let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() || rest.contains('/') {
        return Err(bad());
    }
    Ok(format!("df://{rest}"))
}

/// A read-only SQL session over a store, run on a Ballista cluster.
pub struct RemoteSession {
    ctx: SessionContext,
    segments: Segments,
    skipped: Vec<Skipped>,
}

/// The segments the plans may name.
enum Segments {
    /// A local store's, by absolute file path.
    Local(HashMap<PathBuf, Listed>),
    /// A fleet bucket's, by key below its prefix.
    Bucket {
        bucket: Bucket,
        vouched: BTreeMap<String, VouchedSegment>,
    },
}

impl RemoteSession {
    /// Connects to the scheduler at `scheduler` (`df://HOST:PORT`) and registers the tables
    /// and views of the store at `root`.
    pub async fn open(scheduler: &str, root: &Path) -> Result<RemoteSession> {
        let url = scheduler_url(scheduler)?;
        let store = Store::at(root);
        let looks_like_store = root.join(MANIFEST_FILE).exists()
            || Table::ALL.iter().any(|t| store.table_dir(*t).is_dir());
        if !looks_like_store {
            return Err(quarry_query::QueryError::NotAStore(root.to_path_buf()).into());
        }
        // Absolute, so every segment has a file URL the executors can open.
        let root = root.canonicalize().map_err(|source| FleetError::Io {
            path: root.to_path_buf(),
            source,
        })?;
        let scan = segments::scan(&Store::at(&root))?;
        let ctx = remote_context(&url).await?;
        let mut segments = HashMap::new();
        for seg in scan.healthy.into_values() {
            segments.insert(seg.path.clone(), seg);
        }
        RemoteSession::start(ctx, Segments::Local(segments), scan.skipped).await
    }

    /// Connects to the scheduler at `scheduler` and registers the tables and views of the
    /// fleet's bucket at `url` (endpoint and credentials from the AWS environment): every
    /// host's vouched segments, `host` a partition column, as `quarry sql --store s3://` shows
    /// them.
    pub async fn open_bucket(scheduler: &str, url: &BucketUrl) -> Result<RemoteSession> {
        let scheduler = scheduler_url(scheduler)?;
        let bucket = Bucket::from_env(url).map_err(quarry_query::QueryError::from)?;
        let found = quarry_bucket::vouched_segments(&bucket)
            .await
            .map_err(quarry_query::QueryError::from)?;
        if found.segments.is_empty() && found.left_out.is_empty() {
            return Err(quarry_query::QueryError::EmptyBucket(url.to_string()).into());
        }
        let skipped = found
            .left_out
            .into_iter()
            .map(|left| Skipped {
                path: BucketSegments::shown_path(&bucket, &left.rel),
                reason: left.reason,
            })
            .collect();
        let vouched = found
            .segments
            .into_iter()
            .map(|seg| (seg.rel.clone(), seg))
            .collect();
        let ctx = remote_context(&scheduler).await?;
        RemoteSession::start(ctx, Segments::Bucket { bucket, vouched }, skipped).await
    }

    async fn start(
        ctx: SessionContext,
        segments: Segments,
        skipped: Vec<Skipped>,
    ) -> Result<RemoteSession> {
        let session = RemoteSession {
            ctx,
            segments,
            skipped,
        };
        for table in Table::ALL {
            session.register(table)?;
        }
        views::register(&session.ctx).await?;
        Ok(session)
    }
}

/// A client session on the scheduler at `url`, with the local engine's session options, so
/// plans (and results) match.
async fn remote_context(url: &str) -> Result<SessionContext> {
    let config = SessionConfig::new_with_ballista()
        // Ballista's adaptive planner re-plans the per-hour unions stage by stage: a join
        // of two views over a 3-hour store ran hundreds of one-task stages for minutes.
        // The static planner runs it in a handful.
        .with_ballista_adaptive_query_planner(false)
        .with_information_schema(true)
        .with_default_catalog_and_schema("quarry", "store")
        .set_bool("datafusion.execution.parquet.pushdown_filters", true)
        .set_bool("datafusion.execution.parquet.reorder_filters", true)
        .set_bool("datafusion.execution.collect_statistics", false);
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .build();
    Ok(SessionContext::remote_with_state(url, state).await?)
}

impl RemoteSession {
    /// (Re)registers `table` over its segments in [`RemoteSession::segments`].
    fn register(&self, table: Table) -> Result<()> {
        let plan = match &self.segments {
            Segments::Local(segments) => {
                let mut segs: Vec<&Listed> = segments
                    .values()
                    .filter(|s| s.partition.table == table)
                    .collect();
                segs.sort_by(|a, b| a.rel.cmp(&b.rel));
                table_plan(table, false, local_branches(&segs)?)?
            }
            Segments::Bucket { bucket, vouched } => {
                table_plan(table, true, bucket_branches(bucket, table, vouched)?)?
            }
        };
        // Replacing a table keeps the views over it: they are resolved at planning.
        self.ctx.deregister_table(table.name())?;
        self.ctx
            .register_table(table.name(), Arc::new(ViewTable::new(plan, None)))?;
        Ok(())
    }

    /// Segments left out of this session (not vouched for by the manifest), with the reason.
    pub fn skipped(&self) -> &[Skipped] {
        &self.skipped
    }

    /// The client-side session (plans are built here and run on the cluster).
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Checks and plans one read-only statement, hash-checks the segments it reads, and runs
    /// it on the cluster; batches arrive as the caller pulls them. A segment that no longer
    /// matches the manifest is left out (added to [`RemoteSession::skipped`], as the local
    /// engine does) and the statement planned again without it.
    pub async fn sql_stream(&mut self, sql: &str) -> Result<SendableRecordBatchStream> {
        guard::check(sql)?;
        loop {
            let frame = self
                .ctx
                .sql_with_options(sql, guard::read_only_options())
                .await
                .map_err(|e| quarry_query::QueryError::Sql(e.strip_backtrace().to_string()))?;
            let optimized = self.ctx.state().optimize(frame.logical_plan())?;
            if let LogicalPlan::EmptyRelation(empty) = &optimized
                && !empty.produce_one_row
            {
                // Nothing to read (pruned away). Ballista would answer without columns; keep
                // them, as the local engine does.
                let schema: SchemaRef = Arc::new(empty.schema.as_arrow().clone());
                return Ok(Box::pin(EmptyRecordBatchStream::new(schema)));
            }
            let refused = match &self.segments {
                Segments::Local(_) => {
                    let mut refused = Vec::new();
                    for path in files_read(&optimized)? {
                        match self.check(&path).await {
                            Ok(()) => {}
                            Err(FleetError::Refused { path, reason }) => {
                                refused.push((path, reason))
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    if refused.is_empty() {
                        return Ok(frame.execute_stream().await?);
                    }
                    refused
                }
                Segments::Bucket { .. } => {
                    // The servers check what they read; a job they failed over a refused
                    // segment fails before its first batch reaches the client.
                    let mut stream = frame.execute_stream().await?;
                    let first = stream.next().await;
                    match first {
                        None => return Ok(stream),
                        Some(Ok(batch)) => {
                            let schema = stream.schema();
                            let rest = futures::stream::once(async { Ok(batch) }).chain(stream);
                            return Ok(Box::pin(
                                datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                                    schema, rest,
                                ),
                            ));
                        }
                        Some(Err(e)) => {
                            let refused = self.refused_in(&e.to_string());
                            if refused.is_empty() {
                                return Err(e.into());
                            }
                            refused
                        }
                    }
                }
            };
            self.leave_out(refused)?;
        }
    }

    /// Leaves `refused` segments out of the session (reported in
    /// [`RemoteSession::skipped`]) and registers their tables again without them.
    fn leave_out(&mut self, refused: Vec<(PathBuf, String)>) -> Result<()> {
        let mut tables = Vec::new();
        for (path, reason) in refused {
            let table = match &mut self.segments {
                Segments::Local(segments) => segments.remove(&path).map(|s| s.partition.table),
                Segments::Bucket { bucket, vouched } => vouched
                    .iter()
                    .find(|(rel, _)| BucketSegments::shown_path(bucket, rel) == path)
                    .map(|(rel, _)| rel.clone())
                    .and_then(|rel| vouched.remove(&rel))
                    .and_then(|seg| Partition::from_segment_path(&seg.rel))
                    .map(|(p, _)| p.table),
            };
            tables.extend(table);
            self.skipped.push(Skipped { path, reason });
        }
        tables.sort();
        tables.dedup();
        for table in tables {
            self.register(table)?;
        }
        Ok(())
    }

    /// The bucket segments a failed job's error says a server refused, with the reason.
    fn refused_in(&self, error: &str) -> Vec<(PathBuf, String)> {
        let Segments::Bucket { bucket, vouched } = &self.segments else {
            return Vec::new();
        };
        vouched
            .keys()
            .filter_map(|rel| {
                let marker = crate::objects::refusal(rel, "");
                let at = error.find(&marker)?;
                // The reason runs to the end of the server's line.
                let reason = error[at + marker.len()..]
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                Some((BucketSegments::shown_path(bucket, rel), reason))
            })
            .collect()
    }

    /// Hashes the local segment at `path` against what the manifest sealed.
    async fn check(&self, path: &Path) -> Result<()> {
        let seg = match &self.segments {
            Segments::Local(segments) => segments.get(path).cloned(),
            Segments::Bucket { .. } => None,
        };
        let Some(seg) = seg else {
            return Err(FleetError::Refused {
                path: path.to_path_buf(),
                reason: "not a segment the manifest vouches for".into(),
            });
        };
        let verdict = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::open(&seg.path).map_err(|source| FleetError::Io {
                path: seg.path.clone(),
                source,
            })?;
            Ok::<_, FleetError>(verified::check(&seg, &file)?)
        })
        .await
        .map_err(|e| FleetError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })??;
        verdict.map_err(|refusal| FleetError::Refused {
            path: path.to_path_buf(),
            reason: refusal.to_string(),
        })
    }
}

/// The columns of a table as the local engine shows them: the file columns, then the
/// partition columns.
fn table_schema(table: Table, in_bucket: bool) -> Schema {
    let (partitions, stored) = table_columns(table, in_bucket);
    let mut fields: Vec<Field> = stored.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(
        partitions
            .iter()
            .map(|c| Field::new(*c, DataType::Utf8, false)),
    );
    Schema::new(fields)
}

/// The files of one partition directory and its partition columns' values, in the order of
/// [`table_columns`].
type Branches = BTreeMap<Vec<String>, Vec<ListingTableUrl>>;

/// A local store's segments of one table by `dt`/`hour` directory, as file URLs.
fn local_branches(segs: &[&Listed]) -> Result<Branches> {
    let mut groups = Branches::new();
    for seg in segs {
        // A file URL built from the path, not parsed from text: a segment name is never read
        // as a glob.
        let file = url::Url::from_file_path(&seg.path).map_err(|()| FleetError::Refused {
            path: seg.path.clone(),
            reason: "not an absolute path".into(),
        })?;
        let key = vec![seg.partition.dt_value(), seg.partition.hour_value()];
        groups
            .entry(key)
            .or_default()
            .push(ListingTableUrl::try_new(file, None)?);
    }
    Ok(groups)
}

/// A bucket's vouched segments of `table` by `dt`/`hour`/`host` directory, as `s3://` URLs.
fn bucket_branches(
    bucket: &Bucket,
    table: Table,
    vouched: &BTreeMap<String, VouchedSegment>,
) -> Result<Branches> {
    let mut groups = Branches::new();
    for seg in vouched.values() {
        let Some((partition, _)) = Partition::from_segment_path(&seg.rel) else {
            continue;
        };
        if partition.table != table {
            continue;
        }
        // Built from the key's parts, not parsed from text: never a glob.
        let key = bucket.key(&seg.rel);
        let mut url = url::Url::parse(&format!("s3://{}/", bucket.url().bucket)).map_err(|e| {
            FleetError::Refused {
                path: PathBuf::from(bucket.url().to_string()),
                reason: format!("not a bucket URL: {e}"),
            }
        })?;
        url.path_segments_mut()
            .map_err(|()| FleetError::Refused {
                path: PathBuf::from(bucket.url().to_string()),
                reason: "not a bucket URL".into(),
            })?
            .pop_if_empty()
            .extend(key.parts().map(|p| p.as_ref().to_string()));
        let values = vec![
            partition.dt_value(),
            partition.hour_value(),
            partition.host.clone(),
        ];
        groups
            .entry(values)
            .or_default()
            .push(ListingTableUrl::try_new(url, None)?);
    }
    Ok(groups)
}

/// The plan of one table over its partition directories (see the module docs).
fn table_plan(table: Table, in_bucket: bool, groups: Branches) -> Result<LogicalPlan> {
    let (partitions, stored) = table_columns(table, in_bucket);
    let mut union: Option<LogicalPlanBuilder> = None;
    for (values, files) in groups {
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new_with_multi_paths(files)
            .with_listing_options(options)
            .with_schema(stored.clone());
        let provider: Arc<dyn TableProvider> = Arc::new(ListingTable::try_new(config)?);
        let columns = stored
            .fields()
            .iter()
            .map(|f| ident(f.name()))
            .chain(
                partitions
                    .iter()
                    .zip(values)
                    .map(|(name, value)| lit(value).alias(*name)),
            )
            .collect::<Vec<Expr>>();
        let branch = LogicalPlanBuilder::scan(table.name(), provider_as_source(provider), None)?
            .project(columns)?;
        union = Some(match union {
            None => branch,
            Some(u) => u.union(branch.build()?)?,
        });
    }
    Ok(match union {
        Some(u) => u.build()?,
        None => LogicalPlan::EmptyRelation(EmptyRelation {
            produce_one_row: false,
            schema: Arc::new(table_schema(table, in_bucket).try_into()?),
        }),
    })
}

/// Every segment file the plan reads, from its listing scans (views included).
fn files_read(plan: &LogicalPlan) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut failed = None;
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            match source_as_provider(&scan.source) {
                Ok(provider) => {
                    if let Some(listing) = provider.downcast_ref::<ListingTable>() {
                        for url in listing.table_paths() {
                            match url.get_url().to_file_path() {
                                Ok(p) => out.push(p),
                                Err(()) => {
                                    failed = Some(FleetError::Refused {
                                        path: PathBuf::from(url.as_str()),
                                        reason: "not a local file".into(),
                                    })
                                }
                            }
                        }
                    } else if let Some(inner) = provider.get_logical_plan() {
                        match files_read(&inner) {
                            Ok(files) => out.extend(files),
                            Err(e) => failed = Some(e),
                        }
                    }
                }
                Err(e) => failed = Some(e.into()),
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    match failed {
        Some(e) => Err(e),
        None => Ok(out),
    }
}
