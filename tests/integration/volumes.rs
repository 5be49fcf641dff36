//! Volumes: data one sandbox writes is read by the next, on local and on
//! Daytona (the test server), and `flue volumes` manages them.

use serde_json::{Value, json};

use crate::support::{TestDaytona, bwrap_available, fixture, flue, flue_probe, output, scratch};

#[test]
fn a_local_volume_carries_data_from_one_sandbox_to_the_next() {
    let data = scratch();
    let volumes = |args: &[&str]| output(flue().arg("volumes").args(args).env("FLUE_DATA_DIR", data.path()));
    let created = volumes(&["create", "shared"]);
    assert_eq!(created.code, 0, "{}", created.stderr);
    assert_eq!(volumes(&["create", "shared"]).code, 1, "a second create must say it exists");
    assert!(volumes(&["ls"]).stdout.contains("shared"));
    // Mounted inside the sandbox works in every mode (commands reach it
    // relative to the sandbox); outside it only isolated.
    let mut places = vec![("none", "/workspace/data", "data")];
    if bwrap_available() {
        places.extend([("bwrap", "/workspace/data", "data"), ("bwrap", "/data", "/data")]);
    }
    for (i, (mode, mount, path)) in places.into_iter().enumerate() {
        let tmp = scratch();
        let volume = json!({"name": "shared", "path": mount, "subpath": "runs"});
        let run = |command: String| {
            let payload = json!({"mode": "exec", "command": command, "volume": volume});
            output(flue_probe(payload, &["--isolation", mode], tmp.path()).env("FLUE_DATA_DIR", data.path()))
        };
        let wrote = run(format!("echo 'from sandbox {i}' > {path}/note-{i}; cat {path}/note-{i}"));
        let first = std::fs::read_to_string(data.path().join("volumes/shared/runs").join(format!("note-{i}")));
        assert_eq!(
            first.ok().as_deref(),
            Some(format!("from sandbox {i}\n").as_str()),
            "{mode} {path}: {}",
            wrote.stderr
        );
        let read = run(format!("cat {path}/note-{i}")).ok();
        assert_eq!(read["stdout"], format!("from sandbox {i}\n"), "{mode} {path}: the next sandbox did not see it");
    }
    // Without isolation a path outside the sandbox cannot be a mount.
    let tmp = scratch();
    let refused = output(
        flue_probe(
            json!({"mode": "exec", "command": "true", "volume": {"name": "shared", "path": "/data"}}),
            &["--isolation", "none"],
            tmp.path(),
        )
        .env("FLUE_DATA_DIR", data.path()),
    );
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("without isolation a volume can only be mounted inside the sandbox"),
        "{}",
        refused.stderr
    );
    let missing = output(
        flue_probe(
            json!({"mode": "exec", "command": "true", "volume": {"name": "nope", "path": "/workspace/x"}}),
            &[],
            tmp.path(),
        )
        .env("FLUE_DATA_DIR", data.path()),
    );
    assert!(missing.stderr.contains("no local volume named nope"), "{}", missing.stderr);
    assert_eq!(volumes(&["rm", "shared"]).code, 0);
    assert!(!data.path().join("volumes/shared").exists());
}

#[test]
fn a_daytona_volume_carries_data_from_one_sandbox_to_the_next() {
    let daytona = TestDaytona::start();
    let tmp = scratch();
    let run = |command: &str| {
        let payload = json!({"mode": "exec", "command": command, "volume": {"name": "cache", "path": "/home/daytona/cache", "create": true}});
        daytona.run(&fixture("probe"), &["--payload", &payload.to_string()], tmp.path())
    };
    let wrote = run("echo kept > /home/daytona/cache/file && echo done").ok();
    assert_eq!(wrote["stdout"], "done\n", "{wrote}");
    let read = run("cat /home/daytona/cache/file").ok();
    assert_eq!(read["stdout"], "kept\n", "the second Daytona sandbox did not see the volume's data");
    daytona.assert_no_sandboxes_left();

    let volumes = |args: &[&str]| {
        output(
            daytona
                .flue()
                .arg("volumes")
                .args(args)
                .args(["--sandbox", "daytona", "--connectors"])
                .arg(daytona.connectors.path()),
        )
    };
    let listed = volumes(&["ls"]);
    assert!(listed.stdout.contains("cache") && listed.stdout.contains("ready"), "{}{}", listed.stdout, listed.stderr);
    assert_eq!(volumes(&["rm", "cache"]).code, 0);
    let gone = volumes(&["rm", "cache"]);
    assert!(gone.stderr.contains("no Daytona volume named cache"), "{}", gone.stderr);
    // Mounting a missing volume without create is a clear error.
    let payload = json!({"mode": "exec", "command": "true", "volume": {"name": "cache", "path": "/home/daytona/c"}});
    let missing = daytona.run(&fixture("probe"), &["--payload", &payload.to_string()], tmp.path());
    assert!(missing.stderr.contains("no Daytona volume named cache"), "{}", missing.stderr);
}

