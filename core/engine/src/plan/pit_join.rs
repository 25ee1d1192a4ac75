//! The point-in-time join: a sort-merge as-of join of a spine with one feature table.
//!
//! For each spine row (join keys, time `t`) it takes the latest feature row with the same
//! keys and `timestamp <= t` (and, with a ttl, `timestamp >= t - ttl`), "latest" by
//! (`timestamp`, `_seq`); no such row gives nulls. Every spine row yields exactly one
//! output row, spine columns first, then the chosen feature columns (DESIGN.md,
//! "Point-in-time join").
//!
//! [`AsOfJoinExec`] requires both inputs partitioned by the join keys (so DataFusion and
//! Ballista insert a hash shuffle) and sorted within each partition by (keys, time) on the
//! spine side and (keys, timestamp, `_seq`) on the feature side (so a `SortExec`, which
//! spills, is inserted). The merge itself then holds only the current spine batch and the
//! few feature batches it spans: neither side has to fit in memory.
//!
//! With [`JoinStrategy::SpineIndex`] the same node instead holds its spine partition in
//! memory, indexed by key, and takes the feature rows in any order
//! ([`super::spine_index`]); neither input is sorted then. The planner picks it only when
//! the spine fits (`training_set::spine_index_fits`).
//!
//! `_row` does not appear: the offline store holds each (keys, timestamp, `_seq`) once,
//! because an ingest's duplicates are dropped by `_row` before it is committed.

use std::cmp::Ordering;
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, new_null_array};
use datafusion::arrow::compute::interleave;
use datafusion::arrow::datatypes::{
    DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, internal_err, plan_err};
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{
    Distribution, EquivalenceProperties, LexOrdering, OrderingRequirements, PhysicalExpr,
    PhysicalSortExpr,
};
use datafusion::physical_plan::distribution_requirements::InputDistributionRequirements;
use datafusion::physical_plan::execution_plan::{
    Boundedness, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
    apply_expression_roots,
};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::spine_index::SpineIndex;
use super::{ASCENDING, column, recompute};

/// Feature batches the merge may hold for one output batch before it emits what it has:
/// bounds memory when a spine batch spans a long stretch of the feature side.
const MAX_RETAINED_BATCHES: usize = 32;

/// What to join: columns by name, so the spec survives serialization unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsOfJoinSpec {
    /// The feature table, for plans and messages.
    pub table: String,
    /// Join keys as (spine column, feature column), in key order. Types must be equal.
    pub keys: Vec<(String, String)>,
    /// The spine's time column (timestamp, microseconds).
    pub spine_time: String,
    /// The feature side's timestamp column (timestamp, microseconds).
    pub feature_time: String,
    /// The feature side's `_seq` column (int64).
    pub feature_seq: String,
    /// Rows older than spine time minus this many microseconds do not match.
    pub ttl_micros: Option<i64>,
    /// Feature columns carried to the output, as (feature column, output name).
    pub outputs: Vec<(String, String)>,
    /// How the join finds each spine row's feature row.
    #[serde(default)]
    pub strategy: JoinStrategy,
}

pub use crate::protocol::JoinStrategy;

/// Column positions of a spec in the inputs' schemas.
#[derive(Debug, Clone)]
pub(super) struct Resolved {
    pub(super) spine_keys: Vec<usize>,
    pub(super) feature_keys: Vec<usize>,
    pub(super) spine_time: usize,
    pub(super) feature_time: usize,
    pub(super) feature_seq: usize,
    pub(super) outputs: Vec<usize>,
}

