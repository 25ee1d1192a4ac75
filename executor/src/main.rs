//! `ftab-executor`: a Ballista executor for ftab clusters.
//!
//! It registers with the Ballista scheduler that `ftab-scheduler --cluster-addr` serves and
//! runs the tasks of ftab's jobs, reading and writing the object store directly: the plan
//! names each file by URL, and this process opens the store from the URL with credentials
//! from its own environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`; `ftab_engine::runtime`).
//! ftab's own plan nodes (the as-of join, the ingest writer) reach it through ftab's
//! extension codec, registered here. On one machine no executor process is needed: the
//! scheduler runs an in-process executor. docs/cluster.md has the whole picture.

use std::path::PathBuf;

use ballista_core::extension::SessionConfigExt;
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// ftab-executor: runs the tasks of ftab jobs for an ftab scheduler in cluster mode.
#[derive(Debug, Parser)]
#[command(name = "ftab-executor", version, about)]
struct Args {
    /// The scheduler's cluster address (`ftab-scheduler --cluster-addr`), HOST:PORT.
    #[arg(
        long,
        env = "FTAB_SCHEDULER",
        value_name = "HOST:PORT",
        default_value = "localhost:50050"
    )]
    scheduler: String,
    /// Address to bind this executor's services to.
    #[arg(long, env = "FTAB_EXECUTOR_BIND_HOST", default_value = "127.0.0.1")]
    bind_host: String,
    /// Host name other processes reach this executor by (default: the bind host).
    #[arg(long, env = "FTAB_EXECUTOR_EXTERNAL_HOST")]
    external_host: Option<String>,
    /// Port of this executor's Flight service (shuffle data and job results); 0 picks a
    /// free one.
    #[arg(long, env = "FTAB_EXECUTOR_PORT", default_value_t = 50061)]
    port: u16,
    /// Port of this executor's gRPC service (the scheduler cancels tasks through it); 0
    /// picks a free one.
    #[arg(long, env = "FTAB_EXECUTOR_GRPC_PORT", default_value_t = 50062)]
    grpc_port: u16,
    /// Tasks run at once (default: the number of cores).
    #[arg(long, env = "FTAB_EXECUTOR_TASKS", value_name = "N")]
    tasks: Option<usize>,
    /// Directory for shuffle files, job results and spill files (default: a new
    /// temporary directory).
    #[arg(long, env = "FTAB_EXECUTOR_WORK_DIR", value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Memory this executor's tasks may use before sorts spill, e.g. `4GiB` (default: a
    /// quarter of the machine's memory), shared by its task slots.
    #[arg(long, env = "FTAB_MEMORY_LIMIT", value_name = "SIZE")]
    memory_limit: Option<String>,
    /// Log filter, e.g. `info`.
    #[arg(long, env = "FTAB_LOG", default_value = "info")]
    log: String,
    /// The online store this executor loads: Aerospike, when any `--aerospike-*` setting
    /// is given (as the scheduler's `--online-store aerospike`); none otherwise.
    #[command(flatten)]
    aerospike: ftab_engine::online::aerospike::AerospikeArgs,
}

