//! Model providers: one model turn over HTTP, in Anthropic's Messages
//! format or OpenAI's Chat Completions format, streamed (server-sent
//! events, consumed as they arrive) or as one JSON body — whichever the
//! server answers. 429, 529, 408 and 5xx are retried with backoff that
//! honours `retry-after` (seconds or an HTTP date, capped).
//!
//! The server is treated as hostile: every answer is read within the caps
//! of [`super::caps`] (text, tool calls and their arguments, one event, the
//! events and bytes of a stream, a plain body, an error body), and a breach
//! is a `provider` error naming the cap, never more memory.
//!
//! The API key lives here, in the host: it goes only to the provider's
//! configured origin (redirects are not followed) and is redacted from
//! every error (before any message is cut short).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use serde_json::{Value, json};

use super::caps::{
    MAX_ANSWER_TEXT, MAX_BACKOFF, MAX_ERROR_BODY, MAX_ERROR_MESSAGE, MAX_OUTPUT_TOKENS, MAX_PLAIN_BODY, MAX_SSE_EVENT,
    MAX_STREAM_BYTES, MAX_STREAM_EVENTS, MAX_TOOL_ARGUMENTS, MAX_TOOL_CALLS,
};
use super::{Message, ModelError, Reply, Stop, ToolCall, Usage};
use crate::capability::secrets::Secrets;
use crate::sandbox::session::format_bytes;

/// Attempts per turn for retryable failures.
const ATTEMPTS: u32 = 5;

/// Which wire format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `POST {base}/v1/messages`.
    Anthropic,
    /// `POST {base}/chat/completions`.
    OpenAi,
}

/// A configured provider and model.
pub struct Provider {
    format: Format,
    base: String,
    key: Option<String>,
    key_name: &'static str,
    /// The model's name at the provider.
    pub model: String,
    /// `provider/model`, as the agent named it.
    pub label: String,
    client: reqwest::Client,
    secrets: Secrets,
}

/// What one turn sends.
pub struct TurnRequest<'a> {
    /// The system prompt.
    pub system: &'a str,
    /// The conversation so far.
    pub messages: &'a [Message],
    /// Tool definitions (`{name, description, parameters}`).
    pub tools: &'a [Value],
}

impl Provider {
    /// The provider for `model` (`anthropic/…` or `openai/…`), configured from
    /// `config` (`ANTHROPIC_API_KEY`, `ANTHROPIC_BASE_URL`, `OPENAI_API_KEY`,
    /// `OPENAI_BASE_URL`).
    pub fn from_config(model: &str, config: &HashMap<String, String>) -> Result<Provider, ModelError> {
        let (provider, name) = model.split_once('/').ok_or_else(|| {
            ModelError::InvalidInput(format!(
                "model {model:?} is not provider/model, e.g. anthropic/claude-sonnet-4-6 or openai/gpt-4o"
            ))
        })?;
        let get = |key: &str| config.get(key).filter(|v| !v.trim().is_empty()).cloned();
        let (format, base, key, key_name) = match provider {
            "anthropic" => (
                Format::Anthropic,
                get("ANTHROPIC_BASE_URL").unwrap_or_else(|| "https://api.anthropic.com".into()),
                get("ANTHROPIC_API_KEY"),
                "ANTHROPIC_API_KEY",
            ),
            "openai" => (
                Format::OpenAi,
                get("OPENAI_BASE_URL").unwrap_or_else(|| "https://api.openai.com/v1".into()),
                get("OPENAI_API_KEY"),
                "OPENAI_API_KEY",
            ),
            other => {
                return Err(ModelError::InvalidInput(format!(
                    "unknown model provider {other:?}: use anthropic/… or openai/… (any OpenAI-compatible \
                     server through OPENAI_BASE_URL)"
                )));
            }
        };
        // A local OpenAI-compatible server (Ollama, vLLM, llama.cpp) needs no key.
        let keyless = format == Format::OpenAi && config.contains_key("OPENAI_BASE_URL");
        if key.is_none() && !keyless {
            return Err(ModelError::Auth(format!("{key_name} is not set: flue needs it to call {provider} models")));
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|err| ModelError::Provider(format!("cannot build an HTTP client: {err}")))?;
        let secrets = Secrets::from_pairs(key.iter().map(|k| (key_name.to_string(), k.clone())).collect());
        Ok(Provider {
            format,
            base: base.trim_end_matches('/').to_string(),
            key,
            key_name,
            model: name.to_string(),
            label: model.to_string(),
            client,
            secrets,
        })
    }

