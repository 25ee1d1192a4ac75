//! A Ballista executor that runs ftab's tasks: the one `ftab-scheduler` runs in its own
//! process in standalone mode, and the one each `ftab-executor` process runs in a cluster.
//!
//! It pulls tasks from the scheduler (`poll_work`, which is also its heartbeat and its
//! registration: a restarted scheduler learns of it at the next poll), decodes them with
//! ftab's codec, runs them in ftab's runtime ([`crate::runtime`]) and serves its shuffle
//! files and job results over Flight. Beside Ballista's pull loop it serves the executor
//! gRPC service for one call, `CancelTasks`, so cancelling a job stops its running tasks
//! (Ballista's own pull-mode executor serves no such service and lets them run to the end).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use ballista_core::serde::BallistaCodec;
use ballista_core::serde::protobuf::executor_grpc_server::{ExecutorGrpc, ExecutorGrpcServer};
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use ballista_core::serde::protobuf::{
    CancelTasksParams, CancelTasksResult, ExecutorRegistration, LaunchMultiTaskParams,
    LaunchMultiTaskResult, LaunchTaskParams, LaunchTaskResult, RemoveJobDataParams,
    RemoveJobDataResult, StopExecutorParams, StopExecutorResult,
};
use ballista_core::serde::scheduler::{
    ExecutorOperatingSystemSpecification, ExecutorSpecification,
};
use ballista_core::utils::{GrpcServerConfig, create_grpc_server};
use ballista_core::{BALLISTA_PROTOCOL_VERSION, ConfigProducer, RuntimeProducer};
use ballista_executor::execution_loop;
use ballista_executor::executor::Executor;
use ballista_executor::flight_service::BallistaFlightService;
use ballista_executor::metrics::LoggingMetricsCollector;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::SessionConfig;
use tokio::net::TcpListener;

/// Largest gRPC message between the scheduler and executors (plans, statuses) and of
/// Flight messages; the scheduler uses the same.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// How one executor is set up.
#[derive(Clone)]
pub struct ExecutorSettings {
    /// The scheduler's gRPC address, `host:port`.
    pub scheduler: String,
    /// Address to bind the Flight and gRPC services to (port 0 picks free ports).
    pub bind: SocketAddr,
    /// Port for the executor gRPC service (cancellations); 0 picks a free one.
    pub grpc_port: u16,
    /// Host name the scheduler and other executors reach this one by.
    pub external_host: String,
    /// Tasks run at once.
    pub tasks: usize,
    /// Shuffle files and job results.
    pub work_dir: PathBuf,
    /// The session config tasks start from (the scheduler's settings are applied on top).
    pub config: SessionConfig,
    /// The runtime every task runs in.
    pub runtime: Arc<RuntimeEnv>,
}

/// A started executor.
pub struct StartedExecutor {
    pub id: String,
    pub work_dir: PathBuf,
    /// The Flight port shuffle data and results are fetched from.
    pub flight_port: u16,
    /// Ends when the pull loop stops (it only stops on an internal error).
    pub pull_loop: tokio::task::JoinHandle<Result<(), String>>,
}

/// Bind the executor's services, then start pulling tasks from the scheduler. Polls that
/// fail are retried, so executors may start before their scheduler and outlive its
/// restarts.
pub async fn start(settings: ExecutorSettings) -> Result<StartedExecutor, String> {
    let scheduler = connect(&settings.scheduler)?;
    let bind = |addr: SocketAddr, what: &'static str| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot bind the executor's {what} service on {addr}: {e}"))
    };
    let flight = bind(settings.bind, "Flight").await?;
    let flight_port = local_port(&flight)?;
    let grpc = bind(
        SocketAddr::new(settings.bind.ip(), settings.grpc_port),
        "gRPC",
    )
    .await?;
    let grpc_port = local_port(&grpc)?;

    std::fs::create_dir_all(&settings.work_dir).map_err(|e| {
        format!(
            "cannot create the work directory {}: {e}",
            settings.work_dir.display()
        )
    })?;
    let work_dir = settings.work_dir.to_string_lossy().into_owned();
    let id = ballista_core::ids::new_instance_id();
    let registration = ExecutorRegistration {
        id: id.clone(),
        host: Some(settings.external_host.clone()),
        port: flight_port as u32,
        grpc_port: grpc_port as u32,
        specification: Some(
            ExecutorSpecification::default()
                .with_vcores(settings.tasks as u32)
                .into(),
        ),
        os_info: Some(ExecutorOperatingSystemSpecification::default().into()),
        ballista_protocol_version: BALLISTA_PROTOCOL_VERSION,
    };
    let runtime = settings.runtime.clone();
    let runtime_producer: RuntimeProducer = Arc::new(move |_| Ok(runtime.clone()));
    let config = settings.config.clone();
    let config_producer: ConfigProducer = Arc::new(move || config.clone());
    let state = datafusion::execution::SessionStateBuilder::new()
        .with_config(settings.config.clone())
        .with_runtime_env(settings.runtime.clone())
        .with_default_features()
        .build();
    let executor = Arc::new(Executor::with_default_execution_engine(
        registration,
        &work_dir,
        runtime_producer,
        config_producer,
        Arc::new((&state).into()),
        Arc::new(LoggingMetricsCollector::default()),
        settings.tasks,
    ));

    let flight_service = FlightServiceServer::new(BallistaFlightService::new(work_dir))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    tokio::spawn(
        create_grpc_server(&GrpcServerConfig::default())
            .add_service(flight_service)
            .serve_with_incoming(nodelay(flight)),
    );
    let cancel_service = ExecutorGrpcServer::new(CancelTasks(executor.clone()));
    tokio::spawn(
        create_grpc_server(&GrpcServerConfig::default())
            .add_service(cancel_service)
            .serve_with_incoming(nodelay(grpc)),
    );

    let codec: BallistaCodec<
        datafusion_proto::protobuf::LogicalPlanNode,
        datafusion_proto::protobuf::PhysicalPlanNode,
    > = BallistaCodec::new(
        Arc::new(ballista_core::serde::BallistaLogicalExtensionCodec::default()),
        crate::codec::physical_codec(),
    );
    let pull_loop = tokio::spawn(async move {
        execution_loop::poll_loop(
            scheduler,
            executor,
            codec,
            None,
            None,
            ballista_executor::health::ExecutorHealth::new(),
        )
        .await
        .map_err(|e| e.to_string())
    });
    Ok(StartedExecutor {
        id,
        work_dir: settings.work_dir,
        flight_port,
        pull_loop,
    })
}

