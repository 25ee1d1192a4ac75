//! What a user sends is what ftab keeps, and what it cannot keep it refuses whole: NaN and
//! infinities stored as sent, columns sent twice refused, idempotency keys that tell a
//! retry from different data, aborted uploads that store nothing, and offline files gone
//! from the store reported instead of silently read around.

mod common;

use std::sync::Arc;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{FlightData, FlightDescriptor};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::Float64Type;
use futures::{StreamExt, TryStreamExt};
use serde_json::json;

use common::{put, raw_action, start, training_set, wait_job, workspace_with_files};

const HOUR: i64 = 3_600_000_000;

const REPO: &str = r#"
[[entity]]
name = "user"
join_keys = ["user_id"]

[[feature_table]]
name = "scores"
entities = ["user"]
timestamp_field = "ts"
online = true
offline = true
schema = [
  { name = "user_id", type = "string" },
  { name = "ts", type = "timestamp" },
  { name = "w", type = "float64" },
]
"#;

fn scores(users: &[&str], ts: i64, values: &[Option<f64>]) -> RecordBatch {
    RecordBatch::try_from_iter([
        (
            "user_id",
            Arc::new(StringArray::from(users.to_vec())) as ArrayRef,
        ),
        (
            "ts",
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(users.iter().map(|_| ts))
                    .with_timezone("UTC"),
            ),
        ),
        ("w", Arc::new(Float64Array::from(values.to_vec()))),
    ])
    .unwrap()
}

fn ingest(key: Option<&str>) -> serde_json::Value {
    let mut command = json!({"workspace": "prod", "table": "scores"});
    if let Some(key) = key {
        command["idempotency_key"] = json!(key);
    }
    json!({ "ingest": command })
}

async fn setup(running: &mut common::Running) {
    let files = json!([{"path": "repo.toml", "content": REPO}]);
    workspace_with_files(&mut running.client, "prod", "live", files)
        .await
        .unwrap();
}

async fn ingested(running: &mut common::Running, command: serde_json::Value, batch: RecordBatch) {
    let answer = put(&mut running.client, command, vec![batch])
        .await
        .unwrap();
    let job = wait_job(&mut running.client, answer["job_id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "succeeded", "{job}");
}

async fn online_w(running: &mut common::Running, user: &str) -> serde_json::Value {
    let answer = raw_action(
        &mut running.client,
        "get_online",
        &json!({"workspace": "prod", "table": "scores", "keys": {"user_id": user}}).to_string(),
    )
    .await
    .unwrap();
    answer["features"][0][1].clone()
}

/// Store spine `name`: `users` at time `t`.
async fn store_spine(running: &mut common::Running, name: &str, users: &[&str], t: i64) {
    let spine = RecordBatch::try_from_iter([
        (
            "user_id",
            Arc::new(StringArray::from(users.to_vec())) as ArrayRef,
        ),
        (
            "t",
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(users.iter().map(|_| t))
                    .with_timezone("UTC"),
            ),
        ),
    ])
    .unwrap();
    put(
        &mut running.client,
        json!({"spine": {"name": name}}),
        vec![spine],
    )
    .await
    .unwrap();
}

async fn jobs(running: &mut common::Running) -> Vec<serde_json::Value> {
    raw_action(&mut running.client, "list_jobs", &json!({}).to_string())
        .await
        .unwrap()["jobs"]
        .as_array()
        .unwrap()
        .clone()
}

/// `[2.5, NaN, 2.5]` came back as `[2.5, 2.5, 2.5]` offline and online, `[NaN, inf]` as
/// `[inf, inf]`: Parquet statistics leave NaN out, and DataFusion read a column whose
/// min equals its max as that constant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nan_and_infinities_are_stored_as_sent() {
    let mut running = start().await;
    setup(&mut running).await;
    let now = chrono::Utc::now().timestamp_micros();
    ingested(
        &mut running,
        ingest(None),
        scores(
            &["a", "b", "c"],
            now - 2 * HOUR,
            &[Some(2.5), Some(f64::NAN), Some(2.5)],
        ),
    )
    .await;
    ingested(
        &mut running,
        ingest(None),
        scores(
            &["d", "e"],
            now - HOUR,
            &[Some(f64::NAN), Some(f64::INFINITY)],
        ),
    )
    .await;
    let want = [
        ("a", json!(2.5)),
        ("b", json!("NaN")),
        ("c", json!(2.5)),
        ("d", json!("NaN")),
        ("e", json!("Infinity")),
    ];
    for (user, value) in &want {
        assert_eq!(&online_w(&mut running, user).await, value, "online {user}");
    }

    store_spine(&mut running, "s", &["a", "b", "c", "d", "e"], now).await;
    let (_, batches) = training_set(
        &mut running.client,
        json!({"training_set": {"workspace": "prod", "features": ["scores.w"], "spine": {"name": "s"}}}),
    )
    .await
    .unwrap();
    let mut got: Vec<(String, String)> = Vec::new();
    for b in &batches {
        let users = b.column(0).as_string::<i32>();
        let w = b
            .column_by_name("scores__w")
            .unwrap()
            .as_primitive::<Float64Type>();
        for i in 0..b.num_rows() {
            got.push((users.value(i).to_string(), w.value(i).to_string()));
        }
    }
    got.sort();
    assert_eq!(
        got,
        [
            ("a", "2.5"),
            ("b", "NaN"),
            ("c", "2.5"),
            ("d", "NaN"),
            ("e", "inf")
        ]
        .map(|(u, w)| (u.to_string(), w.to_string()))
    );
    running.stop().await;
}