    /// Redact the key from `text`.
    pub fn redact(&self, text: &str) -> String {
        self.secrets.redact(text)
    }

    /// The key, as secrets to redact (empty without a key).
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    fn url(&self) -> String {
        match self.format {
            Format::Anthropic => format!("{}/v1/messages", self.base),
            Format::OpenAi => format!("{}/chat/completions", self.base),
        }
    }

    fn body(&self, turn: &TurnRequest<'_>) -> Value {
        match self.format {
            Format::Anthropic => {
                let mut body = json!({
                    "model": self.model,
                    "max_tokens": MAX_OUTPUT_TOKENS,
                    "stream": true,
                    "system": [{"type": "text", "text": turn.system}],
                    "messages": turn.messages.iter().map(anthropic_message).collect::<Vec<_>>(),
                });
                if !turn.tools.is_empty() {
                    body["tools"] = turn
                        .tools
                        .iter()
                        .map(|t| json!({"name": t["name"], "description": t["description"], "input_schema": t["parameters"]}))
                        .collect();
                }
                body
            }
            Format::OpenAi => {
                let mut messages = vec![json!({"role": "system", "content": turn.system})];
                for message in turn.messages {
                    messages.extend(openai_messages(message));
                }
                let mut body = json!({
                    "model": self.model,
                    "stream": true,
                    "stream_options": {"include_usage": true},
                    "max_completion_tokens": MAX_OUTPUT_TOKENS,
                    "messages": messages,
                });
                if !turn.tools.is_empty() {
                    body["tools"] = turn.tools.iter().map(|t| json!({"type": "function", "function": t})).collect();
                }
                body
            }
        }
    }

    /// One model turn, retried while the provider says to try again.
    /// `on_text` sees text as it streams in.
    pub async fn turn(
        &self,
        turn: &TurnRequest<'_>,
        on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Reply, ModelError> {
        let body = bytes::Bytes::from(serde_json::to_vec(&self.body(turn)).expect("JSON serialises"));
        let mut attempt = 1;
        loop {
            let mut request =
                self.client.post(self.url()).header("content-type", "application/json").body(body.clone());
            request = match (self.format, &self.key) {
                (Format::Anthropic, Some(key)) => {
                    request.header("x-api-key", key).header("anthropic-version", "2023-06-01")
                }
                (Format::Anthropic, None) => request.header("anthropic-version", "2023-06-01"),
                (Format::OpenAi, Some(key)) => request.bearer_auth(key),
                (Format::OpenAi, None) => request,
            };
            let failure = match request.send().await {
                Ok(response) if response.status().is_success() => {
                    return self.read_reply(response, on_text).await.map_err(|e| self.redact_error(e));
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| retry_after(v, SystemTime::now()));
                    // Only the start of an error body: its message, not a flood.
                    let (body, _) = read_at_most(response, MAX_ERROR_BODY).await.unwrap_or_default();
                    let text = String::from_utf8_lossy(&body);
                    // Whole here: the message is redacted before it is cut.
                    let message = error_message(&text).unwrap_or_else(|| text.into_owned());
                    let retryable = matches!(status, 408 | 429 | 500..=599);
                    if retryable && attempt < ATTEMPTS {
                        Some(retry_after)
                    } else {
                        return Err(self.redact_error(self.classify(status, &message, attempt)));
                    }
                }
                Err(err) if attempt < ATTEMPTS && (err.is_connect() || err.is_timeout()) => Some(None),
                Err(err) => {
                    return Err(
                        self.redact_error(ModelError::Provider(format!("{} could not be reached: {err}", self.url())))
                    );
                }
            };
            let backoff = Duration::from_millis(500 * 2u64.pow(attempt - 1));
            let pause = failure.flatten().unwrap_or(backoff).min(MAX_BACKOFF);
            tokio::time::sleep(pause).await;
            attempt += 1;
        }
    }

