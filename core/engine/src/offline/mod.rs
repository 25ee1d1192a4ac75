//! The offline store: one Delta table per (workspace, feature table, storage generation),
//! partitioned by `_date`, the UTC date of the timestamp (docs/offline-store.md).
//!
//! Executors write the Parquet files ([`crate::plan::ingest`]); this module commits them,
//! exactly once per ingest, and reads snapshots back: statistics for `describe_table`, and
//! the files a training set needs, pruned by date and by the files' timestamp statistics.
//! Every access goes through ftab's own object store, so the same code serves local
//! directories, S3, GCS, Azure and in-memory stores.

pub mod columns;

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate};
use datafusion::arrow::datatypes::Schema;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties, TableReference};
use deltalake::kernel::{Action, Add, MetadataExt, StructField, StructType, Transaction};
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::{DeltaTable, DeltaTableBuilder};
use url::Url;

use crate::Error;
use crate::protocol::{AsOf, OfflineStats};
use crate::storage::ObjectStorage;
use columns::{BUCKET_COLUMN, DATE_COLUMN, offline_partition_columns};

/// An offline-table error at `url` caused by `cause` (a delta-rs error, or a message).
fn offline_error(url: &Url, cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
    let cause = cause.into();
    Error::Offline {
        location: url.to_string(),
        message: first_line(&cause.to_string()),
        source: Some(cause),
    }
}

/// The first line of a message: delta-rs's kernel errors append a backtrace after it when
/// `RUST_BACKTRACE` is set, which is no part of an answer to a client.
fn first_line(message: &str) -> String {
    message
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end()
        .to_string()
}

/// The Delta table at `url`, loaded at its latest version, or `None` if nothing was
/// committed there yet.
pub async fn open(storage: &ObjectStorage, url: &Url) -> Result<Option<DeltaTable>, Error> {
    let mut table = builder(storage, url)?
        .build()
        .map_err(|e| offline_error(url, e))?;
    if !table
        .verify_deltatable_existence()
        .await
        .map_err(|e| offline_error(url, e))?
    {
        return Ok(None);
    }
    table.load().await.map_err(|e| offline_error(url, e))?;
    Ok(Some(table))
}

fn builder(storage: &ObjectStorage, url: &Url) -> Result<DeltaTableBuilder, Error> {
    register_cloud_log_stores();
    Ok(DeltaTableBuilder::from_url(url.clone())
        .map_err(|e| offline_error(url, e))?
        .with_storage_backend(storage.store.clone(), url.clone()))
}

/// delta-rs knows how to commit to `file://` and `memory://` tables only, unless built
/// with its cloud features (which bring the AWS, Azure and Google SDKs). ftab hands it the
/// object store itself, so all delta-rs needs for a cloud URL is a log store: its default
/// one commits each version with a create-only put (`PutMode::Create`: `If-None-Match: *`
/// on S3, preconditions on GCS and Azure), so of two writers racing for a version exactly
/// one wins and the other retries at the next version (docs/offline-store.md).
fn register_cloud_log_stores() {
    use deltalake::logstore::{
        LogStore, LogStoreFactory, ObjectStoreRef, StorageConfig, default_logstore,
        logstore_factories,
    };
    #[derive(Debug)]
    struct CreateOnlyPut;
    impl LogStoreFactory for CreateOnlyPut {
        fn with_options(
            &self,
            prefixed: ObjectStoreRef,
            root: ObjectStoreRef,
            location: &Url,
            options: &StorageConfig,
        ) -> deltalake::DeltaResult<std::sync::Arc<dyn LogStore>> {
            Ok(default_logstore(prefixed, root, location, options))
        }
    }
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for scheme in ["s3", "s3a", "gs", "az", "abfs", "abfss"] {
            if let Ok(url) = Url::parse(&format!("{scheme}://")) {
                logstore_factories().insert(url, std::sync::Arc::new(CreateOnlyPut));
            }
        }
    });
}

/// The table property holding a bucketed table's bucket count.
pub const BUCKETS_PROPERTY: &str = "ftab.buckets";
/// The table property holding the join keys rows are bucketed by, in hash order (JSON).
pub const BUCKET_KEYS_PROPERTY: &str = "ftab.bucketKeys";

/// How an offline table's rows are bucketed (the `_bucket` partition; see
/// [`crate::plan::bucket`]). Fixed when the table is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucketing {
    pub count: u32,
    /// The join keys, in the order they are hashed.
    pub keys: Vec<String>,
}

fn bucketing_of(metadata: &deltalake::kernel::Metadata) -> Option<Bucketing> {
    if !metadata
        .partition_columns()
        .iter()
        .any(|c| c == BUCKET_COLUMN)
    {
        return None;
    }
    let configuration = metadata.configuration();
    let count = configuration.get(BUCKETS_PROPERTY)?.parse().ok()?;
    let keys = serde_json::from_str(configuration.get(BUCKET_KEYS_PROPERTY)?).ok()?;
    Some(Bucketing { count, keys })
}

