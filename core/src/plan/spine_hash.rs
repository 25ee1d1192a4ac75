//! The spine-hash strategy of the as-of join ([`super::pit_join::JoinStrategy::SpineHash`]):
//! the partition's spine rows are held in memory, indexed by key, and the feature rows
//! stream past in any order. Nothing is sorted or merged on the feature side, so a
//! bucket's files are read one after another as they lie.
//!
//! The spine rows of one key, ordered by time, are that key's *slots*. A feature row with
//! timestamp `ts` can only be the answer of the slots at or after `ts`, and it is the
//! answer of the first of them unless a later feature row beats it there; so each feature
//! row is offered to one slot, the first with time `>= ts`, and the slot keeps the latest
//! by (`timestamp`, `_seq`). Once every feature row has passed, a sweep along each key's
//! slots carries the latest row forward: slot `i`'s answer is the latest of the rows
//! offered to slots `0..=i`, dropped if the ttl excludes it.
//!
//! Memory: the spine partition, a few dozen bytes per spine row, and the feature values of
//! the rows slots hold (rows that lost their slot are compacted away as they pile up).
//! All of it is reserved from the memory pool; running out is an error that says what to
//! change. The planner picks this strategy only when its estimate of that memory fits
//! (see `training_set::spine_hash_fits`).

use std::collections::VecDeque;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, UInt32Array, new_null_array,
};
use datafusion::arrow::compute::{interleave, take};
use datafusion::arrow::datatypes::{Int64Type, SchemaRef, TimestampMicrosecondType};
use datafusion::arrow::row::{RowConverter, Rows};
use datafusion::common::{DataFusionError, HashMap, Result};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::memory_pool::MemoryReservation;
use futures::StreamExt;

use super::pit_join::Resolved;

/// `Best::batch` of a slot no feature row has reached.
const EMPTY: u32 = u32::MAX;
/// `Best::batch` of a slot won by a row of the feature batch being read.
const PENDING: u32 = u32::MAX - 1;
/// Retained rows that lost their slot are compacted away once they outnumber the live
/// ones by this many (and by the live count itself).
const COMPACT_SLACK: usize = 64 * 1024;
/// Bytes reserved per spine row for the index: key, time, slot and best-row entries.
pub const BYTES_PER_SPINE_ROW: usize = 64;

/// The latest feature row offered to a slot so far.
#[derive(Debug, Clone, Copy)]
struct Best {
    ts: i64,
    seq: i64,
    /// Retained batch (or [`EMPTY`], [`PENDING`]).
    batch: u32,
    /// Row in the retained batch (in the feature batch while [`PENDING`]).
    row: u32,
}

impl Best {
    const NONE: Best = Best {
        ts: 0,
        seq: 0,
        batch: EMPTY,
        row: 0,
    };

    fn is_set(&self) -> bool {
        self.batch != EMPTY
    }

    fn later_than(&self, other: &Best) -> bool {
        !other.is_set() || (self.ts, self.seq) > (other.ts, other.seq)
    }
}

/// One partition of a spine-hash as-of join.
pub(super) struct SpineHash {
    pub(super) table: String,
    pub(super) resolved: Resolved,
    pub(super) spine_time_name: String,
    pub(super) ttl_micros: Option<i64>,
    pub(super) schema: SchemaRef,
    pub(super) converter: RowConverter,
    pub(super) reservation: MemoryReservation,
    spine: VecDeque<RecordBatch>,
    /// Key (row-encoded) to key index.
    keys: HashMap<Box<[u8]>, u32>,
    /// The slots of key `k` are `slot_start[k]..slot_start[k + 1]`, ordered by time.
    slot_start: Vec<u32>,
    slot_time: Vec<i64>,
    /// The spine row (index over all spine batches, in arrival order) of each slot.
    slot_row: Vec<u32>,
    best: Vec<Best>,
    /// Feature values of rows that won a slot, one `Vec` of output columns per batch.
    retained: Vec<Vec<ArrayRef>>,
    retained_rows: usize,
    /// Slots holding a row.
    live: usize,
}

impl SpineHash {
    pub(super) fn new(
        table: String,
        resolved: Resolved,
        spine_time_name: String,
        ttl_micros: Option<i64>,
        schema: SchemaRef,
        converter: RowConverter,
        reservation: MemoryReservation,
    ) -> Self {
        Self {
            table,
            resolved,
            spine_time_name,
            ttl_micros,
            schema,
            converter,
            reservation,
            spine: VecDeque::new(),
            keys: HashMap::default(),
            slot_start: Vec::new(),
            slot_time: Vec::new(),
            slot_row: Vec::new(),
            best: Vec::new(),
            retained: Vec::new(),
            retained_rows: 0,
            live: 0,
        }
    }

