//! The plan of a training set: the spine, then one as-of join per feature table.
//!
//! ```text
//! Projection (spine columns, then <table>__<feature>...)
//!   AsOfJoin(table 2)
//!     AsOfJoin(table 1)
//!       spine scan + __ftab_time, __ftab_key<n> (time and keys in the tables' types)
//!       table 1 scan (pruned files; timestamp filter) -> keys, timestamp, _seq, features
//!     table 2 scan ...
//! ```
//!
//! The optimizer then adds a hash repartition by each join's keys and the sorts the joins
//! require; Ballista cuts stages at the repartitions. Spine columns are kept untouched;
//! the internal `__ftab_*` columns hold the time as UTC microseconds and each table's join
//! keys cast to the table's key types, so both sides of a join hash and compare alike.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef, TimeUnit};
use datafusion::common::{Column, Result, ScalarValue, plan_err};
use datafusion::logical_expr::{Expr, cast, lit};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column as ColumnExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::prelude::ParquetReadOptions;

use super::as_of_join::{AsOfJoinExec, AsOfJoinSpec, JoinStrategy};
use super::bucket::BucketMergeExec;
use super::{JoinChoice, Planner};
use crate::offline::columns::SEQ_COLUMN;

/// Internal columns start with this; spines may not use it.
pub const INTERNAL_PREFIX: &str = "__ftab_";
const TIME: &str = "__ftab_time";

/// The spine: Parquet files, their schema and the time column.
#[derive(Debug, Clone)]
pub struct SpineInput {
    /// File URLs.
    pub files: Vec<String>,
    pub schema: SchemaRef,
    /// The spine's time column (any timestamp type; naive times are UTC).
    pub time_column: String,
    /// Rows, and bytes uncompressed (as the Parquet footers say): what decides whether
    /// the spine-index join fits in memory.
    pub rows: u64,
    pub bytes: u64,
}

/// One feature table of a training set.
#[derive(Debug, Clone)]
pub struct TableInput {
    pub table: String,
    /// The Parquet files of the offline table that can matter (already pruned).
    pub files: Vec<String>,
    /// The files' schema: the table's columns and `_seq` (the partition is not needed).
    pub schema: SchemaRef,
    /// Join keys as (spine column, table column).
    pub keys: Vec<(String, String)>,
    pub timestamp: String,
    pub ttl_micros: Option<i64>,
    /// Features as (table column, output column name).
    pub features: Vec<(String, String)>,
    /// Only feature rows with a timestamp in this range can be picked (UTC µs,
    /// inclusive); rows outside it are filtered at the scan.
    pub time_range: Option<(i64, i64)>,
    /// The files' buckets, when the table is bucketed by `keys` in this order.
    pub buckets: Option<FileBuckets>,
}

/// The buckets of a bucketed table's files ([`super::bucket`]).
#[derive(Debug, Clone)]
pub struct FileBuckets {
    pub count: u32,
    /// The bucket of each file, in the order of [`TableInput::files`].
    pub of_files: Vec<u32>,
}

pub use crate::protocol::ReadBy;

/// Bytes the spine-index join is assumed to hold per feature value of a type without a
/// fixed width (strings, lists).
const VARIABLE_VALUE_BYTES: u64 = 32;

/// Whether the spine-index join of `spine` with `tables` fits in `memory_limit`: each join
/// holds the spine as it reaches it (with the features joined before; the spine's Parquet
/// size counted twice, as encodings such as dictionaries are smaller than Arrow arrays)
/// plus its index and the feature rows its slots hold (up to three per slot before they are
/// compacted), and while one join hands its rows on, the next holds them too, hence twice
/// that. A skewed spine may put every row in one partition, so the whole spine is counted,
/// and it must fit in half the limit.
pub fn spine_index_fits(spine: &SpineInput, tables: &[TableInput], memory_limit: u64) -> bool {
    let mut row_bytes = (super::as_of_join::BYTES_PER_SPINE_ROW as u64) * 2;
    for table in tables {
        for (feature, _) in &table.features {
            let width = table
                .schema
                .field_with_name(feature)
                .ok()
                .and_then(|f| f.data_type().primitive_width())
                .map_or(VARIABLE_VALUE_BYTES, |w| w as u64);
            row_bytes += 4 * width;
        }
    }
    let need = 2u64.saturating_mul(
        spine
            .bytes
            .saturating_mul(2)
            .saturating_add(spine.rows.saturating_mul(row_bytes)),
    );
    need <= memory_limit / 2
}

