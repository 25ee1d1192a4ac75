//! The content hash of an ingest: what tells a retried upload (same rows) from different
//! data sent under an idempotency key already used.
//!
//! The hash is SHA-256 over the table's schema and the validated rows in the table's
//! types, each row in Arrow's row format, in upload order. It does not depend on how the
//! rows were cut into batches, nor on lossless differences of the input (int32 sent for
//! an int64 column, dictionary-encoded strings): those are gone after validation.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::row::{RowConverter, SortField};
use sha2::{Digest, Sha256};

/// Hashes validated batches of one ingest, in order.
pub struct ContentHash {
    converter: RowConverter,
    hasher: Sha256,
    rows: u64,
}

impl std::fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentHash")
            .field("rows", &self.rows)
            .finish()
    }
}

impl ContentHash {
    /// A hash of batches of `schema` (the table's Arrow schema).
    pub fn new(schema: &SchemaRef) -> Result<Self, ArrowError> {
        let converter = RowConverter::new(
            schema
                .fields()
                .iter()
                .map(|f| SortField::new(f.data_type().clone()))
                .collect(),
        )?;
        let mut hasher = Sha256::new();
        for field in schema.fields() {
            hasher.update(field.name().as_bytes());
            hasher.update([0]);
            hasher.update(field.data_type().to_string().as_bytes());
            hasher.update([0]);
        }
        Ok(Self {
            converter,
            hasher,
            rows: 0,
        })
    }

    /// Add the rows of `batch`.
    pub fn update(&mut self, batch: &RecordBatch) -> Result<(), ArrowError> {
        let rows = self.converter.convert_columns(batch.columns())?;
        for row in rows.iter() {
            let bytes = row.as_ref();
            // Rows are not self-delimiting in general: prefix each with its length.
            self.hasher.update((bytes.len() as u64).to_le_bytes());
            self.hasher.update(bytes);
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// The hash as hex, prefixed with what it is (`sha256:`).
    pub fn finish(self) -> String {
        let mut hasher = self.hasher;
        hasher.update(self.rows.to_le_bytes());
        let digest = hasher.finalize();
        let mut text = String::with_capacity(7 + 64);
        text.push_str("sha256:");
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
        let mut hash = ContentHash::new(&batches[0].schema()).unwrap();
        for b in batches {
            hash.update(b).unwrap();
        }
        hash.finish()
    }

    #[test]
    fn the_same_rows_hash_alike_however_they_are_batched() {
        let whole = hash(&[batch(&["a", "b", "c"], &[1.0, f64::NAN, 3.0])]);
        let split = hash(&[batch(&["a"], &[1.0]), batch(&["b", "c"], &[f64::NAN, 3.0])]);
        assert_eq!(whole, split);
        assert!(
            whole.starts_with("sha256:") && whole.len() == 7 + 64,
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
            assert_ne!(hash(&[other.clone()]), base, "{other:?}");
        }
        // Rows cut at another place cannot collide: each is length-prefixed.
        assert_ne!(
            hash(&[batch(&["ab", "c"], &[1.0, 1.0])]),
            hash(&[batch(&["a", "bc"], &[1.0, 1.0])])
        );
    }
}
