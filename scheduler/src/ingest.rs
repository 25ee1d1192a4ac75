//! Ingest: a DoPut stream validated as it arrives, staged as Parquet in the object store,
//! then recorded with its job. Only a recorded ingest is answered; a refused one leaves
//! nothing behind.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::parquet::arrow::AsyncArrowWriter;
use ftab_engine::plan::ingest::with_row_numbers;
use ftab_engine::storage::scratch_parquet_writer;
use futures::{Stream, StreamExt};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use tokio::sync::Notify;

use ftab_engine::content_hash::ContentHash;
use ftab_engine::online::OnlineStore;
use ftab_engine::storage::ObjectStorage;
use ftab_engine::validate::IngestValidator;
use ftab_model::ids::{IngestId, JobId};
use ftab_model::protocol::{
    IngestCommand, IngestResult, MAX_IDEMPOTENCY_KEY_LEN, StepState, WorkspaceKind,
};

use crate::catalog::{Catalog, KeyedIngest, NewIngest, Recorded};
use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::workspaces::find_table;

/// Rows per Parquet row group in staged files: bounds the memory an upload holds.
const STAGING_ROW_GROUP_ROWS: usize = 256 * 1024;

/// The steps of an ingest job, in order.
pub const STEP_OFFLINE_COMMIT: &str = "offline_commit";
pub const STEP_ONLINE_LOAD: &str = "online_load";

/// Takes ingests in.
#[derive(Clone)]
pub struct Ingests {
    pub(crate) catalog: Catalog,
    pub(crate) storage: ObjectStorage,
    /// Stages ingests by URI on the executors.
    pub(crate) cluster: Cluster,
    jobs_waiting: Arc<Notify>,
    /// Why online tables cannot be ingested here, when this scheduler has no online store.
    online_unavailable: Option<String>,
}

impl Ingests {
    pub fn new(
        catalog: Catalog,
        storage: ObjectStorage,
        cluster: Cluster,
        jobs_waiting: Arc<Notify>,
        online: &dyn OnlineStore,
    ) -> Self {
        Self {
            catalog,
            storage,
            cluster,
            jobs_waiting,
            online_unavailable: online.unavailable().map(str::to_string),
        }
    }

    /// Validate, stage and record one ingest from a stream of record batches.
    pub async fn ingest<S>(&self, command: IngestCommand, mut batches: S) -> Result<IngestResult>
    where
        S: Stream<Item = Result<RecordBatch>> + Unpin + Send,
    {
        if command.uri.is_some() {
            return Err(Error::InvalidArgument(
                "an ingest with `uri` reads its files in place and carries no data: send it as the DoAction `ingest`, not as a DoPut".into(),
            ));
        }
        let target = self.target(&command).await?;
        let (state, table) = (&target.state, &target.table);

        if let Some(key) = &command.idempotency_key
            && let Some(existing) = self
                .catalog
                .ingest_by_key(&state.name, &table.name, key)
                .await?
        {
            // Read and hash the upload to its end, store nothing: a retry of the same rows
            // is answered with the first ingest, different rows are refused.
            let read = self
                .read_upload(table, &state.definitions, &command, &mut batches, None)
                .await?;
            same_content(key, &table.name, &existing, &read)?;
            tracing::info!(workspace = %state.name, table = %table.name, ingest_id = %existing.result.ingest_id, "idempotent replay");
            return Ok(existing.result);
        }

        let ingest_id = IngestId::generate();
        let prefix = self
            .storage
            .staging_prefix(&state.name, &table.name, &ingest_id);
        let staged = self
            .read_upload(
                table,
                &state.definitions,
                &command,
                &mut batches,
                Some(&prefix),
            )
            .await;
        let read = match staged {
            Ok(read) => read,
            Err(error) => {
                self.discard(&prefix).await;
                return Err(error);
            }
        };
        self.record(&target, &command, ingest_id, &prefix, read)
            .await
    }

