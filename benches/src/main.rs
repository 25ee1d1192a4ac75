//! `ftab-bench`: end-to-end benchmarks with their own data generator. Each runs a real
//! scheduler (embedded Ballista cluster, local object store, embedded online store) in this
//! process and talks to it over Flight on loopback, like any client; figures are printed as
//! a table, never asserted.
//!
//! - `ftab-bench ingest`: one ingest of N rows (string key, timestamp, five features):
//!   upload + staging, the offline commit, the online load; then every offline row read
//!   back with delta-rs and the online records of sampled keys checked.
//! - `ftab-bench training-set`: two tables of N rows each (four ingests with re-sent rows),
//!   then a training set over a spine of M rows: planning, computing, the Flight transfer;
//!   then every row checked against a point-in-time reference.
//!
//! Run release builds only: `cargo run --release -p ftab-bench -- ingest` (or
//! `training-set`); `--help` shows the sizes. Figures go to docs/benchmarks.md.

mod cluster;
mod control_plane;
mod data;
mod ingest;
mod online_load;
mod serve;
mod training_set;

use std::time::Duration;

use clap::{Parser, Subcommand};
use ftab_client::FtabClient;
use ftab_model::names::WorkspaceName;
use ftab_model::protocol::{ApplyRequest, WorkspaceKind};
use ftab_model::repository::RepositoryFile;
use ftab_scheduler::{Scheduler, SchedulerConfig};

#[derive(Debug, Parser)]
#[command(name = "ftab-bench", about = "ftab end-to-end benchmarks")]
struct Args {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// One large ingest: upload + staging, offline commit, online load.
    Ingest(ingest::IngestArgs),
    /// A point-in-time training set over two large tables.
    TrainingSet(training_set::TrainingSetArgs),
    /// Latency of control-plane calls from one client.
    ControlPlane(control_plane::ControlPlaneArgs),
    /// Latency and throughput of the feature server's HTTP API (embedded store, or
    /// Aerospike with --aerospike).
    Serve(serve::ServeArgs),
    /// The online load into Aerospike (rows/s), beside the same records written by the
    /// Aerospike client alone in parallel batches.
    OnlineLoad(online_load::OnlineLoadArgs),
    /// The training-set benchmark (its ingests included) standalone and in cluster mode
    /// (ftab-executor processes, an S3 server) on the same data, side by side.
    Cluster(cluster::ClusterArgs),
}

/// Where a benchmark's scheduler runs its jobs.
#[derive(Debug, Clone)]
pub enum Deployment {
    /// The embedded defaults: an in-process executor; the object store on the local disk,
    /// or in `bucket` of the S3 server the environment names.
    Standalone { bucket: Option<String> },
    /// Cluster mode on this machine: `ftab-executor` processes with `tasks` slots each,
    /// registered on loopback, the object store in `bucket` of the S3 server the
    /// environment names (`AWS_ENDPOINT`, set by `cluster::S3`), or on the local disk
    /// without a bucket.
    Cluster {
        executors: usize,
        tasks: usize,
        bucket: Option<String>,
    },
}

/// A scheduler running in this process, and a client of it.
pub struct Running {
    pub client: FtabClient,
    pub url: String,
    /// The feature server's HTTP API.
    pub http_url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<ftab_scheduler::Result<()>>,
    _executors: Vec<cluster::Executor>,
    _dir: tempfile::TempDir,
}

impl Running {
    /// Start a scheduler on the embedded defaults, with `parallelism` and the
    /// training-set `join` if given.
    pub async fn start(
        parallelism: Option<usize>,
        join: Option<ftab_engine::plan::JoinChoice>,
    ) -> anyhow::Result<Self> {
        Self::start_as(&Deployment::Standalone { bucket: None }, parallelism, join).await
    }

    /// Start a scheduler deployed as `deployment`.
    pub async fn start_as(
        deployment: &Deployment,
        parallelism: Option<usize>,
        join: Option<ftab_engine::plan::JoinChoice>,
    ) -> anyhow::Result<Self> {
        Self::start_configured(deployment, parallelism, join, |_| {}).await
    }

