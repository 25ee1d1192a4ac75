//! The messages of ftab's Flight protocol, typed (DESIGN.md, "Flight protocol").
//!
//! A DoAction call carries an action name in `type` and a JSON body; [`Action::decode`] is
//! the one place that turns the pair into a typed request, and [`Action::encode`] the one
//! place that builds it. Answers are JSON of the `*Response` types. The shapes are
//! documented for non-Rust clients in docs/protocol.md.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use crate::definitions::{Column, FeatureRef, FeatureTable};
use crate::diff::Plan;
use crate::ids::{IngestId, JobId};
use crate::names::{ServiceName, SpineName, TableName, WorkspaceName};
use crate::repository::RepositoryFile;

/// Whether a workspace ingests and materializes (`live`) or only holds definitions
/// (`dev`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkspaceKind {
    Live,
    #[default]
    Dev,
}

impl WorkspaceKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            WorkspaceKind::Live => "live",
            WorkspaceKind::Dev => "dev",
        }
    }
}

impl std::str::FromStr for WorkspaceKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "live" => Ok(WorkspaceKind::Live),
            "dev" => Ok(WorkspaceKind::Dev),
            other => Err(format!("unknown workspace kind `{other}`; use live or dev")),
        }
    }
}

/// A DoAction request. The variant name in snake_case is the action's `type`; the payload
/// is its JSON body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Plan(PlanRequest),
    Apply(ApplyRequest),
    CreateWorkspace(CreateWorkspaceRequest),
    ListWorkspaces(ListWorkspacesRequest),
    DescribeTable(DescribeTableRequest),
    ListJobs(ListJobsRequest),
    GetJob(JobRequest),
    CancelJob(JobRequest),
    RetryJob(JobRequest),
    GetOnline(GetOnlineRequest),
    Ingest(IngestCommand),
    ServingDefinitions(ServingDefinitionsRequest),
}

/// The largest gRPC message either side of ftab's Flight service accepts: a feature
/// repository is sent whole in one action, and a row travels in one message, so this is
/// also the largest row an ingest, an online read or a training set can carry. The server
/// and ftab's clients use the same limit (docs/protocol.md).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The action types this protocol version knows, for messages and `ListActions`.
pub const ACTION_TYPES: &[(&str, &str)] = &[
    (
        "plan",
        "Show what applying a feature repository to a workspace would change",
    ),
    ("apply", "Apply a feature repository to a workspace"),
    ("create_workspace", "Create a live or dev workspace"),
    ("list_workspaces", "List workspaces"),
    ("describe_table", "Describe a feature table of a workspace"),
    ("list_jobs", "List jobs, newest first"),
    ("get_job", "Show one job: state, steps, counts, last error"),
    ("cancel_job", "Cancel a queued or running job"),
    ("retry_job", "Run a failed or cancelled job again"),
    (
        "get_online",
        "Read one entity's online record of a feature table (for inspection)",
    ),
    (
        "serving_definitions",
        "The applied definitions of the live workspaces with their online tables' storage (for ftab-serving)",
    ),
    (
        "ingest",
        "Ingest the files at a URI (Parquet, CSV or JSON) into a feature table, read in place by the executors",
    ),
];

/// A DoAction request that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown action `{0}`; this server knows: {known}", known = known_actions())]
    UnknownAction(String),
    #[error("invalid body for action `{action}`: {message}")]
    InvalidBody { action: String, message: String },
}

