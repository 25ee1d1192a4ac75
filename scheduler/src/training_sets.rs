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

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit};
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use datafusion::parquet::arrow::{AsyncArrowWriter, parquet_to_arrow_schema};
use ftab_engine::storage::scratch_parquet_writer;
use futures::{Stream, StreamExt};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use tokio::sync::watch;
use url::Url;

use ftab_engine::offline::{self, prune};
use ftab_engine::plan::ingest::SEQ_COLUMN;
use ftab_engine::plan::training_set::{self, FileBuckets, SpineInput, TableInput};
use ftab_engine::storage::{ObjectStorage, StorageLayout};
use ftab_engine::validate::compatible;
use ftab_model::definitions::{FeatureRef, FeatureTable};
use ftab_model::names::SpineName;
use ftab_model::protocol::{
    SpineInfo, SpineSource, TrainingSetInfo, TrainingSetRequest, TrainingSetTable,
    TrainingSetTicket, WorkspaceKind,
};

use crate::catalog::{Catalog, SpineRecord, WorkspaceState, timestamp};
use crate::cluster::{BallistaJob, Cluster, Locations, PartitionData};
use crate::error::{Error, Result};
use crate::workspaces::find_table;

/// Rows per row group of stored spines.
const SPINE_ROW_GROUP_ROWS: usize = 128 * 1024;

/// A training set whose job was submitted.
struct Running {
    job: BallistaJob,
    /// Filled once the job ends: where its partitions are, or why it failed; and when it
    /// ended (results are kept for the retention from then).
    outcome: watch::Receiver<Option<(std::result::Result<Locations, String>, Instant)>>,
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
    spine_ttl: Duration,
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

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidArgument(message.into())
}

/// `from` plus `after` (the configuration bounds `after`, so this does not saturate).
fn later(from: chrono::DateTime<Utc>, after: Duration) -> chrono::DateTime<Utc> {
    chrono::Duration::from_std(after)
        .ok()
        .and_then(|after| from.checked_add_signed(after))
        .unwrap_or(chrono::DateTime::<Utc>::MAX_UTC)
}

/// (min, max) of a timestamp column in UTC µs, when known, and its null count, when known.
type TimeStats = (Option<(i64, i64)>, Option<u64>);

