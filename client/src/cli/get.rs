//! `ftab get`: one entity's online record of a feature table.

use clap::Args;

use ftab_model::names::{TableName, WorkspaceName};
use ftab_model::protocol::GetOnlineRequest;

use crate::FtabClient;
use crate::error::CliError;
use crate::output::{self, OutputFormat, print};

/// Show one entity's online record of a feature table (for inspection).
#[derive(Debug, Args)]
pub struct GetArgs {
    #[arg(long, short = 'w', env = "FTAB_WORKSPACE")]
    pub workspace: WorkspaceName,
    #[arg(long, short = 't')]
    pub table: TableName,
    /// A join key value, NAME=VALUE; repeat for composite keys.
    #[arg(long = "key", short = 'k', required = true, value_name = "NAME=VALUE", value_parser = parse_key)]
    pub keys: Vec<(String, String)>,
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

pub async fn run(
    client: &mut FtabClient,
    args: GetArgs,
    format: OutputFormat,
) -> Result<(), CliError> {
    let record = client
        .get_online(GetOnlineRequest {
            workspace: args.workspace,
            table: args.table,
            keys: args.keys.into_iter().collect(),
        })
        .await?;
    print(format, &record, output::online_record);
    Ok(())
}
