//! `flue serve` and `flue dev`: agents as webhook endpoints, many runs at
//! once in one process, each in its own store with its own sandboxes.
//!
//! * `POST /agents/<name>/<id>` with a JSON payload runs agent `<name>`
//!   (one that opted in to webhooks, see [`agents`]): synchronously
//!   (`200 {"result": …}`), as server-sent events (`Accept:
//!   text/event-stream`: the run's events, then `result` or `error`), or in
//!   the background (`X-Webhook: true`: `202 {"runId": …}`). Every answer
//!   carries `x-flue-run-id`.
//! * `GET /runs/<runId>`: status, result and events, from the [`store`].
//! * `GET /healthz`; `GET /metrics` in Prometheus text format.
//!
//! Admission: at most `max_concurrent` runs at once, `queue` more waiting;
//! past that, `429` with `Retry-After`. Shutdown: stop accepting, let runs
//! finish for a grace period, then stop them (their sandboxes are deleted).

pub mod agents;
pub mod store;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::events::{Event, EventLog, EventSink};
use crate::host::Host;
use crate::run::{AgentRun, RunSettings};
use crate::runtime::Limits;

/// How a server runs.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The project: `agents/` and `flue.toml`.
    pub project: PathBuf,
    /// Required as `Authorization: Bearer …` when set.
    pub token: Option<String>,
    /// The largest request body.
    pub body_limit: usize,
    /// Runs at once.
    pub max_concurrent: usize,
    /// Runs waiting for a slot; past that, 429.
    pub queue: usize,
    /// Default limits of a run (an agent's `flue.toml` may change them).
    pub limits: Limits,
    /// The connector of a run's sandbox, unless the agent's manifest names one.
    pub sandbox: String,
    /// How long runs may finish after a shutdown signal.
    pub grace: Duration,
    /// The run store's file.
    pub store: PathBuf,
    /// Runs kept in the store.
    pub retention: usize,
    /// `flue dev`: look for agents (and rebuild them) at every request.
    pub dev: bool,
}

#[derive(Default)]
struct Metrics {
    started: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    rejected: AtomicU64,
    in_flight: AtomicUsize,
    queued: AtomicUsize,
    duration_ms_sum: AtomicU64,
}

/// Builds a fresh host (configuration and connectors read again).
pub type BuildHost =
    Box<dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Host>> + Send>> + Send + Sync>;

/// What a [`Reload`] saw last: each watched path's modification time.
type Fingerprint = Vec<(PathBuf, Option<std::time::SystemTime>)>;

/// `flue dev`: how to build the host again, and what to watch for that.
pub struct Reload {
    /// Builds a fresh host.
    pub build: BuildHost,
    /// Files and directories whose change calls for a new host (`--env`
    /// files, `.env`, the connectors directory).
    pub watch: Vec<PathBuf>,
}

/// Modification times of what a [`Reload`] watches (directories: of their entries).
fn fingerprint(paths: &[PathBuf]) -> Fingerprint {
    let mut seen = Vec::new();
    for path in paths {
        seen.push((path.clone(), std::fs::metadata(path).and_then(|m| m.modified()).ok()));
        if let Ok(entries) = std::fs::read_dir(path) {
            let mut inner: Vec<_> =
                entries.flatten().map(|e| (e.path(), e.metadata().and_then(|m| m.modified()).ok())).collect();
            inner.sort();
            seen.extend(inner);
        }
    }
    seen
}

struct ServerState {
    host: std::sync::RwLock<Host>,
    reload: Option<(Reload, tokio::sync::Mutex<Fingerprint>)>,
    config: ServeConfig,
    agents: Mutex<HashMap<String, agents::AgentEntry>>,
    store: store::RunStore,
    metrics: Metrics,
    slots: Semaphore,
    /// Set when runs still going must stop (the grace period is over).
    cancel: watch::Receiver<bool>,
    /// Runs not yet finished, detached ones included.
    active: AtomicUsize,
    idle: tokio::sync::Notify,
}

/// A JSON error answer.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

