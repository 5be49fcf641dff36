//! The host's sandbox error: the Rust twin of the WIT `sandbox-error` variant.
//!
//! Every backend (the built-in `local` sandbox, wasm connectors) reports
//! failures as a [`SandboxError`]: a [`ErrorKind`] that agents can branch on
//! and a message a person can act on.

use std::fmt;

/// Declares [`ErrorKind`] and its WIT names from one list of cases (the
/// conversions to and from the WIT `sandbox-error` are in the `bindings`
/// room).
macro_rules! error_kinds {
    ($($(#[doc = $doc:literal])* $kind:ident => $name:literal,)*) => {
        /// The kinds of `sandbox-error` in `wit/types.wit`, in the same order.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "kebab-case")]
        pub enum ErrorKind {
            $($(#[doc = $doc])* $kind,)*
        }

        impl ErrorKind {
            /// The WIT case name, e.g. `not-found`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorKind::$kind => $name,)*
                }
            }
        }

    };
}

error_kinds! {
    /// The path, sandbox or resource does not exist.
    NotFound => "not-found",
    /// Refused: permissions, or a path outside the sandbox root.
    PermissionDenied => "permission-denied",
    /// The target already exists.
    AlreadyExists => "already-exists",
    /// A path component that must be a directory is not one.
    NotADirectory => "not-a-directory",
    /// The operation needs a file but the path is a directory.
    IsADirectory => "is-a-directory",
    /// The operation did not finish in time.
    Timeout => "timeout",
    /// More data than one call may move: move it in parts.
    TooLarge => "too-large",
    /// The backend cannot honour this operation or option.
    Unsupported => "unsupported",
    /// Credentials are missing or were rejected.
    Auth => "auth",
    /// The provider is temporarily unavailable; retrying may succeed.
    Unavailable => "unavailable",
    /// The sandbox was destroyed, stopped or stopped answering.
    SandboxDied => "sandbox-died",
    /// An argument was malformed.
    InvalidInput => "invalid-input",
    /// Anything else.
    Other => "other",
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed sandbox operation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("{kind}: {message}")]
pub struct SandboxError {
    /// What kind of failure, for code to branch on.
    pub kind: ErrorKind,
    /// What happened, for a person.
    pub message: String,
}

impl SandboxError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        SandboxError { kind, message: message.into() }
    }

    /// A `not-found` error.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// A `invalid-input` error.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    /// A `permission-denied` error.
    pub fn permission_denied(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::PermissionDenied, message)
    }

    /// A `other` error.
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
            Io::FileTooLarge => ErrorKind::TooLarge,
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

/// The result of a sandbox operation.
pub type SandboxResult<T> = Result<T, SandboxError>;

/// How events carry a failed sandbox operation.
impl From<&SandboxError> for crate::events::EventError {
    fn from(err: &SandboxError) -> Self {
        crate::events::EventError { kind: err.kind.as_str(), message: err.message.clone() }
    }
}

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
