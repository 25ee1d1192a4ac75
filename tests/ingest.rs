//! End to end: `ftab ingest` of CSV and JSON lines files into a real scheduler, `--wait`,
//! `ftab get`, `ftab jobs`, refusals, cancel and retry, and a scheduler killed (SIGKILL) in
//! the middle of a job: after a restart the job finishes and every row is stored exactly once.

use ftab_e2e::{SchedulerProcess, find_files, hours_ago, poll_json, write};

fn describe(scheduler: &SchedulerProcess) -> serde_json::Value {
    scheduler
        .ftab(&[
            "--output",
            "json",
            "tables",
            "describe",
            "user_login_counts",
            "-w",
            "prod",
        ])
        .json()
}

#[test]
fn ingest_files_wait_get_and_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = SchedulerProcess::start(&dir.path().join("data"));
    scheduler.example_workspace();
    let (t1, t2) = (hours_ago(48), hours_ago(24));
    let csv = write(
        dir.path(),
        "logins.csv",
        &format!(
            "user_id,timestamp,user_login_count_7d,user_login_count_30d\nu1,{t1},1,10\nu2,{t1},2,20\nu1,{t1},3,30\n"
        ),
    );
    let jsonl = write(
        dir.path(),
        "logins.jsonl",
        &format!(
            "{{\"user_id\": \"u1\", \"timestamp\": \"{t2}\", \"user_login_count_7d\": 5, \"user_login_count_30d\": 50}}\n"
        ),
    );

    let out = scheduler.ftab(&[
        "ingest",
        "-w",
        "prod",
        "-t",
        "user_login_counts",
        &csv,
        &jsonl,
        "--wait",
    ]);
    let text = out.ok();
    assert!(
        text.contains("logins.csv: staged 3 rows as ingest"),
        "{text}"
    );
    assert!(
        text.contains("(seq 1)") && text.contains("(seq 2)"),
        "{text}"
    );
    assert!(
        text.contains("succeeded (attempt 1): offline_commit done, online_load done"),
        "{text}"
    );
    assert!(
        text.contains(
            "rows received 3, in-ingest duplicates dropped 1, committed offline 2, written online 2"
        ),
        "{text}"
    );

    let record = scheduler
        .ftab(&[
            "--output",
            "json",
            "get",
            "-w",
            "prod",
            "-t",
            "user_login_counts",
            "--key",
            "user_id=u1",
        ])
        .json();
    assert_eq!(record["found"], true, "{record}");
    assert_eq!(record["seq"], 2);
    assert_eq!(
        record["features"][0],
        serde_json::json!(["user_login_count_7d", 5])
    );
    let text = scheduler.ftab(&[
        "get",
        "-w",
        "prod",
        "-t",
        "user_login_counts",
        "-k",
        "user_id=nobody",
    ]);
    assert!(
        text.ok().contains("No online record for user_id=nobody"),
        "{}",
        text.stdout
    );
    let err = scheduler
        .ftab(&[
            "get",
            "-w",
            "prod",
            "-t",
            "user_login_counts",
            "-k",
            "userid=u1",
        ])
        .fails_with(1)
        .to_string();
    assert!(err.contains("`userid` is not a join key of feature table `user_login_counts`; its join keys are: user_id"), "{err}");

    let jobs = scheduler
        .ftab(&["--output", "json", "jobs", "list", "-w", "prod"])
        .json();
    let states: Vec<&str> = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["succeeded", "succeeded"]);
    let job_id = jobs["jobs"][0]["job_id"].as_str().unwrap().to_string();
    let shown = scheduler.ftab(&["jobs", "show", &job_id]);
    assert!(
        shown.ok().contains("committed offline 1"),
        "{}",
        shown.stdout
    );
    let err = scheduler
        .ftab(&["jobs", "cancel", &job_id])
        .fails_with(1)
        .to_string();
    assert!(err.contains("already succeeded"), "{err}");

    assert_eq!(describe(&scheduler)["offline"]["rows"], 3);

    // Refusals name the file and the problem, and store nothing.
    let bad = write(
        dir.path(),
        "bad.csv",
        &format!("user_id,timestamp,user_login_count_7d\nu9,{t1},1\n"),
    );
    let err = scheduler
        .ftab(&["ingest", "-w", "prod", "-t", "user_login_counts", &bad])
        .fails_with(1)
        .to_string();
    assert!(
        err.contains("bad.csv: missing column `user_login_count_30d`"),
        "{err}"
    );
    let err = scheduler
        .ftab(&[
            "ingest",
            "-w",
            "prod",
            "-t",
            "user_login_counts",
            "data.xlsx",
        ])
        .fails_with(1)
        .to_string();
    assert!(err.contains("cannot tell the format of data.xlsx"), "{err}");
    assert_eq!(describe(&scheduler)["offline"]["rows"], 3);
}

