//! Last-write-wins, offline and online: the golden cases of `tests/golden_lww/*.toml`
//! (readable without Rust: ingests in order, then the offline rows, the online records and
//! training-set rows expected), and a seeded randomized comparison with a brute-force
//! reference written here, sharing no code with the scheduler.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;
use ftab_model::names::{TableName, WorkspaceName};
use serde::Deserialize;
use serde_json::json;

use common::pipe_table::{PipeTable, Type, canonical, pipe_table};
use common::{Rng, connect, put, raw_action, training_set, wait_job, workspace_with_files};

const REPO: &str = r#"
[[entity]]
name = "user"
join_keys = ["user_id"]

[[feature_table]]
name = "counts"
entities = ["user"]
timestamp_field = "ts"
online = true
offline = true
schema = [
  { name = "user_id", type = "string" },
  { name = "ts", type = "timestamp" },
  { name = "count", type = "int64" },
]
"#;

fn types() -> BTreeMap<String, Type> {
    [
        ("user_id", Type::String),
        ("ts", Type::Timestamp),
        ("t", Type::Timestamp),
        ("_seq", Type::Int64),
        ("count", Type::Int64),
    ]
    .into_iter()
    .map(|(n, t)| (n.to_string(), t))
    .collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    description: String,
    ingest: Vec<Ingest>,
    expected: Expected,
}

