//! Live detection beside one recording, in the order `quarry record` needs it: planned before
//! the recorder starts ([`Beside::plan`]: a rule or output that cannot work is an error then,
//! and the recorder gets the tap detection reads), started with it ([`Beside::start`]: the
//! detection thread and, when asked for, the metrics endpoint), stopped after it
//! ([`Beside::finish`]).
//!
//! Like the rest of this crate it prints nothing: what it planned, started and did is
//! returned for the command line to say; a metrics endpoint that cannot listen is logged and
//! recording goes on without it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::Receiver;

use arrow::record_batch::RecordBatch;
use quarry_query::sigma::SigmaError;
use quarry_recorder::tap::Tap;
use quarry_recorder::upload::UploadState;
use quarry_recorder::{Recorder, RecorderConfig};
use quarry_store::Table;

use crate::{DetectConfig, DetectError, Detection, Plan, Summary, metrics};

/// A plan with the tap it reads, the recorder's end and detection's.
type Planned = (Plan, Arc<Tap>, Receiver<(Table, RecordBatch)>);

/// Live detection planned before a recording, then running beside it.
pub struct Beside {
    planned: Option<Planned>,
    running: Option<Detection>,
    metrics: Option<SocketAddr>,
}

impl Beside {
    /// Checks the rules and outputs of `config` (None: no detection) before recording into
    /// `store_dir` starts, and gives `recorder` the tap detection reads. `metrics`: where the
    /// Prometheus endpoint will listen. Also the Sigma rules that were not converted.
    pub fn plan(
        config: Option<&DetectConfig>,
        metrics: Option<SocketAddr>,
        store_dir: &Path,
        recorder: &mut RecorderConfig,
    ) -> Result<(Beside, Vec<SigmaError>), DetectError> {
        let mut plan = match config {
            Some(c) => Some(Plan::new(c, store_dir)?),
            None => None,
        };
        let skipped = plan
            .as_mut()
            .map(|p| std::mem::take(&mut p.skipped))
            .unwrap_or_default();
        let planned = plan.map(|plan| {
            let (tap, rx) = crate::tap(plan.memory);
            recorder.tap = Some(tap.clone());
            (plan, tap, rx)
        });
        let beside = Beside {
            planned,
            running: None,
            metrics,
        };
        Ok((beside, skipped))
    }

    /// Starts detection (when planned) beside `recorder`, sealing alerts as `host`'s, and the
    /// metrics endpoint (when asked for; with the upload's backlog when there is one). What
    /// it starts goes to `say`, a line each, as it starts.
    pub fn start(
        &mut self,
        recorder: &Recorder,
        host: String,
        upload: Option<Arc<UploadState>>,
        mut say: impl FnMut(String),
    ) {
        self.running = self.planned.take().map(|(plan, tap, rx)| {
            let outputs: Vec<String> = plan.outputs.iter().map(|o| o.to_string()).collect();
            say(format!(
                "live detection: {} rules, alerts to {}",
                plan.rules.len(),
                outputs.join(", ")
            ));
            Detection::start(plan, recorder.store().clone(), host, tap, rx)
        });
        if let Some(addr) = self.metrics {
            let stats = recorder.stats();
            let mut sources = match &self.running {
                Some(d) => d.metrics_sources(stats),
                None => metrics::Sources::recorder_only(stats),
            };
            sources.upload = upload;
            match metrics::serve(addr, sources) {
                Ok(()) => say(format!("metrics on http://{addr}/metrics")),
                Err(e) => log::error!(
                    "--metrics {addr}: cannot listen ({e}); recording goes on without metrics"
                ),
            }
        }
    }

    /// Stops detection after the recorder stopped: what it did, when it ran.
    pub fn finish(self) -> Option<Summary> {
        self.running.map(Detection::finish)
    }
}
