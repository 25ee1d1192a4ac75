//! The Ballista extension codec for ftab's plan nodes.
//!
//! Ballista ships plan stages to executors as protobuf; nodes DataFusion does not know are
//! encoded by an extension codec. [`FtabCodec`] encodes ftab's nodes ([`AsOfJoinExec`],
//! [`BucketMergeExec`], [`IngestWriteExec`], [`OnlineLoadExec`], [`StageExec`]) as tagged JSON of their specs (column names,
//! URLs, numbers; never data), and [`physical_codec`] composes it with Ballista's own codec.
//! The scheduler, the in-process executor and `ftab-executor` must all use
//! [`physical_codec`]: the position of each codec in the composition is part of the wire
//! format.

use std::sync::Arc;

use ballista_core::serde::BallistaPhysicalExtensionCodec;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::physical_plan::{
    ComposedPhysicalExtensionCodec, PhysicalExtensionCodec, PhysicalProtoConverterExtension,
};
use serde::{Deserialize, Serialize};

use crate::plan::as_of_join::{AsOfJoinExec, AsOfJoinSpec};
use crate::plan::bucket::{BucketMergeExec, BucketMergeSpec};
use crate::plan::ingest::{
    IngestWriteExec, IngestWriteSpec, OnlineLoadExec, OnlineLoadSpec, StageExec, StageSpec,
};

/// Marks ftab's encoding, so foreign bytes are never mistaken for an ftab node.
const MAGIC: &[u8] = b"ftab1:";

/// An ftab plan node as it travels: its kind and spec.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Node {
    AsOfJoin(AsOfJoinSpec),
    BucketMerge(BucketMergeSpec),
    IngestWrite(IngestWriteSpec),
    OnlineLoad(OnlineLoadSpec),
    Stage(Box<StageSpec>),
}

/// Encodes and decodes ftab's plan nodes (and only those).
#[derive(Debug, Default)]
pub struct FtabCodec;

impl PhysicalExtensionCodec for FtabCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        _ctx: &TaskContext,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let json = buf.strip_prefix(MAGIC).ok_or_else(|| {
            DataFusionError::Internal("not an ftab plan node (no ftab1: prefix)".into())
        })?;
        let node: Node = serde_json::from_slice(json).map_err(|e| {
            DataFusionError::Internal(format!("cannot decode an ftab plan node: {e}"))
        })?;
        let input = |n: usize| -> Result<Arc<dyn ExecutionPlan>> {
            inputs.get(n).cloned().ok_or_else(|| {
                DataFusionError::Internal(format!(
                    "ftab plan node has {} inputs, expected more",
                    inputs.len()
                ))
            })
        };
        Ok(match node {
            Node::AsOfJoin(spec) => Arc::new(AsOfJoinExec::try_new(input(0)?, input(1)?, spec)?),
            Node::BucketMerge(spec) => Arc::new(BucketMergeExec::try_new(input(0)?, spec)?),
            Node::IngestWrite(spec) => Arc::new(IngestWriteExec::try_new(input(0)?, spec)?),
            Node::OnlineLoad(spec) => Arc::new(OnlineLoadExec::try_new(input(0)?, spec)?),
            Node::Stage(spec) => Arc::new(StageExec::try_new(input(0)?, *spec)?),
        })
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        _proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        let node = if let Some(join) = node.downcast_ref::<AsOfJoinExec>() {
            Node::AsOfJoin(join.spec().clone())
        } else if let Some(merge) = node.downcast_ref::<BucketMergeExec>() {
            Node::BucketMerge(merge.spec().clone())
        } else if let Some(write) = node.downcast_ref::<IngestWriteExec>() {
            Node::IngestWrite(write.spec().clone())
        } else if let Some(load) = node.downcast_ref::<OnlineLoadExec>() {
            Node::OnlineLoad(load.spec().clone())
        } else if let Some(stage) = node.downcast_ref::<StageExec>() {
            Node::Stage(Box::new(stage.spec().clone()))
        } else {
            return Err(DataFusionError::NotImplemented(format!(
                "{} is not an ftab plan node",
                node.name()
            )));
        };
        buf.extend_from_slice(MAGIC);
        serde_json::to_writer(&mut *buf, &node)
            .map_err(|e| DataFusionError::Internal(format!("cannot encode an ftab plan node: {e}")))
    }
}

