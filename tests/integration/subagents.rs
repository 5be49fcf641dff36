//! Beyond one conversation: sub-agents (the model's `task` tool and
//! `session.task`), skills loaded on demand, and Flue's prompt options
//! (a prompt's own model, thinking for both providers, cost), against the
//! scripted model server, request bodies compared with the shapes Flue
//! sends.

use model_test_server::{ModelServer, Script, Turn, calls, text, tool};
use serde_json::{Value, json};

use crate::support::{Output, fixture, run_with_model, runtime};

/// The probe run with `payload` against `server`.
fn probe(server: &ModelServer, payload: Value) -> Output {
    run_with_model(&server.url(), &fixture("probe"), &payload, &[])
}

fn system_of(body: &Value) -> String {
    body["system"][0]["text"].as_str().unwrap_or_default().to_string()
}

/// The working directory a system prompt names (the sandbox's path: under
/// `/workspace` with bubblewrap, a host directory without).
fn working_directory(system: &str) -> String {
    let line = system.lines().find_map(|l| l.strip_prefix("Working directory: "));
    line.unwrap_or_else(|| panic!("no working directory in {system}")).to_string()
}

/// The model hands work to the `general` sub-agent: the child starts a
/// fresh conversation on the same sandbox, its answer is the task's
/// result, its events come between `task-started` and `task-finished`,
/// and its turns and tokens count in the parent's.
#[test]
fn the_task_tool_runs_a_sub_agent_whose_answer_comes_back() {
    let rt = runtime();
    let script = Script {
        turns: vec![
            calls(vec![tool(
                "task",
                json!({"prompt": "Count the files in src.", "agent": "general", "description": "count files", "cwd": "src"}),
            )]),
            calls(vec![tool("bash", json!({"command": "ls | wc -l"}))]),
            text("There are 2 files."),
            text("The sub-agent says there are 2 files."),
        ],
    };
    let server = rt.block_on(ModelServer::start(script)).unwrap();
    let payload = json!({"mode": "prompt-with", "model": "anthropic/claude-sonnet-4-6", "prompts": ["How many files?"],
                         "files": {"src/a.txt": "a", "src/b.txt": "b"}});
    let out = probe(&server, payload);
    let answers = out.ok();
    assert_eq!(answers[0]["text"], "The sub-agent says there are 2 files.", "{answers}");
    assert_eq!(answers[0]["turns"], 4, "the child's turns count: {answers}");
    assert_eq!(answers[0]["input"], 400, "the child's tokens count: {answers}");

    let requests = server.requests();
    let parent = &requests[0].body;
    let task = parent["tools"].as_array().unwrap().iter().find(|t| t["name"] == "task").unwrap().clone();
    assert_eq!(task["input_schema"]["required"], json!(["prompt", "agent"]), "Flue's task shape: {task}");
    for key in ["prompt", "agent", "description", "cwd"] {
        assert!(task["input_schema"]["properties"].get(key).is_some(), "task lacks {key}: {task}");
    }
    assert!(system_of(parent).contains("## Available Agents\n") && system_of(parent).contains("- **general** —"));
    // The child: a fresh conversation in src, same tools.
    let child = &requests[1].body;
    assert_eq!(child["messages"].as_array().unwrap().len(), 1, "{}", child["messages"]);
    assert_eq!(child["messages"][0]["content"], "Count the files in src.");
    let (parent_dir, child_dir) = (working_directory(&system_of(parent)), working_directory(&system_of(child)));
    assert_eq!(child_dir, format!("{parent_dir}/src"), "the child works in src");
    let ls = &requests[2].body["messages"][2]["content"][0];
    assert!(ls["content"].as_str().unwrap().starts_with("2\n"), "the child ran in the same sandbox: {ls}");
    let back = &requests[3].body["messages"];
    let result = &back.as_array().unwrap().last().unwrap()["content"][0];
    assert_eq!(result["content"], "There are 2 files.", "{result}");
    assert_eq!(result["is_error"], false);

    let kinds: Vec<String> = out
        .events()
        .iter()
        .filter(|e| ["task-started", "task-finished", "model-turn"].contains(&e["type"].as_str().unwrap_or_default()))
        .map(|e| match e["type"].as_str().unwrap() {
            "model-turn" => format!("turn {}", e["turn"]),
            kind => format!("{kind} {} {}", e["task"].as_str().unwrap(), e["depth"]),
        })
        .collect();
    assert_eq!(
        kinds,
        ["turn 1", "task-started task-1 1", "turn 2", "turn 3", "task-finished task-1 1", "turn 4"],
        "the child's events nest"
    );
    let started = out.events().into_iter().find(|e| e["type"] == "task-started").unwrap();
    assert_eq!(started["agent"], "general");
    assert_eq!(started["description"], "count files");
}