/// How the rows of the next ingest into `table` (opened with [`open`]) are bucketed: as
/// the table says, or as `new` for a table that does not exist yet; `None` for a table
/// created before buckets existed.
pub fn ingest_bucketing(
    table: Option<&DeltaTable>,
    url: &Url,
    new: Bucketing,
) -> Result<Option<Bucketing>, Error> {
    match table {
        None => Ok(Some(new)),
        Some(table) => {
            let snapshot = table.snapshot().map_err(|e| offline_error(url, e))?;
            Ok(bucketing_of(snapshot.metadata()))
        }
    }
}

/// The outcome of [`commit_ingest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// A new Delta version holds the ingest.
    New { version: u64 },
    /// An earlier attempt committed it already (its application transaction is there).
    Already,
}

/// The Delta application transaction id of an ingest: committing it twice is impossible.
pub fn ingest_app_id(ingest_id: &str) -> String {
    format!("ftab-ingest-{ingest_id}")
}

/// Commit the files one ingest wrote, in one Delta commit carrying the ingest's
/// application transaction. Creates the table on its first commit (protocol, metadata and
/// files together; bucketed by `bucketing`, which must match the `_bucket` column of
/// `schema`), and widens its schema when the feature table gained columns.
#[allow(clippy::too_many_arguments)]
pub async fn commit_ingest(
    storage: &ObjectStorage,
    url: &Url,
    schema: &Schema,
    bucketing: Option<&Bucketing>,
    adds: Vec<Add>,
    app_id: &str,
    seq: i64,
    metadata: BTreeMap<String, serde_json::Value>,
) -> Result<Committed, Error> {
    let wanted: StructType = schema
        .try_into_kernel()
        .map_err(|e| offline_error(url, format!("the table schema has no Delta type: {e}")))?;
    let properties = || {
        CommitProperties::default()
            .with_application_transaction(Transaction::new(app_id, seq))
            .with_metadata(metadata.clone())
    };
    let actions: Vec<Action> = adds.into_iter().map(Action::Add).collect();
    let table = match open(storage, url).await? {
        Some(table) => table,
        None => {
            let created = DeltaTable::new(
                builder(storage, url)?
                    .build()
                    .map_err(|e| offline_error(url, e))?
                    .log_store(),
            )
            .create()
            .with_columns(wanted.fields().cloned())
            .with_partition_columns(offline_partition_columns(bucketing.is_some()))
            // ftab's own properties are not Delta's.
            .with_raise_if_key_not_exists(false)
            .with_configuration(bucketing.iter().flat_map(|b| {
                [
                    (BUCKETS_PROPERTY.to_string(), Some(b.count.to_string())),
                    (
                        BUCKET_KEYS_PROPERTY.to_string(),
                        Some(serde_json::json!(b.keys).to_string()),
                    ),
                ]
            }))
            .with_save_mode(SaveMode::ErrorIfExists)
            .with_actions(actions.clone())
            .with_commit_properties(properties().with_max_retries(0))
            .await;
            match created {
                Ok(table) => {
                    return Ok(Committed::New {
                        version: table.version().unwrap_or(0),
                    });
                }
                // Created meanwhile (another attempt won the race): append below.
                Err(e) => open(storage, url)
                    .await?
                    .ok_or_else(|| offline_error(url, format!("cannot create the table: {e}")))?,
            }
        }
    };
    let snapshot = table.snapshot().map_err(|e| offline_error(url, e))?;
    let committed = snapshot
        .transaction_version(table.log_store().as_ref(), app_id)
        .await
        .map_err(|e| offline_error(url, e))?;
    if committed.is_some_and(|v| v >= seq) {
        return Ok(Committed::Already);
    }
    let mut actions = actions;
    if let Some(merged) = merged_schema(&snapshot.schema(), &wanted) {
        let metadata = snapshot
            .metadata()
            .clone()
            .with_schema(&merged)
            .map_err(|e| offline_error(url, e))?;
        actions.insert(0, Action::Metadata(metadata));
    }
    let done = CommitBuilder::from(properties())
        .with_actions(actions)
        .build(
            Some(snapshot as &dyn TableReference),
            table.log_store(),
            DeltaOperation::Write {
                mode: SaveMode::Append,
                partition_by: Some(snapshot.metadata().partition_columns().to_vec()),
                predicate: None,
            },
        )
        .await
        .map_err(|e| offline_error(url, e))?;
    Ok(Committed::New {
        version: done.version() as u64,
    })
}