impl TableInput {
    /// Whether the bucket merge can read this table in a plan of `partitions` partitions
    /// that lets a merge open `max_files` files: the buckets must be the partitions, the
    /// keys hash alike on both sides, and no bucket may hold more files than that.
    fn read_by(&self, partitions: usize, max_files: usize, join: JoinStrategy) -> ReadBy {
        let Some(buckets) = &self.buckets else {
            return ReadBy::Shuffle;
        };
        if buckets.count as usize != partitions || buckets.of_files.len() != self.files.len() {
            return ReadBy::Shuffle;
        }
        // The spine is shuffled in the table's key types; the files were bucketed in the
        // canonical ones. They agree when the table's types are canonical.
        let canonical = self.keys.iter().all(|(_, k)| {
            self.schema.field_with_name(k).is_ok_and(|f| {
                super::bucket::canonical_key_type(f.data_type()).as_ref() == Some(f.data_type())
            })
        });
        let mut per_bucket = vec![0usize; partitions];
        for &b in &buckets.of_files {
            match per_bucket.get_mut(b as usize) {
                Some(n) => *n += 1,
                None => return ReadBy::Shuffle,
            }
        }
        if canonical && join == JoinStrategy::SpineIndex {
            ReadBy::BucketScan
        } else if canonical && per_bucket.iter().all(|&n| n <= max_files) {
            ReadBy::BucketMerge
        } else {
            ReadBy::Shuffle
        }
    }
}

fn column(name: &str) -> Expr {
    Expr::Column(Column::new_unqualified(name))
}

fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn micros(value: i64) -> Expr {
    lit(ScalarValue::TimestampMicrosecond(
        Some(value),
        Some("UTC".into()),
    ))
}

/// The internal columns holding spine keys cast to the tables' key types: one per
/// (spine column, type), shared by every table that joins on it, so a join on the same keys
/// as the one before finds the spine already partitioned and sorted by them.
struct KeyColumns {
    columns: Vec<(String, DataType)>,
}

impl KeyColumns {
    fn name(&mut self, spine_column: &str, key_type: &DataType) -> (String, bool) {
        let wanted = (spine_column.to_string(), key_type.clone());
        let (index, new) = match self.columns.iter().position(|c| *c == wanted) {
            Some(index) => (index, false),
            None => {
                self.columns.push(wanted);
                (self.columns.len() - 1, true)
            }
        };
        (format!("{INTERNAL_PREFIX}key{index}"), new)
    }
}

fn read_options(schema: &Schema) -> ParquetReadOptions<'_> {
    // Explicit file lists: every file given is read, whatever its name.
    ParquetReadOptions::default()
        .schema(schema)
        .file_extension("")
}

/// Refuses a spine with a column named like ftab's internal ones, or a column name twice.
pub fn check_spine_columns(schema: &Schema) -> std::result::Result<(), String> {
    if let Some(bad) = schema
        .fields()
        .iter()
        .find(|f| f.name().starts_with(INTERNAL_PREFIX))
    {
        return Err(format!(
            "spine column `{}` starts with `{INTERNAL_PREFIX}`, which ftab reserves; rename it",
            bad.name()
        ));
    }
    crate::validate::check_unique_columns(schema).map_err(|e| format!("the spine: {e}"))
}

/// Files a training set was asked to read that the object store does not have: the
/// scan's listing skips a missing file without a word, so [`build`] compares what it
/// planned with what it was given and refuses to read less.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} file{} of {} missing from the object store: {}", .files.len(), if .files.len() == 1 { " is" } else { "s are" }, .table.as_ref().map_or_else(|| "the spine".to_string(), |t| format!("feature table `{t}`")), .files.join(", "))]
pub struct MissingFiles {
    /// The feature table, or `None` for the spine.
    pub table: Option<String>,
    /// The missing files' URLs.
    pub files: Vec<String>,
}

