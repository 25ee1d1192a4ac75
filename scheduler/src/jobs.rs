//! The job runner: takes queued jobs from the catalog and runs their steps.
//!
//! An ingest job has two steps, each idempotent, and the job record says which are done:
//!
//! 1. `offline_commit`: read the staged data, drop in-ingest duplicates of (join keys,
//!    timestamp) keeping the last row, add `_seq`, `_ingested_at` and the `_date`
//!    partition, and append to the table's Delta table in one commit that carries a Delta
//!    application transaction `ftab-ingest-<ingest_id>`. A retried step first looks for that
//!    transaction, so the rows are never committed twice.
//! 2. `online_load`: the latest row per key of the ingest, written to the online store by
//!    the newer-only rule (safe to repeat: an equal (timestamp, seq) is not newer).
//!
//! A failed attempt is retried with exponential backoff; a scheduler stopped mid-job queues
//! the job again at start and it resumes at its first step not done. Cancellation is
//! checked between steps.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::execution::context::SessionContext;
use datafusion::functions_window::expr_fn::row_number;
use datafusion::logical_expr::{ExprFunctionExt, cast, col, lit};
use datafusion::prelude::{Expr, ParquetReadOptions};
use deltalake::DeltaTable;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use tokio::sync::{Notify, watch};
use tracing::Instrument;

use ftab_core::definitions::FeatureTable;
use ftab_core::online::{OnlineStore, OnlineTable, WriteCounts};
use ftab_core::protocol::{JobCounts, JobState, StepState};
use ftab_core::storage::{ObjectStorage, StorageLayout};

use crate::catalog::{Catalog, IngestRecord, JobRecord};
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
    online: Arc<dyn OnlineStore>,
    waiting: Arc<Notify>,
    policy: RetryPolicy,
}

impl JobRunner {
    pub fn new(
        catalog: Catalog,
        layout: StorageLayout,
        storage: ObjectStorage,
        online: Arc<dyn OnlineStore>,
        waiting: Arc<Notify>,
        policy: RetryPolicy,
    ) -> Self {
        Self {
            catalog,
            layout,
            storage,
            online,
            waiting,
            policy,
        }
    }