/// Two columns of one name were accepted and the second dropped without a word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_column_sent_twice_is_refused() {
    let mut running = start().await;
    setup(&mut running).await;
    let good = scores(&["a"], 0, &[Some(1.0)]);
    let mut fields: Vec<_> = good.schema().fields().iter().cloned().collect();
    let mut columns = good.columns().to_vec();
    fields.push(Arc::new(datafusion::arrow::datatypes::Field::new(
        "user_id",
        datafusion::arrow::datatypes::DataType::Utf8,
        true,
    )));
    columns.push(Arc::new(StringArray::from(vec!["b"])));
    let twice = RecordBatch::try_new(
        Arc::new(datafusion::arrow::datatypes::Schema::new(fields)),
        columns,
    )
    .unwrap();
    let status = put(&mut running.client, ingest(None), vec![twice.clone()])
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
    assert!(
        status
            .message()
            .contains("`user_id` appears more than once"),
        "{status}"
    );
    let status = put(
        &mut running.client,
        json!({"spine": {"name": "s"}}),
        vec![twice],
    )
    .await
    .unwrap_err();
    assert!(
        status.message().contains("appears more than once"),
        "{status}"
    );
    assert!(jobs(&mut running).await.is_empty());
    running.stop().await;
}

/// A retry of the same rows (however batched) replays the first ingest; other rows under
/// a used key are refused and stored nowhere. Before, any upload under a used key was
/// answered `replayed: true` and dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_replays_the_same_rows_and_refuses_others() {
    let mut running = start().await;
    setup(&mut running).await;
    let now = chrono::Utc::now().timestamp_micros();
    let rows = scores(&["a", "b", "c"], now - HOUR, &[Some(1.0), None, Some(3.0)]);
    let first = put(&mut running.client, ingest(Some("k1")), vec![rows.clone()])
        .await
        .unwrap();
    assert_eq!(first["replayed"], false);
    wait_job(&mut running.client, first["job_id"].as_str().unwrap()).await;

    let retry = put(
        &mut running.client,
        ingest(Some("k1")),
        vec![rows.slice(0, 1), rows.slice(1, 2)],
    )
    .await
    .unwrap();
    assert_eq!(retry["replayed"], true, "{retry}");
    assert_eq!(retry["ingest_id"], first["ingest_id"]);

    for other in [
        scores(&["a", "b", "c"], now - HOUR, &[Some(1.0), None, Some(3.5)]),
        scores(&["a", "b"], now - HOUR, &[Some(1.0), None]),
        scores(
            &["a", "b", "c"],
            now - 2 * HOUR,
            &[Some(1.0), None, Some(3.0)],
        ),
    ] {
        let status = put(&mut running.client, ingest(Some("k1")), vec![other])
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status}");
        assert!(
            status
                .message()
                .contains("idempotency key `k1` was already used for ingest")
                && status.message().contains("with different data")
                && status.message().contains("under a new key"),
            "{status}"
        );
    }
    assert_eq!(jobs(&mut running).await.len(), 1, "one ingest recorded");
    assert_eq!(online_w(&mut running, "c").await, json!(3.0));
    running.stop().await;
}

