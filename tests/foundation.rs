//! End to end: a real `ftab-scheduler` on a free loopback port, driven by the `ftab` CLI.
//! Workspaces, plan, apply of the example repository, describe, a breaking change refused
//! and then forced, persistence across a restart, and the errors a user meets first.

use ftab_e2e::{SchedulerProcess, copy_dir, ftab_with_server, repo_root};

/// `ftab --output json tables describe TABLE -w prod`.
fn describe_json(scheduler: &SchedulerProcess, table: &str) -> serde_json::Value {
    scheduler
        .ftab(&[
            "--output", "json", "tables", "describe", table, "-w", "prod",
        ])
        .json()
}

fn example_repo() -> String {
    repo_root()
        .join("examples/feature_repo")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn workspaces_plan_apply_describe_and_breaking_changes() {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = SchedulerProcess::start(&dir.path().join("data"));
    let repo = example_repo();

    // Workspaces.
    let out = scheduler.ftab(&["workspace", "create", "prod", "--live"]);
    assert_eq!(out.ok(), "Created live workspace prod.\n");
    scheduler.ftab(&["workspace", "create", "alice"]).ok();
    let err = scheduler
        .ftab(&["workspace", "create", "prod"])
        .fails_with(1)
        .to_string();
    assert!(err.contains("workspace `prod` already exists"), "{err}");
    let list = scheduler
        .ftab(&["--output", "json", "workspace", "list"])
        .json();
    let kinds: Vec<(&str, &str)> = list["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["name"].as_str().unwrap(), w["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds, [("alice", "dev"), ("prod", "live")]);

    // Plan shows everything to create.
    let plan = scheduler.ftab(&["plan", &repo, "--workspace", "prod"]);
    let text = plan.ok();
    assert!(
        text.contains("Plan for workspace prod (live, version 0):"),
        "{text}"
    );
    for line in [
        "+ entity merchant",
        "+ entity user",
        "+ feature_table user_login_counts",
        "+ feature_table user_merchant_stats",
        "+ feature_service fraud_detection",
        "5 to create, 0 to change, 0 to delete.",
    ] {
        assert!(text.contains(line), "plan lacks {line:?}:\n{text}");
    }

    // Apply needs a confirmation, which a closed stdin cannot give.
    let err = scheduler
        .ftab(&["apply", &repo, "--workspace", "prod"])
        .fails_with(1)
        .to_string();
    assert!(err.contains("pass --yes"), "{err}");
    let listed = scheduler
        .ftab(&["--output", "json", "tables", "list", "--workspace", "prod"])
        .json();
    assert_eq!(
        listed,
        serde_json::json!([]),
        "nothing applied without confirmation"
    );

    let applied = scheduler.ftab(&["apply", &repo, "--workspace", "prod", "--yes"]);
    assert!(
        applied.ok().contains(
            "Applied to workspace prod: version 0 -> 1 (5 created, 0 changed, 0 deleted)."
        ),
        "{}",
        applied.stdout
    );
    let again = scheduler.ftab(&["plan", &repo, "--workspace", "prod"]);
    assert!(
        again
            .ok()
            .starts_with("No changes: workspace prod (live, version 1)"),
        "{}",
        again.stdout
    );

    // Describe, as text and as JSON.
    let text = scheduler.ftab(&[
        "tables",
        "describe",
        "user_login_counts",
        "--workspace",
        "prod",
    ]);
    let text = text.ok();
    for line in [
        "Feature table user_login_counts (workspace prod, live, version 1)",
        "User login counts over time.",
        "join keys:       user_id",
        "ttl:             30d",
        "services:        fraud_detection",
        "user_login_count_7d   int64      feature",
        "/offline/prod/user_login_counts/g1/ (generation 1)",
    ] {
        assert!(text.contains(line), "describe lacks {line:?}:\n{text}");
    }
    let json = describe_json(&scheduler, "user_merchant_stats");
    assert_eq!(
        json["join_keys"],
        serde_json::json!(["user_id", "merchant_id"])
    );
    assert_eq!(json["table"]["ttl"], "90d");
    assert_eq!(json["generation"], 1);

    let tables = scheduler.ftab(&["tables", "list"]);
    assert!(
        tables.ok().contains("prod       user_merchant_stats"),
        "{}",
        tables.stdout
    );
    let err = scheduler
        .ftab(&["tables", "describe", "nope", "--workspace", "prod"])
        .fails_with(1)
        .to_string();
    assert!(
        err.contains("feature table `nope` does not exist in workspace `prod`; its tables are: user_login_counts, user_merchant_stats"),
        "{err}"
    );

    // A breaking change: narrow a column's type. Refused, with the reason, nothing applied.
    let edited = dir.path().join("edited_repo");
    copy_dir(&repo_root().join("examples/feature_repo"), &edited);
    let fraud = edited.join("fraud.toml");
    let content = std::fs::read_to_string(&fraud).unwrap();
    let narrowed = content.replace(
        "{ name = \"amount_max_7d\", type = \"float64\" }",
        "{ name = \"amount_max_7d\", type = \"float32\" }",
    );
    assert_ne!(
        content, narrowed,
        "the example has the column this test narrows"
    );
    std::fs::write(&fraud, narrowed).unwrap();
    let edited = edited.to_string_lossy().into_owned();
    let refused = scheduler.ftab(&["apply", &edited, "--workspace", "prod", "--yes"]);
    let err = refused.fails_with(1);
    assert!(
        err.contains("feature_table user_merchant_stats: changing column `amount_max_7d` from float64 to float32 is not a lossless widening"),
        "{err}"
    );
    assert!(err.contains("--force"), "{err}");
    assert!(
        refused.stdout.contains("! breaks stored data"),
        "the plan shown marks it: {}",
        refused.stdout
    );
    let json = describe_json(&scheduler, "user_merchant_stats");
    assert_eq!(json["version"], 1, "the refused apply changed nothing");

    // Forced: applied, and the table starts on fresh storage.
    let forced = scheduler.ftab(&["apply", &edited, "--workspace", "prod", "--yes", "--force"]);
    assert!(
        forced
            .ok()
            .contains("Feature table user_merchant_stats starts on fresh storage"),
        "{}",
        forced.stdout
    );
    let json = describe_json(&scheduler, "user_merchant_stats");
    assert_eq!(
        (json["version"].as_u64(), json["generation"].as_u64()),
        (Some(2), Some(2))
    );

    // SIGTERM stops it cleanly; a new process on the same data directory has it all.
    let data_dir = scheduler.data_dir.clone();
    assert!(scheduler.terminate(), "ftab-scheduler exits 0 on SIGTERM");
    let restarted = SchedulerProcess::start(&data_dir);
    let json = describe_json(&restarted, "user_merchant_stats");
    assert_eq!(json["version"], 2);
    let list = restarted.ftab(&["workspace", "list"]);
    assert!(list.ok().contains("prod   live  2"), "{}", list.stdout);
}

#[test]
fn invalid_repositories_are_refused_with_file_object_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = SchedulerProcess::start(&dir.path().join("data"));
    scheduler
        .ftab(&["workspace", "create", "prod", "--live"])
        .ok();

    let repo = dir.path().join("repo");
    copy_dir(&repo_root().join("examples/feature_repo"), &repo);
    let fraud = repo.join("fraud.toml");
    let content = std::fs::read_to_string(&fraud).unwrap();
    std::fs::write(
        &fraud,
        content.replace("entities = [\"user\"]", "entities = [\"customer\"]"),
    )
    .unwrap();
    let repo = repo.to_string_lossy().into_owned();

    let err = scheduler
        .ftab(&["plan", &repo, "--workspace", "prod"])
        .fails_with(1)
        .to_string();
    assert!(
        err.contains("fraud.toml: feature_table user_login_counts: unknown entity `customer`; declared entities: merchant, user"),
        "{err}"
    );
    let json = scheduler.ftab(&[
        "--output",
        "json",
        "apply",
        &repo,
        "--workspace",
        "prod",
        "--yes",
    ]);
    json.fails_with(1);
    assert_eq!(json.json()["error"]["code"], "invalid_argument");

    let err = scheduler
        .ftab(&["plan", "/nonexistent/repo", "--workspace", "prod"])
        .fails_with(1)
        .to_string();
    assert!(
        err.contains("cannot read feature repository /nonexistent/repo"),
        "{err}"
    );

    let err = scheduler
        .ftab(&["plan", &example_repo(), "--workspace", "staging"])
        .fails_with(1)
        .to_string();
    assert!(
        err.contains(
            "workspace `staging` does not exist; create it with `ftab workspace create staging`"
        ),
        "{err}"
    );
}