/// The table's schema after adding the columns (and widened types) of `wanted`, or `None`
/// when nothing changes. Columns are never removed: removing one is a breaking change,
/// which starts a new storage generation instead.
fn merged_schema(current: &StructType, wanted: &StructType) -> Option<StructType> {
    let mut changed = false;
    let mut fields: Vec<StructField> = Vec::new();
    for field in current.fields() {
        match wanted.field(field.name()) {
            Some(new) if new.data_type() != field.data_type() => {
                changed = true;
                fields.push(new.clone());
            }
            _ => fields.push(field.clone()),
        }
    }
    for field in wanted.fields() {
        if current.field(field.name()).is_none() {
            changed = true;
            fields.push(field.clone());
        }
    }
    if !changed {
        return None;
    }
    StructType::try_new(fields).ok()
}

/// Version, files and rows of the offline table, or `None` before its first commit.
pub async fn stats(storage: &ObjectStorage, url: &Url) -> Result<Option<OfflineStats>, Error> {
    let Some(table) = open(storage, url).await? else {
        return Ok(None);
    };
    let snapshot = table.snapshot().map_err(|e| offline_error(url, e))?;
    let mut files = 0u64;
    let mut rows = 0u64;
    for file in snapshot.log_data() {
        files += 1;
        rows += file.num_records().unwrap_or(0) as u64;
    }
    Ok(Some(OfflineStats {
        delta_version: snapshot.version(),
        files,
        rows,
    }))
}

/// One data file of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineFile {
    pub url: String,
    pub size: u64,
    pub rows: Option<u64>,
    pub date: Option<NaiveDate>,
    /// Timestamp statistics (UTC µs); the maximum is rounded up to cover Delta's
    /// millisecond statistics.
    pub min_micros: Option<i64>,
    pub max_micros: Option<i64>,
    /// The file's bucket, in a bucketed table.
    pub bucket: Option<u32>,
}

/// The files of a table at a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineSnapshot {
    /// `None` when the table had no commit at the requested point.
    pub version: Option<u64>,
    pub files: Vec<OfflineFile>,
    /// How the table is bucketed, if it is.
    pub bucketing: Option<Bucketing>,
}

/// Every data file the offline table at `url` references: the files of its latest
/// version and those removed but still in its log (tombstones), as object store paths.
/// `None` when nothing was committed there. (ftab's tables are append-only, so the latest
/// version holds every file ever committed; a compaction would have to keep the files
/// older versions read until a vacuum.)
pub async fn referenced_files(
    storage: &ObjectStorage,
    url: &Url,
) -> Result<Option<std::collections::HashSet<object_store::path::Path>>, Error> {
    use futures::TryStreamExt;
    let Some(table) = open(storage, url).await? else {
        return Ok(None);
    };
    let snapshot = table.snapshot().map_err(|e| offline_error(url, e))?;
    let table_path = object_store::path::Path::from_url_path(url.path())
        .map_err(|e| offline_error(url, format!("bad table location: {e}")))?;
    // The log's paths are relative to the table and already decoded: what delta-rs itself
    // turns into object store paths with `Path::parse`.
    let to_path = |relative: &str| -> Result<object_store::path::Path, Error> {
        let relative = object_store::path::Path::parse(relative)
            .map_err(|e| offline_error(url, format!("bad file path `{relative}`: {e}")))?;
        Ok(table_path.parts().chain(relative.parts()).collect())
    };
    let mut paths = std::collections::HashSet::new();
    for file in snapshot.log_data() {
        paths.insert(to_path(&file.path())?);
    }
    let tombstones: Vec<_> = snapshot
        .all_tombstones(table.log_store().as_ref())
        .try_collect()
        .await
        .map_err(|e| offline_error(url, e))?;
    for tombstone in &tombstones {
        paths.insert(to_path(&tombstone.path())?);
    }
    Ok(Some(paths))
}

