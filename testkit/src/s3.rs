//! A local S3-compatible server for tests: moto's server mode (PyPI `moto[server]`, which
//! `scripts/test.sh` installs with the other Python test clients), started on a free
//! loopback port and stopped when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `moto_server`.
pub struct S3Server {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

const INSTALL_HINT: &str = "moto's S3 server (`moto_server`, from PyPI `moto[server]`) is needed: run the tests with `scripts/test.sh`, which installs it in a virtual environment, or `pip install -r tests/python/requirements.txt`";

impl S3Server {
    /// Start the server and wait until it answers; panics with what to install if it
    /// cannot start. moto picks its own free port (`-p 0`) and prints it: a port chosen
    /// here and released could be taken by another process before moto binds it, and a
    /// test would then talk S3 to that process.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log = dir.path().join("moto.log");
        let out = std::fs::File::create(&log).expect("create the moto log");
        let mut child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone a file handle"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start moto_server ({e}). {INSTALL_HINT}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let port = text
                .split("Running on http://127.0.0.1:")
                .nth(1)
                .map(|rest| {
                    rest.chars()
                        .take_while(char::is_ascii_digit)
                        .collect::<String>()
                })
                .and_then(|digits| digits.parse::<u16>().ok());
            if let Some(port) = port {
                break port;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("moto_server exited ({status}). {INSTALL_HINT}. Its log:\n{text}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("moto_server did not start within 30s. {INSTALL_HINT}. Its log:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        }
    }

    /// The environment object_store (and delta-rs's Python client, by the same names)
    /// reads to reach this server.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT", self.endpoint.as_str()),
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Create a bucket (object_store cannot), with boto3, which moto brings.
    pub fn create_bucket(&self, bucket: &str) {
        let script = format!(
            "import boto3; boto3.client('s3', endpoint_url='{}', region_name='us-east-1', aws_access_key_id='testing', aws_secret_access_key='testing').create_bucket(Bucket='{bucket}')",
            self.endpoint
        );
        let output = Command::new("python3")
            .args(["-c", &script])
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run python3 to create a bucket ({e}). {INSTALL_HINT}")
            });
        assert!(
            output.status.success(),
            "cannot create bucket {bucket}: {}. {INSTALL_HINT}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Upload a local file as `s3://bucket/key`, with boto3.
    pub fn put_file(&self, bucket: &str, key: &str, file: &std::path::Path) {
        let script = format!(
            "import sys, boto3; boto3.client('s3', endpoint_url='{}', region_name='us-east-1', aws_access_key_id='testing', aws_secret_access_key='testing').upload_file(sys.argv[1], '{bucket}', '{key}')",
            self.endpoint
        );
        let output = Command::new("python3")
            .args(["-c", &script])
            .arg(file)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run python3 to upload a file ({e}). {INSTALL_HINT}")
            });
        assert!(
            output.status.success(),
            "cannot upload {} to s3://{bucket}/{key}: {}",
            file.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What the server saw last, for the failure's report.
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            let exited = self.child.try_wait().ok().flatten();
            eprintln!(
                "moto_server at {} (exited: {exited:?}), last lines of its log:\n{}",
                self.endpoint,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
