//! The responder's report of a container as one self-contained HTML page: no fetches, no
//! external fonts or scripts, so it opens the same on an air-gapped laptop years from now.
//!
//! The page shows the container's facts, the rules' findings (severity, ATT&CK techniques,
//! a link to the step behind each), a time axis with findings, alerts, responder actions and
//! gaps on it, the process tree (collapsible, with program names as the `execs` view resolves
//! them, busybox applets included) and every step, with a filter. Its Content-Security-Policy
//! allows no inline code but the page's own style sheet and script, by their SHA-256: text
//! from the store can never become markup or script (everything is escaped), and even if it
//! did, the browser would not run it. The script only filters; the page reads fine without
//! it.
//!
//! It renders a [`Report`] it is given and runs no query: the timeline and report modules do
//! not know this one.

use std::collections::HashMap;
use std::fmt::Write;

use base64::Engine;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::hunt::{Finding, Severity};
use crate::report::Report;
use crate::timeline::{Event, ProcessNode};

/// The kinds of steps, their colour and what they mean.
const SOURCES: [(&str, &str, &str); 7] = [
    ("process", "#2b6cb0", "process started, executed or exited"),
    ("signal", "#c53030", "privilege or container-escape signal"),
    ("file", "#2f855a", "file touched"),
    ("net", "#b7791f", "network connection"),
    ("alert", "#d53f8c", "alert raised live by the recorder"),
    ("action", "#6b46c1", "responder action"),
    ("gap", "#4a5568", "events lost (evidence gap)"),
];

/// The colour of each severity, least severe first (as [`Severity::ALL`]).
const SEVERITY_COLOURS: [&str; 5] = ["#718096", "#3182ce", "#d69e2e", "#dd6b20", "#c53030"];

/// The class of a step's source; a source the page does not know is drawn as `other`.
fn source_class(source: &str) -> &'static str {
    SOURCES
        .iter()
        .find(|(s, _, _)| *s == source)
        .map(|(s, _, _)| *s)
        .unwrap_or("other")
}

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.3f").to_string()
}

/// The CSP source expression allowing exactly `text` as an inline style sheet or script.
fn csp_hash(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// The page's style sheet: the fixed rules and a colour class per source and severity.
fn style() -> String {
    let mut css = STYLE.to_string();
    for (source, colour, _) in SOURCES {
        let _ = write!(
            css,
            ".src-{source}{{background:{colour}}}circle.src-{source}{{fill:{colour}}}"
        );
    }
    for (severity, colour) in Severity::ALL.iter().zip(SEVERITY_COLOURS) {
        let s = severity.as_str();
        let _ = write!(
            css,
            ".sev-{s} .badge,.badge.sev-{s},.dot.sev-{s}{{background:{colour}}}\
             circle.sev-{s}{{fill:{colour}}}tr.flagged.sev-{s} td:first-child{{border-left:4px solid {colour}}}"
        );
    }
    css.push('\n');
    css
}

/// Renders `report` as a complete HTML document.
pub fn render(report: &Report, generated_by: &str) -> String {
    let timeline = &report.timeline;
    let c = &timeline.container;
    let title = format!(
        "Timeline of container {}",
        c.name.clone().unwrap_or_else(|| short(&c.id))
    );
    let style = style();
    let steps = StepFindings::new(&timeline.events, &report.findings);
    let programs = Programs::new(&timeline.processes);

    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src {}; script-src {}; img-src data:; base-uri 'none'; form-action 'none'\">\
         <title>{}</title><style>{style}</style></head><body>\n",
        csp_hash(&style),
        csp_hash(SCRIPT),
        escape(&title)
    );
    let _ = writeln!(html, "<h1>{}</h1>", escape(&title));
    let _ = writeln!(
        html,
        "<p class=\"intro\">What happened inside this container, in order, as recorded by \
         Quarry's kernel-level recorder: first what the detection rules found, then when \
         things happened (hover a dot for details), the processes that ran (each one started \
         by the one above it) and every recorded step.</p>"
    );
    html.push_str("<table class=\"facts\">");
    let mut fact = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            let _ = write!(
                html,
                "<tr><th>{}</th><td>{}</td></tr>",
                escape(k),
                escape(&v)
            );
        }
    };
    fact("Container id", Some(c.id.clone()));
    fact("Name", c.name.clone());
    fact("Runtime", c.runtime.clone());
    fact("Image", c.image.clone());
    fact("Host", c.host.clone());
    fact("From", timeline.since.map(ts));
    fact("To", timeline.until.map(ts));
    fact("Steps", Some(timeline.events.len().to_string()));
    fact("Findings", Some(findings_summary(report)));
    fact(
        "Posture",
        Some(match timeline.posture.as_slice() {
            [] => "not recorded (the recorder judges it when it first sees a container)".into(),
            [only] if only.check_id == "none" => "no least-privilege finding".into(),
            all => format!("{} least-privilege findings", all.len()),
        }),
    );
    fact("Generated by", Some(generated_by.to_string()));
    html.push_str("</table>\n");

    posture_table(&mut html, report);
    findings_table(&mut html, report, &steps, &programs);

    html.push_str("<h2 id=\"when\">When</h2>\n");
    html.push_str(&plot(report));

    html.push_str("<h2 id=\"processes\">Processes</h2>\n");
    if timeline.processes.is_empty() {
        html.push_str("<p>No process starts were recorded in this window.</p>\n");
    } else {
        html.push_str("<ul class=\"tree\">");
        for p in &timeline.processes {
            tree(&mut html, p);
        }
        html.push_str("</ul>\n");
    }

    steps_table(&mut html, report, &steps, &programs);
    let _ = write!(html, "<script>{SCRIPT}</script>\n</body></html>\n");
    html
}

