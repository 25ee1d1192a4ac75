//! Validation of ingested data against a feature table, batch by batch, as it arrives.
//!
//! [`IngestValidator::new`] checks the incoming schema once: every schema column present
//! (all missing ones named), types compatible (lossless conversions only), extra columns
//! refused unless the caller asks to drop them. [`IngestValidator::convert`] then turns each
//! batch into the table's Arrow schema and counts nulls in join keys and the timestamp;
//! [`IngestValidator::finish`] reports them with their count and first row. Nothing here
//! holds more than one batch.
//!
//! Conversions accepted (docs/ingest.md): integers to wider integers, integers and float32
//! to float64 where exact, any string or dictionary-of-string encoding to string, any binary
//! encoding to binary, timestamps of any unit and time zone to UTC microseconds (naive
//! timestamps are taken as UTC; nanosecond values must be whole microseconds), and lists of
//! compatible items.

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{
    DataType, Field, Schema, SchemaRef, TimeUnit, TimestampNanosecondType,
};

use crate::definitions::{Definitions, FeatureTable, ValueType};

/// Why an ingest is refused. Messages name the column, what was expected and what was
/// found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("missing column{} {} (feature table `{table}` needs {expected})", plural(.missing.len()), quoted(.missing))]
    MissingColumns {
        table: String,
        missing: Vec<String>,
        expected: String,
    },
    #[error("unknown column{} {} not in feature table `{table}`; remove {} or ask to drop extra columns (CLI: --drop-extra-columns)", plural(.extra.len()), quoted(.extra), if .extra.len() == 1 { "it" } else { "them" })]
    ExtraColumns { table: String, extra: Vec<String> },
    #[error("column{} {} {} ftab's own (it adds {}); remove {} from the data", plural(.reserved.len()), quoted(.reserved), if .reserved.len() == 1 { "is" } else { "are" }, RESERVED_COLUMNS.join(", "), if .reserved.len() == 1 { "it" } else { "them" })]
    ReservedColumns { reserved: Vec<String> },
    #[error(
        "column `{column}` has type {found}, expected {expected}; only lossless conversions are accepted (docs/ingest.md)"
    )]
    IncompatibleType {
        column: String,
        expected: String,
        found: String,
    },
    #[error("column `{column}` has {count} null value{} (first at row {first_row}); {role} must not be null", plural(*.count as usize))]
    Nulls {
        column: String,
        role: &'static str,
        count: u64,
        first_row: u64,
    },
    #[error(
        "column `{column}` has a timestamp with sub-microsecond precision at row {row}; ftab stores microseconds, so round the timestamps first"
    )]
    SubMicrosecond { column: String, row: u64 },
    #[error("column{} {} appear{} more than once in the data; each column must be sent once", plural(.names.len()), quoted(.names), if .names.len() == 1 { "s" } else { "" })]
    DuplicateColumns { names: Vec<String> },
    #[error("the ingest has no rows")]
    Empty,
    #[error("the data's schema changed between batches at row {row}; send one schema per ingest")]
    SchemaChanged { row: u64 },
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Refuses a schema that names a column twice: which of the two is meant cannot be told,
/// and Arrow's lookups by name would silently take the first.
pub fn check_unique_columns(schema: &Schema) -> Result<(), ValidationError> {
    let mut seen = BTreeSet::new();
    let mut repeated = BTreeSet::new();
    for field in schema.fields() {
        if !seen.insert(field.name().as_str()) {
            repeated.insert(field.name().clone());
        }
    }
    if repeated.is_empty() {
        Ok(())
    } else {
        Err(ValidationError::DuplicateColumns {
            names: repeated.into_iter().collect(),
        })
    }
}

use crate::offline::columns::RESERVED_COLUMNS;

/// How one incoming column becomes one table column.
#[derive(Debug, Clone)]
struct ColumnPlan {
    source: usize,
    name: String,
    value_type: ValueType,
    target: DataType,
    /// A join key or the timestamp: counted for nulls.
    required: Option<&'static str>,
    /// Nanosecond timestamps: values must be whole microseconds.
    from_nanos: bool,
}