fn known_actions() -> String {
    ACTION_TYPES
        .iter()
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Action {
    /// The Flight action `type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Action::Plan(_) => "plan",
            Action::Apply(_) => "apply",
            Action::CreateWorkspace(_) => "create_workspace",
            Action::ListWorkspaces(_) => "list_workspaces",
            Action::DescribeTable(_) => "describe_table",
            Action::ListJobs(_) => "list_jobs",
            Action::GetJob(_) => "get_job",
            Action::CancelJob(_) => "cancel_job",
            Action::RetryJob(_) => "retry_job",
            Action::GetOnline(_) => "get_online",
            Action::Ingest(_) => "ingest",
            Action::ServingDefinitions(_) => "serving_definitions",
        }
    }

    /// Decode a Flight action. An empty body is read as `{}`.
    pub fn decode(action_type: &str, body: &[u8]) -> Result<Action, DecodeError> {
        if !ACTION_TYPES.iter().any(|(name, _)| *name == action_type) {
            return Err(DecodeError::UnknownAction(action_type.to_string()));
        }
        let invalid = |message: String| DecodeError::InvalidBody {
            action: action_type.to_string(),
            message,
        };
        let body: serde_json::Value = if body.iter().all(u8::is_ascii_whitespace) {
            serde_json::Value::Object(Default::default())
        } else {
            serde_json::from_slice(body).map_err(|e| invalid(format!("not JSON: {e}")))?
        };
        let tagged = serde_json::json!({ action_type: body });
        serde_json::from_value(tagged).map_err(|e| invalid(e.to_string()))
    }

    /// The action's `type` and JSON body.
    pub fn encode(&self) -> (&'static str, Vec<u8>) {
        let tagged = serde_json::to_value(self).expect("protocol types serialize to JSON");
        let body = match tagged {
            serde_json::Value::Object(map) => map.into_iter().next().map(|(_, v)| v),
            _ => None,
        }
        .expect("an externally tagged enum serializes as a one-key object");
        (
            self.type_name(),
            serde_json::to_vec(&body).expect("JSON values serialize"),
        )
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    pub workspace: WorkspaceName,
    pub files: Vec<RepositoryFile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyRequest {
    pub workspace: WorkspaceName,
    pub files: Vec<RepositoryFile>,
    /// Apply changes that break stored data; the tables concerned start on fresh storage.
    #[serde(default)]
    pub force: bool,
    /// The workspace version the caller planned against; if the workspace has moved on
    /// since, the apply is refused so nothing unreviewed is applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<u64>,
}

/// The answer to `plan`, and the body of `apply`'s answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanResponse {
    pub workspace: WorkspaceName,
    pub kind: WorkspaceKind,
    /// The applied version the plan was computed against (0: nothing applied yet).
    pub current_version: u64,
    pub plan: Plan,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplyResponse {
    pub workspace: WorkspaceName,
    /// The version before the apply.
    pub previous_version: u64,
    /// The version after; equal to `previous_version` when there was nothing to change.
    pub version: u64,
    pub plan: Plan,
    /// Feature tables that start on fresh storage because a forced apply broke or deleted
    /// them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired_storage: Vec<TableName>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkspaceRequest {
    pub name: WorkspaceName,
    #[serde(default)]
    pub kind: WorkspaceKind,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListWorkspacesRequest {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkspaceInfo {
    pub name: WorkspaceName,
    pub kind: WorkspaceKind,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// The applied definitions' version (0: nothing applied yet).
    pub version: u64,
    pub feature_tables: usize,
    pub feature_services: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListWorkspacesResponse {
    pub workspaces: Vec<WorkspaceInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DescribeTableRequest {
    pub workspace: WorkspaceName,
    pub table: TableName,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableDescription {
    pub workspace: WorkspaceName,
    pub kind: WorkspaceKind,
    /// The workspace version this description is read from.
    pub version: u64,
    pub table: FeatureTable,
    pub join_keys: Vec<String>,
    pub features: Vec<Column>,
    /// The feature services that use this table.
    pub feature_services: Vec<String>,
    /// Storage generation: bumped when a forced apply breaks the table (docs/catalog.md).
    pub generation: u64,
    /// Where the offline Delta table lives.
    pub offline_location: String,
    /// What the offline table holds; absent until the first ingest commits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline: Option<OfflineStats>,
}

/// The offline Delta table as of its latest version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineStats {
    pub delta_version: u64,
    pub files: u64,
    /// Stored rows, duplicates across ingests included.
    pub rows: u64,
}

/// A Flight descriptor command (`FlightDescriptor::cmd`): JSON with one key naming the
/// command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// DoPut: push a dataframe into a feature table.
    Ingest(IngestCommand),
    /// DoPut: store a spine for later training-set requests.
    Spine(SpineCommand),
    /// GetFlightInfo (and DoExchange, with the spine sent as the exchange's data): a
    /// point-in-time-correct training set.
    TrainingSet(TrainingSetRequest),
}

impl Command {
    pub fn decode(bytes: &[u8]) -> Result<Command, DecodeError> {
        serde_json::from_slice(bytes).map_err(|e| DecodeError::InvalidBody {
            action: "command".into(),
            message: format!(
                "{e}; a command is JSON with one key, `ingest`, `spine` or `training_set`, such as {{\"ingest\": {{\"workspace\": \"prod\", \"table\": \"t\"}}}}"
            ),
        })
    }

    /// The command's name, for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Ingest(_) => "ingest",
            Command::Spine(_) => "spine",
            Command::TrainingSet(_) => "training_set",
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("protocol types serialize to JSON")
    }
}

/// DoPut `{"spine": {"name"}}`: the uploaded batches are stored as spine `name` (an
/// earlier spine of that name is replaced) until it expires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpineCommand {
    pub name: SpineName,
}

/// The PutResult `app_metadata` of a stored spine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpineInfo {
    pub name: SpineName,
    pub rows: u64,
    /// RFC 3339, UTC.
    pub expires_at: String,
}

/// Where a training set's spine comes from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum SpineSource {
    /// A spine uploaded with DoPut `{"spine": {"name"}}`.
    Name { name: SpineName },
    /// Parquet files in an object store: one file, or a directory of `*.parquet` files.
    Uri { uri: String },
}

