//! The feature server's HTTP suite (tests/python/test_serving.py, Python's urllib as the
//! client) with Aerospike as the online store: once with a standalone scheduler that
//! loads and serves it, once as a cluster where two executors load it and two stateless
//! `ftab-serving` processes serve it.
//!
//! Needs an Aerospike server: `FTAB_TEST_AEROSPIKE=host:port` (and
//! `FTAB_TEST_AEROSPIKE_NAMESPACE`, default `test`). Without it each test says that it
//! skipped. docs/online-store.md says how these were run and what they showed.

use std::process::Command;

use ftab_e2e::{
    ExecutorProcess, SchedulerProcess, ServingProcess, hours_ago, http, poll_json, repo_root, write,
};

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
    // The scheduler goes away: the serving processes keep answering from the definitions
    // they copied.
    let (workspace, csv) = fresh_workspace(&scheduler, dir.path(), &[("u1", 7, 30)]);
    scheduler
        .ftab(&[
            "ingest",
            "-w",
            &workspace,
            "-t",
            "user_login_counts",
            &csv,
            "--wait",
        ])
        .ok();
    let request = format!(
        r#"{{"workspace": "{workspace}", "features": ["user_login_counts"], "join_key_map": {{"user_id": "u1"}}}}"#
    );
    let expected = (200, r#"{"result":{"features":[7,30]}}"#.to_string());
    let url = format!("{}/v1/get-features", serving[1].http_url);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while http("POST", &url, Some(&request)) != expected {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}\n{}",
            http("POST", &url, Some(&request)),
            logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let scheduler_log = scheduler.log();
    drop(scheduler);
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(
        http("POST", &url, Some(&request)),
        expected,
        "{scheduler_log}"
    );
    assert_eq!(
        http("GET", &format!("{}/readyz", serving[1].http_url), None).0,
        200
    );
    assert!(
        serving[1]
            .log()
            .contains("serving the definitions copied before"),
        "{}",
        serving[1].log()
    );
}

/// Aerospike is unreachable when an ingest's job runs: the job fails on the online step
/// with a message naming the address, after its offline commit; a retry, once Aerospike
/// is reachable, loads the online store without committing the offline rows again.
#[test]
fn an_unreachable_aerospike_fails_only_the_online_step_and_a_retry_completes_it() {
    let Some(env) =
        aerospike("an_unreachable_aerospike_fails_only_the_online_step_and_a_retry_completes_it")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut unreachable = env.clone();
    unreachable[0].1 = "127.0.0.1:1".into();
    unreachable.push(("FTAB_AEROSPIKE_CONNECT_TIMEOUT_MS", "300".into()));
    let scheduler =
        SchedulerProcess::start_with(&data_dir, &["--online-store", "aerospike"], &unreachable);
    let (workspace, csv) = fresh_workspace(&scheduler, dir.path(), &[("u1", 7, 30), ("u2", 8, 31)]);
    let out = scheduler.ftab(&[
        "--output",
        "json",
        "ingest",
        "-w",
        &workspace,
        "-t",
        "user_login_counts",
        &csv,
    ]);
    let job_id = out.json()["job_id"].as_str().unwrap().to_string();
    let job = poll_json(&scheduler, &["jobs", "show", &job_id], |j| {
        j["state"] == "failed" || j["state"] == "succeeded"
    });
    assert_eq!(job["state"], "failed", "{job}");
    let error = job["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("cannot reach Aerospike at 127.0.0.1:1"),
        "{job}"
    );
    assert_eq!(job["attempts"], 3, "{job}");
    assert_eq!(job["counts"]["offline_rows_committed"], 2, "{job}");
    assert_eq!(job["steps"]["offline_commit"], "done", "{job}");
    assert_eq!(job["steps"]["online_load"], "pending", "{job}");
    drop(scheduler);

    let scheduler = SchedulerProcess::start_with(&data_dir, &["--online-store", "aerospike"], &env);
    scheduler.ftab(&["jobs", "retry", &job_id]).ok();
    let job = poll_json(&scheduler, &["jobs", "show", &job_id], |j| {
        j["state"] == "failed" || j["state"] == "succeeded"
    });
    assert_eq!(job["state"], "succeeded", "{job}\n{}", scheduler.log());
    assert_eq!(job["counts"]["online_rows_written"], 2, "{job}");
    let described = scheduler
        .ftab(&[
            "--output",
            "json",
            "tables",
            "describe",
            "user_login_counts",
            "-w",
            &workspace,
        ])
        .json();
    assert_eq!(
        described["offline"]["rows"], 2,
        "committed once: {described}"
    );
    let got = scheduler
        .ftab(&[
            "--output",
            "json",
            "get",
            "-w",
            &workspace,
            "-t",
            "user_login_counts",
            "--key",
            "user_id=u2",
        ])
        .json();
    assert_eq!(got["found"], true, "{got}");
}

/// A live workspace no earlier run used (Aerospike keeps its records between runs) with
/// the example repository applied, and a CSV file of `user_login_counts` rows
/// (user, count_7d, count_30d) an hour old, in `dir`.
fn fresh_workspace(
    scheduler: &SchedulerProcess,
    dir: &std::path::Path,
    rows: &[(&str, i64, i64)],
) -> (String, String) {
    let workspace = format!("w{}", uuid_like());
    let repo = repo_root().join("examples/feature_repo");
    scheduler
        .ftab(&["workspace", "create", &workspace, "--live"])
        .ok();
    scheduler
        .ftab(&["apply", repo.to_str().unwrap(), "-w", &workspace, "--yes"])
        .ok();
    let mut csv = String::from("user_id,timestamp,user_login_count_7d,user_login_count_30d\n");
    for (user, count_7d, count_30d) in rows {
        csv += &format!("{user},{},{count_7d},{count_30d}\n", hours_ago(1));
    }
    (workspace, write(dir, "logins.csv", &csv))
}

/// A name part unique to this run.
fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}{:x}", nanos, std::process::id())
}

/// A serving process whose scheduler does not answer is alive but not ready, and says why
/// to a request (no Aerospike needed).
#[test]
fn a_serving_process_without_definitions_is_alive_but_not_ready() {
    let dir = tempfile::tempdir().unwrap();
    let serving = ServingProcess::start(
        "http://127.0.0.1:1",
        &dir.path().join("serving.log"),
        &[
            ("FTAB_AEROSPIKE_HOSTS", "127.0.0.1:1"),
            ("FTAB_AEROSPIKE_CONNECT_TIMEOUT_MS", "200"),
        ],
    );
    let get = |path: &str| http("GET", &format!("{}{path}", serving.http_url), None);
    assert_eq!(get("/healthz"), (200, "ok".into()));
    let (status, body) = get("/readyz");
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("no definitions from its scheduler yet"),
        "{body}"
    );
    let (status, body) = http(
        "POST",
        &format!("{}/v1/get-features", serving.http_url),
        Some(r#"{"workspace": "prod", "features": ["t"], "join_key_map": {"k": "v"}}"#),
    );
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"code\":503"), "{body}");
    assert!(
        serving.log().contains("scheduler http://127.0.0.1:1"),
        "{}",
        serving.log()
    );
}
