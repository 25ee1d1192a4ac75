//! The scheduler's error type and its mapping to gRPC status codes.

use ftab_model::ids::JobId;
use ftab_model::names::{TableName, WorkspaceName};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "workspace `{0}` does not exist; create it with `ftab workspace create {0}` (add --live to ingest into it)"
    )]
    WorkspaceNotFound(WorkspaceName),

    #[error("workspace `{0}` already exists")]
    WorkspaceExists(WorkspaceName),

    #[error("feature table `{table}` does not exist in workspace `{workspace}`; {hint}")]
    TableNotFound {
        workspace: WorkspaceName,
        table: TableName,
        hint: String,
    },

    #[error("job {0} does not exist; `ftab jobs list` shows the jobs")]
    JobNotFound(JobId),

    /// Something else the request names does not exist; the message says what.
    #[error("{0}")]
    NotFound(String),

    /// A request that is wrong in itself: bad names, bad definitions, bad JSON.
    #[error(transparent)]
    Model(#[from] ftab_model::Error),

    /// The engine failed: stored data that cannot be read is a fault of the system, a
    /// version that does not exist is the request's.
    #[error(transparent)]
    Engine(#[from] ftab_engine::Error),

    #[error("{0}")]
    InvalidArgument(String),

    /// The request is well formed but the state of the system refuses it.
    #[error("{0}")]
    FailedPrecondition(String),

    #[error(
        "workspace `{workspace}` is at version {actual}, but the plan was made against version {expected}; run `ftab plan` again and review the changes"
    )]
    VersionConflict {
        workspace: WorkspaceName,
        expected: u64,
        actual: u64,
    },

    #[error("{0} is not supported by this server yet")]
    Unsupported(String),

    /// A Ballista job failed; the message is the innermost cause.
    #[error("{0}")]
    JobFailed(String),

    /// A job ran out of memory; the message names the setting to change.
    #[error("{0}")]
    ResourcesExhausted(String),

    #[error("catalog: {0}")]
    Catalog(#[from] rusqlite::Error),

    #[error("catalog: {0}")]
    CatalogData(String),

    /// The client gave up on its own request (an aborted upload).
    #[error("{0}")]
    Cancelled(String),

    /// Stored data that must be there is not: the message names what and where.
    #[error("{0}")]
    DataLoss(String),

    /// A dependency is not there yet or for now (a serving process without definitions);
    /// retrying later may succeed.
    #[error("{0}")]
    Unavailable(String),

    #[error("internal error: {0}")]
    Internal(String),
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        use tonic::Code;
        let code = match &error {
            Error::WorkspaceNotFound(_)
            | Error::TableNotFound { .. }
            | Error::JobNotFound(_)
            | Error::NotFound(_) => Code::NotFound,
            Error::WorkspaceExists(_) => Code::AlreadyExists,
            Error::Model(_) | Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::Engine(ftab_engine::Error::InvalidRequest(_)) => Code::InvalidArgument,
            Error::Engine(ftab_engine::Error::StorageLocation { .. }) => Code::FailedPrecondition,
            Error::Engine(ftab_engine::Error::Offline { .. }) => Code::Internal,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::VersionConflict { .. } => Code::Aborted,
            Error::Unsupported(_) => Code::Unimplemented,
            Error::DataLoss(_) => Code::DataLoss,
            Error::Cancelled(_) => Code::Cancelled,
            Error::ResourcesExhausted(_) => Code::ResourceExhausted,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Catalog(_)
            | Error::CatalogData(_)
            | Error::Internal(_)
            | Error::JobFailed(_) => Code::Internal,
        };
        if matches!(code, Code::Internal | Code::DataLoss) {
            tracing::error!(%error, "request failed");
        }
        tonic::Status::new(code, error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_the_right_codes_and_keep_their_message() {
        let ws = WorkspaceName::new("prod").unwrap();
        let status: tonic::Status = Error::WorkspaceNotFound(ws.clone()).into();
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert!(status.message().contains("ftab workspace create prod"));
        let status: tonic::Status = Error::VersionConflict {
            workspace: ws,
            expected: 1,
            actual: 2,
        }
        .into();
        assert_eq!(status.code(), tonic::Code::Aborted);
        let status: tonic::Status = Error::FailedPrecondition("x".into()).into();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    }
}
