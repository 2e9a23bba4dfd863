//! The flags of `quarry record` for live detection (flattened into `RecordArgs`), the
//! `DetectConfig` they make with the configuration file, and starting and ending detection
//! beside the recorder ([`Live`]). Detection itself is quarry-detect.
//!
//! A binary built without the `query` feature (no DataFusion: what `scripts/record` builds
//! first, to start recording sooner) keeps the flags and records without live detection,
//! saying so.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use quarry_store::alert::AlertFormat;

/// Live detection, alert outputs, response and metrics of `quarry record`.
#[derive(Debug, Clone, Args)]
pub struct DetectArgs {
    /// Do not evaluate rules while recording (alerts come only from `quarry hunt` later)
    #[arg(long)]
    pub no_detect: bool,
    /// Also evaluate the *.sql rules in this directory live
    #[arg(long, value_name = "DIR")]
    pub rules: Option<PathBuf>,
    /// Also evaluate the Sigma rules (*.yml, *.yaml; logsource product linux) in this directory
    /// live
    #[arg(long, value_name = "DIR")]
    pub sigma: Option<PathBuf>,
    /// Where alerts go (repeatable): stdout, file:PATH (JSON lines, appended), syslog (/dev/log)
    /// or http(s)://HOST:PORT/PATH (POST, retried; https checks the certificate against the
    /// system's CAs or SSL_CERT_FILE; a bounded queue whose drops are counted)
    /// [default: stdout]
    #[arg(long = "alert-output", value_name = "OUTPUT")]
    pub alert_output: Vec<String>,
    /// The JSON shape of each alert
    #[arg(long, value_enum, default_value_t = AlertFormatArg::Falco)]
    pub alert_format: AlertFormatArg,
    /// Isolate the container when a rule (by id) or any rule at or above a severity
    /// (info|low|medium|high|critical) fires, e.g. critical=isolate or QH004=isolate
    /// (repeatable). Off by default; the config file's isolate allow-list applies
    #[arg(long, value_name = "RULE_OR_SEVERITY=isolate")]
    pub respond: Vec<String>,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9477); off by default
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
}

/// `--alert-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AlertFormatArg {
    /// Falco's JSON output (time, rule, priority, source, hostname, output, output_fields, tags)
    Falco,
    /// OCSF Detection Finding (class 2004)
    Ocsf,
}

#[cfg(feature = "responder")]
impl DetectArgs {
    /// What the flags ask detection to do (None with `--no-detect`); a response isolates with
    /// the config file's allow-list (read only when there is a response).
    pub fn config(&self) -> anyhow::Result<Option<quarry_detect::DetectConfig>> {
        use anyhow::Context;
        if self.no_detect {
            return Ok(None);
        }
        let allow = if self.respond.is_empty() {
            Vec::new()
        } else {
            crate::config::current()
                .isolate
                .allow
                .iter()
                .map(|a| a.parse())
                .collect::<Result<_, _>>()
                .context("the config file's isolate allow-list")?
        };
        Ok(Some(quarry_detect::DetectConfig {
            rules: self.rules.clone(),
            sigma: self.sigma.clone(),
            outputs: self.alert_output.clone(),
            format: match self.alert_format {
                AlertFormatArg::Falco => AlertFormat::Falco,
                AlertFormatArg::Ocsf => AlertFormat::Ocsf,
            },
            respond: self.respond.clone(),
            allow,
        }))
    }
}

#[cfg(feature = "responder")]
pub use with_engine::Live;
#[cfg(not(feature = "responder"))]
pub use without_engine::Live;

#[cfg(feature = "responder")]
mod with_engine {
    use std::path::Path;
    use std::sync::Arc;

    use arrow::record_batch::RecordBatch;
    use quarry_recorder::stats::Stats;
    use quarry_recorder::tap::Tap;
    use quarry_recorder::upload::UploadState;
    use quarry_recorder::{Recorder, RecorderConfig};
    use quarry_store::Table;

    use super::DetectArgs;

    /// What detection reads: the tap the recorder fills and its receiving end.
    type Tapped = (Arc<Tap>, std::sync::mpsc::Receiver<(Table, RecordBatch)>);

