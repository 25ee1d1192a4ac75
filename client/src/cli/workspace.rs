//! `ftab workspace`: create and list workspaces.

use clap::Subcommand;

use ftab_model::names::WorkspaceName;
use ftab_model::protocol::WorkspaceKind;

use crate::FtabClient;
use crate::error::CliError;
use crate::output::{self, OutputFormat, print};

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

pub async fn run(
    client: &mut FtabClient,
    command: WorkspaceCommand,
    format: OutputFormat,
) -> Result<(), CliError> {
    match command {
        WorkspaceCommand::Create { name, live } => {
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
        WorkspaceCommand::List => {
            let list = client.list_workspaces().await?;
            print(format, &list, output::workspaces);
        }
    }
    Ok(())
}
