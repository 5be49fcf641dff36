//! `flue serve` and `flue dev` against hostile clients and hostile inputs:
//! raw TCP sockets that send half a request or never read, bursts, foreign
//! host names and cross-site browsers, out-of-range numbers, symbolic links
//! out of the project, a run that panics inside flue, bodies that together
//! would fill memory, malformed requests, and an agent whose build never ends.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::serve::{BodyJson, Server, local_sandboxes, project};
use crate::support::{fixture, flue, runtime, scratch};

/// Long enough for anything that is going to happen; past it the test fails
/// as hung (a guard, not a speed check).
const GUARD: Duration = Duration::from_secs(90);

/// Start `flue serve` with `args` and expect a refusal before it listens:
/// its exit code and stderr.
fn refused(project: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut command = flue();
    command.arg("serve").arg(project).args(["--isolation", "none"]).args(args);
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    // Its first words on stdout, or nothing once it exits.
    let mut first = [0u8; 256];
    let n = stdout.read(&mut first).unwrap_or(0);
    let said = String::from_utf8_lossy(&first[..n]).to_string();
    if said.contains("listening") {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{args:?} {env:?} was accepted: {said}");
    }
    let code = child.wait().unwrap().code().unwrap_or(-1);
    (code, errors.join().unwrap())
}

/// Send `request` on a fresh connection and read the answer to the end.
fn raw(addr: &str, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(GUARD)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("the server answers (and closes) in time");
    String::from_utf8_lossy(&answer).to_string()
}

/// A `Connection: close` request with `headers` and a JSON body.
fn request(method: &str, path: &str, host: &str, headers: &[&str], body: &str) -> String {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for header in headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    text
}

/// An answer's status code.
fn status(answer: &str) -> u16 {
    answer.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status line: {answer:?}"))
}

/// An answer's body as JSON.
fn body(answer: &str) -> Value {
    let text = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    serde_json::from_str(text).unwrap_or_else(|err| panic!("not JSON ({err}): {answer}"))
}

/// One line of `/metrics`, e.g. `flue_runs_started_total 3`.
fn metric(server: &Server, name: &str) -> String {
    let text =
        runtime().block_on(async { reqwest::get(format!("{}/metrics", server.url)).await.unwrap().text().await });
    let text = text.unwrap();
    text.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in:\n{text}")).to_string()
}

/// `command` with its open-file limit (`ulimit -n`) set to `limit`.
fn with_open_file_limit(command: &Command, limit: u64) -> Command {
    let mut bash = Command::new("bash");
    bash.arg("-c").arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\"")).arg(command.get_program());
    bash.args(command.get_args()).env_clear().stdout(Stdio::piped());
    for (name, value) in command.get_envs() {
        if let Some(value) = value {
            bash.env(name, value);
        }
    }
    if let Some(dir) = command.get_current_dir() {
        bash.current_dir(dir);
    }
    bash
}

