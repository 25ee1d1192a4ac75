//! Ingest end to end inside one scheduler: DoPut, staging, the job on DataFusion, the Delta
//! offline table and the embedded online store, with last-write-wins across ingests.

mod common;

use std::sync::Arc;

use common::{example_files, put, raw_action, start, wait_job, workspace_with_files};
use datafusion::arrow::array::{
    ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::prelude::SessionContext;
use ftab_engine::online::{KeyValue, OnlineTable};
use ftab_model::names::{TableName, WorkspaceName};
use serde_json::json;

const DAY: i64 = 86_400_000_000;

/// A batch of user_login_counts rows: (user_id, timestamp µs, count_7d).
fn logins(rows: &[(&str, i64, i64)]) -> RecordBatch {
    RecordBatch::try_from_iter([
        (
            "user_id",
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))) as ArrayRef,
        ),
        (
            "timestamp",
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1))
                    .with_timezone("UTC"),
            ),
        ),
        (
            "user_login_count_7d",
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
        ),
        (
            "user_login_count_30d",
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2 * 4))),
        ),
    ])
    .unwrap()
}

async fn setup(client: &mut arrow_flight::FlightClient, kind: &str) {
    workspace_with_files(client, "prod", kind, example_files())
        .await
        .unwrap();
}

fn ingest_command() -> serde_json::Value {
    json!({"ingest": {"workspace": "prod", "table": "user_login_counts"}})
}

