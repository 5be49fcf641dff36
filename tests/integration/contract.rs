//! The sandbox contract suite against every backend this repository has.

use flue::events::EventLog;
use flue::sandbox::conformance::{self, CHECK_NAMES, VOLUME_CHECK_NAMES};

use crate::support::{bwrap_available, fixture, flue, host, isolation, isolation_modes, output, scratch};

async fn local_passes(mode: &str) {
    let tmp = scratch();
    let host = host(isolation(mode).await, tmp.path(), Default::default());
    let connector = host.connector("local", &EventLog::discard()).await.unwrap();
    let sandbox = connector.create(&Default::default()).await.unwrap();
    let results = conformance::run(sandbox.clone(), false, EventLog::discard()).await;
    let failures: Vec<String> =
        results.iter().filter_map(|r| r.outcome.as_ref().err().map(|e| format!("{}: {e}", r.name))).collect();
    assert!(failures.is_empty(), "local ({mode}) failed:\n{}", failures.join("\n"));
    assert_eq!(results.len(), CHECK_NAMES.len());
    // The suite cleans up after itself.
    let left = connector.list(&[]).await.unwrap();
    assert_eq!(left.len(), 1);
    connector.delete(sandbox.id()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn local_sandbox_without_isolation_passes_the_contract() {
    local_passes("none").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn local_sandbox_under_bubblewrap_passes_the_contract() {
    if bwrap_available() {
        local_passes("bwrap").await;
    }
}

#[test]
fn conformance_command_prints_a_table_and_exit_status() {
    for mode in isolation_modes() {
        let out = output(flue().args(["conformance", "local", "--isolation", mode]));
        assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
        let summary = format!("{} passed, 0 failed\n", CHECK_NAMES.len() + VOLUME_CHECK_NAMES.len());
        assert!(out.stdout.contains(&summary), "{mode}: {}", out.stdout);
        for name in CHECK_NAMES.iter().chain(VOLUME_CHECK_NAMES) {
            assert!(out.stdout.contains(&format!("PASS  {name}")), "{name} missing from\n{}", out.stdout);
        }
    }
}

#[test]
fn conformance_reports_what_a_connector_gets_wrong() {
    // The memory fixture has no commands: the suite must say so, check by check.
    let dir = scratch();
    std::fs::copy(fixture("memory-connector"), dir.path().join("memory.wasm")).unwrap();
    let out = output(flue().args(["conformance", "memory", "--connectors"]).arg(dir.path()));
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("FAIL  exec env"), "{}", out.stdout);
    assert!(out.stdout.contains("unsupported: the memory connector cannot run commands"), "{}", out.stdout);
    assert!(out.stdout.contains("PASS  binary round trip (all 256 byte values)"), "{}", out.stdout);
    assert!(out.stdout.contains("PASS  rm recursive/force semantics"), "{}", out.stdout);
    // No volumes: skipped with the connector's reason, not failed.
    for name in VOLUME_CHECK_NAMES {
        assert!(out.stdout.contains(&format!("SKIP  {name}")), "{}", out.stdout);
    }
    assert!(out.stdout.contains("the memory connector has no volumes"), "{}", out.stdout);
    assert!(out.stdout.contains("2 skipped (unsupported)"), "{}", out.stdout);
    assert!(out.stderr.contains("memory does not conform to the sandbox contract"), "{}", out.stderr);
}
