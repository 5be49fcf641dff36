//! Requests to Daytona through the host's `http` import: the SDK's headers,
//! bounded retries with backoff for idempotent calls, and Daytona's errors
//! mapped onto the contract's error variant with Daytona's own message.
//!
//! A failure is an [`ApiError`]: either Daytona *answered* about what was
//! asked (a missing file, a bad argument, bad credentials) or the request
//! did not reach a working sandbox (a proxy error, 5xx, a dropped
//! connection) — the case in which the sandbox may have died.

use std::time::Duration;

use crate::flue::sandbox::config;
use crate::flue::sandbox::http::{self, HttpError, Request, Response};
use crate::flue::sandbox::types::SandboxError;
use crate::model::ErrorBody;

pub const DEFAULT_API_URL: &str = "https://app.daytona.io/api";
/// The daemon switches to its current output formats from SDK 0.167.0 on.
pub const SDK_VERSION: &str = "0.218.0";
pub const SOURCE: &str = "flue-daytona-connector";
/// Attempts for idempotent calls (first try included).
const ATTEMPTS: u32 = 4;
/// Longest wait a `Retry-After` may impose between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// `DAYTONA_API_URL` without a trailing slash.
pub fn api_url() -> String {
    config::get("DAYTONA_API_URL").unwrap_or_else(|| DEFAULT_API_URL.into()).trim_end_matches('/').to_string()
}

/// A request to make.
pub struct Call {
    pub method: &'static str,
    pub url: String,
    pub accept: &'static str,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    /// Safe to repeat: retried on 409, 429, 5xx and transport errors.
    pub idempotent: bool,
    pub timeout_ms: Option<u64>,
}

impl Call {
    pub fn get(url: String) -> Self {
        Call {
            method: "GET",
            url,
            accept: "application/json",
            content_type: None,
            body: Vec::new(),
            idempotent: true,
            timeout_ms: None,
        }
    }

    pub fn delete(url: String) -> Self {
        Call { method: "DELETE", ..Call::get(url) }
    }

    /// A POST with a JSON body (not idempotent unless marked).
    pub fn post_json(url: String, body: &serde_json::Value) -> Self {
        Call {
            method: "POST",
            content_type: Some("application/json".into()),
            body: serde_json::to_vec(body).expect("JSON serialises"),
            idempotent: false,
            ..Call::get(url)
        }
    }

    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    pub fn timeout(mut self, ms: u64) -> Self {
        self.timeout_ms = Some(ms);
        self
    }
}

/// Why a request failed.
#[derive(Debug)]
pub enum ApiError {
    /// Daytona answered about the request itself: the sandbox is fine.
    Answer(SandboxError),
    /// The request did not reach a working sandbox: it may have died.
    Unreachable(SandboxError),
}

impl ApiError {
    /// The contract error, whichever way it failed.
    pub fn error(&self) -> &SandboxError {
        match self {
            ApiError::Answer(err) | ApiError::Unreachable(err) => err,
        }
    }
}

impl From<ApiError> for SandboxError {
    fn from(err: ApiError) -> Self {
        match err {
            ApiError::Answer(err) | ApiError::Unreachable(err) => err,
        }
    }
}

/// Send `call`; a non-2xx status becomes an error.
pub fn send(call: &Call) -> Result<Response, ApiError> {
    let request = Request {
        method: call.method.into(),
        url: call.url.clone(),
        headers: headers(call.accept, call.content_type.as_deref()),
        body: call.body.clone(),
        timeout_ms: call.timeout_ms,
    };
    let attempts = if call.idempotent { ATTEMPTS } else { 1 };
    let mut attempt = 1;
    loop {
        let last = attempt >= attempts;
        match http::send(&request) {
            Ok(response) if (200..300).contains(&response.status) => return Ok(response),
            Ok(response) if retryable_status(response.status) && !last => {
                sleep_before_retry(attempt, retry_after(&response));
            }
            Ok(response) => return Err(status_error(call, &response, attempt)),
            Err(err) => {
                let retryable = matches!(err, HttpError::Timeout(_) | HttpError::Transport(_));
                if !retryable || last {
                    return Err(transport_error(call, err, attempt));
                }
                sleep_before_retry(attempt, None);
            }
        }
        attempt += 1;
    }
}

