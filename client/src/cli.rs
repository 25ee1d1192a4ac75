//! The `ftab` command line.
//!
//! Exit codes (scripts may rely on them): 0 success; 1 the request failed (the scheduler
//! refused it, the feature repository is invalid, confirmation was not given); 2 the command
//! line is wrong; 3 the scheduler cannot be reached. With `--output json` results and errors
//! are printed on stdout as JSON.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::{Args, Parser, Subcommand};
use serde::Serialize;

use ftab_model::ids::JobId;
use ftab_model::names::{TableName, WorkspaceName};
use ftab_model::protocol::{
    ApplyRequest, GetOnlineRequest, IngestCommand, JobInfo, JobState, ListJobsRequest, StepState,
    WorkspaceKind,
};
use ftab_model::repository;

pub use crate::error::CliError;
pub use crate::output::OutputFormat;
use crate::{ClientError, DEFAULT_SERVER, FtabClient, output};

#[derive(Debug, Parser)]
#[command(
    name = "ftab",
    version,
    about = "ftab: feature tables for training and serving",
    long_about = "ftab: feature tables for training and serving.\n\nDeclare entities, feature tables and feature services in a feature repository (a directory of TOML files), apply it to a workspace, and ftab keeps the feature values consistent offline (for training) and online (for serving).",
    after_help = "Getting started:\n  ftab-scheduler &                           # start a scheduler with embedded defaults\n  ftab workspace create prod --live\n  ftab plan examples/feature_repo --workspace prod\n  ftab apply examples/feature_repo --workspace prod --yes\n  ftab tables describe user_login_counts --workspace prod"
)]
pub struct Cli {
    /// The ftab scheduler to talk to.
    #[arg(long, global = true, env = "FTAB_SERVER", default_value = DEFAULT_SERVER, value_name = "URL")]
    pub server: String,

    /// How to print results: `text` for people, `json` for scripts.
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create and list workspaces.
    #[command(subcommand)]
    Workspace(WorkspaceCommand),

    /// Show what `apply` would change in a workspace, and which changes would break stored
    /// data.
    Plan(RepositoryArgs),

    /// Apply a feature repository to a workspace: exactly the changes `plan` shows, all at
    /// once.
    Apply {
        #[command(flatten)]
        repository: RepositoryArgs,

        /// Do not ask for confirmation (needed when stdin is not a terminal).
        #[arg(long, short = 'y')]
        yes: bool,

        /// Apply changes that break stored data. The feature tables concerned start on
        /// fresh, empty storage; their old data is no longer read.
        #[arg(long)]
        force: bool,
    },

    /// List and describe feature tables.
    #[command(subcommand)]
    Tables(TablesCommand),

    /// Push data files into a feature table: Parquet, CSV, JSON lines or Arrow IPC, one
    /// ingest per file, in the order given (a later file wins ties).
    Ingest {
        #[arg(long, short = 'w', env = "FTAB_WORKSPACE")]
        workspace: WorkspaceName,
        /// The feature table to ingest into.
        #[arg(long, short = 't')]
        table: TableName,
        /// Data files (.parquet, .csv, .jsonl, .arrow).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Follow each ingest's job until it ends; exit 1 if it fails.
        #[arg(long)]
        wait: bool,
        /// Make a retried upload a no-op that answers the first ingest's ids. With several
        /// files, file N (from 1) uses KEY-N.
        #[arg(long, value_name = "KEY")]
        idempotency_key: Option<String>,
        /// Drop columns the table does not have instead of refusing the ingest.
        #[arg(long)]
        drop_extra_columns: bool,
    },

    /// List, show, follow, cancel and retry jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),

    /// Get a point-in-time-correct training set: the features of a service (or a list)
    /// joined onto a spine of entity keys and times, written to a Parquet file.
    TrainingSet(crate::training_set::TrainingSetArgs),