    /// The error as the agent and events may see it: without the key, then
    /// cut short (in that order: a cut key would no longer be found).
    fn redact_error(&self, err: ModelError) -> ModelError {
        err.map_message(|m| cut(&self.redact(m), MAX_ERROR_MESSAGE))
    }

    fn classify(&self, status: u16, message: &str, attempts: u32) -> ModelError {
        let tries = if attempts > 1 { format!(" after {attempts} attempts") } else { String::new() };
        let lower = message.to_ascii_lowercase();
        match status {
            401 | 403 => {
                ModelError::Auth(format!("{} rejected the key in {} ({status}): {message}", self.label, self.key_name))
            }
            429 => ModelError::RateLimited(format!("{} kept answering 429{tries}: {message}", self.label)),
            400 | 413
                if lower.contains("context")
                    || lower.contains("too long")
                    || lower.contains("too many tokens")
                    || status == 413 =>
            {
                ModelError::ContextOverflow(format!("{}: {message}", self.label))
            }
            _ => ModelError::Provider(format!("{} answered {status}{tries}: {message}", self.label)),
        }
    }

    async fn read_reply(
        &self,
        response: reqwest::Response,
        on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Reply, ModelError> {
        let streamed = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !streamed {
            let over = || over_cap(&self.label, "body", format!("{} per answer", format_bytes(MAX_PLAIN_BODY)));
            if response.content_length().is_some_and(|n| n > MAX_PLAIN_BODY as u64) {
                return Err(over());
            }
            let (bytes, more) = read_at_most(response, MAX_PLAIN_BODY)
                .await
                .map_err(|err| ModelError::Provider(format!("{}: the answer broke off: {err}", self.label)))?;
            if more {
                return Err(over());
            }
            let body: Value = serde_json::from_slice(&bytes)
                .map_err(|err| ModelError::Provider(format!("{} sent a body that is not JSON: {err}", self.label)))?;
            let reply = match self.format {
                Format::Anthropic => anthropic_reply(&body),
                Format::OpenAi => openai_reply(&body),
            }?;
            check_reply(&self.label, &reply)?;
            if !reply.text.is_empty() {
                on_text(&reply.text);
            }
            return Ok(reply);
        }
        let mut parser = StreamParser::new(self.format, &self.label);
        let mut stream = response.bytes_stream();
        // Bytes of an event not yet complete; none of `pending[..scanned]`
        // ends an event, so each byte is searched about once.
        let mut pending = Vec::new();
        let mut scanned: usize = 0;
        let (mut received, mut events) = (0usize, 0usize);
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|err| ModelError::Provider(format!("{}: the stream broke: {err}", self.label)))?;
            received += chunk.len();
            if received > MAX_STREAM_BYTES {
                let cap = format!("{} per answer", format_bytes(MAX_STREAM_BYTES));
                return Err(over_cap(&self.label, "stream", cap));
            }
            pending.extend_from_slice(&chunk);
            // One SSE event per blank line.
            let mut start = 0;
            while let Some(end) = find_event_end(&pending[start..], scanned.saturating_sub(start)) {
                let event = &pending[start..start + end];
                start += end;
                events += 1;
                if events > MAX_STREAM_EVENTS {
                    return Err(over_cap(&self.label, "stream", format!("{MAX_STREAM_EVENTS} events per answer")));
                }
                let data: String = String::from_utf8_lossy(event)
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect::<Vec<_>>()
                    .join("\n");
                if data.is_empty() {
                    continue;
                }
                if let Some(text) = parser.feed(&data)? {
                    on_text(&text);
                }
            }
            pending.drain(..start);
            scanned = pending.len();
            if pending.len() > MAX_SSE_EVENT {
                let cap = format!("{} per event", format_bytes(MAX_SSE_EVENT));
                return Err(over_cap(&self.label, "streamed event", cap));
            }
        }
        parser.finish()
    }
}

