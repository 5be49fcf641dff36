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
    crate::support::crate_with_build_script(
        &agent,
        "evil",
        true,
        &format!(
            "fn main() {{\n\
             let outside = std::fs::write({marker:?}, \"planted\").map_err(|e| e.kind());\n\
             let inside = std::fs::write(\"planted.txt\", \"planted\").map_err(|e| e.kind());\n\
             let secret = std::fs::read_to_string({secret:?}).map_err(|e| e.kind());\n\
             panic!(\"BUILD-SCRIPT-RAN outside={{outside:?}} inside={{inside:?}} secret={{secret:?}}\");\n}}\n"
        ),
    );
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
    let host = addr.split('/').next().unwrap();
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\
         Connection: close\r\n\r\n{{}}"
    )
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

// What follows plays a hostile agent with a toolchain of its own: its
// `rust-toolchain.toml` names `tc/` in the agent, so its `cargo` — a shell
// script the agent's author wrote — runs as the build, with the power of a
// build script.

/// A file on the `PATH` of the tests, canonical.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .filter(|dir| dir.is_absolute())
        .map(|dir| dir.join(name))
        .find(|file| file.is_file())
        .and_then(|file| file.canonicalize().ok())
}

/// The sysroot of the Rust the tests build with (it has the wasm target).
fn rust_sysroot() -> String {
    let out = std::process::Command::new("rustc")
        .args(["--print", "sysroot"])
        .current_dir(crate::support::repo_root())
        .output()
        .expect("run rustc");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// rustup's home, as the tests' rustup has it.
fn rustup_home() -> PathBuf {
    std::env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".rustup"))
}

/// `flue build --isolation bwrap AGENT`, with no `RUSTUP_TOOLCHAIN` (cargo
/// sets it for the tests; it would override the agent's own toolchain).
fn isolated_build(agent: &Path) -> std::process::Command {
    let mut command = flue();
    command.args(["build", "--isolation", "bwrap"]).arg(agent).env_remove("RUSTUP_TOOLCHAIN");
    command
}

/// A Rust agent `name` in `parent` whose toolchain is its own `tc/`: its
/// `rustc` answers `sysroot` to `--print sysroot`, its `cargo` runs
/// `cargo_script` (sh).
fn agent_with_own_toolchain(parent: &Path, name: &str, sysroot: &str, cargo_script: &str) -> PathBuf {
    let agent = parent.join(name);
    std::fs::create_dir_all(agent.join("src")).unwrap();
    std::fs::write(
        agent.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[lib]\ncrate-type = \
             [\"cdylib\"]\n\n[workspace]\n"
        ),
    )
    .unwrap();
    std::fs::write(agent.join("src/lib.rs"), "").unwrap();
    std::fs::write(agent.join("rust-toolchain.toml"), format!("[toolchain]\npath = {:?}\n", agent.join("tc"))).unwrap();
    for (tool, script) in [("rustc", format!("echo '{sysroot}'")), ("cargo", cargo_script.to_string())] {
        let path = agent.join("tc/bin").join(tool);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    agent
}

/// rustup, for test `test` of an isolated build; `None` (said why) when
/// bubblewrap or rustup is missing here.
fn rustup_for_isolated_build(test: &str) -> Option<PathBuf> {
    if crate::support::skip_without_bwrap(test, "isolated builds") {
        return None;
    }
    let rustup = on_path("rustup");
    if rustup.is_none() {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "skipped {test}: it needs rustup");
    }
    rustup
}

#[test]
fn a_build_cannot_read_the_users_cargo_credentials() {
    let Some(rustup) = rustup_for_isolated_build("a_build_cannot_read_the_users_cargo_credentials") else { return };
    let dir = scratch();
    // A home whose cargo (rustup's proxies) is on the PATH, with a
    // crates.io token in credentials.toml and others in config.toml.
    let home = dir.path().join("home");
    let cargo_home = home.join(".cargo");
    std::fs::create_dir_all(cargo_home.join("bin")).unwrap();
    for tool in ["cargo", "rustc", "rustup"] {
        std::os::unix::fs::symlink(&rustup, cargo_home.join("bin").join(tool)).unwrap();
    }
    std::fs::write(cargo_home.join("credentials.toml"), "[registry]\ntoken = \"cio-CREDENTIALS-TOKEN\"\n").unwrap();
    std::fs::write(
        cargo_home.join("config.toml"),
        "[registry]\ntoken = \"cio-CONFIG-TOKEN\"\n[registries.mine]\nindex = \"sparse+https://example.invalid/\"\n\
         token = \"mine-CONFIG-TOKEN\"\ncredential-provider = \"/bin/true\"\n",
    )
    .unwrap();
    // Its cargo prints every cargo file it can find.
    let script = format!(
        "echo OWN-CARGO-RAN >&2\nfor f in {home:?}/.cargo/* \"$CARGO_HOME\"/* /root/.cargo/*; do cat \"$f\" >&2; done\n\
         exit 1",
        home = home.display().to_string()
    );
    let agent = agent_with_own_toolchain(dir.path(), "reader", &rust_sysroot(), &script);
    // Its bin/ on the PATH; and, as some set ups have, the cargo home
    // itself (a directory on the PATH is shown whole: its credentials and
    // configuration must be masked).
    let path = std::env::join_paths(
        [cargo_home.join("bin"), cargo_home.clone()]
            .into_iter()
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    let out = output(isolated_build(&agent).env("HOME", &home).env("PATH", path).env("RUSTUP_HOME", rustup_home()));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("OWN-CARGO-RAN"), "{}", out.stderr);
    assert!(!out.stderr.contains("CREDENTIALS-TOKEN"), "the build read ~/.cargo/credentials.toml: {}", out.stderr);
    assert!(!out.stderr.contains("CONFIG-TOKEN"), "the build read a token from ~/.cargo/config.toml: {}", out.stderr);
    assert!(!out.stderr.contains("/bin/true"), "the build got a credential provider: {}", out.stderr);
}

