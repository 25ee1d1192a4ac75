//! `ftab`: the ftab command line.

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    ftab_client::cli::main_from(std::env::args_os()).await
}
