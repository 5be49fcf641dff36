//! A hostile model provider (the scripted server, told to misbehave): what
//! it sends is bounded and a breach is a typed error naming the cap; what
//! its tool calls ask for is bounded and never runs as a shell line; its
//! odd numbers never panic flue; the key it echoes never reaches events,
//! results or errors.

use model_test_server::{Flood, ModelServer, Script, Turn, calls, flood, text, tool};
use serde_json::{Value, json};

use crate::support::{Output, TEST_API_KEY, TestDaytona, flue_probe, output, output_with_peak_rss, runtime, scratch};

const KEY: &str = "sk-hostile-5ecret-key-0123456789abcdef";

/// The probe's `prompts`, each a prompt on one session, against `server`
/// as provider `format`, with `tools` (all when `None`); the command, to run.
fn prompt_command(
    server: &ModelServer,
    format: &str,
    prompts: usize,
    tools: Option<&[&str]>,
    args: &[&str],
    tmp: &std::path::Path,
) -> std::process::Command {
    let (model, base_var, key_var, base) = match format {
        "anthropic" => ("anthropic/claude-test", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", server.url()),
        _ => ("openai/gpt-test", "OPENAI_BASE_URL", "OPENAI_API_KEY", format!("{}/v1", server.url())),
    };
    let mut payload = json!({"mode": "prompt", "model": model, "prompts": vec!["go on"; prompts]});
    if let Some(tools) = tools {
        payload["tools"] = json!(tools);
    }
    let mut command = flue_probe(payload, args, tmp);
    command.env(base_var, base).env(key_var, KEY);
    command
}

/// The probe's answers, one per prompt.
fn answers(out: &Output) -> Vec<Value> {
    out.ok().as_array().expect("an array of answers").clone()
}

/// What the model read back after its tool calls, in request `index`.
fn request_text(server: &ModelServer, index: usize) -> String {
    server.requests()[index].body.to_string()
}

/// Every way a provider can send too much: each is a `provider` error that
/// names its cap, and flue's memory stays bounded.
#[test]
fn an_answer_past_a_cap_is_a_provider_error_naming_it() {
    let rt = runtime();
    let hundred_calls = calls((0..100).map(|_| tool("glob", json!({"pattern": "*"}))).collect());
    let cases: Vec<(Turn, &str)> = vec![
        (flood(Flood::Text { bytes: 64 << 20 }), "text is over flue's cap of 1.0 MiB per answer"),
        (
            Turn { no_stream: true, ..flood(Flood::Text { bytes: 64 << 20 }) },
            "body is over flue's cap of 8.0 MiB per answer",
        ),
        (flood(Flood::Arguments { bytes: 64 << 20 }), "tool-call arguments is over flue's cap of 1.0 MiB per answer"),
        (flood(Flood::EmptyEvents), "stream is over flue's cap of 100000 events per answer"),
        (flood(Flood::OpenEvent), "streamed event is over flue's cap of 4.0 MiB per event"),
        (hundred_calls, "tool calls is over flue's cap of 64 per answer"),
    ];
    for format in ["anthropic", "openai"] {
        let mut turns: Vec<Turn> = cases.iter().map(|(turn, _)| turn.clone()).collect();
        // An error body of 512 MiB: only its start is read.
        turns.push(Turn { status: Some(400), error_body_bytes: Some(512 << 20), ..Default::default() });
        let server = rt.block_on(ModelServer::start(Script { turns })).unwrap();
        let tmp = scratch();
        // Without the caps, the endless answers would run into the deadline.
        let mut command = prompt_command(&server, format, cases.len() + 1, None, &["--deadline", "120"], tmp.path());
        let (out, peak_mib) = output_with_peak_rss(&mut command);
        eprintln!("{format}: flue's peak RSS {peak_mib} MiB");
        let answers = answers(&out);
        for ((_, cap), answer) in cases.iter().zip(&answers) {
            let error = answer["error"].as_str().unwrap_or_else(|| panic!("{format}: no error for {cap}: {answer}"));
            assert!(
                error.starts_with("PromptError::Provider(") && error.contains(cap),
                "{format}: {error} should name {cap:?}"
            );
        }
        let error_body = answers.last().unwrap()["error"].as_str().unwrap().to_string();
        assert!(
            error_body.starts_with("PromptError::Provider(") && error_body.contains("answered 400"),
            "{error_body}"
        );
        assert!(error_body.len() < 2_000, "{format}: an error message of {} bytes", error_body.len());
        // The whole run, eight floods of 64 MiB to 512 MiB included.
        assert!(peak_mib < 128, "{format}: flue's peak RSS was {peak_mib} MiB");
        // Nothing was run for the answers past a cap.
        assert!(!out.events().iter().any(|e| e["type"] == "tool-call"), "{format}: a tool ran");
    }
}

/// `edit` with a one-character match and a long replacement would write
/// gigabytes; `read` of a huge one-line file would hold it whole.
#[test]
fn tool_calls_cannot_amplify_into_host_memory_or_huge_files() {
    let rt = runtime();
    let script = Script {
        turns: vec![
            calls(vec![tool("write", json!({"path": "seed.txt", "content": "a".repeat(16 * 1024)}))]),
            // 16 Ki matches × 4 KiB = 64 MiB.
            calls(vec![tool(
                "edit",
                json!({"path": "seed.txt", "oldText": "a", "newText": "b".repeat(4096), "replaceAll": true}),
            )]),
            // One line of 100 MiB: within what a session reads whole.
            calls(vec![tool("bash", json!({"command": "head -c 104857600 /dev/zero | tr '\\0' z > big.txt"}))]),
            calls(vec![tool("read", json!({"path": "big.txt"}))]),
            // A timeout from the model: any number, bounded.
            calls(vec![tool("bash", json!({"command": "echo still-here", "timeout": u64::MAX}))]),
            text("done"),
        ],
    };
    let server = rt.block_on(ModelServer::start(script)).unwrap();
    let (tmp, workdir) = (scratch(), scratch());
    let workdir_arg = workdir.path().to_str().unwrap();
    let mut command = prompt_command(&server, "anthropic", 1, None, &["--workdir", workdir_arg], tmp.path());
    let (out, peak_mib) = output_with_peak_rss(&mut command);
    eprintln!("flue's peak RSS {peak_mib} MiB");
    assert_eq!(answers(&out)[0]["text"], "done", "{}", out.stderr);
    let after_edit = request_text(&server, 2);
    assert!(after_edit.contains("would make seed.txt 64.0 MiB, over the 8.0 MiB a tool may write"), "{after_edit}");
    assert_eq!(std::fs::metadata(workdir.path().join("seed.txt")).unwrap().len(), 16 * 1024, "the edit was written");
    let after_read = request_text(&server, 4);
    assert!(after_read.contains("[line cut: 104"), "{after_read:.300}");
    assert!(after_read.len() < 120_000, "the read result is {} bytes", after_read.len());
    assert!(request_text(&server, 5).contains("still-here"), "the bounded timeout broke bash");
    assert!(peak_mib < 64, "flue's peak RSS was {peak_mib} MiB reading a 100 MiB line");
}

/// Tool results are capped one by one, and the conversation they build up
/// as a whole: past its cap the prompt ends as `context-overflow` before
/// anything more is sent.
#[test]
fn a_conversation_cannot_grow_past_its_cap() {
    let rt = runtime();
    // 64 reads of 50 KB per turn: about 3.2 MB a turn.
    let reads = || calls((0..64).map(|_| tool("read", json!({"path": "lines.txt"}))).collect());
    let mut turns = vec![calls(vec![tool(
        "bash",
        json!({"command": "for i in $(seq 100); do head -c 999 /dev/zero | tr '\\0' r; echo; done > lines.txt"}),
    )])];
    turns.extend((0..3).map(|_| reads()));
    turns.push(text("never reached"));
    let server = rt.block_on(ModelServer::start(Script { turns })).unwrap();
    let tmp = scratch();
    let out = output(&mut prompt_command(&server, "anthropic", 1, None, &[], tmp.path()));
    let error = answers(&out)[0]["error"].as_str().unwrap_or_default().to_string();
    assert!(
        error.starts_with("PromptError::ContextOverflow(") && error.contains("over flue's cap of 8.0 MiB"),
        "{error}"
    );
    assert_eq!(server.requests().len(), 4, "a turn past the cap was sent");
    assert!(request_text(&server, 2).contains("read on with offset="), "the reads did not page");
}

/// With tools narrowed to read, grep and glob, no text from the model runs
/// as a command: every `$(…)` below would create a file. On local and on
/// Daytona (where the model's text reaches the command through the
/// connector's environment).
#[test]
fn narrowed_tools_run_no_command_the_model_wrote() {
    let rt = runtime();
    let script = || Script {
        turns: vec![
            calls(vec![
                tool("glob", json!({"pattern": "*$(touch pwned-glob)"})),
                tool("glob", json!({"pattern": "`touch pwned-backtick`*", "path": "$(touch pwned-path)"})),
                tool("glob", json!({"pattern": "x; touch pwned-semicolon"})),
                tool("grep", json!({"pattern": "$(touch pwned-grep)", "include": "*$(touch pwned-include)"})),
                tool(
                    "grep",
                    json!({"pattern": "a'$(touch pwned-quote)'", "literal": true, "path": "'$(touch pwned-q2)'"}),
                ),
                // Still a glob and a grep: braces, globstar, include.
                tool("glob", json!({"pattern": "**/*.{txt,md}"})),
                tool("grep", json!({"pattern": "needle", "include": "*.md"})),
                tool("glob", json!({"pattern": "pass{w,x}*", "path": "/etc"})),
                tool("grep", json!({"pattern": "^root:", "path": "/etc/passwd"})),
            ]),
            calls(vec![tool("glob", json!({"pattern": "**/*pwned*"}))]),
            text("done"),
        ],
    };
    let tools: &[&str] = &["read", "grep", "glob"];
    let results = |server: &ModelServer, request: usize| -> Vec<String> {
        server.requests()[request].body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "tool")
            .map(|m| m["content"].as_str().unwrap().to_string())
            .collect()
    };

    // Local, in a directory the test can look into.
    let server = rt.block_on(ModelServer::start(script())).unwrap();
    let (tmp, workdir) = (scratch(), scratch());
    std::fs::create_dir(workdir.path().join("docs")).unwrap();
    std::fs::write(workdir.path().join("notes.txt"), "hay\n").unwrap();
    std::fs::write(workdir.path().join("docs/readme.md"), "a needle\n").unwrap();
    let workdir_arg = workdir.path().to_str().unwrap();
    let out = output(&mut prompt_command(&server, "openai", 1, Some(tools), &["--workdir", workdir_arg], tmp.path()));
    assert_eq!(answers(&out)[0]["text"], "done", "{}", out.stderr);
    let created: Vec<String> = std::fs::read_dir(workdir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("pwned"))
        .collect();
    assert!(created.is_empty(), "the model's text ran as a command: {created:?}");
    let first = results(&server, 1);
    assert_eq!(first.len(), 9);
    // Each alternative in turn, as bash expands braces.
    assert_eq!(first[5], "notes.txt\ndocs/readme.md\n", "brace expansion and globstar: {first:?}");
    assert_eq!(first[6], "./docs/readme.md:1:a needle\n", "{first:?}");
    assert!(first[7].starts_with("passwd\n") && first[8].contains("root:"), "{first:?}");
    assert_eq!(results(&server, 2).last().unwrap(), "[glob: no matches]");

    // Daytona: the sandbox is only seen through the tools.
    let server = rt.block_on(ModelServer::start(script())).unwrap();
    let daytona = TestDaytona::start();
    let connectors = daytona.connectors.path().to_str().unwrap().to_string();
    let args = ["--sandbox", "daytona", "--connectors", &connectors];
    let mut command = prompt_command(&server, "anthropic", 1, Some(tools), &args, tmp.path());
    command.env("DAYTONA_API_URL", daytona.server.api_url()).env("DAYTONA_API_KEY", TEST_API_KEY);
    let out = output(&mut command);
    assert_eq!(answers(&out)[0]["text"], "done", "{}", out.stderr);
    let tool_results = |request: usize| -> Vec<String> {
        server.requests()[request].body["messages"].as_array().unwrap().last().unwrap()["content"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["content"].as_str().unwrap().to_string())
            .collect()
    };
    let first = tool_results(1);
    assert!(first[7].starts_with("passwd\n") && first[8].contains("root:"), "daytona: {first:?}");
    assert_eq!(tool_results(2), ["[glob: no matches]"], "daytona: the model's text ran as a command");
    daytona.assert_no_sandboxes_left();
}

