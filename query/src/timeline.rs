//! A container's story in order: its process tree, what its processes did, the responder's
//! actions on it, and the gaps where evidence was lost.
//!
//! The container is found in the store's `container` table (by name or id prefix), which
//! also gives the hours it lived; those become `dt`/`hour` filters, so the timeline reads only
//! the partitions of its life, and the `container_id` filter prunes row groups and pages
//! inside them (the store writes segments sorted by container with page statistics).

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Int64Type, TimeUnit, TimestampMicrosecondType};
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use quarry_containers::resolve::{Among, Candidate, resolve};

use crate::{Catalog, QueryError, Result};

/// What to tell the story of.
#[derive(Debug, Clone)]
pub struct Request {
    /// Container name or id prefix.
    pub container: String,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

/// How far before and after an alert's row [`Request::around_alert`] reaches.
pub const AROUND: Duration = Duration::minutes(5);

impl Request {
    /// The timeline of the container alert `id` is about, from [`AROUND`] before its row
    /// to [`AROUND`] after (`since` and `until` override either end).
    pub async fn around_alert(
        catalog: &mut Catalog,
        id: &str,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> Result<Request> {
        // Alert ids are hex: anything else is refused before it gets near SQL.
        if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(QueryError::Around(format!(
                "{id:?} is not an alert id (hex, as in the alert's alert_id or `quarry sql \
                 \"SELECT alert_id, rule, time FROM alert\"`)"
            )));
        }
        let sql = format!(
            "SELECT container_id, coalesce(event_time, time) AS at FROM alert \
             WHERE alert_id = '{}' LIMIT 1",
            id.to_ascii_lowercase()
        );
        let batches = catalog.sql(&sql).await?;
        let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
            return Err(QueryError::Around(format!(
                "no alert {id} in the store (`SELECT alert_id FROM alert` lists them)"
            )));
        };
        let ids = batch.column(0).as_string_opt::<i32>();
        let at = batch
            .column(1)
            .as_primitive_opt::<TimestampMicrosecondType>();
        let (Some(ids), Some(at)) = (ids, at) else {
            return Err(QueryError::Around(
                "the alert table's container_id is not text or its time not a timestamp".into(),
            ));
        };
        if ids.is_null(0) {
            return Err(QueryError::Around(format!(
                "alert {id} is about the host or the recorder, not a container: `quarry sql \
                 \"SELECT * FROM alert WHERE alert_id = '{id}'\"` shows the row behind it"
            )));
        }
        let at = DateTime::from_timestamp_micros(at.value(0)).unwrap_or_default();
        Ok(Request {
            container: ids.value(0).to_string(),
            since: Some(since.unwrap_or(at - AROUND)),
            until: Some(until.unwrap_or(at + AROUND)),
        })
    }
}

/// The container as the store knows it.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerInfo {
    pub id: String,
    pub name: Option<String>,
    pub runtime: Option<String>,
    pub image: Option<String>,
    pub host: Option<String>,
    pub first_seen: Option<DateTime<Utc>>,
    pub last_seen: Option<DateTime<Utc>>,
}

/// One step of the story.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub time: DateTime<Utc>,
    pub ktime_ns: Option<u64>,
    /// process | signal | file | net | action | gap
    pub source: String,
    pub event: String,
    pub pid: Option<i64>,
    pub comm: Option<String>,
    pub summary: String,
}

/// One process instance (pid + start time) and the ones it started.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessNode {
    pub pid: i64,
    pub start_ns: u64,
    pub ppid: Option<i64>,
    pub comm: Option<String>,
    /// Every image the process executed, in order.
    pub exec_chain: Vec<Exec>,
    pub forked: Option<DateTime<Utc>>,
    pub exited: Option<DateTime<Utc>>,
    pub exit_code: Option<i64>,
    pub exit_signal: Option<i64>,
    pub children: Vec<ProcessNode>,
}

/// One exec of a process.
#[derive(Debug, Clone, Serialize)]
pub struct Exec {
    pub time: DateTime<Utc>,
    pub filename: String,
    pub argv: Vec<String>,
    /// The program's name, also when it ran as a busybox applet ([`crate::views::PROGRAM`]).
    pub program: String,
}