impl AsOfJoinSpec {
    fn resolve(&self, spine: &Schema, features: &Schema) -> Result<Resolved> {
        let find = |schema: &Schema, side: &str, name: &str| {
            schema.index_of(name).map_err(|_| {
                DataFusionError::Plan(format!(
                    "as-of join with `{}`: the {side} has no column `{name}`",
                    self.table
                ))
            })
        };
        let mut spine_keys = Vec::new();
        let mut feature_keys = Vec::new();
        for (s, f) in &self.keys {
            let si = find(spine, "spine", s)?;
            let fi = find(features, "feature side", f)?;
            let (st, ft) = (spine.field(si).data_type(), features.field(fi).data_type());
            if st != ft {
                return plan_err!(
                    "as-of join with `{}`: join key `{s}` is {st} in the spine but `{f}` is {ft}",
                    self.table
                );
            }
            spine_keys.push(si);
            feature_keys.push(fi);
        }
        if self.keys.is_empty() {
            return plan_err!("as-of join with `{}` has no join keys", self.table);
        }
        let spine_time = find(spine, "spine", &self.spine_time)?;
        let feature_time = find(features, "feature side", &self.feature_time)?;
        for (schema, index) in [(spine, spine_time), (features, feature_time)] {
            if !matches!(
                schema.field(index).data_type(),
                DataType::Timestamp(TimeUnit::Microsecond, _)
            ) {
                return plan_err!(
                    "as-of join with `{}`: `{}` must be a microsecond timestamp, not {}",
                    self.table,
                    schema.field(index).name(),
                    schema.field(index).data_type()
                );
            }
        }
        let feature_seq = find(features, "feature side", &self.feature_seq)?;
        if features.field(feature_seq).data_type() != &DataType::Int64 {
            return plan_err!(
                "as-of join with `{}`: `{}` must be int64",
                self.table,
                self.feature_seq
            );
        }
        let outputs = self
            .outputs
            .iter()
            .map(|(f, _)| find(features, "feature side", f))
            .collect::<Result<_>>()?;
        Ok(Resolved {
            spine_keys,
            feature_keys,
            spine_time,
            feature_time,
            feature_seq,
            outputs,
        })
    }
}

