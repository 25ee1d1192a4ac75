//! `ftab training-set`: upload a spine (or name one by URI), ask for a training set, and
//! download every endpoint into one Parquet file, with progress.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use futures::StreamExt;
use serde::Serialize;

use ftab_model::definitions::FeatureRef;
use ftab_model::names::{ServiceName, SpineName, TableName, WorkspaceName};
use ftab_model::protocol::{AsOf, AsOfRequest, SpineSource, TrainingSetRequest, TrainingSetTable};

use crate::error::CliError;
use crate::output::OutputFormat;
use crate::{ClientError, FtabClient, output};

/// Get a point-in-time-correct training set into a Parquet file.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  ftab training-set -w prod --service fraud_detection --spine labels.parquet --out train.parquet\n  ftab training-set -w prod --features user_login_counts,user_merchant_stats.amount_mean_7d \\\n      --spine s3://bucket/spines/2024-05/ --out train.parquet --as-of user_login_counts=12"
)]
pub struct TrainingSetArgs {
    #[arg(long, short = 'w', env = "FTAB_WORKSPACE")]
    pub workspace: WorkspaceName,

    /// The feature service whose features to join.
    #[arg(
        long,
        short = 's',
        conflicts_with = "features",
        required_unless_present = "features"
    )]
    pub service: Option<ServiceName>,

    /// Features instead of a service, comma-separated: `table` (all its features) or
    /// `table.feature`.
    #[arg(long, value_delimiter = ',', value_name = "TABLE[.FEATURE],...")]
    pub features: Vec<FeatureRef>,

    /// The spine: a local file (.parquet, .csv, .jsonl, .arrow) that is uploaded first, or
    /// the URI of Parquet files the scheduler can read (s3://, gs://, az://, file://).
    #[arg(long, value_name = "FILE|URI")]
    pub spine: String,

    /// Where to write the training set (Parquet). Written whole or not at all.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,

    /// The spine's time column (default: its only timestamp column).
    #[arg(long, value_name = "COLUMN")]
    pub timestamp_column: Option<String>,

    /// Read the tables as of a Delta version or a time: `3`, `2024-05-01T00:00:00Z`, or
    /// per table `TABLE=3,TABLE=2024-05-01T00:00:00Z`. The answer prints the versions
    /// read, to pin a training set for later.
    #[arg(long, value_parser = parse_as_of, value_name = "SPEC")]
    pub as_of: Option<AsOfRequest>,

    /// Name feature columns by the feature alone instead of `<table>__<feature>` (refused
    /// when two would collide).
    #[arg(long)]
    pub bare_names: bool,

    /// Endpoints downloaded at once.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub parallel: usize,
}

/// `3`, `2024-05-01T00:00:00Z`, or `table=3,table=2024-05-01T00:00:00Z`.
pub fn parse_as_of(text: &str) -> Result<AsOfRequest, String> {
    if !text.contains('=') {
        return text.trim().parse::<AsOf>().map(AsOfRequest::All);
    }
    let mut tables = BTreeMap::new();
    for part in text.split(',') {
        let (table, point) = part
            .split_once('=')
            .ok_or_else(|| format!("`{part}` is not TABLE=VERSION or TABLE=TIME"))?;
        let table = TableName::new(table.trim()).map_err(|e| e.to_string())?;
        tables.insert(table, point.trim().parse::<AsOf>()?);
    }
    Ok(AsOfRequest::PerTable(tables))
}

/// What the command reports.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub training_set_id: String,
    pub rows: u64,
    pub endpoints: usize,
    pub out: PathBuf,
    pub bytes: u64,
    pub seconds: f64,
    pub tables: Vec<TrainingSetTable>,
    pub timestamp_column: String,
}

