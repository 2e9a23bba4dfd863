//! `quarry sql`, `quarry timeline` and `quarry hunt`: the investigator's commands over
//! quarry-query.

use std::io::Write;
use std::path::Path;

use anyhow::bail;
use quarry_query::findings;
use quarry_query::fixture::CaseResult;
use quarry_query::hunt::{self, Scope};
use quarry_query::output::{self, Destination, Format as OutFormat};
use quarry_query::page;
use quarry_query::{Catalog, QueryError};

use crate::cli::{
    Format, HuntArgs, QueryBudget, QueryFormat, SqlArgs, TimelineArgs, TimelineFormat,
};
use crate::exit;
use crate::output::{emit, print_rows};

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
        let (around, container) = (args.around.as_deref(), args.container.as_deref());
        let request = page::request(&mut catalog, around, container, args.since, args.until);
        let request = request.await?;
        let form = match args.format {
            TimelineFormat::Table => page::Form::Text,
            TimelineFormat::Json => page::Form::Json,
            TimelineFormat::Html => page::Form::Html,
        };
        let mut dest = Destination::open(args.output.as_deref(), &store_dir)?;
        let document = page::render(&mut catalog, &request, form).await?;
        dest.writer().write_all(document.as_bytes())?;
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
        // The SQL a rule runs (before the hunt's window and container filters wrap it).
        let rule = hunt::find_rule(&rules, &sigma_refused, id)?;
        emit(args.out.format, &rule.explain_json(), |w| {
            writeln!(w, "{}", rule.explain_text())
        })?;
        return Ok(exit::OK);
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
