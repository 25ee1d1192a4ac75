//! The Ballista cluster ftab's jobs run on, embedded in the scheduler process.
//!
//! `ftab-scheduler` runs a Ballista scheduler in process and, in standalone mode (the
//! default), one in-process executor too, so one machine needs nothing else; in a cluster
//! the same scheduler serves `ftab-executor` processes. Jobs are submitted as physical
//! plans built by [`ftab_engine::plan`]; Ballista cuts them into stages at their shuffles and
//! runs the tasks on executors, which read and write the object store and the online store
//! directly. What comes back to the scheduler is a job's final stage: small summaries for
//! ingest jobs, the rows of a training set (streamed to the Flight client).
//!
//! The executor's work directory (shuffle files, job results) is `<data-dir>/ballista`,
//! emptied at start.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ballista_core::client::BallistaClient;
use ballista_core::extension::{SessionConfigExt, SessionConfigHelperExt};
use ballista_core::serde::protobuf::{PartitionLocation, job_status};
use ballista_core::serde::scheduler::PartitionId;
use ballista_core::serde::{BallistaCodec, BallistaLogicalExtensionCodec};
use ballista_core::utils::{GrpcServerConfig, create_grpc_server};
use ballista_core::{ConfigProducer, JobId};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig as BallistaSchedulerConfig;
use ballista_scheduler::metrics::default_metrics_collector;
use ballista_scheduler::scheduler_server::{SchedulerServer, SessionBuilder};
use datafusion::arrow::array::RecordBatch;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::{SendableRecordBatchStream, SessionStateBuilder};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
use futures::TryStreamExt;
use tokio::net::TcpListener;

use ftab_engine::codec::physical_codec;
use ftab_engine::online::{OnlineStore, OnlineStoreHandle};
use ftab_engine::plan::Planner;

use crate::error::{Error, Result};

type Server = SchedulerServer<LogicalPlanNode, PhysicalPlanNode>;

/// The session all of ftab's jobs run in (Ballista creates a context from it per job).
const SESSION_ID: &str = "ftab";

use ftab_engine::executor::MAX_MESSAGE_BYTES;

/// How the embedded cluster is set up.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// Tasks run at once, and partitions of every shuffle.
    pub parallelism: usize,
    /// The executor's work directory.
    pub work_dir: PathBuf,
    /// How long the results of a finished job stay fetchable.
    pub result_retention: Duration,
    /// Memory the jobs' runtime may use before sorts spill (it sizes sorts' merge reserve).
    pub memory_limit: u64,
    /// Which as-of join training sets use.
    pub join: ftab_engine::plan::JoinChoice,
    /// Cluster mode: serve Ballista's scheduler gRPC here for `ftab-executor` processes and
    /// run no executor in this process. `None`: standalone.
    pub cluster_addr: Option<std::net::SocketAddr>,
    /// How long an executor may be silent before its tasks run elsewhere.
    pub executor_timeout: Duration,
}

/// The embedded Ballista scheduler and its in-process executor.
#[derive(Clone)]
pub struct Cluster {
    server: Server,
    config: SessionConfig,
    planner: Planner,
    /// The in-process executor's id and work directory: its job results are read from
    /// disk rather than over gRPC. `None` in cluster mode.
    local: Option<Arc<(String, PathBuf)>>,
    /// Where Ballista's scheduler gRPC listens.
    ballista_addr: std::net::SocketAddr,
    /// Whether executors reach the online store themselves (Aerospike).
    online_networked: bool,
}

impl Cluster {
    /// Start a Ballista scheduler in this process and, in standalone mode, one executor
    /// beside it.
    pub async fn start(
        settings: ClusterSettings,
        runtime: Arc<RuntimeEnv>,
        online: Arc<dyn OnlineStore>,
    ) -> Result<Self> {
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            Error::FailedPrecondition(format!("cannot start the embedded Ballista {what}: {e}"))
        };
        let online_networked = online.is_networked();
        let config = ftab_engine::plan::session_config(settings.parallelism, settings.memory_limit)
            .with_extension(Arc::new(OnlineStoreHandle(online)))
            .with_ballista_physical_extension_codec(physical_codec())
            .upgrade_for_ballista()
            .ballista_restricted_configuration();
        // In standalone, shuffle files stay on this machine: compressing them costs more
        // CPU than it saves (measured in docs/benchmarks.md). In a cluster they cross the
        // network and keep Ballista's default (lz4).
        let config = if settings.cluster_addr.is_none() {
            config.set_str("ballista.shuffle.compression.codec", "none")
        } else {
            config
        };
        let planner = Planner::new(config.clone(), runtime.clone()).with_join(settings.join);