/// "3 (1 high, 2 medium)", most severe first.
fn findings_summary(report: &Report) -> String {
    let total = report.findings.len() as u64 + report.findings_left_out;
    if total == 0 {
        return "none".into();
    }
    let mut by: Vec<String> = Vec::new();
    for severity in Severity::ALL.iter().rev() {
        let n = report
            .findings
            .iter()
            .filter(|f| f.severity == *severity)
            .count();
        if n > 0 {
            by.push(format!("{n} {}", severity.as_str()));
        }
    }
    let mut text = format!("{total} ({})", by.join(", "));
    if report.findings_left_out > 0 {
        let _ = write!(
            text,
            "; {} not shown (`quarry hunt --container` lists them all)",
            report.findings_left_out
        );
    }
    text
}

/// Which step each finding points at, and the findings of each step.
struct StepFindings {
    /// finding index -> step index
    step_of: Vec<Option<usize>>,
    /// step index -> finding indexes
    of_step: HashMap<usize, Vec<usize>>,
}

impl StepFindings {
    fn new(events: &[Event], findings: &[Finding]) -> StepFindings {
        // A finding names its row by table, pid and ktime_ns; the steps carry the same.
        let mut by_row: HashMap<(i64, u64), Vec<usize>> = HashMap::new();
        for (i, e) in events.iter().enumerate() {
            if let (Some(pid), Some(k)) = (e.pid, e.ktime_ns) {
                by_row.entry((pid, k)).or_default().push(i);
            }
        }
        fn table_of(source: &str) -> &str {
            match source {
                "process" | "signal" => "process",
                other => other,
            }
        }
        let mut step_of = Vec::with_capacity(findings.len());
        let mut of_step: HashMap<usize, Vec<usize>> = HashMap::new();
        for (f, finding) in findings.iter().enumerate() {
            let step = match (finding.pid, finding.ktime_ns) {
                (Some(pid), Some(k)) => by_row.get(&(pid, k)).and_then(|steps| {
                    steps
                        .iter()
                        .copied()
                        .find(|s| table_of(&events[*s].source) == finding.source_table)
                }),
                _ => None,
            };
            if let Some(s) = step {
                of_step.entry(s).or_default().push(f);
            }
            step_of.push(step);
        }
        StepFindings { step_of, of_step }
    }

    /// The most severe finding of step `s`, if it has any.
    fn severity(&self, s: usize, findings: &[Finding]) -> Option<Severity> {
        self.of_step
            .get(&s)?
            .iter()
            .map(|f| findings[*f].severity)
            .max()
    }
}

