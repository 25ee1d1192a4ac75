//! The byte encoding of online keys and records.
//!
//! Defined here rather than borrowed from a library format so that stored records stay
//! readable across Arrow upgrades (docs/online-store.md).
//!
//! - key: each join key in order; string = `u32` length + UTF-8, int32/int64 = `i64` big
//!   endian (so `1` sent as int32 or int64 is the same key);
//! - record: `timestamp` (i64 LE), `seq` (u64 LE), then each feature: a presence byte
//!   (0 = null) and the value: int32/date `i32`, int64/timestamp `i64`, float32 `f32`,
//!   float64 `f64`, bool `u8`, string/binary `u32` length + bytes, list `u32` count + items.

use datafusion::arrow::array::{Array, ArrayRef, AsArray, PrimitiveArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    Date32Type, Float32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType,
};

use super::record::{OnlineError, OnlineRecord};
use crate::definitions::ValueType;

/// One join key value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyValue {
    String(String),
    Int(i64),
}

impl KeyValue {
    /// Parse a key value given as text (e.g. from `--key user_id=42`) as `value_type`.
    pub fn parse(name: &str, text: &str, value_type: &ValueType) -> Result<Self, OnlineError> {
        match value_type {
            ValueType::String => Ok(KeyValue::String(text.to_string())),
            ValueType::Int32 | ValueType::Int64 => {
                text.trim().parse().map(KeyValue::Int).map_err(|_| {
                    OnlineError::InvalidKey(format!(
                        "join key `{name}` is {value_type}, and `{text}` is not an integer"
                    ))
                })
            }
            other => Err(OnlineError::InvalidKey(format!(
                "join key `{name}` has type {other}, which cannot be a join key"
            ))),
        }
    }

    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            KeyValue::String(s) => {
                out.extend_from_slice(&(s.len() as u32).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            KeyValue::Int(i) => out.extend_from_slice(&i.to_be_bytes()),
        }
    }
}

pub fn encode_key(values: &[KeyValue]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * values.len());
    for value in values {
        value.encode(&mut out);
    }
    out
}

/// The key of `row`, from the join key columns. Null keys are refused.
pub fn key_of_row(
    columns: &[(&ArrayRef, &ValueType)],
    row: usize,
    out: &mut Vec<u8>,
) -> Result<(), OnlineError> {
    out.clear();
    for (array, value_type) in columns {
        if array.is_null(row) {
            return Err(OnlineError::InvalidRows(format!(
                "null join key at row {row}"
            )));
        }
        let value = match value_type {
            ValueType::String => KeyValue::String(array.as_string::<i32>().value(row).to_string()),
            ValueType::Int32 => KeyValue::Int(array.as_primitive::<Int32Type>().value(row) as i64),
            ValueType::Int64 => KeyValue::Int(array.as_primitive::<Int64Type>().value(row)),
            other => {
                return Err(OnlineError::InvalidRows(format!(
                    "join key of type {other}"
                )));
            }
        };
        value.encode(out);
    }
    Ok(())
}

/// The columns of an ingest's latest rows that a backend writes, each cast to exactly the
/// type the encodings read (e.g. string views as strings).
pub(crate) struct LatestColumns {
    keys: Vec<(ArrayRef, ValueType)>,
    features: Vec<(ArrayRef, ValueType)>,
    timestamps: PrimitiveArray<TimestampMicrosecondType>,
}

impl LatestColumns {
    pub(crate) fn of(table: &super::OnlineTable, rows: &RecordBatch) -> Result<Self, OnlineError> {
        let column = |name: &str, value_type: &ValueType| -> Result<ArrayRef, OnlineError> {
            let array = rows
                .column_by_name(name)
                .ok_or_else(|| OnlineError::InvalidRows(format!("no column `{name}`")))?;
            cast(array, &value_type.to_arrow()).map_err(|e| {
                OnlineError::InvalidRows(format!("column `{name}` is not {value_type}: {e}"))
            })
        };
        let typed = |columns: &[(String, ValueType)]| {
            columns
                .iter()
                .map(|(n, t)| Ok((column(n, t)?, t.clone())))
                .collect::<Result<Vec<_>, OnlineError>>()
        };
        let timestamps = column(&table.timestamp_field, &ValueType::Timestamp)?
            .as_primitive_opt::<TimestampMicrosecondType>()
            .cloned()
            .ok_or_else(|| {
                OnlineError::InvalidRows("the timestamp column is not UTC microseconds".into())
            })?;
        Ok(Self {
            keys: typed(&table.keys)?,
            features: typed(&table.features)?,
            timestamps,
        })
    }

    pub(crate) fn keys(&self) -> Vec<(&ArrayRef, &ValueType)> {
        self.keys.iter().map(|(a, t)| (a, t)).collect()
    }

    pub(crate) fn features(&self) -> Vec<(&ArrayRef, &ValueType)> {
        self.features.iter().map(|(a, t)| (a, t)).collect()
    }

