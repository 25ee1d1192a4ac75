//! The Flight service: decodes requests, hands them to the services that decide, and
//! encodes their answers. Nothing here decides anything.

use std::pin::Pin;

use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::Stream;
use futures::stream::{self, BoxStream, StreamExt};
use serde::Serialize;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use futures::TryStreamExt;

use arrow_flight::encode::FlightDataEncoderBuilder;
use ftab_model::protocol::{
    self, ACTION_TYPES, Command, ListTablesCriteria, TrainingSetRequest, TrainingSetTicket,
};

use crate::cluster::PartitionData;
use crate::error::Error;
use crate::ingest::Ingests;
use crate::jobs::Jobs;
use crate::online::OnlineReads;
use crate::training_sets::{Started, TrainingSets};
use crate::workspaces::Workspaces;

type FlightStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

pub use protocol::MAX_MESSAGE_BYTES;

#[derive(Clone)]
pub struct FlightHandler {
    workspaces: Workspaces,
    ingests: Ingests,
    jobs: Jobs,
    online: OnlineReads,
    training_sets: TrainingSets,
}

impl FlightHandler {
    pub fn new(
        workspaces: Workspaces,
        ingests: Ingests,
        jobs: Jobs,
        online: OnlineReads,
        training_sets: TrainingSets,
    ) -> Self {
        Self {
            workspaces,
            ingests,
            jobs,
            online,
            training_sets,
        }
    }

    pub fn into_server(self) -> FlightServiceServer<Self> {
        FlightServiceServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    async fn run_action(&self, action: protocol::Action) -> Result<Vec<u8>, Error> {
        use protocol::Action as A;
        match action {
            A::Plan(request) => json(&self.workspaces.plan(request).await?),
            A::Apply(request) => json(&self.workspaces.apply(request).await?),
            A::CreateWorkspace(request) => json(&self.workspaces.create(request).await?),
            A::ListWorkspaces(_) => json(&self.workspaces.list().await?),
            A::DescribeTable(request) => json(&self.workspaces.describe_table(request).await?),
            A::ListJobs(request) => json(&self.jobs.list(request).await?),
            A::GetJob(request) => json(&self.jobs.get(&request.job_id).await?),
            A::CancelJob(request) => json(&self.jobs.cancel(&request.job_id).await?),
            A::RetryJob(request) => json(&self.jobs.retry(&request.job_id).await?),
            A::GetOnline(request) => json(&self.online.get(request).await?),
            A::Ingest(command) => json(&self.ingests.ingest_uri(command).await?),
            A::ServingDefinitions(_) => json(&self.online.serving_definitions().await?),
        }
    }
}

fn json<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(value).map_err(|e| Error::Internal(format!("cannot encode answer: {e}")))
}

fn unsupported<T>(call: &str) -> Result<T, Status> {
    Err(Error::Unsupported(call.to_string()).into())
}

fn decode_command(descriptor: &FlightDescriptor) -> Result<Command, Error> {
    if descriptor.r#type() == arrow_flight::flight_descriptor::DescriptorType::Path {
        let shown = ftab_model::names::echoed(&descriptor.path.join("/"));
        return Err(Error::InvalidArgument(format!(
            "a path descriptor (`{shown}`) names nothing to get or put here: ftab takes command descriptors (FlightDescriptor.for_command in pyarrow), JSON with one key, `ingest`, `spine` or `training_set`, such as {{\"ingest\": {{\"workspace\": \"prod\", \"table\": \"t\"}}}}; the path descriptors of ListFlights name tables for listing only"
        )));
    }
    Command::decode(&descriptor.cmd).map_err(|e| Error::from(ftab_model::Error::from(e)))
}

/// The FlightInfo of a started training set: its schema, one endpoint per output
/// partition (the ticket names the partition), and its metadata as JSON.
fn training_set_info(started: &Started, descriptor: FlightDescriptor) -> Result<FlightInfo, Error> {
    let mut info = FlightInfo::new()
        .try_with_schema(&started.schema)
        .map_err(|e| Error::Internal(format!("cannot encode schema: {e}")))?
        .with_descriptor(descriptor)
        .with_total_records(started.info.rows as i64)
        .with_ordered(false)
        .with_app_metadata(json(&started.info)?);
    for partition in 0..started.partitions {
        let ticket = TrainingSetTicket {
            training_set_id: started.info.training_set_id.clone(),
            partition,
        };
        info = info.with_endpoint(
            arrow_flight::FlightEndpoint::new().with_ticket(Ticket::new(json(&ticket)?)),
        );
    }
    Ok(info)
}

/// The reason a client gave for aborting its upload.
#[derive(Debug)]
struct Aborted(String);

impl std::fmt::Display for Aborted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Cap what is echoed: the reason comes from the client.
        f.write_str(&ftab_model::names::echoed_to(&self.0, 2_000))
    }
}

impl std::error::Error for Aborted {}

