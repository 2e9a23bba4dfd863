//! Read-only SQL over a Quarry store: the investigator's side.
//!
//! DataFusion is the engine and the store's Hive layout is the catalog: every store table is
//! registered as a listing table over its directory with `dt` and `hour` partition columns, so
//! a filter on those prunes whole directories, and the page statistics and bloom filters the
//! store writes prune inside files. On top of the tables sit the named views a responder needs
//! first ([`views`]), container timelines ([`timeline`]), detection rules written as SQL
//! ([`hunt`]) and the responder's report of a container that puts the two together ([`report`],
//! rendered by [`html`]).
//!
//! The engine only ever sees the store through [`segments::SealedSegments`], an object store
//! that lists sealed, healthy segments and refuses every write (a fleet's bucket, through
//! [`bucket_segments::BucketSegments`], the same for every host's vouched segments); statements
//! are checked before planning ([`guard`]). Together they keep `quarry sql` read-only and inside the store.
//!
//! Every session has a memory budget and spills to a private temporary directory when an
//! operator needs more ([`budget`]); results can be read as a stream of batches
//! ([`Catalog::sql_stream`]) and written as they arrive ([`output::Writer`]). The interactive
//! SQL shell is [`shell`].

pub mod bucket_segments;
pub mod budget;
pub mod catalog;
mod executed;
pub mod findings;
pub mod fixture;
pub mod guard;
pub mod hunt;
pub mod ioc;
pub mod live;
pub mod output;
pub mod page;
pub mod report;
pub mod segments;
pub mod shell;
pub mod sigma;
pub mod timeline;
pub mod views;

mod error;
pub mod html;

pub use budget::SessionOptions;
pub use catalog::{Catalog, ResultStream, Skipped};
pub use error::{QueryError, Result};
