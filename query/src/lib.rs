//! Read-only SQL over a Quarry store.
//!
//! This room will hold the investigator's side: DataFusion over the store's Hive layout (the
//! layout itself is defined once, in `quarry-store`), the named views a responder needs first
//! (`events`, `processes`, `connections`, `file_writes`), container timelines, hunt rules and the
//! output formats. Until then the store can be read with any Parquet engine as it is.
