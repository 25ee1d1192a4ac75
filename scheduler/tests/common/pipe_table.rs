//! Pipe tables: the golden cases' data, written as text a person reads without Rust
//! (`name:type | ...` header, one row per line, `null` for nulls), turned into Arrow
//! batches, and batches turned back into canonical text rows to compare.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int32Array, Int64Array, RecordBatch,
    StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Field, Float64Type, Int32Type, Int64Type, Schema, TimeUnit, TimestampMicrosecondType,
};

/// A column type of a golden table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Type {
    String,
    Int32,
    Int64,
    Float64,
    Bool,
    Timestamp,
    NaiveTimestamp,
}

impl Type {
    pub fn parse(name: &str) -> Type {
        match name {
            "string" => Type::String,
            "int32" => Type::Int32,
            "int64" => Type::Int64,
            "float64" => Type::Float64,
            "bool" => Type::Bool,
            "timestamp" => Type::Timestamp,
            "naive_timestamp" => Type::NaiveTimestamp,
            other => panic!("unknown golden column type `{other}`"),
        }
    }

    pub fn arrow(self) -> DataType {
        match self {
            Type::String => DataType::Utf8,
            Type::Int32 => DataType::Int32,
            Type::Int64 => DataType::Int64,
            Type::Float64 => DataType::Float64,
            Type::Bool => DataType::Boolean,
            Type::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Type::NaiveTimestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        }
    }
}

pub struct PipeTable {
    pub columns: Vec<(String, Option<Type>)>,
    pub rows: Vec<Vec<String>>,
}

pub fn pipe_table(text: &str) -> PipeTable {
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.split('|')
                .map(|c| c.trim().to_string())
                .collect::<Vec<_>>()
        });
    let header = lines.next().expect("a table has a header line");
    let columns = header
        .iter()
        .map(|h| match h.split_once(':') {
            Some((name, ty)) => (name.to_string(), Some(Type::parse(ty))),
            None => (h.clone(), None),
        })
        .collect::<Vec<_>>();
    let rows: Vec<Vec<String>> = lines.collect();
    for row in &rows {
        assert_eq!(
            row.len(),
            columns.len(),
            "row {row:?} has the wrong number of cells"
        );
    }
    PipeTable { columns, rows }
}

/// Cells parsed as `T` (`None` stays null).
pub fn parse_cells<T: std::str::FromStr>(cells: &[Option<&str>]) -> Vec<Option<T>>
where
    T::Err: std::fmt::Debug,
{
    cells
        .iter()
        .map(|c| {
            c.map(|c| {
                c.parse()
                    .unwrap_or_else(|e| panic!("cannot parse `{c}`: {e:?}"))
            })
        })
        .collect()
}

pub fn micros(text: &str) -> i64 {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("`{text}` is not an RFC 3339 time: {e}"))
        .timestamp_micros()
}

pub fn naive_micros(text: &str) -> i64 {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .unwrap_or_else(|e| panic!("`{text}` is not a naive time: {e}"))
        .and_utc()
        .timestamp_micros()
}

impl PipeTable {
    /// The table as a batch; `types` gives the types of columns the header leaves open.
    pub fn batch(&self, types: &BTreeMap<String, Type>) -> RecordBatch {
        let mut fields = Vec::new();
        let mut arrays: Vec<ArrayRef> = Vec::new();
        for (index, (name, ty)) in self.columns.iter().enumerate() {
            let ty = ty
                .or_else(|| types.get(name).copied())
                .unwrap_or_else(|| panic!("column `{name}` needs a type (`{name}:TYPE`)"));
            let cells: Vec<Option<&str>> = self
                .rows
                .iter()
                .map(|r| Some(r[index].as_str()).filter(|c| *c != "null"))
                .collect();
            let array: ArrayRef = match ty {
                Type::String => Arc::new(StringArray::from(cells)),
                Type::Int32 => Arc::new(Int32Array::from(parse_cells::<i32>(&cells))),
                Type::Int64 => Arc::new(Int64Array::from(parse_cells::<i64>(&cells))),
                Type::Float64 => Arc::new(Float64Array::from(parse_cells::<f64>(&cells))),
                Type::Bool => Arc::new(BooleanArray::from(parse_cells::<bool>(&cells))),
                Type::Timestamp => Arc::new(
                    TimestampMicrosecondArray::from(
                        cells.iter().map(|c| c.map(micros)).collect::<Vec<_>>(),
                    )
                    .with_timezone("UTC"),
                ),
                Type::NaiveTimestamp => Arc::new(TimestampMicrosecondArray::from(
                    cells
                        .iter()
                        .map(|c| c.map(naive_micros))
                        .collect::<Vec<_>>(),
                )),
            };
            fields.push(Field::new(name, ty.arrow(), true));
            arrays.push(array);
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap()
    }
}

/// One cell as canonical text, whatever the Arrow type carrying it.
pub fn cell(array: &ArrayRef, row: usize) -> String {
    if array.is_null(row) {
        return "null".into();
    }
    match array.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let text = cast(array, &DataType::Utf8).unwrap();
            text.as_string::<i32>().value(row).to_string()
        }
        DataType::Int32 => array.as_primitive::<Int32Type>().value(row).to_string(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(row).to_string(),
        DataType::Float64 => array.as_primitive::<Float64Type>().value(row).to_string(),
        DataType::Boolean => array.as_boolean().value(row).to_string(),
        DataType::Timestamp(_, tz) => {
            let us = cast(
                array,
                &DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
            )
            .unwrap();
            let value = us.as_primitive::<TimestampMicrosecondType>().value(row);
            let time = DateTime::<Utc>::from_timestamp_micros(value).unwrap();
            match tz {
                Some(_) => time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                None => time.naive_utc().format("%Y-%m-%dT%H:%M:%S%.f").to_string(),
            }
        }
        other => panic!("no golden format for {other}"),
    }
}

/// Column headers (`name:type`) and the rows as sorted canonical text.
pub fn canonical(batches: &[RecordBatch]) -> (Vec<String>, Vec<Vec<String>>) {
    let mut header = Vec::new();
    let mut rows = Vec::new();
    for batch in batches {
        header = batch
            .schema()
            .fields()
            .iter()
            .map(|f| format!("{}:{}", f.name(), f.data_type()))
            .collect();
        for row in 0..batch.num_rows() {
            rows.push(batch.columns().iter().map(|c| cell(c, row)).collect());
        }
    }
    rows.sort();
    (header, rows)
}