/// Serve until SIGINT or SIGTERM, then shut down gracefully. Prints the
/// base URL once listening.
pub async fn serve(host: Host, config: ServeConfig, reload: Option<Reload>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|err| anyhow::anyhow!("cannot listen on {}: {err}", config.listen))?;
    let addr = listener.local_addr()?;
    let found = agents::discover(&config.project)?;
    let store = store::RunStore::open(&config.store, config.retention)?;
    let (cancel_tx, cancel) = watch::channel(false);
    let reload = reload.map(|reload| {
        let seen = fingerprint(&reload.watch);
        (reload, tokio::sync::Mutex::new(seen))
    });
    let state = Arc::new(ServerState {
        host: std::sync::RwLock::new(host),
        reload,
        agents: Mutex::new(found),
        store,
        metrics: Metrics::default(),
        slots: Semaphore::new(config.max_concurrent.max(1)),
        cancel,
        active: AtomicUsize::new(0),
        idle: tokio::sync::Notify::new(),
        config: config.clone(),
    });
    let webhooks: Vec<String> = {
        let agents = state.agents.lock().expect("lock");
        let mut names: Vec<String> =
            agents.iter().filter(|(_, a)| a.manifest.webhook).map(|(n, _)| n.clone()).collect();
        names.sort();
        names
    };
    let app = Router::new()
        .route("/agents/{name}/{id}", post(invoke))
        .route("/runs/{run_id}", get(run_record))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .layer(axum::middleware::from_fn_with_state(state.clone(), authorize))
        .layer(DefaultBodyLimit::max(config.body_limit))
        .with_state(state.clone());
    println!("flue {} listening on http://{addr}", if config.dev { "dev" } else { "serve" });
    println!(
        "webhooks: {}",
        if webhooks.is_empty() { "(none: set webhook = true in flue.toml)".to_string() } else { webhooks.join(", ") }
    );
    use std::io::Write as _;
    let _ = std::io::stdout().flush();

    let grace = config.grace;
    let shutdown = async move {
        let reason = crate::run::signals::StopSignals::new().next().await.reason;
        eprintln!("flue: {reason}: no new runs; letting runs in flight finish (up to {} s)", grace.as_secs());
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let _ = cancel_tx.send(true);
        });
    };
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    // Detached (webhook) runs may still be going: wait for them, and for
    // the cleanup of those the grace period stopped.
    while state.active.load(Ordering::SeqCst) > 0 {
        let notified = state.idle.notified();
        if state.active.load(Ordering::SeqCst) == 0 {
            break;
        }
        notified.await;
    }
    eprintln!("flue: stopped; every run's result is in the run store");
    Ok(())
}

async fn authorize(
    State(state): State<Arc<ServerState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(token) = &state.config.token {
        let given = request.headers().get("authorization").and_then(|v| v.to_str().ok());
        let expected = format!("Bearer {token}");
        let matches = given.is_some_and(|g| constant_time_eq(g.as_bytes(), expected.as_bytes()));
        if !matches && request.uri().path() != "/healthz" {
            return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token (Authorization: Bearer …)");
        }
    }
    next.run(request).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn healthz(State(state): State<Arc<ServerState>>) -> Response {
    let pooled = state.host.read().unwrap_or_else(|e| e.into_inner()).runtime().pooled;
    Json(json!({"ok": true, "allocator": if pooled { "pooling" } else { "on-demand" }})).into_response()
}

async fn metrics(State(state): State<Arc<ServerState>>) -> Response {
    let m = &state.metrics;
    let finished = m.succeeded.load(Ordering::Relaxed) + m.failed.load(Ordering::Relaxed);
    let text = format!(
        "# HELP flue_runs_started_total Runs started.\n# TYPE flue_runs_started_total counter\n\
         flue_runs_started_total {}\n\
         # HELP flue_runs_finished_total Runs finished, by outcome.\n# TYPE flue_runs_finished_total counter\n\
         flue_runs_finished_total{{outcome=\"succeeded\"}} {}\nflue_runs_finished_total{{outcome=\"failed\"}} {}\n\
         # HELP flue_runs_rejected_total Runs refused with 429 (queue full).\n# TYPE flue_runs_rejected_total counter\n\
         flue_runs_rejected_total {}\n\
         # HELP flue_runs_in_flight Runs running now.\n# TYPE flue_runs_in_flight gauge\nflue_runs_in_flight {}\n\
         # HELP flue_runs_queued Runs waiting for a slot.\n# TYPE flue_runs_queued gauge\nflue_runs_queued {}\n\
         # HELP flue_run_duration_seconds Run durations.\n# TYPE flue_run_duration_seconds summary\n\
         flue_run_duration_seconds_sum {:.3}\nflue_run_duration_seconds_count {finished}\n",
        m.started.load(Ordering::Relaxed),
        m.succeeded.load(Ordering::Relaxed),
        m.failed.load(Ordering::Relaxed),
        m.rejected.load(Ordering::Relaxed),
        m.in_flight.load(Ordering::Relaxed),
        m.queued.load(Ordering::Relaxed),
        m.duration_ms_sum.load(Ordering::Relaxed) as f64 / 1000.0,
    );
    ([("content-type", "text/plain; version=0.0.4")], text).into_response()
}

async fn run_record(State(state): State<Arc<ServerState>>, Path(run_id): Path<String>) -> Response {
    match state.store.get(&run_id) {
        Some(record) => Json(record).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("no run {run_id}")),
    }
}

