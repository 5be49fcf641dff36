//! `session.prompt`: the model loop in the host, against the scripted
//! model test server, in both provider formats, on local and Daytona.

use model_test_server::{ModelServer, Script, Turn, calls, text, tool};
use serde_json::{Value, json};

use crate::support::{Output, TestDaytona, example, flue, output, runtime, scratch};

const KEY: &str = "sk-test-model-key-0123456789";

/// The coder example's conversation: read, edit, run the tests, answer.
fn coder_script(no_stream: bool) -> Script {
    let mut turns = vec![
        calls(vec![tool("read", json!({"path": "src/greet.sh"}))]),
        calls(vec![tool("edit", json!({"path": "src/greet.sh", "oldText": "Bob", "newText": "Ada"}))]),
        calls(vec![tool("bash", json!({"command": "bash test.sh"}))]),
        text("Fixed: it greets Ada and the test passes."),
    ];
    for turn in &mut turns {
        turn.no_stream = no_stream;
    }
    Script { turns }
}

/// `flue run coder` against `server` as provider `format`.
fn run_coder(server: &ModelServer, format: &str, extra: &[&str], tmp: &std::path::Path) -> Output {
    let (model, base_var, key_var, base) = match format {
        "anthropic" => ("anthropic/claude-test", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", server.url()),
        _ => ("openai/gpt-test", "OPENAI_BASE_URL", "OPENAI_API_KEY", format!("{}/v1", server.url())),
    };
    let payload = json!({"model": model}).to_string();
    output(
        flue()
            .args(["run"])
            .arg(example("coder"))
            .args(["--events", "json", "--payload", &payload])
            .args(extra)
            .env("TMPDIR", tmp)
            .env(base_var, base)
            .env(key_var, KEY),
    )
}

fn assert_coder_worked(out: &Output, server: &ModelServer, what: &str) {
    let result = out.ok();
    assert_eq!(result["greeting"], "echo \"Hello, Ada!\"\n", "{what}: the edit did not land: {result}");
    assert_eq!(result["tests"], "PASS", "{what}: {result}");
    assert_eq!(result["answer"], "Fixed: it greets Ada and the test passes.", "{what}");
    assert_eq!(result["turns"], 4, "{what}");
    let tools: Vec<String> = out
        .events()
        .iter()
        .filter(|e| e["type"] == "tool-call")
        .map(|e| e["tool"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(tools, ["read", "edit", "bash"], "{what}: tool-call events");
    assert!(!out.stdout.contains(KEY) && !out.stderr.contains(KEY), "{what}: the API key leaked into output");
    let requests = server.requests();
    assert_eq!(requests.len(), 4, "{what}");
    // The read's result went back to the model, the key only in its header.
    let second = requests[1].body.to_string();
    assert!(second.contains("Hello, Bob!"), "{what}: the read result did not reach the model: {second}");
    assert!(!requests.iter().any(|r| r.body.to_string().contains(KEY)), "{what}: the key is in a request body");
    let has_key = |r: &model_test_server::Recorded| {
        r.headers
            .iter()
            .any(|(k, v)| (k == "x-api-key" && v == KEY) || (k == "authorization" && v == &format!("Bearer {KEY}")))
    };
    assert!(requests.iter().all(has_key), "{what}: the key was not sent");
    // The system prompt carries AGENTS.md and the cwd.
    let first = requests[0].body.to_string();
    assert!(first.contains("Keep changes minimal") && first.contains("/project"), "{what}: system prompt: {first}");
}

#[test]
fn the_coder_example_reads_edits_runs_and_answers_in_both_formats_streamed_or_not() {
    let rt = runtime();
    for format in ["anthropic", "openai"] {
        for no_stream in [false, true] {
            let server = rt.block_on(ModelServer::start(coder_script(no_stream))).unwrap();
            let tmp = scratch();
            let out = run_coder(&server, format, &[], tmp.path());
            assert_coder_worked(&out, &server, &format!("{format}, no_stream={no_stream}"));
        }
    }
}

#[test]
fn the_coder_example_works_on_daytona_too() {
    let rt = runtime();
    let server = rt.block_on(ModelServer::start(coder_script(false))).unwrap();
    let daytona = TestDaytona::start();
    let tmp = scratch();
    let out = output(
        daytona
            .run_command(&example("coder"), tmp.path())
            .args(["--events", "json", "--payload", &json!({"model": "anthropic/claude-test"}).to_string()])
            .env("DAYTONA_API_URL", daytona.server.api_url())
            .env("DAYTONA_API_KEY", crate::support::TEST_API_KEY)
            .env("ANTHROPIC_BASE_URL", server.url())
            .env("ANTHROPIC_API_KEY", KEY),
    );
    assert_coder_worked(&out, &server, "daytona");
    daytona.assert_no_sandboxes_left();
}

#[test]
fn retries_429_then_stops_at_max_turns_and_returns_tool_errors_to_the_model() {
    let rt = runtime();
    // 429 twice (retry-after 0), then a tool that fails, a huge output, and
    // tool calls forever: max-turns (20 in the example) ends it.
    let mut turns = vec![
        Turn { status: Some(429), retry_after: Some(0), ..Default::default() },
        Turn { status: Some(529), retry_after: Some(0), ..Default::default() },
        calls(vec![tool("read", json!({"path": "no/such/file"}))]),
        calls(vec![tool("bash", json!({"command": "head -c 300000 /dev/zero | tr '\\0' x; echo; echo TAIL-MARK"}))]),
    ];
    turns.extend((0..30).map(|_| calls(vec![tool("glob", json!({"pattern": "**/*.sh"}))])));
    let server = rt.block_on(ModelServer::start(Script { turns })).unwrap();
    let tmp = scratch();
    let out = run_coder(&server, "anthropic", &[], tmp.path());
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("max-turns: the model did not finish within 20 turns"), "{}", out.stderr);
    let requests = server.requests();
    // 2 refused + 20 turns.
    assert_eq!(requests.len(), 22, "429 and 529 were not retried");
    let after_read = requests[3].body.to_string();
    assert!(after_read.contains("\"is_error\":true") && after_read.contains("no/such/file"), "{after_read}");
    let after_bash = requests[4].body.to_string();
    assert!(after_bash.contains("output truncated") && after_bash.contains("TAIL-MARK"), "huge output not tail-capped");
    assert!(after_bash.len() < 120_000, "the huge output reached the model whole ({} bytes)", after_bash.len());
    assert!(requests[5].body.to_string().contains("test.sh"), "glob found nothing");
}

#[test]
fn a_missing_key_is_named_and_a_stalled_model_is_stopped_by_the_deadline() {
    let tmp = scratch();
    let out =
        output(flue().args(["run"]).arg(example("coder")).env("TMPDIR", tmp.path()).env_remove("ANTHROPIC_API_KEY"));
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("auth: ANTHROPIC_API_KEY is not set"), "{}", out.stderr);

    let rt = runtime();
    let stalled = Turn { text: Some("thinking…".into()), delay_ms: Some(60_000), ..Default::default() };
    let server = rt.block_on(ModelServer::start(Script { turns: vec![stalled] })).unwrap();
    let out = run_coder(&server, "anthropic", &["--deadline", "3"], tmp.path());
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("deadline exceeded"), "{}", out.stderr);
    assert!(out.events().iter().any(|e| e["type"] == "sandbox" && e["action"] == "deleted"), "sandbox not deleted");
}