/// One finding of the container's least-privilege posture as the recorder judged it (the
/// `posture` table).
#[derive(Debug, Clone, Serialize)]
pub struct PostureFinding {
    /// When the assessment was made.
    pub time: DateTime<Utc>,
    /// The check's id (`cap-sys-admin`, `host-net`, ...); `none` when nothing was found.
    pub check_id: String,
    pub severity: String,
    pub title: String,
    pub evidence: String,
    pub fix: Option<String>,
    pub cis: Option<String>,
}

/// A container's timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    pub container: ContainerInfo,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// The last posture assessment recorded up to the end of the window (empty: none was).
    pub posture: Vec<PostureFinding>,
    pub processes: Vec<ProcessNode>,
    pub events: Vec<Event>,
}

impl Timeline {
    /// Builds the timeline of `request.container` from `catalog`.
    pub async fn build(catalog: &mut Catalog, request: &Request) -> Result<Timeline> {
        let container = find_container(catalog, &request.container).await?;
        let since = request.since.or(container.first_seen);
        let until = request.until.or(container.last_seen);
        let id = sql_literal(&container.id);
        let window = window_predicate(since, until);

        let mut events = Vec::new();
        let sql = format!(
            "SELECT time, ktime_ns, source, event, pid, comm, summary FROM events \
             WHERE container_id = {id} AND source <> 'action' AND {window}"
        );
        events.extend(read_events(&catalog.run_resilient(&sql).await?)?);
        // Actions are few and may come after the container's last recorded event (release
        // after exit): no partition window for them.
        let sql = format!(
            "SELECT time, ktime_ns, source, event, pid, comm, summary FROM events \
             WHERE container_id = {id} AND source = 'action'{}",
            time_bounds(since, None)
        );
        events.extend(read_events(&catalog.run_resilient(&sql).await?)?);
        if let Some(host) = &container.host {
            let sql = format!(
                "SELECT time, ktime_ns, source, event, pid, comm, summary FROM events \
                 WHERE source = 'gap' AND host = {} AND {window}",
                sql_literal(host)
            );
            events.extend(read_events(&catalog.run_resilient(&sql).await?)?);
        }
        events.sort_by_key(|e| (e.time, e.ktime_ns.unwrap_or(0)));

        let sql = format!(
            "SELECT pid, start_ns, ppid, parent_start_ns, event, time, ktime_ns, filename, argv, \
                    {} AS program, comm, exit_code, exit_signal \
             FROM process WHERE container_id = {id} AND event IN ('fork', 'exec', 'exit') \
             AND start_ns IS NOT NULL AND {window} ORDER BY ktime_ns",
            crate::views::PROGRAM
        );
        let processes = process_tree(&catalog.run_resilient(&sql).await?)?;
        let posture = read_posture(catalog, &id, until).await?;
        Ok(Timeline {
            container,
            since,
            until,
            posture,
            processes,
            events,
        })
    }
}

impl Timeline {
    /// The timeline as text for a terminal: facts, the process tree, then every step.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let c = &self.container;
        let mut out = String::new();
        let shown = |v: Option<&str>| crate::output::printable(v.unwrap_or("-"));
        let _ = writeln!(
            out,
            "container {} ({}) runtime {} image {} host {}",
            shown(c.name.as_deref()),
            shown(Some(&c.id)),
            shown(c.runtime.as_deref()),
            shown(c.image.as_deref()),
            shown(c.host.as_deref()),
        );
        let fmt = |t: Option<DateTime<Utc>>| {
            t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_else(|| "-".into())
        };
        let _ = writeln!(out, "window    {} .. {}", fmt(self.since), fmt(self.until));
        if !self.posture.is_empty() {
            let _ = writeln!(
                out,
                "\nposture (as recorded {})",
                fmt(Some(self.posture[0].time))
            );
            for p in &self.posture {
                let _ = writeln!(
                    out,
                    "  {:<8} {:<18} {} {}",
                    crate::output::printable(&p.severity),
                    crate::output::printable(&p.check_id),
                    crate::output::printable(&p.title),
                    crate::output::printable(&p.evidence)
                );
            }
        }
        let _ = writeln!(out, "\nprocesses");
        fn tree(out: &mut String, p: &ProcessNode, depth: usize) {
            let images: Vec<String> = p
                .exec_chain
                .iter()
                .map(|e| format!("{} [{}]", e.filename, e.argv.join(" ")))
                .collect();
            let what = if images.is_empty() {
                p.comm.clone().unwrap_or_else(|| "?".into())
            } else {
                images.join(" => ")
            };
            let end = match (p.exit_code, p.exit_signal) {
                (_, Some(s)) => format!(" (killed by signal {s})"),
                (Some(c), None) => format!(" (exit {c})"),
                _ => String::new(),
            };
            let what = crate::output::printable(&what);
            let _ = writeln!(out, "{}{} {}{}", "  ".repeat(depth + 1), p.pid, what, end);
            p.children.iter().for_each(|c| tree(out, c, depth + 1));
        }
        self.processes.iter().for_each(|p| tree(&mut out, p, 0));
        let _ = writeln!(out, "\nsteps ({})", self.events.len());
        for e in &self.events {
            let _ = writeln!(
                out,
                "  {}  {:<7} {:>7} {:<15} {}",
                e.time.format("%Y-%m-%d %H:%M:%S%.3f"),
                crate::output::printable(&e.source),
                e.pid.map(|p| p.to_string()).unwrap_or_default(),
                crate::output::printable(e.comm.as_deref().unwrap_or("")),
                crate::output::printable(&e.summary)
            );
        }
        out
    }
}

