//! A model provider for tests, on 127.0.0.1: `POST /v1/messages` in
//! Anthropic's Messages format and `POST /v1/chat/completions` in OpenAI's
//! Chat Completions format, streamed (server-sent events) when the request
//! asks for `stream: true`, else one JSON body.
//!
//! Each request is answered by the script's next [`Turn`]: text, tool calls,
//! or an error status (e.g. 429 with `retry-after`). Every request is
//! recorded (headers and JSON body), so tests can assert what the host sent.
//! When the script runs out, the server answers 500.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

/// A scripted conversation.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Script {
    /// One per request, in order.
    pub turns: Vec<Turn>,
}

/// One answer.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Turn {
    /// The assistant's text.
    #[serde(default)]
    pub text: Option<String>,
    /// Tool calls: `{"name": …, "input": {…}}`.
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
    /// Answer with this status and an error body instead.
    #[serde(default)]
    pub status: Option<u16>,
    /// With `status`: a `retry-after` header (seconds).
    #[serde(default)]
    pub retry_after: Option<u64>,
    /// Wait this long before answering (streams: before each event).
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// Answer with one JSON body even when streaming was asked for.
    #[serde(default)]
    pub no_stream: bool,
    /// Usage to report (input, output tokens).
    #[serde(default)]
    pub usage: Option<(u64, u64)>,
}

/// A tool call the model makes.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ToolCall {
    pub name: String,
    pub input: Value,
}

/// One request the server received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

struct AppState {
    turns: Mutex<std::collections::VecDeque<Turn>>,
    requests: Mutex<Vec<Recorded>>,
    served: Mutex<u64>,
    /// How long each answer took the server, from the request's arrival to
    /// its last byte handed to the connection (scripted delays included).
    busy: Arc<Mutex<Vec<Duration>>>,
}

/// A running server; stops when dropped.
pub struct ModelServer {
    addr: SocketAddr,
    state: Arc<AppState>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl ModelServer {
    /// Serve `script` on a free port.
    pub async fn start(script: Script) -> anyhow::Result<Self> {
        Self::start_on(script, 0).await
    }

    /// Serve `script` on `port` (0: a free one).
    pub async fn start_on(script: Script, port: u16) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(AppState {
            turns: Mutex::new(script.turns.into()),
            requests: Mutex::default(),
            served: Mutex::new(0),
            busy: Arc::default(),
        });
        let app = Router::new()
            .route("/v1/messages", post(anthropic))
            .route("/v1/chat/completions", post(openai))
            .route("/chat/completions", post(openai))
            .with_state(state.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(ModelServer { addr, state, _shutdown: tx })
    }

    /// The base URL: `ANTHROPIC_BASE_URL` as is, `OPENAI_BASE_URL` with `/v1`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What it received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.requests.lock().expect("lock").clone()
    }

    /// How long each answer took the server itself, in order.
    pub fn busy(&self) -> Vec<Duration> {
        self.state.busy.lock().expect("lock").clone()
    }

    /// Turns not yet served.
    pub fn turns_left(&self) -> usize {
        self.state.turns.lock().expect("lock").len()
    }
}

fn record(state: &AppState, path: &str, headers: &HeaderMap, body: &Value) -> (Option<Turn>, u64) {
    state.requests.lock().expect("lock").push(Recorded {
        path: path.into(),
        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string())).collect(),
        body: body.clone(),
    });
    let mut served = state.served.lock().expect("lock");
    *served += 1;
    (state.turns.lock().expect("lock").pop_front(), *served)
}

fn error_response(status: u16, retry_after: Option<u64>, anthropic: bool) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let message = format!("scripted {status}");
    let body = if anthropic {
        let kind = match status.as_u16() {
            401 => "authentication_error",
            429 => "rate_limit_error",
            529 => "overloaded_error",
            400 => "invalid_request_error",
            _ => "api_error",
        };
        json!({"type": "error", "error": {"type": kind, "message": message}})
    } else {
        json!({"error": {"message": message, "type": "scripted", "code": status.as_u16()}})
    };
    let mut response = (status, Json(body)).into_response();
    if let Some(seconds) = retry_after {
        response.headers_mut().insert("retry-after", seconds.to_string().parse().expect("header"));
    }
    response
}

fn sse(events: Vec<String>, delay: Option<u64>, done: Done) -> Response {
    let stream =
        futures_util::stream::unfold((events.into_iter(), Some(done)), move |(mut events, mut done)| async move {
            let Some(event) = events.next() else {
                if let Some(done) = done.take() {
                    done.finish();
                }
                return None;
            };
            if let Some(ms) = delay {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            Some((Ok::<_, std::convert::Infallible>(bytes::Bytes::from(event)), (events, done)))
        });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(stream))
        .expect("response")
}

/// Records how long one answer took, when it is finished.
struct Done {
    started: std::time::Instant,
    busy: Arc<Mutex<Vec<Duration>>>,
}

impl Done {
    fn new(state: &AppState) -> Self {
        Done { started: std::time::Instant::now(), busy: state.busy.clone() }
    }

    fn finish(self) {
        self.busy.lock().expect("lock").push(self.started.elapsed());
    }
}

