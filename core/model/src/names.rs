//! Validated names.
//!
//! Names of workspaces, entities, feature tables and feature services become object-store
//! paths, SQLite keys and Aerospike set names, so they are checked once, on construction, and
//! an unchecked string can never reach storage. Column names (join keys, the timestamp field,
//! features) become Parquet column names and Arrow field names.
//!
//! The rules (docs/naming.md):
//! - object names: lowercase ASCII letters, digits and `_`, starting with a letter, at most
//!   63 bytes, no `__` (it separates table and feature in training-set column names);
//! - column names: ASCII letters, digits and `_`, starting with a letter, at most 63 bytes,
//!   no `__`. Names starting with `_` are reserved for ftab's own columns (`_seq`, `_row`,
//!   `_ingested_at`).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest name accepted: Aerospike set names are at most 63 bytes.
pub const MAX_NAME_LEN: usize = 63;

/// Why a string is not a valid name. The message completes "`x` is not a valid ... name: ".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {kind} name: {reason}")]
pub struct NameError {
    pub kind: &'static str,
    /// The name as given, cut to [`ECHOED_CHARS`] characters: messages do not echo what
    /// a client sent in full (a 100 KB name once made a reply larger than gRPC's metadata
    /// limit, and the client saw RESOURCE_EXHAUSTED instead of the reason).
    pub value: String,
    pub reason: String,
}

/// How much of a refused name a message echoes.
pub const ECHOED_CHARS: usize = 80;

/// `value`, cut to [`ECHOED_CHARS`] characters with its length said when cut: what a
/// message echoes of a string a client sent.
pub fn echoed(value: &str) -> String {
    echoed_to(value, ECHOED_CHARS)
}

/// `value`, cut to `max` characters with its length said when cut (for longer free text,
/// such as a client's reason for aborting an upload).
pub fn echoed_to(value: &str, max: usize) -> String {
    let count = value.chars().count();
    if count <= max {
        return value.to_string();
    }
    let head: String = value.chars().take(max).collect();
    format!("{head}... ({count} characters)")
}

fn check(kind: &'static str, value: &str, lowercase_only: bool) -> Result<(), NameError> {
    let fail = |reason: String| {
        Err(NameError {
            kind,
            value: echoed(value),
            reason,
        })
    };
    let Some(first) = value.chars().next() else {
        return fail("it is empty".into());
    };
    if value.len() > MAX_NAME_LEN {
        return fail(format!(
            "it is {} bytes long; the limit is {MAX_NAME_LEN}",
            value.len()
        ));
    }
    if first == '_' {
        return fail("names starting with `_` are reserved for ftab's own columns".into());
    }
    if !first.is_ascii_alphabetic() {
        return fail("it must start with a letter".into());
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
    {
        return fail(format!(
            "it contains {bad:?}; use only letters, digits and `_`"
        ));
    }
    if lowercase_only && value.chars().any(|c| c.is_ascii_uppercase()) {
        return fail("it contains uppercase letters; use lowercase (names become storage paths, and some filesystems ignore case)".into());
    }
    if value.contains("__") {
        return fail(
            "it contains `__`, which separates table and feature in training-set columns".into(),
        );
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $lowercase:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// What this kind of name is called in messages.
            pub const KIND: &'static str = $kind;

            /// Validate `value` as a name of this kind.
            pub fn new(value: impl Into<String>) -> Result<Self, NameError> {
                let value = value.into();
                check($kind, &value, $lowercase)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = String::deserialize(deserializer)?;
                Self::new(value).map_err(serde::de::Error::custom)
            }
        }
    };
}

name_type!(
    /// A workspace: a namespace of definitions, `live` or `dev`.
    WorkspaceName,
    "workspace",
    true
);
name_type!(
    /// An entity: a named set of join keys.
    EntityName,
    "entity",
    true
);
name_type!(
    /// A feature table.
    TableName,
    "feature table",
    true
);
name_type!(
    /// A feature service.
    ServiceName,
    "feature service",
    true
);
name_type!(
    /// An uploaded spine: the entity keys and times a training set is asked for.
    SpineName,
    "spine",
    true
);
name_type!(
    /// A column of a feature table: a join key, the timestamp field or a feature.
    ColumnName,
    "column",
    false
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_identifiers() {
        for ok in ["user", "user_login_counts", "t1", "a_b_c"] {
            assert!(TableName::new(ok).is_ok(), "{ok}");
        }
        assert!(ColumnName::new("userId").is_ok());
        assert_eq!(WorkspaceName::new("prod").unwrap().to_string(), "prod");
    }

    #[test]
    fn refuses_paths_and_oddities_with_the_reason() {
        let cases = [
            ("", "empty"),
            ("../x", "must start with a letter"),
            ("a/b", "contains '/'"),
            ("a.b", "contains '.'"),
            ("a b", "contains ' '"),
            ("Users", "uppercase"),
            ("_seq", "reserved"),
            ("1abc", "must start with a letter"),
            ("a__b", "`__`"),
            ("é", "must start with a letter"),
        ];
        for (value, reason) in cases {
            let err = TableName::new(value).unwrap_err();
            assert!(
                err.to_string().contains(reason),
                "{value:?}: {err} should mention {reason:?}"
            );
            assert!(err.to_string().contains("feature table name"));
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        assert!(
            TableName::new(long)
                .unwrap_err()
                .reason
                .contains("limit is 63")
        );
        assert!(TableName::new("a".repeat(MAX_NAME_LEN)).is_ok());
    }

    #[test]
    fn column_names_allow_uppercase_but_not_reserved_prefix() {
        assert!(ColumnName::new("Amount").is_ok());
        assert!(ColumnName::new("_row").is_err());
    }

    #[test]
    fn deserialize_validates() {
        let ok: WorkspaceName = serde_json::from_str("\"prod\"").unwrap();
        assert_eq!(ok.as_str(), "prod");
        let err = serde_json::from_str::<WorkspaceName>("\"../etc\"").unwrap_err();
        assert!(err.to_string().contains("not a valid workspace name"));
    }
}