/// A symbolic link planted in a volume by one sandbox never lets a later
/// sandbox's mount, its file API or its commands reach the host; mount
/// paths that would hide /proc (and the rest the sandbox needs) are refused.
#[test]
fn a_link_planted_in_a_volume_never_reaches_the_host() {
    let data = scratch();
    let host_dir = scratch();
    std::fs::write(host_dir.path().join("secret"), "host secret").unwrap();
    let target = host_dir.path().to_string_lossy().into_owned();
    for mode in crate::support::isolation_modes() {
        let tmp = scratch();
        let run = |volume: Value, extra: Value| {
            let mut payload = json!({"mode": "exec", "command": "true", "volume": volume});
            payload.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            output(flue_probe(payload, &["--isolation", mode], tmp.path()).env("FLUE_DATA_DIR", data.path()))
        };
        let whole = json!({"name": "v", "path": "/workspace/v", "create": true});
        // An earlier sandbox (a model's bash, say) plants the links.
        let planted = run(whole.clone(), json!({"command": format!("ln -sfn {target} v/esc && ln -sfn ../.. v/up")}));
        assert_eq!(planted.code, 0, "{mode}: {}", planted.stderr);

        for subpath in ["esc", "esc/x", "up", "up/x"] {
            let refused = run(json!({"name": "v", "path": "/workspace/v", "subpath": subpath}), json!({}));
            assert_ne!(refused.code, 0, "{mode}: subpath {subpath} through a link was mounted");
            assert!(refused.stderr.contains("symbolic link"), "{mode} {subpath}: {}", refused.stderr);
        }
        assert!(!host_dir.path().join("x").exists(), "{mode}: a directory was created on the host");

        // The whole volume mounted: the link is there, but leads nowhere.
        let through = run(
            whole.clone(),
            json!({"write": {"path": "v/esc/planted", "text": "x"}, "read": "v/esc/secret",
                   "command": "cat v/esc/secret 2>&1; echo; ls v/up/ 2>&1"}),
        );
        assert_eq!(through.code, 0, "{mode}: {}", through.stderr);
        let result = through.ok();
        assert!(result["wrote"].is_string(), "{mode}: the file API wrote through the link: {result}");
        assert!(result["read"]["error"].is_string(), "{mode}: the file API read through the link: {result}");
        assert!(!host_dir.path().join("planted").exists(), "{mode}: a file was written on the host");
        if mode == "bwrap" {
            assert!(!result["stdout"].as_str().unwrap().contains("host secret"), "{mode}: {result}");
        }

        // Mount paths the sandbox itself relies on.
        for path in ["/proc", "/", "/dev/shm", "/run", "/usr/lib"] {
            let refused = run(json!({"name": "v", "path": path}), json!({}));
            assert_ne!(refused.code, 0, "{mode}: a volume was mounted at {path}");
            assert!(refused.stderr.contains("the mount path"), "{mode} {path}: {}", refused.stderr);
        }
    }
}

/// bubblewrap follows links in a mount point's path; a command can plant
/// one where a volume's mount point will be looked up (inside the sandbox
/// directory, or inside another volume), then make the supervisor restart.
/// No mount point is ever looked up there, so nothing is created on the
/// host; and a NUL byte cannot add bubblewrap arguments of its own.
#[test]
fn mount_points_cannot_be_redirected_and_nul_bytes_add_no_mounts() {
    if crate::support::skip_without_bwrap(
        "volumes::mount_points_cannot_be_redirected_and_nul_bytes_add_no_mounts",
        "bubblewrap's own mount setup is what is attacked",
    ) {
        return;
    }
    let data = scratch();
    let host_dir = scratch();
    let target = host_dir.path().to_string_lossy().into_owned();
    for mode in ["supervisor", "per-command"] {
        let tmp = scratch();
        let run = |payload: Value| {
            output(
                flue_probe(payload, &["--isolation", "bwrap", "--exec-mode", mode], tmp.path())
                    .env("FLUE_DATA_DIR", data.path()),
            )
        };
        // A mount inside the sandbox: the command moves its parent away,
        // links it to the host, kills the supervisor; the next command
        // needs a new one.
        let swapped = run(json!({"mode": "execs", "volume": {"name": "v", "path": "/workspace/a/b", "create": true},
        "commands": [
            format!("mv /workspace/a /workspace/c; ln -s /oldroot{target} /workspace/a; kill -9 $PPID; sleep 5"),
            "ls /workspace/a/ 2>&1; echo next",
        ]}));
        assert_eq!(swapped.code, 0, "{mode}: {}", swapped.stderr);
        assert!(!host_dir.path().join("b").exists(), "{mode}: bubblewrap created a directory on the host");

        // A mount inside another volume, where a link was planted.
        let planted = run(json!({"mode": "exec", "volume": {"name": "v", "path": "/data", "create": true},
            "command": format!("ln -sfn /oldroot{target} /data/x")}));
        assert_eq!(planted.code, 0, "{mode}: {}", planted.stderr);
        let nested = run(json!({"mode": "exec", "command": "true", "volumes": [
            {"name": "v", "path": "/data"}, {"name": "w", "path": "/data/x/sub", "create": true}]}));
        assert_ne!(nested.code, 0, "{mode}: nested mounts were accepted");
        assert!(nested.stderr.contains("one inside the other"), "{mode}: {}", nested.stderr);
        assert!(!host_dir.path().join("sub").exists(), "{mode}: a directory was created on the host");

        // NUL bytes in a mount path, a command, a variable.
        let nul_mount = run(json!({"mode": "exec", "command": "ls /host", "volume":
            {"name": "v", "path": "/data\u{0}--bind\u{0}/\u{0}/host"}}));
        assert_ne!(nul_mount.code, 0, "{mode}: a mount path with NUL bytes was used");
        assert!(nul_mount.stderr.contains("NUL"), "{mode}: {}", nul_mount.stderr);
        let nul_command = run(json!({"mode": "exec", "command": "ls /host\u{0}--bind\u{0}/\u{0}/host"}));
        assert!(nul_command.stderr.contains("NUL"), "{mode}: {}", nul_command.stderr);
        assert!(!nul_command.stdout.contains("\"exitCode\": 0"), "{mode}: {}", nul_command.stdout);
    }
}
