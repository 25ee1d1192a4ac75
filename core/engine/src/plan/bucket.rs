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

use std::collections::BTreeMap;
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
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::repartition::{REPARTITION_RANDOM_STATE, RepartitionExec};
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::streaming_merge::StreamingMergeBuilder;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, EmptyRecordBatchStream, ExecutionPlan, Partitioning,
    PlanProperties, apply_expression_roots,
};
use serde::{Deserialize, Serialize};

use super::node::{ASCENDING, file_scan, rebuilt_from_children, recompute};

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

/// What a [`BucketMergeExec`] reads and merges by: its buckets, and columns of its input by
/// name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketMergeSpec {
    /// How many buckets the table has: the node's output partitions.
    pub buckets: u32,
    /// The bucket of every file the scan reads, by object store path. Partition `b` may
    /// read only whole files of bucket `b`; anything else is refused (see
    /// [`BucketMergeExec::check_groups`]).
    pub file_buckets: BTreeMap<String, u32>,
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
/// partitions, and sorted by [`BucketMergeSpec::order`].
///
/// The file groups *are* the partitioning, so nothing may regroup them after
/// [`BucketMergeExec::over_scan`] made them: the scan declares its output partitioning,
/// which stops DataFusion's `EnforceDistribution` from re-cutting its file groups into
/// equal byte ranges (it does that to any file scan over `repartition_file_min_size`,
/// without asking the parent; docs/training-sets.md tells the story). And every time the
/// node is built (after each optimizer pass, in each Ballista task, on the executor),
/// [`BucketMergeExec::check_groups`] refuses groups that hold another bucket's files or
/// byte ranges: a regrouping fails loudly instead of joining rows with a spine partition
/// that does not hold their keys.
#[derive(Debug)]
pub struct BucketMergeExec {
    input: Arc<dyn ExecutionPlan>,
    spec: BucketMergeSpec,
    ordering: LexOrdering,
    metrics: ExecutionPlanMetricsSet,
    cache: Arc<PlanProperties>,
}

fn scan_config(input: &Arc<dyn ExecutionPlan>) -> Result<&FileScanConfig> {
    file_scan(input).ok_or_else(|| {
        DataFusionError::Internal(format!(
            "BucketMergeExec reads a file scan, not {}",
            input.name()
        ))
    })
}

