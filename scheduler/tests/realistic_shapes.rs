//! Training sets and online records at the shapes users have, against a reference that
//! shares no code with ftab's planner.
//!
//! Three feature tables (a string key with a 7-day ttl, a string + int64 composite key
//! without ttl, an int64 key with a 3-day ttl) over 90 days, loaded in five ingests that
//! each span the whole range, re-send rows of earlier ingests with new values (exact ties
//! across ingests), repeat rows within an ingest, and carry NaN, infinities and nulls among
//! their values. Few rows per date, so every ingest writes hundreds of small files: past the
//! 1 MiB at which DataFusion starts re-cutting file scans, the size at which training sets
//! once came out wrong while smaller tests passed. The spine reaches from two days before
//! the first feature row to ten days after the last, with unknown keys and duplicate rows.
//!
//! Each test loads the data at one parallelism (so the tables get that many buckets) and
//! asks for the training set with both joins at that parallelism (the bucketed reads) and
//! at another (the shuffled reads), and checks every online record.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{Float64Type, Int64Type, TimestampMicrosecondType};
use ftab_engine::plan::JoinChoice;
use serde_json::json;

use common::{put, raw_action, training_set, wait_job, workspace_with_files};

const SECOND: i64 = 1_000_000;
const HOUR: i64 = 3_600 * SECOND;
const DAY: i64 = 24 * HOUR;

const REPO: &str = r#"
[[entity]]
name = "user"
join_keys = ["user_id"]

[[entity]]
name = "merchant"
join_keys = ["merchant_id"]

[[feature_table]]
name = "by_user"
entities = ["user"]
timestamp_field = "ts"
online = true
offline = true
ttl = "7d"
schema = [
  { name = "user_id", type = "string" },
  { name = "ts", type = "timestamp" },
  { name = "w", type = "float64" },
  { name = "n", type = "int64" },
]

[[feature_table]]
name = "by_pair"
entities = ["user", "merchant"]
timestamp_field = "ts"
online = true
offline = true
schema = [
  { name = "user_id", type = "string" },
  { name = "merchant_id", type = "int64" },
  { name = "ts", type = "timestamp" },
  { name = "v", type = "float64" },
]

[[feature_table]]
name = "by_merchant"
entities = ["merchant"]
timestamp_field = "ts"
online = false
offline = true
ttl = "3d"
schema = [
  { name = "merchant_id", type = "int64" },
  { name = "ts", type = "timestamp" },
  { name = "m", type = "int64" },
]
"#;

use common::Rng;

/// A feature value as the reference keeps it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value {
    Null,
    Float(f64),
    Int(i64),
}

impl Value {
    /// Canonical text: `null`, floats by Rust's Display (`NaN`, `inf`), integers.
    fn text(self) -> String {
        match self {
            Value::Null => "null".into(),
            Value::Float(f) => f.to_string(),
            Value::Int(i) => i.to_string(),
        }
    }
}

/// One table of the shape: its name, join key columns, ttl, feature columns.
struct Table {
    name: &'static str,
    /// `user_id` (string), `merchant_id` (int64), or both.
    keys: &'static [&'static str],
    ttl: Option<i64>,
    features: &'static [(&'static str, bool)],
}

/// (name, is_float) per feature.
const TABLES: [Table; 3] = [
    Table {
        name: "by_user",
        keys: &["user_id"],
        ttl: Some(7 * DAY),
        features: &[("w", true), ("n", false)],
    },
    Table {
        name: "by_pair",
        keys: &["user_id", "merchant_id"],
        ttl: None,
        features: &[("v", true)],
    },
    Table {
        name: "by_merchant",
        keys: &["merchant_id"],
        ttl: Some(3 * DAY),
        features: &[("m", false)],
    },
];

/// Join key values of a row: the user and the merchant (each used only by the tables
/// keyed by it).
type Keys = (String, i64);

/// A stored row: keys, timestamp, (seq, row in its ingest), feature values.
#[derive(Debug, Clone)]
struct Stored {
    keys: Keys,
    ts: i64,
    order: (u64, u64),
    values: Vec<Value>,
}

impl Table {
    fn key_of(&self, keys: &Keys) -> Keys {
        (
            if self.keys.contains(&"user_id") {
                keys.0.clone()
            } else {
                String::new()
            },
            if self.keys.contains(&"merchant_id") {
                keys.1
            } else {
                0
            },
        )
    }
}

