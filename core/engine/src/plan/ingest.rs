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
//! [`OnlineLoadExec`] writes rows (at most one per key) to the online store of the process
//! it runs in, by the newer-only rule, and outputs its counts.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, AsArray, Date32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, UInt64Array,
};
use datafusion::arrow::compute::{concat_batches, interleave_record_batch};
use datafusion::arrow::datatypes::{
    DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, plan_err};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::physical_expr::{
    Distribution, EquivalenceProperties, LexOrdering, OrderingRequirements, PhysicalExpr,
    PhysicalSortExpr,
};
use datafusion::physical_plan::distribution_requirements::InputDistributionRequirements;
use datafusion::physical_plan::execution_plan::{
    Boundedness, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties, apply_expression_roots,
};
use futures::StreamExt;
use object_store::ObjectStore;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use serde::{Deserialize, Serialize};

use super::bucket::{BUCKET_COLUMN, bucket_ids, canonical_key_type};
use super::{ASCENDING, column, only_child, recompute};
use crate::online::{OnlineStoreHandle, OnlineTable, WriteCounts};

/// Columns ftab adds to every offline row.
pub const SEQ_COLUMN: &str = "_seq";
pub const INGESTED_AT_COLUMN: &str = "_ingested_at";
/// The partition column of offline tables: the UTC date of the timestamp.
pub const DATE_COLUMN: &str = "_date";
/// A row's position in its ingest: the last tie-breaker of the write order.
pub const ROW_COLUMN: &str = "_row";

/// The partition columns of an offline table: `_date`, then `_bucket` if it is bucketed.
pub fn offline_partition_columns(bucketed: bool) -> Vec<String> {
    let mut columns = vec![DATE_COLUMN.to_string()];
    if bucketed {
        columns.push(BUCKET_COLUMN.to_string());
    }
    columns
}

/// Rows per Parquet row group in the latest-rows files and offline files.
const ROW_GROUP_ROWS: usize = 128 * 1024;
/// Offline data files are cut at about this size.
const TARGET_FILE_BYTES: u64 = 128 * 1024 * 1024;

const MICROS_PER_DAY: i64 = 86_400_000_000;

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
    /// [`super::bucket`]). `None` for tables created before buckets existed.
    #[serde(default)]
    pub buckets: Option<u32>,
}

/// The output of [`IngestWriteExec`]: one row per partition.
pub fn ingest_write_output_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("adds", DataType::Utf8, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("unique_rows", DataType::UInt64, false),
        Field::new("latest_rows", DataType::UInt64, false),
    ]))
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

#[derive(Debug)]
pub struct IngestWriteExec {
    input: Arc<dyn ExecutionPlan>,
    spec: IngestWriteSpec,
    key_indices: Vec<usize>,
    timestamp_index: usize,
    row_index: usize,
    column_indices: Vec<usize>,
    /// Where the timestamp is among `column_indices`.
    timestamp_in_columns: usize,
    /// Where the join keys are among `column_indices`.
    keys_in_columns: Vec<usize>,
    cache: Arc<PlanProperties>,
}

fn index(schema: &Schema, name: &str, what: &str) -> Result<usize> {
    schema
        .index_of(name)
        .map_err(|_| DataFusionError::Plan(format!("{what}: the input has no column `{name}`")))
}

/// Properties of a node that outputs one small batch per input partition.
fn one_row_per_partition(input: &Arc<dyn ExecutionPlan>, schema: SchemaRef) -> PlanProperties {
    PlanProperties::new(
        EquivalenceProperties::new(schema),
        Partitioning::UnknownPartitioning(input.output_partitioning().partition_count()),
        EmissionType::Final,
        Boundedness::Bounded,
    )
}

impl IngestWriteExec {
    pub fn try_new(input: Arc<dyn ExecutionPlan>, spec: IngestWriteSpec) -> Result<Self> {
        let schema = input.schema();
        let what = format!("ingest into `{}`", spec.table);
        let key_indices = spec
            .keys
            .iter()
            .map(|k| index(&schema, k, &what))
            .collect::<Result<Vec<_>>>()?;
        if key_indices.is_empty() {
            return plan_err!("{what}: no join keys");
        }
        let timestamp_index = index(&schema, &spec.timestamp, &what)?;
        if !matches!(
            schema.field(timestamp_index).data_type(),
            DataType::Timestamp(TimeUnit::Microsecond, _)
        ) {
            return plan_err!(
                "{what}: `{}` is not a microsecond timestamp",
                spec.timestamp
            );
        }
        let row_index = index(&schema, ROW_COLUMN, &what)?;
        let column_indices = spec
            .columns
            .iter()
            .map(|c| index(&schema, c, &what))
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
        if let Some(count) = spec.buckets {
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
        let cache = one_row_per_partition(&input, ingest_write_output_schema());
        Ok(Self {
            input,
            spec,
            key_indices,
            timestamp_index,
            row_index,
            column_indices,
            timestamp_in_columns,
            keys_in_columns,
            cache: Arc::new(cache),
        })
    }

    pub fn spec(&self) -> &IngestWriteSpec {
        &self.spec
    }

    fn keys(&self) -> Vec<Arc<dyn PhysicalExpr>> {
        let schema = self.input.schema();
        self.key_indices
            .iter()
            .map(|&i| column(&schema, i))
            .collect()
    }
}

impl DisplayAs for IngestWriteExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "IngestWriteExec: table={}, seq={}, offline={}, online={}",
            self.spec.table,
            self.spec.seq,
            self.spec.offline_table.is_some(),
            self.spec.latest_directory.is_some()
        )
    }
}

