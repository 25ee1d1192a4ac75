//! Training sets end to end inside one scheduler: the golden cases of `tests/golden/` (one
//! rule each, as data) and a randomized comparison with a brute-force reference.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::FlightClient;
use chrono::{SecondsFormat, Utc};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use ftab_engine::plan::JoinChoice;
use serde::Deserialize;
use serde_json::json;

use common::pipe_table::{Type, canonical, pipe_table};
use common::{connect, put, training_set, wait_job, workspace_with_files};

// ---------------------------------------------------------------------------------------
// The golden cases.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    description: String,
    repo: Option<String>,
    #[serde(default)]
    ingest: Vec<Ingest>,
    request: Request,
}

impl common::golden::GoldenCase for Case {
    fn description(&self) -> &str {
        &self.description
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ingest {
    table: String,
    rows: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Request {
    feature_service: Option<String>,
    features: Option<Vec<String>>,
    timestamp_column: Option<String>,
    full_feature_names: Option<bool>,
    as_of: Option<toml::Value>,
    as_of_after_ingest: Option<usize>,
    spine: String,
    expected: Option<String>,
    error: Option<String>,
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Column types of every feature table of a repository, by table.
fn table_types(repo: &str) -> BTreeMap<String, BTreeMap<String, Type>> {
    let files = vec![ftab_model::repository::RepositoryFile {
        path: "repo.toml".into(),
        content: repo.into(),
    }];
    let definitions = ftab_model::repository::parse(&files).expect("the golden repository parses");
    definitions
        .feature_tables
        .iter()
        .map(|t| {
            let columns = t
                .schema
                .iter()
                .map(|c| {
                    let ty = match c.value_type.to_string().as_str() {
                        "string" => Type::String,
                        "int32" => Type::Int32,
                        "int64" => Type::Int64,
                        "float64" => Type::Float64,
                        "bool" => Type::Bool,
                        "timestamp" => Type::Timestamp,
                        other => panic!("no golden type for {other}"),
                    };
                    (c.name.to_string(), ty)
                })
                .collect();
            (t.name.to_string(), columns)
        })
        .collect()
}

/// Run one case in its own workspace; `Err` says how it failed.
async fn run_case(url: &str, name: &str, case: &Case) -> Result<(), String> {
    let mut client = connect(url).await;
    let client = &mut client;
    let workspace = name.to_string();
    let repo = case.repo.clone().unwrap_or_else(|| {
        std::fs::read_to_string(golden_dir().join("repo.toml")).expect("golden repo.toml")
    });
    let types = table_types(&repo);
    let files = json!([{"path": "repo.toml", "content": repo}]);
    workspace_with_files(client, &workspace, "live", files)
        .await
        .map_err(|e| format!("create_workspace and apply: {e}"))?;

    let mut after_ingest = Vec::new();
    for (i, ingest) in case.ingest.iter().enumerate() {
        let columns = types
            .get(&ingest.table)
            .ok_or_else(|| format!("ingest {}: no table `{}`", i + 1, ingest.table))?;
        let batch = pipe_table(&ingest.rows).batch(columns);
        let answer = put(
            client,
            json!({"ingest": {"workspace": workspace, "table": ingest.table}}),
            vec![batch],
        )
        .await
        .map_err(|e| format!("ingest {}: {e}", i + 1))?;
        let job = wait_job(client, answer["job_id"].as_str().unwrap()).await;
        if job["state"] != "succeeded" {
            return Err(format!("ingest {} job did not succeed: {job}", i + 1));
        }
        after_ingest.push(Utc::now());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let request = &case.request;
    let spine = pipe_table(&request.spine).batch(&BTreeMap::new());
    match put(client, json!({"spine": {"name": workspace}}), vec![spine]).await {
        Ok(_) => {}
        // A spine the upload refuses is a case's expected error too.
        Err(status)
            if request
                .error
                .as_ref()
                .is_some_and(|e| status.message().contains(e.as_str())) =>
        {
            return Ok(());
        }
        Err(status) => return Err(format!("spine upload: {status}")),
    }
    let mut command = json!({"workspace": workspace, "spine": {"name": workspace}});
    if let Some(service) = &request.feature_service {
        command["feature_service"] = json!(service);
    }
    if let Some(features) = &request.features {
        command["features"] = json!(features);
    }
    if let Some(column) = &request.timestamp_column {
        command["timestamp_column"] = json!(column);
    }
    if let Some(full) = request.full_feature_names {
        command["full_feature_names"] = json!(full);
    }
    if let Some(as_of) = &request.as_of {
        command["as_of"] = serde_json::to_value(as_of).unwrap();
    }
    if let Some(n) = request.as_of_after_ingest {
        let at = after_ingest
            .get(n - 1)
            .ok_or_else(|| format!("as_of_after_ingest = {n}, but there are fewer ingests"))?;
        command["as_of"] = json!(at.to_rfc3339_opts(SecondsFormat::Micros, true));
    }
    let answer = training_set(client, json!({"training_set": command})).await;
    match (&request.expected, &request.error, answer) {
        (Some(expected), None, Ok((info, batches))) => {
            let expected = pipe_table(expected).batch(&BTreeMap::new());
            let (want_header, want_rows) = canonical(&[expected]);
            let (got_header, got_rows) = canonical(&batches);
            if !batches.is_empty() && want_header != got_header {
                return Err(format!(
                    "columns differ:\n  expected {want_header:?}\n  got      {got_header:?}"
                ));
            }
            if want_rows != got_rows {
                return Err(format!(
                    "rows differ:\n  expected {want_rows:?}\n  got      {got_rows:?}"
                ));
            }
            if info["rows"].as_u64() != Some(want_rows.len() as u64) {
                return Err(format!(
                    "FlightInfo counts {} rows, expected {}",
                    info["rows"],
                    want_rows.len()
                ));
            }
            Ok(())
        }
        (None, Some(error), Err(status)) => {
            if status.message().contains(error.as_str()) {
                Ok(())
            } else {
                Err(format!(
                    "refused with another message:\n  expected to contain: {error}\n  got: {} ({:?})",
                    status.message(),
                    status.code()
                ))
            }
        }
        (Some(_), None, Err(status)) => Err(format!(
            "refused: {} ({:?})",
            status.message(),
            status.code()
        )),
        (None, Some(error), Ok((_, batches))) => Err(format!(
            "expected an error containing `{error}`, got {} rows",
            batches.iter().map(|b| b.num_rows()).sum::<usize>()
        )),
        _ => Err("a case gives exactly one of `expected` and `error`".into()),
    }
}

/// Every golden case, with the join the default picks for these small spines (the
/// spine-index join).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn golden_cases() {
    golden_cases_with(JoinChoice::Auto).await;
}

/// Every golden case again with the sort-merge join, which large spines take.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn golden_cases_sort_merge() {
    golden_cases_with(JoinChoice::SortMerge).await;
}

async fn golden_cases_with(join: JoinChoice) {
    let running = common::start_with(tempfile::tempdir().unwrap(), |config| {
        config.training_set_join = join;
    })
    .await;
    let url = running.url.clone();
    let what = format!("golden (join {join:?})");
    common::golden::run_all(&golden_dir(), 20, &what, |name, case: Case| {
        let url = url.clone();
        async move { run_case(&url, &name, &case).await }
    })
    .await;
    running.stop().await;
}

// ---------------------------------------------------------------------------------------
// Randomized comparison with a brute-force reference.

use common::Rng;

/// One stored feature row: (key, timestamp, seq, row in its ingest, value).
type Stored = (String, i64, u64, u64, i64);

/// The rule, written plainly: for each spine row, among the rows with its key and
/// timestamp <= t (and >= t - ttl), the greatest by (timestamp, seq, row).
fn reference(
    stored: &[Stored],
    spine: &[(String, i64)],
    ttl: Option<i64>,
) -> Vec<(String, i64, Option<i64>)> {
    let mut by_key: BTreeMap<&str, Vec<&Stored>> = BTreeMap::new();
    for s in stored {
        by_key.entry(s.0.as_str()).or_default().push(s);
    }
    spine
        .iter()
        .map(|(key, t)| {
            let best = by_key
                .get(key.as_str())
                .into_iter()
                .flatten()
                .filter(|s| s.1 <= *t && ttl.is_none_or(|ttl| s.1 >= t - ttl))
                .max_by_key(|s| (s.1, s.2, s.3));
            (key.clone(), *t, best.map(|s| s.4))
        })
        .collect()
}

async fn randomized(seed: u64, ttl_seconds: Option<i64>, join: JoinChoice) {
    randomized_sized(seed, ttl_seconds, 40, 150, None, join).await;
}

/// `rows` feature rows per ingest (and as many again at random), `spine_rows` spine rows;
/// with `memory_limit`, the scheduler's jobs get that many bytes before they spill; `join`
/// is the scheduler's `training_set_join`.
async fn randomized_sized(
    seed: u64,
    ttl_seconds: Option<i64>,
    rows: u64,
    spine_rows: usize,
    memory_limit: Option<u64>,
    join: JoinChoice,
) {
    let mut running = common::start_with(tempfile::tempdir().unwrap(), |config| {
        if let Some(limit) = memory_limit {
            config.memory_limit = limit;
        }
        config.training_set_join = join;
    })
    .await;
    let spill_dir = running.dir.path().join("data").join("spill");
    let client: &mut FlightClient = &mut running.client;
    let ttl = ttl_seconds
        .map(|s| format!("ttl = \"{s}s\""))
        .unwrap_or_default();
    let repo = format!(
        r#"
[[entity]]
name = "user"
join_keys = ["user_id"]

[[feature_table]]
name = "events"
entities = ["user"]
timestamp_field = "ts"
online = false
{ttl}
schema = [
  {{ name = "user_id", type = "string" }},
  {{ name = "ts", type = "timestamp" }},
  {{ name = "value", type = "int64" }},
]
"#
    );
    let files = json!([{"path": "r.toml", "content": repo}]);
    workspace_with_files(client, "prod", "live", files)
        .await
        .unwrap();

    let mut rng = Rng(seed);
    let base = 1_700_000_000_000_000i64;
    let second = 1_000_000i64;
    // Few keys and few distinct times: many ties within and across ingests.
    let keys: Vec<String> = (0..(rows / 4).max(12)).map(|k| format!("k{k}")).collect();
    let mut stored: Vec<Stored> = Vec::new();
    let mut sent: Vec<(String, i64, i64)> = Vec::new();
    let mut value = 0i64;
    for seq in 1..=4u64 {
        let count = (rows + rng.below(rows)) as usize;
        let mut batch_rows: Vec<(String, i64, i64)> = Vec::new();
        for _ in 0..count {
            // A quarter of the rows re-send an earlier row (same key and time, new value).
            let (key, ts) = if !sent.is_empty() && rng.below(4) == 0 {
                let (k, t, _) = &sent[rng.below(sent.len() as u64) as usize];
                (k.clone(), *t)
            } else {
                (
                    keys[rng.below(keys.len() as u64) as usize].clone(),
                    base + rng.below(30) as i64 * second,
                )
            };
            value += 1;
            batch_rows.push((key, ts, value));
        }
        for (row, (k, t, v)) in batch_rows.iter().enumerate() {
            stored.push((k.clone(), *t, seq, row as u64, *v));
            sent.push((k.clone(), *t, *v));
        }
        // Send the ingest in two batches, to cross a batch boundary.
        let to_batch = |rows: &[(String, i64, i64)]| {
            RecordBatch::try_from_iter([
                (
                    "user_id",
                    Arc::new(StringArray::from_iter_values(
                        rows.iter().map(|r| r.0.clone()),
                    )) as ArrayRef,
                ),
                (
                    "ts",
                    Arc::new(
                        TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1))
                            .with_timezone("UTC"),
                    ),
                ),
                (
                    "value",
                    Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
                ),
            ])
            .unwrap()
        };
        let half = batch_rows.len() / 2;
        let answer = put(
            client,
            json!({"ingest": {"workspace": "prod", "table": "events"}}),
            vec![to_batch(&batch_rows[..half]), to_batch(&batch_rows[half..])],
        )
        .await
        .unwrap();
        assert_eq!(answer["seq"], seq);
        let job = wait_job(client, answer["job_id"].as_str().unwrap()).await;
        assert_eq!(job["state"], "succeeded", "{job}");
    }

    // Spine: every key (and one unknown) at times before, among and after the rows,
    // with duplicates.
    let mut spine: Vec<(String, i64)> = Vec::new();
    for _ in 0..spine_rows {
        let key = if rng.below(15) == 0 {
            "unknown".to_string()
        } else {
            keys[rng.below(keys.len() as u64) as usize].clone()
        };
        spine.push((key, base + (rng.below(40) as i64 - 5) * second));
    }
    spine.push(spine[0].clone());
    let spine_batch = RecordBatch::try_from_iter([
        (
            "user_id",
            Arc::new(StringArray::from_iter_values(
                spine.iter().map(|s| s.0.clone()),
            )) as ArrayRef,
        ),
        (
            "t",
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(spine.iter().map(|s| s.1))
                    .with_timezone("UTC"),
            ),
        ),
    ])
    .unwrap();
    put(
        client,
        json!({"spine": {"name": "random"}}),
        vec![spine_batch],
    )
    .await
    .unwrap();
    // Watch the spill directory while the join runs: under a memory limit, sorts must
    // have spilled (files live there until their merge ends).
    let spilled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let watcher = tokio::spawn({
        let spilled = spilled.clone();
        async move {
            loop {
                let files = common::files_under(&spill_dir);
                spilled.fetch_max(files, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    let (info, batches) = training_set(
        client,
        json!({"training_set": {"workspace": "prod", "features": ["events.value"], "spine": {"name": "random"}}}),
    )
    .await
    .unwrap();
    watcher.abort();
    if memory_limit.is_some() {
        assert!(
            spilled.load(std::sync::atomic::Ordering::Relaxed) > 0,
            "no sort spilled under the memory limit; the test no longer covers spilling"
        );
    }
    assert_eq!(info["rows"], spine.len() as u64);
    // A table ingested here is bucketed. A spine that fits in memory is joined by the
    // spine-index join, which reads the buckets' files as they lie; otherwise, or when told
    // to, the sort-merge join merges each bucket's sorted files, unless the memory limit
    // cannot hold a merge of that many files; then it shuffles and sorts. Every way must
    // give the reference's rows.
    let (join_by, read_by) = match (join, memory_limit) {
        (JoinChoice::SpineIndex, _) | (JoinChoice::Auto, None) => ("spine_index", "bucket_scan"),
        (_, Some(_)) => ("sort_merge", "shuffle"),
        (JoinChoice::SortMerge, None) => ("sort_merge", "bucket_merge"),
    };
    assert_eq!(info["tables"][0]["read_by"], read_by, "{info}");
    assert_eq!(info["tables"][0]["join"], join_by, "{info}");

    let mut got: Vec<(String, i64, Option<i64>)> = Vec::new();
    for batch in &batches {
        let keys = batch.column(0).as_string::<i32>();
        let times = batch.column(1).as_primitive::<TimestampMicrosecondType>();
        let values = batch.column(2).as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            got.push((
                keys.value(i).to_string(),
                times.value(i),
                (!values.is_null(i)).then(|| values.value(i)),
            ));
        }
    }
    let mut want = reference(&stored, &spine, ttl_seconds.map(|s| s * second));
    got.sort();
    want.sort();
    assert_eq!(got.len(), want.len(), "one output row per spine row");
    let differences: Vec<String> = got
        .iter()
        .zip(&want)
        .filter(|(g, w)| g != w)
        .map(|(g, w)| format!("got {g:?}, want {w:?}"))
        .collect();
    assert!(
        differences.is_empty(),
        "seed {seed}: {} of {} rows differ from the reference:\n{}",
        differences.len(),
        want.len(),
        differences.join("\n")
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_against_a_brute_force_reference() {
    // The default picks the spine-index join for these small spines; every other seed
    // forces the sort-merge join.
    for (seed, join) in [
        (0x9E37_79B9_7F4A_7C15u64, JoinChoice::Auto),
        (42, JoinChoice::SortMerge),
        (7_777_777, JoinChoice::Auto),
        (31_337, JoinChoice::SortMerge),
    ] {
        randomized(seed, None, join).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_with_a_ttl_against_a_brute_force_reference() {
    for (seed, join) in [(3u64, JoinChoice::Auto), (1_234_567, JoinChoice::SortMerge)] {
        randomized(seed, Some(7), join).await;
    }
}

/// With a memory limit far below what the sorts need, every sort spills to disk; the rows
/// must not change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_with_sorts_spilling_to_disk() {
    randomized_sized(77, None, 60_000, 30_000, Some(8 << 20), JoinChoice::Auto).await;
}

/// A computed training set can be fetched until its retention runs out; then DoGet says
/// so and names what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_expire_after_their_retention() {
    let mut running = common::start_with(tempfile::tempdir().unwrap(), |config| {
        config.training_set_retention = Duration::from_secs(1);
    })
    .await;
    let url = running.url.clone();
    let client = &mut running.client;
    let repo = std::fs::read_to_string(golden_dir().join("repo.toml")).unwrap();
    let files = json!([{"path": "repo.toml", "content": repo}]);
    workspace_with_files(client, "prod", "live", files)
        .await
        .unwrap();
    let spine = pipe_table("user_id:string | t:timestamp\nu1 | 2024-01-01T00:00:00Z\n")
        .batch(&BTreeMap::new());
    put(client, json!({"spine": {"name": "s"}}), vec![spine])
        .await
        .unwrap();
    let command = json!({"training_set": {"workspace": "prod", "features": ["user_counts"], "spine": {"name": "s"}}});
    let info = client
        .get_flight_info(arrow_flight::FlightDescriptor::new_cmd(command.to_string()))
        .await
        .unwrap();
    // The row is in one of the endpoints (which one depends on the hash of its key).
    let mut fresh = connect(&url).await;
    let mut rows = 0;
    for endpoint in &info.endpoint {
        let ticket = endpoint.ticket.clone().unwrap();
        let batches: Vec<RecordBatch> =
            futures::TryStreamExt::try_collect(fresh.do_get(ticket).await.unwrap())
                .await
                .unwrap();
        rows += batches.iter().map(|b| b.num_rows()).sum::<usize>();
    }
    assert_eq!(rows, 1);
    let ticket = info.endpoint[0].ticket.clone().unwrap();

    // The sweeper forgets it once the retention has passed: poll until then.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let gone = loop {
        let fetched = match fresh.do_get(ticket.clone()).await {
            Ok(stream) => futures::TryStreamExt::try_collect::<Vec<_>>(stream)
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        };
        match fetched {
            Err(e) => break e,
            Ok(()) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the training set is still fetchable long after its retention"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let message = gone.to_string();
    assert!(
        message.contains("expired or the scheduler restarted; request it again"),
        "{message}"
    );
    running.stop().await;
}

/// A job that runs out of memory is the caller's to fix with a setting, not a bug: the
/// training set answers RESOURCE_EXHAUSTED naming `memory_limit`, not INTERNAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_out_of_memory_is_resource_exhausted_naming_the_setting() {
    let mut running = common::start_with(tempfile::tempdir().unwrap(), |config| {
        config.parallelism = 2;
        config.memory_limit = 8 << 20;
        // The spine-index join holds its spine partition in memory and cannot spill.
        config.training_set_join = JoinChoice::SpineIndex;
    })
    .await;
    let client = &mut running.client;
    let repo = r#"
[[entity]]
name = "user"
join_keys = ["user_id"]

[[feature_table]]
name = "events"
entities = ["user"]
timestamp_field = "ts"
online = false
schema = [
  { name = "user_id", type = "string" },
  { name = "ts", type = "timestamp" },
  { name = "value", type = "int64" },
]
"#;
    workspace_with_files(
        client,
        "prod",
        "live",
        json!([{"path": "r.toml", "content": repo}]),
    )
    .await
    .unwrap();
    let base = 1_700_000_000_000_000i64;
    let features = RecordBatch::try_from_iter([
        (
            "user_id",
            Arc::new(StringArray::from_iter_values(["u1", "u2"])) as ArrayRef,
        ),
        (
            "ts",
            Arc::new(TimestampMicrosecondArray::from(vec![base, base]).with_timezone("UTC")),
        ),
        ("value", Arc::new(Int64Array::from(vec![1, 2]))),
    ])
    .unwrap();
    let answer = put(
        client,
        json!({"ingest": {"workspace": "prod", "table": "events"}}),
        vec![features],
    )
    .await
    .unwrap();
    let job = wait_job(client, answer["job_id"].as_str().unwrap()).await;
    assert_eq!(job["state"], "succeeded", "{job}");

    // 300,000 spine rows with long keys: far more than a partition's 4 MiB share.
    let rows = 300_000usize;
    let spine = RecordBatch::try_from_iter([
        (
            "user_id",
            Arc::new(StringArray::from_iter_values(
                (0..rows).map(|i| format!("user_with_a_long_identifier_{i:08}")),
            )) as ArrayRef,
        ),
        (
            "t",
            Arc::new(
                TimestampMicrosecondArray::from_iter_values((0..rows).map(|i| base + i as i64))
                    .with_timezone("UTC"),
            ),
        ),
    ])
    .unwrap();
    put(client, json!({"spine": {"name": "big"}}), vec![spine])
        .await
        .unwrap();
    let status = training_set(
        client,
        json!({"training_set": {"workspace": "prod", "features": ["events.value"], "spine": {"name": "big"}}}),
    )
    .await
    .expect_err("the join does not fit in 8 MiB");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status}");
    assert!(status.message().contains("memory_limit"), "{status}");
}
