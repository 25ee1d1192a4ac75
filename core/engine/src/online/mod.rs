//! The online store: one record per (workspace, table, join keys) holding the latest
//! feature values with their `timestamp` and `_seq`.
//!
//! A write lands only if its (timestamp, `_seq`) is greater than the stored one, decided
//! atomically by the store; a row older than now minus the ttl is not written, and a read
//! never returns a value older than now minus the ttl (DESIGN.md, "Online store").
//!
//! Backends: [`embedded`] (redb, the single-machine default) and [`aerospike`] (for
//! clusters: executors write it and serving processes read it directly).

pub mod aerospike;
#[cfg(test)]
pub(crate) mod contract;
pub mod embedded;
pub(crate) mod encoding;
mod record;

use datafusion::arrow::array::RecordBatch;
use std::sync::Arc;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::definitions::{Definitions, FeatureTable, ValueType};
use crate::names::{TableName, WorkspaceName};

pub use encoding::{KeyValue, format_micros};
pub use record::{OnlineError, OnlineRecord};

/// Which table a write or read is about, with the types the records are encoded by.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnlineTable {
    pub workspace: WorkspaceName,
    pub table: TableName,
    pub generation: u64,
    /// Join key names and types, in the table's key order.
    pub keys: Vec<(String, ValueType)>,
    /// Feature names and types, in schema order.
    pub features: Vec<(String, ValueType)>,
    pub timestamp_field: String,
    pub ttl_micros: Option<i64>,
    /// The Aerospike bin of each feature, in `features` order: assigned once per
    /// (workspace, table, generation) by the catalog and kept there
    /// ([`aerospike::assign_bins`]); empty for backends that need none.
    #[serde(default)]
    pub bins: Vec<String>,
}

impl OnlineTable {
    pub fn new(
        workspace: WorkspaceName,
        table: &FeatureTable,
        definitions: &Definitions,
        generation: u64,
    ) -> Self {
        let column_type = |name: &str| {
            table
                .column(name)
                .map(|c| c.value_type.clone())
                .unwrap_or(ValueType::String)
        };
        Self {
            workspace,
            table: table.name.clone(),
            generation,
            keys: table
                .join_keys(definitions)
                .into_iter()
                .map(|k| (k.to_string(), column_type(k.as_str())))
                .collect(),
            features: table
                .features(definitions)
                .into_iter()
                .map(|c| (c.name.to_string(), c.value_type.clone()))
                .collect(),
            timestamp_field: table.timestamp_field.to_string(),
            ttl_micros: table.ttl.map(|t| t.micros()),
            bins: Vec::new(),
        }
    }

    /// This table with the features' Aerospike bins (from the catalog).
    pub fn with_bins(mut self, bins: Vec<String>) -> Self {
        self.bins = bins;
        self
    }

    /// A name unique to (workspace, table, generation), usable as a key-space name.
    pub fn namespace(&self) -> String {
        format!("{}/{}/g{}", self.workspace, self.table, self.generation)
    }

    /// The oldest timestamp still live at `now_micros`.
    pub fn live_after(&self, now_micros: i64) -> Option<i64> {
        self.ttl_micros.map(|ttl| now_micros.saturating_sub(ttl))
    }
}

/// What a write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WriteCounts {
    pub written: u64,
    /// Not written: the stored record is newer or equal by (timestamp, `_seq`).
    pub skipped_older: u64,
    /// Not written: older than now minus the ttl.
    pub skipped_expired: u64,
}

impl std::ops::AddAssign for WriteCounts {
    fn add_assign(&mut self, other: Self) {
        self.written += other.written;
        self.skipped_older += other.skipped_older;
        self.skipped_expired += other.skipped_expired;
    }
}

/// An online store backend.
pub trait OnlineStore: Send + Sync + std::fmt::Debug {
    /// Write the latest row per key of one ingest. `rows` holds the join key columns, the
    /// timestamp field (UTC µs) and the feature columns by name; at most one row per key.
    /// Each record lands only if (timestamp, `seq`) is newer than what is stored, and only
    /// if the timestamp is not older than `now_micros` minus the ttl.
    fn write_latest<'a>(
        &'a self,
        table: &'a OnlineTable,
        rows: &'a RecordBatch,
        seq: u64,
        now_micros: i64,
    ) -> BoxFuture<'a, Result<WriteCounts, OnlineError>>;

    /// Read the records of `keys` (each a full set of join key values in key order);
    /// `None` where there is none, or it is older than `now_micros` minus the ttl.
    fn read<'a>(
        &'a self,
        table: &'a OnlineTable,
        keys: &'a [Vec<KeyValue>],
        now_micros: i64,
    ) -> BoxFuture<'a, Result<Vec<Option<OnlineRecord>>, OnlineError>>;

    /// Release what the store holds (the embedded store's file lock), so the same process
    /// can open it again; later calls fail. Plan nodes may hold the store past a
    /// scheduler's shutdown (Ballista's in-process tasks outlive it), hence explicit.
    fn close(&self) {}

    /// Why this store cannot be used, when it cannot ([`Disabled`]).
    fn unavailable(&self) -> Option<&str> {
        None
    }

    /// Whether every process can reach this store with its own settings (Aerospike), so
    /// a cluster's executors load it directly; `false` for a store that lives in one
    /// process (the embedded one), whose loads run in that process.
    fn is_networked(&self) -> bool {
        false
    }
}

/// The online store of a process that has none (a scheduler started with
/// `online_store = "none"`): every call fails with the reason, so nothing is skipped
/// silently.
#[derive(Debug)]
pub struct Disabled(pub String);

impl OnlineStore for Disabled {
    fn write_latest<'a>(
        &'a self,
        _table: &'a OnlineTable,
        _rows: &'a RecordBatch,
        _seq: u64,
        _now_micros: i64,
    ) -> BoxFuture<'a, Result<WriteCounts, OnlineError>> {
        Box::pin(async { Err(OnlineError::Unavailable(self.0.clone())) })
    }

    fn read<'a>(
        &'a self,
        _table: &'a OnlineTable,
        _keys: &'a [Vec<KeyValue>],
        _now_micros: i64,
    ) -> BoxFuture<'a, Result<Vec<Option<OnlineRecord>>, OnlineError>> {
        Box::pin(async { Err(OnlineError::Unavailable(self.0.clone())) })
    }

    fn unavailable(&self) -> Option<&str> {
        Some(&self.0)
    }
}

/// The online store of a process, as a DataFusion session extension: plan nodes that write
/// online (`OnlineLoadExec`) find it in their task's session config.
#[derive(Debug, Clone)]
pub struct OnlineStoreHandle(pub Arc<dyn OnlineStore>);
