//! What crashes leave behind, cleaned when the scheduler starts (before it serves uploads
//! or runs jobs, so nothing is being written).
//!
//! Kept: everything a committed Delta version can read (its files and its tombstones), the
//! staged data of every ingest whose job has not succeeded (it may run or be retried), and
//! every recorded spine. Removed:
//!
//! - staged uploads no ingest was recorded for (the upload died before it was answered)
//!   and the staged data of succeeded jobs (the job died between success and cleanup);
//! - spine uploads no spine record points at;
//! - Parquet files in an offline table's directory that no version references (an
//!   attempt that wrote its files and died before committing; a retry writes new ones);
//! - on a local filesystem, partial files (`name#N`, object_store's files of writes that
//!   never finished) and the directories left empty.
//!
//! Anything ftab does not recognise is left alone, and so is a table whose Delta log
//! cannot be read or whose log names a file the listing does not show. Paths the catalog
//! recorded are compared relative to the store's root; if one lies outside the current
//! root, that area is left alone. A storage root belongs to one scheduler (a second one
//! writing there while this one starts would lose uncommitted files, not committed ones).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path as FsPath, PathBuf};

use object_store::ObjectStoreExt;
use object_store::path::Path;

use ftab_engine::offline;
use ftab_engine::storage::{ObjectStorage, StorageLayout};
use ftab_model::names::{TableName, WorkspaceName};

use crate::catalog::Catalog;
use crate::error::{Error, Result};

/// What a sweep removed, and what it could not do.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Swept {
    /// Staged uploads (one per ingest prefix).
    pub staged_uploads: usize,
    pub spine_uploads: usize,
    /// Uncommitted Parquet files in offline tables.
    pub orphan_files: usize,
    /// Partial files of unfinished local writes.
    pub partial_files: usize,
    pub empty_directories: usize,
    /// Areas or tables left alone because of an error (each logged).
    pub skipped: usize,
}

/// Remove crash leftovers under the store (see the module's documentation). A storage
/// root belongs to one scheduler: the sweep assumes no other process writes there while
/// it runs. Failures are logged and leave things as they are; they never stop a start.
pub async fn sweep(catalog: &Catalog, layout: &StorageLayout, objects: &ObjectStorage) -> Swept {
    let mut swept = Swept::default();
    let root = objects.root_path();

    // Staged uploads, by ingest prefix (staging/<ws>/<table>/<ingest>), and spine uploads
    // (spines/<name>/<upload>): each kept while the catalog points at it.
    let staging = catalog.staged_prefixes_in_use().await;
    let spines = catalog.spine_locations().await;
    for (area, depth, recorded) in [("staging", 3, staging), ("spines", 2, spines)] {
        let removed = match recorded {
            Ok(recorded) => sweep_area(objects, &root, area, depth, &recorded).await,
            Err(e) => Err(format!("cannot read what the catalog records: {e}")),
        };
        match removed {
            Ok(n) if area == "staging" => swept.staged_uploads = n,
            Ok(n) => swept.spine_uploads = n,
            Err(e) => {
                tracing::warn!(area, "leaving leftovers alone: {e}");
                swept.skipped += 1;
            }
        }
    }

    match sweep_offline(layout, objects, &root, &mut swept).await {
        Ok(()) => {}
        Err(e) => {
            tracing::warn!("leaving offline leftovers alone: {e}");
            swept.skipped += 1;
        }
    }

    if let Ok(local) = layout.root().to_file_path()
        && layout.root().scheme() == "file"
    {
        match tokio::task::spawn_blocking(move || clean_local(&local)).await {
            Ok(Ok((partial, empty))) => {
                swept.partial_files = partial;
                swept.empty_directories = empty;
            }
            Ok(Err(e)) => {
                tracing::warn!("leaving local leftovers alone: {e}");
                swept.skipped += 1;
            }
            Err(e) => {
                tracing::warn!("local cleanup task failed: {e}");
                swept.skipped += 1;
            }
        }
    }
    swept
}

