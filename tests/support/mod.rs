//! Helpers for ftab's end-to-end tests: start real `ftab-scheduler` processes on free
//! loopback ports in temporary directories, and run the `ftab` CLI against them.
//!
//! The binaries are the ones cargo builds beside the test executable;
//! `cargo test --workspace` builds them (the scheduler and client packages have
//! integration tests, which makes cargo build their binaries).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long a scheduler may take to say it is ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The path of a workspace binary built by cargo, with a clear message when it is missing.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executables live in target/<profile>/deps");
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "{} is not built; run the tests with `cargo test --workspace` (which builds every binary) or run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// A running `ftab-scheduler` process, killed when dropped.
pub struct SchedulerProcess {
    child: Option<Child>,
    pub url: String,
    pub data_dir: PathBuf,
    /// In cluster mode, where executors register (`HOST:PORT`).
    pub cluster_addr: Option<String>,
    /// The feature server's HTTP API, `http://HOST:PORT`.
    pub http_url: String,
    stderr_log: PathBuf,
}

impl SchedulerProcess {
    /// Start a scheduler on a free loopback port with its data in `data_dir`, and wait
    /// until it is ready.
    pub fn start(data_dir: &Path) -> Self {
        Self::start_with_env(data_dir, &[])
    }

    /// Start with extra environment variables (e.g. a failpoint).
    pub fn start_with_env(data_dir: &Path, env: &[(&str, &str)]) -> Self {
        Self::start_with(data_dir, &[], env)
    }