/// The program each process ran at a given time, from the process tree's execs.
struct Programs {
    /// pid -> (exec time, program), in time order
    execs: HashMap<i64, Vec<(DateTime<Utc>, String)>>,
}

impl Programs {
    fn new(roots: &[ProcessNode]) -> Programs {
        fn walk(p: &ProcessNode, execs: &mut HashMap<i64, Vec<(DateTime<Utc>, String)>>) {
            let list = execs.entry(p.pid).or_default();
            list.extend(p.exec_chain.iter().map(|e| (e.time, e.program.clone())));
            p.children.iter().for_each(|c| walk(c, execs));
        }
        let mut execs = HashMap::new();
        roots.iter().for_each(|p| walk(p, &mut execs));
        execs.values_mut().for_each(|v| v.sort());
        Programs { execs }
    }

    /// What `pid` was running at `time`: its last exec before then, else `comm`.
    fn at(&self, pid: Option<i64>, time: DateTime<Utc>, comm: Option<&str>) -> String {
        pid.and_then(|p| self.execs.get(&p))
            .and_then(|list| list.iter().rev().find(|(t, _)| *t <= time))
            .map(|(_, program)| program.clone())
            .unwrap_or_else(|| comm.unwrap_or("").to_string())
    }
}

fn badge(finding: &Finding) -> String {
    format!(
        "<span class=\"badge sev-{}\" title=\"{} ({}): {}\">{} {}</span>",
        finding.severity.as_str(),
        escape(&finding.title),
        finding.severity.as_str(),
        escape(&finding.mitre.join(", ")),
        escape(&finding.rule),
        escape(&finding.mitre.join(" "))
    )
}

/// The last recorded posture: what a compromised process in this container could do.
fn posture_table(html: &mut String, report: &Report) {
    let posture = &report.timeline.posture;
    if posture.is_empty() || posture.iter().all(|p| p.check_id == "none") {
        return;
    }
    let _ = writeln!(
        html,
        "<h2 id=\"posture\">Posture (as recorded {})</h2>",
        ts(posture[0].time)
    );
    html.push_str(
        "<table class=\"findings\"><thead><tr><th>Severity</th><th>Check</th><th>What</th>\
         <th>Evidence</th><th>Fix</th><th>CIS</th></tr></thead><tbody>\n",
    );
    for p in posture {
        // Severity names become class names: only the known ones.
        let sev = Severity::parse(&p.severity).map_or("info", Severity::as_str);
        let _ = writeln!(
            html,
            "<tr class=\"posture sev-{sev}\"><td><span class=\"badge\">{sev}</span></td>\
             <td>{}</td><td>{}</td><td class=\"summary\">{}</td><td>{}</td><td>{}</td></tr>",
            escape(&p.check_id),
            escape(&p.title),
            escape(&p.evidence),
            escape(p.fix.as_deref().unwrap_or("")),
            escape(p.cis.as_deref().unwrap_or("")),
        );
    }
    html.push_str("</tbody></table>\n");
}

fn findings_table(html: &mut String, report: &Report, steps: &StepFindings, programs: &Programs) {
    let _ = writeln!(
        html,
        "<h2 id=\"findings\">Findings ({})</h2>",
        report.findings.len() as u64 + report.findings_left_out
    );
    if report.findings.is_empty() {
        html.push_str("<p>No detection rule matched this container's rows in this window.</p>\n");
        return;
    }
    html.push_str(
        "<table class=\"findings\"><thead><tr><th>Severity</th><th>Time (UTC)</th><th>Rule</th>\
         <th>ATT&amp;CK</th><th>PID</th><th>Program</th><th>Evidence</th></tr></thead><tbody>\n",
    );
    for (i, f) in report.findings.iter().enumerate() {
        let rule = match steps.step_of[i] {
            Some(s) => format!(
                "<a href=\"#step-{}\">{}</a> {}",
                s + 1,
                escape(&f.rule),
                escape(&f.title)
            ),
            None => format!("{} {}", escape(&f.rule), escape(&f.title)),
        };
        let _ = writeln!(
            html,
            "<tr class=\"finding sev-{sev}\"><td><span class=\"badge\">{sev}</span></td>\
             <td>{}</td><td>{rule}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"summary\">{}</td></tr>",
            ts(f.time),
            escape(&f.mitre.join(", ")),
            f.pid.map(|p| p.to_string()).unwrap_or_default(),
            escape(&programs.at(f.pid, f.time, f.comm.as_deref())),
            escape(&f.evidence),
            sev = f.severity.as_str(),
        );
    }
    html.push_str("</tbody></table>\n");
    if report.findings_left_out > 0 {
        let _ = writeln!(
            html,
            "<p class=\"note\">{} more findings are not shown; `quarry hunt --container {}` \
             lists them all.</p>",
            report.findings_left_out,
            escape(&report.timeline.container.id)
        );
    }
}

