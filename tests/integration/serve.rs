//! `flue serve` and `flue dev` through real HTTP: the `flue` binary as the
//! server, reqwest as the client.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{fixture, flue, runtime, scratch};

/// A `flue serve`/`flue dev` process and its base URL.
pub(crate) struct Server {
    pub child: Child,
    pub url: String,
}

impl Server {
    pub fn start(command: &str, project: &Path, tmp: &Path, extra: &[&str]) -> Server {
        Server::spawn(Server::command(command, project, tmp, extra))
    }

    /// The command [`Server::start`] runs, to adjust before [`Server::spawn`].
    pub fn command(command: &str, project: &Path, tmp: &Path, extra: &[&str]) -> Command {
        let mut server = flue();
        server
            .arg(command)
            .arg(project)
            .args(["--listen", "127.0.0.1:0", "--isolation", "none"])
            .args(extra)
            .env("TMPDIR", tmp)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        server
    }

    /// Start `command` and wait for its "listening on" line.
    pub fn spawn(mut command: Command) -> Server {
        let mut child = command.spawn().expect("start flue serve");
        let mut first = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut first).unwrap();
        let url = first.split("listening on ").nth(1).expect("a URL line").trim().to_string();
        Server { child, url }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        self.url.trim_start_matches("http://").to_string()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    pub fn wait(mut self) -> i32 {
        let status = self.child.wait().unwrap();
        status.code().unwrap_or(-1)
    }

