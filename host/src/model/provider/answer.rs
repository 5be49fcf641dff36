//! One answer as it is assembled from streamed events, whatever the wire
//! format: text, tool calls and their arguments, each within its cap
//! ([`crate::model::caps`]), checked as each part arrives. A plain answer
//! is held to the same caps ([`check_reply`]).

use serde_json::{Value, json};

use crate::model::caps::{MAX_ANSWER_TEXT, MAX_TOOL_ARGUMENTS, MAX_TOOL_CALLS};
use crate::model::{ModelError, Reasoning, Reply, Stop, ToolCall};
use crate::sandbox::session::format_bytes;

/// A tool call being streamed.
pub struct PartialCall {
    /// Its index in the answer.
    index: usize,
    /// The provider's id for it.
    pub id: String,
    /// The tool.
    pub name: String,
    /// Its input JSON so far.
    pub input: String,
}

/// A streamed answer, assembled event by event, within the caps.
pub struct StreamedAnswer {
    label: String,
    /// What is known of the reply so far (text, stop reason, usage).
    pub reply: Reply,
    calls: Vec<PartialCall>,
    /// Bytes of tool-call ids, names and arguments so far.
    call_bytes: usize,
    /// Reasoning blocks by their index in the answer.
    reasoning: Vec<(usize, Reasoning)>,
    /// Bytes of reasoning so far (held to [`MAX_ANSWER_TEXT`] too).
    reasoning_bytes: usize,
    /// The stream said it is complete.
    pub done: bool,
}

impl StreamedAnswer {
    /// An empty answer from the model `label`.
    pub fn new(label: &str) -> Self {
        StreamedAnswer {
            label: label.to_string(),
            reply: Reply::default(),
            calls: Vec::new(),
            call_bytes: 0,
            reasoning: Vec::new(),
            reasoning_bytes: 0,
            done: false,
        }
    }

    /// One event's data as JSON.
    pub fn parse(&self, data: &str) -> Result<Value, ModelError> {
        // The whole event in the message: it is redacted, then cut short.
        serde_json::from_str(data)
            .map_err(|err| ModelError::Provider(format!("a streamed event is not JSON ({err}): {data}")))
    }

    /// The call at `index`, begun when new (within [`MAX_TOOL_CALLS`]).
    pub fn call(&mut self, index: usize) -> Result<&mut PartialCall, ModelError> {
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
    pub fn count_call_bytes(&mut self, parts: &[&str]) -> Result<(), ModelError> {
        self.call_bytes += parts.iter().map(|p| p.len()).sum::<usize>();
        if self.call_bytes > MAX_TOOL_ARGUMENTS {
            let cap = format!("{} per answer", format_bytes(MAX_TOOL_ARGUMENTS));
            return Err(over_cap(&self.label, "tool-call arguments", cap));
        }
        Ok(())
    }

    /// Add streamed text (within [`MAX_ANSWER_TEXT`]); the text, for `on_text`.
    pub fn add_text(&mut self, text: &str) -> Result<Option<String>, ModelError> {
        if self.reply.text.len() + text.len() > MAX_ANSWER_TEXT {
            return Err(over_cap(&self.label, "text", format!("{} per answer", format_bytes(MAX_ANSWER_TEXT))));
        }
        self.reply.text.push_str(text);
        Ok((!text.is_empty()).then(|| text.to_string()))
    }

    /// Start reasoning block `index` (within the caps).
    pub fn start_reasoning(&mut self, index: usize, block: Reasoning) -> Result<(), ModelError> {
        if self.reasoning.len() >= MAX_TOOL_CALLS {
            return Err(over_cap(&self.label, "reasoning blocks", format!("{MAX_TOOL_CALLS} per answer")));
        }
        self.count_reasoning(&block_text(&block))?;
        self.reasoning.push((index, block));
        Ok(())
    }

    /// Add to reasoning block `index`: thinking text or signature, as the
    /// delta says; a delta for no block is ignored.
    pub fn add_reasoning(&mut self, index: usize, thinking: &str, signature: &str) -> Result<(), ModelError> {
        self.count_reasoning(&[thinking, signature].concat())?;
        if let Some((_, Reasoning::Thinking { thinking: text, signature: signed })) =
            self.reasoning.iter_mut().find(|(i, _)| *i == index)
        {
            text.push_str(thinking);
            signed.push_str(signature);
        }
        Ok(())
    }

    fn count_reasoning(&mut self, part: &str) -> Result<(), ModelError> {
        self.reasoning_bytes += part.len();
        if self.reasoning_bytes > MAX_ANSWER_TEXT {
            return Err(over_cap(&self.label, "reasoning", format!("{} per answer", format_bytes(MAX_ANSWER_TEXT))));
        }
        Ok(())
    }

    /// The stream ended: the reply, its calls in order.
    pub fn finish(mut self) -> Result<Reply, ModelError> {
        self.reasoning.sort_by_key(|(index, _)| *index);
        self.reply.reasoning = self.reasoning.into_iter().map(|(_, block)| block).collect();
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

/// The error for an answer past one of the caps: `what` is over `cap`.
pub fn over_cap(label: &str, what: &str, cap: String) -> ModelError {
    ModelError::Provider(format!("{label}: the answer's {what} is over flue's cap of {cap}"))
}

/// A plain answer within the caps a streamed one is held to.
pub fn check_reply(label: &str, reply: &Reply) -> Result<(), ModelError> {
    if reply.text.len() > MAX_ANSWER_TEXT {
        return Err(over_cap(label, "text", format!("{} per answer", format_bytes(MAX_ANSWER_TEXT))));
    }
    if reply.calls.len() > MAX_TOOL_CALLS {
        return Err(over_cap(label, "tool calls", format!("{MAX_TOOL_CALLS} per answer")));
    }
    let reasoning: usize = reply.reasoning.iter().map(|block| block_text(block).len()).sum();
    if reasoning > MAX_ANSWER_TEXT {
        return Err(over_cap(label, "reasoning", format!("{} per answer", format_bytes(MAX_ANSWER_TEXT))));
    }
    let arguments: usize = reply.calls.iter().map(|c| c.id.len() + c.name.len() + c.input.to_string().len()).sum();
    if arguments > MAX_TOOL_ARGUMENTS {
        return Err(over_cap(label, "tool-call arguments", format!("{} per answer", format_bytes(MAX_TOOL_ARGUMENTS))));
    }
    Ok(())
}

/// A reasoning block's text, signature or encrypted data, together.
fn block_text(block: &Reasoning) -> String {
    match block {
        Reasoning::Thinking { thinking, signature } => [thinking.as_str(), signature].concat(),
        Reasoning::Redacted { data } => data.clone(),
    }
}

/// A tool call's arguments, as JSON when they are.
pub fn parse_input(name: &str, text: &str) -> Value {
    if text.trim().is_empty() {
        return json!({});
    }
    serde_json::from_str(text).unwrap_or_else(|_| json!({"__unparsed": text, "__tool": name}))
}

/// An event's (or a call's) `index`: any number, never a panic.
pub fn index_of(value: &Value) -> usize {
    value["index"].as_u64().map_or(0, |i| usize::try_from(i).unwrap_or(usize::MAX))
}

/// Why an answer ended, in either format's words.
pub fn stop_of(reason: Option<&str>) -> Stop {
    match reason {
        Some("tool_use" | "tool_calls") => Stop::ToolUse,
        Some("max_tokens" | "length") => Stop::MaxTokens,
        _ => Stop::EndTurn,
    }
}
