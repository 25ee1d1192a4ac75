//! [`AsOfJoinExec`], the plan node: its input requirements (partitioned by the keys, and
//! sorted unless the spine is indexed) and the choice between the two strategies.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::new_null_array;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, plan_err};
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{
    Distribution, EquivalenceProperties, LexOrdering, OrderingRequirements, PhysicalExpr,
    PhysicalSortExpr,
};
use datafusion::physical_plan::distribution_requirements::InputDistributionRequirements;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
    apply_expression_roots,
};
use futures::{StreamExt, TryStreamExt};

use super::sort_merge::Merge;
use super::spec::{AsOfJoinSpec, Resolved};
use super::spine_index::SpineIndex;
use crate::plan::node::{ASCENDING, column, rebuilt_from_children};
use crate::protocol::JoinStrategy;

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

    rebuilt_from_children!("AsOfJoinExec", [spine, features]);

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let spine =
            crate::plan::node::slowed_for_tests(self.spine.execute(partition, context.clone())?);
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
        let merge = Merge::new(
            spine,
            features,
            RowConverter::new(key_fields)?,
            self.resolved.clone(),
            &self.spec,
            self.schema.clone(),
            null_columns,
        );
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
