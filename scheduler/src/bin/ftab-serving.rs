//! `ftab-serving`: the feature server's HTTP API for clusters, stateless, reading
//! Aerospike (docs/serving.md). Run several behind a load balancer.

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Parser;
use ftab_engine::online::aerospike::{AerospikeArgs, AerospikeStore};
use ftab_scheduler::process::shutdown_signal;
use ftab_scheduler::serving_process::{ServingSettings, serve};

/// ftab-serving: serves feature vectors over HTTP from Aerospike, with the definitions
/// copied from an ftab scheduler.
#[derive(Debug, Parser)]
#[command(name = "ftab-serving", version, about)]
struct Args {
    /// The scheduler's Flight URL, where the applied definitions are copied from.
    #[arg(
        long,
        env = "FTAB_SCHEDULER_URL",
        value_name = "URL",
        default_value = "http://127.0.0.1:50051"
    )]
    scheduler: String,
    /// Address of the HTTP API. Port 0 picks a free port (printed at start).
    #[arg(
        long,
        env = "FTAB_HTTP_ADDR",
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:50053"
    )]
    http_addr: SocketAddr,
    /// How often the definitions are copied again, e.g. `1s`: a new apply is served
    /// within about this long.
    #[arg(
        long,
        env = "FTAB_SERVING_REFRESH",
        value_name = "DURATION",
        default_value = "1s"
    )]
    refresh: String,
    #[command(flatten)]
    aerospike: AerospikeArgs,
    /// Log filter, e.g. `info`.
    #[arg(long, env = "FTAB_LOG", default_value = "info")]
    log: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    ftab_scheduler::process::init_logging(&args.log);
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    if !(args.scheduler.starts_with("http://") || args.scheduler.starts_with("https://")) {
        return Err(format!(
            "--scheduler `{}`: write the scheduler's Flight URL, e.g. http://ftab-scheduler:50051",
            args.scheduler
        ));
    }
    let refresh = ftab_scheduler::config::parse_duration(&args.refresh)
        .map_err(|e| format!("--refresh: {e}"))?;
    if refresh.is_zero() {
        return Err("--refresh: must be at least 1s".into());
    }
    let settings = args
        .aerospike
        .resolve(None)
        .map_err(|e| format!("--aerospike-*: {e}"))?;
    let store = AerospikeStore::new(settings).map_err(|e| e.to_string())?;
    if let Err(e) = store.client().await {
        tracing::warn!("{e}; reads fail until it is reachable");
    }
    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .map_err(|e| format!("cannot serve HTTP on {}: {e}", args.http_addr))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!(
        "ftab-serving ready: http=http://{addr} scheduler={}",
        args.scheduler
    );
    serve(
        ServingSettings {
            scheduler: args.scheduler,
            refresh,
        },
        Arc::new(store),
        listener,
        shutdown_signal(),
    )
    .await
    .map_err(|e| e.to_string())
}
