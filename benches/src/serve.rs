//! `ftab-bench serve`: latency and throughput of the feature server's HTTP API
//! (docs/serving.md) on the embedded online store, or on Aerospike (`--aerospike`).
//!
//! One table of `--keys` entities with 50 int64 features (feature j of key k is
//! `k * 100 + j`), loaded by an ingest; then `get-features` (one entity) and
//! `get-features-batch` (10 and 100 entities) at 1 and at 64 concurrent clients, each
//! client on its own keep-alive HTTP/1.1 connection (a minimal client, [`Connection`]),
//! keys drawn at random (a tenth unknown). Every answer is decoded into the API's exact
//! shape and checked against the generator (values of known keys, nulls for unknown
//! ones); a wrong answer ends the run without figures. The clients run on the same machine
//! as the server and share its two cores.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use clap::Args;
use ftab_testkit::Rng;
use serde_json::json;

use crate::Running;
use crate::data::ENTITY;

const FEATURES: usize = 50;

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Entities in the table.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Requests per client in each scenario.
    #[arg(long, default_value_t = 2_000)]
    requests: usize,
    /// Concurrent clients of the loaded scenarios.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Serve from the Aerospike server at HOST:PORT instead of the embedded store.
    #[arg(long, value_name = "HOST:PORT")]
    aerospike: Option<String>,
    /// The Aerospike namespace (with --aerospike).
    #[arg(long, default_value = "test")]
    aerospike_namespace: String,
}

fn repository() -> String {
    let mut schema = String::from(
        "  { name = \"user_id\", type = \"string\" },\n  { name = \"timestamp\", type = \"timestamp\" },\n",
    );
    for j in 0..FEATURES {
        schema.push_str(&format!("  {{ name = \"f{j}\", type = \"int64\" }},\n"));
    }
    format!(
        "{ENTITY}\n[[feature_table]]\nname = \"serve_bench\"\nentities = [\"user\"]\ntimestamp_field = \"timestamp\"\nonline = true\noffline = false\nschema = [\n{schema}]\n"
    )
}

/// Keys `user_first` .. `user_{last - 1}` at time `at`, with int64 features `f0`..: feature
/// j of key k is `k * 100 + j` (also `ftab-bench online-load`'s rows).
pub fn batch(first: u64, last: u64, features: usize, at: i64) -> RecordBatch {
    let mut columns: Vec<(String, ArrayRef)> = vec![
        (
            "user_id".into(),
            Arc::new(StringArray::from_iter_values(
                (first..last).map(|k| format!("user_{k}")),
            )),
        ),
        (
            "timestamp".into(),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values((first..last).map(|_| at))
                    .with_timezone("UTC"),
            ),
        ),
    ];
    for j in 0..features {
        columns.push((
            format!("f{j}"),
            Arc::new(Int64Array::from_iter_values(
                (first..last).map(|k| (k * 100 + j as u64) as i64),
            )),
        ));
    }
    RecordBatch::try_from_iter(columns).expect("columns line up")
}

/// What a key's vector must be: its values, or all null for a key never written.
fn expected(key: u64, keys: u64) -> Vec<Option<i64>> {
    (0..FEATURES)
        .map(|j| (key < keys).then_some((key * 100 + j as u64) as i64))
        .collect()
}

/// One scenario's latencies and time.
struct Measured {
    latencies: Vec<Duration>,
    elapsed: Duration,
}

/// A keep-alive HTTP/1.1 connection that POSTs JSON and reads the answer: a few lines
/// instead of a general client, so the 64 clients that share the machine with the server
/// spend as little of its two cores as they can.
struct Connection {
    stream: tokio::io::BufReader<tokio::net::TcpStream>,
    host: String,
}

impl Connection {
    async fn open(url: &str) -> anyhow::Result<Self> {
        let host = url
            .strip_prefix("http://")
            .context("the API's URL is http://HOST:PORT")?
            .trim_end_matches('/')
            .to_string();
        let stream = tokio::net::TcpStream::connect(&host).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: tokio::io::BufReader::new(stream),
            host,
        })
    }

    /// POST `body` to `path`: the status and the body of the answer.
    async fn post(&mut self, path: &str, body: &str) -> anyhow::Result<(u16, Vec<u8>)> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        self.stream.get_mut().write_all(request.as_bytes()).await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("not an HTTP status line: {line:?}"))?;
        let mut length = None;
        loop {
            line.clear();
            self.stream.read_line(&mut line).await?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = Some(value.trim().parse::<usize>()?);
            }
        }
        let mut answer = vec![0; length.context("an answer without Content-Length")?];
        self.stream.read_exact(&mut answer).await?;
        Ok((status, answer))
    }
}