fn steps_table(html: &mut String, report: &Report, steps: &StepFindings, programs: &Programs) {
    html.push_str("<h2 id=\"steps\">Steps</h2>\n<div id=\"controls\">Show: ");
    for (source, _, what) in SOURCES {
        let _ = write!(
            html,
            "<label title=\"{what}\"><input type=\"checkbox\" data-source=\"{source}\" checked> \
             <span class=\"dot src-{source}\"></span>{source}</label> "
        );
    }
    html.push_str(
        "<label><input type=\"checkbox\" id=\"flagged-only\"> only steps with findings</label> \
         <input type=\"search\" id=\"filter\" placeholder=\"Filter steps (any text)\" \
         aria-label=\"filter steps\"> <span id=\"shown\" class=\"note\"></span></div>\n\
         <table class=\"steps\"><thead><tr><th>#</th><th>Time (UTC)</th>\
         <th>What</th><th>PID</th><th>Program</th><th>Details</th></tr></thead><tbody>\n",
    );
    let findings = &report.findings;
    for (n, e) in report.timeline.events.iter().enumerate() {
        let source = source_class(&e.source);
        let (flag, badges) = match steps.severity(n, findings) {
            Some(severity) => {
                let badges: String = steps.of_step[&n]
                    .iter()
                    .map(|f| badge(&findings[*f]))
                    .collect::<Vec<_>>()
                    .join(" ");
                (format!(" flagged sev-{}", severity.as_str()), badges)
            }
            None => (String::new(), String::new()),
        };
        let _ = writeln!(
            html,
            "<tr id=\"step-{}\" class=\"step{flag}\" data-source=\"{source}\"><td>{}</td><td>{}</td>\
             <td><span class=\"dot src-{source}\"></span>{} {}</td><td>{}</td>\
             <td>{}</td><td class=\"summary\">{}{}{badges}</td></tr>",
            n + 1,
            n + 1,
            ts(e.time),
            escape(&e.source),
            escape(&e.event),
            e.pid.map(|p| p.to_string()).unwrap_or_default(),
            escape(&programs.at(e.pid, e.time, e.comm.as_deref())),
            escape(&e.summary),
            if badges.is_empty() { "" } else { " " },
        );
    }
    html.push_str("</tbody></table>\n");
}

fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

