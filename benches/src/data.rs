//! Deterministic generated feature data: string keys over many entities, timestamps spread
//! over a window, five numeric features.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};

pub const DAY: i64 = 86_400_000_000;

/// A feature table of the benchmarks: `user_id`, `timestamp`, `f1`..`f5`.
pub fn table_definition(name: &str, online: bool) -> String {
    format!(
        r#"
[[feature_table]]
name = "{name}"
entities = ["user"]
timestamp_field = "timestamp"
online = {online}
offline = true
ttl = "365d"
schema = [
  {{ name = "user_id", type = "string" }},
  {{ name = "timestamp", type = "timestamp" }},
  {{ name = "f1", type = "float64" }},
  {{ name = "f2", type = "float64" }},
  {{ name = "f3", type = "float64" }},
  {{ name = "f4", type = "int64" }},
  {{ name = "f5", type = "int64" }},
]
"#
    )
}

pub const ENTITY: &str = r#"
[[entity]]
name = "user"
join_keys = ["user_id"]
"#;

/// A small, fast, deterministic generator (splitmix64).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One row of a feature table.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    pub key: u64,
    pub timestamp: i64,
    pub value: u64,
}

/// Feature rows as a batch.
pub fn batch(rows: &[Row]) -> RecordBatch {
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "user_id",
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| format!("user_{}", r.key)),
            )),
        ),
        (
            "timestamp",
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.timestamp))
                    .with_timezone("UTC"),
            ),
        ),
        (
            "f1",
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|r| r.value as f64 * 0.5),
            )),
        ),
        (
            "f2",
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|r| (r.value % 97) as f64),
            )),
        ),
        (
            "f3",
            Arc::new(Float64Array::from_iter_values(
                rows.iter().map(|r| (r.value % 1013) as f64 / 7.0),
            )),
        ),
        (
            "f4",
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.value as i64),
            )),
        ),
        (
            "f5",
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| (r.value % 7) as i64),
            )),
        ),
    ];
    RecordBatch::try_from_iter(columns).expect("generated columns line up")
}
