//! Live detection in `quarry record`: rules on the rows being sealed, alerts into the store's
//! `alert` table and out to the configured outputs, the lost-events alert, the optional
//! response, and the metrics endpoint.
//!
//! ```text
//! drain loop ──(tap: bounded, never waits)──► detection thread ──► alert table (sealed)
//!                                               │  LiveDetector     ├► outputs (a bounded queue
//!                                               │  (look-back        │   and thread each)
//!                                               │   window)          └► response (isolate)
//! ```
//!
//! The recorder never waits for anything here: the tap drops (and counts) batches when the
//! detection thread is behind, every output has its own queue and thread
//! ([`outputs`]), and an isolation runs on a thread of its own ([`respond`]). What detection
//! misses is still recorded: `quarry hunt` finds it later. This crate must not change what is
//! recorded, must not isolate anything unless a response was asked for, and prints nothing
//! itself: the command line says what it started, the rest goes to the log.

pub mod beside;
mod error;
pub mod metrics;
pub mod outputs;
pub mod respond;
mod worker;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use quarry_isolate::AllowRule;
use quarry_query::hunt::{self, Rule};
use quarry_query::live::{LiveDetector, Window};
use quarry_query::sigma::SigmaError;
use quarry_recorder::stats::Stats;
use quarry_recorder::tap::Tap;
use quarry_store::alert::AlertFormat;
use quarry_store::{Store, Table};

pub use beside::Beside;
pub use error::DetectError;
use outputs::{OutputSpec, Outputs};
use respond::Responder;

/// How often the rules run over the window (when new rows arrived).
pub const EVALUATE_EVERY: Duration = Duration::from_millis(500);
/// At most this many rows wait for one evaluation (and at most [`Memory::pending_bytes`]); the
/// rest wait in the tap's queue. At 100 000 rows/s, one evaluation's worth is 50 000 rows.
pub const MAX_PENDING_ROWS: usize = 100_000;
/// What live detection holds by default (`--detect-memory`).
pub const DEFAULT_MEMORY: u64 = 24 << 20;
/// The smallest `--detect-memory`.
pub const MIN_MEMORY: u64 = 4 << 20;
/// How often the drain loop hands rows to the sealer and the tap.
pub const TAP_INTERVAL: Duration = Duration::from_millis(500);
/// Batches the tap holds for the detection thread.
pub const TAP_CAPACITY: usize = 256;

/// The memory live detection may hold for rows (Arrow's size of the batches), split between
/// its three places: the tap's queue (batches stay alive there once the sealer is done with
/// them; what does not fit is counted as not evaluated live), the rows waiting for an
/// evaluation, and the look-back window (its oldest batches go first). The evaluation's own
/// working memory comes on top: it is a few times one evaluation's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory(pub u64);

impl Default for Memory {
    fn default() -> Memory {
        Memory(DEFAULT_MEMORY)
    }
}

impl Memory {
    /// The tap's share: a quarter.
    pub fn tap_bytes(self) -> u64 {
        self.0 / 4
    }

    /// Rows waiting for an evaluation: three eighths.
    pub fn pending_bytes(self) -> u64 {
        self.0 * 3 / 8
    }

    /// The window (evaluated rows kept for correlating rules): three eighths.
    pub fn window_bytes(self) -> u64 {
        self.0 * 3 / 8
    }
}
/// At most one lost-events alert in this interval; the losses in between are summed into it.
pub const LOST_ALERT_EVERY: Duration = Duration::from_secs(60);
/// The lost-events alert's rule id.
pub const LOST_RULE: &str = "QR001";

/// The tap detection reads (for the recorder's configuration) and its receiving end (for
/// [`Detection::start`]), holding at most `memory`'s share.
pub fn tap(memory: Memory) -> (Arc<Tap>, Receiver<(Table, RecordBatch)>) {
    let (tap, rx) = Tap::new(TAP_CAPACITY, memory.tap_bytes(), TAP_INTERVAL);
    (Arc::new(tap), rx)
}

/// What detection is asked to do, as the command line and the configuration file say it.
#[derive(Debug, Clone)]
pub struct DetectConfig {
    /// A directory of `*.sql` rules evaluated beside the built-in ones.
    pub rules: Option<PathBuf>,
    /// A directory of Sigma rules (`*.yml`, `*.yaml`) evaluated beside the built-in ones.
    pub sigma: Option<PathBuf>,
    /// Where alerts go (`stdout`, `stderr`, `file:PATH`, `syslog`, `http://HOST:PORT/PATH`);
    /// none means standard output.
    pub outputs: Vec<String>,
    /// The JSON shape of each alert.
    pub format: AlertFormat,
    /// `RULE_OR_SEVERITY=isolate` responses; none means no response.
    pub respond: Vec<String>,
    /// What a quarantine by the response lets through.
    pub allow: Vec<AllowRule>,
    /// What detection holds for rows.
    pub memory: Memory,
}

/// Everything detection needs, parsed and checked before recording starts.
pub struct Plan {
    pub rules: Vec<Rule>,
    /// Sigma rules that could not be converted (the others are in `rules`).
    pub skipped: Vec<SigmaError>,
    pub outputs: Vec<OutputSpec>,
    pub format: AlertFormat,
    pub responder: Option<Responder>,
    pub memory: Memory,
}

