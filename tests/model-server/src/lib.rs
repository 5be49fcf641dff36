//! A model provider for tests, on 127.0.0.1: `POST /v1/messages` in
//! Anthropic's Messages format and `POST /v1/chat/completions` in OpenAI's
//! Chat Completions format, streamed (server-sent events) when the request
//! asks for `stream: true`, else one JSON body.
//!
//! Each request is answered by the script's next [`Turn`]: text, tool calls,
//! or an error status (e.g. 429 with `retry-after`). Every request is
//! recorded (headers and JSON body), so tests can assert what the host sent.
//! When the script runs out, the server answers 500.
//!
//! A turn can also be hostile, as a broken or malicious provider would be:
//! a [`Flood`] (huge text or tool-call arguments, endless empty events, an
//! event that never ends — generated as sent, never held), a huge error
//! body, any `retry-after` value, and `{{API_KEY}}` in text or tool-call
//! input, which the server replaces with the key the request carried (to
//! check it is redacted), split across deltas of `deltaBytes`.

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
    /// With `status`: a `retry-after` header, verbatim (`1e20`, a date, …).
    #[serde(default)]
    pub retry_after_header: Option<String>,
    /// With `status`: a body of this many bytes (not JSON) instead.
    #[serde(default)]
    pub error_body_bytes: Option<u64>,
    /// With `status`: this body (as is, not JSON) instead.
    #[serde(default)]
    pub error_body: Option<String>,
    /// Stream text in deltas of this many bytes (default: two halves).
    #[serde(default)]
    pub delta_bytes: Option<usize>,
    /// A hostile answer instead of text and tool calls.
    #[serde(default)]
    pub flood: Option<Flood>,
    /// Wait this long before answering (streams: before each event).
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// Answer with one JSON body even when streaming was asked for.
    #[serde(default)]
    pub no_stream: bool,
    /// Usage to report (input, output tokens).
    #[serde(default)]
    pub usage: Option<(u64, u64)>,
    /// Anthropic: a thinking block first, signed `sig:<its text>` (the test
    /// checks it comes back whole).
    #[serde(default)]
    pub thinking: Option<String>,
}

/// A hostile answer, generated as it is sent.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Flood {
    /// `bytes` of text, in deltas of 64 KiB (with `noStream`: one JSON body).
    Text { bytes: u64 },
    /// One `write` call whose arguments are `bytes` long.
    Arguments { bytes: u64 },
    /// Tiny events (pings, empty chunks), without end.
    EmptyEvents,
    /// One event that never ends: data without a blank line, without end.
    OpenEvent,
}

/// A tool call the model makes.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ToolCall {
    pub name: String,
    pub input: Value,
}

/// A tool call for a script: `name` with `input`.
pub fn tool(name: &str, input: Value) -> ToolCall {
    ToolCall { name: name.into(), input }
}

/// A turn that asks for `list` of tool calls.
pub fn calls(list: Vec<ToolCall>) -> Turn {
    Turn { tool_calls: list, ..Default::default() }
}

/// A turn that answers `answer`.
pub fn text(answer: &str) -> Turn {
    Turn { text: Some(answer.into()), ..Default::default() }
}

/// A turn that answers with `flood` instead.
pub fn flood(flood: Flood) -> Turn {
    Turn { flood: Some(flood), ..Default::default() }
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
            // Conversations up to (and past) flue's cap, not axum's 2 MiB.
            .layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024))
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

