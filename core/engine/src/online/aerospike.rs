//! The Aerospike online store, for clusters: every executor writes it and every serving
//! process reads it, each with its own client (docs/online-store.md, "Aerospike").
//!
//! - **Layout.** One set per (workspace, table, generation) in the configured namespace
//!   ([`set_name`]); the record key is ftab's encoded join key as a blob (the same bytes
//!   as the embedded store's key); bins `_ts` (UTC µs) and `_seq` and one bin per feature,
//!   named by the catalog ([`assign_bins`]: Aerospike allows 15 bytes). A null feature has
//!   no bin. Values keep their Aerospike type (integers, floats, strings, blobs, booleans,
//!   lists), so other Aerospike clients can read them.
//! - **Newer only.** Each write carries a filter expression: the stored (`_ts`, `_seq`)
//!   must be less than the row's. The server evaluates it under the record's lock, so
//!   there is no read-then-write race; a filter is not evaluated when the record does not
//!   exist, so a create always lands. A filtered-out write is counted as skipped-older.
//!   Writes replace the whole record (the record is the latest row, not a merge of rows).
//! - **TTL.** A record expires when its row leaves the table's ttl (rounded up to whole
//!   seconds); reads also drop what is older than now minus the ttl, so a read never
//!   returns an expired value whatever the server's expiry granularity.
//! - **Batches.** Rows are written in batches of `write_batch` records, `write_concurrency`
//!   batches at a time. Every record's result code is checked: records that failed or went
//!   unanswered are sent again, up to `write_attempts` times, then the write fails naming
//!   the result code and the count.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use aerospike::expressions::{and, eq, int_bin, int_val, lt, or};
use aerospike::operations;
use aerospike::{
    AuthMode, BatchOperation, BatchPolicy, BatchReadPolicy, BatchWritePolicy, Bin, Bins, Client,
    ClientPolicy, Expiration, Key, RecordExistsAction, ResultCode, Value,
};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{
    Date32Type, Float32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType,
};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::encoding::{LatestColumns, binary_json, date_json, encode_key, float, key_of_row};
use super::{KeyValue, OnlineError, OnlineRecord, OnlineStore, OnlineTable, WriteCounts};
use crate::definitions::ValueType;

/// The bin holding a record's timestamp (UTC microseconds).
pub const TIMESTAMP_BIN: &str = "_ts";
/// The bin holding a record's ingest sequence number.
pub const SEQ_BIN: &str = "_seq";
/// Aerospike's limit on bin names, in bytes.
pub const MAX_BIN_NAME: usize = 15;
/// Aerospike's limit on set names, in bytes.
pub const MAX_SET_NAME: usize = 63;

/// How to reach Aerospike and how hard to push it. `ftab-scheduler`, `ftab-executor` and
/// `ftab-serving` take these as flags, `FTAB_AEROSPIKE_*` variables or a config file's
/// `[aerospike]` table (docs/online-store.md).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AerospikeSettings {
    /// Seed hosts, `host:port[,host:port...]`.
    pub hosts: String,
    /// The namespace ftab's sets live in; it must exist in the server's configuration.
    pub namespace: String,
    /// User and password, for a server with security enabled.
    pub user: Option<String>,
    #[serde(skip_serializing)]
    pub password: Option<String>,
    /// Time one command (a get, a batch) may take in all, retries included.
    pub timeout_ms: u32,
    /// Time to open a connection to a node.
    pub connect_timeout_ms: u32,
    /// Records per batch write.
    pub write_batch: usize,
    /// Batch writes in flight at once, per writing task.
    pub write_concurrency: usize,
    /// Times a record is sent before its write fails.
    pub write_attempts: u32,
}

impl Default for AerospikeSettings {
    fn default() -> Self {
        Self {
            hosts: "127.0.0.1:3000".into(),
            namespace: "ftab".into(),
            user: None,
            password: None,
            timeout_ms: 1_000,
            connect_timeout_ms: 2_000,
            write_batch: 500,
            write_concurrency: 4,
            write_attempts: 4,
        }
    }
}

impl std::fmt::Debug for AerospikeSettings {
    // The password never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AerospikeSettings")
            .field("hosts", &self.hosts)
            .field("namespace", &self.namespace)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("timeout_ms", &self.timeout_ms)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("write_batch", &self.write_batch)
            .field("write_concurrency", &self.write_concurrency)
            .field("write_attempts", &self.write_attempts)
            .finish()
    }
}

impl AerospikeSettings {
    /// Check what can be checked without a server; the message names the setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.hosts.trim().is_empty() {
            return Err("aerospike hosts: none given; write host:port[,host:port...]".into());
        }
        for host in self.hosts.split(',') {
            let host = host.trim();
            let port = host.rsplit_once(':').map(|(_, p)| p);
            if port.is_none_or(|p| p.parse::<u16>().is_err()) {
                return Err(format!(
                    "aerospike hosts: `{host}` is not host:port (e.g. aerospike:3000)"
                ));
            }
        }
        if self.namespace.is_empty()
            || self.namespace.len() > 31
            || self.namespace.contains([':', ';'])
        {
            return Err(format!(
                "aerospike namespace `{}`: a namespace name has 1 to 31 bytes and no `:` or `;`",
                self.namespace
            ));
        }
        if self.user.is_some() != self.password.is_some() {
            return Err(
                "aerospike user and password: give both (the password in FTAB_AEROSPIKE_PASSWORD) or neither"
                    .into(),
            );
        }
        if self.write_batch == 0 || self.write_concurrency == 0 || self.write_attempts == 0 {
            return Err(
                "aerospike write_batch, write_concurrency and write_attempts must be at least 1"
                    .into(),
            );
        }
        if self.timeout_ms == 0 {
            return Err("aerospike timeout: must be at least 1 ms".into());
        }
        Ok(())
    }
}

