//! Why a CLI command failed, and what that means for its exit code and its `--output
//! json` error code.

use ftab_model::ids::JobId;
use ftab_model::repository::ReadError;

use crate::ClientError;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{0}")]
    NotConfirmed(String),
    #[error(transparent)]
    File(#[from] crate::files::FileError),
    #[error("job {job_id} {state}: {message}")]
    JobFailed {
        job_id: JobId,
        state: &'static str,
        message: String,
    },
    /// A local file (a spine to upload, the output to write) is missing or cannot be
    /// written; `message` says which it is and what happened.
    #[error("{}: {message}", .path.display())]
    LocalFile {
        path: std::path::PathBuf,
        message: String,
    },
    /// The feature server could not be asked, or answered something unexpected.
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    /// The feature server refused the request (4xx) or failed (5xx).
    #[error("{message} (HTTP {status})")]
    Served { status: u16, message: String },
    #[error("cannot {what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Client(ClientError::Unreachable { .. }) | CliError::Http { .. } => 3,
            CliError::Client(ClientError::InvalidUrl { .. }) => 2,
            _ => 1,
        }
    }

    /// A short machine-readable name for `--output json`.
    pub fn code(&self) -> String {
        match self {
            CliError::Client(ClientError::Unreachable { .. }) => "unreachable".into(),
            CliError::Client(ClientError::InvalidUrl { .. }) => "invalid_url".into(),
            CliError::Client(ClientError::Server { code, .. }) => {
                let name = format!("{code:?}");
                let mut snake = String::new();
                for (i, c) in name.chars().enumerate() {
                    if c.is_uppercase() && i > 0 {
                        snake.push('_');
                    }
                    snake.push(c.to_ascii_lowercase());
                }
                snake
            }
            CliError::Client(ClientError::Protocol(_)) => "protocol".into(),
            CliError::Client(ClientError::Data(_)) | CliError::File(_) => "invalid_data".into(),
            CliError::JobFailed { .. } => "job_failed".into(),
            CliError::Read(_) => "invalid_repository".into(),
            CliError::NotConfirmed(_) => "not_confirmed".into(),
            CliError::Io { .. } => "io".into(),
            CliError::LocalFile { .. } => "local_file".into(),
            CliError::Http { .. } => "unreachable".into(),
            CliError::Served { status, .. } => format!("http_{status}"),
        }
    }
}
