//! What commands and agents can and cannot reach.

use std::io::ErrorKind;
use std::net::TcpListener;

use flue::events::EventLog;
use flue::sandbox::Connector as _;
use flue::sandbox::session::{ExecOptions, Session};
use serde_json::json;

use crate::support::{host, isolation, isolation_modes, probe, scratch, skip_without_bwrap};

#[test]
fn commands_never_see_the_hosts_environment() {
    for mode in isolation_modes() {
        let tmp = scratch();
        let out =
            probe(json!({"mode": "exec", "command": "env; echo \"PATH=$PATH\""}), &["--isolation", mode], tmp.path());
        let result = out.ok();
        let stdout = result["stdout"].as_str().unwrap();
        assert!(stdout.contains("HOME="), "{mode}: {stdout}");
        // FLUE_CACHE_DIR is set for the flue process; commands must not inherit it.
        assert!(!stdout.contains("FLUE_CACHE_DIR"), "{mode}: the host environment leaked: {stdout}");
        assert!(
            stdout.contains("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"),
            "{mode}: {stdout}"
        );
    }
}

#[test]
fn a_secret_in_flues_environment_does_not_reach_commands() {
    for mode in isolation_modes() {
        let tmp = scratch();
        let payload = json!({"mode": "exec", "command": "echo \"[${FLUE_TEST_SECRET-unset}]\"; env | grep -c \"$(printf hunt%s er2)\" || true"}).to_string();
        let out = crate::support::output(
            crate::support::flue()
                .args(["run"])
                .arg(crate::support::fixture("probe"))
                .args(["--payload", &payload, "--isolation", mode, "--events", "json"])
                .env("TMPDIR", tmp.path())
                .env("FLUE_TEST_SECRET", "hunter2"),
        );
        let result = out.ok();
        assert_eq!(result["stdout"], "[unset]\n0\n", "{mode}: {result}");
        assert!(!out.stderr.contains("hunter2"), "{mode}: the secret reached the events");
    }
}

#[test]
fn under_bubblewrap_commands_cannot_write_outside_their_sandbox() {
    if skip_without_bwrap(
        "isolation::under_bubblewrap_commands_cannot_write_outside_their_sandbox",
        "only isolation confines what commands write",
    ) {
        return;
    }
    let tmp = scratch();
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let targets =
        ["/usr/flue-probe".to_string(), "/etc/flue-probe".into(), format!("{}/flue-probe", outside.display())];
    let command = format!(
        "for p in {}; do (echo x > \"$p\") 2>/dev/null && echo \"wrote $p\"; done; echo x > inside.txt && echo inside-ok",
        targets.join(" ")
    );
    let result = probe(json!({"mode": "exec", "command": command}), &["--isolation", "bwrap"], tmp.path()).ok();
    assert_eq!(result["stdout"], "inside-ok\n", "{result}");
    for target in &targets {
        assert!(!std::path::Path::new(target).exists(), "{target} was written on the host");
    }
}