/// The Aerospike settings as flags and environment variables (`FTAB_AEROSPIKE_*`), and as
/// the `[aerospike]` table of a config file (same names, without the password, which comes
/// from `FTAB_AEROSPIKE_PASSWORD` only). Each given one overrides the file's, which
/// overrides the default.
#[derive(Debug, Clone, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AerospikeArgs {
    /// Aerospike seed hosts, HOST:PORT[,HOST:PORT...] (default 127.0.0.1:3000).
    #[arg(
        long = "aerospike-hosts",
        env = "FTAB_AEROSPIKE_HOSTS",
        value_name = "HOSTS"
    )]
    pub hosts: Option<String>,
    /// The Aerospike namespace for ftab's sets (default `ftab`); it must exist on the server.
    #[arg(
        long = "aerospike-namespace",
        env = "FTAB_AEROSPIKE_NAMESPACE",
        value_name = "NAME"
    )]
    pub namespace: Option<String>,
    /// Aerospike user, for a server with security on (password: FTAB_AEROSPIKE_PASSWORD).
    #[arg(
        long = "aerospike-user",
        env = "FTAB_AEROSPIKE_USER",
        value_name = "USER"
    )]
    pub user: Option<String>,
    #[arg(skip)]
    #[serde(skip)]
    pub password: Option<String>,
    /// Time one Aerospike command may take, in milliseconds (default 1000).
    #[arg(
        long = "aerospike-timeout-ms",
        env = "FTAB_AEROSPIKE_TIMEOUT_MS",
        value_name = "MS"
    )]
    pub timeout_ms: Option<u32>,
    /// Time to open a connection to an Aerospike node, in milliseconds (default 2000).
    #[arg(
        long = "aerospike-connect-timeout-ms",
        env = "FTAB_AEROSPIKE_CONNECT_TIMEOUT_MS",
        value_name = "MS"
    )]
    pub connect_timeout_ms: Option<u32>,
    /// Records per Aerospike batch write (default 500).
    #[arg(
        long = "aerospike-write-batch",
        env = "FTAB_AEROSPIKE_WRITE_BATCH",
        value_name = "N"
    )]
    pub write_batch: Option<usize>,
    /// Batch writes in flight at once per loading task (default 4).
    #[arg(
        long = "aerospike-write-concurrency",
        env = "FTAB_AEROSPIKE_WRITE_CONCURRENCY",
        value_name = "N"
    )]
    pub write_concurrency: Option<usize>,
}

impl AerospikeArgs {
    /// Whether any setting was given (an executor without any has no online store).
    pub fn given(&self) -> bool {
        self.hosts.is_some() || self.namespace.is_some()
    }

    /// These over `file` over the defaults, with the password from the environment; checked.
    pub fn resolve(self, file: Option<AerospikeArgs>) -> Result<AerospikeSettings, String> {
        let file = file.unwrap_or_default();
        let defaults = AerospikeSettings::default();
        let settings = AerospikeSettings {
            hosts: self.hosts.or(file.hosts).unwrap_or(defaults.hosts),
            namespace: self
                .namespace
                .or(file.namespace)
                .unwrap_or(defaults.namespace),
            user: self.user.or(file.user),
            password: self
                .password
                .or_else(|| std::env::var("FTAB_AEROSPIKE_PASSWORD").ok()),
            timeout_ms: self
                .timeout_ms
                .or(file.timeout_ms)
                .unwrap_or(defaults.timeout_ms),
            connect_timeout_ms: self
                .connect_timeout_ms
                .or(file.connect_timeout_ms)
                .unwrap_or(defaults.connect_timeout_ms),
            write_batch: self
                .write_batch
                .or(file.write_batch)
                .unwrap_or(defaults.write_batch),
            write_concurrency: self
                .write_concurrency
                .or(file.write_concurrency)
                .unwrap_or(defaults.write_concurrency),
            write_attempts: defaults.write_attempts,
        };
        settings.validate()?;
        Ok(settings)
    }
}

/// The set of (workspace, table, generation): `workspace.table.gN`, or, where that is
/// longer than Aerospike allows, its start and a hash of the whole.
pub fn set_name(table: &OnlineTable) -> String {
    let full = format!("{}.{}.g{}", table.workspace, table.table, table.generation);
    if full.len() <= MAX_SET_NAME {
        return full;
    }
    let hash = Sha256::digest(full.as_bytes());
    let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    // 63 = 46 bytes of the name, `~`, 16 hex digits. Names are ASCII (ftab's name rules).
    format!("{}~{hex}", &full[..MAX_SET_NAME - 17])
}

/// Bins for `features` given those already assigned (feature, bin) in this generation:
/// assigned ones keep their bin; a new feature gets its own name when that is a valid
/// bin name not yet taken, else `_fN` with the lowest free N. Answers the new
/// assignments only. Names starting with `_` are ftab's ([`TIMESTAMP_BIN`], [`SEQ_BIN`]).
pub fn assign_bins(features: &[String], assigned: &[(String, String)]) -> Vec<(String, String)> {
    let mut taken: BTreeSet<String> = assigned.iter().map(|(_, b)| b.clone()).collect();
    let mut new = Vec::new();
    for feature in features {
        if assigned.iter().any(|(f, _)| f == feature) {
            continue;
        }
        let own = feature.len() <= MAX_BIN_NAME
            && !feature.starts_with('_')
            && !taken.contains(feature.as_str());
        let bin = if own {
            feature.clone()
        } else {
            (0..)
                .map(|n| format!("_f{n}"))
                .find(|b| !taken.contains(b))
                .expect("an unbounded range has a free name")
        };
        taken.insert(bin.clone());
        new.push((feature.clone(), bin));
    }
    new
}

