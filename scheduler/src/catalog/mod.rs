//! The catalog: workspaces, their applied definitions (one version per apply) and the
//! storage generation of each feature table, persisted in SQLite.
//!
//! Every call runs on tokio's blocking pool. Writes that belong together run in one
//! transaction, so an apply is visible whole or not at all. The schema is migrated forward
//! on open (`PRAGMA user_version` holds the schema version); later capabilities (ingests,
//! jobs) add migrations to [`MIGRATIONS`]. docs/catalog.md describes the tables.

use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SecondsFormat, Utc};
use ftab_model::Definitions;
use ftab_model::diff::Plan;
use ftab_model::names::{TableName, WorkspaceName};
use ftab_model::protocol::WorkspaceKind;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::error::{Error, Result};

mod jobs;
mod spines;

pub use jobs::{IngestRecord, JobRecord, KeyedIngest, NewIngest, Recorded};
pub use spines::SpineRecord;

/// Schema migrations, applied in order; the schema version is the number applied.
const MIGRATIONS: &[&str] = &[
    // 1: workspaces, definition versions, table storage generations.
    r#"
    CREATE TABLE workspaces (
        name        TEXT PRIMARY KEY,
        kind        TEXT NOT NULL CHECK (kind IN ('live', 'dev')),
        created_at  TEXT NOT NULL
    );
    CREATE TABLE definition_versions (
        workspace    TEXT NOT NULL REFERENCES workspaces(name),
        version      INTEGER NOT NULL CHECK (version > 0),
        applied_at   TEXT NOT NULL,
        definitions  TEXT NOT NULL,
        plan         TEXT NOT NULL,
        forced       INTEGER NOT NULL,
        PRIMARY KEY (workspace, version)
    );
    CREATE TABLE table_storage (
        workspace        TEXT NOT NULL REFERENCES workspaces(name),
        table_name       TEXT NOT NULL,
        generation       INTEGER NOT NULL CHECK (generation > 0),
        created_version  INTEGER NOT NULL,
        retired_version  INTEGER,
        PRIMARY KEY (workspace, table_name, generation)
    );
    CREATE UNIQUE INDEX table_storage_current
        ON table_storage (workspace, table_name) WHERE retired_version IS NULL;
    "#,
    // 2: ingests and jobs.
    r#"
    CREATE TABLE ingests (
        ingest_id        TEXT PRIMARY KEY,
        workspace        TEXT NOT NULL REFERENCES workspaces(name),
        table_name       TEXT NOT NULL,
        generation       INTEGER NOT NULL,
        seq              INTEGER NOT NULL CHECK (seq > 0),
        idempotency_key  TEXT,
        rows             INTEGER NOT NULL,
        staged_prefix    TEXT NOT NULL,
        created_at       TEXT NOT NULL,
        UNIQUE (workspace, table_name, seq),
        UNIQUE (workspace, table_name, idempotency_key)
    );
    CREATE TABLE jobs (
        job_id            TEXT PRIMARY KEY,
        kind              TEXT NOT NULL,
        workspace         TEXT NOT NULL REFERENCES workspaces(name),
        table_name        TEXT NOT NULL,
        ingest_id         TEXT REFERENCES ingests(ingest_id),
        state             TEXT NOT NULL,
        attempts          INTEGER NOT NULL DEFAULT 0,
        steps             TEXT NOT NULL,
        counts            TEXT NOT NULL,
        last_error        TEXT,
        cancel_requested  INTEGER NOT NULL DEFAULT 0,
        next_attempt_at   TEXT NOT NULL,
        created_at        TEXT NOT NULL,
        updated_at        TEXT NOT NULL
    );
    CREATE INDEX jobs_by_state ON jobs (state, next_attempt_at);
    "#,
    // 3: uploaded spines.
    r#"
    CREATE TABLE spines (
        name        TEXT PRIMARY KEY,
        location    TEXT NOT NULL,
        rows        INTEGER NOT NULL,
        created_at  TEXT NOT NULL,
        expires_at  TEXT NOT NULL
    );
    "#,
    // 4: the content hash of ingests sent with an idempotency key.
    r#"
    ALTER TABLE ingests ADD COLUMN content_hash TEXT;
    "#,
    // 5: the Aerospike bin of each feature of a table's storage generation.
    r#"
    CREATE TABLE online_bins (
        workspace   TEXT NOT NULL,
        table_name  TEXT NOT NULL,
        generation  INTEGER NOT NULL,
        feature     TEXT NOT NULL,
        bin         TEXT NOT NULL,
        PRIMARY KEY (workspace, table_name, generation, feature),
        UNIQUE (workspace, table_name, generation, bin)
    );
    "#,
];

