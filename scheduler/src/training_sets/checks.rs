//! The pure checks of a training-set request: which features it selects, which spine
//! column is its time, whether the spine has the join keys, and the output column names.
//! Every refusal names the columns involved.

use std::collections::BTreeMap;

use datafusion::arrow::datatypes::{DataType, Schema};
use ftab_engine::validate::compatible;
use ftab_model::definitions::FeatureTable;
use ftab_model::protocol::TrainingSetRequest;

use crate::catalog::WorkspaceState;
use crate::error::{Error, Result};

pub(super) fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidArgument(message.into())
}

/// The spine's time column: the one named, or its only timestamp column.
pub(super) fn time_column(schema: &Schema, named: Option<&str>) -> Result<String> {
    if let Some(name) = named {
        let field = schema.field_with_name(name).map_err(|_| {
            invalid(format!(
                "the spine has no column `{name}` (timestamp_column); its columns are: {}",
                column_list(schema)
            ))
        })?;
        if !matches!(field.data_type(), DataType::Timestamp(_, _)) {
            return Err(invalid(format!(
                "the spine's time column `{name}` has type {}; it must be a timestamp",
                field.data_type()
            )));
        }
        return Ok(name.to_string());
    }
    let timestamps: Vec<&str> = schema
        .fields()
        .iter()
        .filter(|f| matches!(f.data_type(), DataType::Timestamp(_, _)))
        .map(|f| f.name().as_str())
        .collect();
    match timestamps.as_slice() {
        [only] => Ok(only.to_string()),
        [] => Err(invalid(format!(
            "the spine has no timestamp column; add one (its columns are: {})",
            column_list(schema)
        ))),
        many => Err(invalid(format!(
            "the spine has several timestamp columns ({}); name the time column with timestamp_column",
            many.iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn column_list(schema: &Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The tables of a request with their selected features, in the order first named.
pub(super) fn select_features<'a>(
    state: &'a WorkspaceState,
    request: &TrainingSetRequest,
) -> Result<Vec<(&'a FeatureTable, Vec<String>)>> {
    crate::selection::select_features(
        state,
        request.feature_service.as_ref().map(|s| s.as_str()),
        request.features.as_deref(),
        crate::selection::Need::Offline,
    )
}

/// Every join key the tables need must be a spine column of a compatible type.
pub(super) fn check_spine_keys(
    spine: &Schema,
    state: &WorkspaceState,
    selection: &[(&FeatureTable, Vec<String>)],
) -> Result<()> {
    let mut missing: Vec<String> = Vec::new();
    for (table, _) in selection {
        for key in table.join_keys(&state.definitions) {
            let Some(column) = table.column(key.as_str()) else {
                continue;
            };
            match spine.field_with_name(key.as_str()) {
                Err(_) => missing.push(format!("`{key}` (for feature table `{}`)", table.name)),
                Ok(field) if !compatible(field.data_type(), &column.value_type) => {
                    return Err(invalid(format!(
                        "spine column `{key}` has type {}, but join key `{key}` of feature table `{}` is {}",
                        field.data_type(),
                        table.name,
                        column.value_type
                    )));
                }
                Ok(_) => {}
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    missing.dedup();
    Err(invalid(format!(
        "the spine lacks join key column{} {}; its columns are: {}",
        if missing.len() == 1 { "" } else { "s" },
        missing.join(", "),
        column_list(spine)
    )))
}

/// Output column names per table: `<table>__<feature>`, or bare feature names on request;
/// any name used twice, or already a spine column, is an error.
pub(super) fn output_names(
    spine: &Schema,
    selection: &[(&FeatureTable, Vec<String>)],
    full: bool,
) -> Result<Vec<Vec<String>>> {
    let mut seen: BTreeMap<String, String> = spine
        .fields()
        .iter()
        .map(|f| (f.name().clone(), "the spine".to_string()))
        .collect();
    let mut out = Vec::new();
    let mut collisions = Vec::new();
    for (table, features) in selection {
        let mut names = Vec::new();
        for feature in features {
            let name = if full {
                format!("{}__{feature}", table.name)
            } else {
                feature.clone()
            };
            let owner = format!("feature table `{}`", table.name);
            if let Some(first) = seen.insert(name.clone(), owner.clone()) {
                collisions.push(format!("`{name}` ({first} and {owner})"));
            }
            names.push(name);
        }
        out.push(names);
    }
    if !collisions.is_empty() {
        return Err(invalid(format!(
            "output column names collide: {}; {}",
            collisions.join(", "),
            if full {
                "rename the spine columns"
            } else {
                "use full feature names (full_feature_names: true gives <table>__<feature>)"
            }
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Field, TimeUnit};

    fn schema(fields: &[(&str, DataType)]) -> Schema {
        Schema::new(
            fields
                .iter()
                .map(|(n, t)| Field::new(*n, t.clone(), true))
                .collect::<Vec<_>>(),
        )
    }

    #[test]
    fn the_time_column_is_named_or_the_only_timestamp() {
        let ts = DataType::Timestamp(TimeUnit::Nanosecond, None);
        let one = schema(&[("user_id", DataType::Utf8), ("at", ts.clone())]);
        assert_eq!(time_column(&one, None).unwrap(), "at");
        let two = schema(&[("a", ts.clone()), ("b", ts.clone())]);
        let err = time_column(&two, None).unwrap_err().to_string();
        assert!(
            err.contains("several timestamp columns (`a`, `b`)"),
            "{err}"
        );
        assert_eq!(time_column(&two, Some("b")).unwrap(), "b");
        let none = schema(&[("user_id", DataType::Utf8)]);
        let err = time_column(&none, None).unwrap_err().to_string();
        assert!(err.contains("no timestamp column"), "{err}");
        let err = time_column(&one, Some("user_id")).unwrap_err().to_string();
        assert!(
            err.contains("has type Utf8; it must be a timestamp"),
            "{err}"
        );
        let err = time_column(&one, Some("nope")).unwrap_err().to_string();
        assert!(
            err.contains("no column `nope`") && err.contains("user_id, at"),
            "{err}"
        );
    }
}
