//! OpenAI's Chat Completions API (and every server that speaks it: Ollama,
//! vLLM, llama.cpp, OpenRouter): `POST {base}/chat/completions` with a
//! bearer key, or none for a local server; answers as a message with
//! `tool_calls`, streamed as chunks of deltas, then usage, then `[DONE]`.

use serde_json::{Value, json};

use super::answer::{StreamedAnswer, index_of, parse_input, stop_of};
use super::{TurnRequest, WireFormat};
use crate::model::caps::MAX_OUTPUT_TOKENS;
use crate::model::{Message, ModelError, Reply, ToolCall, Usage};

/// `openai/…` models.
pub struct OpenAi;

impl WireFormat for OpenAi {
    fn provider(&self) -> &'static str {
        "openai"
    }

    fn key_var(&self) -> &'static str {
        "OPENAI_API_KEY"
    }

    fn base_var(&self) -> &'static str {
        "OPENAI_BASE_URL"
    }

    fn default_base(&self) -> &'static str {
        "https://api.openai.com/v1"
    }

    fn keyless_with_base(&self) -> bool {
        // A local OpenAI-compatible server (Ollama, vLLM, llama.cpp) needs no key.
        true
    }

    fn cache_included(&self) -> bool {
        true
    }

    fn url(&self, base: &str) -> String {
        format!("{base}/chat/completions")
    }

    fn authorize(&self, request: reqwest::RequestBuilder, key: Option<&str>) -> reqwest::RequestBuilder {
        match key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    fn body(&self, model: &str, turn: &TurnRequest<'_>) -> Value {
        let mut messages = vec![json!({"role": "system", "content": turn.system})];
        for message in turn.messages {
            messages.extend(self::messages(message));
        }
        let mut body = json!({
            "model": model,
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_completion_tokens": MAX_OUTPUT_TOKENS,
            "messages": messages,
        });
        // GPT-4 and 3.5 models do not reason, and refuse the field (as Flue
        // drops the level for them); every other model is asked.
        if let Some(thinking) = turn.thinking.filter(|_| !["gpt-4", "gpt-3.5"].iter().any(|p| model.starts_with(p))) {
            body["reasoning_effort"] = json!(thinking.effort());
        }
        if !turn.tools.is_empty() {
            body["tools"] = turn.tools.iter().map(|t| json!({"type": "function", "function": t})).collect();
        }
        body
    }

    fn reply(&self, body: &Value) -> Reply {
        let choice = &body["choices"][0];
        let message = &choice["message"];
        let mut reply =
            Reply { text: message["content"].as_str().unwrap_or_default().to_string(), ..Default::default() };
        for call in message["tool_calls"].as_array().into_iter().flatten() {
            let name = call["function"]["name"].as_str().unwrap_or_default().to_string();
            let input = parse_input(&name, call["function"]["arguments"].as_str().unwrap_or_default());
            reply.calls.push(ToolCall { id: call["id"].as_str().unwrap_or_default().into(), name, input });
        }
        reply.stop = stop_of(choice["finish_reason"].as_str());
        reply.usage = usage(&body["usage"]);
        reply
    }

    fn context_overflow(&self, _status: u16, body: &Value) -> bool {
        body["error"]["code"] == "context_length_exceeded"
    }

    fn feed(&self, data: &str, answer: &mut StreamedAnswer) -> Result<Option<String>, ModelError> {
        if data == "[DONE]" {
            answer.done = true;
            return Ok(None);
        }
        let event = answer.parse(data)?;
        if let Some(usage) = event.get("usage").filter(|u| u.is_object()) {
            answer.reply.usage = self::usage(usage);
        }
        let choice = &event["choices"][0];
        if let Some(reason) = choice["finish_reason"].as_str() {
            answer.reply.stop = stop_of(Some(reason));
        }
        let delta = &choice["delta"];
        for call in delta["tool_calls"].as_array().into_iter().flatten() {
            let id = call["id"].as_str();
            let name = call["function"]["name"].as_str();
            let arguments = call["function"]["arguments"].as_str();
            answer.count_call_bytes(&[
                id.unwrap_or_default(),
                name.unwrap_or_default(),
                arguments.unwrap_or_default(),
            ])?;
            let entry = answer.call(index_of(call))?;
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
        answer.add_text(delta["content"].as_str().unwrap_or_default())
    }
}

/// One message of the conversation, as Chat Completions takes it (tool
/// results are one message each).
fn messages(message: &Message) -> Vec<Value> {
    match message {
        Message::User(text) => vec![json!({"role": "user", "content": text})],
        // Another provider's reasoning means nothing here.
        Message::Assistant { text, calls, .. } => {
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

fn usage(usage: &Value) -> Usage {
    Usage {
        input: usage["prompt_tokens"].as_u64().unwrap_or(0),
        output: usage["completion_tokens"].as_u64().unwrap_or(0),
        cache_read: usage["prompt_tokens_details"]["cached_tokens"].as_u64(),
    }
}
