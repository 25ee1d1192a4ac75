//! `ftab plan` and `ftab apply`: compare a feature repository with a workspace, and apply
//! it.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use clap::Args;

use ftab_model::names::WorkspaceName;
use ftab_model::protocol::ApplyRequest;
use ftab_model::repository::RepositoryFile;

use crate::FtabClient;
use crate::error::CliError;
use crate::output::{self, OutputFormat, print};

#[derive(Debug, Args)]
pub struct RepositoryArgs {
    /// The feature repository: a directory of TOML files.
    #[arg(default_value = ".", value_name = "DIR")]
    pub dir: PathBuf,

    /// The workspace to compare with or apply to.
    #[arg(long, short = 'w', env = "FTAB_WORKSPACE")]
    pub workspace: WorkspaceName,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub repository: RepositoryArgs,

    /// Do not ask for confirmation (needed when stdin is not a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Apply changes that break stored data. The feature tables concerned start on
    /// fresh, empty storage; their old data is no longer read.
    #[arg(long)]
    pub force: bool,
}

/// Print what applying `files` would change.
pub async fn plan(
    client: &mut FtabClient,
    args: RepositoryArgs,
    files: Vec<RepositoryFile>,
    format: OutputFormat,
) -> Result<(), CliError> {
    let plan = client.plan(args.workspace, files).await?;
    print(format, &plan, output::plan);
    Ok(())
}

/// Show the plan, ask (unless --yes), apply exactly that plan.
pub async fn apply(
    client: &mut FtabClient,
    args: ApplyArgs,
    files: Vec<RepositoryFile>,
    format: OutputFormat,
) -> Result<(), CliError> {
    let workspace = args.repository.workspace;
    let plan = client.plan(workspace.clone(), files.clone()).await?;
    if plan.plan.is_empty() {
        print(format, &plan, output::plan);
        return Ok(());
    }
    if format == OutputFormat::Text {
        output::stdout(&output::plan(&plan));
    }
    let refused = plan.plan.breaking().next().is_some() && !args.force;
    // A plan the scheduler will refuse is sent without asking, so its refusal (with the
    // reasons) is what the user sees.
    if !args.yes && !refused {
        confirm(&format!("Apply these changes to workspace {workspace}?"))?;
    }
    let applied = client
        .apply(ApplyRequest {
            workspace,
            files,
            force: args.force,
            expected_version: Some(plan.current_version),
        })
        .await?;
    print(format, &applied, output::apply);
    Ok(())
}

/// Ask on the terminal; refuse when there is none.
fn confirm(question: &str) -> Result<(), CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::NotConfirmed(
            "not applied: stdin is not a terminal, so nobody can confirm; pass --yes to apply without asking".into(),
        ));
    }
    let io = |what: &'static str| move |source| CliError::Io { what, source };
    let mut stderr = std::io::stderr();
    write!(stderr, "{question} [y/N] ").map_err(io("ask for confirmation"))?;
    stderr.flush().map_err(io("ask for confirmation"))?;
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(io("read the answer"))?;
    if matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        Err(CliError::NotConfirmed("not applied: not confirmed".into()))
    }
}