/// Remove the prefixes `depth` below `<root>/<area>` that `recorded` (object store paths
/// as the catalog keeps them) does not name. Paths are compared relative to the root; if
/// any recorded path lies outside the current root (the store was reached by another
/// path when it was recorded), nothing is removed.
async fn sweep_area(
    objects: &ObjectStorage,
    root: &Path,
    area: &str,
    depth: usize,
    recorded: &HashSet<String>,
) -> std::result::Result<usize, String> {
    let mut kept = HashSet::new();
    for location in recorded {
        let relative = Path::parse(location)
            .ok()
            .and_then(|p| p.prefix_match(root).map(|parts| parts.collect::<Path>()))
            .ok_or_else(|| {
                format!(
                    "the catalog names `{location}`, which is not under the store's root `{root}`"
                )
            })?;
        kept.insert(relative);
    }
    let under = root.clone().join(area);
    let mut removed = 0;
    for prefix in prefixes(objects, &under, depth).await? {
        let relative: Path = prefix
            .prefix_match(root)
            .map(|parts| parts.collect())
            .unwrap_or_default();
        if !kept.contains(&relative) {
            objects
                .delete_prefix(&prefix)
                .await
                .map_err(|e| format!("cannot delete {prefix}: {e}"))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Remove the Parquet files of offline tables (offline/<ws>/<table>/g<generation>) that
/// their Delta log does not reference. A table is left alone when its log cannot be read,
/// or when a file the log references is not among the files listed (then the two do not
/// name files alike, and nothing listed can be trusted to be an orphan).
async fn sweep_offline(
    layout: &StorageLayout,
    objects: &ObjectStorage,
    root: &Path,
    swept: &mut Swept,
) -> std::result::Result<(), String> {
    let offline_root = root.clone().join("offline");
    let listed = objects
        .list(&offline_root)
        .await
        .map_err(|e| format!("cannot list {offline_root}: {e}"))?;
    let mut tables: BTreeMap<Path, Vec<Path>> = BTreeMap::new();
    for object in listed {
        let Some(table) = ancestor(&offline_root, &object.location, 3) else {
            continue;
        };
        tables.entry(table).or_default().push(object.location);
    }
    for (table_prefix, files) in tables {
        let Some(url) = table_url(layout, &offline_root, &table_prefix) else {
            continue;
        };
        let referenced = match offline::referenced_files(objects, &url).await {
            Ok(referenced) => referenced.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(table = %url, "cannot read the offline table's log; leaving its files alone: {e}");
                swept.skipped += 1;
                continue;
            }
        };
        let present: HashSet<&Path> = files.iter().collect();
        if let Some(missing) = referenced.iter().find(|f| !present.contains(f)) {
            tracing::warn!(table = %url, file = %missing, "a file the log references is not listed; leaving the table's files alone");
            swept.skipped += 1;
            continue;
        }
        let delta_log = table_prefix.clone().join("_delta_log");
        for file in &files {
            let orphan = file.as_ref().ends_with(".parquet")
                && !file.prefix_matches(&delta_log)
                && !referenced.contains(file);
            if orphan {
                match objects.store.delete(file).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => swept.orphan_files += 1,
                    Err(e) => return Err(format!("cannot delete {file}: {e}")),
                }
            }
        }
    }
    Ok(())
}

/// The distinct prefixes `depth` segments below `under` that hold objects.
async fn prefixes(
    objects: &ObjectStorage,
    under: &Path,
    depth: usize,
) -> std::result::Result<Vec<Path>, String> {
    let listed = objects
        .list(under)
        .await
        .map_err(|e| format!("cannot list {under}: {e}"))?;
    let found: HashSet<Path> = listed
        .iter()
        .filter_map(|o| ancestor(under, &o.location, depth))
        .collect();
    let mut found: Vec<Path> = found.into_iter().collect();
    found.sort();
    Ok(found)
}

/// The prefix of `path` that is `depth` segments below `under`, if `path` is deeper.
fn ancestor(under: &Path, path: &Path, depth: usize) -> Option<Path> {
    let parts: Vec<_> = path.prefix_match(under)?.collect();
    if parts.len() <= depth {
        return None;
    }
    let mut prefix = under.clone();
    for part in parts.into_iter().take(depth) {
        prefix = prefix.join(part);
    }
    Some(prefix)
}

/// The URL of the offline table at `prefix` (`<offline_root>/<ws>/<table>/g<generation>`),
/// if its names are valid.
fn table_url(layout: &StorageLayout, offline_root: &Path, prefix: &Path) -> Option<url::Url> {
    let parts: Vec<String> = prefix
        .prefix_match(offline_root)?
        .map(|p| p.as_ref().to_string())
        .collect();
    let [workspace, table, generation] = parts.as_slice() else {
        return None;
    };
    let workspace = WorkspaceName::new(workspace.as_str()).ok()?;
    let table = TableName::new(table.as_str()).ok()?;
    let number: u64 = generation.strip_prefix('g')?.parse().ok()?;
    // Only the directory ftab itself would name so (not `g01`, `g+1`).
    if format!("g{number}") != *generation
        || workspace.as_str() != parts[0]
        || table.as_str() != parts[1]
    {
        return None;
    }
    Some(layout.offline_table(&workspace, &table, number))
}

/// On a local filesystem: remove partial files (`name#N`) under the store's areas, then
/// the directories left empty below them. Returns (partial files, directories).
fn clean_local(root: &FsPath) -> Result<(usize, usize)> {
    let mut cleaned = Cleaned::default();
    for area in ["staging", "spines", "offline"] {
        let dir = root.join(area);
        if dir.is_dir() {
            clean_dir(&dir, false, &mut cleaned)?;
        }
    }
    Ok((cleaned.files, cleaned.dirs))
}

/// object_store's local writes go to `<name>#<n>` and are renamed when complete.
fn is_partial(name: &str) -> bool {
    name.rsplit_once('#')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn io_error(path: &FsPath, e: std::io::Error) -> Error {
    Error::Internal(format!("cannot clean up {} at start: {e}", path.display()))
}

fn entries(dir: &FsPath) -> Result<Vec<(PathBuf, bool)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        let kind = entry.file_type().map_err(|e| io_error(&entry.path(), e))?;
        found.push((entry.path(), kind.is_dir()));
    }
    Ok(found)
}

