//! `flue serve --ready-sandboxes N`: isolated local sandboxes made ready
//! ahead (bubblewrap and supervisor started) are taken by runs one each,
//! deleted after the run, replaced in the background, and deleted when the
//! server stops; a request for anything but a plain sandbox gets a new one.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};

use crate::durable::wait_until;
use crate::serve::{BodyJson, Server, project};
use crate::support::{flue, runtime, scratch, skip_without_bwrap};

/// The local sandboxes in `tmp`'s base directory.
fn sandboxes(tmp: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(tmp.join("flue-local"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with("local-"))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// How many sandboxes the server at `url` holds ready (its metrics).
fn ready_now(url: &str) -> usize {
    let text =
        runtime().block_on(async { reqwest::get(format!("{url}/metrics")).await.unwrap().text().await.unwrap() });
    text.lines().find_map(|l| l.strip_prefix("flue_sandboxes_ready ")?.trim().parse().ok()).expect("the gauge")
}

/// The sandbox run `run_id` created, from its record's events.
fn sandbox_of(record: &Value) -> String {
    let events = record["events"].as_array().cloned().unwrap_or_default();
    let created = events.iter().find(|e| e["type"] == "sandbox" && e["action"] == "created");
    created.and_then(|e| e["id"].as_str()).unwrap_or_else(|| panic!("no sandbox created: {record}")).to_string()
}

/// `flue serve` of `project` with `--isolation ISOLATION --ready-sandboxes
/// READY`, its sandboxes (and volumes) under `tmp`.
fn server(project: &Path, tmp: &Path, isolation: &str, ready: &str) -> Server {
    let mut command = flue();
    command
        .arg("serve")
        .arg(project)
        .args(["--listen", "127.0.0.1:0", "--isolation", isolation, "--ready-sandboxes", ready])
        .env("TMPDIR", tmp)
        .env("FLUE_DATA_DIR", tmp.join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    Server::spawn(command)
}

#[test]
fn runs_take_ready_sandboxes_once_and_the_server_replaces_and_finally_deletes_them() {
    if skip_without_bwrap("ready_sandboxes::runs_take_ready_sandboxes_once", "ready sandboxes are isolated ones") {
        return;
    }
    let (project, tmp) = (project(), scratch());
    let mut server = server(project.path(), tmp.path(), "bwrap", "2");
    wait_until("two sandboxes are ready", Duration::from_secs(60), || ready_now(&server.url) == 2);
    let ready = sandboxes(tmp.path());
    assert_eq!(ready.len(), 2, "{ready:?}");

    let rt = runtime();
    let client = reqwest::Client::new();
    let run = |payload: Value| {
        let request = client.post(format!("{}/agents/probe/ready", server.url)).body(payload.to_string());
        let answer = rt.block_on(async { request.send().await.unwrap().body_json().await });
        let run_id = answer["runId"].as_str().unwrap_or_else(|| panic!("{answer}")).to_string();
        let record = client.get(format!("{}/runs/{run_id}", server.url));
        (answer, rt.block_on(async { record.send().await.unwrap().body_json().await }))
    };

    // A plain sandbox: one of the ready ones, isolated, used once.
    let (answer, record) = run(json!({"mode": "exec", "command": "pwd; echo $$"}));
    assert_eq!(answer["result"]["exitCode"], 0, "{answer}");
    assert_eq!(answer["result"]["stdout"].as_str().unwrap().lines().next(), Some("/workspace"), "{answer}");
    let used = sandbox_of(&record);
    assert!(ready.contains(&used), "the run did not take a ready sandbox: {used} not in {ready:?}");
    // Deleted after the run, and replaced: two are ready again, all new.
    wait_until("the pool is full again", Duration::from_secs(60), || {
        let now = sandboxes(tmp.path());
        ready_now(&server.url) == 2 && now.len() == 2 && !now.contains(&used)
    });

    // A sandbox with a volume is made for the run, not taken.
    let before = sandboxes(tmp.path());
    let volume = json!({"name": "ready-test", "path": "/workspace/data", "create": true});
    let (answer, record) = run(json!({"mode": "exec", "command": "ls -d data", "volume": volume}));
    assert_eq!(answer["result"]["exitCode"], 0, "{answer}");
    let own = sandbox_of(&record);
    assert!(!before.contains(&own), "a sandbox with a volume came from the ready ones: {answer}");

    // Stopped, the server deletes the sandboxes it kept ready.
    server.signal(libc::SIGTERM);
    assert_eq!(server.exits_within(Duration::from_secs(60)), Some(0));
    assert_eq!(sandboxes(tmp.path()), Vec::<String>::new(), "ready sandboxes outlived their server");
}

#[test]
fn no_sandbox_is_made_ahead_with_none_asked_for_or_without_isolation() {
    for (isolation, ready) in [("bwrap", "0"), ("none", "4")] {
        if isolation == "bwrap" && skip_without_bwrap("ready_sandboxes::no_sandbox_is_made_ahead", "--isolation bwrap")
        {
            continue;
        }
        let (project, tmp) = (project(), scratch());
        let server = server(project.path(), tmp.path(), isolation, ready);
        let rt = runtime();
        let request = reqwest::Client::new()
            .post(format!("{}/agents/probe/plain", server.url))
            .body(json!({"mode": "exec", "command": "true"}).to_string());
        let answer = rt.block_on(async { request.send().await.unwrap().body_json().await });
        assert_eq!(answer["result"]["exitCode"], 0, "{isolation}: {answer}");
        // Let a pool that should not exist have time to show.
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(ready_now(&server.url), 0, "{isolation} --ready-sandboxes {ready}");
        assert_eq!(sandboxes(tmp.path()), Vec::<String>::new(), "{isolation} --ready-sandboxes {ready}");
    }
}

/// `flue run` starts its run's sandbox while the agent loads: the run
/// gets that sandbox, relabelled as its own (kept here, so that its labels
/// can be read), and a run that never asks for one leaves none behind.
#[test]
fn flue_run_starts_its_sandbox_ahead_and_leaves_none_unused() {
    if skip_without_bwrap("ready_sandboxes::flue_run_starts_its_sandbox_ahead", "sandboxes made ahead are isolated") {
        return;
    }
    let tmp = scratch();
    let kept = crate::support::probe(
        json!({"mode": "exec", "command": "pwd"}),
        &["--isolation", "bwrap", "--keep"],
        tmp.path(),
    );
    assert_eq!(kept.code, 0, "{}", kept.stderr);
    let run_id = kept
        .stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find_map(|event| event["run_id"].as_str().map(String::from))
        .unwrap_or_else(|| panic!("no run id in {}", kept.stderr));
    let left = sandboxes(tmp.path());
    assert_eq!(left.len(), 1, "one sandbox, kept: {left:?}");
    let metadata: Value = serde_json::from_slice(
        &std::fs::read(tmp.path().join("flue-local").join(format!("{}.json", left[0]))).unwrap(),
    )
    .unwrap();
    let labels = metadata["labels"].to_string();
    assert!(labels.contains(&run_id), "the sandbox made ahead kept its maker's labels: {labels}");
    assert!(!labels.contains("\"ready\""), "{labels}");

    // No sandbox asked for (the agent fails at once): none is left.
    let tmp = scratch();
    let failed = crate::support::probe(json!({"mode": "fail"}), &["--isolation", "bwrap"], tmp.path());
    assert_ne!(failed.code, 0, "{}", failed.stderr);
    assert_eq!(sandboxes(tmp.path()), Vec::<String>::new(), "the sandbox made ahead outlived its run");
}
