//! The as-of join's cases, run with both strategies and small batches to cross batch
//! boundaries.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::datatypes::TimestampMicrosecondType;

use super::*;
use datafusion::arrow::array::{Int64Array, StringArray, TimestampMicrosecondArray};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::physical_plan::collect;
use datafusion::prelude::SessionContext;

fn ts(values: &[i64]) -> ArrayRef {
    Arc::new(TimestampMicrosecondArray::from(values.to_vec()).with_timezone("UTC"))
}

fn spine(rows: &[(&str, i64)]) -> RecordBatch {
    RecordBatch::try_from_iter([
        (
            "k",
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
        ),
        ("t", ts(&rows.iter().map(|r| r.1).collect::<Vec<_>>())),
    ])
    .unwrap()
}

fn features(rows: &[(&str, i64, i64, i64)]) -> RecordBatch {
    RecordBatch::try_from_iter([
        (
            "fk",
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
        ),
        ("ft", ts(&rows.iter().map(|r| r.1).collect::<Vec<_>>())),
        (
            "_seq",
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ),
        (
            "v",
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.3))),
        ),
    ])
    .unwrap()
}

fn spec(ttl: Option<i64>) -> AsOfJoinSpec {
    AsOfJoinSpec {
        table: "t".into(),
        keys: vec![("k".into(), "fk".into())],
        spine_time: "t".into(),
        feature_time: "ft".into(),
        feature_seq: "_seq".into(),
        ttl_micros: ttl,
        outputs: vec![("v".into(), "t__v".into())],
        strategy: JoinStrategy::SortMerge,
    }
}

const STRATEGIES: [JoinStrategy; 2] = [JoinStrategy::SortMerge, JoinStrategy::SpineIndex];

fn reversed(batch: RecordBatch) -> RecordBatch {
    let n = batch.num_rows() as u32;
    let indices = datafusion::arrow::array::UInt32Array::from_iter_values((0..n).rev());
    datafusion::arrow::compute::take_record_batch(&batch, &indices).unwrap()
}

/// Run the join over already sorted single-partition inputs, split into batches of
/// `batch_rows` to exercise batch boundaries. The spine-index join gets both inputs in
/// reverse, since it must not depend on their order (and keeps the spine's order: its
/// output is reversed back here).
async fn run(
    spine_rows: RecordBatch,
    feature_rows: RecordBatch,
    ttl: Option<i64>,
    batch_rows: usize,
    strategy: JoinStrategy,
) -> Vec<(String, i64, Option<i64>)> {
    let (spine_rows, feature_rows) = match strategy {
        JoinStrategy::SortMerge => (spine_rows, feature_rows),
        JoinStrategy::SpineIndex => (reversed(spine_rows), reversed(feature_rows)),
    };
    let split = |b: RecordBatch| -> Vec<RecordBatch> {
        (0..b.num_rows())
            .step_by(batch_rows)
            .map(|s| b.slice(s, batch_rows.min(b.num_rows() - s)))
            .collect()
    };
    let spine_schema = spine_rows.schema();
    let feature_schema = feature_rows.schema();
    let spine = MemorySourceConfig::try_new_exec(&[split(spine_rows)], spine_schema, None).unwrap();
    let features =
        MemorySourceConfig::try_new_exec(&[split(feature_rows)], feature_schema, None).unwrap();
    let spec = AsOfJoinSpec {
        strategy,
        ..spec(ttl)
    };
    let join = Arc::new(AsOfJoinExec::try_new(spine, features, spec).unwrap());
    let ctx = SessionContext::new();
    let batches = collect(join, ctx.task_ctx()).await.unwrap();
    let mut out = Vec::new();
    for b in batches {
        let k = b.column(0).as_string::<i32>();
        let t = b.column(1).as_primitive::<TimestampMicrosecondType>();
        let v = b
            .column(2)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>();
        for i in 0..b.num_rows() {
            out.push((
                k.value(i).to_string(),
                t.value(i),
                (!v.is_null(i)).then(|| v.value(i)),
            ));
        }
    }
    if strategy == JoinStrategy::SpineIndex {
        out.reverse();
    }
    out
}

