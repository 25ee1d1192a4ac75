//! Plan builders: the DataFusion physical plans of ftab's jobs, built here and run on
//! Ballista executors.
//!
//! - [`ingest`]: dedupe an ingest, write it to the offline table, load the online store;
//! - [`pit_join`]: the point-in-time (as-of) join;
//! - [`training_set`]: a training set as a chain of as-of joins over a spine.
//!
//! Plans are built with a local [`Planner`] (no Ballista in it): DataFusion plans the
//! scans, ftab's nodes are put on top, and the physical optimizer then inserts the
//! shuffles and sorts the nodes require. The scheduler submits the result to Ballista,
//! which cuts it into stages at the shuffles.

pub mod ingest;
pub mod pit_join;
pub mod training_set;

use std::sync::Arc;

use ballista_core::extension::SessionConfigHelperExt;
use datafusion::common::Result;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::DefaultPhysicalPlanner;
use datafusion::prelude::{SessionConfig, SessionContext};

/// The DataFusion settings of every ftab plan, in the planner and on the executors.
///
/// Ballista's restricted settings (no dynamic filters across stages, no round-robin
/// repartitioning, no string views, which Arrow IPC ships badly) plus `target_partitions`:
/// how many partitions shuffles produce, the parallelism of every job. A sort keeps back
/// memory to merge its spill files; that share is sized so that every task's sorts fit in
/// `memory_limit` together (DataFusion's default of 10 MiB each would not fit a small limit).
pub fn session_config(target_partitions: usize, memory_limit: u64) -> SessionConfig {
    let target_partitions = target_partitions.max(1);
    let merge_reserve = (memory_limit / (target_partitions as u64 * 16)).clamp(256 << 10, 10 << 20);
    SessionConfig::new()
        .with_target_partitions(target_partitions)
        .with_information_schema(false)
        .with_sort_spill_reservation_bytes(merge_reserve as usize)
        .ballista_restricted_configuration()
}

/// Builds physical plans for Ballista.
#[derive(Clone)]
pub struct Planner {
    ctx: SessionContext,
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
