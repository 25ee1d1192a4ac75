//! The scheduler's configuration: defaults, then an optional TOML file, then environment
//! variables, then flags (each overrides the one before). Built once at start and passed
//! down.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use ftab_engine::online::aerospike::{AerospikeArgs, AerospikeSettings};
use ftab_engine::plan::JoinChoice;
use serde::{Deserialize, Serialize};

/// Defaults, in one place.
pub mod defaults {
    pub const DATA_DIR: &str = "ftab-data";
    pub const FLIGHT_ADDR: &str = "127.0.0.1:50051";
    pub const HTTP_ADDR: &str = "127.0.0.1:50052";
    /// ftab at info; the libraries it embeds only when they warn.
    pub const LOG: &str = "info,buoyant_kernel=warn,deltalake_core=warn,ballista_core=warn,ballista_scheduler=warn,ballista_executor=warn";
    /// How long an uploaded spine is kept.
    pub const SPINE_TTL: &str = "24h";
    /// How long a training set's results stay fetchable after it is computed.
    pub const TRAINING_SET_RETENTION: &str = "1h";
}

/// ftab-scheduler: the ftab control plane. Serves the Flight protocol, keeps the catalog
/// and runs jobs. By default everything runs in this one process with embedded stores
/// under the data directory.
#[derive(Debug, Clone, Default, Parser)]
#[command(name = "ftab-scheduler", version, about, long_about = None)]
pub struct Args {
    /// A TOML file with any of the settings below (keys as the long flags, with `_`).
    #[arg(long, env = "FTAB_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Where the catalog and, by default, the object store live.
    #[arg(long, env = "FTAB_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Address of the Flight service. Port 0 picks a free port (printed at start).
    #[arg(long, env = "FTAB_FLIGHT_ADDR", value_name = "HOST:PORT")]
    pub flight_addr: Option<SocketAddr>,

    /// Root of the object store for offline tables and staging: a local path or a URL
    /// (s3://, gs://, az://, abfss://, file://). Default: <data-dir>/store.
    #[arg(long, env = "FTAB_STORAGE", value_name = "PATH|URL")]
    pub storage: Option<String>,

    /// Log filter, e.g. `info` or `ftab_scheduler=debug,info`.
    #[arg(long, env = "FTAB_LOG", value_name = "FILTER")]
    pub log: Option<String>,

    /// Tasks run at once and partitions of every shuffle (default: the number of cores).
    #[arg(long, env = "FTAB_PARALLELISM", value_name = "N")]
    pub parallelism: Option<usize>,

    /// Memory jobs may use before sorts spill to disk, e.g. `4GiB` or `512MiB`
    /// (default: a quarter of the machine's memory).
    #[arg(long, env = "FTAB_MEMORY_LIMIT", value_name = "SIZE")]
    pub memory_limit: Option<String>,

    /// How long an uploaded spine is kept, e.g. `24h` (units s, m, h, d).
    #[arg(long, env = "FTAB_SPINE_TTL", value_name = "DURATION")]
    pub spine_ttl: Option<String>,

    /// How long a computed training set stays fetchable, e.g. `1h`.
    #[arg(long, env = "FTAB_TRAINING_SET_RETENTION", value_name = "DURATION")]
    pub training_set_retention: Option<String>,

    /// Which as-of join training sets use: `auto` (the spine-index join when the spine fits
    /// in memory, else the sort-merge join), `sort_merge` or `spine_index`.
    #[arg(long, env = "FTAB_TRAINING_SET_JOIN", value_name = "JOIN")]
    pub training_set_join: Option<String>,

    /// Cluster mode: serve Ballista's scheduler gRPC on HOST:PORT for `ftab-executor`
    /// processes, and run no executor in this process. Port 0 picks a free port (printed at
    /// start). Without it the scheduler runs its own executor (standalone).
    #[arg(long, env = "FTAB_CLUSTER_ADDR", value_name = "HOST:PORT")]
    pub cluster_addr: Option<SocketAddr>,

    /// The online store: `embedded` (a file under the data directory, served by this
    /// process), `aerospike` (the `--aerospike-*` settings; for clusters) or `none` (online
    /// tables are refused at ingest).
    #[arg(long, env = "FTAB_ONLINE_STORE", value_name = "STORE")]
    pub online_store: Option<String>,

