//! `ftab-bench online-load --aerospike HOST:PORT`: how fast ftab's online load writes
//! Aerospike, beside what the server takes from the Aerospike client alone.
//!
//! - **ftab**: `AerospikeStore::write_latest`, the call each online-load task of an
//!   executor makes, on `--rows` latest rows (string key, timestamp, `--features` int64
//!   features; feature j of key k is `k * 100 + j`, as `ftab-bench serve`'s), split among `tasks` concurrent
//!   calls as an executor's task slots would, each with `in_flight` batches at a time.
//!   Every record carries the newer-only filter expression and a TTL.
//! - **client alone**: the same records as plain batch puts (no filter, no TTL), in the
//!   same batch size and the same number of batches in flight, straight from the
//!   `aerospike` crate: the server's own rate for parallel batches on this machine.
//!
//! Every ftab scenario is read back whole through the store and compared with the
//! generator; the client-alone scenario's records are counted back. A mismatch ends the
//! run without figures. The server runs on the same two cores.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aerospike::{BatchOperation, BatchPolicy, BatchWritePolicy, Bin, Bins, Key, Value};
use anyhow::{Context, bail};
use arrow::array::RecordBatch;
use clap::Args;
use ftab_engine::online::aerospike::{AerospikeSettings, AerospikeStore, assign_bins};
use ftab_engine::online::{KeyValue, OnlineStore, OnlineTable};
use ftab_model::definitions::ValueType;
use ftab_model::names::{TableName, WorkspaceName};

#[derive(Debug, Clone, Args)]
pub struct OnlineLoadArgs {
    /// The Aerospike server, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    aerospike: String,
    /// The Aerospike namespace.
    #[arg(long, default_value = "test")]
    aerospike_namespace: String,
    /// Latest rows (one per key) loaded in each scenario.
    #[arg(long, default_value_t = 200_000)]
    rows: u64,
    /// Int64 features per row.
    #[arg(long, default_value_t = 10)]
    features: usize,
    /// Records per batch.
    #[arg(long, default_value_t = 500)]
    batch: usize,
}

fn table(workspace: &str, features: usize) -> anyhow::Result<OnlineTable> {
    let names: Vec<String> = (0..features).map(|j| format!("f{j}")).collect();
    let bins = assign_bins(&names, &[])
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    Ok(OnlineTable {
        workspace: WorkspaceName::new(workspace)?,
        table: TableName::new("online_load_bench")?,
        generation: 1,
        keys: vec![("user_id".into(), ValueType::String)],
        features: names.into_iter().map(|n| (n, ValueType::Int64)).collect(),
        timestamp_field: "timestamp".into(),
        ttl_micros: Some(30 * 86_400_000_000),
        bins,
    })
}

/// Load `args.rows` rows through the store in `tasks` concurrent calls.
async fn ftab_scenario(
    args: &OnlineLoadArgs,
    tasks: usize,
    in_flight: usize,
    run: &str,
) -> anyhow::Result<Duration> {
    let store = Arc::new(AerospikeStore::new(AerospikeSettings {
        hosts: args.aerospike.clone(),
        namespace: args.aerospike_namespace.clone(),
        write_batch: args.batch,
        write_concurrency: in_flight,
        timeout_ms: 10_000,
        ..Default::default()
    })?);
    store.client().await?;
    let table = Arc::new(table(
        &format!("{run}_t{tasks}_f{in_flight}"),
        args.features,
    )?);
    let now = chrono::Utc::now().timestamp_micros();
    let at = now - 60_000_000;
    let per_task = args.rows.div_ceil(tasks as u64);
    let parts: Vec<RecordBatch> = (0..tasks as u64)
        .map(|t| {
            let first = t * per_task;
            crate::serve::batch(
                first,
                ((t + 1) * per_task).min(args.rows),
                args.features,
                at,
            )
        })
        .collect();
    let started = Instant::now();
    let mut writers = tokio::task::JoinSet::new();
    for part in parts {
        let (store, table) = (store.clone(), table.clone());
        writers.spawn(async move { store.write_latest(&table, &part, 1, now).await });
    }
    let mut written = 0;
    while let Some(counts) = writers.join_next().await {
        written += counts??.written;
    }
    let elapsed = started.elapsed();
    if written != args.rows {
        bail!("{written} records written, not {}", args.rows);
    }
    // Read every key back and compare with the generator.
    for first in (0..args.rows).step_by(5_000) {
        let last = (first + 5_000).min(args.rows);
        let keys: Vec<Vec<KeyValue>> = (first..last)
            .map(|k| vec![KeyValue::String(format!("user_{k}"))])
            .collect();
        let records = store.read(&table, &keys, now).await?;
        for (k, record) in (first..last).zip(records) {
            let record = record.with_context(|| format!("user_{k} was not stored"))?;
            for (j, value) in record.features.iter().enumerate() {
                if value.as_i64() != Some((k * 100 + j as u64) as i64) || record.timestamp != at {
                    bail!(
                        "user_{k} feature {j} is {value}, not {}",
                        k * 100 + j as u64
                    );
                }
            }
        }
    }
    Ok(elapsed)
}

