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
use quarry_query::catalog::PARTITION_COLUMNS;
use quarry_query::{Skipped, guard, segments, views};
use quarry_store::layout::MANIFEST_FILE;
use quarry_store::schema::schema_of;
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
    /// The segments the plans may name, by absolute file path.
    segments: HashMap<PathBuf, Listed>,
    skipped: Vec<Skipped>,
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
        // The same session options as the local engine's, so plans (and results) match.
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
        let ctx = SessionContext::remote_with_state(&url, state).await?;

        let mut session = RemoteSession {
            ctx,
            segments: HashMap::new(),
            skipped: scan.skipped,
        };
        for seg in scan.healthy.into_values() {
            session.segments.insert(seg.path.clone(), seg);
        }
        for table in Table::ALL {
            session.register(table)?;
        }
        views::register(&session.ctx).await?;
        Ok(session)
    }

    /// (Re)registers `table` over its segments in [`RemoteSession::segments`].
    fn register(&self, table: Table) -> Result<()> {
        let mut segs: Vec<&Listed> = self
            .segments
            .values()
            .filter(|s| s.partition.table == table)
            .collect();
        segs.sort_by(|a, b| a.rel.cmp(&b.rel));
        let plan = table_plan(table, &segs)?;
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
            let mut refused = Vec::new();
            for path in files_read(&optimized)? {
                match self.check(&path).await {
                    Ok(()) => {}
                    Err(FleetError::Refused { path, reason }) => refused.push((path, reason)),
                    Err(e) => return Err(e),
                }
            }
            if refused.is_empty() {
                return Ok(frame.execute_stream().await?);
            }
            let mut tables = Vec::new();
            for (path, reason) in refused {
                if let Some(seg) = self.segments.remove(&path) {
                    tables.push(seg.partition.table);
                }
                self.skipped.push(Skipped { path, reason });
            }
            tables.sort();
            tables.dedup();
            for table in tables {
                self.register(table)?;
            }
        }
    }

    /// Hashes the segment at `path` against what the manifest sealed.
    async fn check(&self, path: &Path) -> Result<()> {
        let Some(seg) = self.segments.get(path).cloned() else {
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

/// The columns of a table as the local engine shows them: the stored schema, then the
/// partition columns.
fn table_schema(table: Table) -> Schema {
    let stored = schema_of(table);
    let mut fields: Vec<Field> = stored.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(
        PARTITION_COLUMNS
            .iter()
            .map(|c| Field::new(*c, DataType::Utf8, false)),
    );
    Schema::new(fields)
}

/// The `dt` and `hour` directory values of a segment, from its path in the store (as the
/// local engine's partition columns take them).
fn partition_values(seg: &Listed) -> Option<(String, String)> {
    let mut dt = None;
    let mut hour = None;
    for part in seg.rel.split('/') {
        if let Some(v) = part.strip_prefix("dt=") {
            dt = Some(v.to_string());
        } else if let Some(v) = part.strip_prefix("hour=") {
            hour = Some(v.to_string());
        }
    }
    Some((dt?, hour?))
}

/// The plan of one table over `segs` (see the module docs).
fn table_plan(table: Table, segs: &[&Listed]) -> Result<LogicalPlan> {
    let mut groups: BTreeMap<(String, String), Vec<ListingTableUrl>> = BTreeMap::new();
    for seg in segs {
        // The local engine ignores a file outside a dt=/hour= directory; so does this one.
        let Some(key) = partition_values(seg) else {
            continue;
        };
        // A file URL built from the path, not parsed from text: a segment name is never read
        // as a glob.
        let file = url::Url::from_file_path(&seg.path).map_err(|()| FleetError::Refused {
            path: seg.path.clone(),
            reason: "not an absolute path".into(),
        })?;
        let url = ListingTableUrl::try_new(file, None)?;
        groups.entry(key).or_default().push(url);
    }
    let stored = schema_of(table);
    let mut union: Option<LogicalPlanBuilder> = None;
    for ((dt, hour), files) in groups {
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
            .chain([lit(dt).alias("dt"), lit(hour).alias("hour")])
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
            schema: Arc::new(table_schema(table).try_into()?),
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
