//! ftab-scheduler: the control plane of ftab.
//!
//! It keeps the catalog ([`catalog`]), decides about workspaces and definitions
//! ([`workspaces`]), takes ingests in ([`ingest`]), runs jobs ([`jobs`]) on the Ballista
//! cluster it embeds ([`cluster`]), and answers the Flight protocol ([`flight`]).
//!
//! [`Scheduler::open`] builds one from a [`config::SchedulerConfig`];
//! [`Scheduler::serve`] answers on a bound listener until a shutdown signal.

pub mod catalog;
pub mod cluster;
pub mod config;
pub mod error;
pub mod files_at;
pub mod flight;
pub mod http;
pub mod ingest;
pub mod ingest_uri;
pub mod ipc_file;
pub mod jobs;
pub mod leftovers;
pub mod online;
pub mod process;
pub mod selection;
pub mod serving;
pub mod serving_process;
pub mod training_sets;
pub mod workspaces;

use std::future::Future;
use std::sync::Arc;

use datafusion::execution::runtime_env::RuntimeEnv;
use ftab_engine::online::aerospike::AerospikeStore;
use ftab_engine::online::embedded::EmbeddedStore;
use ftab_engine::online::{Disabled, OnlineStore};
use ftab_engine::storage::{ObjectStorage, StorageLayout};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use config::OnlineStoreChoice;
pub use config::SchedulerConfig;
pub use error::{Error, Result};

use crate::catalog::Catalog;
use crate::cluster::{Cluster, ClusterSettings};
use crate::flight::FlightHandler;
use crate::ingest::Ingests;
use crate::jobs::{JobRunner, Jobs, RetryPolicy};
use crate::training_sets::TrainingSets;
use crate::workspaces::Workspaces;

/// How often expired spines and training sets are removed: every minute, or every half
/// of the shortest lifetime if that is shorter (at least every second).
fn sweep_every(config: &SchedulerConfig) -> std::time::Duration {
    let shortest = config.spine_ttl.min(config.training_set_retention) / 2;
    shortest
        .min(std::time::Duration::from_secs(60))
        .max(std::time::Duration::from_secs(1))
}

/// A scheduler with its catalog, object store and online store open, ready to serve.
pub struct Scheduler {
    config: SchedulerConfig,
    storage: StorageLayout,
    objects: ObjectStorage,
    catalog: Catalog,
    online: Arc<dyn OnlineStore>,
    cluster: Cluster,
    workspaces: Workspaces,
    retry: RetryPolicy,
}

