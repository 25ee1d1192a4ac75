//! `ftab-bench ingest`: one ingest of many rows through a real scheduler, then a check of
//! what it stored: every offline row read back with delta-rs and compared with the
//! generator's rows (last write per (key, timestamp) kept), and the online records of
//! sampled keys against the latest row of each.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use arrow::array::{Array, AsArray};
use arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use ftab_model::protocol::{GetOnlineRequest, JobState, StepState};

use crate::data::{DAY, ENTITY, Rng, Row, batch, features, table_definition};
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
    /// Keys whose online record is read back and checked.
    #[arg(long, default_value_t = 2_000)]
    check_keys: u64,
    /// The scheduler's parallelism (default: the machine's cores).
    #[arg(long)]
    parallelism: Option<usize>,
    /// Send the ingest under this idempotency key (the scheduler then hashes its rows).
    #[arg(long)]
    idempotency_key: Option<String>,
}

/// Row `i` of the ingest: key `i % keys`, a timestamp spread over the 30 days before `now`.
fn generated(i: u64, keys: u64, now: i64) -> Row {
    let span = 30 * DAY as u64;
    Row {
        key: i % keys,
        merchant: None,
        timestamp: now - span as i64 + (i.wrapping_mul(2_654_435_761) % span) as i64,
        value: i,
    }
}

pub async fn run(args: IngestArgs) -> anyhow::Result<()> {
    let mut running = Running::start(args.parallelism, None).await?;
    let repository = format!(
        "{ENTITY}{}",
        table_definition("bench", true, false, Some(365))
    );
    let workspace = running.workspace(&repository).await?;
    let now = chrono::Utc::now().timestamp_micros();
    let (rows, keys, batch_rows) = (args.rows, args.keys, args.batch_rows);
    let batches = (0..rows).step_by(batch_rows as usize).map(move |start| {
        let end = (start + batch_rows).min(rows);
        let data: Vec<Row> = (start..end).map(|i| generated(i, keys, now)).collect();
        Ok(batch(&data))
    });

    eprintln!("ingesting {rows} rows over {keys} keys ...");
    let started = Instant::now();
    let result = running
        .ingest(&workspace, "bench", args.idempotency_key.clone(), batches)
        .await?;
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
    let peak = memory_text();

    eprintln!("checking what was stored against the generator ...");
    let checked = check(&mut running, &args, now).await?;
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
        "in-ingest duplicates dropped: {}; online skipped as older: {}; peak memory: {peak}",
        c.duplicates_dropped, c.online_skipped_older,
    );
    println!("{checked}");
    Ok(())
}

/// The last row sent for each (key, timestamp): what the offline table must hold.
fn expected_offline(args: &IngestArgs, now: i64) -> HashMap<(u64, i64), u64> {
    let mut last = HashMap::with_capacity(args.rows as usize);
    for i in 0..args.rows {
        let row = generated(i, args.keys, now);
        last.insert((row.key, row.timestamp), row.value);
    }
    last
}

/// Read every offline row back with delta-rs and the online records of sampled keys, and
/// compare them with the generator. Returns the line saying what was verified.
async fn check(running: &mut Running, args: &IngestArgs, now: i64) -> anyhow::Result<String> {
    let mut want = expected_offline(args, now);
    let expected_rows = want.len();
    let workspace = ftab_model::names::WorkspaceName::new("bench")?;
    let table_name = ftab_model::names::TableName::new("bench")?;
    let described = running
        .client
        .describe_table(workspace.clone(), table_name.clone())
        .await?;
    let url = url::Url::parse(&described.offline_location)
        .context("the offline table's location is a URL")?;
    let table = deltalake::open_table(url)
        .await
        .context("open the offline table with delta-rs")?;
    let files: Vec<String> = table.get_file_uris()?.collect();
    let mut read = 0usize;
    let mut wrong = Vec::new();
    for uri in &files {
        // delta-rs names local files by URL or by path.
        let path = match url::Url::parse(uri) {
            Ok(url) => url
                .to_file_path()
                .map_err(|()| anyhow::anyhow!("not a local file: {uri}"))?,
            Err(_) => std::path::PathBuf::from(uri),
        };
        let file = std::fs::File::open(&path)?;
        let reader =
            deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                file,
            )?
            .build()?;
        for batch in reader {
            let batch = batch?;
            let column = |name: &str| {
                batch
                    .column_by_name(name)
                    .with_context(|| format!("offline file {uri} has no column {name}"))
            };
            let users = column("user_id")?.as_string::<i32>().clone();
            let times = column("timestamp")?
                .as_primitive::<TimestampMicrosecondType>()
                .clone();
            let f4 = column("f4")?.as_primitive::<Int64Type>().clone();
            for i in 0..batch.num_rows() {
                read += 1;
                let key: u64 = users
                    .value(i)
                    .strip_prefix("user_")
                    .and_then(|k| k.parse().ok())
                    .with_context(|| format!("unexpected user_id {}", users.value(i)))?;
                let at = (key, times.value(i));
                match want.remove(&at) {
                    Some(value) if !f4.is_null(i) && f4.value(i) == value as i64 => {}
                    expected => wrong.push(format!(
                        "offline row {at:?}: f4 {:?}, expected {expected:?}",
                        (!f4.is_null(i)).then(|| f4.value(i))
                    )),
                }
            }
        }
    }
    if !want.is_empty() || !wrong.is_empty() || read != expected_rows {
        bail!(
            "the offline table is wrong: {read} rows read, {expected_rows} expected; {} rows missing, {} wrong (first: {:?}); no figures for a wrong result",
            want.len(),
            wrong.len(),
            wrong.first()
        );
    }

    // Online: the latest row per key among the rows sent, for sampled keys (keys below
    // `rows` were all sent).
    let mut rng = Rng(0x0_11_5E);
    let sent_keys = args.keys.min(args.rows);
    let mut latest: HashMap<u64, Row> = HashMap::new();
    while (latest.len() as u64) < args.check_keys.min(sent_keys) {
        let key = rng.below(sent_keys);
        latest.insert(key, generated(key, args.keys, now));
    }
    // Rows of key k are k, k + keys, k + 2 keys, ...: the later row wins ties.
    for (&key, best) in latest.iter_mut() {
        let mut i = key;
        while i < args.rows {
            let row = generated(i, args.keys, now);
            if row.timestamp >= best.timestamp {
                *best = row;
            }
            i += args.keys;
        }
    }
    for (key, row) in &latest {
        let record = running
            .client
            .get_online(GetOnlineRequest {
                workspace: workspace.clone(),
                table: table_name.clone(),
                keys: [("user_id".to_string(), format!("user_{key}"))].into(),
            })
            .await?;
        let f4 = record
            .features
            .iter()
            .find(|(name, _)| name == "f4")
            .map(|(_, v)| v.clone());
        let expected = serde_json::json!(features(row.value).3);
        if !record.found || f4.as_ref() != Some(&expected) {
            bail!(
                "the online record of user_{key} is wrong: found {}, f4 {f4:?}, expected {expected}; no figures for a wrong result",
                record.found
            );
        }
    }
    Ok(format!(
        "verified: all {read} offline rows (read back with delta-rs from {} files) equal the generator's last row per (key, timestamp), and the online records of {} sampled keys hold their latest row",
        files.len(),
        latest.len()
    ))
}
