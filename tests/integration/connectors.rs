//! The connector seam: agents reach wasm connectors through the host.

use serde_json::json;

use crate::support::{fixture, probe, scratch};

fn connectors_dir() -> tempfile::TempDir {
    let dir = scratch();
    std::fs::copy(fixture("memory-connector"), dir.path().join("memory.wasm")).unwrap();
    dir
}

#[test]
fn an_agent_works_through_a_wasm_connector_as_its_default_sandbox() {
    let dir = connectors_dir();
    let tmp = scratch();
    let out = probe(
        json!({"mode": "files"}),
        &["--sandbox", "memory", "--connectors", dir.path().to_str().unwrap()],
        tmp.path(),
    );
    let result = out.ok();
    assert_eq!(result["cwd"], "/memory");
    assert_eq!(result["read"], "alpha");
    assert_eq!(result["bin"], json!([0, 1, 2, 255]));
    assert_eq!(
        result["root"],
        json!(["bin.dat", "notes"]),
        "write-file created the missing parent through the session layer"
    );
    assert_eq!(result["missing"], false);
    assert!(
        result["exec"].as_str().unwrap().contains("Unsupported(\"the memory connector cannot run commands\")"),
        "{result}"
    );

    // The connector's sandbox went through the run's lifecycle.
    let events = out.events();
    let created = events.iter().find(|e| e["type"] == "sandbox" && e["action"] == "created").unwrap();
    assert_eq!(created["connector"], "memory");
    assert!(events.iter().any(|e| e["action"] == "deleted" && e["id"] == created["id"]));
    let exec = events.iter().find(|e| e["op"] == "exec").unwrap();
    assert_eq!(exec["error"]["kind"], "unsupported");
}

#[test]
fn an_agent_can_mix_the_local_sandbox_and_a_connector() {
    let dir = connectors_dir();
    let tmp = scratch();
    // Default sandbox local; the agent asks for `memory` by name.
    let result = probe(
        json!({"mode": "files", "connector": "memory"}),
        &["--connectors", dir.path().to_str().unwrap()],
        tmp.path(),
    )
    .ok();
    assert_eq!(result["cwd"], "/memory");
    let result = probe(
        json!({"mode": "files", "connector": "local"}),
        &["--connectors", dir.path().to_str().unwrap()],
        tmp.path(),
    )
    .ok();
    assert_eq!(result["exec"], serde_json::Value::Null, "local runs commands");
}

#[tokio::test(flavor = "multi_thread")]
async fn declared_secrets_never_reach_the_connector() {
    let dir = connectors_dir();
    let config = std::collections::HashMap::from([
        ("MEMORY_TOKEN".to_string(), "tok-should-stay-in-the-host".to_string()),
        ("MEMORY_LABEL".to_string(), "from-config".to_string()),
    ]);
    let host = flue::HostBuilder::new()
        .cache_dir(Some(crate::support::cache_dir()))
        .connectors_dir(dir.path())
        .config(config)
        .build()
        .unwrap();
    let connector = host.connector("memory", &flue::events::EventLog::discard()).await.unwrap();
    connector.create(&Default::default()).await.unwrap();
    let listed = connector.list(&[]).await.unwrap();
    // The connector reports what config::get gave it: the label, not the token.
    assert_eq!(listed[0].labels, vec![("label".to_string(), "from-config".to_string())]);
}
