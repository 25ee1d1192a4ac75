//! deploy/ stays valid: the Kubernetes manifests against the API schemas
//! (`kubernetes-validate --strict`, PyPI), the compose file against the compose
//! specification (`check-jsonschema`'s vendored schema), and every `FTAB_*` setting the
//! files name is one `ftab-scheduler` or `ftab-executor` reads. Each check is also shown to
//! fail on a broken copy. The Dockerfile is not built here (no Docker daemon in CI);
//! docs/deploy.md says what was checked and how.

use std::path::Path;
use std::process::Command;

use ftab_e2e::{binary, repo_root};

const HINT: &str = "run the tests with `scripts/test.sh`, which installs the validators (kubernetes-validate, check-jsonschema) with the Python test clients, or `pip install -r tests/python/requirements.txt`";

/// Run a validator on `file`; whether it accepted it, and what it said.
fn validate(program: &str, args: &[&str], file: &Path) -> (bool, String) {
    let output = Command::new(program)
        .args(args)
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}); {HINT}"));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), said)
}

/// A copy of `file` with `from` replaced by `to`, in a temporary directory.
fn broken_copy(dir: &Path, file: &Path, from: &str, to: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains(from), "{} has no `{from}`", file.display());
    let copy = dir.join(file.file_name().unwrap());
    std::fs::write(&copy, text.replacen(from, to, 1)).unwrap();
    copy
}

#[test]
fn kubernetes_manifests_are_valid() {
    let k8s = repo_root().join("deploy/k8s");
    let strict = ["--strict"];
    for name in [
        "config.yaml",
        "scheduler.yaml",
        "executor.yaml",
        "serving.yaml",
    ] {
        let (ok, said) = validate("kubernetes-validate", &strict, &k8s.join(name));
        assert!(ok, "{name}: {said}");
    }
    let dir = tempfile::tempdir().unwrap();
    let broken = broken_copy(
        dir.path(),
        &k8s.join("executor.yaml"),
        "replicas: 2",
        "replica: 2",
    );
    let (ok, said) = validate("kubernetes-validate", &strict, &broken);
    assert!(!ok && said.contains("'replica' was unexpected"), "{said}");
}

#[test]
fn the_compose_file_is_valid() {
    let compose = repo_root().join("deploy/compose.yaml");
    let schema = ["--builtin-schema", "vendor.compose-spec"];
    let (ok, said) = validate("check-jsonschema", &schema, &compose);
    assert!(ok, "{said}");
    let dir = tempfile::tempdir().unwrap();
    let broken = broken_copy(dir.path(), &compose, "image: ftab-scheduler:dev", "imag: x");
    let (ok, said) = validate("check-jsonschema", &schema, &broken);
    assert!(!ok && said.contains("'imag' was unexpected"), "{said}");
}

/// Every `FTAB_*` name in deploy/ is an environment variable a binary reads (clap lists
/// them in `--help`), so a renamed flag cannot leave the deployment files behind.
#[test]
fn deploy_files_name_only_settings_the_binaries_read() {
    let help = |name: &str| {
        let output = Command::new(binary(name)).arg("--help").output().unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    // clap wraps `[env: NAME]` across lines: one space for any whitespace.
    let known = format!(
        "{} {} {}",
        help("ftab-scheduler"),
        help("ftab-executor"),
        help("ftab-serving")
    )
    .split_whitespace()
    .collect::<Vec<_>>()
    .join(" ");
    let mut checked = 0;
    for file in ftab_e2e::find_files(&repo_root().join("deploy"), "") {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for (at, _) in text.match_indices("FTAB_") {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || *c == '_' || c.is_ascii_digit())
                .collect();
            assert!(
                known.contains(&format!("env: {name}]"))
                    || known.contains(&format!("env: {name}=")),
                "{} names {name}, which no binary reads",
                file.display()
            );
            checked += 1;
        }
    }
    assert!(checked > 10, "only {checked} settings found");
}
