//! Plan builders: the DataFusion physical plans of ftab's jobs, built here and run on
//! Ballista executors.
//!
//! - [`ingest`]: dedupe an ingest, write it to the offline table, load the online store;
//! - [`as_of_join`]: the as-of join of a spine with a feature table;
//! - [`training_set`]: a training set as a chain of as-of joins over a spine.
//!
//! Plans are built with a local [`Planner`] (no Ballista in it): DataFusion plans the
//! scans, ftab's nodes are put on top, and the physical optimizer then inserts the
//! shuffles and sorts the nodes require. The scheduler submits the result to Ballista,
//! which cuts it into stages at the shuffles.

pub mod as_of_join;
pub mod bucket;
pub mod ingest;
pub(crate) mod node;
pub mod training_set;

use std::sync::Arc;

use ballista_core::extension::SessionConfigHelperExt;
use datafusion::common::Result;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::memory_pool::MemoryLimit;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::DefaultPhysicalPlanner;
use datafusion::prelude::{SessionConfig, SessionContext};

/// The DataFusion settings of every ftab plan, in the planner and on the executors.
///
/// Ballista's restricted settings (no dynamic filters across stages, no round-robin
/// repartitioning, no string views, which Arrow IPC ships badly) plus `target_partitions`:
/// how many partitions shuffles produce, the parallelism of every job. A sort keeps back
/// memory to merge its spill files (`merge_reserve`); see docs/cluster.md.
///
/// File scans do not steal work across partitions (see below): a task reads its own files.
///
/// Per-file statistics are not collected when scans are planned. DataFusion 55's Parquet
/// opener reads a column whose statistics say min == max with no nulls as that constant,
/// and Parquet min/max statistics leave NaN out, so `[2.5, NaN, 2.5]` came back as
/// `[2.5, 2.5, 2.5]` (docs/ingest.md). No ftab plan needs those statistics: row groups are
/// still pruned by the footers as a file is opened, and training sets prune files by the
/// Delta log's statistics.
pub fn session_config(target_partitions: usize, memory_limit: u64) -> SessionConfig {
    let target_partitions = target_partitions.max(1);
    let merge_reserve = merge_reserve(target_partitions, memory_limit);
    SessionConfig::new()
        .with_target_partitions(target_partitions)
        .with_collect_statistics(false)
        .with_information_schema(false)
        .with_sort_spill_reservation_bytes(merge_reserve as usize)
        // DataFusion 55's file scans let a partition that runs dry read files of its
        // siblings. A Ballista task runs one partition and never polls the others, so a
        // task could read its siblings' files as well as its own (rows twice), and a plan
        // that takes partition i to be file group i (staging an ingest by URI) would read
        // another file. Each partition reads its own files.
        .set_bool(
            "datafusion.execution.enable_file_stream_work_stealing",
            false,
        )
        .ballista_restricted_configuration()
}

/// The memory every sort keeps back to merge its spill files.
///
/// A merge of spill files needs two streams with two batches buffered each before it can
/// make progress; when that is not held back, a merge whose neighbour took the pool fails
/// instead of waiting. An eighth of each partition's share covers it: a task of the
/// training-set join runs one sort per side, and the rest stays for sorting in memory.
pub fn merge_reserve(target_partitions: usize, memory_limit: u64) -> u64 {
    (memory_limit / (target_partitions.max(1) as u64 * 8)).clamp(1 << 20, 32 << 20)
}

/// How many spill files one merge pass reads at most: one per MiB of a partition's share
/// of the memory limit, between 2 and 64. Without a bound a merge reserves read buffers for
/// as many files as the pool holds and starves the sorts beside it; with it, more files
/// take more passes.
pub fn max_spill_merge_fan_in(target_partitions: usize, memory_limit: u64) -> usize {
    ((memory_limit / target_partitions.max(1) as u64) >> 20).clamp(2, 64) as usize
}

/// The smallest memory limit per partition that jobs run with: the merge reserves of a
/// task's sorts and room to sort between spills.
pub const MIN_MEMORY_PER_PARTITION: u64 = 4 << 20;

/// What a bucket merge is allowed per open file: a Parquet row group's column chunks and a
/// decoded batch with its sort keys, with room to spare.
pub const MERGE_BYTES_PER_FILE: u64 = 4 << 20;