/// The as-of join of a spine (left) and one feature table (right).
#[derive(Debug)]
pub struct AsOfJoinExec {
    spine: Arc<dyn ExecutionPlan>,
    features: Arc<dyn ExecutionPlan>,
    spec: AsOfJoinSpec,
    resolved: Resolved,
    schema: SchemaRef,
    cache: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

type Exprs = Vec<Arc<dyn PhysicalExpr>>;

impl AsOfJoinExec {
    pub fn try_new(
        spine: Arc<dyn ExecutionPlan>,
        features: Arc<dyn ExecutionPlan>,
        spec: AsOfJoinSpec,
    ) -> Result<Self> {
        let spine_schema = spine.schema();
        let feature_schema = features.schema();
        let resolved = spec.resolve(&spine_schema, &feature_schema)?;
        let mut fields: Vec<Arc<Field>> = spine_schema.fields().iter().cloned().collect();
        for (&index, (_, name)) in resolved.outputs.iter().zip(&spec.outputs) {
            if spine_schema.index_of(name).is_ok() {
                return plan_err!(
                    "as-of join with `{}`: output column `{name}` is already a spine column",
                    spec.table
                );
            }
            let field = feature_schema.field(index);
            fields.push(Arc::new(Field::new(name, field.data_type().clone(), true)));
        }
        let schema = Arc::new(Schema::new_with_metadata(
            fields,
            spine_schema.metadata().clone(),
        ));
        // Output rows are spine rows in spine order, so the spine's partitioning and
        // ordering (over the same leading columns) carry over.
        // The spine's equal columns stay equal (e.g. a key and its cast), so a later join on
        // the same keys finds its spine input partitioned and sorted already.
        let orderings: Vec<LexOrdering> = spine.output_ordering().cloned().into_iter().collect();
        let mut eq_properties =
            EquivalenceProperties::new_with_orderings(schema.clone(), orderings);
        eq_properties.add_equivalence_group(spine.equivalence_properties().eq_group().clone())?;
        let emission = match spec.strategy {
            JoinStrategy::SortMerge => EmissionType::Incremental,
            JoinStrategy::SpineIndex => EmissionType::Final,
        };
        let cache = PlanProperties::new(
            eq_properties,
            spine.output_partitioning().clone(),
            emission,
            Boundedness::Bounded,
        );
        Ok(Self {
            spine,
            features,
            spec,
            resolved,
            schema,
            cache: Arc::new(cache),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    pub fn spec(&self) -> &AsOfJoinSpec {
        &self.spec
    }

    /// The key columns of the spine and of the feature side.
    fn key_exprs(&self) -> (Exprs, Exprs) {
        let (spine, features) = (self.spine.schema(), self.features.schema());
        (
            self.resolved
                .spine_keys
                .iter()
                .map(|&i| column(&spine, i))
                .collect(),
            self.resolved
                .feature_keys
                .iter()
                .map(|&i| column(&features, i))
                .collect(),
        )
    }

    fn orderings(&self) -> (LexOrdering, LexOrdering) {
        let (spine_keys, feature_keys) = self.key_exprs();
        let (spine, features) = (self.spine.schema(), self.features.schema());
        let sort = |exprs: Vec<Arc<dyn PhysicalExpr>>| {
            LexOrdering::new(
                exprs
                    .into_iter()
                    .map(|e| PhysicalSortExpr::new(e, ASCENDING)),
            )
            .expect("an as-of join has at least one key, checked in try_new")
        };
        let mut spine_order = spine_keys;
        spine_order.push(column(&spine, self.resolved.spine_time));
        let mut feature_order = feature_keys;
        feature_order.push(column(&features, self.resolved.feature_time));
        feature_order.push(column(&features, self.resolved.feature_seq));
        (sort(spine_order), sort(feature_order))
    }
}

impl DisplayAs for AsOfJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let keys: Vec<String> = self
            .spec
            .keys
            .iter()
            .map(|(s, t)| format!("{s}={t}"))
            .collect();
        write!(
            f,
            "AsOfJoinExec: table={}, keys=[{}], {} <= {}",
            self.spec.table,
            keys.join(", "),
            self.spec.feature_time,
            self.spec.spine_time
        )?;
        if let Some(ttl) = self.spec.ttl_micros {
            write!(f, ", ttl={ttl}us")?;
        }
        if self.spec.strategy == JoinStrategy::SpineIndex {
            write!(f, ", spine_index")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for AsOfJoinExec {
    fn name(&self) -> &str {
        "AsOfJoinExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        let (spine, features) = self.key_exprs();
        InputDistributionRequirements::co_partitioned(vec![
            Distribution::KeyPartitioned(spine),
            Distribution::KeyPartitioned(features),
        ])
    }

    fn required_input_ordering(&self) -> Vec<Option<OrderingRequirements>> {
        if self.spec.strategy == JoinStrategy::SpineIndex {
            return vec![None, None];
        }
        let (spine, features) = self.orderings();
        vec![
            Some(OrderingRequirements::from(spine)),
            Some(OrderingRequirements::from(features)),
        ]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true, false]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.spine, &self.features]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        let (spine, features) = self.key_exprs();
        apply_expression_roots(spine.iter().chain(features.iter()), f)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // Properties always follow the children (Ballista restricts them to a slice of
        // partitions), so they are recomputed whatever the options say.
        match <[_; 2]>::try_from(children) {
            Ok([spine, features]) => {
                Ok(Arc::new(Self::try_new(spine, features, self.spec.clone())?))
            }
            Err(children) => internal_err!("AsOfJoinExec takes 2 children, got {}", children.len()),
        }
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
        let spine = self.spine.execute(partition, context.clone())?;
        let features = self.features.execute(partition, context.clone())?;
        let feature_schema = self.features.schema();
        let key_fields = self
            .resolved
            .feature_keys
            .iter()
            .map(|&i| {
                SortField::new_with_options(feature_schema.field(i).data_type().clone(), ASCENDING)
            })
            .collect();
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        if self.spec.strategy == JoinStrategy::SpineIndex {
            let reservation = MemoryConsumer::new(format!("AsOfJoinExec[{partition}]"))
                .register(context.memory_pool());
            let join = SpineIndex::new(
                &self.spec,
                self.resolved.clone(),
                self.schema.clone(),
                RowConverter::new(key_fields)?,
                reservation,
                context.session_config().batch_size(),
            );
            let stream = futures::stream::once(join.run(spine, features))
                .map_ok(futures::stream::iter)
                .try_flatten()
                .inspect_ok(move |batch| baseline.record_output(batch.num_rows()));
            return Ok(Box::pin(RecordBatchStreamAdapter::new(
                self.schema.clone(),
                stream.boxed(),
            )));
        }
        let null_columns = self
            .resolved
            .outputs
            .iter()
            .map(|&i| new_null_array(feature_schema.field(i).data_type(), 1))
            .collect();
        let merge = Merge {
            spine,
            features,
            features_done: false,
            converter: RowConverter::new(key_fields)?,
            buffer: VecDeque::new(),
            first_id: 0,
            cursor: (0, 0),
            candidate: None,
            resolved: self.resolved.clone(),
            spine_time_name: self.spec.spine_time.clone(),
            ttl_micros: self.spec.ttl_micros,
            schema: self.schema.clone(),
            null_columns,
            ready: VecDeque::new(),
            started: std::time::Instant::now(),
            waited: std::time::Duration::ZERO,
        };
        let stream = futures::stream::try_unfold(merge, |mut merge| async move {
            let next = merge.next_batch().await?;
            Ok(next.map(|batch| (batch, merge)))
        });
        let stream = stream.inspect_ok(move |batch| baseline.record_output(batch.num_rows()));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream.boxed(),
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// One feature batch as the merge reads it.
struct FeatureBatch {
    keys: Rows,
    times: datafusion::arrow::array::PrimitiveArray<TimestampMicrosecondType>,
    /// The output columns.
    values: Vec<ArrayRef>,
}

impl FeatureBatch {
    fn len(&self) -> usize {
        self.times.len()
    }
}

/// The state of one partition's merge.
struct Merge {
    spine: SendableRecordBatchStream,
    features: SendableRecordBatchStream,
    features_done: bool,
    converter: RowConverter,
    /// Feature batches still needed, the oldest first; `buffer[i]` has id `first_id + i`.
    buffer: VecDeque<FeatureBatch>,
    first_id: u64,
    /// The next feature row not yet passed, as (batch id, row).
    cursor: (u64, usize),
    /// The last feature row passed: the latest one not after the current spine row, if it
    /// has the current spine row's keys.
    candidate: Option<(u64, usize)>,
    resolved: Resolved,
    spine_time_name: String,
    ttl_micros: Option<i64>,
    schema: SchemaRef,
    /// One null per output column, for spine rows without a match.
    null_columns: Vec<ArrayRef>,
    /// Output batches made but not yet returned.
    ready: VecDeque<RecordBatch>,
    /// For the debug log: when the merge started, and how long it waited for its inputs.
    started: std::time::Instant,
    waited: std::time::Duration,
}

impl Merge {
    async fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            if let Some(batch) = self.ready.pop_front() {
                return Ok(Some(batch));
            }
            let asked = std::time::Instant::now();
            let spine = self.spine.next().await.transpose()?;
            self.waited += asked.elapsed();
            let Some(spine) = spine else {
                tracing::debug!(
                    total = ?self.started.elapsed(),
                    waiting_for_inputs = ?self.waited,
                    "as-of join partition done"
                );
                return Ok(None);
            };
            if spine.num_rows() > 0 {
                self.join_batch(&spine).await?;
            }
        }
    }

    fn batch(&self, id: u64) -> &FeatureBatch {
        &self.buffer[(id - self.first_id) as usize]
    }

    /// The feature row at the cursor, reading the next feature batch when needed; `None`
    /// when the feature side is exhausted.
    async fn current(&mut self) -> Result<Option<(u64, usize)>> {
        loop {
            let index = (self.cursor.0 - self.first_id) as usize;
            if let Some(batch) = self.buffer.get(index) {
                if self.cursor.1 < batch.len() {
                    return Ok(Some(self.cursor));
                }
                self.cursor = (self.cursor.0 + 1, 0);
                continue;
            }
            if self.features_done {
                return Ok(None);
            }
            let asked = std::time::Instant::now();
            let next = self.features.next().await.transpose()?;
            self.waited += asked.elapsed();
            match next {
                Some(batch) if batch.num_rows() == 0 => {}
                Some(batch) => {
                    let keys: Vec<ArrayRef> = self
                        .resolved
                        .feature_keys
                        .iter()
                        .map(|&i| batch.column(i).clone())
                        .collect();
                    let times = batch
                        .column(self.resolved.feature_time)
                        .as_primitive_opt::<TimestampMicrosecondType>()
                        .ok_or_else(|| {
                            DataFusionError::Internal(
                                "feature timestamps are not microseconds".into(),
                            )
                        })?
                        .clone();
                    let values = self
                        .resolved
                        .outputs
                        .iter()
                        .map(|&i| batch.column(i).clone())
                        .collect();
                    self.buffer.push_back(FeatureBatch {
                        keys: self.converter.convert_columns(&keys)?,
                        times,
                        values,
                    });
                }
                None => {
                    self.features_done = true;
                    return Ok(None);
                }
            }
        }
    }

    async fn join_batch(&mut self, spine: &RecordBatch) -> Result<()> {
        let keys: Vec<ArrayRef> = self
            .resolved
            .spine_keys
            .iter()
            .map(|&i| spine.column(i).clone())
            .collect();
        let spine_keys = self.converter.convert_columns(&keys)?;
        let times = spine
            .column(self.resolved.spine_time)
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| DataFusionError::Internal("spine times are not microseconds".into()))?;
        if times.null_count() > 0 {
            return Err(DataFusionError::Execution(format!(
                "the spine's time column `{}` has null values; every spine row needs a time",
                self.spine_time_name
            )));
        }
        let mut matches: Vec<Option<(u64, usize)>> = Vec::with_capacity(spine.num_rows());
        let mut chunk_start = 0;
        for i in 0..spine.num_rows() {
            let key = spine_keys.row(i);
            let time = times.value(i);
            while let Some((id, row)) = self.current().await? {
                let batch = self.batch(id);
                match batch.keys.row(row).cmp(&key) {
                    Ordering::Less => {
                        // Skip every row of this batch with a smaller key at once.
                        let end = row
                            + partition_point(batch.len() - row, |r| batch.keys.row(row + r) < key);
                        self.cursor = (id, end);
                        self.candidate = None;
                    }
                    Ordering::Equal if batch.times.value(row) <= time => {
                        self.candidate = Some((id, row));
                        self.cursor = (id, row + 1);
                    }
                    _ => break,
                }
            }
            let found = self.candidate.filter(|&(id, row)| {
                let batch = self.batch(id);
                batch.keys.row(row) == key
                    && self
                        .ttl_micros
                        .is_none_or(|ttl| batch.times.value(row) >= time.saturating_sub(ttl))
            });
            matches.push(found);
            if self.buffer.len() > MAX_RETAINED_BATCHES {
                self.emit(spine, chunk_start, &matches)?;
                chunk_start = i + 1;
                matches.clear();
                self.release();
            }
        }
        self.emit(spine, chunk_start, &matches)?;
        self.release();
        Ok(())
    }

    /// Queue the output rows of spine rows `start..start + matches.len()`.
    fn emit(
        &mut self,
        spine: &RecordBatch,
        start: usize,
        matches: &[Option<(u64, usize)>],
    ) -> Result<()> {
        if matches.is_empty() {
            return Ok(());
        }
        let null_source = self.buffer.len();
        let indices: Vec<(usize, usize)> = matches
            .iter()
            .map(|m| match m {
                Some((id, row)) => ((id - self.first_id) as usize, *row),
                None => (null_source, 0),
            })
            .collect();
        let mut columns: Vec<ArrayRef> = spine.slice(start, matches.len()).columns().to_vec();
        for (output, null) in self.null_columns.iter().enumerate() {
            let sources: Vec<&dyn Array> = self
                .buffer
                .iter()
                .map(|b| b.values[output].as_ref())
                .chain(std::iter::once(null.as_ref()))
                .collect();
            columns.push(interleave(&sources, &indices)?);
        }
        self.ready
            .push_back(RecordBatch::try_new(self.schema.clone(), columns)?);
        Ok(())
    }

    /// Drop feature batches before both the candidate and the cursor.
    fn release(&mut self) {
        let keep_from = self
            .candidate
            .map_or(self.cursor.0, |(id, _)| id.min(self.cursor.0));
        while self.first_id < keep_from && !self.buffer.is_empty() {
            self.buffer.pop_front();
            self.first_id += 1;
        }
    }
}

/// The number of leading `0..len` for which `pred` holds, assuming it holds for a prefix.
fn partition_point(len: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut low, mut high) = (0, len);
    while low < high {
        let mid = low + (high - low) / 2;
        if pred(mid) {
            low = mid + 1;
        } else {
            high = mid;
        }
    }
    low
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray, TimestampMicrosecondArray};
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::physical_plan::collect;
    use datafusion::prelude::SessionContext;

