//! The model loop behind `session.prompt`, run by the host: call the model,
//! run the tools it asks for against the agent's session, feed the results
//! back, until it answers (or runs out of turns, or the run's deadline).
//!
//! * [`provider`]: Anthropic and OpenAI-compatible wire formats, streaming,
//!   retries; the API key stays here.
//! * [`tools`]: `read`, `write`, `edit`, `bash`, `grep`, `glob`.
//! * [`caps`]: what a model may make flue hold, run or write.
//!
//! Each model turn and each tool call is an event; a tool's arguments are
//! shown (redacted, cut short) and its result only by size. Every event of a
//! prompt — streamed text, turns, tool calls, the sandbox operations the
//! tools make — goes through one event log that redacts the provider's key;
//! streamed text is redacted over the joined stream, so a key split across
//! deltas is caught too.

pub mod caps;
pub mod provider;
pub mod tools;

use std::time::Instant;

use serde_json::Value;

use crate::events::{Event, EventLog, millis};
use crate::journal::{self, Journal, JournalError};
use crate::sandbox::session::{Session, format_bytes};
use crate::secrets::Secrets;

/// Default model turns per prompt.
pub const DEFAULT_MAX_TURNS: u32 = 50;
/// The longest `AGENTS.md` put in the system prompt (bytes).
const MAX_AGENTS_MD: usize = 32 * 1024;

/// One message of a conversation, provider-neutral. Stored as JSON when a
/// conversation outlives its run (`{"role": "user", "content": "…"}`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "role", content = "content", rename_all = "kebab-case")]
pub enum Message {
    /// The user's (agent's) prompt.
    User(String),
    /// The model's answer: text and tool calls.
    Assistant {
        /// Its text.
        text: String,
        /// The tools it asked for.
        calls: Vec<ToolCall>,
    },
    /// Tool results, answering the previous message's calls.
    Results(Vec<ToolResult>),
}

/// A tool call the model made.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ToolCall {
    /// The provider's id for it, which its result quotes.
    pub id: String,
    /// The tool.
    pub name: String,
    /// Its arguments.
    pub input: Value,
}

/// What a tool call returned.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolResult {
    /// The call's id.
    pub id: String,
    /// What the model reads.
    pub content: String,
    /// Whether the tool failed.
    pub is_error: bool,
}

/// Why a turn ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Stop {
    /// The model answered.
    #[default]
    EndTurn,
    /// The model wants tool results.
    ToolUse,
    /// The answer hit the output limit.
    MaxTokens,
}

/// Tokens used.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Tokens sent.
    pub input: u64,
    /// Tokens generated.
    pub output: u64,
    /// Tokens read from the provider's prompt cache, when it says.
    pub cache_read: Option<u64>,
}

/// One model turn's answer.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Reply {
    /// Its text.
    pub text: String,
    /// The tools it asked for.
    pub calls: Vec<ToolCall>,
    /// Why it ended.
    pub stop: Stop,
    /// Tokens it used.
    pub usage: Usage,
}

/// Why a prompt produced no answer (the WIT `prompt-error`).
#[derive(Clone, Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ModelError {
    /// The key is missing or was rejected.
    #[error("auth: {0}")]
    Auth(String),
    /// 429s outlasted the retries.
    #[error("rate-limited: {0}")]
    RateLimited(String),
    /// The conversation no longer fits.
    #[error("context-overflow: {0}")]
    ContextOverflow(String),
    /// No answer within the turns allowed.
    #[error("max-turns: {0}")]
    MaxTurns(String),
    /// The provider failed otherwise.
    #[error("provider: {0}")]
    Provider(String),
    /// Bad input: no model, an unknown tool, a bad schema.
    #[error("invalid-input: {0}")]
    InvalidInput(String),
}

impl ModelError {
    /// The same error with its message passed through `f`.
    pub fn map_message(self, f: impl Fn(&str) -> String) -> ModelError {
        match self {
            ModelError::Auth(m) => ModelError::Auth(f(&m)),
            ModelError::RateLimited(m) => ModelError::RateLimited(f(&m)),
            ModelError::ContextOverflow(m) => ModelError::ContextOverflow(f(&m)),
            ModelError::MaxTurns(m) => ModelError::MaxTurns(f(&m)),
            ModelError::Provider(m) => ModelError::Provider(f(&m)),
            ModelError::InvalidInput(m) => ModelError::InvalidInput(f(&m)),
        }
    }
}