/// The generated data of one table, in ingest order.
struct Generated {
    /// Per ingest, the rows as sent.
    ingests: Vec<Vec<(Keys, i64, Vec<Value>)>>,
}

const USERS: u64 = 30;
const MERCHANTS: u64 = 12;
const DAYS: i64 = 90;
const INGESTS: u64 = 5;
const ROWS_PER_INGEST: u64 = 400;

fn float_value(rng: &mut Rng) -> Value {
    // A small pool, so small files often hold one value besides NaN: the shape that
    // statistics read as a constant.
    match rng.below(10) {
        0 => Value::Float(f64::NAN),
        1 => Value::Float(f64::INFINITY),
        2 => Value::Float(f64::NEG_INFINITY),
        3 => Value::Null,
        4..=6 => Value::Float(2.5),
        _ => Value::Float(rng.below(1000) as f64 / 8.0),
    }
}

fn generate(rng: &mut Rng, table: &Table, base: i64) -> Generated {
    let mut sent: Vec<(Keys, i64)> = Vec::new();
    let mut ingests = Vec::new();
    let mut counter = 0i64;
    for _ in 0..INGESTS {
        let mut rows = Vec::new();
        for _ in 0..ROWS_PER_INGEST {
            // A fifth re-send the keys and time of a row sent before, in an earlier
            // ingest or this one, with new values.
            let (keys, ts) = if !sent.is_empty() && rng.chance(20) {
                sent[rng.below(sent.len() as u64) as usize].clone()
            } else {
                let keys = table.key_of(&(
                    format!("user_{:02}", rng.below(USERS)),
                    rng.below(MERCHANTS) as i64 * 1_000_003 - 2,
                ));
                // Times on a 6-hour grid over 90 days: many ties.
                let ts =
                    base + rng.below(DAYS as u64) as i64 * DAY + rng.below(4) as i64 * 6 * HOUR;
                (keys, ts)
            };
            counter += 1;
            let values = table
                .features
                .iter()
                .map(|&(_, float)| {
                    if float {
                        float_value(rng)
                    } else if rng.chance(10) {
                        Value::Null
                    } else {
                        Value::Int(counter)
                    }
                })
                .collect();
            sent.push((keys.clone(), ts));
            rows.push((keys, ts, values));
        }
        ingests.push(rows);
    }
    Generated { ingests }
}

fn batch(table: &Table, rows: &[(Keys, i64, Vec<Value>)]) -> RecordBatch {
    let mut columns: Vec<(&str, ArrayRef)> = Vec::new();
    if table.keys.contains(&"user_id") {
        columns.push((
            "user_id",
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.0.0.clone()),
            )),
        ));
    }
    if table.keys.contains(&"merchant_id") {
        columns.push((
            "merchant_id",
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0.1))),
        ));
    }
    columns.push((
        "ts",
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1))
                .with_timezone("UTC"),
        ),
    ));
    for (index, &(name, float)) in table.features.iter().enumerate() {
        let array: ArrayRef = if float {
            Arc::new(Float64Array::from_iter(rows.iter().map(|r| {
                match r.2[index] {
                    Value::Float(f) => Some(f),
                    _ => None,
                }
            })))
        } else {
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| {
                match r.2[index] {
                    Value::Int(i) => Some(i),
                    _ => None,
                }
            })))
        };
        columns.push((name, array));
    }
    RecordBatch::try_from_iter(columns).unwrap()
}

/// The point-in-time rule, written plainly: among the rows with the spine row's keys and a
/// timestamp <= t (and >= t - ttl), the greatest by (timestamp, seq, row); else nulls.
fn as_of(table: &Table, stored: &[Stored], keys: &Keys, t: i64) -> Vec<Value> {
    let wanted = table.key_of(keys);
    stored
        .iter()
        .filter(|s| s.keys == wanted && s.ts <= t && table.ttl.is_none_or(|ttl| s.ts >= t - ttl))
        .max_by_key(|s| (s.ts, s.order))
        .map(|s| s.values.clone())
        .unwrap_or_else(|| vec![Value::Null; table.features.len()])
}

