//! The plan of an apply: what changes between a workspace's applied definitions and a
//! feature repository, and which of those changes would break stored data.
//!
//! A change breaks stored data when data already written under the old definition could no
//! longer be read as the new one: a feature table deleted, its join keys or timestamp field
//! changed, a column removed or its type changed other than by a lossless widening
//! ([`ValueType::widens_to`]). `apply` refuses such a plan unless forced; a forced apply
//! starts the table on fresh storage (docs/catalog.md).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::definitions::{Definitions, Entity, FeatureService, FeatureTable, ValueType};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    Entity,
    FeatureTable,
    FeatureService,
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ObjectKind::Entity => "entity",
            ObjectKind::FeatureTable => "feature_table",
            ObjectKind::FeatureService => "feature_service",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Create,
    Update,
    Delete,
}

/// One object created, updated or deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub kind: ChangeKind,
    pub object: ObjectKind,
    pub name: String,
    /// What changes, one line each, e.g. `ttl: 30d -> 7d` or `+ column amount (float64)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<String>,
    /// Why this change would break stored data; empty when it would not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub breaking: Vec<String>,
}

impl Change {
    pub fn is_breaking(&self) -> bool {
        !self.breaking.is_empty()
    }
}

/// Every change, entities first, then feature tables, then feature services, each by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub changes: Vec<Change>,
}

impl Plan {
    /// The plan that turns `old` into `new`. Both must be valid definitions.
    pub fn compute(old: &Definitions, new: &Definitions) -> Plan {
        let mut changes = Vec::new();
        diff_objects(
            &old.entities,
            &new.entities,
            |e| e.name.as_str(),
            ObjectKind::Entity,
            |o, n| (entity_details(o, n), Vec::new()),
            |_| Vec::new(),
            &mut changes,
        );
        diff_objects(
            &old.feature_tables,
            &new.feature_tables,
            |t| t.name.as_str(),
            ObjectKind::FeatureTable,
            |o, n| table_details(old, o, new, n),
            |t| {
                vec![format!(
                    "deleting feature table `{}` abandons its stored data",
                    t.name
                )]
            },
            &mut changes,
        );
        diff_objects(
            &old.feature_services,
            &new.feature_services,
            |s| s.name.as_str(),
            ObjectKind::FeatureService,
            |o, n| (service_details(o, n), Vec::new()),
            |_| Vec::new(),
            &mut changes,
        );
        Plan { changes }
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    pub fn breaking(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|c| c.is_breaking())
    }

    pub fn count(&self, kind: ChangeKind) -> usize {
        self.changes.iter().filter(|c| c.kind == kind).count()
    }

    /// Feature tables whose stored data this plan abandons (deleted, or changed in a
    /// breaking way).
    pub fn tables_losing_storage(&self) -> BTreeSet<&str> {
        self.changes
            .iter()
            .filter(|c| c.object == ObjectKind::FeatureTable && c.is_breaking())
            .map(|c| c.name.as_str())
            .collect()
    }
}

#[allow(clippy::too_many_arguments)]
fn diff_objects<T: PartialEq>(
    old: &[T],
    new: &[T],
    name: impl Fn(&T) -> &str,
    object: ObjectKind,
    compare: impl Fn(&T, &T) -> (Vec<String>, Vec<String>),
    on_delete: impl Fn(&T) -> Vec<String>,
    changes: &mut Vec<Change>,
) {
    let old_by_name: BTreeMap<&str, &T> = old.iter().map(|o| (name(o), o)).collect();
    let new_by_name: BTreeMap<&str, &T> = new.iter().map(|n| (name(n), n)).collect();
    let names: BTreeSet<&str> = old_by_name
        .keys()
        .chain(new_by_name.keys())
        .copied()
        .collect();
    for n in names {
        let change = match (old_by_name.get(n), new_by_name.get(n)) {
            (None, Some(_)) => Change {
                kind: ChangeKind::Create,
                object,
                name: n.to_string(),
                details: Vec::new(),
                breaking: Vec::new(),
            },
            (Some(o), None) => Change {
                kind: ChangeKind::Delete,
                object,
                name: n.to_string(),
                details: Vec::new(),
                breaking: on_delete(o),
            },
            (Some(o), Some(new_object)) => {
                let (details, breaking) = compare(o, new_object);
                if details.is_empty() && breaking.is_empty() {
                    continue;
                }
                Change {
                    kind: ChangeKind::Update,
                    object,
                    name: n.to_string(),
                    details,
                    breaking,
                }
            }
            (None, None) => continue,
        };
        changes.push(change);
    }
}

