//! Online reads for inspection (`get_online`, `ftab get`). The serving API (HTTP
//! `get-features`) builds on the same store.

use std::sync::Arc;

use chrono::Utc;
use ftab_engine::online::{KeyValue, OnlineError, OnlineStore, format_micros};
use ftab_model::protocol::{
    GetOnlineRequest, GetOnlineResponse, ServingDefinitionsResponse, ServingTable,
    ServingWorkspace, WorkspaceKind,
};

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::workspaces::find_table;

#[derive(Clone)]
pub struct OnlineReads {
    catalog: Catalog,
    store: Arc<dyn OnlineStore>,
}

impl OnlineReads {
    pub fn new(catalog: Catalog, store: Arc<dyn OnlineStore>) -> Self {
        Self { catalog, store }
    }

    /// `serving_definitions`: the workspaces' definitions and the live ones' online tables'
    /// storage, for `ftab-serving` processes (docs/serving.md).
    pub async fn serving_definitions(&self) -> Result<ServingDefinitionsResponse> {
        let mut workspaces = Vec::new();
        for state in self.catalog.workspaces().await? {
            // Dev workspaces come without storage, so that serving refuses them as the
            // scheduler does (they are dev), not as unknown.
            let mut tables = Vec::new();
            let live = state.kind == WorkspaceKind::Live;
            for table in state
                .definitions
                .feature_tables
                .iter()
                .filter(|t| live && t.online)
            {
                let Some(generation) = self
                    .catalog
                    .table_generation(&state.name, &table.name)
                    .await?
                else {
                    continue;
                };
                let online = self
                    .catalog
                    .online_table(&state.name, table, &state.definitions, generation)
                    .await?;
                tables.push(ServingTable {
                    table: table.name.clone(),
                    generation,
                    bins: online.bins,
                });
            }
            workspaces.push(ServingWorkspace {
                name: state.name,
                kind: state.kind,
                version: state.version,
                definitions: state.definitions,
                tables,
            });
        }
        Ok(ServingDefinitionsResponse { workspaces })
    }

    pub async fn get(&self, request: GetOnlineRequest) -> Result<GetOnlineResponse> {
        let state = self.catalog.workspace(&request.workspace).await?;
        let table = find_table(&state, &request.table)?;
        if !table.online {
            return Err(Error::FailedPrecondition(format!(
                "feature table `{}` is not online (online = false in its definition), so it has no online records",
                table.name
            )));
        }
        let generation = self
            .catalog
            .storage_generation(&state.name, &table.name)
            .await?;
        let online_table = self
            .catalog
            .online_table(&state.name, table, &state.definitions, generation)
            .await?;
        let unknown: Vec<&str> = request
            .keys
            .keys()
            .filter(|k| !online_table.keys.iter().any(|(name, _)| name == *k))
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "`{}` {} not a join key of feature table `{}`; its join keys are: {}",
                unknown.join("`, `"),
                if unknown.len() == 1 { "is" } else { "are" },
                table.name,
                online_table
                    .keys
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let mut key = Vec::with_capacity(online_table.keys.len());
        for (name, value_type) in &online_table.keys {
            let text = request.keys.get(name).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "join key `{name}` of feature table `{}` is missing; give every join key, e.g. {name}=VALUE",
                    table.name
                ))
            })?;
            key.push(
                KeyValue::parse(name, text, value_type)
                    .map_err(|e| Error::InvalidArgument(e.to_string()))?,
            );
        }
        let records = self
            .store
            .read(&online_table, &[key], Utc::now().timestamp_micros())
            .await
            .map_err(|e| match e {
                OnlineError::Unavailable(reason) => Error::FailedPrecondition(reason),
                other => Error::Internal(other.to_string()),
            })?;
        let record = records.into_iter().next().flatten();
        Ok(GetOnlineResponse {
            workspace: state.name.clone(),
            table: table.name.clone(),
            keys: request.keys,
            found: record.is_some(),
            timestamp: record.as_ref().map(|r| format_micros(r.timestamp)),
            seq: record.as_ref().map(|r| r.seq),
            features: record
                .map(|r| {
                    let names = online_table.features.iter().map(|(n, _)| n.clone());
                    names.zip(r.features).collect()
                })
                .unwrap_or_default(),
        })
    }
}
