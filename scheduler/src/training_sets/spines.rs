//! Spines: uploaded ones stored as Parquet under a name (with a ttl), and what the Parquet
//! footers of a spine (stored or at a URI) say: schema, rows, bytes, time range.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit};
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use datafusion::parquet::arrow::{AsyncArrowWriter, parquet_to_arrow_schema};
use ftab_engine::plan::training_set;
use ftab_engine::storage::{ObjectStorage, scratch_parquet_writer};
use ftab_model::names::SpineName;
use ftab_model::protocol::{SpineInfo, SpineSource};
use futures::{Stream, StreamExt};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore};
use url::Url;

use super::checks::invalid;
use crate::catalog::{Catalog, SpineRecord, timestamp};
use crate::cluster::Cluster;
use crate::error::{Error, Result};

/// Rows per row group of stored spines.
const SPINE_ROW_GROUP_ROWS: usize = 128 * 1024;

/// `from` plus `after` (the configuration bounds `after`, so this does not saturate).
pub(super) fn later(from: chrono::DateTime<Utc>, after: Duration) -> chrono::DateTime<Utc> {
    chrono::Duration::from_std(after)
        .ok()
        .and_then(|after| from.checked_add_signed(after))
        .unwrap_or(chrono::DateTime::<Utc>::MAX_UTC)
}

/// (min, max) of a timestamp column in UTC µs, when known, and its null count, when known.
type TimeStats = (Option<(i64, i64)>, Option<u64>);

/// What the footers of a spine's files say.
pub(super) struct SpineFiles {
    /// File URLs.
    pub(super) files: Vec<String>,
    pub(super) schema: SchemaRef,
    pub(super) rows: u64,
    /// Bytes of the rows uncompressed, as the row groups say.
    pub(super) bytes: u64,
    /// (min, max) of each timestamp column over all files, in UTC µs, when every row
    /// group has statistics; and its null count.
    pub(super) time_stats: BTreeMap<String, TimeStats>,
}

/// Stored spines and the footers of spines.
#[derive(Clone)]
pub(super) struct Spines {
    catalog: Catalog,
    objects: ObjectStorage,
    cluster: Cluster,
    /// How long an uploaded spine is kept.
    ttl: Duration,
}

impl Spines {
    pub(super) fn new(
        catalog: Catalog,
        objects: ObjectStorage,
        cluster: Cluster,
        ttl: Duration,
    ) -> Self {
        Self {
            catalog,
            objects,
            cluster,
            ttl,
        }
    }

    /// Store an uploaded spine as Parquet and point its name at it.
    pub(super) async fn store<S>(&self, name: SpineName, mut batches: S) -> Result<SpineInfo>
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
        let expires = later(created, self.ttl);
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

    /// The files of a spine and what their footers say.
    pub(super) async fn files(&self, source: &SpineSource) -> Result<SpineFiles> {
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
                    training_set::check_spine_columns(&file_schema)
                        .map_err(|e| invalid(format!("{e} (spine file {url})")))?;
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
        let runtime = self.cluster.planner().ctx().runtime_env();
        let found = crate::files_at::files_at(
            &runtime,
            uri,
            &crate::files_at::Wanted {
                what: "spine",
                kinds: "Parquet files",
                accept: &|name: &str| name.ends_with(".parquet"),
            },
        )
        .await?;
        Ok((found.store, found.files))
    }

    /// Delete the spines whose ttl passed.
    pub(super) async fn sweep(&self) {
        match self.catalog.take_expired_spines().await {
            Ok(locations) => {
                for location in locations {
                    self.delete_location(&location).await;
                }
            }
            Err(e) => tracing::warn!("cannot sweep expired spines: {e}"),
        }
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