/// Forwards a run's events to the run (for the store) and to an SSE stream.
struct RunSink {
    events: Mutex<Vec<Value>>,
    live: Option<mpsc::UnboundedSender<Value>>,
}

/// The most events a run keeps in the store.
const MAX_STORED_EVENTS: usize = 2000;

impl EventSink for RunSink {
    fn record(&self, event: &Event) {
        let value = serde_json::to_value(event).unwrap_or(Value::Null);
        if let Some(live) = &self.live {
            let _ = live.send(value.clone());
        }
        let mut events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if events.len() < MAX_STORED_EVENTS {
            events.push(value);
        }
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
    body: Bytes,
) -> Response {
    let run_id = format!("run_{}", uuid::Uuid::new_v4().simple());
    let mut response = admit(&state, &name, &invocation, &headers, &body, &run_id).await;
    if let Ok(value) = HeaderValue::from_str(&run_id) {
        response.headers_mut().insert("x-flue-run-id", value);
    }
    response
}

async fn admit(
    state: &Arc<ServerState>,
    name: &str,
    invocation: &str,
    headers: &HeaderMap,
    body: &Bytes,
    run_id: &str,
) -> Response {
    if state.config.dev
        && let Ok(found) = agents::discover(&state.config.project)
    {
        *state.agents.lock().expect("lock") = found;
    }
    if let Some((reload, seen)) = &state.reload {
        let mut seen = seen.lock().await;
        let now = fingerprint(&reload.watch);
        if *seen != now {
            // Runs in flight keep the host they started with.
            match (reload.build)().await {
                Ok(host) => {
                    *state.host.write().unwrap_or_else(|e| e.into_inner()) = host;
                    eprintln!("flue: configuration or connectors changed: reloaded");
                }
                Err(err) => eprintln!("flue: could not reload the configuration or connectors: {err:#}"),
            }
            *seen = now;
        }
    }
    let Some(agent) = state.agents.lock().expect("lock").get(name).cloned().filter(|a| a.manifest.webhook) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no webhook agent {name:?} (agents/{name} with webhook = true in flue.toml)"),
        );
    };
    let payload: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        match serde_json::from_slice(body) {
            Ok(value) => value,
            Err(err) => return error(StatusCode::BAD_REQUEST, format!("the body is not JSON: {err}")),
        }
    };
    let waiting = state.metrics.queued.load(Ordering::SeqCst);
    if state.slots.available_permits() == 0 && waiting >= state.config.queue {
        state.metrics.rejected.fetch_add(1, Ordering::Relaxed);
        let mut response = error(StatusCode::TOO_MANY_REQUESTS, "too many runs: the queue is full, retry later");
        response.headers_mut().insert("retry-after", HeaderValue::from_static("1"));
        return response;
    }
    let mode = if headers.get("x-webhook").and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        Mode::Background
    } else if headers.get("accept").and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/event-stream")) {
        Mode::Stream
    } else {
        Mode::Sync
    };
    state.store.insert(run_id, name, invocation);
    let (live_tx, live_rx) = match mode {
        Mode::Stream => {
            let (tx, rx) = mpsc::unbounded_channel();
            (Some(tx), Some(rx))
        }
        _ => (None, None),
    };
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    state.active.fetch_add(1, Ordering::SeqCst);
    state.metrics.queued.fetch_add(1, Ordering::SeqCst);
    let task = RunTask {
        state: state.clone(),
        name: name.to_string(),
        invocation: invocation.to_string(),
        agent,
        payload,
        run_id: run_id.to_string(),
    };
    tokio::spawn(async move {
        let outcome = task.run(live_tx).await;
        let _ = done_tx.send(outcome);
    });
    match mode {
        Mode::Background => (StatusCode::ACCEPTED, Json(json!({"runId": run_id}))).into_response(),
        Mode::Sync => match done_rx.await {
            Ok(Ok(result)) => Json(json!({"result": result, "runId": run_id})).into_response(),
            Ok(Err(message)) => {
                (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": message, "runId": run_id}))).into_response()
            }
            Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the run was lost"),
        },
        Mode::Stream => {
            let live = live_rx.expect("stream mode has a channel");
            sse_response(live, done_rx)
        }
    }
}

