//! Runs that survive a crash: a run's host calls are journaled, and a run
//! whose process was killed (`flue serve`, or `flue run` then `flue runs
//! resume`) is resumed — its completed model turns and tool calls answered
//! from the journal, not repeated — in every guest language; a changed
//! component is refused. The agents here are served by what they declare
//! of themselves (no `flue.toml`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use model_test_server::{ModelServer, Script, Turn, calls, text, tool};
use serde_json::{Value, json};

use crate::durable::{KEY, process_running, server_with_model, wait_until};
use crate::serve::{BodyJson, local_sandboxes};
use crate::support::{example_in, flue, output, runtime, scratch};

/// Four model turns, each appending a line to `log.txt` or reading it;
/// the third answers only after a minute (the crash comes while it waits),
/// so the model is asked for it again after the resume and the script has
/// its answer twice.
fn four_turns() -> Script {
    let bash = |command: &str| calls(vec![tool("bash", json!({ "command": command }))]);
    let slow = Turn { delay_ms: Some(60_000), no_stream: true, ..bash("echo three >> log.txt") };
    Script {
        turns: vec![
            bash("echo one >> log.txt"),
            bash("echo two >> log.txt"),
            slow,
            bash("echo three >> log.txt"),
            bash("cat log.txt"),
            text("Counted."),
        ],
    }
}

/// What the model saw: the crash repeated only the turn in flight, and
/// each tool ran once (the log holds each line once).
fn assert_resumed_once(model: &ModelServer, what: &str) {
    let requests = model.requests();
    let sent: Vec<String> = requests.iter().map(|r| r.body["messages"].to_string()).collect();
    assert_eq!(sent.len(), 6, "{what}: turns 1 and 2 were sent again, or the run stopped: {sent:#?}");
    assert_eq!(sent[2], sent[3], "{what}: the resumed run did not ask again for the turn in flight");
    assert!(
        sent[5].contains("one\\ntwo\\nthree") && !sent[5].contains("one\\ntwo\\none"),
        "{what}: a tool call was repeated or lost: {}",
        sent[5]
    );
}

/// A project with `lang`'s `coder` example as `agents/coder.wasm` and no
/// `flue.toml`: the component declares itself a webhook.
fn coder_project(lang: &str) -> tempfile::TempDir {
    let project = scratch();
    std::fs::create_dir(project.path().join("agents")).unwrap();
    std::fs::copy(example_in(lang, "coder"), project.path().join("agents/coder.wasm")).unwrap();
    project
}

/// `kill -9` of the server after two of four model turns, then a restart:
/// the run succeeds, the model received turns 1 and 2 once, every tool ran
/// once, and the sandbox the run created is deleted at its end.
#[test]
fn a_run_killed_with_its_server_resumes_from_its_journal_in_every_language() {
    let rt = runtime();
    let client = reqwest::Client::new();
    for lang in ["rust", "python", "js"] {
        let model = rt.block_on(ModelServer::start(four_turns())).unwrap();
        let (project, tmp) = (coder_project(lang), scratch());
        let server = server_with_model(project.path(), tmp.path(), &model, &[]);
        let listed =
            rt.block_on(async { client.get(format!("{}/agents", server.url)).send().await.unwrap().body_json().await });
        assert_eq!(listed["agents"][0]["name"], "coder", "{lang}: not served by its declaration: {listed}");
        assert!(listed["agents"][0]["description"].as_str().unwrap_or("").contains("fixes a bug"), "{listed}");
        let payload = json!({"model": "openai/gpt-test", "prompt": "Count to three."});
        let started = rt.block_on(async {
            let request = client
                .post(format!("{}/agents/coder/count-1", server.url))
                .header("x-webhook", "true")
                .body(payload.to_string());
            request.send().await.unwrap().body_json().await
        });
        let run_id = started["runId"].as_str().expect("a run id").to_string();
        wait_until("the third model turn was asked for", Duration::from_secs(120), || model.requests().len() == 3);
        drop(server); // SIGKILL
        let record = |url: &str| {
            let request = client.get(format!("{url}/runs/{run_id}"));
            rt.block_on(async move { request.send().await.unwrap().body_json().await })
        };
        let server = server_with_model(project.path(), tmp.path(), &model, &[]);
        wait_until("the resumed run ended", Duration::from_secs(120), || {
            !matches!(record(&server.url)["status"].as_str(), Some("queued" | "running"))
        });
        let ended = record(&server.url);
        assert_eq!(ended["status"], "succeeded", "{lang}: {ended}");
        assert_eq!(ended["result"]["answer"], "Counted.", "{lang}: {ended}");
        assert!(ended["events"].to_string().contains("answered from its journal"), "{lang}: {ended}");
        assert_eq!(ended["journalEntries"], 0, "{lang}: an ended run keeps its journal");
        assert_resumed_once(&model, lang);
        assert_eq!(local_sandboxes(tmp.path()), 0, "{lang}: the resumed run left its sandbox");
    }
}

