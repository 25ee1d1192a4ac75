//! `ftab-scheduler`: the ftab control plane as a process.

use anyhow::Context;
use clap::Parser;
use ftab_scheduler::Scheduler;
use ftab_scheduler::config::{Args, SchedulerConfig};
use ftab_scheduler::process::shutdown_signal;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let config = match SchedulerConfig::resolve(args) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("error: {message}");
            return std::process::ExitCode::from(2);
        }
    };
    ftab_scheduler::process::init_logging(&config.log);
    match run(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(config: SchedulerConfig) -> anyhow::Result<()> {
    let scheduler = Scheduler::open(config)
        .await
        .context("cannot start the scheduler")?;
    let listener = scheduler.bind().await?;
    let addr = listener
        .local_addr()
        .context("cannot read the bound address")?;
    let http = scheduler.bind_http().await?;
    let http_addr = http
        .local_addr()
        .context("cannot read the bound HTTP address")?;
    // One line on stdout when ready, for people and for scripts that wait on it.
    let cluster = match scheduler.config().cluster_addr {
        Some(_) => format!(" cluster={}", scheduler.ballista_addr()),
        None => String::new(),
    };
    println!(
        "ftab-scheduler ready: flight=http://{addr} data_dir={}{cluster} http=http://{http_addr}",
        scheduler.config().data_dir.display()
    );
    scheduler
        .serve_with_http(listener, Some(http), shutdown_signal())
        .await?;
    tracing::info!("stopped");
    Ok(())
}
