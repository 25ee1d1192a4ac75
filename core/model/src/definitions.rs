//! Definitions: entities, feature tables and feature services, as declared in a feature
//! repository (TOML) and stored in the catalog (JSON). The same serde types serve both.
//!
//! Parsing checks each object on its own (names, types, ttl); [`Definitions::validate`]
//! checks them together (references, duplicates, join keys and timestamp field present).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::names::{ColumnName, EntityName, ServiceName, TableName};

/// The value types a feature table column can have.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ValueType {
    String,
    Int32,
    Int64,
    Float32,
    Float64,
    Bool,
    /// UTC microseconds.
    Timestamp,
    Date,
    Binary,
    /// A list of a scalar type, e.g. `list<float32>` for embeddings.
    List(Box<ValueType>),
}

/// The type names, as written in a feature repository.
pub const SCALAR_TYPE_NAMES: &[&str] = &[
    "string",
    "int32",
    "int64",
    "float32",
    "float64",
    "bool",
    "timestamp",
    "date",
    "binary",
];

impl ValueType {
    /// The Arrow type ftab stores this as. Timestamps are UTC microseconds.
    pub fn to_arrow(&self) -> DataType {
        match self {
            ValueType::String => DataType::Utf8,
            ValueType::Int32 => DataType::Int32,
            ValueType::Int64 => DataType::Int64,
            ValueType::Float32 => DataType::Float32,
            ValueType::Float64 => DataType::Float64,
            ValueType::Bool => DataType::Boolean,
            ValueType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ValueType::Date => DataType::Date32,
            ValueType::Binary => DataType::Binary,
            ValueType::List(item) => {
                DataType::List(Arc::new(Field::new("item", item.to_arrow(), true)))
            }
        }
    }

    /// Whether every value of `self` converts to `to` without loss (int32 -> int64,
    /// int32 -> float64, float32 -> float64, element-wise for lists).
    pub fn widens_to(&self, to: &ValueType) -> bool {
        use ValueType::*;
        match (self, to) {
            (a, b) if a == b => true,
            (Int32, Int64) | (Int32, Float64) | (Float32, Float64) => true,
            (List(a), List(b)) => a.widens_to(b),
            _ => false,
        }
    }

    /// Types a join key may have: they must compare exactly and hash stably.
    pub fn is_join_key_type(&self) -> bool {
        matches!(
            self,
            ValueType::String | ValueType::Int32 | ValueType::Int64
        )
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ValueType::String => "string",
            ValueType::Int32 => "int32",
            ValueType::Int64 => "int64",
            ValueType::Float32 => "float32",
            ValueType::Float64 => "float64",
            ValueType::Bool => "bool",
            ValueType::Timestamp => "timestamp",
            ValueType::Date => "date",
            ValueType::Binary => "binary",
            ValueType::List(item) => return write!(f, "list<{item}>"),
        };
        f.write_str(name)
    }
}

impl FromStr for ValueType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(inner) = s.strip_prefix("list<").and_then(|r| r.strip_suffix('>')) {
            let item: ValueType = inner.parse()?;
            if matches!(item, ValueType::List(_)) {
                return Err(format!(
                    "unsupported type `{s}`: lists of lists are not supported"
                ));
            }
            return Ok(ValueType::List(Box::new(item)));
        }
        Ok(match s {
            "string" => ValueType::String,
            "int32" => ValueType::Int32,
            "int64" => ValueType::Int64,
            "float32" => ValueType::Float32,
            "float64" => ValueType::Float64,
            "bool" => ValueType::Bool,
            "timestamp" => ValueType::Timestamp,
            "date" => ValueType::Date,
            "binary" => ValueType::Binary,
            other => {
                return Err(format!(
                    "unsupported type `{other}`; use one of {} or list<T> of these",
                    SCALAR_TYPE_NAMES.join(", ")
                ));
            }
        })
    }
}

impl Serialize for ValueType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ValueType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A table's time to live: rows older than now minus the ttl are not served online, and
/// as-of joins ignore rows older than the spine time minus the ttl.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ttl {
    seconds: u64,
}

