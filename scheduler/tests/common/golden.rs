//! Running a folder of golden cases: every `*.toml` but `repo.toml`, all at once against
//! one scheduler, each named after its file; the test fails once, listing every case that
//! does not hold with its description and what differed.

use std::future::Future;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A golden case: data, and the one sentence saying which rule it shows.
pub trait GoldenCase: DeserializeOwned {
    fn description(&self) -> &str;
}

/// Run every case of `dir` with `run(name, case)`; `Err` says how a case failed. At least
/// `at_least` cases must be there (so a moved folder does not pass empty).
pub async fn run_all<C, F, Fut>(dir: &Path, at_least: usize, what: &str, run: F)
where
    C: GoldenCase,
    F: Fn(String, C) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "toml")
                && p.file_name().is_some_and(|n| n != "repo.toml")
        })
        .collect();
    paths.sort();
    assert!(
        paths.len() >= at_least,
        "{}: {} cases, expected at least {at_least}",
        dir.display(),
        paths.len()
    );
    let runs = paths.iter().map(|path| {
        let run = &run;
        async move {
            let name = path.file_stem().unwrap().to_string_lossy().to_string();
            let text = std::fs::read_to_string(path).unwrap();
            let case: C =
                toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let description = case.description().to_string();
            let result = run(name.clone(), case).await;
            (name, description, result)
        }
    });
    let results = futures::future::join_all(runs).await;
    let failures: Vec<String> = results
        .iter()
        .filter_map(|(name, description, result)| {
            result
                .as_ref()
                .err()
                .map(|e| format!("{name} ({description}):\n  {e}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} {what} cases failed:\n\n{}",
        failures.len(),
        results.len(),
        failures.join("\n\n")
    );
}
