//! ftab-client: a Rust client of ftab's Flight protocol, and the `ftab` CLI built on it.
//!
//! [`FtabClient`] speaks to an `ftab-scheduler` with typed requests and answers from
//! [`ftab_model::protocol`]; any other Arrow Flight client can do the same with the JSON
//! shapes in docs/protocol.md.

pub mod cli;
pub mod error;
pub mod files;
pub mod http;
pub mod output;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arrow_flight::FlightDescriptor;
use arrow_flight::encode::FlightDataEncoderBuilder;

use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{FlightClient, FlightInfo};
use futures::{StreamExt, TryStreamExt};
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, Endpoint};

use ftab_model::ids::JobId;
use ftab_model::names::{SpineName, TableName, WorkspaceName};
use ftab_model::protocol::{
    Action, ApplyRequest, ApplyResponse, Command, CreateWorkspaceRequest, DescribeTableRequest,
    GetOnlineRequest, GetOnlineResponse, IngestCommand, IngestResult, JobInfo, JobRequest,
    ListJobsRequest, ListJobsResponse, ListTablesCriteria, ListWorkspacesRequest,
    ListWorkspacesResponse, MAX_MESSAGE_BYTES, PlanRequest, PlanResponse, SpineCommand, SpineInfo,
    TableDescription, TableListing, TrainingSetInfo, TrainingSetRequest, UploadControl,
    WorkspaceInfo, WorkspaceKind,
};
use ftab_model::repository::RepositoryFile;

/// Where the CLI looks for a scheduler unless told otherwise.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";

/// How long to wait for a connection before saying the scheduler is unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the ftab scheduler at {url} ({reason}).\nStart one with `ftab-scheduler` (it listens on 127.0.0.1:50051 and keeps its data in ./ftab-data), or point at a running one with --server URL or FTAB_SERVER."
    )]
    Unreachable { url: String, reason: String },

    #[error("invalid server URL `{url}`: {reason}; write it like http://127.0.0.1:50051")]
    InvalidUrl { url: String, reason: String },

    /// The scheduler answered with an error; its message says what is wrong.
    #[error("{message}")]
    Server { code: tonic::Code, message: String },

    #[error("unexpected answer from the scheduler: {0}")]
    Protocol(String),

    /// Reading the data to upload failed; the scheduler stored nothing.
    #[error("{0}")]
    Data(String),
}

impl ClientError {
    fn from_flight(url: &str, error: FlightError) -> Self {
        match error {
            FlightError::Tonic(status) => Self::from_status(url, *status),
            FlightError::Arrow(e) => ClientError::Data(format!("cannot read the data: {e}")),
            FlightError::ExternalError(e) => ClientError::Data(e.to_string()),
            other => ClientError::Protocol(other.to_string()),
        }
    }