impl<'de> Deserialize<'de> for SpineSource {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Either {
            name: Option<SpineName>,
            uri: Option<String>,
        }
        let either = Either::deserialize(deserializer)?;
        match (either.name, either.uri) {
            (Some(name), None) => Ok(SpineSource::Name { name }),
            (None, Some(uri)) => Ok(SpineSource::Uri { uri }),
            _ => Err(serde::de::Error::custom(
                "spine must be {\"name\": NAME} (an uploaded spine) or {\"uri\": URI} (Parquet in an object store)",
            )),
        }
    }
}

/// Which version of the offline tables a training set reads: one point for every table,
/// or one per table (tables not named read their latest version). A number is a Delta
/// version, a string an RFC 3339 wall-clock time.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum AsOfRequest {
    All(AsOf),
    PerTable(BTreeMap<TableName, AsOf>),
}

/// One point of `as_of` from JSON, or a message saying what was wrong with it.
fn as_of_point(value: &serde_json::Value, at: &str) -> Result<AsOf, String> {
    let expected = "a Delta version (a whole number) or an RFC 3339 time like 2024-05-01T00:00:00Z";
    match value {
        serde_json::Value::Number(n) => n
            .as_u64()
            .map(AsOf::Version)
            .ok_or_else(|| format!("{at} is {n}; give {expected}")),
        serde_json::Value::String(text) => DateTime::parse_from_rfc3339(text)
            .map(|t| AsOf::Time(t.with_timezone(&Utc)))
            .map_err(|e| {
                let shown = crate::names::echoed(text);
                format!("{at} `{shown}` is not an RFC 3339 time ({e}); give {expected}")
            }),
        other => Err(format!("{at} is {}; give {expected}", kind_of(other))),
    }
}

fn kind_of(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

impl<'de> Deserialize<'de> for AsOfRequest {
    /// A point for every table, or `{"table": point, ...}`; errors say which was meant
    /// and what a point looks like (serde's untagged enums only say that nothing matched).
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let value = serde_json::Value::deserialize(deserializer)?;
        match &value {
            serde_json::Value::Object(tables) => {
                let mut points = BTreeMap::new();
                for (table, point) in tables {
                    let name = TableName::new(table.as_str()).map_err(D::Error::custom)?;
                    let point = as_of_point(point, &format!("as_of of table `{name}`"))
                        .map_err(D::Error::custom)?;
                    points.insert(name, point);
                }
                Ok(AsOfRequest::PerTable(points))
            }
            point => as_of_point(point, "as_of")
                .map(AsOfRequest::All)
                .map_err(D::Error::custom),
        }
    }
}

impl AsOfRequest {
    /// The point `table` is read at, if pinned.
    pub fn for_table(&self, table: &TableName) -> Option<AsOf> {
        match self {
            AsOfRequest::All(as_of) => Some(*as_of),
            AsOfRequest::PerTable(tables) => tables.get(table).copied(),
        }
    }
}