/// Server-sent events: each run event as `event: event`, then `result` or
/// `error`.
fn sse_response(
    live: mpsc::UnboundedReceiver<Value>,
    done: tokio::sync::oneshot::Receiver<Result<Value, String>>,
) -> Response {
    let stream = futures_util::stream::unfold((live, Some(done)), |(mut live, done)| async move {
        match live.recv().await {
            Some(event) => Some((
                Ok::<_, std::convert::Infallible>(Bytes::from(format!("event: event\ndata: {event}\n\n"))),
                (live, done),
            )),
            None => {
                let done = done?;
                let last = match done.await {
                    Ok(Ok(result)) => format!("event: result\ndata: {}\n\n", json!({"result": result})),
                    Ok(Err(message)) => format!("event: error\ndata: {}\n\n", json!({"error": message})),
                    Err(_) => format!("event: error\ndata: {}\n\n", json!({"error": "the run was lost"})),
                };
                Some((Ok(Bytes::from(last)), (live, None)))
            }
        }
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(stream))
        .expect("response")
}

struct RunTask {
    state: Arc<ServerState>,
    name: String,
    invocation: String,
    agent: agents::AgentEntry,
    payload: Value,
    run_id: String,
}

impl RunTask {
    async fn run(self, live: Option<mpsc::UnboundedSender<Value>>) -> Result<Value, String> {
        let state = self.state.clone();
        let outcome = self.execute(live).await;
        state.active.fetch_sub(1, Ordering::SeqCst);
        state.idle.notify_waiters();
        outcome
    }

    async fn execute(self, live: Option<mpsc::UnboundedSender<Value>>) -> Result<Value, String> {
        let state = &self.state;
        let permit = state.slots.acquire().await;
        state.metrics.queued.fetch_sub(1, Ordering::SeqCst);
        let Ok(_permit) = permit else { return Err("the server is shutting down".into()) };
        state.metrics.in_flight.fetch_add(1, Ordering::SeqCst);
        state.metrics.started.fetch_add(1, Ordering::Relaxed);
        state.store.running(&self.run_id);
        let started = Instant::now();
        let sink = Arc::new(RunSink { events: Mutex::default(), live });
        let events = EventLog::new(sink.clone());
        let outcome = self.run_agent(&events).await;
        drop(events);
        state.metrics.in_flight.fetch_sub(1, Ordering::SeqCst);
        state.metrics.duration_ms_sum.fetch_add(started.elapsed().as_millis() as u64, Ordering::Relaxed);
        let counter = if outcome.is_ok() { &state.metrics.succeeded } else { &state.metrics.failed };
        counter.fetch_add(1, Ordering::Relaxed);
        let stored = sink.events.lock().unwrap_or_else(|e| e.into_inner()).clone();
        state.store.finish(&self.run_id, outcome.as_ref().map_err(String::as_str), &stored);
        outcome
    }

    async fn run_agent(&self, events: &EventLog) -> Result<Value, String> {
        let source = self.agent.source.clone();
        let build_events = events.clone();
        // Source agents are built when stale (this is how `flue dev` picks up edits).
        let wasm_path = tokio::task::spawn_blocking(move || {
            if source.is_dir() {
                crate::guest::build(&source, &build_events).map_err(|e| e.to_string())
            } else {
                Ok(source)
            }
        })
        .await
        .map_err(|err| err.to_string())??;
        let wasm =
            tokio::fs::read(&wasm_path).await.map_err(|err| format!("cannot read {}: {err}", wasm_path.display()))?;
        let manifest = &self.agent.manifest;
        let mut limits = self.state.config.limits.clone();
        if let Some(secs) = manifest.deadline_secs {
            limits.deadline = Duration::from_secs(secs);
        }
        if let Some(mib) = manifest.memory_mib {
            limits.agent_memory = mib * 1024 * 1024;
        }
        let run = AgentRun {
            label: self.name.clone(),
            wasm,
            id: self.invocation.clone(),
            payload: self.payload.to_string(),
            settings: RunSettings {
                default_connector: manifest.sandbox.clone().unwrap_or_else(|| self.state.config.sandbox.clone()),
                keep: false,
                reuse: None,
                default_resources: None,
            },
            limits: Some(limits),
            run_id: Some(self.run_id.clone()),
        };
        let mut cancel = self.state.cancel.clone();
        let stop = async move {
            let _ = cancel.wait_for(|stop| *stop).await;
            "the server shut down and its grace period ended".to_string()
        };
        let host = self.state.host.read().unwrap_or_else(|e| e.into_inner()).clone();
        let outcome = host.run_until(run, events.clone(), stop).await;
        outcome.result.map_err(|err| format!("{:#}", anyhow::Error::new(err)))
    }
}