/// Validates and converts the batches of one ingest.
#[derive(Debug)]
pub struct IngestValidator {
    incoming: SchemaRef,
    target: SchemaRef,
    columns: Vec<ColumnPlan>,
    rows: u64,
    /// Per column: (null count, first null row) of required columns.
    nulls: Vec<Option<(u64, u64)>>,
}

impl IngestValidator {
    /// Check `incoming` against `table`. Fails on missing columns, incompatible types, and
    /// extra columns unless `drop_extra_columns`.
    pub fn new(
        table: &FeatureTable,
        definitions: &Definitions,
        incoming: SchemaRef,
        drop_extra_columns: bool,
    ) -> Result<Self, ValidationError> {
        check_unique_columns(&incoming)?;
        let target = table.arrow_schema(definitions);
        let keys: BTreeSet<String> = table
            .join_keys(definitions)
            .iter()
            .map(|k| k.to_string())
            .collect();

        let missing: Vec<String> = table
            .schema
            .iter()
            .filter(|c| incoming.index_of(c.name.as_str()).is_err())
            .map(|c| c.name.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(ValidationError::MissingColumns {
                table: table.name.to_string(),
                missing,
                expected: table
                    .schema
                    .iter()
                    .map(|c| format!("{} {}", c.name, c.value_type))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let extra: Vec<String> = incoming
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|name| table.column(name).is_none())
            .collect();
        let reserved: Vec<String> = extra
            .iter()
            .filter(|n| RESERVED_COLUMNS.contains(&n.as_str()))
            .cloned()
            .collect();
        if !reserved.is_empty() {
            // Dropping them would hide a mistake (data exported from ftab and sent back).
            return Err(ValidationError::ReservedColumns { reserved });
        }
        if !extra.is_empty() && !drop_extra_columns {
            return Err(ValidationError::ExtraColumns {
                table: table.name.to_string(),
                extra,
            });
        }

        let mut columns = Vec::with_capacity(table.schema.len());
        for (column, field) in table.schema.iter().zip(target.fields()) {
            let source = incoming
                .index_of(column.name.as_str())
                .expect("missing columns were refused above");
            let found = incoming.field(source).data_type();
            if !compatible(found, &column.value_type) {
                return Err(ValidationError::IncompatibleType {
                    column: column.name.to_string(),
                    expected: column.value_type.to_string(),
                    found: describe_type(found),
                });
            }
            let required = if column.name == table.timestamp_field {
                Some("the timestamp field")
            } else if keys.contains(column.name.as_str()) {
                Some("join keys")
            } else {
                None
            };
            columns.push(ColumnPlan {
                source,
                name: column.name.to_string(),
                value_type: column.value_type.clone(),
                target: field.data_type().clone(),
                required,
                from_nanos: matches!(found, DataType::Timestamp(TimeUnit::Nanosecond, _)),
            });
        }
        let nulls = vec![None; columns.len()];
        Ok(Self {
            incoming,
            target,
            columns,
            rows: 0,
            nulls,
        })
    }

    /// The table's Arrow schema: what [`convert`](Self::convert) produces.
    pub fn target_schema(&self) -> &SchemaRef {
        &self.target
    }

    /// Rows seen so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Whether the ingest is already known to be refused (nulls found). The caller keeps
    /// feeding batches so the final message counts every null, but stops storing them.
    pub fn is_refused(&self) -> bool {
        self.nulls.iter().any(Option::is_some)
    }

    /// Convert one batch to the table's schema. Returns `Ok(None)` once the ingest is known
    /// to be refused (nulls), after counting; `finish` then gives the error.
    pub fn convert(&mut self, batch: &RecordBatch) -> Result<Option<RecordBatch>, ValidationError> {
        let offset = self.rows;
        self.rows += batch.num_rows() as u64;
        let schema = batch.schema();
        let same_shape = schema.fields().len() == self.incoming.fields().len()
            && schema
                .fields()
                .iter()
                .zip(self.incoming.fields())
                .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
        if !same_shape {
            return Err(ValidationError::SchemaChanged { row: offset });
        }
        for (index, column) in self.columns.iter().enumerate() {
            if column.required.is_none() {
                continue;
            }
            let array = batch.column(column.source);
            let count = array.null_count() as u64;
            if count > 0 {
                let first = (0..array.len()).find(|i| array.is_null(*i)).unwrap_or(0) as u64;
                let entry = self.nulls[index].get_or_insert((0, offset + first));
                entry.0 += count;
            }
        }
        if self.is_refused() {
            return Ok(None);
        }
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.columns.len());
        for column in &self.columns {
            let array = batch.column(column.source);
            if column.from_nanos {
                let nanos = array.as_primitive::<TimestampNanosecondType>();
                if let Some(row) = nanos.iter().position(|v| v.is_some_and(|v| v % 1_000 != 0)) {
                    return Err(ValidationError::SubMicrosecond {
                        column: column.name.clone(),
                        row: offset + row as u64,
                    });
                }
            }
            arrays.push(convert_array(array, &column.target).map_err(|e| {
                ValidationError::IncompatibleType {
                    column: column.name.clone(),
                    expected: column.value_type.to_string(),
                    found: format!("{} ({e})", describe_type(array.data_type())),
                }
            })?);
        }
        let converted = RecordBatch::try_new(self.target.clone(), arrays).map_err(|e| {
            ValidationError::IncompatibleType {
                column: "(batch)".into(),
                expected: "the table's schema".into(),
                found: e.to_string(),
            }
        })?;
        Ok(Some(converted))
    }

    /// The verdict once every batch is seen.
    pub fn finish(&self) -> Result<u64, ValidationError> {
        for (column, nulls) in self.columns.iter().zip(&self.nulls) {
            if let Some((count, first_row)) = nulls {
                return Err(ValidationError::Nulls {
                    column: column.name.clone(),
                    role: column.required.unwrap_or("this column"),
                    count: *count,
                    first_row: *first_row,
                });
            }
        }
        if self.rows == 0 {
            return Err(ValidationError::Empty);
        }
        Ok(self.rows)
    }
}

/// Whether data of type `found` converts losslessly to `expected`.
pub fn compatible(found: &DataType, expected: &ValueType) -> bool {
    use DataType as D;
    match expected {
        ValueType::String => match found {
            D::Utf8 | D::LargeUtf8 | D::Utf8View => true,
            D::Dictionary(_, value) => matches!(**value, D::Utf8 | D::LargeUtf8 | D::Utf8View),
            _ => false,
        },
        ValueType::Int32 => matches!(found, D::Int8 | D::Int16 | D::Int32 | D::UInt8 | D::UInt16),
        ValueType::Int64 => matches!(
            found,
            D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32
        ),
        ValueType::Float32 => matches!(
            found,
            D::Float16 | D::Float32 | D::Int8 | D::Int16 | D::UInt8 | D::UInt16
        ),
        ValueType::Float64 => matches!(
            found,
            D::Float16
                | D::Float32
                | D::Float64
                | D::Int8
                | D::Int16
                | D::Int32
                | D::UInt8
                | D::UInt16
                | D::UInt32
        ),
        ValueType::Bool => matches!(found, D::Boolean),
        ValueType::Timestamp => matches!(found, D::Timestamp(_, _)),
        ValueType::Date => matches!(found, D::Date32),
        ValueType::Binary => matches!(
            found,
            D::Binary | D::LargeBinary | D::BinaryView | D::FixedSizeBinary(_)
        ),
        ValueType::List(item) => match found {
            D::List(f)
            | D::LargeList(f)
            | D::FixedSizeList(f, _)
            | D::ListView(f)
            | D::LargeListView(f) => compatible(f.data_type(), item),
            _ => false,
        },
    }
}

/// Convert an array known to be [`compatible`] to the table's Arrow type.
fn convert_array(array: &ArrayRef, target: &DataType) -> Result<ArrayRef, String> {
    if array.data_type() == target {
        return Ok(array.clone());
    }
    if let (DataType::Timestamp(_, _), DataType::Timestamp(TimeUnit::Microsecond, tz)) =
        (array.data_type(), target)
    {
        // Arrow timestamps hold UTC instants whatever their zone, and naive ones are taken
        // as UTC: change the unit, then label the zone.
        let micros = cast_with_options(
            array,
            &DataType::Timestamp(TimeUnit::Microsecond, None),
            &strict(),
        )
        .map_err(|e| e.to_string())?;
        return cast_with_options(
            &micros,
            &DataType::Timestamp(TimeUnit::Microsecond, tz.clone()),
            &strict(),
        )
        .map_err(|e| e.to_string());
    }
    if let (
        DataType::FixedSizeList(_, _)
        | DataType::LargeList(_)
        | DataType::ListView(_)
        | DataType::LargeListView(_),
        DataType::List(item),
    ) = (array.data_type(), target)
    {
        // Cast to a list of the source items first, then the items.
        let as_list = cast_with_options(
            array,
            &DataType::List(Arc::new(Field::new(
                "item",
                list_item(array.data_type()),
                true,
            ))),
            &strict(),
        )
        .map_err(|e| e.to_string())?;
        return cast_with_options(&as_list, &DataType::List(item.clone()), &strict())
            .map_err(|e| e.to_string());
    }
    cast_with_options(array, target, &strict()).map_err(|e| e.to_string())
}

fn list_item(data_type: &DataType) -> DataType {
    match data_type {
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::FixedSizeList(f, _)
        | DataType::ListView(f)
        | DataType::LargeListView(f) => f.data_type().clone(),
        other => other.clone(),
    }
}

/// Casts that fail instead of producing nulls.
fn strict() -> CastOptions<'static> {
    CastOptions {
        safe: false,
        ..CastOptions::default()
    }
}

