//! `ftab tables`: list and describe feature tables.

use clap::Subcommand;

use ftab_model::names::{TableName, WorkspaceName};

use crate::FtabClient;
use crate::error::CliError;
use crate::output::{self, OutputFormat, print};

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

pub async fn run(
    client: &mut FtabClient,
    command: TablesCommand,
    format: OutputFormat,
) -> Result<(), CliError> {
    match command {
        TablesCommand::List { workspace } => {
            let tables = client.list_tables(workspace).await?;
            let listings: Vec<_> = tables.into_iter().map(|(listing, _)| listing).collect();
            print(format, &listings, |l| output::tables(l));
        }
        TablesCommand::Describe { table, workspace } => {
            let description = client.describe_table(workspace, table).await?;
            print(format, &description, output::describe);
        }
    }
    Ok(())
}