/// A workspace and its current definitions.
#[derive(Debug, Clone)]
pub struct WorkspaceState {
    pub name: WorkspaceName,
    pub kind: WorkspaceKind,
    pub created_at: String,
    /// 0 until the first apply.
    pub version: u64,
    pub definitions: Definitions,
}

/// A new version of a workspace's definitions, with the storage changes it brings.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub workspace: WorkspaceName,
    /// The version this one replaces; the commit fails if the workspace has moved on.
    pub base_version: u64,
    pub definitions: Definitions,
    pub plan: Plan,
    pub forced: bool,
    /// Tables whose current storage is abandoned (deleted, or broken by a forced apply).
    pub retire: Vec<TableName>,
    /// Tables that get a new storage generation (created, or broken by a forced apply).
    pub start: Vec<TableName>,
}

#[derive(Clone)]
pub struct Catalog {
    connection: Arc<Mutex<Connection>>,
}

impl Catalog {
    /// Open (creating if needed) the catalog database at `path` and migrate it.
    pub fn open(path: &Path) -> Result<Self> {
        let connection = Connection::open(path).map_err(|e| {
            Error::CatalogData(format!("cannot open catalog {}: {e}", path.display()))
        })?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        Self::setup(connection)
    }

    /// A catalog in memory, for tests.
    pub fn open_in_memory() -> Result<Self> {
        Self::setup(Connection::open_in_memory()?)
    }

    fn setup(mut connection: Connection) -> Result<Self> {
        connection.pragma_update(None, "foreign_keys", true)?;
        connection.busy_timeout(std::time::Duration::from_secs(10))?;
        migrate(&mut connection)?;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    /// Run `f` with the connection on the blocking pool.
    async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let connection = self.connection.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = connection
                .lock()
                .map_err(|_| Error::Internal("catalog lock poisoned by an earlier panic".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| Error::Internal(format!("catalog task failed: {e}")))?
    }

    pub async fn create_workspace(
        &self,
        name: WorkspaceName,
        kind: WorkspaceKind,
    ) -> Result<WorkspaceState> {
        self.call(move |c| {
            let created_at = now();
            let inserted = c.execute(
                "INSERT INTO workspaces (name, kind, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO NOTHING",
                params![name.as_str(), kind.as_str(), created_at],
            )?;
            if inserted == 0 {
                return Err(Error::WorkspaceExists(name));
            }
            Ok(WorkspaceState {
                name,
                kind,
                created_at,
                version: 0,
                definitions: Definitions::default(),
            })
        })
        .await
    }

    /// Every workspace with its current definitions, by name.
    pub async fn workspaces(&self) -> Result<Vec<WorkspaceState>> {
        self.call(|c| {
            let names: Vec<String> = c
                .prepare("SELECT name FROM workspaces ORDER BY name")?
                .query_map([], |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            names
                .into_iter()
                .map(|name| {
                    let name =
                        WorkspaceName::new(name).map_err(|e| Error::CatalogData(e.to_string()))?;
                    read_workspace(c, &name)
                })
                .collect()
        })
        .await
    }

    pub async fn workspace(&self, name: &WorkspaceName) -> Result<WorkspaceState> {
        let name = name.clone();
        self.call(move |c| read_workspace(c, &name)).await
    }

    /// Record a new version of a workspace's definitions and its storage changes, in one
    /// transaction. Returns the new version.
    pub async fn commit_version(&self, new: NewVersion) -> Result<u64> {
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current = current_version(&tx, &new.workspace)?;
            if current != new.base_version {
                return Err(Error::VersionConflict {
                    workspace: new.workspace,
                    expected: new.base_version,
                    actual: current,
                });
            }
            let version = current + 1;
            let definitions = serde_json::to_string(&new.definitions)
                .map_err(|e| Error::Internal(format!("cannot encode definitions: {e}")))?;
            let plan = serde_json::to_string(&new.plan)
                .map_err(|e| Error::Internal(format!("cannot encode plan: {e}")))?;
            tx.execute(
                "INSERT INTO definition_versions (workspace, version, applied_at, definitions, plan, forced)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![new.workspace.as_str(), version as i64, now(), definitions, plan, new.forced],
            )?;
            for table in &new.retire {
                tx.execute(
                    "UPDATE table_storage SET retired_version = ?3
                     WHERE workspace = ?1 AND table_name = ?2 AND retired_version IS NULL",
                    params![new.workspace.as_str(), table.as_str(), version as i64],
                )?;
            }
            for table in &new.start {
                tx.execute(
                    "INSERT INTO table_storage (workspace, table_name, generation, created_version)
                     SELECT ?1, ?2, COALESCE(MAX(generation), 0) + 1, ?3
                     FROM table_storage WHERE workspace = ?1 AND table_name = ?2",
                    params![new.workspace.as_str(), table.as_str(), version as i64],
                )?;
            }
            tx.commit()?;
            Ok(version)
        })
        .await
    }

