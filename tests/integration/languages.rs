//! Agents in Python and JavaScript: examples, `flue new`/`build`/`run`,
//! rebuilding when stale, clear errors for missing toolchains, and a
//! locked-down WASI.

use std::io::ErrorKind;
use std::net::TcpListener;

use serde_json::{Value, json};

use crate::support::{TestDaytona, example_in, flue, output, run_agent, scratch};

/// `result` with every local sandbox's directory written `<sandbox>`:
/// without isolation commands see the real directory, which differs per
/// sandbox (under bubblewrap it is `/workspace` for all).
fn sandbox_paths_erased(result: &Value) -> Value {
    let text = result.to_string();
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find("/flue-local/local-") {
        // The path starts after the last quote before it.
        let start = rest[..at].rfind('"').map_or(0, |q| q + 1);
        let id_end = at + "/flue-local/local-".len();
        let end = id_end + rest[id_end..].find(|c: char| !c.is_ascii_hexdigit()).unwrap_or(rest.len() - id_end);
        out.push_str(&rest[..start]);
        out.push_str("<sandbox>");
        rest = &rest[end..];
    }
    out.push_str(rest);
    serde_json::from_str(&out).unwrap()
}

/// The fields of `hello` that do not depend on the run.
fn hello_shape(result: &Value) -> Value {
    let result = &sandbox_paths_erased(result);
    let read_back = result["readBack"].as_str().unwrap();
    json!({
        "cwd": result["cwd"],
        "files": result["files"],
        "roundTrip": result["roundTrip"],
        "greeting": read_back.split(" (run ").next(),
        "uname": result["uname"]["exitCode"],
        "linux": result["uname"]["stdout"].as_str().unwrap().starts_with("Linux"),
    })
}

/// The fields of `persistent` that do not depend on the run.
fn persistent_shape(result: &Value) -> Value {
    let mut shape = sandbox_paths_erased(result);
    shape.as_object_mut().unwrap().remove("sandbox");
    shape
}