#[test]
fn a_scheduler_killed_mid_job_finishes_it_after_restart_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let t = hours_ago(5);
    let csv = write(
        dir.path(),
        "logins.csv",
        &format!(
            "user_id,timestamp,user_login_count_7d,user_login_count_30d\nu1,{t},1,10\nu2,{t},2,20\nu3,{t},3,30\n"
        ),
    );

    // The offline commit lands, then the scheduler dies before recording it.
    let scheduler =
        SchedulerProcess::start_with_env(&data_dir, &[("FTAB_FAILPOINT", "after_offline_commit")]);
    scheduler.example_workspace();
    let out = scheduler.ftab(&[
        "--output",
        "json",
        "ingest",
        "-w",
        "prod",
        "-t",
        "user_login_counts",
        &csv,
    ]);
    let job_id = out.json()["job_id"].as_str().unwrap().to_string();
    scheduler.wait_for_log("failpoint reached");

    // The runner is held at the failpoint, so a second ingest's job stays queued: cancel it,
    // then queue it again.
    let later = write(
        dir.path(),
        "later.csv",
        &format!("user_id,timestamp,user_login_count_7d,user_login_count_30d\nu4,{t},4,40\n"),
    );
    let out = scheduler.ftab(&[
        "--output",
        "json",
        "ingest",
        "-w",
        "prod",
        "-t",
        "user_login_counts",
        &later,
    ]);
    let queued = out.json()["job_id"].as_str().unwrap().to_string();
    let cancelled = scheduler.ftab(&["jobs", "cancel", &queued]);
    assert!(
        cancelled.ok().contains(&format!("Job {queued} cancelled.")),
        "{}",
        cancelled.stdout
    );
    let err = scheduler
        .ftab(&["jobs", "watch", &queued])
        .fails_with(1)
        .to_string();
    assert!(err.contains("was cancelled"), "{err}");
    let retried = scheduler.ftab(&["jobs", "retry", &queued]);
    assert!(retried.ok().contains("queued again"), "{}", retried.stdout);
    scheduler.kill();

    let restarted = SchedulerProcess::start(&data_dir);
    let job = poll_json(&restarted, &["jobs", "show", &job_id], |j| {
        j["state"] == "succeeded" || j["state"] == "failed"
    });
    assert_eq!(job["state"], "succeeded", "{job}");
    let other = poll_json(&restarted, &["jobs", "show", &queued], |j| {
        j["state"] == "succeeded" || j["state"] == "failed"
    });
    assert_eq!(other["state"], "succeeded", "{other}");
    assert_eq!(job["counts"]["offline_rows_committed"], 3, "{job}");
    assert_eq!(job["counts"]["online_rows_written"], 3, "{job}");
    assert!(
        restarted
            .log()
            .contains("already committed by an earlier attempt"),
        "{}",
        restarted.log()
    );
    let offline = describe(&restarted)["offline"].clone();
    assert_eq!(offline["rows"], 4, "each row exactly once: {offline}");
    assert_eq!(
        offline["delta_version"], 1,
        "one commit per ingest: {offline}"
    );
    let record = restarted
        .ftab(&[
            "--output",
            "json",
            "get",
            "-w",
            "prod",
            "-t",
            "user_login_counts",
            "-k",
            "user_id=u3",
        ])
        .json();
    assert_eq!(
        record["features"][0],
        serde_json::json!(["user_login_count_7d", 3])
    );
}