pub async fn run(
    client: &mut FtabClient,
    args: TrainingSetArgs,
    format: OutputFormat,
) -> Result<Summary, CliError> {
    let started = Instant::now();
    let terminal = format == OutputFormat::Text && std::io::stderr().is_terminal();
    let spine = if args.spine.contains("://") {
        SpineSource::Uri {
            uri: args.spine.clone(),
        }
    } else {
        let path = Path::new(&args.spine);
        if !path.exists() {
            return Err(CliError::LocalFile {
                path: path.to_path_buf(),
                message: "the spine file does not exist; give a local file or a URI such as s3://bucket/spine.parquet".into(),
            });
        }
        let types = spine_types(client, &args).await?;
        let batches = crate::files::open(path, &types)?;
        let name = SpineName::new(format!("cli_{}", uuid::Uuid::now_v7().simple()))
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let rows = Arc::new(AtomicU64::new(0));
        let progress = terminal.then(|| {
            tokio::spawn(show_progress(
                format!("uploading spine {}", path.display()),
                rows.clone(),
                None,
            ))
        });
        let stored = client.put_spine(name, batches, rows).await;
        if let Some(progress) = progress {
            progress.abort();
            eprint!("\r\x1b[2K");
        }
        let stored = stored.map_err(|e| match e {
            ClientError::Server { code, message } => CliError::Client(ClientError::Server {
                code,
                message: format!("spine {}: {message}", path.display()),
            }),
            ClientError::Data(message) => CliError::LocalFile {
                path: path.to_path_buf(),
                message: format!("the spine: {message}"),
            },
            other => other.into(),
        })?;
        SpineSource::Name { name: stored.name }
    };

    let request = TrainingSetRequest {
        workspace: args.workspace.clone(),
        feature_service: args.service.clone(),
        features: (!args.features.is_empty()).then(|| args.features.clone()),
        spine: Some(spine),
        timestamp_column: args.timestamp_column.clone(),
        as_of: args.as_of.clone(),
        full_feature_names: !args.bare_names,
    };
    let (info, metadata) = client.training_set(request).await?;
    let schema: SchemaRef = Arc::new(
        info.clone()
            .try_decode_schema()
            .map_err(|e| ClientError::Protocol(format!("training set schema: {e}")))?,
    );
    if terminal {
        eprintln!(
            "{}",
            output::training_set_plan(&metadata, info.endpoint.len())
        );
    }
    let tickets: Vec<arrow_flight::Ticket> = info
        .endpoint
        .iter()
        .map(|e| {
            e.ticket
                .clone()
                .ok_or_else(|| ClientError::Protocol("an endpoint has no ticket".into()))
        })
        .collect::<Result<_, _>>()?;

    let rows = Arc::new(AtomicU64::new(0));
    let progress = terminal.then(|| {
        tokio::spawn(show_progress(
            "receiving the training set".into(),
            rows.clone(),
            Some(metadata.rows),
        ))
    });
    let written = download(client, tickets, schema, &args, rows.clone()).await;
    if let Some(progress) = progress {
        progress.abort();
        eprint!("\r\x1b[2K");
    }
    let (rows, bytes) = written?;
    Ok(Summary {
        training_set_id: metadata.training_set_id.clone(),
        rows,
        endpoints: info.endpoint.len(),
        out: args.out,
        bytes,
        seconds: started.elapsed().as_secs_f64(),
        tables: metadata.tables.clone(),
        timestamp_column: metadata.timestamp_column.clone(),
    })
}

/// Types for a text spine's columns: each column named like a column of the workspace's
/// tables gets that column's type, the time column (if named) a timestamp; the rest stay
/// text.
async fn spine_types(client: &mut FtabClient, args: &TrainingSetArgs) -> Result<Schema, CliError> {
    let mut fields: BTreeMap<String, DataType> = BTreeMap::new();
    for (_, schema) in client.list_tables(Some(args.workspace.clone())).await? {
        for field in schema.fields() {
            fields
                .entry(field.name().clone())
                .or_insert_with(|| field.data_type().clone());
        }
    }
    if let Some(column) = &args.timestamp_column {
        fields.insert(
            column.clone(),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        );
    }
    Ok(Schema::new(
        fields
            .into_iter()
            .map(|(name, data_type)| Field::new(name, data_type, true))
            .collect::<Vec<_>>(),
    ))
}