/// `flue run` with the project's store, killed while it waits for its
/// model; stderr is drained so it never blocks.
fn spawn_flue_run(project: &Path, tmp: &Path, model: &ModelServer, agent: &str) -> Child {
    let payload = json!({"model": "openai/gpt-test", "prompt": "Count to three."}).to_string();
    let mut command = flue();
    with_model(&mut command, project, tmp, model)
        .args(["run", agent, "--payload", &payload, "--isolation", "none"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start flue run")
}

fn with_model<'a>(command: &'a mut Command, project: &Path, tmp: &Path, model: &ModelServer) -> &'a mut Command {
    command
        .current_dir(project)
        .env("TMPDIR", tmp)
        .env("OPENAI_BASE_URL", format!("{}/v1", model.url()))
        .env("OPENAI_API_KEY", KEY)
}

/// The run `flue runs ls` shows in `project` (there is one).
fn only_run(project: &Path) -> (String, String) {
    let listed = output(flue().current_dir(project).args(["runs", "ls"]));
    let line = listed.stdout.lines().nth(1).unwrap_or_else(|| panic!("no run listed: {}", listed.stdout)).to_string();
    let mut words = line.split_whitespace();
    let run_id = words.next().unwrap().to_string();
    (run_id, words.nth(2).unwrap_or_default().to_string())
}

/// A `flue run` of `agent` (a copy of it in a fresh project) killed while
/// its third model turn is being asked for: the project, its temporary
/// directory, the model server and the run's id.
fn killed_flue_run(
    rt: &tokio::runtime::Runtime,
    agent: &Path,
) -> (tempfile::TempDir, tempfile::TempDir, ModelServer, String) {
    let model = rt.block_on(ModelServer::start(four_turns())).unwrap();
    let (project, tmp) = (scratch(), scratch());
    std::fs::copy(agent, project.path().join("coder.wasm")).unwrap();
    let mut run = spawn_flue_run(project.path(), tmp.path(), &model, "coder.wasm");
    wait_until("the third model turn was asked for", Duration::from_secs(120), || model.requests().len() == 3);
    run.kill().unwrap();
    run.wait().unwrap();
    let (run_id, status) = only_run(project.path());
    assert_eq!(status, "interrupted");
    (project, tmp, model, run_id)
}

/// `flue runs resume RUN_ID` in `project`.
fn resume(project: &Path, tmp: &Path, model: &ModelServer, run_id: &str) -> crate::support::Output {
    output(with_model(&mut flue(), project, tmp, model).args(["runs", "resume", run_id, "--isolation", "none"]))
}

