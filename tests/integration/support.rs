//! Shared helpers: building guests, running `flue`, reading its output.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

/// No test should take this long; past it the child is killed and the test
/// fails as hung (a guard against hangs, not a speed assertion).
const HANG_GUARD: Duration = Duration::from_secs(180);

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host/ has a parent").to_path_buf()
}

/// Compiled-component cache shared by the tests' runs.
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("flue-cache")
}

/// A fresh scratch directory under the target directory.
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("flue-test-").tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("scratch dir")
}

/// Build a guest crate once per test process, with flue's own builder.
fn build_once(dir: PathBuf) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<PathBuf, PathBuf>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(wasm) = built.get(&dir) {
        return wasm.clone();
    }
    // Through the binary, as a user would: it shares the tests' cache, and
    // so their toolchain installs.
    let out = output(flue().arg("build").arg(&dir));
    assert_eq!(out.code, 0, "building {}: {}", dir.display(), out.stderr);
    let wasm = PathBuf::from(out.stdout.trim());
    built.insert(dir, wasm.clone());
    wasm
}

/// A Tokio runtime for a test that drives async test servers.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// A Rust agent crate `name` at `agent` with an empty library and
/// `build_rs` as its build script; `own_workspace` makes it a workspace of
/// its own (else it belongs to whatever workspace is above it).
pub fn crate_with_build_script(agent: &Path, name: &str, own_workspace: bool, build_rs: &str) {
    std::fs::create_dir_all(agent.join("src")).unwrap();
    let workspace = if own_workspace { "\n[workspace]\n" } else { "" };
    std::fs::write(
        agent.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[lib]\n\
             crate-type = [\"cdylib\"]\n{workspace}"
        ),
    )
    .unwrap();
    std::fs::write(agent.join("src/lib.rs"), "").unwrap();
    std::fs::write(agent.join("build.rs"), build_rs).unwrap();
}

/// A test fixture component (`tests/fixtures/<name>`).
pub fn fixture(name: &str) -> PathBuf {
    build_once(repo_root().join("tests/fixtures").join(name))
}

/// An example agent (`guest-examples/rust/<name>`).
pub fn example(name: &str) -> PathBuf {
    build_once(repo_root().join("guest-examples/rust").join(name))
}

/// An example agent in a language: `lang` is `rust`, `python` or `js`.
pub fn example_in(lang: &str, name: &str) -> PathBuf {
    build_once(repo_root().join("guest-examples").join(lang).join(name))
}

/// Whether test `test` must be skipped because bubblewrap does not work
/// here; if so, says so and why the test needs it.
pub fn skip_without_bwrap(test: &str, needs: &str) -> bool {
    if bwrap_available() {
        return false;
    }
    // Straight to stderr, not through `eprintln!`, which the test harness
    // captures (and shows only for failures): a skip must be seen.
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "skipped {test}: it needs bubblewrap ({needs}), which does not work here");
    true
}

/// Whether bubblewrap works here. With FLUE_TEST_REQUIRE_BWRAP=1 (set by
/// CI) its absence fails the tests instead of skipping the isolated cases.
pub fn bwrap_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let works = Command::new("bwrap")
            .args(["--unshare-all", "--ro-bind", "/", "/", "--", "true"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !works && std::env::var("FLUE_TEST_REQUIRE_BWRAP").is_ok_and(|v| v == "1") {
            panic!("bubblewrap does not work here but FLUE_TEST_REQUIRE_BWRAP=1");
        }
        if !works {
            eprintln!("note: bubblewrap unavailable; isolated cases are skipped");
        }
        works
    })
}

pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// stdout as JSON; panics with both streams when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|err| {
            panic!("stdout is not JSON ({err})\nstdout: {}\nstderr: {}", self.stdout, self.stderr)
        })
    }

    /// Assert success and return the result JSON.
    pub fn ok(&self) -> Value {
        assert_eq!(self.code, 0, "flue failed\nstdout: {}\nstderr: {}", self.stdout, self.stderr);
        self.json()
    }

    /// The JSON events printed on stderr (with `--events json`).
    pub fn events(&self) -> Vec<Value> {
        self.stderr
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|v| v.get("type").is_some())
            .collect()
    }
}

