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
    ArrayRef, AsArray, BooleanArray, Date32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray, UInt64Array,
};
use datafusion::arrow::compute::{SortOptions, concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::{
    DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, internal_err, plan_err};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::parquet::arrow::AsyncArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{
    Distribution, EquivalenceProperties, LexOrdering, OrderingRequirements, PhysicalExpr,
    PhysicalSortExpr,
};
use datafusion::physical_plan::execution_plan::{
    Boundedness, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::distribution_requirements::InputDistributionRequirements;
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricsSet};
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
use url::Url;

use crate::online::{OnlineStoreHandle, OnlineTable, WriteCounts};

/// Columns ftab adds to every offline row.
pub const SEQ_COLUMN: &str = "_seq";
pub const INGESTED_AT_COLUMN: &str = "_ingested_at";
/// The partition column of offline tables: the UTC date of the timestamp.
pub const DATE_COLUMN: &str = "_date";
/// A row's position in its ingest: the last tie-breaker of the write order.
pub const ROW_COLUMN: &str = "_row";

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

/// The schema of an offline Delta table: the table's columns, `_seq`, `_ingested_at`
/// and the `_date` partition.
pub fn offline_table_schema(table_columns: &Schema) -> SchemaRef {
    let mut fields: Vec<Arc<Field>> = table_columns.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(SEQ_COLUMN, DataType::Int64, false)));
    fields.push(Arc::new(Field::new(
        INGESTED_AT_COLUMN,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    )));
    fields.push(Arc::new(Field::new(DATE_COLUMN, DataType::Date32, false)));
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
    cache: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

const ASCENDING: SortOptions = SortOptions {
    descending: false,
    nulls_first: true,
};

fn index(schema: &Schema, name: &str, what: &str) -> Result<usize> {
    schema
        .index_of(name)
        .map_err(|_| DataFusionError::Plan(format!("{what}: the input has no column `{name}`")))
}

