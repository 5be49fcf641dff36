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
    /// The request's target (its URL) is too long to read.
    UriTooLong => ("uri-too-long", URI_TOO_LONG),
    /// The request's headers are too many or too large to read.
    HeadersTooLarge => ("headers-too-large", REQUEST_HEADER_FIELDS_TOO_LARGE),
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
    /// The run was cancelled (`POST /runs/<runId>/cancel`, `flue runs cancel`).
    Cancelled => ("cancelled", CONFLICT),
    /// A cancel came for a run that had already ended.
    RunEnded => ("run-ended", CONFLICT),
    /// A run a crash interrupted could not be resumed from its journal.
    NotResumable => ("not-resumable", CONFLICT),
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
    pub fn from_run(err: &RunError) -> Self {
        let kind = match err {
            RunError::Load { .. } => ErrorKind::BuildFailed,
            RunError::AgentFailed(_) | RunError::InvalidResult { .. } => ErrorKind::AgentFailed,
            RunError::DeadlineExceeded { .. } => ErrorKind::DeadlineExceeded,
            RunError::Interrupted { .. } | RunError::TakenOver => ErrorKind::Shutdown,
            RunError::Cancelled => ErrorKind::Cancelled,
            RunError::OutOfMemory { .. } => ErrorKind::OutOfMemory,
            RunError::Trapped { .. } => ErrorKind::AgentCrashed,
            RunError::Panicked { .. } => ErrorKind::Internal,
            RunError::SandboxUnavailable { .. } => ErrorKind::SandboxUnavailable,
            RunError::NotResumable { .. } => ErrorKind::NotResumable,
        };
        // The error and its causes, as `{:#}` shows an anyhow chain.
        let mut message = err.to_string();
        let mut cause = std::error::Error::source(err);
        while let Some(inner) = cause {
            message.push_str(&format!(": {inner}"));
            cause = inner.source();
        }
        ApiError::new(kind, message)
    }
}

impl ErrorKind {
    /// The status of a run that ended with an error of this kind, as the
    /// run store and the server's events name it.
    pub fn run_status(self) -> &'static str {
        if self == ErrorKind::Cancelled { "cancelled" } else { "failed" }
    }

    /// The kind of an error answer that came with only a status (axum's
    /// rejections): by its status, `bad-request` or `internal` otherwise.
    fn for_status(status: StatusCode) -> ErrorKind {
        match status {
            StatusCode::NOT_FOUND => ErrorKind::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ErrorKind::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => ErrorKind::BodyTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorKind::UnsupportedMediaType,
            StatusCode::URI_TOO_LONG => ErrorKind::UriTooLong,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => ErrorKind::HeadersTooLarge,
            status if status.is_server_error() => ErrorKind::Internal,
            _ => ErrorKind::BadRequest,
        }
    }
}

/// `response` in the one error shape if it is an error answer that is not
/// JSON yet — axum's own rejections, such as a path that is not UTF-8
/// (`/runs/%ff`) — its text the message, its status that of its kind.
pub async fn in_error_shape(response: Response) -> Response {
    let status = response.status();
    let json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // axum's rejections are a line of text; more is not read.
    let text = axum::body::to_bytes(body, 16 * 1024).await.unwrap_or_default();
    let text = crate::events::one_line(String::from_utf8_lossy(&text).trim(), 300);
    let kind = ErrorKind::for_status(status);
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("refused").to_string() } else { text };
    parts.status = kind.status();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.insert(axum::http::header::CONTENT_TYPE, "application/json".parse().expect("a header value"));
    let body = json!({"error": ApiError::new(kind, message).to_json()}).to_string();
    Response::from_parts(parts, axum::body::Body::from(body))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.kind.status(), Json(json!({"error": self.to_json()}))).into_response()
    }
}
