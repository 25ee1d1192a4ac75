//! Text rendering of the scheduler's answers for people. (`--output json` prints the
//! answers as they come instead.)

use std::fmt::Write;

use ftab_core::diff::{Change, ChangeKind, Plan};
use ftab_core::protocol::{
    ApplyResponse, ListWorkspacesResponse, PlanResponse, TableDescription, TableListing,
};

/// Align rows into columns under a header, two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<width$}  ", width = widths[i]);
            }
        }
        out.push('\n');
    }
    out
}

fn change_line(out: &mut String, change: &Change) {
    let sign = match change.kind {
        ChangeKind::Create => '+',
        ChangeKind::Update => '~',
        ChangeKind::Delete => '-',
    };
    let _ = writeln!(out, "  {sign} {} {}", change.object, change.name);
    for detail in &change.details {
        let _ = writeln!(out, "      {detail}");
    }
    for reason in &change.breaking {
        let _ = writeln!(out, "      ! breaks stored data: {reason}");
    }
}

/// The changes of a plan and a summary line.
pub fn plan_changes(plan: &Plan) -> String {
    let mut out = String::new();
    for change in &plan.changes {
        change_line(&mut out, change);
    }
    let _ = write!(
        out,
        "\n{} to create, {} to change, {} to delete.",
        plan.count(ChangeKind::Create),
        plan.count(ChangeKind::Update),
        plan.count(ChangeKind::Delete)
    );
    let breaking = plan.breaking().count();
    if breaking > 0 {
        let _ = write!(
            out,
            " {breaking} would break stored data: apply refuses {} without --force.",
            if breaking == 1 { "it" } else { "them" }
        );
    }
    out.push('\n');
    out
}

pub fn plan(response: &PlanResponse) -> String {
    if response.plan.is_empty() {
        return format!(
            "No changes: workspace {} ({}, version {}) already matches the feature repository.\n",
            response.workspace,
            response.kind.as_str(),
            response.current_version
        );
    }
    format!(
        "Plan for workspace {} ({}, version {}):\n{}",
        response.workspace,
        response.kind.as_str(),
        response.current_version,
        plan_changes(&response.plan)
    )
}

pub fn apply(response: &ApplyResponse) -> String {
    if response.plan.is_empty() {
        return format!(
            "No changes: workspace {} stays at version {}.\n",
            response.workspace, response.version
        );
    }
    let mut out = format!(
        "Applied to workspace {}: version {} -> {} ({} created, {} changed, {} deleted).\n",
        response.workspace,
        response.previous_version,
        response.version,
        response.plan.count(ChangeKind::Create),
        response.plan.count(ChangeKind::Update),
        response.plan.count(ChangeKind::Delete),
    );
    for table in &response.retired_storage {
        let _ = writeln!(
            out,
            "Feature table {table} starts on fresh storage; its old data is no longer read."
        );
    }
    out
}

pub fn workspaces(response: &ListWorkspacesResponse) -> String {
    if response.workspaces.is_empty() {
        return "No workspaces yet. Create one with `ftab workspace create NAME --live`.\n"
            .to_string();
    }
    let rows: Vec<Vec<String>> = response
        .workspaces
        .iter()
        .map(|w| {
            vec![
                w.name.to_string(),
                w.kind.as_str().to_string(),
                w.version.to_string(),
                w.feature_tables.to_string(),
                w.feature_services.to_string(),
                w.created_at.clone(),
            ]
        })
        .collect();
    table(
        &["NAME", "KIND", "VERSION", "TABLES", "SERVICES", "CREATED"],
        &rows,
    )
}

pub fn tables(listings: &[TableListing]) -> String {
    if listings.is_empty() {
        return "No feature tables. Declare some in a feature repository and run `ftab apply`.\n"
            .to_string();
    }
    let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
    let rows: Vec<Vec<String>> = listings
        .iter()
        .map(|t| {
            vec![
                t.workspace.to_string(),
                t.table.to_string(),
                t.entities.join(","),
                yes_no(t.online),
                yes_no(t.offline),
                t.ttl.clone().unwrap_or_else(|| "-".into()),
                t.description.clone(),
            ]
        })
        .collect();
    table(
        &[
            "WORKSPACE",
            "TABLE",
            "ENTITIES",
            "ONLINE",
            "OFFLINE",
            "TTL",
            "DESCRIPTION",
        ],
        &rows,
    )
}

pub fn describe(d: &TableDescription) -> String {
    let t = &d.table;
    let mut out = format!(
        "Feature table {} (workspace {}, {}, version {})\n",
        t.name,
        d.workspace,
        d.kind.as_str(),
        d.version
    );
    if !t.description.is_empty() {
        let _ = writeln!(out, "  {}", t.description);
    }
    let mut field = |name: &str, value: String| {
        let _ = writeln!(out, "  {name:<16} {value}");
    };
    if let Some(owner) = &t.owner {
        field("owner:", owner.clone());
    }
    if !t.tags.is_empty() {
        let tags: Vec<String> = t.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        field("tags:", tags.join(", "));
    }
    let entities: Vec<String> = t.entities.iter().map(|e| e.to_string()).collect();
    field("entities:", entities.join(", "));
    field("join keys:", d.join_keys.join(", "));
    field("timestamp field:", t.timestamp_field.to_string());
    field("online:", if t.online { "yes" } else { "no" }.into());
    field("offline:", if t.offline { "yes" } else { "no" }.into());
    field(
        "ttl:",
        t.ttl
            .map(|t| t.to_string())
            .unwrap_or_else(|| "none".into()),
    );
    field(
        "offline store:",
        format!("{} (generation {})", d.offline_location, d.generation),
    );
    field(
        "services:",
        if d.feature_services.is_empty() {
            "none".into()
        } else {
            d.feature_services.join(", ")
        },
    );
    out.push_str("  schema:\n");
    let rows: Vec<Vec<String>> = t
        .schema
        .iter()
        .map(|c| {
            let role = if c.name == t.timestamp_field {
                "timestamp"
            } else if d.join_keys.iter().any(|k| k == c.name.as_str()) {
                "join key"
            } else {
                "feature"
            };
            vec![
                format!("    {}", c.name),
                c.value_type.to_string(),
                role.to_string(),
            ]
        })
        .collect();
    out.push_str(&table(&["    COLUMN", "TYPE", "ROLE"], &rows));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let out = table(
            &["A", "LONGER"],
            &[
                vec!["wide cell".into(), "x".into()],
                vec!["b".into(), "y".into()],
            ],
        );
        assert_eq!(out, "A          LONGER\nwide cell  x\nb          y\n");
    }

    #[test]
    fn plan_summary_mentions_breaking_changes() {
        let plan = Plan {
            changes: vec![Change {
                kind: ChangeKind::Delete,
                object: ftab_core::diff::ObjectKind::FeatureTable,
                name: "t".into(),
                details: vec![],
                breaking: vec!["deleting feature table `t` abandons its stored data".into()],
            }],
        };
        let text = plan_changes(&plan);
        assert!(text.contains("  - feature_table t\n"), "{text}");
        assert!(text.contains("! breaks stored data: deleting"), "{text}");
        assert!(
            text.contains("0 to create, 0 to change, 1 to delete. 1 would break stored data"),
            "{text}"
        );
    }
}
