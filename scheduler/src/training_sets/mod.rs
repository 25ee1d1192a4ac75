//! Training sets: a spine in, point-in-time-correct feature rows out (DESIGN.md,
//! "Point-in-time join").
//!
//! A request names features (a feature service, or `table`/`table.feature` references) and
//! a spine (uploaded earlier with DoPut, or Parquet at a URI). This module checks it
//! against the definitions and the spine's Parquet footers (every error names the columns),
//! reads each table's offline Delta snapshot (latest, or pinned `as_of`), prunes its files
//! by date and statistics to the spine's time range and the ttl, builds the plan
//! ([`ftab_engine::plan::training_set`]) and submits it to the cluster. The answer lists one
//! endpoint per output partition; DoGet streams each partition from the executor holding it,
//! batch by batch, once the job is done. Results stay fetchable for the configured
//! retention, then are removed.

//!
//! The files: this one is the service (start, fetch, sweep); [`spines`] stores uploaded
//! spines and reads what a spine's Parquet footers say; [`checks`] holds the pure checks
//! of a request against the definitions and the spine's schema.

mod checks;
mod spines;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::execution::SendableRecordBatchStream;
use futures::Stream;
use tokio::sync::watch;

use ftab_engine::offline::columns::SEQ_COLUMN;
use ftab_engine::offline::{self, prune};
use ftab_engine::plan::training_set::{self, FileBuckets, SpineInput, TableInput};
use ftab_engine::storage::{ObjectStorage, StorageLayout};
use ftab_model::names::SpineName;
use ftab_model::protocol::{
    SpineInfo, TrainingSetInfo, TrainingSetRequest, TrainingSetTable, TrainingSetTicket,
    WorkspaceKind,
};

use crate::catalog::{Catalog, timestamp};
use crate::cluster::{BallistaJob, Cluster, Locations, PartitionData};
use crate::error::{Error, Result};
use checks::{check_spine_keys, invalid, output_names, select_features, time_column};
use spines::{Spines, later};

/// A training set whose job was submitted.
struct Running {
    job: BallistaJob,
    /// Filled once the job ends: where its partitions are, or why it failed; and when it
    /// ended (results are kept for the retention from then).
    outcome: watch::Receiver<Option<(std::result::Result<Locations, JobFailure>, Instant)>>,
}

impl Running {
    /// Whether its job ended at least `retention` ago: its results are gone (Ballista
    /// drops a finished job's files then) or about to go. The one rule for fetches and
    /// for the sweep.
    fn expired(&self, retention: Duration) -> bool {
        self.outcome
            .borrow()
            .as_ref()
            .is_some_and(|(_, ended)| ended.elapsed() >= retention)
    }
}

/// Why a training set's job failed, kept for every fetch of its partitions: its message,
/// and whether it ran out of memory (answered `RESOURCE_EXHAUSTED`, not `INTERNAL`).
#[derive(Debug, Clone)]
struct JobFailure {
    message: String,
    out_of_memory: bool,
}

impl From<Error> for JobFailure {
    fn from(error: Error) -> Self {
        Self {
            out_of_memory: matches!(error, Error::ResourcesExhausted(_)),
            message: error.to_string(),
        }
    }
}

impl From<JobFailure> for Error {
    fn from(failure: JobFailure) -> Self {
        if failure.out_of_memory {
            Error::ResourcesExhausted(failure.message)
        } else {
            Error::JobFailed(failure.message)
        }
    }
}

/// The answer to a fetch of a training set this process does not hold.
fn expired(training_set_id: &str) -> Error {
    Error::NotFound(format!(
        "training set {training_set_id} is not known here: it expired or the scheduler restarted; request it again with GetFlightInfo"
    ))
}

/// A training set as GetFlightInfo answers it.
pub struct Started {
    pub info: TrainingSetInfo,
    pub schema: SchemaRef,
    pub partitions: usize,
}

#[derive(Clone)]
pub struct TrainingSets {
    catalog: Catalog,
    layout: StorageLayout,
    objects: ObjectStorage,
    cluster: Cluster,
    spines: Spines,
    retention: Duration,
    running: Arc<Mutex<HashMap<String, Arc<Running>>>>,
}