fn local_port(listener: &TcpListener) -> Result<u16, String> {
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("cannot read a bound address: {e}"))
}

/// A client of the scheduler's gRPC service. The connection is made lazily and remade
/// after a failure, so a scheduler that starts later or restarts is found again.
fn connect(scheduler: &str) -> Result<SchedulerGrpcClient<tonic::transport::Channel>, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{scheduler}"))
        .map_err(|e| format!("`{scheduler}` is not a usable scheduler address: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true);
    Ok(SchedulerGrpcClient::new(endpoint.connect_lazy())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES))
}

/// The connections a listener accepts, with TCP_NODELAY set: without it a reply written in
/// more than one piece waits for the client's delayed ACK (Nagle), and control-plane calls
/// from one client took 40+ ms instead of about 2 (docs/benchmarks.md). Every gRPC service
/// of ftab's processes serves through this.
pub fn nodelay(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        if let Ok(stream) = &accepted
            && let Err(e) = stream.set_nodelay(true)
        {
            tracing::warn!("cannot set TCP_NODELAY on a connection: {e}");
        }
        accepted
    })
}

/// The executor gRPC service of a pull-mode executor: it answers cancellations (the
/// scheduler sends them when a job is cancelled or a stage rolled back) and nothing else.
struct CancelTasks(Arc<Executor>);

#[tonic::async_trait]
impl ExecutorGrpc for CancelTasks {
    async fn cancel_tasks(
        &self,
        request: tonic::Request<CancelTasksParams>,
    ) -> Result<tonic::Response<CancelTasksResult>, tonic::Status> {
        let mut cancelled = true;
        for task in request.into_inner().task_infos {
            match self
                .0
                .cancel_task(
                    task.job_id.clone().into(),
                    task.stage_id as usize,
                    task.task_id as usize,
                )
                .await
            {
                Ok(found) => {
                    tracing::info!(job = %task.job_id, stage = task.stage_id, task = task.task_id, found, "task cancelled");
                    cancelled &= found;
                }
                Err(e) => {
                    tracing::warn!(job = %task.job_id, "cannot cancel a task: {e}");
                    cancelled = false;
                }
            }
        }
        Ok(tonic::Response::new(CancelTasksResult { cancelled }))
    }

    async fn stop_executor(
        &self,
        _request: tonic::Request<StopExecutorParams>,
    ) -> Result<tonic::Response<StopExecutorResult>, tonic::Status> {
        // Sent to executors the scheduler considers dead; a live one polls again and is
        // registered anew.
        tracing::warn!("the scheduler considered this executor dead");
        Ok(tonic::Response::new(StopExecutorResult {}))
    }

    async fn remove_job_data(
        &self,
        _request: tonic::Request<RemoveJobDataParams>,
    ) -> Result<tonic::Response<RemoveJobDataResult>, tonic::Status> {
        // Pull mode removes job data through the poll loop's `jobs_to_clean`.
        Ok(tonic::Response::new(RemoveJobDataResult {}))
    }

    async fn launch_task(
        &self,
        _request: tonic::Request<LaunchTaskParams>,
    ) -> Result<tonic::Response<LaunchTaskResult>, tonic::Status> {
        Err(tonic::Status::unimplemented(
            "ftab executors pull their tasks; the scheduler must use pull scheduling",
        ))
    }

    async fn launch_multi_task(
        &self,
        _request: tonic::Request<LaunchMultiTaskParams>,
    ) -> Result<tonic::Response<LaunchMultiTaskResult>, tonic::Status> {
        Err(tonic::Status::unimplemented(
            "ftab executors pull their tasks; the scheduler must use pull scheduling",
        ))
    }
}
