//! Feature vectors for models: the latest value of each requested feature for each entity,
//! read from the online store (what the HTTP feature server answers, [`crate::http`]).
//!
//! A request names a live workspace, a feature service (or a list of features) and, per
//! entity, a value for every join key the selected tables need. The answer has one value
//! per feature in a stable order (the service's order, tables then their features), and
//! per value a status: `present`, `missing` (no record for the key) or `expired` (the
//! record is older than the table's ttl; its value is not served). The answer is whole
//! or an error: a store failure is never answered as missing data.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use ftab_engine::online::{KeyValue, OnlineError, OnlineStore, OnlineTable};
use ftab_model::definitions::{FeatureRef, FeatureTable};
use ftab_model::names::{TableName, WorkspaceName};
use ftab_model::protocol::WorkspaceKind;
use serde::Serialize;

use crate::catalog::{Catalog, WorkspaceState};
use crate::error::{Error, Result};
use crate::selection::{Need, select_features};

/// The most entities one request may ask for.
pub const MAX_ENTITIES: usize = 10_000;

/// What to serve.
#[derive(Debug, Clone)]
pub struct FeatureRequest {
    pub workspace: WorkspaceName,
    pub feature_service: Option<String>,
    pub features: Option<Vec<FeatureRef>>,
    /// One map of join key name to value per entity.
    pub entities: Vec<BTreeMap<String, serde_json::Value>>,
}

/// One served feature's description.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureInfo {
    /// `table.feature`.
    pub name: String,
    pub data_type: String,
}

/// Whether a value was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Present,
    /// No record for the entity's keys.
    Missing,
    /// The record is older than the table's ttl.
    Expired,
}

/// One entity's feature vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Vector {
    pub values: Vec<serde_json::Value>,
    pub statuses: Vec<Status>,
    /// The event time of each value's record (UTC µs), when there is one.
    pub effective_times: Vec<Option<i64>>,
}

/// The answer: the features in order, and a vector per entity in request order.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub features: Vec<FeatureInfo>,
    pub vectors: Vec<Vector>,
}

/// How long a resolved request (definitions, tables, generations) is reused: an apply is
/// served within this time, without a restart.
const RESOLVED_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// What a request resolves to in the catalog: the features, the tables to read with their
/// selected features, and the join keys they need.
struct Resolved {
    features: Vec<FeatureInfo>,
    /// Each table, its chosen features, and their positions in the table's features.
    tables: Vec<(OnlineTable, Vec<String>, Vec<usize>)>,
    needed: Vec<(String, ftab_model::definitions::ValueType)>,
}

type ResolvedCache =
    std::sync::RwLock<std::collections::HashMap<String, (std::time::Instant, Arc<Resolved>)>>;

/// Where serving finds the applied definitions and the online tables' storage.
#[derive(Clone)]
pub enum DefinitionsSource {
    /// The scheduler's own catalog.
    Catalog(Catalog),
    /// A copy polled from a scheduler (`ftab-serving`, [`crate::serving_process`]).
    Copy(CopyCell),
}

/// Where a serving process keeps its latest copy of the definitions; `None` until the
/// first copy arrives.
pub type CopyCell = Arc<std::sync::RwLock<Option<Arc<DefinitionsCopy>>>>;

/// The latest copy in `cell`, or why there is none.
fn latest(cell: &CopyCell) -> Result<Arc<DefinitionsCopy>> {
    cell.read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .ok_or_else(|| {
            Error::Unavailable(
                "this serving process has no definitions from its scheduler yet; try again shortly"
                    .into(),
            )
        })
}

/// The definitions a serving process holds: each live workspace's state and its online
/// tables' (generation, bins).
#[derive(Debug)]
pub struct DefinitionsCopy {
    pub workspaces: BTreeMap<WorkspaceName, (WorkspaceState, TableStorage)>,
}

/// The online tables of a workspace: (storage generation, Aerospike bins) by table.
pub type TableStorage = BTreeMap<TableName, (u64, Vec<String>)>;

impl DefinitionsCopy {
    pub fn new(response: ftab_model::protocol::ServingDefinitionsResponse) -> Self {
        let workspaces = response
            .workspaces
            .into_iter()
            .map(|w| {
                let tables = w
                    .tables
                    .into_iter()
                    .map(|t| (t.table, (t.generation, t.bins)))
                    .collect();
                let state = WorkspaceState {
                    name: w.name.clone(),
                    kind: w.kind,
                    created_at: String::new(),
                    version: w.version,
                    definitions: w.definitions,
                };
                (w.name, (state, tables))
            })
            .collect();
        Self { workspaces }
    }
}

