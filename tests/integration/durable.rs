//! Durable agents: conversations kept per invocation id across runs (in the
//! server and with `flue run --id`, in every guest language), bounded, and
//! runs cancelled from the API or the command line.

use std::path::Path;
use std::time::{Duration, Instant};

use model_test_server::{ModelServer, Script, text};
use serde_json::{Value, json};

use crate::serve::{BodyJson, Server, local_sandboxes, project};
use crate::support::{example_in, flue, output, repo_root, runtime, scratch};

pub(crate) const KEY: &str = "sk-test-model-key-0123456789";

/// What the model was sent in request `index`.
fn messages(server: &ModelServer, index: usize) -> String {
    server.requests()[index].body["messages"].to_string()
}

/// A server for `project` whose model is `model` (OpenAI format).
pub(crate) fn server_with_model(project: &Path, tmp: &Path, model: &ModelServer, extra: &[&str]) -> Server {
    let mut command = Server::command("serve", project, tmp, extra);
    command.env("OPENAI_BASE_URL", format!("{}/v1", model.url())).env("OPENAI_API_KEY", KEY);
    Server::spawn(command)
}

/// Two requests with one id: the second's model input holds the first
/// exchange; another id starts afresh; past `--conversation-kib` the oldest
/// turn is dropped (and the run's events say so); the conversation shows
/// in `GET /sessions/…` and `GET /runs/…`.
#[test]
fn a_conversation_continues_across_requests_with_one_id_and_is_bounded() {
    let rt = runtime();
    let script =
        Script { turns: vec![text("Noted alpha."), text("Noted beta."), text("Fresh."), text("Noted gamma.")] };
    let model = rt.block_on(ModelServer::start(script)).unwrap();
    let (project, tmp) = (project(), scratch());
    let server = server_with_model(project.path(), tmp.path(), &model, &["--conversation-kib", "1"]);
    let client = reqwest::Client::new();
    let ask = |id: &str, prompt: String| {
        let request = client
            .post(format!("{}/agents/probe/{id}", server.url))
            .body(json!({"mode": "prompt", "model": "openai/gpt-test", "prompts": [prompt]}).to_string());
        rt.block_on(async move { request.send().await.unwrap().body_json().await })
    };
    let pad = "p".repeat(600);
    let first = ask("issue-1", format!("Remember alpha. {pad}"));
    assert_eq!(first["result"][0]["text"], "Noted alpha.", "{first}");
    let second = ask("issue-1", format!("Remember beta. {pad}"));
    assert_eq!(second["result"][0]["text"], "Noted beta.", "{second}");
    let sent = messages(&model, 1);
    assert!(sent.contains("Remember alpha.") && sent.contains("Noted alpha."), "the first exchange is missing: {sent}");
    ask("issue-2", "Hello.".into());
    assert!(!messages(&model, 2).contains("alpha"), "another id saw this id's conversation");
    // Over 1 KiB after the second run: its oldest turn was dropped.
    let third = ask("issue-1", "And gamma.".into());
    let sent = messages(&model, 3);
    assert!(sent.contains("Remember beta.") && !sent.contains("Remember alpha."), "{sent}");
    let run = rt.block_on(async {
        let url = format!("{}/runs/{}", server.url, second["runId"].as_str().unwrap());
        client.get(url).send().await.unwrap().body_json().await
    });
    assert!(run["events"].to_string().contains("oldest turn(s) will not be seen"), "no warning in {run}");
    let sessions = rt.block_on(async {
        client.get(format!("{}/sessions/probe/issue-1", server.url)).send().await.unwrap().body_json().await
    });
    let kept = sessions["sessions"][0]["messages"].to_string();
    assert!(kept.contains("And gamma.") && kept.contains("Noted gamma.") && !kept.contains("alpha"), "{sessions}");
    assert_eq!(run["conversations"][0]["session"], "default", "{run}");
    let _ = third;
    let unknown =
        rt.block_on(async { client.get(format!("{}/sessions/probe/nobody", server.url)).send().await.unwrap() });
    assert_eq!(unknown.status(), 404);
    drop(server);
    // The conversation outlives the server.
    let again = server_with_model(project.path(), tmp.path(), &model, &[]);
    let sessions = rt.block_on(async {
        client.get(format!("{}/sessions/probe/issue-1", again.url)).send().await.unwrap().body_json().await
    });
    assert!(sessions["sessions"][0]["messages"].to_string().contains("And gamma."), "{sessions}");
}

