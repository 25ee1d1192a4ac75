//! Where ftab keeps data in the object store.
//!
//! ```text
//! <root>/offline/<workspace>/<table>/g<generation>/   the table's Delta table
//! <root>/staging/<workspace>/<table>/<ingest_id>/     staged ingests (Parquet)
//! ```
//!
//! `root` is a URL (`file://`, `s3://`, `gs://`, `az://`, `abfss://`, `memory://`) or a local
//! path. Paths are built only from validated names ([`crate::names`]), so no name can
//! escape its prefix. The generation changes when a forced apply breaks a table, so data
//! written under the old definition is never read as the new one (docs/catalog.md).

use url::Url;

use crate::Error;
use crate::names::{TableName, WorkspaceName};

/// URL schemes ftab can store data under.
pub const SUPPORTED_SCHEMES: &[&str] =
    &["file", "s3", "s3a", "gs", "az", "abfs", "abfss", "memory"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageLayout {
    root: Url,
}

impl StorageLayout {
    /// A layout under `location`: a URL with a supported scheme, or a local directory path
    /// (made absolute against the current directory).
    pub fn new(location: &str) -> Result<Self, Error> {
        let invalid = |reason: String| Error::StorageLocation {
            location: location.to_string(),
            reason,
        };
        let mut root = match Url::parse(location) {
            Ok(url) if url.scheme().len() > 1 => {
                if !SUPPORTED_SCHEMES.contains(&url.scheme()) {
                    return Err(invalid(format!(
                        "unsupported scheme `{}`; use one of {} or a local path",
                        url.scheme(),
                        SUPPORTED_SCHEMES.join(", ")
                    )));
                }
                url
            }
            // No scheme (or a Windows drive letter): a local path.
            _ => {
                let path = std::path::absolute(location)
                    .map_err(|e| invalid(format!("cannot make it absolute: {e}")))?;
                Url::from_directory_path(&path)
                    .map_err(|()| invalid("not a usable directory path".into()))?
            }
        };
        if !root.path().ends_with('/') {
            let path = format!("{}/", root.path());
            root.set_path(&path);
        }
        Ok(Self { root })
    }

    pub fn root(&self) -> &Url {
        &self.root
    }

    /// The offline Delta table of a feature table at a storage generation.
    pub fn offline_table(
        &self,
        workspace: &WorkspaceName,
        table: &TableName,
        generation: u64,
    ) -> Url {
        self.join(&format!("offline/{workspace}/{table}/g{generation}/"))
    }

    /// Where the staged ingests of a feature table live.
    pub fn staging(&self, workspace: &WorkspaceName, table: &TableName) -> Url {
        self.join(&format!("staging/{workspace}/{table}/"))
    }

    fn join(&self, relative: &str) -> Url {
        self.root
            .join(relative)
            .expect("a relative path of validated names joins onto a base URL")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> (WorkspaceName, TableName) {
        (
            WorkspaceName::new("prod").unwrap(),
            TableName::new("user_counts").unwrap(),
        )
    }

    #[test]
    fn object_store_urls() {
        let (ws, t) = names();
        let layout = StorageLayout::new("s3://bucket/ftab").unwrap();
        assert_eq!(
            layout.offline_table(&ws, &t, 2).as_str(),
            "s3://bucket/ftab/offline/prod/user_counts/g2/"
        );
        assert_eq!(
            layout.staging(&ws, &t).as_str(),
            "s3://bucket/ftab/staging/prod/user_counts/"
        );
        let layout = StorageLayout::new("memory:///").unwrap();
        assert_eq!(
            layout.offline_table(&ws, &t, 1).as_str(),
            "memory:///offline/prod/user_counts/g1/"
        );
    }

    #[test]
    fn local_paths_become_absolute_file_urls() {
        let (ws, t) = names();
        let dir = tempfile::tempdir().unwrap();
        let layout = StorageLayout::new(dir.path().to_str().unwrap()).unwrap();
        let url = layout.offline_table(&ws, &t, 1);
        assert_eq!(url.scheme(), "file");
        assert_eq!(
            url.to_file_path().unwrap(),
            dir.path().join("offline/prod/user_counts/g1")
        );
        let relative = StorageLayout::new("ftab-data/store").unwrap();
        assert!(relative.root().path().ends_with("/ftab-data/store/"));
    }

    #[test]
    fn unsupported_schemes_are_refused() {
        let err = StorageLayout::new("ftp://host/x").unwrap_err().to_string();
        assert!(err.contains("unsupported scheme `ftp`"), "{err}");
    }
}