/// The headers of every request: the key as a placeholder, and the SDK's.
fn headers(accept: &str, content_type: Option<&str>) -> Vec<(String, String)> {
    let mut headers = vec![
        // A placeholder: the host substitutes the key for allowed hosts only.
        ("Authorization".to_string(), "Bearer {{DAYTONA_API_KEY}}".to_string()),
        ("X-Daytona-Source".into(), SOURCE.into()),
        ("X-Daytona-SDK-Version".into(), SDK_VERSION.into()),
        ("User-Agent".into(), format!("{SOURCE}/{}", env!("CARGO_PKG_VERSION"))),
        ("Accept".into(), accept.into()),
    ];
    if let Some(content_type) = content_type {
        headers.push(("Content-Type".into(), content_type.into()));
    }
    headers
}

/// A download to read in parts: `GET url`, from byte `offset` on when the
/// server honours `Range` (the reader skips to it when it does not).
pub fn download(url: String, offset: u64) -> Result<(http::ResponseStream, u64), ApiError> {
    let call = Call { accept: "*/*", ..Call::get(url) };
    let mut headers = headers(call.accept, None);
    if offset > 0 {
        headers.push(("Range".into(), format!("bytes={offset}-")));
    }
    // Big files take time: allow what the host allows.
    let request = Request {
        method: "GET".into(),
        url: call.url.clone(),
        headers,
        body: Vec::new(),
        timeout_ms: Some(LONG_TRANSFER_MS),
    };
    // Idempotent, and nothing is read yet: retried as `send` retries (a
    // pooled connection the server just closed fails this way).
    let mut attempt = 1;
    let stream = loop {
        let last = attempt >= ATTEMPTS;
        match http::fetch(&request) {
            Ok(stream) if retryable_status(stream.status()) && !last => {}
            Ok(stream) => break stream,
            Err(HttpError::Timeout(_) | HttpError::Transport(_)) if !last => {}
            Err(err) => return Err(transport_error(&call, err, attempt)),
        }
        sleep_before_retry(attempt, None);
        attempt += 1;
    };
    match stream.status() {
        200 => Ok((stream, offset)),
        206 => Ok((stream, 0)),
        // Past the end: nothing to read.
        416 => Ok((stream, u64::MAX)),
        _ => Err(stream_error(&call, &stream)),
    }
}

/// An upload whose body follows in parts.
pub fn upload(url: String, content_type: &str) -> Result<http::OutgoingBody, ApiError> {
    let call = Call { method: "POST", accept: "*/*", content_type: Some(content_type.into()), ..Call::get(url) };
    let head = http::RequestHead {
        method: call.method.into(),
        url: call.url.clone(),
        headers: headers(call.accept, Some(content_type)),
        timeout_ms: Some(LONG_TRANSFER_MS),
    };
    http::start(&head).map_err(|err| transport_error(&call, err, 1))
}

/// The error a finished upload's response reports, if any.
pub fn upload_result(url: &str, body: http::OutgoingBody) -> Result<(), ApiError> {
    let call = Call { method: "POST", ..Call::get(url.to_string()) };
    let stream = body.finish().map_err(|err| transport_error(&call, err, 1))?;
    if (200..300).contains(&stream.status()) { Ok(()) } else { Err(stream_error(&call, &stream)) }
}

/// A failed streamed response as an error: its (short) body read whole.
fn stream_error(call: &Call, stream: &http::ResponseStream) -> ApiError {
    let mut body = Vec::new();
    while body.len() < 64 * 1024 {
        match stream.read(16 * 1024) {
            Ok(part) if !part.is_empty() => body.extend(part),
            _ => break,
        }
    }
    let response = Response { status: stream.status(), headers: stream.headers(), body };
    status_error(call, &response, 1)
}

/// The longest a transfer of a large file may take (the host's cap).
const LONG_TRANSFER_MS: u64 = 30 * 60 * 1000;

fn retryable_status(status: u16) -> bool {
    status == 409 || status == 429 || (500..600).contains(&status)
}

fn retry_after(response: &Response) -> Option<Duration> {
    response
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
        .and_then(|(_, v)| v.trim().parse::<f64>().ok())
        .map(|secs| Duration::from_secs_f64(secs.clamp(0.0, MAX_BACKOFF.as_secs_f64())))
}

/// 250 ms × attempt plus up to 100 ms of jitter, as the SDK does.
fn sleep_before_retry(attempt: u32, retry_after: Option<Duration>) {
    let jitter = u64::from(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos() % 100,
    );
    let backoff = Duration::from_millis(250 * u64::from(attempt) + jitter);
    std::thread::sleep(retry_after.unwrap_or(backoff).min(MAX_BACKOFF));
}