    /// The current storage generation of a feature table that the catalog defines: every
    /// applied table has one, so its absence is damage to the catalog.
    pub async fn storage_generation(
        &self,
        workspace: &WorkspaceName,
        table: &TableName,
    ) -> Result<u64> {
        self.table_generation(workspace, table)
            .await?
            .ok_or_else(|| {
                Error::CatalogData(format!(
                    "feature table `{table}` of workspace `{workspace}` has no storage record"
                ))
            })
    }

    /// The online store's view of a feature table in `generation`, with its features'
    /// Aerospike bins.
    pub async fn online_table(
        &self,
        workspace: &WorkspaceName,
        table: &ftab_model::definitions::FeatureTable,
        definitions: &Definitions,
        generation: u64,
    ) -> Result<ftab_engine::online::OnlineTable> {
        let online = ftab_engine::online::OnlineTable::new(
            workspace.clone(),
            table,
            definitions,
            generation,
        );
        let features = online.features.iter().map(|(n, _)| n.clone()).collect();
        let bins = self
            .online_bins(workspace, &table.name, generation, features)
            .await?;
        Ok(online.with_bins(bins))
    }

    /// The Aerospike bin of each of `features` in a table's storage generation, in their
    /// order: kept once assigned, new features assigned in the same transaction
    /// (`ftab_engine::online::aerospike::assign_bins`; docs/online-store.md).
    pub async fn online_bins(
        &self,
        workspace: &WorkspaceName,
        table: &TableName,
        generation: u64,
        features: Vec<String>,
    ) -> Result<Vec<String>> {
        let (workspace, table) = (workspace.clone(), table.clone());
        self.call(move |c| {
            let key = params![workspace.as_str(), table.as_str(), generation as i64];
            let read = |c: &Connection| -> Result<Vec<(String, String)>> {
                let mut statement = c.prepare_cached(
                    "SELECT feature, bin FROM online_bins
                     WHERE workspace = ?1 AND table_name = ?2 AND generation = ?3",
                )?;
                let rows = statement.query_map(key, |row| Ok((row.get(0)?, row.get(1)?)))?;
                Ok(rows.collect::<rusqlite::Result<_>>()?)
            };
            let mut assigned = read(c)?;
            let new = ftab_engine::online::aerospike::assign_bins(&features, &assigned);
            if !new.is_empty() {
                let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
                // Read again under the write lock: another process may have assigned some.
                assigned = read(&tx)?;
                for (feature, bin) in
                    ftab_engine::online::aerospike::assign_bins(&features, &assigned)
                {
                    tx.execute(
                        "INSERT INTO online_bins (workspace, table_name, generation, feature, bin)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![
                            workspace.as_str(),
                            table.as_str(),
                            generation as i64,
                            feature,
                            bin
                        ],
                    )?;
                    assigned.push((feature, bin));
                }
                tx.commit()?;
            }
            features
                .iter()
                .map(|f| {
                    assigned
                        .iter()
                        .find(|(feature, _)| feature == f)
                        .map(|(_, bin)| bin.clone())
                        .ok_or_else(|| Error::Internal(format!("no bin assigned to `{f}`")))
                })
                .collect()
        })
        .await
    }

    /// The current storage generation of a feature table, if it has storage.
    pub async fn table_generation(
        &self,
        workspace: &WorkspaceName,
        table: &TableName,
    ) -> Result<Option<u64>> {
        let (workspace, table) = (workspace.clone(), table.clone());
        self.call(move |c| {
            let generation: Option<i64> = c
                .query_row(
                    "SELECT generation FROM table_storage
                     WHERE workspace = ?1 AND table_name = ?2 AND retired_version IS NULL",
                    params![workspace.as_str(), table.as_str()],
                    |row| row.get(0),
                )
                .optional()?;
            Ok(generation.map(|g| g as u64))
        })
        .await
    }
}

