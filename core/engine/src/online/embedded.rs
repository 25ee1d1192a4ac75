//! The embedded online store: a redb database file, one redb table per
//! (workspace, table, generation). redb runs one write transaction at a time, so the
//! read-compare-write of a newer-only write is atomic with respect to every other write.
//! Why redb: docs/online-store.md.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::TimestampMicrosecondType;
use futures::FutureExt;
use futures::future::BoxFuture;
use redb::{Database, ReadableDatabase, TableDefinition, TableError};

use super::encoding::{decode_record, encode_key, encode_record, key_of_row, record_order};
use super::{KeyValue, OnlineError, OnlineRecord, OnlineStore, OnlineTable, WriteCounts};
use crate::definitions::ValueType;

/// Encoded (key, record) pairs.
type Encoded = Vec<(Vec<u8>, Vec<u8>)>;

#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    /// `None` once closed: the file's lock is released and every use is an error.
    db: Arc<std::sync::RwLock<Option<Arc<Database>>>>,
}

fn store_error(e: impl std::fmt::Display) -> OnlineError {
    OnlineError::Store(e.to_string())
}

impl EmbeddedStore {
    /// Open (creating if needed) the store file at `path`.
    pub fn open(path: &Path) -> Result<Self, OnlineError> {
        let db = Database::create(path)
            .map_err(|e| OnlineError::Store(format!("cannot open {}: {e}", path.display())))?;
        Ok(Self {
            db: Arc::new(std::sync::RwLock::new(Some(Arc::new(db)))),
        })
    }

    /// The open database (operations under way keep it open until they end).
    fn database(&self) -> Result<Arc<Database>, OnlineError> {
        self.db
            .read()
            .map_err(|_| OnlineError::Store("the online store's lock is poisoned".into()))?
            .clone()
            .ok_or_else(|| OnlineError::Store("the online store is closed".into()))
    }

    /// Encode the rows that are not expired: (key, record, (timestamp, seq)).
    fn encode_rows(
        table: &OnlineTable,
        rows: &RecordBatch,
        seq: u64,
        now_micros: i64,
    ) -> Result<(Encoded, u64), OnlineError> {
        // Each column as exactly the type the encoding reads (e.g. string views as strings).
        let column = |name: &str, value_type: &ValueType| -> Result<ArrayRef, OnlineError> {
            let array = rows
                .column_by_name(name)
                .ok_or_else(|| OnlineError::InvalidRows(format!("no column `{name}`")))?;
            cast(array, &value_type.to_arrow()).map_err(|e| {
                OnlineError::InvalidRows(format!("column `{name}` is not {value_type}: {e}"))
            })
        };
        let key_arrays: Vec<ArrayRef> = table
            .keys
            .iter()
            .map(|(n, t)| column(n, t))
            .collect::<Result<_, _>>()?;
        let feature_arrays: Vec<ArrayRef> = table
            .features
            .iter()
            .map(|(n, t)| column(n, t))
            .collect::<Result<_, _>>()?;
        let keys: Vec<(&ArrayRef, &ValueType)> = key_arrays
            .iter()
            .zip(table.keys.iter().map(|(_, t)| t))
            .collect();
        let features: Vec<(&ArrayRef, &ValueType)> = feature_arrays
            .iter()
            .zip(table.features.iter().map(|(_, t)| t))
            .collect();
        let timestamp_array = column(&table.timestamp_field, &ValueType::Timestamp)?;
        let timestamps = timestamp_array
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| {
                OnlineError::InvalidRows("the timestamp column is not UTC microseconds".into())
            })?;
        let live_after = table.live_after(now_micros);
        let mut encoded = Vec::with_capacity(rows.num_rows());
        let mut expired = 0;
        for row in 0..rows.num_rows() {
            if timestamps.is_null(row) {
                return Err(OnlineError::InvalidRows(format!(
                    "null timestamp at row {row}"
                )));
            }
            let timestamp = timestamps.value(row);
            if live_after.is_some_and(|after| timestamp < after) {
                expired += 1;
                continue;
            }
            let mut key = Vec::new();
            key_of_row(&keys, row, &mut key)?;
            let mut record = Vec::new();
            encode_record(timestamp, seq, &features, row, &mut record);
            encoded.push((key, record));
        }
        Ok((encoded, expired))
    }
}

impl OnlineStore for EmbeddedStore {
    fn close(&self) {
        if let Ok(mut db) = self.db.write() {
            db.take();
        }
    }

