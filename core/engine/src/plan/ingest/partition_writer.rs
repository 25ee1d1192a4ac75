//! What the write node does with one partition: drop in-ingest duplicates, write the
//! survivors as offline Parquet files and the latest row per key for the online load.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, AsArray, Date32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, UInt64Array,
};
use datafusion::arrow::compute::{concat_batches, interleave_record_batch};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef, TimestampMicrosecondType};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use futures::StreamExt;
use object_store::ObjectStore;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::prefix::PrefixStore;

use super::spec::{IngestWriteSpec, WriteColumns, ingest_write_output_schema};
use crate::offline::columns::offline_partition_columns;
use crate::offline::columns::offline_table_schema;
use crate::plan::bucket::bucket_ids;
use crate::plan::node::ASCENDING;

/// Rows per Parquet row group in the latest-rows files and offline files.
const ROW_GROUP_ROWS: usize = 128 * 1024;
/// Offline data files are cut at about this size.
const TARGET_FILE_BYTES: u64 = 128 * 1024 * 1024;

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// The object store of `url` in the task's runtime, and the path `url` names in it.
pub(crate) fn store_for(context: &TaskContext, url: &str) -> Result<(Arc<dyn ObjectStore>, Path)> {
    let (parsed, path) = crate::plan::object_path(url)?;
    let store_url = ObjectStoreUrl::parse(&parsed[..url::Position::BeforePath])?;
    let store = context.runtime_env().object_store(&store_url)?;
    Ok((store, path))
}

/// The last row of a batch, with its key in row format and its timestamp.
struct Held {
    row: RecordBatch,
    key: datafusion::arrow::row::OwnedRow,
    time: i64,
}

/// Survivors are handed to the Delta writer in batches of about this many rows.
pub(super) const WRITE_BATCH_ROWS: usize = 64 * 1024;

/// The writer of one partition.
pub(super) struct PartitionWriter {
    key_indices: Vec<usize>,
    timestamp_index: usize,
    column_indices: Vec<usize>,
    /// Where the timestamp is among the table's columns.
    timestamp_in_columns: usize,
    /// Where the join keys are among the table's columns.
    keys_in_columns: Vec<usize>,
    buckets: Option<u32>,
    seq: i64,
    ingested_at: i64,
    converter: RowConverter,
    offline: Option<deltalake::datafile::writer::DeltaWriter>,
    offline_schema: Option<SchemaRef>,
    latest: Option<(Arc<dyn ObjectStore>, Path)>,
    latest_writer: Option<AsyncArrowWriter<BufWriter>>,
    /// The last row seen: its groups may continue in the next batch.
    held: Option<Held>,
    /// Survivors not yet handed to the Delta writer.
    pending: Vec<RecordBatch>,
    pending_rows: usize,
    rows: u64,
    /// Rows left after dropping in-ingest duplicates of (keys, timestamp).
    unique_rows: u64,
    latest_rows: u64,
}

