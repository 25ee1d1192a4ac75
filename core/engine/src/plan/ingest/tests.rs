use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, AsArray, Int64Array, RecordBatch, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::DataType;
use datafusion::physical_plan::ExecutionPlan;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

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

/// The batches of the Parquet file at `memory:///<path>`.
async fn batches_at(ctx: &SessionContext, path: &str) -> Vec<RecordBatch> {
    ctx.read_parquet(format!("memory:///{path}"), Default::default())
        .await
        .unwrap()
        .collect()
        .await
        .unwrap()
}

/// (k, v) of the Parquet file at `memory:///<path>`, sorted.
async fn values(ctx: &SessionContext, path: &Path) -> Vec<(String, i64)> {
    let batches = batches_at(ctx, path.as_ref()).await;
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

/// An ingest staged as several files (an ingest by URI stages one per source file) is
/// decided by `_row`, whatever order the files are listed and read in: the write job sorts
/// by (keys, timestamp, `_row`) across files.
#[tokio::test]
async fn the_latest_row_wins_across_staged_files_read_in_any_order() {
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::prelude::ParquetReadOptions;
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let runtime = Arc::new(datafusion::execution::runtime_env::RuntimeEnv::default());
    runtime.register_object_store(&url::Url::parse("memory://").unwrap(), store.clone());
    let planner = crate::plan::Planner::new(crate::plan::session_config(2, 1 << 30), runtime);
    // File 0 holds the earlier row of ("a", 1), file 1 (listed first) the later one.
    let staged = |row: i64, value: i64| {
        RecordBatch::try_from_iter([
            (
                "k",
                Arc::new(Strings::from_iter_values(["a", "b"])) as ArrayRef,
            ),
            (
                "ts",
                Arc::new(TimestampMicrosecondArray::from_iter_values([1, 1]).with_timezone("UTC")),
            ),
            (
                ROW_COLUMN,
                Arc::new(Int64Array::from_iter_values([row, row + 1])),
            ),
            ("v", Arc::new(Int64Array::from_iter_values([value, value]))),
        ])
        .unwrap()
    };
    let mut files = Vec::new();
    for (name, row, value) in [("part-00001", 1i64 << 40, 800), ("part-00000", 0, 8)] {
        let batch = staged(row, value);
        let mut bytes = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let path = Path::from(format!("staging/{name}.parquet"));
        store.put(&path, bytes.into()).await.unwrap();
        files.push(format!("memory:///{path}"));
    }
    let scan = planner
        .ctx()
        .read_parquet(files, ParquetReadOptions::default())
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    let spec = IngestWriteSpec {
        table: "t".into(),
        keys: vec!["k".into()],
        timestamp: "ts".into(),
        columns: vec!["k".into(), "ts".into(), "v".into()],
        offline_table: None,
        latest_directory: Some("memory:///latest/".into()),
        seq: 1,
        ingested_at_micros: 1,
        buckets: None,
    };
    let plan = planner
        .optimize(Arc::new(IngestWriteExec::try_new(scan, spec).unwrap()))
        .unwrap();
    let shown = datafusion::physical_plan::displayable(plan.as_ref())
        .indent(true)
        .to_string();
    let out = collect(plan, planner.ctx().task_ctx()).await.unwrap();
    assert_eq!(sum_column(&out, "unique_rows").unwrap(), 2, "{shown}");
    let mut latest = Vec::new();
    let listed: Vec<_> =
        futures::TryStreamExt::try_collect::<Vec<_>>(store.list(Some(&Path::from("latest"))))
            .await
            .unwrap();
    for object in listed {
        latest.extend(values(planner.ctx(), &object.location).await);
    }
    latest.sort();
    assert_eq!(
        latest,
        vec![("a".to_string(), 800), ("b".to_string(), 800)],
        "{shown}"
    );
}

/// A staging task reads its own file and no other, as a Ballista task runs one partition
/// of a scan that lists every file: the index and rows it reports are its file's. (With
/// DataFusion's work stealing between file-scan partitions on, partition 0 run alone
/// drains its sibling's file too.)
#[tokio::test]
async fn a_staging_task_reads_only_its_own_file() {
    use crate::repository::{RepositoryFile, parse};
    use datafusion::config::CsvOptions;
    use datafusion::datasource::listing::PartitionedFile;
    use datafusion::datasource::physical_plan::{CsvSource, FileGroup, FileScanConfigBuilder};
    use datafusion::datasource::source::DataSourceExec;
    use datafusion::execution::object_store::ObjectStoreUrl;

    let definitions = parse(&[RepositoryFile {
        path: "r.toml".into(),
        content: r#"
[[entity]]
name = "user"
join_keys = ["user_id"]

[[feature_table]]
name = "t"
entities = ["user"]
timestamp_field = "ts"
schema = [
  { name = "user_id", type = "string" },
  { name = "ts", type = "timestamp" },
  { name = "n", type = "int64" },
]
"#
        .into(),
    }])
    .unwrap();
    let table = definitions.feature_tables[0].clone();
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let runtime = Arc::new(datafusion::execution::runtime_env::RuntimeEnv::default());
    runtime.register_object_store(&url::Url::parse("memory://").unwrap(), store.clone());
    let planner = crate::plan::Planner::new(crate::plan::session_config(2, 1 << 30), runtime);
    let mut files = Vec::new();
    let mut groups = Vec::new();
    for (name, rows) in [("a.csv", 1), ("b.csv", 2)] {
        let mut text = "user_id,ts,n\n".to_string();
        for r in 0..rows {
            text.push_str(&format!("u{r},2026-01-01T00:00:00Z,{r}\n"));
        }
        let path = Path::from(format!("in/{name}"));
        store.put(&path, text.into_bytes().into()).await.unwrap();
        let meta = store.head(&path).await.unwrap();
        groups.push(FileGroup::new(vec![PartitionedFile::from(meta)]));
        files.push(format!("memory:///in/{name}"));
    }
    let schema = table.arrow_schema(&definitions);
    let source = Arc::new(CsvSource::new(schema).with_csv_options(CsvOptions {
        has_header: Some(true),
        ..CsvOptions::default()
    }));
    let scan = DataSourceExec::from_data_source(
        FileScanConfigBuilder::new(ObjectStoreUrl::parse("memory://").unwrap(), source)
            .with_file_groups(groups)
            .build(),
    );
    let spec = StageSpec {
        table,
        definitions,
        drop_extra_columns: false,
        files,
        staging_directory: "memory:///staging/".into(),
    };
    let stage = Arc::new(StageExec::try_new(scan, spec).unwrap());
    // Partition 0 alone, as its own task.
    let batches: Vec<RecordBatch> =
        futures::TryStreamExt::try_collect(stage.execute(0, planner.ctx().task_ctx()).unwrap())
            .await
            .unwrap();
    let file = batches[0]
        .column(0)
        .as_primitive::<datafusion::arrow::datatypes::UInt64Type>()
        .value(0);
    let rows = batches[0]
        .column(1)
        .as_primitive::<datafusion::arrow::datatypes::UInt64Type>()
        .value(0);
    assert_eq!((file, rows), (0, 1), "partition 0 is a.csv and its one row");
    let staged = values_of(planner.ctx(), "staging/part-00000.parquet").await;
    assert_eq!(staged, vec![0], "{staged:?}");
}

/// The `_row` values of a staged Parquet file at `memory:///<path>`.
async fn values_of(ctx: &SessionContext, path: &str) -> Vec<i64> {
    batches_at(ctx, path)
        .await
        .iter()
        .flat_map(|b| {
            b.column_by_name(ROW_COLUMN)
                .unwrap()
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .values()
                .to_vec()
        })
        .collect()
}