pub(crate) fn now() -> String {
    timestamp(Utc::now())
}

/// A time as the catalog stores it: RFC 3339 in UTC with milliseconds, so that comparing
/// two as text compares them as times.
pub(crate) fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn migrate(connection: &mut Connection) -> Result<()> {
    let applied: i64 = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if applied > known {
        return Err(Error::CatalogData(format!(
            "the catalog has schema version {applied}, newer than this ftab knows ({known}); run a newer ftab-scheduler"
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied as usize) {
        let tx = connection.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", index as i64 + 1)?;
        tx.commit()?;
        tracing::info!(schema_version = index + 1, "catalog migrated");
    }
    Ok(())
}

fn current_version(c: &Connection, workspace: &WorkspaceName) -> Result<u64> {
    let exists: bool = c.query_row(
        "SELECT EXISTS (SELECT 1 FROM workspaces WHERE name = ?1)",
        [workspace.as_str()],
        |row| row.get(0),
    )?;
    if !exists {
        return Err(Error::WorkspaceNotFound(workspace.clone()));
    }
    let version: i64 = c.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM definition_versions WHERE workspace = ?1",
        [workspace.as_str()],
        |row| row.get(0),
    )?;
    Ok(version as u64)
}

fn read_workspace(c: &Connection, name: &WorkspaceName) -> Result<WorkspaceState> {
    let row: Option<(String, String)> = c
        .query_row(
            "SELECT kind, created_at FROM workspaces WHERE name = ?1",
            [name.as_str()],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    let Some((kind, created_at)) = row else {
        return Err(Error::WorkspaceNotFound(name.clone()));
    };
    let kind: WorkspaceKind = kind.parse().map_err(Error::CatalogData)?;
    let latest: Option<(i64, String)> = c
        .query_row(
            "SELECT version, definitions FROM definition_versions
             WHERE workspace = ?1 ORDER BY version DESC LIMIT 1",
            [name.as_str()],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    let (version, definitions) = match latest {
        None => (0, Definitions::default()),
        Some((version, json)) => {
            let definitions = serde_json::from_str(&json).map_err(|e| {
                Error::CatalogData(format!(
                    "definitions of workspace `{name}` version {version} do not decode: {e}"
                ))
            })?;
            (version as u64, definitions)
        }
    };
    Ok(WorkspaceState {
        name: name.clone(),
        kind,
        created_at,
        version,
        definitions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ws(name: &str) -> WorkspaceName {
        WorkspaceName::new(name).unwrap()
    }

    fn table(name: &str) -> TableName {
        TableName::new(name).unwrap()
    }

    fn version(workspace: &str, base: u64, start: &[&str], retire: &[&str]) -> NewVersion {
        NewVersion {
            workspace: ws(workspace),
            base_version: base,
            definitions: Definitions::default(),
            plan: Plan::default(),
            forced: false,
            retire: retire.iter().map(|t| table(t)).collect(),
            start: start.iter().map(|t| table(t)).collect(),
        }
    }

    #[tokio::test]
    async fn workspaces_are_created_once_and_listed() {
        let catalog = Catalog::open_in_memory().unwrap();
        catalog
            .create_workspace(ws("prod"), WorkspaceKind::Live)
            .await
            .unwrap();
        catalog
            .create_workspace(ws("alice"), WorkspaceKind::Dev)
            .await
            .unwrap();
        let err = catalog
            .create_workspace(ws("prod"), WorkspaceKind::Dev)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::WorkspaceExists(_)), "{err}");
        let all = catalog.workspaces().await.unwrap();
        let names: Vec<(&str, WorkspaceKind)> =
            all.iter().map(|w| (w.name.as_str(), w.kind)).collect();
        assert_eq!(
            names,
            [("alice", WorkspaceKind::Dev), ("prod", WorkspaceKind::Live)]
        );
        assert_eq!(all[1].version, 0);
        let err = catalog.workspace(&ws("nope")).await.unwrap_err();
        assert!(matches!(err, Error::WorkspaceNotFound(_)));
    }

    #[tokio::test]
    async fn online_bins_are_assigned_once_and_kept_per_generation() {
        let catalog = Catalog::open_in_memory().unwrap();
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let first = catalog
            .online_bins(
                &ws("prod"),
                &table("t"),
                1,
                names(&["clicks", "a_long_feature_name"]),
            )
            .await
            .unwrap();
        assert_eq!(first, ["clicks", "_f0"]);
        // A later definition adds a feature before the others: theirs stay.
        let later = catalog
            .online_bins(
                &ws("prod"),
                &table("t"),
                1,
                names(&["another_long_feature", "a_long_feature_name", "clicks"]),
            )
            .await
            .unwrap();
        assert_eq!(later, ["_f1", "_f0", "clicks"]);
        // A new generation starts afresh.
        let next = catalog
            .online_bins(
                &ws("prod"),
                &table("t"),
                2,
                names(&["another_long_feature"]),
            )
            .await
            .unwrap();
        assert_eq!(next, ["_f0"]);
    }

    #[tokio::test]
    async fn versions_advance_and_stale_bases_are_refused() {
        let catalog = Catalog::open_in_memory().unwrap();
        catalog
            .create_workspace(ws("prod"), WorkspaceKind::Live)
            .await
            .unwrap();
        assert_eq!(
            catalog
                .commit_version(version("prod", 0, &["t"], &[]))
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            catalog
                .commit_version(version("prod", 1, &[], &[]))
                .await
                .unwrap(),
            2
        );
        let err = catalog
            .commit_version(version("prod", 1, &[], &[]))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::VersionConflict {
                    expected: 1,
                    actual: 2,
                    ..
                }
            ),
            "{err}"
        );
        let err = catalog
            .commit_version(version("ghost", 0, &[], &[]))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::WorkspaceNotFound(_)), "{err}");
    }

    #[tokio::test]
    async fn generations_start_retire_and_restart() {
        let catalog = Catalog::open_in_memory().unwrap();
        catalog
            .create_workspace(ws("prod"), WorkspaceKind::Live)
            .await
            .unwrap();
        let (prod, t) = (ws("prod"), table("t"));
        assert_eq!(catalog.table_generation(&prod, &t).await.unwrap(), None);
        catalog
            .commit_version(version("prod", 0, &["t"], &[]))
            .await
            .unwrap();
        assert_eq!(catalog.table_generation(&prod, &t).await.unwrap(), Some(1));
        // A forced breaking change retires generation 1 and starts 2.
        catalog
            .commit_version(version("prod", 1, &["t"], &["t"]))
            .await
            .unwrap();
        assert_eq!(catalog.table_generation(&prod, &t).await.unwrap(), Some(2));
        // Deleted, then created again: a fresh generation, never the old data.
        catalog
            .commit_version(version("prod", 2, &[], &["t"]))
            .await
            .unwrap();
        assert_eq!(catalog.table_generation(&prod, &t).await.unwrap(), None);
        catalog
            .commit_version(version("prod", 3, &["t"], &[]))
            .await
            .unwrap();
        assert_eq!(catalog.table_generation(&prod, &t).await.unwrap(), Some(3));
    }

    #[tokio::test]
    async fn reopening_keeps_everything_and_refuses_newer_schemas() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        {
            let catalog = Catalog::open(&path).unwrap();
            catalog
                .create_workspace(ws("prod"), WorkspaceKind::Live)
                .await
                .unwrap();
            catalog
                .commit_version(version("prod", 0, &["t"], &[]))
                .await
                .unwrap();
        }
        let catalog = Catalog::open(&path).unwrap();
        assert_eq!(catalog.workspace(&ws("prod")).await.unwrap().version, 1);
        drop(catalog);

        let connection = Connection::open(&path).unwrap();
        connection.pragma_update(None, "user_version", 99).unwrap();
        drop(connection);
        let err = Catalog::open(&path).err().unwrap().to_string();
        assert!(
            err.contains("schema version 99, newer than this ftab knows"),
            "{err}"
        );
    }
}