    /// Show one entity's online record of a feature table (for inspection).
    Get {
        #[arg(long, short = 'w', env = "FTAB_WORKSPACE")]
        workspace: WorkspaceName,
        #[arg(long, short = 't')]
        table: TableName,
        /// A join key value, NAME=VALUE; repeat for composite keys.
        #[arg(long = "key", short = 'k', required = true, value_name = "NAME=VALUE", value_parser = parse_key)]
        keys: Vec<(String, String)>,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first.
    List {
        #[arg(long, short = 'w', env = "FTAB_WORKSPACE")]
        workspace: Option<WorkspaceName>,
        #[arg(long, short = 't')]
        table: Option<TableName>,
        /// Only jobs in this state: queued, running, succeeded, failed, cancelled.
        #[arg(long, value_parser = parse_state)]
        state: Option<JobState>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Show a job: state, steps, counts, last error.
    Show { job_id: JobId },
    /// Follow a job until it ends; exit 1 if it fails.
    Watch { job_id: JobId },
    /// Cancel a queued job, or a running one at its next step.
    Cancel { job_id: JobId },
    /// Run a failed or cancelled job again from its first step not done.
    Retry { job_id: JobId },
}

fn parse_key(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_string(), value.to_string()))
        }
        _ => Err(format!(
            "`{text}` is not NAME=VALUE, e.g. --key user_id=user_1"
        )),
    }
}

fn parse_state(text: &str) -> Result<JobState, String> {
    serde_json::from_value(serde_json::Value::String(text.to_string())).map_err(|_| {
        format!("unknown job state `{text}`; use queued, running, succeeded, failed or cancelled")
    })
}

#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// Create a workspace: `dev` (definitions only) unless --live (ingests and
    /// materializes).
    Create {
        /// Lowercase letters, digits and `_`, starting with a letter.
        name: WorkspaceName,
        /// Make it a live workspace, which ingests and materializes feature values.
        #[arg(long)]
        live: bool,
    },
    /// List workspaces with their kind and applied version.
    List,
}

#[derive(Debug, Subcommand)]
pub enum TablesCommand {
    /// List the feature tables of a workspace (of all workspaces without --workspace).
    List {
        #[arg(long, short = 'w', env = "FTAB_WORKSPACE")]
        workspace: Option<WorkspaceName>,
    },
    /// Describe a feature table: schema, keys, ttl, storage.
    Describe {
        table: TableName,
        #[arg(long, short = 'w', env = "FTAB_WORKSPACE")]
        workspace: WorkspaceName,
    },
}

#[derive(Debug, Args)]
pub struct RepositoryArgs {
    /// The feature repository: a directory of TOML files.
    #[arg(default_value = ".", value_name = "DIR")]
    pub dir: PathBuf,

    /// The workspace to compare with or apply to.
    #[arg(long, short = 'w', env = "FTAB_WORKSPACE")]
    pub workspace: WorkspaceName,
}

/// Run a parsed command line, print its result or error, and return the exit code.
pub async fn main(cli: Cli) -> ExitCode {
    let format = cli.output;
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            match format {
                OutputFormat::Text => eprintln!("error: {error}"),
                OutputFormat::Json => output::stdout(&format!(
                    "{}\n",
                    serde_json::json!({ "error": { "code": error.code(), "message": error.to_string() } })
                )),
            }
            ExitCode::from(error.exit_code())
        }
    }
}