impl common::golden::GoldenCase for Case {
    fn description(&self) -> &str {
        &self.description
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ingest {
    rows: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Expected {
    offline: String,
    online: String,
    training_set: String,
}

/// Sorted canonical rows of a pipe table.
fn rows_of(table: &PipeTable) -> Vec<Vec<String>> {
    canonical(&[table.batch(&types())]).1
}

fn time_text(micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .unwrap()
        .to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Every row of workspace `ws`'s offline table, as (user_id, ts, _seq, count) text rows.
async fn offline_rows(running: &common::Running, ws: &str) -> Vec<Vec<String>> {
    let url = running.storage.offline_table(
        &WorkspaceName::new(ws).unwrap(),
        &TableName::new("counts").unwrap(),
        1,
    );
    let table = deltalake::open_table(url).await.unwrap();
    let ctx = SessionContext::new();
    ctx.register_table("t", table.table_provider().await.unwrap())
        .unwrap();
    let batches: Vec<RecordBatch> = ctx
        .sql("SELECT user_id, ts, _seq, count FROM t")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    canonical(&batches).1
}

/// The online record of each of `keys` that has one, as (user_id, ts, _seq, count) rows.
async fn online_rows(url: &str, ws: &str, keys: &[String]) -> Vec<Vec<String>> {
    let mut client = connect(url).await;
    let mut rows = Vec::new();
    for key in keys {
        let record = raw_action(
            &mut client,
            "get_online",
            &json!({"workspace": ws, "table": "counts", "keys": {"user_id": key}}).to_string(),
        )
        .await
        .unwrap();
        if record["found"] != true {
            continue;
        }
        let ts = record["timestamp"].as_str().unwrap();
        let ts = time_text(DateTime::parse_from_rfc3339(ts).unwrap().timestamp_micros());
        let count = match &record["features"][0][1] {
            serde_json::Value::Null => "null".to_string(),
            value => value.to_string(),
        };
        rows.push(vec![key.clone(), ts, record["seq"].to_string(), count]);
    }
    rows.sort();
    rows
}

/// The training set of `spine` (user_id, t) as (user_id, t, count) rows.
async fn training_rows(url: &str, ws: &str, spine: RecordBatch) -> Vec<Vec<String>> {
    let mut client = connect(url).await;
    put(&mut client, json!({"spine": {"name": ws}}), vec![spine])
        .await
        .unwrap();
    let (_, batches) = training_set(
        &mut client,
        json!({"training_set": {"workspace": ws, "features": ["counts.count"], "spine": {"name": ws}}}),
    )
    .await
    .unwrap();
    canonical(&batches).1
}

/// Create workspace `ws` and ingest `batches` in order, each waited for.
async fn ingest_all(url: &str, ws: &str, batches: Vec<RecordBatch>) {
    let mut client = connect(url).await;
    let files = json!([{"path": "repo.toml", "content": REPO}]);
    workspace_with_files(&mut client, ws, "live", files)
        .await
        .unwrap();
    for (i, batch) in batches.into_iter().enumerate() {
        let answer = put(
            &mut client,
            json!({"ingest": {"workspace": ws, "table": "counts"}}),
            vec![batch],
        )
        .await
        .unwrap_or_else(|e| panic!("{ws}: ingest {}: {e}", i + 1));
        let job = wait_job(&mut client, answer["job_id"].as_str().unwrap()).await;
        assert_eq!(job["state"], "succeeded", "{ws}: ingest {}: {job}", i + 1);
    }
}

async fn run_case(running: &common::Running, name: &str, case: &Case) -> Result<(), String> {
    let batches = case
        .ingest
        .iter()
        .map(|i| pipe_table(&i.rows).batch(&types()))
        .collect();
    let mut keys: Vec<String> = case
        .ingest
        .iter()
        .flat_map(|i| pipe_table(&i.rows).rows.into_iter().map(|r| r[0].clone()))
        .collect();
    keys.sort();
    keys.dedup();
    ingest_all(&running.url, name, batches).await;

    let mut problems = Vec::new();
    let want = rows_of(&pipe_table(&case.expected.offline));
    let got = offline_rows(running, name).await;
    if want != got {
        problems.push(format!(
            "offline rows:\n    expected {want:?}\n    got      {got:?}"
        ));
    }
    let want = rows_of(&pipe_table(&case.expected.online));
    let got = online_rows(&running.url, name, &keys).await;
    if want != got {
        problems.push(format!(
            "online records:\n    expected {want:?}\n    got      {got:?}"
        ));
    }
    let expected = pipe_table(&case.expected.training_set);
    let spine = PipeTable {
        columns: expected.columns[..2].to_vec(),
        rows: expected.rows.iter().map(|r| r[..2].to_vec()).collect(),
    };
    let want = rows_of(&expected);
    let got = training_rows(&running.url, name, spine.batch(&types())).await;
    if want != got {
        problems.push(format!(
            "training set:\n    expected {want:?}\n    got      {got:?}"
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n  "))
    }
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden_lww")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn golden_cases() {
    let running = common::start().await;
    common::golden::run_all(&golden_dir(), 8, "last-write-wins", |name, case: Case| {
        let running = &running;
        async move { run_case(running, &name, &case).await }
    })
    .await;
    running.stop().await;
}

// ---------------------------------------------------------------------------------------
// Randomized comparison with a brute-force reference.

/// One row sent: (key, ts, count), in its ingest's order.
type Sent = (String, i64, Option<i64>);

/// What ftab must keep, worked out plainly: offline, each ingest's rows less those a later
/// row of the same ingest, key and time replaces; online, per key the greatest
/// (ts, seq, position in the ingest) of all rows sent.
fn reference(ingests: &[Vec<Sent>]) -> (Vec<Vec<String>>, Vec<Vec<String>>) {
    let mut offline = Vec::new();
    let mut latest: BTreeMap<String, (i64, usize, usize, Option<i64>)> = BTreeMap::new();
    for (i, rows) in ingests.iter().enumerate() {
        let seq = i + 1;
        for (position, (key, ts, count)) in rows.iter().enumerate() {
            let replaced = rows[position + 1..]
                .iter()
                .any(|(k, t, _)| k == key && t == ts);
            if !replaced {
                offline.push((key.clone(), *ts, seq, *count));
            }
            let candidate = (*ts, seq, position, *count);
            let entry = latest.entry(key.clone()).or_insert(candidate);
            if (candidate.0, candidate.1, candidate.2) > (entry.0, entry.1, entry.2) {
                *entry = candidate;
            }
        }
    }
    let text = |key: &str, ts: i64, seq: usize, count: Option<i64>| {
        vec![
            key.to_string(),
            time_text(ts),
            seq.to_string(),
            count.map_or("null".into(), |c| c.to_string()),
        ]
    };
    let mut offline: Vec<Vec<String>> = offline
        .into_iter()
        .map(|(k, t, s, c)| text(&k, t, s, c))
        .collect();
    offline.sort();
    let online = latest
        .iter()
        .map(|(k, (t, s, _, c))| text(k, *t, *s, *c))
        .collect();
    (offline, online)
}

fn batch_of(rows: &[Sent]) -> RecordBatch {
    use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray};
    use std::sync::Arc;
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
            "count",
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.2).collect::<Vec<_>>(),
            )),
        ),
    ])
    .unwrap()
}

