//! Live detection beside `quarry record`: planned before the recorder starts (a rule or output
//! that cannot work is an error then), started with it, stopped after it, each saying what it
//! does on stderr. The work is quarry-detect's; the flags are `cli/detect.rs`.
//!
//! A binary built without the `responder` feature (no DataFusion: what `scripts/record` builds
//! first, to start recording sooner) keeps the flags and records without live detection,
//! saying so.

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

    use crate::cli::detect::DetectArgs;

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
                let (tap, rx) = quarry_detect::tap(plan.memory);
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
            if let Some(d) = self.running.map(|d| d.finish()) {
                eprintln!("quarry: {d}");
            }
        }
    }
}

#[cfg(not(feature = "responder"))]
mod without_engine {
    use std::path::Path;
    use std::sync::Arc;

    use quarry_recorder::upload::UploadState;
    use quarry_recorder::{Recorder, RecorderConfig};

    use crate::cli::detect::DetectArgs;

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