/// Print `value` as JSON, or as the text `render` makes of it.
fn print<T: Serialize>(format: OutputFormat, value: &T, render: impl Fn(&T) -> String) {
    match format {
        OutputFormat::Text => output::stdout(&render(value)),
        OutputFormat::Json => output::stdout(&format!(
            "{}\n",
            serde_json::to_string_pretty(value).expect("answers serialize to JSON")
        )),
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let format = cli.output;
    // Read local input before connecting, so its errors come first.
    let files = match &cli.command {
        Command::Plan(repository) | Command::Apply { repository, .. } => {
            Some(repository::read_dir(&repository.dir)?)
        }
        _ => None,
    };
    let mut client = FtabClient::connect(&cli.server).await?;
    match cli.command {
        Command::Workspace(WorkspaceCommand::Create { name, live }) => {
            let kind = if live {
                WorkspaceKind::Live
            } else {
                WorkspaceKind::Dev
            };
            let info = client.create_workspace(name, kind).await?;
            print(format, &info, |w| {
                format!("Created {} workspace {}.\n", w.kind.as_str(), w.name)
            });
        }
        Command::Workspace(WorkspaceCommand::List) => {
            let list = client.list_workspaces().await?;
            print(format, &list, output::workspaces);
        }
        Command::Plan(repository) => {
            let files = files.expect("read above for plan");
            let plan = client.plan(repository.workspace, files).await?;
            print(format, &plan, output::plan);
        }
        Command::Apply {
            repository,
            yes,
            force,
        } => {
            let files = files.expect("read above for apply");
            let plan = client
                .plan(repository.workspace.clone(), files.clone())
                .await?;
            if plan.plan.is_empty() {
                print(format, &plan, output::plan);
                return Ok(());
            }
            if format == OutputFormat::Text {
                output::stdout(&output::plan(&plan));
            }
            let refused = plan.plan.breaking().next().is_some() && !force;
            // A plan the scheduler will refuse is sent without asking, so its refusal
            // (with the reasons) is what the user sees.
            if !yes && !refused {
                confirm(&format!(
                    "Apply these changes to workspace {}?",
                    repository.workspace
                ))?;
            }
            let applied = client
                .apply(ApplyRequest {
                    workspace: repository.workspace,
                    files,
                    force,
                    expected_version: Some(plan.current_version),
                })
                .await?;
            print(format, &applied, output::apply);
        }
        Command::Tables(TablesCommand::List { workspace }) => {
            let tables = client.list_tables(workspace).await?;
            let listings: Vec<_> = tables.into_iter().map(|(listing, _)| listing).collect();
            print(format, &listings, |l| output::tables(l));
        }
        Command::Tables(TablesCommand::Describe { table, workspace }) => {
            let description = client.describe_table(workspace, table).await?;
            print(format, &description, output::describe);
        }
        Command::Ingest {
            workspace,
            table,
            files,
            wait,
            idempotency_key,
            drop_extra_columns,
        } => {
            let listed = client.list_tables(Some(workspace.clone())).await?;
            let Some((_, schema)) = listed.into_iter().find(|(l, _)| l.table == table) else {
                // describe_table names the tables there are.
                client.describe_table(workspace, table).await?;
                return Ok(());
            };
            let several = files.len() > 1;
            for (index, path) in files.iter().enumerate() {
                let batches = crate::files::open(path, &schema)?;
                let key = idempotency_key.as_ref().map(|k| {
                    if several {
                        format!("{k}-{}", index + 1)
                    } else {
                        k.clone()
                    }
                });
                let command = IngestCommand {
                    workspace: workspace.clone(),
                    table: table.clone(),
                    idempotency_key: key,
                    drop_extra_columns,
                };
                let rows = Arc::new(AtomicU64::new(0));
                let progress = (format == OutputFormat::Text && std::io::stderr().is_terminal())
                    .then(|| {
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
                print(format, &result, |r| {
                    format!(
                        "{}: {} {} rows as ingest {} (seq {}); job {}\n",
                        path.display(),
                        if r.replayed {
                            "already ingested (same idempotency key):"
                        } else {
                            "staged"
                        },
                        r.rows,
                        r.ingest_id,
                        r.seq,
                        r.job_id
                    )
                });
                if wait {
                    watch_job(&mut client, result.job_id, format).await?;
                }
            }
        }
        Command::Jobs(JobsCommand::List {
            workspace,
            table,
            state,
            limit,
        }) => {
            let jobs = client
                .list_jobs(ListJobsRequest {
                    workspace,
                    table,
                    state,
                    limit: Some(limit),
                })
                .await?;
            print(format, &jobs, |j| output::jobs(&j.jobs));
        }
        Command::Jobs(JobsCommand::Show { job_id }) => {
            let job = client.job(job_id).await?;
            print(format, &job, output::job);
        }
        Command::Jobs(JobsCommand::Watch { job_id }) => {
            watch_job(&mut client, job_id, format).await?;
        }
        Command::Jobs(JobsCommand::Cancel { job_id }) => {
            let job = client.cancel_job(job_id).await?;
            print(format, &job, |j| match j.state {
                JobState::Running => format!("Job {} will stop at its next step.\n", j.job_id),
                _ => format!("Job {} cancelled.\n", j.job_id),
            });
        }
        Command::Jobs(JobsCommand::Retry { job_id }) => {
            let job = client.retry_job(job_id).await?;
            print(format, &job, |j| {
                format!(
                    "Job {} queued again (attempt {} next).\n",
                    j.job_id,
                    j.attempts + 1
                )
            });
        }
        Command::TrainingSet(args) => {
            let summary = crate::training_set::run(&mut client, args, format).await?;
            print(format, &summary, crate::training_set::render);
        }
        Command::Get {
            workspace,
            table,
            keys,
        } => {
            let record = client
                .get_online(GetOnlineRequest {
                    workspace,
                    table,
                    keys: keys.into_iter().collect(),
                })
                .await?;
            print(format, &record, output::online_record);
        }
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

/// Follow a job until it ends, printing each step as it completes (text) or the final job
/// (JSON). A failed or cancelled job is an error.
async fn watch_job(
    client: &mut FtabClient,
    job_id: JobId,
    format: OutputFormat,
) -> Result<JobInfo, CliError> {
    let mut shown: Option<(JobState, Vec<(String, StepState)>, u32)> = None;
    loop {
        let job = client.job(job_id).await?;
        let now = (
            job.state,
            job.steps
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect::<Vec<_>>(),
            job.attempts,
        );
        if format == OutputFormat::Text && shown.as_ref() != Some(&now) {
            output::stdout(&format!("{}\n", output::job_progress(&job)));
            shown = Some(now);
        }
        if job.state.is_final() {
            if format == OutputFormat::Json {
                print(format, &job, |_| String::new());
            } else if job.state == JobState::Succeeded {
                output::stdout(&output::job_counts(&job));
            }
            return match job.state {
                JobState::Succeeded => Ok(job),
                JobState::Cancelled => Err(CliError::JobFailed {
                    job_id,
                    state: "was cancelled",
                    message: "`ftab jobs retry` runs it again".into(),
                }),
                _ => Err(CliError::JobFailed {
                    job_id,
                    state: "failed",
                    message: job
                        .last_error
                        .clone()
                        .unwrap_or_else(|| "no error recorded".into()),
                }),
            };
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// Ask on the terminal; refuse when there is none.
fn confirm(question: &str) -> Result<(), CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::NotConfirmed(
            "not applied: stdin is not a terminal, so nobody can confirm; pass --yes to apply without asking".into(),
        ));
    }
    let mut stderr = std::io::stderr();
    write!(stderr, "{question} [y/N] ").map_err(|source| CliError::Io {
        what: "ask for confirmation",
        source,
    })?;
    stderr.flush().map_err(|source| CliError::Io {
        what: "ask for confirmation",
        source,
    })?;
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|source| CliError::Io {
            what: "read the answer",
            source,
        })?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        Err(CliError::NotConfirmed("not applied: not confirmed".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_parses_and_validates_names() {
        let cli =
            Cli::try_parse_from(["ftab", "apply", "repo", "--workspace", "prod", "--yes"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Apply {
                yes: true,
                force: false,
                ..
            }
        ));
        assert_eq!(cli.server, DEFAULT_SERVER);

        let err = Cli::try_parse_from(["ftab", "plan", "--workspace", "../etc"]).unwrap_err();
        assert!(
            err.to_string().contains("not a valid workspace name"),
            "{err}"
        );

        let cli = Cli::try_parse_from([
            "ftab",
            "--output",
            "json",
            "workspace",
            "create",
            "prod",
            "--live",
        ])
        .unwrap();
        assert_eq!(cli.output, OutputFormat::Json);
        assert!(matches!(
            cli.command,
            Command::Workspace(WorkspaceCommand::Create { live: true, .. })
        ));
    }

    #[test]
    fn exit_codes_and_json_codes() {
        let unreachable = CliError::Client(ClientError::Unreachable {
            url: "http://x".into(),
            reason: "refused".into(),
        });
        assert_eq!(unreachable.exit_code(), 3);
        let refused = CliError::Client(ClientError::Server {
            code: tonic::Code::FailedPrecondition,
            message: "no".into(),
        });
        assert_eq!(refused.exit_code(), 1);
        assert_eq!(refused.code(), "failed_precondition");
    }
}