impl ExecutionPlan for IngestWriteExec {
    fn name(&self) -> &str {
        "IngestWriteExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        InputDistributionRequirements::new(vec![Distribution::KeyPartitioned(self.keys())])
    }

    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        let schema = self.input.schema();
        let mut order = self.keys();
        order.push(column(&schema, self.timestamp_index));
        order.push(column(&schema, self.row_index));
        let ordering = LexOrdering::new(
            order
                .into_iter()
                .map(|e| PhysicalSortExpr::new(e, ASCENDING)),
        )
        .expect("the keys are not empty, checked in try_new");
        vec![Some(OrderingRequirements::from(ordering))]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        apply_expression_roots(self.keys(), f)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = only_child(&mut children, "IngestWriteExec")?;
        Ok(Arc::new(Self::try_new(input, self.spec.clone())?))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, recompute())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context.clone())?;
        let writer = PartitionWriter::new(self, &context)?;
        let stream = futures::stream::once(writer.run(input));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            ingest_write_output_schema(),
            stream,
        )))
    }
}

/// The object store of `url` in the task's runtime, and the path `url` names in it.
pub(crate) fn store_for(context: &TaskContext, url: &str) -> Result<(Arc<dyn ObjectStore>, Path)> {
    let (parsed, path) = super::object_path(url)?;
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
const WRITE_BATCH_ROWS: usize = 64 * 1024;

/// The writer of one partition.
struct PartitionWriter {
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
    fn new(exec: &IngestWriteExec, context: &TaskContext) -> Result<Self> {
        let schema = exec.input.schema();
        let table_columns = Schema::new(
            exec.column_indices
                .iter()
                .map(|&i| schema.field(i).clone())
                .collect::<Vec<_>>(),
        );
        let (offline, offline_schema) = match &exec.spec.offline_table {
            Some(url) => {
                let (store, path) = store_for(context, url)?;
                let table_store: Arc<dyn ObjectStore> = Arc::new(PrefixStore::new(store, path));
                let schema = offline_table_schema(&table_columns, exec.spec.buckets.is_some());
                // Dictionary encoding only for non-key text columns (categorical features):
                // keys and numbers rarely repeat enough to pay for it, and trying costs
                // about half of the write time (docs/offline-store.md).
                let mut properties = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .set_dictionary_enabled(false)
                    .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
                for field in table_columns.fields() {
                    let text = matches!(field.data_type(), DataType::Utf8 | DataType::Binary);
                    if text && !exec.spec.keys.contains(field.name()) {
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
                    offline_partition_columns(exec.spec.buckets.is_some()),
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
        let latest = exec
            .spec
            .latest_directory
            .as_deref()
            .map(|url| store_for(context, url))
            .transpose()?;
        let key_fields = exec
            .key_indices
            .iter()
            .map(|&i| SortField::new_with_options(schema.field(i).data_type().clone(), ASCENDING))
            .collect();
        Ok(Self {
            key_indices: exec.key_indices.clone(),
            timestamp_index: exec.timestamp_index,
            column_indices: exec.column_indices.clone(),
            timestamp_in_columns: exec.timestamp_in_columns,
            keys_in_columns: exec.keys_in_columns.clone(),
            buckets: exec.spec.buckets,
            seq: exec.spec.seq,
            ingested_at: exec.spec.ingested_at_micros,
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

    async fn run(mut self, mut input: SendableRecordBatchStream) -> Result<RecordBatch> {
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

/// What one online load writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnlineLoadSpec {
    pub table: OnlineTable,
    /// The ingest's sequence number: ties of timestamp go to the greater one.
    pub seq: u64,
    /// "Now" for ttl expiry, fixed when the job was planned (UTC microseconds).
    pub now_micros: i64,
}

/// The output of [`OnlineLoadExec`]: one row per partition.
pub fn online_load_output_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("written", DataType::UInt64, false),
        Field::new("skipped_older", DataType::UInt64, false),
        Field::new("skipped_expired", DataType::UInt64, false),
    ]))
}

#[derive(Debug)]
pub struct OnlineLoadExec {
    input: Arc<dyn ExecutionPlan>,
    spec: OnlineLoadSpec,
    cache: Arc<PlanProperties>,
}

impl OnlineLoadExec {
    pub fn try_new(input: Arc<dyn ExecutionPlan>, spec: OnlineLoadSpec) -> Result<Self> {
        let schema = input.schema();
        for (name, _) in spec.table.keys.iter().chain(&spec.table.features) {
            index(&schema, name, "online load")?;
        }
        index(&schema, &spec.table.timestamp_field, "online load")?;
        let cache = one_row_per_partition(&input, online_load_output_schema());
        Ok(Self {
            input,
            spec,
            cache: Arc::new(cache),
        })
    }

    pub fn spec(&self) -> &OnlineLoadSpec {
        &self.spec
    }
}

impl DisplayAs for OnlineLoadExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "OnlineLoadExec: table={}, seq={}",
            self.spec.table.namespace(),
            self.spec.seq
        )
    }
}

impl ExecutionPlan for OnlineLoadExec {
    fn name(&self) -> &str {
        "OnlineLoadExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = only_child(&mut children, "OnlineLoadExec")?;
        Ok(Arc::new(Self::try_new(input, self.spec.clone())?))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(children, recompute())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let store = context
            .session_config()
            .get_extension::<OnlineStoreHandle>()
            .ok_or_else(|| {
                DataFusionError::Execution(
                    "this executor has no online store configured, so it cannot load online tables"
                        .into(),
                )
            })?;
        let mut input = self.input.execute(partition, context)?;
        let spec = self.spec.clone();
        let load = async move {
            let mut counts = WriteCounts::default();
            // Rows go to the store in batches of WRITE_BATCH_ROWS: each write is one
            // transaction of the store.
            let mut pending: Vec<RecordBatch> = Vec::new();
            let mut pending_rows = 0;
            loop {
                let next = input.next().await.transpose()?;
                if let Some(batch) = &next
                    && batch.num_rows() > 0
                {
                    pending_rows += batch.num_rows();
                    pending.push(batch.clone());
                }
                let done = next.is_none();
                if pending.is_empty() || (!done && pending_rows < WRITE_BATCH_ROWS) {
                    if done {
                        break;
                    }
                    continue;
                }
                let batch = concat_batches(&pending[0].schema(), &pending)?;
                pending.clear();
                pending_rows = 0;
                counts += store
                    .0
                    .write_latest(&spec.table, &batch, spec.seq, spec.now_micros)
                    .await
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
                if done {
                    break;
                }
            }
            Ok(RecordBatch::try_new(
                online_load_output_schema(),
                vec![
                    Arc::new(UInt64Array::from(vec![counts.written])),
                    Arc::new(UInt64Array::from(vec![counts.skipped_older])),
                    Arc::new(UInt64Array::from(vec![counts.skipped_expired])),
                ],
            )?)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            online_load_output_schema(),
            futures::stream::once(load),
        )))
    }
}

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