/// How to run one prompt (the WIT `prompt-options`).
#[derive(Clone, Debug, Default)]
pub struct PromptOptions {
    /// The agent's instructions.
    pub system: Option<String>,
    /// Turns allowed (default [`DEFAULT_MAX_TURNS`]).
    pub max_turns: Option<u32>,
    /// Tools allowed (`None`: all).
    pub tools: Option<Vec<String>>,
    /// A JSON Schema the final answer follows.
    pub result_schema: Option<String>,
}

/// A prompt's answer (the WIT `prompt-result`).
#[derive(Clone, Debug)]
pub struct PromptAnswer {
    /// The final text.
    pub text: String,
    /// With a schema: the answer as JSON text.
    pub json: Option<String>,
    /// `provider/model`.
    pub model: String,
    /// Turns used.
    pub turns: u32,
    /// Tokens used over all turns.
    pub usage: Usage,
}

/// The system prompt: the agent's instructions, then `AGENTS.md` from the
/// cwd, the cwd itself, the date and the cwd's top level.
async fn system_prompt(session: &Session, options: &PromptOptions, tools: &[String]) -> String {
    let mut parts = Vec::new();
    if let Some(system) = options.system.as_deref().filter(|s| !s.trim().is_empty()) {
        parts.push(system.trim().to_string());
    }
    parts.push(format!(
        "You work in a sandbox through tools ({}). Paths are relative to the working directory unless \
         absolute. Use the tools to inspect and change files and to run commands; when the task is done, \
         answer with a short summary.",
        tools.join(", ")
    ));
    if let Some(agents) = read_start(session, "AGENTS.md", MAX_AGENTS_MD).await {
        parts.push(format!("Project instructions (AGENTS.md):\n{}", agents.trim()));
    }
    let today = crate::events::today_utc();
    parts.push(format!("Working directory: {}\nToday's date: {today}", session.cwd()));
    if let Ok(mut entries) = session.readdir(".").await {
        entries.truncate(100);
        if !entries.is_empty() {
            parts.push(format!("Top level of the working directory:\n{}", entries.join("\n")));
        }
    }
    if let Some(schema) = &options.result_schema {
        parts.push(format!(
            "Your final answer must be only a JSON value that follows this JSON Schema, with no other text:\n{schema}"
        ));
    }
    parts.join("\n\n")
}

/// The first `max` bytes of a text file (whole characters), without reading
/// the rest; `None` when it cannot be read.
async fn read_start(session: &Session, path: &str, max: usize) -> Option<String> {
    let mut reader = session.open_read(path, 0).await.ok()?;
    let mut bytes = Vec::new();
    while bytes.len() < max {
        let part = reader.read(max - bytes.len()).await.ok()?;
        if part.is_empty() {
            break;
        }
        bytes.extend_from_slice(&part);
    }
    let text = match String::from_utf8(bytes) {
        Ok(text) => text,
        // Cut inside a character: keep the whole ones.
        Err(err) if err.utf8_error().error_len().is_none() => {
            let valid = err.utf8_error().valid_up_to();
            let mut bytes = err.into_bytes();
            bytes.truncate(valid);
            String::from_utf8(bytes).ok()?
        }
        Err(_) => return None,
    };
    Some(text)
}

/// The bytes a conversation holds (what is sent to the model each turn).
fn conversation_bytes(system: &str, conversation: &[Message]) -> usize {
    let message = |m: &Message| match m {
        Message::User(text) => text.len(),
        Message::Assistant { text, calls } => {
            text.len() + calls.iter().map(|c| c.id.len() + c.name.len() + c.input.to_string().len()).sum::<usize>()
        }
        Message::Results(results) => results.iter().map(|r| r.id.len() + r.content.len()).sum(),
    };
    system.len() + conversation.iter().map(message).sum::<usize>()
}

/// Streamed text on its way to events, redacted over the joined stream: the
/// tail that could still be the start of the key is held back until more
/// arrives or the answer ends, so a key split across deltas never shows.
struct TextEvents<'a> {
    secrets: &'a Secrets,
    events: &'a EventLog,
    /// Text not yet passed on.
    pending: Vec<u8>,
}

impl TextEvents<'_> {
    fn push(&mut self, delta: &str) {
        self.pending.extend_from_slice(delta.as_bytes());
        let ready = self.secrets.redact_stream(&mut self.pending, false);
        self.emit(ready);
    }

    /// The answer ended: pass on what was held back.
    fn finish(&mut self) {
        let ready = self.secrets.redact_stream(&mut self.pending, true);
        self.emit(ready);
    }

    fn emit(&mut self, mut ready: Vec<u8>) {
        // A character cut by the hold-back waits for its other bytes.
        if let Err(err) = std::str::from_utf8(&ready)
            && err.error_len().is_none()
        {
            let rest = ready.split_off(err.valid_up_to());
            self.pending.splice(0..0, rest);
        }
        if !ready.is_empty() {
            let text = String::from_utf8_lossy(&ready).into_owned();
            self.events.record(Event::ModelText { text });
        }
    }
}

