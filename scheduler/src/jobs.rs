//! The job runner: takes queued jobs from the catalog and runs their steps.
//!
//! An ingest job has two steps, each idempotent, and the job record says which are done.
//! Each runs as a Ballista job ([`crate::cluster`]) whose plan is built in
//! [`ftab_engine::plan::ingest`]:
//!
//! 1. `offline_commit`: executors read the staged data hash-partitioned by the join keys and
//!    sorted, drop in-ingest duplicates of (join keys, timestamp) keeping the last row,
//!    write the survivors with `_seq`, `_ingested_at` and the `_date` partition as Parquet
//!    files into the table's Delta directory, and write the latest row per key beside the
//!    staged data. The scheduler then commits the files in one Delta commit that carries
//!    the application transaction `ftab-ingest-<ingest_id>`. A retried step first looks
//!    for that transaction, so the rows are never committed twice; files of an attempt
//!    that did not commit are never part of the table.
//! 2. `online_load`: executors write the latest row per key to the online store by the
//!    newer-only rule (safe to repeat: an equal (timestamp, seq) is not newer). In cluster
//!    mode the embedded store's load runs in the scheduler's process, which holds it.
//!
//! A failed attempt is retried with exponential backoff; a scheduler stopped mid-job queues
//! the job again at start and it resumes at its first step not done. A cancel request is
//! checked between steps and while a step's Ballista job runs: that job is cancelled and
//! its running tasks stopped on the executors.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::prelude::ParquetReadOptions;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use tokio::sync::{Notify, watch};
use tracing::Instrument;

use ftab_engine::offline;
use ftab_engine::offline::columns::{ROW_COLUMN, offline_table_schema};
use ftab_engine::plan::ingest::{
    IngestWriteExec, IngestWriteSpec, OnlineLoadExec, OnlineLoadSpec, collect_adds, sum_column,
};
use ftab_engine::storage::{ObjectStorage, StorageLayout};
use ftab_model::definitions::FeatureTable;
use ftab_model::ids::JobId;
use ftab_model::protocol::{JobCounts, JobState, StepState};

use crate::catalog::{Catalog, IngestRecord, JobRecord};
use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::ingest::{STEP_OFFLINE_COMMIT, STEP_ONLINE_LOAD};
use crate::workspaces::find_table;

/// How failed attempts are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// Delay before the second attempt; doubled for each further one.
    pub first_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            first_delay: Duration::from_secs(2),
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why a job stopped without succeeding.
enum Stop {
    Cancelled,
    /// Retrying cannot help (the table was redefined or deleted).
    Permanent(String),
    Failed(Error),
}

impl From<Error> for Stop {
    fn from(error: Error) -> Self {
        Stop::Failed(error)
    }
}

fn failed(what: &str, e: impl std::fmt::Display) -> Stop {
    Stop::Failed(Error::Internal(format!("{what}: {e}")))
}

#[derive(Clone)]
pub struct JobRunner {
    catalog: Catalog,
    layout: StorageLayout,
    storage: ObjectStorage,
    cluster: Cluster,
    waiting: Arc<Notify>,
    policy: RetryPolicy,
    /// Jobs run at once.
    max_jobs: usize,
}

impl JobRunner {
    pub fn new(
        catalog: Catalog,
        layout: StorageLayout,
        storage: ObjectStorage,
        cluster: Cluster,
        waiting: Arc<Notify>,
        policy: RetryPolicy,
        max_jobs: usize,
    ) -> Self {
        Self {
            catalog,
            layout,
            storage,
            cluster,
            waiting,
            policy,
            max_jobs: max_jobs.max(1),
        }
    }

