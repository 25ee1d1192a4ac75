//! What every online store backend must do, as test bodies each backend's tests run
//! against it (the embedded store always; Aerospike when `FTAB_TEST_AEROSPIKE` is set).
//! Expected values come from the rules in DESIGN.md ("Online store"), not from a backend.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};

use super::{KeyValue, OnlineStore, OnlineTable, WriteCounts};
use crate::definitions::ValueType;
use crate::names::{TableName, WorkspaceName};

pub const DAY: i64 = 86_400_000_000;

/// A table keyed by `user_id` (string) with one int64 feature `count`.
pub fn table(workspace: &str, generation: u64, ttl_days: Option<i64>) -> OnlineTable {
    OnlineTable {
        workspace: WorkspaceName::new(workspace).unwrap(),
        table: TableName::new("t").unwrap(),
        generation,
        keys: vec![("user_id".into(), ValueType::String)],
        features: vec![("count".into(), ValueType::Int64)],
        timestamp_field: "ts".into(),
        ttl_micros: ttl_days.map(|d| d * DAY),
        bins: vec!["count".into()],
    }
}

/// Rows of (user_id, ts, count).
pub fn rows(data: &[(&str, i64, i64)]) -> RecordBatch {
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

pub fn key(user: &str) -> Vec<KeyValue> {
    vec![KeyValue::String(user.into())]
}

/// (timestamp, seq, count) stored for `user`, read at `now`.
pub async fn count_of(
    store: &dyn OnlineStore,
    table: &OnlineTable,
    user: &str,
    now: i64,
) -> Option<(i64, u64, serde_json::Value)> {
    let keys = [key(user)];
    let read = store.read(table, &keys, now).await.unwrap();
    read.into_iter()
        .next()
        .unwrap()
        .map(|r| (r.timestamp, r.seq, r.features[0].clone()))
}

fn written(n: u64) -> WriteCounts {
    WriteCounts {
        written: n,
        ..Default::default()
    }
}

fn skipped(n: u64) -> WriteCounts {
    WriteCounts {
        skipped_older: n,
        ..Default::default()
    }
}

/// One write and what it must do: (rows, seq, counts, (timestamp, seq, count) stored after).
type Step = (
    Vec<(&'static str, i64, i64)>,
    u64,
    WriteCounts,
    (i64, u64, i64),
);

/// Last write wins by (timestamp, seq), step by step.
pub async fn newer_only_by_timestamp_then_seq(store: &dyn OnlineStore, t: OnlineTable) {
    let now = 100 * DAY;
    let steps: Vec<Step> = vec![
        // A create always lands.
        (vec![("u", 10, 1)], 1, written(1), (10, 1, 1)),
        // An older timestamp arriving later does not land.
        (vec![("u", 5, 2)], 2, skipped(1), (10, 1, 1)),
        // The same timestamp in a later ingest (greater seq) wins.
        (vec![("u", 10, 3)], 3, written(1), (10, 3, 3)),
        // The same (timestamp, seq) again (a retried job) does not write.
        (vec![("u", 10, 9)], 3, skipped(1), (10, 3, 3)),
        // The same timestamp from an earlier ingest (smaller seq) does not.
        (vec![("u", 10, 4)], 2, skipped(1), (10, 3, 3)),
        // A newer timestamp wins whatever the seq.
        (vec![("u", 11, 5)], 1, written(1), (11, 1, 5)),
    ];
    for (i, (data, seq, counts, (ts, stored_seq, value))) in steps.into_iter().enumerate() {
        let got = store
            .write_latest(&t, &rows(&data), seq, now)
            .await
            .unwrap();
        assert_eq!(got, counts, "step {i}");
        assert_eq!(
            count_of(store, &t, "u", now).await,
            Some((ts, stored_seq, serde_json::json!(value))),
            "step {i}"
        );
    }
    assert_eq!(count_of(store, &t, "nobody", now).await, None);
}

/// Rows older than now minus the ttl are not written, and reads drop records that have
/// aged out since. `t` has a ttl of 30 days.
pub async fn ttl_expiry_on_write_and_read(store: &dyn OnlineStore, t: OnlineTable) {
    assert_eq!(t.ttl_micros, Some(30 * DAY));
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
    assert_eq!(count_of(store, &t, "old", now).await, None, "never written");
    assert!(
        count_of(store, &t, "edge", now).await.is_some(),
        "exactly ttl old is live"
    );
    // A day later the edge record has expired: reads stop returning it.
    assert_eq!(count_of(store, &t, "edge", now + DAY).await, None);
    assert!(count_of(store, &t, "new", now + DAY).await.is_some());
}

/// Several ingests of many keys, each with random timestamps (ties included) and seqs
/// out of order: every write's counts, and every key read back, equal a reference that
/// keeps the maximum (timestamp, seq) per key.
pub async fn batches_agree_with_a_reference(store: &dyn OnlineStore, t: OnlineTable) {
    let now = 100 * DAY;
    let users: Vec<String> = (0..1_500).map(|i| format!("user-{i}")).collect();
    let mut reference: BTreeMap<String, (i64, u64, i64)> = BTreeMap::new();
    let mut rng = ftab_testkit::Rng::new(7);
    let mut next = move |n: u64| rng.below(n);
    for seq in [3u64, 1, 4, 2, 5] {
        let mut data = Vec::new();
        for user in &users {
            if next(3) == 0 {
                continue; // not every key in every ingest
            }
            data.push((user.as_str(), next(8) as i64, next(1_000_000) as i64));
        }
        let mut expected = WriteCounts::default();
        for (user, ts, count) in &data {
            let newer = reference
                .get(*user)
                .is_none_or(|(t0, s0, _)| (*ts, seq) > (*t0, *s0));
            if newer {
                reference.insert(user.to_string(), (*ts, seq, *count));
                expected.written += 1;
            } else {
                expected.skipped_older += 1;
            }
        }
        let got = store
            .write_latest(&t, &rows(&data), seq, now)
            .await
            .unwrap();
        assert_eq!(got, expected, "ingest with seq {seq}");
    }
    let keys: Vec<Vec<KeyValue>> = users.iter().map(|u| key(u)).collect();
    let read = store.read(&t, &keys, now).await.unwrap();
    for (user, record) in users.iter().zip(read) {
        let got = record.map(|r| (r.timestamp, r.seq, r.features[0].clone()));
        let want = reference
            .get(user)
            .map(|(ts, seq, count)| (*ts, *seq, serde_json::json!(count)));
        assert_eq!(got, want, "{user}");
    }
}