fn field_change<T: PartialEq + fmt::Debug>(out: &mut Vec<String>, field: &str, old: &T, new: &T) {
    if old != new {
        out.push(format!("{field}: {old:?} -> {new:?}"));
    }
}

fn entity_details(old: &Entity, new: &Entity) -> Vec<String> {
    let mut out = Vec::new();
    let keys = |e: &Entity| {
        e.join_keys
            .iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
    };
    field_change(&mut out, "join_keys", &keys(old), &keys(new));
    field_change(&mut out, "description", &old.description, &new.description);
    field_change(&mut out, "owner", &old.owner, &new.owner);
    field_change(&mut out, "tags", &old.tags, &new.tags);
    out
}

fn service_details(old: &FeatureService, new: &FeatureService) -> Vec<String> {
    let mut out = Vec::new();
    let old_features: BTreeSet<String> = old.features.iter().map(|f| f.to_string()).collect();
    let new_features: BTreeSet<String> = new.features.iter().map(|f| f.to_string()).collect();
    for f in new_features.difference(&old_features) {
        out.push(format!("+ feature {f}"));
    }
    for f in old_features.difference(&new_features) {
        out.push(format!("- feature {f}"));
    }
    field_change(&mut out, "description", &old.description, &new.description);
    field_change(&mut out, "owner", &old.owner, &new.owner);
    field_change(&mut out, "tags", &old.tags, &new.tags);
    out
}