#[test]
fn out_of_range_numbers_in_flags_and_flue_toml_are_refused_naming_the_key_and_range() {
    let project = project();
    for (flag, value, range) in [
        ("--deadline", "0", "1..=604800"),
        ("--deadline", "9223372036854775807", "1..=604800"),
        ("--memory", "1048576", "1..=4096"),
        ("--grace", "9223372036854775807", "0..=86400"),
        ("--max-body-kib", "0", "1..=65536"),
        ("--max-concurrent", "0", "1..=4096"),
        ("--max-concurrent", "4294967297", "1..=4096"),
        ("--queue", "100000000", "0..=100000"),
        ("--retention", "0", "1..=10000000"),
        ("--max-connections", "0", "1..=65536"),
        ("--header-timeout", "0", "1..=3600"),
        ("--body-timeout", "0", "1..=3600"),
    ] {
        let (code, stderr) = refused(project.path(), &["--listen", "127.0.0.1:0", flag, value], &[]);
        assert_eq!(code, 2, "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag) && stderr.contains(range), "{flag} {value}: {stderr}");
    }
    // TOML's largest integer: before, each panicked the run (an Instant and a
    // byte count overflowed) and left it `running`.
    for (key, range) in [("deadline-secs", "from 1 to 604800 seconds"), ("memory-mib", "from 1 to 4096 MiB")] {
        std::fs::write(
            project.path().join("flue.toml"),
            format!("[agents.probe]\nwebhook = true\n{key} = 9223372036854775807\n"),
        )
        .unwrap();
        let (code, stderr) = refused(project.path(), &["--listen", "127.0.0.1:0"], &[]);
        assert_eq!(code, 2, "{stderr}");
        assert!(stderr.contains(&format!("[agents.probe] {key}")) && stderr.contains(range), "{stderr}");
    }
}

/// `FLUE_TEST_ONLY_PANIC_RUN` (debug builds only) makes the run invoked with
/// that id panic inside flue right after its sandbox is created.
#[test]
fn a_run_that_panics_fails_alone_frees_its_slot_deletes_its_sandbox_and_shutdown_completes() {
    let (project, tmp) = (project(), scratch());
    let mut command = Server::command("serve", project.path(), tmp.path(), &["--max-concurrent", "1", "--queue", "0"]);
    command.env("FLUE_TEST_ONLY_PANIC_RUN", "boom");
    let mut server = Server::spawn(command);
    let client = reqwest::Client::new();
    let post = |id: &str| {
        client.post(format!("{}/agents/probe/{id}", server.url)).body(r#"{"mode":"exec","command":"echo hi"}"#)
    };
    runtime().block_on(async {
        let response = post("boom").send().await.unwrap();
        assert_eq!(response.status(), 500);
        let run_id = response.headers()["x-flue-run-id"].to_str().unwrap().to_string();
        let answer = response.body_json().await;
        assert!(answer.to_string().contains("flue failed inside this run"), "{answer}");
        let record = client.get(format!("{}/runs/{run_id}", server.url)).send().await.unwrap().body_json().await;
        assert_eq!(record["status"], "failed", "{record}");
        // Its one slot is free again: with a leaked slot this would be 429.
        let next = post("fine").send().await.unwrap();
        assert_eq!(next.status(), 200);
    });
    assert!(metric(&server, "flue_runs_in_flight").ends_with(" 0"));
    assert!(metric(&server, "flue_runs_queued").ends_with(" 0"));
    assert_eq!(local_sandboxes(tmp.path()), 0, "the panicking run's sandbox was left behind");
    server.signal(libc::SIGTERM);
    assert_eq!(server.exits_within(GUARD), Some(0), "shutdown waited on the panicked run");
}

#[test]
fn foreign_host_names_and_cross_site_browser_requests_are_refused() {
    let (project, tmp) = (project(), scratch());
    let server = Server::start("serve", project.path(), tmp.path(), &["--allowed-host", "flue.test"]);
    let addr = server.addr();
    let run = r#"{"mode":"exec","command":"true"}"#;
    let json = "Content-Type: application/json";
    let own_origin = format!("Origin: {}", server.url);
    let mut allowed = 0;
    for (what, method, path, host, headers, expected) in [
        // DNS rebinding: a page on evil.example, its name re-pointed at 127.0.0.1.
        ("a foreign host", "POST", "/agents/probe/x", "evil.example:3583", vec![json], 421),
        ("a foreign host reading a run", "GET", "/runs/run_x", "evil.example", vec![], 421),
        ("a foreign host on /metrics", "GET", "/metrics", "evil.example", vec![], 421),
        ("localhost with another port", "POST", "/agents/probe/x", "localhost:1", vec![json], 200),
        ("[::1]", "POST", "/agents/probe/x", "[::1]:8080", vec![], 200),
        ("an --allowed-host", "POST", "/agents/probe/x", "flue.test:80", vec![json], 200),
        // An absolute-form target names the host too, and wins over Host.
        ("a foreign absolute target", "POST", "http://evil.example/agents/probe/x", "localhost", vec![json], 421),
        (
            "a foreign absolute target reading a run",
            "GET",
            "http://evil.example:80/runs/run_x",
            "localhost",
            vec![],
            421,
        ),
        ("a loopback absolute target", "POST", "http://localhost:1/agents/probe/x", "localhost", vec![json], 200),
        ("two Host headers", "GET", "/runs/run_x", "localhost", vec!["Host: evil.example"], 400),
        // A browser page elsewhere posting to us.
        ("a foreign Origin", "POST", "/agents/probe/x", addr.as_str(), vec!["Origin: http://evil.example", json], 403),
        ("a null Origin", "POST", "/agents/probe/x", addr.as_str(), vec!["Origin: null"], 403),
        ("our own Origin", "POST", "/agents/probe/x", addr.as_str(), vec![own_origin.as_str(), json], 200),
        ("Sec-Fetch-Site: cross-site", "GET", "/runs/run_x", addr.as_str(), vec!["Sec-Fetch-Site: cross-site"], 403),
        ("a text/plain body", "POST", "/agents/probe/x", addr.as_str(), vec!["Content-Type: text/plain"], 415),
        (
            "a form body",
            "POST",
            "/agents/probe/x",
            addr.as_str(),
            vec!["Content-Type: application/x-www-form-urlencoded"],
            415,
        ),
    ] {
        let answer = raw(&addr, &request(method, path, host, &headers, if method == "POST" { run } else { "" }));
        assert_eq!(status(&answer), expected, "{what}: {answer}");
        if expected != 200 {
            assert!(body(&answer)["error"].to_string().len() > 10, "{what}: a clear message: {answer}");
        } else if method == "POST" {
            allowed += 1;
        }
    }
    assert_eq!(metric(&server, "flue_runs_started_total"), format!("flue_runs_started_total {allowed}"));
}

#[test]
fn half_sent_requests_cannot_exhaust_descriptors_or_hold_connections() {
    let (project, tmp) = (project(), scratch());
    let command = Server::command("serve", project.path(), tmp.path(), &["--header-timeout", "2"]);
    // 128 descriptors: the default connection cap is then 64.
    let server = Server::spawn(with_open_file_limit(&command, 128));
    let addr = server.addr();
    let half_sent: Vec<TcpStream> = (0..150)
        .map(|_| {
            let mut stream = TcpStream::connect(&addr).unwrap();
            stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n").unwrap();
            stream
        })
        .collect();
    // A real client is still served once the half-sent ones time out.
    let health = runtime().block_on(async {
        let client = reqwest::Client::builder().timeout(GUARD).build().unwrap();
        client.get(format!("{}/healthz", server.url)).send().await.map(|r| r.status().as_u16())
    });
    assert_eq!(health.ok(), Some(200), "a client was never served");
    // And the half-sent ones were closed by the server.
    let mut first = &half_sent[0];
    first.set_read_timeout(Some(GUARD)).unwrap();
    let mut rest = Vec::new();
    match first.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(err) => assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "still open: {err}"),
    }
}