/// The error for an answer past one of the caps: `what` is over `cap`.
fn over_cap(label: &str, what: &str, cap: String) -> ModelError {
    ModelError::Provider(format!("{label}: the answer's {what} is over flue's cap of {cap}"))
}

/// A plain answer within the caps a streamed one is held to.
fn check_reply(label: &str, reply: &Reply) -> Result<(), ModelError> {
    if reply.text.len() > MAX_ANSWER_TEXT {
        return Err(over_cap(label, "text", format!("{} per answer", format_bytes(MAX_ANSWER_TEXT))));
    }
    if reply.calls.len() > MAX_TOOL_CALLS {
        return Err(over_cap(label, "tool calls", format!("{MAX_TOOL_CALLS} per answer")));
    }
    let arguments: usize = reply.calls.iter().map(|c| c.id.len() + c.name.len() + c.input.to_string().len()).sum();
    if arguments > MAX_TOOL_ARGUMENTS {
        return Err(over_cap(label, "tool-call arguments", format!("{} per answer", format_bytes(MAX_TOOL_ARGUMENTS))));
    }
    Ok(())
}

/// At most `cap` bytes of `response`'s body, and whether it had more (the
/// rest is never read).
async fn read_at_most(response: reqwest::Response, cap: usize) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        let room = cap - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, false))
}

/// How long a `retry-after` value asks to wait — delay-seconds (a decimal
/// too) or an HTTP date — capped at [`MAX_BACKOFF`]; `None` when it is
/// neither. Any value, however large or odd, gives a duration, never a
/// panic.
fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        if seconds.is_nan() {
            return None;
        }
        let seconds = seconds.clamp(0.0, MAX_BACKOFF.as_secs_f64());
        return Some(Duration::from_secs_f64(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO).min(MAX_BACKOFF))
}

/// At most `max` characters of `text`, saying when it was cut.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}… [{} more bytes]", &text[..end], text.len() - end),
        None => text.to_string(),
    }
}

/// The end of the first complete SSE event in `buf` (after its blank line);
/// `buf[..from]` holds no event end.
fn find_event_end(buf: &[u8], from: usize) -> Option<usize> {
    // A blank line may have begun in the bytes searched before.
    let from = from.saturating_sub(3).min(buf.len());
    let lf = memchr::memmem::find(&buf[from..], b"\n\n").map(|i| from + i + 2);
    let crlf = memchr::memmem::find(&buf[from..], b"\r\n\r\n").map(|i| from + i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The provider's error message in an error body, if it has one.
fn error_message(body: &str) -> Option<String> {
    let value: Value = serde_json::from_str(body).ok()?;
    value["error"]["message"].as_str().or(value["message"].as_str()).map(str::to_string)
}

fn anthropic_message(message: &Message) -> Value {
    match message {
        Message::User(text) => json!({"role": "user", "content": text}),
        Message::Assistant { text, calls } => {
            let mut content = Vec::new();
            if !text.is_empty() {
                content.push(json!({"type": "text", "text": text}));
            }
            for call in calls {
                content.push(json!({"type": "tool_use", "id": call.id, "name": call.name, "input": call.input}));
            }
            json!({"role": "assistant", "content": content})
        }
        Message::Results(results) => json!({
            "role": "user",
            "content": results.iter().map(|r| json!({
                "type": "tool_result", "tool_use_id": r.id, "content": r.content, "is_error": r.is_error
            })).collect::<Vec<_>>(),
        }),
    }
}

fn openai_messages(message: &Message) -> Vec<Value> {
    match message {
        Message::User(text) => vec![json!({"role": "user", "content": text})],
        Message::Assistant { text, calls } => {
            let mut m = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { text.clone().into() }});
            if !calls.is_empty() {
                m["tool_calls"] = calls
                    .iter()
                    .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.input.to_string()}}))
                    .collect();
            }
            vec![m]
        }
        Message::Results(results) => results
            .iter()
            .map(|r| {
                let content = if r.is_error { format!("Error: {}", r.content) } else { r.content.clone() };
                json!({"role": "tool", "tool_call_id": r.id, "content": content})
            })
            .collect(),
    }
}

