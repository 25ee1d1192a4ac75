//! `ftab-scheduler`: the ftab control plane as a process.

use anyhow::Context;
use clap::Parser;
use ftab_scheduler::Scheduler;
use ftab_scheduler::config::{Args, SchedulerConfig};
use tracing_subscriber::EnvFilter;

/// mimalloc: glibc's allocator took a third of the serving CPU (docs/build.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|e| {
        eprintln!(
            "warning: invalid log filter {:?} ({e}); using info",
            config.log
        );
        EnvFilter::new("info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
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

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}