/// A file that cannot be read to its end stores nothing, and leaves its idempotency key
/// free: the CLI aborts the upload instead of ending it cleanly (which the scheduler would
/// take for a complete upload). Before, the first 65,536 rows were committed, the job
/// succeeded, and the corrected file was answered "already ingested".
#[test]
fn a_file_that_fails_half_way_stores_nothing_and_keeps_its_key_free() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let scheduler = SchedulerProcess::start(&data_dir);
    scheduler.example_workspace();
    let t = hours_ago(3);
    let lines = |bad: bool| {
        let mut text = String::from("user_id,timestamp,user_login_count_7d,user_login_count_30d\n");
        for i in 0..70_005u64 {
            // Line 70,001 of the file (the header is line 1).
            let count = if bad && i == 69_999 {
                "abc".to_string()
            } else {
                i.to_string()
            };
            text.push_str(&format!("u{i},{t},{count},{i}\n"));
        }
        text
    };
    let broken = write(dir.path(), "logins.csv", &lines(true));
    let ingest = |file: &str| {
        scheduler.ftab(&[
            "ingest",
            "-w",
            "prod",
            "-t",
            "user_login_counts",
            file,
            "--idempotency-key",
            "nightly-2026-11-30",
            "--wait",
        ])
    };
    let err = ingest(&broken).fails_with(1).to_string();
    assert!(err.contains("logins.csv") && err.contains("'abc'"), "{err}");
    assert!(err.contains("at line 70001 of the file"), "{err}");
    assert!(err.contains("nothing was stored"), "{err}");
    let jobs = scheduler
        .ftab(&["--output", "json", "jobs", "list", "-w", "prod"])
        .json();
    assert_eq!(
        jobs["jobs"],
        serde_json::json!([]),
        "no ingest recorded: {jobs}"
    );
    assert!(
        describe(&scheduler)["offline"]["rows"]
            .as_u64()
            .unwrap_or(0)
            == 0,
        "nothing offline"
    );
    assert_eq!(
        ftab_e2e::files_under(&data_dir.join("store/staging")),
        0,
        "nothing staged"
    );

    // The corrected file goes in whole under the same key.
    let fixed = write(dir.path(), "logins.csv", &lines(false));
    let text = ingest(&fixed).ok().to_string();
    assert!(text.contains("staged 70005 rows"), "{text}");
    assert_eq!(describe(&scheduler)["offline"]["rows"], 70_005);
    // A retry of it replays; other rows under the key are refused.
    let text = ingest(&fixed).ok().to_string();
    assert!(
        text.contains("already ingested (same idempotency key)"),
        "{text}"
    );
    let other = write(
        dir.path(),
        "other.csv",
        &format!("user_id,timestamp,user_login_count_7d,user_login_count_30d\nu1,{t},1,1\n"),
    );
    let err = ingest(&other).fails_with(1).to_string();
    assert!(
        err.contains("idempotency key `nightly-2026-11-30` was already used")
            && err.contains("with different data"),
        "{err}"
    );
    assert_eq!(describe(&scheduler)["offline"]["rows"], 70_005);
}

