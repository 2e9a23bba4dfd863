//! The errors of the distributed engine.

use std::path::PathBuf;

/// What went wrong starting a server or running a query on the cluster.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// A Ballista server failed to start or stopped with an error.
    #[error("the Ballista {role} failed")]
    Server {
        role: &'static str,
        #[source]
        source: ballista_core::error::BallistaError,
    },
    /// A scheduler address that is not `df://HOST:PORT` (or `HOST:PORT`).
    #[error("{0:?} is not a scheduler address: use df://HOST:PORT")]
    BadScheduler(String),
    /// The store could not be opened or listed.
    #[error("reading the store")]
    Store(#[from] quarry_store::StoreError),
    /// Planning or running the query on the cluster failed.
    #[error("the cluster refused or failed the query")]
    Engine(#[from] datafusion::error::DataFusionError),
    /// The statement was refused or is not valid SQL for the store (the message says why).
    #[error(transparent)]
    Query(#[from] quarry_query::QueryError),
    /// A segment the query would read no longer matches what the manifest sealed.
    #[error("segment {path} is not the one the manifest sealed: {reason} (run `quarry verify`)")]
    Refused { path: PathBuf, reason: String },
    /// A local file or directory could not be used.
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The result of this crate's functions.
pub type Result<T> = std::result::Result<T, FleetError>;
