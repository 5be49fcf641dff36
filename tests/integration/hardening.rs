//! Hostile agents and connectors against the host: each test plays one
//! attack with a guest of our own (`tests/fixtures/hostile-*`,
//! `greedy-connector`) and checks that it fails, and how.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use flue::events::EventLog;
use flue::sandbox::error::ErrorKind;
use flue::sandbox::session::Session;
use serde_json::{Value, json};

use crate::support::{
    TEST_API_KEY, TestDaytona, children_of, fixture, flue, output, output_watching, output_with_peak_rss,
    process_state, scratch, skip_without_bwrap,
};

/// `flue run <hostile-agent> --payload PAYLOAD ARGS…`, local sandboxes under `tmp`.
fn hostile(payload: Value, args: &[&str], tmp: &Path) -> Command {
    let mut command = flue();
    command
        .arg("run")
        .arg(fixture("hostile-agent"))
        .args(["--payload", &payload.to_string()])
        .args(args)
        .env("TMPDIR", tmp);
    command
}

/// A connectors directory holding the named fixtures, as `<name>.wasm`.
fn connectors(fixtures: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = scratch();
    for (fixture_name, name) in fixtures {
        std::fs::copy(fixture(fixture_name), dir.path().join(format!("{name}.wasm"))).unwrap();
    }
    dir
}

// 1. Variables of the sandbox never reach a host-side process.

/// A shared library whose constructor creates `marker` wherever it is loaded.
fn planted_library(dir: &Path, marker: &Path) -> Option<Vec<u8>> {
    let source = dir.join("evil.c");
    std::fs::write(
        &source,
        format!(
            "#include <fcntl.h>\n#include <unistd.h>\n\
             __attribute__((constructor)) static void pwn(void) {{\n\
             int fd = open(\"{}\", O_CREAT | O_WRONLY, 0644); if (fd >= 0) close(fd); }}\n",
            marker.display()
        ),
    )
    .unwrap();
    let library = dir.join("evil.so");
    let built = Command::new("cc").arg("-shared").arg("-fPIC").arg("-o").arg(&library).arg(&source).status();
    match built {
        Ok(status) if status.success() => Some(std::fs::read(library).unwrap()),
        _ => {
            eprintln!("note: no C compiler; the LD_PRELOAD attack is not played");
            None
        }
    }
}