fn what(call: &Call) -> String {
    // Path only: query strings can carry file names, never credentials.
    let path = call.url.split('?').next().unwrap_or(&call.url);
    format!("{} {path}", call.method)
}

fn transport_error(call: &Call, err: HttpError, attempts: u32) -> ApiError {
    let tries = if attempts > 1 { format!(" (after {attempts} attempts)") } else { String::new() };
    match err {
        // Refused by the host before anything was sent.
        HttpError::Denied(m) => ApiError::Answer(SandboxError::PermissionDenied(format!("{}: {m}", what(call)))),
        HttpError::TooLarge(m) => ApiError::Answer(SandboxError::Other(format!("{}: {m}", what(call)))),
        HttpError::InvalidRequest(m) => ApiError::Answer(SandboxError::InvalidInput(format!("{}: {m}", what(call)))),
        HttpError::Timeout(m) => ApiError::Unreachable(SandboxError::Timeout(format!(
            "{}: Daytona did not answer in time{tries}: {m}",
            what(call)
        ))),
        HttpError::Transport(m) => ApiError::Unreachable(SandboxError::Unavailable(format!(
            "{}: cannot reach Daytona{tries}: {m}",
            what(call)
        ))),
    }
}

/// Daytona's message: `message` if a string, else `error`, else the body.
pub fn error_message(body: &[u8]) -> (String, Option<String>) {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(parsed) => {
            let message = match (&parsed.message, &parsed.error) {
                (Some(serde_json::Value::String(m)), _) => m.clone(),
                (Some(serde_json::Value::Array(items)), _) => items
                    .iter()
                    .map(|i| i.as_str().map(str::to_string).unwrap_or_else(|| i.to_string()))
                    .collect::<Vec<_>>()
                    .join(", "),
                (_, Some(e)) => e.clone(),
                _ => String::from_utf8_lossy(body).chars().take(300).collect(),
            };
            (message, parsed.code)
        }
        Err(_) => (String::from_utf8_lossy(body).chars().take(300).collect(), None),
    }
}

fn status_error(call: &Call, response: &Response, attempts: u32) -> ApiError {
    let (message, code) = error_message(&response.body);
    let status = response.status;
    let tries = if attempts > 1 { format!(" (after {attempts} attempts)") } else { String::new() };
    let text = format!("{message} ({} → {status}{tries})", what(call));
    // The daemon's own answers about a file.
    match code.as_deref() {
        Some("FILE_NOT_FOUND") => return ApiError::Answer(SandboxError::NotFound(message)),
        Some("FILE_ACCESS_DENIED") => return ApiError::Answer(SandboxError::PermissionDenied(message)),
        _ => {}
    }
    match status {
        401 => ApiError::Answer(SandboxError::Auth(format!(
            "Daytona rejected the credentials: {text}. Check DAYTONA_API_KEY (and DAYTONA_API_URL for self-hosted Daytona)."
        ))),
        403 => ApiError::Answer(SandboxError::PermissionDenied(text)),
        400 | 422 => ApiError::Answer(SandboxError::InvalidInput(text)),
        // Not a file the daemon looked for: no such sandbox, or no route to it.
        404 => ApiError::Unreachable(SandboxError::NotFound(text)),
        408 | 504 => ApiError::Unreachable(SandboxError::Timeout(text)),
        409 | 429 | 500..=599 => ApiError::Unreachable(SandboxError::Unavailable(text)),
        _ => ApiError::Unreachable(SandboxError::Other(text)),
    }
}

/// Percent-encode a query value the way `URLSearchParams` does for `/`
/// (everything but unreserved characters is encoded; spaces as `%20`).
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(byte as char),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// Parse a JSON response body, naming the call when Daytona sent something else.
pub fn json<T: serde::de::DeserializeOwned>(call_url: &str, response: &Response) -> Result<T, ApiError> {
    serde_json::from_slice(&response.body).map_err(|err| {
        ApiError::Unreachable(SandboxError::Other(format!(
            "unexpected response from Daytona ({}): {err}: {}",
            call_url.split('?').next().unwrap_or(call_url),
            String::from_utf8_lossy(&response.body).chars().take(200).collect::<String>()
        )))
    })
}