impl Ttl {
    pub fn from_seconds(seconds: u64) -> Result<Self, String> {
        if seconds == 0 {
            return Err("ttl must be greater than zero; leave it out for no ttl".into());
        }
        if seconds > i64::MAX as u64 / 1_000_000 {
            return Err(format!("ttl of {seconds} seconds is too large"));
        }
        Ok(Self { seconds })
    }

    pub fn seconds(&self) -> u64 {
        self.seconds
    }

    pub fn micros(&self) -> i64 {
        // from_seconds bounds seconds so that this cannot overflow.
        self.seconds as i64 * 1_000_000
    }
}

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
            if self.seconds.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.seconds / size);
            }
        }
        write!(f, "{}s", self.seconds)
    }
}

impl FromStr for Ttl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid ttl `{s}`: write a whole number and a unit s, m, h or d, e.g. \"30d\" or \"12h\""
            )
        };
        let s_trim = s.trim();
        let split = s_trim.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (number, unit) = s_trim.split_at(split);
        let number: u64 = number.parse().map_err(|_| bad())?;
        let size = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            _ => return Err(bad()),
        };
        let seconds = number
            .checked_mul(size)
            .ok_or_else(|| format!("ttl `{s}` is too large"))?;
        Ttl::from_seconds(seconds)
    }
}

impl Serialize for Ttl {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ttl {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A named set of join keys, e.g. `user` = (`user_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entity {
    pub name: EntityName,
    pub join_keys: Vec<ColumnName>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// The repository file that declared it, for messages; not stored.
    #[serde(skip)]
    pub source: Option<String>,
}

/// One column of a feature table's schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    pub name: ColumnName,
    #[serde(rename = "type")]
    pub value_type: ValueType,
}

fn default_true() -> bool {
    true
}

/// A feature table: values computed elsewhere, keyed by entities and a timestamp.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureTable {
    pub name: TableName,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    pub entities: Vec<EntityName>,
    pub timestamp_field: ColumnName,
    /// Load the latest value per entity into the online store.
    #[serde(default)]
    pub online: bool,
    /// Keep every value in the offline store (for training sets).
    #[serde(default = "default_true")]
    pub offline: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Ttl>,
    pub schema: Vec<Column>,
    #[serde(skip)]
    pub source: Option<String>,
}

impl FeatureTable {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.schema.iter().find(|c| c.name.as_str() == name)
    }

    /// The join keys of the table, in entity order, resolved through `definitions`.
    /// Unknown entities are skipped (validation reports them).
    pub fn join_keys<'a>(&self, definitions: &'a Definitions) -> Vec<&'a ColumnName> {
        self.entities
            .iter()
            .filter_map(|e| definitions.entity(e.as_str()))
            .flat_map(|e| e.join_keys.iter())
            .collect()
    }

    /// The feature columns: the schema less join keys and the timestamp field.
    pub fn features<'s>(&'s self, definitions: &Definitions) -> Vec<&'s Column> {
        let keys: BTreeSet<&str> = self
            .join_keys(definitions)
            .into_iter()
            .map(|k| k.as_str())
            .collect();
        self.schema
            .iter()
            .filter(|c| c.name != self.timestamp_field && !keys.contains(c.name.as_str()))
            .collect()
    }

    /// The Arrow schema of the table as users send it: join keys and the timestamp are not
    /// nullable, features are.
    pub fn arrow_schema(&self, definitions: &Definitions) -> SchemaRef {
        let keys: BTreeSet<&str> = self
            .join_keys(definitions)
            .into_iter()
            .map(|k| k.as_str())
            .collect();
        let fields: Vec<Field> = self
            .schema
            .iter()
            .map(|c| {
                let required = c.name == self.timestamp_field || keys.contains(c.name.as_str());
                Field::new(c.name.as_str(), c.value_type.to_arrow(), !required)
            })
            .collect();
        Arc::new(Schema::new(fields))
    }
}

/// A reference to features in a feature service: `table` (all its features) or
/// `table.feature`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FeatureRef {
    pub table: TableName,
    pub feature: Option<ColumnName>,
}

impl fmt::Display for FeatureRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.feature {
            Some(feature) => write!(f, "{}.{feature}", self.table),
            None => write!(f, "{}", self.table),
        }
    }
}

impl FromStr for FeatureRef {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split('.');
        let (table, feature) = match (parts.next(), parts.next(), parts.next()) {
            (Some(table), None, _) => (table, None),
            (Some(table), Some(feature), None) => (table, Some(feature)),
            _ => {
                return Err(format!(
                    "invalid feature reference `{s}`: write `table` or `table.feature`"
                ));
            }
        };
        Ok(FeatureRef {
            table: TableName::new(table).map_err(|e| format!("in `{s}`: {e}"))?,
            feature: feature
                .map(ColumnName::new)
                .transpose()
                .map_err(|e| format!("in `{s}`: {e}"))?,
        })
    }
}

impl Serialize for FeatureRef {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FeatureRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A named selection of features from one or more tables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureService {
    pub name: ServiceName,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    pub features: Vec<FeatureRef>,
    #[serde(skip)]
    pub source: Option<String>,
}

/// Everything a workspace declares. In TOML the lists are `[[entity]]`, `[[feature_table]]`
/// and `[[feature_service]]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definitions {
    #[serde(default, rename = "entity", skip_serializing_if = "Vec::is_empty")]
    pub entities: Vec<Entity>,
    #[serde(
        default,
        rename = "feature_table",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub feature_tables: Vec<FeatureTable>,
    #[serde(
        default,
        rename = "feature_service",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub feature_services: Vec<FeatureService>,
}

/// One thing wrong with a set of definitions: where, which object, what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// The repository file, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The object, e.g. `feature_table user_login_counts`; empty for file-level problems.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub object: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{file}: ")?;
        }
        if !self.object.is_empty() {
            write!(f, "{}: ", self.object)?;
        }
        f.write_str(&self.message)
    }
}

