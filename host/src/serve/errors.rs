//! One error shape for every answer the server gives:
//! `{"error": {"kind": "...", "message": "..."}}`, the HTTP status chosen by
//! the kind. Run failures keep their kind from the run to the caller and to
//! the run store, so a bad payload, a failing agent, an unavailable sandbox
//! provider, a deadline and a shutdown can be told apart by status and kind.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::run::RunError;

macro_rules! kinds {
    ($($(#[doc = $doc:literal])* $kind:ident => ($name:literal, $status:ident),)*) => {
        /// What went wrong, for code to branch on.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum ErrorKind {
            $($(#[doc = $doc])* $kind,)*
        }

        impl ErrorKind {
            /// Its name in answers and the run store, e.g. `deadline-exceeded`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorKind::$kind => $name,)*
                }
            }

            /// The HTTP status it is answered with.
            pub fn status(self) -> StatusCode {
                match self {
                    $(ErrorKind::$kind => StatusCode::$status,)*
                }
            }
        }
    };
}

kinds! {
    /// The request is malformed (no Host, a body that breaks off).
    BadRequest => ("bad-request", BAD_REQUEST),
    /// The body is not JSON.
    BadPayload => ("bad-payload", BAD_REQUEST),
    /// The bearer token is missing or wrong.
    Unauthorized => ("unauthorized", UNAUTHORIZED),
    /// A browser request from another origin or site.
    CrossOrigin => ("cross-origin", FORBIDDEN),
    /// The agent leaves the project directory.
    AgentOutsideProject => ("agent-outside-project", FORBIDDEN),
    /// No such path or run.
    NotFound => ("not-found", NOT_FOUND),
    /// No such webhook agent.
    UnknownAgent => ("unknown-agent", NOT_FOUND),
    /// The path exists, the method does not.
    MethodNotAllowed => ("method-not-allowed", METHOD_NOT_ALLOWED),
    /// The body did not arrive in time.
    BodyTimeout => ("body-timeout", REQUEST_TIMEOUT),
    /// The body is over `--max-body-kib`.
    BodyTooLarge => ("body-too-large", PAYLOAD_TOO_LARGE),
    /// The body is not declared as JSON.
    UnsupportedMediaType => ("unsupported-media-type", UNSUPPORTED_MEDIA_TYPE),
    /// The request names a host this server does not answer to.
    UnknownHost => ("unknown-host", MISDIRECTED_REQUEST),
    /// Too many runs.
    QueueFull => ("queue-full", TOO_MANY_REQUESTS),
    /// Request bodies being received hold all of `--body-memory-mib`.
    ServerBusy => ("server-busy", SERVICE_UNAVAILABLE),
    /// The agent returned an error, or a result that is not JSON.
    AgentFailed => ("agent-failed", INTERNAL_SERVER_ERROR),
    /// The agent trapped (crashed).
    AgentCrashed => ("agent-crashed", INTERNAL_SERVER_ERROR),
    /// The agent reached its memory limit.
    OutOfMemory => ("out-of-memory", INTERNAL_SERVER_ERROR),
    /// The agent does not build, or is not an agent component.
    BuildFailed => ("build-failed", INTERNAL_SERVER_ERROR),
    /// `flue dev`: the agent's build took longer than `--build-timeout`.
    BuildTimeout => ("build-timeout", GATEWAY_TIMEOUT),
    /// flue itself failed (a bug).
    Internal => ("internal", INTERNAL_SERVER_ERROR),
    /// The sandbox provider (a connector's service, e.g. Daytona) is down,
    /// timing out or refusing the credentials.
    SandboxUnavailable => ("sandbox-unavailable", BAD_GATEWAY),
    /// `flue dev`: `flue.toml` or the configuration is broken.
    ConfigError => ("config-error", SERVICE_UNAVAILABLE),
    /// The server shut down before the run finished.
    Shutdown => ("shutdown", SERVICE_UNAVAILABLE),
    /// The run passed its deadline.
    DeadlineExceeded => ("deadline-exceeded", GATEWAY_TIMEOUT),
}

/// An error answer, or a run's failure.
#[derive(Clone, Debug)]
pub struct ApiError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// For a person: what, and what to do.
    pub message: String,
}

impl ApiError {
    /// An error of `kind`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError { kind, message: message.into() }
    }

    /// `{"kind": …, "message": …}`.
    pub fn to_json(&self) -> Value {
        json!({"kind": self.kind.as_str(), "message": self.message})
    }

    /// A run's failure, by the run's error type.
    pub fn from_run(err: RunError) -> Self {
        let kind = match &err {
            RunError::Load(_) => ErrorKind::BuildFailed,
            RunError::AgentFailed(_) | RunError::InvalidResult { .. } => ErrorKind::AgentFailed,
            RunError::DeadlineExceeded { .. } => ErrorKind::DeadlineExceeded,
            RunError::Interrupted { .. } => ErrorKind::Shutdown,
            RunError::OutOfMemory { .. } => ErrorKind::OutOfMemory,
            RunError::Trapped { .. } => ErrorKind::AgentCrashed,
            RunError::Panicked { .. } => ErrorKind::Internal,
            RunError::SandboxUnavailable { .. } => ErrorKind::SandboxUnavailable,
        };
        ApiError::new(kind, format!("{:#}", anyhow::Error::new(err)))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.kind.status(), Json(json!({"error": self.to_json()}))).into_response()
    }
}