    /// Run jobs until `shutdown` turns true. A job interrupted by shutdown stays `running`
    /// in the catalog and is queued again at the next start.
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
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.catalog.claim_next_job().await {
                Ok(Some(job)) => {
                    tokio::select! {
                        () = self.execute(job) => {}
                        _ = shutdown.changed() => {
                            tracing::info!("job interrupted by shutdown; it resumes at the next start");
                            return;
                        }
                    }
                }
                Ok(None) => {
                    tokio::select! {
                        () = self.waiting.notified() => {}
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Err(e) => {
                    tracing::error!("cannot read queued jobs: {e}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Run one job in its own task, so that a bug in a step fails the job instead of
    /// stopping the runner.
    async fn execute(&self, job: JobRecord) {
        let job_id = job.info.job_id;
        let span = tracing::info_span!("job", %job_id, workspace = %job.info.workspace, table = %job.info.table);
        let runner = self.clone();
        let task = tokio::spawn(async move { runner.execute_in_span(job).instrument(span).await });
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
                    let retry_at = retry_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
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
    ingest: &'a IngestRecord,
    table: &'a FeatureTable,
    definitions: &'a ftab_core::Definitions,
}

impl IngestStep<'_> {
    /// A DataFusion session with delta-rs's planner (its writes need it) and ftab's store.
    fn session(&self) -> SessionContext {
        let ctx = deltalake::delta_datafusion::create_session().into_inner();
        let storage = &self.runner.storage;
        ctx.register_object_store(storage.base_url(), storage.store.clone());
        ctx
    }

    /// The staged rows of the ingest.
    async fn staged(&self, ctx: &SessionContext) -> std::result::Result<DataFrame, Stop> {
        let prefix = Path::parse(&self.ingest.staged_prefix)
            .map_err(|e| Stop::Permanent(format!("staged location is invalid: {e}")))?;
        let url = self.runner.storage.directory_url(&prefix);
        ctx.read_parquet(url.as_str(), ParquetReadOptions::default())
            .await
            .map_err(|e| {
                Stop::Permanent(format!(
                    "the staged data of ingest {} cannot be read ({e}); it may have been removed",
                    self.ingest.ingest_id
                ))
            })
    }

    fn keys(&self) -> Vec<Expr> {
        self.table
            .join_keys(self.definitions)
            .iter()
            .map(|k| col(quoted(k.as_str())))
            .collect()
    }

    fn timestamp(&self) -> Expr {
        col(quoted(self.table.timestamp_field.as_str()))
    }

    /// Keep one row per partition: the first by `order`.
    fn first_per(
        df: DataFrame,
        partition: Vec<Expr>,
        order: Vec<datafusion::logical_expr::SortExpr>,
    ) -> std::result::Result<DataFrame, Stop> {
        let rank = row_number()
            .partition_by(partition)
            .order_by(order)
            .build()
            .map_err(|e| failed("cannot plan the dedupe", e))?
            .alias("__rank");
        df.window(vec![rank])
            .and_then(|df| df.filter(col("__rank").eq(lit(1u64))))
            .map_err(|e| failed("cannot plan the dedupe", e))
    }

    async fn offline_commit(&self, counts: &mut JobCounts) -> std::result::Result<(), Stop> {
        let ingest = self.ingest;
        let url =
            self.runner
                .layout
                .offline_table(&ingest.workspace, &ingest.table, ingest.generation);
        if url.scheme() == "file"
            && let Ok(path) = url.to_file_path()
        {
            std::fs::create_dir_all(&path)
                .map_err(|e| failed("cannot create the offline table directory", e))?;
        }
        let table = DeltaTable::try_from_url(url.clone())
            .await
            .map_err(|e| failed(&format!("cannot open the offline table {url}"), e))?;
        let app_id = format!("ftab-ingest-{}", ingest.ingest_id);
        if table.version().is_some() {
            let snapshot = table
                .snapshot()
                .map_err(|e| failed("cannot read the offline table", e))?;
            let committed = snapshot
                .transaction_version(table.log_store().as_ref(), &app_id)
                .await
                .map_err(|e| failed("cannot read the offline table's transactions", e))?;
            if committed.is_some() {
                // An earlier attempt committed and stopped before saving its progress.
                let ctx = self.session();
                let rows = self
                    .deduplicated(&ctx)
                    .await?
                    .count()
                    .await
                    .map_err(|e| failed("cannot count the ingest", e))?
                    as u64;
                counts.offline_rows_committed = rows;
                counts.duplicates_dropped = ingest.rows.saturating_sub(rows);
                tracing::info!(%app_id, "already committed by an earlier attempt");
                return Ok(());
            }
        }

        let ctx = self.session();
        let ingested_at = ScalarValue::TimestampMicrosecond(
            Some(Utc::now().timestamp_micros()),
            Some("UTC".into()),
        );
        let mut columns: Vec<Expr> = self
            .table
            .schema
            .iter()
            .map(|c| col(quoted(c.name.as_str())))
            .collect();
        columns.push(lit(ingest.seq as i64).alias("_seq"));
        columns.push(lit(ingested_at).alias("_ingested_at"));
        columns.push(cast(self.timestamp(), DataType::Date32).alias("_date"));
        let rows = self
            .deduplicated(&ctx)
            .await?
            .select(columns)
            .map_err(|e| failed("cannot plan the offline commit", e))?;
        let (state, plan) = rows.into_parts();
        let written = table
            .write(Vec::new())
            .with_input_plan(plan)
            .with_session_state(Arc::new(state))
            .with_save_mode(SaveMode::Append)
            .with_schema_mode(deltalake::operations::write::SchemaMode::Merge)
            .with_partition_columns(["_date"])
            .with_table_name(ingest.table.as_str())
            .with_commit_properties(
                CommitProperties::default()
                    .with_application_transaction(Transaction::new(&app_id, ingest.seq as i64)),
            )
            .await
            .map_err(|e| failed(&format!("cannot append to the offline table {url}"), e))?;
        let history: Vec<_> = written
            .history(Some(1))
            .try_collect()
            .await
            .map_err(|e| failed("cannot read the commit", e))?;
        let added = history
            .first()
            .and_then(|c| c.info.get("operationMetrics"))
            .and_then(|m| m.get("num_added_rows"))
            .and_then(|n| n.as_u64())
            .unwrap_or(0);
        counts.offline_rows_committed = added;
        counts.duplicates_dropped = ingest.rows.saturating_sub(added);
        Ok(())
    }

    /// The ingest without in-ingest duplicates of (join keys, timestamp): the last row wins.
    async fn deduplicated(&self, ctx: &SessionContext) -> std::result::Result<DataFrame, Stop> {
        let mut partition = self.keys();
        partition.push(self.timestamp());
        Self::first_per(
            self.staged(ctx).await?,
            partition,
            vec![col("_row").sort(false, true)],
        )
    }

    async fn online_load(&self, counts: &mut JobCounts) -> std::result::Result<(), Stop> {
        let ctx = self.session();
        let latest = Self::first_per(
            self.staged(&ctx).await?,
            self.keys(),
            vec![
                self.timestamp().sort(false, true),
                col("_row").sort(false, true),
            ],
        )?;
        let online_table = OnlineTable::new(
            self.ingest.workspace.clone(),
            self.table,
            self.definitions,
            self.ingest.generation,
        );
        let now = Utc::now().timestamp_micros();
        let mut stream = latest
            .execute_stream()
            .await
            .map_err(|e| failed("cannot read the ingest's latest rows", e))?;
        let mut total = WriteCounts::default();
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(|e| failed("cannot read the ingest's latest rows", e))?;
            total += self
                .runner
                .online
                .write_latest(&online_table, &batch, self.ingest.seq, now)
                .await
                .map_err(|e| failed("cannot write to the online store", e))?;
        }
        counts.online_rows_written = total.written;
        counts.online_skipped_older = total.skipped_older;
        counts.online_skipped_expired = total.skipped_expired;
        Ok(())
    }
}

/// Test hook: with `FTAB_FAILPOINT=after_<step>` a job stops after the step's work and
/// before its progress is saved, where a crash would hurt most (tests/restart.rs kills the
/// scheduler there).
async fn failpoint(step: &str) {
    if std::env::var("FTAB_FAILPOINT").is_ok_and(|v| v.strip_prefix("after_") == Some(step)) {
        tracing::warn!(
            step,
            "failpoint reached: pausing the job before saving its progress"
        );
        std::future::pending::<()>().await;
    }
}

/// A column name for DataFusion's `col`, which would otherwise fold case.
fn quoted(name: &str) -> String {
    format!("\"{name}\"")
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
        request: ftab_core::protocol::ListJobsRequest,
    ) -> Result<ftab_core::protocol::ListJobsResponse> {
        Ok(ftab_core::protocol::ListJobsResponse {
            jobs: self.catalog.list_jobs(request).await?,
        })
    }

    pub async fn get(
        &self,
        job_id: &ftab_core::ids::JobId,
    ) -> Result<ftab_core::protocol::JobInfo> {
        Ok(self.catalog.job(job_id).await?.info)
    }

    pub async fn cancel(
        &self,
        job_id: &ftab_core::ids::JobId,
    ) -> Result<ftab_core::protocol::JobInfo> {
        let info = self.catalog.cancel_job(job_id).await?;
        tracing::info!(%job_id, state = ?info.state, "cancel requested");
        Ok(info)
    }

    pub async fn retry(
        &self,
        job_id: &ftab_core::ids::JobId,
    ) -> Result<ftab_core::protocol::JobInfo> {
        let info = self.catalog.retry_job(job_id).await?;
        tracing::info!(%job_id, "queued again");
        self.waiting.notify_one();
        Ok(info)
    }
}