/// Turns are the parent's budget, not one per sub-agent: a child that
/// would go on past it is stopped, and so is the parent.
#[test]
fn sub_agents_spend_the_parents_turns() {
    let rt = runtime();
    let script = Script {
        turns: vec![
            calls(vec![tool("task", json!({"prompt": "Work forever.", "agent": "general"}))]),
            calls(vec![tool("bash", json!({"command": "true"}))]),
            calls(vec![tool("bash", json!({"command": "true"}))]),
            text("never asked for"),
        ],
    };
    let server = rt.block_on(ModelServer::start(script)).unwrap();
    let payload = json!({"mode": "prompt-with", "model": "anthropic/claude-test", "prompts": ["go"], "maxTurns": 3});
    let answers = probe(&server, payload).ok();
    let error = answers[0]["error"].as_str().unwrap();
    assert!(error.contains("MaxTurns") && error.contains("within 3 turns"), "{answers}");
    assert_eq!(server.requests().len(), 3, "a turn past the budget was taken");
}

/// Named sub-agents come from `.agents/agents/<name>.md`: their front
/// matter's description is listed, their body leads the child's system
/// prompt, their `model` answers for them; an unknown name is the model's
/// error to fix.
#[test]
fn named_sub_agents_come_from_the_working_directory() {
    let rt = runtime();
    let script = Script {
        turns: vec![
            calls(vec![tool("task", json!({"prompt": "Review it.", "agent": "nobody"}))]),
            calls(vec![tool("task", json!({"prompt": "Review it.", "agent": "reviewer"}))]),
            text("LGTM"),
            text("Reviewed: LGTM."),
        ],
    };
    let server = rt.block_on(ModelServer::start(script)).unwrap();
    let reviewer = "---\nname: reviewer\ndescription: Reviews a change for bugs\nmodel: openai/gpt-4.1\n---\nYou review changes. Be brief.\n";
    let payload = json!({"mode": "prompt-with", "model": "anthropic/claude-test", "prompts": ["go"],
                         "files": {".agents/agents/reviewer.md": reviewer}});
    let answers = probe(&server, payload).ok();
    assert_eq!(answers[0]["text"], "Reviewed: LGTM.", "{answers}");
    let requests = server.requests();
    assert!(system_of(&requests[0].body).contains("- **reviewer** — Reviews a change for bugs"));
    let unknown = &requests[1].body["messages"][2]["content"][0];
    assert_eq!(unknown["is_error"], true);
    assert!(unknown["content"].as_str().unwrap().contains("Available subagents: general, reviewer"), "{unknown}");
    // The reviewer answered through its own model, with its instructions first.
    assert_eq!(requests[2].path, "/v1/chat/completions", "the sub-agent's model was not used");
    let system = requests[2].body["messages"][0]["content"].as_str().unwrap();
    assert!(system.starts_with("You review changes. Be brief."), "{system}");
}