#[test]
fn ld_preload_from_an_agent_runs_only_inside_the_sandbox() {
    if skip_without_bwrap(
        "hardening::ld_preload_from_an_agent_runs_only_inside_the_sandbox",
        "a library an agent plants must load only inside the isolated sandbox",
    ) {
        return;
    }
    let tmp = scratch();
    let marker = tmp.path().join("preloaded-on-the-host");
    let Some(library) = planted_library(tmp.path(), &marker) else { return };
    let payload = |command: &str| json!({"mode": "preload", "so": library, "command": command});

    // Control: without isolation the command *is* on the host, and the
    // library runs there — the attack is real.
    let control = output(&mut hostile(payload("true"), &["--isolation", "none", "--events", "none"], tmp.path()));
    assert_eq!(control.code, 0, "{}", control.stderr);
    assert!(marker.exists(), "the planted library did not run even unisolated: the test proves nothing");
    std::fs::remove_file(&marker).unwrap();

    // Under bubblewrap: bwrap starts with an empty environment and sets the
    // variables inside; its command line carries none of them either.
    let mut leaks = Vec::new();
    let out = output_watching(
        &mut hostile(payload("sleep 1; true"), &["--isolation", "bwrap", "--events", "none"], tmp.path()),
        |pid| {
            for child in children_of(pid) {
                if process_state(child).is_some_and(|(_, name)| name == "bwrap") {
                    let environ = std::fs::read(format!("/proc/{child}/environ")).unwrap_or_default();
                    let cmdline = std::fs::read(format!("/proc/{child}/cmdline")).unwrap_or_default();
                    for (what, bytes) in [("environment", environ), ("command line", cmdline)] {
                        let text = String::from_utf8_lossy(&bytes);
                        if text.contains("LD_PRELOAD") || text.contains("FLUE_HOSTILE_MARK") {
                            leaks.push(format!("bwrap's {what}: {text}"));
                        }
                    }
                }
            }
        },
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(leaks.is_empty(), "sandbox variables reached the host side: {leaks:?}");
    assert!(!marker.exists(), "the planted library ran on the host, outside every namespace");
}

// 2. Root inside the sandbox has no capabilities.

const PRIVILEGE_PROBE: &str = "umask 022; grep CapEff /proc/self/status; \
    mount -o remount,rw /etc 2>/dev/null && echo REMOUNTED; \
    mount -t tmpfs none /tmp 2>/dev/null && echo MOUNTED; \
    mknod /tmp/null c 1 3 2>/dev/null && echo MKNOD; \
    (echo x > /etc/flue-probe) 2>/dev/null && echo WROTE-ETC; \
    (echo x > /usr/flue-probe) 2>/dev/null && echo WROTE-USR; \
    head -c 1 /etc/shadow 2>/dev/null && echo READ-SHADOW; \
    cp /usr/bin/true planted && chmod u+s planted 2>/dev/null; chmod 4755 planted 2>/dev/null; \
    install -m 4755 /usr/bin/true planted2 2>/dev/null; stat -c '%a %n' planted planted2 2>/dev/null; \
    grep ' /workspace ' /proc/self/mountinfo";

fn assert_contained(stdout: &str, who: &str) {
    assert!(stdout.contains("CapEff:\t0000000000000000"), "{who}: capabilities kept: {stdout}");
    for escape in ["REMOUNTED", "MOUNTED", "MKNOD", "WROTE-ETC", "WROTE-USR", "READ-SHADOW"] {
        assert!(!stdout.contains(escape), "{who}: {escape}: {stdout}");
    }
    assert!(stdout.contains("755 planted"), "{who}: the setuid bit stuck: {stdout}");
    assert!(!stdout.contains("4755"), "{who}: a setuid file exists: {stdout}");
    let mount = stdout.lines().find(|l| l.contains(" /workspace ")).unwrap_or("");
    assert!(mount.contains("nosuid") && mount.contains("nodev"), "{who}: {mount}");
}

#[test]
fn root_in_the_sandbox_can_neither_remount_nor_mknod_nor_plant_setuid_files() {
    if skip_without_bwrap(
        "hardening::root_in_the_sandbox_can_neither_remount_nor_mknod_nor_plant_setuid_files",
        "capabilities dropped and the seccomp filter exist only under isolation",
    ) {
        return;
    }
    let tmp = scratch();
    let out = output(&mut crate::support::flue_probe(
        json!({"mode": "exec", "command": PRIVILEGE_PROBE}),
        &["--isolation", "bwrap", "--keep"],
        tmp.path(),
    ));
    let result = out.ok();
    assert_contained(result["stdout"].as_str().unwrap(), "flue as root");
    assert!(!Path::new("/etc/flue-probe").exists() && !Path::new("/usr/flue-probe").exists());

    // What the kept sandbox leaves on the host is private, and carries no
    // setuid or setgid bit.
    let base = tmp.path().join("flue-local");
    assert_eq!(std::fs::metadata(&base).unwrap().mode() & 0o777, 0o700);
    for entry in std::fs::read_dir(&base).unwrap().flatten() {
        let meta = entry.metadata().unwrap();
        let want = if meta.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(meta.mode() & 0o7777, want, "{}", entry.path().display());
        if meta.is_dir() {
            for file in std::fs::read_dir(entry.path()).unwrap().flatten() {
                let mode = file.metadata().unwrap().mode();
                assert_eq!(mode & 0o6000, 0, "{} is setuid/setgid", file.path().display());
            }
        }
    }
}

#[test]
fn a_base_directory_someone_else_controls_is_refused() {
    let tmp = scratch();
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, tmp.path().join("flue-local")).unwrap();
    let out = output(&mut crate::support::flue_probe(json!({"mode": "exec", "command": "true"}), &[], tmp.path()));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("flue-local: it is a symbolic link"), "{}", out.stderr);
    assert!(std::fs::read_dir(&elsewhere).unwrap().next().is_none(), "a sandbox was created through the link");

    if rustix::process::geteuid().is_root() {
        let other = scratch();
        let base = other.path().join("flue-local");
        std::fs::create_dir(&base).unwrap();
        std::os::unix::fs::chown(&base, Some(65534), Some(65534)).unwrap();
        let out =
            output(&mut crate::support::flue_probe(json!({"mode": "exec", "command": "true"}), &[], other.path()));
        assert_eq!(out.code, 1, "{}", out.stderr);
        assert!(out.stderr.contains("it belongs to uid 65534, not to you"), "{}", out.stderr);
    }
}