#[test]
fn an_unreachable_scheduler_is_explained() {
    // Port 1 on loopback: nothing listens there.
    let out = ftab_with_server("http://127.0.0.1:1", &["workspace", "list"]);
    let err = out.fails_with(3);
    assert!(
        err.contains("cannot reach the ftab scheduler at http://127.0.0.1:1"),
        "{err}"
    );
    assert!(err.contains("Start one with `ftab-scheduler`"), "{err}");
}

/// A reader that stops early (`ftab workspace list | head -1`) ends the CLI quietly:
/// success, nothing on standard error. It used to panic with "failed printing to stdout:
/// Broken pipe" and exit 101.
#[test]
fn a_closed_output_pipe_ends_the_cli_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let scheduler = SchedulerProcess::start(&dir.path().join("data"));
    for i in 0..5 {
        scheduler
            .ftab(&["workspace", "create", &format!("team_{i}")])
            .ok();
    }
    for args in [
        vec!["workspace", "list"],
        vec!["--output", "json", "workspace", "list"],
    ] {
        let mut child = std::process::Command::new(ftab_e2e::binary("ftab"))
            .arg("--server")
            .arg(&scheduler.url)
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run ftab");
        // The reader goes before anything is written.
        drop(child.stdout.take());
        let output = child.wait_with_output().expect("wait for ftab");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && stderr.is_empty(),
            "{args:?}: {:?}, stderr: {stderr}",
            output.status
        );
    }
}
