//! Ingest: a DoPut stream validated as it arrives, staged as Parquet in the object store,
//! then recorded with its job. Only a recorded ingest is answered; a refused one leaves
//! nothing behind.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::AsyncArrowWriter;
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
    catalog: Catalog,
    storage: ObjectStorage,
    jobs_waiting: Arc<Notify>,
    /// Why online tables cannot be ingested here, when this scheduler has no online store.
    online_unavailable: Option<String>,
}

impl Ingests {
    pub fn new(
        catalog: Catalog,
        storage: ObjectStorage,
        jobs_waiting: Arc<Notify>,
        online: &dyn OnlineStore,
    ) -> Self {
        Self {
            catalog,
            storage,
            jobs_waiting,
            online_unavailable: online.unavailable().map(str::to_string),
        }
    }

    /// Validate, stage and record one ingest from a stream of record batches.
    pub async fn ingest<S>(&self, command: IngestCommand, mut batches: S) -> Result<IngestResult>
    where
        S: Stream<Item = Result<RecordBatch>> + Unpin + Send,
    {
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

        if let Some(key) = &command.idempotency_key
            && let Some(existing) = self
                .catalog
                .ingest_by_key(&state.name, &table.name, key)
                .await?
        {
            // Read and hash the upload to its end, store nothing: a retry of the same rows
            // is answered with the first ingest, different rows are refused.
            let read = self
                .read_upload(&table, &state.definitions, &command, &mut batches, None)
                .await?;
            same_content(key, &table.name, &existing, &read)?;
            tracing::info!(workspace = %state.name, table = %table.name, ingest_id = %existing.result.ingest_id, "idempotent replay");
            return Ok(existing.result);
        }

        let ingest_id = IngestId::generate();
        let job_id = JobId::generate();
        let prefix = self
            .storage
            .staging_prefix(&state.name, &table.name, &ingest_id);
        let staged = self
            .read_upload(
                &table,
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
                generation,
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
                // The same key was recorded while this upload was staged.
                self.discard(&prefix).await;
                let key = command.idempotency_key.as_deref().unwrap_or_default();
                same_content(key, &table.name, &existing, &read)?;
                Ok(existing.result)
            }
            Err(error) => {
                self.discard(&prefix).await;
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
            let converted = with_row_numbers(converted, first_row)?;
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
    async fn discard(&self, prefix: &Path) {
        if let Err(e) = self.storage.delete_prefix(prefix).await {
            tracing::warn!(%prefix, "cannot remove refused ingest's staged data: {e}");
        }
    }
}

/// What reading an upload found.
struct ReadUpload {
    rows: u64,
    /// With an idempotency key, the hash of the validated rows.
    content_hash: Option<String>,
}

/// Refuses an upload sent under an idempotency key already used for other rows. Ingests
/// recorded before content hashes were kept replay without a check.
fn same_content(
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

/// Add `_row`, each row's position in the ingest: the last tie-breaker of the write order.
fn with_row_numbers(batch: RecordBatch, first_row: u64) -> Result<RecordBatch> {
    let rows =
        Int64Array::from_iter_values((0..batch.num_rows() as i64).map(|i| first_row as i64 + i));
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("_row", DataType::Int64, false));
    let mut columns = batch.columns().to_vec();
    columns.push(Arc::new(rows));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| Error::Internal(format!("cannot number the ingest's rows: {e}")))
}

fn invalid(error: ftab_engine::validate::ValidationError) -> Error {
    Error::InvalidArgument(error.to_string())
}
