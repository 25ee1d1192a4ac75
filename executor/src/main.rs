//! `ftab-executor`: a Ballista executor for ftab clusters.
//!
//! It registers with a Ballista scheduler (the one `ftab-scheduler` runs in cluster mode)
//! and runs the tasks of ftab's jobs: reading and writing the object store and the online
//! store directly. ftab's own plan nodes (the as-of join, the ingest writer, the online
//! load) reach it through ftab's extension codec, registered here. On one machine no
//! executor process is needed: the scheduler runs an in-process executor.

use std::sync::Arc;

use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// ftab-executor: runs the tasks of ftab jobs for a Ballista scheduler.
#[derive(Debug, Parser)]
#[command(name = "ftab-executor", version, about)]
struct Args {
    /// Host of the Ballista scheduler to register with.
    #[arg(long, env = "FTAB_SCHEDULER_HOST", default_value = "localhost")]
    scheduler_host: String,
    /// Port of the Ballista scheduler's gRPC service.
    #[arg(long, env = "FTAB_SCHEDULER_PORT", default_value_t = 50050)]
    scheduler_port: u16,
    /// Address to bind this executor's services to.
    #[arg(long, env = "FTAB_EXECUTOR_BIND_HOST", default_value = "127.0.0.1")]
    bind_host: String,
    /// Host name other processes reach this executor by (default: the bind host).
    #[arg(long, env = "FTAB_EXECUTOR_EXTERNAL_HOST")]
    external_host: Option<String>,
    /// Port of this executor's Flight service (shuffle data).
    #[arg(long, env = "FTAB_EXECUTOR_PORT", default_value_t = 50061)]
    port: u16,
    /// Port of this executor's gRPC service.
    #[arg(long, env = "FTAB_EXECUTOR_GRPC_PORT", default_value_t = 50062)]
    grpc_port: u16,
    /// Concurrent tasks (default: the number of cores).
    #[arg(long, env = "FTAB_EXECUTOR_CONCURRENT_TASKS")]
    concurrent_tasks: Option<usize>,
    /// Directory for shuffle files (default: a temporary directory).
    #[arg(long, env = "FTAB_EXECUTOR_WORK_DIR")]
    work_dir: Option<String>,
    /// Log filter, e.g. `info`.
    #[arg(long, env = "FTAB_LOG", default_value = "info")]
    log: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let filter = EnvFilter::try_new(&args.log).unwrap_or_else(|e| {
        eprintln!(
            "warning: invalid log filter {:?} ({e}); using info",
            args.log
        );
        EnvFilter::new("info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let mut config = ExecutorProcessConfig {
        scheduler_host: args.scheduler_host,
        scheduler_port: args.scheduler_port,
        bind_host: args.bind_host,
        external_host: args.external_host,
        port: args.port,
        grpc_port: args.grpc_port,
        work_dir: args.work_dir,
        override_physical_codec: Some(ftab_engine::codec::physical_codec()),
        ..ExecutorProcessConfig::default()
    };
    if let Some(tasks) = args.concurrent_tasks {
        config.vcores = tasks;
    }
    match start_executor_process(Arc::new(config)).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: the executor stopped: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