/// Finds the one container `given` names (exact id, name, or id prefix) among those the
/// store's `container` table recorded; the choice is [`quarry_containers::resolve`]'s.
pub async fn find_container(catalog: &mut Catalog, given: &str) -> Result<ContainerInfo> {
    check_container_arg(given)?;
    let lit = sql_literal(given);
    let sql = format!(
        "SELECT container_id, max(name) AS name, max(runtime) AS runtime, max(image) AS image, \
                max(host) AS host, min(first_seen) AS first_seen, max(last_seen) AS last_seen \
         FROM container \
         WHERE container_id = {lit} OR name = {lit} OR starts_with(container_id, {lit}) \
         GROUP BY container_id ORDER BY container_id"
    );
    let batches = catalog.run_resilient(&sql).await?;
    let mut found: Vec<ContainerInfo> = Vec::new();
    for b in &batches {
        let r = Rows::new(b)?;
        for i in 0..b.num_rows() {
            found.push(ContainerInfo {
                id: r.string("container_id", i).unwrap_or_default(),
                name: r.string("name", i),
                runtime: r.string("runtime", i),
                image: r.string("image", i),
                host: r.string("host", i),
                first_seen: r.time("first_seen", i),
                last_seen: r.time("last_seen", i),
            });
        }
    }
    // A name may belong to several containers over time (a re-created `web`, replicas):
    // the resolver makes the user choose by id then.
    Ok(resolve(given, Among::Store, &found)?.clone())
}

/// An id with its recorded life, for choosing between candidates.
impl Candidate for ContainerInfo {
    fn id(&self) -> &str {
        &self.id
    }
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
    fn describe(&self) -> String {
        let when = |t: Option<DateTime<Utc>>| {
            t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_else(|| "?".into())
        };
        let name = self
            .name
            .as_deref()
            .map(|n| format!(" {n}"))
            .unwrap_or_default();
        format!(
            "{}{name} (seen {} .. {})",
            self.id,
            when(self.first_seen),
            when(self.last_seen)
        )
    }
}

/// Container names and ids are `[A-Za-z0-9_.-]` in every runtime; anything else is refused
/// before it gets near SQL.
pub fn check_container_arg(given: &str) -> Result<()> {
    if given.is_empty()
        || !given
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(QueryError::Refused(format!(
            "{given:?} is not a container name or id (letters, digits, '_', '.', '-')"
        )));
    }
    Ok(())
}