    /// Join every spine row of `spine` with `features`; the output batches are the spine
    /// batches, in arrival order, with the feature columns added.
    pub(super) async fn run(
        mut self,
        mut spine: SendableRecordBatchStream,
        mut features: SendableRecordBatchStream,
    ) -> Result<Output> {
        while let Some(batch) = spine.next().await.transpose()? {
            self.add_spine(batch)?;
        }
        self.index_spine()?;
        while let Some(batch) = features.next().await.transpose()? {
            self.offer(&batch)?;
        }
        self.finish()
    }

    fn grow(&mut self, bytes: usize) -> Result<()> {
        self.reservation.try_grow(bytes).map_err(|e| {
            DataFusionError::ResourcesExhausted(format!(
                "as-of join with `{}`: the spine-hash join holds a partition of the spine in \
                 memory, and it does not fit ({e}); raise the scheduler's memory_limit, or set \
                 training_set_join = \"sort_merge\", which spills",
                self.table
            ))
        })
    }

    fn add_spine(&mut self, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let times = spine_times(&batch, self.resolved.spine_time)?;
        if times.null_count() > 0 {
            return Err(DataFusionError::Execution(format!(
                "the spine's time column `{}` has null values; every spine row needs a time",
                self.spine_time_name
            )));
        }
        self.grow(batch.get_array_memory_size() + batch.num_rows() * BYTES_PER_SPINE_ROW)?;
        self.spine.push_back(batch);
        Ok(())
    }