#[tokio::test]
async fn latest_at_or_before_each_spine_time() {
    let features = features(&[
        ("a", 10, 1, 100),
        ("a", 20, 1, 200),
        ("a", 20, 2, 201), // same time, later ingest: wins
        ("a", 30, 1, 300),
        ("c", 5, 1, 50),
    ]);
    let spine = spine(&[
        ("a", 5),  // before any: null
        ("a", 10), // equal time matches
        ("a", 25),
        ("a", 25), // duplicate spine rows each get a row
        ("a", 99),
        ("b", 50), // unknown key
        ("c", 6),
    ]);
    for (batch_rows, strategy) in [1, 2, 3, 100]
        .into_iter()
        .flat_map(|b| STRATEGIES.map(|s| (b, s)))
    {
        let out = run(spine.clone(), features.clone(), None, batch_rows, strategy).await;
        let values: Vec<Option<i64>> = out.iter().map(|r| r.2).collect();
        assert_eq!(
            values,
            [
                None,
                Some(100),
                Some(201),
                Some(201),
                Some(300),
                None,
                Some(50)
            ],
            "batches of {batch_rows}, {strategy:?}"
        );
    }
}

#[tokio::test]
async fn no_feature_row_for_any_spine_key_gives_nulls() {
    for strategy in STRATEGIES {
        for rows in [&[("x", 1, 1, 1)][..], &[]] {
            let out = run(
                spine(&[("a", 5), ("b", 6)]),
                features(rows),
                None,
                1,
                strategy,
            )
            .await;
            let values: Vec<Option<i64>> = out.iter().map(|r| r.2).collect();
            assert_eq!(
                values,
                [None, None],
                "{strategy:?}, {} feature rows",
                rows.len()
            );
        }
    }
}

#[tokio::test]
async fn ttl_boundary_is_inclusive() {
    let features = features(&[("a", 100, 1, 1)]);
    let spine = spine(&[("a", 110), ("a", 111)]);
    for strategy in STRATEGIES {
        let out = run(spine.clone(), features.clone(), Some(10), 10, strategy).await;
        assert_eq!(
            out[0].2,
            Some(1),
            "t - ttl == timestamp matches ({strategy:?})"
        );
        assert_eq!(
            out[1].2, None,
            "one microsecond later it is expired ({strategy:?})"
        );
    }
}

#[tokio::test]
async fn ttl_applies_to_the_row_carried_forward() {
    // Key a: the row at 100 answers 105 and is carried to 120, where the ttl excludes
    // it. Key b: the row at 112 answers 120 and is carried to 130, too old there.
    let features = features(&[("a", 100, 1, 1), ("b", 100, 1, 2), ("b", 112, 1, 3)]);
    let spine = spine(&[("a", 105), ("a", 120), ("b", 105), ("b", 120), ("b", 130)]);
    for strategy in STRATEGIES {
        let out = run(spine.clone(), features.clone(), Some(10), 2, strategy).await;
        let values: Vec<Option<i64>> = out.iter().map(|r| r.2).collect();
        assert_eq!(
            values,
            [Some(1), None, Some(2), Some(3), None],
            "{strategy:?}"
        );
    }
}

/// Random data with many ties, in random batch sizes: both strategies give the rows a
/// plain scan of the feature rows gives.
#[tokio::test]
async fn strategies_agree_with_a_plain_scan() {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    for round in 0..20 {
        // Odd rounds use keys longer than the index's 16-byte prefix, all sharing it.
        let keys: [&str; 5] = if round % 2 == 0 {
            ["a", "b", "c", "d", "e"]
        } else {
            [
                "a_key_longer_than_16_bytes_a",
                "a_key_longer_than_16_bytes_b",
                "a_key_longer_than_16_bytes_c",
                "a_key_longer_than_16_bytes_d",
                "a_key_longer_than_16_bytes_e",
            ]
        };
        let mut rows: Vec<(&str, i64, i64, i64)> = (0..next(60) + 1)
            .map(|i| {
                (
                    keys[next(5) as usize],
                    next(12) as i64,
                    next(3) as i64 + 1,
                    i as i64,
                )
            })
            .collect();
        // (key, time, seq) is unique in the offline store, and the input is sorted.
        rows.sort_by_key(|r| (r.0, r.1, r.2));
        rows.dedup_by_key(|r| (r.0, r.1, r.2));
        let mut spine_rows: Vec<(&str, i64)> = (0..next(30) + 1)
            .map(|_| (keys[next(5) as usize], next(15) as i64 - 1))
            .collect();
        spine_rows.push(("z", 3));
        spine_rows.sort();
        let ttl = (round % 3 == 0).then_some(3);
        let want: Vec<Option<i64>> = spine_rows
            .iter()
            .map(|&(k, t)| {
                rows.iter()
                    .filter(|r| r.0 == k && r.1 <= t && ttl.is_none_or(|ttl| r.1 >= t - ttl))
                    .max_by_key(|r| (r.1, r.2))
                    .map(|r| r.3)
            })
            .collect();
        let batch_rows = next(7) as usize + 1;
        for strategy in STRATEGIES {
            let out = run(
                spine(&spine_rows),
                features(&rows),
                ttl,
                batch_rows,
                strategy,
            )
            .await;
            let got: Vec<Option<i64>> = out.iter().map(|r| r.2).collect();
            assert_eq!(got, want, "round {round}, {strategy:?}");
        }
    }
}