    /// Its exit code, if it exits within `guard` (a hang guard, not a
    /// speed check); `None` if it is still running then.
    pub fn exits_within(&mut self, guard: Duration) -> Option<i32> {
        let started = std::time::Instant::now();
        while started.elapsed() < guard {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A project with the probe agent as `probe` (a webhook) and `hidden`
/// (not one).
pub(crate) fn project() -> tempfile::TempDir {
    let dir = scratch();
    std::fs::create_dir(dir.path().join("agents")).unwrap();
    for name in ["probe", "hidden"] {
        std::fs::copy(fixture("probe"), dir.path().join("agents").join(format!("{name}.wasm"))).unwrap();
    }
    std::fs::write(dir.path().join("flue.toml"), "[agents.probe]\nwebhook = true\ndeadline-secs = 30\n").unwrap();
    dir
}

/// A response body as JSON.
pub(crate) trait BodyJson {
    async fn body_json(self) -> Value;
}

impl BodyJson for reqwest::Response {
    async fn body_json(self) -> Value {
        let bytes = self.bytes().await.expect("a body");
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|err| panic!("not JSON ({err}): {}", String::from_utf8_lossy(&bytes)))
    }
}

pub(crate) fn local_sandboxes(tmp: &Path) -> usize {
    std::fs::read_dir(tmp.join("flue-local")).map(|d| d.flatten().filter(|e| e.path().is_dir()).count()).unwrap_or(0)
}

#[test]
fn webhooks_answer_sync_streamed_and_in_the_background_with_clear_errors() {
    let (project, tmp) = (project(), scratch());
    let server = Server::start("serve", project.path(), tmp.path(), &["--max-body-kib", "64"]);
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", server.url);
    runtime().block_on(async {
        // Sync.
        let body = json!({"mode": "exec", "command": "echo hi"}).to_string();
        let response = client.post(url("/agents/probe/t1")).body(body.clone()).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let run_id = response.headers()["x-flue-run-id"].to_str().unwrap().to_string();
        let answer: Value = response.body_json().await;
        assert_eq!(answer["result"]["stdout"], "hi\n", "{answer}");
        // The record, with its events.
        let record: Value = client.get(url(&format!("/runs/{run_id}"))).send().await.unwrap().body_json().await;
        assert_eq!(record["status"], "succeeded", "{record}");
        assert!(record["events"].as_array().unwrap().iter().any(|e| e["op"] == "exec"), "{record}");

        // Server-sent events: the run's events in order, then the result.
        let response = client
            .post(url("/agents/probe/t2"))
            .header("accept", "text/event-stream")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let text = response.text().await.unwrap();
        let kinds: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
        assert_eq!(kinds.last(), Some(&"result"), "{text}");
        let first_event = text.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
        assert_eq!(serde_json::from_str::<Value>(first_event).unwrap()["type"], "run-started", "{text}");
        let started = text.find("run-started").unwrap();
        let finished = text.find("run-finished").unwrap();
        assert!(started < finished && finished < text.find("event: result").unwrap());

        // In the background: 202, then poll the record until it is done.
        let response =
            client.post(url("/agents/probe/t3")).header("x-webhook", "true").body(body).send().await.unwrap();
        assert_eq!(response.status(), 202);
        let run_id = response.body_json().await["runId"].as_str().unwrap().to_string();
        let mut record = Value::Null;
        for _ in 0..200 {
            record = client.get(url(&format!("/runs/{run_id}"))).send().await.unwrap().body_json().await;
            if record["status"] == "succeeded" || record["status"] == "failed" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(record["status"], "succeeded", "{record}");
        assert_eq!(record["result"]["stdout"], "hi\n");

        // Errors.
        let status = |path: &'static str, body: String| {
            let request = client.post(url(path)).body(body);
            async move { request.send().await.unwrap().status().as_u16() }
        };
        assert_eq!(status("/agents/nope/x", "{}".into()).await, 404);
        assert_eq!(status("/agents/hidden/x", "{}".into()).await, 404, "an agent that did not opt in");
        assert_eq!(status("/agents/probe/x", "{not json".into()).await, 400);
        assert_eq!(status("/agents/probe/x", format!("\"{}\"", "x".repeat(100_000))).await, 413);
        let failed = client.post(url("/agents/probe/x")).body(r#"{"mode":"fail"}"#).send().await.unwrap();
        assert_eq!(failed.status(), 500);
        assert!(failed.body_json().await["error"]["message"].as_str().unwrap().contains("failed"));
        assert_eq!(client.get(url("/runs/run_nope")).send().await.unwrap().status(), 404);
        assert_eq!(client.get(url("/healthz")).send().await.unwrap().status(), 200);
        let metrics = client.get(url("/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(metrics.contains("flue_runs_finished_total{outcome=\"succeeded\"} 3"), "{metrics}");
        assert!(metrics.contains("flue_runs_finished_total{outcome=\"failed\"} 1"), "{metrics}");
    });
    assert_eq!(local_sandboxes(tmp.path()), 0, "runs leaked sandboxes");
}

#[test]
fn a_token_is_required_off_loopback_and_checked_when_set() {
    let (project, tmp) = (project(), scratch());
    let refused = crate::support::output(flue().args(["serve"]).arg(project.path()).args(["--listen", "0.0.0.0:0"]));
    assert_eq!(refused.code, 2);
    assert!(refused.stderr.contains("needs a bearer token"), "{}", refused.stderr);
    let server = Server::start("serve", project.path(), tmp.path(), &["--token", "s3cret-token-of-some-length"]);
    runtime().block_on(async {
        let client = reqwest::Client::new();
        let post = |token: Option<&str>| {
            let mut request =
                client.post(format!("{}/agents/probe/x", server.url)).body(r#"{"mode":"exec","command":"true"}"#);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            async move { request.send().await.unwrap().status().as_u16() }
        };
        assert_eq!(post(None).await, 401);
        assert_eq!(post(Some("wrong")).await, 401);
        assert_eq!(post(Some("s3cret-token-of-some-length")).await, 200);
    });
}

#[test]
fn a_full_queue_answers_429_with_retry_after() {
    let (project, tmp) = (project(), scratch());
    let server = Server::start("serve", project.path(), tmp.path(), &["--max-concurrent", "1", "--queue", "0"]);
    runtime().block_on(async {
        let client = reqwest::Client::new();
        let url = format!("{}/agents/probe/x", server.url);
        let slow = client.post(&url).header("x-webhook", "true").body(r#"{"mode":"exec","command":"sleep 3"}"#);
        assert_eq!(slow.send().await.unwrap().status(), 202);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let refused = client.post(&url).body(r#"{"mode":"exec","command":"true"}"#).send().await.unwrap();
        assert_eq!(refused.status(), 429);
        assert_eq!(refused.headers()["retry-after"], "1");
    });
}

#[test]
fn shutdown_lets_runs_finish_keeps_their_results_across_a_restart_and_leaks_no_sandbox() {
    let (project, tmp) = (project(), scratch());
    let server = Server::start("serve", project.path(), tmp.path(), &[]);
    let client = reqwest::Client::new();
    let runtime = runtime();
    let url = server.url.clone();
    let (finishes, stopped) = runtime.block_on(async {
        let start = |command: &str| {
            let request = client
                .post(format!("{url}/agents/probe/x"))
                .header("x-webhook", "true")
                .body(json!({"mode": "exec", "command": command}).to_string());
            async move { request.send().await.unwrap().body_json().await["runId"].as_str().unwrap().to_string() }
        };
        (start("sleep 1; echo finished").await, start("sleep 1; echo also").await)
    });
    std::thread::sleep(Duration::from_millis(300));
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait(), 0, "the server did not stop cleanly");
    assert_eq!(local_sandboxes(tmp.path()), 0, "shutdown leaked sandboxes");

    // A new server on the same project (and run store) still has them.
    let server = Server::start("serve", project.path(), tmp.path(), &[]);
    runtime.block_on(async {
        for (run_id, said) in [(finishes, "finished\n"), (stopped, "also\n")] {
            let record: Value =
                client.get(format!("{}/runs/{run_id}", server.url)).send().await.unwrap().body_json().await;
            assert_eq!(record["status"], "succeeded", "{record}");
            assert_eq!(record["result"]["stdout"], said);
        }
    });
}

#[test]
fn flue_dev_rebuilds_an_agent_whose_source_changed() {
    let (project, tmp) = (scratch(), scratch());
    let agent = project.path().join("agents/greeter");
    std::fs::create_dir_all(&agent).unwrap();
    let source = |greeting: &str| {
        format!(
            "from wit_world import exports\n\nclass Run(exports.Run):\n    def run(self, context) -> str:\n        return '\"{greeting}\"'\n"
        )
    };
    std::fs::write(agent.join("app.py"), source("first")).unwrap();
    std::fs::write(project.path().join("flue.toml"), "[agents.greeter]\nwebhook = true\n").unwrap();
    let server = Server::start("dev", project.path(), tmp.path(), &[]);
    runtime().block_on(async {
        let client = reqwest::Client::new();
        let ask = || {
            let request = client.post(format!("{}/agents/greeter/x", server.url)).body("{}");
            async move { request.send().await.unwrap().body_json().await }
        };
        assert_eq!(ask().await["result"], "first");
        std::fs::write(agent.join("app.py"), source("second")).unwrap();
        assert_eq!(ask().await["result"], "second", "flue dev did not pick up the edit");
    });
}

#[test]
fn runs_past_the_grace_period_are_stopped_and_their_sandboxes_deleted() {
    let (project, tmp) = (project(), scratch());
    let server = Server::start("serve", project.path(), tmp.path(), &["--grace", "1"]);
    let client = reqwest::Client::new();
    let runtime = runtime();
    let run_id = runtime.block_on(async {
        let request = client
            .post(format!("{}/agents/probe/x", server.url))
            .header("x-webhook", "true")
            .body(json!({"mode": "exec", "command": "touch started; sleep 60"}).to_string());
        request.send().await.unwrap().body_json().await["runId"].as_str().unwrap().to_string()
    });
    std::thread::sleep(Duration::from_millis(800));
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait(), 0);
    assert_eq!(local_sandboxes(tmp.path()), 0, "the stopped run's sandbox was not deleted");
    let server = Server::start("serve", project.path(), tmp.path(), &[]);
    runtime.block_on(async {
        let record = client.get(format!("{}/runs/{run_id}", server.url)).send().await.unwrap().body_json().await;
        assert_eq!(record["status"], "failed", "{record}");
        assert!(record["error"]["message"].as_str().unwrap().contains("grace period ended"), "{record}");
        assert_eq!(record["error"]["kind"], "shutdown", "{record}");
    });
}

/// The pooling allocator where the machine grants its reservations, and
/// on-demand allocation (with a warning) where it does not: here an address
/// space limit refuses the pool's reservation.
#[test]
fn the_pooling_allocator_falls_back_when_its_reservation_is_refused() {
    let (project, tmp) = (project(), scratch());
    let health = |server: &Server| {
        runtime().block_on(async { reqwest::get(format!("{}/healthz", server.url)).await.unwrap().body_json().await })
    };
    let default = Server::start("serve", project.path(), tmp.path(), &[]);
    assert_eq!(health(&default)["allocator"], "on-demand");
    drop(default);
    let pooled = Server::start("serve", project.path(), tmp.path(), &["--allocator", "pooling"]);
    assert_eq!(health(&pooled)["allocator"], "pooling");
    drop(pooled);

    let binary = std::path::PathBuf::from(env!("CARGO_BIN_EXE_flue"));
    let stderr_file = tmp.path().join("serve.stderr");
    let mut child = std::process::Command::new("bash")
        .arg("-c")
        .arg("ulimit -v 16777216; exec \"$0\" serve \"$1\" --listen 127.0.0.1:0 --isolation none --allocator pooling 2>\"$2\"")
        .arg(&binary)
        .arg(project.path())
        .arg(&stderr_file)
        .env("TMPDIR", tmp.path())
        .env("FLUE_CACHE_DIR", crate::support::cache_dir())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut first).unwrap();
    let server = Server { url: first.split("listening on ").nth(1).expect("a URL line").trim().to_string(), child };
    assert_eq!(health(&server)["allocator"], "on-demand");
    let answer = runtime().block_on(async {
        let client = reqwest::Client::new();
        let request =
            client.post(format!("{}/agents/probe/x", server.url)).body(r#"{"mode":"exec","command":"echo ok"}"#);
        request.send().await.unwrap().body_json().await
    });
    assert_eq!(answer["result"]["stdout"], "ok\n", "{answer}");
    let warned = std::fs::read_to_string(&stderr_file).unwrap();
    assert!(warned.contains("the pooling allocator is not available here"), "{warned}");
}

/// What a server writes on stderr, line by line, as it comes.
pub(crate) struct StderrLines {
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl StderrLines {
    /// Start `command` with its stderr collected.
    pub fn spawn(mut command: Command) -> (Server, StderrLines) {
        command.stderr(Stdio::piped());
        let mut child = command.spawn().expect("start flue serve");
        let stderr = child.stderr.take().unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let mut first = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut first).unwrap();
        let url = first.split("listening on ").nth(1).expect("a URL line").trim().to_string();
        (Server { child, url }, StderrLines { lines })
    }

    /// The first line (from line `from` on) that `matches`, waiting for it
    /// up to a hang guard; its index and text.
    pub fn wait_for(&self, from: usize, matches: impl Fn(&str) -> bool) -> (usize, String) {
        let started = std::time::Instant::now();
        loop {
            {
                let lines = self.lines.lock().unwrap();
                if let Some((i, line)) = lines.iter().enumerate().skip(from).find(|(_, l)| matches(l)) {
                    return (i, line.clone());
                }
                assert!(started.elapsed() < Duration::from_secs(90), "no such line in:\n{}", lines.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every line so far.
    pub fn all(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// How many lines so far.
    pub fn count(&self) -> usize {
        self.lines.lock().unwrap().len()
    }
}

#[test]
fn every_answer_is_json_with_one_error_shape_and_posts_carry_the_run_id() {
    let (project, tmp) = (project(), scratch());
    let token = "a-token-long-enough-to-pass";
    let server = Server::start("serve", project.path(), tmp.path(), &["--token", token, "--max-body-kib", "1"]);
    runtime().block_on(async {
        let client = reqwest::Client::new();
        let url = |path: &str| format!("{}{path}", server.url);
        let check = |response: reqwest::Response, status: u16, kind: &'static str, run_id: bool| async move {
            assert_eq!(response.status(), status);
            assert_eq!(response.headers()["content-type"], "application/json", "{status}");
            assert_eq!(response.headers().contains_key("x-flue-run-id"), run_id, "{status} {kind}");
            let body = response.body_json().await;
            assert_eq!(body["error"]["kind"], kind, "{body}");
            assert!(body["error"]["message"].as_str().is_some_and(|m| m.len() > 10), "{body}");
        };
        let unauthorized = client.post(url("/agents/probe/x")).body("{}").send().await.unwrap();
        check(unauthorized, 401, "unauthorized", true).await;
        let too_big = client.post(url("/agents/probe/x")).bearer_auth(token).body(format!("\"{}\"", "x".repeat(4096)));
        check(too_big.send().await.unwrap(), 413, "body-too-large", true).await;
        let unknown = client.post(url("/agents/nope/x")).bearer_auth(token).body("{}").send().await.unwrap();
        check(unknown, 404, "unknown-agent", true).await;
        let nowhere = client.get(url("/nowhere")).bearer_auth(token).send().await.unwrap();
        check(nowhere, 404, "not-found", false).await;
        let wrong_method = client.delete(url("/runs/run_x")).bearer_auth(token).send().await.unwrap();
        check(wrong_method, 405, "method-not-allowed", false).await;
        let get_agent = client.get(url("/agents/probe/x")).bearer_auth(token).send().await.unwrap();
        check(get_agent, 405, "method-not-allowed", false).await;
        let no_run = client.get(url("/runs/run_nope")).bearer_auth(token).send().await.unwrap();
        check(no_run, 404, "not-found", false).await;
    });
}

#[test]
fn run_failures_keep_their_kind_in_the_answer_and_the_store() {
    let (project, tmp) = (project(), scratch());
    let agents = project.path().join("agents");
    for name in ["slow", "remote"] {
        std::fs::copy(fixture("probe"), agents.join(format!("{name}.wasm"))).unwrap();
    }
    std::fs::write(
        project.path().join("flue.toml"),
        "[agents.probe]\nwebhook = true\n[agents.slow]\nwebhook = true\ndeadline-secs = 1\n\
         [agents.remote]\nwebhook = true\nsandbox = \"daytona\"\n",
    )
    .unwrap();
    // Daytona, down: its connector pointed at a port nobody listens on.
    let connectors = scratch();
    std::fs::copy(crate::support::daytona_wasm(), connectors.path().join("daytona.wasm")).unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut command = Server::command("serve", project.path(), tmp.path(), &["--connectors"]);
    command
        .arg(connectors.path())
        .env("DAYTONA_API_URL", format!("http://{closed}/api"))
        .env("DAYTONA_API_KEY", crate::support::TEST_API_KEY);
    let server = Server::spawn(command);
    runtime().block_on(async {
        let client = reqwest::Client::new();
        let post = |agent: &str, body: Value| {
            client.post(format!("{}/agents/{agent}/x", server.url)).body(body.to_string()).send()
        };
        for (agent, payload, status, kind) in [
            ("probe", json!("{not json"), 400, "bad-payload"),
            ("probe", json!({"mode": "fail"}), 500, "agent-failed"),
            ("slow", json!({"mode": "exec", "command": "sleep 30"}), 504, "deadline-exceeded"),
            ("remote", json!({"mode": "exec", "command": "true"}), 502, "sandbox-unavailable"),
        ] {
            let request = if kind == "bad-payload" {
                client.post(format!("{}/agents/{agent}/x", server.url)).body("{not json").send().await.unwrap()
            } else {
                post(agent, payload).await.unwrap()
            };
            assert_eq!(request.status(), status, "{kind}");
            let run_id = request.headers()["x-flue-run-id"].to_str().unwrap().to_string();
            let answer = request.body_json().await;
            assert_eq!(answer["error"]["kind"], kind, "{answer}");
            if kind != "bad-payload" {
                let record =
                    client.get(format!("{}/runs/{run_id}", server.url)).send().await.unwrap().body_json().await;
                assert_eq!(record["status"], "failed", "{record}");
                assert_eq!(record["error"]["kind"], kind, "{record}");
                assert_eq!(record["error"]["message"], answer["error"]["message"], "{record}");
            }
        }
    });
}

#[test]
fn a_run_store_from_before_error_kinds_is_migrated() {
    let (project, tmp, store_dir) = (project(), scratch(), scratch());
    let store = store_dir.path().join("runs.sqlite");
    let old = rusqlite::Connection::open(&store).unwrap();
    old.execute_batch(
        "CREATE TABLE runs (
             id TEXT PRIMARY KEY, agent TEXT NOT NULL, invocation TEXT NOT NULL, status TEXT NOT NULL,
             result TEXT, error TEXT, events TEXT, created_ms INTEGER NOT NULL, finished_ms INTEGER);
         INSERT INTO runs VALUES ('run_old', 'probe', 'x', 'failed', NULL, 'it broke', '[]', 1, 2);",
    )
    .unwrap();
    drop(old);
    let store_arg = store.display().to_string();
    let server = Server::start("serve", project.path(), tmp.path(), &["--store", &store_arg]);
    runtime().block_on(async {
        let client = reqwest::Client::new();
        let record = client.get(format!("{}/runs/run_old", server.url)).send().await.unwrap().body_json().await;
        assert_eq!(record["error"], json!({"kind": "unknown", "message": "it broke"}), "{record}");
        let failed = client.post(format!("{}/agents/probe/x", server.url)).body(r#"{"mode":"fail"}"#).send().await;
        let run_id = failed.unwrap().headers()["x-flue-run-id"].to_str().unwrap().to_string();
        let record = client.get(format!("{}/runs/{run_id}", server.url)).send().await.unwrap().body_json().await;
        assert_eq!(record["error"]["kind"], "agent-failed", "{record}");
    });
}

#[test]
fn events_show_every_request_and_run_and_a_build_failure_answers_a_summary_without_server_paths() {
    let (project, tmp) = (project(), scratch());
    let broken = project.path().join("agents/broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("app.py"), "from wit_world import exports\n\nclass Run(exports.Run:\n    pass\n")
        .unwrap();
    std::fs::write(
        project.path().join("flue.toml"),
        "[agents.probe]\nwebhook = true\n[agents.broken]\nwebhook = true\n",
    )
    .unwrap();
    let mut command = Server::command("dev", project.path(), tmp.path(), &[]);
    command.args(["--events", "json"]);
    let (server, stderr) = StderrLines::spawn(command);
    runtime().block_on(async {
        let client = reqwest::Client::new();
        let ok = client.post(format!("{}/agents/probe/x", server.url)).body(r#"{"mode":"exec","command":"true"}"#);
        let ok = ok.send().await.unwrap();
        let run_id = ok.headers()["x-flue-run-id"].to_str().unwrap().to_string();
        let line = |text: &str| serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
        let (_, request) = stderr.wait_for(0, |l| line(l)["type"] == "request" && line(l)["runId"] == run_id);
        let request = line(&request);
        assert_eq!((request["method"].as_str(), request["path"].as_str()), (Some("POST"), Some("/agents/probe/x")));
        assert_eq!(request["status"], 200);
        stderr.wait_for(0, |l| line(l)["type"] == "run-started" && line(l)["runId"] == run_id);
        stderr.wait_for(0, |l| line(l)["type"] == "run-finished" && line(l)["outcome"] == "succeeded");

        let failed = client.post(format!("{}/agents/broken/x", server.url)).body("{}").send().await.unwrap();
        assert_eq!(failed.status(), 500);
        let answer = failed.body_json().await;
        assert_eq!(answer["error"]["kind"], "build-failed", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("agent broken does not build: "), "{message}");
        assert!(message.contains("rror"), "the first error: {message}");
        let project_dir = project.path().canonicalize().unwrap().display().to_string();
        assert!(!message.contains(&project_dir) && !message.contains(env!("CARGO_TARGET_TMPDIR")), "{message}");
        assert!(message.len() < 600, "a summary, not the log: {message}");
        // The whole output went to the server's events.
        let (_, build) = stderr.wait_for(0, |l| line(l)["type"] == "build" && line(l)["phase"] == "failed");
        assert!(line(&build)["log"].as_str().unwrap().len() > message.len(), "{build}");
    });
}

#[test]
fn text_events_show_requests_and_runs() {
    let (project, tmp) = (project(), scratch());
    let (server, stderr) = StderrLines::spawn(Server::command("serve", project.path(), tmp.path(), &[]));
    runtime().block_on(async {
        let request = reqwest::Client::new().post(format!("{}/agents/probe/x", server.url)).body(r#"{"mode":"fail"}"#);
        assert_eq!(request.send().await.unwrap().status(), 500);
    });
    stderr.wait_for(0, |l| l.starts_with("POST /agents/probe/x 500 run_"));
    stderr.wait_for(0, |l| l.starts_with("run run_") && l.contains("probe failed in") && l.contains("agent-failed"));
}

#[test]
fn flue_dev_says_at_once_when_its_configuration_breaks_and_answers_503_until_it_is_fixed() {
    let (project, tmp) = (project(), scratch());
    let env_file = project.path().join("dev.env");
    std::fs::write(&env_file, "SOME_SETTING=1\n").unwrap();
    let env_arg = env_file.display().to_string();
    let (server, stderr) = StderrLines::spawn(Server::command("dev", project.path(), tmp.path(), &["--env", &env_arg]));
    let manifest = project.path().join("flue.toml");
    let good = std::fs::read_to_string(&manifest).unwrap();
    let post = || {
        runtime().block_on(async {
            let request = reqwest::Client::new()
                .post(format!("{}/agents/probe/x", server.url))
                .body(r#"{"mode":"exec","command":"true"}"#);
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.body_json().await)
        })
    };
    assert_eq!(post().0, 200);
    for (file, broken, restore) in [
        (&manifest, "[agents.probe\nwebhook = true\n", good.as_str()),
        (&env_file, "this line is not an entry\n", "SOME_SETTING=1\n"),
    ] {
        let from = stderr.count();
        std::fs::write(file, broken).unwrap();
        // Said on the terminal without any request.
        let name = file.file_name().unwrap().to_str().unwrap();
        let (at, said) = stderr.wait_for(from, |l| l.contains("configuration is broken"));
        stderr.wait_for(at, |l| l.contains(name));
        assert!(stderr.count() > at, "{said}");
        let (status, answer) = post();
        assert_eq!(status, 503, "{answer}");
        assert_eq!(answer["error"]["kind"], "config-error", "{answer}");
        assert!(answer["error"]["message"].as_str().unwrap().contains(name), "{answer}");
        std::fs::write(file, restore).unwrap();
        stderr.wait_for(at, |l| l.contains("configuration is fixed"));
        assert_eq!(post().0, 200, "{}", stderr.all());
    }
}

#[test]
fn retention_never_deletes_a_queued_or_running_run() {
    let (project, tmp) = (project(), scratch());
    let server = Server::start(
        "serve",
        project.path(),
        tmp.path(),
        &["--retention", "2", "--max-concurrent", "2", "--queue", "20", "--grace", "0"],
    );
    runtime().block_on(async {
        let client = reqwest::Client::new();
        let mut runs = Vec::new();
        for i in 0..10 {
            let request = client
                .post(format!("{}/agents/probe/r{i}", server.url))
                .header("x-webhook", "true")
                .body(json!({"mode": "exec", "command": "sleep 60"}).to_string());
            runs.push(request.send().await.unwrap().body_json().await["runId"].as_str().unwrap().to_string());
        }
        for run_id in &runs {
            let response = client.get(format!("{}/runs/{run_id}", server.url)).send().await.unwrap();
            assert_eq!(response.status(), 200, "{run_id} was deleted while queued or running");
            let status = response.body_json().await["status"].clone();
            assert!(status == "queued" || status == "running", "{status}");
        }
    });
}

#[test]
fn a_second_signal_during_the_drain_exits_at_once_saying_what_may_be_left() {
    let (project, tmp) = (project(), scratch());
    let (mut server, stderr) =
        StderrLines::spawn(Server::command("serve", project.path(), tmp.path(), &["--grace", "3600"]));
    runtime().block_on(async {
        let client = reqwest::Client::new();
        let request = client
            .post(format!("{}/agents/probe/x", server.url))
            .header("x-webhook", "true")
            .body(json!({"mode": "exec", "command": "sleep 600"}).to_string());
        let run_id = request.send().await.unwrap().body_json().await["runId"].as_str().unwrap().to_string();
        loop {
            let record = client.get(format!("{}/runs/{run_id}", server.url)).send().await.unwrap().body_json().await;
            if record["status"] == "running" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    server.signal(libc::SIGTERM);
    let (at, _) = stderr.wait_for(0, |l| l.contains("letting runs in flight finish"));
    server.signal(libc::SIGTERM);
    assert_eq!(server.exits_within(Duration::from_secs(90)), Some(143), "{}", stderr.all());
    let (_, said) = stderr.wait_for(at, |l| l.contains("exiting at once"));
    assert!(said.contains("1 run(s) were still going") && said.contains("flue sandboxes gc"), "{said}");
}

/// A project stands alone: `flue add` installs into its `connectors/`
/// (from the source built into flue, outside a checkout), and `flue serve`
/// started from anywhere uses the project's connectors and `.env`.
#[test]
fn a_project_stands_alone_with_its_own_connectors_and_env() {
    let daytona = crate::support::TestDaytona::start();
    let project = project();
    std::fs::write(
        project.path().join("flue.toml"),
        "[agents.probe]\nwebhook = true\ndeadline-secs = 60\nsandbox = \"daytona\"\n",
    )
    .unwrap();
    std::fs::write(
        project.path().join(".env"),
        format!("DAYTONA_API_URL={}\nDAYTONA_API_KEY={}\n", daytona.server.api_url(), crate::support::TEST_API_KEY),
    )
    .unwrap();
    let checkout_connectors = crate::support::repo_root().join("connectors");
    let before = std::fs::read_dir(&checkout_connectors).unwrap().count();

    // `flue add` in the project, outside any flue checkout.
    let added = crate::support::output(flue().args(["add", "daytona"]).current_dir(project.path()));
    assert_eq!(added.code, 0, "{}", added.stderr);
    let installed = project.path().join("connectors/daytona.wasm");
    assert!(installed.is_file(), "{}", added.stdout);
    assert_eq!(std::fs::read_dir(&checkout_connectors).unwrap().count(), before, "flue add wrote into flue's tree");

    // Served from /, the agent runs on Daytona with the project's settings.
    let tmp = scratch();
    let mut command = Server::command("serve", project.path(), tmp.path(), &[]);
    command.current_dir("/").env_remove("FLUE_CONNECTORS");
    let server = Server::spawn(command);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (status, body) = rt.block_on(async {
        let response = reqwest::Client::new()
            .post(format!("{}/agents/probe/standalone", server.url))
            .header("content-type", "application/json")
            .body(json!({"mode": "exec", "command": "pwd"}).to_string())
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.body_json().await)
    });
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["stdout"], "/home/daytona\n", "{body}");
    daytona.assert_no_sandboxes_left();
}

/// An agent's own declaration (a `flue:agent` section in its component)
/// serves it as a webhook with no `flue.toml` entry, `flue.toml` overrides
/// it key by key, and a declaration that is not one refuses that agent only,
/// saying why.
#[test]
fn an_agent_declares_itself_and_flue_toml_overrides_it() {
    let (project, tmp) = (scratch(), scratch());
    let agents = project.path().join("agents");
    std::fs::create_dir(&agents).unwrap();
    let probe = std::fs::read(fixture("probe")).unwrap();
    let with_section = |payload: &str| {
        let name = b"flue:agent";
        let mut bytes = probe.clone();
        bytes.extend([0, (1 + name.len() + payload.len()) as u8, name.len() as u8]);
        bytes.extend_from_slice(name);
        bytes.extend_from_slice(payload.as_bytes());
        bytes
    };
    std::fs::write(agents.join("declared.wasm"), with_section(r#"{"webhook": true, "description": "Echoes"}"#))
        .unwrap();
    std::fs::write(agents.join("switched-off.wasm"), with_section(r#"{"webhook": true}"#)).unwrap();
    std::fs::write(agents.join("garbled.wasm"), with_section(r#"{"webhok": true}"#)).unwrap();
    std::fs::write(agents.join("too-long.wasm"), with_section(r#"{"webhook": true, "deadline-secs": 99999999}"#))
        .unwrap();
    std::fs::write(
        project.path().join("flue.toml"),
        "[agents.switched-off]\nwebhook = false\n[agents.garbled]\nwebhook = true\n",
    )
    .unwrap();
    let server = Server::start("serve", project.path(), tmp.path(), &[]);
    let client = reqwest::Client::new();
    runtime().block_on(async {
        let listed: Value = client.get(format!("{}/agents", server.url)).send().await.unwrap().body_json().await;
        assert_eq!(listed["agents"].as_array().unwrap().len(), 1, "{listed}");
        assert_eq!(
            (&listed["agents"][0]["name"], &listed["agents"][0]["description"]),
            (&json!("declared"), &json!("Echoes"))
        );
        let post = |name: &str| {
            let request = client
                .post(format!("{}/agents/{name}/x", server.url))
                .body(json!({"mode": "exec", "command": "echo hi"}).to_string());
            async move {
                let response = request.send().await.unwrap();
                (response.status().as_u16(), response.body_json().await)
            }
        };
        let (status, answer) = post("declared").await;
        assert_eq!((status, &answer["result"]["stdout"]), (200, &json!("hi\n")), "{answer}");
        let (status, answer) = post("switched-off").await;
        assert_eq!(status, 404, "flue.toml's webhook = false did not win: {answer}");
        let (status, answer) = post("garbled").await;
        assert!(status >= 400 && answer["error"]["message"].to_string().contains("webhok"), "{status} {answer}");
        let (status, answer) = post("too-long").await;
        assert_eq!(status, 404, "an out-of-range declaration is refused: {answer}");
    });
}