#[test]
fn python_and_javascript_examples_match_rust_on_local() {
    let tmp = scratch();
    let payload = ["--payload", r#"{"name":"Ada"}"#];
    let rust_hello = hello_shape(&run_agent(&example_in("rust", "hello"), &payload, tmp.path()).ok());
    let rust_persistent = persistent_shape(&run_agent(&example_in("rust", "persistent"), &[], tmp.path()).ok());
    assert_eq!(rust_hello["greeting"], "Hello, Ada!");
    for lang in ["python", "js"] {
        let hello = run_agent(&example_in(lang, "hello"), &payload, tmp.path()).ok();
        assert_eq!(hello_shape(&hello), rust_hello, "{lang} hello differs: {hello}");
        let persistent = run_agent(&example_in(lang, "persistent"), &[], tmp.path()).ok();
        assert_eq!(persistent_shape(&persistent), rust_persistent, "{lang} persistent differs");
    }
}

#[test]
fn python_and_javascript_examples_match_rust_on_daytona() {
    let daytona = TestDaytona::start();
    let tmp = scratch();
    let rust_hello = hello_shape(&daytona.run(&example_in("rust", "hello"), &[], tmp.path()).ok());
    let rust_persistent = persistent_shape(&daytona.run(&example_in("rust", "persistent"), &[], tmp.path()).ok());
    assert_eq!(rust_hello["cwd"], "/home/daytona");
    for lang in ["python", "js"] {
        let hello = daytona.run(&example_in(lang, "hello"), &[], tmp.path()).ok();
        assert_eq!(hello_shape(&hello), rust_hello, "{lang} hello differs on daytona");
        let persistent = daytona.run(&example_in(lang, "persistent"), &[], tmp.path()).ok();
        assert_eq!(persistent_shape(&persistent), rust_persistent, "{lang} persistent differs on daytona");
    }
    daytona.assert_no_sandboxes_left();
}

#[test]
fn examples_run_by_name_through_the_binary() {
    let tmp = scratch();
    for name in ["python/hello", "js/hello", "hello"] {
        let out = output(flue().args(["run", name, "--events", "json"]).env("TMPDIR", tmp.path()));
        assert_eq!(out.ok()["roundTrip"], true, "{name}");
    }
}

#[test]
fn new_then_build_then_run_works_from_a_clean_directory() {
    for lang in ["rust", "python", "js"] {
        let dir = scratch();
        let name = format!("my-{lang}-agent");
        let created = output(flue().args(["new", lang, &name]).current_dir(dir.path()));
        assert_eq!(created.code, 0, "{lang}: {}", created.stderr);
        assert!(dir.path().join(&name).join("README.md").is_file());

        let built = output(flue().args(["build", &name]).current_dir(dir.path()));
        assert_eq!(built.code, 0, "{lang}: {}", built.stderr);
        let wasm = built.stdout.trim();
        assert!(wasm.ends_with(".wasm") && std::path::Path::new(wasm).is_file(), "{lang}: {wasm}");

        let ran = output(
            flue().args(["run", &name, "--payload", r#"{"n":1}"#]).current_dir(dir.path()).env("TMPDIR", dir.path()),
        );
        let result = ran.ok();
        assert_eq!(result["agent"], name.as_str(), "{lang}: {result}");
        assert_eq!(result["payload"], json!({"n": 1}));
        assert_eq!(result["listing"], "notes:\nhello.txt\n", "{lang}: {result}");
    }
}

#[test]
fn run_rebuilds_a_python_agent_only_when_its_source_changed() {
    let dir = scratch();
    assert_eq!(output(flue().args(["new", "python", "fresh"]).current_dir(dir.path())).code, 0);
    let agent = dir.path().join("fresh");
    let run = || output(flue().arg("run").arg(&agent).args(["--events", "none"]).env("TMPDIR", dir.path()));
    assert_eq!(run().ok()["agent"], "fresh");
    let built = output(flue().arg("build").arg(&agent));
    let wasm = std::path::PathBuf::from(built.stdout.trim());
    let first_build = std::fs::metadata(&wasm).unwrap().modified().unwrap();

    assert_eq!(run().ok()["agent"], "fresh");
    assert_eq!(std::fs::metadata(&wasm).unwrap().modified().unwrap(), first_build, "rebuilt although nothing changed");

    let source =
        std::fs::read_to_string(agent.join("app.py")).unwrap().replace("\"agent\": \"fresh\"", "\"agent\": \"edited\"");
    std::fs::write(agent.join("app.py"), source).unwrap();
    assert_eq!(run().ok()["agent"], "edited", "the edit was not rebuilt");
}

#[test]
fn a_missing_toolchain_that_cannot_be_installed_says_why() {
    for (lang, tool, missing) in [("python", "componentize-py", "python3"), ("js", "componentize-js", "npm")] {
        let dir = scratch();
        assert_eq!(output(flue().args(["new", lang, "a"]).current_dir(dir.path())).code, 0);
        // A cache without flue's own toolchains, and a PATH without anything.
        let out = output(
            flue()
                .args(["build", "a"])
                .current_dir(dir.path())
                .env("FLUE_CACHE_DIR", dir.path().join("cache"))
                .env("PATH", "/nonexistent"),
        );
        assert_eq!(out.code, 2, "{lang}: {}", out.stderr);
        let want = format!("{tool} is not installed, and flue cannot install it: {missing} is not on the PATH");
        assert!(out.stderr.contains(&want), "{lang}: {}", out.stderr);
    }
}

/// A PATH holding only python3, node and npm (the real programs, linked),
/// so that no installed componentize tool is found.
fn interpreters_only(dir: &std::path::Path) -> std::path::PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let python = std::process::Command::new("python3").args(["-c", "import sys; print(sys.executable)"]).output();
    let python = String::from_utf8(python.expect("python3").stdout).unwrap();
    std::os::unix::fs::symlink(python.trim(), bin.join("python3")).unwrap();
    for tool in ["node", "npm"] {
        let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|p| p.join(tool))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("{tool} is not installed"));
        std::os::unix::fs::symlink(found.canonicalize().unwrap(), bin.join(tool)).unwrap();
    }
    bin
}

