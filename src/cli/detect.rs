//! The flags of `quarry record` for live detection (flattened into `RecordArgs`), and the
//! `DetectConfig` they make with the configuration file (in a full build; the recorder-only
//! build parses the same flags). Detection itself is quarry-detect; `crate::detect` starts it.

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
    /// Where alerts go (repeatable): stdout, stderr, file:PATH (JSON lines, appended), syslog
    /// (/dev/log) or http(s)://HOST:PORT/PATH (POST, retried; https checks the certificate
    /// against the system's CAs or SSL_CERT_FILE; a bounded queue whose drops are counted)
    /// [default: stdout; stderr with --format json, whose summary is then alone on stdout]
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
    /// Memory live detection holds for rows: its queue, the rows waiting for an evaluation and
    /// the look-back window (beyond it the oldest rows leave the window, and rows it could not
    /// take are counted and raise the lost-events alert) [default: 24M, or the config file's
    /// record.detect_memory]
    #[arg(long, value_name = "SIZE", value_parser = crate::cli::parse::parse_detect_memory)]
    pub detect_memory: Option<u64>,
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
            memory: quarry_detect::Memory(
                self.detect_memory
                    .or(crate::config::current().record.detect_memory)
                    .unwrap_or(quarry_detect::DEFAULT_MEMORY),
            ),
        }))
    }
}
