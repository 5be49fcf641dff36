//! Bad input gets a clear error and loses nothing.

use std::time::Duration;

use flue::events::EventLog;
use flue::run::{AgentRun, RunError, RunSettings};
use flue::runtime::{ComponentBytes, Limits};
use serde_json::json;

use crate::support::{example, fixture, flue, host, output, probe, scratch};

fn settings() -> RunSettings {
    RunSettings {
        default_connector: "local".into(),
        keep: false,
        reuse: None,
        sandbox_per_id: false,
        default_resources: None,
        sandbox_idle: None,
    }
}

#[test]
fn bad_connector_files_each_get_one_line_and_good_ones_still_load() {
    let dir = scratch();
    let good = std::fs::read(fixture("memory-connector")).unwrap();
    std::fs::write(dir.path().join("memory.wasm"), &good).unwrap();
    std::fs::write(dir.path().join("truncated.wasm"), &good[..good.len() / 2]).unwrap();
    std::fs::write(dir.path().join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    std::fs::write(dir.path().join("notes.wasm"), b"just some text").unwrap();
    std::fs::copy(fixture("probe"), dir.path().join("agent.wasm")).unwrap();

    let out = output(flue().arg("connectors").arg("--connectors").arg(dir.path()));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let line = |name: &str| {
        out.stdout
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in\n{}", out.stdout))
            .to_string()
    };
    assert!(line("memory").contains("In-memory filesystem sandboxes"), "{}", out.stdout);
    assert!(out.stdout.contains("MEMORY_LABEL (optional)"), "{}", out.stdout);
    assert!(line("local").contains("bubblewrap"), "{}", out.stdout);
    let expect = [
        ("truncated", "truncated.wasm: not a valid component"),
        ("core", "core.wasm: not a component: it is a core WebAssembly module"),
        ("notes", "notes.wasm: not a component: it is not a WebAssembly file"),
        ("agent", "agent.wasm: does not fit the flue:sandbox/connector world"),
    ];
    for (name, want) in expect {
        assert!(line(name).contains(want), "{name}: {}\nwant {want}", line(name));
    }

    // A run that uses the good connector is not disturbed by the bad ones.
    let tmp = scratch();
    let run = probe(
        json!({"mode": "files", "connector": "memory"}),
        &["--connectors", dir.path().to_str().unwrap()],
        tmp.path(),
    );
    let result = run.ok();
    assert_eq!(result["read"], "alpha");
    assert_eq!(result["bin"], json!([0, 1, 2, 255]));
}

#[test]
fn invalid_payload_json_is_refused_before_anything_runs() {
    let out = output(flue().args(["run", "hello", "--payload", "{name: Ada}"]));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--payload is not valid JSON"), "{}", out.stderr);
    assert!(out.stdout.is_empty());
}

#[test]
fn unknown_agents_and_connectors_are_named_with_the_alternatives() {
    let out = output(flue().args(["run", "no-such-agent"]));
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("no agent \"no-such-agent\"") && out.stderr.contains("rust/hello"), "{}", out.stderr);

    let tmp = scratch();
    let out = crate::support::run_agent(
        &example("hello"),
        &["--sandbox", "nope", "--connectors", tmp.path().to_str().unwrap()],
        tmp.path(),
    );
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("no connector named \"nope\": available are local"), "{}", out.stderr);
}

