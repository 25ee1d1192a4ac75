//! [`StageExec`]: stages the files of an ingest by URI, on the executors.
//!
//! Its input reads one file per partition. Ballista gives each task a plan cut down to its
//! own partition, so a task finds its file in its scan (not by its partition number) and
//! its index among the spec's files, in name order. Each task validates and converts its file's rows to the table's schema, exactly
//! as an uploaded ingest is validated ([`crate::validate::IngestValidator`]), numbers them
//! (`_row` = file index << 40 + row in the file, so a later file wins ties of (keys,
//! timestamp) in the ingest, as a later row of an upload does), and writes them as one
//! staged Parquet file. It outputs one row: the file's row count, or the error that
//! refuses it. Errors are output rather than raised, so Ballista does not run a file that
//! can never pass again, and the scheduler can name the file.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::definitions::{Definitions, FeatureTable};
use crate::offline::columns::ROW_COLUMN;
use crate::plan::ingest::partition_writer::store_for;
use crate::plan::node::{file_scan, one_row_per_partition, rebuilt_from_children};
use crate::validate::{IngestValidator, ValidationError};

/// Rows per row group of a staged file.
const STAGED_ROW_GROUP_ROWS: usize = 256 * 1024;

/// What a staging job reads and where it writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageSpec {
    pub table: FeatureTable,
    /// The definitions the table's entities are in (its join key types).
    pub definitions: Definitions,
    pub drop_extra_columns: bool,
    /// The files, by partition: their URLs, for messages.
    pub files: Vec<String>,
    /// The URL of the ingest's staging directory (with a trailing `/`).
    pub staging_directory: String,
}

/// The output of [`StageExec`]: one row per file.
pub fn stage_output_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("file", DataType::UInt64, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("error", DataType::Utf8, true),
    ]))
}

/// Add `_row`, each row's place in the ingest: `first_row` for the first row of the batch.
pub fn with_row_numbers(batch: RecordBatch, first_row: u64) -> Result<RecordBatch> {
    let rows =
        Int64Array::from_iter_values((0..batch.num_rows() as i64).map(|i| first_row as i64 + i));
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(ROW_COLUMN, DataType::Int64, false));
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(rows));
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// The first `_row` of file `index` of an ingest by URI.
pub fn first_row_of_file(index: usize) -> u64 {
    (index as u64) << 40
}

#[derive(Debug)]
pub struct StageExec {
    input: Arc<dyn ExecutionPlan>,
    spec: StageSpec,
    cache: Arc<PlanProperties>,
}

impl StageExec {
    pub fn try_new(input: Arc<dyn ExecutionPlan>, spec: StageSpec) -> Result<Self> {
        if file_scan(&input).is_none() {
            return Err(DataFusionError::Internal(
                "staging reads files: its input must be a file scan".into(),
            ));
        }
        let cache = one_row_per_partition(&input, stage_output_schema());
        Ok(Self {
            input,
            spec,
            cache: Arc::new(cache),
        })
    }

    pub fn spec(&self) -> &StageSpec {
        &self.spec
    }

    /// The index among the spec's files of the one file partition `partition` reads.
    fn file_index(&self, partition: usize) -> Result<usize> {
        let file = file_scan(&self.input)
            .and_then(|scan| scan.file_groups.get(partition))
            .and_then(|group| match group.files() {
                [one] => Some(one.object_meta.location.clone()),
                _ => None,
            })
            .ok_or_else(|| {
                DataFusionError::Internal(format!(
                    "staging partition {partition} does not read exactly one file"
                ))
            })?;
        self.spec
            .files
            .iter()
            .position(|url| {
                url::Url::parse(url)
                    .ok()
                    .and_then(|u| object_store::path::Path::from_url_path(u.path()).ok())
                    .is_some_and(|path| path == file)
            })
            .ok_or_else(|| {
                DataFusionError::Internal(format!(
                    "staging read {file}, which is not a file of the ingest"
                ))
            })
    }
}

impl DisplayAs for StageExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "StageExec: table={}, files={}",
            self.spec.table.name,
            self.spec.files.len()
        )
    }
}