    /// Run jobs until `shutdown` turns true, up to `max_jobs` at once, claimed fairly
    /// ([`Catalog::claim_next_job`]). A job interrupted by shutdown stays `running` in the
    /// catalog and is queued again at the next start.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        match self.catalog.requeue_interrupted().await {
            Ok(ids) if !ids.is_empty() => {
                tracing::info!(
                    jobs = ids.len(),
                    "resuming jobs interrupted by the last stop"
                )
            }
            Ok(_) => {}
            Err(e) => tracing::error!("cannot requeue interrupted jobs: {e}"),
        }
        // Dropped at shutdown: every job task is aborted with it.
        let mut running = tokio::task::JoinSet::new();
        loop {
            if *shutdown.borrow() {
                break;
            }
            while running.try_join_next().is_some() {}
            if running.len() >= self.max_jobs {
                tokio::select! {
                    _ = running.join_next() => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            }
            match self.catalog.claim_next_job().await {
                Ok(Some(job)) => {
                    let runner = self.clone();
                    running.spawn(async move { runner.execute(job).await });
                }
                Ok(None) => {
                    tokio::select! {
                        () = self.waiting.notified() => {}
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                        Some(_) = running.join_next(), if !running.is_empty() => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Err(e) => {
                    tracing::error!("cannot read queued jobs: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        if !running.is_empty() {
            tracing::info!(
                jobs = running.len(),
                "jobs interrupted by shutdown; they resume at the next start"
            );
        }
    }

    /// Run one job in its own task, so that a bug in a step fails the job instead of
    /// stopping the runner.
    async fn execute(&self, job: JobRecord) {
        let job_id = job.info.job_id;
        let span = tracing::info_span!("job", %job_id, workspace = %job.info.workspace, table = %job.info.table);
        let runner = self.clone();
        let task = tokio::spawn(async move { runner.execute_in_span(job).instrument(span).await });
        // When the runner stops at shutdown, this future is dropped: the job stops too (it
        // stays `running` in the catalog and resumes at the next start, as after a kill),
        // so nothing of this scheduler commits under the next one's feet.
        let _stop_with_me = AbortOnDrop(task.abort_handle());
        if let Err(e) = task.await {
            tracing::error!(%job_id, "job task ended abnormally: {e}");
            let message =
                format!("internal error: the job stopped abnormally ({e}); this is a bug in ftab");
            if let Err(e) = self
                .catalog
                .end_attempt(&job_id, JobState::Failed, Some(message), None)
                .await
            {
                tracing::error!(%job_id, "cannot record the job's end: {e}");
            }
        }
    }

    async fn execute_in_span(&self, mut job: JobRecord) {
        let job_id = job.info.job_id;
        tracing::info!(%job_id, attempt = job.info.attempts, "job started");
        let outcome = self.run_steps(&mut job).await;
        let result = match outcome {
            Ok(()) => {
                tracing::info!(%job_id, counts = ?job.info.counts, "job succeeded");
                if let Some(ingest_id) = job.info.ingest_id
                    && let Ok(ingest) = self.catalog.ingest(&ingest_id).await
                    && let Ok(prefix) = Path::parse(&ingest.staged_prefix)
                    && let Err(e) = self.storage.delete_prefix(&prefix).await
                {
                    tracing::warn!(%job_id, "cannot remove staged data after success: {e}");
                }
                self.catalog
                    .end_attempt(&job_id, JobState::Succeeded, None, None)
                    .await
            }
            Err(Stop::Cancelled) => {
                tracing::info!(%job_id, "job cancelled");
                self.catalog
                    .end_attempt(&job_id, JobState::Cancelled, None, None)
                    .await
            }
            Err(Stop::Permanent(message)) => {
                tracing::error!(%job_id, "job failed: {message}");
                self.catalog
                    .end_attempt(&job_id, JobState::Failed, Some(message), None)
                    .await
            }
            Err(Stop::Failed(error)) => {
                let message = error.to_string();
                if job.info.attempts >= self.policy.max_attempts {
                    tracing::error!(%job_id, attempts = job.info.attempts, "job failed: {message}");
                    let message = format!(
                        "{message} (after {} attempts; `ftab jobs retry {job_id}` runs it again)",
                        job.info.attempts
                    );
                    self.catalog
                        .end_attempt(&job_id, JobState::Failed, Some(message), None)
                        .await
                } else {
                    let delay = self.policy.first_delay
                        * 2u32.saturating_pow(job.info.attempts.saturating_sub(1));
                    tracing::warn!(%job_id, attempt = job.info.attempts, ?delay, "job attempt failed, retrying: {message}");
                    let retry_at =
                        Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
                    let retry_at = crate::catalog::timestamp(retry_at);
                    self.catalog
                        .end_attempt(&job_id, JobState::Queued, Some(message), Some(retry_at))
                        .await
                }
            }
        };
        if let Err(e) = result {
            tracing::error!(%job_id, "cannot record the job's end: {e}");
        }
    }

    async fn run_steps(&self, job: &mut JobRecord) -> std::result::Result<(), Stop> {
        let ingest_id = job.info.ingest_id.ok_or_else(|| {
            Stop::Permanent(format!(
                "{:?} jobs are not supported by this scheduler yet",
                job.info.kind
            ))
        })?;
        let ingest = self.catalog.ingest(&ingest_id).await?;
        let state = self.catalog.workspace(&ingest.workspace).await?;
        let table = find_table(&state, &ingest.table)
            .map_err(|e| Stop::Permanent(format!("{e}; the ingest cannot be materialized")))?
            .clone();
        let generation = self
            .catalog
            .table_generation(&ingest.workspace, &ingest.table)
            .await?;
        if generation != Some(ingest.generation) {
            return Err(Stop::Permanent(format!(
                "feature table `{}` was redefined by a forced apply after this ingest (storage generation {} -> {}); its data no longer fits the table",
                ingest.table,
                ingest.generation,
                generation
                    .map(|g| g.to_string())
                    .unwrap_or_else(|| "none".into())
            )));
        }
        let ingest_step = IngestStep {
            runner: self,
            job_id: job.info.job_id,
            ingest: &ingest,
            table: &table,
            definitions: &state.definitions,
        };
        for step in [STEP_OFFLINE_COMMIT, STEP_ONLINE_LOAD] {
            if job.info.steps.get(step) != Some(&StepState::Pending) {
                continue;
            }
            if self.catalog.job(&job.info.job_id).await?.cancel_requested {
                return Err(Stop::Cancelled);
            }
            match step {
                STEP_OFFLINE_COMMIT => ingest_step.offline_commit(&mut job.info.counts).await?,
                _ => ingest_step.online_load(&mut job.info.counts).await?,
            }
            failpoint(step).await;
            job.info.steps.insert(step.to_string(), StepState::Done);
            self.catalog
                .save_progress(&job.info.job_id, &job.info.steps, &job.info.counts)
                .await?;
            tracing::info!(job_id = %job.info.job_id, step, counts = ?job.info.counts, "step done");
        }
        Ok(())
    }
}

/// The steps of one ingest job.
struct IngestStep<'a> {
    runner: &'a JobRunner,
    job_id: JobId,
    ingest: &'a IngestRecord,
    table: &'a FeatureTable,
    definitions: &'a ftab_model::Definitions,
}

/// What the write job of an ingest reported.
struct Written {
    adds: Vec<deltalake::kernel::Add>,
    /// How the offline files were bucketed.
    bucketing: Option<offline::Bucketing>,
    /// Rows left after dropping in-ingest duplicates.
    unique_rows: u64,
}

impl IngestStep<'_> {
    fn staged_prefix(&self) -> std::result::Result<Path, Stop> {
        Path::parse(&self.ingest.staged_prefix)
            .map_err(|e| Stop::Permanent(format!("staged location is invalid: {e}")))
    }

    /// Where the write job puts the latest row per key, for the online load.
    fn latest_prefix(&self) -> std::result::Result<Path, Stop> {
        Ok(self.staged_prefix()?.join(LATEST_DIRECTORY))
    }

    /// The staged Parquet files of the ingest (not the latest rows beside them).
    async fn staged_files(&self) -> std::result::Result<Vec<String>, Stop> {
        let prefix = self.staged_prefix()?;
        let latest = self.latest_prefix()?;
        let storage = &self.runner.storage;
        let objects = storage
            .list(&prefix)
            .await
            .map_err(|e| failed("cannot list the staged data", e))?;
        let files: Vec<String> = objects
            .iter()
            .filter(|o| !o.location.prefix_matches(&latest))
            .filter(|o| o.location.as_ref().ends_with(".parquet"))
            .map(|o| storage.object_url(&o.location).to_string())
            .collect();
        if files.is_empty() {
            return Err(Stop::Permanent(format!(
                "the staged data of ingest {} is gone (nothing under {prefix}); it cannot be materialized",
                self.ingest.ingest_id
            )));
        }
        Ok(files)
    }

    fn job_name(&self, what: &str) -> String {
        format!(
            "ftab {what} {}.{} ingest {}",
            self.ingest.workspace, self.ingest.table, self.ingest.ingest_id
        )
    }

    /// Run the write job: dedupe the ingest on the executors, write the survivors as
    /// offline files (uncommitted) if `offline` is given, bucketed as it says, and the latest
    /// row per key beside the staged data if `latest`.
    async fn write(
        &self,
        offline: Option<Option<offline::Bucketing>>,
        latest: bool,
    ) -> std::result::Result<Written, Stop> {
        let storage = &self.runner.storage;
        let latest_prefix = self.latest_prefix()?;
        if latest {
            storage
                .delete_prefix(&latest_prefix)
                .await
                .map_err(|e| failed("cannot clear earlier latest rows", e))?;
        }
        let mut staged_schema: Vec<Arc<Field>> = self
            .table
            .arrow_schema(self.definitions)
            .fields()
            .iter()
            .cloned()
            .collect();
        staged_schema.push(Arc::new(Field::new(ROW_COLUMN, DataType::Int64, false)));
        let staged_schema = Schema::new(staged_schema);
        let planner = self.runner.cluster.planner();
        let scan = planner
            .ctx()
            .read_parquet(
                self.staged_files().await?,
                ParquetReadOptions::default()
                    .schema(&staged_schema)
                    .file_extension(""),
            )
            .await
            .map_err(|e| failed("cannot read the staged data", e))?
            .create_physical_plan()
            .await
            .map_err(|e| failed("cannot plan the ingest", e))?;
        let ingest = self.ingest;
        let keys = self.written_keys(offline.as_ref())?;
        let spec = IngestWriteSpec {
            table: ingest.table.to_string(),
            keys,
            timestamp: self.table.timestamp_field.to_string(),
            columns: self
                .table
                .schema
                .iter()
                .map(|c| c.name.to_string())
                .collect(),
            offline_table: offline.is_some().then(|| self.offline_url().to_string()),
            latest_directory: latest.then(|| storage.directory_url(&latest_prefix).to_string()),
            seq: ingest.seq as i64,
            ingested_at_micros: Utc::now().timestamp_micros(),
            buckets: offline.as_ref().and_then(|b| b.as_ref()).map(|b| b.count),
        };
        let plan = IngestWriteExec::try_new(scan, spec)
            .and_then(|node| planner.optimize(Arc::new(node)))
            .map_err(|e| failed("cannot plan the ingest", e))?;
        let batches = self.run("write", plan).await?;
        let adds = collect_adds(&batches).map_err(|e| failed("bad write job output", e))?;
        let unique_rows =
            sum_column(&batches, "unique_rows").map_err(|e| failed("bad write job output", e))?;
        if latest {
            storage
                .store
                .put(&latest_prefix.clone().join(LATEST_DONE), Default::default())
                .await
                .map_err(|e| failed("cannot mark the latest rows complete", e))?;
        }
        Ok(Written {
            adds,
            bucketing: offline.flatten(),
            unique_rows,
        })
    }

    /// Submit a plan to the cluster, log its progress, and collect its (small) output.
    async fn run(
        &self,
        what: &str,
        plan: Arc<dyn datafusion::physical_plan::ExecutionPlan>,
    ) -> std::result::Result<Vec<datafusion::arrow::array::RecordBatch>, Stop> {
        let name = self.job_name(what);
        let job = self.runner.cluster.submit(&name, plan).await?;
        let job_id = self.job_id;
        let collect = job.collect(|p| {
            tracing::debug!(%job_id, step = what, stages_done = p.stages_done, stages = p.stages, "progress");
        });
        // A cancel request stops the Ballista job's running tasks, not only the next step.
        tokio::select! {
            batches = collect => Ok(batches?),
            () = self.cancel_requested() => {
                tracing::info!(%job_id, step = what, "cancelling the running Ballista job");
                job.cancel().await;
                Err(Stop::Cancelled)
            }
        }
    }

    /// Resolves when the job's cancellation is requested (checked four times a second).
    async fn cancel_requested(&self) {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            match self.runner.catalog.job(&self.job_id).await {
                Ok(job) if job.cancel_requested => return,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(job_id = %self.job_id, "cannot read the job's cancel flag: {e}")
                }
            }
        }
    }

    fn offline_url(&self) -> url::Url {
        let ingest = self.ingest;
        self.runner
            .layout
            .offline_table(&ingest.workspace, &ingest.table, ingest.generation)
    }

    /// The table's join keys, in entity order.
    fn table_keys(&self) -> Vec<String> {
        self.table
            .join_keys(self.definitions)
            .iter()
            .map(|k| k.to_string())
            .collect()
    }

    /// The join keys the write job hashes and sorts by: the table's, in the order of the
    /// offline table's buckets, which outlives a reordering of the entities (the set of
    /// keys cannot change within a storage generation).
    fn written_keys(
        &self,
        bucketing: Option<&Option<offline::Bucketing>>,
    ) -> std::result::Result<Vec<String>, Stop> {
        let keys = self.table_keys();
        let Some(Some(b)) = bucketing else {
            return Ok(keys);
        };
        let (mut wanted, mut have) = (b.keys.clone(), keys.clone());
        wanted.sort();
        have.sort();
        if wanted != have {
            return Err(Stop::Permanent(format!(
                "the offline table is bucketed by join keys {:?}, but the table's join keys are {:?}",
                b.keys, keys
            )));
        }
        Ok(b.keys.clone())
    }

    async fn offline_commit(&self, counts: &mut JobCounts) -> std::result::Result<(), Stop> {
        let ingest = self.ingest;
        let url = self.offline_url();
        let app_id = offline::ingest_app_id(&ingest.ingest_id.to_string());
        let storage = &self.runner.storage;
        let table = offline::open(storage, &url)
            .await
            .map_err(|e| failed("cannot open the offline table", e))?;
        if let Some(table) = &table
            && let Ok(snapshot) = table.snapshot()
            && snapshot
                .transaction_version(table.log_store().as_ref(), &app_id)
                .await
                .map_err(|e| failed("cannot read the offline table's transactions", e))?
                .is_some()
        {
            // An earlier attempt committed and stopped before recording it; its counts
            // were saved before the commit.
            tracing::info!(%app_id, "already committed by an earlier attempt");
            return Ok(());
        }
        // A new table gets a bucket per partition of the cluster; an existing one keeps its
        // own (docs/offline-store.md).
        let new = offline::Bucketing {
            count: self.runner.cluster.planner().partitions() as u32,
            keys: self.table_keys(),
        };
        let bucketing = offline::ingest_bucketing(table.as_ref(), &url, new)
            .map_err(|e| failed("cannot open the offline table", e))?;
        let written = self.write(Some(bucketing), self.table.online).await?;
        counts.offline_rows_committed = written.unique_rows;
        counts.duplicates_dropped = ingest.rows.saturating_sub(written.unique_rows);
        self.runner
            .catalog
            .save_counts(&self.job_id, counts)
            .await?;
        let schema = offline_table_schema(
            &self.table.arrow_schema(self.definitions),
            written.bucketing.is_some(),
        );
        let mut metadata = BTreeMap::new();
        metadata.insert(
            "ftab.ingest_id".to_string(),
            serde_json::json!(ingest.ingest_id.to_string()),
        );
        metadata.insert("ftab.seq".to_string(), serde_json::json!(ingest.seq));
        metadata.insert(
            "ftab.rows".to_string(),
            serde_json::json!(written.unique_rows),
        );
        failpoint("before_offline_commit").await;
        let committed = offline::commit_ingest(
            storage,
            &url,
            &schema,
            written.bucketing.as_ref(),
            written.adds,
            &app_id,
            ingest.seq as i64,
            metadata,
        )
        .await
        .map_err(|e| failed("cannot commit to the offline table", e))?;
        tracing::info!(?committed, rows = written.unique_rows, "offline commit");
        Ok(())
    }

    async fn online_load(&self, counts: &mut JobCounts) -> std::result::Result<(), Stop> {
        let storage = &self.runner.storage;
        let latest_prefix = self.latest_prefix()?;
        let done = storage
            .store
            .head(&latest_prefix.clone().join(LATEST_DONE))
            .await
            .is_ok();
        if !done {
            let written = self.write(None, true).await?;
            if !self.table.offline {
                // For an online-only table this job is the one that sees the duplicates.
                counts.duplicates_dropped = self.ingest.rows.saturating_sub(written.unique_rows);
            }
        }
        let files: Vec<String> = storage
            .list(&latest_prefix)
            .await
            .map_err(|e| failed("cannot list the latest rows", e))?
            .iter()
            .filter(|o| o.location.as_ref().ends_with(".parquet"))
            .map(|o| storage.object_url(&o.location).to_string())
            .collect();
        if files.is_empty() {
            return Ok(());
        }
        let online_table = self
            .runner
            .catalog
            .online_table(
                &self.ingest.workspace,
                self.table,
                self.definitions,
                self.ingest.generation,
            )
            .await?;
        let schema = self.table.arrow_schema(self.definitions);
        let planner = self.runner.cluster.planner();
        let scan = planner
            .ctx()
            .read_parquet(
                files,
                ParquetReadOptions::default()
                    .schema(&schema)
                    .file_extension(""),
            )
            .await
            .map_err(|e| failed("cannot read the latest rows", e))?
            .create_physical_plan()
            .await
            .map_err(|e| failed("cannot plan the online load", e))?;
        let spec = OnlineLoadSpec {
            table: online_table,
            seq: self.ingest.seq,
            now_micros: Utc::now().timestamp_micros(),
        };
        let plan = OnlineLoadExec::try_new(scan, spec)
            .and_then(|node| planner.optimize(Arc::new(node)))
            .map_err(|e| failed("cannot plan the online load", e))?;
        // The embedded online store lives in this process; in cluster mode its load runs
        // here (reading the latest rows the executors wrote) rather than on an executor
        // that cannot reach it. Aerospike is loaded by the executors (docs/cluster.md).
        let batches = if self.runner.cluster.loads_online_here() {
            self.runner.cluster.collect_here(plan).await?
        } else {
            self.run("online load", plan).await?
        };
        let sum =
            |name| sum_column(&batches, name).map_err(|e| failed("bad online load output", e));
        counts.online_rows_written = sum("written")?;
        counts.online_skipped_older = sum("skipped_older")?;
        counts.online_skipped_expired = sum("skipped_expired")?;
        Ok(())
    }
}

