//! `quarry sql`, `quarry timeline` and `quarry hunt`: the investigator's commands over
//! quarry-query.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use quarry_query::findings;
use quarry_query::fixture::CaseResult;
use quarry_query::hunt::{self, Scope};
use quarry_query::output::{self, Destination, Format as OutFormat};
use quarry_query::report::Report;
use quarry_query::timeline::{self, Timeline};
use quarry_query::{Catalog, QueryError};

use crate::cli::{
    Format, HuntArgs, QueryBudget, QueryFormat, SqlArgs, TimelineArgs, TimelineFormat,
};
use crate::exit;
use crate::output::print_rows;

/// The session over `--store`: a directory, or a fleet's bucket (`s3://BUCKET/PREFIX`).
pub(crate) async fn open(store: &Path, budget: &QueryBudget) -> anyhow::Result<Catalog> {
    let catalog = Catalog::open_location(store, budget.session()).await?;
    warn_left_out(catalog.skipped());
    Ok(catalog)
}

/// Warns about segments a session left out (the manifest does not vouch for them, or they
/// failed their check).
pub(crate) fn warn_left_out(skipped: &[quarry_query::Skipped]) {
    for s in skipped {
        eprintln!("warning: {s}");
    }
}

pub(crate) fn out_format(f: QueryFormat) -> OutFormat {
    match f {
        QueryFormat::Table => OutFormat::Table,
        QueryFormat::Csv => OutFormat::Csv,
        QueryFormat::Json => OutFormat::Json,
        QueryFormat::Parquet => OutFormat::Parquet,
    }
}

pub fn sql(args: SqlArgs) -> anyhow::Result<u8> {
    if args.engine.engine == crate::cli::fleet::Engine::Ballista {
        return crate::fleet::sql(args);
    }
    let store_dir = args.store.resolve();
    if args.format == QueryFormat::Parquet && args.output.is_none() {
        bail!("--format parquet writes a file: add -o FILE");
    }
    let rt = crate::runtime()?;
    rt.block_on(async {
        let mut catalog = open(&store_dir, &args.budget).await?;
        let Some(q) = &args.query else {
            quarry_query::shell::run(&mut catalog, out_format(args.format)).await?;
            return Ok(exit::OK);
        };
        let reported = catalog.skipped().len();
        let stream = catalog.sql_stream(q).await.map_err(QueryError::explained)?;
        warn_left_out(catalog.skipped_since(reported));
        let mut dest = Destination::open(args.output.as_deref(), &store_dir)?;
        output::write_stream(stream, out_format(args.format), dest.writer()).await?;
        dest.finish()?;
        Ok(exit::OK)
    })
}

pub fn timeline(args: TimelineArgs) -> anyhow::Result<u8> {
    let store_dir = args.store.resolve();
    let rt = crate::runtime()?;
    rt.block_on(async {
        let mut catalog = open(&store_dir, &args.budget).await?;
        let request = match &args.around {
            Some(id) => {
                timeline::Request::around_alert(&mut catalog, id, args.since, args.until).await?
            }
            None => timeline::Request {
                container: args.container.clone().unwrap_or_default(),
                since: args.since,
                until: args.until,
            },
        };
        let mut dest = Destination::open(args.output.as_deref(), &store_dir)?;
        let out = dest.writer();
        let context = || format!("building the timeline of {}", request.container);
        match args.format {
            TimelineFormat::Table => {
                let timeline = Timeline::build(&mut catalog, &request)
                    .await
                    .with_context(context)?;
                out.write_all(timeline.to_text().as_bytes())?
            }
            TimelineFormat::Json => {
                let timeline = Timeline::build(&mut catalog, &request)
                    .await
                    .with_context(context)?;
                serde_json::to_writer_pretty(&mut *out, &timeline)?;
                writeln!(out)?;
            }
            TimelineFormat::Html => {
                // The responder's page marks what the built-in rules find in the same window.
                let report = Report::build(&mut catalog, &request, &hunt::builtin_rules())
                    .await
                    .with_context(context)?;
                let by = quarry_query::html::generated_now();
                out.write_all(quarry_query::html::render(&report, &by).as_bytes())?
            }
        }
        dest.finish()?;
        Ok(exit::OK)
    })
}

pub fn hunt(args: HuntArgs) -> anyhow::Result<u8> {
    let store_dir = args.store.resolve();
    let loaded = hunt::RuleSources {
        builtin: !args.no_builtin,
        rules: args.rules.as_deref(),
        sigma: args.sigma.as_deref(),
    }
    .load()?;
    for refused in &loaded.refused {
        eprintln!("quarry: skipped {refused}");
    }
    let (mut rules, sigma_refused) = (loaded.rules, loaded.refused);
    if let Some(path) = &args.ioc {
        let (rule, note) = hunt::indicator_rule(path)?;
        if let Some(note) = note {
            eprintln!("quarry: note: {note}");
        }
        rules.push(rule);
    }
    if let Some(id) = &args.explain {
        return explain_rule(&rules, &sigma_refused, id, args.out.format);
    }
    if args.list {
        match args.out.format {
            Format::Json => println!("{}", serde_json::to_string_pretty(&rules)?),
            Format::Table => print_rows(&hunt::Rule::COLUMNS, &rules, hunt::Rule::row),
        }
        return Ok(exit::OK);
    }
    if args.test {
        return test_rules(&rules, args.out.format);
    }
    let rt = crate::runtime()?;
    rt.block_on(async {
        let mut catalog = open(&store_dir, &args.budget).await?;
        let mut scope = Scope {
            since: args.since,
            until: args.until,
            containers: None,
        };
        if let Some(c) = &args.container {
            scope = scope.for_container(&mut catalog, c).await?;
        }
        let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
        let json = args.out.format == Format::Json;
        let count = findings::write_hunt(&mut catalog, &rules, &scope, json, &mut out).await?;
        if !json {
            eprintln!(
                "{count} finding(s) from {} rule(s); ROW is table@ktime_ns of the row behind it",
                rules.len()
            );
        }
        out.flush()?;
        Ok(if count == 0 { exit::OK } else { exit::FINDINGS })
    })
}

/// `quarry hunt --explain ID`: the SQL a rule runs (before the hunt's window and container
/// filters wrap it).
fn explain_rule(
    rules: &[hunt::Rule],
    refused: &[quarry_query::sigma::SigmaError],
    id: &str,
    format: Format,
) -> anyhow::Result<u8> {
    let rule = hunt::find_rule(rules, refused, id)?;
    let text = match format {
        Format::Json => serde_json::to_string_pretty(&rule.explain_json())?,
        Format::Table => rule.explain_text(),
    };
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        // A closed stdout (a pipe into `head`) ends the output; nothing else is lost.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other?,
    }
    Ok(exit::OK)
}

/// `quarry hunt --test`: every rule's fixture cases, each over a throw-away store.
fn test_rules(rules: &[hunt::Rule], format: Format) -> anyhow::Result<u8> {
    let tested = crate::runtime()?.block_on(quarry_query::fixture::run_all(rules))?;
    let (failed, results, untested) = (tested.failed(), tested.results, tested.untested);
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&results)?),
        Format::Table => print_rows(&CaseResult::COLUMNS, &results, CaseResult::row),
    }
    for origin in &untested {
        eprintln!(
            "quarry: rule {origin} has no fixture: add <rule>.test.json beside it with a \
             positive and a negative case"
        );
    }
    if failed > 0 || !untested.is_empty() {
        anyhow::bail!(
            "{failed} fixture case(s) failed, {} rule(s) without a fixture",
            untested.len()
        );
    }
    Ok(exit::OK)
}
