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

    use quarry_recorder::upload::UploadState;
    use quarry_recorder::{Recorder, RecorderConfig};

    use crate::cli::detect::DetectArgs;

    /// Live detection planned before the recorder starts, then running beside it
    /// (quarry-detect's `Beside`), saying what it does.
    pub struct Live(quarry_detect::Beside);

    impl Live {
        /// Checks the rules and outputs before recording starts (one that cannot work is an
        /// error now) and gives the recorder the tap detection reads.
        pub fn plan(
            args: &DetectArgs,
            store_dir: &Path,
            config: &mut RecorderConfig,
        ) -> anyhow::Result<Live> {
            let detect = args.config()?;
            let (beside, skipped) =
                quarry_detect::Beside::plan(detect.as_ref(), args.metrics, store_dir, config)?;
            for skipped in &skipped {
                eprintln!("quarry: skipped {skipped}");
            }
            Ok(Live(beside))
        }

        /// Starts detection (when planned) and the metrics endpoint (when asked for; with the
        /// upload's backlog when there is one).
        pub fn start(
            &mut self,
            recorder: &Recorder,
            host: String,
            upload: Option<Arc<UploadState>>,
        ) {
            self.0.start(recorder, host, upload, |started| {
                eprintln!("quarry: {started}")
            });
        }

        /// Stops detection after the recorder stopped and says what it did.
        pub fn finish(self) {
            if let Some(d) = self.0.finish() {
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
            _recorder: &Recorder,
            _host: String,
            _upload: Option<Arc<UploadState>>,
        ) {
        }

        pub fn finish(self) {}
    }
}
