//! The HTTP routes: the runs page (`GET /`, [`super::ui`]), `GET /runs`,
//! `POST /agents/<name>/<id>`, `GET /runs/<runId>`,
//! `GET /runs/<runId>/events`, `POST /runs/<runId>/cancel`,
//! `GET /sessions/<agent>/<id>`, `GET /healthz`, `GET /metrics`; anything
//! else is a JSON `404` or `405`.
//!
//! Two layers wrap them all: the outermost gives every `POST
//! /agents/…` request its run id up front (so that every answer to it,
//! refusals included, carries `x-flue-run-id`), puts any error answer that
//! is not JSON yet (axum's extractor rejections) in the one error shape,
//! and writes the request's event line; inside it the [`http_guard`]
//! refuses what it must.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::admission::Ticket;
use super::errors::{self, ApiError, ErrorKind};
use super::runs::RunTask;
use super::sse::{self, LiveFeed};
use super::store::CancelRequest;
use super::{ServerState, bodies, http_guard, reload};

/// The run id a `POST /agents/…` request was given.
#[derive(Clone)]
struct RunId(String);

/// The server's routes, behind the [`http_guard`].
pub fn router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/", get(super::ui::index))
        .route("/ui/app.js", get(super::ui::asset))
        .route("/ui/app.css", get(super::ui::asset))
        .route("/ui/login", post(super::ui::login))
        .route("/ui/logout", post(super::ui::logout))
        .route("/runs", get(list_runs))
        .route("/agents", get(list_agents))
        .route("/agents/{name}/{id}", post(invoke))
        .route("/runs/{run_id}", get(run_record))
        .route("/runs/{run_id}/events", get(run_events))
        .route("/runs/{run_id}/cancel", post(cancel_run))
        .route("/sessions/{agent}/{id}", get(sessions))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(state.clone(), http_guard::guard))
        .layer(axum::middleware::from_fn_with_state(state.clone(), identify_and_log))
        .with_state(state)
}

/// Give `POST /agents/…` its run id, and log every request once answered.
async fn identify_and_log(
    State(state): State<Arc<ServerState>>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let started = Instant::now();
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let run_id = (method == Method::POST && path.starts_with("/agents/"))
        .then(|| format!("run_{}", uuid::Uuid::new_v4().simple()));
    let sends_body = request.headers().get("content-length").is_some_and(|v| v != "0")
        || request.headers().contains_key("transfer-encoding");
    if let Some(id) = &run_id {
        request.extensions_mut().insert(RunId(id.clone()));
    }
    let mut response = errors::in_error_shape(next.run(request).await).await;
    if let Some(id) = &run_id
        && let Ok(value) = HeaderValue::from_str(id)
    {
        response.headers_mut().insert("x-flue-run-id", value);
    }
    // A refusal may come before the body was read: the connection cannot
    // carry another request, so tell the client not to reuse it.
    if sends_body && (response.status().is_client_error() || response.status().is_server_error()) {
        response.headers_mut().insert("connection", HeaderValue::from_static("close"));
    }
    let shown_id = response.headers().get("x-flue-run-id").and_then(|v| v.to_str().ok());
    state.events.request(method.as_str(), &path, response.status().as_u16(), shown_id, started.elapsed());
    response
}

async fn not_found(method: Method, uri: axum::http::Uri) -> Response {
    let path = crate::events::one_line(uri.path(), 200);
    ApiError::new(
        ErrorKind::NotFound,
        format!(
            "nothing at {method} {path}: POST /agents/<name>/<id>, GET /runs/<runId>, GET /runs/<runId>/events, \
             POST /runs/<runId>/cancel, GET /sessions/<agent>/<id>, GET /healthz and GET /metrics are"
        ),
    )
    .into_response()
}