/// Run one prompt on `conversation` (which keeps growing: a second prompt
/// continues it) with `provider`'s model working in `session`.
///
/// With a `journal`, the system prompt, each model turn and each tool call
/// are recorded — or, in a resumed run, answered from it (see
/// [`crate::journal`]); a journal that cannot go on is the outer error.
pub async fn prompt(
    provider: &provider::Provider,
    session: &Session,
    conversation: &mut Vec<Message>,
    text: String,
    options: &PromptOptions,
    events: &EventLog,
    journal: Option<&Journal>,
) -> Result<Result<PromptAnswer, ModelError>, JournalError> {
    match prompt_loop(provider, session, conversation, text, options, events, journal).await {
        Ok(answer) => Ok(Ok(answer)),
        Err(Stopped::Model(err)) => Ok(Err(err)),
        Err(Stopped::Journal(err)) => Err(err),
    }
}

/// Why the loop stopped without an answer.
enum Stopped {
    Model(ModelError),
    Journal(JournalError),
}

impl From<ModelError> for Stopped {
    fn from(err: ModelError) -> Self {
        Stopped::Model(err)
    }
}

impl From<JournalError> for Stopped {
    fn from(err: JournalError) -> Self {
        Stopped::Journal(err)
    }
}

async fn prompt_loop(
    provider: &provider::Provider,
    session: &Session,
    conversation: &mut Vec<Message>,
    text: String,
    options: &PromptOptions,
    events: &EventLog,
    journal: Option<&Journal>,
) -> Result<PromptAnswer, Stopped> {
    let tools: Vec<String> = match &options.tools {
        None => tools::names().into_iter().map(String::from).collect(),
        Some(names) => {
            if let Some(unknown) = names.iter().find(|n| tools::find(n).is_none()) {
                return Err(ModelError::InvalidInput(format!(
                    "there is no tool {unknown:?}: the tools are {}",
                    tools::names().join(", ")
                ))
                .into());
            }
            names.clone()
        }
    };
    if let Some(schema) = &options.result_schema
        && serde_json::from_str::<Value>(schema).is_err()
    {
        return Err(ModelError::InvalidInput("result-schema is not valid JSON".into()).into());
    }
    // One choke point: every event of this prompt, the tools' sandbox
    // operations included, is redacted of the key.
    let events = &events.redacting(provider.secrets().clone());
    let session = &Session::new(session.sandbox().clone(), Some(session.cwd()), events.clone())
        .map_err(|err| ModelError::InvalidInput(err.to_string()))?
        .with_max_read(caps::MAX_TOOL_FILE as u64);
    let definitions = tools::definitions(&tools);
    let system = journal::through(journal, || "system-prompt".into(), system_prompt(session, options, &tools)).await?;
    let max_turns = options.max_turns.unwrap_or(DEFAULT_MAX_TURNS).max(1);
    conversation.push(Message::User(text));
    let mut usage = Usage::default();
    for turn in 1..=max_turns {
        let size = conversation_bytes(&system, conversation);
        if size > caps::MAX_CONVERSATION {
            return Err(ModelError::ContextOverflow(format!(
                "the conversation is {}, over flue's cap of {}: start a new session, or narrow the task",
                format_bytes(size),
                format_bytes(caps::MAX_CONVERSATION)
            ))
            .into());
        }
        let started = Instant::now();
        let request = provider::TurnRequest { system: &system, messages: conversation, tools: &definitions };
        let live = async {
            let mut text_events = TextEvents { secrets: provider.secrets(), events, pending: Vec::new() };
            let reply = provider.turn(&request, &mut |delta: &str| text_events.push(delta)).await;
            text_events.finish();
            // The key, if the model says it, goes no further: not into the
            // journal, the conversation or a tool's arguments.
            reply.map(|reply| without_key(provider, reply))
        };
        let reply = journal::through(journal, || "model-turn".into(), live).await??;
        // Counts from the provider: any value, never an overflow.
        usage.input = usage.input.saturating_add(reply.usage.input);
        usage.output = usage.output.saturating_add(reply.usage.output);
        if let Some(read) = reply.usage.cache_read {
            usage.cache_read = Some(usage.cache_read.unwrap_or(0).saturating_add(read));
        }
        events.record(Event::ModelTurn {
            model: provider.label.clone(),
            turn,
            duration_ms: millis(started.elapsed()),
            input_tokens: reply.usage.input,
            output_tokens: reply.usage.output,
            tool_calls: reply.calls.len(),
        });
        conversation.push(Message::Assistant { text: reply.text.clone(), calls: reply.calls.clone() });
        if reply.calls.is_empty() {
            // The key never reaches the agent, even when the model says it.
            let text = provider.redact(&reply.text);
            // Re-serialised JSON turns escapes (`\u0073k-…`) back into the
            // characters they stand for: redact it again.
            let json = match &options.result_schema {
                Some(_) => Some(provider.redact(&answer_json(&text)?)),
                None => None,
            };
            return Ok(PromptAnswer { text, json, model: provider.label.clone(), turns: turn, usage });
        }
        let mut results = Vec::new();
        for call in &reply.calls {
            let started = Instant::now();
            let outcome = if tools.contains(&call.name) {
                let key = || journal::key("tool", &[call.name.as_bytes(), call.input.to_string().as_bytes()]);
                journal::through(journal, key, tools::call(session, &call.name, &call.input)).await?
            } else {
                tools::Outcome { content: format!("the tool {} is not available here", call.name), is_error: true }
            };
            let arguments: String = provider.redact(&call.input.to_string()).chars().take(200).collect();
            let shown = provider.redact(&outcome.content).chars().take(crate::events::TOOL_RESULT_SHOWN).collect();
            events.record(Event::ToolCall {
                tool: call.name.clone(),
                arguments,
                result_bytes: outcome.content.len(),
                result: shown,
                is_error: outcome.is_error,
                duration_ms: millis(started.elapsed()),
            });
            results.push(ToolResult { id: call.id.clone(), content: outcome.content, is_error: outcome.is_error });
        }
        conversation.push(Message::Results(results));
    }
    Err(ModelError::MaxTurns(format!(
        "the model did not finish within {max_turns} turns (raise max-turns, or narrow the task)"
    ))
    .into())
}

