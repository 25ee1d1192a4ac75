//! Runs the tests in tests/python against a real `ftab-scheduler`: pyarrow's Flight client
//! alone drives the protocol (actions, ingest, spines, training sets over GetFlightInfo,
//! DoGet and DoExchange), and delta-rs's Python package reads the offline store. ftab must
//! work with clients it did not write.
//!
//! Needs python3 with pyarrow, pytest and deltalake: `scripts/test.sh` (the README's test
//! command, which `.ci/run` calls) installs them in a virtual environment first on PATH.
//! Without them the test fails and says so, unless FTAB_SKIP_PYTHON_TESTS=1 is set, in
//! which case it says clearly that it skipped.

use std::process::Command;

use ftab_e2e::{SchedulerProcess, repo_root};

#[test]
fn pyarrow_flight_client_speaks_the_protocol() {
    let probe = Command::new("python3")
        .args(["-c", "import pyarrow.flight, pytest, deltalake"])
        .output();
    let available = matches!(&probe, Ok(out) if out.status.success());
    if !available {
        if std::env::var("FTAB_SKIP_PYTHON_TESTS").is_ok_and(|v| v == "1") {
            eprintln!(
                "SKIPPED pyarrow_flight_client_speaks_the_protocol: FTAB_SKIP_PYTHON_TESTS=1 and pyarrow/pytest/deltalake are not installed"
            );
            return;
        }
        panic!(
            "python3 with pyarrow, pytest and deltalake is needed: run the tests with `scripts/test.sh`, which installs them in a virtual environment, or `pip install -r tests/python/requirements.txt` (or set FTAB_SKIP_PYTHON_TESTS=1 to skip). Probe said: {probe:?}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    // Three partitions, so a training set comes in several endpoints even on a small machine.
    let scheduler =
        SchedulerProcess::start_with_env(&dir.path().join("data"), &[("FTAB_PARALLELISM", "3")]);
    let grpc_url = scheduler.url.replacen("http://", "grpc://", 1);
    let root = repo_root();
    let output = Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(root.join("tests/python"))
        .env("FTAB_FLIGHT_URL", &grpc_url)
        .env("FTAB_HTTP_URL", &scheduler.http_url)
        .env("FTAB_EXAMPLE_REPO", root.join("examples/feature_repo"))
        .output()
        .expect("run python3 -m pytest");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the pyarrow client tests failed:\n{stdout}\n{stderr}\nscheduler log:\n{}",
        scheduler.log()
    );
}
