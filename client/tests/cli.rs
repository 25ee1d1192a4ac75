//! The `ftab` binary on its own: help, usage errors and exit codes, before any scheduler is
//! involved.

use std::process::Command;

fn ftab(args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ftab"))
        .args(args)
        .env_remove("FTAB_SERVER")
        .env_remove("FTAB_WORKSPACE")
        .output()
        .expect("run ftab");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn help_teaches_the_first_steps() {
    let (code, stdout, _) = ftab(&["--help"]);
    assert_eq!(code, Some(0));
    for text in [
        "workspace",
        "plan",
        "apply",
        "tables",
        "--output",
        "ftab workspace create prod --live",
    ] {
        assert!(stdout.contains(text), "--help lacks {text:?}:\n{stdout}");
    }
}

#[test]
fn usage_errors_exit_2_and_name_the_problem() {
    let (code, _, stderr) = ftab(&["plan", "--workspace", "a/b"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("`a/b` is not a valid workspace name"),
        "{stderr}"
    );

    let (code, _, stderr) = ftab(&["plan"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--workspace"), "{stderr}");

    let (code, _, stderr) = ftab(&["--server", "not a url", "workspace", "list"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("invalid server URL `not a url`"),
        "{stderr}"
    );

    // A URL of another scheme is a usage error too (it exited 3, "unreachable").
    let (code, _, stderr) = ftab(&["--server", "ftp://127.0.0.1:1", "workspace", "list"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid server URL `ftp://127.0.0.1:1`: the scheme must be http or https"),
        "{stderr}"
    );
}

#[test]
fn local_input_errors_come_before_connecting() {
    let dir = tempfile::tempdir().unwrap();
    // No scheduler is running on port 1: the repository error must still come first.
    let (code, _, stderr) = ftab(&[
        "--server",
        "http://127.0.0.1:1",
        "plan",
        dir.path().to_str().unwrap(),
        "-w",
        "prod",
    ]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("no *.toml files in"), "{stderr}");
}

#[test]
fn unreachable_scheduler_exits_3_json_too() {
    let (code, stdout, _) = ftab(&[
        "--server",
        "http://127.0.0.1:1",
        "--output",
        "json",
        "workspace",
        "list",
    ]);
    assert_eq!(code, Some(3));
    let error: serde_json::Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    assert_eq!(error["error"]["code"], "unreachable");
}
