//! `ftab`: the ftab command line.

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cli = ftab_client::cli::Cli::parse();
    ftab_client::cli::main(cli).await
}