async fn method_not_allowed(method: Method, uri: axum::http::Uri) -> Response {
    let path = crate::events::one_line(uri.path(), 200);
    let takes_post = path.starts_with("/agents/") || (path.starts_with("/runs/") && path.ends_with("/cancel"));
    let allowed = if takes_post { "POST" } else { "GET" };
    let mut response =
        ApiError::new(ErrorKind::MethodNotAllowed, format!("{path} takes {allowed}, not {method}")).into_response();
    response.headers_mut().insert("allow", HeaderValue::from_static(allowed));
    response
}

/// The webhook agents, with what each says it does and its limits.
async fn list_agents(State(state): State<Arc<ServerState>>) -> Response {
    reload::refresh(&state).await;
    let agents = state.agents.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut served: Vec<Value> = agents
        .iter()
        .filter(|(_, agent)| agent.manifest.webhook && agent.refused.is_none())
        .map(|(name, agent)| {
            let manifest = &agent.manifest;
            json!({
                "name": name,
                "description": manifest.description,
                "deadlineSecs": manifest.deadline_secs,
                "memoryMib": manifest.memory_mib,
                "sandbox": manifest.sandbox.clone().unwrap_or_else(|| state.config.sandbox.clone()),
                "sandboxPerId": manifest.sandbox_per_id,
            })
        })
        .collect();
    served.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    axum::Json(json!({ "agents": served })).into_response()
}