/// `flue run --id` keeps a session's conversation in the project's store
/// and the next run with the id continues it, for Rust, Python and
/// JavaScript agents alike; without `--id` nothing is kept.
#[test]
fn flue_run_with_an_id_continues_its_conversation_in_every_language() {
    let rt = runtime();
    for lang in ["rust", "python", "js"] {
        example_in(lang, "coder"); // built once; run below from its directory, by name
        let source = repo_root().join("guest-examples").join(lang).join("coder");
        let script = Script { turns: vec![text("First answer."), text("Second answer."), text("Third answer.")] };
        let model = rt.block_on(ModelServer::start(script)).unwrap();
        let (project, tmp) = (scratch(), scratch());
        let run = |prompt: &str, id: Option<&str>| {
            let payload = json!({"model": "openai/gpt-test", "prompt": prompt}).to_string();
            let mut command = flue();
            command
                .current_dir(project.path())
                .arg("run")
                .arg(&source)
                .args(["--payload", &payload, "--isolation", "none"])
                .env("TMPDIR", tmp.path())
                .env("OPENAI_BASE_URL", format!("{}/v1", model.url()))
                .env("OPENAI_API_KEY", KEY);
            if let Some(id) = id {
                command.args(["--id", id]);
            }
            output(&mut command).ok()
        };
        assert_eq!(run("Fix the greeting.", Some("ticket-7"))["answer"], "First answer.", "{lang}");
        assert_eq!(run("Now explain it.", Some("ticket-7"))["answer"], "Second answer.", "{lang}");
        let sent = messages(&model, 1);
        assert!(
            sent.contains("Fix the greeting.") && sent.contains("First answer.") && sent.contains("Now explain it."),
            "{lang}: the second run's model did not see the first: {sent}"
        );
        run("Fix the greeting.", None);
        assert!(!messages(&model, 2).contains("First answer."), "{lang}: a run without --id continued a conversation");
        assert!(project.path().join(".flue/runs.sqlite").exists(), "{lang}: no store in the project");
    }
}

/// Is a process whose command line is `words` (NUL-joined) alive?
pub(crate) fn process_running(words: &[&str]) -> bool {
    let wanted = words.join("\0");
    std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
        std::fs::read(entry.path().join("cmdline"))
            .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).trim_end_matches('\0') == wanted)
    })
}