        let session_runtime = runtime.clone();
        let session_builder: SessionBuilder = Arc::new(move |config: SessionConfig| {
            Ok(SessionStateBuilder::new()
                .with_config(config)
                .with_runtime_env(session_runtime.clone())
                .with_default_features()
                .build())
        });
        let producer_config = config.clone();
        let config_producer: ConfigProducer = Arc::new(move || producer_config.clone());
        let codec = BallistaCodec::new(
            Arc::new(BallistaLogicalExtensionCodec::default()),
            physical_codec(),
        );
        let mut ballista_config = BallistaSchedulerConfig::default()
            .with_scheduler_policy(ballista_core::config::TaskSchedulingPolicy::PullStaged)
            .with_finished_job_data_clean_up_interval_seconds(
                settings.result_retention.as_secs().max(1),
            )
            .with_finished_job_state_clean_up_interval_seconds(
                settings.result_retention.as_secs().max(1) + 600,
            );
        // An executor is taken for dead after the timeout (Ballista's default is 180 s):
        // its running tasks and the shuffle output it held are run again elsewhere.
        ballista_config.executor_timeout_seconds = settings.executor_timeout.as_secs();
        ballista_config.expire_dead_executor_interval_seconds = 2;
        let ballista_config = ballista_config
            .with_no_executors_grace_period_seconds(settings.executor_timeout.as_secs());
        let cluster = BallistaCluster::new_memory(
            "localhost:50050",
            session_builder,
            config_producer.clone(),
        );
        let metrics = default_metrics_collector().map_err(|e| failed("scheduler", &e))?;
        let mut server: Server = SchedulerServer::new(
            "localhost:50050".to_owned(),
            cluster,
            codec.clone(),
            Arc::new(ballista_config),
            metrics,
        );
        server.init().await.map_err(|e| failed("scheduler", &e))?;
        let grpc = ballista_core::serde::protobuf::scheduler_grpc_server::SchedulerGrpcServer::new(
            server.clone(),
        )
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let bind = settings
            .cluster_addr
            .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
        let listener = TcpListener::bind(bind).await.map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
                "; is another ftab-scheduler running? Pass another --cluster-addr (port 0 picks a free one)"
            } else {
                ""
            };
            Error::FailedPrecondition(format!(
                "cannot serve Ballista's scheduler on {bind}: {e}{hint}"
            ))
        })?;
        let scheduler_addr = listener.local_addr().map_err(|e| failed("scheduler", &e))?;
        tokio::spawn(
            create_grpc_server(&GrpcServerConfig::default())
                .add_service(grpc)
                .serve_with_incoming(crate::incoming(listener)),
        );
        if settings.cluster_addr.is_some() {
            tokio::spawn(log_executors(server.clone()));
            tracing::info!(
                %scheduler_addr,
                partitions = settings.parallelism,
                "Ballista scheduler serving ftab-executors (cluster mode)"
            );
            return Ok(Self {
                server,
                config,
                planner,
                local: None,
                ballista_addr: scheduler_addr,
                online_networked,
            });
        }

        // The executor, with its work directory under the data directory.
        let work_dir = settings.work_dir;
        if work_dir.exists() {
            std::fs::remove_dir_all(&work_dir).map_err(|e| failed("executor", &e))?;
        }
        let executor = ftab_engine::executor::start(ftab_engine::executor::ExecutorSettings {
            scheduler: scheduler_addr.to_string(),
            bind: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            grpc_port: 0,
            external_host: "127.0.0.1".into(),
            tasks: settings.parallelism,
            work_dir,
            config: config.clone(),
            runtime,
        })
        .await
        .map_err(|e| failed("executor", &e))?;
        let executor_port = executor.flight_port;
        tokio::spawn(async move {
            match executor.pull_loop.await {
                Ok(Err(e)) => tracing::error!("the embedded Ballista executor stopped: {e}"),
                Err(e) => tracing::error!("the embedded Ballista executor stopped: {e}"),
                Ok(Ok(())) => {}
            }
        });
        tracing::info!(
            %scheduler_addr,
            executor_port,
            parallelism = settings.parallelism,
            "embedded Ballista scheduler and executor started"
        );
        Ok(Self {
            server,
            config,
            planner,
            local: Some(Arc::new((executor.id, executor.work_dir))),
            ballista_addr: scheduler_addr,
            online_networked,
        })
    }

    /// Where Ballista's scheduler gRPC listens (executors register there).
    pub fn ballista_addr(&self) -> std::net::SocketAddr {
        self.ballista_addr
    }

    /// How many executors are registered.
    pub async fn executors(&self) -> usize {
        self.server
            .state
            .executor_manager
            .get_executors_state()
            .await
            .map(|state| state.len())
            .unwrap_or(0)
    }

    /// Whether this process runs no executor of its own (cluster mode).
    pub fn is_distributed(&self) -> bool {
        self.local.is_none()
    }

    /// Whether online loads run in this process: in cluster mode with a store that lives
    /// here (the embedded one), which executors cannot reach.
    pub fn loads_online_here(&self) -> bool {
        self.is_distributed() && !self.online_networked
    }

    /// Run a plan in this process, outside Ballista, and collect its (small) output: for
    /// the online load in cluster mode, whose store (the embedded one) lives here.
    pub async fn collect_here(&self, plan: Arc<dyn ExecutionPlan>) -> Result<Vec<RecordBatch>> {
        let context = self.planner.ctx().task_ctx();
        datafusion::physical_plan::collect(plan, context)
            .await
            .map_err(|e| job_failure(&e.to_string()))
    }

    /// The planner jobs build their plans with.
    pub fn planner(&self) -> &Planner {
        &self.planner
    }

    /// Submit a physical plan; the job runs in the background.
    pub async fn submit(&self, name: &str, plan: Arc<dyn ExecutionPlan>) -> Result<BallistaJob> {
        let ctx: Arc<SessionContext> = self
            .server
            .state
            .session_manager
            .create_or_update_session(SESSION_ID, &self.config)
            .await
            .map_err(|e| Error::Internal(format!("cannot open a Ballista session: {e}")))?;
        let partitions =
            datafusion::physical_plan::ExecutionPlanProperties::output_partitioning(&plan)
                .partition_count();
        let job_id = self
            .server
            .submit_physical_plan(name, ctx, plan, None)
            .await
            .map_err(|e| Error::Internal(format!("cannot submit {name} to Ballista: {e}")))?;
        tracing::debug!(%job_id, name, "Ballista job submitted");
        Ok(BallistaJob {
            server: self.server.clone(),
            job_id,
            name: name.to_string(),
            partitions,
            local: self.local.clone(),
        })
    }
}