impl ExecutionPlan for StageExec {
    fn name(&self) -> &str {
        "StageExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.cache
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        // A partition is a file: splitting or merging them would lose the file order.
        vec![false]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    rebuilt_from_children!("StageExec", [input]);

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let index = self.file_index(partition)?;
        let input =
            crate::plan::node::slowed_for_tests(self.input.execute(partition, context.clone())?);
        let spec = self.spec.clone();
        let stage = async move {
            let (rows, error) = match stage_file(&spec, index, input, &context).await {
                Ok(rows) => (rows, None),
                Err(Refused(message)) => (0, Some(message)),
            };
            Ok(RecordBatch::try_new(
                stage_output_schema(),
                vec![
                    Arc::new(UInt64Array::from(vec![index as u64])),
                    Arc::new(UInt64Array::from(vec![rows])),
                    Arc::new(StringArray::from(vec![error])),
                ],
            )?)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            stage_output_schema(),
            futures::stream::once(stage),
        )))
    }
}

/// Why a file is refused: a message for the person who sent it.
struct Refused(String);

impl From<ValidationError> for Refused {
    fn from(e: ValidationError) -> Self {
        Refused(e.to_string())
    }
}

impl From<DataFusionError> for Refused {
    fn from(e: DataFusionError) -> Self {
        let message = e.to_string();
        Refused(message.lines().next().unwrap_or_default().to_string())
    }
}

/// Validate, number and write one file; its row count.
async fn stage_file(
    spec: &StageSpec,
    index: usize,
    mut input: SendableRecordBatchStream,
    context: &TaskContext,
) -> std::result::Result<u64, Refused> {
    let mut validator = IngestValidator::new(
        &spec.table,
        &spec.definitions,
        input.schema(),
        spec.drop_extra_columns,
    )?;
    let (store, prefix) = store_for(context, &spec.staging_directory)?;
    let path = prefix.join(format!("part-{index:05}.parquet"));
    let mut writer = None;
    let first_row = first_row_of_file(index);
    while let Some(batch) = input.next().await {
        let batch = batch?;
        let offset = validator.rows();
        let Some(converted) = validator.convert(&batch)? else {
            continue;
        };
        if converted.num_rows() == 0 {
            continue;
        }
        let numbered = with_row_numbers(converted, first_row + offset)?;
        let writer = match &mut writer {
            Some(w) => w,
            None => writer.insert(
                crate::storage::scratch_parquet_writer(
                    store.clone(),
                    path.clone(),
                    numbered.schema(),
                    STAGED_ROW_GROUP_ROWS,
                )
                .map_err(|e| Refused(format!("cannot open a staging file: {e}")))?,
            ),
        };
        writer
            .write(&numbered)
            .await
            .map_err(|e| Refused(format!("cannot stage the file: {e}")))?;
    }
    let rows = match validator.finish() {
        Ok(rows) => rows,
        // An empty file adds nothing; the scheduler refuses an ingest with no rows at all.
        Err(ValidationError::Empty) => 0,
        Err(e) => return Err(e.into()),
    };
    if let Some(writer) = writer {
        writer
            .close()
            .await
            .map_err(|e| Refused(format!("cannot finish the staging file: {e}")))?;
    }
    Ok(rows)
}

/// Read the staging job's output: the rows of every file, or the first refusal with its
/// file's URL.
pub fn staged_rows(batches: &[RecordBatch], files: &[String]) -> std::result::Result<u64, String> {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::UInt64Type;
    let mut total = 0u64;
    let mut refusals: Vec<(u64, String)> = Vec::new();
    for batch in batches {
        let file = batch.column(0).as_primitive::<UInt64Type>();
        let rows = batch.column(1).as_primitive::<UInt64Type>();
        let errors = batch.column(2).as_string::<i32>();
        for i in 0..batch.num_rows() {
            total += rows.value(i);
            if let Some(error) = errors.is_valid(i).then(|| errors.value(i)) {
                refusals.push((file.value(i), error.to_string()));
            }
        }
    }
    refusals.sort();
    match refusals.first() {
        Some((file, error)) => {
            let name = files
                .get(*file as usize)
                .map(String::as_str)
                .unwrap_or("a file");
            let more = match refusals.len() {
                1 => String::new(),
                n => format!(" ({} more files refused)", n - 1),
            };
            Err(format!("{name}: {error}{more}"))
        }
        None => Ok(total),
    }
}