/// What the footers of a spine's files say.
struct SpineFiles {
    /// File URLs.
    files: Vec<String>,
    schema: SchemaRef,
    rows: u64,
    /// Bytes of the rows uncompressed, as the row groups say.
    bytes: u64,
    /// (min, max) of each timestamp column over all files, in UTC µs, when every row
    /// group has statistics; and its null count.
    time_stats: BTreeMap<String, TimeStats>,
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
            catalog,
            layout,
            objects,
            cluster,
            spine_ttl,
            retention,
            running: Arc::default(),
        }
    }

    /// Store an uploaded spine as Parquet and point its name at it.
    pub async fn store_spine<S>(&self, name: SpineName, mut batches: S) -> Result<SpineInfo>
    where
        S: Stream<Item = Result<RecordBatch>> + Unpin + Send,
    {
        let prefix = self
            .objects
            .spine_prefix(&name, &uuid::Uuid::now_v7().to_string());
        let written = self.write_spine(&prefix, &mut batches).await;
        let rows = match written {
            Ok(rows) => rows,
            Err(e) => {
                let _ = self.objects.delete_prefix(&prefix).await;
                return Err(e);
            }
        };
        let created = Utc::now();
        let expires = later(created, self.spine_ttl);
        let previous = self
            .catalog
            .put_spine(SpineRecord {
                name: name.clone(),
                location: prefix.to_string(),
                rows,
                created_at: timestamp(created),
                expires_at: timestamp(expires),
            })
            .await;
        match previous {
            Ok(Some(old)) => self.delete_location(&old).await,
            Ok(None) => {}
            Err(e) => {
                let _ = self.objects.delete_prefix(&prefix).await;
                return Err(e);
            }
        }
        tracing::info!(spine = %name, rows, "spine stored");
        Ok(SpineInfo {
            name,
            rows,
            expires_at: timestamp(expires),
        })
    }

    async fn write_spine<S>(&self, prefix: &Path, batches: &mut S) -> Result<u64>
    where
        S: Stream<Item = Result<RecordBatch>> + Unpin + Send,
    {
        let mut writer: Option<AsyncArrowWriter<BufWriter>> = None;
        let mut rows = 0u64;
        while let Some(batch) = batches.next().await {
            let batch = batch?;
            if batch.num_rows() == 0 {
                continue;
            }
            let writer = match &mut writer {
                Some(w) => w,
                None => {
                    training_set::check_spine_columns(&batch.schema()).map_err(invalid)?;
                    ftab_engine::validate::check_unique_columns(&batch.schema())
                        .map_err(|e| invalid(format!("the spine: {e}")))?;
                    writer.insert(
                        scratch_parquet_writer(
                            self.objects.store.clone(),
                            prefix.clone().join("part-00000.parquet"),
                            batch.schema(),
                            SPINE_ROW_GROUP_ROWS,
                        )
                        .map_err(|e| Error::Internal(format!("cannot store the spine: {e}")))?,
                    )
                }
            };
            rows += batch.num_rows() as u64;
            writer.write(&batch).await.map_err(|e| {
                invalid(format!(
                    "cannot store the spine (did its schema change between batches?): {e}"
                ))
            })?;
        }
        let Some(writer) = writer else {
            return Err(invalid("the spine has no rows"));
        };
        writer
            .close()
            .await
            .map_err(|e| Error::Internal(format!("cannot finish storing the spine: {e}")))?;
        Ok(rows)
    }

    async fn delete_location(&self, location: &str) {
        match Path::parse(location) {
            Ok(prefix) => {
                if let Err(e) = self.objects.delete_prefix(&prefix).await {
                    tracing::warn!(location, "cannot delete an old spine: {e}");
                }
            }
            Err(e) => tracing::warn!(location, "bad spine location: {e}"),
        }
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
        let spine = self.spine_files(&spine_source).await?;
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
                        other => Error::Internal(other.to_string()),
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
        for (info, path) in table_infos.iter_mut().zip(&plan.paths) {
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
            let _ = sender.send(Some((result.map_err(|e| e.to_string()), Instant::now())));
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
        BallistaJob::fetch(&location).await
    }

    /// One output partition of a training set, once its job is done: the file itself when
    /// this process's executor holds it (DoGet sends it without decoding).
    pub async fn partition_data(&self, ticket: &TrainingSetTicket) -> Result<PartitionData> {
        let (running, location) = self.locate(ticket).await?;
        running.job.open(&location).await
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
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "training set {} is not known here: it expired or the scheduler restarted; request it again with GetFlightInfo",
                    ticket.training_set_id
                ))
            })?;
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
        let locations = done.map_err(Error::JobFailed)?;
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
                let now = Instant::now();
                let ids: Vec<String> = running
                    .iter()
                    .filter(|(_, r)| {
                        r.outcome
                            .borrow()
                            .as_ref()
                            .is_some_and(|(_, ended)| *ended + self.retention <= now)
                    })
                    .map(|(id, _)| id.clone())
                    .collect();
                ids.iter().filter_map(|id| running.remove(id)).collect()
            }
            Err(_) => Vec::new(),
        };
        for running in expired {
            running.job.clean();
        }
        match self.catalog.take_expired_spines().await {
            Ok(locations) => {
                for location in locations {
                    self.delete_location(&location).await;
                }
            }
            Err(e) => tracing::warn!("cannot sweep expired spines: {e}"),
        }
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

    /// The files of a spine and what their footers say.
    async fn spine_files(&self, source: &SpineSource) -> Result<SpineFiles> {
        let (store, paths) = match source {
            SpineSource::Name { name } => {
                let record = self.catalog.spine(name).await?.ok_or_else(|| {
                    Error::NotFound(format!(
                        "spine `{name}` does not exist or has expired; upload it with DoPut {{\"spine\": {{\"name\": \"{name}\"}}}} (ftab training-set uploads a local file for you)"
                    ))
                })?;
                let prefix = Path::parse(&record.location)
                    .map_err(|e| Error::CatalogData(format!("spine `{name}` location: {e}")))?;
                let objects = self
                    .objects
                    .list(&prefix)
                    .await
                    .map_err(|e| Error::Internal(format!("cannot list spine `{name}`: {e}")))?;
                let paths = objects
                    .into_iter()
                    .map(|o| (self.objects.object_url(&o.location), o))
                    .collect();
                (self.objects.store.clone(), paths)
            }
            SpineSource::Uri { uri } => self.uri_files(uri).await?,
        };
        let mut files = Vec::new();
        let mut schema: Option<SchemaRef> = None;
        let mut rows = 0u64;
        let mut bytes = 0u64;
        let mut per_file: BTreeMap<String, Vec<TimeStats>> = BTreeMap::new();
        // Footers go through the runtime's cache, where planning the scan finds them again.
        let footers = self
            .cluster
            .planner()
            .ctx()
            .runtime_env()
            .cache_manager
            .get_file_metadata_cache();
        for (url, object) in paths {
            let unreadable =
                |e: &dyn std::fmt::Display| invalid(format!("cannot read spine file {url}: {e}"));
            let metadata = DFParquetMetadata::new(store.as_ref(), &object)
                .with_file_metadata_cache(Some(footers.clone()))
                .fetch_metadata()
                .await
                .map_err(|e| unreadable(&e))?;
            let file_schema = Arc::new(
                parquet_to_arrow_schema(
                    metadata.file_metadata().schema_descr(),
                    metadata.file_metadata().key_value_metadata(),
                )
                .map_err(|e| unreadable(&e))?,
            );
            match &schema {
                None => {
                    ftab_engine::validate::check_unique_columns(&file_schema)
                        .map_err(|e| invalid(format!("spine file {url}: {e}")))?;
                    schema = Some(file_schema.clone())
                }
                Some(first) if first.fields() != file_schema.fields() => {
                    return Err(invalid(format!(
                        "spine file {url} has another schema than the first file; all files of a spine need one schema"
                    )));
                }
                Some(_) => {}
            }
            rows += metadata.file_metadata().num_rows().max(0) as u64;
            bytes += metadata
                .row_groups()
                .iter()
                .map(|g| g.total_byte_size().max(0) as u64)
                .sum::<u64>();
            for field in file_schema.fields() {
                if matches!(field.data_type(), DataType::Timestamp(_, _)) {
                    per_file
                        .entry(field.name().clone())
                        .or_default()
                        .push(time_statistics(field, &file_schema, &metadata));
                }
            }
            files.push(url.to_string());
        }
        // A column's range and null count are known when every file knows them.
        let stats = per_file
            .into_iter()
            .map(|(column, files)| {
                let range = files
                    .iter()
                    .try_fold(None::<(i64, i64)>, |acc, (range, _)| {
                        let (low, high) = (*range)?;
                        Some(Some(match acc {
                            Some((l, h)) => (l.min(low), h.max(high)),
                            None => (low, high),
                        }))
                    });
                let nulls = files.iter().map(|(_, n)| *n).sum::<Option<u64>>();
                (column, (range.flatten(), nulls))
            })
            .collect();
        let schema = schema.ok_or_else(|| invalid("the spine has no Parquet files"))?;
        Ok(SpineFiles {
            files,
            schema,
            rows,
            bytes,
            time_stats: stats,
        })
    }

    /// The Parquet files at a URI: the object itself, or the `*.parquet` objects under it.
    async fn uri_files(&self, uri: &str) -> Result<(Arc<dyn ObjectStore>, Vec<(Url, ObjectMeta)>)> {
        let url = match Url::parse(uri) {
            Ok(url) if url.scheme().len() > 1 => url,
            _ if std::path::Path::new(uri).is_absolute() => Url::from_file_path(uri)
                .map_err(|()| invalid(format!("spine URI `{uri}` is not a usable path")))?,
            _ => {
                return Err(invalid(format!(
                    "spine URI `{uri}` is neither a URL (file://, s3://, gs://, az://) nor an absolute path"
                )));
            }
        };
        let mut base = url.clone();
        base.set_path("/");
        base.set_query(None);
        let store: Arc<dyn ObjectStore> = if base == *self.objects.base_url() {
            self.objects.store.clone()
        } else {
            let (store, _) =
                object_store::parse_url_opts(&url, ftab_engine::storage::env_options())
                    .map_err(|e| invalid(format!("cannot open spine URI `{uri}`: {e}")))?;
            let store: Arc<dyn ObjectStore> = Arc::from(store);
            // Executors read the spine through the same runtime.
            self.cluster
                .planner()
                .ctx()
                .runtime_env()
                .register_object_store(&base, store.clone());
            store
        };
        let path = Path::from_url_path(url.path())
            .map_err(|e| invalid(format!("spine URI `{uri}`: {e}")))?;
        let mut paths = Vec::new();
        if url.path().ends_with(".parquet") {
            let meta = store.head(&path).await.map_err(|e| match e {
                object_store::Error::NotFound { .. } => {
                    Error::NotFound(format!("there is no spine file at `{uri}`"))
                }
                other => invalid(format!("cannot read spine `{uri}`: {other}")),
            })?;
            paths.push((url.clone(), meta));
        } else {
            let mut listed: Vec<_> =
                futures::TryStreamExt::try_collect::<Vec<_>>(store.list(Some(&path)))
                    .await
                    .map_err(|e| invalid(format!("cannot list spine `{uri}`: {e}")))?;
            listed.retain(|o| o.location.as_ref().ends_with(".parquet"));
            listed.sort_by(|a, b| a.location.cmp(&b.location));
            for object in listed {
                let file_url = base
                    .join(object.location.as_ref())
                    .map_err(|e| invalid(format!("spine file {}: {e}", object.location)))?;
                paths.push((file_url, object));
            }
        }
        if paths.is_empty() {
            return Err(Error::NotFound(format!(
                "there are no Parquet files at spine URI `{uri}`"
            )));
        }
        Ok((store, paths))
    }
}

