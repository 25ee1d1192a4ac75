//! What ftab's plan nodes share: the key order they sort and compare in, column
//! expressions, and how a node is rebuilt over new children.

use std::sync::Arc;

use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::datatypes::Schema;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::{DataFusionError, Result, internal_err};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::{ExecutionPlanProperties, Partitioning, PlanProperties};

/// Ascending, nulls first: the order ftab's nodes sort and compare keys in.
pub(crate) const ASCENDING: SortOptions = SortOptions {
    descending: false,
    nulls_first: true,
};

/// The column expression of field `index` of `schema`.
pub(crate) fn column(schema: &Schema, index: usize) -> Arc<dyn PhysicalExpr> {
    Arc::new(Column::new(schema.field(index).name(), index))
}

/// The file scan `plan` is, if it is one (a `DataSourceExec` over files).
pub(crate) fn file_scan(plan: &Arc<dyn ExecutionPlan>) -> Option<&FileScanConfig> {
    plan.downcast_ref::<DataSourceExec>().and_then(|exec| {
        let source: &dyn std::any::Any = exec.data_source().as_ref();
        source.downcast_ref()
    })
}

/// The position of column `name` in `schema`, or a plan error saying `what` needs it.
pub(crate) fn column_index(schema: &Schema, name: &str, what: &str) -> Result<usize> {
    schema
        .index_of(name)
        .map_err(|_| DataFusionError::Plan(format!("{what}: the input has no column `{name}`")))
}

/// Properties of a node that outputs one small batch per input partition.
pub(crate) fn one_row_per_partition(
    input: &Arc<dyn ExecutionPlan>,
    schema: SchemaRef,
) -> PlanProperties {
    PlanProperties::new(
        EquivalenceProperties::new(schema),
        Partitioning::UnknownPartitioning(input.output_partitioning().partition_count()),
        EmissionType::Final,
        Boundedness::Bounded,
    )
}

/// Replace children and recompute the node's properties from them.
pub(crate) fn recompute() -> ReplaceChildrenOptions {
    ReplaceChildrenOptions {
        children_properties: ChildrenPropertiesMode::Recompute,
    }
}

/// A node's `N` children, or an error naming the node.
pub(crate) fn exactly<const N: usize>(
    children: Vec<Arc<dyn ExecutionPlan>>,
    node: &str,
) -> Result<[Arc<dyn ExecutionPlan>; N]> {
    match <[_; N]>::try_from(children) {
        Ok(children) => Ok(children),
        Err(children) => internal_err!("{node} takes {N} children, got {}", children.len()),
    }
}

/// The `replace_children` and `with_new_children` of an ftab node whose `try_new` takes
/// its children (named in the macro call, in order) and then its `spec`.
///
/// The node is always built anew, so its properties follow the new children whatever the
/// options say: Ballista restricts a task's plan to a slice of partitions, and a node that
/// kept its old properties would claim partitions its children no longer have.
macro_rules! rebuilt_from_children {
    ($node:literal, [$($child:ident),+]) => {
        fn replace_children(
            self: std::sync::Arc<Self>,
            children: Vec<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>>,
            _options: datafusion::physical_plan::execution_plan::ReplaceChildrenOptions,
        ) -> datafusion::common::Result<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
            let [$($child),+] = $crate::plan::node::exactly(children, $node)?;
            Ok(std::sync::Arc::new(Self::try_new($($child,)+ self.spec.clone())?))
        }

        fn with_new_children(
            self: std::sync::Arc<Self>,
            children: Vec<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>>,
        ) -> datafusion::common::Result<std::sync::Arc<dyn datafusion::physical_plan::ExecutionPlan>> {
            self.replace_children(children, $crate::plan::node::recompute())
        }
    };
}
pub(crate) use rebuilt_from_children;

/// Test hook: with `FTAB_FAILPOINT=slow_task:MS` in a process's environment, every task of
/// ftab's writing and joining nodes it runs waits MS milliseconds before reading its
/// input, so a test can kill an executor or the scheduler while a job's tasks run
/// (tests/cluster.rs). Without it the stream is returned as it is.
pub(crate) fn slowed_for_tests(
    stream: datafusion::execution::SendableRecordBatchStream,
) -> datafusion::execution::SendableRecordBatchStream {
    static DELAY: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let delay = *DELAY.get_or_init(|| {
        std::env::var("FTAB_FAILPOINT")
            .ok()
            .and_then(|v| v.strip_prefix("slow_task:")?.parse().ok())
    });
    let Some(ms) = delay else {
        return stream;
    };
    use futures::StreamExt;
    let schema = stream.schema();
    let delayed = futures::stream::once(async move {
        tracing::warn!(ms, "failpoint slow_task: delaying a task");
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        stream
    })
    .flatten();
    Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, delayed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::physical_plan::empty::EmptyExec;

    #[test]
    fn a_wrong_number_of_children_names_the_node() {
        let child: Arc<dyn ExecutionPlan> = Arc::new(EmptyExec::new(Arc::new(Schema::empty())));
        let [_one] = exactly(vec![child.clone()], "OneExec").unwrap();
        let err = exactly::<2>(vec![child], "TwoExec").unwrap_err();
        assert!(
            err.to_string().contains("TwoExec takes 2 children, got 1"),
            "{err}"
        );
    }
}
