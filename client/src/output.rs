//! Printing answers: text rendered for people, or with `--output json` one compact JSON
//! document per line (JSON lines) for scripts.

use std::fmt::Write;

use ftab_model::diff::{Change, ChangeKind, Plan};
use ftab_model::protocol::{
    ApplyResponse, GetOnlineResponse, JobInfo, ListWorkspacesResponse, PlanResponse, StepState,
    TableDescription, TableListing,
};

/// How the CLI prints answers: text for people, JSON for scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

/// Write `text` to standard output. When the reader has gone (`ftab jobs list | head -1`),
/// stop quietly with success, as Unix tools do, instead of panicking as `print!` does.
pub fn stdout(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        // Nowhere left to report it but standard error.
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// Print `value` as one line of JSON, or as the text `render` makes of it.
pub fn print<T: serde::Serialize>(format: OutputFormat, value: &T, render: impl Fn(&T) -> String) {
    match format {
        OutputFormat::Text => stdout(&render(value)),
        OutputFormat::Json => stdout(&format!(
            "{}\n",
            serde_json::to_string(value).expect("answers serialize to JSON")
        )),
    }
}

/// 1234567 -> "1,234,567".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A byte count for people: `1.5 MiB`.
pub fn bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

/// What a training set request was planned as.
pub fn training_set_plan(info: &ftab_model::protocol::TrainingSetInfo, endpoints: usize) -> String {
    let tables: Vec<String> = info
        .tables
        .iter()
        .map(|t| {
            format!(
                "{} (version {}, {} of {} files)",
                t.table,
                t.delta_version
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "none".into()),
                t.files_read,
                t.files_total
            )
        })
        .collect();
    format!(
        "training set {}: {} rows in {endpoints} partitions from {}",
        info.training_set_id,
        thousands(info.rows),
        tables.join(", ")
    )
}

fn state_name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

pub fn jobs(jobs: &[JobInfo]) -> String {
    if jobs.is_empty() {
        return "No jobs.\n".to_string();
    }
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j.job_id.to_string(),
                state_name(&j.kind),
                format!("{}.{}", j.workspace, j.table),
                state_name(&j.state),
                j.attempts.to_string(),
                thousands(j.counts.rows_received),
                j.created_at.clone(),
            ]
        })
        .collect();
    table(
        &[
            "JOB", "KIND", "TABLE", "STATE", "ATTEMPTS", "ROWS", "CREATED",
        ],
        &rows,
    )
}

/// One line: state and steps.
pub fn job_progress(j: &JobInfo) -> String {
    let steps: Vec<String> = j
        .steps
        .iter()
        .map(|(name, state)| {
            let mark = match state {
                StepState::Done => "done",
                StepState::Pending => "pending",
                StepState::Skipped => "skipped",
            };
            format!("{name} {mark}")
        })
        .collect();
    format!(
        "job {} {} (attempt {}): {}",
        j.job_id,
        state_name(&j.state),
        j.attempts,
        steps.join(", ")
    )
}

pub fn job_counts(j: &JobInfo) -> String {
    let c = &j.counts;
    format!(
        "  rows received {}, in-ingest duplicates dropped {}, committed offline {}, written online {} (skipped as older {}, as expired {})\n",
        thousands(c.rows_received),
        thousands(c.duplicates_dropped),
        thousands(c.offline_rows_committed),
        thousands(c.online_rows_written),
        thousands(c.online_skipped_older),
        thousands(c.online_skipped_expired)
    )
}

pub fn job(j: &JobInfo) -> String {
    let mut out = format!("{}\n", job_progress(j));
    let _ = writeln!(out, "  table: {}.{}", j.workspace, j.table);
    if let Some(ingest) = &j.ingest_id {
        let _ = writeln!(out, "  ingest: {ingest}");
    }
    let _ = writeln!(
        out,
        "  created: {}  updated: {}",
        j.created_at, j.updated_at
    );
    out.push_str(&job_counts(j));
    if let Some(error) = &j.last_error {
        let _ = writeln!(out, "  last error: {error}");
    }
    out
}

pub fn online_record(r: &GetOnlineResponse) -> String {
    let keys: Vec<String> = r.keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let keys = keys.join(" ");
    if !r.found {
        return format!(
            "No online record for {keys} in {}.{} (never written, or older than the table's ttl).\n",
            r.workspace, r.table
        );
    }
    let mut out = format!("{}.{} {keys}\n", r.workspace, r.table);
    let _ = writeln!(
        out,
        "  {:<24} {}",
        "timestamp",
        r.timestamp.clone().unwrap_or_default()
    );
    let _ = writeln!(out, "  {:<24} {}", "_seq", r.seq.unwrap_or_default());
    for (name, value) in &r.features {
        let _ = writeln!(out, "  {name:<24} {value}");
    }
    out
}

/// A feature server's answer to `get-features` with every metadata option, as a table.
pub fn feature_vector(heading: &str, answer: &serde_json::Value) -> String {
    let values = answer["result"]["features"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let metadata = answer["metadata"]["features"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let text = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    };
    let rows: Vec<Vec<String>> = values
        .iter()
        .enumerate()
        .map(|(i, value)| {
            let m = metadata.get(i).cloned().unwrap_or_default();
            vec![
                text(&m["name"]),
                text(value),
                text(&m["data_type"]["type"]),
                text(&m["status"]),
                text(&m["effective_time"]),
            ]
        })
        .collect();
    format!(
        "{heading}\n{}",
        table(
            &["FEATURE", "VALUE", "TYPE", "STATUS", "EFFECTIVE TIME"],
            &rows
        )
    )
}

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
    if let Some(stats) = &d.offline {
        field(
            "offline data:",
            format!(
                "{} rows in {} files (Delta version {})",
                thousands(stats.rows),
                thousands(stats.files),
                stats.delta_version
            ),
        );
    }
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
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

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
                object: ftab_model::diff::ObjectKind::FeatureTable,
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