/// `GET /runs?agent=&status=&id=&before=&limit=`: runs newest first, a
/// page at a time (`limit` 1–200, default 50); `next` is the `before` of
/// the following page.
async fn list_runs(
    State(state): State<Arc<ServerState>>,
    axum::extract::Query(params): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    let given = |name: &str| params.get(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let before = match given("before") {
        Some(text) => match super::store::Cursor::parse(&text) {
            Some(cursor) => Some(cursor),
            None => {
                return ApiError::new(
                    ErrorKind::BadRequest,
                    "before= is a page's next value, like 1700000000000:run_…",
                )
                .into_response();
            }
        },
        None => None,
    };
    let limit = match given("limit").map(|v| v.parse::<usize>()) {
        None => 50,
        Some(Ok(n)) if (1..=super::store::MAX_PAGE).contains(&n) => n,
        Some(_) => {
            let why = format!("limit= is a number of runs from 1 to {}", super::store::MAX_PAGE);
            return ApiError::new(ErrorKind::BadRequest, why).into_response();
        }
    };
    let query =
        super::store::RunQuery { agent: given("agent"), status: given("status"), id: given("id"), before, limit };
    match state.store.off_thread(move |store| store.page(&query)).await {
        Some(page) => axum::Json(page).into_response(),
        None => ApiError::new(ErrorKind::Internal, "the run store did not answer").into_response(),
    }
}

async fn healthz(State(state): State<Arc<ServerState>>) -> Response {
    let pooled = state.host.read().unwrap_or_else(|e| e.into_inner()).runtime().pooled;
    axum::Json(json!({"ok": true, "allocator": if pooled { "pooling" } else { "on-demand" }})).into_response()
}

async fn metrics(State(state): State<Arc<ServerState>>) -> Response {
    let ready = state.host.read().unwrap_or_else(|e| e.into_inner()).registry().ready_sandboxes();
    ([("content-type", "text/plain; version=0.0.4")], state.metrics.render(ready)).into_response()
}

async fn run_record(State(state): State<Arc<ServerState>>, Path(run_id): Path<String>) -> Response {
    match state.store.get(&run_id) {
        Some(record) => {
            let mut response = axum::Json(record).into_response();
            if let Ok(value) = HeaderValue::from_str(&run_id) {
                response.headers_mut().insert("x-flue-run-id", value);
            }
            response
        }
        None => ApiError::new(ErrorKind::NotFound, format!("no run {}", crate::events::one_line(&run_id, 100)))
            .into_response(),
    }
}

/// `GET /runs/<runId>/events`: the run's events as server-sent events, from
/// its first, as they happen (wherever it runs), then its `result` or
/// `error`; for a run that ended, all of them at once.
async fn run_events(State(state): State<Arc<ServerState>>, Path(run_id): Path<String>) -> Response {
    let id = run_id.clone();
    let known = state.store.off_thread(move |store| store.status(&id)).await.flatten().is_some();
    if !known {
        return ApiError::new(ErrorKind::NotFound, format!("no run {}", crate::events::one_line(&run_id, 100)))
            .into_response();
    }
    let mut response = sse::follow(state.store.clone(), run_id.clone());
    if let Ok(value) = HeaderValue::from_str(&run_id) {
        response.headers_mut().insert("x-flue-run-id", value);
    }
    response
}

/// `POST /runs/<runId>/cancel`: ask a queued or running run to stop. The
/// run stops within a second (its agent, model loop and commands; its
/// sandboxes are deleted unless kept) and ends `cancelled`; `202` says the
/// request was taken, `GET /runs/<runId>` shows the end.
async fn cancel_run(State(state): State<Arc<ServerState>>, Path(run_id): Path<String>) -> Response {
    let shown = crate::events::one_line(&run_id, 100);
    let mut response = match state.store.request_cancel(&run_id) {
        CancelRequest::Requested => {
            (StatusCode::ACCEPTED, axum::Json(json!({"runId": run_id, "status": "cancelling"}))).into_response()
        }
        CancelRequest::AlreadyEnded(status) => {
            ApiError::new(ErrorKind::RunEnded, format!("run {shown} has already ended ({status}): nothing to cancel"))
                .into_response()
        }
        CancelRequest::Unknown => ApiError::new(ErrorKind::NotFound, format!("no run {shown}")).into_response(),
    };
    if let Ok(value) = HeaderValue::from_str(&run_id) {
        response.headers_mut().insert("x-flue-run-id", value);
    }
    response
}

/// `GET /sessions/<agent>/<id>`: the conversations agent `<agent>` keeps for
/// id `<id>`, each with its messages, and the id's sandbox when the agent
/// has one per id (`sandbox-per-id`).
async fn sessions(State(state): State<Arc<ServerState>>, Path((agent, id)): Path<(String, String)>) -> Response {
    let conversations = state.store.conversations(&agent, &id);
    let sandbox = id_sandbox(&state, &agent, &id).await;
    if conversations.is_empty() && sandbox.is_none() {
        let (agent, id) = (crate::events::one_line(&agent, 100), crate::events::one_line(&id, 100));
        return ApiError::new(
            ErrorKind::NotFound,
            format!("agent {agent} keeps no conversation or sandbox for id {id}"),
        )
        .into_response();
    }
    axum::Json(json!({"agent": agent, "id": id, "sessions": conversations, "sandbox": sandbox})).into_response()
}

/// The sandbox `agent` keeps for `id`, if it keeps one per id and it
/// exists: its connector, id and state.
async fn id_sandbox(state: &ServerState, agent: &str, id: &str) -> Option<Value> {
    let entry = state.agents.lock().unwrap_or_else(|e| e.into_inner()).get(agent).cloned()?;
    if !entry.manifest.sandbox_per_id {
        return None;
    }
    let name = entry.manifest.sandbox.clone().unwrap_or_else(|| state.config.sandbox.clone());
    let host = state.host.read().unwrap_or_else(|e| e.into_inner()).clone();
    let connector = host.connector(&name, &crate::events::EventLog::discard()).await.ok()?;
    let label = crate::run::ownership::for_id(agent, id);
    let found = connector.list(std::slice::from_ref(&label)).await.ok()?;
    let sandbox = found.into_iter().find(|sandbox| sandbox.labels.contains(&label))?;
    Some(json!({"connector": name, "id": sandbox.id, "state": sandbox.state}))
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
    Extension(RunId(run_id)): Extension<RunId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match admit(&state, &name, &invocation, &headers, body, &run_id).await {
        Ok(response) => response,
        Err(err) => {
            let retry = matches!(err.kind, ErrorKind::QueueFull | ErrorKind::ServerBusy);
            let mut response = err.into_response();
            if retry {
                response.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
            }
            response
        }
    }
}

async fn admit(
    state: &Arc<ServerState>,
    name: &str,
    invocation: &str,
    headers: &HeaderMap,
    body: Body,
    run_id: &str,
) -> Result<Response, ApiError> {
    reload::refresh(state).await;
    if let Some(broken) = state.config_error.lock().unwrap_or_else(|e| e.into_inner()).clone() {
        return Err(ApiError::new(
            ErrorKind::ConfigError,
            format!("the project's configuration is broken; fix it and retry: {broken}"),
        ));
    }
    let agent = state.agents.lock().unwrap_or_else(|e| e.into_inner()).get(name).cloned();
    let Some(agent) = agent.filter(|a| a.manifest.webhook) else {
        return Err(ApiError::new(
            ErrorKind::UnknownAgent,
            format!(
                "no webhook agent {name:?} (agents/{name} that declares webhook = true, or with webhook = true in \
                 flue.toml; GET /agents lists them)"
            ),
        ));
    };
    if let Some(why) = &agent.refused {
        return Err(ApiError::new(ErrorKind::AgentOutsideProject, format!("agent {name:?} is not served: {why}")));
    }
    let config = &state.config;
    let body =
        bodies::read(headers, body, config.body_limit, config.body_timeout, &state.body_budget, &state.metrics).await?;
    let payload: Value = if body.bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&body.bytes)
            .map_err(|err| ApiError::new(ErrorKind::BadPayload, format!("the body is not JSON: {err}")))?
    };
    // Its memory goes back to the budget now, not when the run ends.
    drop(body);
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let mode = if header("x-webhook").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        Mode::Background
    } else if header("accept").is_some_and(|v| v.contains("text/event-stream")) {
        Mode::Stream
    } else {
        Mode::Sync
    };
    let full = || {
        state.metrics.rejected.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ApiError::new(ErrorKind::QueueFull, "too many runs: the queue is full, retry later")
    };
    // A background run starts here if a slot is free now; otherwise it
    // waits in the store's shared queue, for whichever server has room first.
    let ticket = if matches!(mode, Mode::Background) {
        match Ticket::admit_with_slot(state, run_id, name, invocation, &payload) {
            Some(ticket) => ticket,
            None => {
                return if Ticket::queue_in_store(state, run_id, name, invocation, payload).await {
                    Ok((StatusCode::ACCEPTED, axum::Json(json!({"runId": run_id}))).into_response())
                } else {
                    Err(full())
                };
            }
        }
    } else {
        Ticket::admit(state, run_id, name, invocation, &payload).ok_or_else(full)?
    };
    let live = matches!(mode, Mode::Stream).then(|| LiveFeed::new(run_id, state.metrics.clone()));
    let task = RunTask {
        state: state.clone(),
        name: name.to_string(),
        invocation: invocation.to_string(),
        agent,
        payload,
        run_id: run_id.to_string(),
        journaled: state.config.journal_limit.is_some(),
    };
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let feed = live.clone();
    tokio::spawn(async move {
        let _ = done_tx.send(task.run(ticket, feed).await);
    });
    Ok(match (mode, live) {
        (Mode::Stream, Some(live)) => sse::response(live),
        (Mode::Background, _) => (StatusCode::ACCEPTED, axum::Json(json!({"runId": run_id}))).into_response(),
        _ => match done_rx.await {
            Ok(Ok(result)) => axum::Json(json!({"result": result, "runId": run_id})).into_response(),
            Ok(Err(err)) => {
                (err.kind.status(), axum::Json(json!({"error": err.to_json(), "runId": run_id}))).into_response()
            }
            Err(_) => ApiError::new(ErrorKind::Internal, "the run was lost (a bug, please report it)").into_response(),
        },
    })
}
