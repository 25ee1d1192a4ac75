//! [`IngestWriteExec`], the write node of an ingest.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{
    Distribution, LexOrdering, OrderingRequirements, PhysicalExpr, PhysicalSortExpr,
};
use datafusion::physical_plan::distribution_requirements::InputDistributionRequirements;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, apply_expression_roots,
};

use super::partition_writer::PartitionWriter;
use super::spec::{IngestWriteSpec, WriteColumns, ingest_write_output_schema};
use crate::plan::node::{ASCENDING, column, one_row_per_partition, rebuilt_from_children};

/// Dedupes one partition of an ingest and writes it: offline files and latest rows.
#[derive(Debug)]
pub struct IngestWriteExec {
    input: Arc<dyn ExecutionPlan>,
    spec: IngestWriteSpec,
    columns: WriteColumns,
    cache: Arc<PlanProperties>,
}

impl IngestWriteExec {
    pub fn try_new(input: Arc<dyn ExecutionPlan>, spec: IngestWriteSpec) -> Result<Self> {
        let columns = spec.resolve(&input.schema())?;
        let cache = one_row_per_partition(&input, ingest_write_output_schema());
        Ok(Self {
            input,
            spec,
            columns,
            cache: Arc::new(cache),
        })
    }

    pub fn spec(&self) -> &IngestWriteSpec {
        &self.spec
    }

    fn keys(&self) -> Vec<Arc<dyn PhysicalExpr>> {
        let schema = self.input.schema();
        self.columns
            .key_indices
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
        order.push(column(&schema, self.columns.timestamp_index));
        order.push(column(&schema, self.columns.row_index));
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

    rebuilt_from_children!("IngestWriteExec", [input]);

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input =
            crate::plan::node::slowed_for_tests(self.input.execute(partition, context.clone())?);
        let writer =
            PartitionWriter::new(&self.spec, &self.columns, &self.input.schema(), &context)?;
        let stream = futures::stream::once(writer.run(input));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            ingest_write_output_schema(),
            stream,
        )))
    }
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
