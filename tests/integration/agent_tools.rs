//! The agent's own tools (`prompt-with` with `agent-tools`, run by the
//! agent's `tools` export): the shapes flue sends, the schema check before
//! the agent is called, errors back to the model, the triage example in
//! Rust, Python and JavaScript, and a handler that tries to get around its
//! limits.

use model_test_server::{ModelServer, Script, calls, text, tool};
use serde_json::{Value, json};

use crate::support::{MODEL_KEY, Output, example_in, fixture, run_with_model, runtime};

/// `flue run <agent>` with `payload` against `server`.
fn run_against(server: &ModelServer, agent: &std::path::Path, payload: Value, extra: &[&str]) -> Output {
    run_with_model(&server.url(), agent, &payload, extra)
}

/// The tool results of request `n`, by tool-use id order: (content, is_error).
fn results_in(server: &ModelServer, n: usize) -> Vec<(String, bool)> {
    let requests = server.requests();
    let last = requests[n].body["messages"].as_array().unwrap().last().unwrap().clone();
    last["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["content"].as_str().unwrap().to_string(), r["is_error"].as_bool().unwrap()))
        .collect()
}

fn triage_script() -> Script {
    Script {
        turns: vec![
            calls(vec![tool("lookup_ticket", json!({"id": 42}))]),
            calls(vec![tool("lookup_ticket", json!({"id": "forty-two"})), tool("lookup_ticket", json!({"id": 99}))]),
            calls(vec![tool("add_comment", json!({"id": 42, "text": "P1: SSO is down; page the identity team."}))]),
            text("Ticket 42 is P1; I added a comment with the next step."),
        ],
    }
}

/// The triage example, in each language: the model sees the agent's tools
/// with their schemas (and none of flue's, as asked); a call that breaks
/// the schema never reaches the agent; the agent's error and its results go
/// back to the model; its comment lands in the run's sandbox.
#[test]
fn the_triage_example_gives_the_model_its_own_tools_in_every_language() {
    let rt = runtime();
    for lang in ["rust", "python", "js"] {
        let server = rt.block_on(ModelServer::start(triage_script())).unwrap();
        let payload = json!({"model": "anthropic/claude-sonnet-4-6"});
        let out = run_against(&server, &example_in(lang, "triage"), payload, &[]);
        let result = out.ok();
        assert_eq!(result["answer"], "Ticket 42 is P1; I added a comment with the next step.", "{lang}: {result}");
        assert_eq!(result["comments"], "- P1: SSO is down; page the identity team.\n", "{lang}: {result}");
        assert_eq!(result["turns"], 4, "{lang}");
        // 4 turns of 100 in and 20 out at $3 and $15 per million tokens.
        let cost = result["costUsd"].as_f64().unwrap();
        assert!((cost - 4.0 * (100.0 * 3.0 + 20.0 * 15.0) / 1e6).abs() < 1e-9, "{lang}: {cost}");

        let requests = server.requests();
        let first = &requests[0].body;
        let offered: Vec<&str> =
            first["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
        assert_eq!(offered, ["lookup_ticket", "add_comment"], "{lang}: only the agent's tools were asked for");
        let lookup = &first["tools"][0];
        assert_eq!(lookup["input_schema"]["required"], json!(["id"]), "{lang}: {lookup}");
        assert_eq!(lookup["input_schema"]["properties"]["id"]["minimum"], 1, "{lang}");
        assert!(first["system"][0]["text"].as_str().unwrap().starts_with("You triage support tickets."));

        let looked_up = results_in(&server, 1);
        assert!(looked_up[0].0.contains("Login fails with SSO") && !looked_up[0].1, "{lang}: {looked_up:?}");
        let refused = results_in(&server, 2);
        assert!(refused[0].1 && refused[0].0.contains("does not follow the tool's schema"), "{lang}: {refused:?}");
        assert!(refused[0].0.contains("/id"), "{lang}: the error names what is wrong: {refused:?}");
        assert!(refused[1].1 && refused[1].0.contains("there is no ticket 99"), "{lang}: {refused:?}");
        assert_eq!(results_in(&server, 3), [("comment added to ticket 42".to_string(), false)], "{lang}");

        let calls: Vec<(String, bool)> = out
            .events()
            .iter()
            .filter(|e| e["type"] == "tool-call")
            .map(|e| (e["tool"].as_str().unwrap().to_string(), e["is_error"].as_bool().unwrap()))
            .collect();
        assert_eq!(calls.len(), 4, "{lang}: {calls:?}");
        assert!(!out.stdout.contains(MODEL_KEY) && !out.stderr.contains(MODEL_KEY), "{lang}: the key leaked");
    }
}

/// The OpenAI format carries the agent's tools as functions, with the
/// schema as `parameters`, and their results as `tool` messages.
#[test]
fn agent_tools_go_to_openai_as_functions() {
    let rt = runtime();
    let script = Script { turns: vec![calls(vec![tool("echo", json!({"word": "hi"}))]), text("done")] };
    let server = rt.block_on(ModelServer::start(script)).unwrap();
    let payload = json!({"mode": "prompt-with", "model": "openai/gpt-4.1", "prompts": ["go"],
        "agentTools": [{"name": "echo", "description": "Say it back",
                        "schema": {"type": "object", "properties": {"word": {"type": "string"}}}}]});
    let out = run_against(&server, &fixture("probe"), payload, &[]);
    let answers = out.ok();
    assert_eq!(answers[0]["text"], "done", "{answers}");
    let requests = server.requests();
    let echo = requests[0].body["tools"].as_array().unwrap().iter().find(|t| t["function"]["name"] == "echo").cloned();
    let echo = echo.expect("the agent's tool is offered beside flue's");
    assert_eq!(echo["type"], "function");
    assert_eq!(echo["function"]["parameters"]["properties"]["word"]["type"], "string", "{echo}");
    let messages = requests[1].body["messages"].as_array().unwrap().clone();
    let result = messages.iter().find(|m| m["role"] == "tool").unwrap();
    assert_eq!(result["content"], "echo: {\"word\":\"hi\"}", "{result}");
    // gpt-4.1: $2 in, $8 out per million tokens.
    let total = answers[0]["cost"]["total"].as_f64().unwrap();
    assert!((total - 2.0 * (100.0 * 2.0 + 20.0 * 8.0) / 1e6).abs() < 1e-9, "{answers}");
}

fn probe_tools(server: &ModelServer, tools: &[&str], extra: &[&str]) -> Output {
    let agent_tools: Vec<Value> =
        tools.iter().map(|name| json!({"name": name, "description": format!("the {name} tool")})).collect();
    let payload = json!({"mode": "prompt-with", "model": "anthropic/claude-test", "prompts": ["go"],
                         "tools": [], "agentTools": agent_tools});
    run_against(server, &fixture("probe"), payload, extra)
}

/// A handler that fails, floods, reaches for `run`'s memory or gives tools
/// of its own gets nowhere: each comes back to the model as a bounded
/// result, and the prompt goes on.
#[test]
fn a_hostile_tool_handler_is_held_to_its_limits() {
    let rt = runtime();
    let script = Script {
        turns: vec![
            calls(vec![
                tool("fail", json!({})),
                tool("big", json!({"bytes": 10_000_000})),
                tool("remembers", json!({})),
                tool("nested", json!({})),
                tool("save", json!({"path": "from-tool.txt", "text": "made by the handler"})),
            ]),
            text("carried on"),
        ],
    };
    let server = rt.block_on(ModelServer::start(script)).unwrap();
    let out = probe_tools(&server, &["fail", "big", "remembers", "nested", "save"], &[]);
    let answers = out.ok();
    assert_eq!(answers[0]["text"], "carried on", "{answers}");
    let results = results_in(&server, 1);
    assert!(results[0].1 && results[0].0.contains("failed on purpose"), "{results:?}");
    assert!(!results[1].1 && results[1].0.len() < 60 * 1024, "a 10 MB result is cut: {}", results[1].0.len());
    assert!(results[1].0.contains("truncated"), "the cut is said");
    assert_eq!(results[2].0, "run started here: false", "the handler runs in an instance of its own");
    assert!(results[3].0.contains("InvalidInput") && results[3].0.contains("gives none of its own"), "{results:?}");
    assert_eq!(results[4].0, "made by the handler\n", "{results:?}");
}

/// A handler that traps, or spins, ends the run with the reason, as the
/// agent itself would.
#[test]
fn a_trapping_or_spinning_tool_handler_ends_the_run() {
    let rt = runtime();
    let server = rt.block_on(ModelServer::start(Script { turns: vec![calls(vec![tool("trap", json!({}))])] })).unwrap();
    let out = probe_tools(&server, &["trap"], &[]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("trapped") || out.stderr.contains("panicked"), "{}", out.stderr);
    let server = rt.block_on(ModelServer::start(Script { turns: vec![calls(vec![tool("spin", json!({}))])] })).unwrap();
    let out = probe_tools(&server, &["spin"], &["--deadline", "3"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("deadline"), "{}", out.stderr);
}

/// Bad definitions are refused before the model is called: a name of
/// flue's, a name twice, a schema that is not a schema, and tools from an
/// agent that exports no handler.
#[test]
fn bad_tool_definitions_are_refused_before_the_model_is_called() {
    let rt = runtime();
    let server = rt.block_on(ModelServer::start(Script::default())).unwrap();
    for (tools, why) in [
        (json!([{"name": "bash"}]), "one of flue's tools"),
        (json!([{"name": "x"}, {"name": "x"}]), "given twice"),
        (
            json!([{"name": "x", "schema": {"type": "object", "properties": {"a": {"type": 5}}}}]),
            "not a valid JSON Schema",
        ),
        (json!([{"name": "no spaces"}]), "1-64 characters"),
    ] {
        let payload =
            json!({"mode": "prompt-with", "model": "anthropic/claude-test", "prompts": ["go"], "agentTools": tools});
        let answers = run_against(&server, &fixture("probe"), payload, &[]).ok();
        let error = answers[0]["error"].as_str().unwrap_or_default();
        assert!(error.contains("InvalidInput") && error.contains(why), "{tools}: {answers}");
    }
    assert!(server.requests().is_empty(), "the model was called");
}
