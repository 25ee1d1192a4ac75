//! Ingests by URI: the DoAction `ingest` with `uri` (`ftab ingest --uri`).
//!
//! The files stay where they are. The scheduler lists them and reads what it needs to plan
//! (Parquet footers, a CSV header, a sample of JSON lines); a staging job on the executors
//! then reads each file in place, validates it exactly as an upload is validated, and
//! writes it where an upload is staged ([`ftab_engine::plan::ingest::StageExec`]: one task
//! per file). From there the ingest is like any other: the same record in the catalog,
//! the same job and steps. No row passes through the scheduler, so the ingest's size is
//! bounded by the executors and the object store, not by this process.
//!
//! - Files are taken in name order; one file is one task. A later file wins ties of
//!   (join keys, timestamp) within the ingest, as a later row of an upload does.
//! - CSV files need a header; columns are parsed as the table's types (by name, as
//!   `ftab ingest` parses a local CSV), extra columns as text. JSON files hold one object
//!   per line. Parquet files keep their own types, converted as an upload's are.
//! - The idempotency key of an ingest by URI stands for the files as they were listed:
//!   their URLs, sizes and versions (e-tag, else modification time). The same key with the
//!   same files answers the first ingest; with other files it is refused.
//! - A file that fails validation refuses the whole ingest, naming the file; nothing stays
//!   staged.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::config::CsvOptions;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{
    CsvSource, FileGroup, FileScanConfigBuilder, FileSource, JsonSource, ParquetSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, ParquetReadOptions};
use ftab_engine::plan::ingest::{StageExec, StageSpec, staged_rows};
use ftab_model::ids::IngestId;
use ftab_model::protocol::{FileFormat, IngestCommand, IngestResult};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::files_at::{FilesAt, Wanted, files_at};
use crate::ingest::{Ingests, ReadUpload, Target};

impl Ingests {
    /// Ingest the files at `command.uri`: list, stage on the executors, record.
    pub async fn ingest_uri(&self, command: IngestCommand) -> Result<IngestResult> {
        let uri = command.uri.clone().ok_or_else(|| {
            Error::InvalidArgument(
                "the `ingest` action ingests files in place and needs `uri` (e.g. \"s3://bucket/path/\"); to send data, use a DoPut".into(),
            )
        })?;
        let target = self.target(&command).await?;
        let (format, found) = self.list(&uri, command.format).await?;
        let fingerprint = fingerprint(&uri, format, &found);

        if let Some(key) = &command.idempotency_key
            && let Some(existing) = self
                .catalog
                .ingest_by_key(&target.state.name, &target.table.name, key)
                .await?
        {
            // The rows of the first ingest stand for these files when they are the same.
            let read = ReadUpload {
                rows: existing.result.rows,
                content_hash: Some(fingerprint),
            };
            same_files(key, &target, &existing, &read)?;
            tracing::info!(ingest_id = %existing.result.ingest_id, "idempotent replay of an ingest by URI");
            return Ok(existing.result);
        }

        let ingest_id = IngestId::generate();
        let prefix =
            self.storage
                .staging_prefix(&target.state.name, &target.table.name, &ingest_id);
        let staged = self.stage(&target, &command, format, &found, &prefix).await;
        let rows = match staged {
            Ok(rows) => rows,
            Err(error) => {
                self.discard(&prefix).await;
                return Err(error);
            }
        };
        let read = ReadUpload {
            rows,
            content_hash: Some(fingerprint),
        };
        self.record(&target, &command, ingest_id, &prefix, read)
            .await
    }

    /// The files at `uri` and their format: as given, or from their names (all one).
    async fn list(&self, uri: &str, format: Option<FileFormat>) -> Result<(FileFormat, FilesAt)> {
        let runtime = self.cluster.planner().ctx().runtime_env();
        let accept = |name: &str| match format {
            Some(f) => f.extensions().iter().any(|e| name.ends_with(e)),
            None => FileFormat::of_file(name).is_some(),
        };
        let kinds = match format {
            Some(FileFormat::Parquet) => "Parquet files (*.parquet)",
            Some(FileFormat::Csv) => "CSV files (*.csv)",
            Some(FileFormat::Json) => "JSON files (*.json, *.jsonl, *.ndjson)",
            None => "Parquet, CSV or JSON files (*.parquet, *.csv, *.json, *.jsonl, *.ndjson)",
        };
        let found = files_at(
            &runtime,
            uri,
            &Wanted {
                what: "ingest",
                kinds,
                accept: &accept,
            },
        )
        .await?;
        let format = match format {
            Some(format) => format,
            None => {
                let mut formats: Vec<FileFormat> = found
                    .files
                    .iter()
                    .filter_map(|(url, _)| FileFormat::of_file(url.path()))
                    .collect();
                formats.dedup();
                formats.sort_by_key(|f| format!("{f:?}"));
                formats.dedup();
                match formats.as_slice() {
                    [one] => *one,
                    _ => {
                        return Err(Error::InvalidArgument(format!(
                            "the files at `{uri}` are of several formats ({}); an ingest reads one: give `format` (--format parquet|csv|json) or point at files of one format",
                            formats
                                .iter()
                                .map(|f| format!("{f:?}").to_lowercase())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )));
                    }
                }
            }
        };
        Ok((format, found))
    }

