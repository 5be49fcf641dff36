//! Sandbox lifecycle: an interrupted run deletes its sandboxes, a killed
//! run's sandbox shows as orphaned and `flue sandboxes gc` deletes it, and
//! kept sandboxes are never collected.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{TestDaytona, fixture, flue, flue_probe, output, scratch};

/// Wait (up to 60 s) until `ready` holds, polling.
fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The local sandboxes under `tmp`.
fn local_sandboxes(tmp: &Path) -> Vec<String> {
    std::fs::read_dir(tmp.join("flue-local"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with("local-") && !name.ends_with(".json"))
                .collect()
        })
        .unwrap_or_default()
}

fn spawn(command: &mut Command) -> Child {
    command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start flue")
}

fn signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, signal) };
}

fn finish(child: Child) -> (i32, String) {
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A probe run whose command says it started (a file in its sandbox), then sleeps.
fn sleeping_probe(tmp: &Path) -> Command {
    flue_probe(json!({"mode": "exec", "command": "touch started; sleep 60"}), &["--isolation", "none"], tmp)
}

/// A probe run on Daytona whose command sleeps, once its sandbox exists
/// and the command has had time to reach the toolbox.
fn sleeping_on_daytona(daytona: &TestDaytona, tmp: &Path) -> Child {
    let payload = json!({"mode": "exec", "command": "sleep 60"}).to_string();
    let mut command = daytona.flue();
    command
        .arg("run")
        .arg(fixture("probe"))
        .args(["--sandbox", "daytona", "--events", "json", "--payload", &payload, "--connectors"])
        .arg(daytona.connectors.path())
        .env("TMPDIR", tmp);
    let child = spawn(&mut command);
    wait_for("the Daytona sandbox", || !daytona.server.sandbox_ids().is_empty());
    std::thread::sleep(Duration::from_millis(500));
    child
}

#[test]
fn sigint_mid_command_stops_the_run_and_deletes_its_sandbox() {
    let tmp = scratch();
    let child = spawn(&mut sleeping_probe(tmp.path()));
    wait_for("the command to start", || {
        local_sandboxes(tmp.path()).iter().any(|id| tmp.path().join("flue-local").join(id).join("started").exists())
    });
    signal(&child, libc::SIGINT);
    let (code, stderr) = finish(child);
    assert_eq!(code, 130, "{stderr}");
    assert!(stderr.contains("interrupted by SIGINT"), "{stderr}");
    assert_eq!(local_sandboxes(tmp.path()), Vec::<String>::new(), "the interrupted run left sandboxes");
}

#[test]
fn sigterm_mid_command_deletes_the_daytona_sandbox_too() {
    let daytona = TestDaytona::start();
    let tmp = scratch();
    let child = sleeping_on_daytona(&daytona, tmp.path());
    signal(&child, libc::SIGTERM);
    let (code, stderr) = finish(child);
    assert_eq!(code, 143, "{stderr}");
    assert!(stderr.contains("terminated by SIGTERM"), "{stderr}");
    daytona.assert_no_sandboxes_left();
}

#[test]
fn a_killed_runs_sandbox_is_orphaned_and_gc_deletes_it_but_never_a_kept_one() {
    let tmp = scratch();
    let sandboxes = |args: &[&str]| {
        let out = output(flue().arg("sandboxes").args(args).env("TMPDIR", tmp.path()));
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.stdout
    };
    // A kept sandbox, from a run that ended normally.
    let kept = output(&mut flue_probe(json!({"mode": "create-keep"}), &["--isolation", "none"], tmp.path())).ok();
    let kept_id = kept["id"].as_str().unwrap().to_string();

    // A run killed outright: nothing can clean up.
    let mut child = spawn(&mut sleeping_probe(tmp.path()));
    wait_for("the command to start", || {
        local_sandboxes(tmp.path()).iter().any(|id| tmp.path().join("flue-local").join(id).join("started").exists())
    });
    let live = sandboxes(&["ls"]);
    let orphan = local_sandboxes(tmp.path()).into_iter().find(|id| *id != kept_id).unwrap();
    assert!(live.lines().any(|l| l.contains(&orphan) && l.contains("run active")), "{live}");
    // gc leaves a live run's sandbox alone.
    assert!(sandboxes(&["gc"]).contains("0 orphaned sandbox(es) deleted"));
    child.kill().unwrap();
    child.wait().unwrap();

    let listed = sandboxes(&["ls"]);
    assert!(listed.lines().any(|l| l.contains(&orphan) && l.contains("orphaned")), "{listed}");
    assert!(listed.lines().any(|l| l.contains(&kept_id) && l.contains("kept")), "{listed}");
    assert!(sandboxes(&["gc", "--older-than", "1d"]).contains("0 orphaned"), "too young to collect");
    let collected = sandboxes(&["gc"]);
    assert!(collected.contains(&format!("deleted local sandbox {orphan} (orphaned)")), "{collected}");
    assert_eq!(local_sandboxes(tmp.path()), vec![kept_id.clone()], "gc must delete the orphan and keep the kept one");
    assert!(sandboxes(&["ls", "--label", "flue.keep=true"]).contains(&kept_id));
    assert!(sandboxes(&["rm", &kept_id]).contains(&format!("deleted {kept_id}")));
    assert_eq!(local_sandboxes(tmp.path()), Vec::<String>::new());
}

#[test]
fn a_second_signal_exits_at_once_and_says_what_may_be_left() {
    let daytona = TestDaytona::start();
    let tmp = scratch();
    let child = sleeping_on_daytona(&daytona, tmp.path());
    // Cleanup will be slow: the second signal must not wait for it.
    daytona.faults().set_latency_ms(5000);
    signal(&child, libc::SIGINT);
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, libc::SIGINT);
    let (code, stderr) = finish(child);
    assert_eq!(code, 130, "{stderr}");
    assert!(stderr.contains("may be left behind: `flue sandboxes gc` deletes them"), "{stderr}");
    // It did not wait for the (slow) deletion: the sandbox is still there…
    assert_eq!(daytona.server.sandbox_ids().len(), 1, "the second signal waited for cleanup");
    // …and what the message advises cleans it up.
    daytona.faults().set_latency_ms(0);
    let gc = output(
        daytona.flue().args(["sandboxes", "gc", "--sandbox", "daytona", "--connectors"]).arg(daytona.connectors.path()),
    );
    assert_eq!(gc.code, 0, "{}", gc.stderr);
    wait_for("the orphan to be deleted", || daytona.server.sandbox_ids().is_empty());
}