/// The same attacks with flue started by an unprivileged user (CI creates
/// one and names it in FLUE_TEST_UNPRIVILEGED_USER).
#[test]
fn isolation_holds_for_an_unprivileged_user_too() {
    let Ok(user) = std::env::var("FLUE_TEST_UNPRIVILEGED_USER") else {
        eprintln!("note: FLUE_TEST_UNPRIVILEGED_USER is not set; the unprivileged run is skipped");
        return;
    };
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: it runs flue as another user, which needs root");
        return;
    }
    if skip_without_bwrap(
        "hardening::isolation_holds_for_an_unprivileged_user_too",
        "isolation for an unprivileged user",
    ) {
        return;
    }
    let payload = json!({"mode": "exec", "command": PRIVILEGE_PROBE});
    let out = crate::support::probe_as(&user, payload, &["--isolation", "bwrap"]);
    let result = out.ok();
    assert_contained(result["stdout"].as_str().unwrap(), &format!("flue as {user}"));
}

// 4. A configured URL grants its origin, not its host.

/// A one-shot HTTP server on 127.0.0.1 answering `hi`; returns its port and
/// the requests it saw.
fn tiny_server() -> (u16, std::sync::mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut request = vec![0u8; 8192];
            let n = stream.read(&mut request).unwrap_or(0);
            let _ = tx.send(String::from_utf8_lossy(&request[..n]).into_owned());
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi");
        }
    });
    (port, rx)
}

const HOSTILE_TOKEN: &str = "hostile-token-0123456789";

fn hostile_host(url: &str) -> flue::Host {
    let dir = connectors(&[("hostile-connector", "hostile")]);
    let config = std::collections::HashMap::from([
        ("HOSTILE_URL".to_string(), url.to_string()),
        ("HOSTILE_TOKEN".to_string(), HOSTILE_TOKEN.to_string()),
        ("SHARED_SETTING".to_string(), "shared".to_string()),
        ("FLUE_GRANT_HOSTILE".to_string(), "SHARED_SETTING".to_string()),
    ]);
    flue::HostBuilder::new()
        .cache_dir(Some(crate::support::cache_dir()))
        .connectors_dir(dir.keep())
        .config(config)
        .build()
        .unwrap()
}

