//! The content hash of an ingest: what tells a retried upload (same rows) from different
//! data sent under an idempotency key already used.
//!
//! `sha256v1:` + hex SHA-256 over: each column's name and type (ftab's names: `int64`,
//! `list<float64>`), then each validated row, its columns in ftab's own value encoding
//! (the online store's, `crate::online::encoding`: stable across Arrow upgrades) and
//! length-prefixed, then the row count. It depends on the values in upload order only:
//! not on how the rows were cut into batches, nor on lossless differences of the input
//! (int32 sent for an int64 column, dictionary-encoded strings), which validation removed.
//! A new encoding must get a new prefix, so hashes recorded before compare unequal rather
//! than wrongly equal.

use datafusion::arrow::array::RecordBatch;

use crate::definitions::ValueType;
use crate::online::encoding::encode_value;
use sha2::{Digest, Sha256};

/// Hashes validated batches of one ingest, in order.
#[derive(Debug, Clone)]
pub struct ContentHash {
    types: Vec<ValueType>,
    hasher: Sha256,
    row: Vec<u8>,
    rows: u64,
}

/// A batch whose columns are not the hash's (their count, or a column's Arrow type).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot hash a batch of columns ({found}) as ({expected})")]
pub struct ColumnsMismatch {
    expected: String,
    found: String,
}

impl ContentHash {
    /// A hash of batches whose columns are `columns` (the table's, in order), each in its
    /// type's Arrow type.
    pub fn new(columns: &[(String, ValueType)]) -> Self {
        let mut hasher = Sha256::new();
        for (name, value_type) in columns {
            hasher.update(name.as_bytes());
            hasher.update([0]);
            hasher.update(value_type.to_string().as_bytes());
            hasher.update([0]);
        }
        Self {
            types: columns.iter().map(|(_, t)| t.clone()).collect(),
            hasher,
            row: Vec::new(),
            rows: 0,
        }
    }

    /// Add the rows of `batch`.
    pub fn update(&mut self, batch: &RecordBatch) -> Result<(), ColumnsMismatch> {
        let schema = batch.schema();
        let matches = schema.fields().len() == self.types.len()
            && schema
                .fields()
                .iter()
                .zip(&self.types)
                .all(|(field, value_type)| field.data_type() == &value_type.to_arrow());
        if !matches {
            let list = |types: Vec<String>| types.join(", ");
            return Err(ColumnsMismatch {
                expected: list(
                    self.types
                        .iter()
                        .map(|t| t.to_arrow().to_string())
                        .collect(),
                ),
                found: list(
                    schema
                        .fields()
                        .iter()
                        .map(|f| f.data_type().to_string())
                        .collect(),
                ),
            });
        }
        for row in 0..batch.num_rows() {
            self.row.clear();
            for (column, value_type) in batch.columns().iter().zip(&self.types) {
                encode_value(column.as_ref(), value_type, row, &mut self.row);
            }
            self.hasher.update((self.row.len() as u64).to_le_bytes());
            self.hasher.update(&self.row);
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// The hash, as `sha256v1:` and 64 hex digits.
    pub fn finish(self) -> String {
        let mut hasher = self.hasher;
        hasher.update(self.rows.to_le_bytes());
        let digest = hasher.finalize();
        let mut text = String::with_capacity(9 + 64);
        text.push_str("sha256v1:");
        for byte in digest.iter() {
            text.push_str(&format!("{byte:02x}"));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, Float64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(keys: &[&str], values: &[f64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("v", DataType::Float64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(keys.to_vec())) as ArrayRef,
                Arc::new(Float64Array::from(values.to_vec())),
            ],
        )
        .unwrap()
    }

    fn hash(batches: &[RecordBatch]) -> String {
        let mut hash = ContentHash::new(&[
            ("k".to_string(), ValueType::String),
            ("v".to_string(), ValueType::Float64),
        ]);
        for b in batches {
            hash.update(b).unwrap();
        }
        hash.finish()
    }

    #[test]
    fn a_batch_of_other_columns_is_an_error_not_a_panic() {
        let mut hash = ContentHash::new(&[
            ("k".to_string(), ValueType::String),
            ("v".to_string(), ValueType::Int64),
        ]);
        // A float64 column where the hash expects int64.
        let err = hash.update(&batch(&["a"], &[1.0])).unwrap_err().to_string();
        assert!(err.contains("(Utf8, Float64) as (Utf8, Int64)"), "{err}");
    }

    #[test]
    fn the_same_rows_hash_alike_however_they_are_batched() {
        let whole = hash(&[batch(&["a", "b", "c"], &[1.0, f64::NAN, 3.0])]);
        let split = hash(&[batch(&["a"], &[1.0]), batch(&["b", "c"], &[f64::NAN, 3.0])]);
        assert_eq!(whole, split);
        assert!(
            whole.starts_with("sha256v1:") && whole.len() == 9 + 64,
            "{whole}"
        );
    }

    #[test]
    fn different_rows_hash_differently() {
        let base = hash(&[batch(&["a", "b"], &[1.0, 2.0])]);
        for other in [
            batch(&["a", "b"], &[1.0, 2.5]),
            batch(&["b", "a"], &[2.0, 1.0]),
            batch(&["a"], &[1.0]),
            batch(&["ab", ""], &[1.0, 2.0]),
            batch(&["a", "b"], &[1.0, f64::NAN]),
        ] {
            assert_ne!(hash(std::slice::from_ref(&other)), base, "{other:?}");
        }
        // Rows cut at another place cannot collide: each is length-prefixed.
        assert_ne!(
            hash(&[batch(&["ab", "c"], &[1.0, 1.0])]),
            hash(&[batch(&["a", "bc"], &[1.0, 1.0])])
        );
    }
}
