//! `ftab-bench training-set`: two feature tables ingested in several ingests with re-sent
//! rows, then a point-in-time training set over a large spine, pulled over Flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use futures::{StreamExt, TryStreamExt};

use ftab_core::names::{SpineName, TableName};
use ftab_core::protocol::{JobState, SpineSource, TrainingSetRequest};

use crate::data::{DAY, ENTITY, Rng, Row, batch, table_definition};
use crate::{Running, header, memory_text, reset_peak_memory, row};

#[derive(Debug, clap::Args)]
pub struct TrainingSetArgs {
    /// Rows of each of the two feature tables.
    #[arg(long, default_value_t = 10_000_000)]
    table_rows: u64,
    /// Distinct entity keys.
    #[arg(long, default_value_t = 200_000)]
    keys: u64,
    /// Ingests per table.
    #[arg(long, default_value_t = 4)]
    ingests: u64,
    /// Share of each later ingest that re-sends rows of the ingest before (same key and
    /// timestamp, new values).
    #[arg(long, default_value_t = 0.1)]
    resend: f64,
    /// Spine rows.
    #[arg(long, default_value_t = 1_000_000)]
    spine_rows: u64,
    /// Days the feature and spine times spread over.
    #[arg(long, default_value_t = 90)]
    days: i64,
    /// Endpoints fetched at once.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
}

const BATCH_ROWS: u64 = 65_536;

/// The shape of generated rows: keys, and days from `start`.
#[derive(Debug, Clone, Copy)]
struct Shape {
    keys: u64,
    days: i64,
    start: i64,
}

/// Key and timestamp of row `index` of ingest `ingest` of table `table`: a function of its
/// position, so re-sent rows are found again without keeping them.
fn base_row(shape: Shape, table: u64, ingest: u64, index: u64) -> (u64, i64) {
    let mut rng = Rng((table << 48) ^ (ingest << 40) ^ index);
    let key = rng.below(shape.keys);
    let timestamp = shape.start + rng.below((shape.days * DAY) as u64) as i64;
    (key, timestamp)
}

