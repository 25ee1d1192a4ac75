//! The files at a URI, for spines and ingests read in place: the object the URI names, or
//! the objects under it whose names a caller accepts, in name order. The store is opened
//! from the URL by the jobs' runtime (`ftab_engine::runtime`), as every executor opens it.

use std::sync::Arc;

use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use url::Url;

use crate::error::{Error, Result};

/// The files found at a URI.
pub struct FilesAt {
    pub store: Arc<dyn ObjectStore>,
    /// `scheme://authority/`: the URL the store is registered under.
    pub base: Url,
    /// Each file's URL and metadata, in name order.
    pub files: Vec<(Url, ObjectMeta)>,
    /// Whether the URI named one object rather than a prefix.
    pub single: bool,
}

/// What the caller reads (`spine`, `ingest`) and which files it takes, for messages.
pub struct Wanted<'a> {
    pub what: &'a str,
    /// e.g. `Parquet files`.
    pub kinds: &'a str,
    pub accept: &'a (dyn Fn(&str) -> bool + Sync),
}

/// List the files at `uri`: a URL (`file://`, `s3://`, `gs://`, `az://`) or an absolute
/// path. A URI whose last segment `wanted` accepts is one file; anything else a prefix.
pub async fn files_at(runtime: &RuntimeEnv, uri: &str, wanted: &Wanted<'_>) -> Result<FilesAt> {
    let what = wanted.what;
    let invalid = |message: String| Error::InvalidArgument(message);
    let url = match Url::parse(uri) {
        Ok(url) if url.scheme().len() > 1 => url,
        _ if std::path::Path::new(uri).is_absolute() => Url::from_file_path(uri)
            .map_err(|()| invalid(format!("{what} URI `{uri}` is not a usable path")))?,
        _ => {
            return Err(invalid(format!(
                "{what} URI `{uri}` is neither a URL (file://, s3://, gs://, az://) nor an absolute path"
            )));
        }
    };
    let mut base = url.clone();
    base.set_path("/");
    base.set_query(None);
    let store = runtime
        .object_store(
            ObjectStoreUrl::parse(base.as_str())
                .map_err(|e| invalid(format!("{what} URI `{uri}`: {e}")))?,
        )
        .map_err(|e| invalid(format!("cannot open {what} URI `{uri}`: {e}")))?;
    let path =
        Path::from_url_path(url.path()).map_err(|e| invalid(format!("{what} URI `{uri}`: {e}")))?;
    let unreadable = |e: object_store::Error| {
        let first = e.to_string().lines().next().unwrap_or_default().to_string();
        Error::FailedPrecondition(format!("cannot read {what} URI `{uri}`: {first}"))
    };
    let mut files = Vec::new();
    let single = !url.path().ends_with('/') && (wanted.accept)(url.path());
    if single {
        let meta = store.head(&path).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => {
                Error::NotFound(format!("there is no {what} file at `{uri}`"))
            }
            other => unreadable(other),
        })?;
        files.push((url.clone(), meta));
    } else {
        let mut listed: Vec<ObjectMeta> = store
            .list(Some(&path))
            .try_collect()
            .await
            .map_err(unreadable)?;
        listed.retain(|o| (wanted.accept)(o.location.as_ref()));
        listed.sort_by(|a, b| a.location.cmp(&b.location));
        for object in listed {
            let file_url = base
                .join(object.location.as_ref())
                .map_err(|e| invalid(format!("{what} file {}: {e}", object.location)))?;
            files.push((file_url, object));
        }
    }
    if files.is_empty() {
        return Err(Error::NotFound(format!(
            "there are no {} at {what} URI `{uri}`",
            wanted.kinds
        )));
    }
    Ok(FilesAt {
        store,
        base,
        files,
        single,
    })
}
