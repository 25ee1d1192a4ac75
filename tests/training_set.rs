//! End to end: `ftab training-set` against a real scheduler: a CSV spine uploaded and a
//! Parquet file written (read back here), pruning reported, `--as-of` pinning, a spine by
//! URI, refusals that leave no output file, and uploaded spines expiring.

use std::path::Path;

use ftab_e2e::{SchedulerProcess, hours_ago, read_parquet_rows, write};

fn setup(scheduler: &SchedulerProcess, dir: &Path) {
    scheduler.example_workspace();
    // u1..u3 at 72, 48 and 24 hours ago; each value is 10 * user + days ago. Three ingests,
    // one per day, so the offline table has a file per day and version 2 at the end.
    for days in [3, 2, 1] {
        let at = hours_ago(24 * days);
        let mut csv = "user_id,timestamp,user_login_count_7d,user_login_count_30d\n".to_string();
        for user in 1..=3 {
            csv.push_str(&format!(
                "u{user},{at},{},{}\n",
                10 * user + days,
                100 * user
            ));
        }
        let file = write(dir, &format!("logins-{days}.csv"), &csv);
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
    }
    let stats = format!(
        "user_id,merchant_id,timestamp,transaction_count_7d,amount_mean_7d,amount_max_7d\nu1,m1,{},5,12.5,40.0\n",
        hours_ago(40)
    );
    let file = write(dir, "stats.csv", &stats);
    scheduler
        .ftab(&[
            "ingest",
            "-w",
            "prod",
            "-t",
            "user_merchant_stats",
            &file,
            "--wait",
        ])
        .ok();
}