/// Fetch every endpoint (`args.parallel` at a time) into `args.out`, through a temporary
/// file renamed at the end. Returns rows and bytes written.
async fn download(
    client: &FtabClient,
    tickets: Vec<arrow_flight::Ticket>,
    schema: SchemaRef,
    args: &TrainingSetArgs,
    rows: Arc<AtomicU64>,
) -> Result<(u64, u64), CliError> {
    let partial = args.out.with_extension("parquet.partial");
    let file = std::fs::File::create(&partial).map_err(|e| CliError::LocalFile {
        path: args.out.clone(),
        message: format!(
            "cannot write the output (creating {} failed: {e})",
            partial.display()
        ),
    })?;
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<RecordBatch>(8);
    let writer_schema = schema.clone();
    let writer = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, writer_schema.clone(), None)
            .map_err(|e| e.to_string())?;
        while let Some(batch) = receiver.blocking_recv() {
            let batch = RecordBatch::try_new(writer_schema.clone(), batch.columns().to_vec())
                .map_err(|e| e.to_string())?;
            writer.write(&batch).map_err(|e| e.to_string())?;
        }
        writer.close().map_err(|e| e.to_string())?;
        Ok(())
    });
    let mut fetches = futures::stream::iter(tickets.into_iter().map(|ticket| {
        let sender = sender.clone();
        let rows = rows.clone();
        async move {
            let mut client = client.reconnect().await?;
            let mut stream = client.fetch(ticket).await?;
            while let Some(batch) = stream.next().await {
                let batch = batch.map_err(|e| ClientError::from_flight(client.url(), e))?;
                rows.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                if sender.send(batch).await.is_err() {
                    break;
                }
            }
            Ok::<(), ClientError>(())
        }
    }))
    .buffer_unordered(args.parallel.max(1));
    let mut failure = None;
    while let Some(result) = fetches.next().await {
        if let Err(e) = result {
            failure = Some(e);
            break;
        }
    }
    drop(fetches);
    drop(sender);
    let written = writer
        .await
        .map_err(|e| ClientError::Protocol(format!("the writer stopped: {e}")));
    let cleanup = |error: CliError| {
        let _ = std::fs::remove_file(&partial);
        error
    };
    if let Some(error) = failure {
        return Err(cleanup(error.into()));
    }
    if let Err(message) = written.map_err(|e| cleanup(e.into()))? {
        return Err(cleanup(CliError::LocalFile {
            path: args.out.clone(),
            message: format!("cannot write the output: {message}"),
        }));
    }
    std::fs::rename(&partial, &args.out).map_err(|e| {
        cleanup(CliError::LocalFile {
            path: args.out.clone(),
            message: format!("cannot move the finished output into place: {e}"),
        })
    })?;
    let bytes = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    Ok((rows.load(Ordering::Relaxed), bytes))
}

/// Rows so far (of `total`), on one terminal line.
async fn show_progress(what: String, rows: Arc<AtomicU64>, total: Option<u64>) {
    let started = Instant::now();
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let done = rows.load(Ordering::Relaxed);
        let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
        let of = total
            .map(|t| format!(" of {}", output::thousands(t)))
            .unwrap_or_default();
        eprint!(
            "\r\x1b[2K{what}: {}{of} rows ({} rows/s)",
            output::thousands(done),
            output::thousands(rate as u64)
        );
    }
}

/// The summary in words.
pub fn render(summary: &Summary) -> String {
    let mut out = format!(
        "Wrote {} rows to {} ({}) in {:.1}s: training set {}, time column `{}`.\n",
        output::thousands(summary.rows),
        summary.out.display(),
        output::bytes(summary.bytes),
        summary.seconds,
        summary.training_set_id,
        summary.timestamp_column
    );
    for table in &summary.tables {
        out.push_str(&format!(
            "  {}: {}, {} of {} files read\n",
            table.table,
            table
                .delta_version
                .map(|v| format!("Delta version {v} (pin with --as-of {}={v})", table.table))
                .unwrap_or_else(|| "no data at that point".into()),
            table.files_read,
            table.files_total
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_of_specs_parse() {
        assert_eq!(
            parse_as_of("3").unwrap(),
            AsOfRequest::All(AsOf::Version(3))
        );
        assert!(matches!(
            parse_as_of("2024-05-01T00:00:00Z").unwrap(),
            AsOfRequest::All(AsOf::Time(_))
        ));
        let AsOfRequest::PerTable(tables) = parse_as_of("t1=3, t2=2024-05-01T00:00:00Z").unwrap()
        else {
            panic!("per table");
        };
        assert_eq!(tables.len(), 2);
        assert_eq!(tables[&TableName::new("t1").unwrap()], AsOf::Version(3));
        assert!(
            parse_as_of("yesterday")
                .unwrap_err()
                .contains("neither a Delta version")
        );
        assert!(
            parse_as_of("T/x=3")
                .unwrap_err()
                .contains("not a valid feature table name")
        );
    }
}
