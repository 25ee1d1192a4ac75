//! `ftab-bench ingest`: one ingest of many rows through a real scheduler.

use std::time::{Duration, Instant};

use anyhow::bail;
use ftab_core::protocol::{JobState, StepState};

use crate::data::{DAY, ENTITY, Row, batch, table_definition};
use crate::{Running, header, memory_text, row};

#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// Rows to ingest.
    #[arg(long, default_value_t = 10_000_000)]
    rows: u64,
    /// Distinct entity keys.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Rows per uploaded batch.
    #[arg(long, default_value_t = 65_536)]
    batch_rows: u64,
}

pub async fn run(args: IngestArgs) -> anyhow::Result<()> {
    let mut running = Running::start().await?;
    let repository = format!("{ENTITY}{}", table_definition("bench", true));
    let workspace = running.workspace(&repository).await?;
    let now = chrono::Utc::now().timestamp_micros();
    let span = 30 * DAY as u64;
    let (rows, keys, batch_rows) = (args.rows, args.keys, args.batch_rows);
    // Row i has key i % keys and a timestamp spread over the last 30 days.
    let batches = (0..rows).step_by(batch_rows as usize).map(move |start| {
        let end = (start + batch_rows).min(rows);
        let data: Vec<Row> = (start..end)
            .map(|i| Row {
                key: i % keys,
                timestamp: now - span as i64 + (i.wrapping_mul(2_654_435_761) % span) as i64,
                value: i,
            })
            .collect();
        Ok(batch(&data))
    });

    eprintln!("ingesting {rows} rows over {keys} keys ...");
    let started = Instant::now();
    let result = running.ingest(&workspace, "bench", batches).await?;
    let staged = started.elapsed();

    // Follow the job's steps to time each one.
    let job_started = Instant::now();
    let mut offline_done = None;
    let job = loop {
        let job = running.client.job(result.job_id).await?;
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
    running.stop().await?;

    let c = &job.counts;
    println!("ftab ingest benchmark: {rows} rows, {keys} keys, 5 features");
    header();
    row("upload + validate + stage", staged, c.rows_received);
    row(
        "offline write + commit (Delta)",
        offline,
        c.offline_rows_committed,
    );
    row("online load (embedded)", online, c.online_rows_written);
    row("ingest end to end", staged + total, c.rows_received);
    println!(
        "in-ingest duplicates dropped: {}; online skipped as older: {}; peak memory: {}",
        c.duplicates_dropped,
        c.online_skipped_older,
        memory_text()
    );
    Ok(())
}