#[test]
fn python_and_javascript_coders_match_rust() {
    let rt = runtime();
    let mut results = Vec::new();
    for lang in ["rust", "python", "js"] {
        let server = rt.block_on(ModelServer::start(coder_script(false))).unwrap();
        let tmp = scratch();
        let payload = json!({"model": "openai/gpt-test"}).to_string();
        let out = output(
            flue()
                .args(["run"])
                .arg(crate::support::example_in(lang, "coder"))
                .args(["--events", "json", "--payload", &payload])
                .env("TMPDIR", tmp.path())
                .env("OPENAI_BASE_URL", format!("{}/v1", server.url()))
                .env("OPENAI_API_KEY", KEY),
        );
        assert_coder_worked(&out, &server, lang);
        let mut result = out.ok();
        result.as_object_mut().unwrap().remove("sandbox");
        results.push(result);
    }
    assert_eq!(results[1], results[0], "python differs from rust");
    assert_eq!(results[2], results[0], "javascript differs from rust");
}

/// `flue dev` reads `--env` files again when they change: the next run uses
/// the new settings, without a restart.
#[test]
fn flue_dev_reloads_changed_env_files() {
    use std::io::{BufRead, BufReader};
    let rt = runtime();
    let (first, second) = (
        rt.block_on(ModelServer::start(coder_script(false))).unwrap(),
        rt.block_on(ModelServer::start(coder_script(false))).unwrap(),
    );
    let (project, tmp) = (scratch(), scratch());
    std::fs::create_dir(project.path().join("agents")).unwrap();
    std::fs::copy(example("coder"), project.path().join("agents/coder.wasm")).unwrap();
    std::fs::write(project.path().join("flue.toml"), "[agents.coder]\nwebhook = true\n").unwrap();
    let env = project.path().join(".env.local");
    let write_env = |server: &ModelServer| {
        std::fs::write(&env, format!("ANTHROPIC_BASE_URL={}\nANTHROPIC_API_KEY={KEY}\n", server.url())).unwrap();
    };
    write_env(&first);
    let mut child = flue()
        .arg("dev")
        .arg(project.path())
        .args(["--listen", "127.0.0.1:0", "--isolation", "none", "--env"])
        .arg(&env)
        .env("TMPDIR", tmp.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    let url = line.split("listening on ").nth(1).unwrap().trim().to_string();
    let ask = || {
        let client = reqwest::Client::new();
        let request =
            client.post(format!("{url}/agents/coder/x")).body(json!({"model": "anthropic/claude-test"}).to_string());
        rt.block_on(async move {
            let bytes = request.send().await.unwrap().bytes().await.unwrap();
            serde_json::from_slice::<Value>(&bytes).unwrap()
        })
    };
    assert_eq!(ask()["result"]["tests"], "PASS");
    assert_eq!((first.requests().len(), second.requests().len()), (4, 0));
    // mtime resolution: make the change visible.
    std::thread::sleep(std::time::Duration::from_millis(20));
    write_env(&second);
    let answer = ask();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(answer["result"]["tests"], "PASS", "{answer}");
    assert_eq!(second.requests().len(), 4, "flue dev kept the old --env settings");
}

/// A second prompt continues the conversation; a schema gives checked JSON;
/// `tools` narrows what the model may use; usage adds up over turns.
#[test]
fn prompts_continue_the_conversation_and_schemas_give_json() {
    let rt = runtime();
    let script = Script {
        turns: vec![
            Turn { text: Some("Noted: the number is 7.".into()), usage: Some((10, 3)), ..Default::default() },
            calls(vec![tool("bash", json!({"command": "echo not allowed"}))]),
            Turn { text: Some("```json\n{\"number\": 7}\n```".into()), usage: Some((30, 5)), ..Default::default() },
        ],
    };
    let server = rt.block_on(ModelServer::start(script)).unwrap();
    let tmp = scratch();
    let payload = json!({
        "mode": "prompt",
        "model": "openai/gpt-test",
        "prompts": ["Remember the number 7.", "What was the number?"],
        "schema": {"type": "object", "properties": {"number": {"type": "integer"}}},
        "tools": ["read"],
        "system": "You are terse.",
    });
    let out = output(
        flue()
            .args(["run"])
            .arg(crate::support::fixture("probe"))
            .args(["--events", "json", "--payload", &payload.to_string()])
            .env("TMPDIR", tmp.path())
            .env("OPENAI_BASE_URL", format!("{}/v1", server.url()))
            .env("OPENAI_API_KEY", KEY),
    );
    let answers = out.ok();
    // The first answer is not JSON: the schema makes it a provider error.
    assert!(answers[0]["error"].as_str().unwrap().contains("not the JSON the schema asks for"), "{answers}");
    assert_eq!(answers[1]["json"], "{\"number\":7}", "{answers}");
    assert_eq!(answers[1]["turns"], 2);
    let requests = server.requests();
    let last = &requests[2].body;
    // The conversation went on: the first exchange is in the third request.
    let messages = last["messages"].to_string();
    assert!(messages.contains("Remember the number 7.") && messages.contains("Noted: the number is 7."), "{messages}");
    // Only `read` was offered; the model's bash call came back as an error.
    let offered: Vec<&str> =
        last["tools"].as_array().unwrap().iter().map(|t| t["function"]["name"].as_str().unwrap()).collect();
    assert_eq!(offered, ["read"]);
    assert!(messages.contains("the tool bash is not available here"), "{messages}");
    assert!(last["messages"][0]["content"].as_str().unwrap().starts_with("You are terse."));
}