#[test]
fn training_sets_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = SchedulerProcess::start(&dir.path().join("data"));
    setup(&scheduler, dir.path());

    // A CSV spine: times between the second and third day.
    let t = hours_ago(36);
    let spine = write(
        dir.path(),
        "spine.csv",
        &format!("user_id,merchant_id,timestamp,label\nu1,m1,{t},1\nu2,m1,{t},0\nu9,m9,{t},0\n"),
    );
    let out = dir.path().join("train.parquet");
    let run = scheduler.ftab(&[
        "--output",
        "json",
        "training-set",
        "-w",
        "prod",
        "--service",
        "fraud_detection",
        "--spine",
        &spine,
        "--out",
        out.to_str().unwrap(),
    ]);
    let summary = run.json();
    assert_eq!(summary["rows"], 3, "{summary}");
    assert_eq!(summary["timestamp_column"], "timestamp");
    let logins = &summary["tables"][0];
    assert_eq!(logins["table"], "user_login_counts");
    assert_eq!(logins["delta_version"], 2);
    assert_eq!(logins["files_total"], 3);
    assert_eq!(
        logins["files_read"], 2,
        "the file of the last day is after every spine time: pruned ({summary})"
    );
    let rows = read_parquet_rows(&out);
    let mut by_user: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["user_id"].clone(),
                r["user_login_counts__user_login_count_7d"].clone(),
                r["user_merchant_stats__amount_mean_7d"].clone(),
            )
        })
        .collect();
    by_user.sort();
    assert_eq!(
        by_user,
        vec![
            ("u1".into(), "12".into(), "12.5".into()),
            ("u2".into(), "22".into(), "null".into()),
            ("u9".into(), "null".into(), "null".into()),
        ]
    );

    // Pinned to the first version, the same request sees only the first day's values.
    let pinned = dir.path().join("pinned.parquet");
    scheduler
        .ftab(&[
            "training-set",
            "-w",
            "prod",
            "--features",
            "user_login_counts.user_login_count_7d",
            "--spine",
            &spine,
            "--out",
            pinned.to_str().unwrap(),
            "--as-of",
            "user_login_counts=0",
            "--bare-names",
        ])
        .ok();
    let rows = read_parquet_rows(&pinned);
    let u1 = rows.iter().find(|r| r["user_id"] == "u1").unwrap();
    assert_eq!(
        u1["user_login_count_7d"], "13",
        "bare names, version 0: {u1:?}"
    );

    // A Parquet spine named by URI (the pinned output above): the scheduler reads it where
    // it is.
    let by_uri = dir.path().join("by_uri.parquet");
    let uri = format!("file://{}", pinned.display());
    let text = scheduler
        .ftab(&[
            "training-set",
            "-w",
            "prod",
            "--features",
            "user_merchant_stats.transaction_count_7d",
            "--spine",
            &uri,
            "--out",
            by_uri.to_str().unwrap(),
            "--timestamp-column",
            "timestamp",
        ])
        .ok()
        .to_string();
    assert!(text.contains("Wrote 3 rows"), "{text}");
    let rows = read_parquet_rows(&by_uri);
    let u1 = rows.iter().find(|r| r["user_id"] == "u1").unwrap();
    assert_eq!(u1["user_merchant_stats__transaction_count_7d"], "5");
    assert_eq!(u1["label"], "1", "spine columns are kept");
    assert_eq!(u1["user_login_count_7d"], "13", "spine columns are kept");

    // A spine column named like an output column is refused rather than shadowed.
    let err = scheduler
        .ftab(&[
            "training-set",
            "-w",
            "prod",
            "--features",
            "user_merchant_stats.transaction_count_7d",
            "--spine",
            &format!("file://{}", by_uri.display()),
            "--out",
            dir.path().join("again.parquet").to_str().unwrap(),
        ])
        .fails_with(1)
        .to_string();
    assert!(err.contains("output column names collide"), "{err}");

    // Refusals say what is wrong and write nothing.
    let no_keys = write(
        dir.path(),
        "no_keys.csv",
        &format!("user_id,timestamp\nu1,{t}\n"),
    );
    let refused = dir.path().join("refused.parquet");
    let err = scheduler
        .ftab(&[
            "training-set",
            "-w",
            "prod",
            "--service",
            "fraud_detection",
            "--spine",
            &no_keys,
            "--out",
            refused.to_str().unwrap(),
        ])
        .fails_with(1)
        .to_string();
    assert!(
        err.contains("the spine lacks join key column `merchant_id`"),
        "{err}"
    );
    assert!(!refused.exists(), "no output file after a refusal");
    assert!(
        !dir.path().join("refused.parquet.partial").exists(),
        "no partial file either"
    );
    let err = scheduler
        .ftab(&[
            "training-set",
            "-w",
            "prod",
            "--service",
            "fraud_detection",
            "--spine",
            "/no/such/spine.csv",
            "--out",
            refused.to_str().unwrap(),
        ])
        .fails_with(1)
        .to_string();
    assert!(
        err.contains("/no/such/spine.csv: the spine file does not exist"),
        "{err}"
    );
}

#[test]
fn uploaded_spines_expire() {
    let dir = tempfile::tempdir().unwrap();
    let scheduler =
        SchedulerProcess::start_with_env(&dir.path().join("data"), &[("FTAB_SPINE_TTL", "2s")]);
    setup(&scheduler, dir.path());
    let spine = write(
        dir.path(),
        "spine.csv",
        &format!("user_id,timestamp\nu1,{}\n", hours_ago(1)),
    );
    let out = dir.path().join("a.parquet");
    let summary = scheduler
        .ftab(&[
            "--output",
            "json",
            "training-set",
            "-w",
            "prod",
            "--features",
            "user_login_counts",
            "--spine",
            &spine,
            "--out",
            out.to_str().unwrap(),
        ])
        .json();
    assert_eq!(summary["rows"], 1);
    let spines = dir.path().join("data/store/spines");
    assert!(ftab_e2e::files_under(&spines) > 0, "the spine is stored");
    // The sweeper runs at least every half ttl: the expired spine's files go.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while ftab_e2e::files_under(&spines) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "expired spine files are still there; log:\n{}",
            scheduler.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