    /// The feature table an ingest goes to, after the checks every ingest passes: the key's
    /// length, a live workspace, a table that exists, an online store if it is online.
    pub(crate) async fn target(&self, command: &IngestCommand) -> Result<Target> {
        if let Some(key) = &command.idempotency_key
            && (key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN)
        {
            return Err(Error::InvalidArgument(format!(
                "idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} bytes long"
            )));
        }
        let state = self.catalog.workspace(&command.workspace).await?;
        if state.kind != WorkspaceKind::Live {
            return Err(Error::FailedPrecondition(format!(
                "workspace `{}` is a dev workspace, which holds definitions only; ingest into a live workspace (`ftab workspace create NAME --live`)",
                state.name
            )));
        }
        let table = find_table(&state, &command.table)?.clone();
        if table.online
            && let Some(reason) = &self.online_unavailable
        {
            return Err(Error::FailedPrecondition(format!(
                "feature table `{}` is online (online = true), and {reason}; nothing was ingested",
                table.name
            )));
        }
        let generation = self
            .catalog
            .storage_generation(&state.name, &table.name)
            .await?;
        Ok(Target {
            state,
            table,
            generation,
        })
    }

    /// Record a staged ingest and queue its job. The staged data is removed if it cannot
    /// be recorded, or if the same key was recorded meanwhile (then that ingest answers).
    pub(crate) async fn record(
        &self,
        target: &Target,
        command: &IngestCommand,
        ingest_id: IngestId,
        prefix: &Path,
        read: ReadUpload,
    ) -> Result<IngestResult> {
        let (state, table) = (&target.state, &target.table);
        let job_id = JobId::generate();
        let mut steps = BTreeMap::new();
        steps.insert(
            STEP_OFFLINE_COMMIT.to_string(),
            if table.offline {
                StepState::Pending
            } else {
                StepState::Skipped
            },
        );
        steps.insert(
            STEP_ONLINE_LOAD.to_string(),
            if table.online {
                StepState::Pending
            } else {
                StepState::Skipped
            },
        );
        let recorded = self
            .catalog
            .record_ingest(NewIngest {
                ingest_id,
                job_id,
                workspace: state.name.clone(),
                table: table.name.clone(),
                generation: target.generation,
                idempotency_key: command.idempotency_key.clone(),
                content_hash: read.content_hash.clone(),
                rows: read.rows,
                staged_prefix: prefix.to_string(),
                steps,
            })
            .await;
        match recorded {
            Ok(Recorded::New(result)) => {
                tracing::info!(workspace = %state.name, table = %table.name, %ingest_id, %job_id, rows = read.rows, seq = result.seq, "ingest staged and recorded");
                self.jobs_waiting.notify_one();
                Ok(result)
            }
            Ok(Recorded::Replayed(existing)) => {
                // The same key was recorded while this ingest was staged.
                self.discard(prefix).await;
                let key = command.idempotency_key.as_deref().unwrap_or_default();
                same_content(key, &table.name, &existing, &read)?;
                Ok(existing.result)
            }
            Err(error) => {
                self.discard(prefix).await;
                Err(error)
            }
        }
    }

