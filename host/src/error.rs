//! The host's sandbox error: the Rust twin of the WIT `sandbox-error` variant.
//!
//! Every backend (the built-in `local` sandbox, wasm connectors) reports
//! failures as a [`SandboxError`]: a [`ErrorKind`] that agents can branch on
//! and a message a person can act on.

use std::fmt;

/// The kinds of `sandbox-error` in `wit/types.wit`, in the same order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    NotFound,
    PermissionDenied,
    AlreadyExists,
    NotADirectory,
    IsADirectory,
    Timeout,
    Unsupported,
    Auth,
    Unavailable,
    SandboxDied,
    InvalidInput,
    Other,
}

impl ErrorKind {
    /// The WIT case name, e.g. `not-found`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not-found",
            ErrorKind::PermissionDenied => "permission-denied",
            ErrorKind::AlreadyExists => "already-exists",
            ErrorKind::NotADirectory => "not-a-directory",
            ErrorKind::IsADirectory => "is-a-directory",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Auth => "auth",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::SandboxDied => "sandbox-died",
            ErrorKind::InvalidInput => "invalid-input",
            ErrorKind::Other => "other",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed sandbox operation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct SandboxError {
    pub kind: ErrorKind,
    pub message: String,
}

impl SandboxError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        SandboxError { kind, message: message.into() }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::PermissionDenied, message)
    }

    pub fn other(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Other, message)
    }

    /// Map an OS error on `path` to the closest kind, keeping the OS's words.
    pub fn from_io(err: &std::io::Error, path: &str) -> Self {
        use std::io::ErrorKind as Io;
        let kind = match err.kind() {
            Io::NotFound => ErrorKind::NotFound,
            Io::PermissionDenied | Io::ReadOnlyFilesystem => ErrorKind::PermissionDenied,
            Io::AlreadyExists => ErrorKind::AlreadyExists,
            Io::NotADirectory => ErrorKind::NotADirectory,
            Io::IsADirectory => ErrorKind::IsADirectory,
            Io::DirectoryNotEmpty => ErrorKind::InvalidInput,
            Io::InvalidInput | Io::InvalidFilename => ErrorKind::InvalidInput,
            Io::TimedOut => ErrorKind::Timeout,
            _ => match err.raw_os_error() {
                Some(libc::ELOOP) => ErrorKind::PermissionDenied,
                Some(libc::EXDEV) => ErrorKind::PermissionDenied,
                _ => ErrorKind::Other,
            },
        };
        let detail = match err.raw_os_error() {
            Some(libc::EXDEV) | Some(libc::ELOOP) => {
                "it leads outside the sandbox root (through a symbolic link)".to_string()
            }
            _ => strip_os_error_code(&err.to_string()),
        };
        SandboxError::new(kind, format!("{path}: {detail}"))
    }
}

/// `"No such file or directory (os error 2)"` → `"No such file or directory"`.
fn strip_os_error_code(message: &str) -> String {
    match message.rfind(" (os error ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

pub type SandboxResult<T> = Result<T, SandboxError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_keep_the_path_and_drop_the_errno() {
        let err = std::io::Error::from_raw_os_error(libc::ENOENT);
        let mapped = SandboxError::from_io(&err, "/workspace/x");
        assert_eq!(mapped.kind, ErrorKind::NotFound);
        assert_eq!(mapped.message, "/workspace/x: No such file or directory");
    }

    #[test]
    fn escaping_symlinks_are_permission_denied() {
        let err = std::io::Error::from_raw_os_error(libc::EXDEV);
        let mapped = SandboxError::from_io(&err, "/workspace/link/passwd");
        assert_eq!(mapped.kind, ErrorKind::PermissionDenied);
        assert!(mapped.message.contains("outside the sandbox root"));
    }
}
