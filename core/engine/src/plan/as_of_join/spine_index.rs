//! The spine-index strategy of the as-of join ([`super::JoinStrategy::SpineIndex`]):
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
//! The index is the spine's distinct keys, row-encoded and sorted (compared by their first
//! 16 bytes as a number before whole keys), with every key's slots laid out after the key
//! before. A feature row finds its key by galloping forward from the key the row before
//! found: an offline file is sorted by key, so a file's rows walk the index front to back.
//! Rows in any other order still find their key, by searching from the start (log n
//! comparisons). The index is far larger than the CPU caches and each row lands somewhere
//! else in it, so the keys and slots of rows a few dozen ahead are prefetched; without that
//! (or with a hash table from key to slots) every row waited for memory
//! (docs/benchmarks.md has the steps and their times).
//!
//! Memory: the spine partition, a few dozen bytes per spine row, and the feature values of
//! the rows slots hold (rows that lost their slot are compacted away as they pile up).
//! All of it is reserved from the memory pool; running out is an error that says what to
//! change. The planner picks this strategy only when its estimate of that memory fits
//! (see `training_set::spine_index_fits`).

use std::cmp::Ordering;
use std::collections::VecDeque;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, UInt32Array, new_null_array,
};
use datafusion::arrow::compute::{concat_batches, interleave, take};
use datafusion::arrow::datatypes::{Int64Type, SchemaRef, TimestampMicrosecondType};
use datafusion::arrow::row::{Row, RowConverter, Rows};
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::memory_pool::MemoryReservation;
use futures::StreamExt;

use super::spec::{AsOfJoinSpec, Resolved};

/// `Best::batch` of a slot no feature row has reached.
const EMPTY: u32 = u32::MAX;
/// Retained rows that lost their slot are compacted away once they outnumber the live
/// ones by this many (and by the live count itself).
const COMPACT_SLACK: usize = 64 * 1024;
/// Bytes reserved per spine row for the index: its slot (time and best row, 32), its spine
/// row (4) and answer (8), and while the index is built its key prefix, time, position
/// and order (36), with room to spare.
pub const BYTES_PER_SPINE_ROW: usize = 96;