/// `session.task` from the agent's own code: a sub-agent in a directory of
/// its own, which leaves the session's conversation as it was.
#[test]
fn session_task_runs_a_sub_agent_apart_from_the_sessions_conversation() {
    let rt = runtime();
    let script = Script { turns: vec![text("task done"), text("after the task")] };
    let server = rt.block_on(ModelServer::start(script)).unwrap();
    let payload = json!({"mode": "task", "model": "anthropic/claude-test", "prompt": "Do the thing.", "cwd": "work",
                         "system": "You are a helper.", "tools": ["read"], "files": {"work/x.txt": "x"},
                         "after": "And now?"});
    let out = probe(&server, payload);
    let result = out.ok();
    assert_eq!(result["task"]["text"], "task done", "{result}");
    assert_eq!(result["task"]["turns"], 1);
    assert_eq!(result["after"]["text"], "after the task", "{result}");
    let requests = server.requests();
    let task = &requests[0].body;
    assert!(system_of(task).starts_with("You are a helper."), "{}", system_of(task));
    assert!(working_directory(&system_of(task)).ends_with("/work"), "{}", system_of(task));
    let offered: Vec<&str> = task["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(offered, ["read"]);
    let after = &requests[1].body["messages"];
    assert_eq!(after.as_array().unwrap().len(), 1, "the session's conversation holds the task's: {after}");
    assert!(out.events().iter().any(|e| e["type"] == "task-started" && e["depth"] == 1));
}

/// `session.task` can name a sub-agent too: its instructions and model
/// answer, unless the request gives its own; an unknown one is refused.
#[test]
fn session_task_can_name_a_sub_agent() {
    let rt = runtime();
    let server = rt.block_on(ModelServer::start(Script { turns: vec![text("reviewed")] })).unwrap();
    let reviewer = "---\ndescription: Reviews\nmodel: openai/gpt-4.1\n---\nYou review changes.\n";
    let files = json!({".agents/agents/reviewer.md": reviewer});
    let payload = json!({"mode": "task", "model": "anthropic/claude-test", "prompt": "Review.", "agent": "reviewer",
                         "files": files});
    let result = probe(&server, payload).ok();
    assert_eq!(result["task"]["text"], "reviewed", "{result}");
    assert_eq!(result["task"]["model"], "openai/gpt-4.1", "{result}");
    let requests = server.requests();
    assert_eq!(requests[0].path, "/v1/chat/completions");
    assert!(requests[0].body["messages"][0]["content"].as_str().unwrap().starts_with("You review changes."));
    let payload = json!({"mode": "task", "model": "anthropic/claude-test", "prompt": "Review.", "agent": "nobody"});
    let result = probe(&server, payload).ok();
    let error = result["task"]["error"].as_str().unwrap();
    assert!(error.contains("InvalidInput") && error.contains("no sub-agent \\\"nobody\\\""), "{result}");
    assert_eq!(server.requests().len(), 1);
}

/// Skills in `.agents/skills/<name>/SKILL.md` are listed by name and
/// description; `activate_skill` loads one's instructions and names its
/// files; a skill without a description is left out, with a warning.
#[test]
fn skills_are_listed_and_loaded_on_demand() {
    let rt = runtime();
    let script = Script {
        turns: vec![
            calls(vec![
                tool("activate_skill", json!({"name": "deploy"})),
                tool("activate_skill", json!({"name": "nope"})),
            ]),
            text("Deployed."),
        ],
    };
    let server = rt.block_on(ModelServer::start(script)).unwrap();
    let payload = json!({"mode": "prompt-with", "model": "anthropic/claude-test", "prompts": ["Deploy it."],
    "files": {
        ".agents/skills/deploy/SKILL.md": "---\nname: deploy\ndescription: Deploy the app to staging\n---\n# Deploy\nRun `bash deploy.sh`.\n",
        ".agents/skills/deploy/deploy.sh": "echo deployed\n",
        ".agents/skills/broken/SKILL.md": "no front matter here\n",
    }});
    let out = probe(&server, payload);
    assert_eq!(out.ok()[0]["text"], "Deployed.");
    let requests = server.requests();
    let system = system_of(&requests[0].body);
    assert!(system.contains("## Available Skills\n"), "{system}");
    assert!(system.contains("- **deploy** — Deploy the app to staging"), "{system}");
    assert!(!system.contains("broken"), "{system}");
    let offered = requests[0].body["tools"].to_string();
    assert!(offered.contains("\"activate_skill\""), "{offered}");
    let results = &requests[1].body["messages"][2]["content"];
    let loaded = results[0]["content"].as_str().unwrap();
    assert!(loaded.starts_with("Run the skill named \"deploy\".\n<skill_instructions>\n# Deploy"), "{loaded}");
    let base = loaded.lines().find_map(|l| l.strip_prefix("- Base directory: ")).unwrap_or_default();
    assert!(base.ends_with("/.agents/skills/deploy") && loaded.contains("deploy.sh"), "{loaded}");
    assert_eq!(base, format!("{}/.agents/skills/deploy", working_directory(&system)), "{loaded}");
    assert!(!loaded.contains("description:"), "the front matter is not part of the instructions");
    assert_eq!(results[1]["is_error"], true);
    assert!(results[1]["content"].as_str().unwrap().contains("Available skills: deploy"));
    let warned = out.events().iter().any(|e| e["type"] == "log" && e["message"].as_str().unwrap().contains("broken"));
    assert!(warned, "the skill left out was not named");
}

/// Thinking, as Flue asks for it: a budget on Anthropic models that take
/// one, an effort on adaptive ones, `reasoning_effort` on OpenAI; signed
/// thinking goes back with the turn it came with.
#[test]
fn thinking_is_asked_for_in_each_providers_words_and_signed_thinking_goes_back() {
    let rt = runtime();
    let thought = Turn {
        thinking: Some("The user wants a listing.".into()),
        tool_calls: vec![tool("glob", json!({"pattern": "*"}))],
        ..Default::default()
    };
    let server = rt.block_on(ModelServer::start(Script { turns: vec![thought, text("done")] })).unwrap();
    let payload =
        json!({"mode": "prompt-with", "model": "anthropic/claude-sonnet-4-5", "prompts": ["go"], "thinking": "medium"});
    assert_eq!(probe(&server, payload).ok()[0]["text"], "done");
    let requests = server.requests();
    assert_eq!(requests[0].body["thinking"], json!({"type": "enabled", "budget_tokens": 8192}));
    assert_eq!(requests[0].body["max_tokens"], 8192 + 8192);
    let assistant = &requests[1].body["messages"][1]["content"];
    assert_eq!(
        assistant[0],
        json!({"type": "thinking", "thinking": "The user wants a listing.", "signature": "sig:The user wants a listing."}),
        "{assistant}"
    );
    assert_eq!(assistant[1]["type"], "tool_use");

    let server = rt.block_on(ModelServer::start(Script { turns: vec![text("a"), text("b"), text("c")] })).unwrap();
    let adaptive =
        json!({"mode": "prompt-with", "model": "anthropic/claude-opus-4-6", "prompts": ["go"], "thinking": "high"});
    probe(&server, adaptive).ok();
    let openai = json!({"mode": "prompt-with", "model": "openai/o4-mini", "prompts": ["go"], "thinking": "low"});
    probe(&server, openai).ok();
    let no_reasoning = json!({"mode": "prompt-with", "model": "openai/gpt-4.1", "prompts": ["go"], "thinking": "low"});
    probe(&server, no_reasoning).ok();
    let requests = server.requests();
    assert_eq!(requests[0].body["thinking"], json!({"type": "adaptive"}));
    assert_eq!(requests[0].body["output_config"], json!({"effort": "high"}));
    assert_eq!(requests[1].body["reasoning_effort"], "low");
    assert!(requests[1].body.get("thinking").is_none());
    assert!(requests[2].body.get("reasoning_effort").is_none(), "gpt-4.1 does not reason");
}

/// A prompt's own model answers it (here on the other provider), and the
/// reply's cost is none when the model's price is unknown.
#[test]
fn a_prompt_can_name_its_own_model_and_an_unknown_price_is_no_cost() {
    let rt = runtime();
    let server =
        rt.block_on(ModelServer::start(Script { turns: vec![text("from openai"), text("from anthropic")] })).unwrap();
    let payload = json!({"mode": "prompt-with", "model": "anthropic/claude-test", "promptModel": "openai/gpt-4o-mini",
                         "prompts": ["one"]});
    let answers = probe(&server, payload).ok();
    assert_eq!(answers[0]["model"], "openai/gpt-4o-mini", "{answers}");
    assert!(answers[0]["cost"]["total"].as_f64().unwrap() > 0.0, "{answers}");
    let payload = json!({"mode": "prompt-with", "model": "anthropic/claude-test", "prompts": ["two"]});
    let answers = probe(&server, payload).ok();
    assert_eq!(answers[0]["model"], "anthropic/claude-test");
    assert!(answers[0]["cost"].is_null(), "a made-up price: {answers}");
    let paths: Vec<String> = server.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/v1/chat/completions", "/v1/messages"]);
}
