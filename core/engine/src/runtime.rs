//! The DataFusion runtime ftab's tasks run in, the same in `ftab-scheduler` (planning, and
//! its in-process executor) and in every `ftab-executor`.
//!
//! - Memory is bounded (a fair spill pool), sorts spill into one directory, and a merge
//!   pass reads a bounded number of spill files ([`crate::plan::max_spill_merge_fan_in`]).
//! - Object stores are found by URL ([`ObjectStores`]): a plan names `s3://bucket/...` or
//!   `file:///...` and whichever process runs it opens that store itself, with credentials
//!   from its own environment. Nothing has to be registered on an executor before a task
//!   reaches it, so a spine or an ingest read from any bucket works on every executor.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::object_store::ObjectStoreRegistry;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use object_store::ObjectStore;
use url::Url;

/// How a process's job runtime is bounded.
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    /// Bytes of memory tasks may hold before sorts spill.
    pub memory_limit: u64,
    /// Tasks run at once (sizes the merge fan-in).
    pub parallelism: usize,
    /// Where sorts spill; emptied when the runtime is built.
    pub spill_dir: PathBuf,
}

/// The runtime of every task in this process: see the module documentation.
pub fn job_runtime(settings: &RuntimeSettings) -> Result<Arc<RuntimeEnv>> {
    let spill = &settings.spill_dir;
    if spill.exists() {
        // Spill files of an earlier run of this process are never read again.
        let _ = std::fs::remove_dir_all(spill);
    }
    std::fs::create_dir_all(spill).map_err(|e| {
        DataFusionError::Execution(format!(
            "cannot create the spill directory {}: {e}",
            spill.display()
        ))
    })?;
    // A fair pool: concurrent sorts each get their share before they must spill (the
    // greedy default lets the first one take everything).
    let pool = TrackConsumersPool::new(
        FairSpillPool::new(settings.memory_limit as usize),
        std::num::NonZeroUsize::new(5).expect("5 is not zero"),
    );
    RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::new(pool))
        .with_disk_manager_builder(
            DiskManagerBuilder::default()
                .with_mode(DiskManagerMode::Directories(vec![spill.clone()]))
                .with_max_spill_merge_fan_in(crate::plan::max_spill_merge_fan_in(
                    settings.parallelism,
                    settings.memory_limit,
                )),
        )
        .with_object_store_registry(Arc::new(ObjectStores::default()))
        .build_arc()
}

/// A quarter of the machine's memory (Linux), or 4 GiB where it cannot be read.
pub fn default_memory_limit() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kib| kib * 1024)
        });
    total.map(|t| t / 4).unwrap_or(4 << 30)
}

/// `4GiB`, `512MiB`, `1G`, `65536` (bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "invalid size `{text}`; write a number with an optional unit, e.g. 4GiB, 512MiB or 1073741824"
        )
    };
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    number.checked_mul(factor).ok_or_else(bad)
}

/// Object stores by `scheme://authority`, opened on first use from the URL and the
/// environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`, as [`crate::storage::env_options`] reads
/// them). A store registered explicitly (the scheduler's own) wins over one it would open.
#[derive(Debug, Default)]
pub struct ObjectStores {
    stores: RwLock<HashMap<String, Arc<dyn ObjectStore>>>,
}

/// The registry key of a URL: `scheme://authority`.
fn store_key(url: &Url) -> String {
    format!(
        "{}://{}",
        url.scheme(),
        &url[url::Position::BeforeHost..url::Position::AfterPort]
    )
}

impl ObjectStoreRegistry for ObjectStores {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        let mut stores = self.stores.write().unwrap_or_else(|e| e.into_inner());
        stores.insert(store_key(url), store)
    }

    fn deregister_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        let mut stores = self.stores.write().unwrap_or_else(|e| e.into_inner());
        stores.remove(&store_key(url)).ok_or_else(|| {
            DataFusionError::Execution(format!("no object store is registered for {url}"))
        })
    }

    fn get_store(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        let key = store_key(url);
        if let Some(store) = self
            .stores
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(store.clone());
        }
        if !crate::storage::SUPPORTED_SCHEMES.contains(&url.scheme()) || url.scheme() == "memory" {
            // A memory store opened here would be a new, empty one: it only exists where
            // it was registered.
            return Err(DataFusionError::Execution(format!(
                "no object store for `{key}`: ftab opens file://, s3://, gs://, az:// and abfss:// stores"
            )));
        }
        let (store, _) =
            object_store::parse_url_opts(url, crate::storage::env_options()).map_err(|e| {
                DataFusionError::Execution(format!("cannot open the object store `{key}`: {e}"))
            })?;
        let store: Arc<dyn ObjectStore> = Arc::from(store);
        let mut stores = self.stores.write().unwrap_or_else(|e| e.into_inner());
        Ok(stores.entry(key).or_insert(store).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::object_store::ObjectStoreUrl;

    #[test]
    fn stores_are_opened_by_url_and_registered_ones_win() {
        let registry = ObjectStores::default();
        let dir = tempfile::tempdir().unwrap();
        let file = Url::from_directory_path(dir.path()).unwrap();
        let local = registry.get_store(&file).unwrap();
        assert!(
            Arc::ptr_eq(&local, &registry.get_store(&file).unwrap()),
            "opened once"
        );

        // S3 needs no network to open a client; the bucket is the authority.
        let a = registry
            .get_store(&Url::parse("s3://bucket-a/x/y").unwrap())
            .unwrap();
        let b = registry
            .get_store(&Url::parse("s3://bucket-b/x").unwrap())
            .unwrap();
        assert!(!Arc::ptr_eq(&a, &b), "one store per bucket");
        assert!(Arc::ptr_eq(
            &a,
            &registry
                .get_store(&Url::parse("s3://bucket-a/other").unwrap())
                .unwrap()
        ));

        let memory: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let url = ObjectStoreUrl::parse("memory://").unwrap();
        assert!(
            registry
                .register_store(url.as_ref(), memory.clone())
                .is_none()
        );
        assert!(Arc::ptr_eq(
            &memory,
            &registry.get_store(url.as_ref()).unwrap()
        ));

        let err = registry
            .get_store(&Url::parse("memory://other/").unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no object store for `memory://other`"),
            "{err}"
        );
        let err = registry
            .get_store(&Url::parse("ftp://host/x").unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("no object store for `ftp://host`"), "{err}");
    }
}