/// Rows of the offline Delta table as (user_id, timestamp, count_7d, _seq), sorted.
async fn offline_rows(running: &common::Running) -> Vec<(String, i64, i64, i64)> {
    let url = running.storage.offline_table(
        &WorkspaceName::new("prod").unwrap(),
        &TableName::new("user_login_counts").unwrap(),
        1,
    );
    let table = deltalake::open_table(url).await.unwrap();
    let ctx = SessionContext::new();
    ctx.register_table("t", table.table_provider().await.unwrap())
        .unwrap();
    let batches = ctx
        .sql("SELECT user_id, CAST(timestamp AS BIGINT) AS ts, user_login_count_7d, _seq FROM t ORDER BY user_id, ts, _seq")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let mut out = Vec::new();
    for b in batches {
        let ids = datafusion::arrow::compute::cast(
            b.column(0),
            &datafusion::arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        let ids = ids.as_any().downcast_ref::<StringArray>().unwrap();
        let ts = b.column(1).as_any().downcast_ref::<Int64Array>().unwrap();
        let counts = b.column(2).as_any().downcast_ref::<Int64Array>().unwrap();
        let seqs = b.column(3).as_any().downcast_ref::<Int64Array>().unwrap();
        for i in 0..b.num_rows() {
            out.push((
                ids.value(i).to_string(),
                ts.value(i),
                counts.value(i),
                seqs.value(i),
            ));
        }
    }
    out
}

/// The online record of a user: (timestamp, seq, count_7d).
async fn online(running: &common::Running, user: &str) -> Option<(i64, u64, i64)> {
    let repo = ftab_model::repository::read_dir(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/feature_repo"),
    )
    .unwrap();
    let defs = ftab_model::repository::parse(&repo).unwrap();
    let table = OnlineTable::new(
        WorkspaceName::new("prod").unwrap(),
        defs.feature_table("user_login_counts").unwrap(),
        &defs,
        1,
    );
    let keys = [vec![KeyValue::String(user.into())]];
    let now = chrono::Utc::now().timestamp_micros();
    let records = running.online.read(&table, &keys, now).await.unwrap();
    records
        .into_iter()
        .next()
        .unwrap()
        .map(|r| (r.timestamp, r.seq, r.features[0].as_i64().unwrap()))
}

#[tokio::test]
async fn last_write_wins_within_and_across_ingests_offline_and_online() {
    let mut running = start().await;
    let client = &mut running.client;
    setup(client, "live").await;
    let now = chrono::Utc::now().timestamp_micros();
    let t1 = now - 2 * DAY;
    let t2 = now - DAY;

    // Ingest 1: u1 twice at the same timestamp (the later row wins), u2 once.
    let first = put(
        client,
        ingest_command(),
        vec![
            logins(&[("u1", t1, 1), ("u2", t1, 10)]),
            logins(&[("u1", t1, 2)]),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        (first["rows"].as_u64(), first["seq"].as_u64()),
        (Some(3), Some(1))
    );
    let job = wait_job(client, first["job_id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["counts"]["duplicates_dropped"], 1, "{job}");
    assert_eq!(job["counts"]["offline_rows_committed"], 2, "{job}");
    assert_eq!(job["counts"]["online_rows_written"], 2, "{job}");

    // Ingest 2: u1 at an older timestamp (stored offline, loses online), u2 at the same
    // timestamp (the later ingest wins), u3 expired (older than the 30-day ttl).
    let second = put(
        client,
        ingest_command(),
        vec![logins(&[
            ("u1", t1 - DAY, 3),
            ("u2", t1, 20),
            ("u3", now - 40 * DAY, 30),
        ])],
    )
    .await
    .unwrap();
    let job = wait_job(client, second["job_id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["counts"]["online_rows_written"], 1, "{job}");
    assert_eq!(job["counts"]["online_skipped_older"], 1, "{job}");
    assert_eq!(job["counts"]["online_skipped_expired"], 1, "{job}");

    // Ingest 3: u1 newer.
    let third = put(client, ingest_command(), vec![logins(&[("u1", t2, 4)])])
        .await
        .unwrap();
    assert_eq!(
        wait_job(client, third["job_id"].as_str().unwrap()).await["state"],
        "succeeded"
    );

    assert_eq!(
        offline_rows(&running).await,
        vec![
            ("u1".to_string(), t1 - DAY, 3, 2),
            ("u1".to_string(), t1, 2, 1),
            ("u1".to_string(), t2, 4, 3),
            ("u2".to_string(), t1, 10, 1),
            ("u2".to_string(), t1, 20, 2),
            ("u3".to_string(), now - 40 * DAY, 30, 2),
        ],
        "every accepted row once, duplicates across ingests kept"
    );
    assert_eq!(online(&running, "u1").await, Some((t2, 3, 4)));
    assert_eq!(online(&running, "u2").await, Some((t1, 2, 20)));
    assert_eq!(online(&running, "u3").await, None);

    let staging = running.dir.path().join("data/store/staging");
    assert_eq!(
        common::files_under(&staging),
        0,
        "staged data is removed once the job succeeds"
    );
    running.stop().await;
}

#[tokio::test]
async fn refusals_leave_nothing_behind_and_idempotency_keys_replay() {
    let mut running = start().await;
    let client = &mut running.client;
    setup(client, "live").await;
    let now = chrono::Utc::now().timestamp_micros();

    // Clients declare key columns nullable; the nulls come in the second batch.
    let nullable_keys = |keys: Vec<Option<&str>>| {
        let n = keys.len();
        RecordBatch::try_from_iter_with_nullable([
            (
                "user_id",
                Arc::new(StringArray::from(keys)) as ArrayRef,
                true,
            ),
            (
                "timestamp",
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(vec![now; n]).with_timezone("UTC"),
                ),
                false,
            ),
            (
                "user_login_count_7d",
                Arc::new(Int64Array::from(vec![1; n])),
                true,
            ),
            (
                "user_login_count_30d",
                Arc::new(Int64Array::from(vec![1; n])),
                true,
            ),
        ])
        .unwrap()
    };
    let batches = vec![
        nullable_keys(vec![Some("x"), Some("y")]),
        nullable_keys(vec![Some("a"), None, None]),
    ];
    let status = put(client, ingest_command(), batches).await.unwrap_err();
    assert_eq!(
        status.code(),
        tonic::Code::InvalidArgument,
        "{}",
        status.message()
    );
    assert!(
        status
            .message()
            .contains("column `user_id` has 2 null values (first at row 3)"),
        "{}",
        status.message()
    );

    let status = put(
        client,
        json!({"ingest": {"workspace": "prod", "table": "nope"}}),
        vec![logins(&[("x", now, 1)])],
    )
    .await
    .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);

    let keyed = json!({"ingest": {"workspace": "prod", "table": "user_login_counts", "idempotency_key": "batch-7"}});
    let first = put(client, keyed.clone(), vec![logins(&[("k", now, 1)])])
        .await
        .unwrap();
    let again = put(client, keyed, vec![logins(&[("k", now, 1)])])
        .await
        .unwrap();
    assert_eq!(again["ingest_id"], first["ingest_id"]);
    assert_eq!(again["job_id"], first["job_id"]);
    assert_eq!(again["replayed"], true);
    wait_job(client, first["job_id"].as_str().unwrap()).await;

    let jobs = raw_action(client, "list_jobs", "{}").await.unwrap();
    assert_eq!(
        jobs["jobs"].as_array().unwrap().len(),
        1,
        "refused ingests record no job: {jobs}"
    );
    let staging = running.dir.path().join("data/store/staging");
    assert_eq!(
        common::files_under(&staging),
        0,
        "refused ingests leave no staged data"
    );
    running.stop().await;
}

#[tokio::test]
async fn dev_workspaces_refuse_ingests() {
    let mut running = start().await;
    let client = &mut running.client;
    setup(client, "dev").await;
    let now = chrono::Utc::now().timestamp_micros();
    let status = put(client, ingest_command(), vec![logins(&[("x", now, 1)])])
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(
        status.message().contains("is a dev workspace"),
        "{}",
        status.message()
    );
    running.stop().await;
}

#[tokio::test]
async fn online_and_offline_flags_are_respected() {
    let mut running = start().await;
    let client = &mut running.client;
    raw_action(
        client,
        "create_workspace",
        &json!({"name": "prod", "kind": "live"}).to_string(),
    )
    .await
    .unwrap();
    let repo = |online: bool, offline: bool| {
        json!([{"path": "flags.toml", "content": format!(r#"
[[entity]]
name = "user"
join_keys = ["user_id"]

[[feature_table]]
name = "user_login_counts"
entities = ["user"]
timestamp_field = "timestamp"
online = {online}
offline = {offline}
schema = [
  {{ name = "user_id", type = "string" }},
  {{ name = "timestamp", type = "timestamp" }},
  {{ name = "user_login_count_7d", type = "int64" }},
  {{ name = "user_login_count_30d", type = "int64" }},
]
"#)}])
    };
    let now = chrono::Utc::now().timestamp_micros();

    // Offline only: no online load.
    raw_action(
        client,
        "apply",
        &json!({"workspace": "prod", "files": repo(false, true)}).to_string(),
    )
    .await
    .unwrap();
    let answer = put(client, ingest_command(), vec![logins(&[("u1", now, 1)])])
        .await
        .unwrap();
    let job = wait_job(client, answer["job_id"].as_str().unwrap()).await;
    assert_eq!(
        job["steps"],
        json!({"offline_commit": "done", "online_load": "skipped"}),
        "{job}"
    );
    assert_eq!(job["counts"]["online_rows_written"], 0);
    let status = raw_action(
        client,
        "get_online",
        &json!({"workspace": "prod", "table": "user_login_counts", "keys": {"user_id": "u1"}})
            .to_string(),
    )
    .await
    .unwrap_err();
    assert!(
        status.message().contains("is not online"),
        "{}",
        status.message()
    );

    // Online only: nothing offline.
    raw_action(
        client,
        "apply",
        &json!({"workspace": "prod", "files": repo(true, false)}).to_string(),
    )
    .await
    .unwrap();
    let answer = put(client, ingest_command(), vec![logins(&[("u2", now, 2)])])
        .await
        .unwrap();
    let job = wait_job(client, answer["job_id"].as_str().unwrap()).await;
    assert_eq!(
        job["steps"],
        json!({"offline_commit": "skipped", "online_load": "done"}),
        "{job}"
    );
    assert_eq!(online(&running, "u2").await.map(|r| r.2), Some(2));
    assert_eq!(
        offline_rows(&running).await.len(),
        1,
        "only the first ingest is offline"
    );
    running.stop().await;
}
