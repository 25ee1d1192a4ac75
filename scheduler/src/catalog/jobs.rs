//! Ingests and jobs in the catalog.
//!
//! An ingest is recorded together with its job in one transaction, after its data is
//! staged; its `seq` is the next number of its table. Jobs move
//! queued -> running -> succeeded | failed | cancelled; a running job found at start (the
//! scheduler stopped under it) is queued again and resumes at its first step not done.

use std::collections::BTreeMap;

use ftab_model::ids::{IngestId, JobId};
use ftab_model::names::{TableName, WorkspaceName};
use ftab_model::protocol::{
    IngestResult, JobCounts, JobInfo, JobKind, JobState, ListJobsRequest, StepState,
};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::{Catalog, now};
use crate::error::{Error, Result};

/// An ingest to record, with the job that materializes it.
#[derive(Debug, Clone)]
pub struct NewIngest {
    pub ingest_id: IngestId,
    pub job_id: JobId,
    pub workspace: WorkspaceName,
    pub table: TableName,
    pub generation: u64,
    pub idempotency_key: Option<String>,
    /// With an idempotency key: the content hash of the staged rows
    /// ([`ftab_engine::content_hash`]), so a replay can be told from different data.
    pub content_hash: Option<String>,
    pub rows: u64,
    pub staged_prefix: String,
    /// The job's steps, all pending or skipped.
    pub steps: BTreeMap<String, StepState>,
}

/// What recording an ingest did.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// Recorded now.
    New(IngestResult),
    /// The idempotency key was already used: the first ingest.
    Replayed(KeyedIngest),
}

/// An ingest found by its idempotency key.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyedIngest {
    /// Its result, marked replayed.
    pub result: IngestResult,
    /// The content hash of its rows; `None` for ingests recorded before hashes were kept.
    pub content_hash: Option<String>,
}

/// An ingest as the job runner needs it.
#[derive(Debug, Clone)]
pub struct IngestRecord {
    pub ingest_id: IngestId,
    pub workspace: WorkspaceName,
    pub table: TableName,
    pub generation: u64,
    pub seq: u64,
    pub rows: u64,
    pub staged_prefix: String,
}

/// A job with what the runner needs besides what users see.
#[derive(Debug, Clone)]
pub struct JobRecord {
    pub info: JobInfo,
    pub cancel_requested: bool,
}

fn data_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::CatalogData(format!("{what}: {e}"))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Internal(format!("cannot encode: {e}")))
}

fn enum_text<T: serde::Serialize>(value: &T) -> Result<String> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => Ok(s),
        _ => Err(Error::Internal(
            "enum does not serialize to a string".into(),
        )),
    }
}

fn parse_enum<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_value(serde_json::Value::String(text.to_string()))
        .map_err(|e| data_error("stored value", e))
}

const JOB_COLUMNS: &str = "job_id, kind, workspace, table_name, ingest_id, state, attempts, steps, counts, last_error, created_at, updated_at, cancel_requested";

/// A jobs row as stored, before decoding.
struct RawJob {
    job_id: String,
    kind: String,
    workspace: String,
    table: String,
    ingest_id: Option<String>,
    state: String,
    attempts: i64,
    steps: String,
    counts: String,
    last_error: Option<String>,
    created_at: String,
    updated_at: String,
    cancel_requested: bool,
}

fn job_from_row(row: &Row<'_>) -> rusqlite::Result<RawJob> {
    Ok(RawJob {
        job_id: row.get(0)?,
        kind: row.get(1)?,
        workspace: row.get(2)?,
        table: row.get(3)?,
        ingest_id: row.get(4)?,
        state: row.get(5)?,
        attempts: row.get(6)?,
        steps: row.get(7)?,
        counts: row.get(8)?,
        last_error: row.get(9)?,
        created_at: row.get(10)?,
        updated_at: row.get(11)?,
        cancel_requested: row.get(12)?,
    })
}

