//! `triage`: an agent that gives the model tools of its own.
//!
//! The model is asked to triage a support ticket. Beside flue's sandbox
//! tools it gets two of the agent's: `lookup_ticket` (the agent's records)
//! and `add_comment` (a note in the run's sandbox, `tickets/<id>.md`). The
//! host checks each call's input against the tool's JSON Schema, then calls
//! this agent's `tools` export — in an instance of its own, which reaches
//! the run's sandbox through `open-sandbox(run-default)`. A tool's error
//! goes back to the model, which carries on.
//!
//! Payload: `{"prompt": …, "model": …}`, both optional. The model defaults
//! to `anthropic/claude-sonnet-4-6` (set `ANTHROPIC_API_KEY`).

wit_bindgen::generate!({ path: "wit", world: "flue:sandbox/agent-with-tools" });

use exports::flue::sandbox::run::{Context, Guest as RunGuest};
use exports::flue::sandbox::tools::Guest as ToolsGuest;
use flue::sandbox::harness::{self, InitOptions, SandboxSource, Session};
use flue::sandbox::model::{PromptError, PromptRequest, ToolDefinition};
use serde_json::{Value, json};

struct Triage;

const DEFAULT_MODEL: &str = "anthropic/claude-sonnet-4-6";
const DEFAULT_PROMPT: &str = "Ticket 42 came in. Look it up, decide its priority, and add a comment with the next step.";

/// The agent's records (a real agent would ask its ticket system).
const TICKETS: &[(u64, &str, &str)] = &[
    (42, "Login fails with SSO", "Since this morning, every SSO login ends on a blank page."),
    (7, "Typo on the pricing page", "\"Anual\" should read \"Annual\"."),
];

fn tools() -> Vec<ToolDefinition> {
    vec![
        ToolDefinition {
            name: "lookup_ticket".into(),
            description: "Look a support ticket up by its number: its title and what the customer wrote.".into(),
            input_schema: json!({
                "type": "object",
                "properties": {"id": {"type": "integer", "minimum": 1}},
                "required": ["id"],
                "additionalProperties": false
            })
            .to_string(),
        },
        ToolDefinition {
            name: "add_comment".into(),
            description: "Add a comment to a ticket.".into(),
            input_schema: json!({
                "type": "object",
                "properties": {"id": {"type": "integer", "minimum": 1}, "text": {"type": "string", "minLength": 1}},
                "required": ["id", "text"],
                "additionalProperties": false
            })
            .to_string(),
        },
    ]
}

/// A session on the run's sandbox.
fn sandbox_session() -> Result<Session, String> {
    let sandbox = harness::open_sandbox(&SandboxSource::RunDefault).map_err(|e| format!("{e:?}"))?;
    let options = InitOptions { cwd: None, model: None, id: Some("tickets".into()) };
    harness::init(&sandbox, &options).and_then(|h| h.session(None)).map_err(|e| format!("{e:?}"))
}

impl RunGuest for Triage {
    fn run(ctx: Context) -> Result<String, String> {
        let payload: Value = serde_json::from_str(&ctx.payload).unwrap_or(Value::Null);
        let session = sandbox_session()?;
        let request = PromptRequest {
            text: payload["prompt"].as_str().unwrap_or(DEFAULT_PROMPT).into(),
            system: Some("You triage support tickets.".into()),
            max_turns: Some(10),
            tools: Some(vec![]),
            result_schema: None,
            model: Some(payload["model"].as_str().unwrap_or(DEFAULT_MODEL).into()),
            thinking: None,
            agent_tools: tools(),
        };
        let reply = session.prompt_with(&request).map_err(describe_prompt)?;
        let comments = session.read_text("tickets/42.md").unwrap_or_default();
        Ok(json!({
            "answer": reply.text,
            "turns": reply.turns,
            "comments": comments,
            "costUsd": reply.cost.map(|c| c.total),
        })
        .to_string())
    }
}

impl ToolsGuest for Triage {
    fn call(name: String, input: String) -> Result<String, String> {
        // The host checked `input` against the tool's schema.
        let input: Value = serde_json::from_str(&input).map_err(|e| e.to_string())?;
        let id = input["id"].as_u64().unwrap_or_default();
        match name.as_str() {
            "lookup_ticket" => match TICKETS.iter().find(|(number, ..)| *number == id) {
                Some((number, title, body)) => Ok(json!({"id": number, "title": title, "body": body}).to_string()),
                None => Err(format!("there is no ticket {id}")),
            },
            "add_comment" => {
                let session = sandbox_session()?;
                let path = format!("tickets/{id}.md");
                let before = session.read_text(&path).unwrap_or_default();
                let text = input["text"].as_str().unwrap_or_default();
                session.write_text(&path, &format!("{before}- {text}\n")).map_err(|e| format!("{e:?}"))?;
                Ok(format!("comment added to ticket {id}"))
            }
            other => Err(format!("no tool {other}")),
        }
    }
}

fn describe_prompt(err: PromptError) -> String {
    match err {
        PromptError::Auth(m) => format!("auth: {m}"),
        PromptError::RateLimited(m) => format!("rate-limited: {m}"),
        PromptError::ContextOverflow(m) => format!("context-overflow: {m}"),
        PromptError::MaxTurns(m) => format!("max-turns: {m}"),
        PromptError::Provider(m) => format!("provider: {m}"),
        PromptError::InvalidInput(m) => format!("invalid-input: {m}"),
    }
}

export!(Triage);
