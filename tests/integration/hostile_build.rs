//! Building an agent runs the agent's code: each test plays one way that
//! code (or a planted tool) could reach the host during `flue build`, and
//! checks that it does not.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::support::{bwrap_available, flue, output, scratch};

/// A Rust agent whose build script tries to write `marker` (outside its
/// source), to write into its own source, and to read `secret` (a file of
/// the project around it); then fails the build, saying how each went.
fn hostile_crate(parent: &Path, marker: &Path, secret: &Path) -> PathBuf {
    let agent = parent.join("evil");
    std::fs::create_dir_all(agent.join("src")).unwrap();
    std::fs::write(
        agent.join("Cargo.toml"),
        "[package]\nname = \"evil\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[lib]\ncrate-type = [\"cdylib\"]\n\n\
         [workspace]\n",
    )
    .unwrap();
    std::fs::write(agent.join("src/lib.rs"), "").unwrap();
    std::fs::write(
        agent.join("build.rs"),
        format!(
            "fn main() {{\n\
             let outside = std::fs::write({marker:?}, \"planted\").map_err(|e| e.kind());\n\
             let inside = std::fs::write(\"planted.txt\", \"planted\").map_err(|e| e.kind());\n\
             let secret = std::fs::read_to_string({secret:?}).map_err(|e| e.kind());\n\
             panic!(\"BUILD-SCRIPT-RAN outside={{outside:?}} inside={{inside:?}} secret={{secret:?}}\");\n}}\n"
        ),
    )
    .unwrap();
    agent
}

#[test]
fn a_build_script_cannot_touch_the_host() {
    let project = scratch();
    let marker = project.path().join("outside/marker");
    std::fs::create_dir_all(marker.parent().unwrap()).unwrap();
    let secret = project.path().join(".env");
    std::fs::write(&secret, "DAYTONA_API_KEY=dtn-secret-value\n").unwrap();
    let agent = hostile_crate(project.path(), &marker, &secret);

    if bwrap_available() {
        let out = output(flue().args(["build", "--isolation", "auto"]).arg(&agent));
        assert_eq!(out.code, 2, "{}", out.stderr);
        // The script ran; what it wrote stayed in its sandbox, and the
        // project around the agent was out of its sight.
        assert!(out.stderr.contains("BUILD-SCRIPT-RAN"), "{}", out.stderr);
        assert!(out.stderr.contains("secret=Err(NotFound)"), "read the project's .env: {}", out.stderr);
        assert!(!out.stderr.contains("dtn-secret-value"), "{}", out.stderr);
        assert!(!marker.exists(), "a build script wrote a file on the host");
        assert!(!agent.join("planted.txt").exists(), "a build script changed the agent's source");
        assert!(!out.stderr.contains("unisolated"), "{}", out.stderr);
    } else {
        eprintln!("note: bubblewrap unavailable; the isolated build is not checked");
    }

    // Without isolation it can, and flue says so plainly.
    let out = output(flue().args(["build", "--isolation", "none"]).arg(&agent));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("BUILD-SCRIPT-RAN outside=Ok(())"), "{}", out.stderr);
    assert!(
        out.stderr.contains("building agents runs their build scripts on this machine, as you, unisolated"),
        "{}",
        out.stderr
    );
    assert!(marker.exists());
}

/// An executable script at `path` that creates `marker` and fails.
fn planted_tool(path: &Path, marker: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("#!/bin/sh\ntouch {}\nexit 1\n", marker.display())).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_componentize_js_planted_in_an_ancestor_node_modules_is_never_run() {
    let project = scratch();
    let marker = project.path().join("ran");
    planted_tool(&project.path().join("node_modules/.bin/componentize-js"), &marker);
    assert_eq!(output(flue().args(["new", "js", "a"]).current_dir(project.path())).code, 0);
    // Unisolated, so that a planted tool, if flue picked it, could run.
    let out = output(flue().args(["build", "--isolation", "none", "a"]).current_dir(project.path()));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!marker.exists(), "flue ran a componentize-js found beside the agent");
}