/// Rows that lose their slot are compacted away: 1000 spine rows, each beaten 100
/// times over, one batch at a time.
#[tokio::test]
async fn spine_index_compacts_rows_that_lost() {
    let names: Vec<String> = (0..1000).map(|k| format!("k{k:04}")).collect();
    let mut rows: Vec<(&str, i64, i64, i64)> = Vec::new();
    for t in 0..100 {
        for name in &names {
            rows.push((name.as_str(), t, 1, t * 10_000 + rows.len() as i64 % 1000));
        }
    }
    let spine_rows: Vec<(&str, i64)> = names.iter().map(|n| (n.as_str(), 1_000)).collect();
    // `run` reverses the feature rows for this join; reversed twice, they arrive oldest
    // first, so every batch beats the one before in every slot.
    rows.reverse();
    let out = run(
        spine(&spine_rows),
        features(&rows),
        None,
        1000,
        JoinStrategy::SpineIndex,
    )
    .await;
    assert_eq!(out.len(), 1000);
    for (i, r) in out.iter().enumerate() {
        assert_eq!(r.2, Some(99 * 10_000 + i as i64), "{r:?}");
    }
}

#[tokio::test]
async fn many_feature_batches_per_spine_batch_stay_bounded() {
    // 200 keys with one row each, in batches of 1 row; the spine asks only the last key,
    // so one spine batch spans every feature batch.
    let rows: Vec<(String, i64, i64, i64)> =
        (0..200).map(|i| (format!("k{i:03}"), 1, 1, i)).collect();
    let borrowed: Vec<(&str, i64, i64, i64)> =
        rows.iter().map(|r| (r.0.as_str(), r.1, r.2, r.3)).collect();
    let spine_rows: Vec<(&str, i64)> = rows.iter().map(|r| (r.0.as_str(), 2)).collect();
    let out = run(
        spine(&spine_rows),
        features(&borrowed),
        None,
        1,
        JoinStrategy::SortMerge,
    )
    .await;
    assert_eq!(out.len(), 200);
    assert!(out.iter().enumerate().all(|(i, r)| r.2 == Some(i as i64)));
}

/// The spine-index join reserves what it holds; past the memory limit it fails saying
/// what to change, rather than taking memory the limit does not allow.
#[tokio::test]
async fn spine_index_beyond_the_memory_limit_says_what_to_change() {
    let names: Vec<String> = (0..5000).map(|k| format!("k{k:05}")).collect();
    let spine_rows: Vec<(&str, i64)> = names.iter().map(|n| (n.as_str(), 1)).collect();
    let s = spine(&spine_rows);
    let f = features(&[("k00001", 1, 1, 1)]);
    let spine = MemorySourceConfig::try_new_exec(&[vec![s.clone()]], s.schema(), None).unwrap();
    let features = MemorySourceConfig::try_new_exec(&[vec![f.clone()]], f.schema(), None).unwrap();
    let spec = AsOfJoinSpec {
        strategy: JoinStrategy::SpineIndex,
        ..spec(None)
    };
    let join = Arc::new(AsOfJoinExec::try_new(spine, features, spec).unwrap());
    let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .with_memory_limit(64 * 1024, 1.0)
        .build_arc()
        .unwrap();
    let ctx = SessionContext::new_with_config_rt(Default::default(), runtime);
    let err = collect(join, ctx.task_ctx()).await.unwrap_err().to_string();
    assert!(
        err.contains("as-of join with `t`")
            && err.contains("memory_limit")
            && err.contains("training_set_join = \"sort_merge\""),
        "{err}"
    );
}

#[test]
fn mismatched_key_types_are_refused() {
    let spine_batch = RecordBatch::try_from_iter([
        ("k", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
        ("t", ts(&[1])),
    ])
    .unwrap();
    let spine =
        MemorySourceConfig::try_new_exec(&[vec![spine_batch.clone()]], spine_batch.schema(), None)
            .unwrap();
    let f = features(&[("a", 1, 1, 1)]);
    let features = MemorySourceConfig::try_new_exec(&[vec![f.clone()]], f.schema(), None).unwrap();
    let err = AsOfJoinExec::try_new(spine, features, spec(None)).unwrap_err();
    assert!(err.to_string().contains("join key `k` is Int64"), "{err}");
}
