//! ftab-core: what every ftab process shares.
//!
//! - [`names`]: validated names (workspaces, tables, columns), safe to use in storage paths;
//! - [`definitions`]: entities, feature tables and feature services, and their validation;
//! - [`repository`]: feature repositories (directories of TOML files) read and parsed;
//! - [`diff`]: the plan of an apply, and which changes would break stored data;
//! - [`protocol`]: the typed JSON messages of ftab's Flight protocol;
//! - [`storage`]: where data lives in the object store;
//! - [`validate`]: ingested data checked and converted to a table's schema;
//! - [`online`]: the online store (trait, embedded backend);
//! - [`offline`]: the offline Delta tables: commits, snapshots, pruning;
//! - [`plan`]: the physical plans of ftab's jobs (ingest, point-in-time join, training
//!   sets) and [`codec`], which ships ftab's plan nodes to Ballista executors.
//!
//! Core knows nothing of Flight, HTTP or SQLite; the scheduler and the client build on it.

pub mod codec;
pub mod content_hash;
pub mod definitions;
pub mod diff;
pub mod ids;
pub mod names;
pub mod offline;
pub mod online;
pub mod plan;
pub mod protocol;
pub mod repository;
pub mod storage;
pub mod validate;

pub use definitions::{Definitions, Problem};
pub use names::NameError;

/// Errors of ftab-core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("{}", format_problems(.0))]
    Definitions(Vec<Problem>),
    #[error(transparent)]
    Decode(#[from] protocol::DecodeError),
    #[error(transparent)]
    Read(#[from] repository::ReadError),
    #[error("invalid storage location `{location}`: {reason}")]
    StorageLocation { location: String, reason: String },
    #[error("offline table {location}: {message}")]
    Offline { location: String, message: String },
    /// A request that cannot be answered as asked (e.g. a version that does not exist).
    #[error("{0}")]
    InvalidRequest(String),
}

/// Problems as a message: one per line, after a count.
pub fn format_problems(problems: &[Problem]) -> String {
    let mut out = match problems.len() {
        1 => "the feature repository has 1 problem:".to_string(),
        n => format!("the feature repository has {n} problems:"),
    };
    for p in problems {
        out.push_str("\n  ");
        out.push_str(&p.to_string());
    }
    out
}
