//! Helpers shared by the scheduler's integration tests: an in-process scheduler on a free
//! loopback port, and a generic Flight client to speak to it.
#![allow(dead_code)]

pub mod golden;
pub mod pipe_table;

use std::time::Duration;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::{Action, FlightClient, FlightDescriptor, PutResult};
use datafusion::arrow::array::RecordBatch;
use ftab_scheduler::jobs::RetryPolicy;
use ftab_scheduler::{Scheduler, SchedulerConfig};
use futures::TryStreamExt;
use tokio::sync::oneshot;

pub struct Running {
    pub client: FlightClient,
    /// `http://127.0.0.1:PORT`, for more clients.
    pub url: String,
    pub stop: Option<oneshot::Sender<()>>,
    pub server: tokio::task::JoinHandle<ftab_scheduler::Result<()>>,
    pub online: std::sync::Arc<dyn ftab_engine::online::OnlineStore>,
    pub storage: ftab_engine::storage::StorageLayout,
    pub dir: tempfile::TempDir,
}

pub async fn start() -> Running {
    start_in(tempfile::tempdir().unwrap()).await
}

pub async fn start_in(dir: tempfile::TempDir) -> Running {
    start_with(dir, |_| {}).await
}

/// Start with a configuration changed by `adjust`.
pub async fn start_with(
    dir: tempfile::TempDir,
    adjust: impl FnOnce(&mut SchedulerConfig),
) -> Running {
    let mut config = SchedulerConfig {
        data_dir: dir.path().join("data"),
        flight_addr: "127.0.0.1:0".parse().unwrap(),
        ..SchedulerConfig::default()
    };
    adjust(&mut config);
    let scheduler = Scheduler::open(config)
        .await
        .unwrap()
        .with_retry_policy(RetryPolicy {
            max_attempts: 2,
            first_delay: Duration::from_millis(100),
        });
    let online = scheduler.online_store();
    let storage = scheduler.storage().clone();
    let listener = scheduler.bind().await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(scheduler.serve(listener, async {
        let _ = stopped.await;
    }));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Running {
        client: FlightClient::new(channel),
        url: format!("http://{addr}"),
        stop: Some(stop),
        server,
        online,
        storage,
        dir,
    }
}

impl Running {
    /// Stop gracefully and give back the data directory.
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.stop.take().unwrap().send(()).unwrap();
        self.server.await.unwrap().unwrap();
        self.dir
    }
}

fn status(e: arrow_flight::error::FlightError) -> tonic::Status {
    match e {
        arrow_flight::error::FlightError::Tonic(status) => *status,
        other => tonic::Status::internal(other.to_string()),
    }
}

/// One DoAction with a raw JSON body, its single answer decoded.
pub async fn raw_action(
    client: &mut FlightClient,
    name: &str,
    body: &str,
) -> Result<serde_json::Value, tonic::Status> {
    let results: Vec<bytes::Bytes> = client
        .do_action(Action::new(name, body.to_string()))
        .await
        .map_err(status)?
        .try_collect()
        .await
        .map_err(status)?;
    assert_eq!(results.len(), 1);
    Ok(serde_json::from_slice(&results[0]).unwrap())
}

/// Create workspace `name` of `kind` (`live` or `dev`) and apply `files`
/// (`[{"path": ..., "content": ...}]`) to it.
pub async fn workspace_with_files(
    client: &mut FlightClient,
    name: &str,
    kind: &str,
    files: serde_json::Value,
) -> Result<(), tonic::Status> {
    let workspace = serde_json::json!({"name": name, "kind": kind});
    raw_action(client, "create_workspace", &workspace.to_string()).await?;
    let apply = serde_json::json!({"workspace": name, "files": files});
    raw_action(client, "apply", &apply.to_string()).await?;
    Ok(())
}

/// DoPut `command` with `batches`; the PutResult metadata.
pub async fn put(
    client: &mut FlightClient,
    command: serde_json::Value,
    batches: Vec<RecordBatch>,
) -> Result<serde_json::Value, tonic::Status> {
    let data = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_cmd(command.to_string())))
        .build(futures::stream::iter(batches.into_iter().map(Ok)));
    let results: Vec<PutResult> = client
        .do_put(data)
        .await
        .map_err(status)?
        .try_collect()
        .await
        .map_err(status)?;
    assert_eq!(results.len(), 1);
    Ok(serde_json::from_slice(&results[0].app_metadata).unwrap())
}

/// Poll a job until it is final; its JSON.
pub async fn wait_job(client: &mut FlightClient, job_id: &str) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let job = raw_action(
            client,
            "get_job",
            &serde_json::json!({"job_id": job_id}).to_string(),
        )
        .await
        .unwrap();
        if matches!(
            job["state"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        ) {
            return job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {job_id} did not finish: {job}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Another client of the same scheduler.
pub async fn connect(url: &str) -> FlightClient {
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .unwrap();
    FlightClient::new(channel)
}

/// Ask for a training set with GetFlightInfo and fetch every endpoint with DoGet: the
/// FlightInfo's metadata and all rows.
pub async fn training_set(
    client: &mut FlightClient,
    command: serde_json::Value,
) -> Result<(serde_json::Value, Vec<RecordBatch>), tonic::Status> {
    let info = client
        .get_flight_info(FlightDescriptor::new_cmd(command.to_string()))
        .await
        .map_err(status)?;
    let metadata: serde_json::Value = serde_json::from_slice(&info.app_metadata).unwrap();
    let mut batches = Vec::new();
    for endpoint in &info.endpoint {
        let ticket = endpoint
            .ticket
            .clone()
            .expect("every endpoint has a ticket");
        let mut part: Vec<RecordBatch> = client
            .do_get(ticket)
            .await
            .map_err(status)?
            .try_collect()
            .await
            .map_err(status)?;
        batches.append(&mut part);
    }
    Ok((metadata, batches))
}

/// The example feature repository as the `files` of a plan or apply.
pub fn example_files() -> serde_json::Value {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/feature_repo");
    let files = ftab_model::repository::read_dir(&dir).unwrap();
    serde_json::to_value(files).unwrap()
}

#[allow(unused_imports)]
pub use ftab_testkit::{Rng, files_under, find_files};