    #[command(flatten)]
    pub aerospike: AerospikeArgs,

    /// Cluster mode: how long an executor may be silent before it is taken for dead and
    /// its tasks run elsewhere, e.g. `30s` (at least 10s: a busy executor polls every 5s).
    #[arg(long, env = "FTAB_EXECUTOR_TIMEOUT", value_name = "DURATION")]
    pub executor_timeout: Option<String>,

    /// Address of the feature server's HTTP API (docs/serving.md). Port 0 picks a free port
    /// (printed at start).
    #[arg(long, env = "FTAB_HTTP_ADDR", value_name = "HOST:PORT")]
    pub http_addr: Option<SocketAddr>,

    /// Ingest jobs run at once (of different tables; a table's jobs run in order).
    /// Training sets run beside them.
    #[arg(long, env = "FTAB_MAX_JOBS", value_name = "N")]
    pub max_jobs: Option<usize>,
}

/// The settings a config file may hold. Unknown keys are refused, so a typo is caught.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    flight_addr: Option<SocketAddr>,
    storage: Option<String>,
    log: Option<String>,
    parallelism: Option<usize>,
    memory_limit: Option<String>,
    spine_ttl: Option<String>,
    training_set_retention: Option<String>,
    training_set_join: Option<String>,
    cluster_addr: Option<SocketAddr>,
    online_store: Option<String>,
    executor_timeout: Option<String>,
    max_jobs: Option<usize>,
    http_addr: Option<SocketAddr>,
    aerospike: Option<AerospikeArgs>,
}

/// Which online store a scheduler serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnlineStoreChoice {
    /// A redb file under the data directory, written and read by this process.
    Embedded,
    /// An Aerospike cluster, written by the executors and read by serving processes.
    Aerospike,
    /// No online store: online tables are refused at ingest.
    None,
}

impl OnlineStoreChoice {
    pub fn name(self) -> &'static str {
        match self {
            Self::Embedded => "embedded",
            Self::Aerospike => "aerospike",
            Self::None => "none",
        }
    }
}

impl std::str::FromStr for OnlineStoreChoice {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "embedded" => Ok(Self::Embedded),
            "aerospike" => Ok(Self::Aerospike),
            "none" => Ok(Self::None),
            other => Err(format!(
                "unknown online store `{other}`; use embedded, aerospike or none"
            )),
        }
    }
}

/// The resolved configuration of one scheduler process.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SchedulerConfig {
    pub data_dir: PathBuf,
    pub flight_addr: SocketAddr,
    /// Object store root; `None` means `<data_dir>/store`.
    pub storage: Option<String>,
    pub log: String,
    /// Tasks run at once, and partitions of every shuffle.
    pub parallelism: usize,
    /// Bytes of memory jobs may use before they spill.
    pub memory_limit: u64,
    /// How long an uploaded spine is kept.
    pub spine_ttl: Duration,
    /// How long a training set's results stay fetchable.
    pub training_set_retention: Duration,
    /// Which as-of join training sets use.
    pub training_set_join: JoinChoice,
    /// Cluster mode: where Ballista's scheduler gRPC listens for `ftab-executor`s.
    pub cluster_addr: Option<SocketAddr>,
    pub online_store: OnlineStoreChoice,
    /// How to reach Aerospike, when it is the online store.
    pub aerospike: Option<AerospikeSettings>,
    /// How long an executor may be silent before it is taken for dead.
    pub executor_timeout: Duration,
    /// Ingest jobs run at once.
    pub max_jobs: usize,
    /// Where the feature server's HTTP API listens.
    pub http_addr: SocketAddr,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(defaults::DATA_DIR),
            flight_addr: defaults::FLIGHT_ADDR
                .parse()
                .expect("the default Flight address parses"),
            storage: None,
            log: defaults::LOG.to_string(),
            parallelism: default_parallelism(),
            memory_limit: default_memory_limit(),
            spine_ttl: parse_duration(defaults::SPINE_TTL).expect("the default spine ttl parses"),
            training_set_retention: parse_duration(defaults::TRAINING_SET_RETENTION)
                .expect("the default retention parses"),
            training_set_join: JoinChoice::Auto,
            cluster_addr: None,
            online_store: OnlineStoreChoice::Embedded,
            aerospike: None,
            executor_timeout: Duration::from_secs(30),
            max_jobs: 2,
            http_addr: defaults::HTTP_ADDR
                .parse()
                .expect("the default HTTP address parses"),
        }
    }
}