/// A storage URL parsed, and the object store path it names.
pub(crate) fn object_path(url: &str) -> Result<(url::Url, object_store::path::Path)> {
    let plan_error = |e: &dyn std::fmt::Display| {
        datafusion::common::DataFusionError::Plan(format!("invalid storage URL `{url}`: {e}"))
    };
    let parsed = url::Url::parse(url).map_err(|e| plan_error(&e))?;
    let path =
        object_store::path::Path::from_url_path(parsed.path()).map_err(|e| plan_error(&e))?;
    Ok((parsed, path))
}

/// Which as-of join training sets use (the scheduler's `training_set_join`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinChoice {
    /// The spine-index join when the spine fits in memory by a safe margin, otherwise the
    /// sort-merge join.
    #[default]
    Auto,
    /// Always the sort-merge join (sorts spill; memory stays bounded).
    SortMerge,
    /// Always the spine-index join (fails if the spine does not fit).
    SpineIndex,
}

impl std::str::FromStr for JoinChoice {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, String> {
        match text {
            "auto" => Ok(Self::Auto),
            "sort_merge" => Ok(Self::SortMerge),
            "spine_index" => Ok(Self::SpineIndex),
            other => Err(format!(
                "unknown join `{other}`; use auto, sort_merge or spine_index"
            )),
        }
    }
}

/// Builds physical plans for Ballista.
#[derive(Clone)]
pub struct Planner {
    ctx: SessionContext,
    join: JoinChoice,
}

impl Planner {
    /// A planner over `runtime` (which holds ftab's object stores).
    pub fn new(config: SessionConfig, runtime: Arc<RuntimeEnv>) -> Self {
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .build();
        Self {
            ctx: SessionContext::new_with_state(state),
            join: JoinChoice::Auto,
        }
    }

    /// The planner with training sets joined as `join` says.
    pub fn with_join(mut self, join: JoinChoice) -> Self {
        self.join = join;
        self
    }

    /// Which as-of join training sets use.
    pub fn join(&self) -> JoinChoice {
        self.join
    }

    /// The memory jobs may use, if limited.
    pub fn memory_limit(&self) -> Option<u64> {
        match self.ctx.runtime_env().memory_pool.memory_limit() {
            MemoryLimit::Finite(bytes) => Some(bytes as u64),
            _ => None,
        }
    }

    /// How many partitions plans have.
    pub fn partitions(&self) -> usize {
        self.ctx.state().config().target_partitions()
    }

    /// The most files one bucket merge may open at once: a partition's share of the
    /// memory limit at [`MERGE_BYTES_PER_FILE`] each. Beyond it the table is shuffled and
    /// sorted instead, which spills.
    pub fn max_merge_files(&self) -> usize {
        match self.memory_limit() {
            Some(bytes) => (bytes / self.partitions() as u64 / MERGE_BYTES_PER_FILE) as usize,
            None => usize::MAX,
        }
    }

    /// The session scans are planned in.
    pub fn ctx(&self) -> &SessionContext {
        &self.ctx
    }

    /// Run the physical optimizer over a plan with ftab's nodes on top: it inserts the
    /// repartitions and sorts they require and pushes projections and filters down.
    pub fn optimize(&self, plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
        let state = self.ctx.state();
        DefaultPhysicalPlanner::default().optimize_physical_plan(plan, &state, |_, _| {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spill_settings_follow_the_memory_limit() {
        const MIB: u64 = 1 << 20;
        // An eighth of a partition's share, at least 1 MiB, at most 32 MiB.
        assert_eq!(merge_reserve(2, 8 * MIB), MIB);
        assert_eq!(merge_reserve(2, 128 * MIB), 8 * MIB);
        assert_eq!(merge_reserve(2, 6 << 30), 32 * MIB);
        assert_eq!(merge_reserve(0, 8 * MIB), MIB, "0 partitions count as 1");
        // A file per MiB of a partition's share, between 2 and 64.
        assert_eq!(max_spill_merge_fan_in(2, 8 * MIB), 4);
        assert_eq!(max_spill_merge_fan_in(4, 8 * MIB), 2);
        assert_eq!(max_spill_merge_fan_in(2, 6 << 30), 64);
        // The floor the scheduler enforces leaves every sort of a task its reserve.
        assert!(MIN_MEMORY_PER_PARTITION >= 2 * merge_reserve(1, MIN_MEMORY_PER_PARTITION));
    }
}