impl DefinitionsSource {
    async fn workspace(&self, name: &WorkspaceName) -> Result<WorkspaceState> {
        match self {
            Self::Catalog(catalog) => catalog.workspace(name).await,
            Self::Copy(cell) => {
                let copy = latest(cell)?;
                copy.workspaces
                    .get(name)
                    .map(|(state, _)| state.clone())
                    .ok_or_else(|| Error::WorkspaceNotFound(name.clone()))
            }
        }
    }

    async fn online_table(
        &self,
        state: &WorkspaceState,
        table: &FeatureTable,
    ) -> Result<OnlineTable> {
        match self {
            Self::Catalog(catalog) => {
                let generation = catalog.storage_generation(&state.name, &table.name).await?;
                catalog
                    .online_table(&state.name, table, &state.definitions, generation)
                    .await
            }
            Self::Copy(cell) => {
                let copy = latest(cell)?;
                let (generation, bins) = copy
                    .workspaces
                    .get(&state.name)
                    .and_then(|(_, tables)| tables.get(&table.name))
                    .ok_or_else(|| {
                        Error::Unavailable(format!(
                            "feature table `{}` of workspace `{}` has no online storage yet",
                            table.name, state.name
                        ))
                    })?;
                Ok(
                    OnlineTable::new(state.name.clone(), table, &state.definitions, *generation)
                        .with_bins(bins.clone()),
                )
            }
        }
    }
}

#[derive(Clone)]
pub struct Serving {
    source: DefinitionsSource,
    store: Arc<dyn OnlineStore>,
    /// Resolved requests by workspace and features, reused for [`RESOLVED_FOR`]: the
    /// catalog is one SQLite connection, and reading it on every request made it the
    /// bottleneck (docs/benchmarks.md).
    resolved: Arc<ResolvedCache>,
}

impl Serving {
    pub fn new(source: DefinitionsSource, store: Arc<dyn OnlineStore>) -> Self {
        Self {
            source,
            store,
            resolved: Arc::default(),
        }
    }

    /// Whether requests can be answered: a serving process is not ready before its first
    /// copy of the definitions.
    pub fn ready(&self) -> Result<()> {
        match &self.source {
            DefinitionsSource::Catalog(_) => Ok(()),
            DefinitionsSource::Copy(cell) => latest(cell).map(|_| ()),
        }
    }

    /// The request's features resolved, from the cache when fresh.
    async fn resolve(&self, request: &FeatureRequest) -> Result<Arc<Resolved>> {
        // workspace, then the service or each feature, apart by bytes no name holds.
        let mut key = String::with_capacity(64);
        key.push_str(request.workspace.as_str());
        if let Some(service) = &request.feature_service {
            key.push('\u{1}');
            key.push_str(service);
        }
        for feature in request.features.iter().flatten() {
            use std::fmt::Write;
            let _ = write!(key, "\u{2}{feature}");
        }
        if let Some((at, resolved)) = self
            .resolved
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            && at.elapsed() < RESOLVED_FOR
        {
            return Ok(resolved.clone());
        }
        let resolved = Arc::new(self.resolve_now(request).await?);
        let mut cache = self.resolved.write().unwrap_or_else(|e| e.into_inner());
        if cache.len() > 10_000 {
            cache.retain(|_, (at, _)| at.elapsed() < RESOLVED_FOR);
        }
        cache.insert(key, (std::time::Instant::now(), resolved.clone()));
        Ok(resolved)
    }