/// Wait (a hang guard, not a speed check) until `done`, or panic with `what`.
pub(crate) fn wait_until(what: &str, guard: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < guard, "{what}: not within {guard:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

/// A cancel stops the agent and its running command, deletes its sandbox
/// and records `cancelled`, from the API and from `flue runs cancel`; a
/// finished or unknown run cannot be cancelled.
#[test]
fn cancel_stops_a_running_command_and_deletes_its_sandbox() {
    let (project, tmp) = (project(), scratch());
    let server = Server::start("serve", project.path(), tmp.path(), &[]);
    let client = reqwest::Client::new();
    let rt = runtime();
    let start = |seconds: &str| {
        let request = client
            .post(format!("{}/agents/probe/x", server.url))
            .header("x-webhook", "true")
            .body(json!({"mode": "exec", "command": format!("sleep {seconds}")}).to_string());
        rt.block_on(
            async move { request.send().await.unwrap().body_json().await["runId"].as_str().unwrap().to_string() },
        )
    };
    let record = |run_id: &str| {
        let request = client.get(format!("{}/runs/{run_id}", server.url));
        rt.block_on(async move { request.send().await.unwrap().body_json().await })
    };
    let status = |run_id: &str| record(run_id)["status"].as_str().unwrap().to_string();

    // From the API.
    let run_id = start("31.7");
    wait_until("the command started", Duration::from_secs(60), || process_running(&["sleep", "31.7"]));
    let answer =
        rt.block_on(async { client.post(format!("{}/runs/{run_id}/cancel", server.url)).send().await.unwrap() });
    assert_eq!(answer.status(), 202);
    let took = wait_until("the run ended", Duration::from_secs(20), || status(&run_id) != "running");
    eprintln!("cancel to end: {took:?}");
    let ended = record(&run_id);
    assert_eq!(ended["status"], "cancelled", "{ended}");
    assert_eq!(ended["error"]["kind"], "cancelled", "{ended}");
    wait_until("the command was killed", Duration::from_secs(10), || !process_running(&["sleep", "31.7"]));
    assert_eq!(local_sandboxes(tmp.path()), 0, "the cancelled run's sandbox was not deleted");
    let again = rt.block_on(async {
        let answer = client.post(format!("{}/runs/{run_id}/cancel", server.url)).send().await.unwrap();
        (answer.status(), answer.body_json().await)
    });
    assert_eq!((again.0.as_u16(), again.1["error"]["kind"].clone()), (409, json!("run-ended")), "{}", again.1);
    let unknown = rt.block_on(async {
        client.post(format!("{}/runs/run_nothing/cancel", server.url)).send().await.unwrap().status()
    });
    assert_eq!(unknown, 404);

    // From the command line, beside the server.
    let run_id = start("32.7");
    wait_until("the command started", Duration::from_secs(60), || process_running(&["sleep", "32.7"]));
    let cancelled = output(flue().args(["runs", "cancel", &run_id, "--project"]).arg(project.path()));
    assert_eq!(cancelled.code, 0, "{}", cancelled.stderr);
    assert!(cancelled.stdout.contains("cancelled"), "{}", cancelled.stdout);
    wait_until("the command was killed", Duration::from_secs(10), || !process_running(&["sleep", "32.7"]));
    let listed = output(flue().args(["runs", "ls", "--project"]).arg(project.path()));
    let row = listed.stdout.lines().find(|line| line.starts_with(&run_id)).unwrap_or_default().to_string();
    assert!(row.contains("cancelled") && row.contains("probe"), "{}", listed.stdout);
    let shown = output(flue().args(["runs", "show", &run_id, "--project"]).arg(project.path()));
    assert_eq!(serde_json::from_str::<Value>(&shown.stdout).unwrap()["status"], "cancelled");
    let finished = output(flue().args(["runs", "cancel", &run_id, "--project"]).arg(project.path()));
    assert_eq!(finished.code, 1, "cancelling an ended run: {}", finished.stderr);
    let metrics = rt
        .block_on(async { client.get(format!("{}/metrics", server.url)).send().await.unwrap().text().await.unwrap() });
    assert!(metrics.contains("flue_runs_finished_total{outcome=\"cancelled\"} 2"), "{metrics}");
}

/// Two requests with one id at once take turns: the second waits for the
/// first and its model sees the first's exchange; another id does not wait.
#[test]
fn runs_of_one_id_take_turns() {
    let rt = runtime();
    let slow =
        model_test_server::Turn { text: Some("First, slowly.".into()), delay_ms: Some(1500), ..Default::default() };
    let model = rt.block_on(ModelServer::start(Script { turns: vec![slow, text("Second.")] })).unwrap();
    let (project, tmp) = (project(), scratch());
    let server = server_with_model(project.path(), tmp.path(), &model, &[]);
    let client = reqwest::Client::new();
    let ask = |prompt: &str| {
        let request = client
            .post(format!("{}/agents/probe/issue-9", server.url))
            .body(json!({"mode": "prompt", "model": "openai/gpt-test", "prompts": [prompt]}).to_string());
        rt.spawn(async move { request.send().await.unwrap().body_json().await })
    };
    let first = ask("One.");
    wait_until("the first prompt reached the model", Duration::from_secs(30), || model.requests().len() == 1);
    let second = ask("Two.");
    let (first, second) = rt.block_on(async { (first.await.unwrap(), second.await.unwrap()) });
    assert_eq!(
        (&first["result"][0]["text"], &second["result"][0]["text"]),
        (&json!("First, slowly."), &json!("Second."))
    );
    let sent = messages(&model, 1);
    assert!(sent.contains("One.") && sent.contains("First, slowly."), "the second run did not wait: {sent}");
}

/// `kill -9` of the server: the runs it had accepted and not started run
/// when it starts again, with their payloads; the one it was running ends
/// failed (`shutdown`).
#[test]
fn runs_queued_when_the_server_is_killed_run_after_its_restart() {
    let (project, tmp) = (project(), scratch());
    // Without a journal, a run the kill interrupts is lost (as before
    // journals): only what was queued runs after the restart.
    let server = Server::start("serve", project.path(), tmp.path(), &["--max-concurrent", "1", "--no-journal"]);
    let client = reqwest::Client::new();
    let rt = runtime();
    let start = |url: &str, command: &str| {
        let request = client
            .post(format!("{url}/agents/probe/x"))
            .header("x-webhook", "true")
            .body(json!({"mode": "exec", "command": command}).to_string());
        rt.block_on(
            async move { request.send().await.unwrap().body_json().await["runId"].as_str().unwrap().to_string() },
        )
    };
    let record = |url: &str, run_id: &str| {
        let request = client.get(format!("{url}/runs/{run_id}"));
        rt.block_on(async move { request.send().await.unwrap().body_json().await })
    };
    let busy = start(&server.url, "sleep 20.3");
    wait_until("the first run started", Duration::from_secs(60), || record(&server.url, &busy)["status"] == "running");
    let waiting: Vec<String> = ["echo first", "echo second"].iter().map(|c| start(&server.url, c)).collect();
    for run_id in &waiting {
        assert_eq!(record(&server.url, run_id)["status"], "queued");
    }
    drop(server); // SIGKILL
    let server = Server::start("serve", project.path(), tmp.path(), &[]);
    for (run_id, said) in waiting.iter().zip(["first\n", "second\n"]) {
        wait_until("the queued run ran", Duration::from_secs(60), || {
            record(&server.url, run_id)["status"] != "queued" && record(&server.url, run_id)["status"] != "running"
        });
        let ended = record(&server.url, run_id);
        assert_eq!(ended["status"], "succeeded", "{ended}");
        assert_eq!(ended["result"]["stdout"], said, "{ended}");
    }
    let killed = record(&server.url, &busy);
    assert_eq!((&killed["status"], &killed["error"]["kind"]), (&json!("failed"), &json!("shutdown")), "{killed}");
    // What the killed run left: its command and sandbox (gc's work).
    let _ = std::process::Command::new("pkill").args(["-f", "sleep 20.3"]).status();
    drop(server);

    // A graceful stop whose grace ends before a queued run got a slot: it
    // stays queued, and runs at the next start.
    let server = Server::start("serve", project.path(), tmp.path(), &["--max-concurrent", "1", "--grace", "1"]);
    let busy = start(&server.url, "sleep 20.4");
    wait_until("the first run started", Duration::from_secs(60), || record(&server.url, &busy)["status"] == "running");
    let waiting = start(&server.url, "echo third");
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait(), 0);
    let server = Server::start("serve", project.path(), tmp.path(), &[]);
    wait_until("the queued run ran", Duration::from_secs(60), || {
        record(&server.url, &waiting)["status"] == "succeeded"
    });
    assert_eq!(record(&server.url, &waiting)["result"]["stdout"], "third\n");
    assert_eq!(record(&server.url, &busy)["error"]["kind"], "shutdown");
}