/// Seeded ingests with many ties (few keys, few times over six dates; rows re-sent in the
/// same and later ingests; older rows arriving late; nulls), compared offline, online and
/// by a training set at a time after every row with the reference.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn randomized_against_a_brute_force_reference() {
    let running = common::start().await;
    for seed in [1u64, 0xF7AB, 0x5EED_0003] {
        let mut rng = Rng::new(seed);
        let base = 1_700_000_000_000_000i64;
        let keys: Vec<String> = (0..25).map(|k| format!("k{k:02}")).collect();
        let mut ingests: Vec<Vec<Sent>> = Vec::new();
        let mut value = 0i64;
        for _ in 0..5 {
            let mut rows: Vec<Sent> = Vec::new();
            for _ in 0..(20 + rng.below(40)) {
                value += 1;
                let count = (!rng.chance(10)).then_some(value);
                // A quarter of the rows re-send the key and time of an earlier row.
                let sent: Vec<&Sent> = ingests.iter().flatten().chain(&rows).collect();
                let (key, ts) = if !sent.is_empty() && rng.chance(25) {
                    let (k, t, _) = sent[rng.below(sent.len() as u64) as usize];
                    (k.clone(), *t)
                } else {
                    (
                        keys[rng.below(keys.len() as u64) as usize].clone(),
                        // 12 times 11 hours apart: six dates, so six `_date` partitions.
                        base + rng.below(12) as i64 * 11 * 3_600_000_000,
                    )
                };
                rows.push((key, ts, count));
            }
            ingests.push(rows);
        }
        let ws = format!("random_{seed}");
        ingest_all(
            &running.url,
            &ws,
            ingests.iter().map(|rows| batch_of(rows)).collect(),
        )
        .await;
        let (offline, online) = reference(&ingests);
        assert_eq!(
            offline_rows(&running, &ws).await,
            offline,
            "seed {seed}: offline rows differ from the reference"
        );
        assert_eq!(
            online_rows(&running.url, &ws, &keys).await,
            online,
            "seed {seed}: online records differ from the reference"
        );
        // A training set after every row answers what the online store holds.
        let after = base + 7 * 24 * 3_600_000_000;
        let spine = PipeTable {
            columns: vec![
                ("user_id".into(), Some(Type::String)),
                ("t".into(), Some(Type::Timestamp)),
            ],
            rows: keys
                .iter()
                .map(|k| vec![k.clone(), time_text(after)])
                .collect(),
        };
        let mut expected: Vec<Vec<String>> = keys
            .iter()
            .map(|k| {
                let count = online
                    .iter()
                    .find(|r| &r[0] == k)
                    .map_or("null".to_string(), |r| r[3].clone());
                vec![k.clone(), time_text(after), count]
            })
            .collect();
        expected.sort();
        assert_eq!(
            training_rows(&running.url, &ws, spine.batch(&types())).await,
            expected,
            "seed {seed}: the training set at a later time differs from the online records"
        );
    }
    running.stop().await;
}