    /// Group the spine rows by key and order each key's rows by time.
    fn index_spine(&mut self) -> Result<()> {
        let total: usize = self.spine.iter().map(|b| b.num_rows()).sum();
        if total >= PENDING as usize {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "as-of join with `{}`: {total} spine rows in one partition are more than the \
                 spine-hash join indexes; set training_set_join = \"sort_merge\"",
                self.table
            )));
        }
        let mut key_of = Vec::with_capacity(total);
        let mut time_of = Vec::with_capacity(total);
        for batch in &self.spine {
            let rows = self.key_rows(batch, &self.resolved.spine_keys)?;
            let times = spine_times(batch, self.resolved.spine_time)?;
            for r in 0..batch.num_rows() {
                let bytes = rows.row(r);
                let key = match self.keys.get(bytes.as_ref()) {
                    Some(&k) => k,
                    None => {
                        let k = self.keys.len() as u32;
                        self.keys.insert(bytes.as_ref().into(), k);
                        k
                    }
                };
                key_of.push(key);
                time_of.push(times.value(r));
            }
        }
        let key_bytes: usize = self.keys.keys().map(|k| k.len() + 32).sum();
        self.grow(key_bytes)?;
        // A counting sort by key, then each key's slots by (time, arrival).
        let mut start = vec![0u32; self.keys.len() + 1];
        for &k in &key_of {
            start[k as usize + 1] += 1;
        }
        for k in 0..self.keys.len() {
            start[k + 1] += start[k];
        }
        let mut next = start.clone();
        let mut slot_row = vec![0u32; total];
        for (row, &k) in key_of.iter().enumerate() {
            slot_row[next[k as usize] as usize] = row as u32;
            next[k as usize] += 1;
        }
        for k in 0..self.keys.len() {
            let slots = &mut slot_row[start[k] as usize..start[k + 1] as usize];
            slots.sort_unstable_by_key(|&row| (time_of[row as usize], row));
        }
        self.slot_time = slot_row.iter().map(|&r| time_of[r as usize]).collect();
        self.slot_row = slot_row;
        self.slot_start = start;
        self.best = vec![Best::NONE; total];
        Ok(())
    }

    fn key_rows(&self, batch: &RecordBatch, columns: &[usize]) -> Result<Rows> {
        let keys: Vec<ArrayRef> = columns.iter().map(|&i| batch.column(i).clone()).collect();
        Ok(self.converter.convert_columns(&keys)?)
    }

    /// Offer each row of a feature batch to its slot, and keep the values of the rows that
    /// won one.
    fn offer(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 || self.best.is_empty() {
            return Ok(());
        }
        let rows = self.key_rows(batch, &self.resolved.feature_keys)?;
        let times = batch
            .column(self.resolved.feature_time)
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| {
                DataFusionError::Internal("feature timestamps are not microseconds".into())
            })?;
        let seqs = batch
            .column(self.resolved.feature_seq)
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| DataFusionError::Internal("`_seq` is not int64".into()))?;
        let mut won = Vec::new();
        for r in 0..batch.num_rows() {
            if times.is_null(r) {
                continue;
            }
            let Some(&key) = self.keys.get(rows.row(r).as_ref()) else {
                continue;
            };
            let (low, high) = (
                self.slot_start[key as usize] as usize,
                self.slot_start[key as usize + 1] as usize,
            );
            let ts = times.value(r);
            let slot = low + self.slot_time[low..high].partition_point(|&t| t < ts);
            if slot == high {
                continue; // after every spine time of the key
            }
            if let Some(ttl) = self.ttl_micros
                && ts < self.slot_time[slot].saturating_sub(ttl)
            {
                continue; // too old for this slot, so for every later one
            }
            let offered = Best {
                ts,
                seq: seqs.value(r),
                batch: PENDING,
                row: r as u32,
            };
            let best = &mut self.best[slot];
            if offered.later_than(best) {
                if !best.is_set() {
                    self.live += 1;
                }
                *best = offered;
                won.push(slot as u32);
            }
        }
        let id = self.retained.len() as u32;
        let mut take_rows: Vec<u32> = Vec::new();
        for &slot in &won {
            let best = &mut self.best[slot as usize];
            if best.batch == PENDING {
                take_rows.push(best.row);
                best.batch = id;
                best.row = (take_rows.len() - 1) as u32;
            }
        }
        if take_rows.is_empty() {
            return Ok(());
        }
        let indices = UInt32Array::from(take_rows);
        let values = self
            .resolved
            .outputs
            .iter()
            .map(|&i| take(batch.column(i).as_ref(), &indices, None))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        self.grow(values.iter().map(|v| v.get_array_memory_size()).sum())?;
        self.retained.push(values);
        self.retained_rows += indices.len();
        if self.retained_rows > 2 * self.live + COMPACT_SLACK {
            self.compact()?;
        }
        Ok(())
    }

    /// Copy the rows slots hold into one batch and drop the rest.
    fn compact(&mut self) -> Result<()> {
        if self.retained.is_empty() {
            return Ok(());
        }
        let mut indices = Vec::with_capacity(self.live);
        for best in self.best.iter_mut().filter(|b| b.is_set()) {
            indices.push((best.batch as usize, best.row as usize));
            best.batch = 0;
            best.row = (indices.len() - 1) as u32;
        }
        let columns = (0..self.resolved.outputs.len())
            .map(|c| {
                let sources: Vec<&dyn Array> =
                    self.retained.iter().map(|r| r[c].as_ref()).collect();
                interleave(&sources, &indices)
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let before: usize = self
            .retained
            .iter()
            .flatten()
            .map(|v| v.get_array_memory_size())
            .sum();
        let after: usize = columns.iter().map(|v| v.get_array_memory_size()).sum();
        self.retained = if indices.is_empty() {
            Vec::new()
        } else {
            vec![columns]
        };
        self.retained_rows = indices.len();
        self.reservation.shrink(before.saturating_sub(after));
        Ok(())
    }

    /// Sweep each key's slots, carrying the latest row forward, and hand the answers to the
    /// output.
    fn finish(mut self) -> Result<Output> {
        self.compact()?;
        let mut answer: Vec<Option<u32>> = vec![None; self.best.len()];
        for key in 0..self.keys.len() {
            let (low, high) = (
                self.slot_start[key] as usize,
                self.slot_start[key + 1] as usize,
            );
            let mut carried = Best::NONE;
            for slot in low..high {
                if self.best[slot].is_set() && self.best[slot].later_than(&carried) {
                    carried = self.best[slot];
                }
                let fresh = self
                    .ttl_micros
                    .is_none_or(|ttl| carried.ts >= self.slot_time[slot].saturating_sub(ttl));
                if carried.is_set() && fresh {
                    answer[self.slot_row[slot] as usize] = Some(carried.row);
                }
            }
        }
        Ok(Output {
            spine: self.spine,
            answer,
            next_row: 0,
            values: self.retained.pop(),
            schema: self.schema,
            _reservation: self.reservation,
        })
    }
}

fn spine_times(
    batch: &RecordBatch,
    column: usize,
) -> Result<&datafusion::arrow::array::PrimitiveArray<TimestampMicrosecondType>> {
    batch
        .column(column)
        .as_primitive_opt::<TimestampMicrosecondType>()
        .ok_or_else(|| DataFusionError::Internal("spine times are not microseconds".into()))
}

/// The joined batches, made one at a time as they are asked for.
pub(super) struct Output {
    spine: VecDeque<RecordBatch>,
    /// The row of `values` each spine row takes, by spine row.
    answer: Vec<Option<u32>>,
    next_row: usize,
    /// The feature values of the rows that won (none if no row did).
    values: Option<Vec<ArrayRef>>,
    schema: SchemaRef,
    _reservation: MemoryReservation,
}

impl Iterator for Output {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        let batch = self.spine.pop_front()?;
        let rows = batch.num_rows();
        let answer = &self.answer[self.next_row..self.next_row + rows];
        self.next_row += rows;
        let mut columns = batch.columns().to_vec();
        let outputs = &self.schema.fields()[batch.num_columns()..];
        let made = match &self.values {
            Some(values) => {
                let indices: UInt32Array = answer.iter().copied().collect();
                values
                    .iter()
                    .map(|v| take(v.as_ref(), &indices, None))
                    .collect::<std::result::Result<Vec<_>, _>>()
            }
            None => Ok(outputs
                .iter()
                .map(|f| new_null_array(f.data_type(), rows))
                .collect()),
        };
        Some(made.map_err(DataFusionError::from).and_then(|made| {
            columns.extend(made);
            Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
        }))
    }
}