/// An upload the client aborts half-way (its source failed) stores nothing: the
/// scheduler cannot tell a stream that simply ends from a complete one, so the client
/// says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_upload_stores_nothing() {
    let mut running = start().await;
    setup(&mut running).await;
    let batch = scores(&["a", "b"], 0, &[Some(1.0), Some(2.0)]);
    let descriptor = FlightDescriptor::new_cmd(ingest(Some("k")).to_string());
    let data = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(descriptor))
        .build(futures::stream::iter([Ok(batch.clone()), Ok(batch)]))
        .chain(futures::stream::once(async {
            Ok(FlightData {
                app_metadata: br#"{"abort": {"reason": "line 9 of day.csv: bad float"}}"#
                    .to_vec()
                    .into(),
                ..Default::default()
            })
        }));
    let result: Result<Vec<_>, _> = match running.client.do_put(data).await {
        Ok(stream) => stream.try_collect().await,
        Err(e) => Err(e),
    };
    let message = result.unwrap_err().to_string();
    assert!(
        message.contains(
            "the client aborted the upload: line 9 of day.csv: bad float; nothing was stored"
        ),
        "{message}"
    );
    assert!(jobs(&mut running).await.is_empty());
    let staging = running.dir.path().join("data/store/staging");
    assert_eq!(common::files_under(&staging), 0, "nothing staged");
    // The key is still free.
    let answer = put(
        &mut running.client,
        ingest(Some("k")),
        vec![scores(&["a"], 0, &[Some(1.0)])],
    )
    .await
    .unwrap();
    assert_eq!(answer["replayed"], false);
    running.stop().await;
}

/// A file the Delta log names and the store lacks: the training set read around it and
/// answered fewer features with no error. It is data loss, named with the table, version
/// and file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_file_missing_from_the_store_is_an_error() {
    let mut running = start().await;
    setup(&mut running).await;
    let now = chrono::Utc::now().timestamp_micros();
    ingested(
        &mut running,
        ingest(None),
        scores(&["a", "b"], now - HOUR, &[Some(1.0), Some(2.0)]),
    )
    .await;
    store_spine(&mut running, "s", &["a", "b"], now).await;
    let request = json!({"training_set": {"workspace": "prod", "features": ["scores"], "spine": {"name": "s"}}});
    let (_, batches) = training_set(&mut running.client, request.clone())
        .await
        .unwrap();
    let values: usize = batches
        .iter()
        .map(|b| b.num_rows() - b.column(2).null_count())
        .sum();
    assert_eq!(values, 2);

    let table_dir = running.dir.path().join("data/store/offline/prod/scores");
    let moved = common::find_files(&table_dir, ".parquet")
        .into_iter()
        .next()
        .expect("the table has a Parquet file");
    std::fs::rename(&moved, running.dir.path().join("moved.parquet")).unwrap();
    let status = training_set(&mut running.client, request)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::DataLoss, "{status}");
    let name = moved.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        status
            .message()
            .contains("feature table `scores` at Delta version 0")
            && status.message().contains(&name)
            && status.message().contains("the object store does not have"),
        "{status}"
    );
    running.stop().await;
}