/// Log each change of the executors registered with the scheduler (cluster mode), so an
/// operator sees them join and leave: `executors changed registered=2 ...`.
async fn log_executors(server: Server) {
    let mut last: Option<Vec<String>> = None;
    loop {
        if let Ok(state) = server.state.executor_manager.get_executors_state().await {
            let mut ids: Vec<String> = state
                .iter()
                .map(|(meta, _, _)| format!("{}@{}:{}", meta.id, meta.host, meta.port))
                .collect();
            ids.sort();
            if last.as_ref() != Some(&ids) {
                tracing::info!(registered = ids.len(), executors = ?ids, "executors changed");
                last = Some(ids);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// How far a Ballista job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    pub stages_done: usize,
    pub stages: usize,
}

/// One submitted Ballista job.
#[derive(Clone)]
pub struct BallistaJob {
    server: Server,
    job_id: JobId,
    name: String,
    partitions: usize,
    local: Option<Arc<(String, PathBuf)>>,
}

/// One output partition of a finished job: a file of this process's executor, or a stream
/// from a remote one.
pub enum PartitionData {
    /// An Arrow IPC stream file.
    File(PathBuf),
    Stream(SendableRecordBatchStream),
}

/// Where each output partition of a finished job is, by partition number.
pub type Locations = BTreeMap<usize, PartitionLocation>;

impl BallistaJob {
    /// Output partitions of the plan.
    pub fn partitions(&self) -> usize {
        self.partitions
    }

    async fn progress(&self) -> Option<Progress> {
        let jobs = self.server.state.task_manager.get_running_job_cache();
        let job = jobs.get(&self.job_id)?;
        let graph = job.execution_graph.read().await;
        Some(Progress {
            stages_done: graph.completed_stages(),
            stages: graph.stage_count(),
        })
    }

    /// Wait for the job to end; `on_progress` hears of each change. Returns where the
    /// output partitions are.
    pub async fn wait(&self, mut on_progress: impl FnMut(Progress)) -> Result<Locations> {
        let mut last = None;
        loop {
            let status = self
                .server
                .state
                .task_manager
                .get_job_status(&self.job_id)
                .await
                .map_err(|e| {
                    Error::Internal(format!("cannot read the status of {}: {e}", self.name))
                })?;
            match status.and_then(|s| s.status) {
                Some(job_status::Status::Successful(done)) => {
                    let mut locations = Locations::new();
                    for location in done.partition_location {
                        let partition = location
                            .partition_id
                            .as_ref()
                            .map(|p| p.partition_id as usize)
                            .ok_or_else(|| {
                                Error::Internal("a result partition has no id".into())
                            })?;
                        locations.insert(partition, location);
                    }
                    return Ok(locations);
                }
                Some(job_status::Status::Failed(failed)) => {
                    return Err(job_failure(&failed.error));
                }
                Some(_) => {
                    if let Some(progress) = self.progress().await
                        && last != Some(progress)
                    {
                        last = Some(progress);
                        on_progress(progress);
                    }
                }
                None => {
                    // Queued and not planned yet, or forgotten after its retention.
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Cancel the job: Ballista stops scheduling its tasks and asks the executors to stop
    /// the running ones (their `CancelTasks` service, `ftab_engine::executor`). Repeated
    /// until the job's state is final, since a cancel that arrives while the job is still
    /// being planned is not seen by Ballista.
    pub async fn cancel(&self) {
        for _ in 0..40 {
            if let Err(e) = self.server.cancel_job(self.job_id.clone()).await {
                tracing::warn!(job = %self.job_id, "cannot cancel a Ballista job: {e}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            let status = self
                .server
                .state
                .task_manager
                .get_job_status(&self.job_id)
                .await;
            if let Ok(Some(status)) = status
                && matches!(
                    status.status,
                    Some(job_status::Status::Failed(_) | job_status::Status::Successful(_))
                )
            {
                return;
            }
        }
        tracing::warn!(job = %self.job_id, "the Ballista job did not end within 10 s of its cancellation");
    }

    /// Remove the job's results from the executors now rather than after the retention.
    pub fn clean(&self) {
        self.server
            .state
            .executor_manager
            .clean_up_job_data(self.job_id.clone());
    }

    /// Stream one output partition from the executor holding it, batch by batch.
    pub async fn fetch(location: &PartitionLocation) -> Result<SendableRecordBatchStream> {
        let lost = |e: &dyn std::fmt::Display| {
            Error::Internal(format!("cannot fetch a result partition: {e}"))
        };
        let executor = location
            .executor_meta
            .as_ref()
            .ok_or_else(|| lost(&"no executor named"))?;
        let partition: PartitionId = location
            .partition_id
            .clone()
            .ok_or_else(|| lost(&"no partition id"))?
            .into();
        let mut client = BallistaClient::try_new(
            &executor.host,
            executor.port as u16,
            MAX_MESSAGE_BYTES,
            false,
            None,
            3,
            250,
            0,
            0,
        )
        .await
        .map_err(|e| lost(&e))?;
        client
            .fetch_partition(
                &executor.id,
                &partition,
                location.file_id,
                location.layout(),
                false,
            )
            .await
            .map_err(|e| lost(&e))
    }

    /// One output partition: the file itself when the in-process executor holds it,
    /// else a stream from the executor that does.
    pub async fn open(&self, location: &PartitionLocation) -> Result<PartitionData> {
        if let (Some(local), Some(executor), Some(partition)) = (
            &self.local,
            location.executor_meta.as_ref(),
            location.partition_id.as_ref(),
        ) && executor.id == local.0
        {
            let path = ballista_core::execution_plans::create_shuffle_path(
                &local.1,
                &self.job_id,
                partition.stage_id as usize,
                partition.partition_id as usize,
                location.file_id,
                location.is_sort_shuffle,
            )
            .map_err(|e| Error::Internal(format!("result partition path: {e}")))?;
            if path.exists() {
                return Ok(PartitionData::File(path));
            }
        }
        Ok(PartitionData::Stream(Self::fetch(location).await?))
    }

    /// Wait for the job and read every output partition into memory: for jobs whose
    /// output is small (summaries), never for training sets.
    pub async fn collect(&self, on_progress: impl FnMut(Progress)) -> Result<Vec<RecordBatch>> {
        let locations = self.wait(on_progress).await?;
        let mut batches = Vec::new();
        for location in locations.values() {
            let stream = Self::fetch(location).await?;
            let mut partition: Vec<RecordBatch> = stream
                .try_collect()
                .await
                .map_err(|e| Error::Internal(format!("cannot read a result partition: {e}")))?;
            batches.append(&mut partition);
        }
        self.clean();
        Ok(batches)
    }
}

/// Why a Ballista job failed, classed: running out of memory is `ResourcesExhausted` and
/// says which setting to change (it is not a bug, so not `INTERNAL`); the rest is
/// `JobFailed`.
pub fn job_failure(raw: &str) -> Error {
    let message = clean_error(raw);
    // The error's variant as Ballista writes it (`ResourcesExhausted("...")`, or
    // DataFusion's display `Resources exhausted: ...`), not any mention in quoted data.
    if raw.contains("ResourcesExhausted(\"") || raw.contains("Resources exhausted: ") {
        let hint = if message.contains("memory_limit") {
            ""
        } else {
            "; the job ran out of memory: raise the scheduler's memory_limit (--memory-limit, FTAB_MEMORY_LIMIT) or lower its parallelism"
        };
        Error::ResourcesExhausted(format!("{message}{hint}"))
    } else {
        Error::JobFailed(message)
    }
}

/// Ballista and DataFusion wrap task errors in layers of debug formatting
/// (`DataFusionError(Context("...", ResourcesExhausted("...")))`); keep the first message a
/// person can act on.
pub fn clean_error(error: &str) -> String {
    let error = error.trim();
    let Some(start) = error.find("(\"") else {
        return error.to_string();
    };
    let inner = &error[start + 2..];
    // The message ends at the first quote that is not escaped.
    let mut end = inner.len();
    let mut escaped = false;
    for (i, c) in inner.char_indices() {
        match c {
            '\\' if !escaped => escaped = true,
            '"' if !escaped => {
                end = i;
                break;
            }
            _ => escaped = false,
        }
    }
    inner[..end]
        .replace("\\\"", "\"")
        .replace("\\n", " ")
        .replace("\\'", "'")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ballista_errors_are_unwrapped() {
        let raw = "Task 3 failed: ExecutionError(DataFusionError(Execution(\"the spine's time column `ts` has null values\")))";
        assert_eq!(
            clean_error(raw),
            "the spine's time column `ts` has null values"
        );
        let raw = r#"DataFusionError(Context("Not enough memory to continue external sort. Consider increasing \"memory\".", ResourcesExhausted("Additional allocation failed")))"#;
        assert_eq!(
            clean_error(raw),
            "Not enough memory to continue external sort. Consider increasing \"memory\"."
        );
        assert_eq!(clean_error("plain message"), "plain message");
    }

    #[test]
    fn running_out_of_memory_is_resources_exhausted_and_names_the_setting() {
        let sort = r#"DataFusionError(Context("Not enough memory to continue external sort. Consider increasing \"memory\".", ResourcesExhausted("Additional allocation failed")))"#;
        let Error::ResourcesExhausted(message) = job_failure(sort) else {
            panic!("not classed as out of memory");
        };
        assert!(
            message.contains("memory_limit (--memory-limit, FTAB_MEMORY_LIMIT)"),
            "{message}"
        );
        let status: tonic::Status = job_failure(sort).into();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);

        // A message that names the setting already is kept as it is.
        let join = r#"ExecutionError(DataFusionError(ResourcesExhausted("as-of join with `t`: raise the scheduler's memory_limit")))"#;
        let Error::ResourcesExhausted(message) = job_failure(join) else {
            panic!("not classed as out of memory");
        };
        assert_eq!(
            message,
            "as-of join with `t`: raise the scheduler's memory_limit"
        );

        let other = "ExecutionError(DataFusionError(Execution(\"bad\")))";
        assert!(matches!(job_failure(other), Error::JobFailed(m) if m == "bad"));
    }
}