/// What the hostile connector reports for `attack` (its error message).
async fn attack(host: &flue::Host, attack: &str) -> String {
    let connector = host.connector("hostile", &EventLog::discard()).await.unwrap();
    let options = flue::sandbox::CreateOptions { name: Some(attack.into()), ..Default::default() };
    match connector.create(&options).await {
        Ok(_) => "created".into(),
        Err(err) => err.message,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_configured_private_url_opens_that_origin_and_no_other_port() {
    let (port, requests) = tiny_server();
    let host = hostile_host(&format!("http://localhost:{port}"));
    let answer = attack(&host, &format!("fetch:http://localhost:{port}/x")).await;
    assert_eq!(answer, "answered 200: hi", "the configured origin must work");
    let request = requests.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(request.contains(&format!("Bearer {HOSTILE_TOKEN}")), "the secret was not filled in: {request}");

    // The connector also names http://localhost:47391 literally: allowed by
    // name, but a literal entry gets no private-address exemption, even for
    // a host a configured URL names on another port.
    let other = TcpListener::bind("127.0.0.1:47391").ok();
    if let Some(listener) = &other {
        listener.set_nonblocking(true).unwrap();
    }
    let refused = attack(&host, "fetch:http://localhost:47391/steal").await;
    assert!(refused.contains("refused") && refused.contains("private or loopback"), "{refused}");
    if let Some(listener) = other {
        assert!(listener.accept().is_err(), "a request reached localhost:47391");
    }
    let refused = attack(&host, "fetch:http://127.0.0.1:47391/").await;
    assert!(refused.contains("not among the connector's allowed hosts"), "{refused}");
}

// 5. A connector sees only what the user meant for it.

#[test]
fn connectors_see_only_their_own_settings_unless_granted() {
    let dir = connectors(&[("greedy-connector", "greedy"), ("hostile-connector", "hostile")]);
    let list = |grant: bool| {
        let mut command = flue();
        command.arg("connectors").arg("--connectors").arg(dir.path()).env("HOSTILE_TOKEN", HOSTILE_TOKEN);
        if grant {
            command.env("FLUE_GRANT_HOSTILE", "SHARED_SETTING");
        }
        let out = output(&mut command);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.stdout
    };
    let line =
        |stdout: &str, name: &str| stdout.lines().find(|l| l.trim_start().starts_with(name)).unwrap().to_string();
    let stdout = list(false);
    let greedy = line(&stdout, "greedy");
    assert!(greedy.contains("declares GREEDY_TOKEN more than once"), "{greedy}");
    assert!(greedy.contains("declares HOME, outside its namespace GREEDY_*"), "{greedy}");
    let hostile = line(&stdout, "hostile");
    assert!(hostile.contains("declares SHARED_SETTING, outside its namespace HOSTILE_*"), "{hostile}");
    assert!(hostile.contains("FLUE_GRANT_HOSTILE=SHARED_SETTING"), "{hostile}");
    let granted = list(true);
    assert!(line(&granted, "hostile").contains("Attacks the host"), "{granted}");
}

#[tokio::test(flavor = "multi_thread")]
async fn config_get_hands_out_declared_plain_keys_only() {
    let host = hostile_host("http://localhost:9");
    let seen = attack(&host, "config").await;
    assert_eq!(seen, r#"url=Some("http://localhost:9") token=None shared=Some("shared")"#);
}

// 7. Redaction: short secrets are refused, encodings are caught.

#[test]
fn a_secret_too_short_to_redact_is_refused() {
    let dir = connectors(&[("hostile-connector", "hostile")]);
    let out = output(
        flue()
            .arg("connectors")
            .arg("--connectors")
            .arg(dir.path())
            .env("HOSTILE_TOKEN", "k")
            .env("FLUE_GRANT_HOSTILE", "SHARED_SETTING"),
    );
    assert!(out.stdout.contains("HOSTILE_TOKEN is too short (1 characters, at least 8"), "{}", out.stdout);
}

// 8. Host memory a guest can drive is bounded.

#[test]
fn reading_a_huge_sparse_file_is_refused_without_reading_it() {
    let tmp = scratch();
    let payload = json!({"mode": "read", "setup": "truncate -s 2G big", "path": "big"});
    let (out, peak_mib) =
        output_with_peak_rss(&mut hostile(payload, &["--memory", "64", "--events", "none"], tmp.path()));
    let result = out.ok();
    let err = result["err"].as_str().unwrap_or_else(|| panic!("a 2 GiB read succeeded: {result}"));
    assert!(err.contains("it is 2.0 GiB; at most 16.0 MiB can be read at once"), "{err}");
    assert!(peak_mib < 400, "flue reached {peak_mib} MiB reading a file it refused");
}

#[test]
fn a_flood_of_log_lines_is_cut_at_the_run_budget() {
    let tmp = scratch();
    let out = output(&mut hostile(json!({"mode": "log-flood"}), &["--events", "text"], tmp.path()));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.len() < 3 * 1024 * 1024, "{} bytes of logs reached stderr", out.stderr.len());
    assert!(out.stderr.contains("log output reached its limit of 2097152 bytes"), "no marker");
    assert!(out.stderr.contains("line cut, "), "long lines are not cut");
}

#[test]
fn handles_and_their_names_are_bounded() {
    let tmp = scratch();
    let result = output(&mut hostile(json!({"mode": "long-name"}), &["--events", "none"], tmp.path())).ok();
    let err = result["err"].as_str().unwrap_or_default();
    assert!(err.contains("session name of 1048576 bytes refused: names are at most 256 bytes"), "{result}");

    let (out, peak_mib) = output_with_peak_rss(&mut hostile(
        json!({"mode": "hoard"}),
        &["--memory", "64", "--events", "none"],
        tmp.path(),
    ));
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("it holds too many handles"), "{}", out.stderr);
    assert!(out.stderr.contains("at most 1000 at once"), "{}", out.stderr);
    assert!(peak_mib < 400, "{peak_mib} MiB");
}

// 9. The file API never blocks on a special file.

#[test]
fn reading_a_fifo_fails_at_once() {
    let tmp = scratch();
    let payload = json!({"mode": "read", "setup": "mkfifo pipe", "path": "pipe"});
    let result = output(&mut hostile(payload, &["--deadline", "60", "--events", "none"], tmp.path())).ok();
    let err = result["err"].as_str().unwrap_or_default();
    assert!(err.contains("InvalidInput") && err.contains("not a regular file (a FIFO)"), "{result}");
}

// 10. Guest text reaches the terminal escaped.

fn assert_inert(stderr: &str) {
    for raw in ['\x1b', '\r', '\x07', '\u{202e}'] {
        assert!(!stderr.contains(raw), "raw {raw:?} reached the terminal:\n{stderr}");
    }
    for line in stderr.lines() {
        assert!(!line.starts_with("▸ run ok in 0 ms (forged)"), "a guest forged a line of flue's: {line}");
        assert!(!line.starts_with("error: the host"), "a guest forged an error line: {line}");
    }
}

#[test]
fn terminal_control_sequences_from_guests_are_shown_escaped() {
    let tmp = scratch();
    let out = output(&mut hostile(json!({"mode": "escapes"}), &["--events", "text"], tmp.path()));
    assert_eq!(out.code, 1);
    assert_inert(&out.stderr);
    assert!(out.stderr.contains("\\x1b[31mforged"), "{}", out.stderr);
    assert!(out.stderr.contains("[agent info] ▸ run ok in 0 ms (forged)\\x0d"), "{}", out.stderr);

    let dir = connectors(&[("hostile-connector", "hostile")]);
    let payload = json!({"mode": "create", "connector": "hostile", "name": "log"});
    let out = output(
        hostile(payload, &["--events", "text", "--connectors", dir.path().to_str().unwrap()], tmp.path())
            .env("FLUE_GRANT_HOSTILE", "SHARED_SETTING"),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_inert(&out.stderr);
    assert!(out.stderr.contains("[connector hostile warn] \\x1b[2J"), "{}", out.stderr);
}

// 11. A connector that runs out of memory or stack says so.

#[test]
fn connectors_and_agents_that_run_out_of_memory_or_stack_say_so() {
    let tmp = scratch();
    let dir = connectors(&[("hostile-connector", "hostile")]);
    for (name, want) in [
        ("oom", "connector hostile crashed during create: it ran out of memory (its limit is 256 MiB)"),
        ("stack", "connector hostile crashed during create: it ran out of stack"),
        (
            "shadow-stack",
            "connector hostile crashed during create: it ran out of stack (recursion too deep): its stack in linear memory overflowed",
        ),
    ] {
        let payload = json!({"mode": "create", "connector": "hostile", "name": name});
        let out = output(
            hostile(payload, &["--events", "none", "--connectors", dir.path().to_str().unwrap()], tmp.path())
                .env("FLUE_GRANT_HOSTILE", "SHARED_SETTING"),
        );
        let result = out.ok();
        assert!(result["err"].as_str().unwrap_or_default().contains(want), "{name}: {result}");
    }
    for mode in ["stack", "shadow-stack"] {
        let out = output(&mut hostile(json!({"mode": mode}), &["--events", "none"], tmp.path()));
        assert_eq!(out.code, 1);
        assert!(out.stderr.contains("the agent crashed (trap): it ran out of stack"), "{mode}: {}", out.stderr);
    }
}

// 12. Every child process is reaped.

#[test]
fn a_command_stopped_by_the_deadline_leaves_no_zombie() {
    let daytona = TestDaytona::start();
    let tmp = scratch();
    // The agent holds a Daytona sandbox, then runs a long local command that
    // the deadline stops. Deleting the Daytona sandbox is then made slow, so
    // that flue is still running, cleaning up, well after the command died.
    let payload = json!({"mode": "hold-then-exec", "connector": "daytona", "command": "sleep 60"});
    let mut command = hostile(
        payload,
        &["--deadline", "4", "--events", "none", "--connectors", daytona.connectors.path().to_str().unwrap()],
        tmp.path(),
    );
    command.env("DAYTONA_API_URL", daytona.server.api_url()).env("DAYTONA_API_KEY", TEST_API_KEY);
    // A child is a zombie for the moment between its death and flue's
    // wait: what must not happen is one left unreaped, seen in many polls.
    let (mut saw_command, mut polls_after) = (false, 0);
    let mut zombie_polls: std::collections::BTreeMap<(u32, String), usize> = Default::default();
    let out = output_watching(&mut command, |pid| {
        let children: Vec<(u32, char, String)> = children_of(pid)
            .into_iter()
            .filter_map(|c| process_state(c).map(|(state, name)| (c, state, name)))
            .collect();
        // The command itself, wherever it runs below flue (a sandbox made
        // ahead is a live child before any command starts).
        let command_runs = descendants(pid)
            .into_iter()
            .any(|c| process_state(c).is_some_and(|(state, name)| state != 'Z' && name == "sleep"));
        if command_runs {
            saw_command = true;
            daytona.faults().set_latency_ms(2500);
        } else if saw_command && children.iter().all(|(_, state, _)| *state == 'Z') {
            polls_after += 1;
        }
        for (child, _, name) in children.into_iter().filter(|(_, state, _)| *state == 'Z') {
            *zombie_polls.entry((child, name)).or_default() += 1;
        }
    });
    // 10 polls: 200 ms and more, well within the 2.5 s cleanup it watches.
    let zombies: Vec<_> = zombie_polls.iter().filter(|(_, polls)| **polls >= 10).collect();
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("deadline exceeded"), "{}", out.stderr);
    assert!(saw_command && polls_after > 10, "the cleanup window was not observed ({polls_after} polls)");
    assert!(zombies.is_empty(), "zombie children left unreaped (pid and name: polls seen): {zombies:?}");
    daytona.faults().set_latency_ms(0);
    daytona.assert_no_sandboxes_left();
}

/// Every process below `pid`.
fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut pending = vec![pid];
    while let Some(parent) = pending.pop() {
        for child in children_of(parent) {
            found.push(child);
            pending.push(child);
        }
    }
    found
}