    /// Call `write(row, timestamp)` for each row whose timestamp is not before `live_after`
    /// ([`super::OnlineTable::live_after`]); answers the number of rows skipped as expired.
    /// A null timestamp is an error.
    pub(crate) fn for_each_live(
        &self,
        live_after: Option<i64>,
        mut write: impl FnMut(usize, i64) -> Result<(), OnlineError>,
    ) -> Result<u64, OnlineError> {
        let mut expired = 0;
        for row in 0..self.timestamps.len() {
            if self.timestamps.is_null(row) {
                return Err(OnlineError::InvalidRows(format!(
                    "null timestamp at row {row}"
                )));
            }
            let timestamp = self.timestamps.value(row);
            if live_after.is_some_and(|after| timestamp < after) {
                expired += 1;
                continue;
            }
            write(row, timestamp)?;
        }
        Ok(expired)
    }
}

/// Encode a record: timestamp, seq, and the features of `row`.
pub fn encode_record(
    timestamp: i64,
    seq: u64,
    features: &[(&ArrayRef, &ValueType)],
    row: usize,
    out: &mut Vec<u8>,
) {
    out.clear();
    out.extend_from_slice(&timestamp.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    for (array, value_type) in features {
        encode_value(array.as_ref(), value_type, row, out);
    }
}

/// Append value `row` of `array` (of `value_type`'s Arrow type) in ftab's value encoding:
/// a presence byte, then the value as the module's documentation says.
pub(crate) fn encode_value(
    array: &dyn Array,
    value_type: &ValueType,
    row: usize,
    out: &mut Vec<u8>,
) {
    if array.is_null(row) {
        out.push(0);
        return;
    }
    out.push(1);
    match value_type {
        ValueType::String => {
            let s = array.as_string::<i32>().value(row);
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        ValueType::Binary => {
            let b = array.as_binary::<i32>().value(row);
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        }
        ValueType::Int32 => {
            out.extend_from_slice(&array.as_primitive::<Int32Type>().value(row).to_le_bytes())
        }
        ValueType::Date => {
            out.extend_from_slice(&array.as_primitive::<Date32Type>().value(row).to_le_bytes())
        }
        ValueType::Int64 => {
            out.extend_from_slice(&array.as_primitive::<Int64Type>().value(row).to_le_bytes())
        }
        ValueType::Timestamp => out.extend_from_slice(
            &array
                .as_primitive::<TimestampMicrosecondType>()
                .value(row)
                .to_le_bytes(),
        ),
        ValueType::Float32 => {
            out.extend_from_slice(&array.as_primitive::<Float32Type>().value(row).to_le_bytes())
        }
        ValueType::Float64 => {
            out.extend_from_slice(&array.as_primitive::<Float64Type>().value(row).to_le_bytes())
        }
        ValueType::Bool => out.push(array.as_boolean().value(row) as u8),
        ValueType::List(item) => {
            let list = array.as_list::<i32>();
            let values = list.value(row);
            out.extend_from_slice(&(values.len() as u32).to_le_bytes());
            for i in 0..values.len() {
                encode_value(values.as_ref(), item, i, out);
            }
        }
    }
}

/// (timestamp, seq) of an encoded record: the order newer-only writes compare.
pub fn record_order(bytes: &[u8]) -> Result<(i64, u64), OnlineError> {
    let header = bytes
        .get(..16)
        .ok_or_else(|| OnlineError::Store("stored record is truncated".into()))?;
    let (ts, seq) = header.split_at(8);
    Ok((
        i64::from_le_bytes(ts.try_into().expect("8 bytes")),
        u64::from_le_bytes(seq.try_into().expect("8 bytes")),
    ))
}

/// Decode a record into JSON feature values.
pub fn decode_record(
    bytes: &[u8],
    features: &[(String, ValueType)],
) -> Result<OnlineRecord, OnlineError> {
    let (timestamp, seq) = record_order(bytes)?;
    let mut reader = Reader { bytes, at: 16 };
    let mut values = Vec::with_capacity(features.len());
    for (_, value_type) in features {
        values.push(reader.value(value_type)?);
    }
    Ok(OnlineRecord {
        timestamp,
        seq,
        features: values,
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], OnlineError> {
        let slice = self
            .bytes
            .get(self.at..self.at + n)
            .ok_or_else(|| OnlineError::Store("stored record is truncated".into()))?;
        self.at += n;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], OnlineError> {
        Ok(self.take(N)?.try_into().expect("take returns N bytes"))
    }

    fn value(&mut self, value_type: &ValueType) -> Result<serde_json::Value, OnlineError> {
        use serde_json::Value;
        if self.array::<1>()?[0] == 0 {
            return Ok(Value::Null);
        }
        Ok(match value_type {
            ValueType::String => {
                let len = u32::from_le_bytes(self.array()?) as usize;
                Value::String(String::from_utf8_lossy(self.take(len)?).into_owned())
            }
            ValueType::Binary => {
                let len = u32::from_le_bytes(self.array()?) as usize;
                binary_json(self.take(len)?)
            }
            ValueType::Int32 => Value::from(i32::from_le_bytes(self.array()?)),
            ValueType::Date => date_json(i32::from_le_bytes(self.array()?)),
            ValueType::Int64 => Value::from(i64::from_le_bytes(self.array()?)),
            ValueType::Timestamp => Value::String(format_micros(i64::from_le_bytes(self.array()?))),
            ValueType::Float32 => float(f32::from_le_bytes(self.array()?) as f64),
            ValueType::Float64 => float(f64::from_le_bytes(self.array()?)),
            ValueType::Bool => Value::Bool(self.array::<1>()?[0] != 0),
            ValueType::List(item) => {
                let count = u32::from_le_bytes(self.array()?) as usize;
                let mut items = Vec::with_capacity(count.min(1 << 16));
                for _ in 0..count {
                    items.push(self.value(item)?);
                }
                Value::Array(items)
            }
        })
    }
}

/// A float as JSON. JSON numbers cannot hold NaN or the infinities, and `null` means
/// "no value", so those are the strings `"NaN"`, `"Infinity"` and `"-Infinity"` (the
/// spelling of JavaScript, Jackson and pandas); docs/protocol.md.
pub(crate) fn float(value: f64) -> serde_json::Value {
    match serde_json::Number::from_f64(value) {
        Some(number) => serde_json::Value::Number(number),
        None if value.is_nan() => serde_json::json!("NaN"),
        None if value > 0.0 => serde_json::json!("Infinity"),
        None => serde_json::json!("-Infinity"),
    }
}

/// Bytes as JSON: a lowercase hex string.
pub(crate) fn binary_json(bytes: &[u8]) -> serde_json::Value {
    serde_json::Value::String(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Days since the Unix epoch as JSON: `YYYY-MM-DD` (the number where out of range).
pub(crate) fn date_json(days: i32) -> serde_json::Value {
    chrono::NaiveDate::from_num_days_from_ce_opt(days.saturating_add(719_163))
        .map(|d| serde_json::Value::String(d.to_string()))
        .unwrap_or(serde_json::Value::from(days))
}

/// UTC microseconds as RFC 3339.
pub fn format_micros(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| micros.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{
        BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array, ListArray, StringArray,
    };
    use std::sync::Arc;

    #[test]
    fn keys_are_the_same_from_text_and_from_arrays() {
        let ids: ArrayRef = Arc::new(StringArray::from(vec!["u1", "u2"]));
        let n32: ArrayRef = Arc::new(Int32Array::from(vec![7, 8]));
        let mut from_rows = Vec::new();
        key_of_row(
            &[(&ids, &ValueType::String), (&n32, &ValueType::Int32)],
            1,
            &mut from_rows,
        )
        .unwrap();
        let from_text = encode_key(&[
            KeyValue::parse("id", "u2", &ValueType::String).unwrap(),
            KeyValue::parse("n", "8", &ValueType::Int64).unwrap(),
        ]);
        assert_eq!(from_rows, from_text);
        let err = KeyValue::parse("n", "eight", &ValueType::Int64)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("join key `n` is int64, and `eight` is not an integer"),
            "{err}"
        );
    }

    #[test]
    fn records_round_trip_every_type() {
        let types = vec![
            ("s".to_string(), ValueType::String),
            ("i".to_string(), ValueType::Int32),
            ("l".to_string(), ValueType::Int64),
            ("f".to_string(), ValueType::Float32),
            ("d".to_string(), ValueType::Float64),
            ("b".to_string(), ValueType::Bool),
            (
                "v".to_string(),
                ValueType::List(Box::new(ValueType::Float32)),
            ),
        ];
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![Some("x")])),
            Arc::new(Int32Array::from(vec![None])),
            Arc::new(Int64Array::from(vec![Some(-5)])),
            Arc::new(Float32Array::from(vec![Some(0.5)])),
            Arc::new(Float64Array::from(vec![Some(f64::NAN)])),
            Arc::new(BooleanArray::from(vec![Some(true)])),
            Arc::new(ListArray::from_iter_primitive::<Float32Type, _, _>(vec![
                Some(vec![
                    Some(1.0),
                    None,
                    Some(f32::INFINITY),
                    Some(f32::NEG_INFINITY),
                ]),
            ])),
        ];
        let columns: Vec<(&ArrayRef, &ValueType)> =
            arrays.iter().zip(types.iter().map(|(_, t)| t)).collect();
        let mut bytes = Vec::new();
        encode_record(1_700_000_000_000_000, 9, &columns, 0, &mut bytes);
        assert_eq!(record_order(&bytes).unwrap(), (1_700_000_000_000_000, 9));
        let record = decode_record(&bytes, &types).unwrap();
        let values = record.features;
        assert_eq!(
            values,
            vec![
                serde_json::json!("x"),
                serde_json::Value::Null,
                serde_json::json!(-5),
                serde_json::json!(0.5),
                serde_json::json!("NaN"),
                serde_json::json!(true),
                serde_json::json!([1.0, null, "Infinity", "-Infinity"]),
            ]
        );
        assert!(
            decode_record(&bytes[..20], &types).is_err(),
            "truncated records are errors, not panics"
        );
    }
}