/// The Aerospike online store. The client connects on first use (and again after a
/// failed attempt), so a process starts while Aerospike is down and its jobs say why
/// they cannot load.
pub struct AerospikeStore {
    settings: AerospikeSettings,
    client: tokio::sync::OnceCell<Arc<Client>>,
}

impl std::fmt::Debug for AerospikeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AerospikeStore")
            .field("settings", &self.settings)
            .finish()
    }
}

impl AerospikeStore {
    pub fn new(settings: AerospikeSettings) -> Result<Self, OnlineError> {
        settings.validate().map_err(OnlineError::Unavailable)?;
        Ok(Self {
            settings,
            client: tokio::sync::OnceCell::new(),
        })
    }

    pub fn settings(&self) -> &AerospikeSettings {
        &self.settings
    }

    /// The connected client; connects (and checks the namespace) on first use.
    pub async fn client(&self) -> Result<&Arc<Client>, OnlineError> {
        self.client.get_or_try_init(|| self.connect()).await
    }

    async fn connect(&self) -> Result<Arc<Client>, OnlineError> {
        let settings = &self.settings;
        let auth_mode = match (&settings.user, &settings.password) {
            (Some(user), Some(password)) => AuthMode::Internal(user.clone(), password.clone()),
            _ => AuthMode::None,
        };
        let policy = ClientPolicy {
            timeout: settings.connect_timeout_ms,
            connect_timeout: settings.connect_timeout_ms,
            fail_if_not_connected: true,
            auth_mode,
            ..ClientPolicy::default()
        };
        let hosts = settings.hosts.clone();
        let client = Client::new(&policy, &hosts).await.map_err(|e| {
            OnlineError::Store(format!(
                "cannot reach Aerospike at {hosts}: {e}; check that the server is up and that \
                 --aerospike-hosts (FTAB_AEROSPIKE_HOSTS) names it"
            ))
        })?;
        let info = client
            .info(&Default::default(), &["namespaces"])
            .await
            .map_err(|e| {
                OnlineError::Store(format!(
                    "cannot ask Aerospike at {hosts} for its namespaces: {e}"
                ))
            })?;
        let namespaces = info.get("namespaces").cloned().unwrap_or_default();
        if !namespaces.split(';').any(|n| n == settings.namespace) {
            return Err(OnlineError::Unavailable(format!(
                "Aerospike at {hosts} has no namespace `{}` (it has: {}); add it to the server's \
                 configuration or set --aerospike-namespace (FTAB_AEROSPIKE_NAMESPACE)",
                settings.namespace,
                if namespaces.is_empty() {
                    "none"
                } else {
                    &namespaces
                }
            )));
        }
        tracing::info!(%hosts, namespace = %settings.namespace, "connected to Aerospike");
        Ok(Arc::new(client))
    }

    fn key(&self, set: &str, key: Vec<u8>) -> Result<Key, OnlineError> {
        Key::new(self.settings.namespace.as_str(), set, Value::Blob(key))
            .map_err(|e| OnlineError::Store(format!("cannot make an Aerospike key: {e}")))
    }

    fn batch_policy(&self, write: bool) -> BatchPolicy {
        let mut policy = if write {
            BatchPolicy::write_default()
        } else {
            BatchPolicy::default()
        };
        policy.base_policy.total_timeout = self.settings.timeout_ms;
        policy.base_policy.socket_timeout = self.settings.timeout_ms;
        policy
    }

    /// The write of one record: its bins and the policy with the newer-only filter and
    /// the expiration.
    fn write_operation(
        &self,
        table: &OnlineTable,
        (set, key): (&str, Vec<u8>),
        bins: Vec<Bin>,
        (timestamp, seq): (i64, u64),
        now_micros: i64,
    ) -> Result<BatchOperation, OnlineError> {
        let seq = seq as i64;
        let newer = or(vec![
            lt(int_bin(TIMESTAMP_BIN), int_val(timestamp)),
            and(vec![
                eq(int_bin(TIMESTAMP_BIN), int_val(timestamp)),
                lt(int_bin(SEQ_BIN), int_val(seq)),
            ]),
        ]);
        let expiration = match table.ttl_micros {
            None => Expiration::Never,
            Some(ttl) => {
                let left = (timestamp.saturating_add(ttl) - now_micros).max(1);
                Expiration::Seconds(u32::try_from((left + 999_999) / 1_000_000).unwrap_or(u32::MAX))
            }
        };
        let policy = BatchWritePolicy {
            record_exists_action: RecordExistsAction::Replace,
            expiration,
            filter_expression: Some(newer),
            ..BatchWritePolicy::default()
        };
        let mut all = Vec::with_capacity(bins.len() + 2);
        all.push(Bin::new(TIMESTAMP_BIN, Value::Int(timestamp)));
        all.push(Bin::new(SEQ_BIN, Value::Int(seq)));
        all.extend(bins);
        let ops: Vec<_> = all.iter().map(operations::put).collect();
        Ok(BatchOperation::write(&policy, self.key(set, key)?, ops))
    }

