//! ftab-engine: what runs ftab's jobs, on the model of `ftab-model`.
//!
//! - [`validate`]: ingested data checked and converted to a table's schema;
//! - [`content_hash`]: the hash of an ingest's rows, for idempotency keys;
//! - [`storage`]: where data lives in the object store;
//! - [`online`]: the online store (trait, embedded backend);
//! - [`offline`]: the offline Delta tables: commits, snapshots, pruning;
//! - [`executor`]: the Ballista executor that runs ftab's tasks, in-process or in
//!   `ftab-executor`;
//! - [`runtime`]: the DataFusion runtime tasks run in (memory, spill, object stores by URL);
//! - [`plan`]: the physical plans of ftab's jobs (ingest, as-of join, training
//!   sets) and [`codec`], which ships ftab's plan nodes to Ballista executors.
//!
//! The engine knows nothing of Flight, HTTP or SQLite; the scheduler and the executor
//! build on it.

pub mod codec;
pub mod content_hash;
pub mod executor;
pub mod offline;
pub mod online;
pub mod plan;
pub mod runtime;
pub mod storage;
pub mod validate;

// The model's modules, under the names the engine's modules use (not re-exported: users
// of the engine name `ftab_model` for the model).
#[cfg(test)]
pub(crate) use ftab_model::repository;
pub(crate) use ftab_model::{definitions, ids, names, protocol};

/// Errors of the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid storage location `{location}`: {reason}")]
    StorageLocation {
        location: String,
        reason: String,
        /// The object store's error, when it gave one.
        #[source]
        source: Option<object_store::Error>,
    },
    /// The offline Delta table cannot be read or written. `message` is the cause's first
    /// line (delta-rs errors may carry a backtrace after it); `source` the cause itself.
    #[error("offline table {location}: {message}")]
    Offline {
        location: String,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A request that cannot be answered as asked (e.g. a version that does not exist).
    #[error("{0}")]
    InvalidRequest(String),
}