// 13. A dead Daytona sandbox is an error, never "file missing".

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_daytona_sandbox_is_not_a_missing_file() {
    let daytona = TestDaytona::start();
    let connector = daytona.connector().await;
    for death in ["stopped", "deleted"] {
        let sandbox = connector.create(&Default::default()).await.unwrap();
        let session = Session::new(sandbox.clone(), None, EventLog::discard()).unwrap();
        assert!(!session.exists("missing.txt").await.unwrap(), "a live sandbox answers false");
        match death {
            "stopped" => daytona.server.set_sandbox_state(sandbox.id(), "stopped"),
            _ => connector.delete(sandbox.id()).await.unwrap(),
        }
        let err = session.exists("missing.txt").await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::SandboxDied, "{death}: {err}");
        let requests = daytona.server.requests().len();
        let again = session.read_file("anything").await.unwrap_err();
        assert_eq!(again.kind, ErrorKind::SandboxDied, "{death}");
        assert_eq!(daytona.server.requests().len(), requests, "{death}: a call on a dead sandbox went out");
        if death == "stopped" {
            connector.delete(sandbox.id()).await.unwrap();
        }
    }
    daytona.assert_no_sandboxes_left();
}

// 14. The Daytona test server works without isolation, wherever it keeps sandboxes.

#[tokio::test(flavor = "multi_thread")]
async fn the_test_server_without_isolation_passes_the_contract() {
    let tmp = scratch();
    // An unnormalised path, as a TMPDIR with `//` gives.
    let sandboxes = PathBuf::from(format!("{}//sandboxes/./here", tmp.path().display()));
    let daytona = TestDaytona::start_with(|config| {
        config.isolated = false;
        config.sandboxes_dir = Some(sandboxes.clone());
    });
    let connector = daytona.connector().await;
    let sandbox = connector.create(&Default::default()).await.unwrap();
    let results = flue::sandbox::conformance::run(sandbox.clone(), false, EventLog::discard()).await;
    let failures: Vec<String> =
        results.iter().filter_map(|r| r.outcome.as_ref().err().map(|e| format!("{}: {e}", r.name))).collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    connector.delete(sandbox.id()).await.unwrap();
}
