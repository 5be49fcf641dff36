//! The example agents, end to end through the `flue` binary.

use serde_json::json;

use crate::support::{example, isolation_modes, probe, run_agent, scratch};

#[test]
fn hello_runs_on_the_local_sandbox() {
    for mode in isolation_modes() {
        let tmp = scratch();
        let out = run_agent(&example("hello"), &["--payload", r#"{"name":"Ada"}"#, "--isolation", mode], tmp.path());
        let result = out.ok();
        assert_eq!(result["uname"]["exitCode"], 0, "{mode}: {result}");
        assert!(result["uname"]["stdout"].as_str().unwrap().starts_with("Linux"), "{mode}: {result}");
        assert!(result["readBack"].as_str().unwrap().starts_with("Hello, Ada! (run run_"), "{mode}: {result}");
        assert_eq!(result["roundTrip"], true);
        assert_eq!(result["files"], json!(["hello.txt"]));
        if mode == "bwrap" {
            assert_eq!(result["cwd"], "/workspace");
            assert!(
                result["uname"]["stdout"].as_str().unwrap().contains("flue-sandbox"),
                "not in the sandbox's UTS namespace"
            );
        }

        // Every operation was recorded, and the sandbox was deleted at the end.
        let events = out.events();
        let ops: Vec<&str> =
            events.iter().filter(|e| e["type"] == "operation").map(|e| e["op"].as_str().unwrap()).collect();
        assert_eq!(ops, ["stat", "exec", "write", "read", "readdir"], "{mode}");
        let exec = events.iter().find(|e| e["op"] == "exec").unwrap();
        assert_eq!(exec["target"], "uname -a");
        assert_eq!(exec["detail"], "exit 0");
        assert!(exec["duration_ms"].is_u64());
        let id = result["sandbox"].as_str().unwrap();
        assert!(
            events.iter().any(|e| e["type"] == "sandbox" && e["action"] == "deleted" && e["id"] == id),
            "{events:?}"
        );
        assert!(!tmp.path().join("flue-local").join(id).exists(), "the sandbox directory outlived the run");
    }
}

#[test]
fn persistent_keeps_state_between_harnesses() {
    let tmp = scratch();
    let result = run_agent(&example("persistent"), &[], tmp.path()).ok();
    let setup = result["setupCwd"].as_str().unwrap();
    assert_eq!(result["workCwd"], format!("{setup}/project"));
    assert_eq!(result["pwd"], format!("{setup}/project"));
    assert_eq!(result["prepared"], "prepared");
    assert_eq!(result["files"], json!(["README.md", "sorted.txt", "src"]));
    assert_eq!(result["readme"], "# Demo project\n");
    assert_eq!(result["sorted"], json!(["gamma", "beta", "alpha"]));
    assert_eq!(result["lineCount"], 3);
    assert_eq!(result["summaryExists"], true);
    // Step 3: a volume carried a file from one new sandbox to the next.
    assert_eq!(result["volume"], json!({"handedOver": "written by the first sandbox\n", "twoSandboxes": true}));
}

#[test]
fn a_kept_sandbox_is_reused_by_id_in_a_later_run() {
    let tmp = scratch();
    let first = run_agent(&example("hello"), &["--keep"], tmp.path());
    let id = first.ok()["sandbox"].as_str().unwrap().to_string();
    assert!(first.events().iter().any(|e| e["action"] == "kept" && e["id"] == id.as_str()));
    assert!(tmp.path().join("flue-local").join(&id).join("hello.txt").is_file());

    // The run's default sandbox, by id…
    let second = probe(json!({"mode": "exec", "command": "cat hello.txt"}), &["--reuse", &id], tmp.path()).ok();
    assert!(second["stdout"].as_str().unwrap().starts_with("Hello, world!"), "{second}");
    // …and one the agent asks for itself. Reusing never deletes.
    let third = probe(json!({"mode": "connect", "id": id, "path": "hello.txt"}), &[], tmp.path()).ok();
    assert!(third["read"].as_str().unwrap().starts_with("Hello, world!"));
    assert!(tmp.path().join("flue-local").join(&id).is_dir(), "a reused sandbox was deleted");

    // An agent can keep a sandbox it creates, whatever the flags.
    let kept = probe(json!({"mode": "create-keep"}), &[], tmp.path()).ok();
    let kept_id = kept["id"].as_str().unwrap();
    let marker = tmp.path().join("flue-local").join(kept_id).join("marker.txt");
    assert_eq!(std::fs::read_to_string(marker).unwrap(), "kept");
}

#[test]
fn an_agent_built_against_the_released_0_1_0_wit_still_runs() {
    let tmp = scratch();
    let legacy = crate::support::fixture("legacy-agent");
    let result = run_agent(&legacy, &["--payload", r#"{"name":"Ada"}"#], tmp.path()).ok();
    assert!(result["readBack"].as_str().unwrap().starts_with("Hello, Ada!"), "{result}");
    assert_eq!(result["roundTrip"], true);
    assert_eq!(result["files"], json!(["hello.txt"]));
}

#[test]
fn a_rust_agent_is_rebuilt_only_when_its_sources_change() {
    let dir = scratch();
    assert_eq!(
        crate::support::output(crate::support::flue().args(["new", "rust", "fresh"]).current_dir(dir.path())).code,
        0
    );
    let agent = dir.path().join("fresh");
    let run = |path: &str| {
        crate::support::output(
            crate::support::flue()
                .arg("run")
                .arg(&agent)
                .args(["--events", "none"])
                .env("TMPDIR", dir.path())
                .env("PATH", path)
                .env_remove("CARGO"),
        )
    };
    let path = std::env::var("PATH").unwrap_or_default();
    assert_eq!(run(&path).ok()["agent"], "fresh");
    // Fresh: no cargo needed (there is none on this PATH).
    assert_eq!(run("/usr/bin:/bin").ok()["agent"], "fresh", "a fresh agent was rebuilt");
    // Stale: flue must rebuild, and says it cannot without cargo.
    let source = agent.join("src/lib.rs");
    let text = std::fs::read_to_string(&source).unwrap();
    std::fs::write(&source, text.replace("\"agent\": \"fresh\"", "\"agent\": \"edited\"")).unwrap();
    let stale = run("/usr/bin:/bin");
    assert_eq!(stale.code, 2, "{}", stale.stderr);
    assert!(stale.stderr.contains("cannot run rustc") || stale.stderr.contains("cannot run cargo"), "{}", stale.stderr);
    assert_eq!(run(&path).ok()["agent"], "edited", "the edit was not rebuilt");
}

#[test]
fn workdir_uses_and_keeps_the_given_directory() {
    let tmp = scratch();
    let dir = tmp.path().join("mine");
    run_agent(&example("hello"), &["--workdir", dir.to_str().unwrap()], tmp.path()).ok();
    assert!(dir.join("hello.txt").is_file(), "--workdir directory was not used or was removed");
}
