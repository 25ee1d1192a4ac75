//! `ftab-bench training-set`: two feature tables ingested in several ingests with re-sent
//! rows, then a point-in-time training set over a large spine, pulled over Flight, then
//! every row checked against a reference the bench computes from its own generator.
//!
//! The defaults are the benchmark of docs/benchmarks.md; the options reach the shapes of
//! the trust issue (a composite key, ttls, spine times past both ends of the data,
//! duplicate spine rows, a chosen parallelism).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use futures::{StreamExt, TryStreamExt};

use ftab_model::names::{SpineName, TableName};
use ftab_model::protocol::{JobState, SpineSource, TrainingSetRequest};

use crate::data::{self, DAY, ENTITY, Rng, Row, batch, table_definition};
use crate::{Running, header, memory_text, reset_peak_memory, row};

#[derive(Debug, Clone, clap::Args)]
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
    /// Merchants: with more than 0, table_2 is keyed by user and merchant (a composite
    /// key) and the spine carries a merchant per row.
    #[arg(long, default_value_t = 0)]
    merchants: u64,
    /// table_1's ttl (`7d`, or `none`).
    #[arg(long, default_value = "365d", value_parser = parse_ttl)]
    ttl_1: TtlDays,
    /// table_2's ttl (`30d`, or `none`).
    #[arg(long, default_value = "365d", value_parser = parse_ttl)]
    ttl_2: TtlDays,
    /// Days the spine's times reach before the first feature row.
    #[arg(long, default_value_t = 0)]
    spine_days_before: i64,
    /// Days the spine's times reach after the last feature row.
    #[arg(long, default_value_t = 0)]
    spine_days_after: i64,
    /// Share of spine rows that repeat the row before them.
    #[arg(long, default_value_t = 0.0)]
    spine_duplicates: f64,
    /// The scheduler's parallelism (default: the machine's cores).
    #[arg(long)]
    parallelism: Option<usize>,
    /// The as-of join: auto, sort_merge or spine_index (the scheduler's
    /// `training_set_join`).
    #[arg(long)]
    join: Option<ftab_engine::plan::JoinChoice>,
}

/// A table's ttl in days, or none.
#[derive(Debug, Clone, Copy)]
struct TtlDays(Option<u32>);

fn parse_ttl(text: &str) -> Result<TtlDays, String> {
    if text == "none" {
        return Ok(TtlDays(None));
    }
    text.strip_suffix('d')
        .and_then(|d| d.parse().ok())
        .map(|d| TtlDays(Some(d)))
        .ok_or_else(|| format!("a ttl is a number of days like `7d`, or `none`; not `{text}`"))
}

const BATCH_ROWS: u64 = 65_536;

/// The shape of generated rows: keys, and days from `start`.
#[derive(Debug, Clone, Copy)]
struct Shape {
    keys: u64,
    merchants: u64,
    days: i64,
    start: i64,
    /// Rows per ingest, and how many of each later ingest re-send a row of the one before.
    per_ingest: u64,
    resent: u64,
}

impl Shape {
    fn of(args: &TrainingSetArgs, start: i64) -> Self {
        let per_ingest = args.table_rows / args.ingests;
        Self {
            keys: args.keys,
            merchants: args.merchants,
            days: args.days,
            start,
            per_ingest,
            resent: (per_ingest as f64 * args.resend) as u64,
        }
    }
}

/// Key, merchant and timestamp of row `index` of ingest `ingest` of table `table`: a
/// function of its position, so re-sent rows are found again without keeping them.
fn base_row(shape: Shape, table: u64, ingest: u64, index: u64) -> (u64, Option<i64>, i64) {
    let mut rng = Rng((table << 48) ^ (ingest << 40) ^ index);
    let key = rng.below(shape.keys);
    let timestamp = shape.start + rng.below((shape.days * DAY) as u64) as i64;
    let merchant = (table == 2 && shape.merchants > 0).then(|| rng.below(shape.merchants) as i64);
    (key, merchant, timestamp)
}