/// With `sandbox-per-id`, a run's sandbox belongs to its agent and id: the
/// next request with the id works in the same sandbox (the first one's
/// file is there), another id gets its own, and both outlive their runs
/// (`flue sandboxes gc` leaves them); `flue run --id --sandbox-per-id`
/// does the same.
#[test]
fn a_sandbox_per_id_keeps_its_files_between_runs() {
    let (project, tmp) = (project(), scratch());
    std::fs::write(project.path().join("flue.toml"), "[agents.probe]\nwebhook = true\nsandbox-per-id = true\n")
        .unwrap();
    let server = Server::start("serve", project.path(), tmp.path(), &[]);
    let client = reqwest::Client::new();
    let rt = runtime();
    let exec = |id: &str, command: &str| {
        let request = client
            .post(format!("{}/agents/probe/{id}", server.url))
            .body(json!({"mode": "exec", "command": command}).to_string());
        let answer = rt.block_on(async move { request.send().await.unwrap().body_json().await });
        answer["result"]["stdout"].as_str().unwrap_or_else(|| panic!("{answer}")).to_string()
    };
    let first = exec("ticket-1", "echo kept > note.txt && pwd");
    let second = exec("ticket-1", "cat note.txt && pwd");
    assert_eq!(second, format!("kept\n{first}"), "the second run of the id is not in the first one's sandbox");
    let other = exec("ticket-2", "cat note.txt 2>/dev/null || echo absent");
    assert_eq!(other, "absent\n", "another id shares the sandbox");
    assert_eq!(local_sandboxes(tmp.path()), 2, "one sandbox per id, kept after the runs");
    let shown = rt.block_on(async {
        client.get(format!("{}/sessions/probe/ticket-1", server.url)).send().await.unwrap().body_json().await
    });
    assert_eq!(shown["sandbox"]["connector"], "local", "{shown}");
    assert!(first.trim_end().ends_with(shown["sandbox"]["id"].as_str().unwrap()), "{shown} is not {first}");
    let gc = output(flue().args(["sandboxes", "gc", "--isolation", "none"]).env("TMPDIR", tmp.path()));
    assert_eq!(gc.code, 0, "{}", gc.stderr);
    assert_eq!(local_sandboxes(tmp.path()), 2, "gc collected a sandbox that belongs to an id");

    let (project, tmp) = (scratch(), scratch());
    let run = |command: &str| {
        let payload = json!({"mode": "exec", "command": command}).to_string();
        let mut command = flue();
        command
            .current_dir(project.path())
            .arg("run")
            .arg(crate::support::fixture("probe"))
            .args(["--payload", &payload, "--isolation", "none", "--id", "ticket-1", "--sandbox-per-id"])
            .env("TMPDIR", tmp.path());
        output(&mut command).ok()["stdout"].as_str().unwrap().to_string()
    };
    run("echo kept > note.txt");
    assert_eq!(run("cat note.txt"), "kept\n");
    assert_eq!(local_sandboxes(tmp.path()), 1);
}

