//! Deterministic generated feature data: string keys over many entities (and merchants),
//! timestamps spread over a window, five numeric features derived from one value per row,
//! so a reference can tell from any feature which row it came from.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};

pub const DAY: i64 = 86_400_000_000;

/// A feature table of the benchmarks: `user_id` (and `merchant_id` with `by_merchant`),
/// `timestamp`, `f1`..`f5`; `ttl_days` of `None` means no ttl.
pub fn table_definition(
    name: &str,
    online: bool,
    by_merchant: bool,
    ttl_days: Option<u32>,
) -> String {
    let entities = if by_merchant {
        r#"["user", "merchant"]"#
    } else {
        r#"["user"]"#
    };
    let ttl = ttl_days
        .map(|d| format!("ttl = \"{d}d\"\n"))
        .unwrap_or_default();
    let merchant = if by_merchant {
        "  { name = \"merchant_id\", type = \"int64\" },\n"
    } else {
        ""
    };
    format!(
        r#"
[[feature_table]]
name = "{name}"
entities = {entities}
timestamp_field = "timestamp"
online = {online}
offline = true
{ttl}schema = [
  {{ name = "user_id", type = "string" }},
{merchant}  {{ name = "timestamp", type = "timestamp" }},
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

[[entity]]
name = "merchant"
join_keys = ["merchant_id"]
"#;

/// The five features of a row of value `v`, as the generator writes them: what a
/// reference expects to read back for that row.
pub fn features(v: u64) -> (f64, f64, f64, i64, i64) {
    (
        v as f64 * 0.5,
        (v % 97) as f64,
        (v % 1013) as f64 / 7.0,
        v as i64,
        (v % 7) as i64,
    )
}

pub use ftab_testkit::Rng;

/// One row of a feature table.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    pub key: u64,
    /// The merchant, for tables keyed by user and merchant.
    pub merchant: Option<i64>,
    pub timestamp: i64,
    pub value: u64,
}

/// Feature rows as a batch (with `merchant_id` when the rows have merchants).
pub fn batch(rows: &[Row]) -> RecordBatch {
    let mut columns: Vec<(&str, ArrayRef)> = vec![(
        "user_id",
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|r| format!("user_{}", r.key)),
        )),
    )];
    if rows.first().is_some_and(|r| r.merchant.is_some()) {
        columns.push((
            "merchant_id",
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.merchant.unwrap_or_default()),
            )),
        ));
    }
    let values: Vec<_> = rows.iter().map(|r| features(r.value)).collect();
    columns.extend([
        (
            "timestamp",
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.timestamp))
                    .with_timezone("UTC"),
            ) as ArrayRef,
        ),
        (
            "f1",
            Arc::new(Float64Array::from_iter_values(values.iter().map(|v| v.0))) as ArrayRef,
        ),
        (
            "f2",
            Arc::new(Float64Array::from_iter_values(values.iter().map(|v| v.1))) as ArrayRef,
        ),
        (
            "f3",
            Arc::new(Float64Array::from_iter_values(values.iter().map(|v| v.2))) as ArrayRef,
        ),
        (
            "f4",
            Arc::new(Int64Array::from_iter_values(values.iter().map(|v| v.3))) as ArrayRef,
        ),
        (
            "f5",
            Arc::new(Int64Array::from_iter_values(values.iter().map(|v| v.4))) as ArrayRef,
        ),
    ]);
    RecordBatch::try_from_iter(columns).expect("generated columns line up")
}
