//! The embedded online store: a redb database file, one redb table per
//! (workspace, table, generation). redb runs one write transaction at a time, so the
//! read-compare-write of a newer-only write is atomic with respect to every other write.
//! Why redb: docs/online-store.md.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use futures::FutureExt;
use futures::future::BoxFuture;
use redb::{Database, ReadableDatabase, TableDefinition, TableError};

use super::encoding::{
    LatestColumns, decode_record, encode_key, encode_record, key_of_row, record_order,
};
use super::{KeyValue, OnlineError, OnlineRecord, OnlineStore, OnlineTable, WriteCounts};

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

    /// Encode the rows that are not expired as (key, record) pairs; also the number of
    /// expired rows.
    fn encode_rows(
        table: &OnlineTable,
        rows: &RecordBatch,
        seq: u64,
        now_micros: i64,
    ) -> Result<(Encoded, u64), OnlineError> {
        let columns = LatestColumns::of(table, rows)?;
        let mut encoded = Vec::with_capacity(rows.num_rows());
        let (keys, features) = (columns.keys(), columns.features());
        let expired = columns.for_each_live(table.live_after(now_micros), |row, timestamp| {
            let mut key = Vec::new();
            key_of_row(&keys, row, &mut key)?;
            let mut record = Vec::new();
            encode_record(timestamp, seq, &features, row, &mut record);
            encoded.push((key, record));
            Ok(())
        })?;
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
            // A few point reads take microseconds: they run on the calling task, where a
            // trip to the blocking pool would cost more than the reads (the serving API's
            // single-entity requests). Larger batches go to the blocking pool.
            let stored = if encoded.len() <= INLINE_READS {
                read_stored(&db, &namespace, &encoded)?
            } else {
                tokio::task::spawn_blocking(move || read_stored(&db, &namespace, &encoded))
                    .await
                    .map_err(|e| OnlineError::Store(format!("read task failed: {e}")))??
            };
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

/// Reads of at most this many keys run on the calling task.
const INLINE_READS: usize = 16;

/// The stored records of `keys` in the redb table `namespace`.
fn read_stored(
    db: &Database,
    namespace: &str,
    keys: &[Vec<u8>],
) -> Result<Vec<Option<Vec<u8>>>, OnlineError> {
    let definition = TableDefinition::<&[u8], &[u8]>::new(namespace);
    let txn = db.begin_read().map_err(store_error)?;
    let records = match txn.open_table(definition) {
        Ok(records) => records,
        Err(TableError::TableDoesNotExist(_)) => return Ok(vec![None; keys.len()]),
        Err(e) => return Err(store_error(e)),
    };
    keys.iter()
        .map(|key| {
            Ok(records
                .get(key.as_slice())
                .map_err(store_error)?
                .map(|v| v.value().to_vec()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::online::contract;

    fn store() -> (tempfile::TempDir, EmbeddedStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("online.redb")).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn newer_only_by_timestamp_then_seq() {
        let (_dir, store) = store();
        contract::newer_only_by_timestamp_then_seq(&store, contract::table("prod", 1, None)).await;
    }

    #[tokio::test]
    async fn ttl_expiry_on_write_and_read() {
        let (_dir, store) = store();
        contract::ttl_expiry_on_write_and_read(&store, contract::table("prod", 1, Some(30))).await;
    }

    #[tokio::test]
    async fn batches_agree_with_a_reference() {
        let (_dir, store) = store();
        contract::batches_agree_with_a_reference(&store, contract::table("prod", 1, None)).await;
    }

    #[tokio::test]
    async fn generations_and_tables_are_separate_and_data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("online.redb");
        let t1 = contract::table("prod", 1, None);
        let t2 = contract::table("prod", 2, None);
        {
            let store = EmbeddedStore::open(&path).unwrap();
            store
                .write_latest(&t1, &contract::rows(&[("u", 1, 1)]), 1, 0)
                .await
                .unwrap();
        }
        let store = EmbeddedStore::open(&path).unwrap();
        assert!(contract::count_of(&store, &t1, "u", 0).await.is_some());
        assert_eq!(contract::count_of(&store, &t2, "u", 0).await, None);
    }
}