impl Scheduler {
    /// Create the data directory if needed, open (and migrate) the catalog.
    pub async fn open(config: SchedulerConfig) -> Result<Self> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            Error::FailedPrecondition(format!(
                "cannot create data directory {}: {e}",
                config.data_dir.display()
            ))
        })?;
        let storage = StorageLayout::new(&config.storage_location())?;
        let catalog_path = config.catalog_path();
        let catalog = tokio::task::spawn_blocking(move || Catalog::open(&catalog_path))
            .await
            .map_err(|e| Error::Internal(format!("catalog open task failed: {e}")))??;
        let objects = storage.open()?;
        let online: Arc<dyn OnlineStore> = match config.online_store {
            OnlineStoreChoice::Embedded => {
                let online_path = config.online_store_path();
                let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(&online_path))
                    .await
                    .map_err(|e| Error::Internal(format!("online store open task failed: {e}")))?
                    .map_err(|e| Error::FailedPrecondition(e.to_string()))?;
                Arc::new(store)
            }
            OnlineStoreChoice::Aerospike => {
                let settings = config.aerospike.clone().ok_or_else(|| {
                    Error::Internal("the Aerospike online store has no settings".into())
                })?;
                let store = AerospikeStore::new(settings)
                    .map_err(|e| Error::FailedPrecondition(e.to_string()))?;
                // Not fatal: Aerospike may come up after the scheduler (docs/online-store.md).
                if let Err(e) = store.client().await {
                    tracing::warn!("{e}; online loads and reads fail until it is reachable");
                }
                Arc::new(store)
            }
            OnlineStoreChoice::None => Arc::new(Disabled(
                "this scheduler has no online store (it was started with --online-store none)"
                    .into(),
            )),
        };
        tracing::info!(
            data_dir = %config.data_dir.display(),
            storage = %storage.root(),
            online_store = ?config.online_store,
            "catalog, object store and online store open"
        );
        probe_storage(&storage, &objects).await?;
        let swept = leftovers::sweep(&catalog, &storage, &objects).await;
        if swept != leftovers::Swept::default() {
            tracing::info!(?swept, "removed what earlier runs left behind");
        }
        let runtime = runtime_env(&config, &objects)?;
        let cluster = Cluster::start(
            ClusterSettings {
                parallelism: config.parallelism,
                work_dir: config.ballista_dir(),
                result_retention: config.training_set_retention,
                memory_limit: config.memory_limit,
                join: config.training_set_join,
                cluster_addr: config.cluster_addr,
                executor_timeout: config.executor_timeout,
            },
            runtime,
            online.clone(),
        )
        .await?;
        Ok(Self {
            workspaces: Workspaces::new(catalog.clone(), storage.clone(), objects.clone()),
            catalog,
            objects,
            online,
            cluster,
            storage,
            config,
            retry: RetryPolicy::default(),
        })
    }

    /// Use another retry policy for failed job attempts.
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    /// Where Ballista's scheduler gRPC listens for executors.
    pub fn ballista_addr(&self) -> std::net::SocketAddr {
        self.cluster.ballista_addr()
    }

    /// How many executors are registered (in standalone, the in-process one).
    pub async fn executors(&self) -> usize {
        self.cluster.executors().await
    }

    pub fn storage(&self) -> &StorageLayout {
        &self.storage
    }

    /// Bind the Flight address of the configuration, with an actionable error if it is
    /// taken.
    pub async fn bind(&self) -> Result<TcpListener> {
        let addr = self.config.flight_addr;
        TcpListener::bind(addr).await.map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
                "; is another ftab-scheduler running? Stop it, or pass --flight-addr HOST:PORT (port 0 picks a free one)"
            } else {
                ""
            };
            Error::FailedPrecondition(format!("cannot listen on {addr}: {e}{hint}"))
        })
    }

    /// Serve the Flight protocol on `listener` and run jobs until `shutdown` completes;
    /// requests in flight are finished first, and a job in progress resumes at the next
    /// start.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        self.serve_with_http(listener, None, shutdown).await
    }

    /// Bind the feature server's HTTP address of the configuration.
    pub async fn bind_http(&self) -> Result<TcpListener> {
        let addr = self.config.http_addr;
        TcpListener::bind(addr).await.map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
                "; is another ftab-scheduler running? Pass --http-addr HOST:PORT (port 0 picks a free one)"
            } else {
                ""
            };
            Error::FailedPrecondition(format!(
                "cannot serve the feature server's HTTP API on {addr}: {e}{hint}"
            ))
        })
    }

    /// As [`Scheduler::serve`], and the feature server's HTTP API on `http` if given.
    pub async fn serve_with_http(
        self,
        listener: TcpListener,
        http: Option<TcpListener>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let waiting = Arc::new(Notify::new());
        let runner = JobRunner::new(
            self.catalog.clone(),
            self.storage.clone(),
            self.objects.clone(),
            self.cluster.clone(),
            waiting.clone(),
            self.retry,
            self.config.max_jobs,
        );
        let online = self.online.clone();
        let (stop_jobs, jobs_stopped) = watch::channel(false);
        let http = http.map(|listener| {
            let serving = serving::Serving::new(
                serving::DefinitionsSource::Catalog(self.catalog.clone()),
                self.online.clone(),
            );
            let mut stopped = jobs_stopped.clone();
            tokio::spawn(http::serve(listener, serving, async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            }))
        });
        let training_sets = TrainingSets::new(
            self.catalog.clone(),
            self.storage.clone(),
            self.objects.clone(),
            self.cluster.clone(),
            self.config.spine_ttl,
            self.config.training_set_retention,
        );
        tokio::spawn(
            training_sets
                .clone()
                .run_sweeper(sweep_every(&self.config), jobs_stopped.clone()),
        );
        let runner = tokio::spawn(runner.run(jobs_stopped));
        let handler = FlightHandler::new(
            self.workspaces,
            Ingests::new(
                self.catalog.clone(),
                self.objects.clone(),
                self.cluster.clone(),
                waiting.clone(),
                self.online.as_ref(),
            ),
            Jobs::new(self.catalog.clone(), waiting),
            online::OnlineReads::new(self.catalog, self.online.clone()),
            training_sets,
        );
        let served = tonic::transport::Server::builder()
            .add_service(handler.into_server())
            .serve_with_incoming_shutdown(incoming(listener), async move {
                shutdown.await;
                let _ = stop_jobs.send(true);
            })
            .await
            .map_err(|e| Error::Internal(format!("Flight server failed: {e}")));
        if let Err(e) = runner.await {
            tracing::error!("the job runner stopped abnormally: {e}");
        }
        if let Some(http) = http {
            match http.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!("the HTTP feature server failed: {e}"),
                Err(e) => tracing::error!("the HTTP feature server stopped abnormally: {e}"),
            }
        }
        online.close();
        served
    }

    /// The online store, for reads (`ftab get`) and tests.
    pub fn online_store(&self) -> Arc<dyn OnlineStore> {
        self.online.clone()
    }
}

