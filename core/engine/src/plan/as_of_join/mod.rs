//! The as-of join of a spine with one feature table: what makes a training set
//! point-in-time correct.
//!
//! For each spine row (join keys, time `t`) it takes the latest feature row with the same
//! keys and `timestamp <= t` (and, with a ttl, `timestamp >= t - ttl`), "latest" by
//! (`timestamp`, `_seq`); no such row gives nulls. Every spine row yields exactly one
//! output row, spine columns first, then the chosen feature columns (DESIGN.md,
//! "Point-in-time join").
//!
//! [`AsOfJoinExec`] requires both inputs partitioned by the join keys (so DataFusion and
//! Ballista insert a hash shuffle) and sorted within each partition by (keys, time) on the
//! spine side and (keys, timestamp, `_seq`) on the feature side (so a `SortExec`, which
//! spills, is inserted). The merge itself then holds only the current spine batch and the
//! few feature batches it spans: neither side has to fit in memory.
//!
//! With [`JoinStrategy::SpineIndex`] the same node instead holds its spine partition in
//! memory, indexed by key, and takes the feature rows in any order
//! ([`spine_index`]); neither input is sorted then. The planner picks it only when
//! the spine fits (`training_set::spine_index_fits`).
//!
//! `_row` does not appear: the offline store holds each (keys, timestamp, `_seq`) once,
//! because an ingest's duplicates are dropped by `_row` before it is committed.
//!
//! The files: [`spec`] (what to join, by column name, and its resolution against the
//! inputs' schemas), [`exec`] (the plan node), [`sort_merge`] (the merge of two sorted
//! inputs), [`spine_index`] (the in-memory spine index), and the join's tests.

mod exec;
mod sort_merge;
mod spec;
mod spine_index;
#[cfg(test)]
mod tests;

pub use crate::protocol::JoinStrategy;
pub use exec::AsOfJoinExec;
pub use spec::AsOfJoinSpec;
pub use spine_index::BYTES_PER_SPINE_ROW;
