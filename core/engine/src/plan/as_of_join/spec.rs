//! What an as-of join joins, by column name (so it survives serialization), and its
//! resolution to column positions in the inputs' schemas.

use datafusion::arrow::datatypes::{DataType, Schema, TimeUnit};
use datafusion::common::{DataFusionError, Result, plan_err};
use serde::{Deserialize, Serialize};

use crate::protocol::JoinStrategy;

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
    pub(super) fn resolve(&self, spine: &Schema, features: &Schema) -> Result<Resolved> {
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
