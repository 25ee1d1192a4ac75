//! Feature repositories: a directory of `*.toml` files that together declare entities,
//! feature tables and feature services.
//!
//! The client reads the files ([`read_dir`]) and sends them as they are; the scheduler
//! parses and validates them ([`parse`]), so one parser decides and every error names the
//! file and object it is about.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::definitions::{Definitions, Problem};

/// One file of a feature repository, as sent to the scheduler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepositoryFile {
    /// Path relative to the repository directory, with `/` separators.
    pub path: String,
    pub content: String,
}

/// Largest repository file accepted. Definitions are small; a large file is a mistake
/// (a data file in the wrong directory).
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Why a repository directory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read feature repository {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is {size} bytes; feature repository files are limited to {MAX_FILE_BYTES} bytes"
    )]
    TooLarge { path: PathBuf, size: u64 },
    #[error("{path} is not valid UTF-8")]
    NotUtf8 { path: PathBuf },
    #[error(
        "no *.toml files in {path}; a feature repository is a directory of TOML files declaring [[entity]], [[feature_table]] and [[feature_service]]"
    )]
    Empty { path: PathBuf },
}

/// Read every `*.toml` file under `dir` (recursively, skipping hidden entries), sorted by
/// path.
pub fn read_dir(dir: &Path) -> Result<Vec<RepositoryFile>, ReadError> {
    let mut files = Vec::new();
    collect(dir, dir, &mut files)?;
    if files.is_empty() {
        return Err(ReadError::Empty {
            path: dir.to_path_buf(),
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<RepositoryFile>) -> Result<(), ReadError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReadError::Io { path, source }
    };
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let metadata = std::fs::metadata(&path).map_err(io(&path))?;
        if metadata.is_dir() {
            collect(root, &path, out)?;
        } else if path.extension().is_some_and(|e| e == "toml") {
            if metadata.len() > MAX_FILE_BYTES {
                return Err(ReadError::TooLarge {
                    path,
                    size: metadata.len(),
                });
            }
            let bytes = std::fs::read(&path).map_err(io(&path))?;
            let content =
                String::from_utf8(bytes).map_err(|_| ReadError::NotUtf8 { path: path.clone() })?;
            let relative = path.strip_prefix(root).unwrap_or(&path);
            let relative: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push(RepositoryFile {
                path: relative.join("/"),
                content,
            });
        }
    }
    Ok(())
}

/// Parse and validate the files of a repository into one set of definitions, sorted by
/// name. Every problem in every file is reported.
pub fn parse(files: &[RepositoryFile]) -> Result<Definitions, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut definitions = Definitions::default();
    if files.is_empty() {
        problems.push(Problem {
            file: None,
            object: String::new(),
            message: "the feature repository has no files".into(),
        });
    }
    for file in files {
        match toml::from_str::<Definitions>(&file.content) {
            Ok(mut parsed) => {
                let source = Some(file.path.clone());
                parsed
                    .entities
                    .iter_mut()
                    .for_each(|e| e.source = source.clone());
                parsed
                    .feature_tables
                    .iter_mut()
                    .for_each(|t| t.source = source.clone());
                parsed
                    .feature_services
                    .iter_mut()
                    .for_each(|s| s.source = source.clone());
                definitions.extend(parsed);
            }
            Err(error) => problems.push(Problem {
                file: Some(file.path.clone()),
                object: String::new(),
                message: describe_toml_error(&file.content, &error),
            }),
        }
    }
    if let Err(found) = definitions.validate() {
        problems.extend(found);
    }
    if problems.is_empty() {
        definitions.sort();
        Ok(definitions)
    } else {
        Err(problems)
    }
}

/// A TOML error as "line L: message", naming the `[[...]]` object it is in when there is
/// one.
fn describe_toml_error(content: &str, error: &toml::de::Error) -> String {
    let message = error.message().trim().to_string();
    let Some(span) = error.span() else {
        return message;
    };
    let before = &content[..span.start.min(content.len())];
    let line = before.matches('\n').count() + 1;
    let object = enclosing_object(before);
    match object {
        Some(object) => format!("line {line}, in {object}: {message}"),
        None => format!("line {line}: {message}"),
    }
}