fn default_parallelism() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

pub use ftab_engine::runtime::{default_memory_limit, parse_size};

/// `30s`, `15m`, `24h`, `7d` (the units of a feature table's ttl).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let ttl: ftab_model::definitions::Ttl = text.parse()?;
    Ok(Duration::from_secs(ttl.seconds()))
}

/// The longest a spine or a training set's results may be kept.
const MAX_KEEP_DAYS: u64 = 3650;
/// The most tasks the embedded executor runs at once.
const MAX_PARALLELISM: usize = 1024;

/// A duration to keep something for: as [`parse_duration`], at most [`MAX_KEEP_DAYS`].
fn parse_keep(what: &str, text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text).map_err(|e| format!("{what}: {e}"))?;
    if duration.as_secs() > MAX_KEEP_DAYS * 86_400 {
        return Err(format!(
            "{what}: `{text}` is longer than the {MAX_KEEP_DAYS}d allowed"
        ));
    }
    Ok(duration)
}

impl SchedulerConfig {
    /// Resolve flags and environment (already merged by clap) over the config file over
    /// the defaults.
    pub fn resolve(args: Args) -> Result<Self, String> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let defaults = SchedulerConfig::default();
        let online_store = match args.online_store.or(file.online_store) {
            Some(text) => text.parse().map_err(|e| format!("online_store: {e}"))?,
            None => defaults.online_store,
        };
        Ok(Self {
            data_dir: args.data_dir.or(file.data_dir).unwrap_or(defaults.data_dir),
            flight_addr: args
                .flight_addr
                .or(file.flight_addr)
                .unwrap_or(defaults.flight_addr),
            storage: args.storage.or(file.storage),
            log: args.log.or(file.log).unwrap_or(defaults.log),
            parallelism: match args.parallelism.or(file.parallelism) {
                Some(0) => return Err("parallelism must be at least 1".into()),
                Some(n) if n > MAX_PARALLELISM => {
                    return Err(format!("parallelism must be at most {MAX_PARALLELISM}, not {n}"));
                }
                Some(n) => n,
                None => defaults.parallelism,
            },
            memory_limit: match args.memory_limit.or(file.memory_limit) {
                Some(text) => parse_size(&text).map_err(|e| format!("memory_limit: {e}"))?,
                None => defaults.memory_limit,
            },
            spine_ttl: match args.spine_ttl.or(file.spine_ttl) {
                Some(text) => parse_keep("spine_ttl", &text)?,
                None => defaults.spine_ttl,
            },
            training_set_retention: match args
                .training_set_retention
                .or(file.training_set_retention)
            {
                Some(text) => parse_keep("training_set_retention", &text)?,
                None => defaults.training_set_retention,
            },
            training_set_join: match args.training_set_join.or(file.training_set_join) {
                Some(text) => text
                    .parse()
                    .map_err(|e| format!("training_set_join: {e}"))?,
                None => defaults.training_set_join,
            },
            cluster_addr: args.cluster_addr.or(file.cluster_addr),
            online_store,
            aerospike: match online_store {
                OnlineStoreChoice::Aerospike => Some(args.aerospike.resolve(file.aerospike)?),
                _ if args.aerospike.given() || file.aerospike.is_some() => {
                    return Err(format!(
                        "Aerospike settings are given but the online store is `{}`; add --online-store aerospike \
                         (or online_store = \"aerospike\" in the config file) to use Aerospike",
                        online_store.name()
                    ));
                }
                _ => None,
            },
            executor_timeout: match args.executor_timeout.or(file.executor_timeout) {
                Some(text) => {
                    let timeout = parse_keep("executor_timeout", &text)?;
                    if timeout < Duration::from_secs(10) {
                        return Err(format!(
                            "executor_timeout: `{text}` is shorter than 10s; a busy executor reports only every 5s"
                        ));
                    }
                    timeout
                }
                None => defaults.executor_timeout,
            },
            max_jobs: match args.max_jobs.or(file.max_jobs) {
                Some(0) => return Err("max_jobs must be at least 1".into()),
                Some(n) if n > 64 => return Err(format!("max_jobs must be at most 64, not {n}")),
                Some(n) => n,
                None => defaults.max_jobs,
            },
            http_addr: args
                .http_addr
                .or(file.http_addr)
                .unwrap_or(defaults.http_addr),
        })
        .and_then(|config: Self| config.check_distributed().map(|()| config))
        .and_then(|config: Self| {
            let floor = config.parallelism as u64 * ftab_engine::plan::MIN_MEMORY_PER_PARTITION;
            if config.memory_limit < floor {
                return Err(format!(
                    "memory_limit {} is too small for parallelism {}: jobs need at least {} MiB per partition; \
                     raise --memory-limit to {} MiB or more, or lower --parallelism",
                    config.memory_limit,
                    config.parallelism,
                    ftab_engine::plan::MIN_MEMORY_PER_PARTITION >> 20,
                    floor.div_ceil(1 << 20),
                ));
            }
            Ok(config)
        })
    }

    /// Refuse what cannot work when executors run in other processes: a `memory://` store
    /// (it lives in one process), and, when executors may be on other hosts (the cluster
    /// address is not loopback), a local-path store or the embedded online store.
    fn check_distributed(&self) -> Result<(), String> {
        let Some(addr) = self.cluster_addr else {
            return Ok(());
        };
        let location = self.storage_location();
        // The scheme as the object store layer reads the location (a plain path is file://).
        let scheme = ftab_engine::storage::StorageLayout::new(&location)
            .map(|layout| layout.root().scheme().to_string())
            .map_err(|e| format!("storage: {e}"))?;
        if scheme == "memory" {
            return Err(format!(
                "storage `{location}` is an in-memory store, which executors in other processes cannot see; \
                 in cluster mode use s3://, gs:// or az:// (or a local path with a loopback --cluster-addr)"
            ));
        }
        if addr.ip().is_loopback() {
            // Executors can only reach a loopback address from this host: they share its
            // disk, and the online load runs in this process.
            return Ok(());
        }
        if scheme == "file" {
            return Err(format!(
                "storage `{location}` is a local path, but --cluster-addr {addr} lets executors on other hosts join, \
                 and they cannot read this machine's disk; use an object store every host reaches \
                 (--storage s3://BUCKET/PREFIX, gs://, az://), or a loopback --cluster-addr for a one-host cluster"
            ));
        }
        if self.online_store == OnlineStoreChoice::Embedded {
            return Err(format!(
                "the embedded online store lives in this process's data directory, but --cluster-addr {addr} lets \
                 executors on other hosts join, and online loads would have to pass through this process; \
                 start with --online-store aerospike (and --aerospike-hosts), or --online-store none (tables \
                 with online = true are then refused at ingest), or use a loopback --cluster-addr for a \
                 one-host cluster"
            ));
        }
        Ok(())
    }

    pub fn catalog_path(&self) -> PathBuf {
        self.data_dir.join("catalog.db")
    }

    /// The embedded Ballista executor's work directory (shuffles, job results).
    pub fn ballista_dir(&self) -> PathBuf {
        self.data_dir.join("ballista")
    }

    /// Where sorts spill when jobs run short of memory.
    pub fn spill_dir(&self) -> PathBuf {
        self.data_dir.join("spill")
    }

    /// The embedded online store's database file.
    pub fn online_store_path(&self) -> PathBuf {
        self.data_dir.join("online.redb")
    }

    /// The object store root as given, or `<data_dir>/store`.
    pub fn storage_location(&self) -> String {
        match &self.storage {
            Some(location) => location.clone(),
            None => self.data_dir.join("store").to_string_lossy().into_owned(),
        }
    }
}

