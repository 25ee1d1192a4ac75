//! End to end: what a new user meets with the `ftab` CLI against a real scheduler. Local
//! files that cannot be read are named with the line at fault, a 10 MB value is read back,
//! and `--output json` is JSON lines everywhere, wrong command lines included.

use ftab_e2e::{SchedulerProcess, copy_dir, hours_ago, repo_root, write};

/// A live workspace `prod` with the example repository, and `big` with a text feature.
fn setup(scheduler: &SchedulerProcess, dir: &std::path::Path) {
    scheduler.example_workspace();
    let repo = repo_root().join("examples/feature_repo");
    let docs = dir.join("docs_repo");
    copy_dir(&repo, &docs);
    std::fs::remove_file(docs.join("fraud.toml")).unwrap();
    write(
        &docs,
        "docs.toml",
        r#"
[[feature_table]]
name = "user_docs"
entities = ["user"]
timestamp_field = "timestamp"
online = true
offline = true
schema = [
  { name = "user_id", type = "string" },
  { name = "timestamp", type = "timestamp" },
  { name = "doc", type = "string" },
]
"#,
    );
    scheduler
        .ftab(&["workspace", "create", "big", "--live"])
        .ok();
    scheduler
        .ftab(&["apply", docs.to_str().unwrap(), "-w", "big", "--yes"])
        .ok();
}

const LOGINS_HEADER: &str = "user_id,timestamp,user_login_count_7d,user_login_count_30d\n";

#[test]
fn local_files_that_cannot_be_read_are_named_with_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = SchedulerProcess::start(&dir.path().join("data"));
    setup(&scheduler, dir.path());
    let t = hours_ago(1);
    let ingest = |file: &str| {
        scheduler
            .ftab(&["ingest", "-w", "prod", "-t", "user_login_counts", file])
            .fails_with(1)
            .to_string()
    };

    // A bad integer on line 3 of the file (the header is line 1).
    let bad = write(
        dir.path(),
        "bad.csv",
        &format!("{LOGINS_HEADER}u1,{t},1,10\nu2,{t},abc,20\n"),
    );
    let err = ingest(&bad);
    assert!(err.contains("bad.csv"), "{err}");
    assert!(
        err.contains("'abc'") && err.contains("at line 3 of the file"),
        "{err}"
    );
    assert!(
        !err.contains("DoPut"),
        "the local cause, not the server's: {err}"
    );

    // A header and no rows.
    let empty = write(dir.path(), "header_only.csv", LOGINS_HEADER);
    let err = ingest(&empty);
    assert!(
        err.contains("header_only.csv: the data has no rows"),
        "{err}"
    );
    assert!(!err.contains("DoPut"), "{err}");

    // Nothing of either reached the table.
    let jobs = scheduler
        .ftab(&["--output", "json", "jobs", "list", "-w", "prod"])
        .json();
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 0, "{jobs}");

    // A spine with a bad time, a spine that does not exist, an output that cannot be
    // written: each names its file, and none claims that an ingest did not happen.
    let spine = |spine: &str, out: &str| {
        scheduler
            .ftab(&[
                "training-set",
                "-w",
                "prod",
                "--service",
                "fraud_detection",
                "--spine",
                spine,
                "--timestamp-column",
                "timestamp",
                "--out",
                out,
            ])
            .fails_with(1)
            .to_string()
    };
    let out = dir.path().join("out.parquet");
    let out = out.to_str().unwrap();
    let bad_time = write(
        dir.path(),
        "spine_bad.csv",
        "user_id,merchant_id,timestamp\nu1,m1,2024-05-01T00:00:00Z\nu2,m1,not a time\n",
    );
    let bad_time_err = spine(&bad_time, out);
    assert!(bad_time_err.contains("spine_bad.csv"), "{bad_time_err}");
    assert!(
        bad_time_err.contains("at line 3 of the file"),
        "{bad_time_err}"
    );
    let missing = dir.path().join("missing.csv");
    let missing_err = spine(missing.to_str().unwrap(), out);
    assert!(
        missing_err.contains("missing.csv: the spine file does not exist"),
        "{missing_err}"
    );
    let good = write(
        dir.path(),
        "spine.csv",
        &format!("user_id,merchant_id,timestamp\nu1,m1,{t}\n"),
    );
    let unwritable = dir.path().join("no/such/dir/out.parquet");
    let unwritable_err = spine(&good, unwritable.to_str().unwrap());
    assert!(
        unwritable_err.contains("no/such/dir/out.parquet: cannot write the output"),
        "{unwritable_err}"
    );
    for err in [&bad_time_err, &missing_err, &unwritable_err] {
        assert!(!err.contains("nothing was ingested"), "{err}");
    }
}

