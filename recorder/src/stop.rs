//! When a recording stops: on SIGTERM or SIGINT (Ctrl-C), or once `--duration` has passed.
//! The handlers go in before anyone is told that recording began ([`StopSignals::listen`]),
//! so a stop signal sent right after that message is always a graceful stop; during the exit
//! a further one cuts the upload's last attempt short
//! ([`crate::upload::Uploader::finish_unless_stopped`]).
//!
//! It only listens: what a stop does (sealing, the summary) is the caller's.

use std::time::Duration;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// A stop signal's handler could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("installing a {signal} handler")]
pub struct SignalError {
    signal: &'static str,
    #[source]
    source: std::io::Error,
}

/// SIGTERM and SIGINT, listened for from [`StopSignals::listen`] on.
pub struct StopSignals {
    term: Signal,
    int: Signal,
}

impl StopSignals {
    /// Listens for SIGTERM and SIGINT from now on (inside a tokio runtime).
    pub fn listen() -> Result<StopSignals, SignalError> {
        let handler = |kind, signal_name| {
            signal(kind).map_err(|source| SignalError {
                signal: signal_name,
                source,
            })
        };
        Ok(StopSignals {
            term: handler(SignalKind::terminate(), "SIGTERM")?,
            int: handler(SignalKind::interrupt(), "SIGINT")?,
        })
    }

    /// Resolves on SIGINT, SIGTERM or when `duration` (if any) has passed.
    pub async fn or_after(mut self, duration: Option<Duration>) {
        let deadline = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.term.recv() => log::info!("SIGTERM: sealing and stopping"),
            _ = self.int.recv() => log::info!("SIGINT: sealing and stopping"),
            _ = deadline => {}
        }
    }

    /// Resolves on the next SIGINT or SIGTERM.
    pub async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}
