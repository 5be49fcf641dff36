//! Model providers: one model turn over HTTP, streamed (server-sent
//! events, consumed as they arrive) or as one JSON body — whichever the
//! server answers. 429, 529, 408 and 5xx are retried with backoff that
//! honours `retry-after` (seconds or an HTTP date, capped).
//!
//! Each wire format is one [`WireFormat`] in a file of its own —
//! [`anthropic`] (Messages) and [`openai`] (Chat Completions) — listed in
//! [`FORMATS`]: a new format is a new file and a line there. What every
//! format shares lives here: configuration, retries, errors, the SSE
//! framing and the caps.
//!
//! The server is treated as hostile: every answer is read within the caps
//! of [`super::caps`] (text, tool calls and their arguments, one event, the
//! events and bytes of a stream, a plain body, an error body), and a breach
//! is a `provider` error naming the cap, never more memory.
//!
//! The API key lives here, in the host: it goes only to the provider's
//! configured origin (redirects are not followed) and is redacted from
//! every error (before any message is cut short).

mod answer;
mod anthropic;
mod openai;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use serde_json::Value;

use self::answer::{StreamedAnswer, check_reply, over_cap};
use super::caps::{
    MAX_BACKOFF, MAX_ERROR_BODY, MAX_ERROR_MESSAGE, MAX_PLAIN_BODY, MAX_SSE_EVENT, MAX_STREAM_BYTES, MAX_STREAM_EVENTS,
};
use super::prices::{Cost, Price, cost, price_of};
use super::{Message, ModelError, Reply, Thinking};
use crate::sandbox::session::format_bytes;
use crate::secrets::Secrets;

/// Attempts per turn for retryable failures.
const ATTEMPTS: u32 = 5;

