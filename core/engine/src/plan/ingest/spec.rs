//! What an ingest writes ([`IngestWriteSpec`]), by column name, and its resolution to the
//! positions of those columns in the write node's input.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::{DataFusionError, Result, plan_err};
use serde::{Deserialize, Serialize};

use crate::offline::columns::ROW_COLUMN;
use crate::plan::bucket::canonical_key_type;
use crate::plan::node::column_index;

/// What one ingest job writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestWriteSpec {
    /// The feature table, for plans and messages.
    pub table: String,
    pub keys: Vec<String>,
    pub timestamp: String,
    /// The table's schema columns, in the order they are stored.
    pub columns: Vec<String>,
    /// The offline Delta table's root URL; `None` for tables that are not offline.
    pub offline_table: Option<String>,
    /// Where to write the latest row per key (a directory URL); `None` for tables that
    /// are not online.
    pub latest_directory: Option<String>,
    pub seq: i64,
    /// `_ingested_at` of every row (UTC microseconds).
    pub ingested_at_micros: i64,
    /// The offline table's bucket count: rows get a `_bucket` partition (see
    /// [`crate::plan::bucket`]). `None` for tables created before buckets existed.
    #[serde(default)]
    pub buckets: Option<u32>,
}

/// The output of the write node (`IngestWriteExec`): one row per partition.
pub fn ingest_write_output_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("adds", DataType::Utf8, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("unique_rows", DataType::UInt64, false),
        Field::new("latest_rows", DataType::UInt64, false),
    ]))
}

/// The positions of a spec's columns in the write node's input.
#[derive(Debug, Clone)]
pub(super) struct WriteColumns {
    pub(super) key_indices: Vec<usize>,
    pub(super) timestamp_index: usize,
    pub(super) row_index: usize,
    /// The table's columns, in the order they are stored.
    pub(super) column_indices: Vec<usize>,
    /// Where the timestamp is among `column_indices`.
    pub(super) timestamp_in_columns: usize,
    /// Where the join keys are among `column_indices`.
    pub(super) keys_in_columns: Vec<usize>,
}

impl IngestWriteSpec {
    /// The positions of the spec's columns in `schema`, checked.
    pub(super) fn resolve(&self, schema: &Schema) -> Result<WriteColumns> {
        let what = format!("ingest into `{}`", self.table);
        let key_indices = self
            .keys
            .iter()
            .map(|k| column_index(schema, k, &what))
            .collect::<Result<Vec<_>>>()?;
        if key_indices.is_empty() {
            return plan_err!("{what}: no join keys");
        }
        let timestamp_index = column_index(schema, &self.timestamp, &what)?;
        if !matches!(
            schema.field(timestamp_index).data_type(),
            DataType::Timestamp(TimeUnit::Microsecond, _)
        ) {
            return plan_err!(
                "{what}: `{}` is not a microsecond timestamp",
                self.timestamp
            );
        }
        let row_index = column_index(schema, ROW_COLUMN, &what)?;
        let column_indices = self
            .columns
            .iter()
            .map(|c| column_index(schema, c, &what))
            .collect::<Result<Vec<_>>>()?;
        let timestamp_in_columns = column_indices
            .iter()
            .position(|&i| i == timestamp_index)
            .ok_or_else(|| {
                DataFusionError::Plan(format!(
                    "{what}: the timestamp field is not one of the table's columns"
                ))
            })?;
        let keys_in_columns = key_indices
            .iter()
            .map(|k| {
                column_indices.iter().position(|i| i == k).ok_or_else(|| {
                    DataFusionError::Plan(format!(
                        "{what}: a join key is not one of the table's columns"
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if let Some(count) = self.buckets {
            if count == 0 || count > i32::MAX as u32 {
                return plan_err!("{what}: bucket count {count} is out of range");
            }
            for &k in &key_indices {
                let field = schema.field(k);
                if canonical_key_type(field.data_type()).is_none() {
                    return plan_err!(
                        "{what}: cannot bucket by join key `{}` of type {}",
                        field.name(),
                        field.data_type()
                    );
                }
            }
        }
        Ok(WriteColumns {
            key_indices,
            timestamp_index,
            row_index,
            column_indices,
            timestamp_in_columns,
            keys_in_columns,
        })
    }
}