    /// Validate every batch; with `stage_under`, write the accepted ones to one Parquet
    /// file under that prefix. With an idempotency key, hash the validated rows.
    async fn read_upload<S>(
        &self,
        table: &ftab_model::definitions::FeatureTable,
        definitions: &ftab_model::Definitions,
        command: &IngestCommand,
        batches: &mut S,
        stage_under: Option<&Path>,
    ) -> Result<ReadUpload>
    where
        S: Stream<Item = Result<RecordBatch>> + Unpin + Send,
    {
        let mut validator: Option<IngestValidator> = None;
        let mut hash: Option<ContentHash> = None;
        let mut writer = None;
        while let Some(batch) = batches.next().await {
            let batch = batch?;
            let validator = match &mut validator {
                Some(v) => v,
                None => {
                    let v = IngestValidator::new(
                        table,
                        definitions,
                        batch.schema(),
                        command.drop_extra_columns,
                    )
                    .map_err(invalid)?;
                    if command.idempotency_key.is_some() {
                        let columns: Vec<_> = table
                            .schema
                            .iter()
                            .map(|c| (c.name.to_string(), c.value_type.clone()))
                            .collect();
                        hash = Some(ContentHash::new(&columns));
                    }
                    validator.insert(v)
                }
            };
            let first_row = validator.rows();
            let Some(converted) = validator.convert(&batch).map_err(invalid)? else {
                continue;
            };
            if converted.num_rows() == 0 {
                continue;
            }
            if let Some(hash) = &mut hash {
                hash.update(&converted)
                    .map_err(|e| Error::Internal(format!("cannot hash the ingest: {e}")))?;
            }
            let Some(prefix) = stage_under else {
                continue;
            };
            let converted = with_row_numbers(converted, first_row)
                .map_err(|e| Error::Internal(format!("cannot number the ingest's rows: {e}")))?;
            let writer = match &mut writer {
                Some(w) => w,
                None => writer.insert(self.parquet_writer(prefix, converted.schema())?),
            };
            writer
                .write(&converted)
                .await
                .map_err(|e| Error::Internal(format!("cannot stage the ingest: {e}")))?;
        }
        let rows = match &validator {
            Some(v) => v.finish().map_err(invalid)?,
            None => return Err(invalid(ftab_engine::validate::ValidationError::Empty)),
        };
        if let Some(writer) = writer {
            writer
                .close()
                .await
                .map_err(|e| Error::Internal(format!("cannot finish staging the ingest: {e}")))?;
        }
        Ok(ReadUpload {
            rows,
            content_hash: hash.map(ContentHash::finish),
        })
    }

    fn parquet_writer(
        &self,
        prefix: &Path,
        schema: datafusion::arrow::datatypes::SchemaRef,
    ) -> Result<AsyncArrowWriter<BufWriter>> {
        scratch_parquet_writer(
            self.storage.store.clone(),
            prefix.clone().join("part-00000.parquet"),
            schema,
            STAGING_ROW_GROUP_ROWS,
        )
        .map_err(|e| Error::Internal(format!("cannot open a staging file: {e}")))
    }

    /// Remove whatever a refused or failed ingest staged.
    pub(crate) async fn discard(&self, prefix: &Path) {
        if let Err(e) = self.storage.delete_prefix(prefix).await {
            tracing::warn!(%prefix, "cannot remove refused ingest's staged data: {e}");
        }
    }
}

/// What reading an upload (or staging the files of a URI) found.
pub(crate) struct ReadUpload {
    pub rows: u64,
    /// With an idempotency key, the hash of the validated rows (of an ingest by URI: of the
    /// files' names, sizes and versions).
    pub content_hash: Option<String>,
}

/// The feature table an ingest goes to.
pub(crate) struct Target {
    pub state: crate::catalog::WorkspaceState,
    pub table: ftab_model::definitions::FeatureTable,
    pub generation: u64,
}

/// Refuses an upload sent under an idempotency key already used for other rows. Ingests
/// recorded before content hashes were kept replay without a check.
pub(crate) fn same_content(
    key: &str,
    table: &ftab_model::names::TableName,
    existing: &KeyedIngest,
    read: &ReadUpload,
) -> Result<()> {
    let differs = existing.result.rows != read.rows
        || matches!((&existing.content_hash, &read.content_hash), (Some(a), Some(b)) if a != b);
    if differs {
        let shown = ftab_model::names::echoed(key);
        return Err(Error::FailedPrecondition(format!(
            "idempotency key `{shown}` was already used for ingest {} of feature table `{table}` ({} rows) with different data ({} rows sent now); a retry must send the same rows, so send new data under a new key",
            existing.result.ingest_id, existing.result.rows, read.rows,
        )));
    }
    Ok(())
}

fn invalid(error: ftab_engine::validate::ValidationError) -> Error {
    Error::InvalidArgument(error.to_string())
}