    /// As [`Running::start_as`], with the configuration changed by `configure` last.
    pub async fn start_configured(
        deployment: &Deployment,
        parallelism: Option<usize>,
        join: Option<ftab_engine::plan::JoinChoice>,
        configure: impl FnOnce(&mut SchedulerConfig),
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let defaults = SchedulerConfig::default();
        let mut config = SchedulerConfig {
            data_dir: dir.path().join("data"),
            flight_addr: "127.0.0.1:0".parse()?,
            http_addr: "127.0.0.1:0".parse()?,
            log: "warn".into(),
            parallelism: parallelism.unwrap_or(defaults.parallelism),
            training_set_join: join.unwrap_or(defaults.training_set_join),
            ..defaults
        };
        let bucket = match deployment {
            Deployment::Standalone { bucket } => bucket,
            Deployment::Cluster { bucket, .. } => {
                config.cluster_addr = Some("127.0.0.1:0".parse()?);
                bucket
            }
        };
        config.storage = bucket.as_ref().map(|b| format!("s3://{b}/ftab"));
        configure(&mut config);
        let scheduler = Scheduler::open(config).await?;
        let mut executors = Vec::new();
        if let Deployment::Cluster {
            executors: n,
            tasks,
            ..
        } = deployment
        {
            let address = scheduler.ballista_addr().to_string();
            for i in 0..*n {
                executors.push(cluster::Executor::start(
                    &address,
                    &dir.path().join(format!("executor-{i}")),
                    *tasks,
                )?);
            }
            cluster::wait_for_executors(&scheduler, *n).await?;
        }
        let listener = scheduler.bind().await?;
        let url = format!("http://{}", listener.local_addr()?);
        let http = scheduler.bind_http().await?;
        let http_url = format!("http://{}", http.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(scheduler.serve_with_http(listener, Some(http), async {
            let _ = stopped.await;
        }));
        let client = FtabClient::connect(&url).await?;
        Ok(Self {
            client,
            url,
            http_url,
            stop,
            server,
            _executors: executors,
            _dir: dir,
        })
    }

    /// Create a live workspace `bench` with `repository` applied.
    pub async fn workspace(&mut self, repository: &str) -> anyhow::Result<WorkspaceName> {
        self.workspace_named("bench", repository).await
    }

    /// Create a live workspace `name` with `repository` applied.
    pub async fn workspace_named(
        &mut self,
        name: &str,
        repository: &str,
    ) -> anyhow::Result<WorkspaceName> {
        let workspace = WorkspaceName::new(name)?;
        self.client
            .create_workspace(workspace.clone(), WorkspaceKind::Live)
            .await?;
        self.client
            .apply(ApplyRequest {
                workspace: workspace.clone(),
                files: vec![RepositoryFile {
                    path: "bench.toml".into(),
                    content: repository.into(),
                }],
                force: false,
                expected_version: None,
            })
            .await?;
        Ok(workspace)
    }

    /// Upload generated batches as one ingest of `table`.
    pub async fn ingest(
        &mut self,
        workspace: &WorkspaceName,
        table: &str,
        idempotency_key: Option<String>,
        batches: impl Iterator<Item = Result<arrow::array::RecordBatch, arrow::error::ArrowError>>
        + Send
        + 'static,
    ) -> anyhow::Result<ftab_model::protocol::IngestResult> {
        use anyhow::Context;
        self.client
            .ingest(
                ftab_model::protocol::IngestCommand {
                    workspace: workspace.clone(),
                    table: ftab_model::names::TableName::new(table)?,
                    idempotency_key,
                    drop_extra_columns: false,
                    uri: None,
                    format: None,
                },
                Box::new(batches),
                std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0)),
            )
            .await
            .context("ingest")
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.server.await??;
        Ok(())
    }
}

/// Peak resident memory of this process since the last [`reset_peak_memory`] (Linux), in
/// MiB.
pub fn peak_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Start measuring peak memory afresh (Linux: `echo 5 > /proc/self/clear_refs`).
pub fn reset_peak_memory() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

pub fn memory_text() -> String {
    peak_memory_mib()
        .map(|m| format!("{m:.0} MiB"))
        .unwrap_or_else(|| "unknown".into())
}

pub fn rate(rows: u64, d: Duration) -> f64 {
    rows as f64 / d.as_secs_f64().max(1e-9)
}

/// One line of a figures table.
pub fn row(stage: &str, d: Duration, rows: u64) {
    println!(
        "{stage:<34} {:>9.2} {rows:>13} {:>13.0}",
        d.as_secs_f64(),
        rate(rows, d)
    );
}

pub fn header() {
    println!(
        "{:<34} {:>9} {:>13} {:>13}",
        "stage", "seconds", "rows", "rows/s"
    );
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The S3 server starts before any thread does: its address goes into this process's
    // environment, where object stores read it.
    let s3 = match &args.bench {
        Bench::Cluster(_) => Some(cluster::S3::start()?),
        _ => None,
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args, s3))
}

async fn run(args: Args, s3: Option<cluster::S3>) -> anyhow::Result<()> {
    // FTAB_BENCH_LOG=info,ballista_executor=info shows what the jobs do.
    if let Ok(filter) = std::env::var("FTAB_BENCH_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .init();
    }
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; figures are only meaningful with --release");
    }
    match args.bench {
        Bench::Ingest(args) => ingest::run(args).await,
        Bench::TrainingSet(args) => training_set::run(args).await,
        Bench::ControlPlane(args) => control_plane::run(args).await,
        Bench::Serve(args) => serve::run(args).await,
        Bench::OnlineLoad(args) => online_load::run(args).await,
        Bench::Cluster(args) => {
            let s3 = s3.ok_or_else(|| anyhow::anyhow!("the S3 server did not start"))?;
            cluster::run(args, &s3).await
        }
    }
}