/// A training set that cannot be planned: files the Delta log names and the store lacks
/// are data loss (named with the table, version and files); the rest is the request's.
fn planning_error(error: datafusion::error::DataFusionError, tables: &[TrainingSetTable]) -> Error {
    let missing = match error.find_root() {
        datafusion::error::DataFusionError::External(inner) => {
            inner.downcast_ref::<training_set::MissingFiles>().cloned()
        }
        _ => None,
    };
    let Some(missing) = missing else {
        return invalid(format!("cannot plan the training set: {error}"));
    };
    let shown: Vec<&str> = missing.files.iter().take(5).map(String::as_str).collect();
    let more = missing.files.len().saturating_sub(shown.len());
    let files = format!(
        "{}{}",
        shown.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        }
    );
    let plural = if missing.files.len() == 1 { "" } else { "s" };
    match &missing.table {
        Some(table) => {
            let version = tables
                .iter()
                .find(|t| t.table.as_str() == table)
                .and_then(|t| t.delta_version)
                .map_or_else(String::new, |v| format!(" at Delta version {v}"));
            Error::DataLoss(format!(
                "the offline table of feature table `{table}`{version} names {} file{plural} the object store does not have: {files}; the training set would silently miss their rows, so it is refused. Restore the files from a backup, or re-ingest the data",
                missing.files.len(),
            ))
        }
        None => Error::DataLoss(format!(
            "{} file{plural} of the spine disappeared while the training set was planned: {files}; ask again, after storing the spine again if it was deleted",
            missing.files.len(),
        )),
    }
}

impl TrainingSets {
    pub fn new(
        catalog: Catalog,
        layout: StorageLayout,
        objects: ObjectStorage,
        cluster: Cluster,
        spine_ttl: Duration,
        retention: Duration,
    ) -> Self {
        Self {
            spines: Spines::new(catalog.clone(), objects.clone(), cluster.clone(), spine_ttl),
            catalog,
            layout,
            objects,
            cluster,
            retention,
            running: Arc::default(),
        }
    }

    /// Store an uploaded spine (see [`Spines::store`]).
    pub async fn store_spine<S>(&self, name: SpineName, batches: S) -> Result<SpineInfo>
    where
        S: Stream<Item = Result<RecordBatch>> + Unpin + Send,
    {
        self.spines.store(name, batches).await
    }