/// The add actions reported by [`IngestWriteExec`] partitions.
pub fn collect_adds(batches: &[RecordBatch]) -> Result<Vec<deltalake::kernel::Add>> {
    let mut adds = Vec::new();
    for batch in batches {
        let column = batch
            .column_by_name("adds")
            .ok_or_else(|| DataFusionError::Internal("no result column `adds`".into()))?;
        for json in column.as_string::<i32>().iter().flatten() {
            let mut more: Vec<deltalake::kernel::Add> =
                serde_json::from_str(json).map_err(|e| {
                    DataFusionError::Internal(format!("cannot decode add actions: {e}"))
                })?;
            adds.append(&mut more);
        }
    }
    Ok(adds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray as Strings;
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::physical_plan::collect;
    use datafusion::prelude::SessionContext;
    use object_store::memory::InMemory;

    /// Sorted input rows: (key, timestamp, _row, value).
    const ROWS: &[(&str, i64, i64, i64)] = &[
        ("a", 1, 0, 10),
        ("a", 1, 1, 11), // same key and time, later row: wins
        ("a", 2, 2, 12),
        ("b", 1, 3, 13),
        ("b", 1, 4, 14), // wins
        ("c", 5, 5, 15),
    ];

    fn input(batch_rows: usize) -> Arc<dyn ExecutionPlan> {
        let batch = RecordBatch::try_from_iter([
            (
                "k",
                Arc::new(Strings::from_iter_values(ROWS.iter().map(|r| r.0))) as ArrayRef,
            ),
            (
                "ts",
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(ROWS.iter().map(|r| r.1))
                        .with_timezone("UTC"),
                ),
            ),
            (
                ROW_COLUMN,
                Arc::new(Int64Array::from_iter_values(ROWS.iter().map(|r| r.2))),
            ),
            (
                "v",
                Arc::new(Int64Array::from_iter_values(ROWS.iter().map(|r| r.3))),
            ),
        ])
        .unwrap();
        let batches: Vec<RecordBatch> = (0..batch.num_rows())
            .step_by(batch_rows)
            .map(|s| batch.slice(s, batch_rows.min(batch.num_rows() - s)))
            .collect();
        MemorySourceConfig::try_new_exec(&[batches], batch.schema(), None).unwrap()
    }

    /// (k, v) of the Parquet file at `memory:///<path>`, sorted.
    async fn values(ctx: &SessionContext, path: &Path) -> Vec<(String, i64)> {
        let batches = ctx
            .read_parquet(format!("memory:///{path}"), Default::default())
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let mut out = Vec::new();
        for batch in batches {
            let keys = datafusion::arrow::compute::cast(
                batch.column_by_name("k").unwrap(),
                &DataType::Utf8,
            )
            .unwrap();
            let keys = keys.as_string::<i32>();
            let values = batch
                .column_by_name("v")
                .unwrap()
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .clone();
            for i in 0..batch.num_rows() {
                out.push((keys.value(i).to_string(), values.value(i)));
            }
        }
        out.sort();
        out
    }

    #[tokio::test]
    async fn dedupes_and_picks_the_latest_across_batch_boundaries() {
        for batch_rows in 1..=ROWS.len() {
            let ctx = SessionContext::new();
            let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
            let url = url::Url::parse("memory://").unwrap();
            ctx.register_object_store(&url, store.clone());
            let spec = IngestWriteSpec {
                table: "t".into(),
                keys: vec!["k".into()],
                timestamp: "ts".into(),
                columns: vec!["k".into(), "ts".into(), "v".into()],
                offline_table: Some("memory:///offline/t/".into()),
                latest_directory: Some("memory:///latest/".into()),
                seq: 7,
                ingested_at_micros: 1,
                buckets: Some(3),
            };
            let exec = Arc::new(IngestWriteExec::try_new(input(batch_rows), spec).unwrap());
            let out = collect(exec, ctx.task_ctx()).await.unwrap();
            assert_eq!(sum_column(&out, "rows").unwrap(), 6);
            assert_eq!(
                sum_column(&out, "unique_rows").unwrap(),
                4,
                "batches of {batch_rows}"
            );
            assert_eq!(sum_column(&out, "latest_rows").unwrap(), 3);

            let adds = collect_adds(&out).unwrap();
            let mut offline = Vec::new();
            for add in &adds {
                assert!(add.path.starts_with("_date=1970-01-01/"), "{}", add.path);
                assert!(
                    add.stats
                        .as_deref()
                        .unwrap_or("")
                        .contains("\"numRecords\"")
                );
                let path = Path::from(format!("offline/t/{}", add.path));
                let rows = values(&ctx, &path).await;
                // Every file holds one bucket, named in its partition values, and its
                // rows' keys hash to it.
                let bucket: i32 = add.partition_values["_bucket"]
                    .as_deref()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(
                    add.path.contains(&format!("/_bucket={bucket}/")),
                    "{}",
                    add.path
                );
                let keys: ArrayRef = Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|(k, _)| k.as_str()),
                ));
                let ids = bucket_ids(&[keys], 3).unwrap();
                assert!(
                    ids.values().iter().all(|&b| b == bucket),
                    "{ids:?} in {}",
                    add.path
                );
                offline.extend(rows);
            }
            offline.sort();
            assert_eq!(
                offline,
                vec![
                    ("a".into(), 11),
                    ("a".into(), 12),
                    ("b".into(), 14),
                    ("c".into(), 15)
                ],
                "batches of {batch_rows}"
            );
            let latest_files: Vec<Path> = futures::TryStreamExt::try_collect::<Vec<_>>(
                store.list(Some(&Path::from("latest"))),
            )
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.location)
            .collect();
            let mut latest = Vec::new();
            for path in &latest_files {
                latest.extend(values(&ctx, path).await);
            }
            latest.sort();
            assert_eq!(
                latest,
                vec![("a".into(), 12), ("b".into(), 14), ("c".into(), 15)],
                "batches of {batch_rows}"
            );
        }
    }
}