/// Everything one data set holds: the stored rows of each table and the spine.
struct DataSet {
    stored: Vec<Vec<Stored>>,
    spine: Vec<Keys>,
    spine_times: Vec<i64>,
}

/// Load the shape into workspace `prod` of the running scheduler.
async fn load(running: &mut common::Running, seed: u64, base: i64) -> DataSet {
    let client = &mut running.client;
    let files = json!([{"path": "repo.toml", "content": REPO}]);
    workspace_with_files(client, "prod", "live", files)
        .await
        .unwrap();
    let mut rng = Rng(seed);
    let mut stored = Vec::new();
    let mut first_ts = i64::MAX;
    let mut last_ts = i64::MIN;
    for table in &TABLES {
        let generated = generate(&mut rng, table, base);
        let mut rows_of_table = Vec::new();
        for (index, rows) in generated.ingests.iter().enumerate() {
            // Three batches per ingest: `_row` continues across them.
            let third = rows.len() / 3;
            let batches = vec![
                batch(table, &rows[..third]),
                batch(table, &rows[third..2 * third]),
                batch(table, &rows[2 * third..]),
            ];
            let answer = put(
                client,
                json!({"ingest": {"workspace": "prod", "table": table.name}}),
                batches,
            )
            .await
            .unwrap();
            let seq = answer["seq"].as_u64().unwrap();
            assert_eq!(seq, index as u64 + 1);
            let job = wait_job(client, answer["job_id"].as_str().unwrap()).await;
            assert_eq!(job["state"], "succeeded", "{job}");
            for (row, (keys, ts, values)) in rows.iter().enumerate() {
                first_ts = first_ts.min(*ts);
                last_ts = last_ts.max(*ts);
                rows_of_table.push(Stored {
                    keys: keys.clone(),
                    ts: *ts,
                    order: (seq, row as u64),
                    values: values.clone(),
                });
            }
        }
        stored.push(rows_of_table);
    }

    // The spine: known and unknown keys, times from two days before the first row to ten
    // days after the last (some exactly at feature times), duplicates.
    let mut spine = Vec::new();
    let mut spine_times = Vec::new();
    for _ in 0..700 {
        let user = if rng.chance(5) {
            "user_unknown".to_string()
        } else {
            format!("user_{:02}", rng.below(USERS))
        };
        let merchant = if rng.chance(5) {
            999
        } else {
            rng.below(MERCHANTS) as i64 * 1_000_003 - 2
        };
        let t = if rng.chance(20) {
            // Exactly a feature time, or exactly a ttl after one.
            let table = &stored[rng.below(2) as usize];
            let row = &table[rng.below(table.len() as u64) as usize];
            row.ts + if rng.chance(50) { 0 } else { 7 * DAY }
        } else {
            let span = (last_ts - first_ts + 12 * DAY) / HOUR;
            first_ts - 2 * DAY + rng.below(span as u64) as i64 * HOUR + rng.below(3) as i64 * SECOND
        };
        spine.push((user, merchant));
        spine_times.push(t);
    }
    for i in 0..40 {
        spine.push(spine[i * 7].clone());
        spine_times.push(spine_times[i * 7]);
    }
    let spine_batch = RecordBatch::try_from_iter([
        (
            "user_id",
            Arc::new(StringArray::from_iter_values(
                spine.iter().map(|k| k.0.clone()),
            )) as ArrayRef,
        ),
        (
            "merchant_id",
            Arc::new(Int64Array::from_iter_values(spine.iter().map(|k| k.1))),
        ),
        (
            "t",
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(spine_times.iter().copied())
                    .with_timezone("UTC"),
            ),
        ),
    ])
    .unwrap();
    put(
        client,
        json!({"spine": {"name": "spine"}}),
        vec![spine_batch],
    )
    .await
    .unwrap();
    DataSet {
        stored,
        spine,
        spine_times,
    }
}

/// One output row as text: user, merchant, time, then every feature.
type Line = Vec<String>;

fn expected(data: &DataSet) -> Vec<Line> {
    let mut lines: Vec<Line> = data
        .spine
        .iter()
        .zip(&data.spine_times)
        .map(|(keys, &t)| {
            let mut line = vec![keys.0.clone(), keys.1.to_string(), t.to_string()];
            for (table, stored) in TABLES.iter().zip(&data.stored) {
                line.extend(as_of(table, stored, keys, t).into_iter().map(Value::text));
            }
            line
        })
        .collect();
    lines.sort();
    lines
}

