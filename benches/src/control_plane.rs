//! `ftab-bench control-plane`: the latency of control-plane calls (DoAction) from one
//! client on one connection, as a CLI or an SDK makes them back to back.
//!
//! Each call's answer is checked (the workspaces listed are the ones created), so a
//! figure is never that of a failed call.

use std::time::{Duration, Instant};

use anyhow::bail;
use ftab_model::names::WorkspaceName;
use ftab_model::protocol::{ListJobsRequest, WorkspaceKind};

use crate::Running;

#[derive(Debug, clap::Args)]
pub struct ControlPlaneArgs {
    /// Calls of each action.
    #[arg(long, default_value_t = 200)]
    calls: usize,
}

fn summary(name: &str, mut times: Vec<Duration>) {
    times.sort();
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    println!(
        "{name:<18} median {:>7.2} ms   p90 {:>7.2} ms   max {:>7.2} ms   ({} calls)",
        at(0.5),
        at(0.9),
        at(1.0),
        times.len()
    );
}

pub async fn run(args: ControlPlaneArgs) -> anyhow::Result<()> {
    let mut running = Running::start(None, None).await?;
    for i in 0..3 {
        running
            .client
            .create_workspace(WorkspaceName::new(format!("team_{i}"))?, WorkspaceKind::Dev)
            .await?;
    }
    let mut listed = Vec::with_capacity(args.calls);
    let mut jobs = Vec::with_capacity(args.calls);
    for _ in 0..args.calls {
        let started = Instant::now();
        let answer = running.client.list_workspaces().await?;
        listed.push(started.elapsed());
        if answer.workspaces.len() != 3 {
            bail!(
                "list_workspaces answered {} workspaces, 3 were created",
                answer.workspaces.len()
            );
        }
        let started = Instant::now();
        let answer = running.client.list_jobs(ListJobsRequest::default()).await?;
        jobs.push(started.elapsed());
        if !answer.jobs.is_empty() {
            bail!("list_jobs answered jobs where there are none");
        }
    }
    running.stop().await?;
    println!(
        "ftab control-plane latency: one client, one connection, calls back to back (answers checked)"
    );
    summary("list_workspaces", listed);
    summary("list_jobs", jobs);
    Ok(())
}