    /// Resolve a request against the catalog.
    async fn resolve_now(&self, request: &FeatureRequest) -> Result<Resolved> {
        let state = self.source.workspace(&request.workspace).await?;
        if state.kind != WorkspaceKind::Live {
            return Err(Error::FailedPrecondition(format!(
                "workspace `{}` is a dev workspace, which holds definitions only and serves no features; ask a live workspace",
                state.name
            )));
        }
        let selection = select_features(
            &state,
            request.feature_service.as_deref(),
            request.features.as_deref(),
            Need::Online,
        )?;
        let mut features = Vec::new();
        let mut tables = Vec::new();
        for (table, chosen) in &selection {
            let online = self.source.online_table(&state, table).await?;
            for name in chosen {
                let data_type = online
                    .features
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, t)| t.to_string())
                    .unwrap_or_default();
                features.push(FeatureInfo {
                    name: format!("{}.{name}", table.name),
                    data_type,
                });
            }
            let positions = chosen
                .iter()
                .map(|name| {
                    online
                        .features
                        .iter()
                        .position(|(n, _)| n == name)
                        .ok_or_else(|| {
                            Error::Internal(format!("feature `{name}` is not in its table"))
                        })
                })
                .collect::<Result<Vec<_>>>()?;
            tables.push((online, chosen.clone(), positions));
        }
        let mut needed: Vec<(String, ftab_model::definitions::ValueType)> = Vec::new();
        for (online, _, _) in &tables {
            for key in &online.keys {
                if !needed.iter().any(|(n, _)| n == &key.0) {
                    needed.push(key.clone());
                }
            }
        }
        Ok(Resolved {
            features,
            tables,
            needed,
        })
    }

    pub async fn get(&self, request: FeatureRequest) -> Result<Answer> {
        if request.entities.is_empty() {
            return Err(Error::InvalidArgument(
                "no entities: give a join_key_map (or request_data with at least one)".into(),
            ));
        }
        if request.entities.len() > MAX_ENTITIES {
            return Err(Error::InvalidArgument(format!(
                "{} entities in one request; at most {MAX_ENTITIES}, split the batch",
                request.entities.len()
            )));
        }
        let resolved = self.resolve(&request).await?;
        let (tables, needed) = (&resolved.tables, &resolved.needed);
        // Every entity's key values, checked before anything is read.
        let mut parsed: Vec<BTreeMap<&str, KeyValue>> = Vec::with_capacity(request.entities.len());
        for (index, entity) in request.entities.iter().enumerate() {
            let at = if request.entities.len() > 1 {
                format!(" (entity {index})")
            } else {
                String::new()
            };
            if let Some(unknown) = entity.keys().find(|k| !needed.iter().any(|(n, _)| n == *k)) {
                return Err(Error::InvalidArgument(format!(
                    "`{}` is not a join key of the requested features{at}; their join keys are: {}",
                    ftab_model::names::echoed(unknown),
                    needed
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            let mut values = BTreeMap::new();
            for (name, value_type) in needed {
                let value = entity.get(name).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "join key `{name}` is missing{at}; the requested features need: {}",
                        needed
                            .iter()
                            .map(|(n, _)| n.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
                let text = match value {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Number(n) => n.to_string(),
                    other => {
                        return Err(Error::InvalidArgument(format!(
                            "join key `{name}`{at} is {other}, not a string or a number"
                        )));
                    }
                };
                let key = KeyValue::parse(name, &text, value_type).map_err(|e| {
                    Error::InvalidArgument(format!(
                        "{}{at}",
                        e.to_string().trim_start_matches("invalid key: ")
                    ))
                })?;
                values.insert(name.as_str(), key);
            }
            parsed.push(values);
        }

        let now = Utc::now().timestamp_micros();
        let mut vectors: Vec<Vector> = (0..parsed.len())
            .map(|_| Vector {
                values: Vec::new(),
                statuses: Vec::new(),
                effective_times: Vec::new(),
            })
            .collect();
        for (online, _, positions) in tables {
            let keys: Vec<Vec<KeyValue>> = parsed
                .iter()
                .map(|entity| {
                    online
                        .keys
                        .iter()
                        .map(|(n, _)| entity[n.as_str()].clone())
                        .collect()
                })
                .collect();
            // Read as of the earliest time, so expired records come back and can be told
            // from missing ones; their values are not served.
            let records = self
                .store
                .read(online, &keys, i64::MIN)
                .await
                .map_err(|e| match e {
                    OnlineError::Unavailable(reason) => Error::FailedPrecondition(reason),
                    other => Error::Internal(other.to_string()),
                })?;
            if records.len() != keys.len() {
                return Err(Error::Internal(format!(
                    "the online store answered {} records for {} keys",
                    records.len(),
                    keys.len()
                )));
            }
            let live_after = online.live_after(now);
            for (vector, record) in vectors.iter_mut().zip(records) {
                let Some(mut record) = record else {
                    for _ in positions {
                        vector.values.push(serde_json::Value::Null);
                        vector.statuses.push(Status::Missing);
                        vector.effective_times.push(None);
                    }
                    continue;
                };
                let expired = live_after.is_some_and(|after| record.timestamp < after);
                for &position in positions {
                    let value = match record.features.get_mut(position) {
                        Some(value) if !expired => std::mem::take(value),
                        _ => serde_json::Value::Null,
                    };
                    vector.values.push(value);
                    vector.statuses.push(if expired {
                        Status::Expired
                    } else {
                        Status::Present
                    });
                    vector.effective_times.push(Some(record.timestamp));
                }
            }
        }
        Ok(Answer {
            features: resolved.features.clone(),
            vectors,
        })
    }
}
