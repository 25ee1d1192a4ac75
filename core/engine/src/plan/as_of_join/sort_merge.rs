//! The sort-merge strategy: one pass over a spine partition and a feature partition, both
//! sorted by (keys, time), holding only the feature batches the current spine batch spans.

use std::cmp::Ordering;
use std::collections::VecDeque;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use datafusion::arrow::compute::interleave;
use datafusion::arrow::datatypes::{SchemaRef, TimestampMicrosecondType};
use datafusion::arrow::row::{RowConverter, Rows};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;

use super::spec::{AsOfJoinSpec, Resolved};

/// Feature batches the merge may hold for one output batch before it emits what it has:
/// bounds memory when a spine batch spans a long stretch of the feature side.
const MAX_RETAINED_BATCHES: usize = 32;

/// One feature batch as the merge reads it.
struct FeatureBatch {
    keys: Rows,
    times: datafusion::arrow::array::PrimitiveArray<TimestampMicrosecondType>,
    /// The output columns.
    values: Vec<ArrayRef>,
}

impl FeatureBatch {
    fn len(&self) -> usize {
        self.times.len()
    }
}

/// The state of one partition's merge.
pub(super) struct Merge {
    spine: SendableRecordBatchStream,
    features: SendableRecordBatchStream,
    features_done: bool,
    converter: RowConverter,
    /// Feature batches still needed, the oldest first; `buffer[i]` has id `first_id + i`.
    buffer: VecDeque<FeatureBatch>,
    first_id: u64,
    /// The next feature row not yet passed, as (batch id, row).
    cursor: (u64, usize),
    /// The last feature row passed: the latest one not after the current spine row, if it
    /// has the current spine row's keys.
    candidate: Option<(u64, usize)>,
    resolved: Resolved,
    spine_time_name: String,
    ttl_micros: Option<i64>,
    schema: SchemaRef,
    /// One null per output column, for spine rows without a match.
    null_columns: Vec<ArrayRef>,
    /// Output batches made but not yet returned.
    ready: VecDeque<RecordBatch>,
    /// For the debug log: when the merge started, and how long it waited for its inputs.
    started: std::time::Instant,
    waited: std::time::Duration,
}

impl Merge {
    pub(super) fn new(
        spine: SendableRecordBatchStream,
        features: SendableRecordBatchStream,
        converter: RowConverter,
        resolved: Resolved,
        spec: &AsOfJoinSpec,
        schema: SchemaRef,
        null_columns: Vec<ArrayRef>,
    ) -> Self {
        Self {
            spine,
            features,
            features_done: false,
            converter,
            buffer: VecDeque::new(),
            first_id: 0,
            cursor: (0, 0),
            candidate: None,
            resolved,
            spine_time_name: spec.spine_time.clone(),
            ttl_micros: spec.ttl_micros,
            schema,
            null_columns,
            ready: VecDeque::new(),
            started: std::time::Instant::now(),
            waited: std::time::Duration::ZERO,
        }
    }