/// The latest feature row offered to a slot so far.
#[derive(Debug, Clone, Copy)]
struct Best {
    ts: i64,
    seq: i64,
    /// Retained batch (or [`EMPTY`]).
    batch: u32,
    /// Row in the retained batch.
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

/// One slot: a spine row's time, and the latest feature row offered to it.
#[derive(Debug, Clone, Copy)]
struct Slot {
    time: i64,
    best: Best,
}

/// One partition of a spine-index as-of join.
pub(super) struct SpineIndex {
    table: String,
    resolved: Resolved,
    spine_time_name: String,
    ttl_micros: Option<i64>,
    schema: SchemaRef,
    converter: RowConverter,
    reservation: MemoryReservation,
    /// Rows per output batch, at most (unless a spine batch is larger).
    batch_size: usize,
    spine: VecDeque<RecordBatch>,
    /// The spine's distinct keys, sorted.
    keys: SortedKeys,
    /// The slots of key `k` are `slot_start[k]..slot_start[k + 1]`, ordered by time.
    slot_start: Vec<u32>,
    slots: Vec<Slot>,
    /// The spine row (index over all spine batches, in arrival order) of each slot.
    slot_row: Vec<u32>,
    /// The key the last feature row found: the next one searches forward from it.
    cursor: usize,
    /// Feature values of rows that won a slot, one `Vec` of output columns per batch.
    retained: Vec<Vec<ArrayRef>>,
    retained_rows: usize,
    /// Slots holding a row.
    live: usize,
}

impl SpineIndex {
    /// The join `spec` (resolved to `resolved` against its inputs) producing `schema`,
    /// comparing keys with `converter` and holding memory against `reservation`.
    pub(super) fn new(
        spec: &AsOfJoinSpec,
        resolved: Resolved,
        schema: SchemaRef,
        converter: RowConverter,
        reservation: MemoryReservation,
        batch_size: usize,
    ) -> Self {
        let keys = SortedKeys {
            rows: converter.empty_rows(0, 0),
            prefixes: Vec::new(),
        };
        Self {
            batch_size,
            keys,
            table: spec.table.clone(),
            resolved,
            spine_time_name: spec.spine_time.clone(),
            ttl_micros: spec.ttl_micros,
            schema,
            converter,
            reservation,
            spine: VecDeque::new(),
            slot_start: Vec::new(),
            slots: Vec::new(),
            slot_row: Vec::new(),
            cursor: 0,
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
        if self.slots.is_empty() {
            return self.finish(); // nothing to join: the feature side is not read
        }
        while let Some(batch) = features.next().await.transpose()? {
            self.offer(&batch)?;
        }
        self.finish()
    }

    fn grow(&mut self, bytes: usize) -> Result<()> {
        self.reservation.try_grow(bytes).map_err(|e| {
            DataFusionError::ResourcesExhausted(format!(
                "as-of join with `{}`: the spine-index join holds a partition of the spine in \
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

    /// Sort the spine rows by (key, time, arrival) and lay out the keys and their slots.
    fn index_spine(&mut self) -> Result<()> {
        let total: usize = self.spine.iter().map(|b| b.num_rows()).sum();
        if total >= EMPTY as usize {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "as-of join with `{}`: {total} spine rows in one partition are more than the \
                 spine-index join indexes; set training_set_join = \"sort_merge\"",
                self.table
            )));
        }
        let mut key_rows = Vec::with_capacity(self.spine.len());
        let mut times = Vec::with_capacity(total);
        // (batch, row) of every spine row, in arrival order.
        let mut at = Vec::with_capacity(total);
        for (b, batch) in self.spine.iter().enumerate() {
            key_rows.push(self.key_rows(batch, &self.resolved.spine_keys)?);
            let batch_times = spine_times(batch, self.resolved.spine_time)?;
            times.extend(batch_times.values().iter().copied());
            at.extend((0..batch.num_rows()).map(|r| (b as u32, r as u32)));
        }
        let key = |row: u32| {
            let (b, r) = at[row as usize];
            key_rows[b as usize].row(r as usize)
        };
        let prefixes: Vec<u128> = (0..total as u32).map(|r| prefix(key(r).data())).collect();
        // By (prefix, time, arrival) with cheap comparisons; then the rare runs of one
        // prefix holding several keys by whole key (stable, so each key's rows keep their
        // time order).
        let mut order: Vec<u32> = (0..total as u32).collect();
        order.sort_unstable_by_key(|&x| (prefixes[x as usize], times[x as usize], x));
        let mut run = 0;
        while run < total {
            let first = prefixes[order[run] as usize];
            let end = run
                + order[run..]
                    .iter()
                    .position(|&x| prefixes[x as usize] != first)
                    .unwrap_or(total - run);
            let slice = &mut order[run..end];
            if slice.windows(2).any(|w| key(w[0]) != key(w[1])) {
                slice.sort_by(|&x, &y| key(x).cmp(&key(y)));
            }
            run = end;
        }
        let data_bytes: usize = key_rows.iter().map(|r| r.size()).sum();
        let mut keys = SortedKeys {
            rows: self
                .converter
                .empty_rows(total.min(1024), data_bytes.min(1 << 20)),
            prefixes: Vec::new(),
        };
        let mut slot_start = Vec::new();
        for (slot, &row) in order.iter().enumerate() {
            let previous = slot.checked_sub(1).map(|s| order[s]);
            let new_key = previous.is_none_or(|p| {
                prefixes[p as usize] != prefixes[row as usize] || key(p) != key(row)
            });
            if new_key {
                keys.rows.push(key(row));
                keys.prefixes.push(prefixes[row as usize]);
                slot_start.push(slot as u32);
            }
        }
        slot_start.push(total as u32);
        self.slots = order
            .iter()
            .map(|&row| Slot {
                time: times[row as usize],
                best: Best::NONE,
            })
            .collect();
        self.grow(keys.rows.size() + keys.prefixes.len() * 16 + slot_start.len() * 4)?;
        self.keys = keys;
        self.slot_start = slot_start;
        self.slot_row = order;
        Ok(())
    }

    fn key_rows(&self, batch: &RecordBatch, columns: &[usize]) -> Result<Rows> {
        let keys: Vec<ArrayRef> = columns.iter().map(|&i| batch.column(i).clone()).collect();
        Ok(self.converter.convert_columns(&keys)?)
    }

    /// Offer each row of a feature batch to its slot, and keep the values of the rows that
    /// won one.
    fn offer(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let keys = &self.keys;
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
        // First every row's key, then its slot: the keys are found walking forward, and
        // knowing them ahead lets the slots be fetched from memory ahead of their use.
        // Each row's slots (empty if no spine row has its key).
        let mut slots_of: Vec<(u32, u32)> = Vec::with_capacity(batch.num_rows());
        let mut cursor = self.cursor;
        for r in 0..batch.num_rows() {
            // Rows in key order walk the keys forward: fetch the keys a little ahead.
            keys.prefetch(cursor + PREFETCH_KEYS);
            prefetch(self.slot_start.get(cursor + PREFETCH_KEYS));
            let probe = Probe::new(rows.row(r));
            cursor = keys.seek(cursor, &probe);
            slots_of.push(if keys.is(cursor, &probe) {
                (self.slot_start[cursor], self.slot_start[cursor + 1])
            } else {
                (0, 0)
            });
        }
        self.cursor = cursor;
        let id = self.retained.len() as u32;
        let mut take_rows: Vec<u32> = Vec::new();
        for r in 0..batch.num_rows() {
            if let Some(&(ahead, end)) = slots_of.get(r + PREFETCH_ROWS) {
                // The first slots of the row's key: two to a cache line.
                for slot in (ahead..end.min(ahead + 6)).step_by(2) {
                    prefetch(self.slots.get(slot as usize));
                }
            }
            let (low, high) = (slots_of[r].0 as usize, slots_of[r].1 as usize);
            if low == high || times.is_null(r) {
                continue; // no spine row has the key
            }
            let ts = times.value(r);
            let slot = low + self.slots[low..high].partition_point(|s| s.time < ts);
            if slot == high {
                continue; // after every spine time of the key
            }
            if let Some(ttl) = self.ttl_micros
                && ts < self.slots[slot].time.saturating_sub(ttl)
            {
                continue; // too old for this slot, so for every later one
            }
            // A winner's values are taken from this batch below, at the next index; a row
            // it beats later in the batch stays there unused until the next compaction.
            let offered = Best {
                ts,
                seq: seqs.value(r),
                batch: id,
                row: take_rows.len() as u32,
            };
            let best = &mut self.slots[slot].best;
            if offered.later_than(best) {
                if !best.is_set() {
                    self.live += 1;
                }
                *best = offered;
                take_rows.push(r as u32);
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
        // A compaction walks every slot: waiting for a quarter of their number in lost
        // rows keeps its cost per lost row bounded.
        if self.retained_rows > 2 * self.live + COMPACT_SLACK.max(self.slots.len() / 4) {
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
        for best in self
            .slots
            .iter_mut()
            .map(|s| &mut s.best)
            .filter(|b| b.is_set())
        {
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
        let mut answer: Vec<Option<u32>> = vec![None; self.slots.len()];
        for key in self.slot_start.windows(2) {
            let mut carried = Best::NONE;
            for slot in key[0] as usize..key[1] as usize {
                let Slot { time, best } = self.slots[slot];
                if best.is_set() && best.later_than(&carried) {
                    carried = best;
                }
                let fresh = self
                    .ttl_micros
                    .is_none_or(|ttl| carried.ts >= time.saturating_sub(ttl));
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
            batch_size: self.batch_size,
            _reservation: self.reservation,
        })
    }
}

/// How many feature rows ahead a row's slots are fetched from memory.
const PREFETCH_ROWS: usize = 32;
/// How many keys ahead of the last one found keys are fetched from memory.
const PREFETCH_KEYS: usize = 32;

/// Ask the CPU to bring `value` into cache: slots and keys are touched all over large
/// arrays, and without it every feature row waits for memory.
#[inline]
fn prefetch<T: ?Sized>(value: Option<&T>) {
    #[cfg(target_arch = "x86_64")]
    if let Some(value) = value {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: prefetching is a hint; it reads nothing and cannot fault, and the
        // pointer is to a live value anyway.
        unsafe { _mm_prefetch::<_MM_HINT_T0>((value as *const T).cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// The first 16 bytes of a row-encoded key, zero-padded, as a number: comparing two
/// prefixes orders most keys without looking further (and when they are equal, comparing
/// the whole keys decides).
fn prefix(data: &[u8]) -> u128 {
    let mut bytes = [0u8; 16];
    let n = data.len().min(16);
    bytes[..n].copy_from_slice(&data[..n]);
    u128::from_be_bytes(bytes)
}

/// A feature row's key, as the index compares it.
struct Probe<'a> {
    prefix: u128,
    row: Row<'a>,
}

impl<'a> Probe<'a> {
    fn new(row: Row<'a>) -> Self {
        Self {
            prefix: prefix(row.data()),
            row,
        }
    }
}

/// Distinct keys, row-encoded and sorted, with their prefixes.
struct SortedKeys {
    rows: Rows,
    prefixes: Vec<u128>,
}

impl SortedKeys {
    fn len(&self) -> usize {
        self.prefixes.len()
    }

    fn cmp(&self, index: usize, probe: &Probe<'_>) -> Ordering {
        self.prefixes[index]
            .cmp(&probe.prefix)
            .then_with(|| self.rows.row(index).cmp(&probe.row))
    }

    /// Whether key `index` is the probe's key.
    fn is(&self, index: usize, probe: &Probe<'_>) -> bool {
        index < self.len() && self.cmp(index, probe) == Ordering::Equal
    }

    fn prefetch(&self, index: usize) {
        prefetch(self.prefixes.get(index));
    }

    /// The first index whose key is `>= probe`, galloping forward from `from` when every
    /// key before `from` is smaller (rows arriving in key order), else from the start.
    fn seek(&self, from: usize, probe: &Probe<'_>) -> usize {
        let n = self.len();
        let from = from.min(n);
        let mut low = if from > 0 && self.cmp(from - 1, probe) != Ordering::Less {
            0
        } else {
            from
        };
        // Every key before `low` is smaller; double the step while the step's last key is.
        let mut step = 1;
        while low + step <= n && self.cmp(low + step - 1, probe) == Ordering::Less {
            low += step;
            step *= 2;
        }
        let (mut a, mut b) = (low, (low + step - 1).min(n));
        while a < b {
            let mid = a + (b - a) / 2;
            if self.cmp(mid, probe) == Ordering::Less {
                a = mid + 1;
            } else {
                b = mid;
            }
        }
        a
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
    batch_size: usize,
    _reservation: MemoryReservation,
}

impl Iterator for Output {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        // Small spine batches (a shuffle's slices) are joined into batches of about
        // `batch_size` rows: fewer, larger messages for the client.
        let mut parts = vec![self.spine.pop_front()?];
        let mut rows = parts[0].num_rows();
        while let Some(next) = self.spine.front()
            && rows + next.num_rows() <= self.batch_size
        {
            rows += next.num_rows();
            parts.extend(self.spine.pop_front());
        }
        let batch = if parts.len() == 1 {
            parts.remove(0)
        } else {
            match concat_batches(&parts[0].schema(), &parts) {
                Ok(batch) => batch,
                Err(e) => return Some(Err(e.into())),
            }
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::DataType;
    use datafusion::arrow::row::SortField;
    use std::sync::Arc;

    /// From any starting point, in order or not, `seek` finds the first key not smaller.
    #[test]
    fn seek_finds_the_lower_bound_from_anywhere() {
        // Short keys differ within the prefix; long ones share the first 16 bytes and
        // are told apart by the whole key.
        for shared in ["", "a_long_shared_key_prefix_"] {
            let converter = RowConverter::new(vec![SortField::new(DataType::Utf8)]).unwrap();
            let encode = |names: &[&str]| {
                let names: Vec<String> = names.iter().map(|n| format!("{shared}{n}")).collect();
                converter
                    .convert_columns(&[Arc::new(StringArray::from(names)) as ArrayRef])
                    .unwrap()
            };
            let names = ["b", "d", "f", "h", "j", "l", "n"];
            let rows = encode(&names);
            let keys = SortedKeys {
                prefixes: (0..names.len())
                    .map(|i| prefix(rows.row(i).data()))
                    .collect(),
                rows,
            };
            let probes = ["a", "b", "c", "d", "g", "n", "o"];
            let probe_rows = encode(&probes);
            for (p, probe) in probes.iter().enumerate() {
                let want = names.iter().position(|n| n >= probe).unwrap_or(names.len());
                for from in 0..=names.len() + 1 {
                    let probe_key = Probe::new(probe_rows.row(p));
                    assert_eq!(
                        keys.seek(from, &probe_key),
                        want,
                        "`{shared}{probe}` from {from}"
                    );
                    assert_eq!(keys.is(want, &probe_key), names.contains(probe));
                }
            }
        }
    }
}