/// The same records as plain batch puts from the client alone.
async fn client_scenario(
    args: &OnlineLoadArgs,
    in_flight: usize,
    run: &str,
) -> anyhow::Result<Duration> {
    let store = AerospikeStore::new(AerospikeSettings {
        hosts: args.aerospike.clone(),
        namespace: args.aerospike_namespace.clone(),
        ..Default::default()
    })?;
    let client = store.client().await?.clone();
    let set = format!("{run}_client_f{in_flight}");
    let namespace = args.aerospike_namespace.clone();
    let make = |k: u64| -> anyhow::Result<BatchOperation> {
        let key = Key::new(
            namespace.as_str(),
            set.as_str(),
            Value::from(format!("user_{k}")),
        )?;
        let bins: Vec<Bin> = (0..args.features)
            .map(|j| Bin::new(format!("f{j}"), Value::Int((k * 100 + j as u64) as i64)))
            .collect();
        let ops: Vec<_> = bins.iter().map(aerospike::operations::put).collect();
        Ok(BatchOperation::write(
            &BatchWritePolicy::default(),
            key,
            ops,
        ))
    };
    let mut batches = Vec::new();
    for first in (0..args.rows).step_by(args.batch) {
        let last = (first + args.batch as u64).min(args.rows);
        batches.push(
            (first..last)
                .map(make)
                .collect::<anyhow::Result<Vec<_>>>()?,
        );
    }
    let mut policy = BatchPolicy::write_default();
    policy.base_policy.total_timeout = 10_000;
    let started = Instant::now();
    let client_ref = &client;
    let policy_ref = &policy;
    use futures::StreamExt;
    let results: Vec<anyhow::Result<usize>> = futures::stream::iter(batches)
        .map(|mut ops| async move {
            client_ref.batch(policy_ref, &mut ops).await?;
            Ok(ops
                .iter()
                .filter(|o| o.result_code() == Some(aerospike::ResultCode::Ok))
                .count())
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let mut written = 0;
    for r in results {
        written += r?;
    }
    if written as u64 != args.rows {
        bail!(
            "the client alone wrote {written} records, not {}",
            args.rows
        );
    }
    // Count the records back.
    let mut found = 0;
    for first in (0..args.rows).step_by(5_000) {
        let last = (first + 5_000).min(args.rows);
        let mut reads: Vec<BatchOperation> = (first..last)
            .map(|k| {
                Ok(BatchOperation::read(
                    &Default::default(),
                    Key::new(
                        namespace.as_str(),
                        set.as_str(),
                        Value::from(format!("user_{k}")),
                    )?,
                    Bins::All,
                ))
            })
            .collect::<anyhow::Result<_>>()?;
        client.batch(&BatchPolicy::default(), &mut reads).await?;
        found += reads.iter().filter(|r| r.record().is_some()).count();
    }
    if found as u64 != args.rows {
        bail!("{found} of the client's {} records read back", args.rows);
    }
    Ok(elapsed)
}

pub async fn run(args: OnlineLoadArgs) -> anyhow::Result<()> {
    let run = format!("ol{}", chrono::Utc::now().timestamp() % 1_000_000);
    println!(
        "ftab online-load benchmark: {} rows x {} int64 features into Aerospike at {} (namespace {}), batches of {}; server on the same 2 cores",
        args.rows, args.features, args.aerospike, args.aerospike_namespace, args.batch
    );
    println!(
        "{:<40} {:>6} {:>10} {:>10} {:>12}",
        "writer", "tasks", "in flight", "seconds", "rows/s"
    );
    let line = |what: &str, tasks: usize, in_flight: usize, elapsed: Duration| {
        println!(
            "{what:<40} {tasks:>6} {:>10} {:>10.2} {:>12.0}",
            tasks * in_flight,
            elapsed.as_secs_f64(),
            args.rows as f64 / elapsed.as_secs_f64()
        );
    };
    for (tasks, in_flight) in [(1, 1), (1, 4), (2, 4), (4, 4)] {
        let elapsed = ftab_scenario(&args, tasks, in_flight, &run).await?;
        line(
            "ftab write_latest (filter + ttl)",
            tasks,
            in_flight,
            elapsed,
        );
    }
    for in_flight in [1, 4, 8, 16] {
        let elapsed = client_scenario(&args, in_flight, &run).await?;
        line("aerospike client alone (plain puts)", 1, in_flight, elapsed);
    }
    println!(
        "verified: every ftab scenario's {} records read back equal to the generator; every client-alone record read back",
        args.rows
    );
    Ok(())
}
