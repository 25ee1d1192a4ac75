//! Workspaces and their definitions: create, list, plan, apply, describe.
//!
//! This module decides (what a plan is, whether an apply may go ahead); the catalog
//! persists, and the Flight layer only decodes and answers.

use ftab_engine::storage::{ObjectStorage, StorageLayout};
use ftab_model::diff::{ChangeKind, ObjectKind, Plan};
use ftab_model::names::TableName;
use ftab_model::protocol::{
    ApplyRequest, ApplyResponse, CreateWorkspaceRequest, DescribeTableRequest,
    ListWorkspacesResponse, PlanRequest, PlanResponse, TableDescription, TableListing,
    WorkspaceInfo,
};
use ftab_model::repository::{self, RepositoryFile};
use ftab_model::{Definitions, definitions::FeatureTable};

use datafusion::arrow::datatypes::SchemaRef;

use crate::catalog::{Catalog, NewVersion, WorkspaceState};
use crate::error::{Error, Result};

#[derive(Clone)]
pub struct Workspaces {
    catalog: Catalog,
    storage: StorageLayout,
    objects: ObjectStorage,
}

impl Workspaces {
    pub fn new(catalog: Catalog, storage: StorageLayout, objects: ObjectStorage) -> Self {
        Self {
            catalog,
            storage,
            objects,
        }
    }

    pub async fn create(&self, request: CreateWorkspaceRequest) -> Result<WorkspaceInfo> {
        let state = self
            .catalog
            .create_workspace(request.name, request.kind)
            .await?;
        tracing::info!(workspace = %state.name, kind = state.kind.as_str(), "workspace created");
        Ok(info(&state))
    }

    pub async fn list(&self) -> Result<ListWorkspacesResponse> {
        let workspaces = self.catalog.workspaces().await?;
        Ok(ListWorkspacesResponse {
            workspaces: workspaces.iter().map(info).collect(),
        })
    }

    pub async fn plan(&self, request: PlanRequest) -> Result<PlanResponse> {
        let state = self.catalog.workspace(&request.workspace).await?;
        let definitions = parse(&request.files)?;
        Ok(PlanResponse {
            plan: Plan::compute(&state.definitions, &definitions),
            workspace: state.name,
            kind: state.kind,
            current_version: state.version,
        })
    }

    /// Apply a feature repository: exactly the plan against the current version, in one
    /// catalog transaction, refused if it breaks stored data and is not forced.
    pub async fn apply(&self, request: ApplyRequest) -> Result<ApplyResponse> {
        let state = self.catalog.workspace(&request.workspace).await?;
        if let Some(expected) = request.expected_version
            && expected != state.version
        {
            return Err(Error::VersionConflict {
                workspace: state.name,
                expected,
                actual: state.version,
            });
        }
        let definitions = parse(&request.files)?;
        let plan = Plan::compute(&state.definitions, &definitions);
        if plan.is_empty() {
            return Ok(ApplyResponse {
                workspace: state.name,
                previous_version: state.version,
                version: state.version,
                plan,
                retired_storage: Vec::new(),
            });
        }
        let breaking: Vec<String> = plan
            .breaking()
            .flat_map(|c| {
                c.breaking
                    .iter()
                    .map(move |reason| format!("{} {}: {reason}", c.object, c.name))
            })
            .collect();
        if !breaking.is_empty() && !request.force {
            return Err(Error::FailedPrecondition(format!(
                "apply to workspace `{}` refused: {} would break stored data:\n  {}\nReview the plan with `ftab plan`. To apply anyway, pass --force: the feature tables concerned then start on fresh, empty storage (the old data stays where it is but is no longer read).",
                state.name,
                if breaking.len() == 1 {
                    "1 change".to_string()
                } else {
                    format!("{} changes", breaking.len())
                },
                breaking.join("\n  ")
            )));
        }

        let table_name = |name: &str| {
            TableName::new(name)
                .map_err(|e| Error::Internal(format!("plan names a bad table: {e}")))
        };
        let mut retire = Vec::new();
        let mut start = Vec::new();
        for change in plan
            .changes
            .iter()
            .filter(|c| c.object == ObjectKind::FeatureTable)
        {
            match (change.kind, change.is_breaking()) {
                (ChangeKind::Create, _) => start.push(table_name(&change.name)?),
                (ChangeKind::Delete, _) => retire.push(table_name(&change.name)?),
                (ChangeKind::Update, true) => {
                    retire.push(table_name(&change.name)?);
                    start.push(table_name(&change.name)?);
                }
                (ChangeKind::Update, false) => {}
            }
        }
        let version = self
            .catalog
            .commit_version(NewVersion {
                workspace: state.name.clone(),
                base_version: state.version,
                definitions,
                plan: plan.clone(),
                forced: request.force,
                retire: retire.clone(),
                start,
            })
            .await?;
        tracing::info!(
            workspace = %state.name,
            version,
            changes = plan.changes.len(),
            forced = request.force,
            "definitions applied"
        );
        Ok(ApplyResponse {
            workspace: state.name,
            previous_version: state.version,
            version,
            plan,
            retired_storage: retire,
        })
    }