impl Definitions {
    pub fn entity(&self, name: &str) -> Option<&Entity> {
        self.entities.iter().find(|e| e.name.as_str() == name)
    }

    pub fn feature_table(&self, name: &str) -> Option<&FeatureTable> {
        self.feature_tables.iter().find(|t| t.name.as_str() == name)
    }

    pub fn feature_service(&self, name: &str) -> Option<&FeatureService> {
        self.feature_services
            .iter()
            .find(|s| s.name.as_str() == name)
    }

    /// Add everything `other` declares (one repository file) to `self`.
    pub fn extend(&mut self, other: Definitions) {
        self.entities.extend(other.entities);
        self.feature_tables.extend(other.feature_tables);
        self.feature_services.extend(other.feature_services);
    }

    /// Sort every list by name, so that stored definitions and plans are deterministic.
    pub fn sort(&mut self) {
        self.entities.sort_by(|a, b| a.name.cmp(&b.name));
        self.feature_tables.sort_by(|a, b| a.name.cmp(&b.name));
        self.feature_services.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// Check the definitions together. Returns every problem found, not just the first.
    pub fn validate(&self) -> Result<(), Vec<Problem>> {
        let mut problems = Vec::new();
        let mut problem = |file: &Option<String>, object: String, message: String| {
            problems.push(Problem {
                file: file.clone(),
                object,
                message,
            })
        };

        let mut seen = BTreeMap::new();
        for e in &self.entities {
            let object = format!("entity {}", e.name);
            if let Some(first) = seen.insert(e.name.as_str(), &e.source) {
                problem(
                    &e.source,
                    object.clone(),
                    duplicate_message("entity", first),
                );
            }
            if e.join_keys.is_empty() {
                problem(
                    &e.source,
                    object.clone(),
                    "join_keys is empty; an entity needs at least one join key".into(),
                );
            }
            let mut keys = BTreeSet::new();
            for key in &e.join_keys {
                if !keys.insert(key) {
                    problem(
                        &e.source,
                        object.clone(),
                        format!("join key `{key}` is listed twice"),
                    );
                }
            }
        }

        let mut seen = BTreeMap::new();
        for t in &self.feature_tables {
            let object = format!("feature_table {}", t.name);
            if let Some(first) = seen.insert(t.name.as_str(), &t.source) {
                problem(
                    &t.source,
                    object.clone(),
                    duplicate_message("feature table", first),
                );
            }
            for message in self.table_problems(t) {
                problem(&t.source, object.clone(), message);
            }
        }

        let mut seen = BTreeMap::new();
        for s in &self.feature_services {
            let object = format!("feature_service {}", s.name);
            if let Some(first) = seen.insert(s.name.as_str(), &s.source) {
                problem(
                    &s.source,
                    object.clone(),
                    duplicate_message("feature service", first),
                );
            }
            for message in self.service_problems(s) {
                problem(&s.source, object.clone(), message);
            }
        }

        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    fn table_problems(&self, t: &FeatureTable) -> Vec<String> {
        let mut out = Vec::new();
        if t.schema.is_empty() {
            out.push("schema is empty".to_string());
        }
        let mut columns = BTreeSet::new();
        for c in &t.schema {
            if !columns.insert(c.name.as_str()) {
                out.push(format!("column `{}` appears twice in the schema", c.name));
            }
        }
        if !t.online && !t.offline {
            out.push(
                "online and offline are both false, so nothing would be stored; set at least one"
                    .into(),
            );
        }
        if t.entities.is_empty() {
            out.push("entities is empty; a feature table needs at least one entity".into());
        }
        let mut keys: BTreeMap<&str, &str> = BTreeMap::new();
        let mut entities = BTreeSet::new();
        for entity_name in &t.entities {
            if !entities.insert(entity_name) {
                out.push(format!("entity `{entity_name}` is listed twice"));
                continue;
            }
            let Some(entity) = self.entity(entity_name.as_str()) else {
                let known: BTreeSet<&str> = self.entities.iter().map(|e| e.name.as_str()).collect();
                let known: Vec<&str> = known.into_iter().collect();
                out.push(format!(
                    "unknown entity `{entity_name}`; declared entities: {}",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ));
                continue;
            };
            for key in &entity.join_keys {
                if let Some(other) = keys.insert(key.as_str(), entity.name.as_str()) {
                    out.push(format!(
                        "join key `{key}` comes from both entity `{other}` and entity `{}`",
                        entity.name
                    ));
                }
                match t.column(key.as_str()) {
                    None => out.push(format!(
                        "join key `{key}` of entity `{}` is missing from the schema",
                        entity.name
                    )),
                    Some(c) if !c.value_type.is_join_key_type() => out.push(format!(
                        "join key `{key}` has type {}; join keys must be string, int32 or int64",
                        c.value_type
                    )),
                    Some(_) => {}
                }
            }
        }
        match t.column(t.timestamp_field.as_str()) {
            None => out.push(format!(
                "timestamp_field `{}` is missing from the schema",
                t.timestamp_field
            )),
            Some(c) if c.value_type != ValueType::Timestamp => out.push(format!(
                "timestamp_field `{}` has type {}; it must be timestamp",
                t.timestamp_field, c.value_type
            )),
            Some(_) => {}
        }
        if keys.contains_key(t.timestamp_field.as_str()) {
            out.push(format!(
                "timestamp_field `{}` is also a join key",
                t.timestamp_field
            ));
        }
        if !t.schema.is_empty() && out.is_empty() && t.features(self).is_empty() {
            out.push(
                "the schema has no feature columns besides the join keys and the timestamp field"
                    .into(),
            );
        }
        out
    }

    fn service_problems(&self, s: &FeatureService) -> Vec<String> {
        let mut out = Vec::new();
        if s.features.is_empty() {
            out.push("features is empty".to_string());
        }
        let mut listed = BTreeSet::new();
        for r in &s.features {
            if !listed.insert(r) {
                out.push(format!("`{r}` is listed twice"));
                continue;
            }
            let Some(table) = self.feature_table(r.table.as_str()) else {
                out.push(format!("`{r}` names unknown feature table `{}`", r.table));
                continue;
            };
            if let Some(feature) = &r.feature {
                let features = table.features(self);
                if !features.iter().any(|c| &c.name == feature) {
                    let reason = if table.column(feature.as_str()).is_some() {
                        "it is a join key or the timestamp field, not a feature"
                    } else {
                        "the table has no such column"
                    };
                    out.push(format!("`{r}`: {reason}"));
                }
            }
        }
        let whole: BTreeSet<&TableName> = s
            .features
            .iter()
            .filter(|r| r.feature.is_none())
            .map(|r| &r.table)
            .collect();
        for r in &s.features {
            if r.feature.is_some() && whole.contains(&r.table) {
                out.push(format!(
                    "`{r}` is already included by `{}`, which selects every feature of the table",
                    r.table
                ));
            }
        }
        out
    }
}

fn duplicate_message(kind: &str, first: &Option<String>) -> String {
    match first {
        Some(file) => format!("this name is already used by another {kind} in {file}"),
        None => format!("this name is already used by another {kind}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_types_parse_and_print() {
        for name in SCALAR_TYPE_NAMES {
            let t: ValueType = name.parse().unwrap();
            assert_eq!(&t.to_string(), name);
        }
        let list: ValueType = "list<float32>".parse().unwrap();
        assert_eq!(list, ValueType::List(Box::new(ValueType::Float32)));
        assert_eq!(list.to_string(), "list<float32>");
        assert!(
            "list<list<int32>>"
                .parse::<ValueType>()
                .unwrap_err()
                .contains("lists of lists")
        );
        let err = "decimal".parse::<ValueType>().unwrap_err();
        assert!(err.contains("unsupported type `decimal`"), "{err}");
        assert!(err.contains("float64"), "{err}");
    }

    #[test]
    fn widening_is_lossless_only() {
        use ValueType::*;
        assert!(Int32.widens_to(&Int64));
        assert!(Int32.widens_to(&Float64));
        assert!(Float32.widens_to(&Float64));
        assert!(!Int64.widens_to(&Int32));
        assert!(!Int64.widens_to(&Float64));
        assert!(!Float64.widens_to(&Float32));
        assert!(!String.widens_to(&Binary));
        assert!(List(Box::new(Float32)).widens_to(&List(Box::new(Float64))));
        assert!(!List(Box::new(Float64)).widens_to(&List(Box::new(Float32))));
    }

    #[test]
    fn arrow_types() {
        assert_eq!(
            ValueType::Timestamp.to_arrow(),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert!(matches!(
            ValueType::List(Box::new(ValueType::Float32)).to_arrow(),
            DataType::List(f) if f.data_type() == &DataType::Float32
        ));
    }

    #[test]
    fn ttl_parses_units_and_prints_canonically() {
        let cases = [
            ("30d", 30 * 86_400, "30d"),
            ("12h", 12 * 3_600, "12h"),
            ("90m", 90 * 60, "90m"),
            ("48h", 48 * 3_600, "2d"),
            ("45s", 45, "45s"),
        ];
        for (input, seconds, printed) in cases {
            let ttl: Ttl = input.parse().unwrap();
            assert_eq!(ttl.seconds(), seconds, "{input}");
            assert_eq!(ttl.to_string(), printed, "{input}");
        }
        for bad in ["", "30", "d", "30w", "-1d", "1.5h", "30 d"] {
            let err = bad.parse::<Ttl>().unwrap_err();
            assert!(err.contains("unit s, m, h or d"), "{bad:?}: {err}");
        }
        assert!(
            "0d".parse::<Ttl>()
                .unwrap_err()
                .contains("greater than zero")
        );
        assert!("99999999999999999d".parse::<Ttl>().is_err());
    }

    #[test]
    fn feature_refs() {
        let r: FeatureRef = "user_login_counts.count_7d".parse().unwrap();
        assert_eq!(r.table.as_str(), "user_login_counts");
        assert_eq!(r.feature.as_ref().map(|f| f.as_str()), Some("count_7d"));
        let whole: FeatureRef = "user_login_counts".parse().unwrap();
        assert!(whole.feature.is_none());
        assert!("a.b.c".parse::<FeatureRef>().is_err());
        assert!(
            "a/b.c"
                .parse::<FeatureRef>()
                .unwrap_err()
                .contains("not a valid feature table name")
        );
        assert!(
            "../x.y"
                .parse::<FeatureRef>()
                .unwrap_err()
                .contains("write `table` or `table.feature`")
        );
    }
}