/// `{"training_set": ...}`: the features of a feature service (or a list of
/// `table`/`table.feature` references), joined point-in-time correctly onto a spine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSetRequest {
    pub workspace: WorkspaceName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_service: Option<ServiceName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<FeatureRef>>,
    /// Absent only in DoExchange, where the spine follows as data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spine: Option<SpineSource>,
    /// The spine's time column; default: its only timestamp column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_column: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<AsOfRequest>,
    /// Name feature columns `<table>__<feature>` (default) or, when false, `<feature>`.
    #[serde(default = "default_true")]
    pub full_feature_names: bool,
}

fn default_true() -> bool {
    true
}

/// One table of a training set as read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSetTable {
    pub table: TableName,
    /// The Delta version read (absent when the table had no data at the requested point);
    /// pass it back as `as_of` to get the same rows later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_version: Option<u64>,
    /// Data files read after pruning, and in the version.
    pub files_read: u64,
    pub files_total: u64,
    /// How the join reads the table's rows: `bucket_merge` (each bucket's sorted files
    /// merged in place), `bucket_scan` (each bucket's files read as they lie, for the
    /// spine-index join) or `shuffle` (hash-shuffled, and sorted for the sort-merge join;
    /// older tables, a parallelism other than the table's bucket count, or too many files
    /// per bucket for the memory limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_by: Option<ReadBy>,
    /// How the table is joined: `spine_index` (the spine held in memory by key) or
    /// `sort_merge` (both sides sorted; for spines too large for memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<JoinStrategy>,
}

/// The `app_metadata` of a training set's FlightInfo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSetInfo {
    pub training_set_id: String,
    /// Output rows: one per spine row.
    pub rows: u64,
    pub tables: Vec<TrainingSetTable>,
    /// The spine's time column.
    pub timestamp_column: String,
    /// The endpoints can be fetched at least until then (RFC 3339, UTC): results are kept
    /// for the retention after the job ends, and this is the retention after submission.
    pub expires_at: String,
}

/// A DoGet ticket of a training set: one output partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSetTicket {
    pub training_set_id: String,
    pub partition: usize,
}

/// Longest idempotency key accepted.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 256;

/// DoPut `{"ingest": ...}`: push one dataframe into one feature table. As the DoAction
/// `ingest`, with `uri`: ingest the files at the URI, read in place by the executors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestCommand {
    pub workspace: WorkspaceName,
    pub table: TableName,
    /// A retried upload with the same key is a no-op answering the first ingest's ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Drop columns the table does not have instead of refusing the ingest.
    #[serde(default)]
    pub drop_extra_columns: bool,
    /// Files to ingest in place: one file, or every file of the format under a prefix
    /// (`s3://bucket/path/`, `gs://`, `az://`, `file://` or an absolute path). Only with the
    /// DoAction; a DoPut carries its data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// The files' format; by default, from the file names' extensions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<FileFormat>,
}

/// The format of files ingested by URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    Parquet,
    /// With a header row.
    Csv,
    /// Newline-delimited JSON objects.
    Json,
}

impl FileFormat {
    /// The file name extensions of the format.
    pub fn extensions(self) -> &'static [&'static str] {
        match self {
            FileFormat::Parquet => &[".parquet"],
            FileFormat::Csv => &[".csv"],
            FileFormat::Json => &[".json", ".jsonl", ".ndjson"],
        }
    }

    /// The format a file name's extension says, if any.
    pub fn of_file(name: &str) -> Option<Self> {
        [FileFormat::Parquet, FileFormat::Csv, FileFormat::Json]
            .into_iter()
            .find(|f| f.extensions().iter().any(|e| name.ends_with(e)))
    }
}

impl std::str::FromStr for FileFormat {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "parquet" => Ok(Self::Parquet),
            "csv" => Ok(Self::Csv),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "unknown file format `{other}`; use parquet, csv or json"
            )),
        }
    }
}

/// A control message inside a DoPut upload: a FlightData message with no data whose
/// `app_metadata` is this JSON. `{"abort": {"reason": "..."}}` tells the server that the
/// client could not produce the rest of the data: the server stores nothing and answers
/// CANCELLED. An upload that simply ends is complete, so a client whose source fails
/// half-way must abort (pyarrow: `writer.write_metadata(b'{"abort": {"reason": "..."}}')`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum UploadControl {
    Abort { reason: String },
}