fn decode_job(raw: RawJob) -> Result<JobRecord> {
    Ok(JobRecord {
        info: JobInfo {
            job_id: JobId::parse(&raw.job_id).map_err(|e| data_error("job id", e))?,
            kind: parse_enum::<JobKind>(&raw.kind)?,
            workspace: WorkspaceName::new(raw.workspace).map_err(|e| data_error("job", e))?,
            table: TableName::new(raw.table).map_err(|e| data_error("job", e))?,
            ingest_id: raw
                .ingest_id
                .map(|id| IngestId::parse(&id).map_err(|e| data_error("ingest id", e)))
                .transpose()?,
            state: parse_enum::<JobState>(&raw.state)?,
            attempts: raw.attempts as u32,
            steps: serde_json::from_str(&raw.steps).map_err(|e| data_error("job steps", e))?,
            counts: serde_json::from_str(&raw.counts).map_err(|e| data_error("job counts", e))?,
            last_error: raw.last_error,
            created_at: raw.created_at,
            updated_at: raw.updated_at,
        },
        cancel_requested: raw.cancel_requested,
    })
}

fn read_job(c: &Connection, job_id: &JobId) -> Result<JobRecord> {
    let raw = c
        .query_row(
            &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = ?1"),
            [job_id.to_string()],
            job_from_row,
        )
        .optional()?;
    match raw {
        Some(raw) => decode_job(raw),
        None => Err(Error::JobNotFound(*job_id)),
    }
}

fn ingest_result(
    c: &Connection,
    sql_where: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Option<KeyedIngest>> {
    type Raw = (String, String, i64, i64, Option<String>);
    let row: Option<Raw> = c
        .query_row(
            &format!(
                "SELECT i.ingest_id, j.job_id, i.rows, i.seq, i.content_hash FROM ingests i JOIN jobs j ON j.ingest_id = i.ingest_id WHERE {sql_where}"
            ),
            args,
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?)),
        )
        .optional()?;
    row.map(|(ingest, job, rows, seq, content_hash)| {
        Ok(KeyedIngest {
            result: IngestResult {
                ingest_id: IngestId::parse(&ingest).map_err(|e| data_error("ingest id", e))?,
                job_id: JobId::parse(&job).map_err(|e| data_error("job id", e))?,
                rows: rows as u64,
                seq: seq as u64,
                replayed: true,
            },
            content_hash,
        })
    })
    .transpose()
}

impl Catalog {
    /// The staged prefixes a job may still read: those of ingests whose job has not
    /// succeeded (queued, running, or failed or cancelled and so retryable).
    pub async fn staged_prefixes_in_use(&self) -> Result<std::collections::HashSet<String>> {
        self.call(|c| {
            let mut statement = c.prepare(
                "SELECT i.staged_prefix FROM ingests i JOIN jobs j ON j.ingest_id = i.ingest_id WHERE j.state != ?1",
            )?;
            let succeeded = enum_text(&JobState::Succeeded)?;
            let prefixes = statement
                .query_map([succeeded], |row| row.get::<_, String>(0))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(prefixes)
        })
        .await
    }

    /// The ingest an idempotency key names, if it was used before in this table.
    pub async fn ingest_by_key(
        &self,
        workspace: &WorkspaceName,
        table: &TableName,
        key: &str,
    ) -> Result<Option<KeyedIngest>> {
        let (workspace, table, key) = (workspace.clone(), table.clone(), key.to_string());
        self.call(move |c| {
            ingest_result(
                c,
                "i.workspace = ?1 AND i.table_name = ?2 AND i.idempotency_key = ?3",
                &[&workspace.as_str(), &table.as_str(), &key],
            )
        })
        .await
    }