/// One process and, folded beneath it, the ones it started.
fn tree(html: &mut String, p: &ProcessNode) {
    let mut line = format!("<span class=\"pid\">pid {}</span> ", p.pid);
    if p.exec_chain.is_empty() {
        let _ = write!(
            line,
            "<span class=\"image\">{}</span> <span class=\"note\">(no exec recorded)</span>",
            escape(p.comm.as_deref().unwrap_or("?"))
        );
    }
    for (i, exec) in p.exec_chain.iter().enumerate() {
        if i > 0 {
            line.push_str(" <span class=\"note\">then executed</span> ");
        }
        let _ = write!(
            line,
            "<span class=\"image\">{}</span>",
            escape(&exec.program)
        );
        // The file behind a busybox applet or a re-exec through /proc/self/exe.
        if !exec.filename.ends_with(&format!("/{}", exec.program)) && exec.filename != exec.program
        {
            let _ = write!(
                line,
                " <span class=\"note\">({})</span>",
                escape(&exec.filename)
            );
        }
        let _ = write!(line, " <code>{}</code>", escape(&exec.argv.join(" ")));
    }
    let mut notes = Vec::new();
    if let Some(f) = p.forked {
        notes.push(format!("started {}", ts(f)));
    }
    match (p.exited, p.exit_code, p.exit_signal) {
        (Some(t), _, Some(sig)) => notes.push(format!("killed by signal {sig} at {}", ts(t))),
        (Some(t), code, None) => notes.push(format!(
            "exited {} at {}",
            code.map(|c| c.to_string()).unwrap_or_default(),
            ts(t)
        )),
        _ => {}
    }
    if !notes.is_empty() {
        let _ = write!(
            line,
            " <span class=\"note\">{}</span>",
            escape(&notes.join(", "))
        );
    }
    if p.children.is_empty() {
        let _ = write!(html, "<li>{line}</li>");
        return;
    }
    let _ = write!(
        html,
        "<li><details open><summary>{line} <span class=\"note\">({} started)</span></summary><ul>",
        p.children.len()
    );
    for c in &p.children {
        tree(html, c);
    }
    html.push_str("</ul></details></li>");
}

/// An SVG strip of findings and one per source, with a dot per event on a shared time axis.
fn plot(report: &Report) -> String {
    const WIDTH: f64 = 1000.0;
    const LEFT: f64 = 70.0;
    const LANE: f64 = 26.0;
    let events = &report.timeline.events;
    let findings = &report.findings;
    let mut svg = String::new();
    let times = events
        .iter()
        .map(|e| e.time)
        .chain(findings.iter().map(|f| f.time));
    let (Some(first), Some(last)) = (times.clone().min(), times.max()) else {
        return "<p>No events in this window.</p>\n".into();
    };
    let span = ((last - first).num_microseconds().unwrap_or(1) as f64).max(1.0);
    let x = |t: DateTime<Utc>| {
        LEFT + ((t - first).num_microseconds().unwrap_or(0) as f64 / span) * (WIDTH - LEFT - 10.0)
    };
    let lanes = SOURCES.len() + 1;
    let height = LANE * lanes as f64 + 40.0;
    let _ = write!(
        svg,
        "<svg class=\"plot\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" \
         aria-label=\"events over time\" xmlns=\"http://www.w3.org/2000/svg\">"
    );
    let lane = |svg: &mut String, i: usize, name: &str, what: &str| -> f64 {
        let y = 14.0 + LANE * i as f64;
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{}\" class=\"lane\"><title>{what}</title>{name}</text>\
             <line x1=\"{LEFT}\" x2=\"{WIDTH}\" y1=\"{y}\" y2=\"{y}\" class=\"rule\"/>",
            y + 4.0
        );
        y
    };
    let y = lane(&mut svg, 0, "findings", "what the detection rules found");
    for f in findings {
        let _ = write!(
            svg,
            "<circle cx=\"{:.1}\" cy=\"{y}\" r=\"6\" class=\"finding sev-{}\">\
             <title>{} {} ({}): {} {}</title></circle>",
            x(f.time),
            f.severity.as_str(),
            ts(f.time),
            escape(&f.rule),
            f.severity.as_str(),
            escape(&f.title),
            escape(&f.evidence)
        );
    }
    for (i, (source, _, what)) in SOURCES.iter().enumerate() {
        let y = lane(&mut svg, i + 1, source, what);
        for e in events.iter().filter(|e| e.source == *source) {
            let _ = write!(
                svg,
                "<circle cx=\"{:.1}\" cy=\"{y}\" r=\"5\" class=\"src-{source}\">\
                 <title>{} {}</title></circle>",
                x(e.time),
                ts(e.time),
                escape(&e.summary)
            );
        }
    }
    let axis_y = LANE * lanes as f64 + 10.0;
    for k in 0..=4 {
        let t = first + chrono::Duration::microseconds((span * k as f64 / 4.0) as i64);
        let _ = write!(
            svg,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"0\" y2=\"{axis_y}\" class=\"tickline\"/>\
             <text x=\"{0:.1}\" y=\"{1}\" class=\"tick\">{2}</text>",
            x(t),
            axis_y + 16.0,
            t.format("%H:%M:%S%.3f")
        );
    }
    svg.push_str("</svg>\n");
    svg
}