    /// The writes of `rows` (row, timestamp) of `columns`.
    fn batch_writes(
        &self,
        table: &OnlineTable,
        set: &str,
        columns: &LatestColumns,
        rows: &[(usize, i64)],
        seq: u64,
        now_micros: i64,
    ) -> Result<Vec<BatchOperation>, OnlineError> {
        let (keys, features) = (columns.keys(), columns.features());
        rows.iter()
            .map(|&(row, timestamp)| {
                let mut key = Vec::new();
                key_of_row(&keys, row, &mut key)?;
                let mut bins = Vec::with_capacity(features.len());
                for ((array, value_type), bin) in features.iter().zip(&table.bins) {
                    if !array.is_null(row) {
                        bins.push(Bin::new(
                            bin.as_str(),
                            value_of(array.as_ref(), value_type, row),
                        ));
                    }
                }
                self.write_operation(table, (set, key), bins, (timestamp, seq), now_micros)
            })
            .collect()
    }

    /// Send one batch, again for the records that failed, until every record has an
    /// outcome or the attempts run out.
    async fn write_batch(&self, mut ops: Vec<BatchOperation>) -> Result<WriteCounts, OnlineError> {
        let client = self.client().await?;
        let policy = self.batch_policy(true);
        let mut counts = WriteCounts::default();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let call = client.batch(&policy, &mut ops).await;
            let mut failed = Vec::new();
            let mut first_failure = None;
            let mut permanent = false;
            for op in ops {
                match op.result_code() {
                    Some(ResultCode::Ok) => counts.written += 1,
                    Some(ResultCode::FilteredOut) => counts.skipped_older += 1,
                    code => {
                        permanent |= code.is_some_and(is_permanent);
                        if first_failure.is_none() {
                            first_failure = Some(match (code, op.error()) {
                                (_, Some(error)) => error.to_string(),
                                (Some(code), None) => format!("{code:?}"),
                                (None, None) => match &call {
                                    Err(e) => format!("no answer: {e}"),
                                    Ok(()) => "no answer".into(),
                                },
                            });
                        }
                        failed.push(op);
                    }
                }
            }
            if failed.is_empty() {
                return Ok(counts);
            }
            if permanent || attempt >= self.settings.write_attempts {
                return Err(OnlineError::Store(format!(
                    "{} records could not be written to Aerospike at {} after {attempt} attempts; \
                     the first failure: {}",
                    failed.len(),
                    self.settings.hosts,
                    first_failure.unwrap_or_default()
                )));
            }
            tracing::warn!(
                records = failed.len(),
                attempt,
                first = first_failure.as_deref().unwrap_or(""),
                "Aerospike batch write incomplete; sending the failed records again"
            );
            tokio::time::sleep(Duration::from_millis(50 << attempt.min(6))).await;
            ops = failed;
        }
    }
}

impl OnlineStore for AerospikeStore {
    fn write_latest<'a>(
        &'a self,
        table: &'a OnlineTable,
        rows: &'a RecordBatch,
        seq: u64,
        now_micros: i64,
    ) -> BoxFuture<'a, Result<WriteCounts, OnlineError>> {
        async move {
            if table.bins.len() != table.features.len() {
                return Err(OnlineError::Store(format!(
                    "table {} has no Aerospike bins assigned for its features (a plan made before the catalog \
                     assigned them); run the job again",
                    table.namespace()
                )));
            }
            let set = set_name(table);
            let columns = LatestColumns::of(table, rows)?;
            // The rows to write, by position; each batch's records are built when the
            // batch is sent, so no more than the batches in flight are held at once.
            let mut live = Vec::with_capacity(rows.num_rows());
            let expired = columns.for_each_live(table.live_after(now_micros), |row, timestamp| {
                live.push((row, timestamp));
                Ok(())
            })?;
            let chunks: Vec<Vec<(usize, i64)>> =
                live.chunks(self.settings.write_batch).map(<[_]>::to_vec).collect();
            let mut counts = futures::stream::iter(chunks)
                .map(|chunk| {
                    let ops = self.batch_writes(table, &set, &columns, &chunk, seq, now_micros);
                    async move { self.write_batch(ops?).await }
                })
                .buffer_unordered(self.settings.write_concurrency)
                .try_fold(WriteCounts::default(), |mut sum, counts| async move {
                    sum += counts;
                    Ok(sum)
                })
                .await?;
            counts.skipped_expired = expired;
            Ok(counts)
        }
        .boxed()
    }

    fn read<'a>(
        &'a self,
        table: &'a OnlineTable,
        keys: &'a [Vec<KeyValue>],
        now_micros: i64,
    ) -> BoxFuture<'a, Result<Vec<Option<OnlineRecord>>, OnlineError>> {
        async move {
            if table.bins.len() != table.features.len() {
                return Err(OnlineError::Store(format!(
                    "table {} has no Aerospike bins assigned for its features",
                    table.namespace()
                )));
            }
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let client = self.client().await?;
            let set = set_name(table);
            let policy = BatchReadPolicy::default();
            let mut ops = keys
                .iter()
                .map(|k| {
                    Ok(BatchOperation::read(
                        &policy,
                        self.key(&set, encode_key(k))?,
                        Bins::All,
                    ))
                })
                .collect::<Result<Vec<_>, OnlineError>>()?;
            client
                .batch(&self.batch_policy(false), &mut ops)
                .await
                .map_err(|e| {
                    OnlineError::Store(format!(
                        "cannot read from Aerospike at {}: {e}",
                        self.settings.hosts
                    ))
                })?;
            let live_after = table.live_after(now_micros);
            ops.iter()
                .map(|op| match op.result_code() {
                    Some(ResultCode::Ok) => {
                        let Some(record) = op.record() else {
                            return Err(OnlineError::Store(
                                "Aerospike answered a read without its record".into(),
                            ));
                        };
                        let record = decode(table, &record.bins)?;
                        Ok(record.filter(|r| live_after.is_none_or(|after| r.timestamp >= after)))
                    }
                    Some(ResultCode::KeyNotFoundError) => Ok(None),
                    code => Err(OnlineError::Store(format!(
                        "Aerospike at {} could not read a record: {}",
                        self.settings.hosts,
                        op.error()
                            .map(ToString::to_string)
                            .unwrap_or_else(|| format!("{code:?}"))
                    ))),
                })
                .collect()
        }
        .boxed()
    }

    fn is_networked(&self) -> bool {
        true
    }
}