impl UploadControl {
    /// The control message in a FlightData `app_metadata`, if it is one.
    pub fn decode(app_metadata: &[u8]) -> Option<Self> {
        if app_metadata.is_empty() {
            return None;
        }
        serde_json::from_slice(app_metadata).ok()
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an upload control message always serializes")
    }
}

/// The PutResult `app_metadata` of an accepted ingest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestResult {
    pub ingest_id: IngestId,
    pub job_id: JobId,
    pub rows: u64,
    /// The ingest's sequence number in its table: later ingests win ties.
    pub seq: u64,
    /// True when the idempotency key matched an earlier ingest and nothing was stored.
    #[serde(default)]
    pub replayed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Ingest,
    Backfill,
    OnlineResync,
    Compact,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Pending,
    Done,
    /// Not needed for this table (e.g. the online load of an offline-only table).
    Skipped,
}

/// What a job has counted so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCounts {
    pub rows_received: u64,
    pub duplicates_dropped: u64,
    pub offline_rows_committed: u64,
    pub online_rows_written: u64,
    pub online_skipped_older: u64,
    pub online_skipped_expired: u64,
}

/// A job as `get_job` and `list_jobs` answer it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobInfo {
    pub job_id: JobId,
    pub kind: JobKind,
    pub workspace: WorkspaceName,
    pub table: TableName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest_id: Option<IngestId>,
    pub state: JobState,
    pub attempts: u32,
    /// Each step in order, and how far it is.
    pub steps: BTreeMap<String, StepState>,
    pub counts: JobCounts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListJobsRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<WorkspaceName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<TableName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<JobState>,
    /// At most this many, newest first (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListJobsResponse {
    pub jobs: Vec<JobInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    pub job_id: JobId,
}

/// `serving_definitions`: what a serving process needs to answer online reads without the
/// catalog: each workspace's current definitions, and the storage generation and
/// Aerospike bins of each online table of the live ones.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServingDefinitionsRequest {}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServingDefinitionsResponse {
    pub workspaces: Vec<ServingWorkspace>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServingWorkspace {
    pub name: WorkspaceName,
    pub kind: WorkspaceKind,
    pub version: u64,
    pub definitions: crate::Definitions,
    pub tables: Vec<ServingTable>,
}

/// An online table's storage: its generation and the Aerospike bin of each feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServingTable {
    pub table: TableName,
    pub generation: u64,
    pub bins: Vec<String>,
}

/// `get_online`: one entity's online record, by its join key values given as text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetOnlineRequest {
    pub workspace: WorkspaceName,
    pub table: TableName,
    /// Every join key of the table: name -> value (numbers may be given as text).
    pub keys: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetOnlineResponse {
    pub workspace: WorkspaceName,
    pub table: TableName,
    pub keys: BTreeMap<String, String>,
    /// False when there is no record, or it is older than now minus the ttl.
    pub found: bool,
    /// RFC 3339, UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Feature values by name, in schema order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<(String, serde_json::Value)>,
}

/// The criteria of ListFlights: the feature tables of one workspace, or of all.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListTablesCriteria {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<WorkspaceName>,
}

impl ListTablesCriteria {
    /// Decode ListFlights criteria: empty, a JSON object, or a bare workspace name.
    pub fn decode(expression: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(expression)
            .map_err(|_| "ListFlights criteria must be UTF-8".to_string())?
            .trim();
        if text.is_empty() {
            return Ok(Self::default());
        }
        if text.starts_with('{') {
            return serde_json::from_str(text)
                .map_err(|e| format!("invalid ListFlights criteria: {e}"));
        }
        Ok(Self {
            workspace: Some(WorkspaceName::new(text).map_err(|e| e.to_string())?),
        })
    }
}

/// The `app_metadata` of each FlightInfo answered by ListFlights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableListing {
    pub workspace: WorkspaceName,
    pub table: TableName,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub entities: Vec<String>,
    pub online: bool,
    pub offline: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
}

/// Which version of an offline table to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum AsOf {
    /// A Delta version.
    Version(u64),
    /// The table as it was at this wall-clock time.
    Time(DateTime<Utc>),
}

impl std::str::FromStr for AsOf {
    type Err = String;

