//! `ftab get`: one entity's online record of a feature table (over Flight), or its feature
//! vector from a feature service (over the feature server's HTTP API).

use clap::Args;

use ftab_model::names::{TableName, WorkspaceName};
use ftab_model::protocol::GetOnlineRequest;

use crate::FtabClient;
use crate::error::CliError;
use crate::output::{self, OutputFormat, print};

/// Show one entity's online record of a feature table (for inspection), or with
/// --service its feature vector as a model gets it from the feature server.
#[derive(Debug, Args)]
pub struct GetArgs {
    #[arg(long, short = 'w', env = "FTAB_WORKSPACE")]
    pub workspace: WorkspaceName,
    #[arg(
        long,
        short = 't',
        required_unless_present = "service",
        conflicts_with = "service"
    )]
    pub table: Option<TableName>,
    /// A feature service: its features for the entity, from the feature server's HTTP API.
    #[arg(long, short = 's')]
    pub service: Option<String>,
    /// The feature server's HTTP API (with --service).
    #[arg(
        long,
        env = "FTAB_HTTP",
        default_value = "http://127.0.0.1:50052",
        value_name = "URL"
    )]
    pub http: String,
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
    let Some(table) = args.table else {
        return run_service(args, format).await;
    };
    let record = client
        .get_online(GetOnlineRequest {
            workspace: args.workspace,
            table,
            keys: args.keys.into_iter().collect(),
        })
        .await?;
    print(format, &record, output::online_record);
    Ok(())
}

/// `ftab get --service`: POST get-features with every metadata option.
async fn run_service(args: GetArgs, format: OutputFormat) -> Result<(), CliError> {
    let service = args.service.clone().unwrap_or_default();
    let keys: serde_json::Map<String, serde_json::Value> = args
        .keys
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let request = serde_json::json!({"params": {
        "workspace_name": args.workspace.as_str(),
        "feature_service_name": service,
        "join_key_map": keys,
        "metadata_options": {"include_names": true, "include_data_types": true,
                             "include_effective_times": true, "include_serving_status": true},
    }});
    let url = format!("{}/v1/get-features", args.http.trim_end_matches('/'));
    let answer = crate::http::post_json(&url, &request).await?;
    let keys_text: Vec<String> = args.keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let heading = format!("{}/{service} {}", args.workspace, keys_text.join(" "));
    print(format, &answer, |a| output::feature_vector(&heading, a));
    Ok(())
}