    /// Record a staged ingest and queue its job, in one transaction. The ingest gets the
    /// next `seq` of its table. If its idempotency key was used meanwhile, nothing is
    /// recorded and the first ingest's result is returned.
    pub async fn record_ingest(&self, new: NewIngest) -> Result<Recorded> {
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            if let Some(key) = &new.idempotency_key
                && let Some(existing) = ingest_result(
                    &tx,
                    "i.workspace = ?1 AND i.table_name = ?2 AND i.idempotency_key = ?3",
                    &[&new.workspace.as_str(), &new.table.as_str(), key],
                )?
            {
                return Ok(Recorded::Replayed(existing));
            }
            let seq: i64 = tx.query_row(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM ingests WHERE workspace = ?1 AND table_name = ?2",
                params![new.workspace.as_str(), new.table.as_str()],
                |row| row.get(0),
            )?;
            let at = now();
            tx.execute(
                "INSERT INTO ingests (ingest_id, workspace, table_name, generation, seq, idempotency_key, rows, staged_prefix, created_at, content_hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    new.ingest_id.to_string(),
                    new.workspace.as_str(),
                    new.table.as_str(),
                    new.generation as i64,
                    seq,
                    new.idempotency_key,
                    new.rows as i64,
                    new.staged_prefix,
                    at,
                    new.content_hash
                ],
            )?;
            let counts = JobCounts {
                rows_received: new.rows,
                ..JobCounts::default()
            };
            tx.execute(
                "INSERT INTO jobs (job_id, kind, workspace, table_name, ingest_id, state, steps, counts, next_attempt_at, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?9)",
                params![
                    new.job_id.to_string(),
                    enum_text(&JobKind::Ingest)?,
                    new.workspace.as_str(),
                    new.table.as_str(),
                    new.ingest_id.to_string(),
                    enum_text(&JobState::Queued)?,
                    to_json(&new.steps)?,
                    to_json(&counts)?,
                    at
                ],
            )?;
            tx.commit()?;
            Ok(Recorded::New(IngestResult {
                ingest_id: new.ingest_id,
                job_id: new.job_id,
                rows: new.rows,
                seq: seq as u64,
                replayed: false,
            }))
        })
        .await
    }

    pub async fn ingest(&self, ingest_id: &IngestId) -> Result<IngestRecord> {
        let ingest_id = *ingest_id;
        self.call(move |c| {
            let row: Option<(String, String, i64, i64, i64, String)> = c
                .query_row(
                    "SELECT workspace, table_name, generation, seq, rows, staged_prefix FROM ingests WHERE ingest_id = ?1",
                    [ingest_id.to_string()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
                )
                .optional()?;
            let Some((workspace, table, generation, seq, rows, staged_prefix)) = row else {
                return Err(Error::CatalogData(format!("ingest {ingest_id} is not recorded")));
            };
            Ok(IngestRecord {
                ingest_id,
                workspace: WorkspaceName::new(workspace).map_err(|e| data_error("ingest", e))?,
                table: TableName::new(table).map_err(|e| data_error("ingest", e))?,
                generation: generation as u64,
                seq: seq as u64,
                rows: rows as u64,
                staged_prefix,
            })
        })
        .await
    }

    pub async fn job(&self, job_id: &JobId) -> Result<JobRecord> {
        let job_id = *job_id;
        self.call(move |c| read_job(c, &job_id)).await
    }

    /// Jobs matching the filter, newest first.
    pub async fn list_jobs(&self, filter: ListJobsRequest) -> Result<Vec<JobInfo>> {
        self.call(move |c| {
            let state = filter.state.as_ref().map(enum_text).transpose()?;
            let limit = filter.limit.unwrap_or(50).min(10_000) as i64;
            let mut statement = c.prepare(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs
                 WHERE (?1 IS NULL OR workspace = ?1) AND (?2 IS NULL OR table_name = ?2) AND (?3 IS NULL OR state = ?3)
                 ORDER BY created_at DESC, job_id DESC LIMIT ?4"
            ))?;
            let rows = statement.query_map(
                params![
                    filter.workspace.as_ref().map(|w| w.as_str()),
                    filter.table.as_ref().map(|t| t.as_str()),
                    state,
                    limit
                ],
                job_from_row,
            )?;
            rows.map(|raw| decode_job(raw?).map(|j| j.info)).collect()
        })
        .await
    }

    /// Queue again the jobs left running by a scheduler that stopped; returns them.
    pub async fn requeue_interrupted(&self) -> Result<Vec<JobId>> {
        self.call(|c| {
            let running = enum_text(&JobState::Running)?;
            let ids: Vec<String> = c
                .prepare("SELECT job_id FROM jobs WHERE state = ?1")?
                .query_map([&running], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            c.execute(
                "UPDATE jobs SET state = ?2, updated_at = ?3 WHERE state = ?1",
                params![running, enum_text(&JobState::Queued)?, now()],
            )?;
            ids.iter()
                .map(|id| JobId::parse(id).map_err(|e| data_error("job id", e)))
                .collect()
        })
        .await
    }

    /// Claim the next job to run, fairly: never a job of a table that has one running or an
    /// older one queued (each table's ingests commit in order), and among the rest the
    /// oldest due job of the workspace with the fewest jobs running (so one workspace's
    /// backlog does not hold the others up). Marks it running.
    pub async fn claim_next_job(&self) -> Result<Option<JobRecord>> {
        self.call(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let at = now();
            let mut running: BTreeMap<String, usize> = BTreeMap::new();
            let mut busy_tables: std::collections::BTreeSet<(String, String)> = Default::default();
            {
                let mut rows = tx.prepare("SELECT workspace, table_name FROM jobs WHERE state = ?1")?;
                let mut rows = rows.query([enum_text(&JobState::Running)?])?;
                while let Some(row) = rows.next()? {
                    let (workspace, table): (String, String) = (row.get(0)?, row.get(1)?);
                    *running.entry(workspace.clone()).or_default() += 1;
                    busy_tables.insert((workspace, table));
                }
            }
            // The first queued job of each table, in age order; due ones are candidates.
            let mut candidates: Vec<(usize, usize, String)> = Vec::new();
            {
                let mut rows = tx.prepare(
                    "SELECT job_id, workspace, table_name, next_attempt_at <= ?2 FROM jobs
                     WHERE state = ?1 ORDER BY created_at, job_id",
                )?;
                let mut rows = rows.query(params![enum_text(&JobState::Queued)?, at])?;
                let mut age = 0;
                while let Some(row) = rows.next()? {
                    let (id, workspace, table, due): (String, String, String, bool) =
                        (row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?);
                    let first_of_table = busy_tables.insert((workspace.clone(), table));
                    if first_of_table && due {
                        let load = running.get(&workspace).copied().unwrap_or(0);
                        candidates.push((load, age, id));
                    }
                    age += 1;
                }
            }
            let Some((_, _, id)) = candidates.into_iter().min() else {
                return Ok(None);
            };
            tx.execute(
                "UPDATE jobs SET state = ?2, attempts = attempts + 1, updated_at = ?3 WHERE job_id = ?1",
                params![id, enum_text(&JobState::Running)?, at],
            )?;
            let job = read_job(&tx, &JobId::parse(&id).map_err(|e| data_error("job id", e))?)?;
            tx.commit()?;
            Ok(Some(job))
        })
        .await
    }

    /// The earliest time a queued job becomes due, if any is queued.
    pub async fn next_due(&self) -> Result<Option<String>> {
        self.call(|c| {
            Ok(c.query_row(
                "SELECT MIN(next_attempt_at) FROM jobs WHERE state = ?1",
                [enum_text(&JobState::Queued)?],
                |r| r.get(0),
            )?)
        })
        .await
    }

    /// Save a job's steps and counts (after each step).
    pub async fn save_progress(
        &self,
        job_id: &JobId,
        steps: &BTreeMap<String, StepState>,
        counts: &JobCounts,
    ) -> Result<()> {
        let (job_id, steps, counts) = (*job_id, to_json(steps)?, to_json(counts)?);
        self.call(move |c| {
            c.execute(
                "UPDATE jobs SET steps = ?2, counts = ?3, updated_at = ?4 WHERE job_id = ?1",
                params![job_id.to_string(), steps, counts, now()],
            )?;
            Ok(())
        })
        .await
    }

    /// Save a job's counts in the middle of a step (before a commit that a crash could
    /// separate from the step's end).
    pub async fn save_counts(&self, job_id: &JobId, counts: &JobCounts) -> Result<()> {
        let (job_id, counts) = (*job_id, to_json(counts)?);
        self.call(move |c| {
            c.execute(
                "UPDATE jobs SET counts = ?2, updated_at = ?3 WHERE job_id = ?1",
                params![job_id.to_string(), counts, now()],
            )?;
            Ok(())
        })
        .await
    }

    /// End a running job: `state` is final, or `Queued` with `retry_at` for another
    /// attempt.
    pub async fn end_attempt(
        &self,
        job_id: &JobId,
        state: JobState,
        error: Option<String>,
        retry_at: Option<String>,
    ) -> Result<()> {
        let job_id = *job_id;
        self.call(move |c| {
            let at = now();
            c.execute(
                "UPDATE jobs SET state = ?2, last_error = COALESCE(?3, last_error), next_attempt_at = COALESCE(?4, next_attempt_at),
                 cancel_requested = CASE WHEN ?2 = 'cancelled' THEN 0 ELSE cancel_requested END, updated_at = ?5
                 WHERE job_id = ?1",
                params![job_id.to_string(), enum_text(&state)?, error, retry_at, at],
            )?;
            Ok(())
        })
        .await
    }

    /// Cancel a job: a queued one at once, a running one at its next step boundary.
    pub async fn cancel_job(&self, job_id: &JobId) -> Result<JobInfo> {
        let job_id = *job_id;
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let job = read_job(&tx, &job_id)?;
            match job.info.state {
                JobState::Queued => {
                    tx.execute(
                        "UPDATE jobs SET state = 'cancelled', updated_at = ?2 WHERE job_id = ?1",
                        params![job_id.to_string(), now()],
                    )?;
                }
                JobState::Running => {
                    tx.execute(
                        "UPDATE jobs SET cancel_requested = 1, updated_at = ?2 WHERE job_id = ?1",
                        params![job_id.to_string(), now()],
                    )?;
                }
                state => {
                    return Err(Error::FailedPrecondition(format!(
                        "job {job_id} is already {}; only queued or running jobs can be cancelled",
                        enum_text(&state)?
                    )));
                }
            }
            let job = read_job(&tx, &job_id)?;
            tx.commit()?;
            Ok(job.info)
        })
        .await
    }

    /// Queue a failed or cancelled job again; it resumes at its first step not done.
    pub async fn retry_job(&self, job_id: &JobId) -> Result<JobInfo> {
        let job_id = *job_id;
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let job = read_job(&tx, &job_id)?;
            if !matches!(job.info.state, JobState::Failed | JobState::Cancelled) {
                return Err(Error::FailedPrecondition(format!(
                    "job {job_id} is {}; only failed or cancelled jobs can be retried",
                    enum_text(&job.info.state)?
                )));
            }
            let at = now();
            tx.execute(
                "UPDATE jobs SET state = 'queued', cancel_requested = 0, next_attempt_at = ?2, updated_at = ?2 WHERE job_id = ?1",
                params![job_id.to_string(), at],
            )?;
            let job = read_job(&tx, &job_id)?;
            tx.commit()?;
            Ok(job.info)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ftab_model::protocol::WorkspaceKind;

    fn new_ingest(key: Option<&str>) -> NewIngest {
        NewIngest {
            ingest_id: IngestId::generate(),
            job_id: JobId::generate(),
            workspace: WorkspaceName::new("prod").unwrap(),
            table: TableName::new("t").unwrap(),
            generation: 1,
            idempotency_key: key.map(str::to_string),
            content_hash: key.map(|_| "sha256:00".to_string()),
            rows: 10,
            staged_prefix: "staging/prod/t/x".into(),
            steps: BTreeMap::from([
                ("offline_commit".to_string(), StepState::Pending),
                ("online_load".to_string(), StepState::Pending),
            ]),
        }
    }

    async fn catalog() -> Catalog {
        let catalog = Catalog::open_in_memory().unwrap();
        catalog
            .create_workspace(WorkspaceName::new("prod").unwrap(), WorkspaceKind::Live)
            .await
            .unwrap();
        catalog
    }

    fn result(recorded: Recorded) -> IngestResult {
        match recorded {
            Recorded::New(r) | Recorded::Replayed(KeyedIngest { result: r, .. }) => r,
        }
    }

    #[tokio::test]
    async fn seqs_increase_and_idempotency_keys_replay() {
        let catalog = catalog().await;
        let first = result(catalog.record_ingest(new_ingest(Some("k"))).await.unwrap());
        let second = result(catalog.record_ingest(new_ingest(None)).await.unwrap());
        assert_eq!((first.seq, second.seq), (1, 2));
        let again = catalog.record_ingest(new_ingest(Some("k"))).await.unwrap();
        assert_eq!(
            again,
            Recorded::Replayed(KeyedIngest {
                result: IngestResult {
                    replayed: true,
                    ..first.clone()
                },
                content_hash: Some("sha256:00".into()),
            })
        );
        let found = catalog
            .ingest_by_key(
                &WorkspaceName::new("prod").unwrap(),
                &TableName::new("t").unwrap(),
                "k",
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.result.ingest_id, first.ingest_id);
        assert_eq!(found.content_hash.as_deref(), Some("sha256:00"));
        let record = catalog.ingest(&first.ingest_id).await.unwrap();
        assert_eq!((record.seq, record.rows), (1, 10));
    }

    #[tokio::test]
    async fn claims_are_fair_across_workspaces_and_keep_each_tables_order() {
        let catalog = catalog().await;
        catalog
            .create_workspace(WorkspaceName::new("other").unwrap(), WorkspaceKind::Live)
            .await
            .unwrap();
        let job = |workspace: &str, table: &str| NewIngest {
            workspace: WorkspaceName::new(workspace).unwrap(),
            table: TableName::new(table).unwrap(),
            ..new_ingest(None)
        };
        let mut ids = Vec::new();
        for (workspace, table) in [
            ("prod", "t1"),
            ("prod", "t1"),
            ("prod", "t2"),
            ("other", "t1"),
        ] {
            ids.push(result(catalog.record_ingest(job(workspace, table)).await.unwrap()).job_id);
            // created_at has millisecond resolution: keep the order unambiguous.
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        }
        let claim = || async {
            catalog
                .claim_next_job()
                .await
                .unwrap()
                .map(|j| j.info.job_id)
        };
        assert_eq!(claim().await, Some(ids[0]), "the oldest first");
        // prod.t1 runs, so its second job waits; of the rest, the workspace with nothing
        // running goes first although its job is younger.
        assert_eq!(
            claim().await,
            Some(ids[3]),
            "other's job before prod's second"
        );
        assert_eq!(claim().await, Some(ids[2]));
        assert_eq!(
            claim().await,
            None,
            "prod.t1's next job waits for its first"
        );
        catalog
            .end_attempt(&ids[0], JobState::Succeeded, None, None)
            .await
            .unwrap();
        assert_eq!(claim().await, Some(ids[1]));
    }

    #[tokio::test]
    async fn jobs_are_claimed_once_and_follow_their_states() {
        let catalog = catalog().await;
        let first = result(catalog.record_ingest(new_ingest(None)).await.unwrap());
        let second = result(catalog.record_ingest(new_ingest(None)).await.unwrap());
        let claimed = catalog.claim_next_job().await.unwrap().unwrap();
        assert_eq!(claimed.info.job_id, first.job_id, "oldest first");
        assert_eq!(
            (claimed.info.state, claimed.info.attempts),
            (JobState::Running, 1)
        );
        assert_eq!(claimed.info.counts.rows_received, 10);

        // Cancel: the running one at its next step, the queued one at once.
        let running = catalog.cancel_job(&first.job_id).await.unwrap();
        assert_eq!(running.state, JobState::Running);
        assert!(catalog.job(&first.job_id).await.unwrap().cancel_requested);
        let queued = catalog.cancel_job(&second.job_id).await.unwrap();
        assert_eq!(queued.state, JobState::Cancelled);
        assert!(catalog.claim_next_job().await.unwrap().is_none());

        let err = catalog.cancel_job(&second.job_id).await.unwrap_err();
        assert!(err.to_string().contains("already cancelled"), "{err}");
        let retried = catalog.retry_job(&second.job_id).await.unwrap();
        assert_eq!(retried.state, JobState::Queued);
        let err = catalog.retry_job(&second.job_id).await.unwrap_err();
        assert!(
            err.to_string().contains("only failed or cancelled"),
            "{err}"
        );

        // A scheduler that stops with a job running queues it again at start.
        assert_eq!(catalog.requeue_interrupted().await.unwrap(), [first.job_id]);
        let listed = catalog.list_jobs(ListJobsRequest::default()).await.unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().all(|j| j.state == JobState::Queued));
        let err = catalog.job(&JobId::generate()).await.unwrap_err();
        assert!(matches!(err, Error::JobNotFound(_)));
    }
}