    pub(super) async fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            if let Some(batch) = self.ready.pop_front() {
                return Ok(Some(batch));
            }
            let asked = std::time::Instant::now();
            let spine = self.spine.next().await.transpose()?;
            self.waited += asked.elapsed();
            let Some(spine) = spine else {
                tracing::debug!(
                    total = ?self.started.elapsed(),
                    waiting_for_inputs = ?self.waited,
                    "as-of join partition done"
                );
                return Ok(None);
            };
            if spine.num_rows() > 0 {
                self.join_batch(&spine).await?;
            }
        }
    }

    fn batch(&self, id: u64) -> &FeatureBatch {
        &self.buffer[(id - self.first_id) as usize]
    }

    /// The feature row at the cursor, reading the next feature batch when needed; `None`
    /// when the feature side is exhausted.
    async fn current(&mut self) -> Result<Option<(u64, usize)>> {
        loop {
            let index = (self.cursor.0 - self.first_id) as usize;
            if let Some(batch) = self.buffer.get(index) {
                if self.cursor.1 < batch.len() {
                    return Ok(Some(self.cursor));
                }
                self.cursor = (self.cursor.0 + 1, 0);
                continue;
            }
            if self.features_done {
                return Ok(None);
            }
            let asked = std::time::Instant::now();
            let next = self.features.next().await.transpose()?;
            self.waited += asked.elapsed();
            match next {
                Some(batch) if batch.num_rows() == 0 => {}
                Some(batch) => {
                    let keys: Vec<ArrayRef> = self
                        .resolved
                        .feature_keys
                        .iter()
                        .map(|&i| batch.column(i).clone())
                        .collect();
                    let times = batch
                        .column(self.resolved.feature_time)
                        .as_primitive_opt::<TimestampMicrosecondType>()
                        .ok_or_else(|| {
                            DataFusionError::Internal(
                                "feature timestamps are not microseconds".into(),
                            )
                        })?
                        .clone();
                    let values = self
                        .resolved
                        .outputs
                        .iter()
                        .map(|&i| batch.column(i).clone())
                        .collect();
                    self.buffer.push_back(FeatureBatch {
                        keys: self.converter.convert_columns(&keys)?,
                        times,
                        values,
                    });
                }
                None => {
                    self.features_done = true;
                    return Ok(None);
                }
            }
        }
    }

    async fn join_batch(&mut self, spine: &RecordBatch) -> Result<()> {
        let keys: Vec<ArrayRef> = self
            .resolved
            .spine_keys
            .iter()
            .map(|&i| spine.column(i).clone())
            .collect();
        let spine_keys = self.converter.convert_columns(&keys)?;
        let times = spine
            .column(self.resolved.spine_time)
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| DataFusionError::Internal("spine times are not microseconds".into()))?;
        if times.null_count() > 0 {
            return Err(DataFusionError::Execution(format!(
                "the spine's time column `{}` has null values; every spine row needs a time",
                self.spine_time_name
            )));
        }
        let mut matches: Vec<Option<(u64, usize)>> = Vec::with_capacity(spine.num_rows());
        let mut chunk_start = 0;
        for i in 0..spine.num_rows() {
            let key = spine_keys.row(i);
            let time = times.value(i);
            while let Some((id, row)) = self.current().await? {
                let batch = self.batch(id);
                match batch.keys.row(row).cmp(&key) {
                    Ordering::Less => {
                        // Skip every row of this batch with a smaller key at once.
                        let end = row
                            + partition_point(batch.len() - row, |r| batch.keys.row(row + r) < key);
                        self.cursor = (id, end);
                        self.candidate = None;
                    }
                    Ordering::Equal if batch.times.value(row) <= time => {
                        self.candidate = Some((id, row));
                        self.cursor = (id, row + 1);
                    }
                    _ => break,
                }
            }
            let found = self.candidate.filter(|&(id, row)| {
                let batch = self.batch(id);
                batch.keys.row(row) == key
                    && self
                        .ttl_micros
                        .is_none_or(|ttl| batch.times.value(row) >= time.saturating_sub(ttl))
            });
            matches.push(found);
            if self.buffer.len() > MAX_RETAINED_BATCHES {
                self.emit(spine, chunk_start, &matches)?;
                chunk_start = i + 1;
                matches.clear();
                self.release();
            }
        }
        self.emit(spine, chunk_start, &matches)?;
        self.release();
        Ok(())
    }

    /// Queue the output rows of spine rows `start..start + matches.len()`.
    fn emit(
        &mut self,
        spine: &RecordBatch,
        start: usize,
        matches: &[Option<(u64, usize)>],
    ) -> Result<()> {
        if matches.is_empty() {
            return Ok(());
        }
        let null_source = self.buffer.len();
        let indices: Vec<(usize, usize)> = matches
            .iter()
            .map(|m| match m {
                Some((id, row)) => ((id - self.first_id) as usize, *row),
                None => (null_source, 0),
            })
            .collect();
        let mut columns: Vec<ArrayRef> = spine.slice(start, matches.len()).columns().to_vec();
        for (output, null) in self.null_columns.iter().enumerate() {
            let sources: Vec<&dyn Array> = self
                .buffer
                .iter()
                .map(|b| b.values[output].as_ref())
                .chain(std::iter::once(null.as_ref()))
                .collect();
            columns.push(interleave(&sources, &indices)?);
        }
        self.ready
            .push_back(RecordBatch::try_new(self.schema.clone(), columns)?);
        Ok(())
    }

    /// Drop feature batches before both the candidate and the cursor.
    fn release(&mut self) {
        let keep_from = self
            .candidate
            .map_or(self.cursor.0, |(id, _)| id.min(self.cursor.0));
        while self.first_id < keep_from && !self.buffer.is_empty() {
            self.buffer.pop_front();
            self.first_id += 1;
        }
    }
}

/// The number of leading `0..len` for which `pred` holds, assuming it holds for a prefix.
fn partition_point(len: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut low, mut high) = (0, len);
    while low < high {
        let mid = low + (high - low) / 2;
        if pred(mid) {
            low = mid + 1;
        } else {
            high = mid;
        }
    }
    low
}