#[test]
fn an_unreachable_registry_is_named() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    for (lang, registry_env, registry, names) in [
        ("python", "PIP_INDEX_URL", format!("http://{closed}/simple"), "componentize-py 0.25.1 from PyPI"),
        ("js", "npm_config_registry", format!("http://{closed}/"), "componentize-js 0.23.0 from the npm registry"),
    ] {
        let dir = scratch();
        assert_eq!(output(flue().args(["new", lang, "a"]).current_dir(dir.path())).code, 0);
        // flue's own toolchains are not in this fresh cache, and the PATH has
        // the interpreters only: flue installs, from a registry nobody
        // answers at.
        let out = output(
            flue()
                .args(["build", "a"])
                .current_dir(dir.path())
                .env("FLUE_CACHE_DIR", dir.path().join("cache"))
                .env("PATH", interpreters_only(dir.path()))
                .env(registry_env, &registry)
                .env_remove("PIP_FIND_LINKS")
                .env_remove("PIP_EXTRA_INDEX_URL")
                .env("PIP_RETRIES", "0")
                .env("npm_config_fetch_retries", "0"),
        );
        assert_eq!(out.code, 2, "{lang}: {}", out.stderr);
        assert!(out.stderr.contains(&format!("could not install {names} ({registry})")), "{lang}: {}", out.stderr);
    }
}

#[test]
fn a_python_guest_cannot_reach_the_host_through_wasi() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let tmp = scratch();
    let probe = crate::support::fixture("python-probe");
    let payload = json!({ "addr": listener.local_addr().unwrap().to_string() }).to_string();
    let out = output(
        flue()
            .arg("run")
            .arg(&probe)
            .args(["--payload", &payload, "--events", "json"])
            .env("TMPDIR", tmp.path())
            .env("FLUE_TEST_SECRET", "hunter2"),
    );
    let result = out.ok();
    assert!(result["file"]["err"].is_string(), "read a host file: {result}");
    assert!(result["dir"]["err"].is_string() || result["dir"]["ok"] == json!([]), "listed a host directory: {result}");
    assert_eq!(result["env"], json!({}), "saw environment variables: {result}");
    assert!(result["tcp"]["err"].is_string(), "opened a socket: {result}");
    assert_eq!(listener.accept().map(|_| ()).map_err(|e| e.kind()), Err(ErrorKind::WouldBlock));
}

/// Agents written for `flue:sandbox@0.2.0` keep building and running: a
/// JavaScript one that imports `…@0.2.0` (built against the frozen 0.2.0
/// WIT) and a Rust one that carries the 0.2.0 WIT (linked by semver).
#[test]
fn agents_written_for_0_2_0_still_build_and_run() {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = scratch();
    let js = dir.path().join("old-js");
    std::fs::create_dir_all(&js).unwrap();
    let source = std::fs::read_to_string(repo.join("guest-examples/js/hello/agent.js")).unwrap();
    assert!(source.contains("@0.2.1\""), "the example imports the current version");
    std::fs::write(js.join("agent.js"), source.replace("@0.2.1\"", "@0.2.0\"")).unwrap();

    let rust = dir.path().join("old-rust");
    std::fs::create_dir_all(rust.join("src")).unwrap();
    std::fs::create_dir_all(rust.join("wit")).unwrap();
    for file in ["Cargo.toml", "Cargo.lock", "src/lib.rs"] {
        std::fs::copy(repo.join("guest-examples/rust/hello").join(file), rust.join(file)).unwrap();
    }
    for entry in std::fs::read_dir(repo.join("host/wit-compat/v0_2_0")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), rust.join("wit").join(entry.file_name())).unwrap();
    }
    for agent in [&js, &rust] {
        let out = run_agent(agent, &[], dir.path());
        assert_eq!(out.ok()["roundTrip"], true, "{}: {}", agent.display(), out.stderr);
    }
}