/// Numbers from the provider are parsed and bounded: `retry-after: 1e20`
/// waits at most the backoff cap (the deadline ends the run first, and its
/// sandbox is deleted), and token counts at u64::MAX add up without overflow.
#[test]
fn odd_numbers_from_the_provider_never_panic_flue() {
    let rt = runtime();
    let turns = vec![
        Turn { status: Some(429), retry_after_header: Some("1e20".into()), ..Default::default() },
        text("never reached"),
    ];
    let server = rt.block_on(ModelServer::start(Script { turns })).unwrap();
    let tmp = scratch();
    let out = output(&mut prompt_command(&server, "anthropic", 1, None, &["--deadline", "4"], tmp.path()));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("deadline exceeded"), "{}", out.stderr);
    assert!(out.events().iter().any(|e| e["type"] == "sandbox" && e["action"] == "deleted"), "sandbox left behind");

    let max = Turn { usage: Some((u64::MAX, u64::MAX)), ..Default::default() };
    let turns = vec![
        Turn { tool_calls: vec![tool("glob", json!({"pattern": "*"}))], ..max.clone() },
        Turn { text: Some("counted".into()), ..max },
    ];
    for format in ["anthropic", "openai"] {
        let server = rt.block_on(ModelServer::start(Script { turns: turns.clone() })).unwrap();
        let out = output(&mut prompt_command(&server, format, 1, None, &[], tmp.path()));
        let answer = &answers(&out)[0];
        assert_eq!(answer["text"], "counted", "{format}: {}", out.stderr);
        assert_eq!((answer["input"].as_u64(), answer["output"].as_u64()), (Some(u64::MAX), Some(u64::MAX)));
    }
}

