//! ftab-model: what a client of ftab needs, and nothing that runs jobs.
//!
//! - [`names`]: validated names (workspaces, tables, columns), safe to use in storage paths;
//! - [`ids`]: ingest and job ids;
//! - [`definitions`]: entities, feature tables and feature services, and their validation
//!   (with the Arrow schema of a table: the protocol's schemas are Arrow schemas);
//! - [`repository`]: feature repositories (directories of TOML files) read and parsed;
//! - [`diff`]: the plan of an apply, and which changes would break stored data;
//! - [`protocol`]: the typed JSON messages of ftab's Flight protocol.
//!
//! It depends on no DataFusion, Ballista, delta-rs, redb or object store: the `ftab` CLI
//! links this crate alone. Jobs, stores and plans are in `ftab-engine`.

pub mod definitions;
pub mod diff;
pub mod ids;
pub mod names;
pub mod protocol;
pub mod repository;

pub use definitions::{Definitions, Problem};
pub use names::NameError;

/// Errors of the model: a name, a feature repository or a protocol message that is wrong.
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