/// A fresh, private cache whose `toolchains/` holds a planted
/// componentize-js and componentize-py, each with a marker claiming a
/// complete install; running either creates `ran`.
fn planted_cache(dir: &Path, ran: &Path) -> PathBuf {
    let cache = dir.join("cache");
    let toolchains = cache.join("toolchains");
    std::fs::create_dir_all(&toolchains).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&toolchains, std::fs::Permissions::from_mode(0o700)).unwrap();
    let js = toolchains.join("componentize-js-0.23.0");
    planted_tool(&js.join("node_modules/.bin/componentize-js"), ran);
    std::fs::write(js.join(".installed"), "componentize-js 0.23.0\nsha256 planted\n").unwrap();
    let py = toolchains.join("componentize-py-0.25.1");
    std::fs::create_dir_all(py.join("site/componentize_py")).unwrap();
    std::fs::write(
        py.join("site/componentize_py/__init__.py"),
        format!("open({:?}, 'w').close()\ndef script():\n    return 1\n", ran.display().to_string()),
    )
    .unwrap();
    std::fs::write(py.join(".installed"), "componentize-py 0.25.1 from PyPI\n").unwrap();
    for dir in [&js, &py] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    cache
}

/// `flue build DIR` for a new `lang` agent in `dir`, with `cache`, its
/// registries pointing at a closed port (so an install fails at once,
/// without network), unisolated so that a planted tool could run.
fn build_with_cache(lang: &str, dir: &Path, cache: &Path) -> crate::support::Output {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let agent = dir.join(format!("agent-{lang}"));
    if !agent.exists() {
        let name = format!("agent-{lang}");
        assert_eq!(output(flue().args(["new", lang, &name]).current_dir(dir)).code, 0);
    }
    output(
        flue()
            .args(["build", "--isolation", "none"])
            .arg(&agent)
            .env("FLUE_CACHE_DIR", cache)
            .env("PIP_INDEX_URL", format!("http://{closed}/simple"))
            .env_remove("PIP_FIND_LINKS")
            .env_remove("PIP_EXTRA_INDEX_URL")
            .env("PIP_RETRIES", "0")
            .env("npm_config_registry", format!("http://{closed}/"))
            .env("npm_config_fetch_retries", "0"),
    )
}

#[test]
fn a_planted_install_in_flues_own_cache_is_reinstalled_never_run() {
    let dir = scratch();
    let ran = dir.path().join("ran");
    let cache = planted_cache(dir.path(), &ran);
    for (lang, tool) in [("js", "componentize-js 0.23.0"), ("python", "componentize-py 0.25.1")] {
        let out = build_with_cache(lang, dir.path(), &cache);
        assert_eq!(out.code, 2, "{lang}: {}", out.stderr);
        assert!(out.stderr.contains(&format!("installing {tool} afresh")), "{lang}: {}", out.stderr);
        assert!(out.stderr.contains(&format!("could not install {tool}")), "{lang}: {}", out.stderr);
        assert!(!ran.exists(), "{lang}: flue ran a planted toolchain");
    }
    assert!(!cache.join("toolchains/componentize-js-0.23.0/node_modules").exists(), "the planted install stayed");
}

