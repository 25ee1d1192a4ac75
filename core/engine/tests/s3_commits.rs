//! Delta commits on S3 stay exactly-once with concurrent writers.
//!
//! Two writers, each with its own S3 client, commit ingests to one new table at the same
//! time against a local S3 server (moto, started here): they race to create the table and
//! for every version after. Each writer also commits each ingest a second time, as a
//! retried job attempt would. Then the Delta log is read as raw JSON (not through
//! delta-rs) and the table through delta-rs's Python client: every file and every
//! ingest's transaction is in the log exactly once, the versions run without a gap, and
//! the table holds exactly the rows written.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::parquet::arrow::ArrowWriter;
use deltalake::kernel::Add;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;

use ftab_engine::offline::columns::offline_table_schema;
use ftab_engine::offline::{self, Committed};
use ftab_engine::storage::{ObjectStorage, StorageLayout};
use ftab_testkit::s3::S3Server;

const WRITERS: usize = 2;
const INGESTS: usize = 8;
const ROWS: usize = 5;

fn table_schema() -> Schema {
    Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("value", DataType::Int64, true),
    ])
}

/// Write one ingest's Parquet file into the table's directory; its add action.
async fn write_file(storage: &ObjectStorage, table: &Path, writer: usize, ingest: usize) -> Add {
    let full = offline_table_schema(&table_schema(), false);
    // The file holds every column but the partition column `_date`.
    let fields: Vec<Arc<Field>> = full
        .fields()
        .iter()
        .filter(|f| f.name() != "_date")
        .cloned()
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let n = ROWS;
    let micros = 1_764_000_000_000_000i64;
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|r| format!("w{writer}-i{ingest}-r{r}")),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values((0..n).map(|r| micros + r as i64))
                    .with_timezone("UTC"),
            ),
            Arc::new(Int64Array::from_iter_values((0..n).map(|r| r as i64))),
            Arc::new(Int64Array::from_iter_values((0..n).map(|_| ingest as i64))),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values((0..n).map(|_| micros))
                    .with_timezone("UTC"),
            ),
        ],
    )
    .unwrap();
    let mut bytes = Vec::new();
    let mut parquet = ArrowWriter::try_new(&mut bytes, schema, None).unwrap();
    parquet.write(&batch).unwrap();
    parquet.close().unwrap();
    let name = format!("_date=2025-11-24/w{writer}-i{ingest}.parquet");
    let size = bytes.len();
    storage
        .store
        .put(
            &table
                .clone()
                .join("_date=2025-11-24")
                .join(format!("w{writer}-i{ingest}.parquet")),
            bytes.into(),
        )
        .await
        .unwrap();
    serde_json::from_value(serde_json::json!({
        "path": name,
        "partitionValues": {"_date": "2025-11-24"},
        "size": size,
        "modificationTime": 0,
        "dataChange": true,
        "stats": serde_json::json!({"numRecords": n}).to_string(),
    }))
    .unwrap()
}

/// One writer: its own client, `INGESTS` ingests, each committed twice.
async fn writer(
    layout: StorageLayout,
    options: Vec<(String, String)>,
    url: url::Url,
    w: usize,
) -> Vec<Committed> {
    let storage = layout.open_with(options).unwrap();
    let table = Path::from_url_path(url.path()).unwrap();
    let schema = offline_table_schema(&table_schema(), false);
    let mut outcomes = Vec::new();
    for i in 0..INGESTS {
        let add = write_file(&storage, &table, w, i).await;
        let app_id = offline::ingest_app_id(&format!("w{w}-i{i}"));
        let seq = (w * INGESTS + i + 1) as i64;
        for _attempt in 0..2 {
            let committed = offline::commit_ingest(
                &storage,
                &url,
                &schema,
                None,
                vec![add.clone()],
                &app_id,
                seq,
                BTreeMap::new(),
            )
            .await
            .unwrap_or_else(|e| panic!("writer {w} ingest {i}: {e}"));
            outcomes.push(committed);
        }
    }
    outcomes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_commit_every_row_exactly_once() {
    let s3 = S3Server::start();
    s3.create_bucket("commits");
    let options: Vec<(String, String)> = s3
        .env()
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let layout = StorageLayout::new("s3://commits/ftab").unwrap();
    let url = url::Url::parse("s3://commits/ftab/offline/ws/t/g1/").unwrap();

    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(layout.clone(), options.clone(), url.clone(), w)))
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.extend(task.await.unwrap());
    }
    // Each ingest committed once and found committed once.
    let already = outcomes
        .iter()
        .filter(|c| matches!(c, Committed::Already))
        .count();
    assert_eq!(already, WRITERS * INGESTS, "{outcomes:?}");

    // The raw log: versions 0..n without a gap, each file added once, each ingest's
    // transaction once.
    let storage = layout.open_with(options.clone()).unwrap();
    let log = Path::from("ftab/offline/ws/t/g1/_delta_log");
    let mut versions: Vec<u64> = Vec::new();
    let mut adds: BTreeMap<String, usize> = BTreeMap::new();
    let mut transactions: BTreeMap<String, usize> = BTreeMap::new();
    let objects: Vec<_> = storage.store.list(Some(&log)).try_collect().await.unwrap();
    for object in objects {
        let name = object.location.filename().unwrap_or_default().to_string();
        let Some(version) = name.strip_suffix(".json") else {
            continue;
        };
        versions.push(version.parse().unwrap());
        let text = storage
            .store
            .get(&object.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        for line in String::from_utf8_lossy(&text).lines() {
            let action: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(add) = action.get("add") {
                *adds
                    .entry(add["path"].as_str().unwrap().to_string())
                    .or_default() += 1;
            }
            if let Some(txn) = action.get("txn") {
                *transactions
                    .entry(txn["appId"].as_str().unwrap().to_string())
                    .or_default() += 1;
            }
        }
    }
    versions.sort();
    let expected_versions: Vec<u64> = (0..(WRITERS * INGESTS) as u64).collect();
    assert_eq!(
        versions, expected_versions,
        "one version per ingest, no gap"
    );
    assert_eq!(adds.len(), WRITERS * INGESTS);
    assert!(
        adds.values().all(|&n| n == 1),
        "a file added twice: {adds:?}"
    );
    assert_eq!(transactions.len(), WRITERS * INGESTS);
    assert!(
        transactions.values().all(|&n| n == 1),
        "an ingest committed twice: {transactions:?}"
    );

    // delta-rs's Python client reads exactly the rows written.
    let script = r#"
import os, sys, deltalake
options = {k: os.environ[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_ALLOW_HTTP")}
table = deltalake.DeltaTable(sys.argv[1], storage_options=options).to_pyarrow_table()
ids = table.column("user_id").to_pylist()
print(len(ids), len(set(ids)), flush=True)
# delta-rs 1.x can abort in interpreter teardown ("terminate called without an active
# exception"); the answer is out, so leave without it.
os._exit(0)
"#;
    let output = Command::new("python3")
        .args(["-c", script, url.as_str()])
        .envs(s3.env())
        .output()
        .expect("run python3");
    assert!(
        output.status.success(),
        "delta-rs's Python client cannot read the table (run the tests with scripts/test.sh, which installs it): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows = (WRITERS * INGESTS * ROWS).to_string();
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("{rows} {rows}"),
        "every row once"
    );
}