fn read_file(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("config file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aerospike_settings_from_the_file_and_flags_and_their_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ftab.toml");
        std::fs::write(
            &file,
            "online_store = \"aerospike\"\n[aerospike]\nhosts = \"a1:3000,a2:3000\"\nnamespace = \"features\"\nwrite_batch = 100\n",
        )
        .unwrap();
        let config = SchedulerConfig::resolve(Args {
            config: Some(file.clone()),
            aerospike: AerospikeArgs {
                namespace: Some("flagged".into()),
                ..Default::default()
            },
            ..Args::default()
        })
        .unwrap();
        assert_eq!(config.online_store, OnlineStoreChoice::Aerospike);
        let aerospike = config.aerospike.unwrap();
        assert_eq!(aerospike.hosts, "a1:3000,a2:3000", "from the file");
        assert_eq!(aerospike.namespace, "flagged", "the flag wins");
        assert_eq!(aerospike.write_batch, 100);
        assert_eq!(aerospike.timeout_ms, 1_000, "the default");

        // Aerospike settings with another online store: said, not ignored.
        let err = SchedulerConfig::resolve(Args {
            aerospike: AerospikeArgs {
                hosts: Some("a1:3000".into()),
                ..Default::default()
            },
            ..Args::default()
        })
        .unwrap_err();
        assert!(err.contains("--online-store aerospike"), "{err}");
        // A password in the file is refused (it comes from the environment only).
        std::fs::write(&file, "[aerospike]\npassword = \"hunter2\"\n").unwrap();
        let err = SchedulerConfig::resolve(Args {
            config: Some(file.clone()),
            ..Args::default()
        })
        .unwrap_err();
        assert!(err.contains("unknown field `password`"), "{err}");
        // A bad host is named.
        let err = SchedulerConfig::resolve(Args {
            online_store: Some("aerospike".into()),
            aerospike: AerospikeArgs {
                hosts: Some("a1".into()),
                ..Default::default()
            },
            ..Args::default()
        })
        .unwrap_err();
        assert!(err.contains("`a1` is not host:port"), "{err}");
    }

    #[test]
    fn defaults_then_file_then_flags() {
        let config = SchedulerConfig::resolve(Args::default()).unwrap();
        assert_eq!(config, SchedulerConfig::default());
        assert_eq!(config.flight_addr.port(), 50051);
        assert!(config.storage_location().ends_with("store"));

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ftab.toml");
        std::fs::write(
            &file,
            "data_dir = \"/srv/ftab\"\nflight_addr = \"0.0.0.0:6000\"\n",
        )
        .unwrap();
        let config = SchedulerConfig::resolve(Args {
            config: Some(file.clone()),
            flight_addr: Some("127.0.0.1:7000".parse().unwrap()),
            ..Args::default()
        })
        .unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/srv/ftab"), "from the file");
        assert_eq!(
            config.flight_addr.port(),
            7000,
            "the flag wins over the file"
        );
        assert_eq!(config.catalog_path(), PathBuf::from("/srv/ftab/catalog.db"));
    }

    #[test]
    fn bad_config_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ftab.toml");
        std::fs::write(&file, "data_dri = \"x\"\n").unwrap();
        let err = SchedulerConfig::resolve(Args {
            config: Some(file),
            ..Args::default()
        })
        .unwrap_err();
        assert!(
            err.contains("ftab.toml") && err.contains("unknown field `data_dri`"),
            "{err}"
        );
        let err = SchedulerConfig::resolve(Args {
            config: Some(dir.path().join("missing.toml")),
            ..Args::default()
        })
        .unwrap_err();
        assert!(err.contains("cannot read config file"), "{err}");
    }

    #[test]
    fn sizes_and_durations_parse_with_clear_errors() {
        assert_eq!(parse_size("4GiB").unwrap(), 4 << 30);
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert!(
            parse_size("lots")
                .unwrap_err()
                .contains("invalid size `lots`")
        );
        assert!(parse_size("4 parsecs").is_err());
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .contains("unit s, m, h or d")
        );
        let err = SchedulerConfig::resolve(Args {
            parallelism: Some(0),
            ..Args::default()
        })
        .unwrap_err();
        assert!(err.contains("parallelism must be at least 1"), "{err}");
        let err = SchedulerConfig::resolve(Args {
            spine_ttl: Some("100000000d".into()),
            ..Args::default()
        })
        .unwrap_err();
        assert!(
            err.contains("spine_ttl: `100000000d` is longer than the 3650d allowed"),
            "{err}"
        );
        let err = SchedulerConfig::resolve(Args {
            parallelism: Some(5000),
            ..Args::default()
        })
        .unwrap_err();
        assert!(err.contains("parallelism must be at most 1024"), "{err}");
        let err = SchedulerConfig::resolve(Args {
            parallelism: Some(4),
            memory_limit: Some("8MiB".into()),
            ..Args::default()
        })
        .unwrap_err();
        assert!(
            err.contains("too small for parallelism 4") && err.contains("16 MiB"),
            "{err}"
        );
        let err = SchedulerConfig::resolve(Args {
            training_set_join: Some("hash".into()),
            ..Args::default()
        })
        .unwrap_err();
        assert!(
            err.contains(
                "training_set_join: unknown join `hash`; use auto, sort_merge or spine_index"
            ),
            "{err}"
        );
        let config = SchedulerConfig::resolve(Args {
            training_set_join: Some("sort_merge".into()),
            ..Args::default()
        })
        .unwrap();
        assert_eq!(config.training_set_join, JoinChoice::SortMerge);
    }

    #[test]
    fn configurations_that_cannot_work_distributed_are_refused() {
        let cluster = |addr: &str, storage: Option<&str>, online: Option<&str>| {
            SchedulerConfig::resolve(Args {
                cluster_addr: Some(addr.parse().unwrap()),
                storage: storage.map(str::to_string),
                online_store: online.map(str::to_string),
                ..Args::default()
            })
        };
        // One host: a local path and the embedded online store are fine.
        let config = cluster("127.0.0.1:0", None, None).unwrap();
        assert_eq!(config.online_store, OnlineStoreChoice::Embedded);
        cluster("127.0.0.1:50050", Some("file:///srv/ftab"), None).unwrap();
        // Other hosts cannot read this machine's disk.
        let err = cluster("0.0.0.0:50050", None, Some("none")).unwrap_err();
        assert!(
            err.contains("is a local path") && err.contains("--storage s3://BUCKET/PREFIX"),
            "{err}"
        );
        let err = cluster("10.0.0.5:50050", Some("file:///srv/ftab"), Some("none")).unwrap_err();
        assert!(err.contains("is a local path"), "{err}");
        // ... nor reach the embedded online store.
        let err = cluster("0.0.0.0:50050", Some("s3://bucket/ftab"), None).unwrap_err();
        assert!(
            err.contains("embedded online store")
                && err.contains("--online-store aerospike")
                && err.contains("--online-store none"),
            "{err}"
        );
        cluster("0.0.0.0:50050", Some("s3://bucket/ftab"), Some("none")).unwrap();
        let config = cluster("0.0.0.0:50050", Some("s3://bucket/ftab"), Some("aerospike")).unwrap();
        assert_eq!(config.aerospike.unwrap().namespace, "ftab");
        // An in-memory store exists in one process only.
        let err = cluster("127.0.0.1:0", Some("memory:///"), None).unwrap_err();
        assert!(err.contains("in-memory store"), "{err}");
        // Standalone takes all of them.
        SchedulerConfig::resolve(Args {
            storage: Some("memory:///".into()),
            ..Args::default()
        })
        .unwrap();
        let err = SchedulerConfig::resolve(Args {
            online_store: Some("redis".into()),
            ..Args::default()
        })
        .unwrap_err();
        assert!(
            err.contains(
                "online_store: unknown online store `redis`; use embedded, aerospike or none"
            ),
            "{err}"
        );
        let err = SchedulerConfig::resolve(Args {
            executor_timeout: Some("3s".into()),
            ..Args::default()
        })
        .unwrap_err();
        assert!(err.contains("shorter than 10s"), "{err}");
    }

    #[test]
    fn cli_parses() {
        let args = Args::try_parse_from([
            "ftab-scheduler",
            "--flight-addr",
            "127.0.0.1:0",
            "--data-dir",
            "d",
        ])
        .unwrap();
        assert_eq!(args.flight_addr.unwrap().port(), 0);
        assert!(Args::try_parse_from(["ftab-scheduler", "--flight-addr", "nope"]).is_err());
    }
}
