//! The model loop behind `session.prompt`, `prompt-with` and `task`, run by
//! the host: call the model, run the tools it asks for against the agent's
//! session, feed the results back, until it answers (or runs out of turns,
//! or the run's deadline).
//!
//! * `converse`: the loop itself, sub-agents, and the budget they share.
//! * [`provider`]: Anthropic and OpenAI-compatible wire formats, streaming,
//!   retries, thinking; the API key stays here.
//! * [`tools`]: `read`, `write`, `edit`, `bash`, `grep`, `glob`.
//! * [`agent_tools`]: the agent's own tools, checked against their schemas.
//! * [`workspace`]: skills and sub-agents found in the working directory.
//! * [`prices`]: what a prompt cost.
//! * [`caps`]: what a model may make flue hold, run or write.
//!
//! Each model turn and each tool call is an event; a tool's arguments are
//! shown (redacted, cut short) and the start of its result. Every event of a
//! prompt — streamed text, turns, tool calls, the sandbox operations the
//! tools make — goes through one event log that redacts the provider's key;
//! streamed text is redacted over the joined stream, so a key split across
//! deltas is caught too.

pub mod agent_tools;
pub mod caps;
mod converse;
pub mod prices;
pub mod provider;
pub mod tools;
pub mod workspace;

use serde_json::Value;

pub use self::agent_tools::{AgentTool, NoHandler, ToolHandler};
pub use self::converse::{Prompting, prompt, task};
use self::prices::Cost;
use crate::events::{Event, EventLog};
use crate::sandbox::session::Session;
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
        /// Its reasoning, as the provider asks to be sent it back (Anthropic's
        /// signed thinking blocks); empty for most answers.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        reasoning: Vec<Reasoning>,
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

/// A block of the model's reasoning that goes back to the provider with
/// the answer it came with: Anthropic refuses a tool result whose turn lost
/// its signed thinking.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Reasoning {
    /// Thinking in the clear, with the provider's signature over it.
    Thinking {
        /// What the model thought.
        thinking: String,
        /// The provider's signature.
        signature: String,
    },
    /// Thinking the provider sends encrypted.
    Redacted {
        /// The encrypted block.
        data: String,
    },
}

/// How much the model reasons before it answers (the WIT `thinking`; `off`
/// is `None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Thinking {
    /// The least.
    Minimal,
    /// A little.
    Low,
    /// More.
    Medium,
    /// The most flue asks for.
    High,
}

impl Thinking {
    /// Anthropic's `budget_tokens` for this level.
    pub fn budget_tokens(self) -> u64 {
        match self {
            Thinking::Minimal => 1_024,
            Thinking::Low => 2_048,
            Thinking::Medium => 8_192,
            Thinking::High => 16_384,
        }
    }

    /// OpenAI's `reasoning_effort` for this level.
    pub fn effort(self) -> &'static str {
        match self {
            Thinking::Minimal => "minimal",
            Thinking::Low => "low",
            Thinking::Medium => "medium",
            Thinking::High => "high",
        }
    }
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
    /// Its reasoning blocks, to send back with it.
    pub reasoning: Vec<Reasoning>,
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

/// How to run one prompt (the WIT `prompt-options` and `prompt-request`).
#[derive(Clone, Debug, Default)]
pub struct PromptOptions {
    /// The agent's instructions.
    pub system: Option<String>,
    /// Turns allowed (default [`DEFAULT_MAX_TURNS`]), sub-agents' included.
    pub max_turns: Option<u32>,
    /// flue's tools allowed (`None`: all).
    pub tools: Option<Vec<String>>,
    /// A JSON Schema the final answer follows.
    pub result_schema: Option<String>,
    /// How much the model reasons (`None`: the provider's default).
    pub thinking: Option<Thinking>,
    /// The agent's own tools, checked.
    pub agent_tools: Vec<AgentTool>,
}

/// A prompt's answer (the WIT `prompt-result` and `prompt-reply`).
#[derive(Clone, Debug)]
pub struct PromptAnswer {
    /// The final text.
    pub text: String,
    /// With a schema: the answer as JSON text.
    pub json: Option<String>,
    /// `provider/model`.
    pub model: String,
    /// Turns used, sub-agents' included.
    pub turns: u32,
    /// Tokens used over all turns, sub-agents' included.
    pub usage: Usage,
    /// What it cost; `None` when a model's price is unknown.
    pub cost: Option<Cost>,
}

/// A prompt as the agent asks it, its tools not yet checked (the WIT
/// `prompt-request`, or `prompt`'s text and options).
#[derive(Clone, Debug, Default)]
pub struct PromptRequest {
    /// What the model is asked.
    pub text: String,
    /// Its model, when not the harness's.
    pub model: Option<String>,
    /// How to run it (its `agent_tools` empty until checked).
    pub options: PromptOptions,
    /// The agent's tools as given: name, description, input schema.
    pub tool_definitions: Vec<(String, String, String)>,
}

/// Work for a sub-agent (the WIT `task-request`).
#[derive(Clone, Debug, Default)]
pub struct TaskRequest {
    /// What it is asked.
    pub prompt: String,
    /// A named sub-agent (`None`: `general`).
    pub agent: Option<String>,
    /// Its working directory, relative to the session's.
    pub cwd: Option<String>,
    /// Its model, when not the harness's.
    pub model: Option<String>,
    /// How to run it.
    pub options: PromptOptions,
}

impl Thinking {
    /// A level by name (`off` and anything else: none).
    pub fn parse(name: &str) -> Option<Thinking> {
        match name.trim() {
            "minimal" => Some(Thinking::Minimal),
            "low" => Some(Thinking::Low),
            "medium" => Some(Thinking::Medium),
            "high" => Some(Thinking::High),
            _ => None,
        }
    }
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
        Message::Assistant { text, calls, reasoning } => {
            let reasoning: usize = reasoning
                .iter()
                .map(|block| match block {
                    Reasoning::Thinking { thinking, signature } => thinking.len() + signature.len(),
                    Reasoning::Redacted { data } => data.len(),
                })
                .sum();
            text.len()
                + reasoning
                + calls.iter().map(|c| c.id.len() + c.name.len() + c.input.to_string().len()).sum::<usize>()
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
