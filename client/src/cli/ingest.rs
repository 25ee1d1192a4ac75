//! `ftab ingest`: push data files into a feature table, one ingest per file.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::Args;
use serde::Serialize;

use ftab_model::names::{TableName, WorkspaceName};
use ftab_model::protocol::{IngestCommand, IngestResult, JobInfo};

use super::jobs;
use crate::error::CliError;
use crate::output::{self, OutputFormat, print};
use crate::{ClientError, FtabClient};

/// Push data files into a feature table: Parquet, CSV, JSON lines or Arrow IPC, one ingest
/// per file, in the order given (a later file wins ties). With --uri, ingest files in an
/// object store in place instead: the executors read them, nothing is uploaded.
#[derive(Debug, Args)]
pub struct IngestArgs {
    #[arg(long, short = 'w', env = "FTAB_WORKSPACE")]
    pub workspace: WorkspaceName,
    /// The feature table to ingest into.
    #[arg(long, short = 't')]
    pub table: TableName,
    /// Data files (.parquet, .csv, .jsonl, .arrow).
    #[arg(
        required_unless_present = "uri",
        conflicts_with = "uri",
        value_name = "FILE"
    )]
    pub files: Vec<PathBuf>,
    /// Ingest the files at this URI in place, as one ingest: one file, or every file of
    /// the format under a prefix (s3://bucket/path/, gs://, az://, file:// or an absolute
    /// path on the executors' machines).
    #[arg(long, value_name = "URI")]
    pub uri: Option<String>,
    /// With --uri: the files' format, `parquet`, `csv` or `json` (default: from the names).
    #[arg(long, requires = "uri", value_name = "FORMAT")]
    pub format: Option<ftab_model::protocol::FileFormat>,
    /// Follow each ingest's job until it ends; exit 1 if it fails.
    #[arg(long)]
    pub wait: bool,
    /// Make a retried upload a no-op that answers the first ingest's ids. With several
    /// files, file N (from 1) uses KEY-N.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// Drop columns the table does not have instead of refusing the ingest.
    #[arg(long)]
    pub drop_extra_columns: bool,
}

/// One file's ingest as `--output json` prints it: one line per file, with the job as it
/// ended under `--wait`.
#[derive(Debug, Serialize)]
struct Ingested<'a> {
    file: String,
    #[serde(flatten)]
    result: &'a IngestResult,
    #[serde(skip_serializing_if = "Option::is_none")]
    job: Option<&'a JobInfo>,
}

pub async fn run(
    client: &mut FtabClient,
    args: IngestArgs,
    format: OutputFormat,
) -> Result<(), CliError> {
    if let Some(uri) = args.uri.clone() {
        return run_uri(client, args, uri, format).await;
    }
    let listed = client.list_tables(Some(args.workspace.clone())).await?;
    let Some((_, schema)) = listed.into_iter().find(|(l, _)| l.table == args.table) else {
        // describe_table names the tables there are.
        client.describe_table(args.workspace, args.table).await?;
        return Ok(());
    };
    let several = args.files.len() > 1;
    for (index, path) in args.files.iter().enumerate() {
        let batches = crate::files::open(path, &schema)?;
        let key = args.idempotency_key.as_ref().map(|k| {
            if several {
                format!("{k}-{}", index + 1)
            } else {
                k.clone()
            }
        });
        let command = IngestCommand {
            workspace: args.workspace.clone(),
            table: args.table.clone(),
            idempotency_key: key,
            drop_extra_columns: args.drop_extra_columns,
            uri: None,
            format: None,
        };
        let rows = Arc::new(AtomicU64::new(0));
        let progress =
            (format == OutputFormat::Text && std::io::stderr().is_terminal()).then(|| {
                tokio::spawn(show_upload_progress(
                    path.display().to_string(),
                    rows.clone(),
                ))
            });
        let result = client.ingest(command, batches, rows).await;
        if let Some(progress) = progress {
            progress.abort();
            eprint!("\r\x1b[2K");
        }
        let result = result.map_err(|e| match e {
            ClientError::Server { code, message } => ClientError::Server {
                code,
                message: format!("{}: {message}", path.display()),
            },
            ClientError::Data(message) => {
                ClientError::Data(format!("{}: {message}", path.display()))
            }
            other => other,
        })?;
        report(
            client,
            &path.display().to_string(),
            &result,
            args.wait,
            format,
        )
        .await?;
    }
    Ok(())
}

/// `ftab ingest --uri`: one ingest of the files at the URI, read in place.
async fn run_uri(
    client: &mut FtabClient,
    args: IngestArgs,
    uri: String,
    format: OutputFormat,
) -> Result<(), CliError> {
    let command = IngestCommand {
        workspace: args.workspace.clone(),
        table: args.table.clone(),
        idempotency_key: args.idempotency_key.clone(),
        drop_extra_columns: args.drop_extra_columns,
        uri: Some(uri.clone()),
        format: args.format,
    };
    if format == OutputFormat::Text && std::io::stderr().is_terminal() {
        eprintln!("staging the files at {uri} on the executors ...");
    }
    let result: IngestResult = client
        .action(&ftab_model::protocol::Action::Ingest(command))
        .await?;
    report(client, &uri, &result, args.wait, format).await
}

/// Print an ingest's answer (text, or one JSON line with the job under `--wait`), follow
/// its job if asked; exit 1 if the job failed.
async fn report(
    client: &mut FtabClient,
    name: &str,
    result: &IngestResult,
    wait: bool,
    format: OutputFormat,
) -> Result<(), CliError> {
    if format == OutputFormat::Text {
        output::stdout(&format!(
            "{name}: {} {} rows as ingest {} (seq {}); job {}\n",
            if result.replayed {
                "already ingested (same idempotency key):"
            } else {
                "staged"
            },
            result.rows,
            result.ingest_id,
            result.seq,
            result.job_id
        ));
    }
    let job = if wait {
        Some(jobs::follow(client, result.job_id, format).await?)
    } else {
        None
    };
    if format == OutputFormat::Json {
        let line = Ingested {
            file: name.to_string(),
            result,
            job: job.as_ref(),
        };
        print(format, &line, |_| String::new());
    }
    if let Some(job) = &job {
        jobs::ended_well(job)?;
    }
    Ok(())
}

/// Rows uploaded so far, on one terminal line.
async fn show_upload_progress(name: String, rows: Arc<AtomicU64>) {
    let started = std::time::Instant::now();
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let sent = rows.load(Ordering::Relaxed);
        let rate = sent as f64 / started.elapsed().as_secs_f64().max(0.001);
        eprint!(
            "\r\x1b[2Kuploading {name}: {} rows ({} rows/s)",
            output::thousands(sent),
            output::thousands(rate as u64)
        );
    }
}