/// `kill -9` of `flue run` after two model turns: `flue runs ls` shows the
/// run interrupted, `flue runs resume` finishes it from its journal (turns 1
/// and 2 not sent again) and prints its result; a run whose component
/// changed meanwhile, or whose sandbox was deleted, is refused, saying so;
/// one whose sandbox `flue sandboxes gc` collected has ended.
#[test]
fn a_killed_flue_run_is_resumed_by_flue_runs_resume_unless_its_component_or_sandbox_changed() {
    let rt = runtime();
    let coder = example_in("rust", "coder");

    let (project, tmp, model, run_id) = killed_flue_run(&rt, &coder);
    let resumed = resume(project.path(), tmp.path(), &model, &run_id);
    assert_eq!(resumed.ok()["answer"], "Counted.", "{}", resumed.stderr);
    assert!(resumed.stderr.contains("answered from its journal"), "{}", resumed.stderr);
    assert_resumed_once(&model, "flue runs resume");
    assert_eq!(only_run(project.path()).1, "succeeded");
    let again = output(flue().current_dir(project.path()).args(["runs", "resume", &run_id]));
    assert_eq!(again.code, 2, "{}", again.stderr);
    assert!(again.stderr.contains("has ended (succeeded)"), "{}", again.stderr);

    // Another component in the agent's place.
    let (project, tmp, model, run_id) = killed_flue_run(&rt, &coder);
    std::fs::copy(example_in("rust", "hello"), project.path().join("coder.wasm")).unwrap();
    let refused = resume(project.path(), tmp.path(), &model, &run_id);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("the agent's component changed since the run started"), "{}", refused.stderr);
    assert_eq!(model.requests().len(), 3, "a refused resume asked the model");
    let shown: Value = output(flue().current_dir(project.path()).args(["runs", "show", &run_id])).json();
    assert_eq!(shown["error"]["kind"], "not-resumable", "{shown}");

    // Its sandbox collected by `gc`: the run ends, no longer resumable.
    let (project, tmp, model, run_id) = killed_flue_run(&rt, &coder);
    let gc = output(flue().current_dir(project.path()).env("TMPDIR", tmp.path()).args(["sandboxes", "gc"]));
    assert_eq!((gc.code, local_sandboxes(tmp.path())), (0, 0), "{}", gc.stderr);
    assert!(gc.stdout.contains(&format!("run {run_id} (interrupted) ended")), "{}", gc.stdout);
    let refused = resume(project.path(), tmp.path(), &model, &run_id);
    assert!(refused.stderr.contains("has ended (cancelled)"), "{}", refused.stderr);

    // Its sandbox deleted by hand: the resume fails, saying so.
    let (project, tmp, model, run_id) = killed_flue_run(&rt, &coder);
    assert_eq!(local_sandboxes(tmp.path()), 1);
    let sandbox = std::fs::read_dir(tmp.path().join("flue-local")).unwrap().flatten().find(|e| e.path().is_dir());
    let sandbox = sandbox.unwrap().file_name().to_string_lossy().into_owned();
    let rm = output(flue().current_dir(project.path()).env("TMPDIR", tmp.path()).args(["sandboxes", "rm", &sandbox]));
    assert_eq!((rm.code, local_sandboxes(tmp.path())), (0, 0), "{} {}", rm.stdout, rm.stderr);
    let refused = resume(project.path(), tmp.path(), &model, &run_id);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("which the run used, is gone"), "{}", refused.stderr);
    assert_eq!(model.requests().len(), 3, "a refused resume asked the model");
}

/// A run that streams a file in parts, crashed after each entry of its
/// journal in turn (mid-write, between writing and reading, mid-read) and
/// resumed: every resume ends with the file whole and read back the same;
/// a crash before the writer finished writes it again, and a writer the
/// agent let go of unfinished before the crash is not written again.
#[test]
fn a_streaming_run_resumes_from_every_point_of_its_journal() {
    let payload = json!({"mode": "stream", "mib": 3, "abandon": true}).to_string();
    let mut crashed_at = 0;
    for entry in 1.. {
        let (project, tmp) = (scratch(), scratch());
        let first = output(&mut probe_crashed_after(entry, &payload, project.path(), tmp.path()));
        if first.code == 0 {
            break; // past the journal's last entry: nothing left to crash after
        }
        crashed_at = entry;
        let (run_id, status) = only_run(project.path());
        assert_eq!(status, "interrupted", "entry {entry}: {}", first.stderr);
        let resumed = output(&mut probe_resume(&run_id, project.path(), tmp.path())).ok();
        assert_eq!(
            (&resumed["same"], &resumed["bytes"]),
            (&json!(true), &json!(3 * 1024 * 1024)),
            "after entry {entry}: {resumed}"
        );
    }
    assert!(crashed_at >= 15, "the run's journal is shorter than its calls: {crashed_at} entries");
}

/// A run whose model called one of the agent's tools, crashed after each
/// journal entry in turn and resumed: the tool's outcome is replayed, never
/// run twice (its handler adds a line to a file), and no model turn is
/// asked for twice.
#[test]
fn a_run_with_agent_tools_resumes_without_running_a_tool_twice() {
    use model_test_server::{Script, calls, text, tool};
    let rt = crate::support::runtime();
    let payload = json!({"mode": "prompt-with", "model": "openai/gpt-test", "prompts": ["go"], "tools": [],
                         "agentTools": [{"name": "save", "description": "Add a line to a file"}]})
    .to_string();
    for entry in 1.. {
        let script =
            Script { turns: vec![calls(vec![tool("save", json!({"path": "log.txt", "text": "once"}))]), text("done")] };
        let model = rt.block_on(ModelServer::start(script)).unwrap();
        let (project, tmp) = (scratch(), scratch());
        let first = output(with_model(
            &mut probe_crashed_after(entry, &payload, project.path(), tmp.path()),
            project.path(),
            tmp.path(),
            &model,
        ));
        let answers = if first.code == 0 {
            first.ok()
        } else {
            let (run_id, status) = only_run(project.path());
            assert_eq!(status, "interrupted", "entry {entry}: {}", first.stderr);
            resume(project.path(), tmp.path(), &model, &run_id).ok()
        };
        assert_eq!(answers[0]["text"], "done", "after entry {entry}: {answers}");
        let requests = model.requests();
        assert_eq!(requests.len(), 2, "after entry {entry}: a turn was asked for twice");
        let result = requests[1].body["messages"].as_array().unwrap().last().unwrap()["content"].clone();
        assert_eq!(result, "once\n", "after entry {entry}: the tool ran twice");
        if first.code == 0 {
            assert!(entry > 3, "the run's journal is shorter than its calls");
            break;
        }
    }
}