fn parse_input(name: &str, text: &str) -> Value {
    if text.trim().is_empty() {
        return json!({});
    }
    serde_json::from_str(text).unwrap_or_else(|_| json!({"__unparsed": text, "__tool": name}))
}

fn anthropic_reply(body: &Value) -> Result<Reply, ModelError> {
    let mut reply = Reply::default();
    for block in body["content"].as_array().into_iter().flatten() {
        match block["type"].as_str() {
            Some("text") => reply.text.push_str(block["text"].as_str().unwrap_or_default()),
            Some("tool_use") => reply.calls.push(ToolCall {
                id: block["id"].as_str().unwrap_or_default().into(),
                name: block["name"].as_str().unwrap_or_default().into(),
                input: block["input"].clone(),
            }),
            _ => {}
        }
    }
    reply.stop = stop_of(body["stop_reason"].as_str());
    reply.usage = Usage {
        input: body["usage"]["input_tokens"].as_u64().unwrap_or(0),
        output: body["usage"]["output_tokens"].as_u64().unwrap_or(0),
        cache_read: body["usage"]["cache_read_input_tokens"].as_u64(),
    };
    Ok(reply)
}

fn openai_reply(body: &Value) -> Result<Reply, ModelError> {
    let choice = &body["choices"][0];
    let message = &choice["message"];
    let mut reply = Reply { text: message["content"].as_str().unwrap_or_default().to_string(), ..Default::default() };
    for call in message["tool_calls"].as_array().into_iter().flatten() {
        let name = call["function"]["name"].as_str().unwrap_or_default().to_string();
        let input = parse_input(&name, call["function"]["arguments"].as_str().unwrap_or_default());
        reply.calls.push(ToolCall { id: call["id"].as_str().unwrap_or_default().into(), name, input });
    }
    reply.stop = stop_of(choice["finish_reason"].as_str());
    reply.usage = Usage {
        input: body["usage"]["prompt_tokens"].as_u64().unwrap_or(0),
        output: body["usage"]["completion_tokens"].as_u64().unwrap_or(0),
        cache_read: body["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64(),
    };
    Ok(reply)
}

fn stop_of(reason: Option<&str>) -> Stop {
    match reason {
        Some("tool_use" | "tool_calls") => Stop::ToolUse,
        Some("max_tokens" | "length") => Stop::MaxTokens,
        _ => Stop::EndTurn,
    }
}

/// A tool call being streamed.
struct PartialCall {
    /// Its index in the answer.
    index: usize,
    id: String,
    name: String,
    /// Its input JSON so far.
    input: String,
}

/// A streamed reply, assembled event by event, within the caps.
struct StreamParser {
    format: Format,
    label: String,
    reply: Reply,
    calls: Vec<PartialCall>,
    /// Bytes of tool-call ids, names and arguments so far.
    call_bytes: usize,
    done: bool,
}

impl StreamParser {
    fn new(format: Format, label: &str) -> Self {
        StreamParser {
            format,
            label: label.to_string(),
            reply: Reply::default(),
            calls: Vec::new(),
            call_bytes: 0,
            done: false,
        }
    }

    /// The call at `index`, begun when new (within [`MAX_TOOL_CALLS`]).
    fn call(&mut self, index: usize) -> Result<&mut PartialCall, ModelError> {
        if let Some(pos) = self.calls.iter().position(|c| c.index == index) {
            return Ok(&mut self.calls[pos]);
        }
        if self.calls.len() >= MAX_TOOL_CALLS {
            return Err(over_cap(&self.label, "tool calls", format!("{MAX_TOOL_CALLS} per answer")));
        }
        self.calls.push(PartialCall { index, id: String::new(), name: String::new(), input: String::new() });
        Ok(self.calls.last_mut().expect("just pushed"))
    }

    /// Count `parts` of tool calls against [`MAX_TOOL_ARGUMENTS`].
    fn count_call_bytes(&mut self, parts: &[&str]) -> Result<(), ModelError> {
        self.call_bytes += parts.iter().map(|p| p.len()).sum::<usize>();
        if self.call_bytes > MAX_TOOL_ARGUMENTS {
            let cap = format!("{} per answer", format_bytes(MAX_TOOL_ARGUMENTS));
            return Err(over_cap(&self.label, "tool-call arguments", cap));
        }
        Ok(())
    }

    /// Add streamed text (within [`MAX_ANSWER_TEXT`]); the text, for `on_text`.
    fn add_text(&mut self, text: &str) -> Result<Option<String>, ModelError> {
        if self.reply.text.len() + text.len() > MAX_ANSWER_TEXT {
            return Err(over_cap(&self.label, "text", format!("{} per answer", format_bytes(MAX_ANSWER_TEXT))));
        }
        self.reply.text.push_str(text);
        Ok((!text.is_empty()).then(|| text.to_string()))
    }

    /// Take one event's data; the text it adds, if any.
    fn feed(&mut self, data: &str) -> Result<Option<String>, ModelError> {
        if data == "[DONE]" {
            self.done = true;
            return Ok(None);
        }
        // The whole event in the message: it is redacted, then cut short.
        let event: Value = serde_json::from_str(data)
            .map_err(|err| ModelError::Provider(format!("a streamed event is not JSON ({err}): {data}")))?;
        match self.format {
            Format::Anthropic => self.feed_anthropic(&event),
            Format::OpenAi => self.feed_openai(&event),
        }
    }

    fn feed_anthropic(&mut self, event: &Value) -> Result<Option<String>, ModelError> {
        match event["type"].as_str() {
            Some("message_start") => {
                let usage = &event["message"]["usage"];
                self.reply.usage.input = usage["input_tokens"].as_u64().unwrap_or(0);
                self.reply.usage.cache_read = usage["cache_read_input_tokens"].as_u64();
            }
            Some("content_block_start") => {
                let index = index_of(event);
                let block = &event["content_block"];
                if block["type"] == "tool_use" {
                    let (id, name) =
                        (block["id"].as_str().unwrap_or_default(), block["name"].as_str().unwrap_or_default());
                    self.count_call_bytes(&[id, name])?;
                    let call = self.call(index)?;
                    call.id = id.into();
                    call.name = name.into();
                }
            }
            Some("content_block_delta") => {
                let index = index_of(event);
                let delta = &event["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => return self.add_text(delta["text"].as_str().unwrap_or_default()),
                    Some("input_json_delta") => {
                        let part = delta["partial_json"].as_str().unwrap_or_default();
                        self.count_call_bytes(&[part])?;
                        self.call(index)?.input.push_str(part);
                    }
                    _ => {}
                }
            }
            Some("message_delta") => {
                self.reply.stop = stop_of(event["delta"]["stop_reason"].as_str());
                if let Some(output) = event["usage"]["output_tokens"].as_u64() {
                    self.reply.usage.output = output;
                }
            }
            Some("message_stop") => self.done = true,
            Some("error") => {
                let message = event["error"]["message"].as_str().unwrap_or("an error event").to_string();
                return Err(ModelError::Provider(format!("the stream ended with an error: {message}")));
            }
            _ => {}
        }
        Ok(None)
    }

    fn feed_openai(&mut self, event: &Value) -> Result<Option<String>, ModelError> {
        if let Some(usage) = event.get("usage").filter(|u| u.is_object()) {
            self.reply.usage.input = usage["prompt_tokens"].as_u64().unwrap_or(0);
            self.reply.usage.output = usage["completion_tokens"].as_u64().unwrap_or(0);
            self.reply.usage.cache_read = usage["prompt_tokens_details"]["cached_tokens"].as_u64();
        }
        let choice = &event["choices"][0];
        if let Some(reason) = choice["finish_reason"].as_str() {
            self.reply.stop = stop_of(Some(reason));
        }
        let delta = &choice["delta"];
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let id = call["id"].as_str();
            let name = call["function"]["name"].as_str();
            let arguments = call["function"]["arguments"].as_str();
            self.count_call_bytes(&[id.unwrap_or_default(), name.unwrap_or_default(), arguments.unwrap_or_default()])?;
            let entry = self.call(index_of(call))?;
            if let Some(id) = id {
                entry.id = id.into();
            }
            if let Some(name) = name {
                entry.name.push_str(name);
            }
            if let Some(arguments) = arguments {
                entry.input.push_str(arguments);
            }
        }
        self.add_text(delta["content"].as_str().unwrap_or_default())
    }

    fn finish(mut self) -> Result<Reply, ModelError> {
        if !self.done && self.reply.text.is_empty() && self.calls.is_empty() {
            return Err(ModelError::Provider(format!("{}: the stream ended before any answer", self.label)));
        }
        self.calls.sort_by_key(|c| c.index);
        for call in self.calls {
            let input = parse_input(&call.name, &call.input);
            self.reply.calls.push(ToolCall { id: call.id, name: call.name, input });
        }
        if !self.reply.calls.is_empty() {
            self.reply.stop = Stop::ToolUse;
        }
        Ok(self.reply)
    }
}

