//! The `ftab` command line: one module per command group.
//!
//! Exit codes (scripts may rely on them): 0 success; 1 the request failed (the scheduler
//! refused it, the feature repository is invalid, confirmation was not given); 2 the command
//! line is wrong; 3 the scheduler cannot be reached.
//!
//! With `--output json`, everything a command prints on stdout is JSON lines: one compact
//! JSON document per line, one line per result (one per file for `ingest`), and an error
//! (a wrong command line included) as a last line `{"error": {"code", "message"}}`
//! (docs/cli.md).

mod get;
mod ingest;
mod jobs;
mod repository;
mod tables;
pub mod training_set;
mod workspace;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use ftab_model::repository as feature_repository;

pub use crate::error::CliError;
pub use crate::output::OutputFormat;
use crate::{DEFAULT_SERVER, FtabClient, output};
pub use get::GetArgs;
pub use ingest::IngestArgs;
pub use jobs::JobsCommand;
pub use repository::{ApplyArgs, RepositoryArgs};
pub use tables::TablesCommand;
pub use training_set::TrainingSetArgs;
pub use workspace::WorkspaceCommand;

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
    Apply(ApplyArgs),

    /// List and describe feature tables.
    #[command(subcommand)]
    Tables(TablesCommand),

    /// Push data files into a feature table: Parquet, CSV, JSON lines or Arrow IPC, one
    /// ingest per file, in the order given (a later file wins ties).
    Ingest(IngestArgs),

    /// List, show, follow, cancel and retry jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),

    /// Get a point-in-time-correct training set: the features of a service (or a list)
    /// joined onto a spine of entity keys and times, written to a Parquet file.
    TrainingSet(TrainingSetArgs),

    /// Show one entity's online record of a feature table (for inspection).
    Get(GetArgs),
}

/// Parse `args` (the program name first), run the command, print its result or error, and
/// return the exit code. A wrong command line is printed as clap words it, or under
/// `--output json` as a JSON error line; both exit 2.
pub async fn main_from<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    match Cli::try_parse_from(&args) {
        Ok(cli) => main(cli).await,
        Err(error) => {
            let usage = error.use_stderr();
            if usage && wants_json(&args) {
                let message = error.render().to_string();
                output::stdout(&format!(
                    "{}\n",
                    serde_json::json!({ "error": { "code": "usage", "message": message.trim_end() } })
                ));
                return ExitCode::from(2);
            }
            // Help and version go to stdout with 0; usage errors to stderr with 2.
            let _ = error.print();
            ExitCode::from(if usage { 2 } else { 0 })
        }
    }
}

/// Whether a command line that did not parse asked for `--output json`.
fn wants_json(args: &[OsString]) -> bool {
    args.iter().any(|arg| arg == "--output=json")
        || args
            .windows(2)
            .any(|pair| pair[0] == "--output" && pair[1] == "json")
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

async fn run(cli: Cli) -> Result<(), CliError> {
    let format = cli.output;
    // Read local input before connecting, so its errors come first.
    let files = match &cli.command {
        Command::Plan(repository) | Command::Apply(ApplyArgs { repository, .. }) => {
            feature_repository::read_dir(&repository.dir)?
        }
        _ => Vec::new(),
    };
    let mut client = FtabClient::connect(&cli.server).await?;
    match cli.command {
        Command::Workspace(command) => workspace::run(&mut client, command, format).await,
        Command::Plan(args) => repository::plan(&mut client, args, files, format).await,
        Command::Apply(args) => repository::apply(&mut client, args, files, format).await,
        Command::Tables(command) => tables::run(&mut client, command, format).await,
        Command::Ingest(args) => ingest::run(&mut client, args, format).await,
        Command::Jobs(command) => jobs::run(&mut client, command, format).await,
        Command::TrainingSet(args) => {
            let summary = training_set::run(&mut client, args, format).await?;
            output::print(format, &summary, training_set::render);
            Ok(())
        }
        Command::Get(args) => get::run(&mut client, args, format).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClientError;

    #[test]
    fn command_line_parses_and_validates_names() {
        let cli =
            Cli::try_parse_from(["ftab", "apply", "repo", "--workspace", "prod", "--yes"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Apply(ApplyArgs {
                yes: true,
                force: false,
                ..
            })
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