fn cell(array: &ArrayRef, row: usize) -> String {
    if array.is_null(row) {
        return "null".into();
    }
    match array.data_type() {
        datafusion::arrow::datatypes::DataType::Utf8 => {
            array.as_string::<i32>().value(row).to_string()
        }
        datafusion::arrow::datatypes::DataType::Int64 => {
            array.as_primitive::<Int64Type>().value(row).to_string()
        }
        datafusion::arrow::datatypes::DataType::Float64 => {
            array.as_primitive::<Float64Type>().value(row).to_string()
        }
        datafusion::arrow::datatypes::DataType::Timestamp(_, _) => array
            .as_primitive::<TimestampMicrosecondType>()
            .value(row)
            .to_string(),
        other => panic!("no text for {other}"),
    }
}

fn received(batches: &[RecordBatch]) -> Vec<Line> {
    let columns = [
        "user_id",
        "merchant_id",
        "t",
        "by_user__w",
        "by_user__n",
        "by_pair__v",
        "by_merchant__m",
    ];
    let mut lines = Vec::new();
    for batch in batches {
        let arrays: Vec<&ArrayRef> = columns
            .iter()
            .map(|c| {
                batch
                    .column_by_name(c)
                    .unwrap_or_else(|| panic!("no column {c} in {:?}", batch.schema()))
            })
            .collect();
        for row in 0..batch.num_rows() {
            lines.push(arrays.iter().map(|a| cell(a, row)).collect());
        }
    }
    lines.sort();
    lines
}

/// Ask for the training set at `parallelism` with `join` and compare it, row by row, with
/// the reference. Returns the FlightInfo metadata.
async fn check_training_set(
    dir: tempfile::TempDir,
    parallelism: usize,
    join: JoinChoice,
    want: &[Line],
    what: &str,
) -> (tempfile::TempDir, serde_json::Value) {
    let mut running = common::start_with(dir, |config| {
        config.parallelism = parallelism;
        config.training_set_join = join;
    })
    .await;
    let (info, batches) = training_set(
        &mut running.client,
        json!({"training_set": {
            "workspace": "prod",
            "features": ["by_user", "by_pair", "by_merchant"],
            "spine": {"name": "spine"},
            "full_feature_names": true,
        }}),
    )
    .await
    .unwrap_or_else(|e| panic!("{what}: {e}"));
    let got = received(&batches);
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: one output row per spine row"
    );
    let differences: Vec<String> = got
        .iter()
        .zip(want)
        .filter(|(g, w)| g != w)
        .take(10)
        .map(|(g, w)| format!("  got  {g:?}\n  want {w:?}"))
        .collect();
    assert!(
        differences.is_empty(),
        "{what}: {} of {} rows differ from the reference (first 10):\n{}\ninfo: {info}",
        got.iter().zip(want).filter(|(g, w)| g != w).count(),
        want.len(),
        differences.join("\n")
    );
    (running.stop().await, info)
}

