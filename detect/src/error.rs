//! What can stop live detection from starting. Everything is checked before recording starts,
//! so a rule, an output or a response that cannot work is an error then, not a silent gap
//! later. Each message says what is wrong and how to write it; the cause, when there is one,
//! is the error's source.

use std::num::ParseIntError;

use quarry_query::QueryError;

/// Why live detection could not be planned.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// The rules could not be loaded (a directory that cannot be read, a malformed rule).
    #[error(transparent)]
    Rules(#[from] QueryError),
    /// An alert output of a known kind written wrongly (a file without a path, a malformed
    /// URL).
    #[error("--alert-output {spec}: {problem}")]
    Output { spec: String, problem: String },
    /// An HTTP alert output whose port is not a number.
    #[error("--alert-output {spec}: the port {port:?} is not a number")]
    OutputPort {
        spec: String,
        port: String,
        #[source]
        source: ParseIntError,
    },
    /// An alert output of no known kind.
    #[error("--alert-output {spec:?}: use stdout, file:PATH, syslog or http://HOST:PORT/PATH")]
    UnknownOutput { spec: String },
    /// A response that does not say when to isolate, or asks for something else.
    #[error("--respond {spec:?}: {problem}")]
    Respond { spec: String, problem: &'static str },
}
