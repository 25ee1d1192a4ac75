//! ftab-scheduler: the control plane of ftab.
//!
//! It keeps the catalog ([`catalog`]), decides about workspaces and definitions
//! ([`workspaces`]) and answers the Flight protocol ([`flight`]). Later capabilities add the
//! job store and runner (ingest, backfill) on an embedded or remote Ballista cluster.
//!
//! [`Scheduler::open`] builds one from a [`config::SchedulerConfig`];
//! [`Scheduler::serve`] answers on a bound listener until a shutdown signal.

pub mod catalog;
pub mod config;
pub mod error;
pub mod flight;
pub mod workspaces;

use std::future::Future;

use ftab_core::storage::StorageLayout;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

pub use config::SchedulerConfig;
pub use error::{Error, Result};

use crate::catalog::Catalog;
use crate::flight::FlightHandler;
use crate::workspaces::Workspaces;

/// A scheduler with its catalog open, ready to serve.
pub struct Scheduler {
    config: SchedulerConfig,
    storage: StorageLayout,
    workspaces: Workspaces,
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
        tracing::info!(
            data_dir = %config.data_dir.display(),
            storage = %storage.root(),
            "catalog open"
        );
        Ok(Self {
            workspaces: Workspaces::new(catalog, storage.clone()),
            storage,
            config,
        })
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
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

    /// Serve the Flight protocol on `listener` until `shutdown` completes; requests in
    /// flight are finished first.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let handler = FlightHandler::new(self.workspaces);
        tonic::transport::Server::builder()
            .add_service(handler.into_server())
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
            .await
            .map_err(|e| Error::Internal(format!("Flight server failed: {e}")))
    }
}