/// A `flue` command with a clean environment: tests control what it sees.
pub fn flue() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_flue"));
    command
        .current_dir(repo_root())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::var_os("HOME").unwrap_or_default())
        .env("FLUE_CACHE_DIR", cache_dir())
        // Volumes of runs that do not choose: never the user's own data dir.
        .env("FLUE_DATA_DIR", PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("flue-data"))
        .env("NO_COLOR", "1");
    for (name, value) in std::env::vars_os() {
        if name.to_str().is_some_and(reaches_package_registries) {
            command.env(name, value);
        }
    }
    command
}

/// Settings the toolchains (rustup, pip, npm) need to reach their registries
/// on this machine: proxies, extra CA bundles, mirrors. Kept so that a
/// clean-environment `flue` can still provision what it installs itself.
fn reaches_package_registries(name: &str) -> bool {
    const EXACT: [&str; 5] =
        ["CARGO_HOME", "RUSTUP_HOME", "RUSTUP_TOOLCHAIN", "CARGO_TARGET_DIR", "NODE_EXTRA_CA_CERTS"];
    let upper = name.to_ascii_uppercase();
    EXACT.contains(&name)
        || upper.ends_with("_PROXY")
        || upper.starts_with("SSL_CERT_")
        || upper.ends_with("_CA_BUNDLE")
        || upper.starts_with("PIP_")
        || upper.starts_with("NPM_CONFIG_")
        || upper.starts_with("RUSTUP_DIST_")
}

/// Run a command to completion (with the hang guard).
pub fn output(command: &mut Command) -> Output {
    output_watching(command, |_| {})
}

/// Run a command to completion, calling `watch` with its pid every 20 ms
/// while it runs (to look at its children, its memory, …).
pub fn output_watching(command: &mut Command, mut watch: impl FnMut(u32)) -> Output {
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // A binary this test just copied can be "busy" for a moment: another
    // test's fork may still hold the copy's write descriptor until it execs.
    let mut attempts = 0;
    let mut child = loop {
        match command.spawn() {
            Err(err) if err.kind() == std::io::ErrorKind::ExecutableFileBusy && attempts < 50 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            spawned => break spawned.expect("spawn flue"),
        }
    };
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let started = Instant::now();
    let status = loop {
        watch(child.id());
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > HANG_GUARD {
            let _ = child.kill();
            panic!("flue hung for over {HANG_GUARD:?}: {command:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Run a command and return its output and its peak resident memory in
/// MiB, as the kernel tracked it (VmHWM), read until just before it exited.
pub fn output_with_peak_rss(command: &mut Command) -> (Output, u64) {
    let mut peak_kib = 0;
    let out = output_watching(command, |pid| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        if let Some(kib) = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak_kib = peak_kib.max(kib);
        }
    });
    (out, peak_kib / 1024)
}

/// The children of process `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| list.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<u32>>())
        .collect()
}

/// A process's state letter (`Z` for a zombie) and command name.
pub fn process_state(pid: u32) -> Option<(char, String)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let state = stat[close + 1..].trim_start().chars().next()?;
    Some((state, stat[open + 1..close].to_string()))
}

/// `flue run <agent> <args…> --events json`, with local sandboxes under `tmp`.
pub fn run_agent(agent: &Path, args: &[&str], tmp: &Path) -> Output {
    output(flue().arg("run").arg(agent).args(args).args(["--events", "json"]).env("TMPDIR", tmp))
}

/// The key tests give the scripted model server (to check it leaks nowhere).
pub const MODEL_KEY: &str = "sk-test-model-server-key-0123456789";

/// `flue run <agent> --payload PAYLOAD ARGS… --events json` against the
/// scripted model server at `model_url`, in both provider formats, in a
/// scratch directory of its own (its run store and its sandboxes).
pub fn run_with_model(model_url: &str, agent: &Path, payload: &Value, args: &[&str]) -> Output {
    let tmp = scratch();
    output(
        flue()
            .arg("run")
            .arg(agent)
            .args(["--events", "json", "--payload", &payload.to_string()])
            .args(args)
            .current_dir(tmp.path())
            .env("TMPDIR", tmp.path())
            .env("ANTHROPIC_BASE_URL", model_url)
            .env("ANTHROPIC_API_KEY", MODEL_KEY)
            .env("OPENAI_BASE_URL", format!("{model_url}/v1"))
            .env("OPENAI_API_KEY", MODEL_KEY),
    )
}