/// Kills leave partial files (`name#N`), uncommitted offline files, unrecorded uploads and
/// empty directories; a restart removes what no committed version, live ingest or spine
/// can use, and keeps the rest: the committed files, the recorded spine, and the staging
/// of the interrupted job, which still finishes with every row once.
#[test]
fn a_restart_cleans_what_crashes_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let store = data_dir.join("store");
    let table_dir = store.join("offline/prod/user_login_counts");
    let t = hours_ago(5);
    let logins = |name: &str, users: &[&str]| {
        let mut text = String::from("user_id,timestamp,user_login_count_7d,user_login_count_30d\n");
        for (i, user) in users.iter().enumerate() {
            text.push_str(&format!("{user},{t},{i},{i}\n"));
        }
        write(dir.path(), name, &text)
    };

    // A committed ingest, and a training set (which records its spine).
    let scheduler = SchedulerProcess::start(&data_dir);
    scheduler.example_workspace();
    let first = logins("first.csv", &["u1", "u2", "u3"]);
    scheduler
        .ftab(&[
            "ingest",
            "-w",
            "prod",
            "-t",
            "user_login_counts",
            &first,
            "--wait",
        ])
        .ok();
    let spine = write(
        dir.path(),
        "spine.csv",
        &format!("user_id,timestamp\nu1,{t}\n"),
    );
    let training_set = |scheduler: &SchedulerProcess, out: &std::path::Path| {
        scheduler
            .ftab(&[
                "training-set",
                "-w",
                "prod",
                "--features",
                "user_login_counts",
                "--spine",
                &spine,
                "--out",
                &out.to_string_lossy(),
            ])
            .ok()
            .to_string()
    };
    training_set(&scheduler, &dir.path().join("train.parquet"));
    let committed = find_files(&table_dir, ".parquet");
    let recorded_spines = find_files(&store.join("spines"), ".parquet");
    assert!(!committed.is_empty());
    assert_eq!(recorded_spines.len(), 1);
    assert!(scheduler.terminate());

    // The next ingest's first attempt writes its offline files and dies before committing.
    let scheduler =
        SchedulerProcess::start_with_env(&data_dir, &[("FTAB_FAILPOINT", "before_offline_commit")]);
    let second = logins("second.csv", &["u4", "u5", "u6"]);
    let out = scheduler.ftab(&[
        "--output",
        "json",
        "ingest",
        "-w",
        "prod",
        "-t",
        "user_login_counts",
        &second,
    ]);
    let job_id = out.json()["job_id"].as_str().unwrap().to_string();
    scheduler.wait_for_log("failpoint reached");
    let uncommitted: Vec<_> = find_files(&table_dir, ".parquet")
        .into_iter()
        .filter(|f| !committed.contains(f))
        .collect();
    assert!(!uncommitted.is_empty(), "the attempt wrote offline files");
    scheduler.kill();

    // What other crashes leave: partial writes, an upload no ingest was recorded for, a
    // spine upload no spine points at, empty directories.
    let staged = find_files(&store.join("staging"), ".parquet");
    let live_staging = staged[0].parent().unwrap().to_path_buf();
    std::fs::write(live_staging.join("part-00001.parquet#1"), b"partial").unwrap();
    std::fs::write(uncommitted[0].with_extension("parquet#2"), b"partial").unwrap();
    let unrecorded =
        store.join("staging/prod/user_login_counts/0192aaaa-0000-7000-8000-000000000000");
    std::fs::create_dir_all(&unrecorded).unwrap();
    std::fs::write(unrecorded.join("part-00000.parquet"), b"half an upload").unwrap();
    let ghost = store.join("spines/ghost/0192aaaa-0000-7000-8000-000000000001");
    std::fs::create_dir_all(&ghost).unwrap();
    std::fs::write(ghost.join("part-00000.parquet"), b"never recorded").unwrap();
    for i in 0..50 {
        std::fs::create_dir_all(store.join(format!("staging/prod/user_login_counts/empty-{i}")))
            .unwrap();
    }

    let restarted = SchedulerProcess::start(&data_dir);
    let job = poll_json(&restarted, &["jobs", "show", &job_id], |j| {
        j["state"] == "succeeded" || j["state"] == "failed"
    });
    assert_eq!(job["state"], "succeeded", "{job}");
    let offline = describe(&restarted)["offline"].clone();
    assert_eq!(offline["rows"], 6, "every row once: {offline}");
    assert!(
        restarted
            .log()
            .contains("removed what earlier runs left behind"),
        "{}",
        restarted.log()
    );
    // The committed files stay; the uncommitted ones and every partial file go.
    for file in &committed {
        assert!(file.exists(), "committed {} is kept", file.display());
    }
    for file in &uncommitted {
        assert!(!file.exists(), "uncommitted {} is gone", file.display());
    }
    let remaining = find_files(&table_dir, ".parquet");
    assert_eq!(
        remaining.len() as u64,
        offline["files"].as_u64().unwrap(),
        "only committed files: {remaining:?}"
    );
    assert!(find_files(&store, "#1").is_empty() && find_files(&store, "#2").is_empty());
    assert!(!unrecorded.exists() && !ghost.exists());
    assert_eq!(
        find_files(&store.join("spines"), ".parquet"),
        recorded_spines
    );
    assert!(
        !store
            .join("staging/prod/user_login_counts/empty-0")
            .exists()
    );
    // The training set still reads every committed row.
    let again = dir.path().join("again.parquet");
    training_set(&restarted, &again);
    let rows = ftab_e2e::read_parquet_rows(&again);
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0]["user_login_counts__user_login_count_7d"], "0",
        "{rows:?}"
    );
}

/// A Parquet file of user_login_counts rows `(user, hours ago, count_7d)`.
fn logins_parquet(path: &std::path::Path, rows: &[(&str, i64, i64)]) {
    use arrow::array::{Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use std::sync::Arc;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let schema = Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, true),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("user_login_count_7d", DataType::Int64, false),
        Field::new("user_login_count_30d", DataType::Int64, false),
    ]));
    // Whole hours, so equal "hours ago" are equal timestamps.
    let hour = |h: i64| (now / 3600 - h) * 3600 * 1_000_000;
    let batch = arrow::array::RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter(
                rows.iter().map(|r| (!r.0.is_empty()).then_some(r.0)),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| hour(r.1)))
                    .with_timezone("UTC"),
            ),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
            Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2 * 10))),
        ],
    )
    .unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