fn error_response(turn: &Turn, anthropic: bool) -> Response {
    let status = StatusCode::from_u16(turn.status.unwrap_or(500)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let retry_after = turn.retry_after.map(|s| s.to_string()).or(turn.retry_after_header.clone());
    let raw = match (&turn.error_body, turn.error_body_bytes) {
        (Some(text), _) => Some(Body::from(text.clone())),
        (None, Some(bytes)) => Some(Body::from_stream(filler(bytes, b'x'))),
        (None, None) => None,
    };
    if let Some(raw) = raw {
        let mut response =
            Response::builder().status(status).header("content-type", "text/plain").body(raw).expect("response");
        if let Some(value) = retry_after {
            response.headers_mut().insert("retry-after", value.parse().expect("header"));
        }
        return response;
    }
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
    if let Some(value) = retry_after {
        response.headers_mut().insert("retry-after", value.parse().expect("header"));
    }
    response
}

/// A body generated as it is sent.
type Chunks =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<bytes::Bytes, std::convert::Infallible>> + Send>>;

/// `bytes` bytes of `byte`, in parts of 64 KiB (never all in memory).
fn filler(bytes: u64, byte: u8) -> Chunks {
    const PART: u64 = 64 * 1024;
    let part = bytes::Bytes::from(vec![byte; PART as usize]);
    Box::pin(futures_util::stream::unfold(bytes, move |left| {
        let part = part.clone();
        async move { (left > 0).then(|| (Ok(part.slice(..left.min(PART) as usize)), left.saturating_sub(PART))) }
    }))
}

/// `item` again and again, without end.
fn endless(item: String) -> Chunks {
    let item = bytes::Bytes::from(item);
    Box::pin(futures_util::stream::repeat_with(move || Ok(item.clone())))
}

/// `before`, then `middle`, then `after`, as one body.
fn framed(before: String, middle: Chunks, after: String) -> Chunks {
    use futures_util::StreamExt;
    let once = |s: String| futures_util::stream::once(async move { Ok(bytes::Bytes::from(s)) });
    Box::pin(once(before).chain(middle).chain(once(after)))
}

/// A hostile streamed answer (`anthropic` format, or OpenAI's).
fn flood_response(flood: &Flood, anthropic: bool, plain: bool) -> Response {
    let event = |data: Value| {
        if anthropic {
            format!("event: {}\ndata: {data}\n\n", data["type"].as_str().unwrap_or("x"))
        } else {
            format!("data: {data}\n\n")
        }
    };
    let x64k = "x".repeat(64 * 1024);
    let body: Chunks = match flood {
        Flood::Text { bytes } if plain => {
            let (before, after) = if anthropic {
                (
                    r#"{"id":"msg_flood","type":"message","role":"assistant","model":"m","content":[{"type":"text","text":""#,
                    r#""}],"stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":1}}"#,
                )
            } else {
                (
                    r#"{"id":"chatcmpl-flood","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":""#,
                    r#""},"finish_reason":"stop"}]}"#,
                )
            };
            framed(before.into(), filler(*bytes, b'x'), after.into())
        }
        Flood::Text { bytes } => {
            let delta = if anthropic {
                event(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": x64k}}))
            } else {
                event(json!({"choices": [{"index": 0, "delta": {"content": x64k}}]}))
            };
            let start = if anthropic {
                event(json!({"type": "message_start", "message": {"usage": {"input_tokens": 1}}}))
                    + &event(
                        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                    )
            } else {
                String::new()
            };
            let count = bytes.div_ceil(64 * 1024) as usize;
            framed(
                start,
                Box::pin(futures_util::stream::iter(std::iter::repeat_n(Ok(bytes::Bytes::from(delta)), count))),
                String::new(),
            )
        }
        Flood::Arguments { bytes } => {
            let part = |json: &str| {
                if anthropic {
                    event(
                        json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": json}}),
                    )
                } else {
                    event(
                        json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": json}}]}}]}),
                    )
                }
            };
            let start = if anthropic {
                event(json!({"type": "message_start", "message": {"usage": {"input_tokens": 1}}}))
                    + &event(json!({"type": "content_block_start", "index": 0,
                        "content_block": {"type": "tool_use", "id": "toolu_flood", "name": "write", "input": {}}}))
            } else {
                event(
                    json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_flood", "type": "function",
                    "function": {"name": "write", "arguments": ""}}]}}]}),
                )
            } + &part(r#"{"path": "big.txt", "content": ""#);
            let count = bytes.div_ceil(64 * 1024) as usize;
            let parts = std::iter::repeat_n(Ok(bytes::Bytes::from(part(&x64k))), count);
            framed(start, Box::pin(futures_util::stream::iter(parts)), part(r#""}"#))
        }
        Flood::EmptyEvents => {
            let one = if anthropic {
                event(json!({"type": "ping"}))
            } else {
                ": keep-alive\n\ndata: {\"choices\":[]}\n\n".into()
            };
            endless(one.repeat(1000))
        }
        Flood::OpenEvent => framed("data: ".into(), endless(x64k), String::new()),
    };
    let content_type = if plain { "application/json" } else { "text/event-stream" };
    Response::builder().header("content-type", content_type).body(Body::from_stream(body)).expect("response")
}