pub(crate) use ftab_engine::executor::nodelay as incoming;

/// Write, read back and delete one small object under the storage root, so that a missing
/// bucket, wrong credentials or an unreachable endpoint stop the scheduler at start with
/// the reason, not the first ingest with an internal error.
async fn probe_storage(layout: &StorageLayout, objects: &ObjectStorage) -> Result<()> {
    use object_store::ObjectStoreExt;
    let path = objects
        .root_path()
        .join("_ftab")
        .join(format!("probe-{}", uuid::Uuid::new_v4()));
    let unusable = |what: &str, e: object_store::Error| {
        let hint = match layout.root().scheme() {
            "s3" | "s3a" => {
                "; check that the bucket exists and the AWS_* variables (credentials, AWS_REGION, AWS_ENDPOINT for S3-compatible stores) are right"
            }
            "gs" => {
                "; check that the bucket exists and GOOGLE_SERVICE_ACCOUNT (or GOOGLE_APPLICATION_CREDENTIALS) is right"
            }
            "az" | "abfs" | "abfss" => {
                "; check that the container exists and the AZURE_* variables are right"
            }
            _ => "; check that the directory is writable",
        };
        let first = e.to_string().lines().next().unwrap_or_default().to_string();
        Error::FailedPrecondition(format!(
            "cannot {what} the storage `{}`: {first}{hint}",
            layout.root()
        ))
    };
    objects
        .store
        .put(&path, bytes::Bytes::from_static(b"ftab").into())
        .await
        .map_err(|e| unusable("write to", e))?;
    objects
        .store
        .get(&path)
        .await
        .map_err(|e| unusable("read from", e))?;
    objects
        .store
        .delete(&path)
        .await
        .map_err(|e| unusable("delete from", e))?;
    Ok(())
}

/// The DataFusion runtime of every job in this process (`ftab_engine::runtime`), with
/// ftab's own object store registered.
fn runtime_env(config: &SchedulerConfig, objects: &ObjectStorage) -> Result<Arc<RuntimeEnv>> {
    let runtime = ftab_engine::runtime::job_runtime(&ftab_engine::runtime::RuntimeSettings {
        memory_limit: config.memory_limit,
        parallelism: config.parallelism,
        spill_dir: config.spill_dir(),
    })
    .map_err(|e| Error::FailedPrecondition(format!("cannot build the job runtime: {e}")))?;
    runtime.register_object_store(objects.base_url(), objects.store.clone());
    Ok(runtime)
}
