//! The plan nodes of an ingest job, run by Ballista executors.
//!
//! [`IngestWriteExec`] reads one partition of an ingest, hash-partitioned by the join keys
//! and sorted by (keys, timestamp, `_row`), and in one pass:
//! - drops in-ingest duplicates of (keys, timestamp), keeping the last row by `_row`;
//! - writes the survivors, with `_seq`, `_ingested_at` and the `_date` partition, as
//!   Parquet files into the offline Delta table's directory (not yet committed: the
//!   scheduler commits the files every partition reports, in one Delta commit);
//! - writes the latest row per key (greatest (timestamp, `_row`)) as Parquet under the
//!   ingest's staging prefix, for the online load.
//!
//! It outputs one row per partition: the Delta `add` actions of the files it wrote (JSON)
//! and its counts. Files of a failed attempt are never committed; they are garbage for
//! `compact` to remove, never data.
//!
//! [`StageExec`] stages an ingest by URI on the executors: each task validates one file
//! as an upload is validated and writes it where an upload would be staged.
//!
//! [`OnlineLoadExec`] writes rows (at most one per key) to the online store of the process
//! it runs in, by the newer-only rule, and outputs its counts.
//!
//! The files: [`spec`] (what an ingest writes), [`write`] (the write node), [`partition_writer`] (what it does with one
//! partition), [`online_load`] (the online load node), and their tests. The offline
//! table's columns and schema are [`crate::offline::columns`].

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::common::{DataFusionError, Result};

mod online_load;
mod partition_writer;
mod spec;
mod stage;
#[cfg(test)]
mod tests;
mod write;

pub use online_load::{OnlineLoadExec, OnlineLoadSpec, online_load_output_schema};
pub use spec::{IngestWriteSpec, ingest_write_output_schema};
pub use stage::{
    StageExec, StageSpec, first_row_of_file, stage_output_schema, staged_rows, with_row_numbers,
};
pub use write::{IngestWriteExec, collect_adds};

/// Sum a `UInt64` column of result batches.
pub fn sum_column(batches: &[RecordBatch], name: &str) -> Result<u64> {
    let mut total = 0u64;
    for batch in batches {
        let column = batch
            .column_by_name(name)
            .ok_or_else(|| DataFusionError::Internal(format!("no result column `{name}`")))?;
        let values = column
            .as_primitive_opt::<datafusion::arrow::datatypes::UInt64Type>()
            .ok_or_else(|| {
                DataFusionError::Internal(format!("result column `{name}` is not UInt64"))
            })?;
        total += values.iter().flatten().sum::<u64>();
    }
    Ok(total)
}