/// Result codes that sending the record again cannot change (its size, its bins, the
/// namespace, permissions): the write fails at once rather than after every attempt.
fn is_permanent(code: ResultCode) -> bool {
    matches!(
        code,
        ResultCode::ParameterError
            | ResultCode::AlwaysForbidden
            | ResultCode::BinTypeError
            | ResultCode::RecordTooBig
            | ResultCode::UnsupportedFeature
            | ResultCode::InvalidNamespace
            | ResultCode::BinNameTooLong
            | ResultCode::FailForbidden
            | ResultCode::EnterpriseOnly
            | ResultCode::OpNotApplicable
            | ResultCode::InvalidEncoding
            | ResultCode::KeyMismatch
    )
}

/// Value `row` of `array` (of `value_type`'s Arrow type) as an Aerospike value.
fn value_of(array: &dyn Array, value_type: &ValueType, row: usize) -> Value {
    if array.is_null(row) {
        return Value::Nil;
    }
    match value_type {
        ValueType::String => Value::String(array.as_string::<i32>().value(row).to_string()),
        ValueType::Binary => Value::Blob(array.as_binary::<i32>().value(row).to_vec()),
        ValueType::Int32 => Value::Int(array.as_primitive::<Int32Type>().value(row).into()),
        ValueType::Date => Value::Int(array.as_primitive::<Date32Type>().value(row).into()),
        ValueType::Int64 => Value::Int(array.as_primitive::<Int64Type>().value(row)),
        ValueType::Timestamp => {
            Value::Int(array.as_primitive::<TimestampMicrosecondType>().value(row))
        }
        ValueType::Float32 => Value::from(array.as_primitive::<Float32Type>().value(row) as f64),
        ValueType::Float64 => Value::from(array.as_primitive::<Float64Type>().value(row)),
        ValueType::Bool => Value::Bool(array.as_boolean().value(row)),
        ValueType::List(item) => {
            let values = array.as_list::<i32>().value(row);
            Value::List(
                (0..values.len())
                    .map(|i| value_of(values.as_ref(), item, i))
                    .collect(),
            )
        }
    }
}

/// A record's bins as ftab's record; `None` for a record without ftab's bins (not
/// written by ftab).
fn decode(
    table: &OnlineTable,
    bins: &aerospike::IndexMap<String, Value>,
) -> Result<Option<OnlineRecord>, OnlineError> {
    let (Some(Value::Int(timestamp)), Some(Value::Int(seq))) =
        (bins.get(TIMESTAMP_BIN), bins.get(SEQ_BIN))
    else {
        return Ok(None);
    };
    let features = table
        .features
        .iter()
        .zip(&table.bins)
        .map(|((name, value_type), bin)| {
            let value = match bins.get(bin) {
                None | Some(Value::Nil) => serde_json::Value::Null,
                Some(value) => json_of(value, value_type).ok_or_else(|| {
                    OnlineError::Store(format!(
                        "Aerospike bin `{bin}` (feature `{name}`) holds {value:?}, which is not {value_type}"
                    ))
                })?,
            };
            Ok(value)
        })
        .collect::<Result<_, OnlineError>>()?;
    Ok(Some(OnlineRecord {
        timestamp: *timestamp,
        seq: *seq as u64,
        features,
    }))
}

