//! Reading data files for `ftab ingest`: Parquet, CSV, JSON lines and Arrow IPC, batch by
//! batch (never the whole file in memory).
//!
//! Text formats are parsed with the feature table's types where the file has the table's
//! columns, so `2024-05-01T12:00:00Z` in a timestamp column arrives as a timestamp; other
//! columns are read as the file has them and the scheduler decides about them.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;

/// Rows per batch read from a file.
pub const BATCH_ROWS: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFormat {
    Parquet,
    Csv,
    JsonLines,
    ArrowIpc,
}

impl DataFormat {
    /// The format a file's extension names.
    pub fn from_path(path: &Path) -> Result<Self, FileError> {
        let extension = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        Ok(match extension.as_str() {
            "parquet" | "pq" => DataFormat::Parquet,
            "csv" => DataFormat::Csv,
            "jsonl" | "ndjson" | "json" => DataFormat::JsonLines,
            "arrow" | "arrows" | "ipc" | "feather" => DataFormat::ArrowIpc,
            _ => {
                return Err(FileError::UnknownFormat {
                    path: path.to_path_buf(),
                });
            }
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error(
        "cannot tell the format of {path}: name it .parquet, .csv, .jsonl (JSON lines) or .arrow (Arrow IPC)"
    )]
    UnknownFormat { path: PathBuf },
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
}

fn read_error(path: &Path, e: impl std::fmt::Display) -> FileError {
    FileError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

pub type Batches = Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>> + Send>;

/// Open `path` as batches. `table` is the feature table's Arrow schema, used for the
/// types of text formats.
pub fn open(path: &Path, table: &Schema) -> Result<Batches, FileError> {
    let format = DataFormat::from_path(path)?;
    let file = File::open(path).map_err(|e| read_error(path, e))?;
    match format {
        DataFormat::Parquet => {
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                    .map_err(|e| read_error(path, e))?
                    .with_batch_size(BATCH_ROWS)
                    .build()
                    .map_err(|e| read_error(path, e))?;
            Ok(Box::new(reader))
        }
        DataFormat::Csv => {
            let mut reader = BufReader::new(file);
            let mut header = String::new();
            reader
                .read_line(&mut header)
                .map_err(|e| read_error(path, e))?;
            if header.trim().is_empty() {
                return Err(read_error(
                    path,
                    "the file is empty; a CSV file needs a header line",
                ));
            }
            let names = parse_header(&header);
            let schema = Arc::new(Schema::new(
                names
                    .iter()
                    .map(|name| Field::new(name, typed_as(table, name), true))
                    .collect::<Vec<_>>(),
            ));
            reader
                .seek(SeekFrom::Start(0))
                .map_err(|e| read_error(path, e))?;
            let csv = arrow::csv::ReaderBuilder::new(schema)
                .with_header(true)
                .with_batch_size(BATCH_ROWS)
                .build(reader)
                .map_err(|e| read_error(path, e))?;
            Ok(Box::new(csv.map(|batch| batch.map_err(with_file_line))))
        }
        DataFormat::JsonLines => {
            let mut reader = BufReader::new(file);
            let (inferred, _) =
                arrow::json::reader::infer_json_schema_from_seekable(&mut reader, Some(1000))
                    .map_err(|e| read_error(path, e))?;
            let schema: SchemaRef = Arc::new(Schema::new(
                inferred
                    .fields()
                    .iter()
                    .map(|f| match table.field_with_name(f.name()) {
                        Ok(t) => Field::new(f.name(), t.data_type().clone(), true),
                        Err(_) => f.as_ref().clone(),
                    })
                    .collect::<Vec<_>>(),
            ));
            let json = arrow::json::ReaderBuilder::new(schema)
                .with_batch_size(BATCH_ROWS)
                .build(reader)
                .map_err(|e| read_error(path, e))?;
            Ok(Box::new(json))
        }
        DataFormat::ArrowIpc => {
            let mut reader = BufReader::new(file);
            let mut magic = [0u8; 6];
            let is_file = reader.read_exact(&mut magic).is_ok() && &magic == b"ARROW1";
            reader
                .seek(SeekFrom::Start(0))
                .map_err(|e| read_error(path, e))?;
            if is_file {
                let ipc = arrow::ipc::reader::FileReader::try_new(reader, None)
                    .map_err(|e| read_error(path, e))?;
                Ok(Box::new(ipc))
            } else {
                let ipc = arrow::ipc::reader::StreamReader::try_new(reader, None)
                    .map_err(|e| read_error(path, e))?;
                Ok(Box::new(ipc))
            }
        }
    }
}

/// Arrow's CSV reader counts data lines ("at line 2" is the second row); the header makes
/// that line 3 of the file, which is what a person looks for in an editor.
fn with_file_line(error: ArrowError) -> ArrowError {
    let renumber = |message: String| {
        let Some(at) = message.find("at line ") else {
            return message;
        };
        let start = at + "at line ".len();
        let digits = message[start..]
            .find(|c: char| !c.is_ascii_digit())
            .map_or(message.len(), |end| start + end);
        match message[start..digits].parse::<u64>() {
            Ok(line) => format!(
                "{}at line {} of the file{}",
                &message[..at],
                line + 1,
                &message[digits..]
            ),
            Err(_) => message,
        }
    };
    match error {
        ArrowError::ParseError(message) => ArrowError::ParseError(renumber(message)),
        ArrowError::CsvError(message) => ArrowError::CsvError(renumber(message)),
        other => other,
    }
}

/// The type a text column is parsed as: the table's, or string for columns it lacks.
fn typed_as(table: &Schema, name: &str) -> DataType {
    table
        .field_with_name(name)
        .map(|f| f.data_type().clone())
        .unwrap_or(DataType::Utf8)
}

/// Column names of a CSV header line (quotes removed).
fn parse_header(line: &str) -> Vec<String> {
    line.trim_end_matches(['\r', '\n'])
        .split(',')
        .map(|name| name.trim().trim_matches('"').to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use arrow::datatypes::{TimeUnit, TimestampMicrosecondType};

    fn table() -> Schema {
        Schema::new(vec![
            Field::new("user_id", DataType::Utf8, false),
            Field::new(
                "timestamp",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("count", DataType::Int64, true),
        ])
    }

    fn read_all(path: &Path) -> RecordBatch {
        let batches: Vec<RecordBatch> = open(path, &table())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
    }

    #[test]
    fn csv_and_json_lines_parse_with_the_table_types() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("data.csv");
        std::fs::write(&csv, "user_id,timestamp,count,extra\nu1,2024-05-01T12:00:00Z,3,x\nu2,2024-05-02 00:00:00,,y\n").unwrap();
        let batch = read_all(&csv);
        assert_eq!(batch.num_rows(), 2);
        let ts = batch.column(1).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(ts.value(0), 1_714_564_800_000_000);
        assert_eq!(
            batch.schema().field(3).data_type(),
            &DataType::Utf8,
            "extra columns stay"
        );
        assert!(batch.column(2).is_null(1));

        let jsonl = dir.path().join("data.jsonl");
        std::fs::write(
            &jsonl,
            "{\"user_id\": \"u1\", \"timestamp\": \"2024-05-01T12:00:00Z\", \"count\": 3}\n",
        )
        .unwrap();
        let batch = read_all(&jsonl);
        assert_eq!(
            batch
                .column(1)
                .as_primitive::<TimestampMicrosecondType>()
                .value(0),
            1_714_564_800_000_000
        );
    }

    #[test]
    fn parquet_and_arrow_ipc_stream() {
        let dir = tempfile::tempdir().unwrap();
        let batch = RecordBatch::try_new(
            Arc::new(table()),
            vec![
                Arc::new(arrow::array::StringArray::from(vec!["u1"])),
                Arc::new(
                    arrow::array::TimestampMicrosecondArray::from(vec![5]).with_timezone("UTC"),
                ),
                Arc::new(arrow::array::Int64Array::from(vec![Some(1)])),
            ],
        )
        .unwrap();
        let parquet_path = dir.path().join("d.parquet");
        let mut writer = parquet::arrow::ArrowWriter::try_new(
            File::create(&parquet_path).unwrap(),
            batch.schema(),
            None,
        )
        .unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        assert_eq!(read_all(&parquet_path), batch);

        let ipc_path = dir.path().join("d.arrow");
        let mut writer = arrow::ipc::writer::FileWriter::try_new(
            File::create(&ipc_path).unwrap(),
            &batch.schema(),
        )
        .unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        assert_eq!(read_all(&ipc_path), batch);

        let stream_path = dir.path().join("d.arrows");
        let mut writer = arrow::ipc::writer::StreamWriter::try_new(
            File::create(&stream_path).unwrap(),
            &batch.schema(),
        )
        .unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        assert_eq!(read_all(&stream_path), batch);
    }

    #[test]
    fn unknown_formats_and_missing_files_are_named() {
        let err = open(Path::new("data.xlsx"), &table())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("cannot tell the format of data.xlsx"), "{err}");
        let err = open(Path::new("/nonexistent/data.csv"), &table())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("cannot read /nonexistent/data.csv"), "{err}");
    }

    #[test]
    fn csv_parse_errors_give_the_line_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("data.csv");
        // Line 1 is the header; the bad count is on line 4.
        std::fs::write(
            &csv,
            "user_id,timestamp,count\nu1,2024-05-01T12:00:00Z,1\nu2,2024-05-01T12:00:00Z,2\nu3,2024-05-01T12:00:00Z,abc\n",
        )
        .unwrap();
        let err = open(&csv, &table())
            .unwrap()
            .find_map(Result::err)
            .expect("the bad value fails")
            .to_string();
        assert!(err.contains("'abc'"), "{err}");
        assert!(err.contains("at line 4 of the file"), "{err}");
    }
}