/// Row `i` of ingest `ingest` of table `table` as sent: a share of each later ingest
/// re-sends a row the ingest before sent (same keys and timestamp) with a new value: an
/// exact tie that the later ingest must win.
fn sent_row(shape: Shape, table: u64, ingest: u64, i: u64) -> Row {
    let (key, merchant, timestamp) = if ingest > 0 && i < shape.resent {
        let earlier = sent_row(shape, table, ingest - 1, (i * 7_919) % shape.per_ingest);
        (earlier.key, earlier.merchant, earlier.timestamp)
    } else {
        base_row(shape, table, ingest, i)
    };
    Row {
        key,
        merchant,
        timestamp,
        value: ingest * 1_000_000_000 + i,
    }
}

async fn ingest_table(
    running: &mut Running,
    args: &TrainingSetArgs,
    workspace: &ftab_model::names::WorkspaceName,
    table: u64,
    shape: Shape,
) -> anyhow::Result<Duration> {
    let name = TableName::new(format!("table_{table}"))?;
    let per_ingest = shape.per_ingest;
    let started = Instant::now();
    for ingest in 0..args.ingests {
        let batches = (0..per_ingest)
            .step_by(BATCH_ROWS as usize)
            .map(move |first| {
                let last = (first + BATCH_ROWS).min(per_ingest);
                let rows: Vec<Row> = (first..last)
                    .map(|i| sent_row(shape, table, ingest, i))
                    .collect();
                Ok(batch(&rows))
            });
        let result = running
            .ingest(workspace, name.as_str(), None, batches)
            .await?;
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

/// One spine row: user, merchant (when there are merchants), time.
type SpineRow = (u64, Option<i64>, i64);

/// The spine rows of the batch starting at row `first`: 1% of users (and a tenth of
/// merchants) no table has, times from `spine_days_before` days before the first feature
/// time to `spine_days_after` after the last, a share repeating the row before.
fn spine_batch(args: &TrainingSetArgs, shape: Shape, first: u64) -> Vec<SpineRow> {
    let last = (first + BATCH_ROWS).min(args.spine_rows);
    let mut rng = Rng(0xC0FFEE ^ first);
    let from = shape.start - args.spine_days_before * DAY;
    let span = ((shape.days + args.spine_days_before + args.spine_days_after) * DAY) as u64;
    let mut rows: Vec<SpineRow> = Vec::with_capacity((last - first) as usize);
    for _ in first..last {
        let key = rng.below(shape.keys + shape.keys / 100);
        let t = from + rng.below(span) as i64;
        let merchant = (shape.merchants > 0)
            .then(|| rng.below(shape.merchants + shape.merchants / 10 + 1) as i64);
        let repeat = args.spine_duplicates > 0.0
            && (rng.below(1_000_000) as f64) < args.spine_duplicates * 1e6;
        match rows.last() {
            Some(&previous) if repeat => rows.push(previous),
            _ => rows.push((key, merchant, t)),
        }
    }
    rows
}

/// What one endpoint transfer saw.
#[derive(Default)]
struct Transfer {
    rows: u64,
    bytes: u64,
    /// The batches received, checked after timing.
    batches: Vec<RecordBatch>,
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
        transfer.batches.push(batch);
    }
    transfer.bytes = bytes.load(Ordering::Relaxed);
    Ok(transfer)
}

/// What one run measured, for side-by-side tables (`ftab-bench cluster`).
pub struct Summary {
    /// Both tables' ingests: rows and time.
    pub ingest_rows: u64,
    pub ingest: Duration,
    /// The training set, asked to last batch.
    pub training_set: Duration,
    pub training_set_rows: u64,
    /// What the check against the reference found.
    pub verified: String,
}

pub async fn run(args: TrainingSetArgs) -> anyhow::Result<()> {
    run_as(args, &crate::Deployment::Standalone { bucket: None })
        .await
        .map(|_| ())
}

/// Run the benchmark with the scheduler deployed as `deployment`; print its table.
pub async fn run_as(
    args: TrainingSetArgs,
    deployment: &crate::Deployment,
) -> anyhow::Result<Summary> {
    if args.ingests == 0 || args.table_rows < args.ingests {
        bail!("--ingests must be at least 1 and at most --table-rows");
    }
    let mut running = Running::start_as(deployment, args.parallelism, args.join).await?;
    let repository = format!(
        "{ENTITY}{}{}",
        table_definition("table_1", false, false, args.ttl_1.0),
        table_definition("table_2", false, args.merchants > 0, args.ttl_2.0)
    );
    let workspace = running.workspace(&repository).await?;
    let start = chrono::Utc::now().timestamp_micros() - args.days * DAY;
    let shape = Shape::of(&args, start);

    eprintln!(
        "ingesting 2 tables x {} rows ({} ingests each) ...",
        args.table_rows, args.ingests
    );
    let ingest_1 = ingest_table(&mut running, &args, &workspace, 1, shape).await?;
    let ingest_2 = ingest_table(&mut running, &args, &workspace, 2, shape).await?;

    eprintln!("uploading a spine of {} rows ...", args.spine_rows);
    reset_peak_memory();
    let spine_args = args.clone();
    let spine = (0..args.spine_rows)
        .step_by(BATCH_ROWS as usize)
        .map(move |first| {
            let rows = spine_batch(&spine_args, shape, first);
            let mut columns: Vec<(&str, ArrayRef)> = vec![(
                "user_id",
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| format!("user_{}", r.0)),
                )),
            )];
            if shape.merchants > 0 {
                columns.push((
                    "merchant_id",
                    Arc::new(Int64Array::from_iter_values(
                        rows.iter().map(|r| r.1.unwrap_or_default()),
                    )),
                ));
            }
            columns.push((
                "event_time",
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.2))
                        .with_timezone("UTC"),
                ),
            ));
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

    eprintln!("checking every row against the reference ...");
    let check_started = Instant::now();
    let batches: Vec<RecordBatch> = transfers.into_iter().flat_map(|t| t.batches).collect();
    let verified = verify(&args, shape, &batches)?;
    let checked_in = check_started.elapsed();

    println!(
        "ftab training-set benchmark: spine {} rows; 2 tables x {} rows, {} keys, {} merchants, {} ingests each ({}% re-sent); ttl {} / {}; {} endpoints",
        args.spine_rows,
        args.table_rows,
        args.keys,
        args.merchants,
        args.ingests,
        (args.resend * 100.0) as u64,
        ttl_text(args.ttl_1.0),
        ttl_text(args.ttl_2.0),
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
    println!(
        "{verified} (checked in {:.1} s, not timed)",
        checked_in.as_secs_f64()
    );
    Ok(Summary {
        ingest_rows: 2 * args.table_rows,
        ingest: ingest_1 + ingest_2,
        training_set: end_to_end,
        training_set_rows: rows,
        verified,
    })
}

