//! The columns ftab adds to a feature table's rows, and the schema of its offline Delta
//! table.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// The sequence number of the ingest that wrote a row: the tie-breaker of equal timestamps.
pub const SEQ_COLUMN: &str = "_seq";
/// When the ingest that wrote a row was accepted (UTC).
pub const INGESTED_AT_COLUMN: &str = "_ingested_at";
/// The partition column of offline tables: the UTC date of the timestamp.
pub const DATE_COLUMN: &str = "_date";
/// A row's position in its ingest: the last tie-breaker of the write order. Never stored:
/// an ingest's duplicates are dropped by it before the rows are committed.
pub const ROW_COLUMN: &str = "_row";
/// The partition column holding a row's bucket (int32), in bucketed tables
/// (`crate::plan::bucket`).
pub const BUCKET_COLUMN: &str = "_bucket";

/// Columns ftab adds; incoming data may not carry them.
pub const RESERVED_COLUMNS: &[&str] = &[
    SEQ_COLUMN,
    ROW_COLUMN,
    INGESTED_AT_COLUMN,
    DATE_COLUMN,
    BUCKET_COLUMN,
];

/// The partition columns of an offline table: `_date`, then `_bucket` if it is bucketed.
pub fn offline_partition_columns(bucketed: bool) -> Vec<String> {
    let mut columns = vec![DATE_COLUMN.to_string()];
    if bucketed {
        columns.push(BUCKET_COLUMN.to_string());
    }
    columns
}

/// The schema of an offline Delta table: the table's columns, `_seq`, `_ingested_at`,
/// the `_date` partition and, for bucketed tables, the `_bucket` partition.
pub fn offline_table_schema(table_columns: &Schema, bucketed: bool) -> SchemaRef {
    let mut fields: Vec<Arc<Field>> = table_columns.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(SEQ_COLUMN, DataType::Int64, false)));
    fields.push(Arc::new(Field::new(
        INGESTED_AT_COLUMN,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    )));
    fields.push(Arc::new(Field::new(DATE_COLUMN, DataType::Date32, false)));
    if bucketed {
        fields.push(Arc::new(Field::new(BUCKET_COLUMN, DataType::Int32, false)));
    }
    Arc::new(Schema::new(fields))
}