async fn ingest_table(
    running: &mut Running,
    args: &TrainingSetArgs,
    workspace: &ftab_core::names::WorkspaceName,
    table: u64,
    start: i64,
) -> anyhow::Result<Duration> {
    let name = TableName::new(format!("table_{table}"))?;
    let per_ingest = args.table_rows / args.ingests;
    let resent = (per_ingest as f64 * args.resend) as u64;
    let started = Instant::now();
    let shape = Shape {
        keys: args.keys,
        days: args.days,
        start,
    };
    for ingest in 0..args.ingests {
        let batches = (0..per_ingest)
            .step_by(BATCH_ROWS as usize)
            .map(move |first| {
                let last = (first + BATCH_ROWS).min(per_ingest);
                let rows: Vec<Row> = (first..last)
                    .map(|i| {
                        let (key, timestamp) = if ingest > 0 && i < resent {
                            // Re-send a row of the previous ingest with a new value.
                            base_row(shape, table, ingest - 1, (i * 7_919) % per_ingest)
                        } else {
                            base_row(shape, table, ingest, i)
                        };
                        Row {
                            key,
                            timestamp,
                            value: ingest * 1_000_000_000 + i,
                        }
                    })
                    .collect();
                Ok(batch(&rows))
            });
        let result = running.ingest(workspace, name.as_str(), batches).await?;
        loop {
            let job = running.client.job(result.job_id).await?;
            if job.state.is_final() {
                if job.state != JobState::Succeeded {
                    bail!("ingest job ended {:?}: {:?}", job.state, job.last_error);
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(started.elapsed())
}

/// What one endpoint transfer saw.
#[derive(Default)]
struct Transfer {
    rows: u64,
    bytes: u64,
    first: Option<Instant>,
    last: Option<Instant>,
}

async fn fetch(url: String, ticket: arrow_flight::Ticket) -> anyhow::Result<Transfer> {
    let channel = tonic::transport::Endpoint::from_shared(url)?
        .connect()
        .await?;
    let mut client = FlightServiceClient::new(channel).max_decoding_message_size(usize::MAX);
    let stream = client.do_get(ticket).await?.into_inner();
    let bytes = Arc::new(AtomicU64::new(0));
    let counted = bytes.clone();
    let data = stream
        .inspect_ok(move |d| {
            counted.fetch_add(
                (d.data_header.len() + d.data_body.len()) as u64,
                Ordering::Relaxed,
            );
        })
        .map_err(|s| FlightError::Tonic(Box::new(s)));
    let mut batches = FlightRecordBatchStream::new_from_flight_data(data);
    let mut transfer = Transfer::default();
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        let now = Instant::now();
        transfer.first.get_or_insert(now);
        transfer.last = Some(now);
        transfer.rows += batch.num_rows() as u64;
    }
    transfer.bytes = bytes.load(Ordering::Relaxed);
    Ok(transfer)
}

pub async fn run(args: TrainingSetArgs) -> anyhow::Result<()> {
    let mut running = Running::start().await?;
    let repository = format!(
        "{ENTITY}{}{}",
        table_definition("table_1", false),
        table_definition("table_2", false)
    );
    let workspace = running.workspace(&repository).await?;
    let start = chrono::Utc::now().timestamp_micros() - args.days * DAY;

    eprintln!(
        "ingesting 2 tables x {} rows ({} ingests each) ...",
        args.table_rows, args.ingests
    );
    let ingest_1 = ingest_table(&mut running, &args, &workspace, 1, start).await?;
    let ingest_2 = ingest_table(&mut running, &args, &workspace, 2, start).await?;

    eprintln!("uploading a spine of {} rows ...", args.spine_rows);
    reset_peak_memory();
    let (keys, days, spine_rows) = (args.keys, args.days, args.spine_rows);
    let spine = (0..spine_rows)
        .step_by(BATCH_ROWS as usize)
        .map(move |first| {
            let last = (first + BATCH_ROWS).min(spine_rows);
            let mut rng = Rng(0xC0FFEE ^ first);
            let rows: Vec<(String, i64)> = (first..last)
                .map(|_| {
                    // 1% of the spine asks for keys no table has.
                    let key = rng.below(keys + keys / 100);
                    let t = start + rng.below((days * DAY) as u64) as i64;
                    (format!("user_{key}"), t)
                })
                .collect();
            let columns: Vec<(&str, ArrayRef)> = vec![
                (
                    "user_id",
                    Arc::new(StringArray::from_iter_values(
                        rows.iter().map(|r| r.0.clone()),
                    )),
                ),
                (
                    "event_time",
                    Arc::new(
                        TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.1))
                            .with_timezone("UTC"),
                    ),
                ),
            ];
            Ok::<_, arrow::error::ArrowError>(
                RecordBatch::try_from_iter(columns).expect("spine columns line up"),
            )
        });
    let upload_started = Instant::now();
    let stored = running
        .client
        .put_spine(
            SpineName::new("bench_spine")?,
            Box::new(spine),
            Arc::new(AtomicU64::new(0)),
        )
        .await?;
    let upload = upload_started.elapsed();

    let request = TrainingSetRequest {
        workspace,
        feature_service: None,
        features: Some(vec![
            "table_1".parse().map_err(anyhow::Error::msg)?,
            "table_2".parse().map_err(anyhow::Error::msg)?,
        ]),
        spine: Some(SpineSource::Name { name: stored.name }),
        timestamp_column: None,
        as_of: None,
        full_feature_names: true,
    };
    let asked = Instant::now();
    let (info, metadata) = running.client.training_set(request).await?;
    let planned = asked.elapsed();
    let tickets: Vec<arrow_flight::Ticket> = info
        .endpoint
        .iter()
        .filter_map(|e| e.ticket.clone())
        .collect();
    let endpoints = tickets.len();
    let transfers: Vec<Transfer> = futures::stream::iter(
        tickets
            .into_iter()
            .map(|ticket| fetch(running.url.clone(), ticket)),
    )
    .buffer_unordered(args.parallel.max(1))
    .try_collect()
    .await?;
    let finished = Instant::now();
    let end_to_end = finished - asked;
    let rows: u64 = transfers.iter().map(|t| t.rows).sum();
    let bytes: u64 = transfers.iter().map(|t| t.bytes).sum();
    let first = transfers
        .iter()
        .filter_map(|t| t.first)
        .min()
        .unwrap_or(finished);
    let last = transfers
        .iter()
        .filter_map(|t| t.last)
        .max()
        .unwrap_or(finished);
    let compute = first
        .saturating_duration_since(asked)
        .saturating_sub(planned);
    let transfer = last.saturating_duration_since(first);
    let peak = memory_text();
    running.stop().await?;
    if rows != metadata.rows {
        bail!("received {rows} rows, the spine has {}", metadata.rows);
    }

    println!(
        "ftab training-set benchmark: spine {} rows; 2 tables x {} rows, {} keys, {} ingests each ({}% re-sent); {} endpoints",
        args.spine_rows,
        args.table_rows,
        args.keys,
        args.ingests,
        (args.resend * 100.0) as u64,
        endpoints
    );
    header();
    row("ingest table_1 (all ingests)", ingest_1, args.table_rows);
    row("ingest table_2 (all ingests)", ingest_2, args.table_rows);
    row("spine upload (DoPut)", upload, stored.rows);
    row("plan (GetFlightInfo)", planned, rows);
    row("compute (to first batch)", compute, rows);
    row("transfer (first to last batch)", transfer, rows);
    row("training set end to end", end_to_end, rows);
    println!(
        "Flight transfer: {:.1} MB in {:.2} s = {:.0} MB/s; peak memory from the spine upload on: {peak}",
        bytes as f64 / 1e6,
        transfer.as_secs_f64(),
        bytes as f64 / 1e6 / transfer.as_secs_f64().max(1e-9)
    );
    for table in &metadata.tables {
        println!(
            "  {}: version {:?}, {} of {} files read, by {:?}, joined by {:?}",
            table.table,
            table.delta_version,
            table.files_read,
            table.files_total,
            table.read_by,
            table.join
        );
    }
    Ok(())
}
