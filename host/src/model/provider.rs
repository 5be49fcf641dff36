//! Model providers: one model turn over HTTP, in Anthropic's Messages
//! format or OpenAI's Chat Completions format, streamed (server-sent
//! events, consumed as they arrive) or as one JSON body — whichever the
//! server answers. 429, 529, 408 and 5xx are retried with backoff that
//! honours `retry-after`.
//!
//! The API key lives here, in the host: it goes only to the provider's
//! configured origin (redirects are not followed) and is redacted from
//! every error.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use super::{Message, ModelError, Reply, Stop, ToolCall, Usage};
use crate::capability::secrets::Secrets;

/// Attempts per turn for retryable failures.
const ATTEMPTS: u32 = 5;
/// The longest pause between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Output tokens asked for per turn.
const MAX_OUTPUT_TOKENS: u64 = 8192;

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
        let body = serde_json::to_vec(&self.body(turn)).expect("JSON serialises");
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
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .map(|s| Duration::from_secs_f64(s.max(0.0)));
                    let text = response.text().await.unwrap_or_default();
                    let message = error_message(&text).unwrap_or_else(|| text.chars().take(300).collect());
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

    fn redact_error(&self, err: ModelError) -> ModelError {
        err.map_message(|m| self.redact(m))
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
            let bytes = response
                .bytes()
                .await
                .map_err(|err| ModelError::Provider(format!("{}: the answer broke off: {err}", self.label)))?;
            let body: Value = serde_json::from_slice(&bytes)
                .map_err(|err| ModelError::Provider(format!("{} sent a body that is not JSON: {err}", self.label)))?;
            let reply = match self.format {
                Format::Anthropic => anthropic_reply(&body),
                Format::OpenAi => openai_reply(&body),
            }?;
            if !reply.text.is_empty() {
                on_text(&reply.text);
            }
            return Ok(reply);
        }
        let mut parser = StreamParser::new(self.format);
        let mut stream = response.bytes_stream();
        let mut pending = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|err| ModelError::Provider(format!("{}: the stream broke: {err}", self.label)))?;
            pending.extend_from_slice(&chunk);
            // One SSE event per blank line.
            while let Some(end) = find_event_end(&pending) {
                let event: Vec<u8> = pending.drain(..end).collect();
                let data: String = String::from_utf8_lossy(&event)
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
        }
        parser.finish(&self.label)
    }
}

/// The end of the first complete SSE event in `buf` (after its blank line).
fn find_event_end(buf: &[u8]) -> Option<usize> {
    let lf = memchr::memmem::find(buf, b"\n\n").map(|i| i + 2);
    let crlf = memchr::memmem::find(buf, b"\r\n\r\n").map(|i| i + 4);
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

/// A streamed reply, assembled event by event.
struct StreamParser {
    format: Format,
    reply: Reply,
    /// Tool calls being streamed: (id, name, input JSON so far), by index.
    calls: Vec<(usize, String, String, String)>,
    done: bool,
}

impl StreamParser {
    fn new(format: Format) -> Self {
        StreamParser { format, reply: Reply::default(), calls: Vec::new(), done: false }
    }

    fn call(&mut self, index: usize) -> &mut (usize, String, String, String) {
        if let Some(pos) = self.calls.iter().position(|c| c.0 == index) {
            return &mut self.calls[pos];
        }
        self.calls.push((index, String::new(), String::new(), String::new()));
        self.calls.last_mut().expect("just pushed")
    }

    /// Take one event's data; the text it adds, if any.
    fn feed(&mut self, data: &str) -> Result<Option<String>, ModelError> {
        if data == "[DONE]" {
            self.done = true;
            return Ok(None);
        }
        let event: Value = serde_json::from_str(data)
            .map_err(|err| ModelError::Provider(format!("a streamed event is not JSON ({err}): {data:.200}")))?;
        match self.format {
            Format::Anthropic => self.feed_anthropic(&event),
            Format::OpenAi => Ok(self.feed_openai(&event)),
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
                let index = event["index"].as_u64().unwrap_or(0) as usize;
                let block = &event["content_block"];
                if block["type"] == "tool_use" {
                    let call = self.call(index);
                    call.1 = block["id"].as_str().unwrap_or_default().into();
                    call.2 = block["name"].as_str().unwrap_or_default().into();
                }
            }
            Some("content_block_delta") => {
                let index = event["index"].as_u64().unwrap_or(0) as usize;
                let delta = &event["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => {
                        let text = delta["text"].as_str().unwrap_or_default().to_string();
                        self.reply.text.push_str(&text);
                        return Ok(Some(text));
                    }
                    Some("input_json_delta") => {
                        let part = delta["partial_json"].as_str().unwrap_or_default().to_string();
                        self.call(index).3.push_str(&part);
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

    fn feed_openai(&mut self, event: &Value) -> Option<String> {
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
            let index = call["index"].as_u64().unwrap_or(0) as usize;
            let entry = self.call(index);
            if let Some(id) = call["id"].as_str() {
                entry.1 = id.into();
            }
            if let Some(name) = call["function"]["name"].as_str() {
                entry.2.push_str(name);
            }
            if let Some(arguments) = call["function"]["arguments"].as_str() {
                entry.3.push_str(arguments);
            }
        }
        let text = delta["content"].as_str().filter(|t| !t.is_empty())?.to_string();
        self.reply.text.push_str(&text);
        Some(text)
    }

    fn finish(mut self, label: &str) -> Result<Reply, ModelError> {
        if !self.done && self.reply.text.is_empty() && self.calls.is_empty() {
            return Err(ModelError::Provider(format!("{label}: the stream ended before any answer")));
        }
        self.calls.sort_by_key(|c| c.0);
        for (_, id, name, input) in self.calls {
            let input = parse_input(&name, &input);
            self.reply.calls.push(ToolCall { id, name, input });
        }
        if !self.reply.calls.is_empty() {
            self.reply.stop = Stop::ToolUse;
        }
        Ok(self.reply)
    }
}
