//! Bucketed offline files and the node that reads them without a shuffle.
//!
//! An ingest writes each offline row with `_bucket`, a hash of its join keys modulo the
//! table's bucket count, as a second Delta partition column under `_date`
//! (docs/offline-store.md). The hash is DataFusion's and Ballista's hash repartitioning,
//! computed on the keys in their canonical types ([`canonical_key_type`]), so bucket `b`
//! holds exactly the rows a hash shuffle into `count` partitions sends to partition `b`.
//! And an ingest writes each file sorted by (keys, timestamp): the ingest writer receives
//! its partition sorted, and `_seq` is one value per ingest.
//!
//! A training set over such a table does not shuffle or sort the feature rows:
//! [`BucketMergeExec`] reads the files of bucket `b` as partition `b`, each file a sorted
//! run, and merges them into one stream sorted by (keys, timestamp, `_seq`). Only the spine
//! is shuffled, into the same buckets.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int32Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::hash_utils::create_hashes;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result, internal_err};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{
    EquivalenceProperties, LexOrdering, PhysicalExpr, PhysicalSortExpr,
};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{
    Boundedness, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::repartition::{REPARTITION_RANDOM_STATE, RepartitionExec};
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::streaming_merge::StreamingMergeBuilder;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, EmptyRecordBatchStream, ExecutionPlan, Partitioning,
    PlanProperties, apply_expression_roots,
};
use serde::{Deserialize, Serialize};

use super::{ASCENDING, recompute};

/// The partition column holding a row's bucket (int32).
pub const BUCKET_COLUMN: &str = "_bucket";

/// The type a join key is hashed in for its bucket, or `None` for types ftab does not
/// bucket by. Int32 hashes as int64, so widening an int32 key keeps every row's bucket.
pub fn canonical_key_type(data_type: &DataType) -> Option<DataType> {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Some(DataType::Utf8),
        DataType::Int32 | DataType::Int64 => Some(DataType::Int64),
        _ => None,
    }
}