/// `host:port`, with a message that says what is wrong.
fn split_address(text: &str) -> Result<(String, u16), String> {
    let bad = |why: &str| {
        format!("--scheduler `{text}`: {why}; write HOST:PORT, e.g. ftab-scheduler:50050")
    };
    let (host, port) = text.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = port
        .parse::<u16>()
        .map_err(|_| bad("the port is not a number from 1 to 65535"))?;
    if port == 0 {
        return Err(bad("port 0 is not a scheduler's port"));
    }
    Ok((host.to_string(), port))
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
    match run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let (scheduler_host, scheduler_port) = split_address(&args.scheduler)?;
    let memory_limit = match &args.memory_limit {
        Some(text) => {
            ftab_engine::runtime::parse_size(text).map_err(|e| format!("--memory-limit: {e}"))?
        }
        None => ftab_engine::runtime::default_memory_limit(),
    };
    let tasks = args.tasks.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    if tasks == 0 {
        return Err("--tasks must be at least 1".into());
    }
    // The work directory holds shuffle files; spill files go beside them.
    let (work_dir, _temporary) = match args.work_dir {
        Some(dir) => (dir, None),
        None => {
            let dir = tempfile::Builder::new()
                .prefix("ftab-executor-")
                .tempdir()
                .map_err(|e| format!("cannot make a work directory: {e}"))?;
            (dir.path().to_path_buf(), Some(dir))
        }
    };
    std::fs::create_dir_all(&work_dir).map_err(|e| {
        format!(
            "cannot create the work directory {}: {e}",
            work_dir.display()
        )
    })?;
    let runtime = ftab_engine::runtime::job_runtime(&ftab_engine::runtime::RuntimeSettings {
        memory_limit,
        parallelism: tasks,
        spill_dir: work_dir.join("spill"),
    })
    .map_err(|e| format!("cannot build the task runtime: {e}"))?;
    let bind: std::net::IpAddr = args
        .bind_host
        .parse()
        .map_err(|_| format!("--bind-host `{}` is not an IP address", args.bind_host))?;
    let external_host = match args.external_host {
        Some(host) => host,
        None if bind.is_unspecified() => {
            return Err(format!(
                "--bind-host {bind} listens on every interface, so give --external-host: the name or address the scheduler and the other executors reach this one by"
            ));
        }
        None => bind.to_string(),
    };
    // Tasks start from ftab's settings; the scheduler's are applied on top of them.
    let config = ftab_engine::plan::session_config(tasks, memory_limit);
    let config = if args.aerospike.given() {
        let settings = args
            .aerospike
            .clone()
            .resolve(None)
            .map_err(|e| format!("--aerospike-*: {e}"))?;
        let store = ftab_engine::online::aerospike::AerospikeStore::new(settings)
            .map_err(|e| e.to_string())?;
        if let Err(e) = store.client().await {
            tracing::warn!("{e}; online loads fail until it is reachable");
        }
        config.with_extension(std::sync::Arc::new(ftab_engine::online::OnlineStoreHandle(
            std::sync::Arc::new(store),
        )))
    } else {
        config
    };
    let config = config
        .with_ballista_physical_extension_codec(ftab_engine::codec::physical_codec())
        .upgrade_for_ballista();
    let executor = ftab_engine::executor::start(ftab_engine::executor::ExecutorSettings {
        scheduler: format!("{scheduler_host}:{scheduler_port}"),
        bind: std::net::SocketAddr::new(bind, args.port),
        grpc_port: args.grpc_port,
        external_host: external_host.clone(),
        tasks,
        work_dir: work_dir.clone(),
        config,
        runtime,
    })
    .await?;
    // One line on stdout when ready, for people and for scripts that wait on it.
    println!(
        "ftab-executor ready: id={} flight={external_host}:{} scheduler={}",
        executor.id, executor.flight_port, args.scheduler
    );
    tracing::info!(
        scheduler = %args.scheduler,
        tasks,
        memory_limit,
        work_dir = %work_dir.display(),
        "ftab-executor started"
    );
    tokio::select! {
        ended = executor.pull_loop => match ended {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("the executor stopped: {e}")),
            Err(e) => Err(format!("the executor stopped: {e}")),
        },
        () = shutdown_signal() => {
            tracing::info!("stopping");
            Ok(())
        }
    }
}

/// Ctrl-C or SIGTERM. Tasks running then are lost with the process; the scheduler runs
/// them again elsewhere once it notices (docs/cluster.md).
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_addresses_parse_with_clear_errors() {
        assert_eq!(
            split_address("sched:50050").unwrap(),
            ("sched".into(), 50050)
        );
        assert_eq!(split_address("[::1]:7").unwrap(), ("::1".into(), 7));
        let err = split_address("sched").unwrap_err();
        assert!(err.contains("--scheduler `sched`: no port"), "{err}");
        let err = split_address("sched:http").unwrap_err();
        assert!(err.contains("not a number"), "{err}");
        assert!(split_address(":50050").unwrap_err().contains("no host"));
        assert!(split_address("h:0").unwrap_err().contains("port 0"));
    }

    #[test]
    fn flags_parse() {
        let args = Args::try_parse_from([
            "ftab-executor",
            "--scheduler",
            "127.0.0.1:50050",
            "--tasks",
            "2",
            "--memory-limit",
            "1GiB",
        ])
        .unwrap();
        assert_eq!(args.tasks, Some(2));
        assert_eq!(args.scheduler, "127.0.0.1:50050");
    }
}