/// Every online record against the latest row per key by the same order, with the ttl
/// counted from now.
async fn check_online(running: &mut common::Running, data: &DataSet) {
    let now = chrono::Utc::now().timestamp_micros();
    for (table, stored) in TABLES.iter().zip(&data.stored).take(2) {
        let mut latest: BTreeMap<Keys, &Stored> = BTreeMap::new();
        for s in stored {
            let entry = latest.entry(s.keys.clone()).or_insert(s);
            if (s.ts, s.order) > (entry.ts, entry.order) {
                *entry = s;
            }
        }
        let mut checked = 0;
        for (keys, row) in &latest {
            // A record within minutes of expiring may expire while this test runs.
            if table
                .ttl
                .is_some_and(|ttl| (row.ts - (now - ttl)).abs() < 10 * 60 * SECOND)
            {
                continue;
            }
            let mut key_map = serde_json::Map::new();
            if table.keys.contains(&"user_id") {
                key_map.insert("user_id".into(), json!(keys.0));
            }
            if table.keys.contains(&"merchant_id") {
                key_map.insert("merchant_id".into(), json!(keys.1.to_string()));
            }
            let answer = raw_action(
                &mut running.client,
                "get_online",
                &json!({"workspace": "prod", "table": table.name, "keys": key_map}).to_string(),
            )
            .await
            .unwrap();
            let live = table.ttl.is_none_or(|ttl| row.ts >= now - ttl);
            assert_eq!(answer["found"], live, "{}: {keys:?}: {answer}", table.name);
            if live {
                assert_eq!(
                    answer["seq"], row.order.0,
                    "{}: {keys:?}: {answer}",
                    table.name
                );
                let features = answer["features"].as_array().unwrap();
                for (index, (name, _)) in table.features.iter().enumerate() {
                    let [got_name, got] = features[index].as_array().unwrap().as_slice() else {
                        panic!("a feature is [name, value]: {answer}");
                    };
                    assert_eq!(got_name, name);
                    let want = match row.values[index] {
                        Value::Null => json!(null),
                        Value::Float(f) if f.is_nan() => json!("NaN"),
                        Value::Float(f) if f == f64::INFINITY => json!("Infinity"),
                        Value::Float(f) if f == f64::NEG_INFINITY => json!("-Infinity"),
                        Value::Float(f) => json!(f),
                        Value::Int(i) => json!(i),
                    };
                    assert_eq!(got, &want, "{}.{name} of {keys:?}: {answer}", table.name);
                }
            }
            checked += 1;
        }
        assert!(checked > 0, "{}: no online record checked", table.name);
    }
}

/// Load at `parallelism`, check online, then the training set with both joins at that
/// parallelism (bucketed reads) and at `other` (shuffled reads: the tables' bucket count
/// differs from the plan's partitions).
async fn realistic(seed: u64, parallelism: usize, other: usize) {
    let now = chrono::Utc::now().timestamp_micros();
    // 90 days ending yesterday, on whole days: the last week is still within the ttl.
    let base = (now / DAY - DAYS) * DAY;
    let mut running = common::start_with(tempfile::tempdir().unwrap(), |config| {
        config.parallelism = parallelism;
    })
    .await;
    let data = load(&mut running, seed, base).await;
    // The shape must keep many files, and at parallelism 2 and more stay past the 1 MiB at
    // which DataFusion starts cutting file scans into byte ranges.
    for table in &TABLES {
        let dir = running
            .dir
            .path()
            .join(format!("data/store/offline/prod/{}", table.name));
        let found = common::find_files(&dir, ".parquet");
        let files = found.len() as u64;
        let bytes: u64 = found
            .iter()
            .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
            .sum();
        assert!(
            files > 100 * parallelism as u64 && (parallelism == 1 || bytes > 1 << 20),
            "{}: {files} files, {bytes} bytes: too small to test at the shapes users have",
            table.name
        );
    }
    check_online(&mut running, &data).await;
    let want = expected(&data);
    let mut dir = running.stop().await;
    for (at, join) in [
        (parallelism, JoinChoice::Auto),
        (parallelism, JoinChoice::SortMerge),
        (other, JoinChoice::Auto),
        (other, JoinChoice::SortMerge),
    ] {
        let what =
            format!("seed {seed}, loaded at parallelism {parallelism}, read at {at} with {join:?}");
        let (back, info) = check_training_set(dir, at, join, &want, &what).await;
        dir = back;
        let bucketed = at == parallelism;
        for table in info["tables"].as_array().unwrap() {
            let read_by = table["read_by"].as_str().unwrap();
            // The sort-merge join merges a bucket's files only while the memory limit
            // holds a merge of that many; past it, it shuffles.
            let expected_read: &[&str] = match (bucketed, join) {
                (false, _) => &["shuffle"],
                (true, JoinChoice::SortMerge) => &["bucket_merge", "shuffle"],
                (true, _) => &["bucket_scan"],
            };
            assert!(expected_read.contains(&read_by), "{what}: {info}");
            assert!(
                table["files_read"].as_u64().unwrap() > 100,
                "{what}: {info}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realistic_shape_at_parallelism_1() {
    realistic(0x5EED_0001, 1, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realistic_shape_at_parallelism_2() {
    realistic(0x5EED_0002, 2, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realistic_shape_at_parallelism_3() {
    realistic(0x5EED_0003, 3, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realistic_shape_at_parallelism_4() {
    realistic(0x5EED_0004, 4, 2).await;
}