/// An event's (or a call's) `index`: any number, never a panic.
fn index_of(value: &Value) -> usize {
    value["index"].as_u64().map_or(0, |i| usize::try_from(i).unwrap_or(usize::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_seconds_or_a_date_and_always_bounded() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(" 0.5 ", now), Some(Duration::from_millis(500)));
        // Huge, infinite or negative values: bounded, never a panic.
        for huge in ["1e20", "18446744073709551616", "inf", "1e308"] {
            assert_eq!(retry_after(huge, now), Some(MAX_BACKOFF), "{huge}");
        }
        assert_eq!(retry_after("-5", now), Some(Duration::ZERO));
        assert_eq!(retry_after("-inf", now), Some(Duration::ZERO));
        assert_eq!(retry_after("NaN", now), None);
        assert_eq!(retry_after("soon", now), None);
        let date = |secs| httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(retry_after(&date(1_700_000_007), now), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(&date(1_600_000_000), now), Some(Duration::ZERO), "a date in the past");
        assert_eq!(retry_after(&date(1_900_000_000), now), Some(MAX_BACKOFF), "a date far ahead");
    }

    #[test]
    fn an_event_end_is_found_across_chunks_once() {
        assert_eq!(find_event_end(b"data: x\n\ndata: y", 0), Some(9));
        assert_eq!(find_event_end(b"data: x\r\n\r\n", 0), Some(11));
        // The blank line began in bytes searched before.
        assert_eq!(find_event_end(b"data: x\n\n", 8), Some(9));
        assert_eq!(find_event_end(b"data: x\r\n\r\n", 9), Some(11));
        assert_eq!(find_event_end(b"data: x\n", 8), None);
    }

    #[test]
    fn a_streamed_answer_is_held_to_its_caps() {
        let mut parser = StreamParser::new(Format::OpenAi, "openai/x");
        let chunk = json!({"choices": [{"delta": {"content": "x".repeat(MAX_ANSWER_TEXT / 2 + 1)}}]}).to_string();
        assert!(parser.feed(&chunk).unwrap().is_some());
        let err = parser.feed(&chunk).unwrap_err().to_string();
        assert!(err.contains("text is over flue's cap of 1.0 MiB per answer"), "{err}");
        let mut parser = StreamParser::new(Format::Anthropic, "anthropic/x");
        for index in 0..MAX_TOOL_CALLS {
            let start = json!({"type": "content_block_start", "index": index,
                "content_block": {"type": "tool_use", "id": "t", "name": "glob"}});
            parser.feed(&start.to_string()).unwrap();
        }
        let one_more = json!({"type": "content_block_delta", "index": u64::MAX,
            "delta": {"type": "input_json_delta", "partial_json": "{}"}});
        let err = parser.feed(&one_more.to_string()).unwrap_err().to_string();
        assert!(err.contains("tool calls is over flue's cap of 64 per answer"), "{err}");
    }

    #[test]
    fn messages_are_cut_after_redaction() {
        assert_eq!(cut("abcdef", 3), "abc… [3 more bytes]");
        assert_eq!(cut("abc", 3), "abc");
    }
}
