//! The README's quickstart script, run twice on a fresh data directory: it must work the
//! first time (apply, ingest, online record, offline table, training set) and be safe to
//! run again.

use std::process::Command;

use ftab_e2e::{binary, repo_root};

fn run_quickstart(data_dir: &std::path::Path) -> (bool, String) {
    let bin_dir = binary("ftab").parent().unwrap().to_path_buf();
    let output = Command::new("bash")
        .arg(repo_root().join("examples/quickstart.sh"))
        .env("FTAB_BIN_DIR", bin_dir)
        .env("FTAB_DATA_DIR", data_dir)
        .env("FTAB_FLIGHT_ADDR", "127.0.0.1:0")
        .env("FTAB_HTTP_ADDR", "127.0.0.1:0")
        .env_remove("FTAB_SERVER")
        .env_remove("FTAB_KEEP_RUNNING")
        .output()
        .expect("run examples/quickstart.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn quickstart_applies_the_example_and_can_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");

    let (ok, out) = run_quickstart(&data_dir);
    assert!(ok, "quickstart failed:\n{out}");
    for text in [
        "$ ftab workspace create quickstart --live",
        "Applied to workspace quickstart: version 0 -> 1",
        "Feature table user_login_counts (workspace quickstart, live, version 1)",
        "rows received 81, in-ingest duplicates dropped 1, committed offline 80, written online 20",
        "$ ftab get --workspace quickstart --table user_login_counts --key user_id=user_1",
        "user_login_count_7d      99",
        "offline data:    80 rows in",
        "$ ftab training-set --workspace quickstart --service fraud_detection",
        "Wrote 4 rows to",
        "user_login_counts: Delta version",
        "==> done",
        "ftab-scheduler stopped",
    ] {
        assert!(
            out.contains(text),
            "quickstart output lacks {text:?}:\n{out}"
        );
    }
    assert!(
        data_dir.join("catalog.db").exists(),
        "the catalog is in the data directory"
    );

    let (ok, out) = run_quickstart(&data_dir);
    assert!(ok, "second quickstart failed:\n{out}");
    assert!(out.contains("exists from an earlier run"), "{out}");
    assert!(
        out.contains("No changes: workspace quickstart (live, version 1)"),
        "{out}"
    );
}