    fn write_latest<'a>(
        &'a self,
        table: &'a OnlineTable,
        rows: &'a RecordBatch,
        seq: u64,
        now_micros: i64,
    ) -> BoxFuture<'a, Result<WriteCounts, OnlineError>> {
        async move {
            let started = std::time::Instant::now();
            let (encoded, expired) = Self::encode_rows(table, rows, seq, now_micros)?;
            let encoding = started.elapsed();
            let db = self.database()?;
            let namespace = table.namespace();
            let mut counts =
                tokio::task::spawn_blocking(move || -> Result<WriteCounts, OnlineError> {
                    let definition = TableDefinition::<&[u8], &[u8]>::new(&namespace);
                    let txn = db.begin_write().map_err(store_error)?;
                    let mut counts = WriteCounts::default();
                    {
                        let mut records = txn.open_table(definition).map_err(store_error)?;
                        for (key, record) in &encoded {
                            // Insert first and put the old record back in the rare case it
                            // was newer: one tree walk for the usual newer write instead of
                            // a read and a write. All inside one write transaction.
                            // Only a record to put back is copied out of the store.
                            let restore = match records
                                .insert(key.as_slice(), record.as_slice())
                                .map_err(store_error)?
                            {
                                Some(old)
                                    if record_order(record)? <= record_order(old.value())? =>
                                {
                                    Some(old.value().to_vec())
                                }
                                _ => None,
                            };
                            match restore {
                                Some(old) => {
                                    records
                                        .insert(key.as_slice(), old.as_slice())
                                        .map_err(store_error)?;
                                    counts.skipped_older += 1;
                                }
                                None => counts.written += 1,
                            }
                        }
                    }
                    txn.commit().map_err(store_error)?;
                    Ok(counts)
                })
                .await
                .map_err(|e| OnlineError::Store(format!("write task failed: {e}")))??;
            counts.skipped_expired = expired;
            tracing::debug!(
                rows = rows.num_rows(),
                ?encoding,
                writing = ?started.elapsed().saturating_sub(encoding),
                "online rows written"
            );
            Ok(counts)
        }
        .boxed()
    }

    fn read<'a>(
        &'a self,
        table: &'a OnlineTable,
        keys: &'a [Vec<KeyValue>],
        now_micros: i64,
    ) -> BoxFuture<'a, Result<Vec<Option<OnlineRecord>>, OnlineError>> {
        async move {
            let encoded: Vec<Vec<u8>> = keys.iter().map(|k| encode_key(k)).collect();
            let db = self.database()?;
            let namespace = table.namespace();
            let stored = tokio::task::spawn_blocking(
                move || -> Result<Vec<Option<Vec<u8>>>, OnlineError> {
                    let definition = TableDefinition::<&[u8], &[u8]>::new(&namespace);
                    let txn = db.begin_read().map_err(store_error)?;
                    let records = match txn.open_table(definition) {
                        Ok(records) => records,
                        Err(TableError::TableDoesNotExist(_)) => {
                            return Ok(vec![None; encoded.len()]);
                        }
                        Err(e) => return Err(store_error(e)),
                    };
                    encoded
                        .iter()
                        .map(|key| {
                            Ok(records
                                .get(key.as_slice())
                                .map_err(store_error)?
                                .map(|v| v.value().to_vec()))
                        })
                        .collect()
                },
            )
            .await
            .map_err(|e| OnlineError::Store(format!("read task failed: {e}")))??;
            let live_after = table.live_after(now_micros);
            stored
                .into_iter()
                .map(|bytes| {
                    let Some(bytes) = bytes else { return Ok(None) };
                    let record = decode_record(&bytes, &table.features)?;
                    if live_after.is_some_and(|after| record.timestamp < after) {
                        return Ok(None);
                    }
                    Ok(Some(record))
                })
                .collect()
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{TableName, WorkspaceName};
    use datafusion::arrow::array::{Int64Array, StringArray, TimestampMicrosecondArray};

    const DAY: i64 = 86_400_000_000;

    fn table(ttl_days: Option<i64>) -> OnlineTable {
        OnlineTable {
            workspace: WorkspaceName::new("prod").unwrap(),
            table: TableName::new("t").unwrap(),
            generation: 1,
            keys: vec![("user_id".into(), ValueType::String)],
            features: vec![("count".into(), ValueType::Int64)],
            timestamp_field: "ts".into(),
            ttl_micros: ttl_days.map(|d| d * DAY),
        }
    }

    fn rows(data: &[(&str, i64, i64)]) -> RecordBatch {
        RecordBatch::try_from_iter([
            (
                "user_id",
                Arc::new(StringArray::from_iter_values(data.iter().map(|r| r.0))) as ArrayRef,
            ),
            (
                "ts",
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(data.iter().map(|r| r.1))
                        .with_timezone("UTC"),
                ),
            ),
            (
                "count",
                Arc::new(Int64Array::from_iter_values(data.iter().map(|r| r.2))),
            ),
        ])
        .unwrap()
    }

    fn key(user: &str) -> Vec<KeyValue> {
        vec![KeyValue::String(user.into())]
    }

    async fn count_of(
        store: &EmbeddedStore,
        table: &OnlineTable,
        user: &str,
        now: i64,
    ) -> Option<(i64, u64, serde_json::Value)> {
        let keys = [key(user)];
        let read = store.read(table, &keys, now).await.unwrap();
        read.into_iter()
            .next()
            .unwrap()
            .map(|r| (r.timestamp, r.seq, r.features[0].1.clone()))
    }

    /// Last write wins by (timestamp, seq): each step is (rows, seq, what is stored after).
    #[tokio::test]
    async fn newer_only_by_timestamp_then_seq() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("online.redb")).unwrap();
        let t = table(None);
        let now = 100 * DAY;
        let steps: Vec<(Vec<(&str, i64, i64)>, u64, WriteCounts, (i64, u64, i64))> = vec![
            (
                vec![("u", 10, 1)],
                1,
                WriteCounts {
                    written: 1,
                    ..Default::default()
                },
                (10, 1, 1),
            ),
            // An older timestamp arriving later does not land.
            (
                vec![("u", 5, 2)],
                2,
                WriteCounts {
                    skipped_older: 1,
                    ..Default::default()
                },
                (10, 1, 1),
            ),
            // The same timestamp in a later ingest (greater seq) wins.
            (
                vec![("u", 10, 3)],
                3,
                WriteCounts {
                    written: 1,
                    ..Default::default()
                },
                (10, 3, 3),
            ),
            // The same timestamp from an earlier ingest (smaller seq, e.g. a retried job) does not.
            (
                vec![("u", 10, 4)],
                2,
                WriteCounts {
                    skipped_older: 1,
                    ..Default::default()
                },
                (10, 3, 3),
            ),
            // A newer timestamp wins whatever the seq.
            (
                vec![("u", 11, 5)],
                1,
                WriteCounts {
                    written: 1,
                    ..Default::default()
                },
                (11, 1, 5),
            ),
        ];
        for (i, (data, seq, counts, (ts, stored_seq, value))) in steps.into_iter().enumerate() {
            let got = store
                .write_latest(&t, &rows(&data), seq, now)
                .await
                .unwrap();
            assert_eq!(got, counts, "step {i}");
            assert_eq!(
                count_of(&store, &t, "u", now).await,
                Some((ts, stored_seq, serde_json::json!(value))),
                "step {i}"
            );
        }
        assert_eq!(count_of(&store, &t, "nobody", now).await, None);
    }

    #[tokio::test]
    async fn ttl_expiry_on_write_and_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("online.redb")).unwrap();
        let t = table(Some(30));
        let now = 100 * DAY;
        let got = store
            .write_latest(
                &t,
                &rows(&[
                    ("old", now - 31 * DAY, 1),
                    ("edge", now - 30 * DAY, 2),
                    ("new", now, 3),
                ]),
                1,
                now,
            )
            .await
            .unwrap();
        assert_eq!(
            got,
            WriteCounts {
                written: 2,
                skipped_older: 0,
                skipped_expired: 1
            }
        );
        assert_eq!(
            count_of(&store, &t, "old", now).await,
            None,
            "never written"
        );
        assert!(
            count_of(&store, &t, "edge", now).await.is_some(),
            "exactly ttl old is live"
        );
        // A day later the edge record has expired: reads stop returning it.
        assert_eq!(count_of(&store, &t, "edge", now + DAY).await, None);
        assert!(count_of(&store, &t, "new", now + DAY).await.is_some());
    }

    #[tokio::test]
    async fn generations_and_tables_are_separate_and_data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("online.redb");
        let t1 = table(None);
        let t2 = OnlineTable {
            generation: 2,
            ..table(None)
        };
        {
            let store = EmbeddedStore::open(&path).unwrap();
            store
                .write_latest(&t1, &rows(&[("u", 1, 1)]), 1, 0)
                .await
                .unwrap();
        }
        let store = EmbeddedStore::open(&path).unwrap();
        assert!(count_of(&store, &t1, "u", 0).await.is_some());
        assert_eq!(count_of(&store, &t2, "u", 0).await, None);
    }
}