fn ttl_text(ttl: Option<u32>) -> String {
    ttl.map_or_else(|| "none".into(), |d| format!("{d}d"))
}

/// A row as the reference keeps it: (timestamp, seq, row in its ingest, value).
type Write = (i64, u64, u64, u64);

/// One table's rows as the reference keeps them: per key (user, merchant), every row
/// sent, sorted: the order of writes.
struct Reference {
    rows: HashMap<(u64, Option<i64>), Vec<Write>>,
    ttl: Option<i64>,
}

impl Reference {
    /// Every row of `table` as the bench sent it, regenerated.
    fn build(args: &TrainingSetArgs, shape: Shape, table: u64, ttl_days: Option<u32>) -> Self {
        let mut rows: HashMap<(u64, Option<i64>), Vec<Write>> = HashMap::new();
        for ingest in 0..args.ingests {
            for i in 0..shape.per_ingest {
                let row = sent_row(shape, table, ingest, i);
                rows.entry((row.key, row.merchant)).or_default().push((
                    row.timestamp,
                    ingest + 1,
                    i,
                    row.value,
                ));
            }
        }
        for list in rows.values_mut() {
            list.sort_unstable();
        }
        Self {
            rows,
            ttl: ttl_days.map(|d| i64::from(d) * DAY),
        }
    }

    /// The point-in-time rule: the last write with timestamp <= t (and >= t - ttl).
    fn as_of(&self, key: (u64, Option<i64>), t: i64) -> Option<u64> {
        let list = self.rows.get(&key)?;
        let at = list.partition_point(|r| r.0 <= t);
        let row = list.get(at.checked_sub(1)?)?;
        match self.ttl {
            Some(ttl) if row.0 < t - ttl => None,
            _ => Some(row.3),
        }
    }
}