    /// A Delta version (`3`) or an RFC 3339 time (`2024-05-01T00:00:00Z`), as people type
    /// them (the CLI's `--as-of`).
    fn from_str(text: &str) -> Result<Self, String> {
        if let Ok(version) = text.parse::<u64>() {
            return Ok(AsOf::Version(version));
        }
        DateTime::parse_from_rfc3339(text)
            .map(|t| AsOf::Time(t.with_timezone(&Utc)))
            .map_err(|_| {
                format!(
                    "`{}` is neither a Delta version (a number) nor an RFC 3339 time such as 2024-05-01T00:00:00Z",
                    crate::names::echoed(text)
                )
            })
    }
}

/// How an as-of join finds each spine row's feature row. Both give the same rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinStrategy {
    /// Both sides sorted by keys and time, merged: holds a few batches, whatever the sizes
    /// (the sorts spill).
    #[default]
    SortMerge,
    /// The spine partition held in memory, indexed by key; feature rows stream past in any
    /// order, unsorted (the spine-index join). Only where the spine fits.
    SpineIndex,
}

/// How a table's feature rows reach its join: `read_by` in a training set's FlightInfo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadBy {
    /// Each bucket's sorted files merged in place: no shuffle, no sort.
    BucketMerge,
    /// Each bucket's files read one after another, unmerged (for the spine-index join).
    BucketScan,
    /// Hash-shuffled by the keys (and sorted, for the sort-merge join).
    Shuffle,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_round_trip() {
        let actions = [
            Action::CreateWorkspace(CreateWorkspaceRequest {
                name: WorkspaceName::new("prod").unwrap(),
                kind: WorkspaceKind::Live,
            }),
            Action::ListWorkspaces(ListWorkspacesRequest {}),
            Action::DescribeTable(DescribeTableRequest {
                workspace: WorkspaceName::new("prod").unwrap(),
                table: TableName::new("t").unwrap(),
            }),
            Action::Apply(ApplyRequest {
                workspace: WorkspaceName::new("prod").unwrap(),
                files: vec![RepositoryFile {
                    path: "a.toml".into(),
                    content: "x".into(),
                }],
                force: true,
                expected_version: Some(3),
            }),
            Action::Ingest(IngestCommand {
                workspace: WorkspaceName::new("prod").unwrap(),
                table: TableName::new("t").unwrap(),
                idempotency_key: Some("k".into()),
                drop_extra_columns: false,
                uri: Some("s3://bucket/in/".into()),
                format: Some(FileFormat::Csv),
            }),
            Action::ServingDefinitions(ServingDefinitionsRequest {}),
        ];
        for action in actions {
            let (name, body) = action.encode();
            assert_eq!(Action::decode(name, &body).unwrap(), action);
        }
        assert_eq!(
            ACTION_TYPES.len(),
            12,
            "every Action variant is listed in ACTION_TYPES"
        );
        let (_, body) = Action::Ingest(IngestCommand {
            workspace: WorkspaceName::new("prod").unwrap(),
            table: TableName::new("t").unwrap(),
            idempotency_key: None,
            drop_extra_columns: false,
            uri: Some("s3://b/x.parquet".into()),
            format: Some(FileFormat::Parquet),
        })
        .encode();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
            serde_json::json!({"workspace": "prod", "table": "t", "drop_extra_columns": false,
                               "uri": "s3://b/x.parquet", "format": "parquet"})
        );
        assert_eq!(FileFormat::of_file("x/y.ndjson"), Some(FileFormat::Json));
        assert_eq!(FileFormat::of_file("x/y.txt"), None);
        assert!(
            "orc"
                .parse::<FileFormat>()
                .unwrap_err()
                .contains("use parquet, csv or json")
        );
    }

    #[test]
    fn decode_errors_say_what_is_wrong() {
        let err = Action::decode("drop_everything", b"{}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown action `drop_everything`"), "{err}");
        assert!(err.contains("create_workspace"), "{err}");

        let err = Action::decode("create_workspace", b"{\"name\": \"../x\"}")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("invalid body for action `create_workspace`"),
            "{err}"
        );
        assert!(err.contains("not a valid workspace name"), "{err}");

        let err = Action::decode("create_workspace", b"{nope")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not JSON"), "{err}");

        let err = Action::decode("create_workspace", b"{\"name\": \"a\", \"kind\": \"prod\"}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `prod`"), "{err}");

        assert_eq!(
            Action::decode("list_workspaces", b"").unwrap(),
            Action::ListWorkspaces(ListWorkspacesRequest {})
        );
    }

    #[test]
    fn commands_decode_with_helpful_errors() {
        let command = Command::decode(
            br#"{"ingest": {"workspace": "prod", "table": "t", "idempotency_key": "k1"}}"#,
        )
        .unwrap();
        let Command::Ingest(ingest) = &command else {
            panic!("decoded {command:?}");
        };
        assert_eq!(ingest.idempotency_key.as_deref(), Some("k1"));
        assert!(!ingest.drop_extra_columns);
        assert_eq!(Command::decode(&command.encode()).unwrap(), command);
        let err = Command::decode(br#"{"ingest": {"workspace": "prod"}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing field `table`"), "{err}");
        let err = Command::decode(b"SELECT 1").unwrap_err().to_string();
        assert!(err.contains("a command is JSON with one key"), "{err}");
    }

    #[test]
    fn training_set_requests_decode() {
        let command = Command::decode(
            br#"{"training_set": {"workspace": "prod", "feature_service": "fraud",
                 "spine": {"name": "labels"}, "as_of": {"user_login_counts": 3, "t2": "2024-05-01T00:00:00Z"}}}"#,
        )
        .unwrap();
        let Command::TrainingSet(request) = &command else {
            panic!("decoded {command:?}");
        };
        assert!(request.full_feature_names, "full names by default");
        assert_eq!(
            request.spine,
            Some(SpineSource::Name {
                name: SpineName::new("labels").unwrap()
            })
        );
        let as_of = request.as_of.as_ref().unwrap();
        assert_eq!(
            as_of.for_table(&TableName::new("user_login_counts").unwrap()),
            Some(AsOf::Version(3))
        );
        assert!(matches!(
            as_of.for_table(&TableName::new("t2").unwrap()),
            Some(AsOf::Time(_))
        ));
        assert_eq!(as_of.for_table(&TableName::new("t3").unwrap()), None);
        assert_eq!(Command::decode(&command.encode()).unwrap(), command);

        let uri = Command::decode(
            br#"{"training_set": {"workspace": "prod", "features": ["t.f", "u"], "spine": {"uri": "s3://b/spine.parquet"}, "as_of": 4}}"#,
        )
        .unwrap();
        let Command::TrainingSet(request) = uri else {
            panic!();
        };
        assert_eq!(request.features.unwrap().len(), 2);
        assert_eq!(request.as_of, Some(AsOfRequest::All(AsOf::Version(4))));
        // A wrong as_of says what a point looks like (it said "data did not match any
        // variant of untagged enum AsOfRequest").
        for (as_of, says) in [
            (
                r#""not a time""#,
                "as_of `not a time` is not an RFC 3339 time",
            ),
            (
                "-3",
                "as_of is -3; give a Delta version (a whole number) or an RFC 3339 time",
            ),
            ("true", "as_of is a boolean; give a Delta version"),
            (
                r#"{"t1": "yesterday"}"#,
                "as_of of table `t1` `yesterday` is not an RFC 3339 time",
            ),
            (r#"{"t1": [1]}"#, "as_of of table `t1` is a list"),
        ] {
            let text = format!(
                r#"{{"training_set": {{"workspace": "prod", "features": ["t"], "spine": {{"name": "s"}}, "as_of": {as_of}}}}}"#
            );
            let err = Command::decode(text.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(says), "{as_of}: {err}");
            assert!(!err.contains("untagged"), "{err}");
        }
        let err = Command::decode(
            br#"{"training_set": {"workspace": "prod", "spine": {"name": "../x"}}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("invalid body for action `command`"), "{err}");
        let err = Command::decode(br#"{"spine": {}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing field `name`"), "{err}");
    }

    #[test]
    fn list_criteria_forms() {
        assert_eq!(ListTablesCriteria::decode(b"").unwrap().workspace, None);
        assert_eq!(
            ListTablesCriteria::decode(b"prod")
                .unwrap()
                .workspace
                .unwrap()
                .as_str(),
            "prod"
        );
        assert_eq!(
            ListTablesCriteria::decode(br#"{"workspace": "prod"}"#)
                .unwrap()
                .workspace
                .unwrap()
                .as_str(),
            "prod"
        );
        assert!(ListTablesCriteria::decode(b"../x").is_err());
    }
}