/// The codec every ftab process uses: Ballista's nodes first, then ftab's.
pub fn physical_codec() -> Arc<dyn PhysicalExtensionCodec> {
    Arc::new(ComposedPhysicalExtensionCodec::new(vec![
        Arc::new(BallistaPhysicalExtensionCodec::default()),
        Arc::new(FtabCodec),
    ]))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use datafusion::physical_plan::displayable;
    use datafusion::physical_plan::empty::EmptyExec;
    use datafusion::prelude::SessionContext;
    use datafusion_proto::physical_plan::AsExecutionPlan;
    use datafusion_proto::protobuf::PhysicalPlanNode;

    use crate::online::OnlineTable;

    fn empty(fields: &[(&str, DataType)]) -> Arc<dyn ExecutionPlan> {
        let schema = Schema::new(
            fields
                .iter()
                .map(|(n, t)| Field::new(*n, t.clone(), true))
                .collect::<Vec<_>>(),
        );
        Arc::new(EmptyExec::new(Arc::new(schema)))
    }

    /// `plan` encoded as Ballista ships it to an executor, and decoded there.
    pub(crate) fn round_trip(plan: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
        let codec = physical_codec();
        let node = PhysicalPlanNode::try_from_physical_plan(plan.clone(), codec.as_ref()).unwrap();
        let ctx = SessionContext::new();
        let decoded = node
            .try_into_physical_plan(&ctx.task_ctx(), codec.as_ref())
            .unwrap();
        assert_eq!(
            displayable(decoded.as_ref()).indent(true).to_string(),
            displayable(plan.as_ref()).indent(true).to_string()
        );
        assert_eq!(decoded.schema(), plan.schema());
        decoded
    }

    /// `plan`, a `T`, decodes as a `T` whose spec equals the original's, field by field.
    fn same_spec<T, S>(plan: Arc<dyn ExecutionPlan>, spec: impl Fn(&T) -> &S)
    where
        T: ExecutionPlan + 'static,
        S: PartialEq + std::fmt::Debug,
    {
        let decoded = round_trip(plan.clone());
        let original = plan.downcast_ref::<T>().expect("an ftab node");
        let decoded = decoded
            .downcast_ref::<T>()
            .expect("decoded as the same node type");
        assert_eq!(spec(decoded), spec(original));
    }

    #[test]
    fn ftab_nodes_survive_the_trip_to_an_executor_spec_for_spec() {
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let spine = empty(&[("k", DataType::Utf8), ("t", ts.clone())]);
        let features = empty(&[
            ("fk", DataType::Utf8),
            ("ft", ts.clone()),
            ("_seq", DataType::Int64),
            ("v", DataType::Float64),
        ]);
        same_spec(
            Arc::new(
                AsOfJoinExec::try_new(
                    spine,
                    features,
                    AsOfJoinSpec {
                        table: "t".into(),
                        keys: vec![("k".into(), "fk".into())],
                        spine_time: "t".into(),
                        feature_time: "ft".into(),
                        feature_seq: "_seq".into(),
                        ttl_micros: Some(5),
                        outputs: vec![("v".into(), "t__v".into())],
                        strategy: crate::plan::as_of_join::JoinStrategy::SpineIndex,
                    },
                )
                .unwrap(),
            ),
            AsOfJoinExec::spec,
        );

        let staged = empty(&[
            ("k", DataType::Utf8),
            ("t", ts.clone()),
            ("v", DataType::Float64),
            ("_row", DataType::Int64),
        ]);
        same_spec(
            Arc::new(
                IngestWriteExec::try_new(
                    staged,
                    IngestWriteSpec {
                        table: "t".into(),
                        keys: vec!["k".into()],
                        timestamp: "t".into(),
                        columns: vec!["k".into(), "t".into(), "v".into()],
                        offline_table: Some("file:///data/offline/w/t/g1/".into()),
                        latest_directory: None,
                        seq: 3,
                        ingested_at_micros: 9,
                        buckets: Some(2),
                    },
                )
                .unwrap(),
            ),
            IngestWriteExec::spec,
        );

        let latest = empty(&[("k", DataType::Utf8), ("t", ts), ("v", DataType::Float64)]);
        same_spec(
            Arc::new(
                OnlineLoadExec::try_new(
                    latest,
                    OnlineLoadSpec {
                        table: OnlineTable {
                            workspace: crate::names::WorkspaceName::new("w").unwrap(),
                            table: crate::names::TableName::new("t").unwrap(),
                            generation: 1,
                            keys: vec![("k".into(), crate::definitions::ValueType::String)],
                            features: vec![("v".into(), crate::definitions::ValueType::Float64)],
                            timestamp_field: "t".into(),
                            ttl_micros: None,
                            bins: vec!["v".into()],
                        },
                        seq: 3,
                        now_micros: 10,
                    },
                )
                .unwrap(),
            ),
            OnlineLoadExec::spec,
        );
        // BucketMergeExec needs Parquet files to scan: its round trip is with the bucket
        // tests (`plan::bucket::tests::the_bucket_merge_survives_the_trip_to_an_executor`).
    }

    #[test]
    fn foreign_nodes_are_not_mistaken_for_ftab_nodes() {
        let ctx = SessionContext::new();
        let err = FtabCodec
            .try_decode(
                b"\x0a\x03abc",
                &[],
                &ctx.task_ctx(),
                &datafusion_proto::physical_plan::DefaultPhysicalProtoConverter {},
            )
            .unwrap_err();
        assert!(err.to_string().contains("not an ftab plan node"), "{err}");
    }
}