#[test]
fn a_toolchain_cache_others_can_write_is_refused() {
    let dir = scratch();
    let ran = dir.path().join("ran");
    let cache = planted_cache(dir.path(), &ran);
    let toolchains = cache.join("toolchains");
    std::fs::set_permissions(&toolchains, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = build_with_cache("js", dir.path(), &cache);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let refused = format!("refusing to use {}: others can write to it (mode 777)", toolchains.display());
    assert!(out.stderr.contains(&refused), "{}", out.stderr);
    assert!(!ran.exists(), "flue ran a tool from a cache others can write to");

    // Someone else's directory is refused too (root can make one).
    if rustix::process::geteuid().is_root() {
        std::fs::set_permissions(&toolchains, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::chown(&toolchains, Some(65534), None).unwrap();
        let out = build_with_cache("js", dir.path(), &cache);
        assert_eq!(out.code, 2, "{}", out.stderr);
        assert!(out.stderr.contains("belongs to uid 65534, not to you"), "{}", out.stderr);
        assert!(!ran.exists(), "flue ran a tool from someone else's directory");
    }
}

/// `flue serve PROJECT ARGS…` started (isolation none), and its URL; or
/// its output when it exits before listening.
fn start_serve(project: &Path, args: &[&str]) -> Result<(std::process::Child, String), crate::support::Output> {
    let mut child = flue()
        .arg("serve")
        .arg(project)
        .args(["--listen", "127.0.0.1:0", "--isolation", "none"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start flue serve");
    let mut first = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut first).unwrap();
    match first.split("listening on ").nth(1) {
        Some(url) => Ok((child, url.trim().trim_start_matches("http://").to_string())),
        None => {
            let status = child.wait().unwrap();
            let mut stderr = String::new();
            child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
            Err(crate::support::Output { code: status.code().unwrap_or(-1), stdout: first, stderr })
        }
    }
}

/// `POST path` with an empty JSON object: the whole response, as text.
fn post(addr: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr.split('/').next().unwrap()).unwrap();
    write!(stream, "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn flue_serve_builds_only_when_asked() {
    let project = scratch();
    let marker = project.path().join("marker");
    let agents = project.path().join("agents");
    std::fs::create_dir_all(&agents).unwrap();
    hostile_crate(&agents, &marker, &project.path().join("flue.toml"));
    std::fs::write(project.path().join("flue.toml"), "[agents.evil]\nwebhook = true\n").unwrap();

    // Without --build: the agent was never built, so it is not served, and
    // its build script never runs.
    let (mut server, addr) =
        start_serve(project.path(), &[]).unwrap_or_else(|out| panic!("serve did not start: {}", out.stderr));
    let response = post(&addr, "/agents/evil/x");
    let _ = server.kill();
    let _ = server.wait();
    assert!(response.starts_with("HTTP/1.1 500"), "{response}");
    assert!(response.contains("has not been built"), "{response}");
    assert!(!response.contains("BUILD-SCRIPT-RAN"), "serving ran the agent's build: {response}");
    assert!(!marker.exists());

    // With --build, it builds at start (and this agent's build fails).
    let out = start_serve(project.path(), &["--build"]).map(|(mut child, _)| {
        let _ = child.kill();
        let _ = child.wait();
    });
    let out = out.expect_err("serve --build started although the agent does not build");
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("BUILD-SCRIPT-RAN"), "{}", out.stderr);
}

/// `--isolation bwrap` where bubblewrap cannot work fails, and says why.
#[test]
fn asking_for_an_isolated_build_without_bubblewrap_fails_clearly() {
    let dir = scratch();
    assert_eq!(output(flue().args(["new", "python", "a"]).current_dir(dir.path())).code, 0);
    let out =
        output(flue().args(["build", "--isolation", "bwrap", "a"]).current_dir(dir.path()).env("PATH", "/nonexistent"));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--isolation bwrap: bubblewrap (bwrap) is not installed"), "{}", out.stderr);
}

#[test]
fn a_program_on_a_relative_path_entry_is_never_run() {
    let dir = scratch();
    let marker = dir.path().join("ran");
    for tool in ["bwrap", "cargo", "rustc", "rustup", "python3", "npm", "node", "componentize-py", "componentize-js"] {
        planted_tool(&dir.path().join("node_modules/.bin").join(tool), &marker);
        // The empty entry means the current directory too.
        planted_tool(&dir.path().join(tool), &marker);
    }
    assert_eq!(output(flue().args(["new", "python", "a"]).current_dir(dir.path())).code, 0);
    let path = format!("node_modules/.bin::{}", std::env::var("PATH").unwrap());
    let out = output(flue().args(["build", "a"]).current_dir(dir.path()).env("PATH", path));
    assert!(!marker.exists(), "flue ran a program from a relative PATH entry: {}", out.stderr);
    assert_eq!(out.code, 0, "{}", out.stderr);
}
