//! The HTTP routes: `POST /agents/<name>/<id>`, `GET /runs/<runId>`,
//! `GET /healthz`, `GET /metrics`.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::admission::Ticket;
use super::runs::RunTask;
use super::sse::{self, LiveFeed};
use super::{ServerState, error, http_guard, reload};

/// The server's routes, behind the [`http_guard`].
pub fn router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/agents/{name}/{id}", post(invoke))
        .route("/runs/{run_id}", get(run_record))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(state.clone(), http_guard::guard))
        .with_state(state)
}

async fn healthz(State(state): State<Arc<ServerState>>) -> Response {
    let pooled = state.host.read().unwrap_or_else(|e| e.into_inner()).runtime().pooled;
    axum::Json(json!({"ok": true, "allocator": if pooled { "pooling" } else { "on-demand" }})).into_response()
}

async fn metrics(State(state): State<Arc<ServerState>>) -> Response {
    ([("content-type", "text/plain; version=0.0.4")], state.metrics.render()).into_response()
}

async fn run_record(State(state): State<Arc<ServerState>>, Path(run_id): Path<String>) -> Response {
    match state.store.get(&run_id) {
        Some(record) => axum::Json(record).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no run {run_id}")),
    }
}

/// How a request wants its answer.
enum Mode {
    Sync,
    Stream,
    Background,
}

async fn invoke(
    State(state): State<Arc<ServerState>>,
    Path((name, invocation)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let run_id = format!("run_{}", uuid::Uuid::new_v4().simple());
    let mut response = admit(&state, &name, &invocation, &headers, body, &run_id).await;
    if let Ok(value) = HeaderValue::from_str(&run_id) {
        response.headers_mut().insert("x-flue-run-id", value);
    }
    response
}

/// Why a body could not be read.
enum BodyError {
    TooLarge,
    TimedOut,
    Broken(String),
}

/// The request body, at most `limit` bytes, within `timeout`.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, BodyError> {
    let declared = headers.get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let read = async {
        let mut stream = body.into_data_stream();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|err| BodyError::Broken(err.to_string()))?;
            if bytes.len() + chunk.len() > limit {
                return Err(BodyError::TooLarge);
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(bytes))
    };
    tokio::time::timeout(timeout, read).await.unwrap_or(Err(BodyError::TimedOut))
}

async fn admit(
    state: &Arc<ServerState>,
    name: &str,
    invocation: &str,
    headers: &HeaderMap,
    body: Body,
    run_id: &str,
) -> Response {
    reload::refresh(state).await;
    let agent = state.agents.lock().unwrap_or_else(|e| e.into_inner()).get(name).cloned();
    let Some(agent) = agent.filter(|a| a.manifest.webhook) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no webhook agent {name:?} (agents/{name} with webhook = true in flue.toml)"),
        );
    };
    if let Some(why) = &agent.refused {
        return error(StatusCode::FORBIDDEN, format!("agent {name:?} is not served: {why}"));
    }
    let config = &state.config;
    let body = match read_body(headers, body, config.body_limit, config.body_timeout).await {
        Ok(body) => body,
        Err(BodyError::TooLarge) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {} KiB (--max-body-kib)", config.body_limit / 1024),
            );
        }
        Err(BodyError::TimedOut) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                format!("the body did not arrive within {} s (--body-timeout)", config.body_timeout.as_secs()),
            );
        }
        Err(BodyError::Broken(reason)) => {
            return error(StatusCode::BAD_REQUEST, format!("cannot read the body: {reason}"));
        }
    };
    let payload: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(value) => value,
            Err(err) => return error(StatusCode::BAD_REQUEST, format!("the body is not JSON: {err}")),
        }
    };
    let Some(ticket) = Ticket::admit(state, run_id, name, invocation) else {
        state.metrics.rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut response = error(StatusCode::TOO_MANY_REQUESTS, "too many runs: the queue is full, retry later");
        response.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
        return response;
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let mode = if header("x-webhook").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        Mode::Background
    } else if header("accept").is_some_and(|v| v.contains("text/event-stream")) {
        Mode::Stream
    } else {
        Mode::Sync
    };
    let live = matches!(mode, Mode::Stream).then(|| LiveFeed::new(run_id, state.metrics.clone()));
    let task = RunTask {
        state: state.clone(),
        name: name.to_string(),
        invocation: invocation.to_string(),
        agent,
        payload,
        run_id: run_id.to_string(),
    };
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let feed = live.clone();
    tokio::spawn(async move {
        let _ = done_tx.send(task.run(ticket, feed).await);
    });
    match (mode, live) {
        (Mode::Stream, Some(live)) => sse::response(live),
        (Mode::Background, _) => (StatusCode::ACCEPTED, axum::Json(json!({"runId": run_id}))).into_response(),
        _ => match done_rx.await {
            Ok(Ok(result)) => axum::Json(json!({"result": result, "runId": run_id})).into_response(),
            Ok(Err(message)) => {
                (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(json!({"error": message, "runId": run_id})))
                    .into_response()
            }
            Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the run was lost"),
        },
    }
}