#[test]
fn files_are_ingested_in_place_by_uri() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let scheduler = SchedulerProcess::start(&data);
    scheduler.example_workspace();
    // `ftab ingest --uri` (with `--output json` when `json`).
    let ingest_uri = |json: bool, uri: &str, extra: &[&str]| {
        let mut args = if json {
            vec!["--output", "json"]
        } else {
            vec![]
        };
        args.extend([
            "ingest",
            "-w",
            "prod",
            "-t",
            "user_login_counts",
            "--uri",
            uri,
        ]);
        args.extend_from_slice(extra);
        scheduler.ftab(&args)
    };
    let by_uri = |uri: &str, extra: &[&str]| ingest_uri(true, uri, extra);
    // Refusals, as text on stderr.
    let refused =
        |uri: &str, extra: &[&str]| ingest_uri(false, uri, extra).fails_with(1).to_string();

    // Two Parquet files under a prefix, in name order: the second rewrites u1 at the same
    // time, and wins, as a later row of one upload would.
    let incoming = dir.path().join("incoming");
    logins_parquet(
        &incoming.join("a.parquet"),
        &[("u1", 30, 1), ("u2", 30, 2), ("u3", 29, 3)],
    );
    logins_parquet(
        &incoming.join("b.parquet"),
        &[("u1", 30, 100), ("u4", 28, 4)],
    );
    std::fs::write(incoming.join("README.txt"), "not data").unwrap();
    let uri = incoming.to_str().unwrap().to_string() + "/";
    let out = by_uri(&uri, &["--wait", "--idempotency-key", "day-1"]);
    let line = out.json();
    assert_eq!(line["rows"], 5, "{line}");
    assert_eq!(line["job"]["state"], "succeeded", "{line}");
    assert_eq!(line["job"]["counts"]["duplicates_dropped"], 1, "{line}");
    assert_eq!(line["job"]["counts"]["offline_rows_committed"], 4, "{line}");
    let got = scheduler.online("user_login_counts", "user_id=u1");
    assert_eq!(
        got["features"][0],
        serde_json::json!(["user_login_count_7d", 100]),
        "the later file wins: {got}"
    );
    // Staged data is gone once the job succeeded.
    assert!(find_files(&data.join("store/staging"), "parquet").is_empty());

    // The same key and the same files: the first ingest answers. Changed files: refused.
    let again = by_uri(&uri, &["--idempotency-key", "day-1"]).json();
    assert_eq!(again["ingest_id"], line["ingest_id"], "{again}");
    assert_eq!(again["replayed"], true, "{again}");
    logins_parquet(&incoming.join("b.parquet"), &[("u1", 30, 7)]);
    let err = refused(&uri, &["--idempotency-key", "day-1"]);
    assert!(
        err.contains("idempotency key `day-1` was already used") && err.contains("other files"),
        "{err}"
    );

    // A file with a null join key refuses the whole ingest, naming the file; nothing stays.
    let bad = dir.path().join("bad");
    logins_parquet(&bad.join("1.parquet"), &[("u5", 10, 5)]);
    logins_parquet(&bad.join("2.parquet"), &[("u6", 10, 6), ("", 9, 7)]);
    let err = refused(bad.to_str().unwrap(), &[]);
    assert!(
        err.contains("2.parquet")
            && err.contains("user_id")
            && err.contains("nothing was ingested"),
        "{err}"
    );
    assert!(
        find_files(&data.join("store/staging"), "parquet").is_empty(),
        "nothing staged"
    );

    // What the URI holds must be one format, and there must be something.
    std::fs::write(
        bad.join("3.csv"),
        "user_id,timestamp,user_login_count_7d,user_login_count_30d\n",
    )
    .unwrap();
    let err = refused(bad.to_str().unwrap(), &[]);
    assert!(
        err.contains("several formats (csv, parquet)") && err.contains("--format"),
        "{err}"
    );
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = refused(empty.to_str().unwrap(), &[]);
    assert!(
        err.contains("there are no Parquet, CSV or JSON files") && err.contains("at ingest URI"),
        "{err}"
    );
    let err = refused("relative/path/", &[]);
    assert!(err.contains("neither a URL"), "{err}");
    // A header-only CSV file holds no rows.
    let err = refused(bad.join("3.csv").to_str().unwrap(), &[]);
    assert!(err.contains("hold no rows"), "{err}");
}