/// A SQL string literal.
pub(crate) fn sql_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `dt`/`hour` partition bounds plus exact time bounds for `[since, until]`.
pub(crate) fn window_predicate(
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> String {
    let mut parts = vec!["TRUE".to_string()];
    if let Some(s) = since {
        let (dt, hour) = partition_of(s);
        parts.push(format!(
            "(dt > '{dt}' OR (dt = '{dt}' AND hour >= '{hour}'))"
        ));
    }
    if let Some(u) = until {
        let (dt, hour) = partition_of(u);
        parts.push(format!(
            "(dt < '{dt}' OR (dt = '{dt}' AND hour <= '{hour}'))"
        ));
    }
    parts.join(" AND ") + &time_bounds(since, until)
}

fn time_bounds(since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) -> String {
    let mut out = String::new();
    if let Some(s) = since {
        out += &format!(" AND time >= {}", timestamp_literal(s));
    }
    if let Some(u) = until {
        // The container table's last_seen is when its last interval was sealed; events of
        // that interval are earlier, but a second of slack keeps clock rounding out of it.
        out += &format!(
            " AND time <= {}",
            timestamp_literal(u + Duration::seconds(1))
        );
    }
    out
}

pub(crate) fn timestamp_literal(t: DateTime<Utc>) -> String {
    format!(
        "arrow_cast('{}', 'Timestamp(Microsecond, Some(\"UTC\"))')",
        t.format("%Y-%m-%dT%H:%M:%S%.6fZ")
    )
}

fn partition_of(t: DateTime<Utc>) -> (String, String) {
    (t.format("%Y-%m-%d").to_string(), t.format("%H").to_string())
}

/// The last posture assessment of the container `id` (a SQL literal) made up to `until`: the
/// rows of one assessment share its time.
async fn read_posture(
    catalog: &mut Catalog,
    id: &str,
    until: Option<DateTime<Utc>>,
) -> Result<Vec<PostureFinding>> {
    let bound = time_bounds(None, until);
    let sql = format!(
        "SELECT time, check_id, severity, title, evidence, fix, cis FROM posture \
         WHERE container_id = {id} AND time = (\
           SELECT max(time) FROM posture WHERE container_id = {id}{bound}) \
         ORDER BY check_id"
    );
    let mut out = Vec::new();
    for b in &catalog.run_resilient(&sql).await? {
        let r = Rows::new(b)?;
        for i in 0..b.num_rows() {
            out.push(PostureFinding {
                time: r.time("time", i).unwrap_or_default(),
                check_id: r.string("check_id", i).unwrap_or_default(),
                severity: r.string("severity", i).unwrap_or_default(),
                title: r.string("title", i).unwrap_or_default(),
                evidence: r.string("evidence", i).unwrap_or_default(),
                fix: r.string("fix", i),
                cis: r.string("cis", i),
            });
        }
    }
    Ok(out)
}

fn read_events(batches: &[RecordBatch]) -> Result<Vec<Event>> {
    let mut out = Vec::new();
    for b in batches {
        let r = Rows::new(b)?;
        for i in 0..b.num_rows() {
            out.push(Event {
                time: r.time("time", i).unwrap_or_default(),
                ktime_ns: r.int("ktime_ns", i).map(|v| v as u64),
                source: r.string("source", i).unwrap_or_default(),
                event: r.string("event", i).unwrap_or_default(),
                pid: r.int("pid", i),
                comm: r.string("comm", i),
                summary: r.string("summary", i).unwrap_or_default(),
            });
        }
    }
    Ok(out)
}

/// Builds the forest of process instances from fork/exec/exit rows ordered by `ktime_ns`.
fn process_tree(batches: &[RecordBatch]) -> Result<Vec<ProcessNode>> {
    type Key = ProcessKey;
    let mut nodes: BTreeMap<Key, (Option<Key>, ProcessNode)> = BTreeMap::new();
    for b in batches {
        let r = Rows::new(b)?;
        for i in 0..b.num_rows() {
            let (Some(pid), Some(start)) = (r.int("pid", i), r.int("start_ns", i)) else {
                continue;
            };
            let key = (pid, start as u64);
            let parent = match (r.int("ppid", i), r.int("parent_start_ns", i)) {
                (Some(p), Some(s)) => Some((p, s as u64)),
                _ => None,
            };
            let (node_parent, node) = nodes.entry(key).or_insert_with(|| {
                (
                    parent,
                    ProcessNode {
                        pid,
                        start_ns: start as u64,
                        ppid: r.int("ppid", i),
                        comm: None,
                        exec_chain: Vec::new(),
                        forked: None,
                        exited: None,
                        exit_code: None,
                        exit_signal: None,
                        children: Vec::new(),
                    },
                )
            });
            let time = r.time("time", i);
            node.comm = r.string("comm", i).or(node.comm.take());
            match r.string("event", i).as_deref() {
                Some("fork") => {
                    node.forked = time;
                    // The fork row names the real parent; later rows may show a reaper.
                    *node_parent = parent;
                    node.ppid = r.int("ppid", i);
                }
                Some("exec") => {
                    let filename = r.string("filename", i).unwrap_or_default();
                    node.exec_chain.push(Exec {
                        time: time.unwrap_or_default(),
                        program: r.string("program", i).unwrap_or_else(|| filename.clone()),
                        filename,
                        argv: r.list("argv", i),
                    })
                }
                Some("exit") => {
                    node.exited = time;
                    node.exit_code = r.int("exit_code", i);
                    node.exit_signal = r.int("exit_signal", i);
                }
                _ => {}
            }
        }
    }
    // Attach children to parents, deepest first, so every subtree is complete when moved.
    let mut order: Vec<Key> = nodes.keys().copied().collect();
    order.sort_by_key(|k| std::cmp::Reverse(depth(&nodes, *k)));
    let mut roots = Vec::new();
    for key in order {
        let (parent, node) = nodes.remove(&key).expect("each key is taken once");
        match parent.and_then(|p| nodes.get_mut(&p)) {
            Some((_, parent_node)) => parent_node.children.push(node),
            None => roots.push(node),
        }
    }
    fn sort(list: &mut [ProcessNode]) {
        list.sort_by_key(|n| n.start_ns);
        list.iter_mut().for_each(|n| sort(&mut n.children));
    }
    sort(&mut roots);
    Ok(roots)
}

/// A process instance: (pid, start_ns).
type ProcessKey = (i64, u64);

fn depth<V>(nodes: &BTreeMap<ProcessKey, (Option<ProcessKey>, V)>, mut key: ProcessKey) -> usize {
    let mut d = 0;
    while let Some((Some(parent), _)) = nodes.get(&key) {
        if !nodes.contains_key(parent) || d > nodes.len() {
            break;
        }
        key = *parent;
        d += 1;
    }
    d
}

/// Typed access to result columns by name, whatever physical type the engine chose (strings
/// may come back as Utf8View, integers in any width).
pub(crate) struct Rows<'a> {
    batch: &'a RecordBatch,
    cast: BTreeMap<String, std::sync::Arc<dyn Array>>,
}