/// An Arrow type in the words of a feature repository where there is one.
fn describe_type(data_type: &DataType) -> String {
    use DataType as D;
    match data_type {
        D::Utf8 | D::LargeUtf8 | D::Utf8View => "string".into(),
        D::Int32 => "int32".into(),
        D::Int64 => "int64".into(),
        D::Float32 => "float32".into(),
        D::Float64 => "float64".into(),
        D::Boolean => "bool".into(),
        D::Date32 => "date".into(),
        D::Binary | D::LargeBinary | D::BinaryView => "binary".into(),
        D::Timestamp(unit, tz) => format!(
            "timestamp[{unit:?}{}]",
            tz.as_ref().map(|t| format!(", {t}")).unwrap_or_default()
        ),
        D::List(f) | D::LargeList(f) => format!("list<{}>", describe_type(f.data_type())),
        other => other.to_string(),
    }
}

/// The schema `Schema` of a feature table's data as ftab stores it offline: the table's
/// columns, then `_seq` and `_ingested_at`.
pub fn offline_schema(table_schema: &Schema) -> Schema {
    let mut fields: Vec<Field> = table_schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("_seq", DataType::Int64, false));
    fields.push(Field::new(
        "_ingested_at",
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    ));
    Schema::new(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::{RepositoryFile, parse};
    use datafusion::arrow::array::{
        DictionaryArray, Float32Array, Int32Array, Int64Array, StringArray,
        TimestampMicrosecondArray, TimestampMillisecondArray, TimestampNanosecondArray,
    };
    use datafusion::arrow::datatypes::Int32Type;

    const REPO: &str = r#"
[[entity]]
name = "user"
join_keys = ["user_id"]

[[feature_table]]
name = "t"
entities = ["user"]
timestamp_field = "ts"
schema = [
  { name = "user_id", type = "string" },
  { name = "ts", type = "timestamp" },
  { name = "count", type = "int64" },
  { name = "score", type = "float64" },
]
"#;

    fn definitions() -> Definitions {
        parse(&[RepositoryFile {
            path: "r.toml".into(),
            content: REPO.into(),
        }])
        .unwrap()
    }

    fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter(columns).unwrap()
    }

    fn validator(
        batch: &RecordBatch,
        drop_extra: bool,
    ) -> Result<IngestValidator, ValidationError> {
        let defs = definitions();
        let table = defs.feature_table("t").unwrap().clone();
        IngestValidator::new(&table, &defs, batch.schema(), drop_extra)
    }

    fn good() -> Vec<(&'static str, ArrayRef)> {
        vec![
            (
                "user_id",
                Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef,
            ),
            (
                "ts",
                Arc::new(
                    TimestampMicrosecondArray::from(vec![1_000_000, 2_000_000])
                        .with_timezone("UTC"),
                ),
            ),
            ("count", Arc::new(Int64Array::from(vec![1, 2]))),
            ("score", Arc::new(Float32Array::from(vec![0.5, 1.5]))),
        ]
    }

    /// Two columns of one name (of one type or two) are refused with the name: before,
    /// the first was taken and the second dropped without a word.
    #[test]
    fn a_column_sent_twice_is_refused() {
        for second in [
            Arc::new(StringArray::from(vec!["c", "d"])) as ArrayRef,
            Arc::new(Int64Array::from(vec![3, 4])) as ArrayRef,
        ] {
            let mut columns = good();
            columns.push(("user_id", second));
            let err = validator(&batch(columns), false).unwrap_err();
            assert_eq!(
                err,
                ValidationError::DuplicateColumns {
                    names: vec!["user_id".into()]
                }
            );
            assert!(
                err.to_string().contains("`user_id` appears more than once"),
                "{err}"
            );
        }
        // Even when the repeated column is an extra one the caller asked to drop.
        let mut columns = good();
        columns.push(("extra", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef));
        columns.push(("extra", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef));
        assert!(matches!(
            validator(&batch(columns), true),
            Err(ValidationError::DuplicateColumns { .. })
        ));
    }

    #[test]
    fn converts_lossless_types_in_table_order() {
        // Columns in another order, int32 counts, naive millisecond timestamps, float32
        // scores, dictionary-encoded strings.
        let keys = DictionaryArray::<Int32Type>::from_iter(["a", "b"]);
        let b = batch(vec![
            (
                "score",
                Arc::new(Float32Array::from(vec![0.5, 1.5])) as ArrayRef,
            ),
            ("count", Arc::new(Int32Array::from(vec![1, 2]))),
            (
                "ts",
                Arc::new(TimestampMillisecondArray::from(vec![1_000, 2_000])),
            ),
            ("user_id", Arc::new(keys)),
        ]);
        let mut v = validator(&b, false).unwrap();
        let out = v.convert(&b).unwrap().unwrap();
        assert_eq!(out.schema(), *v.target_schema());
        let ts = out
            .column(1)
            .as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(
            ts.values().as_ref(),
            [1_000_000, 2_000_000],
            "naive ms taken as UTC µs"
        );
        assert_eq!(out.column(0).as_string::<i32>().value(1), "b");
        assert_eq!(v.finish().unwrap(), 2);
    }

    #[test]
    fn refusals_name_the_problem() {
        let cases: Vec<(Vec<(&str, ArrayRef)>, bool, &str)> = vec![
            (
                good()
                    .into_iter()
                    .filter(|(n, _)| *n != "count" && *n != "score")
                    .collect(),
                false,
                "missing columns `count`, `score` (feature table `t` needs user_id string, ts timestamp, count int64, score float64)",
            ),
            (
                good()
                    .into_iter()
                    .chain([("colour", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef)])
                    .collect(),
                false,
                "unknown column `colour` not in feature table `t`; remove it or ask to drop extra columns",
            ),
            (
                good()
                    .into_iter()
                    .chain([("_seq", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef)])
                    .collect(),
                true,
                "column `_seq` is ftab's own (it adds _seq, _row, _ingested_at, _date, _bucket); remove it from the data",
            ),
            (
                good()
                    .into_iter()
                    .chain([("_seq", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef)])
                    .collect(),
                false,
                "column `_seq` is ftab's own",
            ),
            (
                good()
                    .into_iter()
                    .map(|(n, a)| {
                        if n == "count" {
                            (n, Arc::new(StringArray::from(vec!["1", "2"])) as ArrayRef)
                        } else {
                            (n, a)
                        }
                    })
                    .collect(),
                false,
                "column `count` has type string, expected int64",
            ),
            (
                good()
                    .into_iter()
                    .map(|(n, a)| {
                        if n == "count" {
                            (
                                n,
                                Arc::new(datafusion::arrow::array::Float64Array::from(vec![
                                    1.0, 2.0,
                                ])) as ArrayRef,
                            )
                        } else {
                            (n, a)
                        }
                    })
                    .collect(),
                false,
                "column `count` has type float64, expected int64",
            ),
        ];
        for (columns, drop_extra, expected) in cases {
            let b = batch(columns);
            let err = validator(&b, drop_extra).unwrap_err().to_string();
            assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        }
    }

    #[test]
    fn extra_columns_can_be_dropped() {
        let b = batch(
            good()
                .into_iter()
                .chain([("colour", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef)])
                .collect(),
        );
        let mut v = validator(&b, true).unwrap();
        let out = v.convert(&b).unwrap().unwrap();
        assert_eq!(out.num_columns(), 4);
    }

    #[test]
    fn nulls_in_keys_are_counted_across_batches_with_the_first_row() {
        let with_nulls = |keys: Vec<Option<&str>>| {
            let n = keys.len();
            batch(vec![
                ("user_id", Arc::new(StringArray::from(keys)) as ArrayRef),
                ("ts", Arc::new(TimestampMicrosecondArray::from(vec![1; n]))),
                ("count", Arc::new(Int64Array::from(vec![Some(1); n]))),
                ("score", Arc::new(Float32Array::from(vec![None; n]))),
            ])
        };
        let first = with_nulls(vec![Some("a"), Some("b"), Some("c")]);
        let second = with_nulls(vec![Some("d"), None, None]);
        let third = with_nulls(vec![None, Some("e")]);
        let mut v = validator(&first, false).unwrap();
        assert!(v.convert(&first).unwrap().is_some());
        assert!(
            v.convert(&second).unwrap().is_none(),
            "stops producing once refused"
        );
        assert!(v.is_refused());
        assert!(v.convert(&third).unwrap().is_none());
        let err = v.finish().unwrap_err().to_string();
        assert_eq!(
            err,
            "column `user_id` has 3 null values (first at row 4); join keys must not be null"
        );
    }

    #[test]
    fn nanosecond_timestamps_must_be_whole_microseconds() {
        let b = |nanos: Vec<i64>| {
            batch(vec![
                (
                    "user_id",
                    Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef,
                ),
                (
                    "ts",
                    Arc::new(TimestampNanosecondArray::from(nanos).with_timezone("+02:00")),
                ),
                ("count", Arc::new(Int64Array::from(vec![1, 2]))),
                ("score", Arc::new(Float32Array::from(vec![0.5, 1.5]))),
            ])
        };
        let whole = b(vec![5_000, 7_000]);
        let mut v = validator(&whole, false).unwrap();
        let out = v.convert(&whole).unwrap().unwrap();
        let ts = out
            .column(1)
            .as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(
            ts.values().as_ref(),
            [5, 7],
            "same instant, in µs, zone UTC"
        );
        assert_eq!(ts.timezone(), Some("UTC"));
        let err = v.convert(&b(vec![5_000, 7_001])).unwrap_err().to_string();
        assert!(err.contains("sub-microsecond precision at row 3"), "{err}");
    }

    #[test]
    fn empty_ingest_is_refused() {
        let b = batch(good());
        let v = validator(&b, false).unwrap();
        assert_eq!(v.finish().unwrap_err(), ValidationError::Empty);
    }

    #[test]
    fn compatibility_table() {
        use DataType as D;
        let list = |t: DataType| D::List(Arc::new(Field::new("item", t, true)));
        let fixed = |t: DataType| D::FixedSizeList(Arc::new(Field::new("item", t, true)), 4);
        let f32_list = ValueType::List(Box::new(ValueType::Float32));
        assert!(compatible(&fixed(D::Float32), &f32_list));
        assert!(compatible(&list(D::Float16), &f32_list));
        assert!(!compatible(&list(D::Float64), &f32_list));
        assert!(compatible(&D::UInt32, &ValueType::Int64));
        assert!(!compatible(&D::UInt64, &ValueType::Int64));
        assert!(!compatible(&D::Int64, &ValueType::Float64));
        assert!(!compatible(&D::Date64, &ValueType::Date));
    }
}