impl PartitionWriter {
    pub(super) fn new(
        spec: &IngestWriteSpec,
        columns: &WriteColumns,
        schema: &Schema,
        context: &TaskContext,
    ) -> Result<Self> {
        let table_columns = Schema::new(
            columns
                .column_indices
                .iter()
                .map(|&i| schema.field(i).clone())
                .collect::<Vec<_>>(),
        );
        let (offline, offline_schema) = match &spec.offline_table {
            Some(url) => {
                let (store, path) = store_for(context, url)?;
                let table_store: Arc<dyn ObjectStore> = Arc::new(PrefixStore::new(store, path));
                let schema = offline_table_schema(&table_columns, spec.buckets.is_some());
                // Dictionary encoding only for non-key text columns (categorical features):
                // keys and numbers rarely repeat enough to pay for it, and trying costs
                // about half of the write time (docs/offline-store.md).
                let mut properties = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .set_dictionary_enabled(false)
                    .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
                for field in table_columns.fields() {
                    let text = matches!(field.data_type(), DataType::Utf8 | DataType::Binary);
                    if text && !spec.keys.contains(field.name()) {
                        properties = properties.set_column_dictionary_enabled(
                            datafusion::parquet::schema::types::ColumnPath::from(
                                field.name().as_str(),
                            ),
                            true,
                        );
                    }
                }
                let properties = properties.build();
                let config = deltalake::datafile::writer::WriterConfig::new(
                    schema.clone(),
                    offline_partition_columns(spec.buckets.is_some()),
                    Some(properties),
                    std::num::NonZeroU64::new(TARGET_FILE_BYTES),
                    None,
                    delta_kernel::table_properties::DataSkippingNumIndexedCols::NumColumns(32),
                    None,
                );
                (
                    Some(deltalake::datafile::writer::DeltaWriter::new(
                        table_store,
                        config,
                    )),
                    Some(schema),
                )
            }
            None => (None, None),
        };
        let latest = spec
            .latest_directory
            .as_deref()
            .map(|url| store_for(context, url))
            .transpose()?;
        let key_fields = columns
            .key_indices
            .iter()
            .map(|&i| SortField::new_with_options(schema.field(i).data_type().clone(), ASCENDING))
            .collect();
        Ok(Self {
            key_indices: columns.key_indices.clone(),
            timestamp_index: columns.timestamp_index,
            column_indices: columns.column_indices.clone(),
            timestamp_in_columns: columns.timestamp_in_columns,
            keys_in_columns: columns.keys_in_columns.clone(),
            buckets: spec.buckets,
            seq: spec.seq,
            ingested_at: spec.ingested_at_micros,
            converter: RowConverter::new(key_fields)?,
            offline,
            offline_schema,
            latest,
            latest_writer: None,
            held: None,
            pending: Vec::new(),
            pending_rows: 0,
            rows: 0,
            unique_rows: 0,
            latest_rows: 0,
        })
    }

    pub(super) async fn run(mut self, mut input: SendableRecordBatchStream) -> Result<RecordBatch> {
        let started = std::time::Instant::now();
        let mut waiting = std::time::Duration::ZERO;
        loop {
            let asked = std::time::Instant::now();
            let Some(batch) = input.next().await else {
                waiting += asked.elapsed();
                break;
            };
            waiting += asked.elapsed();
            let batch = batch?;
            self.rows += batch.num_rows() as u64;
            if batch.num_rows() > 0 {
                self.push(&batch).await?;
            }
        }
        let pushed = started.elapsed();
        // The last row of the partition ends every group it is in.
        if let Some(held) = self.held.take() {
            self.unique_rows += 1;
            self.emit(&held.row, &held.row, &[(0, 0)], &[(0, 0)])
                .await?;
        }
        self.flush_offline().await?;
        let adds = match self.offline.take() {
            Some(writer) => writer
                .close()
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?,
            None => Vec::new(),
        };
        if let Some(writer) = self.latest_writer.take() {
            writer.close().await?;
        }
        tracing::debug!(
            rows = self.rows,
            waiting_for_input = ?waiting,
            deciding_and_buffering = ?pushed.saturating_sub(waiting),
            closing = ?started.elapsed().saturating_sub(pushed),
            "ingest partition written"
        );
        let adds = serde_json::to_string(&adds)
            .map_err(|e| DataFusionError::Internal(format!("cannot encode add actions: {e}")))?;
        Ok(RecordBatch::try_new(
            ingest_write_output_schema(),
            vec![
                Arc::new(StringArray::from(vec![adds])),
                Arc::new(UInt64Array::from(vec![self.rows])),
                Arc::new(UInt64Array::from(vec![self.unique_rows])),
                Arc::new(UInt64Array::from(vec![self.latest_rows])),
            ],
        )?)
    }