#[test]
fn a_build_reaches_no_socket_of_the_host() {
    if crate::support::skip_without_bwrap("a_build_reaches_no_socket_of_the_host", "isolated builds") {
        return;
    }
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    tcp.set_nonblocking(true).unwrap();
    let port = tcp.local_addr().unwrap().port();
    let name = format!("flue-test-{}-{port}", std::process::id());
    let unix = {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        std::os::unix::net::UnixListener::bind_addr(&addr).unwrap()
    };
    unix.set_nonblocking(true).unwrap();

    let dir = scratch();
    let agent = dir.path().join("caller");
    crate::support::crate_with_build_script(
        &agent,
        "caller",
        true,
        &format!(
            "use std::os::linux::net::SocketAddrExt;\n\
             fn main() {{\n\
             let tcp = std::net::TcpStream::connect(\"127.0.0.1:{port}\").map(|_| ()).map_err(|e| e.kind());\n\
             let addr = std::os::unix::net::SocketAddr::from_abstract_name(b\"{name}\").unwrap();\n\
             let unix = std::os::unix::net::UnixStream::connect_addr(&addr).map(|_| ()).map_err(|e| e.kind());\n\
             panic!(\"BUILD-SCRIPT-RAN tcp={{tcp:?}} unix={{unix:?}}\");\n}}\n"
        ),
    );
    let out = output(flue().args(["build", "--isolation", "bwrap"]).arg(&agent));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("BUILD-SCRIPT-RAN"), "{}", out.stderr);
    let would_block =
        |accepted: std::io::Result<()>| matches!(&accepted, Err(err) if err.kind() == std::io::ErrorKind::WouldBlock);
    assert!(would_block(tcp.accept().map(drop)), "a build connected to 127.0.0.1:{port}: {}", out.stderr);
    assert!(would_block(unix.accept().map(drop)), "a build connected to @{name}: {}", out.stderr);
}

#[test]
fn a_build_cannot_poison_later_builds() {
    if crate::support::skip_without_bwrap("a_build_cannot_poison_later_builds", "isolated builds") {
        return;
    }
    let dir = scratch();
    let planted = format!("planted-{}", dir.path().file_name().unwrap().to_string_lossy());
    // Each build first says what an earlier build left for it, then leaves
    // its own: a cargo configuration, a `rustc` in the cargo home's bin/,
    // files in the registry's caches and sources.
    let script = format!(
        "test -e \"$CARGO_HOME/config\" && echo SEEN-CONFIG >&2\n\
         test -e \"$CARGO_HOME/bin/rustc\" && echo SEEN-RUSTC >&2\n\
         test -e \"$CARGO_HOME/registry/{planted}\" && echo SEEN-REGISTRY >&2\n\
         ls \"$CARGO_HOME\"/registry/src/*/{planted} >/dev/null 2>&1 && echo SEEN-SOURCE >&2\n\
         printf '[build]\\nrustc-wrapper = \"/bin/false\"\\n' > \"$CARGO_HOME/config\"\n\
         mkdir -p \"$CARGO_HOME/bin\" && printf '#!/bin/sh\\nexit 1\\n' > \"$CARGO_HOME/bin/rustc\"\n\
         mkdir -p \"$CARGO_HOME/registry/src/x\"\n\
         echo planted > \"$CARGO_HOME/registry/{planted}\"\n\
         for source in \"$CARGO_HOME\"/registry/src/*/; do echo planted > \"$source/{planted}\"; done\n\
         echo OWN-CARGO-RAN >&2\nexit 1"
    );
    let sysroot = rust_sysroot();
    let first = agent_with_own_toolchain(dir.path(), "first", &sysroot, &script);
    let second = agent_with_own_toolchain(dir.path(), "second", &sysroot, &script);
    for (agent, what) in [(&first, "the first build"), (&first, "its second build"), (&second, "another agent's build")]
    {
        let out = output(&mut isolated_build(agent));
        assert_eq!(out.code, 2, "{what}: {}", out.stderr);
        assert!(out.stderr.contains("OWN-CARGO-RAN"), "{what}: {}", out.stderr);
        assert!(!out.stderr.contains("SEEN-"), "{what} saw what an earlier build planted: {}", out.stderr);
    }
}