/// The `[[kind]]` header and `name = "..."` of the object that `before` ends inside.
fn enclosing_object(before: &str) -> Option<String> {
    let mut kind = None;
    let mut name = None;
    for line in before.lines() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
            kind = Some(header.trim().to_string());
            name = None;
        } else if let Some(value) = line.strip_prefix("name")
            && let Some(value) = value.trim_start().strip_prefix('=')
            && name.is_none()
        {
            let value = value.trim().trim_matches('"');
            if !value.is_empty() {
                name = Some(value.to_string());
            }
        }
    }
    let kind = kind?;
    Some(match name {
        Some(name) => format!("{kind} {name}"),
        None => kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENTITIES: &str = r#"
[[entity]]
name = "user"
join_keys = ["user_id"]

[[entity]]
name = "merchant"
join_keys = ["merchant_id"]
"#;

    const TABLE: &str = r#"
[[feature_table]]
name = "user_login_counts"
entities = ["user"]
timestamp_field = "timestamp"
online = true
ttl = "30d"
schema = [
  { name = "user_id", type = "string" },
  { name = "timestamp", type = "timestamp" },
  { name = "user_login_count_7d", type = "int64" },
]
"#;

    fn files(list: &[(&str, &str)]) -> Vec<RepositoryFile> {
        list.iter()
            .map(|(path, content)| RepositoryFile {
                path: path.to_string(),
                content: content.to_string(),
            })
            .collect()
    }

    fn problems(list: &[(&str, &str)]) -> Vec<String> {
        parse(&files(list))
            .expect_err("expected the repository to be refused")
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    #[test]
    fn parses_a_valid_repository_across_files() {
        let defs = parse(&files(&[
            ("entities.toml", ENTITIES),
            ("tables/users.toml", TABLE),
        ]))
        .unwrap();
        assert_eq!(defs.entities.len(), 2);
        assert_eq!(defs.entities[0].name.as_str(), "merchant", "sorted by name");
        let table = defs.feature_table("user_login_counts").unwrap();
        assert!(table.online && table.offline);
        assert_eq!(table.ttl.unwrap().to_string(), "30d");
        assert_eq!(table.source.as_deref(), Some("tables/users.toml"));
        assert_eq!(
            table
                .features(&defs)
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>(),
            ["user_login_count_7d"]
        );
    }

    #[test]
    fn the_example_repository_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/feature_repo");
        let defs = parse(&read_dir(&dir).unwrap()).unwrap();
        assert!(defs.feature_table("user_login_counts").is_some());
        assert!(defs.feature_service("fraud_detection").is_some());
    }

    /// Each case: the repository (besides ENTITIES in entities.toml), and text every
    /// reported problem list must contain.
    #[test]
    fn refusals_name_file_object_and_reason() {
        let table = |schema: &str, extra: &str| {
            format!(
                "[[feature_table]]\nname = \"t\"\nentities = [\"user\"]\ntimestamp_field = \"ts\"\n{extra}\nschema = [{schema}]\n"
            )
        };
        let good_schema = r#"{ name = "user_id", type = "string" }, { name = "ts", type = "timestamp" }, { name = "f", type = "int64" }"#;
        let cases: Vec<(String, &str)> = vec![
            (
                table(good_schema, "").replace("[\"user\"]", "[\"customer\"]"),
                "t.toml: feature_table t: unknown entity `customer`; declared entities: merchant, user",
            ),
            (
                table(
                    r#"{ name = "ts", type = "timestamp" }, { name = "f", type = "int64" }"#,
                    "",
                ),
                "feature_table t: join key `user_id` of entity `user` is missing from the schema",
            ),
            (
                table(
                    r#"{ name = "user_id", type = "string" }, { name = "f", type = "int64" }"#,
                    "",
                ),
                "feature_table t: timestamp_field `ts` is missing from the schema",
            ),
            (
                table(
                    r#"{ name = "user_id", type = "string" }, { name = "ts", type = "int64" }, { name = "f", type = "int64" }"#,
                    "",
                ),
                "timestamp_field `ts` has type int64; it must be timestamp",
            ),
            (
                table(
                    r#"{ name = "user_id", type = "float64" }, { name = "ts", type = "timestamp" }, { name = "f", type = "int64" }"#,
                    "",
                ),
                "join key `user_id` has type float64",
            ),
            (
                table(
                    &format!("{good_schema}, {{ name = \"f\", type = \"int32\" }}"),
                    "",
                ),
                "column `f` appears twice",
            ),
            (
                table(&good_schema.replace("int64", "decimal"), ""),
                "t.toml: line 6, in feature_table t: unsupported type `decimal`",
            ),
            (
                table(good_schema, "").replace("name = \"t\"", "name = \"../x\""),
                "t.toml: line 2, in feature_table: `../x` is not a valid feature table name",
            ),
            (
                table(good_schema, "").replace("name = \"t\"", "name = \"a/b\""),
                "`a/b` is not a valid feature table name: it contains '/'",
            ),
            (
                table(&good_schema.replace("\"f\"", "\"_seq\""), ""),
                "`_seq` is not a valid column name: names starting with `_` are reserved",
            ),
            (table(good_schema, "ttl = \"30w\""), "invalid ttl `30w`"),
            (
                table(good_schema, "online = false\noffline = false"),
                "online and offline are both false",
            ),
            (
                table(
                    r#"{ name = "user_id", type = "string" }, { name = "ts", type = "timestamp" }"#,
                    "",
                ),
                "no feature columns",
            ),
            (
                table(good_schema, "colour = \"blue\""),
                "unknown field `colour`",
            ),
            (
                format!("{}\n{}", table(good_schema, ""), table(good_schema, "")),
                "feature_table t: this name is already used by another feature table in t.toml",
            ),
            (
                "[[entity]]\nname = \"user\"\njoin_keys = [\"id\"]\n".to_string(),
                "t.toml: entity user: this name is already used by another entity in entities.toml",
            ),
            (
                "[[entity]]\nname = \"device\"\njoin_keys = []\n".to_string(),
                "entity device: join_keys is empty",
            ),
            (
                format!(
                    "{}\n[[feature_service]]\nname = \"s\"\nfeatures = [\"nope\", \"t.missing\", \"t.user_id\"]\n",
                    table(good_schema, "")
                ),
                "feature_service s: `nope` names unknown feature table `nope`",
            ),
            (
                format!(
                    "{}\n[[feature_service]]\nname = \"s\"\nfeatures = [\"t.missing\"]\n",
                    table(good_schema, "")
                ),
                "`t.missing`: the table has no such column",
            ),
            (
                format!(
                    "{}\n[[feature_service]]\nname = \"s\"\nfeatures = [\"t.user_id\"]\n",
                    table(good_schema, "")
                ),
                "`t.user_id`: it is a join key or the timestamp field, not a feature",
            ),
            (
                format!(
                    "{}\n[[feature_service]]\nname = \"s\"\nfeatures = [\"t\", \"t.f\"]\n",
                    table(good_schema, "")
                ),
                "`t.f` is already included by `t`",
            ),
            (
                "[[feature_tabel]]\nname = \"t\"\n".to_string(),
                "unknown field `feature_tabel`",
            ),
            ("[[entity]\nname = \"x\"".to_string(), "t.toml: line 1"),
        ];
        for (content, expected) in cases {
            let found = problems(&[("entities.toml", ENTITIES), ("t.toml", &content)]);
            assert!(
                found.iter().any(|p| p.contains(expected)),
                "expected a problem containing {expected:?}\ngot: {found:#?}\nfor:\n{content}"
            );
        }
    }

    #[test]
    fn every_problem_is_reported_not_just_the_first() {
        let bad = r#"
[[feature_table]]
name = "a"
entities = ["nobody"]
timestamp_field = "ts"
schema = [{ name = "f", type = "int64" }]

[[feature_service]]
name = "s"
features = ["zzz"]
"#;
        let found = problems(&[("x.toml", bad)]);
        assert!(found.len() >= 3, "{found:#?}");
    }

    #[test]
    fn read_dir_skips_hidden_and_non_toml_and_refuses_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        std::fs::create_dir_all(dir.path().join(".git")).unwrap();
        std::fs::write(dir.path().join("sub/b.toml"), TABLE).unwrap();
        std::fs::write(dir.path().join("a.toml"), ENTITIES).unwrap();
        std::fs::write(dir.path().join("notes.md"), "# hi").unwrap();
        std::fs::write(dir.path().join(".git/x.toml"), "garbage").unwrap();
        let files = read_dir(dir.path()).unwrap();
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["a.toml", "sub/b.toml"]);
        assert!(parse(&files).is_ok());

        let empty = tempfile::tempdir().unwrap();
        let err = read_dir(empty.path()).unwrap_err().to_string();
        assert!(err.contains("no *.toml files"), "{err}");
        let err = read_dir(&empty.path().join("missing"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read feature repository"), "{err}");
    }
}
