use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, AsArray, Int64Array, RecordBatch, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::DataType;
use datafusion::physical_plan::ExecutionPlan;
use object_store::ObjectStore;
use object_store::path::Path;

use super::*;
use crate::offline::columns::ROW_COLUMN;
use crate::plan::bucket::bucket_ids;
use datafusion::arrow::array::StringArray as Strings;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::physical_plan::collect;
use datafusion::prelude::SessionContext;
use object_store::memory::InMemory;

/// Sorted input rows: (key, timestamp, _row, value).
const ROWS: &[(&str, i64, i64, i64)] = &[
    ("a", 1, 0, 10),
    ("a", 1, 1, 11), // same key and time, later row: wins
    ("a", 2, 2, 12),
    ("b", 1, 3, 13),
    ("b", 1, 4, 14), // wins
    ("c", 5, 5, 15),
];

fn input(batch_rows: usize) -> Arc<dyn ExecutionPlan> {
    let batch = RecordBatch::try_from_iter([
        (
            "k",
            Arc::new(Strings::from_iter_values(ROWS.iter().map(|r| r.0))) as ArrayRef,
        ),
        (
            "ts",
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(ROWS.iter().map(|r| r.1))
                    .with_timezone("UTC"),
            ),
        ),
        (
            ROW_COLUMN,
            Arc::new(Int64Array::from_iter_values(ROWS.iter().map(|r| r.2))),
        ),
        (
            "v",
            Arc::new(Int64Array::from_iter_values(ROWS.iter().map(|r| r.3))),
        ),
    ])
    .unwrap();
    let batches: Vec<RecordBatch> = (0..batch.num_rows())
        .step_by(batch_rows)
        .map(|s| batch.slice(s, batch_rows.min(batch.num_rows() - s)))
        .collect();
    MemorySourceConfig::try_new_exec(&[batches], batch.schema(), None).unwrap()
}

/// (k, v) of the Parquet file at `memory:///<path>`, sorted.
async fn values(ctx: &SessionContext, path: &Path) -> Vec<(String, i64)> {
    let batches = ctx
        .read_parquet(format!("memory:///{path}"), Default::default())
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut out = Vec::new();
    for batch in batches {
        let keys =
            datafusion::arrow::compute::cast(batch.column_by_name("k").unwrap(), &DataType::Utf8)
                .unwrap();
        let keys = keys.as_string::<i32>();
        let values = batch
            .column_by_name("v")
            .unwrap()
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
            .clone();
        for i in 0..batch.num_rows() {
            out.push((keys.value(i).to_string(), values.value(i)));
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn dedupes_and_picks_the_latest_across_batch_boundaries() {
    for batch_rows in 1..=ROWS.len() {
        let ctx = SessionContext::new();
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let url = url::Url::parse("memory://").unwrap();
        ctx.register_object_store(&url, store.clone());
        let spec = IngestWriteSpec {
            table: "t".into(),
            keys: vec!["k".into()],
            timestamp: "ts".into(),
            columns: vec!["k".into(), "ts".into(), "v".into()],
            offline_table: Some("memory:///offline/t/".into()),
            latest_directory: Some("memory:///latest/".into()),
            seq: 7,
            ingested_at_micros: 1,
            buckets: Some(3),
        };
        let exec = Arc::new(IngestWriteExec::try_new(input(batch_rows), spec).unwrap());
        let out = collect(exec, ctx.task_ctx()).await.unwrap();
        assert_eq!(sum_column(&out, "rows").unwrap(), 6);
        assert_eq!(
            sum_column(&out, "unique_rows").unwrap(),
            4,
            "batches of {batch_rows}"
        );
        assert_eq!(sum_column(&out, "latest_rows").unwrap(), 3);

        let adds = collect_adds(&out).unwrap();
        let mut offline = Vec::new();
        for add in &adds {
            assert!(add.path.starts_with("_date=1970-01-01/"), "{}", add.path);
            assert!(
                add.stats
                    .as_deref()
                    .unwrap_or("")
                    .contains("\"numRecords\"")
            );
            let path = Path::from(format!("offline/t/{}", add.path));
            let rows = values(&ctx, &path).await;
            // Every file holds one bucket, named in its partition values, and its
            // rows' keys hash to it.
            let bucket: i32 = add.partition_values["_bucket"]
                .as_deref()
                .unwrap()
                .parse()
                .unwrap();
            assert!(
                add.path.contains(&format!("/_bucket={bucket}/")),
                "{}",
                add.path
            );
            let keys: ArrayRef = Arc::new(Strings::from_iter_values(
                rows.iter().map(|(k, _)| k.as_str()),
            ));
            let ids = bucket_ids(&[keys], 3).unwrap();
            assert!(
                ids.values().iter().all(|&b| b == bucket),
                "{ids:?} in {}",
                add.path
            );
            offline.extend(rows);
        }
        offline.sort();
        assert_eq!(
            offline,
            vec![
                ("a".into(), 11),
                ("a".into(), 12),
                ("b".into(), 14),
                ("c".into(), 15)
            ],
            "batches of {batch_rows}"
        );
        let latest_files: Vec<Path> =
            futures::TryStreamExt::try_collect::<Vec<_>>(store.list(Some(&Path::from("latest"))))
                .await
                .unwrap()
                .into_iter()
                .map(|o| o.location)
                .collect();
        let mut latest = Vec::new();
        for path in &latest_files {
            latest.extend(values(&ctx, path).await);
        }
        latest.sort();
        assert_eq!(
            latest,
            vec![("a".into(), 12), ("b".into(), 14), ("c".into(), 15)],
            "batches of {batch_rows}"
        );
    }
}