    fn ts(values: &[i64]) -> ArrayRef {
        Arc::new(TimestampMicrosecondArray::from(values.to_vec()).with_timezone("UTC"))
    }

    fn spine(rows: &[(&str, i64)]) -> RecordBatch {
        RecordBatch::try_from_iter([
            (
                "k",
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
            ),
            ("t", ts(&rows.iter().map(|r| r.1).collect::<Vec<_>>())),
        ])
        .unwrap()
    }

    fn features(rows: &[(&str, i64, i64, i64)]) -> RecordBatch {
        RecordBatch::try_from_iter([
            (
                "fk",
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
            ),
            ("ft", ts(&rows.iter().map(|r| r.1).collect::<Vec<_>>())),
            (
                "_seq",
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            ),
            (
                "v",
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.3))),
            ),
        ])
        .unwrap()
    }

    fn spec(ttl: Option<i64>) -> AsOfJoinSpec {
        AsOfJoinSpec {
            table: "t".into(),
            keys: vec![("k".into(), "fk".into())],
            spine_time: "t".into(),
            feature_time: "ft".into(),
            feature_seq: "_seq".into(),
            ttl_micros: ttl,
            outputs: vec![("v".into(), "t__v".into())],
            strategy: JoinStrategy::SortMerge,
        }
    }

    const STRATEGIES: [JoinStrategy; 2] = [JoinStrategy::SortMerge, JoinStrategy::SpineIndex];

    fn reversed(batch: RecordBatch) -> RecordBatch {
        let n = batch.num_rows() as u32;
        let indices = datafusion::arrow::array::UInt32Array::from_iter_values((0..n).rev());
        datafusion::arrow::compute::take_record_batch(&batch, &indices).unwrap()
    }

    /// Run the join over already sorted single-partition inputs, split into batches of
    /// `batch_rows` to exercise batch boundaries. The spine-index join gets both inputs in
    /// reverse, since it must not depend on their order (and keeps the spine's order: its
    /// output is reversed back here).
    async fn run(
        spine_rows: RecordBatch,
        feature_rows: RecordBatch,
        ttl: Option<i64>,
        batch_rows: usize,
        strategy: JoinStrategy,
    ) -> Vec<(String, i64, Option<i64>)> {
        let (spine_rows, feature_rows) = match strategy {
            JoinStrategy::SortMerge => (spine_rows, feature_rows),
            JoinStrategy::SpineIndex => (reversed(spine_rows), reversed(feature_rows)),
        };
        let split = |b: RecordBatch| -> Vec<RecordBatch> {
            (0..b.num_rows())
                .step_by(batch_rows)
                .map(|s| b.slice(s, batch_rows.min(b.num_rows() - s)))
                .collect()
        };
        let spine_schema = spine_rows.schema();
        let feature_schema = feature_rows.schema();
        let spine =
            MemorySourceConfig::try_new_exec(&[split(spine_rows)], spine_schema, None).unwrap();
        let features =
            MemorySourceConfig::try_new_exec(&[split(feature_rows)], feature_schema, None).unwrap();
        let spec = AsOfJoinSpec {
            strategy,
            ..spec(ttl)
        };
        let join = Arc::new(AsOfJoinExec::try_new(spine, features, spec).unwrap());
        let ctx = SessionContext::new();
        let batches = collect(join, ctx.task_ctx()).await.unwrap();
        let mut out = Vec::new();
        for b in batches {
            let k = b.column(0).as_string::<i32>();
            let t = b.column(1).as_primitive::<TimestampMicrosecondType>();
            let v = b
                .column(2)
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            for i in 0..b.num_rows() {
                out.push((
                    k.value(i).to_string(),
                    t.value(i),
                    (!v.is_null(i)).then(|| v.value(i)),
                ));
            }
        }
        if strategy == JoinStrategy::SpineIndex {
            out.reverse();
        }
        out
    }

    #[tokio::test]
    async fn latest_at_or_before_each_spine_time() {
        let features = features(&[
            ("a", 10, 1, 100),
            ("a", 20, 1, 200),
            ("a", 20, 2, 201), // same time, later ingest: wins
            ("a", 30, 1, 300),
            ("c", 5, 1, 50),
        ]);
        let spine = spine(&[
            ("a", 5),  // before any: null
            ("a", 10), // equal time matches
            ("a", 25),
            ("a", 25), // duplicate spine rows each get a row
            ("a", 99),
            ("b", 50), // unknown key
            ("c", 6),
        ]);
        for (batch_rows, strategy) in [1, 2, 3, 100]
            .into_iter()
            .flat_map(|b| STRATEGIES.map(|s| (b, s)))
        {
            let out = run(spine.clone(), features.clone(), None, batch_rows, strategy).await;
            let values: Vec<Option<i64>> = out.iter().map(|r| r.2).collect();
            assert_eq!(
                values,
                [
                    None,
                    Some(100),
                    Some(201),
                    Some(201),
                    Some(300),
                    None,
                    Some(50)
                ],
                "batches of {batch_rows}, {strategy:?}"
            );
        }
    }

    #[tokio::test]
    async fn no_feature_row_for_any_spine_key_gives_nulls() {
        for strategy in STRATEGIES {
            for rows in [&[("x", 1, 1, 1)][..], &[]] {
                let out = run(
                    spine(&[("a", 5), ("b", 6)]),
                    features(rows),
                    None,
                    1,
                    strategy,
                )
                .await;
                let values: Vec<Option<i64>> = out.iter().map(|r| r.2).collect();
                assert_eq!(
                    values,
                    [None, None],
                    "{strategy:?}, {} feature rows",
                    rows.len()
                );
            }
        }
    }

    #[tokio::test]
    async fn ttl_boundary_is_inclusive() {
        let features = features(&[("a", 100, 1, 1)]);
        let spine = spine(&[("a", 110), ("a", 111)]);
        for strategy in STRATEGIES {
            let out = run(spine.clone(), features.clone(), Some(10), 10, strategy).await;
            assert_eq!(
                out[0].2,
                Some(1),
                "t - ttl == timestamp matches ({strategy:?})"
            );
            assert_eq!(
                out[1].2, None,
                "one microsecond later it is expired ({strategy:?})"
            );
        }
    }

    #[tokio::test]
    async fn ttl_applies_to_the_row_carried_forward() {
        // Key a: the row at 100 answers 105 and is carried to 120, where the ttl excludes
        // it. Key b: the row at 112 answers 120 and is carried to 130, too old there.
        let features = features(&[("a", 100, 1, 1), ("b", 100, 1, 2), ("b", 112, 1, 3)]);
        let spine = spine(&[("a", 105), ("a", 120), ("b", 105), ("b", 120), ("b", 130)]);
        for strategy in STRATEGIES {
            let out = run(spine.clone(), features.clone(), Some(10), 2, strategy).await;
            let values: Vec<Option<i64>> = out.iter().map(|r| r.2).collect();
            assert_eq!(
                values,
                [Some(1), None, Some(2), Some(3), None],
                "{strategy:?}"
            );
        }
    }

    /// Random data with many ties, in random batch sizes: both strategies give the rows a
    /// plain scan of the feature rows gives.
    #[tokio::test]
    async fn strategies_agree_with_a_plain_scan() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = |n: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % n
        };
        for round in 0..20 {
            // Odd rounds use keys longer than the index's 16-byte prefix, all sharing it.
            let keys: [&str; 5] = if round % 2 == 0 {
                ["a", "b", "c", "d", "e"]
            } else {
                [
                    "a_key_longer_than_16_bytes_a",
                    "a_key_longer_than_16_bytes_b",
                    "a_key_longer_than_16_bytes_c",
                    "a_key_longer_than_16_bytes_d",
                    "a_key_longer_than_16_bytes_e",
                ]
            };
            let mut rows: Vec<(&str, i64, i64, i64)> = (0..next(60) + 1)
                .map(|i| {
                    (
                        keys[next(5) as usize],
                        next(12) as i64,
                        next(3) as i64 + 1,
                        i as i64,
                    )
                })
                .collect();
            // (key, time, seq) is unique in the offline store, and the input is sorted.
            rows.sort_by_key(|r| (r.0, r.1, r.2));
            rows.dedup_by_key(|r| (r.0, r.1, r.2));
            let mut spine_rows: Vec<(&str, i64)> = (0..next(30) + 1)
                .map(|_| (keys[next(5) as usize], next(15) as i64 - 1))
                .collect();
            spine_rows.push(("z", 3));
            spine_rows.sort();
            let ttl = (round % 3 == 0).then_some(3);
            let want: Vec<Option<i64>> = spine_rows
                .iter()
                .map(|&(k, t)| {
                    rows.iter()
                        .filter(|r| r.0 == k && r.1 <= t && ttl.is_none_or(|ttl| r.1 >= t - ttl))
                        .max_by_key(|r| (r.1, r.2))
                        .map(|r| r.3)
                })
                .collect();
            let batch_rows = next(7) as usize + 1;
            for strategy in STRATEGIES {
                let out = run(
                    spine(&spine_rows),
                    features(&rows),
                    ttl,
                    batch_rows,
                    strategy,
                )
                .await;
                let got: Vec<Option<i64>> = out.iter().map(|r| r.2).collect();
                assert_eq!(got, want, "round {round}, {strategy:?}");
            }
        }
    }

    /// Rows that lose their slot are compacted away: 1000 spine rows, each beaten 100
    /// times over, one batch at a time.
    #[tokio::test]
    async fn spine_index_compacts_rows_that_lost() {
        let names: Vec<String> = (0..1000).map(|k| format!("k{k:04}")).collect();
        let mut rows: Vec<(&str, i64, i64, i64)> = Vec::new();
        for t in 0..100 {
            for name in &names {
                rows.push((name.as_str(), t, 1, t * 10_000 + rows.len() as i64 % 1000));
            }
        }
        let spine_rows: Vec<(&str, i64)> = names.iter().map(|n| (n.as_str(), 1_000)).collect();
        // `run` reverses the feature rows for this join; reversed twice, they arrive oldest
        // first, so every batch beats the one before in every slot.
        rows.reverse();
        let out = run(
            spine(&spine_rows),
            features(&rows),
            None,
            1000,
            JoinStrategy::SpineIndex,
        )
        .await;
        assert_eq!(out.len(), 1000);
        for (i, r) in out.iter().enumerate() {
            assert_eq!(r.2, Some(99 * 10_000 + i as i64), "{r:?}");
        }
    }

    #[tokio::test]
    async fn many_feature_batches_per_spine_batch_stay_bounded() {
        // 200 keys with one row each, in batches of 1 row; the spine asks only the last key,
        // so one spine batch spans every feature batch.
        let rows: Vec<(String, i64, i64, i64)> =
            (0..200).map(|i| (format!("k{i:03}"), 1, 1, i)).collect();
        let borrowed: Vec<(&str, i64, i64, i64)> =
            rows.iter().map(|r| (r.0.as_str(), r.1, r.2, r.3)).collect();
        let spine_rows: Vec<(&str, i64)> = rows.iter().map(|r| (r.0.as_str(), 2)).collect();
        let out = run(
            spine(&spine_rows),
            features(&borrowed),
            None,
            1,
            JoinStrategy::SortMerge,
        )
        .await;
        assert_eq!(out.len(), 200);
        assert!(out.iter().enumerate().all(|(i, r)| r.2 == Some(i as i64)));
    }

    /// The spine-index join reserves what it holds; past the memory limit it fails saying
    /// what to change, rather than taking memory the limit does not allow.
    #[tokio::test]
    async fn spine_index_beyond_the_memory_limit_says_what_to_change() {
        let names: Vec<String> = (0..5000).map(|k| format!("k{k:05}")).collect();
        let spine_rows: Vec<(&str, i64)> = names.iter().map(|n| (n.as_str(), 1)).collect();
        let s = spine(&spine_rows);
        let f = features(&[("k00001", 1, 1, 1)]);
        let spine = MemorySourceConfig::try_new_exec(&[vec![s.clone()]], s.schema(), None).unwrap();
        let features =
            MemorySourceConfig::try_new_exec(&[vec![f.clone()]], f.schema(), None).unwrap();
        let spec = AsOfJoinSpec {
            strategy: JoinStrategy::SpineIndex,
            ..spec(None)
        };
        let join = Arc::new(AsOfJoinExec::try_new(spine, features, spec).unwrap());
        let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
            .with_memory_limit(64 * 1024, 1.0)
            .build_arc()
            .unwrap();
        let ctx = SessionContext::new_with_config_rt(Default::default(), runtime);
        let err = collect(join, ctx.task_ctx()).await.unwrap_err().to_string();
        assert!(
            err.contains("as-of join with `t`")
                && err.contains("memory_limit")
                && err.contains("training_set_join = \"sort_merge\""),
            "{err}"
        );
    }

    #[test]
    fn mismatched_key_types_are_refused() {
        let spine_batch = RecordBatch::try_from_iter([
            ("k", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
            ("t", ts(&[1])),
        ])
        .unwrap();
        let spine = MemorySourceConfig::try_new_exec(
            &[vec![spine_batch.clone()]],
            spine_batch.schema(),
            None,
        )
        .unwrap();
        let f = features(&[("a", 1, 1, 1)]);
        let features =
            MemorySourceConfig::try_new_exec(&[vec![f.clone()]], f.schema(), None).unwrap();
        let err = AsOfJoinExec::try_new(spine, features, spec(None)).unwrap_err();
        assert!(err.to_string().contains("join key `k` is Int64"), "{err}");
    }
}