/// Check every row of the training set against [`Reference`]s built from the generator:
/// the spine's rows come back exactly once each, and each table's five features are
/// those of the row the point-in-time rule picks (or null). Errors name the first rows
/// that differ.
fn verify(args: &TrainingSetArgs, shape: Shape, batches: &[RecordBatch]) -> anyhow::Result<String> {
    let references = [
        Reference::build(args, shape, 1, args.ttl_1.0),
        Reference::build(args, shape, 2, args.ttl_2.0),
    ];
    let mut spine: Vec<SpineRow> = (0..args.spine_rows)
        .step_by(BATCH_ROWS as usize)
        .flat_map(|first| spine_batch(args, shape, first))
        .collect();
    let mut seen: Vec<SpineRow> = Vec::with_capacity(spine.len());
    let mut wrong: Vec<String> = Vec::new();
    let mut wrong_rows = 0u64;
    let mut with_values = [0u64; 2];
    for batch in batches {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .with_context(|| format!("the training set has no column {name}"))
        };
        let users = column("user_id")?.as_string::<i32>().clone();
        let merchants = if shape.merchants > 0 {
            Some(column("merchant_id")?.as_primitive::<Int64Type>().clone())
        } else {
            None
        };
        let times = column("event_time")?
            .as_primitive::<TimestampMicrosecondType>()
            .clone();
        let mut features = Vec::new();
        for table in 1..=2 {
            let f = |n: usize| column(&format!("table_{table}__f{n}"));
            features.push((
                f(1)?.as_primitive::<Float64Type>().clone(),
                f(2)?.as_primitive::<Float64Type>().clone(),
                f(3)?.as_primitive::<Float64Type>().clone(),
                f(4)?.as_primitive::<Int64Type>().clone(),
                f(5)?.as_primitive::<Int64Type>().clone(),
            ));
        }
        for i in 0..batch.num_rows() {
            let user: u64 = users
                .value(i)
                .strip_prefix("user_")
                .and_then(|k| k.parse().ok())
                .with_context(|| format!("unexpected user_id {}", users.value(i)))?;
            let merchant = merchants.as_ref().map(|m| m.value(i));
            let t = times.value(i);
            seen.push((user, merchant, t));
            let mut row_wrong = false;
            for (index, reference) in references.iter().enumerate() {
                let key = (user, if index == 1 { merchant } else { None });
                let want = reference.as_of(key, t).map(data::features);
                let (f1, f2, f3, f4, f5) = &features[index];
                let got = (!f4.is_null(i)).then(|| {
                    (
                        f1.value(i),
                        f2.value(i),
                        f3.value(i),
                        f4.value(i),
                        f5.value(i),
                    )
                });
                let all_null = f1.is_null(i) && f2.is_null(i) && f3.is_null(i) && f5.is_null(i);
                let consistent = got.is_some() || all_null;
                if got.is_some() {
                    with_values[index] += 1;
                }
                if got != want || !consistent {
                    row_wrong = true;
                    if wrong.len() < 5 {
                        wrong.push(format!(
                            "user_{user} merchant {merchant:?} at {t}: table_{}: got f4 {:?}, want {:?}",
                            index + 1,
                            got.map(|g| g.3),
                            want.map(|w| w.3)
                        ));
                    }
                }
            }
            wrong_rows += u64::from(row_wrong);
        }
    }
    spine.sort_unstable();
    seen.sort_unstable();
    if spine != seen {
        bail!(
            "the training set's spine rows are not the spine's: {} rows came back for {} sent, or some differ; no figures for a wrong result",
            seen.len(),
            spine.len()
        );
    }
    if wrong_rows > 0 {
        bail!(
            "the training set is wrong: {wrong_rows} of {} rows differ from the reference ({:.3} %); first: {}; no figures for a wrong result",
            seen.len(),
            wrong_rows as f64 * 100.0 / seen.len().max(1) as f64,
            wrong.join("; ")
        );
    }
    Ok(format!(
        "verified: all {} rows equal a point-in-time reference the bench computed from its own generator (rows with values: table_1 {}, table_2 {})",
        seen.len(),
        with_values[0],
        with_values[1]
    ))
}