    /// Start with extra flags (e.g. `--cluster-addr 127.0.0.1:0`) and environment
    /// variables. The log is appended to, so a restarted scheduler's log follows the first.
    pub fn start_with<K: AsRef<std::ffi::OsStr>, V: AsRef<std::ffi::OsStr>>(
        data_dir: &Path,
        args: &[&str],
        env: &[(K, V)],
    ) -> Self {
        let stderr_log = data_dir.with_extension("scheduler.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr_log)
            .expect("create the scheduler log file");
        let mut child = Command::new(binary("ftab-scheduler"))
            .args(["--flight-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .args(["--log", "info"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .env_remove("FTAB_CONFIG")
            .env_remove("FTAB_FAILPOINT")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start ftab-scheduler");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("ftab-scheduler ready: flight=") {
                    let url = rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let field = |name: &str| {
                        rest.split_whitespace()
                            .find_map(|w| w.strip_prefix(name))
                            .map(str::to_string)
                    };
                    let _ = sender.send((url, field("cluster="), field("http=")));
                }
            }
        });
        let (url, cluster_addr, http_url) = match receiver.recv_timeout(START_TIMEOUT) {
            Ok(ready) => ready,
            Err(_) => {
                let _ = child.kill();
                let log = std::fs::read_to_string(&stderr_log).unwrap_or_default();
                panic!(
                    "ftab-scheduler did not become ready within {START_TIMEOUT:?}; its log:\n{log}"
                );
            }
        };
        Self {
            child: Some(child),
            url,
            data_dir: data_dir.to_path_buf(),
            cluster_addr,
            http_url: http_url.expect("the scheduler prints its HTTP address"),
            stderr_log,
        }
    }

    /// Run the `ftab` CLI against this scheduler.
    pub fn ftab(&self, args: &[&str]) -> CliOutput {
        ftab_with_server(&self.url, args)
    }

    /// Create the live workspace `prod` with the example repository applied.
    pub fn example_workspace(&self) {
        self.ftab(&["workspace", "create", "prod", "--live"]).ok();
        let repo = repo_root().join("examples/feature_repo");
        self.ftab(&["apply", repo.to_str().unwrap(), "-w", "prod", "--yes"])
            .ok();
    }

    /// `ftab get` of one key of a table of workspace `prod`, as JSON.
    pub fn online(&self, table: &str, key: &str) -> serde_json::Value {
        self.ftab(&[
            "--output", "json", "get", "-w", "prod", "-t", table, "--key", key,
        ])
        .json()
    }

    /// Send SIGTERM and wait for the process to exit; returns whether it exited cleanly.
    pub fn terminate(mut self) -> bool {
        let mut child = self.child.take().expect("the scheduler is running");
        // The shell's own `kill`, so no procps package is needed.
        let status = Command::new("sh")
            .args(["-c", &format!("kill -TERM {}", child.id())])
            .status()
            .expect("run sh -c kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait for the scheduler") {
                return status.success();
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("ftab-scheduler did not exit within 30s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kill the process with SIGKILL, as a crash would, and wait for it.
    pub fn kill(mut self) {
        let mut child = self.child.take().expect("the scheduler is running");
        child.kill().expect("kill the scheduler");
        let _ = child.wait();
    }

    /// Wait until the log contains `text`.
    pub fn wait_for_log(&self, text: &str) {
        let deadline = std::time::Instant::now() + START_TIMEOUT;
        while !self.log().contains(text) {
            assert!(
                std::time::Instant::now() < deadline,
                "the scheduler never logged {text:?}; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The scheduler's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }
}

impl Drop for SchedulerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Spawn `command` with stdout piped and stderr to `log`, and wait for the stdout line
/// starting with `ready`; answers the process and the rest of that line.
fn spawn_until_ready(mut command: Command, ready: &'static str, log: &Path) -> (Child, String) {
    let out = std::fs::File::create(log).expect("create the log file");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(out))
        .spawn()
        .unwrap_or_else(|e| panic!("start {command:?}: {e}"));
    let stdout = child.stdout.take().expect("stdout is piped");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix(ready) {
                let _ = sender.send(rest.to_string());
            }
        }
    });
    match receiver.recv_timeout(START_TIMEOUT) {
        Ok(rest) => (child, rest),
        Err(_) => {
            let _ = child.kill();
            panic!(
                "`{ready}` was not printed within {START_TIMEOUT:?}; the log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }
}

/// A running `ftab-serving` process, killed when dropped.
pub struct ServingProcess {
    child: Option<Child>,
    /// The HTTP API, `http://HOST:PORT`.
    pub http_url: String,
    log: PathBuf,
}

impl ServingProcess {
    /// Start a serving process on a free loopback port that copies its definitions from
    /// the scheduler at `scheduler_url`, with `env` (its Aerospike settings).
    pub fn start<K: AsRef<std::ffi::OsStr>, V: AsRef<std::ffi::OsStr>>(
        scheduler_url: &str,
        log: &Path,
        env: &[(K, V)],
    ) -> Self {
        let mut command = Command::new(binary("ftab-serving"));
        command
            .args(["--scheduler", scheduler_url, "--http-addr", "127.0.0.1:0"])
            .args(["--refresh", "1s", "--log", "info"])
            .envs(env.iter().map(|(k, v)| (k, v)));
        let (child, rest) = spawn_until_ready(command, "ftab-serving ready: http=", log);
        Self {
            child: Some(child),
            http_url: rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string(),
            log: log.to_path_buf(),
        }
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServingProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A running `ftab-executor` process, killed when dropped.
pub struct ExecutorProcess {
    child: Option<Child>,
    /// The executor's id, as the scheduler knows it.
    pub id: String,
    log: PathBuf,
}

impl ExecutorProcess {
    /// Start an executor on free loopback ports that registers with `scheduler`
    /// (`HOST:PORT`), with `tasks` task slots, and wait until it is ready.
    pub fn start<K: AsRef<std::ffi::OsStr>, V: AsRef<std::ffi::OsStr>>(
        scheduler: &str,
        work_dir: &Path,
        tasks: usize,
        env: &[(K, V)],
    ) -> Self {
        let log = work_dir.with_extension("executor.log");
        let mut command = Command::new(binary("ftab-executor"));
        command
            .args(["--scheduler", scheduler, "--port", "0", "--grpc-port", "0"])
            .args([
                "--tasks",
                &tasks.to_string(),
                "--memory-limit",
                "512MiB",
                "--log",
                "info",
            ])
            .arg("--work-dir")
            .arg(work_dir)
            .env_remove("FTAB_FAILPOINT")
            .envs(env.iter().map(|(k, v)| (k, v)));
        let (child, rest) = spawn_until_ready(command, "ftab-executor ready: id=", &log);
        let id = rest
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        Self {
            child: Some(child),
            id,
            log,
        }
    }

    /// Kill the process with SIGKILL, as a crash would, and wait for it.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill the executor");
            let _ = child.wait();
        }
    }

    /// The executor's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ExecutorProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a CLI run printed and how it exited.
#[derive(Debug)]
pub struct CliOutput {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    fn from(output: Output) -> Self {
        Self {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Assert success and return stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(
            self.code,
            Some(0),
            "ftab failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        &self.stdout
    }

    /// Assert the exit code and return stderr.
    #[track_caller]
    pub fn fails_with(&self, code: i32) -> &str {
        assert_eq!(
            self.code,
            Some(code),
            "expected exit code {code}:\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        &self.stderr
    }

    /// Parse stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// Run the `ftab` CLI with `--server url`, stdin closed (not a terminal).
pub fn ftab_with_server(url: &str, args: &[&str]) -> CliOutput {
    let output = Command::new(binary("ftab"))
        .arg("--server")
        .arg(url)
        .args(args)
        .env_remove("FTAB_WORKSPACE")
        .env_remove("FTAB_SERVER")
        .stdin(Stdio::null())
        .output()
        .expect("run ftab");
    CliOutput::from(output)
}

/// Run `ftab --output json ARGS` until `done` accepts its JSON (polling), and return it.
pub fn poll_json(
    scheduler: &SchedulerProcess,
    args: &[&str],
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut full = vec!["--output", "json"];
    full.extend_from_slice(args);
    loop {
        let value = scheduler.ftab(&full).json();
        if done(&value) {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gave up waiting on `ftab {}`: {value}",
            args.join(" ")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Copy a directory tree (a feature repository) to `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create the copy's directory");
    for entry in std::fs::read_dir(from).expect("read the directory") {
        let entry = entry.expect("read a directory entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a file");
        }
    }
}

/// An RFC 3339 UTC timestamp `hours` before now.
pub fn hours_ago(hours: i64) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - hours * 3600;
    // Civil date from days since the epoch (Howard Hinnant's algorithm), to avoid a date crate.
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Write a file under `dir`; its path as text.
pub fn write(dir: &Path, name: &str, content: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path.to_string_lossy().into_owned()
}

pub use ftab_testkit::{files_under, find_files};

/// The rows of a Parquet file as column name -> value text (`null` for nulls).
pub fn read_parquet_rows(path: &Path) -> Vec<std::collections::BTreeMap<String, String>> {
    use arrow::array::Array;
    let file =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("a Parquet file")
        .build()
        .expect("a Parquet reader");
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.expect("a readable batch");
        for row in 0..batch.num_rows() {
            let mut out = std::collections::BTreeMap::new();
            for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
                // Zoned timestamps print as UTC without the zone (no time zone database here).
                let column = match column.data_type() {
                    arrow::datatypes::DataType::Timestamp(unit, Some(_)) => arrow::compute::cast(
                        column,
                        &arrow::datatypes::DataType::Timestamp(*unit, None),
                    )
                    .expect("a timestamp casts to a naive one"),
                    _ => column.clone(),
                };
                let text = if column.is_null(row) {
                    "null".to_string()
                } else {
                    arrow::util::display::array_value_to_string(&column, row)
                        .expect("a displayable value")
                };
                out.insert(field.name().clone(), text);
            }
            rows.push(out);
        }
    }
    rows
}

/// One HTTP/1.1 request over a plain TCP connection (no HTTP library: a client ftab did
/// not write): `(status, body)`. `url` is `http://HOST:PORT/PATH`.
pub fn http(method: &str, url: &str, body: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut stream = std::net::TcpStream::connect(host).expect("connect to the HTTP server");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("set a read timeout");
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send the request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .expect("read the response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