/// The bucket of every row of `keys` (join key columns, in the table's key order) among
/// `count` buckets.
pub fn bucket_ids(keys: &[ArrayRef], count: u32) -> Result<Int32Array> {
    if count == 0 || count > i32::MAX as u32 {
        return internal_err!("bucket count {count} is out of range");
    }
    let canonical = keys
        .iter()
        .map(|array| {
            let wanted = canonical_key_type(array.data_type()).ok_or_else(|| {
                DataFusionError::Internal(format!(
                    "cannot bucket by a join key of type {}",
                    array.data_type()
                ))
            })?;
            if array.data_type() == &wanted {
                Ok(array.clone())
            } else {
                Ok(cast(array, &wanted)?)
            }
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    let rows = keys.first().map_or(0, |k| k.len());
    let mut hashes = vec![0u64; rows];
    create_hashes(
        &canonical,
        REPARTITION_RANDOM_STATE.random_state(),
        &mut hashes,
    )?;
    Ok(hashes
        .iter()
        .map(|h| (h % u64::from(count)) as i32)
        .collect())
}

/// What a [`BucketMergeExec`] merges by: columns of its input, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketMergeSpec {
    /// The join keys, in the table's key order (the order they were hashed in).
    pub keys: Vec<String>,
    /// The order every file is sorted in and the output is merged in: the keys, then the
    /// timestamp and `_seq`.
    pub order: Vec<String>,
    /// Whether to merge a bucket's files; if not, they are read one after another and the
    /// output is only partitioned (for a join that does not need its input sorted).
    #[serde(default = "merged")]
    pub merge: bool,
}

fn merged() -> bool {
    true
}

/// Reads bucketed offline files: output partition `b` is the merge of the files of the
/// input's file group `b`, each file read as its own sorted stream.
///
/// The input is a Parquet [`DataSourceExec`] with one file group per bucket (whole files,
/// never ranges). Its output is hash-partitioned by the keys like a shuffle into that many
/// partitions, and sorted by [`BucketMergeSpec::order`]. Ballista restricts the input of a
/// task to the task's file groups, so a task merges exactly its bucket's files.
#[derive(Debug)]
pub struct BucketMergeExec {
    input: Arc<dyn ExecutionPlan>,
    spec: BucketMergeSpec,
    ordering: LexOrdering,
    metrics: ExecutionPlanMetricsSet,
    cache: Arc<PlanProperties>,
}

fn scan_config(input: &Arc<dyn ExecutionPlan>) -> Result<&FileScanConfig> {
    input
        .downcast_ref::<DataSourceExec>()
        .and_then(|exec| {
            let source: &dyn std::any::Any = exec.data_source().as_ref();
            source.downcast_ref::<FileScanConfig>()
        })
        .ok_or_else(|| {
            DataFusionError::Internal(format!(
                "BucketMergeExec reads a file scan, not {}",
                input.name()
            ))
        })
}

impl BucketMergeExec {
    pub fn try_new(input: Arc<dyn ExecutionPlan>, spec: BucketMergeSpec) -> Result<Self> {
        scan_config(&input)?;
        let schema = input.schema();
        let find = |name: &str| -> Result<Arc<dyn PhysicalExpr>> {
            let index = schema.index_of(name).map_err(|_| {
                DataFusionError::Plan(format!("the bucketed scan has no column `{name}`"))
            })?;
            Ok(super::column(&schema, index))
        };
        let keys = spec
            .keys
            .iter()
            .map(|k| find(k))
            .collect::<Result<Vec<_>>>()?;
        let ordering = LexOrdering::new(
            spec.order
                .iter()
                .map(|c| Ok(PhysicalSortExpr::new(find(c)?, ASCENDING)))
                .collect::<Result<Vec<_>>>()?,
        )
        .ok_or_else(|| DataFusionError::Plan("a bucket merge needs an order".into()))?;
        let partitions = input.properties().output_partitioning().partition_count();
        let orderings = if spec.merge {
            vec![ordering.clone()]
        } else {
            Vec::new()
        };
        let cache = PlanProperties::new(
            EquivalenceProperties::new_with_orderings(schema, orderings),
            Partitioning::Hash(keys, partitions),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Self {
            input,
            spec,
            ordering,
            metrics: ExecutionPlanMetricsSet::new(),
            cache: Arc::new(cache),
        })
    }

    pub fn spec(&self) -> &BucketMergeSpec {
        &self.spec
    }

    /// Group `files` (URLs) of a scan into one group per bucket, `buckets[i]` being the
    /// bucket of `files[i]`, and put [`BucketMergeExec`] over it.
    ///
    /// `scan` is DataFusion's plan of a filtered Parquet scan over those files; its one
    /// `DataSourceExec` is replaced, everything above it kept. `None` when the plan has
    /// another shape (then the caller shuffles instead).
    pub fn over_scan(
        scan: Arc<dyn ExecutionPlan>,
        files: &[String],
        buckets: &[u32],
        count: u32,
        spec: BucketMergeSpec,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        if let Ok(config) = scan_config(&scan) {
            let mut bucket_of = std::collections::HashMap::new();
            for (file, &bucket) in files.iter().zip(buckets) {
                bucket_of.insert(super::object_path(file)?.1, bucket);
            }
            let mut groups: Vec<Vec<_>> = vec![Vec::new(); count as usize];
            let mut seen = std::collections::HashSet::new();
            for file in config.file_groups.iter().flat_map(|g| g.iter()) {
                // DataFusion may have split a file into ranges: a merge reads it whole.
                if !seen.insert(file.object_meta.location.clone()) {
                    continue;
                }
                let Some(&bucket) = bucket_of.get(&file.object_meta.location) else {
                    return Ok(None);
                };
                let mut whole = file.clone();
                whole.range = None;
                match groups.get_mut(bucket as usize) {
                    Some(group) => group.push(whole),
                    None => return Ok(None),
                }
            }
            let config = FileScanConfigBuilder::from(config.clone())
                .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
                .build();
            let exec = Self::try_new(DataSourceExec::from_data_source(config), spec)?;
            return Ok(Some(Arc::new(exec)));
        }
        // Only nodes that keep rows in order and in their partition may sit above the scan.
        let kept = scan.maintains_input_order() == [true]
            && !scan.is::<RepartitionExec>()
            && !scan.is::<CoalescePartitionsExec>()
            && !scan.is::<SortExec>();
        if !kept {
            return Ok(None);
        }
        let child = scan.children()[0].clone();
        match Self::over_scan(child, files, buckets, count, spec)? {
            Some(child) => Ok(Some(scan.replace_children(vec![child], recompute())?)),
            None => Ok(None),
        }
    }
}

impl DisplayAs for BucketMergeExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let buckets = self.cache.partitioning.partition_count();
        if self.spec.merge {
            write!(
                f,
                "BucketMergeExec: buckets={buckets}, order=[{}]",
                self.spec.order.join(", ")
            )
        } else {
            write!(f, "BucketMergeExec: buckets={buckets}, unmerged")
        }
    }
}