/// A run that read a file too large for its journal to copy (the journal
/// keeps its length and digest), crashed after each entry in turn and
/// resumed: with the file unchanged, every resume ends as the run would
/// have; with the file rewritten before the resume, a resume past the read
/// stops, saying the file changed, rather than go on with other bytes.
#[test]
fn a_resume_reads_a_large_file_again_and_refuses_one_that_changed() {
    // Past the 256 KiB the journal keeps of a file read whole.
    const BIG: usize = 2 * 1024 * 1024;
    let payload = json!({"mode": "read-big", "bytes": BIG}).to_string();
    let mut refused = 0;
    for entry in 1.. {
        let mut finished = false;
        for rewrite in [false, true] {
            let (project, tmp) = (scratch(), scratch());
            let first = output(&mut probe_crashed_after(entry, &payload, project.path(), tmp.path()));
            if first.code == 0 {
                finished = true; // past the journal's last entry
                break;
            }
            let (run_id, _) = only_run(project.path());
            let file = find_file(&tmp.path().join("flue-local"), "big.bin");
            if rewrite && let Some(file) = &file {
                std::fs::write(file, vec![b'b'; BIG]).unwrap();
            }
            let resumed = output(&mut probe_resume(&run_id, project.path(), tmp.path()));
            if !rewrite || file.is_none() {
                assert_eq!(resumed.ok(), json!({"len": BIG, "a": BIG}), "after entry {entry}");
            } else if resumed.code == 0 {
                // Crashed before the read (the resume read the file as it
                // is), or after the agent returned (the run ends as it did).
                let result = resumed.ok();
                assert!([json!({"len": BIG, "a": 0}), json!({"len": BIG, "a": BIG})].contains(&result), "{result}");
            } else {
                assert!(resumed.stderr.contains("big.bin changed since the run read it"), "{}", resumed.stderr);
                refused += 1;
            }
        }
        if finished {
            break;
        }
    }
    eprintln!("read-big: {refused} resumes refused a changed file");
    assert!(refused >= 1, "no resume came after the read of the large file");
}

/// A run whose process died after its agent returned — its sandbox
/// perhaps deleted already, its end not yet recorded — ends on resume with
/// what the agent returned, without running it again. Crashed mid-run with
/// its sandbox gone, it cannot be resumed.
#[test]
fn a_run_that_had_ended_when_its_process_died_ends_as_it_did_on_resume() {
    let payload = json!({"mode": "exec", "command": "echo done"}).to_string();
    let mut resumed_ok = Vec::new();
    for entry in 1.. {
        let (project, tmp) = (scratch(), scratch());
        if output(&mut probe_crashed_after(entry, &payload, project.path(), tmp.path())).code == 0 {
            break; // past the journal's last entry
        }
        let (run_id, _) = only_run(project.path());
        // What a process killed while deleting its sandboxes leaves.
        let _ = std::fs::remove_dir_all(tmp.path().join("flue-local"));
        let resumed = output(&mut probe_resume(&run_id, project.path(), tmp.path()));
        if resumed.code == 0 {
            assert_eq!(resumed.ok()["stdout"], "done\n", "after entry {entry}");
        } else {
            assert!(resumed.stderr.contains("is gone"), "after entry {entry}: {}", resumed.stderr);
        }
        resumed_ok.push(resumed.code == 0);
    }
    assert_eq!(resumed_ok.last(), Some(&true), "a run whose agent had returned did not end on resume: {resumed_ok:?}");
    assert!(resumed_ok.contains(&false), "no crash came while the run needed its sandbox: {resumed_ok:?}");
}

