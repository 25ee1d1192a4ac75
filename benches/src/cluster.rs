//! `ftab-bench cluster`: the training-set benchmark (its two tables' ingests included)
//! standalone and in cluster mode on the same generated data, side by side.
//!
//! Standalone: the embedded defaults (an in-process executor). Cluster: the scheduler in
//! this process with `--cluster-addr` on loopback and `--executors` `ftab-executor`
//! processes with `--tasks` slots each. Both keep their data in the same kind of object
//! store (`--store`): a local S3 server (moto, as in the tests) or the local disk. Each run checks its training set row by row
//! against the reference; a run that fails its check prints no figures. Build
//! `ftab-executor` beside the bench: `cargo build --release -p ftab-bench -p ftab-executor`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use crate::Deployment;
use crate::training_set::{Summary, TrainingSetArgs, run_as};

#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// ftab-executor processes.
    #[arg(long, default_value_t = 2)]
    executors: usize,
    /// Task slots of each executor.
    #[arg(long, default_value_t = 1)]
    tasks: usize,
    /// The object store of both runs: `s3` (moto, on this machine) or `local` (the local
    /// disk, which a one-host cluster may use).
    #[arg(long, default_value = "s3")]
    store: String,
    #[command(flatten)]
    set: TrainingSetArgs,
}

/// The S3 server of the cluster run, its address in this process's environment.
pub struct S3(ftab_testkit::s3::S3Server);

impl S3 {
    /// Start moto and point object stores at it. Call before any thread starts: it sets
    /// this process's environment.
    pub fn start() -> anyhow::Result<Self> {
        let server = ftab_testkit::s3::S3Server::start();
        for (key, value) in server.env() {
            // SAFETY: called from `main` before the runtime or any other thread exists.
            unsafe { std::env::set_var(key, value) };
        }
        Ok(Self(server))
    }
}

/// An `ftab-executor` process, killed when dropped.
pub struct Executor(Child);

impl Executor {
    pub fn start(scheduler: &str, work_dir: &Path, tasks: usize) -> anyhow::Result<Self> {
        let binary = sibling("ftab-executor")?;
        let child = Command::new(&binary)
            .args(["--scheduler", scheduler, "--port", "0", "--grpc-port", "0"])
            .args(["--tasks", &tasks.to_string(), "--log", "warn"])
            .arg("--work-dir")
            .arg(work_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        Ok(Self(child))
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A binary built beside this one.
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe
        .parent()
        .map(|d| d.join(name))
        .context("the bench knows its directory")?;
    if !path.exists() {
        bail!(
            "{} is not built; build it beside the bench: cargo build --release -p ftab-bench -p ftab-executor",
            path.display()
        );
    }
    Ok(path)
}

/// Wait until `n` executors are registered with the scheduler.
pub async fn wait_for_executors(
    scheduler: &ftab_scheduler::Scheduler,
    n: usize,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while scheduler.executors().await < n {
        if Instant::now() > deadline {
            bail!("{n} executors did not register within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

pub async fn run(args: ClusterArgs, s3: &S3) -> anyhow::Result<()> {
    let (bucket, store) = match args.store.as_str() {
        "s3" => (Some("ftab-bench".to_string()), "moto S3"),
        "local" => (None, "the local disk"),
        other => bail!("--store is s3 or local, not `{other}`"),
    };
    // One bucket per run, so the cluster does not read the standalone run's tables.
    let bucket = |run: &str| {
        bucket.as_ref().map(|b| {
            let name = format!("{b}-{run}");
            s3.0.create_bucket(&name);
            name
        })
    };
    eprintln!("== standalone, object store on {store} ==");
    let standalone = run_as(
        args.set.clone(),
        &Deployment::Standalone {
            bucket: bucket("standalone"),
        },
    )
    .await?;
    eprintln!(
        "== cluster: {} executors x {} tasks, object store on {store} ==",
        args.executors, args.tasks
    );
    let cluster = run_as(
        args.set.clone(),
        &Deployment::Cluster {
            executors: args.executors,
            tasks: args.tasks,
            bucket: bucket("cluster"),
        },
    )
    .await?;
    println!();
    println!(
        "standalone vs cluster ({} executors x {} tasks), both with the object store on {store}, same data:",
        args.executors, args.tasks
    );
    println!(
        "{:<32} {:>12} {:>12} {:>8}",
        "", "standalone", "cluster", "ratio"
    );
    let line = |what: &str, a: f64, b: f64, unit: &str| {
        println!(
            "{what:<32} {:>10.2}{unit} {:>10.2}{unit} {:>7.2}x",
            a,
            b,
            b / a.max(1e-9)
        );
    };
    let per_second = |s: &Summary| s.ingest_rows as f64 / s.ingest.as_secs_f64().max(1e-9) / 1e6;
    line(
        "ingest (M rows/s, both tables)",
        per_second(&standalone),
        per_second(&cluster),
        " ",
    );
    line(
        "training set end to end (s)",
        standalone.training_set.as_secs_f64(),
        cluster.training_set.as_secs_f64(),
        " ",
    );
    println!("standalone: {}", standalone.verified);
    println!("cluster:    {}", cluster.verified);
    if standalone.training_set_rows != cluster.training_set_rows {
        bail!(
            "the training sets differ in size: {} vs {} rows",
            standalone.training_set_rows,
            cluster.training_set_rows
        );
    }
    Ok(())
}
