//! `ftab-bench`: end-to-end ingest benchmark. Generates feature data (a string key over
//! many entities, a timestamp and five numeric features), pushes it through a real
//! scheduler over Flight on loopback, and prints seconds and rows/s for upload+staging,
//! the offline commit and the online load, and the process's peak memory.
//!
//! Run a release build: `cargo run --release -p ftab-bench -- --rows 10000000 --keys 1000000`.
//! Figures go to docs/benchmarks.md; nothing is asserted.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use arrow::array::{
    ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use clap::Parser;
use ftab_client::FtabClient;
use ftab_core::names::{TableName, WorkspaceName};
use ftab_core::protocol::{ApplyRequest, IngestCommand, JobState, StepState, WorkspaceKind};
use ftab_core::repository::RepositoryFile;
use ftab_scheduler::{Scheduler, SchedulerConfig};

#[derive(Debug, Parser)]
#[command(name = "ftab-bench", about = "End-to-end ingest benchmark")]
struct Args {
    /// Rows to ingest.
    #[arg(long, default_value_t = 10_000_000)]
    rows: u64,
    /// Distinct entity keys.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Rows per generated batch.
    #[arg(long, default_value_t = 65_536)]
    batch_rows: usize,
}

const REPOSITORY: &str = r#"
[[entity]]
name = "user"
join_keys = ["user_id"]

[[feature_table]]
name = "bench"
entities = ["user"]
timestamp_field = "timestamp"
online = true
offline = true
ttl = "365d"
schema = [
  { name = "user_id", type = "string" },
  { name = "timestamp", type = "timestamp" },
  { name = "f1", type = "float64" },
  { name = "f2", type = "float64" },
  { name = "f3", type = "float64" },
  { name = "f4", type = "int64" },
  { name = "f5", type = "int64" },
]
"#;

/// Deterministic rows: row i has key i % keys and a timestamp spread over 30 days.
fn generate(rows: u64, keys: u64, batch_rows: usize) -> impl Iterator<Item = RecordBatch> {
    let now = chrono::Utc::now().timestamp_micros();
    let span = 30 * 86_400_000_000i64;
    (0..rows).step_by(batch_rows).map(move |start| {
        let end = (start + batch_rows as u64).min(rows);
        let ids: Vec<u64> = (start..end).collect();
        let columns: Vec<(&str, ArrayRef)> = vec![
            (
                "user_id",
                Arc::new(StringArray::from_iter_values(
                    ids.iter().map(|i| format!("user_{}", i % keys)),
                )),
            ),
            (
                "timestamp",
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(ids.iter().map(|i| {
                        now - span + (i.wrapping_mul(2_654_435_761) % span as u64) as i64
                    }))
                    .with_timezone("UTC"),
                ),
            ),
            (
                "f1",
                Arc::new(Float64Array::from_iter_values(
                    ids.iter().map(|i| *i as f64 * 0.5),
                )),
            ),
            (
                "f2",
                Arc::new(Float64Array::from_iter_values(
                    ids.iter().map(|i| (*i % 97) as f64),
                )),
            ),
            (
                "f3",
                Arc::new(Float64Array::from_iter_values(
                    ids.iter().map(|i| (*i % 1013) as f64 / 7.0),
                )),
            ),
            (
                "f4",
                Arc::new(Int64Array::from_iter_values(ids.iter().map(|i| *i as i64))),
            ),
            (
                "f5",
                Arc::new(Int64Array::from_iter_values(
                    ids.iter().map(|i| (*i % 7) as i64),
                )),
            ),
        ];
        RecordBatch::try_from_iter(columns).expect("generated columns line up")
    })
}

/// Peak resident memory of this process (Linux), in MiB.
fn peak_memory_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build; figures are only meaningful with --release");
    }
    let dir = tempfile::tempdir()?;
    let config = SchedulerConfig {
        data_dir: dir.path().join("data"),
        flight_addr: "127.0.0.1:0".parse()?,
        log: "warn".into(),
        ..SchedulerConfig::default()
    };
    let scheduler = Scheduler::open(config).await?;
    let listener = scheduler.bind().await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(scheduler.serve(listener, async {
        let _ = stopped.await;
    }));

    let mut client = FtabClient::connect(&url).await?;
    let workspace = WorkspaceName::new("bench")?;
    client
        .create_workspace(workspace.clone(), WorkspaceKind::Live)
        .await?;
    client
        .apply(ApplyRequest {
            workspace: workspace.clone(),
            files: vec![RepositoryFile {
                path: "bench.toml".into(),
                content: REPOSITORY.into(),
            }],
            force: false,
            expected_version: None,
        })
        .await?;

    eprintln!("ingesting {} rows over {} keys ...", args.rows, args.keys);
    let batches = generate(args.rows, args.keys, args.batch_rows).map(Ok);
    let started = Instant::now();
    let result = client
        .ingest(
            IngestCommand {
                workspace,
                table: TableName::new("bench")?,
                idempotency_key: None,
                drop_extra_columns: false,
            },
            Box::new(batches),
            Arc::new(AtomicU64::new(0)),
        )
        .await
        .context("ingest")?;
    let staged = started.elapsed();

    // Follow the job's steps to time each one.
    let job_started = Instant::now();
    let mut offline_done = None;
    let job = loop {
        let job = client.job(result.job_id).await?;
        if offline_done.is_none() && job.steps.get("offline_commit") == Some(&StepState::Done) {
            offline_done = Some(job_started.elapsed());
        }
        if job.state.is_final() {
            break job;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let total = job_started.elapsed();
    if job.state != JobState::Succeeded {
        bail!("the ingest job ended {:?}: {:?}", job.state, job.last_error);
    }
    let offline = offline_done.unwrap_or(total);
    let online = total.saturating_sub(offline);
    let _ = stop.send(());
    server.await??;

    let rate = |rows: u64, d: Duration| rows as f64 / d.as_secs_f64().max(1e-9);
    let c = &job.counts;
    println!(
        "ftab ingest benchmark: {} rows, {} keys, 5 features",
        args.rows, args.keys
    );
    println!(
        "{:<28} {:>10} {:>14} {:>14}",
        "stage", "seconds", "rows", "rows/s"
    );
    for (stage, d, rows) in [
        ("upload + validate + stage", staged, c.rows_received),
        ("offline commit (Delta)", offline, c.offline_rows_committed),
        ("online load (embedded)", online, c.online_rows_written),
        ("ingest end to end", staged + total, c.rows_received),
    ] {
        println!(
            "{stage:<28} {:>10.2} {rows:>14} {:>14.0}",
            d.as_secs_f64(),
            rate(rows, d)
        );
    }
    println!(
        "in-ingest duplicates dropped: {}; online skipped as older: {}; peak memory: {}",
        c.duplicates_dropped,
        c.online_skipped_older,
        peak_memory_mib()
            .map(|m| format!("{m:.0} MiB"))
            .unwrap_or_else(|| "unknown".into())
    );
    Ok(())
}