/// Ingest rows with `w = 2k`, then the same keys and timestamps with `w = 2k + 1`: the
/// later ingest wins every tie, offline as online. The files pass 1 MiB, where DataFusion
/// once re-cut the bucketed scan; with one bucket far larger than the other, the cut
/// moved one of the large bucket's two files to the other partition, and the bucket then
/// answered the earlier ingest's value whenever the moved file was the later one (the
/// order of a bucket's files follows their random names, so some tables showed it and
/// others not). Four tables make the old code fail here with probability 15/16 (the
/// randomized suite of `realistic_shapes.rs` fails on it every time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ties_across_large_ingests_go_to_the_later_one() {
    let mut running = start().await;
    let tables = ["t1", "t2", "t3", "t4"];
    let mut repo = String::from("[[entity]]\nname = \"user\"\njoin_keys = [\"user_id\"]\n");
    for table in tables {
        repo.push_str(&format!(
            "[[feature_table]]\nname = \"{table}\"\nentities = [\"user\"]\ntimestamp_field = \"ts\"\nonline = true\noffline = true\nschema = [{{ name = \"user_id\", type = \"string\" }}, {{ name = \"ts\", type = \"timestamp\" }}, {{ name = \"w\", type = \"float64\" }}]\n"
        ));
    }
    let files = json!([{"path": "repo.toml", "content": repo}]);
    workspace_with_files(&mut running.client, "prod", "live", files)
        .await
        .unwrap();
    // 60,000 keys of bucket 1 and 600 of bucket 0 (of the 2 a default scheduler here has).
    let mut users: Vec<String> = Vec::new();
    let (mut big, mut small) = (0, 0);
    for i in 0.. {
        let user = format!("user_{i:07}");
        let key: ArrayRef = Arc::new(StringArray::from(vec![user.as_str()]));
        let bucket = ftab_engine::plan::bucket::bucket_ids(&[key], 2)
            .unwrap()
            .value(0);
        if bucket == 1 && big < 60_000 {
            big += 1;
            users.push(user);
        } else if bucket == 0 && small < 600 {
            small += 1;
            users.push(user);
        }
        if big == 60_000 && small == 600 {
            break;
        }
    }
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    let now = chrono::Utc::now().timestamp_micros();
    let at = now - HOUR;
    for table in tables {
        for ingest in 0..2 {
            let values: Vec<Option<f64>> = (0..names.len())
                .map(|k| Some((2 * k + ingest) as f64))
                .collect();
            let batch = scores(&names, at, &values);
            let slices: Vec<RecordBatch> = (0..names.len())
                .step_by(20_000)
                .map(|first| batch.slice(first, (names.len() - first).min(20_000)))
                .collect();
            let command = json!({"ingest": {"workspace": "prod", "table": table}});
            let answer = put(&mut running.client, command, slices).await.unwrap();
            let job = wait_job(&mut running.client, answer["job_id"].as_str().unwrap()).await;
            assert_eq!(job["state"], "succeeded", "{job}");
        }
        let table_dir = running
            .dir
            .path()
            .join(format!("data/store/offline/prod/{table}"));
        let bytes: u64 = common::find_files(&table_dir, ".parquet")
            .iter()
            .map(|f| std::fs::metadata(f).unwrap().len())
            .sum();
        assert!(
            bytes > 1 << 20,
            "{bytes} bytes: below the size that showed the bug"
        );
    }

    store_spine(&mut running, "all", &names, now).await;
    let (_, batches) = training_set(
        &mut running.client,
        json!({"training_set": {"workspace": "prod", "features": tables, "spine": {"name": "all"}}}),
    )
    .await
    .unwrap();
    let index_of: std::collections::HashMap<&str, usize> =
        names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let mut rows = 0;
    for table in tables {
        let mut earlier = 0;
        for b in &batches {
            let users = b.column(0).as_string::<i32>();
            let w = b
                .column_by_name(&format!("{table}__w"))
                .unwrap()
                .as_primitive::<Float64Type>();
            for i in 0..b.num_rows() {
                let index = index_of[users.value(i)];
                if w.is_null(i) || w.value(i) != (2 * index + 1) as f64 {
                    earlier += 1;
                }
            }
        }
        assert_eq!(
            earlier, 0,
            "{table}: {earlier} rows did not answer the later ingest's value"
        );
        rows = batches.iter().map(|b| b.num_rows()).sum::<usize>();
    }
    assert_eq!(rows, names.len());
    for user in [names[0], names[30_000], names[names.len() - 1]] {
        let index = index_of[user];
        let answer = raw_action(
            &mut running.client,
            "get_online",
            &json!({"workspace": "prod", "table": "t1", "keys": {"user_id": user}}).to_string(),
        )
        .await
        .unwrap();
        assert_eq!(
            answer["features"][0][1],
            json!((2 * index + 1) as f64),
            "online {user}"
        );
    }
    running.stop().await;
}