#[test]
fn a_body_that_stops_arriving_is_answered_408() {
    let (project, tmp) = (project(), scratch());
    let server = Server::start("serve", project.path(), tmp.path(), &["--body-timeout", "1"]);
    let head = "POST /agents/probe/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{\"mode\":";
    let answer = raw(&server.addr(), head);
    assert_eq!(status(&answer), 408, "{answer}");
    assert!(body(&answer)["error"].to_string().contains("--body-timeout"), "{answer}");
}

#[test]
fn a_client_stalled_mid_body_cannot_hold_shutdown_past_the_grace_period() {
    let (project, tmp) = (project(), scratch());
    let mut server = Server::start("serve", project.path(), tmp.path(), &["--grace", "1", "--body-timeout", "3600"]);
    let mut stalled = TcpStream::connect(server.addr()).unwrap();
    stalled
        .write_all(b"POST /agents/probe/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{\"mode\":")
        .unwrap();
    // Let the server start reading the body.
    std::thread::sleep(Duration::from_millis(300));
    server.signal(libc::SIGTERM);
    assert_eq!(server.exits_within(GUARD), Some(0), "a stalled client held the server past its grace period");
    drop(stalled);
}

/// A socket that takes at most a few KiB before the sender must wait.
fn small_window_socket(addr: &str) -> TcpStream {
    use rustix::net::{AddressFamily, SocketType, sockopt};
    let addr: std::net::SocketAddr = addr.parse().unwrap();
    let socket = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    sockopt::set_socket_recv_buffer_size(&socket, 4096).unwrap();
    rustix::net::connect(&socket, &addr).unwrap();
    TcpStream::from(socket)
}