/// The probe fixture run with `payload`.
pub fn probe(payload: Value, args: &[&str], tmp: &Path) -> Output {
    output(&mut flue_probe(payload, args, tmp))
}

/// `flue run <probe> --payload PAYLOAD ARGS… --events json`, local
/// sandboxes under `tmp`, not yet run.
pub fn flue_probe(payload: Value, args: &[&str], tmp: &Path) -> Command {
    let mut command = flue();
    command
        .arg("run")
        .arg(fixture("probe"))
        .args(["--payload", &payload.to_string()])
        .args(args)
        .args(["--events", "json"])
        .env("TMPDIR", tmp);
    command
}

/// Both isolation modes this machine supports.
pub fn isolation_modes() -> Vec<&'static str> {
    if bwrap_available() { vec!["bwrap", "none"] } else { vec!["none"] }
}

/// A host for in-process tests: the local backend (sandboxes under a fresh
/// scratch directory) and the connectors in `connectors`.
pub fn host(
    isolation: flue::sandbox::local::Isolation,
    connectors: &Path,
    limits: flue::runtime::Limits,
) -> flue::Host {
    let mut local = flue::sandbox::local::LocalConfig::new(isolation);
    local.base_dir = scratch().keep();
    flue::HostBuilder::new()
        .cache_dir(Some(cache_dir()))
        .limits(limits)
        .connectors_dir(connectors)
        .builtin(std::sync::Arc::new(flue::sandbox::local::LocalConnector::new(local)))
        .build()
        .expect("host")
}

/// The isolation a test asked for, as the library's type.
pub async fn isolation(mode: &str) -> flue::sandbox::local::Isolation {
    match mode {
        "bwrap" => flue::sandbox::local::Isolation::Bubblewrap {
            bwrap: flue::sandbox::local::probe_bubblewrap().await.expect("bwrap works"),
            allow_network: false,
        },
        _ => flue::sandbox::local::Isolation::None,
    }
}

/// The Daytona connector component, built from `connectors/daytona`.
pub fn daytona_wasm() -> PathBuf {
    build_once(repo_root().join("connectors/daytona"))
}

pub const TEST_API_KEY: &str = "dtn-test-key-4f1c9e";