/// `reply` with the provider's key redacted from its text and its tool
/// calls' arguments.
fn without_key(provider: &provider::Provider, mut reply: Reply) -> Reply {
    reply.text = provider.redact(&reply.text);
    for call in &mut reply.calls {
        let text = call.input.to_string();
        let redacted = provider.redact(&text);
        if redacted != text {
            call.input = serde_json::from_str(&redacted).unwrap_or(Value::String(redacted));
        }
    }
    reply
}

/// The JSON in a final answer (alone, or in a fenced block).
fn answer_json(text: &str) -> Result<String, ModelError> {
    let trimmed = text.trim();
    let candidate = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|rest| rest.strip_suffix("```"))
        .unwrap_or(trimmed)
        .trim();
    serde_json::from_str::<Value>(candidate)
        .map(|value| value.to_string())
        .map_err(|err| ModelError::Provider(format!("the final answer is not the JSON the schema asks for: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_text_never_shows_a_key_split_across_deltas() {
        use std::sync::{Arc, Mutex};
        #[derive(Default)]
        struct Collect(Mutex<Vec<String>>);
        impl crate::events::EventSink for Collect {
            fn record(&self, event: &Event) {
                if let Event::ModelText { text } = event {
                    self.0.lock().unwrap().push(text.clone());
                }
            }
        }
        const KEY: &str = "sk-test-key-0123456789";
        let secrets = Secrets::from_pairs(vec![("API_KEY".into(), KEY.into())]);
        let text = format!("é {KEY} ü");
        for split in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
            let sink = Arc::new(Collect::default());
            let events = EventLog::new(sink.clone());
            let mut stream = TextEvents { secrets: &secrets, events: &events, pending: Vec::new() };
            stream.push(&text[..split]);
            stream.push(&text[split..]);
            stream.finish();
            let deltas = sink.0.lock().unwrap().clone();
            assert_eq!(deltas.concat(), "é [redacted API_KEY] ü", "split at {split}: {deltas:?}");
        }
    }

    #[test]
    fn a_json_answer_is_found_alone_or_fenced() {
        assert_eq!(answer_json(" {\"a\": 1} ").unwrap(), "{\"a\":1}");
        assert_eq!(answer_json("```json\n[1, 2]\n```").unwrap(), "[1,2]");
        assert!(answer_json("sure! {").is_err());
    }
}
