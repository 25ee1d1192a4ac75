//! Where ftab keeps data in the object store.
//!
//! ```text
//! <root>/offline/<workspace>/<table>/g<generation>/   the table's Delta table
//! <root>/staging/<workspace>/<table>/<ingest_id>/     staged ingests (Parquet), and
//!                                                     their latest row per key (latest/)
//! <root>/spines/<name>/<upload>/                      uploaded spines (Parquet)
//! ```
//!
//! `root` is a URL (`file://`, `s3://`, `gs://`, `az://`, `abfss://`, `memory://`) or a local
//! path. Paths are built only from validated names ([`crate::names`]), so no name can
//! escape its prefix. The generation changes when a forced apply breaks a table, so data
//! written under the old definition is never read as the new one (docs/catalog.md).

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use url::Url;

use crate::Error;
use crate::ids::IngestId;
use crate::names::{SpineName, TableName, WorkspaceName};

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
            source: None,
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

    /// Open the object store the layout lives in. Credentials and options for cloud stores
    /// come from the environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`), as object_store's
    /// builders name them.
    pub fn open(&self) -> Result<ObjectStorage, Error> {
        self.open_with(env_options())
    }

    /// Open the object store with these options (object_store's keys, e.g.
    /// `aws_endpoint`) instead of the environment's.
    pub fn open_with(
        &self,
        options: impl IntoIterator<Item = (String, String)>,
    ) -> Result<ObjectStorage, Error> {
        let (store, root) = object_store::parse_url_opts(&self.root, options).map_err(|e| {
            Error::StorageLocation {
                location: self.root.to_string(),
                reason: e.to_string(),
                source: Some(e),
            }
        })?;
        let mut base = self.root.clone();
        base.set_path("/");
        Ok(ObjectStorage {
            store: Arc::from(store),
            root,
            base,
        })
    }

    fn join(&self, relative: &str) -> Url {
        self.root
            .join(relative)
            .expect("a relative path of validated names joins onto a base URL")
    }
}

/// Object store options from the environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`), named as
/// object_store's builders name them.
pub fn env_options() -> impl Iterator<Item = (String, String)> {
    std::env::vars().filter_map(|(key, value)| {
        let lower = key.to_ascii_lowercase();
        ["aws_", "google_", "azure_"]
            .iter()
            .any(|p| lower.starts_with(p))
            .then_some((lower, value))
    })
}

/// The object store under a [`StorageLayout`], with the paths ftab writes.
#[derive(Debug, Clone)]
pub struct ObjectStorage {
    pub store: Arc<dyn ObjectStore>,
    root: Path,
    /// `scheme://authority/`: the URL the store is registered under.
    base: Url,
}

impl ObjectStorage {
    /// Where one ingest's validated data is staged.
    pub fn staging_prefix(
        &self,
        workspace: &WorkspaceName,
        table: &TableName,
        ingest: &IngestId,
    ) -> Path {
        self.path(&[
            "staging",
            workspace.as_str(),
            table.as_str(),
            &ingest.to_string(),
        ])
    }

    /// Where one upload of a spine is stored.
    pub fn spine_prefix(&self, name: &SpineName, upload: &str) -> Path {
        self.path(&["spines", name.as_str(), upload])
    }

    /// The path of the layout's root in the store.
    pub fn root_path(&self) -> Path {
        self.root.clone()
    }

    /// `scheme://authority/`, the URL to register the store under in DataFusion.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// The URL of a directory-like prefix in this store, with a trailing `/`.
    pub fn directory_url(&self, prefix: &Path) -> Url {
        self.base
            .join(&format!("{prefix}/"))
            .expect("an object store path joins onto its store's base URL")
    }

    /// The URL of an object in this store.
    pub fn object_url(&self, path: &Path) -> Url {
        self.base
            .join(path.as_ref())
            .expect("an object store path joins onto its store's base URL")
    }

    fn path(&self, parts: &[&str]) -> Path {
        let mut path = self.root.clone();
        for part in parts {
            path = path.join(*part);
        }
        path
    }

    /// Every object under `prefix`.
    pub async fn list(
        &self,
        prefix: &Path,
    ) -> Result<Vec<object_store::ObjectMeta>, object_store::Error> {
        self.store.list(Some(prefix)).try_collect().await
    }

    /// Delete every object under `prefix` (nothing there is fine).
    pub async fn delete_prefix(&self, prefix: &Path) -> Result<usize, object_store::Error> {
        let objects = self.list(prefix).await?;
        for object in &objects {
            match self.store.delete(&object.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(objects.len())
    }
}

/// A writer of a Parquet file that ftab writes for itself and reads back soon (staged
/// uploads, spines, an ingest's latest rows): LZ4 raw, the fastest to decode, and no
/// dictionaries, which cost write time and rarely pay for data read once.
pub fn scratch_parquet_writer(
    store: Arc<dyn ObjectStore>,
    path: Path,
    schema: datafusion::arrow::datatypes::SchemaRef,
    row_group_rows: usize,
) -> datafusion::parquet::errors::Result<
    datafusion::parquet::arrow::AsyncArrowWriter<object_store::buffered::BufWriter>,
> {
    use datafusion::parquet::basic::Compression;
    use datafusion::parquet::file::properties::WriterProperties;
    let properties = WriterProperties::builder()
        .set_compression(Compression::LZ4_RAW)
        .set_dictionary_enabled(false)
        .set_max_row_group_row_count(Some(row_group_rows))
        .build();
    datafusion::parquet::arrow::AsyncArrowWriter::try_new(
        object_store::buffered::BufWriter::new(store, path),
        schema,
        Some(properties),
    )
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

    #[tokio::test]
    async fn staging_paths_list_and_delete() {
        let (ws, t) = names();
        let dir = tempfile::tempdir().unwrap();
        let storage = StorageLayout::new(dir.path().to_str().unwrap())
            .unwrap()
            .open()
            .unwrap();
        let ingest = IngestId::generate();
        let prefix = storage.staging_prefix(&ws, &t, &ingest);
        storage
            .store
            .put(
                &prefix.clone().join("part-0.parquet"),
                bytes::Bytes::from_static(b"x").into(),
            )
            .await
            .unwrap();
        let on_disk = dir
            .path()
            .join(format!("staging/prod/user_counts/{ingest}/part-0.parquet"));
        assert!(on_disk.exists(), "{}", on_disk.display());
        assert_eq!(storage.list(&prefix).await.unwrap().len(), 1);
        let url = storage.directory_url(&prefix);
        assert_eq!(
            url.to_file_path().unwrap(),
            dir.path()
                .join(format!("staging/prod/user_counts/{ingest}"))
        );
        assert_eq!(storage.delete_prefix(&prefix).await.unwrap(), 1);
        assert!(!on_disk.exists());
        assert_eq!(storage.delete_prefix(&prefix).await.unwrap(), 0);
    }

    #[test]
    fn unsupported_schemes_are_refused() {
        let err = StorageLayout::new("ftp://host/x").unwrap_err().to_string();
        assert!(err.contains("unsupported scheme `ftp`"), "{err}");
    }
}