impl Plan {
    /// The plan of `config` for a recording into `store`: the built-in rules and those it
    /// names, its outputs and response, each checked.
    pub fn new(config: &DetectConfig, store: &Path) -> Result<Plan, DetectError> {
        let loaded = hunt::RuleSources {
            builtin: true,
            rules: config.rules.as_deref(),
            sigma: config.sigma.as_deref(),
        }
        .load()?;
        let outputs = if config.outputs.is_empty() {
            vec![OutputSpec::Stdout]
        } else {
            config
                .outputs
                .iter()
                .map(|o| o.parse())
                .collect::<Result<_, _>>()?
        };
        let responder = if config.respond.is_empty() {
            None
        } else {
            Some(Responder::new(&config.respond, &config.allow, store)?)
        };
        Ok(Plan {
            rules: loaded.rules,
            skipped: loaded.refused,
            outputs,
            format: config.format,
            responder,
            memory: config.memory,
        })
    }
}

/// Counters of the detection side, for the metrics endpoint and the summary.
#[derive(Default)]
pub struct DetectStats {
    pub alerts: Mutex<BTreeMap<String, u64>>,
    pub evaluations: AtomicU64,
    pub alerts_not_sealed: AtomicU64,
    /// Microseconds the last evaluation took.
    pub last_evaluation_us: AtomicU64,
}

/// The running detection thread.
pub struct Detection {
    thread: JoinHandle<()>,
    stop: Arc<AtomicBool>,
    pub stats: Arc<DetectStats>,
    pub tap: Arc<Tap>,
    outputs: Arc<Outputs>,
}

impl Detection {
    /// The thread reading `rx`, the receiving end of `tap` (which is in the recorder's
    /// configuration), sealing alerts into `store` as `host`'s.
    pub fn start(
        plan: Plan,
        store: Store,
        host: String,
        tap: Arc<Tap>,
        rx: Receiver<(Table, RecordBatch)>,
    ) -> Detection {
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(DetectStats::default());
        let outputs = Arc::new(Outputs::start(&plan.outputs, plan.format, &host));
        let mut worker = worker::Worker {
            detector: LiveDetector::new(
                plan.rules,
                Window {
                    max_bytes: plan.memory.window_bytes(),
                    ..Window::default()
                },
            ),
            max_pending_bytes: plan.memory.pending_bytes(),
            store,
            host,
            run_id: std::process::id().rotate_left(8) ^ 0x00a1_e7a1,
            seq: 0,
            stats: stats.clone(),
            outputs: outputs.clone(),
            responder: plan.responder,
            lost: worker::LostEvents::default(),
            tap: tap.clone(),
            behind_reported: 0,
            containers: worker::ContainerNames::default(),
        };
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("quarry-detect".into())
            .spawn(move || worker.run(rx, &thread_stop))
            .expect("spawning the detection thread");
        Detection {
            thread,
            stop,
            stats,
            tap,
            outputs,
        }
    }

    /// What the metrics endpoint serves while this detection runs beside `recorder`.
    pub fn metrics_sources(&self, recorder: Arc<Stats>) -> metrics::Sources {
        metrics::Sources {
            recorder,
            detect: Some(self.stats.clone()),
            tap: Some(self.tap.clone()),
            outputs: Some(self.outputs.clone()),
            upload: None,
        }
    }

    /// Evaluates what is left, waits for the outputs to send what they hold (a few seconds at
    /// most) and stops.
    pub fn finish(self) -> Summary {
        self.stop.store(true, Ordering::Release);
        let _ = self.thread.join();
        self.outputs.finish();
        let alerts = self
            .stats
            .alerts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .sum();
        Summary {
            alerts,
            behind_rows: self.tap.behind().1,
            output_drops: self.outputs.dropped(),
        }
    }
}

/// What detection did over a recording.
pub struct Summary {
    pub alerts: u64,
    /// Rows recorded but not evaluated live (detection was behind).
    pub behind_rows: u64,
    /// Alerts an output dropped (every alert is in the alert table).
    pub output_drops: u64,
}

/// `live detection raised N alerts`, and what it missed live or its outputs dropped.
impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "live detection raised {} alerts", self.alerts)?;
        if self.behind_rows > 0 {
            write!(
                f,
                "; it fell behind and did not evaluate {} recorded rows (`quarry hunt` covers them)",
                self.behind_rows
            )?;
        }
        if self.output_drops > 0 {
            write!(
                f,
                "; outputs dropped {} alerts (all are in the alert table)",
                self.output_drops
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> DetectConfig {
        DetectConfig {
            rules: None,
            sigma: None,
            outputs: Vec::new(),
            format: AlertFormat::Falco,
            respond: Vec::new(),
            allow: Vec::new(),
            memory: Memory::default(),
        }
    }

    #[test]
    fn a_plan_has_the_builtin_rules_and_stdout_by_default() {
        let plan = Plan::new(&config(), Path::new("/nonexistent")).unwrap();
        assert!(plan.rules.iter().any(|r| r.id == "QH004"));
        assert_eq!(plan.outputs, [OutputSpec::Stdout]);
        assert!(plan.responder.is_none());
    }

    #[test]
    fn what_cannot_work_is_refused_before_recording() {
        let store = Path::new("/nonexistent");
        let mut c = config();
        c.rules = Some(PathBuf::from("/nonexistent/rules"));
        let e = Plan::new(&c, store).err().unwrap();
        assert_eq!(e.to_string(), "loading rules from /nonexistent/rules");
        let mut c = config();
        c.outputs = vec!["ftp://x".into()];
        let e = Plan::new(&c, store).err().unwrap();
        assert!(
            e.to_string()
                .starts_with("--alert-output \"ftp://x\": use stdout"),
            "{e}"
        );
        c.outputs = vec!["http://h:port/".into()];
        let e = Plan::new(&c, store).err().unwrap();
        let text = quarry_store::human::with_causes(&e);
        assert!(
            text.contains("the port \"port\" is not a number: invalid digit"),
            "{text}"
        );
    }
}