/// The directory beside an ingest's staged data that holds its latest row per key, and
/// the marker written once it is complete.
const LATEST_DIRECTORY: &str = "latest";
const LATEST_DONE: &str = "_COMPLETE";

/// Test hook: with `FTAB_FAILPOINT=after_<step>` a job stops after the step's work and
/// before its progress is saved, where a crash would hurt most (tests/ingest.rs kills the
/// scheduler there); `FTAB_FAILPOINT=before_offline_commit` stops it between writing the
/// offline files and committing them.
async fn failpoint(step: &str) {
    let reached = std::env::var("FTAB_FAILPOINT")
        .is_ok_and(|v| v == step || v.strip_prefix("after_") == Some(step));
    if reached {
        tracing::warn!(
            step,
            "failpoint reached: pausing the job before saving its progress"
        );
        std::future::pending::<()>().await;
    }
}

/// Job requests from clients: list, show, cancel, retry.
#[derive(Clone)]
pub struct Jobs {
    catalog: Catalog,
    waiting: Arc<Notify>,
}

impl Jobs {
    pub fn new(catalog: Catalog, waiting: Arc<Notify>) -> Self {
        Self { catalog, waiting }
    }

    pub async fn list(
        &self,
        request: ftab_model::protocol::ListJobsRequest,
    ) -> Result<ftab_model::protocol::ListJobsResponse> {
        Ok(ftab_model::protocol::ListJobsResponse {
            jobs: self.catalog.list_jobs(request).await?,
        })
    }

    pub async fn get(
        &self,
        job_id: &ftab_model::ids::JobId,
    ) -> Result<ftab_model::protocol::JobInfo> {
        Ok(self.catalog.job(job_id).await?.info)
    }

    pub async fn cancel(
        &self,
        job_id: &ftab_model::ids::JobId,
    ) -> Result<ftab_model::protocol::JobInfo> {
        let info = self.catalog.cancel_job(job_id).await?;
        tracing::info!(%job_id, state = ?info.state, "cancel requested");
        Ok(info)
    }

    pub async fn retry(
        &self,
        job_id: &ftab_model::ids::JobId,
    ) -> Result<ftab_model::protocol::JobInfo> {
        let info = self.catalog.retry_job(job_id).await?;
        tracing::info!(%job_id, "queued again");
        self.waiting.notify_one();
        Ok(info)
    }
}