/// A Daytona-compatible test server with `daytona.wasm` in a connectors dir.
pub struct TestDaytona {
    pub server: daytona_test_server::DaytonaServer,
    pub connectors: tempfile::TempDir,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TestDaytona {
    pub fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// A server whose configuration `adjust` changes first.
    pub fn start_with(adjust: impl FnOnce(&mut daytona_test_server::ServerConfig)) -> Self {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        let mut config = daytona_test_server::ServerConfig { api_key: TEST_API_KEY.into(), ..Default::default() };
        adjust(&mut config);
        // A thread of its own: tests may already be inside a tokio runtime.
        let server = std::thread::scope(|scope| {
            scope
                .spawn(|| runtime.block_on(daytona_test_server::DaytonaServer::start(config)))
                .join()
                .expect("server thread")
        })
        .expect("start the test server");
        let connectors = scratch();
        std::fs::copy(daytona_wasm(), connectors.path().join("daytona.wasm")).expect("install daytona.wasm");
        TestDaytona { server, connectors, runtime: Some(runtime) }
    }

    pub fn faults(&self) -> &daytona_test_server::Faults {
        self.server.faults()
    }

    /// Configuration as the connector sees it.
    pub fn config(&self) -> HashMap<String, String> {
        HashMap::from([
            ("DAYTONA_API_URL".to_string(), self.server.api_url()),
            ("DAYTONA_API_KEY".to_string(), TEST_API_KEY.to_string()),
        ])
    }

    /// `flue …` pointed at this server.
    pub fn flue(&self) -> Command {
        let mut command = flue();
        self.configure(&mut command);
        command
    }

    /// Make `command` (a `flue` run or server) use this server for its
    /// sandboxes: `--sandbox daytona`, this connectors directory, the URL
    /// and key.
    pub fn use_as_sandbox<'c>(&self, command: &'c mut Command) -> &'c mut Command {
        self.configure(command.args(["--sandbox", "daytona", "--connectors"]).arg(self.connectors.path()))
    }

    /// Point `command` at this server.
    fn configure<'c>(&self, command: &'c mut Command) -> &'c mut Command {
        command.env("DAYTONA_API_URL", self.server.api_url()).env("DAYTONA_API_KEY", TEST_API_KEY)
    }

    /// `flue run <agent> --sandbox daytona` with this connectors directory,
    /// local sandboxes under `tmp`, and no Daytona settings yet.
    pub fn run_command(&self, agent: &Path, tmp: &Path) -> Command {
        let mut command = flue();
        command
            .arg("run")
            .arg(agent)
            .args(["--sandbox", "daytona", "--connectors"])
            .arg(self.connectors.path())
            .env("TMPDIR", tmp);
        command
    }

    /// `flue run <agent> --sandbox daytona` against this server.
    pub fn run(&self, agent: &Path, args: &[&str], tmp: &Path) -> Output {
        output(self.configure(&mut self.run_command(agent, tmp)).args(["--events", "json"]).args(args))
    }

    /// The daytona connector, in process.
    pub async fn connector(&self) -> std::sync::Arc<dyn flue::sandbox::Connector> {
        self.connector_with(&[]).await
    }

    /// The daytona connector, in process, with extra settings.
    pub async fn connector_with(&self, settings: &[(&str, &str)]) -> std::sync::Arc<dyn flue::sandbox::Connector> {
        let mut config = self.config();
        config.extend(settings.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let host = flue::HostBuilder::new()
            .cache_dir(Some(cache_dir()))
            .connectors_dir(self.connectors.path())
            .config(config)
            .build()
            .expect("host");
        host.connector("daytona", &flue::events::EventLog::discard()).await.expect("daytona connector")
    }

    pub fn assert_no_sandboxes_left(&self) {
        assert_eq!(self.server.sandbox_ids(), Vec::<String>::new(), "sandboxes leaked on the server");
    }
}

impl Drop for TestDaytona {
    fn drop(&mut self) {
        // Never blocks, so tests on a tokio runtime may drop it too.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The probe fixture run by `user` (flue started unprivileged), with
/// everything it needs in a fresh directory that user can reach.
pub fn probe_as(user: &str, payload: Value, args: &[&str]) -> Output {
    use std::os::unix::fs::PermissionsExt;
    let ids = |flag: &str| -> u32 {
        let out = Command::new("id").arg(flag).arg(user).output().expect("id");
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or_else(|_| panic!("no user {user}"))
    };
    let (uid, gid) = (ids("-u"), ids("-g"));
    let home = tempfile::Builder::new().prefix("flue-unprivileged-").tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for (from, name) in [(PathBuf::from(env!("CARGO_BIN_EXE_flue")), "flue"), (fixture("probe"), "probe.wasm")] {
        // The copy keeps the source's mode, which a private build cache or
        // checkout (umask 077) makes unreadable to `user`.
        let to = home.path().join(name);
        std::fs::copy(from, &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let work = home.path().join("work");
    std::fs::create_dir(&work).unwrap();
    std::os::unix::fs::chown(&work, Some(uid), Some(gid)).unwrap();
    let mut command = Command::new(home.path().join("flue"));
    std::os::unix::process::CommandExt::uid(&mut command, uid);
    std::os::unix::process::CommandExt::gid(&mut command, gid);
    command
        .current_dir(&work)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", &work)
        .env("TMPDIR", &work)
        .env("FLUE_CACHE_DIR", work.join("cache"))
        .args(["run", "../probe.wasm", "--events", "none", "--payload"])
        .arg(payload.to_string())
        .args(args);
    output(&mut command)
}