    /// Decide every row whose groups are known to end: the row held from the batch before
    /// and all rows of `batch` but its last, which is held until the next batch shows
    /// whether its groups go on.
    async fn push(&mut self, batch: &RecordBatch) -> Result<()> {
        let n = batch.num_rows();
        let keys: Vec<ArrayRef> = self
            .key_indices
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        let rows = self.converter.convert_columns(&keys)?;
        let times = batch
            .column(self.timestamp_index)
            .as_primitive::<TimestampMicrosecondType>();
        // A row ends its key group if the next row has other keys; it ends its (keys,
        // timestamp) group if the next row has other keys or another timestamp. Rows are
        // named (source, row): source 0 is the held row, 1 this batch.
        let mut survivors: Vec<(usize, usize)> = Vec::with_capacity(n);
        let mut latest: Vec<(usize, usize)> = Vec::new();
        if let Some(held) = &self.held {
            let other_key = held.key.row() != rows.row(0);
            if other_key || held.time != times.value(0) {
                survivors.push((0, 0));
            }
            if other_key {
                latest.push((0, 0));
            }
        }
        for i in 0..n - 1 {
            let other_key = rows.row(i) != rows.row(i + 1);
            if other_key || times.value(i) != times.value(i + 1) {
                survivors.push((1, i));
            }
            if other_key {
                latest.push((1, i));
            }
        }
        self.unique_rows += survivors.len() as u64;
        let held = self.held.replace(Held {
            row: batch.slice(n - 1, 1),
            key: rows.row(n - 1).owned(),
            time: times.value(n - 1),
        });
        let first = held.as_ref().map_or(batch, |h| &h.row);
        self.emit(first, batch, &survivors, &latest).await
    }

    /// Write the chosen rows of `held` (source 0) and `batch` (source 1).
    async fn emit(
        &mut self,
        held: &RecordBatch,
        batch: &RecordBatch,
        survivors: &[(usize, usize)],
        latest: &[(usize, usize)],
    ) -> Result<()> {
        let sources = [
            held.project(&self.column_indices)?,
            batch.project(&self.column_indices)?,
        ];
        let sources = [&sources[0], &sources[1]];
        if self.offline.is_some() && !survivors.is_empty() {
            let rows = interleave_record_batch(&sources, survivors)?;
            self.pending_rows += rows.num_rows();
            self.pending.push(rows);
            if self.pending_rows >= WRITE_BATCH_ROWS {
                self.flush_offline().await?;
            }
        }
        if self.latest.is_some() && !latest.is_empty() {
            let rows = interleave_record_batch(&sources, latest)?;
            self.latest_rows += rows.num_rows() as u64;
            self.write_latest(rows).await?;
        }
        Ok(())
    }

    /// Write the survivors gathered so far as one batch (the Delta writer splits each batch
    /// by date, so larger batches mean fewer, larger writes).
    async fn flush_offline(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut self.pending);
        self.pending_rows = 0;
        let rows = concat_batches(&pending[0].schema(), &pending)?;
        self.write_offline(rows).await
    }

    async fn write_offline(&mut self, rows: RecordBatch) -> Result<()> {
        if rows.num_rows() == 0 {
            return Ok(());
        }
        let (Some(writer), Some(schema)) = (&mut self.offline, &self.offline_schema) else {
            return Ok(());
        };
        let n = rows.num_rows();
        let times = rows
            .column(self.timestamp_in_columns)
            .as_primitive::<TimestampMicrosecondType>();
        let dates: Date32Array = times
            .iter()
            .map(|t| t.map(|t| t.div_euclid(MICROS_PER_DAY) as i32))
            .collect();
        let mut columns = rows.columns().to_vec();
        columns.push(Arc::new(Int64Array::from(vec![self.seq; n])));
        columns.push(Arc::new(
            TimestampMicrosecondArray::from(vec![self.ingested_at; n]).with_timezone("UTC"),
        ));
        columns.push(Arc::new(dates));
        if let Some(count) = self.buckets {
            let keys: Vec<ArrayRef> = self
                .keys_in_columns
                .iter()
                .map(|&i| rows.column(i).clone())
                .collect();
            columns.push(Arc::new(bucket_ids(&keys, count)?));
        }
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        writer
            .write(&batch)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))
    }

    async fn write_latest(&mut self, rows: RecordBatch) -> Result<()> {
        if rows.num_rows() == 0 {
            return Ok(());
        }
        if self.latest_writer.is_none() {
            let (store, directory) = self
                .latest
                .clone()
                .expect("write_latest is called only with a latest directory");
            let path = directory.join(format!("part-{}.parquet", uuid::Uuid::now_v7()));
            self.latest_writer = Some(crate::storage::scratch_parquet_writer(
                store,
                path,
                rows.schema(),
                ROW_GROUP_ROWS,
            )?);
        }
        let writer = self
            .latest_writer
            .as_mut()
            .expect("the latest writer was opened above");
        writer.write(&rows).await?;
        Ok(())
    }
}