/// `flue run` of the probe with `payload`, unisolated, in `project` (its
/// store) with its sandboxes under `tmp`, set to crash right after journal
/// entry `entry`.
fn probe_crashed_after(entry: u64, payload: &str, project: &Path, tmp: &Path) -> Command {
    let mut command = flue();
    command
        .current_dir(project)
        .arg("run")
        .arg(crate::support::fixture("probe"))
        .args(["--payload", payload, "--isolation", "none"])
        .env("TMPDIR", tmp)
        .env("FLUE_TEST_ONLY_CRASH_AFTER_JOURNAL_ENTRY", entry.to_string());
    command
}

/// `flue runs resume RUN_ID` of a run of [`probe_crashed_after`].
fn probe_resume(run_id: &str, project: &Path, tmp: &Path) -> Command {
    let mut command = flue();
    command.current_dir(project).args(["runs", "resume", run_id, "--isolation", "none"]).env("TMPDIR", tmp);
    command
}

/// The first file named `name` under `dir`.
fn find_file(dir: &Path, name: &str) -> Option<std::path::PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
        if path.is_dir()
            && !path.is_symlink()
            && let Some(found) = find_file(&path, name)
        {
            return Some(found);
        }
    }
    None
}

/// A cancel stops an agent in every language while its model's `bash`
/// tool runs `sleep`: the run ends `cancelled`, the command is killed, the
/// sandbox deleted; and a `flue run` is cancelled from beside it the same
/// way (`flue runs cancel`, through the project's store).
#[test]
fn cancel_stops_the_model_loop_and_its_command_in_every_language() {
    let rt = runtime();
    let client = reqwest::Client::new();
    let sleeping = |seconds: &str| Script {
        turns: vec![calls(vec![tool("bash", json!({ "command": format!("sleep {seconds}") }))]), text("Slept.")],
    };
    for (lang, seconds) in [("rust", "33.1"), ("python", "33.2"), ("js", "33.3")] {
        let model = rt.block_on(ModelServer::start(sleeping(seconds))).unwrap();
        let (project, tmp) = (coder_project(lang), scratch());
        let server = server_with_model(project.path(), tmp.path(), &model, &[]);
        let started = rt.block_on(async {
            let request = client
                .post(format!("{}/agents/coder/nap", server.url))
                .header("x-webhook", "true")
                .body(json!({"model": "openai/gpt-test", "prompt": "Sleep."}).to_string());
            request.send().await.unwrap().body_json().await
        });
        let run_id = started["runId"].as_str().unwrap().to_string();
        wait_until("the command started", Duration::from_secs(120), || process_running(&["sleep", seconds]));
        let cancel = client.post(format!("{}/runs/{run_id}/cancel", server.url));
        assert_eq!(rt.block_on(async { cancel.send().await.unwrap().status() }), 202);
        let status = |url: &str| {
            let request = client.get(format!("{url}/runs/{run_id}"));
            rt.block_on(async move { request.send().await.unwrap().body_json().await })["status"].clone()
        };
        let took = wait_until("the run ended", Duration::from_secs(20), || status(&server.url) != "running");
        eprintln!("{lang}: cancel to end: {took:?}");
        assert_eq!(status(&server.url), "cancelled", "{lang}");
        wait_until("the command was killed", Duration::from_secs(10), || !process_running(&["sleep", seconds]));
        assert_eq!(local_sandboxes(tmp.path()), 0, "{lang}: the cancelled run's sandbox was left");
    }

    // `flue run`, cancelled from another process.
    let model = rt.block_on(ModelServer::start(sleeping("33.4"))).unwrap();
    let (project, tmp) = (scratch(), scratch());
    std::fs::copy(example_in("rust", "coder"), project.path().join("coder.wasm")).unwrap();
    let payload = json!({"model": "openai/gpt-test", "prompt": "Sleep."}).to_string();
    let mut run = with_model(&mut flue(), project.path(), tmp.path(), &model)
        .args(["run", "coder.wasm", "--payload", &payload, "--isolation", "none"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("the command started", Duration::from_secs(120), || process_running(&["sleep", "33.4"]));
    let (run_id, _) = only_run(project.path());
    let cancelled = output(flue().current_dir(project.path()).args(["runs", "cancel", &run_id]));
    assert!(cancelled.stdout.contains("cancelled"), "{} {}", cancelled.stdout, cancelled.stderr);
    assert_eq!(run.wait().unwrap().code(), Some(1), "flue run did not fail as cancelled");
    assert!(!process_running(&["sleep", "33.4"]), "the command outlived the cancel");
    assert_eq!(local_sandboxes(tmp.path()), 0);
}
