//! `ftab-serving`: a stateless serving process for clusters. It answers the feature
//! server's HTTP API ([`crate::http`]) from Aerospike, with the applied definitions copied
//! from a scheduler's `serving_definitions` action and polled again every `refresh`, so a
//! new apply is served without a restart. It keeps no state of its own: run as many as
//! the load needs behind a load balancer (docs/serving.md).
//!
//! When the scheduler cannot be reached, it keeps serving the definitions it has (and
//! says so in its log); until the first copy arrives, `/readyz` answers 503.

use std::sync::Arc;
use std::time::Duration;

use arrow_flight::Action;
use arrow_flight::flight_service_client::FlightServiceClient;
use ftab_engine::online::OnlineStore;
use ftab_model::protocol::{MAX_MESSAGE_BYTES, ServingDefinitionsResponse};
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};
use crate::serving::{CopyCell, DefinitionsCopy, DefinitionsSource, Serving};

/// A serving process's settings.
#[derive(Debug, Clone)]
pub struct ServingSettings {
    /// The scheduler's Flight URL, `http://host:port`.
    pub scheduler: String,
    /// How often the definitions are copied again.
    pub refresh: Duration,
}

/// Ask the scheduler at `url` for the serving definitions once.
pub async fn fetch_definitions(url: &str) -> Result<ServingDefinitionsResponse> {
    let unreachable =
        |e: &dyn std::fmt::Display| Error::Unavailable(format!("scheduler {url}: {e}"));
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| Error::InvalidArgument(format!("--scheduler `{url}`: {e}")))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30));
    let channel: Channel = endpoint.connect().await.map_err(|e| unreachable(&e))?;
    let mut client = FlightServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let mut results = client
        .do_action(Action {
            r#type: "serving_definitions".into(),
            body: "{}".into(),
        })
        .await
        .map_err(|e| unreachable(&e.message()))?
        .into_inner();
    let result = results
        .message()
        .await
        .map_err(|e| unreachable(&e.message()))?
        .ok_or_else(|| unreachable(&"an empty answer to serving_definitions"))?;
    serde_json::from_slice(&result.body).map_err(|e| {
        Error::Internal(format!(
            "the scheduler's serving_definitions answer does not decode ({e}); are ftab-serving and \
             ftab-scheduler the same version?"
        ))
    })
}

/// The definitions source of a serving process, and the task that keeps it fresh. The
/// task ends when `shutdown` resolves.
pub fn definitions_copier(
    settings: ServingSettings,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> (DefinitionsSource, tokio::task::JoinHandle<()>) {
    let cell: CopyCell = Arc::default();
    let source = DefinitionsSource::Copy(cell.clone());
    let task = tokio::spawn(async move {
        let mut shutdown = shutdown;
        let mut last: Option<Vec<(String, u64)>> = None;
        let mut failing = false;
        loop {
            match fetch_definitions(&settings.scheduler).await {
                Ok(response) => {
                    let versions: Vec<(String, u64)> = response
                        .workspaces
                        .iter()
                        .map(|w| (w.name.to_string(), w.version))
                        .collect();
                    if last.as_ref() != Some(&versions) || failing {
                        tracing::info!(?versions, "definitions copied from the scheduler");
                    }
                    *cell.write().unwrap_or_else(|e| e.into_inner()) =
                        Some(Arc::new(DefinitionsCopy::new(response)));
                    last = Some(versions);
                    failing = false;
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(
                            "{e}; serving the definitions copied before (if any) until it answers"
                        );
                    }
                    failing = true;
                }
            }
            tokio::select! {
                () = tokio::time::sleep(settings.refresh) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    });
    (source, task)
}

/// Serve the HTTP API on `listener` until `shutdown`.
pub async fn serve(
    settings: ServingSettings,
    store: Arc<dyn OnlineStore>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (source, copier) = definitions_copier(settings, stopped);
    let serving = Serving::new(source, store);
    let served = crate::http::serve(listener, serving, shutdown).await;
    let _ = stop.send(true);
    let _ = copier.await;
    served.map_err(|e| Error::Internal(format!("the HTTP API stopped: {e}")))
}