/// The answers, decoded into exactly the shape the API promises (no other field).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Vector {
    features: Vec<Option<i64>>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OneAnswer {
    result: Vector,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchAnswer {
    result: Vec<Vector>,
}

async fn client_loop(
    url: String,
    workspace: String,
    entities: usize,
    requests: usize,
    keys: u64,
    seed: u64,
) -> anyhow::Result<Vec<Duration>> {
    let mut connection = Connection::open(&url).await?;
    let mut rng = Rng::new(seed);
    let mut latencies = Vec::with_capacity(requests);
    for _ in 0..requests {
        // A tenth of the keys were never written.
        let batch: Vec<u64> = (0..entities).map(|_| rng.below(keys + keys / 10)).collect();
        let (path, body) = if entities == 1 {
            (
                "/v1/feature-service/get-features",
                json!({"params": {"workspace_name": workspace, "features": ["serve_bench"],
                                  "join_key_map": {"user_id": format!("user_{}", batch[0])}}}),
            )
        } else {
            (
                "/v1/feature-service/get-features-batch",
                json!({"params": {"workspace_name": workspace, "features": ["serve_bench"],
                                  "request_data": batch.iter().map(|k| json!({"join_key_map": {"user_id": format!("user_{k}")}})).collect::<Vec<_>>()}}),
            )
        };
        let body = body.to_string();
        let started = Instant::now();
        let (status, answer) = connection.post(path, &body).await?;
        latencies.push(started.elapsed());
        if status != 200 {
            bail!(
                "the server answered {status}: {}",
                String::from_utf8_lossy(&answer)
            );
        }
        let vectors: Vec<Vec<Option<i64>>> = if entities == 1 {
            vec![
                serde_json::from_slice::<OneAnswer>(&answer)?
                    .result
                    .features,
            ]
        } else {
            serde_json::from_slice::<BatchAnswer>(&answer)?
                .result
                .into_iter()
                .map(|v| v.features)
                .collect()
        };
        if vectors.len() != batch.len() {
            bail!("{} vectors for {} keys", vectors.len(), batch.len());
        }
        for (key, vector) in batch.iter().zip(vectors) {
            if vector != expected(*key, keys) {
                bail!("wrong vector for user_{key}: {vector:?}; no figures for a wrong result");
            }
        }
    }
    Ok(latencies)
}

async fn scenario(
    url: &str,
    workspace: &str,
    entities: usize,
    clients: usize,
    requests: usize,
    keys: u64,
) -> anyhow::Result<Measured> {
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            tokio::spawn(client_loop(
                url.to_string(),
                workspace.to_string(),
                entities,
                requests,
                keys,
                0x5E_12E + c as u64,
            ))
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    Ok(Measured {
        latencies,
        elapsed: started.elapsed(),
    })
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)].as_secs_f64() * 1e3
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let aerospike =
        args.aerospike
            .clone()
            .map(|hosts| ftab_engine::online::aerospike::AerospikeSettings {
                hosts,
                namespace: args.aerospike_namespace.clone(),
                ..Default::default()
            });
    let store = match &aerospike {
        Some(settings) => format!(
            "Aerospike at {} (namespace {})",
            settings.hosts, settings.namespace
        ),
        None => "embedded store".into(),
    };
    let mut running = Running::start_configured(
        &crate::Deployment::Standalone { bucket: None },
        None,
        None,
        |config| {
            if let Some(settings) = aerospike {
                config.online_store = ftab_scheduler::config::OnlineStoreChoice::Aerospike;
                config.aerospike = Some(settings);
            }
        },
    )
    .await?;
    let url = running.http_url.clone();
    // Aerospike keeps records between runs: each run has its own workspace (and sets).
    let name = format!("bench_{}", chrono::Utc::now().timestamp_micros());
    let workspace = running.workspace_named(&name, &repository()).await?;
    eprintln!(
        "ingesting {} entities with {FEATURES} features ...",
        args.keys
    );
    let at = chrono::Utc::now().timestamp_micros() - 60_000_000;
    let keys = args.keys;
    let batches = (0..keys)
        .step_by(16_384)
        .map(move |first| Ok(batch(first, (first + 16_384).min(keys), FEATURES, at)));
    let result = running
        .ingest(&workspace, "serve_bench", None, batches)
        .await?;
    loop {
        let job = running.client.job(result.job_id).await?;
        if job.state.is_final() {
            if job.state != ftab_model::protocol::JobState::Succeeded {
                bail!("the ingest ended {:?}: {:?}", job.state, job.last_error);
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Warm up: connections, the store's pages.
    scenario(&url, workspace.as_str(), 1, 4, 200, keys).await?;

    println!(
        "ftab serve benchmark: {} entities x {FEATURES} int64 features, {store}; clients on the same 2 cores",
        args.keys
    );
    println!(
        "{:<22} {:>8} {:>10} {:>10} {:>9} {:>9} {:>9}",
        "scenario", "clients", "requests", "req/s", "p50 ms", "p99 ms", "p99.9 ms"
    );
    let mut checked = 0usize;
    for entities in [1usize, 10, 100] {
        for clients in [1usize, args.clients] {
            let per_client = if clients == 1 {
                args.requests
            } else {
                (args.requests / 4).max(50)
            };
            let mut m = scenario(
                &url,
                workspace.as_str(),
                entities,
                clients,
                per_client,
                keys,
            )
            .await?;
            m.latencies.sort();
            checked += m.latencies.len() * entities;
            println!(
                "{:<22} {:>8} {:>10} {:>10.0} {:>9.3} {:>9.3} {:>9.3}",
                format!(
                    "{entities} entit{}",
                    if entities == 1 { "y" } else { "ies" }
                ),
                clients,
                m.latencies.len(),
                m.latencies.len() as f64 / m.elapsed.as_secs_f64(),
                percentile(&m.latencies, 0.50),
                percentile(&m.latencies, 0.99),
                percentile(&m.latencies, 0.999),
            );
        }
    }
    println!(
        "verified: all {checked} feature vectors served equal the generator's (known keys' 50 values; unknown keys all null)"
    );
    running.stop().await
}