impl<'a> Rows<'a> {
    pub(crate) fn new(batch: &'a RecordBatch) -> Result<Rows<'a>> {
        let mut cast_cols = BTreeMap::new();
        for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
            let target = match field.data_type() {
                DataType::Utf8View | DataType::LargeUtf8 | DataType::Dictionary(..) => {
                    Some(DataType::Utf8)
                }
                DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::UInt8
                | DataType::UInt16
                | DataType::UInt32
                | DataType::UInt64 => Some(DataType::Int64),
                DataType::Timestamp(_, _) => Some(DataType::Timestamp(
                    TimeUnit::Microsecond,
                    Some("UTC".into()),
                )),
                DataType::List(_) | DataType::LargeList(_) | DataType::ListView(_) => {
                    Some(DataType::List(std::sync::Arc::new(Field::new(
                        "item",
                        DataType::Utf8,
                        true,
                    ))))
                }
                _ => None,
            };
            if let Some(t) = target {
                cast_cols.insert(field.name().clone(), cast(column, &t)?);
            }
        }
        Ok(Rows {
            batch,
            cast: cast_cols,
        })
    }

    fn column(&self, name: &str) -> Option<&dyn Array> {
        if let Some(c) = self.cast.get(name) {
            return Some(c.as_ref());
        }
        self.batch.column_by_name(name).map(|c| c.as_ref())
    }

    pub(crate) fn string(&self, name: &str, i: usize) -> Option<String> {
        let c = self.column(name)?;
        if c.is_null(i) {
            return None;
        }
        c.as_string_opt::<i32>().map(|a| a.value(i).to_string())
    }

    pub(crate) fn int(&self, name: &str, i: usize) -> Option<i64> {
        let c = self.column(name)?;
        if c.is_null(i) {
            return None;
        }
        c.as_primitive_opt::<Int64Type>().map(|a| a.value(i))
    }

    pub(crate) fn time(&self, name: &str, i: usize) -> Option<DateTime<Utc>> {
        let c = self.column(name)?;
        if c.is_null(i) {
            return None;
        }
        c.as_primitive_opt::<TimestampMicrosecondType>()
            .and_then(|a| DateTime::from_timestamp_micros(a.value(i)))
    }

    pub(crate) fn list(&self, name: &str, i: usize) -> Vec<String> {
        let Some(c) = self.column(name) else {
            return Vec::new();
        };
        if c.is_null(i) {
            return Vec::new();
        }
        let Some(list) = c.as_list_opt::<i32>() else {
            return Vec::new();
        };
        let values = list.value(i);
        let strings = values.as_string::<i32>();
        (0..strings.len())
            .filter(|j| !strings.is_null(*j))
            .map(|j| strings.value(j).to_string())
            .collect()
    }
}
