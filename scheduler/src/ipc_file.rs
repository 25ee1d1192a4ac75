//! Arrow IPC stream files sent as Flight data without decoding them.
//!
//! A training set's partitions are Arrow IPC stream files in the executor's work directory
//! (Ballista's job output). When the executor is this process's own, DoGet sends each
//! file's messages as they are: the IPC stream format and Flight's `FlightData` carry the
//! same flatbuffer header and body, so re-encoding would only copy the data twice.

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read};
use std::path::PathBuf;

use arrow_flight::FlightData;
use datafusion::arrow::ipc::root_as_message;
use futures::StreamExt;
use futures::stream::BoxStream;
use tonic::Status;

/// Messages are read in chunks of this size.
const READ_BUFFER: usize = 1 << 20;

/// The messages of the IPC stream file at `path`, as Flight data, read on a blocking
/// thread a few messages ahead of the client.
pub fn flight_data(path: PathBuf) -> BoxStream<'static, Result<FlightData, Status>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let result = (|| -> Result<(), String> {
            let file =
                File::open(&path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
            let mut reader = BufReader::with_capacity(READ_BUFFER, file);
            while let Some(data) = next_message(&mut reader)? {
                if sender.blocking_send(Ok(data)).is_err() {
                    break; // the client went away
                }
            }
            Ok(())
        })();
        if let Err(message) = result {
            let _ = sender.blocking_send(Err(Status::internal(format!(
                "cannot read a training set partition: {message}"
            ))));
        }
    });
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    })
    .boxed()
}

/// The next message of an IPC stream, or `None` at its end.
fn next_message(reader: &mut impl Read) -> Result<Option<FlightData>, String> {
    let mut word = [0u8; 4];
    match reader.read_exact(&mut word) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.to_string()),
    }
    // A continuation marker, then the length (the legacy format has the length alone).
    if word == [0xFF; 4] {
        reader.read_exact(&mut word).map_err(|e| e.to_string())?;
    }
    let length = i32::from_le_bytes(word);
    if length <= 0 {
        return Ok(None);
    }
    let mut header = vec![0u8; length as usize];
    reader.read_exact(&mut header).map_err(|e| e.to_string())?;
    let body_length = root_as_message(&header)
        .map_err(|e| format!("not an Arrow IPC message: {e}"))?
        .bodyLength();
    let mut body = vec![0u8; usize::try_from(body_length).map_err(|e| e.to_string())?];
    reader.read_exact(&mut body).map_err(|e| e.to_string())?;
    Ok(Some(FlightData {
        data_header: header.into(),
        data_body: body.into(),
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_flight::decode::FlightRecordBatchStream;
    use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    use datafusion::arrow::ipc::writer::StreamWriter;
    use futures::TryStreamExt;
    use std::sync::Arc;

    #[tokio::test]
    async fn an_ipc_file_reads_back_as_the_same_batches_over_flight() {
        let batches: Vec<RecordBatch> = (0..3)
            .map(|b| {
                RecordBatch::try_from_iter([
                    (
                        "k",
                        Arc::new(StringArray::from_iter_values(
                            (0..1000).map(|i| format!("k{b}-{i}")),
                        )) as ArrayRef,
                    ),
                    ("v", Arc::new(Int64Array::from_iter_values(0..1000))),
                ])
                .unwrap()
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.arrow");
        let mut writer =
            StreamWriter::try_new(File::create(&path).unwrap(), &batches[0].schema()).unwrap();
        for batch in &batches {
            writer.write(batch).unwrap();
        }
        writer.finish().unwrap();

        let data =
            flight_data(path).map_err(|s| arrow_flight::error::FlightError::Tonic(Box::new(s)));
        let decoded: Vec<RecordBatch> = FlightRecordBatchStream::new_from_flight_data(data)
            .try_collect()
            .await
            .unwrap();
        assert_eq!(decoded, batches);

        let missing = flight_data(dir.path().join("nope.arrow"))
            .try_collect::<Vec<_>>()
            .await
            .unwrap_err();
        assert!(missing.message().contains("cannot open"), "{missing}");
    }
}