#[test]
fn a_build_never_sees_the_projects_env() {
    if crate::support::skip_without_bwrap("a_build_never_sees_the_projects_env", "isolated builds") {
        return;
    }
    // A project whose root is the Cargo workspace of its agents.
    let project = scratch();
    let root = project.path();
    std::fs::write(root.join("flue.toml"), "[agents.evil]\nwebhook = true\n").unwrap();
    std::fs::write(root.join("Cargo.toml"), "[workspace]\nresolver = \"3\"\nmembers = [\"agents/*\"]\n").unwrap();
    std::fs::write(root.join(".env"), "DAYTONA_API_KEY=dtn-PROJECT-SECRET\n").unwrap();
    std::fs::write(root.join(".env.local"), "OPENAI_API_KEY=sk-LOCAL-SECRET\n").unwrap();
    std::fs::create_dir_all(root.join(".flue")).unwrap();
    std::fs::write(root.join(".flue/runs.sqlite"), "RUN-STORE-SECRET").unwrap();
    let agent = root.join("agents/evil");
    crate::support::crate_with_build_script(
        &agent,
        "evil",
        false,
        "fn main() {\n\
         let read = |p: &str| std::fs::read_to_string(p).map_err(|e| e.kind());\n\
         panic!(\"BUILD-SCRIPT-RAN env={:?} local={:?} store={:?}\", read(\"../../.env\"), read(\"../../.env.local\"), \
         read(\"../../.flue/runs.sqlite\"));\n}\n",
    );
    let out = output(flue().args(["build", "--isolation", "bwrap"]).arg(&agent));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("BUILD-SCRIPT-RAN env=Err(NotFound)"), "{}", out.stderr);
    for secret in ["PROJECT-SECRET", "LOCAL-SECRET", "RUN-STORE-SECRET"] {
        assert!(!out.stderr.contains(secret), "the build read the project's {secret}: {}", out.stderr);
    }
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

#[test]
fn a_component_outside_the_builds_directory_is_never_published() {
    if crate::support::skip_without_bwrap(
        "a_component_outside_the_builds_directory_is_never_published",
        "isolated builds",
    ) {
        return;
    }
    let dir = scratch();
    // A host file the agent's author would like flue to take as its component.
    let host = dir.path().join("host");
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("lure.wasm"), "HOST-FILE").unwrap();
    let agent_dir = dir.path().join("lurer");
    // Its cargo makes the release directory a link to the host directory,
    // and names the file in it as the component.
    let script = format!(
        "release=\"$CARGO_TARGET_DIR/wasm32-wasip2/release\"\nmkdir -p \"$CARGO_TARGET_DIR/wasm32-wasip2\"\n\
         rm -rf \"$release\"\nln -s {host:?} \"$release\"\n\
         echo '{{\"reason\":\"compiler-artifact\",\"manifest_path\":\"{manifest}\",\"filenames\":[\"'\"$release\"'/lure.wasm\"]}}'",
        host = host.display().to_string(),
        manifest = agent_dir.join("Cargo.toml").display()
    );
    let agent = agent_with_own_toolchain(dir.path(), "lurer", &rust_sysroot(), &script);
    let out = output(&mut isolated_build(&agent));
    assert_eq!(out.code, 2, "flue published a file outside the build: {}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.trim().is_empty(), "{}", out.stdout);
}

#[test]
fn rustup_is_never_handed_a_toolchain_the_build_named() {
    let Some(rustup) = rustup_for_isolated_build("rustup_is_never_handed_a_toolchain_the_build_named") else { return };
    let dir = scratch();
    let marker = dir.path().join("target-added");
    // A rustup that records `rustup target add`, and otherwise is rustup.
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(
        bin.join("rustup"),
        format!(
            "#!/bin/sh\nif [ \"$1\" = target ]; then echo \"$@\" > {marker:?}; exit 1; fi\nexec {rustup:?} \"$@\"\n",
            marker = marker.display().to_string(),
            rustup = rustup.display().to_string()
        ),
    )
    .unwrap();
    std::fs::set_permissions(bin.join("rustup"), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The agent's rustc names, as its sysroot, a directory of its own named
    // like an official toolchain, without the wasm target.
    let named = dir.path().join("toolchains/nightly-2019-01-01-x86_64-unknown-linux-gnu");
    std::fs::create_dir_all(&named).unwrap();
    let agent = agent_with_own_toolchain(dir.path(), "namer", &named.display().to_string(), "exit 1");
    let path =
        std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())))
            .unwrap();
    let out = output(isolated_build(&agent).env("PATH", path));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(!marker.exists(), "flue ran `rustup {}`", std::fs::read_to_string(&marker).unwrap_or_default().trim());
    assert!(out.stderr.contains("not one of rustup's installed official toolchains"), "{}", out.stderr);
}
