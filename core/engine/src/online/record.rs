//! What the online store answers: a record read back, and the store's errors (used by the
//! encoding and every backend alike).

use serde::Serialize;

/// One record read back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OnlineRecord {
    /// UTC microseconds.
    pub timestamp: i64,
    pub seq: u64,
    /// Feature values as JSON (null for nulls), in the order of the table's features
    /// (`OnlineTable::features`): names are not repeated in every record read.
    pub features: Vec<serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum OnlineError {
    #[error("online store: {0}")]
    Store(String),
    #[error("online store: invalid rows: {0}")]
    InvalidRows(String),
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// This process has no online store; the reason says why and what to change.
    #[error("{0}")]
    Unavailable(String),
}