fn table_details(
    old_defs: &Definitions,
    old: &FeatureTable,
    new_defs: &Definitions,
    new: &FeatureTable,
) -> (Vec<String>, Vec<String>) {
    let mut details = Vec::new();
    let mut breaking = Vec::new();

    let old_keys: BTreeSet<&str> = old
        .join_keys(old_defs)
        .into_iter()
        .map(|k| k.as_str())
        .collect();
    let new_keys: BTreeSet<&str> = new
        .join_keys(new_defs)
        .into_iter()
        .map(|k| k.as_str())
        .collect();
    if old_keys != new_keys {
        let line = format!("join keys: {old_keys:?} -> {new_keys:?}");
        breaking.push(format!(
            "changing the join keys ({line}) breaks the stored rows, which are keyed by the old ones"
        ));
        details.push(line);
    } else if old.entities != new.entities {
        let names = |t: &FeatureTable| t.entities.iter().map(|e| e.to_string()).collect::<Vec<_>>();
        details.push(format!("entities: {:?} -> {:?}", names(old), names(new)));
    }
    if old.timestamp_field != new.timestamp_field {
        let line = format!(
            "timestamp_field: {} -> {}",
            old.timestamp_field, new.timestamp_field
        );
        breaking.push(format!(
            "changing the timestamp field ({line}) breaks the stored rows' partitioning and order"
        ));
        details.push(line);
    }

    let old_columns: BTreeMap<&str, &ValueType> = old
        .schema
        .iter()
        .map(|c| (c.name.as_str(), &c.value_type))
        .collect();
    for column in &new.schema {
        let name = column.name.as_str();
        match old_columns.get(name) {
            None => details.push(format!("+ column {name} ({})", column.value_type)),
            Some(old_type) if **old_type != column.value_type => {
                let line = format!("~ column {name}: {old_type} -> {}", column.value_type);
                if !old_type.widens_to(&column.value_type) {
                    breaking.push(format!(
                        "changing column `{name}` from {old_type} to {} is not a lossless widening, so stored values would not read as the new type",
                        column.value_type
                    ));
                }
                details.push(line);
            }
            Some(_) => {}
        }
    }
    for column in &old.schema {
        let name = column.name.as_str();
        if new.column(name).is_none() {
            details.push(format!("- column {name} ({})", column.value_type));
            breaking.push(format!(
                "removing column `{name}` drops it from the stored data"
            ));
        }
    }

    let ttl = |t: &FeatureTable| {
        t.ttl
            .map(|t| t.to_string())
            .unwrap_or_else(|| "none".into())
    };
    if old.ttl != new.ttl {
        details.push(format!("ttl: {} -> {}", ttl(old), ttl(new)));
    }
    if old.online != new.online {
        details.push(format!("online: {} -> {}", old.online, new.online));
    }
    if old.offline != new.offline {
        details.push(format!("offline: {} -> {}", old.offline, new.offline));
    }
    field_change(
        &mut details,
        "description",
        &old.description,
        &new.description,
    );
    field_change(&mut details, "owner", &old.owner, &new.owner);
    field_change(&mut details, "tags", &old.tags, &new.tags);
    (details, breaking)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repository::{RepositoryFile, parse};

    const BASE: &str = r#"
[[entity]]
name = "user"
join_keys = ["user_id"]

[[entity]]
name = "merchant"
join_keys = ["merchant_id"]

[[feature_table]]
name = "t"
entities = ["user"]
timestamp_field = "ts"
ttl = "30d"
schema = [
  { name = "user_id", type = "string" },
  { name = "ts", type = "timestamp" },
  { name = "merchant_id", type = "string" },
  { name = "count", type = "int32" },
  { name = "score", type = "float64" },
]

[[feature_service]]
name = "s"
features = ["t.count"]
"#;

    fn defs(content: &str) -> Definitions {
        parse(&[RepositoryFile {
            path: "r.toml".into(),
            content: content.into(),
        }])
        .unwrap_or_else(|p| panic!("{p:#?}"))
    }

    fn plan(edit: impl Fn(&str) -> String) -> Plan {
        Plan::compute(&defs(BASE), &defs(&edit(BASE)))
    }

    #[test]
    fn no_change_is_an_empty_plan() {
        assert!(plan(|s| s.to_string()).is_empty());
    }

    #[test]
    fn from_nothing_everything_is_created() {
        let p = Plan::compute(&Definitions::default(), &defs(BASE));
        assert_eq!(p.count(ChangeKind::Create), 4);
        assert_eq!(p.breaking().count(), 0);
        let order: Vec<(ObjectKind, &str)> = p
            .changes
            .iter()
            .map(|c| (c.object, c.name.as_str()))
            .collect();
        assert_eq!(
            order,
            [
                (ObjectKind::Entity, "merchant"),
                (ObjectKind::Entity, "user"),
                (ObjectKind::FeatureTable, "t"),
                (ObjectKind::FeatureService, "s"),
            ]
        );
    }

    /// Each case: an edit of BASE, the detail line the change to `t` must show, and whether
    /// it breaks stored data (with text the reason must contain).
    #[test]
    fn table_changes_and_which_break_stored_data() {
        let cases: Vec<(&str, Box<dyn Fn(&str) -> String>, &str, Option<&str>)> = vec![
            (
                "add a column",
                Box::new(|s| {
                    s.replace(
                        "]\n\n[[feature_service]]",
                        "  { name = \"extra\", type = \"bool\" },\n]\n\n[[feature_service]]",
                    )
                }),
                "+ column extra (bool)",
                None,
            ),
            (
                "widen int32 to int64",
                Box::new(|s| {
                    s.replace("\"count\", type = \"int32\"", "\"count\", type = \"int64\"")
                }),
                "~ column count: int32 -> int64",
                None,
            ),
            (
                "narrow float64 to float32",
                Box::new(|s| {
                    s.replace(
                        "\"score\", type = \"float64\"",
                        "\"score\", type = \"float32\"",
                    )
                }),
                "~ column score: float64 -> float32",
                Some("not a lossless widening"),
            ),
            (
                "change int32 to string",
                Box::new(|s| {
                    s.replace(
                        "\"count\", type = \"int32\"",
                        "\"count\", type = \"string\"",
                    )
                }),
                "~ column count: int32 -> string",
                Some("changing column `count` from int32 to string"),
            ),
            (
                "remove a column",
                Box::new(|s| s.replace("  { name = \"score\", type = \"float64\" },\n", "")),
                "- column score (float64)",
                Some("removing column `score`"),
            ),
            (
                "change the timestamp field",
                Box::new(|s| {
                    s.replace("timestamp_field = \"ts\"", "timestamp_field = \"ts2\"")
                        .replace("{ name = \"ts\", type = \"timestamp\" },", "{ name = \"ts\", type = \"timestamp\" },\n  { name = \"ts2\", type = \"timestamp\" },")
                }),
                "timestamp_field: ts -> ts2",
                Some("changing the timestamp field"),
            ),
            (
                "add an entity to the table",
                Box::new(|s| {
                    s.replace(
                        "entities = [\"user\"]",
                        "entities = [\"user\", \"merchant\"]",
                    )
                }),
                "join keys: {\"user_id\"} -> {\"merchant_id\", \"user_id\"}",
                Some("changing the join keys"),
            ),
            (
                "change an entity's join keys",
                Box::new(|s| {
                    s.replace("join_keys = [\"user_id\"]", "join_keys = [\"merchant_id\"]")
                        .replace(
                            "\"user_id\", type = \"string\"",
                            "\"user_id\", type = \"int64\"",
                        )
                }),
                "join keys: {\"user_id\"} -> {\"merchant_id\"}",
                Some("changing the join keys"),
            ),
            (
                "change the ttl",
                Box::new(|s| s.replace("ttl = \"30d\"", "ttl = \"7d\"")),
                "ttl: 30d -> 7d",
                None,
            ),
            (
                "remove the ttl",
                Box::new(|s| s.replace("ttl = \"30d\"\n", "")),
                "ttl: 30d -> none",
                None,
            ),
            (
                "turn online on",
                Box::new(|s| s.replace("ttl = \"30d\"", "ttl = \"30d\"\nonline = true")),
                "online: false -> true",
                None,
            ),
            (
                "change the description",
                Box::new(|s| {
                    s.replace("ttl = \"30d\"", "ttl = \"30d\"\ndescription = \"Counts.\"")
                }),
                "description: \"\" -> \"Counts.\"",
                None,
            ),
        ];
        for (what, edit, detail, breaking) in cases {
            let p = plan(edit);
            let change = p
                .changes
                .iter()
                .find(|c| c.object == ObjectKind::FeatureTable && c.name == "t")
                .unwrap_or_else(|| panic!("{what}: no change to t in {p:#?}"));
            assert_eq!(change.kind, ChangeKind::Update, "{what}");
            assert!(
                change.details.iter().any(|d| d == detail),
                "{what}: expected detail {detail:?} in {:#?}",
                change.details
            );
            match breaking {
                None => assert!(!change.is_breaking(), "{what}: {:?}", change.breaking),
                Some(reason) => {
                    assert!(
                        change.breaking.iter().any(|b| b.contains(reason)),
                        "{what}: expected reason {reason:?} in {:?}",
                        change.breaking
                    );
                    assert!(p.tables_losing_storage().contains("t"), "{what}");
                }
            }
        }
    }

    #[test]
    fn deleting_a_table_breaks_and_deleting_a_service_does_not() {
        let without_service = |s: &str| s.split("[[feature_service]]").next().unwrap().to_string();
        let p = plan(without_service);
        assert_eq!(p.changes.len(), 1);
        assert_eq!(p.changes[0].kind, ChangeKind::Delete);
        assert!(!p.changes[0].is_breaking());

        let only_entities = |s: &str| s.split("[[feature_table]]").next().unwrap().to_string();
        let p = plan(only_entities);
        let table = p
            .changes
            .iter()
            .find(|c| c.object == ObjectKind::FeatureTable)
            .unwrap();
        assert_eq!(table.kind, ChangeKind::Delete);
        assert!(table.breaking[0].contains("deleting feature table `t`"));
    }

    #[test]
    fn service_feature_changes_are_listed() {
        let p = plan(|s| s.replace("features = [\"t.count\"]", "features = [\"t.score\"]"));
        assert_eq!(p.changes.len(), 1);
        assert_eq!(
            p.changes[0].details,
            ["+ feature t.score", "- feature t.count"]
        );
        assert!(!p.changes[0].is_breaking());
    }
}