    /// Check a request, plan it and submit its job.
    pub async fn start(&self, request: TrainingSetRequest) -> Result<Started> {
        let state = self.catalog.workspace(&request.workspace).await?;
        if state.kind != WorkspaceKind::Live {
            return Err(Error::FailedPrecondition(format!(
                "workspace `{}` is a dev workspace, which holds definitions but no data; ask a live workspace",
                state.name
            )));
        }
        let selection = select_features(&state, &request)?;
        let spine_source = request.spine.clone().ok_or_else(|| {
            invalid("the request names no spine; give {\"spine\": {\"name\": ...}} or {\"spine\": {\"uri\": ...}}")
        })?;
        let spine = self.spines.files(&spine_source).await?;
        let time_column = time_column(&spine.schema, request.timestamp_column.as_deref())?;
        let (range, nulls) = spine
            .time_stats
            .get(&time_column)
            .cloned()
            .unwrap_or((None, None));
        if let Some(nulls) = nulls.filter(|n| *n > 0) {
            return Err(invalid(format!(
                "the spine's time column `{time_column}` has {nulls} null value{}; every spine row needs a time",
                if nulls == 1 { "" } else { "s" }
            )));
        }
        check_spine_keys(&spine.schema, &state, &selection)?;
        let outputs = output_names(&spine.schema, &selection, request.full_feature_names)?;

        let mut tables = Vec::new();
        let mut table_infos = Vec::new();
        for ((table, features), names) in selection.iter().zip(outputs) {
            let generation = self
                .catalog
                .storage_generation(&state.name, &table.name)
                .await?;
            let url = self
                .layout
                .offline_table(&state.name, &table.name, generation);
            let as_of = request
                .as_of
                .as_ref()
                .and_then(|a| a.for_table(&table.name));
            let snapshot =
                offline::snapshot(&self.objects, &url, table.timestamp_field.as_str(), as_of)
                    .await
                    .map_err(|e| match e {
                        ftab_engine::Error::InvalidRequest(m) => {
                            invalid(format!("feature table `{}`: {m}", table.name))
                        }
                        other => Error::Engine(other),
                    })?;
            let ttl = table.ttl.map(|t| t.micros());
            let time_range = range
                .map(|(low, high)| (ttl.map_or(i64::MIN, |ttl| low.saturating_sub(ttl)), high));
            let total = snapshot.files.len() as u64;
            let files = match time_range {
                Some((low, high)) => prune(snapshot.files, low, high),
                None => snapshot.files,
            };
            table_infos.push(TrainingSetTable {
                table: table.name.clone(),
                delta_version: snapshot.version,
                files_read: files.len() as u64,
                files_total: total,
                read_by: None,
                join: None,
            });
            let mut fields: Vec<Arc<Field>> = table
                .arrow_schema(&state.definitions)
                .fields()
                .iter()
                .cloned()
                .collect();
            fields.push(Arc::new(Field::new(SEQ_COLUMN, DataType::Int64, false)));
            let keys: Vec<String> = table
                .join_keys(&state.definitions)
                .iter()
                .map(|k| k.to_string())
                .collect();
            // The bucket merge reads the files only if the table is bucketed by the keys in
            // the order the join sorts them in.
            let buckets = match &snapshot.bucketing {
                Some(b) if b.keys == keys => files
                    .iter()
                    .map(|f| f.bucket)
                    .collect::<Option<Vec<u32>>>()
                    .map(|of_files| FileBuckets {
                        count: b.count,
                        of_files,
                    }),
                _ => None,
            };
            tables.push(TableInput {
                table: table.name.to_string(),
                files: files.into_iter().map(|f| f.url).collect(),
                schema: Arc::new(Schema::new(fields)),
                keys: keys.iter().map(|k| (k.clone(), k.clone())).collect(),
                timestamp: table.timestamp_field.to_string(),
                ttl_micros: ttl,
                features: features.iter().cloned().zip(names).collect(),
                time_range,
                buckets,
            });
        }

        let plan = training_set::build(
            self.cluster.planner(),
            SpineInput {
                files: spine.files.clone(),
                schema: spine.schema.clone(),
                time_column: time_column.clone(),
                rows: spine.rows,
                bytes: spine.bytes,
            },
            tables,
        )
        .await
        .map_err(|e| planning_error(e, &table_infos))?;
        for (info, path) in table_infos.iter_mut().zip(&plan.read_by) {
            info.read_by = Some(*path);
            info.join = Some(plan.join);
        }
        let plan = plan.plan;
        let schema = plan.schema();
        tracing::debug!(plan = %datafusion::physical_plan::displayable(plan.as_ref()).indent(false), "training set plan");
        let id = uuid::Uuid::now_v7().to_string();
        let job = self
            .cluster
            .submit(&format!("ftab training set {id}"), plan)
            .await?;
        let partitions = job.partitions();
        let (sender, outcome) = watch::channel(None);
        let waiter = job.clone();
        let training_set_id = id.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let result = waiter
                .wait(|p| {
                    tracing::debug!(
                        training_set_id,
                        stages_done = p.stages_done,
                        stages = p.stages,
                        "progress"
                    )
                })
                .await;
            match &result {
                Ok(_) => {
                    tracing::info!(training_set_id, elapsed = ?started.elapsed(), "training set computed")
                }
                Err(e) => tracing::warn!(training_set_id, "training set failed: {e}"),
            }
            let _ = sender.send(Some((result.map_err(JobFailure::from), Instant::now())));
        });
        self.running
            .lock()
            .map_err(|_| Error::Internal("training set registry poisoned".into()))?
            .insert(id.clone(), Arc::new(Running { job, outcome }));
        // The earliest the results may go: they are kept for the retention after the job
        // ends, which is later.
        let expires_at = later(Utc::now(), self.retention);
        tracing::info!(
            training_set_id = %id,
            workspace = %state.name,
            rows = spine.rows,
            partitions,
            tables = ?table_infos.iter().map(|t| (t.table.as_str(), t.delta_version, t.files_read, t.files_total, t.read_by)).collect::<Vec<_>>(),
            "training set submitted"
        );
        Ok(Started {
            info: TrainingSetInfo {
                training_set_id: id,
                rows: spine.rows,
                tables: table_infos,
                timestamp_column: time_column,
                expires_at: timestamp(expires_at),
            },
            schema,
            partitions,
        })
    }

    /// Stream one output partition of a training set, once its job is done.
    pub async fn partition(&self, ticket: &TrainingSetTicket) -> Result<SendableRecordBatchStream> {
        let (_, location) = self.locate(ticket).await?;
        BallistaJob::fetch(&location)
            .await
            .map_err(|e| self.expired_or(ticket, e))
    }

    /// One output partition of a training set, once its job is done: the file itself when
    /// this process's executor holds it (DoGet sends it without decoding).
    pub async fn partition_data(&self, ticket: &TrainingSetTicket) -> Result<PartitionData> {
        let (running, location) = self.locate(ticket).await?;
        running
            .job
            .open(&location)
            .await
            .map_err(|e| self.expired_or(ticket, e))
    }

    /// A fetch that raced expiry (located before its results went, opened after) is
    /// answered as expired, not as a fault.
    fn expired_or(&self, ticket: &TrainingSetTicket, error: Error) -> Error {
        let live = self.running.lock().map(|running| {
            running
                .get(&ticket.training_set_id)
                .is_some_and(|r| !r.expired(self.retention))
        });
        match live {
            Ok(false) => expired(&ticket.training_set_id),
            _ => error,
        }
    }

    async fn locate(
        &self,
        ticket: &TrainingSetTicket,
    ) -> Result<(
        Arc<Running>,
        ballista_core::serde::protobuf::PartitionLocation,
    )> {
        let running = self
            .running
            .lock()
            .map_err(|_| Error::Internal("training set registry poisoned".into()))?
            .get(&ticket.training_set_id)
            .cloned()
            .filter(|r| !r.expired(self.retention))
            .ok_or_else(|| expired(&ticket.training_set_id))?;
        if ticket.partition >= running.job.partitions() {
            return Err(invalid(format!(
                "training set {} has partitions 0..{}, not {}",
                ticket.training_set_id,
                running.job.partitions(),
                ticket.partition
            )));
        }
        let mut outcome = running.outcome.clone();
        let (done, _) = outcome
            .wait_for(|o| o.is_some())
            .await
            .map_err(|_| Error::Internal("the training set's job was abandoned".into()))?
            .clone()
            .expect("wait_for returns a filled outcome");
        let locations = done.map_err(Error::from)?;
        let location = locations.get(&ticket.partition).cloned().ok_or_else(|| {
            Error::Internal(format!(
                "partition {} of training set {} has no result location",
                ticket.partition, ticket.training_set_id
            ))
        })?;
        Ok((running, location))
    }

    /// Forget training sets whose results have outlived the retention since their job ended
    /// (dropping the results; running ones stay) and delete expired spines.
    pub async fn sweep(&self) {
        let expired: Vec<Arc<Running>> = match self.running.lock() {
            Ok(mut running) => {
                let ids: Vec<String> = running
                    .iter()
                    .filter(|(_, r)| r.expired(self.retention))
                    .map(|(id, _)| id.clone())
                    .collect();
                ids.iter().filter_map(|id| running.remove(id)).collect()
            }
            Err(_) => Vec::new(),
        };
        for running in expired {
            running.job.clean();
        }
        self.spines.sweep().await;
    }

    /// Sweep every `every` until `shutdown` turns true.
    pub async fn run_sweeper(self, every: Duration, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => self.sweep().await,
                _ = shutdown.changed() => return,
            }
        }
    }
}