/// Cancelling a job whose tasks are running stops them on the executor: the job ends
/// cancelled long before its (slowed) tasks would have, and nothing is committed.
#[test]
fn cancelling_a_running_job_stops_its_tasks() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Every write task waits 60 s before it reads its input.
    let scheduler =
        SchedulerProcess::start_with_env(&data, &[("FTAB_FAILPOINT", "slow_task:60000")]);
    scheduler.example_workspace();
    let file = write(
        dir.path(),
        "logins.csv",
        &format!(
            "user_id,timestamp,user_login_count_7d,user_login_count_30d\nu1,{},1,2\n",
            hours_ago(3)
        ),
    );
    let out = scheduler.ftab(&[
        "--output",
        "json",
        "ingest",
        "-w",
        "prod",
        "-t",
        "user_login_counts",
        &file,
    ]);
    let job_id = out.json()["job_id"].as_str().unwrap().to_string();
    scheduler.wait_for_log("failpoint slow_task");
    let started = std::time::Instant::now();
    scheduler.ftab(&["jobs", "cancel", &job_id]).ok();
    let job = poll_json(&scheduler, &["jobs", "show", &job_id], |j| {
        j["state"] != "running" && j["state"] != "queued"
    });
    assert_eq!(job["state"], "cancelled", "{job}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "the cancel waited for the tasks: {:?}",
        started.elapsed()
    );
    scheduler.wait_for_log("task cancelled");
    assert!(
        !scheduler.log().contains("found=false"),
        "a running task was not found to cancel:\n{}",
        scheduler.log()
    );
    assert!(
        find_files(&data.join("store/offline"), ".json").is_empty(),
        "nothing committed"
    );
}

/// Ingests of different tables run at the same time, up to `--max-jobs`; a table's next
/// ingest waits for its previous one; `ftab jobs list` shows both states.
#[test]
fn jobs_of_different_tables_run_at_once_and_a_tables_jobs_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Each write task takes 2 s, so the jobs overlap long enough to be seen.
    let scheduler = SchedulerProcess::start_with(
        &data,
        &["--max-jobs", "2", "--parallelism", "1"],
        &[("FTAB_FAILPOINT", "slow_task:2000")],
    );
    scheduler.example_workspace();
    let at = hours_ago(5);
    let logins = |n: i64| {
        write(
            dir.path(),
            &format!("logins-{n}.csv"),
            &format!(
                "user_id,timestamp,user_login_count_7d,user_login_count_30d\nu1,{at},{n},{n}\n"
            ),
        )
    };
    let stats = write(
        dir.path(),
        "stats.csv",
        &format!(
            "user_id,merchant_id,timestamp,transaction_count_7d,amount_mean_7d,amount_max_7d\nu1,m1,{at},1,2.5,3.0\n"
        ),
    );
    let job = |table: &str, file: &str| {
        scheduler
            .ftab(&[
                "--output", "json", "ingest", "-w", "prod", "-t", table, file,
            ])
            .json()["job_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let first = job("user_login_counts", &logins(1));
    let second = job("user_login_counts", &logins(2));
    let other = job("user_merchant_stats", &stats);
    let state = |listed: &serde_json::Value, id: &str| {
        listed["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["job_id"] == id)
            .map(|j| j["state"].as_str().unwrap().to_string())
            .unwrap()
    };
    let listed = poll_json(&scheduler, &["jobs", "list", "-w", "prod"], |l| {
        state(l, &first) == "running" && state(l, &other) == "running"
    });
    assert_eq!(
        state(&listed, &second),
        "queued",
        "the table's second ingest waits: {listed}"
    );
    let text = scheduler
        .ftab(&["jobs", "list", "-w", "prod"])
        .ok()
        .to_string();
    assert!(
        text.contains("running") && text.contains("queued"),
        "{text}"
    );
    for id in [&first, &second, &other] {
        let done = poll_json(&scheduler, &["jobs", "show", id], |j| {
            j["state"] == "succeeded" || j["state"] == "failed"
        });
        assert_eq!(done["state"], "succeeded", "{done}");
    }
    let got = scheduler.online("user_login_counts", "user_id=u1");
    assert_eq!(
        got["features"][0],
        serde_json::json!(["user_login_count_7d", 2]),
        "the later ingest wins: {got}"
    );
}