/// Split `text` in two, to exercise concatenation of deltas.
fn halves(text: &str) -> Vec<String> {
    let mid = text.char_indices().nth(text.chars().count() / 2).map(|(i, _)| i).unwrap_or(0);
    [&text[..mid], &text[mid..]].into_iter().filter(|s| !s.is_empty()).map(str::to_string).collect()
}

async fn anthropic(State(state): State<Arc<AppState>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let done = Done::new(&state);
    let (turn, n) = record(&state, "/v1/messages", &headers, &body);
    let Some(turn) = turn else { return error_response(500, None, true) };
    if let Some(ms) = turn.delay_ms.filter(|_| turn.status.is_some() || turn.no_stream) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(status) = turn.status {
        done.finish();
        return error_response(status, turn.retry_after, true);
    }
    let model = body["model"].as_str().unwrap_or("model").to_string();
    let (input_tokens, output_tokens) = turn.usage.unwrap_or((100, 20));
    let stop = if turn.tool_calls.is_empty() { "end_turn" } else { "tool_use" };
    let ids: Vec<String> = (0..turn.tool_calls.len()).map(|i| format!("toolu_{n}_{i}")).collect();
    if body["stream"] != true || turn.no_stream {
        let mut content = Vec::new();
        if let Some(text) = &turn.text {
            content.push(json!({"type": "text", "text": text}));
        }
        for (call, id) in turn.tool_calls.iter().zip(&ids) {
            content.push(json!({"type": "tool_use", "id": id, "name": call.name, "input": call.input}));
        }
        done.finish();
        return Json(json!({
            "id": format!("msg_{n}"), "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop, "stop_sequence": null,
            "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens}
        }))
        .into_response();
    }
    let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut events = vec![event(
        "message_start",
        json!({"type": "message_start", "message": {"id": format!("msg_{n}"), "type": "message", "role": "assistant",
            "model": model, "content": [], "stop_reason": null, "usage": {"input_tokens": input_tokens, "output_tokens": 1}}}),
    )];
    let mut index = 0;
    if let Some(text) = &turn.text {
        events.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
        ));
        for part in halves(text) {
            events.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": part}}),
            ));
        }
        events.push(event("content_block_stop", json!({"type": "content_block_stop", "index": index})));
        index += 1;
    }
    for (call, id) in turn.tool_calls.iter().zip(&ids) {
        events.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index,
                "content_block": {"type": "tool_use", "id": id, "name": call.name, "input": {}}}),
        ));
        for part in halves(&call.input.to_string()) {
            events.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": part}}),
            ));
        }
        events.push(event("content_block_stop", json!({"type": "content_block_stop", "index": index})));
        index += 1;
    }
    events.push(event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
            "usage": {"output_tokens": output_tokens}}),
    ));
    events.push(event("message_stop", json!({"type": "message_stop"})));
    sse(events, turn.delay_ms, done)
}

async fn openai(State(state): State<Arc<AppState>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let done = Done::new(&state);
    let (turn, n) = record(&state, "/v1/chat/completions", &headers, &body);
    let Some(turn) = turn else { return error_response(500, None, false) };
    if let Some(ms) = turn.delay_ms.filter(|_| turn.status.is_some() || turn.no_stream) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(status) = turn.status {
        done.finish();
        return error_response(status, turn.retry_after, false);
    }
    let model = body["model"].as_str().unwrap_or("model").to_string();
    let (prompt_tokens, completion_tokens) = turn.usage.unwrap_or((100, 20));
    let finish = if turn.tool_calls.is_empty() { "stop" } else { "tool_calls" };
    let ids: Vec<String> = (0..turn.tool_calls.len()).map(|i| format!("call_{n}_{i}")).collect();
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens});
    if body["stream"] != true || turn.no_stream {
        let calls: Vec<Value> = turn
            .tool_calls
            .iter()
            .zip(&ids)
            .map(|(c, id)| json!({"id": id, "type": "function", "function": {"name": c.name, "arguments": c.input.to_string()}}))
            .collect();
        let mut message = json!({"role": "assistant", "content": turn.text});
        if !calls.is_empty() {
            message["tool_calls"] = calls.into();
        }
        done.finish();
        return Json(json!({
            "id": format!("chatcmpl-{n}"), "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage
        }))
        .into_response();
    }
    let chunk = |delta: Value, finish: Option<&str>| {
        let data = json!({"id": format!("chatcmpl-{n}"), "object": "chat.completion.chunk", "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {data}\n\n")
    };
    let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    if let Some(text) = &turn.text {
        for part in halves(text) {
            events.push(chunk(json!({"content": part}), None));
        }
    }
    for (i, (call, id)) in turn.tool_calls.iter().zip(&ids).enumerate() {
        events.push(chunk(
            json!({"tool_calls": [{"index": i, "id": id, "type": "function", "function": {"name": call.name, "arguments": ""}}]}),
            None,
        ));
        for part in halves(&call.input.to_string()) {
            events.push(chunk(json!({"tool_calls": [{"index": i, "function": {"arguments": part}}]}), None));
        }
    }
    events.push(chunk(json!({}), Some(finish)));
    events.push(format!(
        "data: {}\n\n",
        json!({"id": format!("chatcmpl-{n}"), "object": "chat.completion.chunk", "model": model, "choices": [], "usage": usage})
    ));
    events.push("data: [DONE]\n\n".into());
    sse(events, turn.delay_ms, done)
}
