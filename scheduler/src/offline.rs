//! The offline store as the control plane sees it: what a table's Delta table holds.

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Int64Type;
use deltalake::{DeltaTable, DeltaTableError};
use ftab_core::protocol::OfflineStats;
use url::Url;

use crate::error::{Error, Result};

/// Version, files and rows of the Delta table at `url`, or `None` if nothing was committed
/// there yet.
pub async fn stats(url: &Url) -> Result<Option<OfflineStats>> {
    let unreadable = |e: &dyn std::fmt::Display| {
        Error::Internal(format!("cannot read the offline table {url}: {e}"))
    };
    if url.scheme() == "file"
        && let Ok(path) = url.to_file_path()
        && !path.join("_delta_log").exists()
    {
        return Ok(None);
    }
    let table = match DeltaTable::try_from_url(url.clone()).await {
        Ok(table) => table,
        // Nothing ingested yet: no directory (local store), or no log.
        Err(DeltaTableError::InvalidTableLocation(_) | DeltaTableError::NotATable(_)) => {
            return Ok(None);
        }
        Err(e) => return Err(unreadable(&e)),
    };
    let Some(version) = table.version() else {
        return Ok(None);
    };
    let snapshot = table.snapshot().map_err(|e| unreadable(&e))?;
    let adds = snapshot
        .add_actions_table(true)
        .map_err(|e| unreadable(&e))?;
    let rows = adds
        .column_by_name("num_records")
        .and_then(|c| c.as_primitive_opt::<Int64Type>())
        .map(|c| c.iter().flatten().sum::<i64>())
        .unwrap_or(0);
    Ok(Some(OfflineStats {
        delta_version: version as u64,
        files: adds.num_rows() as u64,
        rows: rows.max(0) as u64,
    }))
}