/// The key a request carried (`x-api-key`, or a bearer token).
fn key_of(headers: &HeaderMap) -> String {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let key = header("x-api-key");
    if !key.is_empty() {
        return key;
    }
    header("authorization").strip_prefix("Bearer ").unwrap_or_default().to_string()
}

/// `turn` with `{{API_KEY}}` in its text and tool-call inputs replaced by `key`.
fn with_key(mut turn: Turn, key: &str) -> Turn {
    const PLACEHOLDER: &str = "{{API_KEY}}";
    for text in [&mut turn.text, &mut turn.error_body].into_iter().flatten() {
        *text = text.replace(PLACEHOLDER, key);
    }
    for call in &mut turn.tool_calls {
        let input = call.input.to_string().replace(PLACEHOLDER, key);
        call.input = serde_json::from_str(&input).unwrap_or(Value::Null);
    }
    turn
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

/// `text` as streamed deltas: pieces of about `size` bytes (whole
/// characters), or two halves.
fn deltas(text: &str, size: Option<usize>) -> Vec<String> {
    let Some(size) = size.filter(|s| *s > 0) else { return halves(text) };
    let mut pieces = Vec::new();
    let mut piece = String::new();
    for c in text.chars() {
        piece.push(c);
        if piece.len() >= size {
            pieces.push(std::mem::take(&mut piece));
        }
    }
    if !piece.is_empty() {
        pieces.push(piece);
    }
    pieces
}

async fn anthropic(State(state): State<Arc<AppState>>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
    let done = Done::new(&state);
    let (turn, n) = record(&state, "/v1/messages", &headers, &body);
    let Some(turn) = turn else { return error_response(&Turn::default(), true) };
    let turn = with_key(turn, &key_of(&headers));
    if let Some(ms) = turn.delay_ms.filter(|_| turn.status.is_some() || turn.no_stream) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if turn.status.is_some() {
        done.finish();
        return error_response(&turn, true);
    }
    if let Some(flood) = &turn.flood {
        done.finish();
        return flood_response(flood, true, body["stream"] != true || turn.no_stream);
    }
    let model = body["model"].as_str().unwrap_or("model").to_string();
    let (input_tokens, output_tokens) = turn.usage.unwrap_or((100, 20));
    let stop = if turn.tool_calls.is_empty() { "end_turn" } else { "tool_use" };
    let ids: Vec<String> = (0..turn.tool_calls.len()).map(|i| format!("toolu_{n}_{i}")).collect();
    if body["stream"] != true || turn.no_stream {
        let mut content = Vec::new();
        if let Some(thinking) = &turn.thinking {
            content.push(json!({"type": "thinking", "thinking": thinking, "signature": format!("sig:{thinking}")}));
        }
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
    if let Some(thinking) = &turn.thinking {
        events.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index,
                "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
        ));
        for part in halves(thinking) {
            events.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": {"type": "thinking_delta", "thinking": part}}),
            ));
        }
        for part in halves(&format!("sig:{thinking}")) {
            events.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": {"type": "signature_delta", "signature": part}}),
            ));
        }
        events.push(event("content_block_stop", json!({"type": "content_block_stop", "index": index})));
        index += 1;
    }
    if let Some(text) = &turn.text {
        events.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}}),
        ));
        for part in deltas(text, turn.delta_bytes) {
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
    let Some(turn) = turn else { return error_response(&Turn::default(), false) };
    let turn = with_key(turn, &key_of(&headers));
    if let Some(ms) = turn.delay_ms.filter(|_| turn.status.is_some() || turn.no_stream) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if turn.status.is_some() {
        done.finish();
        return error_response(&turn, false);
    }
    if let Some(flood) = &turn.flood {
        done.finish();
        return flood_response(flood, false, body["stream"] != true || turn.no_stream);
    }
    let model = body["model"].as_str().unwrap_or("model").to_string();
    let (prompt_tokens, completion_tokens) = turn.usage.unwrap_or((100, 20));
    let finish = if turn.tool_calls.is_empty() { "stop" } else { "tool_calls" };
    let ids: Vec<String> = (0..turn.tool_calls.len()).map(|i| format!("call_{n}_{i}")).collect();
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens.saturating_add(completion_tokens)});
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
        for part in deltas(text, turn.delta_bytes) {
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