/// The files of the offline table at `as_of` (latest when `None`).
pub async fn snapshot(
    storage: &ObjectStorage,
    url: &Url,
    timestamp_field: &str,
    as_of: Option<AsOf>,
) -> Result<OfflineSnapshot, Error> {
    let empty = OfflineSnapshot {
        version: None,
        files: Vec::new(),
        bucketing: None,
    };
    let Some(mut table) = open(storage, url).await? else {
        return Ok(empty);
    };
    let latest = table.version().unwrap_or(0);
    match as_of {
        None => {}
        Some(AsOf::Version(version)) => {
            if version > latest {
                return Err(Error::InvalidRequest(format!(
                    "version {version} of the offline table does not exist yet; its latest version is {latest}"
                )));
            }
            if version != latest {
                table
                    .load_version(version)
                    .await
                    .map_err(|e| offline_error(url, e))?;
            }
        }
        Some(AsOf::Time(time)) => {
            table
                .load_with_datetime(time)
                .await
                .map_err(|e| offline_error(url, e))?;
            // delta-rs falls back to the first version for a time before it: then the
            // table did not exist yet at that time.
            let snapshot = table.snapshot().map_err(|e| offline_error(url, e))?;
            let committed_at = snapshot.version_timestamp(snapshot.version());
            if committed_at.is_some_and(|ms| ms > time.timestamp_millis()) {
                return Ok(empty);
            }
        }
    }
    let snapshot = table.snapshot().map_err(|e| offline_error(url, e))?;
    let mut files = Vec::new();
    for file in snapshot.log_data() {
        let path = file.path();
        let partition_values = file.partition_values_map();
        let file_url = url
            .join(&path)
            .map_err(|e| offline_error(url, format!("bad file path `{path}`: {e}")))?;
        let stats: serde_json::Value = file
            .stats()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        let stat = |kind: &str| {
            stats[kind][timestamp_field]
                .as_str()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.timestamp_micros())
        };
        files.push(OfflineFile {
            url: file_url.to_string(),
            size: file.size().max(0) as u64,
            rows: file.num_records().map(|n| n as u64),
            date: partition_values
                .get(DATE_COLUMN)
                .cloned()
                .flatten()
                .and_then(|d| NaiveDate::parse_from_str(&d, "%Y-%m-%d").ok()),
            min_micros: stat("minValues"),
            // Delta statistics keep milliseconds: the true maximum may be 999 µs later.
            max_micros: stat("maxValues").map(|m| m.saturating_add(999)),
            bucket: partition_values
                .get(BUCKET_COLUMN)
                .cloned()
                .flatten()
                .and_then(|b| b.parse().ok()),
        });
    }
    Ok(OfflineSnapshot {
        version: Some(snapshot.version()),
        files,
        bucketing: bucketing_of(snapshot.metadata()),
    })
}

/// The files that can hold timestamps in `low..=high` (UTC µs), judged by their date
/// partition and timestamp statistics; files without either are kept.
pub fn prune(files: Vec<OfflineFile>, low: i64, high: i64) -> Vec<OfflineFile> {
    let date = |micros: i64| DateTime::from_timestamp_micros(micros).map(|t| t.date_naive());
    let (first_day, last_day) = (date(low), date(high));
    files
        .into_iter()
        .filter(|f| {
            let by_date = match (f.date, first_day, last_day) {
                (Some(d), Some(first), Some(last)) => d >= first && d <= last,
                _ => true,
            };
            let by_stats =
                f.min_micros.is_none_or(|m| m <= high) && f.max_micros.is_none_or(|m| m >= low);
            by_date && by_stats
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(date: Option<&str>, min: Option<i64>, max: Option<i64>) -> OfflineFile {
        OfflineFile {
            url: format!("file:///t/{date:?}-{min:?}"),
            size: 1,
            rows: Some(1),
            date: date.map(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap()),
            min_micros: min,
            max_micros: max,
            bucket: None,
        }
    }

    #[test]
    fn pruning_keeps_files_that_can_hold_the_range() {
        let day = 86_400_000_000i64;
        let t = |d: i64| 19_723 * day + d * day; // 2024-01-01 + d days
        let files = vec![
            file(Some("2023-12-30"), Some(t(-2)), Some(t(-2) + 10)), // before the range
            file(Some("2024-01-01"), Some(t(0)), Some(t(0) + 10)),   // inside
            file(Some("2024-01-03"), Some(t(2)), Some(t(2) + 10)),   // after
            file(None, None, None),                                  // unknown: kept
            file(Some("2024-01-01"), Some(t(0) + 100), Some(t(0) + 200)), // date ok, stats after
        ];
        let kept = prune(files, t(0), t(0) + 50);
        let urls: Vec<_> = kept.iter().map(|f| (f.date, f.min_micros)).collect();
        assert_eq!(
            urls,
            vec![
                (NaiveDate::from_ymd_opt(2024, 1, 1), Some(t(0))),
                (None, None)
            ]
        );
    }

    #[test]
    fn schemas_merge_by_adding_and_widening() {
        use deltalake::kernel::DataType as D;
        let current = StructType::try_new(vec![
            StructField::new("a", D::INTEGER, true),
            StructField::new("b", D::STRING, true),
        ])
        .unwrap();
        assert!(merged_schema(&current, &current).is_none());
        let wanted = StructType::try_new(vec![
            StructField::new("a", D::LONG, true),
            StructField::new("b", D::STRING, true),
            StructField::new("c", D::DOUBLE, true),
        ])
        .unwrap();
        let merged = merged_schema(&current, &wanted).unwrap();
        let names: Vec<_> = merged
            .fields()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("a".to_string(), D::LONG),
                ("b".to_string(), D::STRING),
                ("c".to_string(), D::DOUBLE)
            ]
        );
    }
}