/// (min, max) in UTC µs of a timestamp column over a file's row groups, if every row group
/// has both; and its null count, if every row group has it.
fn time_statistics(
    field: &Field,
    schema: &Schema,
    metadata: &datafusion::parquet::file::metadata::ParquetMetaData,
) -> TimeStats {
    let Ok(converter) = StatisticsConverter::try_new(
        field.name(),
        schema,
        metadata.file_metadata().schema_descr(),
    ) else {
        return (None, None);
    };
    let groups = metadata.row_groups();
    let micros = |array: datafusion::arrow::array::ArrayRef| -> Option<Vec<i64>> {
        let as_micros = cast(&array, &DataType::Timestamp(TimeUnit::Microsecond, None)).ok()?;
        let as_int = cast(&as_micros, &DataType::Int64).ok()?;
        let values = as_int.as_primitive::<Int64Type>();
        (values.null_count() == 0).then(|| values.values().to_vec())
    };
    let range = match (
        converter.row_group_mins(groups).ok().and_then(micros),
        converter.row_group_maxes(groups).ok().and_then(micros),
    ) {
        (Some(mins), Some(maxes)) if !mins.is_empty() => Some((
            mins.into_iter().min().unwrap_or(i64::MIN),
            maxes.into_iter().max().unwrap_or(i64::MAX),
        )),
        _ => None,
    };
    let nulls = converter
        .row_group_null_counts(groups)
        .ok()
        .filter(|n| n.null_count() == 0)
        .map(|n| n.values().iter().sum());
    (range, nulls)
}