/// A sandbox labelled by another machine with the same host name and
/// machine id (a cloned image) is never collected: its boot is not one this
/// machine had. Labels are shown escaped, so none can forge a row.
#[test]
fn gc_never_collects_a_twin_machines_sandbox_and_ls_shows_labels_escaped() {
    let tmp = scratch();
    let data = scratch();
    let sandboxes = |args: &[&str]| {
        let out =
            output(flue().arg("sandboxes").args(args).env("TMPDIR", tmp.path()).env("FLUE_DATA_DIR", data.path()));
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.stdout
    };
    let kept = output(
        flue_probe(json!({"mode": "create-keep"}), &["--isolation", "none"], tmp.path())
            .env("FLUE_DATA_DIR", data.path()),
    )
    .ok();
    let kept_id = kept["id"].as_str().unwrap().to_string();
    // The twin's sandbox: our labels, but not kept, and another boot.
    let base = tmp.path().join("flue-local");
    let mut metadata: serde_json::Value =
        serde_json::from_slice(&std::fs::read(base.join(format!("{kept_id}.json"))).unwrap()).unwrap();
    let labels = metadata["labels"].as_array_mut().unwrap();
    for pair in labels.iter_mut() {
        match pair[0].as_str().unwrap() {
            "flue.keep" => pair[1] = json!("false"),
            "flue.process" => pair[1] = json!(format!("1-1-{}", "b".repeat(32))),
            "flue.agent" => pair[1] = json!("x\nlocal      forged-row"),
            _ => {}
        }
    }
    let twin = "local-twin0000000";
    std::fs::create_dir(base.join(twin)).unwrap();
    std::fs::write(base.join(format!("{twin}.json")), serde_json::to_vec(&metadata).unwrap()).unwrap();

    let listed = sandboxes(&["ls"]);
    let row = listed.lines().find(|l| l.contains(twin)).unwrap_or_else(|| panic!("{listed}"));
    assert!(row.contains("no record of") && row.contains(r"x\x0alocal"), "{listed}");
    assert!(!listed.lines().any(|l| l.starts_with("local      forged-row")), "a label forged a row: {listed}");
    let collected = sandboxes(&["gc"]);
    assert!(collected.contains("0 orphaned sandbox(es) deleted"), "{collected}");
    assert!(base.join(twin).exists(), "gc deleted another machine's sandbox");
    assert!(sandboxes(&["rm", twin, &kept_id]).contains(&format!("deleted {twin}")));
}

/// A bug in flue that panics mid-run (provoked by a debug-only test hook)
/// fails that run with a clear message and still deletes its sandbox.
#[test]
fn a_panic_in_flue_mid_run_fails_the_run_and_deletes_its_sandbox() {
    let tmp = scratch();
    let out = output(
        flue_probe(
            json!({"mode": "exec", "command": "true"}),
            &["--isolation", "none", "--id", "panic-me"],
            tmp.path(),
        )
        .env("FLUE_TEST_ONLY_PANIC_RUN", "panic-me"),
    );
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("flue failed inside this run (a bug, please report it)"), "{}", out.stderr);
    assert_eq!(local_sandboxes(tmp.path()), Vec::<String>::new(), "the panicked run left its sandbox");
}