/// A sandbox kept per id is deleted once it has gone unused past its idle
/// time (`--sandbox-idle-secs`, noted in the project's store): by `flue
/// sandboxes gc`, and by a server on the project, which looks at start and
/// then once a minute. One still within its time is kept by both.
#[test]
fn an_id_sandbox_idle_past_its_time_is_deleted_by_gc_and_by_the_server() {
    let (project, tmp) = (scratch(), scratch());
    let run = |id: &str, idle: &str| {
        let payload = json!({"mode": "exec", "command": "true"}).to_string();
        let mut command = flue();
        command
            .current_dir(project.path())
            .arg("run")
            .arg(crate::support::fixture("probe"))
            .args(["--payload", &payload, "--isolation", "none", "--id", id, "--sandbox-per-id"])
            .args(["--sandbox-idle-secs", idle])
            .env("TMPDIR", tmp.path());
        output(&mut command).ok();
    };
    run("brief", "1");
    run("lasting", "3600");
    assert_eq!(local_sandboxes(tmp.path()), 2);
    std::thread::sleep(Duration::from_millis(1200));
    let gc = output(flue().current_dir(project.path()).env("TMPDIR", tmp.path()).args(["sandboxes", "gc"]));
    assert_eq!(gc.code, 0, "{}", gc.stderr);
    assert!(gc.stdout.contains(" id brief (idle past its time)"), "{}", gc.stdout);
    assert_eq!(local_sandboxes(tmp.path()), 1, "{}", gc.stdout);

    run("brief", "1");
    assert_eq!(local_sandboxes(tmp.path()), 2, "the id got a new sandbox");
    std::thread::sleep(Duration::from_millis(1200));
    let _server = Server::start("serve", project.path(), tmp.path(), &[]);
    wait_until("the server deleted the idle sandbox", Duration::from_secs(30), || local_sandboxes(tmp.path()) == 1);
}

/// An agent asks for its id's sandbox itself (`create` with the label
/// `flue.keep-for-id`): the id's runs share it, and a `flue.` label an agent
/// puts on its own sandbox cannot pass that sandbox off as another id's.
#[test]
fn an_agent_asks_for_its_ids_sandbox_and_cannot_plant_another_ids() {
    let (project, tmp) = (scratch(), scratch());
    let run = |id: &str, payload: Value| {
        let mut command = flue();
        command
            .current_dir(project.path())
            .arg("run")
            .arg(crate::support::fixture("probe"))
            .args(["--payload", &payload.to_string(), "--isolation", "none", "--id", id])
            .env("TMPDIR", tmp.path());
        output(&mut command).ok()["stdout"].as_str().unwrap_or_default().to_string()
    };
    let (key, planted) = flue::run::ownership::for_id("probe", "b");
    let plant = json!({"mode": "exec", "command": "echo planted > p.txt", "keep": true, "labels": [[key, planted]]});
    run("a", plant);
    let for_id = json!([["flue.keep-for-id", "true"]]);
    let first = run("b", json!({"mode": "exec", "command": "cat p.txt 2>/dev/null || echo clean", "labels": for_id}));
    assert_eq!(first, "clean\n", "the id's sandbox is one another agent planted");
    run("b", json!({"mode": "exec", "command": "echo mine > m.txt", "labels": for_id}));
    let again = run("b", json!({"mode": "exec", "command": "cat m.txt", "labels": for_id}));
    assert_eq!(again, "mine\n", "the id's runs do not share its sandbox");
    assert_eq!(local_sandboxes(tmp.path()), 2, "the planted one (kept) and b's");
}