/// An Aerospike value as the JSON the embedded store answers for the same feature.
fn json_of(value: &Value, value_type: &ValueType) -> Option<serde_json::Value> {
    use serde_json::Value as Json;
    Some(match (value_type, value) {
        (_, Value::Nil) => Json::Null,
        (ValueType::String, Value::String(s)) => Json::String(s.clone()),
        (ValueType::Binary, Value::Blob(b)) => binary_json(b),
        (ValueType::Int32 | ValueType::Int64, Value::Int(i)) => Json::from(*i),
        (ValueType::Date, Value::Int(days)) => date_json(i32::try_from(*days).ok()?),
        (ValueType::Timestamp, Value::Int(micros)) => Json::String(super::format_micros(*micros)),
        (ValueType::Float32 | ValueType::Float64, Value::Float(f)) => float(f64::from(f)),
        (ValueType::Bool, Value::Bool(b)) => Json::Bool(*b),
        (ValueType::Bool, Value::Int(i)) => Json::Bool(*i != 0),
        (ValueType::List(item), Value::List(items)) => Json::Array(
            items
                .iter()
                .map(|v| json_of(v, item))
                .collect::<Option<Vec<_>>>()?,
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::ArrayRef;
    use crate::names::{TableName, WorkspaceName};

    fn table(workspace: &str, name: &str) -> OnlineTable {
        OnlineTable {
            workspace: WorkspaceName::new(workspace).unwrap(),
            table: TableName::new(name).unwrap(),
            generation: 3,
            keys: vec![("user_id".into(), ValueType::String)],
            features: vec![],
            timestamp_field: "ts".into(),
            ttl_micros: None,
            bins: vec![],
        }
    }

    use crate::online::contract;

    /// A store on the server `FTAB_TEST_AEROSPIKE` names (namespace from
    /// `FTAB_TEST_AEROSPIKE_NAMESPACE`, default `test`), or `None` after saying the test is
    /// skipped.
    fn server(test: &str) -> Option<AerospikeStore> {
        let Ok(hosts) = std::env::var("FTAB_TEST_AEROSPIKE") else {
            eprintln!(
                "SKIPPED {test}: set FTAB_TEST_AEROSPIKE=host:port to run it against an Aerospike server \
                 (docs/online-store.md says how)"
            );
            return None;
        };
        let namespace =
            std::env::var("FTAB_TEST_AEROSPIKE_NAMESPACE").unwrap_or_else(|_| "test".into());
        Some(
            AerospikeStore::new(AerospikeSettings {
                hosts,
                namespace,
                write_batch: 200,
                ..Default::default()
            })
            .unwrap(),
        )
    }

    /// A workspace name no earlier run used, so runs against one server stay apart.
    fn fresh_workspace() -> String {
        format!("t{}", uuid::Uuid::new_v4().simple())
    }

    #[tokio::test]
    async fn aerospike_newer_only_by_timestamp_then_seq() {
        let Some(store) = server("aerospike_newer_only_by_timestamp_then_seq") else {
            return;
        };
        contract::newer_only_by_timestamp_then_seq(
            &store,
            contract::table(&fresh_workspace(), 1, None),
        )
        .await;
    }

    #[tokio::test]
    async fn aerospike_ttl_expiry_on_write_and_read() {
        let Some(store) = server("aerospike_ttl_expiry_on_write_and_read") else {
            return;
        };
        contract::ttl_expiry_on_write_and_read(
            &store,
            contract::table(&fresh_workspace(), 1, Some(30)),
        )
        .await;
    }

    #[tokio::test]
    async fn aerospike_batches_agree_with_a_reference() {
        let Some(store) = server("aerospike_batches_agree_with_a_reference") else {
            return;
        };
        contract::batches_agree_with_a_reference(
            &store,
            contract::table(&fresh_workspace(), 1, None),
        )
        .await;
    }

    /// Writers race on keys that do not exist yet: whichever create lands first, the
    /// server's filter keeps the greatest (timestamp, seq), and every write is counted
    /// once as written or skipped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn aerospike_creates_racing_updates_keep_the_greatest() {
        let Some(store) = server("aerospike_creates_racing_updates_keep_the_greatest") else {
            return;
        };
        let store = Arc::new(store);
        let t = Arc::new(contract::table(&fresh_workspace(), 1, None));
        let now = 100 * contract::DAY;
        let users: Vec<String> = (0..200).map(|i| format!("u{i}")).collect();
        let mut writers = tokio::task::JoinSet::new();
        // The winner starts first, so a store that let the last write win would fail.
        for writer in (0..8i64).rev() {
            let (store, t, users) = (store.clone(), t.clone(), users.clone());
            writers.spawn(async move {
                // Writer w writes timestamp w % 4 with seq w: the winner is writer 7
                // (timestamp 3, seq 7); writer 3 ties its timestamp with a smaller seq.
                let data: Vec<(&str, i64, i64)> = users
                    .iter()
                    .map(|u| (u.as_str(), writer % 4, writer))
                    .collect();
                store
                    .write_latest(&t, &contract::rows(&data), writer as u64, now)
                    .await
                    .unwrap()
            });
        }
        let mut total = WriteCounts::default();
        while let Some(counts) = writers.join_next().await {
            total += counts.unwrap();
        }
        assert_eq!(total.written + total.skipped_older, 8 * users.len() as u64);
        assert!(
            total.written >= users.len() as u64,
            "every key was created: {total:?}"
        );
        for user in &users {
            assert_eq!(
                contract::count_of(store.as_ref(), &t, user, now).await,
                Some((3, 7, serde_json::json!(7))),
                "{user}"
            );
        }
    }

    /// Every type, long feature names through their mapped bins, nulls as missing bins;
    /// the raw record shows the bin names and the expiration.
    #[tokio::test]
    async fn aerospike_bins_hold_every_type_under_their_mapped_names() {
        use datafusion::arrow::array::{
            Float64Array, Int64Array, ListArray, StringArray, TimestampMicrosecondArray,
        };
        let Some(store) = server("aerospike_bins_hold_every_type_under_their_mapped_names") else {
            return;
        };
        let features: Vec<(String, ValueType)> = vec![
            ("average_basket_value_30d".into(), ValueType::Float64),
            ("clicks".into(), ValueType::Int64),
            (
                "embedding".into(),
                ValueType::List(Box::new(ValueType::Float32)),
            ),
            ("last_seen_at_timestamp".into(), ValueType::Timestamp),
            ("segment".into(), ValueType::String),
        ];
        let names: Vec<String> = features.iter().map(|(n, _)| n.clone()).collect();
        let bins: Vec<String> = assign_bins(&names, &[])
            .into_iter()
            .map(|(_, b)| b)
            .collect();
        let t = OnlineTable {
            workspace: WorkspaceName::new(fresh_workspace()).unwrap(),
            table: TableName::new("user_profile").unwrap(),
            generation: 1,
            keys: vec![("user_id".into(), ValueType::Int64)],
            features,
            timestamp_field: "ts".into(),
            ttl_micros: Some(contract::DAY),
            bins: bins.clone(),
        };
        let now = chrono::Utc::now().timestamp_micros();
        let embedding = ListArray::from_iter_primitive::<Float32Type, _, _>(vec![
            Some(vec![Some(0.25f32), Some(-1.0)]),
            None,
        ]);
        let rows = RecordBatch::try_from_iter([
            (
                "user_id",
                Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef,
            ),
            (
                "ts",
                Arc::new(
                    TimestampMicrosecondArray::from(vec![now - 1_000, now]).with_timezone("UTC"),
                ),
            ),
            (
                "average_basket_value_30d",
                Arc::new(Float64Array::from(vec![Some(12.5), None])),
            ),
            ("clicks", Arc::new(Int64Array::from(vec![Some(3), Some(4)]))),
            ("embedding", Arc::new(embedding)),
            (
                "last_seen_at_timestamp",
                Arc::new(TimestampMicrosecondArray::from(vec![Some(0), None]).with_timezone("UTC")),
            ),
            (
                "segment",
                Arc::new(StringArray::from(vec![Some("gold"), None])),
            ),
        ])
        .unwrap();
        let counts = store.write_latest(&t, &rows, 1, now).await.unwrap();
        assert_eq!(counts.written, 2);
        let read = store
            .read(
                &t,
                &[
                    vec![KeyValue::Int(1)],
                    vec![KeyValue::Int(2)],
                    vec![KeyValue::Int(3)],
                ],
                now,
            )
            .await
            .unwrap();
        let values = |i: usize| read[i].as_ref().unwrap().features.clone();
        use serde_json::json;
        assert_eq!(
            values(0),
            [
                json!(12.5),
                json!(3),
                json!([0.25, -1.0]),
                json!("1970-01-01T00:00:00Z"),
                json!("gold")
            ]
        );
        assert_eq!(
            values(1),
            [json!(null), json!(4), json!(null), json!(null), json!(null)]
        );
        assert!(read[2].is_none());
        // The raw record: ftab's bins, the mapped names, a ttl of about a day.
        let client = store.client().await.unwrap();
        let key = store
            .key(&set_name(&t), encode_key(&[KeyValue::Int(1)]))
            .unwrap();
        let record = client
            .get(&Default::default(), &key, Bins::All)
            .await
            .unwrap();
        let mut names: Vec<&str> = record.bins.keys().map(String::as_str).collect();
        names.sort();
        let mut expected: Vec<&str> = bins.iter().map(String::as_str).collect();
        expected.extend([SEQ_BIN, TIMESTAMP_BIN]);
        expected.sort();
        assert_eq!(names, expected);
        assert!(names.iter().all(|n| n.len() <= MAX_BIN_NAME));
        let ttl = record.time_to_live().expect("the record expires").as_secs();
        assert!((86_000..=86_400).contains(&ttl), "ttl {ttl}s");
    }

    /// The server expires a record when its row leaves the ttl, whatever the reader's clock.
    #[tokio::test]
    async fn aerospike_expires_records_at_the_end_of_their_ttl() {
        let Some(store) = server("aerospike_expires_records_at_the_end_of_their_ttl") else {
            return;
        };
        let t = OnlineTable {
            ttl_micros: Some(2_000_000),
            ..contract::table(&fresh_workspace(), 1, None)
        };
        let now = chrono::Utc::now().timestamp_micros();
        store
            .write_latest(&t, &contract::rows(&[("u", now, 1)]), 1, now)
            .await
            .unwrap();
        assert!(contract::count_of(&store, &t, "u", now).await.is_some());
        tokio::time::sleep(Duration::from_millis(3_500)).await;
        // Read as of the write's time: only the server's expiry can hide the record.
        assert_eq!(contract::count_of(&store, &t, "u", now).await, None);
    }

    /// A record the server refuses (too big) fails the write at once, naming the code and
    /// the count; the other records of the batch are written.
    #[tokio::test]
    async fn aerospike_a_refused_record_fails_the_write_with_its_result_code() {
        use datafusion::arrow::array::{StringArray, TimestampMicrosecondArray};
        let Some(store) = server("aerospike_a_refused_record_fails_the_write_with_its_result_code")
        else {
            return;
        };
        let t = OnlineTable {
            features: vec![("blob".into(), ValueType::String)],
            bins: vec!["blob".into()],
            ..contract::table(&fresh_workspace(), 1, None)
        };
        let huge = "x".repeat(2 << 20);
        let rows = RecordBatch::try_from_iter([
            (
                "user_id",
                Arc::new(StringArray::from(vec!["small", "huge"])) as ArrayRef,
            ),
            (
                "ts",
                Arc::new(TimestampMicrosecondArray::from(vec![1, 1]).with_timezone("UTC")),
            ),
            (
                "blob",
                Arc::new(StringArray::from(vec!["ok", huge.as_str()])),
            ),
        ])
        .unwrap();
        let started = std::time::Instant::now();
        let err = store
            .write_latest(&t, &rows, 1, 2)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("1 records could not be written to Aerospike"),
            "{err}"
        );
        assert!(err.contains("after 1 attempts"), "not retried: {err}");
        assert!(err.to_lowercase().contains("too big"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let read = store
            .read(&t, &[contract::key("small"), contract::key("huge")], 2)
            .await
            .unwrap();
        assert!(read[0].is_some() && read[1].is_none());
    }

    /// No server at the address: a write and a read fail with a message naming it, and
    /// nothing hangs (runs without a server).
    #[tokio::test]
    async fn an_unreachable_server_is_a_clear_error() {
        let store = AerospikeStore::new(AerospikeSettings {
            hosts: "127.0.0.1:1".into(),
            connect_timeout_ms: 300,
            ..Default::default()
        })
        .unwrap();
        let t = contract::table("prod", 1, None);
        let started = std::time::Instant::now();
        let err = store
            .write_latest(&t, &contract::rows(&[("u", 1, 1)]), 1, 0)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot reach Aerospike at 127.0.0.1:1"),
            "{err}"
        );
        assert!(err.contains("FTAB_AEROSPIKE_HOSTS"), "{err}");
        let err = store
            .read(&t, &[contract::key("u")], 0)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot reach Aerospike"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn set_names_fit_aerospike_and_stay_distinct() {
        assert_eq!(set_name(&table("prod", "user_stats")), "prod.user_stats.g3");
        let long_a = set_name(&table(&"w".repeat(40), &format!("{}a", "t".repeat(30))));
        let long_b = set_name(&table(&"w".repeat(40), &format!("{}b", "t".repeat(30))));
        assert_eq!(long_a.len(), MAX_SET_NAME, "{long_a}");
        assert_eq!(long_b.len(), MAX_SET_NAME);
        assert_ne!(
            long_a, long_b,
            "names that differ past the cut differ by their hash"
        );
        assert_eq!(
            long_a,
            set_name(&table(&"w".repeat(40), &format!("{}a", "t".repeat(30))))
        );
    }

    #[test]
    fn bins_keep_short_names_and_number_the_rest_stably() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let first = assign_bins(
            &names(&["clicks", "avg_basket_value_30d", "_private", "x"]),
            &[],
        );
        assert_eq!(
            first,
            vec![
                ("clicks".into(), "clicks".into()),
                ("avg_basket_value_30d".into(), "_f0".into()),
                ("_private".into(), "_f1".into()),
                ("x".into(), "x".into()),
            ]
        );
        // A later apply adds features: earlier ones keep their bins, numbers are not reused.
        let later = assign_bins(
            &names(&[
                "clicks",
                "avg_basket_value_30d",
                "orders_in_the_last_week",
                "x",
            ]),
            &first,
        );
        assert_eq!(
            later,
            vec![("orders_in_the_last_week".into(), "_f2".into())]
        );
        for (_, bin) in first.iter().chain(&later) {
            assert!(bin.len() <= MAX_BIN_NAME);
        }
    }

    #[test]
    fn a_feature_named_like_a_numbered_bin_does_not_collide() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let first = assign_bins(&names(&["a_very_long_feature_name"]), &[]);
        assert_eq!(first[0].1, "_f0");
        // `_f0` starts with `_`: never taken as its own name.
        let later = assign_bins(&names(&["a_very_long_feature_name", "_f0"]), &first);
        assert_eq!(later, vec![("_f0".into(), "_f1".into())]);
    }

    #[test]
    fn settings_are_checked_and_the_password_is_never_printed() {
        let good = AerospikeSettings {
            user: Some("ftab".into()),
            password: Some("hunter2".into()),
            ..Default::default()
        };
        assert!(good.validate().is_ok());
        assert!(!format!("{good:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&good).unwrap().contains("hunter2"));
        let err = AerospikeSettings {
            hosts: "aerospike".into(),
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.contains("`aerospike` is not host:port"), "{err}");
        let err = AerospikeSettings {
            user: Some("ftab".into()),
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.contains("give both"), "{err}");
        let err = AerospikeSettings {
            namespace: "a:b".into(),
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(err.contains("namespace `a:b`"), "{err}");
    }

    #[test]
    fn values_round_trip_to_the_embedded_stores_json() {
        use datafusion::arrow::array::{
            BinaryArray, BooleanArray, Date32Array, Float32Array, Int32Array, ListArray,
            StringArray,
        };
        use datafusion::arrow::datatypes::Float32Type as F32;
        let cases: Vec<(ArrayRef, ValueType, serde_json::Value)> = vec![
            (
                Arc::new(StringArray::from(vec!["héllo"])),
                ValueType::String,
                serde_json::json!("héllo"),
            ),
            (
                Arc::new(BinaryArray::from(vec![&[0u8, 255][..]])),
                ValueType::Binary,
                serde_json::json!("00ff"),
            ),
            (
                Arc::new(Int32Array::from(vec![-7])),
                ValueType::Int32,
                serde_json::json!(-7),
            ),
            (
                Arc::new(Date32Array::from(vec![19_000])),
                ValueType::Date,
                serde_json::json!("2022-01-08"),
            ),
            (
                Arc::new(Float32Array::from(vec![0.1f32])),
                ValueType::Float32,
                serde_json::json!(0.1f32 as f64),
            ),
            (
                Arc::new(BooleanArray::from(vec![true])),
                ValueType::Bool,
                serde_json::json!(true),
            ),
            (
                Arc::new(ListArray::from_iter_primitive::<F32, _, _>(vec![Some(
                    vec![Some(1.5f32), None],
                )])),
                ValueType::List(Box::new(ValueType::Float32)),
                serde_json::json!([1.5, null]),
            ),
        ];
        for (array, value_type, expected) in cases {
            let value = value_of(array.as_ref(), &value_type, 0);
            assert_eq!(json_of(&value, &value_type), Some(expected), "{value_type}");
        }
        assert_eq!(json_of(&Value::Int(1), &ValueType::String), None);
    }
}