    pub async fn describe_table(&self, request: DescribeTableRequest) -> Result<TableDescription> {
        let state = self.catalog.workspace(&request.workspace).await?;
        let table = find_table(&state, &request.table)?;
        let generation = self
            .catalog
            .storage_generation(&state.name, &table.name)
            .await?;
        let definitions = &state.definitions;
        let location = self
            .storage
            .offline_table(&state.name, &table.name, generation);
        let offline = if table.offline {
            ftab_engine::offline::stats(&self.objects, &location).await?
        } else {
            None
        };
        Ok(TableDescription {
            offline,
            join_keys: table
                .join_keys(definitions)
                .iter()
                .map(|k| k.to_string())
                .collect(),
            features: table.features(definitions).into_iter().cloned().collect(),
            feature_services: definitions
                .feature_services
                .iter()
                .filter(|s| s.features.iter().any(|f| f.table == table.name))
                .map(|s| s.name.to_string())
                .collect(),
            generation,
            offline_location: location.to_string(),
            table: table.clone(),
            workspace: state.name.clone(),
            kind: state.kind,
            version: state.version,
        })
    }

    /// The feature tables of one workspace or all, with their Arrow schemas.
    pub async fn list_tables(
        &self,
        workspace: Option<ftab_model::names::WorkspaceName>,
    ) -> Result<Vec<(TableListing, SchemaRef)>> {
        let states = match workspace {
            Some(name) => vec![self.catalog.workspace(&name).await?],
            None => self.catalog.workspaces().await?,
        };
        let mut out = Vec::new();
        for state in &states {
            for table in &state.definitions.feature_tables {
                out.push((
                    TableListing {
                        workspace: state.name.clone(),
                        table: table.name.clone(),
                        description: table.description.clone(),
                        owner: table.owner.clone(),
                        entities: table.entities.iter().map(|e| e.to_string()).collect(),
                        online: table.online,
                        offline: table.offline,
                        ttl: table.ttl.map(|t| t.to_string()),
                    },
                    table.arrow_schema(&state.definitions),
                ));
            }
        }
        Ok(out)
    }
}

fn parse(files: &[RepositoryFile]) -> Result<Definitions> {
    repository::parse(files).map_err(|problems| ftab_model::Error::Definitions(problems).into())
}

fn info(state: &WorkspaceState) -> WorkspaceInfo {
    WorkspaceInfo {
        name: state.name.clone(),
        kind: state.kind,
        created_at: state.created_at.clone(),
        version: state.version,
        feature_tables: state.definitions.feature_tables.len(),
        feature_services: state.definitions.feature_services.len(),
    }
}

