//! The one error type of the `podbridge` crate. Every variant knows whether the
//! operation is worth retrying; that single decision drives partial batch responses
//! (retry through the queue) and reconcile retries.

use std::time::Duration;

/// A boxed error from an SDK or client, kept as the source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can fail in podbridge's adapters.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A DynamoDB call failed (not a lost conditional write: that is an outcome).
    #[error("job store: {operation} failed")]
    Store {
        operation: &'static str,
        retryable: bool,
        #[source]
        source: BoxError,
    },
    /// A record in the table cannot be read back as a job.
    #[error("job store: the record of job {job_id:?} is unreadable: {message}")]
    CorruptRecord { job_id: String, message: String },
    /// The Kubernetes API answered with an error Status.
    #[error("Kubernetes API: {operation} failed with {code} {reason}: {message}")]
    KubeApi { operation: &'static str, code: u16, reason: String, message: String },
    /// The Kubernetes API could not be reached, or the connection broke.
    #[error("Kubernetes API: {operation} failed")]
    KubeTransport {
        operation: &'static str,
        #[source]
        source: kube::Error,
    },
    /// A call took longer than its deadline.
    #[error("{operation} timed out after {after:?}")]
    Timeout { operation: &'static str, after: Duration },
    /// EKS authentication failed (credentials, signing, DescribeCluster).
    #[error("EKS authentication: {message}")]
    Auth {
        message: String,
        retryable: bool,
        #[source]
        source: Option<BoxError>,
    },
    /// The deployment's configuration is wrong: retrying cannot help.
    #[error("configuration: {0}")]
    Config(String),
}

impl From<podbridge_core::record::CorruptRecord> for Error {
    fn from(corrupt: podbridge_core::record::CorruptRecord) -> Self {
        Self::CorruptRecord { job_id: corrupt.job_id, message: corrupt.message }
    }
}

impl Error {
    /// Whether the same operation may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Store { retryable, .. } | Self::Auth { retryable, .. } => *retryable,
            Self::KubeApi { code, .. } => matches!(code, 408 | 429 | 500..=599),
            Self::KubeTransport { .. } | Self::Timeout { .. } => true,
            Self::CorruptRecord { .. } | Self::Config(_) => false,
        }
    }
}

/// An error with its causes on one line (`error: cause: cause`), for logs and for
/// messages that wrap an error from another crate.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// The `Result` of podbridge's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_follows_the_cause() {
        let api =
            |code: u16| Error::KubeApi { operation: "create pod", code, reason: String::new(), message: String::new() };
        assert!(api(429).is_retryable());
        assert!(api(503).is_retryable());
        assert!(api(500).is_retryable());
        assert!(!api(422).is_retryable());
        assert!(!api(403).is_retryable());
        assert!(!api(409).is_retryable());
        assert!(Error::Timeout { operation: "create pod", after: Duration::from_secs(5) }.is_retryable());
        assert!(!Error::Config("no cluster".into()).is_retryable());
    }
}