#[test]
fn an_event_stream_reader_that_never_reads_is_dropped_and_the_run_goes_on() {
    let (project, tmp) = (project(), scratch());
    std::fs::copy(fixture("hostile-agent"), project.path().join("agents/flood.wasm")).unwrap();
    std::fs::write(project.path().join("flue.toml"), "[agents.flood]\nwebhook = true\n").unwrap();
    let server = Server::start("serve", project.path(), tmp.path(), &[]);
    // Several runs flooding their logs (2 MiB each) into streams nobody reads.
    let readers: Vec<TcpStream> = (0..4)
        .map(|i| {
            let mut stream = small_window_socket(&server.addr());
            let text = request(
                "POST",
                &format!("/agents/flood/{i}"),
                "127.0.0.1",
                &["Accept: text/event-stream"],
                r#"{"mode":"log-flood"}"#,
            );
            stream.write_all(text.as_bytes()).unwrap();
            stream
        })
        .collect();
    // The runs end although nobody reads their streams.
    let started = std::time::Instant::now();
    while metric(&server, "flue_runs_finished_total{outcome=\"succeeded\"}")
        != "flue_runs_finished_total{outcome=\"succeeded\"} 4"
    {
        assert!(started.elapsed() < GUARD, "the runs waited on readers that do not read");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(metric(&server, "flue_event_readers_dropped_total"), "flue_event_readers_dropped_total 4");
    drop(readers);
}

#[test]
fn an_answer_the_client_stops_reading_is_dropped_after_the_body_timeout() {
    let (project, tmp) = (project(), scratch());
    std::fs::copy(fixture("hostile-agent"), project.path().join("agents/flood.wasm")).unwrap();
    std::fs::write(project.path().join("flue.toml"), "[agents.flood]\nwebhook = true\n").unwrap();
    let server = Server::start("serve", project.path(), tmp.path(), &["--body-timeout", "1"]);
    // A run whose record (its events) is megabytes long.
    let run_id = runtime().block_on(async {
        let request =
            reqwest::Client::new().post(format!("{}/agents/flood/x", server.url)).body(r#"{"mode":"log-flood"}"#);
        let response = request.send().await.unwrap();
        response.headers()["x-flue-run-id"].to_str().unwrap().to_string()
    });
    // Asked for ten times on one connection, more than socket buffers hold.
    let mut reader = small_window_socket(&server.addr());
    let ask = format!("GET /runs/{run_id} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    reader.write_all(ask.repeat(10).as_bytes()).unwrap();
    // The server gives up on it: only the connections of our /metrics requests remain.
    let started = std::time::Instant::now();
    while metric(&server, "flue_connections_open") != "flue_connections_open 1" {
        assert!(started.elapsed() < GUARD, "a client that does not read held its connection");
        std::thread::sleep(Duration::from_millis(200));
    }
    reader.set_read_timeout(Some(GUARD)).unwrap();
    let mut answer = Vec::new();
    let _ = reader.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    let length: usize = text
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(|n| n.trim().parse().unwrap()))
        .expect("a content-length");
    assert!(answer.len() < 10 * length, "every answer was delivered after all: {} of {length} x 10", answer.len());
}

#[test]
fn a_burst_never_admits_more_than_max_concurrent_plus_queue() {
    let tmp = scratch();
    // Before, a run was counted only after its record was written: a burst
    // landing in that window was admitted past the limit (3 of 1 + 1).
    for round in 0..3 {
        // A project of its own: the run a round leaves queued at shutdown
        // would run at the next start and take a place in the queue.
        let project = project();
        let mut server = Server::start(
            "serve",
            project.path(),
            tmp.path(),
            &["--max-concurrent", "1", "--queue", "1", "--grace", "0"],
        );
        let statuses = runtime().block_on(async {
            let client = reqwest::Client::new();
            let requests = (0..100).map(|i| {
                let request = client
                    .post(format!("{}/agents/probe/burst-{i}", server.url))
                    .header("x-webhook", "true")
                    .body(json!({"mode": "exec", "command": "sleep 60"}).to_string());
                async move { request.send().await.unwrap().status().as_u16() }
            });
            futures_util::future::join_all(requests).await
        });
        let admitted = statuses.iter().filter(|s| **s == 202).count();
        assert_eq!(admitted, 2, "round {round}: admitted {admitted} with room for 1 + 1: {statuses:?}");
        assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 98, "{statuses:?}");
        server.signal(libc::SIGTERM);
        assert_eq!(server.exits_within(GUARD), Some(0));
    }
}

#[test]
fn short_bearer_tokens_are_refused_with_the_reason() {
    let project = project();
    let (code, stderr) = refused(project.path(), &["--listen", "127.0.0.1:0", "--token", "x"], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("at least 16") && stderr.contains("guessed"), "{stderr}");
    let (code, stderr) =
        refused(project.path(), &["--listen", "0.0.0.0:0"], &[("FLUE_SERVE_TOKEN", "fifteen-bytes!!")]);
    assert_eq!(code, 2);
    assert!(stderr.contains("15 bytes"), "{stderr}");
}

#[test]
fn an_agent_symlinked_from_outside_the_project_is_refused() {
    let (project, tmp) = (project(), scratch());
    let agents = project.path().join("agents");
    // Outside: refused. Inside (another directory of the project): served.
    std::os::unix::fs::symlink(fixture("probe"), agents.join("outside.wasm")).unwrap();
    std::fs::create_dir(project.path().join("lib")).unwrap();
    std::fs::copy(fixture("probe"), project.path().join("lib/probe.wasm")).unwrap();
    std::os::unix::fs::symlink("../lib/probe.wasm", agents.join("inside.wasm")).unwrap();
    std::fs::write(
        project.path().join("flue.toml"),
        "[agents.outside]\nwebhook = true\n[agents.inside]\nwebhook = true\n",
    )
    .unwrap();
    let server = Server::start("serve", project.path(), tmp.path(), &[]);
    runtime().block_on(async {
        let client = reqwest::Client::new();
        let post = |name: &str| {
            client.post(format!("{}/agents/{name}/x", server.url)).body(r#"{"mode":"exec","command":"echo hi"}"#).send()
        };
        let refused = post("outside").await.unwrap();
        assert_eq!(refused.status(), 403);
        let answer = refused.body_json().await;
        assert!(answer.to_string().contains("outside the project"), "{answer}");
        assert!(!answer.to_string().contains(&fixture("probe").display().to_string()), "a server path: {answer}");
        assert_eq!(post("inside").await.unwrap().status(), 200);
    });
}

#[test]
fn the_run_store_is_private_and_a_store_directory_others_control_is_refused() {
    let (project, tmp) = (project(), scratch());
    let dot_flue = project.path().join(".flue");
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    {
        let server = Server::start("serve", project.path(), tmp.path(), &[]);
        runtime().block_on(async {
            let url = format!("{}/agents/probe/x", server.url);
            let response = reqwest::Client::new().post(url).body(r#"{"mode":"exec","command":"true"}"#).send().await;
            assert_eq!(response.unwrap().status(), 200);
        });
        assert_eq!(mode(&dot_flue), 0o700);
        for file in ["runs.sqlite", "runs.sqlite-wal", "runs.sqlite-shm"] {
            assert_eq!(mode(&dot_flue.join(file)), 0o600, "{file}");
        }
    }
    // An older flue's 0755 and 0644: made private.
    std::fs::set_permissions(&dot_flue, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(dot_flue.join("runs.sqlite"), std::fs::Permissions::from_mode(0o644)).unwrap();
    drop(Server::start("serve", project.path(), tmp.path(), &[]));
    assert_eq!(mode(&dot_flue), 0o700);
    assert_eq!(mode(&dot_flue.join("runs.sqlite")), 0o600);
    // Writable by others: refused.
    std::fs::set_permissions(&dot_flue, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (code, stderr) = refused(project.path(), &["--listen", "127.0.0.1:0"], &[]);
    assert!(code != 0 && stderr.contains("others can write to it"), "{stderr}");
    // Someone else's (as root, the tests can make one).
    std::fs::set_permissions(&dot_flue, std::fs::Permissions::from_mode(0o700)).unwrap();
    if rustix::process::geteuid().is_root() {
        std::os::unix::fs::chown(&dot_flue, Some(65534), Some(65534)).unwrap();
        let (code, stderr) = refused(project.path(), &["--listen", "127.0.0.1:0"], &[]);
        assert!(code != 0 && stderr.contains("belongs to uid 65534"), "{stderr}");
        std::os::unix::fs::chown(&dot_flue, Some(0), Some(0)).unwrap();
    }
    // A symbolic link to somewhere else: refused.
    let elsewhere = scratch();
    std::fs::remove_dir_all(&dot_flue).unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), &dot_flue).unwrap();
    let (code, stderr) = refused(project.path(), &["--listen", "127.0.0.1:0"], &[]);
    assert!(code != 0 && stderr.contains("symbolic link"), "{stderr}");
}

#[test]
fn request_bodies_together_hold_no_more_memory_than_the_budget() {
    let (project, tmp) = (project(), scratch());
    let server =
        Server::start("serve", project.path(), tmp.path(), &["--body-memory-mib", "1", "--body-timeout", "3600"]);
    // Eight clients send 256 KiB of a body each, then stall: 2 MiB offered
    // to a budget of 1 MiB. Before, the server kept all of it (up to
    // --max-connections × --max-body-kib) for --body-timeout.
    let head = "POST /agents/probe/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000\r\n\r\n";
    let part = vec![b' '; 256 * 1024];
    let clients: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut stream = TcpStream::connect(server.addr()).unwrap();
            stream.write_all(head.as_bytes()).unwrap();
            // A refused client may find its connection closed mid-body.
            let _ = stream.write_all(&part);
            stream
        })
        .collect();
    // Each body the server keeps holds at least 256 KiB of the budget: at
    // least four are refused, at once.
    let started = std::time::Instant::now();
    loop {
        let refused: u64 = metric(&server, "flue_bodies_refused_total").rsplit(' ').next().unwrap().parse().unwrap();
        if refused >= 4 {
            break;
        }
        assert!(started.elapsed() < GUARD, "{refused} of 8 bodies refused with a budget for 4");
        std::thread::sleep(Duration::from_millis(100));
    }
    // What a refused client could still read is the JSON refusal.
    for mut client in &clients {
        client.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let mut answer = Vec::new();
        let _ = client.read_to_end(&mut answer);
        let answer = String::from_utf8_lossy(&answer);
        if !answer.is_empty() {
            assert_eq!(status(&answer), 503, "{answer}");
            assert!(answer.to_ascii_lowercase().contains("retry-after: 1"), "{answer}");
            assert_eq!(body(&answer)["error"]["kind"], "server-busy", "{answer}");
        }
    }
    // Once the stalled clients go, their memory is free again.
    drop(clients);
    runtime().block_on(async {
        let client = reqwest::Client::new();
        loop {
            let request =
                client.post(format!("{}/agents/probe/x", server.url)).body(r#"{"mode":"exec","command":"true"}"#);
            match request.send().await.unwrap().status().as_u16() {
                200 => break,
                503 => assert!(started.elapsed() < GUARD, "the budget was never given back"),
                other => panic!("status {other}"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    // The budget holds at least one body of --max-body-kib.
    let (code, stderr) =
        refused(project.path(), &["--listen", "127.0.0.1:0", "--body-memory-mib", "1", "--max-body-kib", "2048"], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--body-memory-mib") && stderr.contains("at least 2"), "{stderr}");
}

#[test]
fn every_refusal_is_json_even_from_axum_and_hyper() {
    let (project, tmp) = (project(), scratch());
    let server = Server::start("serve", project.path(), tmp.path(), &[]);
    let addr = server.addr();
    let many_headers: String = (0..120).map(|i| format!("X-Header-{i}: x\r\n")).collect();
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", "a".repeat(70_000));
    let get = |path: &str| request("GET", path, "127.0.0.1", &[], "");
    for (what, text, expected, kind) in [
        // Paths that are not UTF-8: axum's extractors refused them as text.
        ("a run id that is not UTF-8", get("/runs/%ff"), 400, "bad-request"),
        (
            "an agent name that is not UTF-8",
            request("POST", "/agents/%ff/x", "127.0.0.1", &[], "{}"),
            400,
            "bad-request",
        ),
        // hyper answers these itself, with an empty body.
        ("not HTTP", "GARBAGE\r\n\r\n".to_string(), 400, "bad-request"),
        (
            "a Content-Length that is not a number",
            "POST /agents/probe/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ten\r\n\r\n".to_string(),
            400,
            "bad-request",
        ),
        (
            "too many headers",
            format!("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n{many_headers}Connection: close\r\n\r\n"),
            431,
            "headers-too-large",
        ),
        ("a target too long", long_target, 414, "uri-too-long"),
        // And the rest, JSON already.
        ("an unknown run", get("/runs/run_nope"), 404, "not-found"),
        ("a CORS preflight", request("OPTIONS", "/agents/probe/x", "127.0.0.1", &[], ""), 405, "method-not-allowed"),
        ("DELETE", request("DELETE", "/runs/run_x", "127.0.0.1", &[], ""), 405, "method-not-allowed"),
    ] {
        let answer = raw(&addr, &text);
        assert_eq!(status(&answer), expected, "{what}: {answer}");
        assert!(answer.to_ascii_lowercase().contains("content-type: application/json"), "{what}: {answer}");
        let error = &body(&answer)["error"];
        assert_eq!(error["kind"], kind, "{what}: {answer}");
        assert!(error["message"].as_str().is_some_and(|m| m.len() > 10), "{what}: {answer}");
        if what.starts_with("an agent name") {
            assert!(answer.contains("x-flue-run-id: run_"), "{what}: {answer}");
        }
    }
    // HEAD answers have no body, but say what GET's would be.
    let answer = raw(&addr, &request("HEAD", "/nowhere", "127.0.0.1", &[], ""));
    assert_eq!(status(&answer), 404, "{answer}");
    assert!(answer.to_ascii_lowercase().contains("content-type: application/json"), "{answer}");
}

/// A Rust agent whose build script never ends.
fn agent_whose_build_never_ends(agent: &Path) {
    crate::support::crate_with_build_script(
        agent,
        "stuck",
        true,
        "fn main() {\n    loop {\n        std::thread::sleep(std::time::Duration::from_secs(3600));\n    }\n}\n",
    );
}

/// Live processes (not zombies) working in `dir` — a build's cargo, rustc
/// and build script, isolated or not — and the programs they run.
fn processes_in(dir: &Path) -> Vec<(u32, String)> {
    let dir = dir.canonicalize().unwrap();
    let pids = std::fs::read_dir("/proc").unwrap().flatten().filter_map(|e| e.file_name().to_str()?.parse().ok());
    pids.filter(|pid: &u32| std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd == dir))
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
        })
        .map(|pid| {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
            (pid, exe.file_name().unwrap_or_default().to_string_lossy().into_owned())
        })
        .collect()
}

/// Wait (up to the hang guard) until `done` holds of the processes in `dir`.
fn until_processes_in(dir: &Path, what: &str, done: impl Fn(&[(u32, String)]) -> bool) {
    let started = std::time::Instant::now();
    while !done(&processes_in(dir)) {
        assert!(started.elapsed() < GUARD, "{what}: {:?}", processes_in(dir));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `POST url` with an empty payload: the status and the answer.
fn post_and_wait(url: String) -> (u16, Value) {
    runtime().block_on(async {
        let client = reqwest::Client::builder().timeout(GUARD).build().unwrap();
        let response = client.post(url).body("{}").send().await.unwrap();
        (response.status().as_u16(), response.body_json().await)
    })
}

#[test]
fn a_build_that_never_ends_cannot_hold_shutdown_or_a_request_and_its_processes_are_killed() {
    let (project, tmp) = (scratch(), scratch());
    let agent = project.path().join("agents/stuck");
    agent_whose_build_never_ends(&agent);
    std::fs::write(project.path().join("flue.toml"), "[agents.stuck]\nwebhook = true\n").unwrap();
    let build_script_running = |running: &[(u32, String)]| running.iter().any(|(_, exe)| exe == "build-script-build");

    // Shutdown: the grace period ends the build, and the run with kind
    // `shutdown`. Unisolated, the build's processes would not die with flue.
    let mut command = Server::command("dev", project.path(), tmp.path(), &["--grace", "1"]);
    command.env("FLUE_BUILD_ISOLATION", "none");
    let mut server = Server::spawn(command);
    let url = format!("{}/agents/stuck/x", server.url);
    let caller = std::thread::spawn(move || post_and_wait(url));
    until_processes_in(&agent, "the build script never ran", build_script_running);
    server.signal(libc::SIGTERM);
    assert_eq!(server.exits_within(GUARD), Some(0), "a build that never ends held shutdown");
    let (status, answer) = caller.join().unwrap();
    assert_eq!((status, answer["error"]["kind"].as_str()), (503, Some("shutdown")), "{answer}");
    until_processes_in(&agent, "after shutdown, the build's processes live on", <[_]>::is_empty);

    // The build timeout (isolated where bubblewrap works): the request fails
    // with `build-timeout`, the build is killed.
    let server = Server::start("dev", project.path(), tmp.path(), &["--build-timeout", "5"]);
    let (status, answer) = post_and_wait(format!("{}/agents/stuck/x", server.url));
    assert_eq!((status, answer["error"]["kind"].as_str()), (504, Some("build-timeout")), "{answer}");
    assert!(answer["error"]["message"].as_str().unwrap().contains("--build-timeout"), "{answer}");
    until_processes_in(&agent, "after the build timeout, the build's processes live on", <[_]>::is_empty);
}
