//! The feature server's HTTP suite (tests/python/test_serving.py, Python's urllib as the
//! client) with Aerospike as the online store: once with a standalone scheduler that
//! loads and serves it, once as a cluster where two executors load it and two stateless
//! `ftab-serving` processes serve it.
//!
//! Needs an Aerospike server: `FTAB_TEST_AEROSPIKE=host:port` (and
//! `FTAB_TEST_AEROSPIKE_NAMESPACE`, default `test`). Without it each test says that it
//! skipped. docs/online-store.md says how these were run and what they showed.

use std::process::Command;

use ftab_e2e::{ExecutorProcess, SchedulerProcess, ServingProcess, repo_root};

/// The Aerospike settings for ftab's processes, or `None` after saying the test skipped.
fn aerospike(test: &str) -> Option<Vec<(&'static str, String)>> {
    let Ok(hosts) = std::env::var("FTAB_TEST_AEROSPIKE") else {
        eprintln!(
            "SKIPPED {test}: set FTAB_TEST_AEROSPIKE=host:port to run it against an Aerospike server"
        );
        return None;
    };
    let namespace =
        std::env::var("FTAB_TEST_AEROSPIKE_NAMESPACE").unwrap_or_else(|_| "test".into());
    Some(vec![
        ("FTAB_AEROSPIKE_HOSTS", hosts),
        ("FTAB_AEROSPIKE_NAMESPACE", namespace),
    ])
}

/// Run tests/python/test_serving.py against the HTTP API at `http_url`.
fn run_http_suite(flight_url: &str, http_url: &str) -> Result<String, String> {
    let root = repo_root();
    let output = Command::new("python3")
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(root.join("tests/python/test_serving.py"))
        .env(
            "FTAB_FLIGHT_URL",
            flight_url.replacen("http://", "grpc://", 1),
        )
        .env("FTAB_HTTP_URL", http_url)
        .env("FTAB_EXAMPLE_REPO", root.join("examples/feature_repo"))
        .output()
        .expect("run python3 -m pytest");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

#[test]
fn http_suite_on_aerospike_from_a_standalone_scheduler() {
    let Some(env) = aerospike("http_suite_on_aerospike_from_a_standalone_scheduler") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let scheduler = SchedulerProcess::start_with(
        &dir.path().join("data"),
        &["--online-store", "aerospike"],
        &env,
    );
    match run_http_suite(&scheduler.url, &scheduler.http_url) {
        Ok(out) => println!("{out}"),
        Err(out) => panic!(
            "the HTTP suite failed:\n{out}\nscheduler log:\n{}",
            scheduler.log()
        ),
    }
    assert!(scheduler.log().contains("connected to Aerospike"));
}

#[test]
fn http_suite_on_aerospike_from_a_cluster_and_stateless_serving_processes() {
    let Some(env) =
        aerospike("http_suite_on_aerospike_from_a_cluster_and_stateless_serving_processes")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // The scheduler is given an address where no Aerospike listens: only the executors
    // and the serving processes reach it, so every online load must run on an executor
    // and every read in a serving process.
    let mut unreachable = env.clone();
    unreachable[0].1 = "127.0.0.1:1".into();
    let scheduler = SchedulerProcess::start_with(
        &dir.path().join("data"),
        &[
            "--cluster-addr",
            "127.0.0.1:0",
            "--online-store",
            "aerospike",
        ],
        &unreachable,
    );
    let cluster_addr = scheduler.cluster_addr.clone().expect("cluster mode");
    let executors: Vec<ExecutorProcess> = (0..2)
        .map(|i| {
            ExecutorProcess::start(
                &cluster_addr,
                &dir.path().join(format!("executor{i}")),
                1,
                &env,
            )
        })
        .collect();
    scheduler.wait_for_log("registered=2 ");
    let serving: Vec<ServingProcess> = (0..2)
        .map(|i| {
            ServingProcess::start(
                &scheduler.url,
                &dir.path().join(format!("serving{i}.log")),
                &env,
            )
        })
        .collect();
    let logs = || {
        let mut all = format!("scheduler log:\n{}", scheduler.log());
        for (i, e) in executors.iter().enumerate() {
            all += &format!("\nexecutor {i} log:\n{}", e.log());
        }
        for (i, s) in serving.iter().enumerate() {
            all += &format!("\nserving {i} log:\n{}", s.log());
        }
        all
    };
    match run_http_suite(&scheduler.url, &serving[0].http_url) {
        Ok(out) => println!("{out}"),
        Err(out) => panic!(
            "the HTTP suite failed against ftab-serving:\n{out}\n{}",
            logs()
        ),
    }
    let executor_logs: String = executors.iter().map(|e| e.log()).collect();
    assert!(
        executor_logs.contains("connected to Aerospike"),
        "{}",
        logs()
    );
    assert!(
        scheduler
            .log()
            .contains("cannot reach Aerospike at 127.0.0.1:1"),
        "{}",
        logs()
    );
    // The second serving process gives the same answers as the first: run the suite's
    // answers against it too.
    match run_http_suite(&scheduler.url, &serving[1].http_url) {
        Ok(out) => println!("{out}"),
        Err(out) => panic!(
            "the HTTP suite failed against the second ftab-serving:\n{out}\n{}",
            logs()
        ),
    }
}