/// Decode the record batches that follow a command in a DoPut or DoExchange. Messages
/// without data (the first one's descriptor, metadata) are passed over, except an abort
/// ([`protocol::UploadControl`]), which fails the stream: nothing may be stored.
fn record_batches(
    first: FlightData,
    rest: Streaming<FlightData>,
) -> BoxStream<'static, Result<datafusion::arrow::array::RecordBatch, Error>> {
    let data = stream::iter([Ok(first)])
        .chain(rest.map_err(|status| FlightError::Tonic(Box::new(status))))
        .try_filter_map(|message| {
            futures::future::ready(if !message.data_header.is_empty() {
                Ok(Some(message))
            } else {
                match protocol::UploadControl::decode(&message.app_metadata) {
                    Some(protocol::UploadControl::Abort { reason }) => {
                        Err(FlightError::ExternalError(Box::new(Aborted(reason))))
                    }
                    None => Ok(None),
                }
            })
        });
    FlightRecordBatchStream::new_from_flight_data(data)
        .map_err(|e| match e {
            FlightError::Tonic(status) if status.code() == tonic::Code::Cancelled => {
                Error::InvalidArgument(
                    "the upload was cancelled by the client; nothing was stored".into(),
                )
            }
            FlightError::ExternalError(inner) if inner.is::<Aborted>() => Error::Cancelled(
                format!("the client aborted the upload: {inner}; nothing was stored"),
            ),
            other => Error::InvalidArgument(format!(
                "cannot decode the uploaded data: {other}; nothing was stored"
            )),
        })
        .boxed()
}

impl FlightHandler {
    async fn exchange(
        &self,
        mut training_set: TrainingSetRequest,
        spine: impl Stream<Item = Result<datafusion::arrow::array::RecordBatch, Error>> + Send + Unpin,
    ) -> Result<FlightStream<FlightData>, Error> {
        let name = ftab_model::names::SpineName::new(format!(
            "exchange_{}",
            uuid::Uuid::now_v7().simple()
        ))
        .map_err(|e| Error::Internal(e.to_string()))?;
        let stored = self.training_sets.store_spine(name, spine).await?;
        training_set.spine = Some(protocol::SpineSource::Name { name: stored.name });
        let started = self.training_sets.start(training_set).await?;
        let training_sets = self.training_sets.clone();
        let id = started.info.training_set_id.clone();
        let partitions = started.partitions;
        let batches = stream::iter(0..partitions)
            .then(move |partition| {
                let training_sets = training_sets.clone();
                let ticket = TrainingSetTicket {
                    training_set_id: id.clone(),
                    partition,
                };
                async move { training_sets.partition(&ticket).await }
            })
            .map_ok(|batches| batches.map_err(|e| FlightError::ExternalError(Box::new(e))))
            .map_err(|e| FlightError::Tonic(Box::new(Status::from(e))))
            .try_flatten();
        let data = FlightDataEncoderBuilder::new()
            .with_schema(started.schema.clone())
            .with_metadata(json(&started.info)?.into())
            .build(batches)
            .map_err(Status::from);
        Ok(data.boxed())
    }
}

#[tonic::async_trait]
impl FlightService for FlightHandler {
    type HandshakeStream = FlightStream<HandshakeResponse>;
    type ListFlightsStream = FlightStream<FlightInfo>;
    type DoGetStream = FlightStream<FlightData>;
    type DoPutStream = FlightStream<PutResult>;
    type DoExchangeStream = FlightStream<FlightData>;
    type DoActionStream = FlightStream<arrow_flight::Result>;
    type ListActionsStream = FlightStream<ActionType>;