/// The provider echoes the key: split across streamed deltas, in the model's
/// `bash` command (whole, and where the exec event cuts it short), in its
/// final answer and in an error body. It appears in no event, result or
/// error, whole or in part.
#[test]
fn the_key_never_reaches_events_results_or_errors() {
    let rt = runtime();
    let long_command = format!("echo {} {{{{API_KEY}}}} > /dev/null", "x".repeat(185));
    for format in ["anthropic", "openai"] {
        let turns = vec![
            Turn {
                text: Some("the key is {{API_KEY}}, split".into()),
                delta_bytes: Some(3),
                tool_calls: vec![
                    tool("bash", json!({"command": "echo {{API_KEY}} > key.txt; echo written"})),
                    tool("bash", json!({"command": long_command})),
                    tool("grep", json!({"pattern": "{{API_KEY}}"})),
                ],
                ..Default::default()
            },
            Turn { text: Some("{{API_KEY}}".into()), delta_bytes: Some(1), ..Default::default() },
            // A second prompt: an error whose body echoes the key across
            // the point where flue used to cut such a body short.
            Turn {
                status: Some(401),
                error_body: Some(format!("{}{{{{API_KEY}}}}", "y".repeat(290))),
                ..Default::default()
            },
        ];
        let server = rt.block_on(ModelServer::start(Script { turns })).unwrap();
        let tmp = scratch();
        let out = output(&mut prompt_command(&server, format, 2, None, &[], tmp.path()));
        let answers = answers(&out);
        let fragment = &KEY[..8];
        assert!(!out.stdout.contains(fragment), "{format}: the key reached the result: {}", out.stdout);
        assert!(!out.stderr.contains(fragment), "{format}: the key reached an event: {}", out.stderr);
        let streamed: String = out
            .events()
            .iter()
            .filter(|e| e["type"] == "model-text")
            .map(|e| e["text"].as_str().unwrap().to_string())
            .collect();
        assert!(!streamed.contains(fragment), "{format}: the key, joined from deltas: {streamed}");
        let name = if format == "anthropic" { "ANTHROPIC_API_KEY" } else { "OPENAI_API_KEY" };
        let redacted = format!("[redacted {name}]");
        assert_eq!(streamed, format!("the key is {redacted}, split{redacted}"), "{format}");
        assert_eq!(answers[0]["text"], redacted, "{format}");
        let error = answers[1]["error"].as_str().unwrap();
        assert!(error.starts_with("PromptError::Auth(") && error.contains("rejected the key"), "{format}: {error}");
        // The tools did run with what the model sent.
        assert!(request_text(&server, 1).contains("written"), "{format}");
        let events = out.events();
        let exec_targets: Vec<&str> = events
            .iter()
            .filter(|e| e["type"] == "operation" && e["op"] == "exec")
            .filter_map(|e| e["target"].as_str())
            .collect();
        assert!(exec_targets.iter().any(|t| t.contains(&redacted)), "{format}: {exec_targets:?}");
    }
}

/// A JSON answer that spells the key with escapes (`\u0073k-…`) is
/// redacted after flue parses it, not only as text.
#[test]
fn an_escaped_key_in_a_json_answer_is_redacted_too() {
    let rt = runtime();
    let escaped = format!("\\u{:04x}{}", KEY.as_bytes()[0], &KEY[1..]);
    let turns = vec![Turn { text: Some(format!("{{\"leak\": \"{escaped}\"}}")), ..Default::default() }];
    let server = rt.block_on(ModelServer::start(Script { turns })).unwrap();
    let tmp = scratch();
    let payload = json!({"mode": "prompt", "model": "openai/gpt-test", "prompts": ["go on"],
                         "schema": {"type": "object"}});
    let out = output(
        flue_probe(payload, &[], tmp.path())
            .env("OPENAI_BASE_URL", format!("{}/v1", server.url()))
            .env("OPENAI_API_KEY", KEY),
    );
    let answers = answers(&out);
    let json = answers[0]["json"].as_str().unwrap_or_else(|| panic!("{answers:?}"));
    assert!(!json.contains(&KEY[..8]), "the key reached the agent through the parsed JSON: {json}");
    assert!(json.contains("[redacted OPENAI_API_KEY]"), "{json}");
}