#[test]
fn a_connector_with_source_but_not_installed_says_to_add_it() {
    let tmp = scratch();
    let out = crate::support::run_agent(
        &example("hello"),
        &["--sandbox", "daytona", "--connectors", tmp.path().to_str().unwrap()],
        tmp.path(),
    );
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("connector \"daytona\" is not installed in") && out.stderr.contains("`flue add daytona`"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_file_that_is_not_an_agent_is_refused_clearly() {
    let tmp = scratch();
    let out = crate::support::run_agent(&fixture("memory-connector"), &[], tmp.path());
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("not a flue agent"), "{}", out.stderr);
}

#[test]
fn misbehaving_agents_end_with_clear_errors() {
    let tmp = scratch();
    let cases = [
        (json!({"mode": "trap"}), vec![], "the agent crashed (trap)", "probe panicked on purpose"),
        (json!({"mode": "fail"}), vec![], "the agent failed: probe failed on purpose", ""),
        (json!({"mode": "not-json"}), vec![], "the agent returned a result that is not JSON", "this is not JSON"),
        (
            json!({"mode": "loop"}),
            vec!["--deadline", "2"],
            "deadline exceeded: the agent ran longer than 2s",
            "--deadline",
        ),
        (json!({"mode": "alloc"}), vec!["--memory", "64"], "ran out of memory", "64 MiB"),
        (json!({"mode": "exec", "command": "sleep 60"}), vec!["--deadline", "2"], "deadline exceeded", ""),
    ];
    for (payload, args, want, also) in cases {
        let out = probe(payload.clone(), &args, tmp.path());
        assert_eq!(out.code, 1, "{payload}: {}", out.stderr);
        assert!(
            out.stderr.contains(want) && out.stderr.contains(also),
            "{payload}: want {want:?} and {also:?} in\n{}",
            out.stderr
        );
        assert!(out.stdout.is_empty(), "{payload}: {}", out.stdout);
        // Even a failed run deletes its sandbox.
        let leftovers: Vec<_> =
            std::fs::read_dir(tmp.path().join("flue-local")).map(|d| d.flatten().collect()).unwrap_or_default();
        assert!(leftovers.is_empty(), "{payload}: left {leftovers:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_host_stays_healthy_after_agents_misbehave() {
    let tmp = scratch();
    let limits = Limits { deadline: Duration::from_secs(2), agent_memory: 64 << 20, ..Limits::default() };
    let host = host(flue::sandbox::local::Isolation::None, tmp.path(), limits);
    let probe = std::fs::read(fixture("probe")).unwrap();
    let run = |payload: serde_json::Value, wasm: Vec<u8>| AgentRun {
        label: "test".into(),
        wasm: ComponentBytes::new(wasm),
        id: "t".into(),
        payload: payload.to_string(),
        settings: settings(),
        limits: None,
        run_id: None,
        conversations: None,
        journal: None,
        id_sandbox_ledger: None,
    };
    let outcome = host.run(run(json!({"mode": "loop"}), probe.clone()), EventLog::discard()).await;
    assert!(matches!(outcome.result, Err(RunError::DeadlineExceeded { .. })), "{:?}", outcome.result.err());
    let outcome = host.run(run(json!({"mode": "alloc"}), probe.clone()), EventLog::discard()).await;
    assert!(matches!(outcome.result, Err(RunError::OutOfMemory { limit_mib: 64 })), "{:?}", outcome.result.err());
    let outcome = host.run(run(json!({"mode": "trap"}), probe.clone()), EventLog::discard()).await;
    assert!(matches!(outcome.result, Err(RunError::Trapped { .. })), "{:?}", outcome.result.err());

    // Same engine, same process: the next agent runs normally.
    let hello = std::fs::read(example("hello")).unwrap();
    let outcome = host.run(run(json!(null), hello), EventLog::discard()).await;
    let result = outcome.result.expect("hello runs after the failures");
    assert_eq!(result["roundTrip"], true);
}

/// Numbers from the command line are bounded: a huge one is a usage error
/// naming the flag and its range, never a panic (exit 101).
#[test]
fn huge_numbers_in_flags_are_refused_not_panicked_on() {
    let tmp = scratch();
    let cases: [(&[&str], &str); 6] = [
        (&["run", "hello", "--deadline", "99999999999999999"], "1..=604800"),
        (&["run", "hello", "--deadline", "0"], "--deadline"),
        (&["run", "hello", "--memory", "99999999999999"], "1..=4096"),
        (&["run", "hello", "--memory-gib", "99999999999"], "--memory-gib"),
        (&["run", "hello", "--cpus", "0"], "--cpus"),
        (&["sandboxes", "gc", "--older-than", "99999999999999999d"], "longer than ten years"),
    ];
    for (args, want) in cases {
        let out = output(flue().args(args).env("TMPDIR", tmp.path()));
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(want), "{args:?}: {}", out.stderr);
    }
}