    /// No authentication yet: the handshake echoes its payload so clients that always
    /// handshake work.
    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        let mut incoming = request.into_inner();
        let first = incoming.message().await?.unwrap_or_default();
        let answer = HandshakeResponse {
            protocol_version: first.protocol_version,
            payload: first.payload,
        };
        Ok(Response::new(stream::iter([Ok(answer)]).boxed()))
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let criteria = ListTablesCriteria::decode(&request.into_inner().expression)
            .map_err(Error::InvalidArgument)?;
        let tables = self.workspaces.list_tables(criteria.workspace).await?;
        let mut infos = Vec::with_capacity(tables.len());
        for (listing, schema) in tables {
            let descriptor = FlightDescriptor::new_path(vec![
                listing.workspace.to_string(),
                listing.table.to_string(),
            ]);
            let info = FlightInfo::new()
                .try_with_schema(&schema)
                .map_err(|e| Error::Internal(format!("cannot encode schema: {e}")))?
                .with_descriptor(descriptor)
                .with_app_metadata(json(&listing)?);
            infos.push(Ok(info));
        }
        Ok(Response::new(stream::iter(infos).boxed()))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let descriptor = request.into_inner();
        let command = decode_command(&descriptor)?;
        let Command::TrainingSet(training_set) = command else {
            return Err(Error::InvalidArgument(format!(
                "GetFlightInfo takes a `training_set` command, not `{}`",
                command.name()
            ))
            .into());
        };
        let span = tracing::info_span!("training_set", workspace = %training_set.workspace);
        let started = self
            .training_sets
            .start(training_set)
            .instrument(span)
            .await?;
        Ok(Response::new(training_set_info(&started, descriptor)?))
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        unsupported("PollFlightInfo")
    }

    async fn get_schema(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        unsupported("GetSchema")
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let ticket: TrainingSetTicket = serde_json::from_slice(&request.into_inner().ticket)
            .map_err(|e| {
                Error::InvalidArgument(format!(
                    "not a ticket from this server ({e}); tickets come from GetFlightInfo"
                ))
            })?;
        match self.training_sets.partition_data(&ticket).await? {
            PartitionData::File(path) => Ok(Response::new(crate::ipc_file::flight_data(path))),
            PartitionData::Stream(batches) => {
                let schema = batches.schema();
                let batches = batches.map_err(|e| FlightError::ExternalError(Box::new(e)));
                let data = FlightDataEncoderBuilder::new()
                    .with_schema(schema)
                    .build(batches)
                    .map_err(|e| Status::internal(format!("training set stream failed: {e}")));
                Ok(Response::new(data.boxed()))
            }
        }
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let mut incoming = request.into_inner();
        let first = incoming.message().await?.ok_or_else(|| {
            Error::InvalidArgument(
                "DoPut sent no messages; send a FlightDescriptor with a command, then the data"
                    .into(),
            )
        })?;
        let descriptor = first.flight_descriptor.clone().ok_or_else(|| {
            Error::InvalidArgument("the first DoPut message must carry a FlightDescriptor whose cmd is an ftab command".into())
        })?;
        let command = decode_command(&descriptor)?;
        let answer = match command {
            Command::Ingest(ingest) => {
                let span = tracing::info_span!("ingest", workspace = %ingest.workspace, table = %ingest.table);
                let result = self
                    .ingests
                    .ingest(ingest, record_batches(first, incoming))
                    .instrument(span)
                    .await?;
                json(&result)?
            }
            Command::Spine(spine) => {
                let span = tracing::info_span!("spine", spine = %spine.name);
                let result = self
                    .training_sets
                    .store_spine(spine.name, record_batches(first, incoming))
                    .instrument(span)
                    .await?;
                json(&result)?
            }
            Command::TrainingSet(_) => {
                return Err(Error::InvalidArgument(
                    "a training set is asked with GetFlightInfo (or DoExchange with the spine as data), not DoPut".into(),
                )
                .into());
            }
        };
        let answer = PutResult {
            app_metadata: answer.into(),
        };
        Ok(Response::new(stream::iter([Ok(answer)]).boxed()))
    }

    /// `{"training_set": {...}}` without a spine, then the spine's batches; answers the
    /// training set, every partition in turn, on the same stream.
    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        let mut incoming = request.into_inner();
        let first = incoming.message().await?.ok_or_else(|| {
            Error::InvalidArgument(
                "DoExchange sent no messages; send a FlightDescriptor with a training_set command, then the spine".into(),
            )
        })?;
        let descriptor = first.flight_descriptor.clone().ok_or_else(|| {
            Error::InvalidArgument("the first DoExchange message must carry a FlightDescriptor with a training_set command".into())
        })?;
        let Command::TrainingSet(training_set) = decode_command(&descriptor)? else {
            return Err(
                Error::InvalidArgument("DoExchange takes a `training_set` command".into()).into(),
            );
        };
        if training_set.spine.is_some() {
            return Err(Error::InvalidArgument(
                "in DoExchange the spine is sent as the exchange's data; leave `spine` out of the command".into(),
            )
            .into());
        }
        let span = tracing::info_span!("training_set", workspace = %training_set.workspace);
        let stream = self
            .exchange(training_set, record_batches(first, incoming))
            .instrument(span)
            .await?;
        Ok(Response::new(stream))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let Action { r#type, body } = request.into_inner();
        let action = protocol::Action::decode(&r#type, &body)
            .map_err(|e| Error::from(ftab_model::Error::from(e)))?;
        let span = tracing::info_span!("action", action = action.type_name());
        let answer = self.run_action(action).instrument(span).await?;
        let result = arrow_flight::Result {
            body: answer.into(),
        };
        let out: BoxStream<'static, Result<arrow_flight::Result, Status>> =
            stream::iter([Ok(result)]).boxed();
        Ok(Response::new(out))
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let actions = ACTION_TYPES.iter().map(|(name, description)| {
            Ok(ActionType {
                r#type: name.to_string(),
                description: description.to_string(),
            })
        });
        Ok(Response::new(
            stream::iter(actions.collect::<Vec<_>>()).boxed(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_descriptor_is_told_what_ftab_takes() {
        let status: Status = decode_command(&FlightDescriptor::new_path(vec![
            "prod".into(),
            "user_login_counts".into(),
        ]))
        .unwrap_err()
        .into();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status
                .message()
                .contains("a path descriptor (`prod/user_login_counts`)")
                && status.message().contains("FlightDescriptor.for_command"),
            "{status}"
        );
        assert!(!status.message().contains("EOF"), "{status}");
    }
}
