//! `ftab jobs`: list, show, follow, cancel and retry jobs.

use clap::Subcommand;

use ftab_model::ids::JobId;
use ftab_model::names::{TableName, WorkspaceName};
use ftab_model::protocol::{JobInfo, JobState, ListJobsRequest, StepState};

use crate::FtabClient;
use crate::error::CliError;
use crate::output::{self, OutputFormat, print};

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

fn parse_state(text: &str) -> Result<JobState, String> {
    serde_json::from_value(serde_json::Value::String(text.to_string())).map_err(|_| {
        format!("unknown job state `{text}`; use queued, running, succeeded, failed or cancelled")
    })
}

pub async fn run(
    client: &mut FtabClient,
    command: JobsCommand,
    format: OutputFormat,
) -> Result<(), CliError> {
    match command {
        JobsCommand::List {
            workspace,
            table,
            state,
            limit,
        } => {
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
        JobsCommand::Show { job_id } => {
            let job = client.job(job_id).await?;
            print(format, &job, output::job);
        }
        JobsCommand::Watch { job_id } => {
            let job = follow(client, job_id, format).await?;
            if format == OutputFormat::Json {
                print(format, &job, |_| String::new());
            }
            ended_well(&job)?;
        }
        JobsCommand::Cancel { job_id } => {
            let job = client.cancel_job(job_id).await?;
            print(format, &job, |j| match j.state {
                JobState::Running => format!("Job {} will stop at its next step.\n", j.job_id),
                _ => format!("Job {} cancelled.\n", j.job_id),
            });
        }
        JobsCommand::Retry { job_id } => {
            let job = client.retry_job(job_id).await?;
            print(format, &job, |j| {
                format!(
                    "Job {} queued again (attempt {} next).\n",
                    j.job_id,
                    j.attempts + 1
                )
            });
        }
    }
    Ok(())
}

/// Follow a job until it ends and return it as it ended. In text, each step is printed as
/// it completes, and the counts when the job succeeded; in JSON nothing is printed (the
/// caller prints the job).
pub async fn follow(
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
            if format == OutputFormat::Text && job.state == JobState::Succeeded {
                output::stdout(&output::job_counts(&job));
            }
            return Ok(job);
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// A job that ended failed or cancelled, as an error (exit 1).
pub fn ended_well(job: &JobInfo) -> Result<(), CliError> {
    match job.state {
        JobState::Succeeded => Ok(()),
        JobState::Cancelled => Err(CliError::JobFailed {
            job_id: job.job_id,
            state: "was cancelled",
            message: "`ftab jobs retry` runs it again".into(),
        }),
        _ => Err(CliError::JobFailed {
            job_id: job.job_id,
            state: "failed",
            message: job
                .last_error
                .clone()
                .unwrap_or_else(|| "no error recorded".into()),
        }),
    }
}