pub(crate) fn find_table<'a>(
    state: &'a WorkspaceState,
    name: &TableName,
) -> Result<&'a FeatureTable> {
    state
        .definitions
        .feature_table(name.as_str())
        .ok_or_else(|| {
            let names: Vec<&str> = state
                .definitions
                .feature_tables
                .iter()
                .map(|t| t.name.as_str())
                .collect();
            let hint = if names.is_empty() {
                "nothing has been applied to it yet; run `ftab apply` first".to_string()
            } else {
                format!("its tables are: {}", names.join(", "))
            };
            Error::TableNotFound {
                workspace: state.name.clone(),
                table: name.clone(),
                hint,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ftab_model::names::WorkspaceName;
    use ftab_model::protocol::WorkspaceKind;

    const REPO: &str = r#"
[[entity]]
name = "user"
join_keys = ["user_id"]

[[feature_table]]
name = "t"
entities = ["user"]
timestamp_field = "ts"
schema = [
  { name = "user_id", type = "string" },
  { name = "ts", type = "timestamp" },
  { name = "score", type = "float64" },
]
"#;

    fn files(content: &str) -> Vec<RepositoryFile> {
        vec![RepositoryFile {
            path: "repo.toml".into(),
            content: content.into(),
        }]
    }

    async fn setup() -> (Workspaces, WorkspaceName) {
        let layout = StorageLayout::new("memory:///").unwrap();
        let objects = layout.open().unwrap();
        let service = Workspaces::new(Catalog::open_in_memory().unwrap(), layout, objects);
        let ws = WorkspaceName::new("prod").unwrap();
        service
            .create(CreateWorkspaceRequest {
                name: ws.clone(),
                kind: WorkspaceKind::Live,
            })
            .await
            .unwrap();
        (service, ws)
    }

    fn apply(
        ws: &WorkspaceName,
        content: &str,
        force: bool,
        expected: Option<u64>,
    ) -> ApplyRequest {
        ApplyRequest {
            workspace: ws.clone(),
            files: files(content),
            force,
            expected_version: expected,
        }
    }

    #[tokio::test]
    async fn apply_then_reapply_is_a_no_op() {
        let (service, ws) = setup().await;
        let first = service
            .apply(apply(&ws, REPO, false, Some(0)))
            .await
            .unwrap();
        assert_eq!((first.previous_version, first.version), (0, 1));
        let again = service.apply(apply(&ws, REPO, false, None)).await.unwrap();
        assert_eq!(again.version, 1);
        assert!(again.plan.is_empty());
    }

    #[tokio::test]
    async fn breaking_change_is_refused_unless_forced_and_then_gets_fresh_storage() {
        let (service, ws) = setup().await;
        service.apply(apply(&ws, REPO, false, None)).await.unwrap();
        let narrowed = REPO.replace(
            "\"score\", type = \"float64\"",
            "\"score\", type = \"float32\"",
        );
        let err = service
            .apply(apply(&ws, &narrowed, false, None))
            .await
            .unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::FailedPrecondition(_)), "{message}");
        assert!(
            message.contains("feature_table t: changing column `score` from float64 to float32"),
            "{message}"
        );
        assert!(message.contains("--force"), "{message}");
        // Nothing was written by the refused apply.
        let description = service
            .describe_table(DescribeTableRequest {
                workspace: ws.clone(),
                table: TableName::new("t").unwrap(),
            })
            .await
            .unwrap();
        assert_eq!((description.version, description.generation), (1, 1));
        assert!(description.offline_location.ends_with("offline/prod/t/g1/"));

        let forced = service
            .apply(apply(&ws, &narrowed, true, None))
            .await
            .unwrap();
        assert_eq!(forced.version, 2);
        assert_eq!(forced.retired_storage, [TableName::new("t").unwrap()]);
        let description = service
            .describe_table(DescribeTableRequest {
                workspace: ws,
                table: TableName::new("t").unwrap(),
            })
            .await
            .unwrap();
        assert_eq!(description.generation, 2);
    }

    #[tokio::test]
    async fn stale_expected_version_is_refused() {
        let (service, ws) = setup().await;
        service.apply(apply(&ws, REPO, false, None)).await.unwrap();
        let err = service
            .apply(apply(
                &ws,
                &REPO.replace("float64", "float64\" }, { name = \"x\", type = \"int64"),
                false,
                Some(0),
            ))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::VersionConflict {
                    expected: 0,
                    actual: 1,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn invalid_definitions_and_unknown_things_are_named() {
        let (service, ws) = setup().await;
        let err = service
            .plan(PlanRequest {
                workspace: ws.clone(),
                files: files(&REPO.replace("[\"user\"]", "[\"customer\"]")),
            })
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("repo.toml: feature_table t: unknown entity `customer`"),
            "{err}"
        );

        let err = service
            .describe_table(DescribeTableRequest {
                workspace: ws.clone(),
                table: TableName::new("t").unwrap(),
            })
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("nothing has been applied"),
            "{err}"
        );

        let err = service
            .plan(PlanRequest {
                workspace: WorkspaceName::new("staging").unwrap(),
                files: files(REPO),
            })
            .await
            .unwrap_err();
        assert!(matches!(err, Error::WorkspaceNotFound(_)));
    }
}
