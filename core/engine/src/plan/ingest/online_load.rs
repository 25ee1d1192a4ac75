//! [`OnlineLoadExec`]: loads the latest rows of an ingest into the online store of the
//! process it runs in, by the newer-only rule.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, UInt64Array};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::partition_writer::WRITE_BATCH_ROWS;
use crate::online::{OnlineStoreHandle, OnlineTable, WriteCounts};
use crate::plan::node::{column_index, one_row_per_partition, rebuilt_from_children};

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
            column_index(&schema, name, "online load")?;
        }
        column_index(&schema, &spec.table.timestamp_field, "online load")?;
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

    rebuilt_from_children!("OnlineLoadExec", [input]);

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
                    "this executor has no online store configured, so it cannot load online tables; \
                     start ftab-executor with --aerospike-hosts (FTAB_AEROSPIKE_HOSTS) when the scheduler runs \
                     --online-store aerospike"
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