/// What one walk removed: partial files, directories.
#[derive(Default)]
struct Cleaned {
    files: usize,
    dirs: usize,
}

/// One post-order walk below `dir`: remove partial files, then the directories left
/// empty, and `dir` itself if `remove_self` and it is left empty. Returns whether `dir` is
/// gone.
fn clean_dir(dir: &FsPath, remove_self: bool, cleaned: &mut Cleaned) -> Result<bool> {
    let mut kept = 0;
    for (path, is_dir) in entries(dir)? {
        let gone = if is_dir {
            clean_dir(&path, true, cleaned)?
        } else if path
            .file_name()
            .is_some_and(|n| is_partial(&n.to_string_lossy()))
        {
            match std::fs::remove_file(&path) {
                Ok(()) => cleaned.files += 1,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error(&path, e)),
            }
            true
        } else {
            false
        };
        kept += usize::from(!gone);
    }
    if !remove_self || kept > 0 {
        return Ok(false);
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => {
            cleaned.dirs += 1;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        // Something appeared meanwhile: keep it.
        Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => Ok(false),
        Err(e) => Err(io_error(dir, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_files_are_named_with_a_number_after_a_hash() {
        assert!(is_partial("part-00001.parquet#1"));
        assert!(is_partial("00000000000000000003.json#27"));
        assert!(!is_partial("part-00001.parquet"));
        assert!(!is_partial("odd#name.parquet"));
        assert!(!is_partial("trailing#"));
    }

    #[test]
    fn ancestors_are_cut_at_their_depth() {
        let under = Path::from("root/staging");
        let file = Path::from("root/staging/prod/t/0192/part-00000.parquet");
        assert_eq!(
            ancestor(&under, &file, 3),
            Some(Path::from("root/staging/prod/t/0192"))
        );
        assert_eq!(
            ancestor(&under, &Path::from("root/staging/prod/t/0192"), 3),
            None
        );
        assert_eq!(ancestor(&under, &Path::from("other/prod/t/x/y"), 3), None);
    }

    #[test]
    fn empty_directories_go_and_files_stay() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("staging/prod/t/a/latest")).unwrap();
        std::fs::create_dir_all(root.join("staging/prod/t/b")).unwrap();
        std::fs::write(root.join("staging/prod/t/b/part-00000.parquet"), b"x").unwrap();
        std::fs::write(root.join("staging/prod/t/b/part-00001.parquet#3"), b"x").unwrap();
        std::fs::create_dir_all(root.join("offline/prod/t/g1/_date=2026-01-01/_bucket=0")).unwrap();
        std::fs::write(
            root.join("offline/prod/t/g1/_date=2026-01-01/_bucket=0/f.parquet#1"),
            b"x",
        )
        .unwrap();
        assert_eq!(clean_local(root).unwrap(), (2, 7));
        assert!(root.join("staging/prod/t/b/part-00000.parquet").exists());
        assert!(!root.join("staging/prod/t/a").exists());
        assert!(!root.join("offline/prod").exists());
        assert!(root.join("offline").exists() && root.join("staging").exists());
    }
}