#[test]
fn a_10_mb_value_is_read_back_by_get_and_training_set() {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = SchedulerProcess::start(&dir.path().join("data"));
    setup(&scheduler, dir.path());
    let t = hours_ago(1);
    let doc: String = (0..10_000_000u32)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let data = write(
        dir.path(),
        "docs.csv",
        &format!("user_id,timestamp,doc\nu1,{t},{doc}\n"),
    );
    scheduler
        .ftab(&["ingest", "-w", "big", "-t", "user_docs", &data, "--wait"])
        .ok();

    let record = scheduler
        .ftab(&[
            "--output",
            "json",
            "get",
            "-w",
            "big",
            "-t",
            "user_docs",
            "-k",
            "user_id=u1",
        ])
        .json();
    assert_eq!(record["found"], true, "{}", record["found"]);
    let features = record["features"].as_array().unwrap();
    assert_eq!(features[0][0], "doc");
    assert!(
        features[0][1].as_str() == Some(doc.as_str()),
        "the value read back differs"
    );

    let spine = write(
        dir.path(),
        "spine.csv",
        &format!("user_id,timestamp\nu1,{}\n", hours_ago(0)),
    );
    let out = dir.path().join("docs.parquet");
    scheduler
        .ftab(&[
            "training-set",
            "-w",
            "big",
            "--features",
            "user_docs",
            "--spine",
            &spine,
            "--timestamp-column",
            "timestamp",
            "--out",
            out.to_str().unwrap(),
        ])
        .ok();
    let rows = ftab_e2e::read_parquet_rows(&out);
    assert_eq!(rows.len(), 1);
    assert!(
        rows[0]["user_docs__doc"] == doc,
        "the training set's value differs"
    );
}

#[test]
fn json_output_is_one_document_per_line_everywhere() {
    // A wrong command line, under --output json: a JSON error line and exit 2, whichever
    // way the flag is written; without it, clap's text.
    for args in [
        vec!["--output", "json", "jobs", "list", "--limit", "x"],
        vec!["jobs", "list", "--output=json", "--limit", "x"],
        vec!["--output", "json", "no-such-command"],
    ] {
        let out = ftab_e2e::ftab_with_server("http://127.0.0.1:1", &args);
        out.fails_with(2);
        let value: serde_json::Value = serde_json::from_str(out.stdout.trim_end())
            .unwrap_or_else(|e| panic!("{args:?}: stdout is not one JSON line ({e}): {out:?}"));
        assert_eq!(value["error"]["code"], "usage", "{value}");
        assert!(
            value["error"]["message"]
                .as_str()
                .unwrap()
                .contains("error:"),
            "{value}"
        );
    }
    let out = ftab_e2e::ftab_with_server("http://127.0.0.1:1", &["jobs", "list", "--limit", "x"]);
    assert!(out.fails_with(2).contains("invalid value 'x'"), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");

    // `ingest --wait` of two files: two lines, each one document with the job as it ended.
    let dir = tempfile::tempdir().unwrap();
    let scheduler = SchedulerProcess::start(&dir.path().join("data"));
    setup(&scheduler, dir.path());
    let t = hours_ago(2);
    let a = write(
        dir.path(),
        "a.csv",
        &format!("{LOGINS_HEADER}u1,{t},1,10\n"),
    );
    let b = write(
        dir.path(),
        "b.csv",
        &format!("{LOGINS_HEADER}u2,{t},2,20\n"),
    );
    let out = scheduler.ftab(&[
        "--output",
        "json",
        "ingest",
        "-w",
        "prod",
        "-t",
        "user_login_counts",
        &a,
        &b,
        "--wait",
    ]);
    let lines: Vec<serde_json::Value> = out
        .ok()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    for (line, (file, seq)) in lines.iter().zip([(&a, 1), (&b, 2)]) {
        assert_eq!(line["file"], file.as_str(), "{line}");
        assert_eq!(line["seq"], seq, "{line}");
        assert_eq!(line["job"]["state"], "succeeded", "{line}");
        assert_eq!(line["job"]["job_id"], line["job_id"], "{line}");
    }

    // A failing request: its error is the one line.
    let out = scheduler.ftab(&[
        "--output", "json", "tables", "describe", "nope", "-w", "prod",
    ]);
    out.fails_with(1);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{out:?}");
    let error: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(error["error"]["code"], "not_found", "{error}");
}

#[test]
fn a_corrupt_delta_log_is_internal_with_a_short_cause() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // delta-rs appends a backtrace to its errors when backtraces are on.
    let scheduler = SchedulerProcess::start_with_env(&data, &[("RUST_BACKTRACE", "1")]);
    setup(&scheduler, dir.path());
    let t = hours_ago(1);
    let file = write(
        dir.path(),
        "a.csv",
        &format!("{LOGINS_HEADER}u1,{t},1,10\n"),
    );
    scheduler
        .ftab(&[
            "ingest",
            "-w",
            "prod",
            "-t",
            "user_login_counts",
            &file,
            "--wait",
        ])
        .ok();
    let logs = ftab_e2e::find_files(&data, ".json")
        .into_iter()
        .filter(|p| {
            p.to_string_lossy().contains("user_login_counts")
                && p.to_string_lossy().contains("_delta_log")
        })
        .collect::<Vec<_>>();
    assert_eq!(logs.len(), 1, "{logs:?}");
    let mut log = std::fs::read_to_string(&logs[0]).unwrap();
    log.push_str("{\"add\": {\"path\": broken\n");
    std::fs::write(&logs[0], log).unwrap();

    let out = scheduler.ftab(&[
        "--output",
        "json",
        "tables",
        "describe",
        "user_login_counts",
        "-w",
        "prod",
    ]);
    out.fails_with(1);
    let error: serde_json::Value = serde_json::from_str(out.stdout.trim_end()).unwrap();
    assert_eq!(error["error"]["code"], "internal", "{error}");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("offline table") && message.contains("Json error"),
        "{message}"
    );
    assert!(!message.contains('\n'), "one line, no backtrace: {message}");
}