/// The object store paths every file scan of `plan` reads.
fn planned_paths(plan: &Arc<dyn ExecutionPlan>, paths: &mut std::collections::HashSet<String>) {
    if let Some(config) = super::node::file_scan(plan) {
        for file in config.file_groups.iter().flat_map(|g| g.iter()) {
            paths.insert(file.object_meta.location.to_string());
        }
    }
    for child in plan.children() {
        planned_paths(child, paths);
    }
}

/// Refuses a scan plan that does not read every one of `files` (URLs) of `table` (or of
/// the spine).
fn check_all_read(
    table: Option<&str>,
    plan: &Arc<dyn ExecutionPlan>,
    files: &[String],
) -> Result<()> {
    let mut read = std::collections::HashSet::new();
    planned_paths(plan, &mut read);
    let mut missing = Vec::new();
    for file in files {
        if !read.contains(super::object_path(file)?.1.as_ref()) {
            missing.push(file.clone());
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(datafusion::common::DataFusionError::External(Box::new(
            MissingFiles {
                table: table.map(str::to_string),
                files: missing,
            },
        )))
    }
}

/// A training set's physical plan, and how it reads each table (in request order).
pub struct TrainingSetPlan {
    pub plan: Arc<dyn ExecutionPlan>,
    pub read_by: Vec<ReadBy>,
    /// How every table is joined.
    pub join: JoinStrategy,
}

/// Build the physical plan of a training set.
pub async fn build(
    planner: &Planner,
    spine: SpineInput,
    tables: Vec<TableInput>,
) -> Result<TrainingSetPlan> {
    let ctx = planner.ctx();
    if spine.files.is_empty() {
        return plan_err!("the spine has no files");
    }
    if let Err(message) = check_spine_columns(&spine.schema) {
        return plan_err!("{message}");
    }

    // The spine, with its time and every table's keys in the types the joins compare.
    let mut exprs: Vec<Expr> = spine
        .schema
        .fields()
        .iter()
        .map(|f| column(f.name()))
        .collect();
    exprs.push(cast(column(&spine.time_column), utc_micros()).alias(TIME));
    let mut key_columns = KeyColumns {
        columns: Vec::new(),
    };
    let mut join_keys: Vec<Vec<String>> = Vec::new();
    for table in &tables {
        let mut names = Vec::new();
        for (spine_column, table_column) in &table.keys {
            let key_type = table
                .schema
                .field_with_name(table_column)?
                .data_type()
                .clone();
            let (name, new) = key_columns.name(spine_column, &key_type);
            if new {
                exprs.push(cast(column(spine_column), key_type).alias(name.clone()));
            }
            names.push(name);
        }
        join_keys.push(names);
    }
    let spine_df = ctx
        .read_parquet(spine.files.clone(), read_options(&spine.schema))
        .await?
        .select(exprs)?;
    let mut plan = spine_df.create_physical_plan().await?;
    check_all_read(None, &plan, &spine.files)?;

    let join = match planner.join() {
        JoinChoice::SortMerge => JoinStrategy::SortMerge,
        JoinChoice::SpineIndex => JoinStrategy::SpineIndex,
        JoinChoice::Auto => match planner.memory_limit() {
            Some(limit) if !spine_index_fits(&spine, &tables, limit) => JoinStrategy::SortMerge,
            _ => JoinStrategy::SpineIndex,
        },
    };
    let mut outputs: Vec<String> = Vec::new();
    let mut read_by = Vec::new();
    for (j, table) in tables.iter().enumerate() {
        let mut selected: Vec<Expr> = table.keys.iter().map(|(_, k)| column(k)).collect();
        selected.push(column(&table.timestamp));
        selected.push(column(SEQ_COLUMN));
        selected.extend(table.features.iter().map(|(f, _)| column(f)));
        let features = if table.files.is_empty() {
            let fields: Vec<_> = table
                .keys
                .iter()
                .map(|(_, k)| k.as_str())
                .chain([table.timestamp.as_str(), SEQ_COLUMN])
                .chain(table.features.iter().map(|(f, _)| f.as_str()))
                .map(|name| table.schema.field_with_name(name).cloned())
                .collect::<std::result::Result<_, _>>()?;
            read_by.push(ReadBy::Shuffle);
            Arc::new(EmptyExec::new(Arc::new(Schema::new(fields)))) as Arc<dyn ExecutionPlan>
        } else {
            let mut df = ctx
                .read_parquet(table.files.clone(), read_options(&table.schema))
                .await?;
            if let Some((low, high)) = table.time_range {
                df = df.filter(
                    column(&table.timestamp)
                        .gt_eq(micros(low))
                        .and(column(&table.timestamp).lt_eq(micros(high))),
                )?;
            }
            let scan = df.select(selected)?.create_physical_plan().await?;
            check_all_read(Some(table.table.as_str()), &scan, &table.files)?;
            let path = table.read_by(planner.partitions(), planner.max_merge_files(), join);
            let merged = match (&table.buckets, path) {
                (Some(buckets), ReadBy::BucketMerge | ReadBy::BucketScan) => {
                    let keys: Vec<String> = table.keys.iter().map(|(_, k)| k.clone()).collect();
                    let mut order = keys.clone();
                    order.push(table.timestamp.clone());
                    order.push(SEQ_COLUMN.to_string());
                    BucketMergeExec::over_scan(
                        scan.clone(),
                        &table.files,
                        &buckets.of_files,
                        buckets.count,
                        keys,
                        order,
                        path == ReadBy::BucketMerge,
                    )?
                }
                _ => None,
            };
            match merged {
                Some(merged) => {
                    read_by.push(path);
                    merged
                }
                None => {
                    read_by.push(ReadBy::Shuffle);
                    scan
                }
            }
        };
        let spec = AsOfJoinSpec {
            table: table.table.clone(),
            keys: join_keys[j]
                .iter()
                .zip(&table.keys)
                .map(|(internal, (_, k))| (internal.clone(), k.clone()))
                .collect(),
            spine_time: TIME.to_string(),
            feature_time: table.timestamp.clone(),
            feature_seq: SEQ_COLUMN.to_string(),
            ttl_micros: table.ttl_micros,
            outputs: table.features.clone(),
            strategy: join,
        };
        outputs.extend(table.features.iter().map(|(_, o)| o.clone()));
        plan = Arc::new(AsOfJoinExec::try_new(plan, features, spec)?);
    }

    // Spine columns, then the features; the internal columns go.
    let schema = plan.schema();
    let keep: Vec<(Arc<dyn PhysicalExpr>, String)> = spine
        .schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .chain(outputs)
        .map(|name| -> Result<(Arc<dyn PhysicalExpr>, String)> {
            let index = schema.index_of(&name)?;
            Ok((Arc::new(ColumnExpr::new(&name, index)), name))
        })
        .collect::<Result<_>>()?;
    let plan = Arc::new(ProjectionExec::try_new(keep, plan)?);
    Ok(TrainingSetPlan {
        plan: planner.optimize(plan)?,
        read_by,
        join,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    };
    use datafusion::arrow::datatypes::{Int64Type, TimestampMicrosecondType};
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::physical_plan::{collect, displayable};

    use crate::plan::session_config;

    fn write(dir: &std::path::Path, name: &str, batch: &RecordBatch) -> String {
        let path = dir.join(name);
        let file = std::fs::File::create(&path).unwrap();
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        writer.write(batch).unwrap();
        writer.close().unwrap();
        url::Url::from_file_path(&path).unwrap().to_string()
    }

    fn times(values: impl Iterator<Item = i64>) -> ArrayRef {
        Arc::new(TimestampMicrosecondArray::from_iter_values(values).with_timezone("UTC"))
    }

    /// An unbucketed table (one written before buckets): the spine-index join takes its
    /// rows shuffled but unsorted, the sort-merge join shuffled and sorted, and both give
    /// the same rows; auto picks the spine index for a small spine and sort-merge when the
    /// memory limit is too small for it.
    #[tokio::test]
    async fn both_joins_over_a_shuffled_table_agree() {
        let dir = tempfile::tempdir().unwrap();
        // Feature rows in no particular order, over 3 files.
        let mut files = Vec::new();
        for f in 0..3i64 {
            let n = 50i64;
            let keys: Vec<String> = (0..n).map(|i| format!("u{}", (i * 7 + f) % 13)).collect();
            let batch = RecordBatch::try_from_iter([
                ("user", Arc::new(StringArray::from(keys)) as ArrayRef),
                ("ts", times((0..n).map(|i| (i * 31 + f * 5) % 40))),
                (
                    "_seq",
                    Arc::new(Int64Array::from(vec![f + 1; n as usize])) as ArrayRef,
                ),
                (
                    "v",
                    Arc::new(Int64Array::from_iter_values((0..n).map(|i| f * 1000 + i))),
                ),
            ])
            .unwrap();
            files.push((
                write(dir.path(), &format!("f{f}.parquet"), &batch),
                batch.schema(),
            ));
        }
        let spine_batch = RecordBatch::try_from_iter([
            (
                "user",
                Arc::new(StringArray::from_iter_values(
                    (0..60).map(|i| format!("u{}", i % 15)),
                )) as ArrayRef,
            ),
            ("t", times((0..60).map(|i| (i * 17) % 45))),
        ])
        .unwrap();
        let spine = SpineInput {
            files: vec![write(dir.path(), "spine.parquet", &spine_batch)],
            schema: spine_batch.schema(),
            time_column: "t".into(),
            rows: 60,
            bytes: 2_000,
        };
        let table = TableInput {
            table: "events".into(),
            files: files.iter().map(|f| f.0.clone()).collect(),
            schema: files[0].1.clone(),
            keys: vec![("user".into(), "user".into())],
            timestamp: "ts".into(),
            ttl_micros: Some(20),
            features: vec![("v".into(), "events__v".into())],
            time_range: None,
            buckets: None,
        };
        let mut results = Vec::new();
        // The third spine says it is 600 MiB: more than half of the 1 GiB limit.
        let memory = 1usize << 30;
        for (join, spine_bytes) in [
            (JoinChoice::Auto, 2_000),
            (JoinChoice::SortMerge, 2_000),
            (JoinChoice::Auto, 600 << 20),
        ] {
            let runtime = RuntimeEnvBuilder::new()
                .with_memory_limit(memory, 1.0)
                .build_arc()
                .unwrap();
            let planner = Planner::new(session_config(2, memory as u64), runtime).with_join(join);
            let spine = SpineInput {
                bytes: spine_bytes,
                ..spine.clone()
            };
            let built = build(&planner, spine, vec![table.clone()]).await.unwrap();
            let shown = displayable(built.plan.as_ref()).indent(false).to_string();
            let want_join = if join == JoinChoice::Auto && spine_bytes < memory as u64 / 4 {
                JoinStrategy::SpineIndex
            } else {
                JoinStrategy::SortMerge
            };
            assert_eq!(
                built.join, want_join,
                "{join:?}, spine of {spine_bytes} bytes"
            );
            assert_eq!(built.read_by, [ReadBy::Shuffle]);
            assert!(shown.contains("RepartitionExec"), "{shown}");
            assert_eq!(
                shown.contains("SortExec"),
                want_join == JoinStrategy::SortMerge,
                "{shown}"
            );
            let batches = collect(built.plan, planner.ctx().task_ctx()).await.unwrap();
            let mut rows = Vec::new();
            for b in &batches {
                let (user, t, v) = (
                    b.column(0).as_string::<i32>(),
                    b.column(1).as_primitive::<TimestampMicrosecondType>(),
                    b.column(2).as_primitive::<Int64Type>(),
                );
                for i in 0..b.num_rows() {
                    rows.push((
                        user.value(i).to_string(),
                        t.value(i),
                        (!v.is_null(i)).then(|| v.value(i)),
                    ));
                }
            }
            rows.sort();
            assert_eq!(rows.len(), 60, "one row per spine row");
            results.push(rows);
        }
        assert_eq!(results[0], results[1], "spine index and sort-merge agree");
        assert_eq!(results[1], results[2]);
        assert!(
            results[0].iter().any(|r| r.2.is_some()) && results[0].iter().any(|r| r.2.is_none())
        );
    }
}
