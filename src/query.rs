//! `quarry sql`, `quarry timeline` and `quarry hunt`: the investigator's commands over
//! quarry-query.

use std::io::Write;
use std::path::{Path, PathBuf};

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
    let catalog = match bucket_url(store)? {
        Some(url) => Catalog::open_bucket(&url, budget.session())
            .await
            .with_context(|| format!("opening the bucket {url}"))?,
        None => Catalog::open_with(store, budget.session())
            .await
            .with_context(|| format!("opening the store {}", store.display()))?,
    };
    warn_left_out(catalog.skipped());
    Ok(catalog)
}

/// The bucket `--store` names, if it names one rather than a directory.
pub(crate) fn bucket_url(store: &Path) -> anyhow::Result<Option<quarry_bucket::BucketUrl>> {
    match store.to_str() {
        Some(text) if quarry_bucket::BucketUrl::is_bucket(text) => {
            Ok(Some(quarry_bucket::BucketUrl::parse(text)?))
        }
        _ => Ok(None),
    }
}

/// Warns about segments skipped since the first `already` were reported.
fn warn_skipped(catalog: &Catalog, already: usize) -> usize {
    warn_left_out(&catalog.skipped()[already.min(catalog.skipped().len())..]);
    catalog.skipped().len()
}

/// Warns about segments a session left out (the manifest does not vouch for them, or they
/// failed their check).
pub(crate) fn warn_left_out(skipped: &[quarry_query::Skipped]) {
    for s in skipped {
        eprintln!(
            "warning: skipped segment {}: {} (run `quarry verify` to check the store)",
            crate::output::shown(&s.path.display().to_string()),
            crate::output::shown(&s.reason)
        );
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
        match &args.query {
            Some(q) => {
                let reported = catalog.skipped().len();
                let stream = catalog.sql_stream(q).await.map_err(explain)?;
                warn_skipped(&catalog, reported);
                let mut dest = Destination::open(args.output.as_deref(), &store_dir)?;
                write_stream(stream, out_format(args.format), dest.writer()).await?;
                dest.finish()?;
                Ok(exit::OK)
            }
            None => repl(&mut catalog, args.format).await,
        }
    })
}

/// Writes a result as its batches arrive.
async fn write_stream(
    mut stream: quarry_query::ResultStream,
    format: OutFormat,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let mut writer = output::Writer::new(format, stream.schema(), out)?;
    while let Some(batch) = stream.next().await {
        writer.write(&batch.map_err(explain)?)?;
    }
    writer.finish()?;
    Ok(())
}

/// Adds what to do next to errors users can fix.
fn explain(e: QueryError) -> anyhow::Error {
    match e {
        QueryError::Sql(_) => anyhow::Error::new(e)
            .context("the query is not valid SQL for this store (`\\d` lists tables and columns)"),
        other => anyhow::Error::new(other),
    }
}

async fn repl(catalog: &mut Catalog, format: QueryFormat) -> anyhow::Result<u8> {
    use rustyline::error::ReadlineError;
    let mut editor = rustyline::DefaultEditor::new().context("starting the line editor")?;
    let history = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".quarry_history"));
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    println!(
        "quarry sql on {} (read-only). End a query with ';'. \\d lists tables and views, \
         \\d NAME its columns, \\q quits.",
        crate::output::shown(&catalog.location())
    );
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            "quarry> "
        } else {
            "   ...> "
        };
        match editor.readline(prompt) {
            Ok(line) => {
                let trimmed = line.trim();
                if buffer.is_empty() && trimmed.starts_with('\\') {
                    let _ = editor.add_history_entry(trimmed);
                    if !meta_command(catalog, trimmed).await? {
                        break;
                    }
                    continue;
                }
                buffer.push_str(&line);
                buffer.push('\n');
                if !trimmed.ends_with(';') {
                    continue;
                }
                let query = std::mem::take(&mut buffer);
                let _ = editor.add_history_entry(query.trim());
                let reported = catalog.skipped().len();
                let started = std::time::Instant::now();
                match catalog.sql_stream(query.trim().trim_end_matches(';')).await {
                    Ok(stream) => {
                        warn_skipped(catalog, reported);
                        let mut out = std::io::stdout();
                        let fmt = match format {
                            QueryFormat::Parquet => OutFormat::Table,
                            f => out_format(f),
                        };
                        match write_stream(stream, fmt, &mut out).await {
                            Ok(()) => println!("{:.3}s", started.elapsed().as_secs_f64()),
                            Err(e) => eprintln!("error: {e:#}"),
                        }
                    }
                    Err(e) => eprintln!("error: {e:#}"),
                }
            }
            Err(ReadlineError::Interrupted) => buffer.clear(),
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e).context("reading a line"),
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    Ok(exit::OK)
}

/// Runs a backslash command; false means quit.
async fn meta_command(catalog: &mut Catalog, command: &str) -> anyhow::Result<bool> {
    let mut words = command.split_whitespace();
    let described = match (words.next(), words.next()) {
        (Some("\\q"), _) => return Ok(false),
        (Some("\\d"), name) => catalog.describe(name).await,
        _ => {
            eprintln!("unknown command {command}: \\d, \\d NAME, \\q");
            return Ok(true);
        }
    };
    match described {
        Ok(batches) => output::write(&batches, OutFormat::Table, &mut std::io::stdout())?,
        Err(e) => eprintln!("error: {}", quarry_store::human::with_causes(&e)),
    }
    Ok(true)
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
                let by = format!(
                    "quarry {} on {} at {} by `{}`",
                    env!("CARGO_PKG_VERSION"),
                    quarry_store::action::local_hostname(),
                    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    quarry_store::action::command_line()
                );
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
        let list = quarry_query::ioc::IocList::read(path)
            .with_context(|| format!("reading indicators from {}", path.display()))?;
        if let Some(note) = list.unmatchable() {
            eprintln!("quarry: note: {note}");
        }
        rules.push(list.rule(&path.display().to_string()));
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
            let container = timeline::find_container(&mut catalog, c).await?;
            scope.containers = Some(vec![container.id.clone()]);
            scope = scope.within_lifetime(&container);
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
    let Some(rule) = rules.iter().find(|r| r.id == id) else {
        if let Some(e) = refused.iter().find(|e| e.rule.as_deref() == Some(id)) {
            anyhow::bail!("rule {id} was not converted: {e}");
        }
        anyhow::bail!(
            "no rule with id {id:?}: `quarry hunt --list` (with the same --rules and --sigma) lists them"
        );
    };
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