const STYLE: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em;color:#1a202c;max-width:1200px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #e2e8f0}
.intro{color:#4a5568;max-width:60em}
table.facts th{text-align:left;padding-right:1em;color:#4a5568;font-weight:normal}
table.steps,table.findings{border-collapse:collapse;width:100%;font-size:.9em}
table.steps th,table.steps td,table.findings th,table.findings td{border-bottom:1px solid #edf2f7;padding:3px 6px;text-align:left;vertical-align:top}
td.summary{font-family:ui-monospace,monospace;word-break:break-all}
.dot{display:inline-block;width:.7em;height:.7em;border-radius:50%;margin-right:.3em;background:#718096}
.badge{display:inline-block;color:#fff;border-radius:3px;padding:0 .4em;font-size:.8em;font-family:system-ui,sans-serif;background:#718096}
tr.flagged{background:#fffaf0}
.plot{width:100%;height:auto;border:1px solid #e2e8f0;background:#fff}
.plot .lane{font-size:12px;fill:#4a5568}.plot .tick{font-size:11px;fill:#4a5568;text-anchor:middle}
.plot .rule{stroke:#e2e8f0}.plot .tickline{stroke:#cbd5e0;stroke-dasharray:2,3}
.plot circle{fill:#718096;fill-opacity:.75}.plot circle.finding{fill-opacity:.9;stroke:#1a202c;stroke-width:.5}
ul.tree,ul.tree ul{list-style:none;padding-left:1.4em;border-left:1px dotted #a0aec0}
ul.tree li{margin:.25em 0}ul.tree summary{cursor:pointer}.pid{color:#718096;font-size:.85em}.image{font-weight:600}
.note{color:#718096;font-size:.85em}code{background:#f7fafc;padding:0 .2em}
#controls label{margin-right:1em;cursor:pointer}#filter{min-width:18em}tr.hidden{display:none}
";

/// Filters the steps (by source, findings and text; `#filter=TEXT` in the address fills the
/// text box), and marks the page rendered and styled (what the browser test looks for).
const SCRIPT: &str = "
(function(){
  var boxes=document.querySelectorAll('#controls input[data-source]');
  var text=document.getElementById('filter');
  var flagged=document.getElementById('flagged-only');
  var shown=document.getElementById('shown');
  var rows=document.querySelectorAll('tr.step');
  var m=/^#filter=(.*)$/.exec(location.hash);
  if(m){text.value=decodeURIComponent(m[1]);}
  function apply(){
    var on={};
    boxes.forEach(function(b){on[b.dataset.source]=b.checked;});
    var q=text.value.trim().toLowerCase();
    var n=0;
    rows.forEach(function(r){
      var show=on[r.dataset.source]!==false
        &&(!flagged.checked||r.classList.contains('flagged'))
        &&(!q||r.textContent.toLowerCase().indexOf(q)>=0);
      r.classList.toggle('hidden',!show);
      if(show){n++;}
    });
    shown.textContent=n+' of '+rows.length+' steps shown';
  }
  boxes.forEach(function(b){b.addEventListener('change',apply);});
  text.addEventListener('input',apply);
  flagged.addEventListener('change',apply);
  apply();
  document.body.setAttribute('data-rendered','yes');
  if(getComputedStyle(document.body).maxWidth==='1200px'){document.body.setAttribute('data-styled','yes');}
})();
";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::{ContainerInfo, Exec, Timeline};

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
    }

    fn at(second: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_790_000_000 + second, 0).unwrap_or_default()
    }

    fn report() -> Report {
        let hostile = "<img src=x onerror=alert(1)>";
        let event = |second: i64, source: &str, pid: i64, k: u64, summary: &str| Event {
            time: at(second),
            ktime_ns: Some(k),
            source: source.into(),
            event: "open".into(),
            pid: Some(pid),
            comm: Some("exe".into()),
            summary: summary.into(),
        };
        let timeline = Timeline {
            container: ContainerInfo {
                id: "c0ffee".into(),
                name: Some(hostile.into()),
                runtime: Some("runc".into()),
                image: None,
                host: Some("node-1".into()),
                first_seen: Some(at(0)),
                last_seen: Some(at(60)),
            },
            since: Some(at(0)),
            until: Some(at(60)),
            posture: vec![crate::timeline::PostureFinding {
                time: at(0),
                check_id: "cap-sys-admin".into(),
                severity: "critical\"><script>".into(),
                title: "CAP_SYS_ADMIN".into(),
                evidence: hostile.into(),
                fix: None,
                cis: Some("5.3".into()),
            }],
            processes: vec![ProcessNode {
                pid: 7,
                start_ns: 1,
                ppid: Some(1),
                comm: Some("exe".into()),
                exec_chain: vec![Exec {
                    time: at(1),
                    filename: "/proc/self/exe".into(),
                    argv: vec!["wget".into(), hostile.into()],
                    program: "wget".into(),
                }],
                forked: Some(at(1)),
                exited: None,
                exit_code: None,
                exit_signal: None,
                children: Vec::new(),
            }],
            events: vec![
                event(2, "file", 7, 100, "open /etc/hostname"),
                event(3, "file", 7, 200, &format!("open /etc/shadow {hostile}")),
                event(4, "strange", 7, 300, "from a newer recorder"),
            ],
        };
        let finding = Finding {
            rule: "QH004".into(),
            title: format!("Sensitive file read {hostile}"),
            severity: Severity::High,
            mitre: vec!["T1003.008".into()],
            time: at(3),
            host: Some("node-1".into()),
            container_id: Some("c0ffee".into()),
            pid: Some(7),
            comm: Some("exe".into()),
            evidence: "/etc/shadow".into(),
            source_table: "file".into(),
            ktime_ns: Some(200),
        };
        Report {
            timeline,
            findings: vec![finding],
            findings_left_out: 0,
        }
    }

    #[test]
    fn store_text_never_becomes_markup() {
        let page = render(&report(), "test");
        assert!(!page.contains("<img"), "unescaped markup in the page");
        assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;"));
        // An unknown source gets a neutral class, never its own text as a class name; a
        // severity the page does not know is drawn as info.
        assert!(page.contains("data-source=\"other\""));
        assert!(page.contains("<tr class=\"posture sev-info\">"));
    }

    #[test]
    fn the_policy_allows_exactly_the_pages_own_style_and_script() {
        let page = render(&report(), "test");
        let between = |open: &str, close: &str| {
            let start = page.find(open).unwrap() + open.len();
            let end = start + page[start..].find(close).unwrap();
            page[start..end].to_string()
        };
        let css = between("<style>", "</style>");
        let js = between("<script>", "</script>");
        let policy = between("Content-Security-Policy\" content=\"", "\"");
        assert!(
            policy.contains(&format!("style-src {};", csp_hash(&css))),
            "{policy}"
        );
        assert!(
            policy.contains(&format!("script-src {};", csp_hash(&js))),
            "{policy}"
        );
        assert!(!policy.contains("unsafe-inline"), "{policy}");
        assert!(
            !page.contains(" style=\""),
            "an inline style attribute the policy blocks"
        );
        assert_eq!(page.matches("<script>").count(), 1);
    }

    #[test]
    fn a_finding_marks_its_step_and_links_to_it() {
        let page = render(&report(), "test");
        // The shadow read is the second step: flagged with the rule's severity and badge.
        let step = page.lines().find(|l| l.contains("id=\"step-2\"")).unwrap();
        assert!(step.contains("flagged sev-high"), "{step}");
        assert!(step.contains("QH004 T1003.008"), "{step}");
        assert!(page.contains("<a href=\"#step-2\">QH004</a>"));
        let other = page.lines().find(|l| l.contains("id=\"step-1\"")).unwrap();
        assert!(!other.contains("flagged"), "{other}");
        // The program is the applet, not /proc/self/exe's comm.
        assert!(step.contains("<td>wget</td>"), "{step}");
        assert!(page.contains("1 (1 high)"));
    }
}