    /// Live detection planned before the recorder starts, then running beside it.
    pub struct Live {
        planned: Option<(quarry_detect::Plan, Tapped)>,
        running: Option<quarry_detect::Detection>,
    }

    impl Live {
        /// Checks the rules and outputs before recording starts (one that cannot work is an
        /// error now) and gives the recorder the tap detection reads.
        pub fn plan(
            args: &DetectArgs,
            store_dir: &Path,
            config: &mut RecorderConfig,
        ) -> anyhow::Result<Live> {
            let plan = match args.config()? {
                Some(c) => Some(quarry_detect::Plan::new(&c, store_dir)?),
                None => None,
            };
            for skipped in plan.iter().flat_map(|p| &p.skipped) {
                eprintln!("quarry: skipped {skipped}");
            }
            let planned = plan.map(|plan| {
                let (tap, rx) = quarry_detect::tap();
                config.tap = Some(tap.clone());
                (plan, (tap, rx))
            });
            Ok(Live {
                planned,
                running: None,
            })
        }

        /// Starts detection (when planned) and the metrics endpoint (when asked for; with the
        /// upload's backlog when there is one).
        pub fn start(
            &mut self,
            args: &DetectArgs,
            recorder: &Recorder,
            host: String,
            upload: Option<Arc<UploadState>>,
        ) {
            let stats: Arc<Stats> = recorder.stats();
            self.running = self.planned.take().map(|(plan, (tap, rx))| {
                let outputs: Vec<String> = plan.outputs.iter().map(|o| o.to_string()).collect();
                eprintln!(
                    "quarry: live detection: {} rules, alerts to {}",
                    plan.rules.len(),
                    outputs.join(", ")
                );
                quarry_detect::Detection::start(plan, recorder.store().clone(), host, tap, rx)
            });
            if let Some(addr) = args.metrics {
                let mut sources = match &self.running {
                    Some(d) => d.metrics_sources(stats),
                    None => quarry_detect::metrics::Sources::recorder_only(stats),
                };
                sources.upload = upload;
                match quarry_detect::metrics::serve(addr, sources) {
                    Ok(()) => eprintln!("quarry: metrics on http://{addr}/metrics"),
                    Err(e) => log::error!(
                        "--metrics {addr}: cannot listen ({e}); recording goes on without metrics"
                    ),
                }
            }
        }

        /// Stops detection after the recorder stopped and says what it did.
        pub fn finish(self) {
            let Some(d) = self.running.map(|d| d.finish()) else {
                return;
            };
            eprintln!(
                "quarry: live detection raised {} alerts{}{}",
                d.alerts,
                if d.behind_rows > 0 {
                    format!(
                        "; it fell behind and did not evaluate {} recorded rows (`quarry hunt` covers them)",
                        d.behind_rows
                    )
                } else {
                    String::new()
                },
                if d.output_drops > 0 {
                    format!(
                        "; outputs dropped {} alerts (all are in the alert table)",
                        d.output_drops
                    )
                } else {
                    String::new()
                }
            );
        }
    }
}

#[cfg(not(feature = "responder"))]
mod without_engine {
    use std::path::Path;
    use std::sync::Arc;

    use quarry_recorder::upload::UploadState;
    use quarry_recorder::{Recorder, RecorderConfig};

    use super::DetectArgs;

    /// This build has no live detection: says so once, and records.
    pub struct Live;

    impl Live {
        pub fn plan(
            args: &DetectArgs,
            _store_dir: &Path,
            _config: &mut RecorderConfig,
        ) -> anyhow::Result<Live> {
            if !args.no_detect {
                eprintln!(
                    "quarry: this binary was built without the query engine: recording without \
                     live detection (`quarry hunt` from a full build covers what is recorded)"
                );
            }
            if args.metrics.is_some() {
                eprintln!("quarry: --metrics needs a full build; recording without metrics");
            }
            Ok(Live)
        }

        pub fn start(
            &mut self,
            _args: &DetectArgs,
            _recorder: &Recorder,
            _host: String,
            _upload: Option<Arc<UploadState>>,
        ) {
        }

        pub fn finish(self) {}
    }
}