/// The spine's time column: the one named, or its only timestamp column.
fn time_column(schema: &Schema, named: Option<&str>) -> Result<String> {
    if let Some(name) = named {
        let field = schema.field_with_name(name).map_err(|_| {
            invalid(format!(
                "the spine has no column `{name}` (timestamp_column); its columns are: {}",
                column_list(schema)
            ))
        })?;
        if !matches!(field.data_type(), DataType::Timestamp(_, _)) {
            return Err(invalid(format!(
                "the spine's time column `{name}` has type {}; it must be a timestamp",
                field.data_type()
            )));
        }
        return Ok(name.to_string());
    }
    let timestamps: Vec<&str> = schema
        .fields()
        .iter()
        .filter(|f| matches!(f.data_type(), DataType::Timestamp(_, _)))
        .map(|f| f.name().as_str())
        .collect();
    match timestamps.as_slice() {
        [only] => Ok(only.to_string()),
        [] => Err(invalid(format!(
            "the spine has no timestamp column; add one (its columns are: {})",
            column_list(schema)
        ))),
        many => Err(invalid(format!(
            "the spine has several timestamp columns ({}); name the time column with timestamp_column",
            many.iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn column_list(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The tables of a request with their selected features, in the order first named.
fn select_features<'a>(
    state: &'a WorkspaceState,
    request: &TrainingSetRequest,
) -> Result<Vec<(&'a FeatureTable, Vec<String>)>> {
    let refs: Vec<FeatureRef> = match (&request.feature_service, &request.features) {
        (Some(service), None) => state
            .definitions
            .feature_service(service.as_str())
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "feature service `{service}` does not exist in workspace `{}`",
                    state.name
                ))
            })?
            .features
            .clone(),
        (None, Some(features)) if !features.is_empty() => features.clone(),
        (None, Some(_)) => return Err(invalid("features is empty; name at least one")),
        (Some(_), Some(_)) => {
            return Err(invalid("give either feature_service or features, not both"));
        }
        (None, None) => {
            return Err(invalid(
                "the request names no features; give feature_service or features",
            ));
        }
    };
    let mut selection: Vec<(&FeatureTable, Vec<String>)> = Vec::new();
    for r in refs {
        let table = find_table(state, &r.table)?;
        if !table.offline {
            return Err(Error::FailedPrecondition(format!(
                "feature table `{}` is not offline (offline = false), so it has no history to build training sets from",
                table.name
            )));
        }
        let features = table.features(&state.definitions);
        let chosen: Vec<String> = match &r.feature {
            None => features.iter().map(|c| c.name.to_string()).collect(),
            Some(feature) => {
                if !features.iter().any(|c| &c.name == feature) {
                    return Err(Error::NotFound(format!(
                        "feature table `{}` has no feature `{feature}`; its features are: {}",
                        table.name,
                        features
                            .iter()
                            .map(|c| c.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                vec![feature.to_string()]
            }
        };
        match selection.iter_mut().find(|(t, _)| t.name == table.name) {
            Some((_, existing)) => {
                for f in chosen {
                    if !existing.contains(&f) {
                        existing.push(f);
                    }
                }
            }
            None => selection.push((table, chosen)),
        }
    }
    Ok(selection)
}

/// Every join key the tables need must be a spine column of a compatible type.
fn check_spine_keys(
    spine: &Schema,
    state: &WorkspaceState,
    selection: &[(&FeatureTable, Vec<String>)],
) -> Result<()> {
    let mut missing: Vec<String> = Vec::new();
    for (table, _) in selection {
        for key in table.join_keys(&state.definitions) {
            let Some(column) = table.column(key.as_str()) else {
                continue;
            };
            match spine.field_with_name(key.as_str()) {
                Err(_) => missing.push(format!("`{key}` (for feature table `{}`)", table.name)),
                Ok(field) if !compatible(field.data_type(), &column.value_type) => {
                    return Err(invalid(format!(
                        "spine column `{key}` has type {}, but join key `{key}` of feature table `{}` is {}",
                        field.data_type(),
                        table.name,
                        column.value_type
                    )));
                }
                Ok(_) => {}
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    missing.dedup();
    Err(invalid(format!(
        "the spine lacks join key column{} {}; its columns are: {}",
        if missing.len() == 1 { "" } else { "s" },
        missing.join(", "),
        column_list(spine)
    )))
}

/// Output column names per table: `<table>__<feature>`, or bare feature names on request;
/// any name used twice, or already a spine column, is an error.
fn output_names(
    spine: &Schema,
    selection: &[(&FeatureTable, Vec<String>)],
    full: bool,
) -> Result<Vec<Vec<String>>> {
    let mut seen: BTreeMap<String, String> = spine
        .fields()
        .iter()
        .map(|f| (f.name().clone(), "the spine".to_string()))
        .collect();
    let mut out = Vec::new();
    let mut collisions = Vec::new();
    for (table, features) in selection {
        let mut names = Vec::new();
        for feature in features {
            let name = if full {
                format!("{}__{feature}", table.name)
            } else {
                feature.clone()
            };
            let owner = format!("feature table `{}`", table.name);
            if let Some(first) = seen.insert(name.clone(), owner.clone()) {
                collisions.push(format!("`{name}` ({first} and {owner})"));
            }
            names.push(name);
        }
        out.push(names);
    }
    if !collisions.is_empty() {
        return Err(invalid(format!(
            "output column names collide: {}; {}",
            collisions.join(", "),
            if full {
                "rename the spine columns"
            } else {
                "use full feature names (full_feature_names: true gives <table>__<feature>)"
            }
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(fields: &[(&str, DataType)]) -> Schema {
        Schema::new(
            fields
                .iter()
                .map(|(n, t)| Field::new(*n, t.clone(), true))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn the_time_column_is_named_or_the_only_timestamp() {
        let ts = DataType::Timestamp(TimeUnit::Nanosecond, None);
        let one = schema(&[("user_id", DataType::Utf8), ("at", ts.clone())]);
        assert_eq!(time_column(&one, None).unwrap(), "at");
        let two = schema(&[("a", ts.clone()), ("b", ts.clone())]);
        let err = time_column(&two, None).unwrap_err().to_string();
        assert!(
            err.contains("several timestamp columns (`a`, `b`)"),
            "{err}"
        );
        assert_eq!(time_column(&two, Some("b")).unwrap(), "b");
        let none = schema(&[("user_id", DataType::Utf8)]);
        let err = time_column(&none, None).unwrap_err().to_string();
        assert!(err.contains("no timestamp column"), "{err}");
        let err = time_column(&one, Some("user_id")).unwrap_err().to_string();
        assert!(
            err.contains("has type Utf8; it must be a timestamp"),
            "{err}"
        );
        let err = time_column(&one, Some("nope")).unwrap_err().to_string();
        assert!(
            err.contains("no column `nope`") && err.contains("user_id, at"),
            "{err}"
        );
    }
}