fn column(schema: &Schema, index: usize) -> Arc<dyn PhysicalExpr> {
    Arc::new(Column::new(schema.field(index).name(), index))
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
            return plan_err!("{what}: `{}` is not a microsecond timestamp", spec.timestamp);
        }
        let row_index = index(&schema, ROW_COLUMN, &what)?;
        let column_indices = spec
            .columns
            .iter()
            .map(|c| index(&schema, c, &what))
            .collect::<Result<Vec<_>>>()?;
        let cache = one_row_per_partition(&input, ingest_write_output_schema());
        Ok(Self {
            input,
            spec,
            key_indices,
            timestamp_index,
            row_index,
            column_indices,
            cache: Arc::new(cache),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    pub fn spec(&self) -> &IngestWriteSpec {
        &self.spec
    }

    fn keys(&self) -> Vec<Arc<dyn PhysicalExpr>> {
        let schema = self.input.schema();
        self.key_indices.iter().map(|&i| column(&schema, i)).collect()
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
        if children.len() != 1 {
            return internal_err!("IngestWriteExec takes 1 child, got {}", children.len());
        }
        Ok(Arc::new(Self::try_new(children.remove(0), self.spec.clone())?))
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

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

pub(crate) fn recompute() -> ReplaceChildrenOptions {
    ReplaceChildrenOptions {
        children_properties:
            datafusion::physical_plan::execution_plan::ChildrenPropertiesMode::Recompute,
    }
}

/// The object store of `url` in the task's runtime, and the path `url` names in it.
pub(crate) fn store_for(
    context: &TaskContext,
    url: &str,
) -> Result<(Arc<dyn ObjectStore>, Path)> {
    let parsed = Url::parse(url)
        .map_err(|e| DataFusionError::Plan(format!("invalid storage URL `{url}`: {e}")))?;
    let store_url = ObjectStoreUrl::parse(&parsed[..url::Position::BeforePath])?;
    let store = context.runtime_env().object_store(&store_url)?;
    let path = Path::from_url_path(parsed.path())
        .map_err(|e| DataFusionError::Plan(format!("invalid storage path in `{url}`: {e}")))?;
    Ok((store, path))
}

/// The writer of one partition.
struct PartitionWriter {
    key_indices: Vec<usize>,
    timestamp_index: usize,
    column_indices: Vec<usize>,
    /// Where the timestamp is among the table's columns.
    timestamp_in_columns: usize,
    seq: i64,
    ingested_at: i64,
    converter: RowConverter,
    offline: Option<deltalake::datafile::writer::DeltaWriter>,
    offline_schema: Option<SchemaRef>,
    latest: Option<(Arc<dyn ObjectStore>, Path)>,
    latest_writer: Option<AsyncArrowWriter<BufWriter>>,
    /// The last row seen: its group may continue in the next batch.
    held: Option<RecordBatch>,
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
                let schema = offline_table_schema(&table_columns);
                let properties = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
                    .build();
                let config = deltalake::datafile::writer::WriterConfig::new(
                    schema.clone(),
                    vec![DATE_COLUMN.to_string()],
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
            timestamp_in_columns: exec
                .column_indices
                .iter()
                .position(|&i| i == exec.timestamp_index)
                .ok_or_else(|| {
                    DataFusionError::Plan(format!(
                        "ingest into `{}`: the timestamp field is not one of the table's columns",
                        exec.spec.table
                    ))
                })?,
            seq: exec.spec.seq,
            ingested_at: exec.spec.ingested_at_micros,
            converter: RowConverter::new(key_fields)?,
            offline,
            offline_schema,
            latest,
            latest_writer: None,
            held: None,
            rows: 0,
            unique_rows: 0,
            latest_rows: 0,
        })
    }

    async fn run(mut self, mut input: SendableRecordBatchStream) -> Result<RecordBatch> {
        while let Some(batch) = input.next().await {
            let batch = batch?;
            self.rows += batch.num_rows() as u64;
            if batch.num_rows() > 0 {
                self.push(batch, false).await?;
            }
        }
        if let Some(held) = self.held.take() {
            self.push(held, true).await?;
        }
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

    /// Decide every row of `batch` (after the held row) whose group is known to end; hold
    /// the last row back unless this is the end of the input.
    async fn push(&mut self, batch: RecordBatch, last: bool) -> Result<()> {
        let batch = match self.held.take() {
            Some(held) => concat_batches(&batch.schema(), [&held, &batch])?,
            None => batch,
        };
        let n = batch.num_rows();
        let decided = if last { n } else { n - 1 };
        if !last {
            self.held = Some(batch.slice(n - 1, 1));
        }
        if decided == 0 {
            return Ok(());
        }
        let keys: Vec<ArrayRef> = self
            .key_indices
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        let rows = self.converter.convert_columns(&keys)?;
        let times = batch
            .column(self.timestamp_index)
            .as_primitive::<TimestampMicrosecondType>();
        // Row i ends its key group if row i + 1 has other keys; it ends its (keys,
        // timestamp) group if, in addition, row i + 1 has another timestamp.
        let mut last_of_key = Vec::with_capacity(decided);
        let mut last_of_time = Vec::with_capacity(decided);
        for i in 0..decided {
            if i + 1 == n {
                last_of_key.push(true);
                last_of_time.push(true);
            } else {
                let other_key = rows.row(i) != rows.row(i + 1);
                last_of_key.push(other_key);
                last_of_time.push(other_key || times.value(i) != times.value(i + 1));
            }
        }
        let decided_rows = batch.slice(0, decided);
        let columns = decided_rows.project(&self.column_indices)?;
        self.unique_rows += last_of_time.iter().filter(|last| **last).count() as u64;
        if self.offline.is_some() {
            let survivors = filter_record_batch(&columns, &BooleanArray::from(last_of_time))?;
            self.write_offline(survivors).await?;
        }
        if self.latest.is_some() {
            let latest = filter_record_batch(&columns, &BooleanArray::from(last_of_key))?;
            self.latest_rows += latest.num_rows() as u64;
            self.write_latest(latest).await?;
        }
        Ok(())
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
            let properties = WriterProperties::builder()
                .set_compression(Compression::LZ4_RAW)
                .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
                .build();
            self.latest_writer = Some(AsyncArrowWriter::try_new(
                BufWriter::new(store, path),
                rows.schema(),
                Some(properties),
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
    metrics: ExecutionPlanMetricsSet,
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
            metrics: ExecutionPlanMetricsSet::new(),
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
        if children.len() != 1 {
            return internal_err!("OnlineLoadExec takes 1 child, got {}", children.len());
        }
        Ok(Arc::new(Self::try_new(children.remove(0), self.spec.clone())?))
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
            while let Some(batch) = input.next().await {
                let batch = batch?;
                if batch.num_rows() == 0 {
                    continue;
                }
                counts += store
                    .0
                    .write_latest(&spec.table, &batch, spec.seq, spec.now_micros)
                    .await
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
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

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// Sum a `UInt64` column of result batches.
pub fn sum_column(batches: &[RecordBatch], name: &str) -> Result<u64> {
    let mut total = 0u64;
    for batch in batches {
        let column = batch
            .column_by_name(name)
            .ok_or_else(|| DataFusionError::Internal(format!("no result column `{name}`")))?;
        let values = column.as_primitive_opt::<datafusion::arrow::datatypes::UInt64Type>().ok_or_else(|| {
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
            let mut more: Vec<deltalake::kernel::Add> = serde_json::from_str(json)
                .map_err(|e| DataFusionError::Internal(format!("cannot decode add actions: {e}")))?;
            adds.append(&mut more);
        }
    }
    Ok(adds)
}
