//! Anthropic's Messages API: `POST {base}/v1/messages` with `x-api-key`;
//! answers as content blocks (`text`, `tool_use`), streamed as
//! `message_start`, `content_block_start`/`_delta`/`_stop`, `message_delta`,
//! `message_stop` and `error` events.

use serde_json::{Value, json};

use super::answer::{StreamedAnswer, index_of, stop_of};
use super::{TurnRequest, WireFormat};
use crate::model::caps::MAX_OUTPUT_TOKENS;
use crate::model::{Message, ModelError, Reasoning, Reply, Thinking, ToolCall, Usage};

/// The Messages API version flue speaks.
const VERSION: &str = "2023-06-01";

/// Models whose thinking is adaptive: asked for with an effort, not a budget.
const ADAPTIVE: [&str; 3] = ["opus-4-6", "opus-4-7", "sonnet-4-6"];

/// `anthropic/…` models.
pub struct Anthropic;

impl WireFormat for Anthropic {
    fn provider(&self) -> &'static str {
        "anthropic"
    }

    fn key_var(&self) -> &'static str {
        "ANTHROPIC_API_KEY"
    }

    fn base_var(&self) -> &'static str {
        "ANTHROPIC_BASE_URL"
    }

    fn default_base(&self) -> &'static str {
        "https://api.anthropic.com"
    }

    fn cache_included(&self) -> bool {
        false
    }

    fn url(&self, base: &str) -> String {
        format!("{base}/v1/messages")
    }

    fn authorize(&self, request: reqwest::RequestBuilder, key: Option<&str>) -> reqwest::RequestBuilder {
        let request = request.header("anthropic-version", VERSION);
        match key {
            Some(key) => request.header("x-api-key", key),
            None => request,
        }
    }

    fn body(&self, model: &str, turn: &TurnRequest<'_>) -> Value {
        let mut body = json!({
            "model": model,
            "max_tokens": MAX_OUTPUT_TOKENS,
            "stream": true,
            "system": [{"type": "text", "text": turn.system}],
            "messages": turn.messages.iter().map(message).collect::<Vec<_>>(),
        });
        match turn.thinking {
            // Models that size their thinking themselves take an effort.
            Some(thinking) if ADAPTIVE.iter().any(|name| model.contains(name)) => {
                let effort = if thinking == Thinking::Minimal { "low" } else { thinking.effort() };
                body["thinking"] = json!({"type": "adaptive"});
                body["output_config"] = json!({"effort": effort});
            }
            Some(thinking) => {
                // The budget is part of max_tokens, which must exceed it.
                let budget = thinking.budget_tokens();
                body["thinking"] = json!({"type": "enabled", "budget_tokens": budget});
                body["max_tokens"] = json!(MAX_OUTPUT_TOKENS + budget);
            }
            None => {}
        }
        if !turn.tools.is_empty() {
            body["tools"] = turn
                .tools
                .iter()
                .map(|t| json!({"name": t["name"], "description": t["description"], "input_schema": t["parameters"]}))
                .collect();
        }
        body
    }

    fn reply(&self, body: &Value) -> Reply {
        let mut reply = Reply::default();
        for block in body["content"].as_array().into_iter().flatten() {
            match block["type"].as_str() {
                Some("text") => reply.text.push_str(block["text"].as_str().unwrap_or_default()),
                Some("tool_use") => reply.calls.push(ToolCall {
                    id: block["id"].as_str().unwrap_or_default().into(),
                    name: block["name"].as_str().unwrap_or_default().into(),
                    input: block["input"].clone(),
                }),
                Some("thinking" | "redacted_thinking") => reply.reasoning.extend(reasoning_block(block)),
                _ => {}
            }
        }
        reply.stop = stop_of(body["stop_reason"].as_str());
        reply.usage = Usage {
            input: body["usage"]["input_tokens"].as_u64().unwrap_or(0),
            output: body["usage"]["output_tokens"].as_u64().unwrap_or(0),
            cache_read: body["usage"]["cache_read_input_tokens"].as_u64(),
        };
        reply
    }

    /// Anthropic's one code for it is `request_too_large` (413); a prompt
    /// over the context is a plain `invalid_request_error`, which stays a
    /// `provider` error rather than be guessed from its words.
    fn context_overflow(&self, status: u16, body: &Value) -> bool {
        status == 413 || body["error"]["type"] == "request_too_large"
    }

    fn feed(&self, data: &str, answer: &mut StreamedAnswer) -> Result<Option<String>, ModelError> {
        let event = answer.parse(data)?;
        match event["type"].as_str() {
            Some("message_start") => {
                let usage = &event["message"]["usage"];
                answer.reply.usage.input = usage["input_tokens"].as_u64().unwrap_or(0);
                answer.reply.usage.cache_read = usage["cache_read_input_tokens"].as_u64();
            }
            Some("content_block_start") => {
                let block = &event["content_block"];
                if let Some(reasoning) = reasoning_block(block) {
                    answer.start_reasoning(index_of(&event), reasoning)?;
                } else if block["type"] == "tool_use" {
                    let id = block["id"].as_str().unwrap_or_default();
                    let name = block["name"].as_str().unwrap_or_default();
                    answer.count_call_bytes(&[id, name])?;
                    let call = answer.call(index_of(&event))?;
                    call.id = id.into();
                    call.name = name.into();
                }
            }
            Some("content_block_delta") => {
                let delta = &event["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => return answer.add_text(delta["text"].as_str().unwrap_or_default()),
                    Some("thinking_delta") => {
                        let thinking = delta["thinking"].as_str().unwrap_or_default();
                        answer.add_reasoning(index_of(&event), thinking, "")?;
                    }
                    Some("signature_delta") => {
                        let signature = delta["signature"].as_str().unwrap_or_default();
                        answer.add_reasoning(index_of(&event), "", signature)?;
                    }
                    Some("input_json_delta") => {
                        let part = delta["partial_json"].as_str().unwrap_or_default();
                        answer.count_call_bytes(&[part])?;
                        answer.call(index_of(&event))?.input.push_str(part);
                    }
                    _ => {}
                }
            }
            Some("message_delta") => {
                answer.reply.stop = stop_of(event["delta"]["stop_reason"].as_str());
                if let Some(output) = event["usage"]["output_tokens"].as_u64() {
                    answer.reply.usage.output = output;
                }
            }
            Some("message_stop") => answer.done = true,
            Some("error") => {
                let message = event["error"]["message"].as_str().unwrap_or("an error event");
                return Err(ModelError::Provider(format!("the stream ended with an error: {message}")));
            }
            _ => {}
        }
        Ok(None)
    }
}

/// One message of the conversation, as the Messages API takes it.
fn message(message: &Message) -> Value {
    match message {
        Message::User(text) => json!({"role": "user", "content": text}),
        Message::Assistant { text, calls, reasoning } => {
            // Thinking first, as it came: Anthropic checks its signature.
            let mut content: Vec<Value> = reasoning
                .iter()
                .map(|block| match block {
                    Reasoning::Thinking { thinking, signature } => {
                        json!({"type": "thinking", "thinking": thinking, "signature": signature})
                    }
                    Reasoning::Redacted { data } => json!({"type": "redacted_thinking", "data": data}),
                })
                .collect();
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

/// A `thinking` or `redacted_thinking` content block, as flue keeps it.
fn reasoning_block(block: &Value) -> Option<Reasoning> {
    let text = |key: &str| block[key].as_str().unwrap_or_default().to_string();
    match block["type"].as_str() {
        Some("thinking") => Some(Reasoning::Thinking { thinking: text("thinking"), signature: text("signature") }),
        Some("redacted_thinking") => Some(Reasoning::Redacted { data: text("data") }),
        _ => None,
    }
}
