//! Error bodies as Daytona sends them: the API's NestJS filter and the
//! daemon's `ErrorResponse`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::time::now_rfc3339;

fn reason(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("Error")
}

/// `{"path","timestamp","statusCode","error","message"}` from the main API.
pub fn api_error(status: StatusCode, path: &str, message: impl Into<String>) -> Response {
    let body = json!({
        "path": path,
        "timestamp": now_rfc3339(),
        "statusCode": status.as_u16(),
        "error": reason(status),
        "message": message.into(),
    });
    (status, Json(body)).into_response()
}

/// The daemon's `{"statusCode","message","code","timestamp","path","method","source"}`.
pub fn daemon_body(status: StatusCode, code: &str, message: &str, path: &str, method: &str) -> serde_json::Value {
    json!({
        "statusCode": status.as_u16(),
        "message": message,
        "code": code,
        "timestamp": now_rfc3339(),
        "path": path,
        "method": method,
        "source": "DAYTONA_DAEMON",
    })
}

pub fn daemon_error(status: StatusCode, code: &str, message: impl Into<String>, path: &str, method: &str) -> Response {
    (status, Json(daemon_body(status, code, &message.into(), path, method))).into_response()
}

/// Map a sandbox error onto the daemon's status and code.
pub fn from_sandbox(err: &flue::sandbox::error::SandboxError) -> (StatusCode, &'static str) {
    use flue::sandbox::error::ErrorKind::*;
    match err.kind {
        NotFound => (StatusCode::NOT_FOUND, "FILE_NOT_FOUND"),
        PermissionDenied => (StatusCode::FORBIDDEN, "FILE_ACCESS_DENIED"),
        IsADirectory | InvalidInput | NotADirectory | AlreadyExists => (StatusCode::BAD_REQUEST, "INVALID_FILE_PATH"),
        Timeout => (StatusCode::REQUEST_TIMEOUT, "PROCESS_EXECUTION_TIMEOUT"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_SERVER_ERROR"),
    }
}
