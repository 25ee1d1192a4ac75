//! Identifiers of ingests and jobs: UUIDv7 (time-ordered) strings, validated on
//! construction so an unchecked string never reaches a storage path or a query.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Uuid);

        impl $name {
            /// A new, time-ordered identifier.
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn parse(value: &str) -> Result<Self, String> {
                Uuid::try_parse(value)
                    .map(Self)
                    .map_err(|_| format!("`{value}` is not a valid {} id (a UUID such as 0190f4b2-...)", $kind))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                Self::parse(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = String::deserialize(deserializer)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// One ingest: one dataframe pushed into one table.
    IngestId,
    "ingest"
);
id_type!(
    /// One job of the scheduler.
    JobId,
    "job"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_refuse_garbage() {
        let id = IngestId::generate();
        assert_eq!(IngestId::parse(&id.to_string()).unwrap(), id);
        let later = IngestId::generate();
        assert!(later > id, "time-ordered");
        let err = JobId::parse("../../etc").unwrap_err();
        assert!(err.contains("not a valid job id"), "{err}");
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<IngestId>(&json).unwrap(), id);
    }
}