    /// Run the staging job; the rows staged.
    async fn stage(
        &self,
        target: &Target,
        command: &IngestCommand,
        format: FileFormat,
        found: &FilesAt,
        prefix: &object_store::path::Path,
    ) -> Result<u64> {
        let urls: Vec<String> = found.files.iter().map(|(u, _)| u.to_string()).collect();
        let schema = self.read_schema(target, format, &urls).await?;
        let source: Arc<dyn FileSource> = match format {
            FileFormat::Parquet => Arc::new(ParquetSource::new(schema.clone())),
            FileFormat::Csv => {
                Arc::new(CsvSource::new(schema.clone()).with_csv_options(CsvOptions {
                    has_header: Some(true),
                    ..CsvOptions::default()
                }))
            }
            FileFormat::Json => Arc::new(JsonSource::new(schema.clone())),
        };
        let store_url = ObjectStoreUrl::parse(found.base.as_str())
            .map_err(|e| Error::Internal(format!("the files' store URL: {e}")))?;
        // One file per partition: a task is a file, and the file's index numbers its rows.
        let groups = found
            .files
            .iter()
            .map(|(_, meta)| FileGroup::new(vec![PartitionedFile::from(meta.clone())]))
            .collect();
        let scan = DataSourceExec::from_data_source(
            FileScanConfigBuilder::new(store_url, source)
                .with_file_groups(groups)
                .build(),
        );
        let spec = StageSpec {
            table: target.table.clone(),
            definitions: target.state.definitions.clone(),
            drop_extra_columns: command.drop_extra_columns,
            files: urls.clone(),
            staging_directory: self.storage.directory_url(prefix).to_string(),
        };
        let plan = StageExec::try_new(scan, spec)
            .map_err(|e| Error::Internal(format!("cannot plan the staging job: {e}")))?;
        let name = format!(
            "ftab stage {}.{} ({} files)",
            target.state.name,
            target.table.name,
            urls.len()
        );
        let job = self.cluster.submit(&name, Arc::new(plan)).await?;
        let batches = job.collect(|_| {}).await?;
        let rows = staged_rows(&batches, &urls).map_err(|message| {
            Error::InvalidArgument(format!("{message}; nothing was ingested"))
        })?;
        if rows == 0 {
            return Err(Error::InvalidArgument(format!(
                "the files at `{}` hold no rows; nothing was ingested",
                command.uri.as_deref().unwrap_or_default()
            )));
        }
        Ok(rows)
    }

    /// The schema files are read with. Parquet: the files' own. CSV and JSON: the columns
    /// of the files, typed as the table's columns of the same name (others as text).
    async fn read_schema(
        &self,
        target: &Target,
        format: FileFormat,
        urls: &[String],
    ) -> Result<SchemaRef> {
        let ctx = self.cluster.planner().ctx();
        let unreadable = |e: datafusion::error::DataFusionError| {
            let message = e.to_string();
            Error::InvalidArgument(format!(
                "cannot read the files' schema: {}",
                message.lines().next().unwrap_or_default()
            ))
        };
        let frame = match format {
            FileFormat::Parquet => ctx
                .read_parquet(
                    urls.to_vec(),
                    ParquetReadOptions::default().file_extension(""),
                )
                .await
                .map_err(unreadable)?,
            FileFormat::Csv => ctx
                .read_csv(
                    urls.to_vec(),
                    CsvReadOptions::new().has_header(true).file_extension(""),
                )
                .await
                .map_err(unreadable)?,
            FileFormat::Json => ctx
                .read_json(urls.to_vec(), JsonReadOptions::default().file_extension(""))
                .await
                .map_err(unreadable)?,
        };
        let found: Schema = frame.schema().as_arrow().clone();
        if format == FileFormat::Parquet {
            return Ok(Arc::new(found));
        }
        let table = target.table.arrow_schema(&target.state.definitions);
        let fields: Vec<Field> = found
            .fields()
            .iter()
            .map(|f| match table.field_with_name(f.name()) {
                Ok(t) => Field::new(f.name(), t.data_type().clone(), true),
                Err(_) => Field::new(f.name(), DataType::Utf8, true),
            })
            .collect();
        Ok(Arc::new(Schema::new(fields)))
    }
}

/// What the idempotency key of an ingest by URI stands for: the URI, the format, and each
/// file's URL, size and version.
fn fingerprint(uri: &str, format: FileFormat, found: &FilesAt) -> String {
    let mut hash = Sha256::new();
    hash.update(format!("uri\0{uri}\0{format:?}\0").as_bytes());
    for (url, meta) in &found.files {
        let version = meta
            .e_tag
            .clone()
            .unwrap_or_else(|| meta.last_modified.to_rfc3339());
        hash.update(format!("{url}\0{}\0{version}\0", meta.size).as_bytes());
    }
    let digest = hash.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("uri:{hex}")
}

/// Refuses an ingest by URI whose key was used for other files (or for an upload).
fn same_files(
    key: &str,
    target: &Target,
    existing: &crate::catalog::KeyedIngest,
    read: &ReadUpload,
) -> Result<()> {
    if existing.content_hash.as_deref() == read.content_hash.as_deref() {
        return Ok(());
    }
    if existing
        .content_hash
        .as_deref()
        .is_some_and(|h| h.starts_with("uri:"))
    {
        let shown = ftab_model::names::echoed(key);
        return Err(Error::FailedPrecondition(format!(
            "idempotency key `{shown}` was already used for ingest {} of feature table `{}` with other files (or files that changed since); a retry must name the same files, so use a new key for new data",
            existing.result.ingest_id, target.table.name
        )));
    }
    let shown = ftab_model::names::echoed(key);
    Err(Error::FailedPrecondition(format!(
        "idempotency key `{shown}` was already used for ingest {} of feature table `{}`, an upload; a retry must be the same request, so use a new key for an ingest by URI",
        existing.result.ingest_id, target.table.name
    )))
}