    fn from_status(url: &str, status: tonic::Status) -> Self {
        if status.code() == tonic::Code::Unavailable {
            return ClientError::Unreachable {
                url: url.to_string(),
                reason: status.message().to_string(),
            };
        }
        ClientError::Server {
            code: status.code(),
            message: status.message().to_string(),
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A connection to one ftab scheduler.
pub struct FtabClient {
    url: String,
    flight: FlightClient,
}

impl FtabClient {
    /// Connect to the scheduler at `url` (`http://host:port`).
    pub async fn connect(url: &str) -> Result<Self> {
        let url = url.trim_end_matches('/').to_string();
        // Flight speaks gRPC over HTTP/2: anything but http(s) is a usage error, not an
        // unreachable server.
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ClientError::InvalidUrl {
                url,
                reason: "the scheme must be http or https".into(),
            });
        }
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| ClientError::InvalidUrl {
                url: url.clone(),
                reason: e.to_string(),
            })?
            .connect_timeout(CONNECT_TIMEOUT);
        let channel: Channel = endpoint.connect().await.map_err(|e| {
            let reason = std::error::Error::source(&e)
                .map(|s| s.to_string())
                .unwrap_or_else(|| e.to_string());
            ClientError::Unreachable {
                url: url.clone(),
                reason,
            }
        })?;
        // The server's limits, both ways: a value the scheduler stores can be read back.
        let inner = FlightServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let flight = FlightClient::new_from_inner(inner);
        Ok(Self { url, flight })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Run one DoAction and decode its single JSON answer.
    pub async fn action<T: DeserializeOwned>(&mut self, action: &Action) -> Result<T> {
        let (action_type, body) = action.encode();
        let url = self.url.clone();
        let results: Vec<bytes::Bytes> = self
            .flight
            .do_action(arrow_flight::Action::new(action_type, body))
            .await
            .map_err(|e| ClientError::from_flight(&url, e))?
            .try_collect()
            .await
            .map_err(|e| ClientError::from_flight(&url, e))?;
        let [body] = results.as_slice() else {
            return Err(ClientError::Protocol(format!(
                "action `{action_type}` answered {} results, expected one",
                results.len()
            )));
        };
        serde_json::from_slice(body).map_err(|e| {
            ClientError::Protocol(format!(
                "action `{action_type}` answer does not decode: {e}"
            ))
        })
    }

    pub async fn create_workspace(
        &mut self,
        name: WorkspaceName,
        kind: WorkspaceKind,
    ) -> Result<WorkspaceInfo> {
        self.action(&Action::CreateWorkspace(CreateWorkspaceRequest {
            name,
            kind,
        }))
        .await
    }

    pub async fn list_workspaces(&mut self) -> Result<ListWorkspacesResponse> {
        self.action(&Action::ListWorkspaces(ListWorkspacesRequest {}))
            .await
    }

    pub async fn plan(
        &mut self,
        workspace: WorkspaceName,
        files: Vec<RepositoryFile>,
    ) -> Result<PlanResponse> {
        self.action(&Action::Plan(PlanRequest { workspace, files }))
            .await
    }

    pub async fn apply(&mut self, request: ApplyRequest) -> Result<ApplyResponse> {
        self.action(&Action::Apply(request)).await
    }

    pub async fn describe_table(
        &mut self,
        workspace: WorkspaceName,
        table: TableName,
    ) -> Result<TableDescription> {
        self.action(&Action::DescribeTable(DescribeTableRequest {
            workspace,
            table,
        }))
        .await
    }

    /// Upload `batches` as one ingest. `rows_sent` counts rows as they are read, for
    /// progress. The batches are read on a blocking thread, a few at a time.
    pub async fn ingest(
        &mut self,
        command: IngestCommand,
        batches: files::Batches,
        rows_sent: Arc<AtomicU64>,
    ) -> Result<IngestResult> {
        self.put(Command::Ingest(command), batches, rows_sent).await
    }

    /// Upload `batches` as a spine for training sets.
    pub async fn put_spine(
        &mut self,
        name: SpineName,
        batches: files::Batches,
        rows_sent: Arc<AtomicU64>,
    ) -> Result<SpineInfo> {
        self.put(Command::Spine(SpineCommand { name }), batches, rows_sent)
            .await
    }

    /// Ask for a training set: its FlightInfo (one endpoint per partition) and metadata.
    pub async fn training_set(
        &mut self,
        request: TrainingSetRequest,
    ) -> Result<(FlightInfo, TrainingSetInfo)> {
        let url = self.url.clone();
        let info = self
            .flight
            .get_flight_info(FlightDescriptor::new_cmd(
                Command::TrainingSet(request).encode(),
            ))
            .await
            .map_err(|e| ClientError::from_flight(&url, e))?;
        let metadata = serde_json::from_slice(&info.app_metadata).map_err(|e| {
            ClientError::Protocol(format!("training set answer does not decode: {e}"))
        })?;
        Ok((info, metadata))
    }

    /// Stream one endpoint of a training set, batch by batch.
    pub async fn fetch(
        &mut self,
        ticket: arrow_flight::Ticket,
    ) -> Result<arrow_flight::decode::FlightRecordBatchStream> {
        let url = self.url.clone();
        self.flight
            .do_get(ticket)
            .await
            .map_err(|e| ClientError::from_flight(&url, e))
    }

    /// Another connection to the same scheduler (for parallel fetches).
    pub async fn reconnect(&self) -> Result<Self> {
        Self::connect(&self.url).await
    }

    /// DoPut `command` with `batches`; its one PutResult's metadata, decoded.
    ///
    /// If reading `batches` fails half-way, the upload is aborted with an
    /// [`UploadControl::Abort`] message instead of simply ending (which the scheduler would
    /// take for a complete upload and store), and the read error is returned.
    async fn put<T: DeserializeOwned>(
        &mut self,
        command: Command,
        batches: files::Batches,
        rows_sent: Arc<AtomicU64>,
    ) -> Result<T> {
        let name = command.name();
        let descriptor = FlightDescriptor::new_cmd(command.encode());
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<
            std::result::Result<arrow::array::RecordBatch, arrow::error::ArrowError>,
        >(4);
        let reader = tokio::task::spawn_blocking(move || {
            for batch in batches {
                let failed = batch.is_err();
                if let Ok(batch) = &batch {
                    rows_sent.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                }
                if sender.blocking_send(batch).is_err() || failed {
                    break;
                }
            }
        });
        // The first batch is read before anything is sent: a file that cannot be read at
        // all, or has no rows, is a local error the scheduler never sees.
        let first = match receiver.recv().await {
            Some(Ok(batch)) => batch,
            Some(Err(e)) => {
                return Err(ClientError::Data(format!(
                    "cannot read the data: {e}; nothing was stored"
                )));
            }
            None => {
                return Err(ClientError::Data(
                    "the data has no rows; nothing was stored".into(),
                ));
            }
        };
        // The first read error after it, kept here; the data stream ends at it.
        let failure: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
        let rest = futures::stream::unfold(
            (receiver, failure.clone()),
            |(mut receiver, failure)| async move {
                match receiver.recv().await {
                    Some(Ok(batch)) => Some((Ok(batch), (receiver, failure))),
                    Some(Err(e)) => {
                        if let Ok(mut slot) = failure.lock() {
                            *slot = Some(e.to_string());
                        }
                        None
                    }
                    None => None,
                }
            },
        );
        let batches = futures::stream::once(async move { Ok(first) }).chain(rest);
        let abort = {
            let failure = failure.clone();
            let descriptor = descriptor.clone();
            futures::stream::once(async move {
                let reason = failure.lock().ok().and_then(|slot| slot.clone());
                reason.map(|reason| arrow_flight::FlightData {
                    flight_descriptor: Some(descriptor),
                    app_metadata: UploadControl::Abort { reason }.encode().into(),
                    ..Default::default()
                })
            })
            .filter_map(|message| async move { message.map(Ok) })
        };
        let data = FlightDataEncoderBuilder::new()
            .with_flight_descriptor(Some(descriptor))
            .build(batches)
            .chain(abort);
        let url = self.url.clone();
        let answer: Result<Vec<arrow_flight::PutResult>> = async {
            self.flight
                .do_put(data)
                .await
                .map_err(|e| ClientError::from_flight(&url, e))?
                .try_collect()
                .await
                .map_err(|e| ClientError::from_flight(&url, e))
        }
        .await;
        reader.abort();
        let local = failure.lock().ok().and_then(|slot| slot.clone());
        if let Some(local) = local {
            // The local cause is the one to show; the scheduler stored nothing.
            return Err(match answer {
                Err(_) => {
                    ClientError::Data(format!("cannot read the data: {local}; nothing was stored"))
                }
                Ok(_) => ClientError::Protocol(format!(
                    "reading the data failed ({local}), but the scheduler accepted the upload it had received; check the ingests of the table"
                )),
            });
        }
        let results = answer?;
        let [result] = results.as_slice() else {
            return Err(ClientError::Protocol(format!(
                "{name} answered {} results, expected one",
                results.len()
            )));
        };
        serde_json::from_slice(&result.app_metadata)
            .map_err(|e| ClientError::Protocol(format!("{name} answer does not decode: {e}")))
    }

    pub async fn list_jobs(&mut self, request: ListJobsRequest) -> Result<ListJobsResponse> {
        self.action(&Action::ListJobs(request)).await
    }

    pub async fn job(&mut self, job_id: JobId) -> Result<JobInfo> {
        self.action(&Action::GetJob(JobRequest { job_id })).await
    }

    pub async fn cancel_job(&mut self, job_id: JobId) -> Result<JobInfo> {
        self.action(&Action::CancelJob(JobRequest { job_id })).await
    }

    pub async fn retry_job(&mut self, job_id: JobId) -> Result<JobInfo> {
        self.action(&Action::RetryJob(JobRequest { job_id })).await
    }

    pub async fn get_online(&mut self, request: GetOnlineRequest) -> Result<GetOnlineResponse> {
        self.action(&Action::GetOnline(request)).await
    }

    /// The feature tables of one workspace, or of all, with their Arrow schemas
    /// (ListFlights).
    pub async fn list_tables(
        &mut self,
        workspace: Option<WorkspaceName>,
    ) -> Result<Vec<(TableListing, arrow_schema::Schema)>> {
        let criteria = serde_json::to_vec(&ListTablesCriteria { workspace })
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let url = self.url.clone();
        let infos: Vec<FlightInfo> = self
            .flight
            .list_flights(criteria)
            .await
            .map_err(|e| ClientError::from_flight(&url, e))?
            .try_collect()
            .await
            .map_err(|e| ClientError::from_flight(&url, e))?;
        infos
            .into_iter()
            .map(|info| {
                let listing: TableListing = serde_json::from_slice(&info.app_metadata)
                    .map_err(|e| ClientError::Protocol(format!("table listing: {e}")))?;
                let schema = info
                    .try_decode_schema()
                    .map_err(|e| ClientError::Protocol(format!("table schema: {e}")))?;
                Ok((listing, schema))
            })
            .collect()
    }
}