impl ExecutionPlan for BucketMergeExec {
    fn name(&self) -> &str {
        "BucketMergeExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        // The file groups are the buckets: never regroup them.
        vec![false]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        apply_expression_roots(self.ordering.iter().map(|e| &e.expr), f)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = super::ingest::only_child(&mut children, "BucketMergeExec")?;
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
        let config = scan_config(&self.input)?;
        let Some(group) = config.file_groups.get(partition) else {
            return internal_err!(
                "BucketMergeExec has {} buckets, asked for partition {partition}",
                config.file_groups.len()
            );
        };
        if !self.spec.merge {
            let files = FileScanConfigBuilder::from(config.clone())
                .with_file_groups(vec![group.clone()])
                .build();
            return DataSourceExec::from_data_source(files).execute(0, context);
        }
        let streams = group
            .iter()
            .map(|file| {
                let one = FileScanConfigBuilder::from(config.clone())
                    .with_file_groups(vec![FileGroup::new(vec![file.clone()])])
                    .build();
                DataSourceExec::from_data_source(one).execute(0, context.clone())
            })
            .collect::<Result<Vec<_>>>()?;
        if streams.is_empty() {
            return Ok(Box::pin(EmptyRecordBatchStream::new(self.schema())));
        }
        let reservation = MemoryConsumer::new(format!("BucketMergeExec[{partition}]"))
            .register(context.memory_pool());
        StreamingMergeBuilder::new()
            .with_streams(streams)
            .with_schema(self.schema())
            .with_expressions(&self.ordering)
            .with_metrics(BaselineMetrics::new(&self.metrics, partition))
            .with_batch_size(context.session_config().batch_size())
            .with_reservation(reservation)
            .build()
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::Int64Type;
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::execution::runtime_env::RuntimeEnv;
    use datafusion::physical_plan::collect_partitioned;
    use datafusion::physical_plan::repartition::RepartitionExec;
    use datafusion::prelude::ParquetReadOptions;

    use crate::plan::{Planner, session_config};

    fn batch(keys: &[&str], numbers: &[i64], values: &[i64]) -> RecordBatch {
        RecordBatch::try_from_iter([
            ("k", Arc::new(StringArray::from(keys.to_vec())) as ArrayRef),
            (
                "n",
                Arc::new(Int64Array::from(numbers.to_vec())) as ArrayRef,
            ),
            ("v", Arc::new(Int64Array::from(values.to_vec())) as ArrayRef),
        ])
        .unwrap()
    }

    #[tokio::test]
    async fn buckets_are_the_partitions_of_a_hash_shuffle() {
        let keys: Vec<String> = (0..500).map(|i| format!("user_{i}")).collect();
        let keys: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
        let numbers: Vec<i64> = (0..500).map(|i| i * 7919 - 1000).collect();
        let input = batch(&keys, &numbers, &numbers);
        for count in [1u32, 2, 3, 8] {
            for by in [vec!["k"], vec!["n"], vec!["k", "n"]] {
                let schema = input.schema();
                let exprs = by
                    .iter()
                    .map(|c| super::super::column(&schema, schema.index_of(c).unwrap()))
                    .collect();
                let source =
                    MemorySourceConfig::try_new_exec(&[vec![input.clone()]], schema.clone(), None)
                        .unwrap();
                let shuffle =
                    RepartitionExec::try_new(source, Partitioning::Hash(exprs, count as usize))
                        .unwrap();
                let ctx = datafusion::prelude::SessionContext::new();
                let parts = collect_partitioned(Arc::new(shuffle), ctx.task_ctx())
                    .await
                    .unwrap();
                for (partition, batches) in parts.iter().enumerate() {
                    for b in batches {
                        let columns: Vec<ArrayRef> = by
                            .iter()
                            .map(|c| b.column_by_name(c).unwrap().clone())
                            .collect();
                        let ids = bucket_ids(&columns, count).unwrap();
                        assert!(
                            ids.values().iter().all(|&id| id as usize == partition),
                            "{by:?} into {count}"
                        );
                    }
                }
            }
        }
        // An int32 key falls in the bucket of the same int64 value: widening keeps buckets.
        let narrow: ArrayRef = Arc::new(datafusion::arrow::array::Int32Array::from(vec![
            -5,
            0,
            7,
            1 << 30,
        ]));
        let wide: ArrayRef = Arc::new(Int64Array::from(vec![-5, 0, 7, 1 << 30]));
        assert_eq!(
            bucket_ids(&[narrow], 5).unwrap(),
            bucket_ids(&[wide], 5).unwrap()
        );
        let float: ArrayRef = Arc::new(datafusion::arrow::array::Float64Array::from(vec![1.0]));
        assert!(bucket_ids(&[float], 2).is_err());
    }

    #[tokio::test]
    async fn a_bucket_merge_reads_each_bucket_sorted_without_a_shuffle() {
        let dir = tempfile::tempdir().unwrap();
        let planner = Planner::new(session_config(2, 1 << 30), Arc::new(RuntimeEnv::default()));
        let ctx = planner.ctx();
        // Three sorted runs per bucket, keys interleaved between runs.
        let mut files = Vec::new();
        let mut buckets = Vec::new();
        let mut expected: Vec<Vec<(String, i64, i64)>> = vec![Vec::new(), Vec::new()];
        for run in 0..3i64 {
            let mut rows: Vec<(String, i64, i64)> = (0..40)
                .map(|i| {
                    (
                        format!("k{:02}", (i * 7 + run) % 23),
                        i % 5 + run,
                        run * 100 + i,
                    )
                })
                .collect();
            rows.sort();
            let keys: ArrayRef = Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.0)));
            let ids = bucket_ids(&[keys], 2).unwrap();
            for bucket in 0..2 {
                let mine: Vec<_> = rows
                    .iter()
                    .zip(ids.values())
                    .filter(|(_, b)| **b == bucket)
                    .map(|(r, _)| r.clone())
                    .collect();
                let path = dir.path().join(format!("run{run}-b{bucket}.parquet"));
                let b = batch(
                    &mine.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
                    &mine.iter().map(|r| r.1).collect::<Vec<_>>(),
                    &mine.iter().map(|r| r.2).collect::<Vec<_>>(),
                );
                let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(
                    std::fs::File::create(&path).unwrap(),
                    b.schema(),
                    None,
                )
                .unwrap();
                writer.write(&b).unwrap();
                writer.close().unwrap();
                files.push(url::Url::from_file_path(&path).unwrap().to_string());
                buckets.push(bucket as u32);
                expected[bucket as usize].extend(mine);
            }
        }
        let scan = || async {
            ctx.read_parquet(files.clone(), ParquetReadOptions::default())
                .await
                .unwrap()
                .create_physical_plan()
                .await
                .unwrap()
        };
        // Merged, each bucket comes out sorted; unmerged, it comes out whole, in any order.
        for merge in [true, false] {
            let spec = BucketMergeSpec {
                keys: vec!["k".into()],
                order: vec!["k".into(), "n".into(), "v".into()],
                merge,
            };
            let plan = BucketMergeExec::over_scan(scan().await, &files, &buckets, 2, spec)
                .unwrap()
                .expect("a plain scan takes a bucket merge");
            let plan = planner.optimize(plan).unwrap();
            let shown = datafusion::physical_plan::displayable(plan.as_ref())
                .indent(false)
                .to_string();
            assert!(
                !shown.contains("Repartition") && !shown.contains("Sort"),
                "{shown}"
            );
            assert!(matches!(
                plan.properties().output_partitioning(),
                Partitioning::Hash(_, 2)
            ));
            let parts = collect_partitioned(plan.clone(), ctx.task_ctx())
                .await
                .unwrap();
            for (bucket, batches) in parts.iter().enumerate() {
                let mut got = Vec::new();
                for b in batches {
                    let (k, n, v) = (
                        b.column(0).as_string::<i32>(),
                        b.column(1).as_primitive::<Int64Type>(),
                        b.column(2).as_primitive::<Int64Type>(),
                    );
                    for i in 0..b.num_rows() {
                        got.push((k.value(i).to_string(), n.value(i), v.value(i)));
                    }
                }
                let mut want = expected[bucket].clone();
                want.sort();
                if !merge {
                    got.sort();
                }
                assert_eq!(got, want, "bucket {bucket} (merge: {merge})");
            }
        }
        // A file the buckets do not name: no bucket merge.
        let spec = BucketMergeSpec {
            keys: vec!["k".into()],
            order: vec!["k".into()],
            merge: true,
        };
        assert!(
            BucketMergeExec::over_scan(scan().await, &files[1..], &buckets[1..], 2, spec)
                .unwrap()
                .is_none()
        );
    }
}