#[test]
fn under_bubblewrap_commands_have_no_network_unless_allowed() {
    if skip_without_bwrap(
        "isolation::under_bubblewrap_commands_have_no_network_unless_allowed",
        "only isolation takes the network away",
    ) {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let command = format!("(echo hi > /dev/tcp/127.0.0.1/{port}) 2>/dev/null && echo connected || echo refused");
    let tmp = scratch();

    let denied = probe(json!({"mode": "exec", "command": command}), &["--isolation", "bwrap"], tmp.path()).ok();
    assert_eq!(denied["stdout"], "refused\n");
    assert_eq!(listener.accept().map(|_| ()).map_err(|e| e.kind()), Err(ErrorKind::WouldBlock), "a connection arrived");

    // The flag really grants it: the same command now connects.
    let allowed =
        probe(json!({"mode": "exec", "command": command}), &["--isolation", "bwrap", "--allow-network"], tmp.path())
            .ok();
    assert_eq!(allowed["stdout"], "connected\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_file_api_cannot_follow_a_planted_symlink_out_of_the_sandbox() {
    for mode in isolation_modes() {
        let tmp = scratch();
        let host = host(isolation(mode).await, tmp.path(), Default::default());
        let connector = host.connector("local", &EventLog::discard()).await.unwrap();
        let sandbox = connector.create(&Default::default()).await.unwrap();
        let session = Session::new(sandbox.clone(), None, EventLog::discard()).unwrap();
        let planted =
            session.exec("ln -s / escape && ln -s /etc/hostname host-file", ExecOptions::default()).await.unwrap();
        assert_eq!(planted.exit_code, 0, "{planted:?}");

        for path in ["escape/etc/hostname", "host-file"] {
            let err = session.read_file(path).await.unwrap_err();
            assert_eq!(err.kind, flue::sandbox::error::ErrorKind::PermissionDenied, "{mode} {path}: {err}");
            assert!(err.message.contains("outside the sandbox root"), "{err}");
        }
        assert!(session.write_file("escape/tmp/flue-planted", b"x").await.is_err());
        assert!(!std::path::Path::new("/tmp/flue-planted").exists());
        // Paths outside the root are refused outright, with the reason.
        let err = session.read_file("/etc/passwd").await.unwrap_err();
        assert_eq!(err.kind, flue::sandbox::error::ErrorKind::PermissionDenied, "{err}");
        connector.delete(sandbox.id()).await.unwrap();
    }
}

#[test]
fn agents_cannot_reach_the_host_through_wasi() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let tmp = scratch();
    let out = crate::support::output(
        crate::support::flue()
            .args(["run"])
            .arg(crate::support::fixture("probe"))
            .args(["--payload", &json!({"mode": "wasi", "addr": addr}).to_string(), "--events", "json"])
            .env("TMPDIR", tmp.path())
            .env("FLUE_TEST_SECRET", "hunter2"),
    );
    let result = out.ok();
    assert!(result["file"]["err"].is_string(), "an agent read a host file: {result}");
    assert!(result["dir"]["err"].is_string(), "an agent listed a host directory: {result}");
    assert_eq!(result["env"], json!([]), "an agent saw environment variables");
    assert_eq!(result["args"], json!([]));
    assert!(result["tcp"]["err"].is_string(), "an agent opened a socket: {result}");
    assert_eq!(listener.accept().map(|_| ()).map_err(|e| e.kind()), Err(ErrorKind::WouldBlock));
}

#[tokio::test(flavor = "multi_thread")]
async fn command_output_is_capped_with_a_marker() {
    for mode in isolation_modes() {
        let tmp = scratch();
        let mut config = flue::sandbox::local::LocalConfig::new(isolation(mode).await);
        config.base_dir = tmp.path().to_path_buf();
        config.output_cap = 4096;
        let connector = flue::sandbox::local::LocalConnector::new(config);
        let sandbox = connector.create(&Default::default()).await.unwrap();
        let session = Session::new(sandbox.clone(), None, EventLog::discard()).unwrap();
        let out =
            session.exec("head -c 100000 /dev/zero | tr '\\0' a; echo done >&2", ExecOptions::default()).await.unwrap();
        assert_eq!(out.exit_code, 0);
        assert!(out.stdout.starts_with(&"a".repeat(4096)), "{mode}");
        assert!(
            out.stdout.contains("[flue: output truncated: kept the first 4096 bytes, dropped 95904 more]"),
            "{mode}: {}",
            &out.stdout[4096..]
        );
        assert_eq!(out.stderr, "done\n", "{mode}: the other stream is capped on its own");
        connector.delete(sandbox.id()).await.unwrap();
    }
}

#[test]
fn a_remembered_bubblewrap_probe_is_trusted_then_dropped_when_bubblewrap_fails() {
    if skip_without_bwrap(
        "isolation::a_remembered_bubblewrap_probe_is_trusted_then_dropped_when_bubblewrap_fails",
        "it tests the probe of bubblewrap itself",
    ) {
        return;
    }
    let tmp = scratch();
    let cache = tmp.path().join("cache");
    let record = cache.join("bwrap-probe");
    let run_in = |mode: &str, path: &std::ffi::OsStr| {
        let payload = json!({"mode": "exec", "command": "echo ran"}).to_string();
        crate::support::output(
            crate::support::flue()
                .arg("run")
                .arg(crate::support::fixture("probe"))
                .args(["--payload", &payload, "--isolation", "auto", "--exec-mode", mode, "--events", "json"])
                .arg("--cache-dir")
                .arg(&cache)
                .env("TMPDIR", tmp.path())
                .env("PATH", path),
        )
    };
    let run = |path: &std::ffi::OsStr| run_in("supervisor", path);
    let real_path = std::env::var_os("PATH").unwrap_or_default();

    // A successful probe is recorded with what it depends on, then trusted.
    assert_eq!(run(&real_path).ok()["stdout"], "ran\n");
    let recorded = std::fs::read_to_string(&record).expect("the probe was recorded");
    assert!(recorded.starts_with("boot ") && recorded.contains("bwrap /"), "{recorded}");
    assert_eq!(run(&real_path).ok()["stdout"], "ran\n");

    // A bwrap that passes the probe but cannot set up a sandbox: the command
    // never runs unisolated, the error says why, and the record goes.
    let fake = tmp.path().join("fake-bin");
    std::fs::create_dir(&fake).unwrap();
    let script = fake.join("bwrap");
    std::fs::write(
        &script,
        "#!/bin/sh\ncase \"$*\" in *'--ro-bind / / -- true'*) exit 0;; esac\n\
         echo 'bwrap: Creating new namespace failed: Operation not permitted' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let fake_path = std::env::join_paths(std::iter::once(fake).chain(std::env::split_paths(&real_path))).unwrap();
    let failed = run(&fake_path);
    assert_ne!(failed.code, 0, "{}", failed.stdout);
    assert!(failed.stderr.contains("bubblewrap could not set up the sandbox"), "{}", failed.stderr);
    assert!(failed.stderr.contains("Operation not permitted"), "{}", failed.stderr);
    assert!(!failed.stdout.contains("ran"), "{}", failed.stdout);
    assert!(!record.exists(), "the wrong record was kept");

    // The same with a bubblewrap per command: the sandbox's shell never
    // said it started, whatever bubblewrap printed.
    std::fs::write(
        &script,
        "#!/bin/sh\ncase \"$*\" in *'--ro-bind / / -- true'*) exit 0;; esac\necho 'no namespace' >&2\nexit 1\n",
    )
    .unwrap();
    let failed = run_in("per-command", &fake_path);
    assert_ne!(failed.code, 0, "{}", failed.stdout);
    assert!(failed.stderr.contains("bubblewrap could not set up the sandbox: no namespace"), "{}", failed.stderr);
    assert!(!record.exists(), "the wrong record was kept");
    // And a command of its own that exits 1 after printing `bwrap: ` is
    // the command's result, not a failed sandbox.
    let payload = json!({"mode": "exec", "command": "echo 'bwrap: not really' >&2; exit 1"}).to_string();
    let own = crate::support::output(
        crate::support::flue()
            .arg("run")
            .arg(crate::support::fixture("probe"))
            .args(["--payload", &payload, "--isolation", "bwrap", "--exec-mode", "per-command", "--events", "none"])
            .env("TMPDIR", tmp.path()),
    );
    let result = own.ok();
    assert_eq!(result["exitCode"], 1, "{result}");
}

/// An fd flue inherited from whoever started it (a terminal, a socket, a
/// file) never reaches an isolated command, in either exec mode; nor does a
/// volume's directory fd, which would lead out of the sandbox with `..`.
#[test]
fn fds_flue_inherited_or_mounts_with_never_reach_a_command() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    if skip_without_bwrap(
        "isolation::fds_flue_inherited_or_mounts_with_never_reach_a_command",
        "unisolated commands reach the host anyway",
    ) {
        return;
    }
    let secret = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(secret.path(), "host secret").unwrap();
    for mode in ["supervisor", "per-command"] {
        let tmp = scratch();
        let data = scratch();
        let payload = json!({"mode": "exec", "command": "ls /proc/self/fd; cat <&47",
                             "volume": {"name": "v", "path": "/data", "create": true}});
        let mut command =
            crate::support::flue_probe(payload, &["--isolation", "bwrap", "--exec-mode", mode], tmp.path());
        command.env("FLUE_DATA_DIR", data.path());
        let file = std::fs::File::open(secret.path()).unwrap();
        let fd = file.as_raw_fd();
        // SAFETY: dup2 between fork and exec; the fd is open in the parent.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(fd, 47) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let result = crate::support::output(&mut command).ok();
        let listed: Vec<&str> = result["stdout"].as_str().unwrap().lines().collect();
        // 0-2, and the fd `ls` opens on the directory itself.
        assert_eq!(listed, ["0", "1", "2", "3"], "{mode}: {result}");
        assert!(!result["stdout"].as_str().unwrap().contains("host secret"), "{mode}: {result}");
        drop(file);
    }
}
