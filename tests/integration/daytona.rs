//! The Daytona connector against the Daytona-compatible test server: the
//! real wire protocol, real commands, injected faults.

use std::time::{Duration, Instant};

use flue::events::EventLog;
use flue::sandbox::Connector;
use flue::sandbox::conformance::{self, CHECK_NAMES};
use flue::sandbox::error::ErrorKind;
use flue::sandbox::session::{ExecOptions, Session};
use serde_json::json;

use crate::support::{TEST_API_KEY, TestDaytona, example, fixture, scratch};

#[test]
fn hello_and_persistent_run_on_daytona_as_on_local() {
    let daytona = TestDaytona::start();
    let tmp = scratch();
    let hello = daytona.run(&example("hello"), &["--payload", r#"{"name":"Ada"}"#], tmp.path()).ok();
    assert_eq!(hello["cwd"], "/home/daytona");
    assert_eq!(hello["uname"]["exitCode"], 0);
    assert!(hello["uname"]["stdout"].as_str().unwrap().starts_with("Linux"));
    assert!(hello["readBack"].as_str().unwrap().starts_with("Hello, Ada!"));
    assert_eq!(hello["roundTrip"], true);
    assert_eq!(hello["files"], json!(["hello.txt"]));

    let persistent = daytona.run(&example("persistent"), &[], tmp.path()).ok();
    assert_eq!(persistent["workCwd"], "/home/daytona/project");
    assert_eq!(persistent["pwd"], "/home/daytona/project");
    assert_eq!(persistent["files"], json!(["README.md", "sorted.txt", "src"]));
    assert_eq!(persistent["sorted"], json!(["gamma", "beta", "alpha"]));
    assert_eq!(persistent["lineCount"], 3);
    assert_eq!(persistent["summaryExists"], true);
    daytona.assert_no_sandboxes_left();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_contract_suite_passes_on_daytona() {
    let daytona = TestDaytona::start();
    let connector = daytona.connector().await;
    let sandbox = connector.create(&Default::default()).await.unwrap();
    assert!(!connector.info().merges_output, "the connector separates stderr");
    let results = conformance::run(sandbox.clone(), false, EventLog::discard()).await;
    let failures: Vec<String> =
        results.iter().filter_map(|r| r.outcome.as_ref().err().map(|e| format!("{}: {e}", r.name))).collect();
    assert!(failures.is_empty(), "daytona failed:\n{}", failures.join("\n"));
    assert_eq!(results.len(), CHECK_NAMES.len());
    connector.delete(sandbox.id()).await.unwrap();
    daytona.assert_no_sandboxes_left();
}

#[test]
fn requests_carry_the_sdk_headers_and_the_key_only_on_the_wire() {
    let daytona = TestDaytona::start();
    let tmp = scratch();
    let out = daytona.run(&example("hello"), &[], tmp.path());
    out.ok();
    let requests = daytona.server.requests();
    assert!(requests.len() > 5, "{requests:?}");
    for request in &requests {
        let header = |name: &str| request.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        assert_eq!(header("authorization"), Some(format!("Bearer {TEST_API_KEY}").as_str()), "{request:?}");
        assert!(header("x-daytona-source").is_some(), "{request:?}");
        let version = header("x-daytona-sdk-version").expect("SDK version header");
        let parts: Vec<u32> = version.split('.').map(|p| p.parse().unwrap()).collect();
        assert!(parts >= vec![0, 167, 0], "X-Daytona-SDK-Version {version} is below 0.167.0");
    }
    let upload = requests.iter().find(|r| r.uri.ends_with("/files/bulk-upload")).expect("an upload");
    assert!(upload.headers.iter().any(|(k, v)| k == "content-type" && v.starts_with("multipart/form-data; boundary=")));
    assert!(requests.iter().any(|r| r.method == "POST" && r.uri == "/api/sandbox"));
    assert!(requests.iter().any(|r| r.uri.contains("/process/execute")));
    // The key is on the wire, and nowhere the user or the agent can see.
    assert!(!out.stdout.contains(TEST_API_KEY) && !out.stderr.contains(TEST_API_KEY));
}

#[test]
fn the_api_key_is_redacted_even_when_daytona_echoes_it() {
    let daytona = TestDaytona::start();
    daytona.faults().set_fail_auth(true);
    daytona.faults().set_echo_credentials(true);
    let tmp = scratch();
    let out = daytona.run(&example("hello"), &[], tmp.path());
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("Daytona rejected the credentials"), "{}", out.stderr);
    assert!(out.stderr.contains("DAYTONA_API_KEY"), "{}", out.stderr);
    // The server put the key in its error body; the connector only ever saw
    // it redacted, so the message carries the marker, not the key.
    assert!(out.stderr.contains("[redacted DAYTONA_API_KEY]"), "{}", out.stderr);
    assert!(!out.stderr.contains(TEST_API_KEY) && !out.stdout.contains(TEST_API_KEY), "{}", out.stderr);
    // The server also echoed the key base64- and percent-encoded: redacted too.
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(TEST_API_KEY);
    assert!(!out.stderr.contains(encoded.trim_end_matches('=')), "{encoded} leaked: {}", out.stderr);
    assert!(out.stderr.matches("[redacted DAYTONA_API_KEY]").count() >= 3, "{}", out.stderr);
}

#[test]
fn a_missing_api_key_is_a_clear_error() {
    let daytona = TestDaytona::start();
    let tmp = scratch();
    let out = crate::support::output(
        daytona.run_command(&example("hello"), tmp.path()).env("DAYTONA_API_URL", daytona.server.api_url()),
    );
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("connector daytona needs DAYTONA_API_KEY"), "{}", out.stderr);
    assert!(daytona.server.requests().is_empty(), "nothing should be sent without a key");
}

#[test]
fn env_files_configure_the_connector() {
    let daytona = TestDaytona::start();
    let tmp = scratch();
    let env_file = tmp.path().join("daytona.env");
    std::fs::write(
        &env_file,
        format!("DAYTONA_API_URL={}\nDAYTONA_API_KEY={TEST_API_KEY}\n", daytona.server.api_url()),
    )
    .unwrap();
    let out = crate::support::output(daytona.run_command(&example("hello"), tmp.path()).arg("--env").arg(&env_file));
    assert_eq!(out.ok()["roundTrip"], true);
    daytona.assert_no_sandboxes_left();
}

#[test]
fn a_kept_daytona_sandbox_is_reused_by_id_and_nothing_else_leaks() {
    let daytona = TestDaytona::start();
    let tmp = scratch();
    let first = daytona.run(&example("hello"), &["--keep"], tmp.path()).ok();
    let id = first["sandbox"].as_str().unwrap().to_string();
    assert_eq!(daytona.server.sandbox_ids(), vec![id.clone()]);

    let again = daytona
        .run(
            &fixture("probe"),
            &["--reuse", &id, "--payload", r#"{"mode":"exec","command":"cat hello.txt"}"#],
            tmp.path(),
        )
        .ok();
    assert!(again["stdout"].as_str().unwrap().starts_with("Hello, world!"), "{again}");
    // Failed runs clean up too.
    let failed = daytona.run(&fixture("probe"), &["--payload", r#"{"mode":"trap"}"#], tmp.path());
    assert_eq!(failed.code, 1);
    assert_eq!(daytona.server.sandbox_ids(), vec![id.clone()], "only the kept sandbox may remain");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let connector = daytona.connector().await;
        let listed = connector.list(&[("created-by".into(), "flue".into())]).await.unwrap();
        assert_eq!(listed.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(), vec![id.as_str()]);
        connector.delete(&id).await.unwrap();
        assert_eq!(connector.delete(&id).await.unwrap_err().kind, ErrorKind::NotFound);
    });
    daytona.assert_no_sandboxes_left();
}

#[test]
fn the_toolbox_url_is_fetched_when_the_sandbox_lacks_it() {
    let daytona = TestDaytona::start();
    daytona.faults().set_omit_toolbox_url(true);
    let tmp = scratch();
    assert_eq!(daytona.run(&example("hello"), &[], tmp.path()).ok()["roundTrip"], true);
    assert!(daytona.server.requests().iter().any(|r| r.uri.ends_with("/toolbox-proxy-url")));
}

#[test]
fn a_toolbox_outside_the_allowlist_is_refused() {
    let daytona = TestDaytona::start();
    // Daytona hands out a toolbox URL on another origin: the connector may
    // not follow it there (it is neither DAYTONA_API_URL nor *.daytona.io).
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    elsewhere.set_nonblocking(true).unwrap();
    daytona.faults().set_toolbox_url_override(Some(format!("http://{}/toolbox", elsewhere.local_addr().unwrap())));
    let tmp = scratch();
    let out = daytona.run(&example("hello"), &[], tmp.path());
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("not among the connector's allowed hosts"), "{}", out.stderr);
    assert!(elsewhere.accept().is_err(), "a request reached the disallowed host");
    daytona.assert_no_sandboxes_left();
}

async fn started(daytona: &TestDaytona) -> (std::sync::Arc<dyn Connector>, Session) {
    let connector = daytona.connector().await;
    let sandbox = connector.create(&Default::default()).await.unwrap();
    let session = Session::new(sandbox, None, EventLog::discard()).unwrap();
    session.write_file("probe.txt", b"data").await.unwrap();
    (connector, session)
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotent_calls_are_retried_through_5xx_429_and_dropped_connections() {
    let daytona = TestDaytona::start();
    let (connector, session) = started(&daytona).await;
    for (n503, n429, ndrop) in [(2, 0, 0), (0, 2, 0), (0, 0, 2), (1, 1, 1)] {
        daytona.faults().fail_next(n503, n429, ndrop);
        assert_eq!(session.read_file("probe.txt").await.unwrap(), b"data", "faults {n503}/{n429}/{ndrop}");
        assert!(session.exists("probe.txt").await.unwrap());
    }
    // Retries are bounded: a fault that outlasts them is a clear error.
    daytona.faults().fail_next(10, 0, 0);
    let err = session.stat("probe.txt").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable, "{err}");
    assert!(err.message.contains("503") && err.message.contains("after 4 attempts"), "{err}");
    daytona.faults().fail_next(0, 0, 0);
    connector.delete(session.sandbox().id()).await.unwrap();
    daytona.assert_no_sandboxes_left();
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_are_never_retried() {
    let daytona = TestDaytona::start();
    let (connector, session) = started(&daytona).await;
    let before = daytona.server.requests().iter().filter(|r| r.uri.ends_with("/process/execute")).count();
    daytona.faults().fail_next(1, 0, 0);
    let err = session.exec("echo once >> runs.txt", ExecOptions::default()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable, "{err}");
    let after = daytona.server.requests().iter().filter(|r| r.uri.ends_with("/process/execute")).count();
    assert_eq!(after - before, 1, "a non-idempotent call was sent more than once");
    connector.delete(session.sandbox().id()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn latency_slows_but_does_not_break() {
    let daytona = TestDaytona::start();
    daytona.faults().set_latency_ms(150);
    let (connector, session) = started(&daytona).await;
    let out = session.exec("echo slow-but-fine", ExecOptions::default()).await.unwrap();
    assert_eq!(out.stdout, "slow-but-fine\n");
    connector.delete(session.sandbox().id()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sandbox_that_dies_mid_call_fails_promptly_as_sandbox_died() {
    let daytona = TestDaytona::start();
    let (connector, session) = started(&daytona).await;
    daytona.faults().set_die_after_calls(Some(1));
    let started = Instant::now();
    let err = session.exec("sleep 1; echo never", ExecOptions::default()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::SandboxDied, "{err}");
    assert!(err.message.contains("error") && err.message.contains("crashed"), "{err}");
    // Later calls fail at once, without another round trip to the toolbox.
    let requests = daytona.server.requests().len();
    let again = session.read_file("probe.txt").await.unwrap_err();
    assert_eq!(again.kind, ErrorKind::SandboxDied);
    assert_eq!(daytona.server.requests().len(), requests);
    assert!(started.elapsed() < Duration::from_secs(60), "hang guard");
    connector.delete(session.sandbox().id()).await.unwrap();
    daytona.assert_no_sandboxes_left();
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_and_failed_starts() {
    let daytona = TestDaytona::start();
    let connector = daytona.connector().await;
    daytona.faults().set_start_polls(6);
    let sandbox = connector.create(&Default::default()).await.unwrap();
    let polls = daytona
        .server
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.uri == format!("/api/sandbox/{}", sandbox.id()))
        .count();
    assert!(polls >= 6, "polled {polls} times");
    connector.delete(sandbox.id()).await.unwrap();

    daytona.faults().set_start_polls(2);
    daytona.faults().set_fail_start(Some("image python:nope not found".into()));
    let Err(err) = connector
        .create(&flue::sandbox::CreateOptions { image: Some("python:nope".into()), ..Default::default() })
        .await
    else {
        panic!("a failed build created a sandbox");
    };
    assert!(
        err.message.contains("failed to start with status: build_failed, error reason: image python:nope not found"),
        "{err}"
    );
    // The half-created sandbox was not leaked.
    daytona.assert_no_sandboxes_left();
}

#[test]
fn an_unreachable_daytona_is_a_clear_error_not_a_hang() {
    let daytona = TestDaytona::start();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let tmp = scratch();
    let out = crate::support::output(
        daytona
            .run_command(&example("hello"), tmp.path())
            .env("DAYTONA_API_URL", format!("http://{closed}/api"))
            .env("DAYTONA_API_KEY", TEST_API_KEY),
    );
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("cannot reach Daytona") || out.stderr.contains("cannot connect"), "{}", out.stderr);
}

#[test]
fn conformance_and_add_commands_work_with_daytona() {
    let daytona = TestDaytona::start();
    let out = crate::support::output(
        daytona.flue().args(["conformance", "daytona", "--connectors"]).arg(daytona.connectors.path()),
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let all = CHECK_NAMES.len() + conformance::VOLUME_CHECK_NAMES.len();
    assert!(out.stdout.contains(&format!("{all} passed, 0 failed")), "{}", out.stdout);
    daytona.assert_no_sandboxes_left();

    let print = crate::support::output(crate::support::flue().args(["add", "daytona", "--print"]));
    assert_eq!(print.code, 0, "{}", print.stderr);
    assert!(print.stdout.contains("DAYTONA_API_KEY=    # required, secret"), "{}", print.stdout);
    assert!(print.stdout.contains("DAYTONA_API_URL=https://app.daytona.io/api"), "{}", print.stdout);

    let dir = scratch();
    let add = crate::support::output(crate::support::flue().args(["add", "daytona", "--connectors"]).arg(dir.path()));
    assert_eq!(add.code, 0, "{}", add.stderr);
    assert_eq!(
        std::fs::read(dir.path().join("daytona.wasm")).unwrap(),
        std::fs::read(crate::support::daytona_wasm()).unwrap()
    );
}

#[test]
fn the_connectors_own_unit_tests_pass() {
    // connectors/daytona is a guest crate outside this workspace; its pure
    // parts (multipart, RFC 3339, exec script) have unit tests that run natively.
    let out = crate::support::output(
        std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(["test", "--quiet"])
            .current_dir(crate::support::repo_root().join("connectors/daytona")),
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("test result: ok. 7 passed"), "{}", out.stdout);
}

#[test]
fn a_run_stopped_by_its_deadline_mid_call_still_deletes_its_daytona_sandbox() {
    let daytona = TestDaytona::start();
    let tmp = scratch();
    let payload = r#"{"mode":"exec","command":"sleep 30"}"#;
    let out = daytona.run(&fixture("probe"), &["--payload", payload, "--deadline", "3"], tmp.path());
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("deadline exceeded"), "{}", out.stderr);
    daytona.assert_no_sandboxes_left();
}

/// The host's HTTP capability, as a connector with Daytona's allowlist sees it.
fn capability(daytona: &TestDaytona, entries: &[&str]) -> flue::capability::http::HttpCapability {
    let config = std::collections::HashMap::from([("DAYTONA_API_URL".to_string(), daytona.server.api_url())]);
    let entries: Vec<String> = entries.iter().map(|e| e.to_string()).collect();
    let (policy, warnings) = flue::capability::allowed_hosts::AllowedHosts::parse(&entries, &config);
    assert!(warnings.is_empty(), "{warnings:?}");
    let secrets = flue::secrets::Secrets::from_pairs(vec![("DAYTONA_API_KEY".to_string(), TEST_API_KEY.to_string())]);
    flue::capability::http::HttpCapability::new("daytona", policy, secrets, Default::default()).unwrap()
}

fn get(url: String) -> flue::bindings::connector::flue::sandbox::http::Request {
    flue::bindings::connector::flue::sandbox::http::Request {
        method: "GET".into(),
        url,
        headers: vec![("Authorization".into(), "Bearer {{DAYTONA_API_KEY}}".into())],
        body: Vec::new(),
        timeout_ms: Some(10_000),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redirects_and_names_cannot_lead_a_connector_off_its_allowlist() {
    use flue::bindings::connector::flue::sandbox::http::HttpError;
    let daytona = TestDaytona::start();
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    elsewhere.set_nonblocking(true).unwrap();
    let off_list = format!("http://{}/steal", elsewhere.local_addr().unwrap());
    let http = capability(&daytona, &["{{DAYTONA_API_URL}}"]);

    // Allowed: the configured API, with the key filled in on the wire.
    let ok = http.send(get(format!("{}/sandbox", daytona.server.api_url()))).await.unwrap();
    assert_eq!(ok.status, 200);

    // A redirect from the allowed host to one that is not: refused at the hop.
    let redirect = format!("{}/redirect?to={off_list}", daytona.server.api_url());
    match http.send(get(redirect)).await {
        Err(HttpError::Denied(message)) => assert!(message.contains("redirect refused"), "{message}"),
        other => panic!("the redirect was followed: {other:?}"),
    }
    // Straight to a host off the list: refused before any connection.
    assert!(matches!(http.send(get(off_list)).await, Err(HttpError::Denied(_))));
    assert!(elsewhere.accept().is_err(), "a request reached the disallowed host");

    // A name on the list that resolves to loopback (SSRF): refused, because
    // no configured URL names it.
    let port = elsewhere.local_addr().unwrap().port();
    let by_name = capability(&daytona, &[&format!("http://localhost:{port}")]);
    match by_name.send(get(format!("http://localhost:{port}/"))).await {
        Err(HttpError::Transport(message)) => assert!(message.contains("private or loopback"), "{message}"),
        other => panic!("a name resolving to loopback was reached: {other:?}"),
    }
    assert!(elsewhere.accept().is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn create_sends_what_the_sdk_sends() {
    let daytona = TestDaytona::start();
    let connector = daytona.connector_with(&[("DAYTONA_TARGET", "eu")]).await;
    let options = flue::sandbox::CreateOptions {
        image: Some("python:3.12-slim".into()),
        env: vec![("FOO".into(), "bar".into())],
        labels: vec![("team".into(), "x".into())],
        name: Some("my-box".into()),
        auto_stop_minutes: Some(30),
        resources: Some(flue::sandbox::Resources { cpu: Some(2), memory_gib: Some(4), disk_gib: Some(8), gpu: None }),
        ..Default::default()
    };
    let sandbox = connector.create(&options).await.unwrap();
    let request =
        daytona.server.requests().into_iter().find(|r| r.method == "POST" && r.uri == "/api/sandbox").unwrap();
    let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(
        body,
        json!({
            "buildInfo": { "dockerfileContent": "FROM python:3.12-slim\n" },
            "env": { "FOO": "bar" },
            "labels": { "team": "x", "created-by": "flue" },
            "name": "my-box",
            "target": "eu",
            "autoStopInterval": 30,
            "cpu": 2, "memory": 4, "disk": 8,
        })
    );
    assert!(request.headers.iter().any(|(k, v)| k == "content-type" && v == "application/json"));
    connector.delete(sandbox.id()).await.unwrap();

    // Daytona sizes only image-built sandboxes: refused before anything is sent.
    let before = daytona.server.requests().len();
    let Err(err) =
        connector.create(&flue::sandbox::CreateOptions { resources: options.resources, ..Default::default() }).await
    else {
        panic!("resources without an image were accepted");
    };
    assert_eq!(err.kind, ErrorKind::InvalidInput, "{err}");
    assert_eq!(daytona.server.requests().len(), before);
    daytona.assert_no_sandboxes_left();
}

/// The SDK gives up on a 503 or 429 while it polls a starting sandbox; the
/// connector retries, and the run goes on.
#[test]
fn polling_a_creating_sandbox_rides_out_503_and_429() {
    let daytona = TestDaytona::start();
    daytona.faults().set_start_polls(3);
    daytona.faults().fail_next_polls(2, 1);
    let tmp = scratch();
    let out = daytona.run(&example("hello"), &[], tmp.path());
    let result = out.ok();
    assert!(result["readBack"].as_str().unwrap().starts_with("Hello"), "{result}");
    // Every injected fault was served (and ridden out).
    assert_eq!(daytona.faults().next_poll(), daytona_test_server::Injected::None, "the faults were not hit");
    daytona.assert_no_sandboxes_left();
}

/// Test server fidelity the SDK relies on: the normal error envelope for a
/// failed bulk upload, and `GET /sandbox` filtering by labels and showing
/// volumes; `flue sandboxes ls` reads the same labels.
#[test]
fn uploads_below_a_file_and_label_filters_answer_as_daytona_does() {
    let daytona = TestDaytona::start();
    let tmp = scratch();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let connector = daytona.connector().await;
        let sandbox = connector.create(&flue::sandbox::CreateOptions::default()).await.unwrap();
        sandbox.write_file("/home/daytona/plain", b"x").await.unwrap();
        let err = sandbox.write_file("/home/daytona/plain/below", b"y").await.unwrap_err();
        assert!(err.message.contains("failed to upload 1 file(s)"), "{err}");
        assert!(!err.message.contains("\"files\""), "a bare upload body leaked into the error: {err}");
        connector.delete(sandbox.id()).await.unwrap();
    });

    let kept = daytona.run(&example("hello"), &["--keep"], tmp.path()).ok();
    let id = kept["sandbox"].as_str().unwrap().to_string();
    let ls = |label: &str| {
        let out = crate::support::output(
            daytona
                .flue()
                .args(["sandboxes", "ls", "--sandbox", "daytona", "--label", label, "--connectors"])
                .arg(daytona.connectors.path()),
        );
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.stdout
    };
    let mine = ls("flue.keep=true");
    assert!(mine.lines().any(|l| l.contains(&id) && l.contains("kept")), "{mine}");
    assert!(!ls("flue.agent=someone-else").contains(&id));
    let body = crate::support::output(
        daytona
            .flue()
            .args(["sandboxes", "rm", &id, "--sandbox", "daytona", "--connectors"])
            .arg(daytona.connectors.path()),
    );
    assert_eq!(body.code, 0, "{}", body.stderr);
    daytona.assert_no_sandboxes_left();
}

/// Whole files far larger than a connector's memory (256 MiB) go through
/// the Daytona connector: the host carries `write_file` and `read_file` to
/// it in parts, so it never holds a whole file. Before, a 64 MiB
/// `write_file` made it run out of memory.
#[test]
fn whole_files_larger_than_a_connectors_memory_go_through_it_in_parts() {
    let daytona = TestDaytona::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let connector = daytona.connector().await;
        let sandbox = connector.create(&flue::sandbox::CreateOptions::default()).await.unwrap();
        for mib in [64usize, 256] {
            let data: Vec<u8> = (0..mib << 20).map(|i| (i % 251) as u8).collect();
            let path = format!("/home/daytona/whole-{mib}");
            sandbox.write_file(&path, &data).await.unwrap_or_else(|err| panic!("{mib} MiB: {err}"));
            let read = sandbox.read_file(&path, 512 << 20).await.unwrap_or_else(|err| panic!("{mib} MiB: {err}"));
            assert!(read == data, "{mib} MiB came back different ({} bytes)", read.len());
            // A bound below the file's size is kept, without reading it all.
            let err = sandbox.read_file(&path, 16 << 20).await.unwrap_err();
            assert_eq!(err.kind, ErrorKind::TooLarge, "{err}");
            assert!(err.message.contains("at most 16.0 MiB can be read at once"), "{err}");
        }
        // The connector is still there for small calls.
        sandbox.write_file("/home/daytona/small", b"small").await.unwrap();
        assert_eq!(sandbox.read_file("/home/daytona/small", 1 << 20).await.unwrap(), b"small");
        connector.delete(sandbox.id()).await.unwrap();
    });
}