impl BucketMergeExec {
    pub fn try_new(input: Arc<dyn ExecutionPlan>, spec: BucketMergeSpec) -> Result<Self> {
        let config = scan_config(&input)?;
        Self::check_groups(config, &spec)?;
        // A Ballista task keeps only its groups: declare what is left, or DataFusion
        // warns that the declared partitioning does not match the groups.
        let groups = config.file_groups.len();
        let input = match &config.output_partitioning {
            Some(declared) if declared.partition_count() != groups => {
                let config = FileScanConfigBuilder::from(config.clone())
                    .with_output_partitioning(Some(Partitioning::UnknownPartitioning(groups)))
                    .build();
                DataSourceExec::from_data_source(config) as Arc<dyn ExecutionPlan>
            }
            _ => input,
        };
        let config = scan_config(&input)?;
        let schema = input.schema();
        let find = |name: &str| -> Result<Arc<dyn PhysicalExpr>> {
            let index = schema.index_of(name).map_err(|_| {
                DataFusionError::Plan(format!("the bucketed scan has no column `{name}`"))
            })?;
            Ok(super::node::column(&schema, index))
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
        // One partition per group: all buckets in the plan, a task's share in a task.
        let partitions = config.file_groups.len();
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

    /// Refuses a scan whose file groups are not the buckets: a group may hold only whole files of one bucket, no two groups the
    /// same bucket, and when there is a group per bucket, group `b` is bucket `b`.
    ///
    /// A Ballista task sees fewer groups: the scheduler restricts a task's plan to the
    /// partitions it runs, keeping group `p` of each of them (and the spine partitions
    /// alike), so a group's position no longer names its bucket; its files still do.
    pub fn check_groups(config: &FileScanConfig, spec: &BucketMergeSpec) -> Result<()> {
        let regrouped = |what: String| {
            DataFusionError::Internal(format!(
                "bucket merge: {what}; the scan's file groups were regrouped after planning, which would join feature rows with a spine partition that does not hold their keys. This is a bug in ftab; please report it"
            ))
        };
        let groups = config.file_groups.len();
        if groups > spec.buckets as usize {
            return Err(regrouped(format!(
                "{groups} file groups for {} buckets",
                spec.buckets
            )));
        }
        let whole = groups == spec.buckets as usize;
        let mut owner: BTreeMap<u32, usize> = BTreeMap::new();
        for (index, group) in config.file_groups.iter().enumerate() {
            let mut bucket_of_group = None;
            for file in group.iter() {
                let path = file.object_meta.location.as_ref();
                if let Some(range) = &file.range {
                    return Err(regrouped(format!(
                        "partition {index} reads bytes {}..{} of `{path}`, not the whole file",
                        range.start, range.end
                    )));
                }
                let Some(&bucket) = spec.file_buckets.get(path) else {
                    return Err(regrouped(format!(
                        "partition {index} reads `{path}`, which is in no bucket"
                    )));
                };
                match bucket_of_group {
                    None => bucket_of_group = Some(bucket),
                    Some(other) if other != bucket => {
                        return Err(regrouped(format!(
                            "partition {index} reads files of buckets {other} and {bucket}"
                        )));
                    }
                    Some(_) => {}
                }
            }
            let Some(bucket) = bucket_of_group else {
                continue;
            };
            if whole && bucket as usize != index {
                return Err(regrouped(format!(
                    "partition {index} reads the files of bucket {bucket}"
                )));
            }
            if let Some(first) = owner.insert(bucket, index) {
                return Err(regrouped(format!(
                    "partitions {first} and {index} both read files of bucket {bucket}"
                )));
            }
        }
        Ok(())
    }

    /// Group `files` (URLs) of a scan into one group per bucket, `buckets[i]` being the
    /// bucket of `files[i]`, and put [`BucketMergeExec`] over it, merging by `order` if
    /// `merge` (see [`BucketMergeSpec`]).
    ///
    /// `scan` is DataFusion's plan of a filtered Parquet scan over those files; its one
    /// `DataSourceExec` is replaced, everything above it kept. `None` when the plan has
    /// another shape (then the caller shuffles instead).
    pub fn over_scan(
        scan: Arc<dyn ExecutionPlan>,
        files: &[String],
        buckets: &[u32],
        count: u32,
        keys: Vec<String>,
        order: Vec<String>,
        merge: bool,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        if let Ok(config) = scan_config(&scan) {
            let mut file_buckets = BTreeMap::new();
            for (file, &bucket) in files.iter().zip(buckets) {
                file_buckets.insert(super::object_path(file)?.1.to_string(), bucket);
            }
            let mut groups: Vec<Vec<_>> = vec![Vec::new(); count as usize];
            let mut seen = std::collections::HashSet::new();
            for file in config.file_groups.iter().flat_map(|g| g.iter()) {
                // DataFusion may have split a file into ranges: a merge reads it whole.
                if !seen.insert(file.object_meta.location.clone()) {
                    continue;
                }
                let Some(&bucket) = file_buckets.get(file.object_meta.location.as_ref()) else {
                    return Ok(None);
                };
                let mut whole = file.clone();
                whole.range = None;
                match groups.get_mut(bucket as usize) {
                    Some(group) => group.push(whole),
                    None => return Ok(None),
                }
            }
            // Declaring the partitioning keeps the optimizer from re-cutting the groups.
            let config = FileScanConfigBuilder::from(config.clone())
                .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
                .with_output_partitioning(Some(Partitioning::UnknownPartitioning(count as usize)))
                .build();
            let spec = BucketMergeSpec {
                buckets: count,
                file_buckets,
                keys,
                order,
                merge,
            };
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
        match Self::over_scan(child, files, buckets, count, keys, order, merge)? {
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

    rebuilt_from_children!("BucketMergeExec", [input]);

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
        // A scan of one partition's files: the declared partitioning is the whole scan's.
        let part_of = |files: Vec<_>| {
            FileScanConfigBuilder::from(config.clone())
                .with_file_groups(vec![FileGroup::new(files)])
                .with_output_partitioning(None)
                .build()
        };
        if !self.spec.merge {
            let files = part_of(group.iter().cloned().collect());
            return DataSourceExec::from_data_source(files).execute(0, context);
        }
        let streams = group
            .iter()
            .map(|file| {
                DataSourceExec::from_data_source(part_of(vec![file.clone()]))
                    .execute(0, context.clone())
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
                    .map(|c| super::super::node::column(&schema, schema.index_of(c).unwrap()))
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
        let scan = || scan_of(&planner, &files);
        // Merged, each bucket comes out sorted; unmerged, it comes out whole, in any order.
        for merge in [true, false] {
            let plan = merge_over(&planner, &files, &buckets, &["k", "n", "v"], merge).await;
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
        assert!(
            BucketMergeExec::over_scan(
                scan().await,
                &files[1..],
                &buckets[1..],
                2,
                vec!["k".into()],
                vec!["k".into()],
                true
            )
            .unwrap()
            .is_none()
        );
    }

    /// The file groups are the buckets, whatever the optimizer's thresholds: with
    /// DataFusion told to cut any scan into byte ranges (`repartition_file_min_size` = 1),
    /// every partition still holds exactly its bucket's whole files. Before the scan
    /// declared its partitioning, this plan came out of the optimizer with the groups
    /// re-cut into equal byte ranges, and rows met the wrong spine partition.
    #[tokio::test]
    async fn the_optimizer_does_not_regroup_the_buckets() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = session_config(2, 1 << 30);
        config.options_mut().optimizer.repartition_file_min_size = 1;
        let planner = Planner::new(config, Arc::new(RuntimeEnv::default()));
        // Buckets of very different sizes, so equal byte ranges cross bucket lines.
        let (files, buckets) = write_buckets(dir.path(), &[(0, 5, 2_000), (1, 1, 50)]);
        for merge in [true, false] {
            let plan = merge_over(&planner, &files, &buckets, &["k", "n"], merge).await;
            let plan = planner.optimize(plan).unwrap();
            let merge_node = find_merge(&plan);
            let config = scan_config(&merge_node.input).unwrap();
            assert_eq!(config.file_groups.len(), 2);
            for (b, group) in config.file_groups.iter().enumerate() {
                assert!(group.iter().all(|f| f.range.is_none()), "merge: {merge}");
                assert_eq!(
                    group.len(),
                    buckets.iter().filter(|&&x| x as usize == b).count(),
                    "bucket {b} holds its own files (merge: {merge})"
                );
            }
            // And each bucket's rows come out in its own partition.
            let parts = collect_partitioned(plan, planner.ctx().task_ctx())
                .await
                .unwrap();
            let rows: Vec<usize> = parts
                .iter()
                .map(|p| p.iter().map(|b| b.num_rows()).sum())
                .collect();
            assert_eq!(rows, [5 * 2_000, 50], "merge: {merge}");
        }
    }

    /// A scan whose groups are not the buckets is refused, at planning and at run time,
    /// instead of silently joining rows in the wrong partition.
    #[tokio::test]
    async fn regrouped_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let planner = Planner::new(session_config(2, 1 << 30), Arc::new(RuntimeEnv::default()));
        let (files, buckets) = write_buckets(dir.path(), &[(0, 2, 100), (1, 2, 100)]);
        let plan = merge_over(&planner, &files, &buckets, &["k"], true).await;
        let merge = find_merge(&plan);
        let config = scan_config(&merge.input).unwrap().clone();
        let rebuilt = |groups: Vec<FileGroup>| {
            let config = FileScanConfigBuilder::from(config.clone())
                .with_file_groups(groups)
                .build();
            BucketMergeExec::try_new(
                DataSourceExec::from_data_source(config),
                merge.spec().clone(),
            )
        };
        let all: Vec<_> = config
            .file_groups
            .iter()
            .flat_map(|g| g.iter().cloned())
            .collect();
        // Swapped groups: each partition holds the other bucket's files.
        let swapped = rebuilt(vec![
            config.file_groups[1].clone(),
            config.file_groups[0].clone(),
        ])
        .unwrap_err()
        .to_string();
        assert!(swapped.contains("of bucket 1"), "{swapped}");
        // A file cut into byte ranges.
        let mut ranged = config.file_groups[0].iter().cloned().collect::<Vec<_>>();
        let first = ranged[0].clone();
        let size = first.object_meta.size;
        ranged[0] = first.clone().with_range(0, (size / 2) as i64);
        ranged.push(first.with_range((size / 2) as i64, size as i64));
        let ranges = rebuilt(vec![FileGroup::new(ranged), config.file_groups[1].clone()])
            .unwrap_err()
            .to_string();
        assert!(ranges.contains("not the whole file"), "{ranges}");
        // Groups merged into one.
        let merged = rebuilt(vec![FileGroup::new(all)]).unwrap_err().to_string();
        assert!(
            merged.contains("reads files of buckets 0 and 1"),
            "{merged}"
        );
        // One bucket's files cut into two groups.
        let files_0: Vec<_> = config.file_groups[0].iter().cloned().collect();
        let split = rebuilt(vec![
            FileGroup::new(files_0[..1].to_vec()),
            FileGroup::new(files_0[1..].to_vec()),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            split.contains("partition 1 reads the files of bucket 0"),
            "{split}"
        );
        // A Ballista task of bucket 1 alone: its one group is bucket 1, one partition.
        let task = rebuilt(vec![config.file_groups[1].clone()]).unwrap();
        assert_eq!(task.properties().output_partitioning().partition_count(), 1);
    }

    /// Shipped to an executor, the node keeps its spec (every file's bucket included) and
    /// its file groups, one per bucket.
    #[tokio::test]
    async fn the_bucket_merge_survives_the_trip_to_an_executor() {
        let dir = tempfile::tempdir().unwrap();
        let planner = Planner::new(session_config(2, 1 << 30), Arc::new(RuntimeEnv::default()));
        let (files, buckets) = write_buckets(dir.path(), &[(0, 2, 10), (1, 3, 10)]);
        let plan = merge_over(&planner, &files, &buckets, &["k", "n"], true).await;
        let decoded = crate::codec::tests::round_trip(plan.clone());
        let (original, decoded) = (find_merge(&plan), find_merge(&decoded));
        assert_eq!(decoded.spec(), original.spec());
        assert_eq!(decoded.spec().file_buckets.len(), 5);
        let groups = |merge: &BucketMergeExec| {
            scan_config(&merge.input)
                .unwrap()
                .file_groups
                .iter()
                .map(|g| {
                    g.iter()
                        .map(|f| f.object_meta.location.to_string())
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(groups(decoded), groups(original));
    }

    /// Parquet files of (k, n) rows: `(bucket, files, rows per file)` for each bucket,
    /// each file sorted by k and holding only keys of its bucket. Returns the file URLs and
    /// their buckets.
    fn write_buckets(
        dir: &std::path::Path,
        shape: &[(u32, usize, usize)],
    ) -> (Vec<String>, Vec<u32>) {
        let mut files = Vec::new();
        let mut buckets = Vec::new();
        for &(bucket, count, rows) in shape {
            let mut keys = Vec::new();
            let mut candidate = 0u64;
            while keys.len() < rows {
                let key = format!("key{candidate:08}");
                candidate += 1;
                let array: ArrayRef = Arc::new(StringArray::from(vec![key.as_str()]));
                if bucket_ids(&[array], 2).unwrap().value(0) as u32 == bucket {
                    keys.push(key);
                }
            }
            for f in 0..count {
                let numbers: Vec<i64> = (0..rows as i64).map(|i| i + f as i64).collect();
                let b = batch(
                    &keys.iter().map(|k| k.as_str()).collect::<Vec<_>>(),
                    &numbers,
                    &numbers,
                );
                let path = dir.join(format!("b{bucket}-f{f}.parquet"));
                let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(
                    std::fs::File::create(&path).unwrap(),
                    b.schema(),
                    None,
                )
                .unwrap();
                writer.write(&b).unwrap();
                writer.close().unwrap();
                files.push(url::Url::from_file_path(&path).unwrap().to_string());
                buckets.push(bucket);
            }
        }
        (files, buckets)
    }

    /// The bucket merge (2 buckets, keyed by `k`, merged by `order`) over a scan of `files`.
    async fn merge_over(
        planner: &Planner,
        files: &[String],
        buckets: &[u32],
        order: &[&str],
        merge: bool,
    ) -> Arc<dyn ExecutionPlan> {
        BucketMergeExec::over_scan(
            scan_of(planner, files).await,
            files,
            buckets,
            2,
            vec!["k".into()],
            order.iter().map(|c| c.to_string()).collect(),
            merge,
        )
        .unwrap()
        .expect("a plain scan takes a bucket merge")
    }

    /// DataFusion's plan of a Parquet scan of `files`.
    async fn scan_of(planner: &Planner, files: &[String]) -> Arc<dyn ExecutionPlan> {
        planner
            .ctx()
            .read_parquet(files.to_vec(), ParquetReadOptions::default())
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap()
    }

    /// The bucket merge node in a plan.
    fn find_merge(plan: &Arc<dyn ExecutionPlan>) -> &BucketMergeExec {
        fn search(plan: &Arc<dyn ExecutionPlan>) -> Option<&BucketMergeExec> {
            plan.downcast_ref::<BucketMergeExec>()
                .or_else(|| plan.children().into_iter().find_map(search))
        }
        search(plan).expect("the plan has a bucket merge")
    }
}
