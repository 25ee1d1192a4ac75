//! The scheduler's configuration: defaults, then an optional TOML file, then environment
//! variables, then flags (each overrides the one before). Built once at start and passed
//! down.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::{Deserialize, Serialize};

/// Defaults, in one place.
pub mod defaults {
    pub const DATA_DIR: &str = "ftab-data";
    pub const FLIGHT_ADDR: &str = "127.0.0.1:50051";
    pub const LOG: &str = "info";
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
}

/// The settings a config file may hold. Unknown keys are refused, so a typo is caught.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    flight_addr: Option<SocketAddr>,
    storage: Option<String>,
    log: Option<String>,
}

/// The resolved configuration of one scheduler process.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SchedulerConfig {
    pub data_dir: PathBuf,
    pub flight_addr: SocketAddr,
    /// Object store root; `None` means `<data_dir>/store`.
    pub storage: Option<String>,
    pub log: String,
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
        }
    }
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
        Ok(Self {
            data_dir: args.data_dir.or(file.data_dir).unwrap_or(defaults.data_dir),
            flight_addr: args
                .flight_addr
                .or(file.flight_addr)
                .unwrap_or(defaults.flight_addr),
            storage: args.storage.or(file.storage),
            log: args.log.or(file.log).unwrap_or(defaults.log),
        })
    }

    pub fn catalog_path(&self) -> PathBuf {
        self.data_dir.join("catalog.db")
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