/// One wire format: where a turn goes, how it is asked for, and how its
/// answer reads, plain or streamed.
trait WireFormat: Send + Sync {
    /// The `provider` of `provider/model`.
    fn provider(&self) -> &'static str;
    /// The setting that holds the key.
    fn key_var(&self) -> &'static str;
    /// The setting that holds the base URL.
    fn base_var(&self) -> &'static str;
    /// The base URL when none is set.
    fn default_base(&self) -> &'static str;
    /// Whether a configured base URL may go without a key (a local server).
    fn keyless_with_base(&self) -> bool {
        false
    }
    /// Whether the input token count includes the tokens read from the
    /// prompt cache.
    fn cache_included(&self) -> bool;
    /// The endpoint under `base`.
    fn url(&self, base: &str) -> String;
    /// `request` with the key (if any) and the headers the format needs.
    fn authorize(&self, request: reqwest::RequestBuilder, key: Option<&str>) -> reqwest::RequestBuilder;
    /// The request body for one turn of `model`.
    fn body(&self, model: &str, turn: &TurnRequest<'_>) -> Value;
    /// An answer sent as one JSON body.
    fn reply(&self, body: &Value) -> Reply;
    /// One streamed event's data, into `answer`; the text it adds, if any.
    fn feed(&self, data: &str, answer: &mut StreamedAnswer) -> Result<Option<String>, ModelError>;
    /// Whether an error answer (`status`, its JSON `body`) says the
    /// conversation is over the model's context, by the provider's own
    /// error code — never by its words.
    fn context_overflow(&self, status: u16, body: &Value) -> bool;
}

/// Every wire format, by provider name.
static FORMATS: [&dyn WireFormat; 2] = [&anthropic::Anthropic, &openai::OpenAi];

/// A configured provider and model.
pub struct Provider {
    format: &'static dyn WireFormat,
    base: String,
    key: Option<String>,
    /// The model's name at the provider.
    pub model: String,
    /// `provider/model`, as the agent named it.
    pub label: String,
    client: reqwest::Client,
    secrets: Secrets,
    price: Option<Price>,
}

/// What one turn sends.
pub struct TurnRequest<'a> {
    /// The system prompt.
    pub system: &'a str,
    /// The conversation so far.
    pub messages: &'a [Message],
    /// Tool definitions (`{name, description, parameters}`).
    pub tools: &'a [Value],
    /// How much the model reasons (`None`: the provider's default).
    pub thinking: Option<Thinking>,
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
        let format = FORMATS.iter().copied().find(|f| f.provider() == provider).ok_or_else(|| {
            ModelError::InvalidInput(format!(
                "unknown model provider {provider:?}: use anthropic/… or openai/… (any OpenAI-compatible \
                 server through OPENAI_BASE_URL)"
            ))
        })?;
        let get = |key: &str| config.get(key).filter(|v| !v.trim().is_empty()).cloned();
        let base = get(format.base_var()).unwrap_or_else(|| format.default_base().into());
        let key = get(format.key_var());
        let keyless = format.keyless_with_base() && config.contains_key(format.base_var());
        if key.is_none() && !keyless {
            return Err(ModelError::Auth(format!(
                "{} is not set: flue needs it to call {provider} models",
                format.key_var()
            )));
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|err| ModelError::Provider(format!("cannot build an HTTP client: {err}")))?;
        let secrets = Secrets::from_pairs(key.iter().map(|k| (format.key_var().to_string(), k.clone())).collect());
        Ok(Provider {
            format,
            base: base.trim_end_matches('/').to_string(),
            key,
            model: name.to_string(),
            label: model.to_string(),
            client,
            secrets,
            price: price_of(model, config),
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
        self.format.url(&self.base)
    }

    /// What `usage` of this model cost; `None` when its price is unknown.
    pub fn cost(&self, usage: &super::Usage) -> Option<Cost> {
        Some(cost(self.price?, usage, self.format.cache_included()))
    }

    /// One model turn, retried while the provider says to try again.
    /// `on_text` sees text as it streams in.
    pub async fn turn(
        &self,
        turn: &TurnRequest<'_>,
        on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<Reply, ModelError> {
        let body = self.format.body(&self.model, turn);
        let body = bytes::Bytes::from(serde_json::to_vec(&body).expect("JSON serialises"));
        let mut attempt = 1;
        loop {
            let request = self.client.post(self.url()).header("content-type", "application/json").body(body.clone());
            let request = self.format.authorize(request, self.key.as_deref());
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
                    let json: Value = serde_json::from_str(&text).unwrap_or_default();
                    // Whole here: the message is redacted before it is cut.
                    let message = error_message(&json).unwrap_or_else(|| text.into_owned());
                    let retryable = matches!(status, 408 | 429 | 500..=599);
                    if retryable && attempt < ATTEMPTS {
                        Some(retry_after)
                    } else {
                        return Err(self.redact_error(self.classify(status, &json, &message, attempt)));
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

    fn classify(&self, status: u16, body: &Value, message: &str, attempts: u32) -> ModelError {
        let tries = if attempts > 1 { format!(" after {attempts} attempts") } else { String::new() };
        match status {
            401 | 403 => ModelError::Auth(format!(
                "{} rejected the key in {} ({status}): {message}",
                self.label,
                self.format.key_var()
            )),
            429 => ModelError::RateLimited(format!("{} kept answering 429{tries}: {message}", self.label)),
            _ if self.format.context_overflow(status, body) => {
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
            let reply = self.format.reply(&body);
            check_reply(&self.label, &reply)?;
            if !reply.text.is_empty() {
                on_text(&reply.text);
            }
            return Ok(reply);
        }
        let mut answer = StreamedAnswer::new(&self.label);
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
                if let Some(text) = self.format.feed(&data, &mut answer)? {
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
        answer.finish()
    }
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
fn error_message(body: &Value) -> Option<String> {
    body["error"]["message"].as_str().or(body["message"].as_str()).map(str::to_string)
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
        use serde_json::json;

        use crate::model::caps::{MAX_ANSWER_TEXT, MAX_TOOL_CALLS};
        let mut answer = StreamedAnswer::new("openai/x");
        let chunk = json!({"choices": [{"delta": {"content": "x".repeat(MAX_ANSWER_TEXT / 2 + 1)}}]}).to_string();
        assert!(openai::OpenAi.feed(&chunk, &mut answer).unwrap().is_some());
        let err = openai::OpenAi.feed(&chunk, &mut answer).unwrap_err().to_string();
        assert!(err.contains("text is over flue's cap of 1.0 MiB per answer"), "{err}");
        let mut answer = StreamedAnswer::new("anthropic/x");
        for index in 0..MAX_TOOL_CALLS {
            let start = json!({"type": "content_block_start", "index": index,
                "content_block": {"type": "tool_use", "id": "t", "name": "glob"}});
            anthropic::Anthropic.feed(&start.to_string(), &mut answer).unwrap();
        }
        let one_more = json!({"type": "content_block_delta", "index": u64::MAX,
            "delta": {"type": "input_json_delta", "partial_json": "{}"}});
        let err = anthropic::Anthropic.feed(&one_more.to_string(), &mut answer).unwrap_err().to_string();
        assert!(err.contains("tool calls is over flue's cap of 64 per answer"), "{err}");
    }

    #[test]
    fn thinking_is_assembled_in_order_and_held_to_its_cap() {
        use serde_json::json;

        use crate::model::Reasoning;
        use crate::model::caps::MAX_ANSWER_TEXT;
        let feed = |answer: &mut StreamedAnswer, event: serde_json::Value| {
            anthropic::Anthropic.feed(&event.to_string(), answer).map(|_| ())
        };
        let mut answer = StreamedAnswer::new("anthropic/x");
        let start =
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}});
        feed(&mut answer, start).unwrap();
        for (kind, key, part) in [
            ("thinking_delta", "thinking", "a "),
            ("thinking_delta", "thinking", "b"),
            ("signature_delta", "signature", "s1"),
        ] {
            feed(&mut answer, json!({"type": "content_block_delta", "index": 0, "delta": {"type": kind, key: part}}))
                .unwrap();
        }
        let redacted = json!({"type": "content_block_start", "index": 1, "content_block": {"type": "redacted_thinking", "data": "enc"}});
        feed(&mut answer, redacted).unwrap();
        feed(&mut answer, json!({"type": "message_stop"})).unwrap();
        let reply = answer.finish().unwrap();
        assert_eq!(
            reply.reasoning,
            [
                Reasoning::Thinking { thinking: "a b".into(), signature: "s1".into() },
                Reasoning::Redacted { data: "enc".into() }
            ]
        );
        let mut answer = StreamedAnswer::new("anthropic/x");
        let start =
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}});
        feed(&mut answer, start).unwrap();
        let delta = json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "thinking_delta", "thinking": "x".repeat(MAX_ANSWER_TEXT / 2 + 1)}});
        feed(&mut answer, delta.clone()).unwrap();
        let err = feed(&mut answer, delta).unwrap_err().to_string();
        assert!(err.contains("reasoning is over flue's cap"), "{err}");
    }

    #[test]
    fn every_format_has_its_own_provider_name() {
        let mut names: Vec<&str> = FORMATS.iter().map(|f| f.provider()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), FORMATS.len());
    }

    #[test]
    fn a_context_overflow_is_read_from_the_providers_code_not_its_words() {
        let words = serde_json::json!({"error": {"type": "invalid_request_error", "message": "context too long"}});
        assert!(!openai::OpenAi.context_overflow(400, &words));
        assert!(!anthropic::Anthropic.context_overflow(400, &words));
        let coded = serde_json::json!({"error": {"code": "context_length_exceeded", "message": "x"}});
        assert!(openai::OpenAi.context_overflow(400, &coded));
        let too_large = serde_json::json!({"error": {"type": "request_too_large", "message": "x"}});
        assert!(anthropic::Anthropic.context_overflow(413, &too_large));
    }

    #[test]
    fn messages_are_cut_after_redaction() {
        assert_eq!(cut("abcdef", 3), "abc… [3 more bytes]");
        assert_eq!(cut("abc", 3), "abc");
    }
}
