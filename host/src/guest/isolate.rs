//! Where agent builds run: in a bubblewrap sandbox when it works here, else
//! on this machine — and then flue says so.
//!
//! Building an agent runs the agent's code: Rust build scripts and
//! procedural macros, and the agent itself when componentize-py or
//! componentize-js pre-initialize it. Isolated, a build
//!
//! * sees read-only the system (as the local sandbox does), the toolchains
//!   — the directories on the `PATH` and, for a `bin`, `sbin` or `shims`
//!   directory, the parts of its prefix programs run from (`lib`,
//!   `libexec`, `share`, pyenv's `versions`…: never a prefix itself, so
//!   `~/.cargo/bin` shows no more of `~/.cargo`), rustup's home, the Python
//!   flue runs componentize-py with, flue's installed tools — and flue's
//!   WIT; a cargo home's credentials and configuration in that view are
//!   masked;
//! * sees a fresh copy of the agent's workspace where the original is
//!   ([`super::source_copy`]), and writes only that copy and the build's
//!   own directory in flue's cache (its target directory, its own cargo
//!   home, its output) — nothing a later build reads;
//! * has no network at all: a Rust agent's dependencies are fetched before,
//!   by cargo alone ([`super::rust`]), and componentize-py and
//!   componentize-js need none. The fetch is the one phase with the host's
//!   network; it runs no agent code, and cannot open unix sockets;
//! * has an environment of its own: `PATH`, `HOME=/tmp`, locale, proxies
//!   and CA bundles, the toolchain's variables — never the user's other
//!   variables.
//!
//! The host's other files — the home directory, the agent's project and its
//! `.env`, flue's configuration and the rest of its cache — are out of its
//! sight.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use super::build::AgentSourceError;
use crate::events::{EventLog, LogLevel};
use crate::which::find_on_path;

/// How agent builds are isolated (`flue build --isolation`,
/// `FLUE_BUILD_ISOLATION`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BuildIsolation {
    /// bubblewrap when it works here; else on this machine, with a warning.
    #[default]
    Auto,
    /// bubblewrap, or fail.
    #[value(name = "bwrap")]
    Bubblewrap,
    /// On this machine, as you (with a warning).
    None,
}

impl BuildIsolation {
    /// `FLUE_BUILD_ISOLATION` (`auto`, `bwrap` or `none`), else `auto`.
    pub fn from_env() -> Result<Self, AgentSourceError> {
        match std::env::var("FLUE_BUILD_ISOLATION") {
            Err(_) => Ok(BuildIsolation::Auto),
            Ok(value) => <Self as clap::ValueEnum>::from_str(&value, true).map_err(|_| {
                AgentSourceError::Toolchain(format!("FLUE_BUILD_ISOLATION={value:?}: expected auto, bwrap or none"))
            }),
        }
    }
}

/// How builds run, decided.
#[derive(Clone, Debug)]
pub(crate) enum Launcher {
    /// In a bubblewrap sandbox, with this `bwrap`.
    Sandboxed(PathBuf),
    /// On this machine, as the user.
    Unisolated,
}

/// Decide how builds run; an unisolated build is announced once per process.
pub(crate) fn launcher(choice: BuildIsolation, events: &EventLog) -> Result<Launcher, AgentSourceError> {
    static WARNED: AtomicBool = AtomicBool::new(false);
    let warn = |why: &str| {
        if !WARNED.swap(true, Ordering::Relaxed) {
            events.log(
                "flue",
                LogLevel::Warn,
                format!(
                    "building agents runs their build scripts on this machine, as you, unisolated ({why}): \
                     build only agents you trust"
                ),
            );
        }
    };
    match choice {
        BuildIsolation::None => {
            warn("--isolation none");
            Ok(Launcher::Unisolated)
        }
        BuildIsolation::Bubblewrap => match probe() {
            Ok(bwrap) => Ok(Launcher::Sandboxed(bwrap.clone())),
            Err(reason) => Err(AgentSourceError::Toolchain(format!("--isolation bwrap: {reason}"))),
        },
        BuildIsolation::Auto => match probe() {
            Ok(bwrap) => Ok(Launcher::Sandboxed(bwrap.clone())),
            Err(reason) => {
                warn(&format!("{reason}; install bubblewrap to isolate builds"));
                Ok(Launcher::Unisolated)
            }
        },
    }
}

/// A working bubblewrap, with a network namespace of its own (what builds
/// need; their fetch phase only shares the host's): found once per process.
fn probe() -> &'static Result<PathBuf, String> {
    static PROBED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PROBED.get_or_init(|| {
        let bwrap = find_on_path("bwrap").ok_or("bubblewrap (bwrap) is not installed")?;
        let out = Command::new(&bwrap)
            .args(["--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "--", "true"])
            .stdin(Stdio::null())
            .output()
            .map_err(|err| format!("cannot run {}: {err}", bwrap.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} cannot create namespaces here: {}",
                bwrap.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(bwrap)
    })
}

/// What one build may see, change and know: built up by the language's
/// builder, then used for each command of the build.
#[derive(Clone)]
pub(crate) struct BuildSpace {
    launcher: Launcher,
    read_only: Vec<PathBuf>,
    writable: Vec<(PathBuf, PathBuf)>,
    read_only_within: Vec<(PathBuf, PathBuf)>,
    network: bool,
    env: Vec<(OsString, OsString)>,
}

/// Variables a build keeps from flue's environment: locale, proxies, CA
/// bundles, the toolchains' own settings and compiler flags (not registry
/// tokens, not wrappers such as sccache that would need more of the host).
fn kept_variable(name: &str) -> bool {
    const EXACT: [&str; 12] = [
        "LANG",
        "LC_ALL",
        "LC_CTYPE",
        "RUSTUP_TOOLCHAIN",
        "RUSTUP_AUTO_INSTALL",
        "RUSTC",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "NODE_EXTRA_CA_CERTS",
        "REQUESTS_CA_BUNDLE",
        "CARGO_HTTP_CAINFO",
        "CARGO_HTTP_PROXY",
    ];
    let upper = name.to_ascii_uppercase();
    EXACT.contains(&name)
        || upper.ends_with("_PROXY")
        || upper.starts_with("CARGO_NET_")
        || (upper.starts_with("CARGO_REGISTRIES_") && (upper.ends_with("_INDEX") || upper.ends_with("_PROTOCOL")))
        || ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "WASI_SDK_PATH"].contains(&name)
        || upper.starts_with("CARGO_PROFILE_")
        || ["CC", "CXX", "AR", "CFLAGS", "CXXFLAGS"]
            .iter()
            .any(|tool| upper == *tool || upper.starts_with(&format!("{tool}_")))
}

impl BuildSpace {
    /// A build run by `launcher`, with the toolchains read-only and the
    /// environment every build has.
    pub(crate) fn new(launcher: Launcher) -> Self {
        let sandboxed = matches!(launcher, Launcher::Sandboxed(_));
        let mut space = BuildSpace {
            launcher,
            read_only: Vec::new(),
            writable: Vec::new(),
            read_only_within: Vec::new(),
            network: false,
            env: Vec::new(),
        };
        for path in toolchain_paths() {
            space.read_only(path.clone());
        }
        space.set_env("PATH", std::env::join_paths(absolute_path_entries()).unwrap_or_default());
        for (name, value) in std::env::vars_os() {
            if name.to_str().is_some_and(kept_variable) {
                space.set_env(name, value);
            }
        }
        if let Some(rustup) = rustup_home() {
            space.set_env("RUSTUP_HOME", rustup);
        }
        if sandboxed {
            space.set_env("HOME", "/tmp");
        } else {
            for name in ["HOME", "TMPDIR", "CARGO_HOME"] {
                if let Some(value) = std::env::var_os(name) {
                    space.set_env(name, value);
                }
            }
        }
        space.set_env("PYTHONDONTWRITEBYTECODE", "1");
        space
    }

    /// Whether the build runs in a sandbox.
    pub(crate) fn is_sandboxed(&self) -> bool {
        matches!(self.launcher, Launcher::Sandboxed(_))
    }

    /// Let the build read `path` (where it is).
    pub(crate) fn read_only(&mut self, path: PathBuf) {
        let system = SYSTEM.iter().any(|system| path.starts_with(system));
        if !system && !self.read_only.iter().any(|bound| path.starts_with(bound)) {
            self.read_only.retain(|bound| !bound.starts_with(&path));
            self.read_only.push(path);
        }
    }

    /// Let the build change `host`, seen at `visible`.
    pub(crate) fn writable(&mut self, host: PathBuf, visible: PathBuf) {
        self.writable.push((host, visible));
    }

    /// Let the build read `host`, seen at `visible`, inside a directory it
    /// may change.
    pub(crate) fn read_only_within(&mut self, host: PathBuf, visible: PathBuf) {
        self.read_only_within.push((host, visible));
    }

    /// Give the build the host's network (or take it away): only for a
    /// phase that runs no agent code.
    pub(crate) fn set_network(&mut self, network: bool) {
        self.network = network;
    }

    /// Whether `path` lies in a directory the build sees read-only (a copy
    /// of the workspace cannot be shown there).
    pub(crate) fn under_read_only(&self, path: &Path) -> bool {
        self.read_only.iter().any(|bound| path.starts_with(bound) || bound.starts_with(path))
            || SYSTEM.iter().chain(&["/proc", "/dev"]).any(|system| path.starts_with(system))
    }

    /// Set a variable of the build's environment.
    pub(crate) fn set_env(&mut self, name: impl Into<OsString>, value: impl Into<OsString>) {
        let name = name.into();
        self.env.retain(|(existing, _)| *existing != name);
        self.env.push((name, value.into()));
    }

    /// Remove a variable from the build's environment.
    pub(crate) fn remove_env(&mut self, name: &str) {
        self.env.retain(|(existing, _)| existing != name);
    }

    /// A command that runs `program args…` in `cwd` (as the build sees it).
    pub(crate) fn command(&self, program: &Path, args: &[OsString], cwd: &Path) -> Result<Command, AgentSourceError> {
        match &self.launcher {
            Launcher::Sandboxed(bwrap) => {
                let masked = credentials_in_sight(&self.read_only);
                let sandbox = crate::sandbox::local::BuildSandbox {
                    read_only: &self.read_only,
                    writable: &self.writable,
                    read_only_within: &self.read_only_within,
                    masked: &masked,
                    network: self.network,
                    cwd,
                    env: &self.env,
                };
                crate::sandbox::local::build_command(bwrap, &sandbox, program, args)
                    .map_err(|err| AgentSourceError::Toolchain(format!("cannot set up the build's sandbox: {err}")))
            }
            Launcher::Unisolated => {
                let mut command = Command::new(program);
                command.args(args).current_dir(cwd).env_clear().envs(self.env.iter().map(|(k, v)| (k, v)));
                Ok(command)
            }
        }
    }
}

/// The absolute entries of the `PATH` (a relative one would mean the
/// agent's own directory).
fn absolute_path_entries() -> Vec<PathBuf> {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).filter(|p| p.is_absolute()).collect())
        .unwrap_or_default()
}

/// rustup's home: `$RUSTUP_HOME`, else `~/.rustup` when it exists.
pub(crate) fn rustup_home() -> Option<PathBuf> {
    std::env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".rustup")))
        .filter(|dir| dir.is_dir())
}

/// The source tree this flue was built from (its WIT, its pinned Rust).
pub(crate) fn flue_source_tree() -> Option<PathBuf> {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().and_then(|dir| dir.canonicalize().ok())
}

/// What every build reads besides the system: the toolchains on the PATH
/// (a `bin`, `sbin` or `shims` directory with the parts of its prefix in
/// [`TOOLCHAIN_PARTS`], never the prefix itself, nor the home directory),
/// rustup's home, and flue's own WIT and Rust pin, which in-tree guests
/// refer to.
fn toolchain_paths() -> &'static [PathBuf] {
    static PATHS: OnceLock<Vec<PathBuf>> = OnceLock::new();
    PATHS.get_or_init(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).and_then(|h| h.canonicalize().ok());
        let mut paths = Vec::new();
        for entry in absolute_path_entries() {
            let Ok(dir) = entry.canonicalize() else { continue };
            if home.as_ref().is_some_and(|home| home.starts_with(&dir)) {
                continue; // the home directory (or `/`) on the PATH: not all of it
            }
            let prefix = dir.parent().filter(|parent| {
                matches!(dir.file_name().and_then(OsStr::to_str), Some("bin" | "sbin" | "shims"))
                    && *parent != Path::new("/")
                    && Some(*parent) != home.as_deref()
            });
            let Some(prefix) = prefix else {
                paths.push(dir);
                continue;
            };
            // `~/.local` also holds the user's data (`share/`, flue's
            // volumes among it): its programs and libraries only.
            let parts: &[&str] = if home.as_ref().is_some_and(|home| prefix == home.join(".local")) {
                &["bin", "lib"]
            } else {
                &TOOLCHAIN_PARTS
            };
            paths.push(dir.clone());
            paths.extend(parts.iter().map(|part| prefix.join(part)).filter(|part| *part != dir && part.is_dir()));
        }
        paths.extend(rustup_home().and_then(|dir| dir.canonicalize().ok()));
        if let Some(tree) = flue_source_tree() {
            for own in ["wit", "host/wit-compat", "rust-toolchain.toml"] {
                if tree.join(own).exists() {
                    paths.push(tree.join(own));
                }
            }
        }
        paths
    })
}

/// What of a toolchain's prefix (`~/.nvm/versions/node/v22` for its `bin`)
/// programs run from: their libraries, data and helpers, pyenv's
/// interpreters and plugins, Homebrew's cellar — never the prefix's other
/// files (`~/.cargo` holds `credentials.toml`, `config.toml` and every
/// crate the user downloaded).
const TOOLCHAIN_PARTS: [&str; 13] = [
    "bin", "sbin", "shims", "lib", "lib32", "lib64", "libexec", "include", "share", "versions", "plugins", "Cellar",
    "opt",
];

/// The files of the user's cargo home that a build must not read — its
/// registry tokens (`credentials`, `credentials.toml`, and any other file
/// named `credentials*`) and configuration (`config*`, which may hold
/// tokens too) — where they lie in what the build sees (the system: a
/// `/usr/local/cargo`; or a directory on the `PATH`): each as the path to
/// mask.
fn credentials_in_sight(read_only: &[PathBuf]) -> Vec<PathBuf> {
    let homes = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .into_iter()
        .chain(std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    let in_sight = |path: &Path| {
        SYSTEM.iter().any(|system| path.starts_with(system)) || read_only.iter().any(|bound| path.starts_with(bound))
    };
    let mut masked = Vec::new();
    for home in homes {
        let Ok(entries) = std::fs::read_dir(&home) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if !(name.starts_with("credentials") || name.starts_with("config")) {
                continue;
            }
            // A link is masked where it leads: that is what the build would read.
            let Ok(file) = entry.path().canonicalize() else { continue };
            if in_sight(&file) && file.is_file() && !masked.contains(&file) {
                masked.push(file);
            }
        }
    }
    masked
}

/// What every sandbox sees of the system already (see `sandbox::local`).
const SYSTEM: [&str; 7] = ["/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64"];

/// What a build printed: the end of each stream, within bounds.
pub(crate) struct Ran {
    /// Whether it exited 0.
    pub success: bool,
    /// The last [`STDOUT_KEPT`] bytes of stdout.
    pub stdout: String,
    /// The last [`STDERR_KEPT`] bytes of stderr.
    pub stderr: String,
}

/// Bytes of a build's stdout kept (cargo's JSON messages; ours come last).
const STDOUT_KEPT: usize = 8 << 20;
/// Bytes of a build's stderr kept (the error at its end).
const STDERR_KEPT: usize = 256 << 10;

/// Stops builds from another thread (`flue dev`'s build timeout, a server's
/// shutdown). The commands of a build run inside [`BuildStop::run`] start
/// in a process group of their own, which [`BuildStop::stop`] kills
/// (bubblewrap's sandbox dies with it); once stopped, no further command of
/// that build starts.
#[derive(Clone, Default)]
pub struct BuildStop(std::sync::Arc<std::sync::Mutex<Stopping>>);

#[derive(Default)]
struct Stopping {
    stopped: bool,
    /// The running command's process group, while its leader is not reaped
    /// (so the group's id cannot have been reused).
    group: Option<rustix::process::Pid>,
}

std::thread_local! {
    static BUILD_STOP: std::cell::RefCell<Option<BuildStop>> = const { std::cell::RefCell::new(None) };
}

impl BuildStop {
    /// Run `build` on this thread, stoppable by `self`.
    pub fn run<T>(&self, build: impl FnOnce() -> T) -> T {
        struct Restore(Option<BuildStop>);
        impl Drop for Restore {
            fn drop(&mut self) {
                BUILD_STOP.set(self.0.take());
            }
        }
        let _restore = Restore(BUILD_STOP.replace(Some(self.clone())));
        build()
    }

    /// Kill the running command's processes; start no more.
    pub fn stop(&self) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        state.stopped = true;
        if let Some(group) = state.group.take() {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Stopping> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Run a build command to its end, keeping the end of what it prints (a
/// build may print without limit; flue's memory is not its to grow).
pub(crate) fn run(mut command: Command, what: &str) -> Result<Ran, AgentSourceError> {
    let stop = BUILD_STOP.with_borrow(Clone::clone);
    let stopped = || AgentSourceError::Toolchain(format!("{what} was stopped"));
    let mut stopping = stop.as_ref().map(BuildStop::state);
    if let Some(state) = &stopping {
        if state.stopped {
            return Err(stopped());
        }
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| AgentSourceError::Toolchain(format!("cannot run {what}: {err}")))?;
    let pid = rustix::process::Pid::from_child(&child);
    if let Some(state) = &mut stopping {
        state.group = Some(pid);
    }
    drop(stopping);
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || tail(stdout, STDOUT_KEPT));
    let err = std::thread::spawn(move || tail(stderr, STDERR_KEPT));
    if let Some(stop) = &stop {
        // Wait without reaping, so that `stop` never kills a group whose id
        // was given to someone else meanwhile.
        use rustix::process::{WaitId, WaitIdOptions, waitid};
        while let Err(rustix::io::Errno::INTR) = waitid(WaitId::Pid(pid), WaitIdOptions::EXITED | WaitIdOptions::NOWAIT)
        {
        }
        let mut state = stop.state();
        state.group = None;
        if state.stopped {
            drop(state);
            let _ = child.wait();
            // Not waiting for the output: a process that left the group may hold it open.
            return Err(stopped());
        }
    }
    let status = child.wait().map_err(|err| AgentSourceError::Toolchain(format!("{what}: {err}")))?;
    Ok(Ran {
        success: status.success(),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// The last `keep` bytes of `reader`, read to its end.
fn tail(mut reader: impl Read, keep: usize) -> String {
    let mut kept: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        match reader.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&chunk[..n]);
                if kept.len() > 2 * keep {
                    kept.drain(..kept.len() - keep);
                }
            }
        }
    }
    if kept.len() > keep {
        kept.drain(..kept.len() - keep);
    }
    String::from_utf8_lossy(&kept).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_end_of_a_flood_is_kept() {
        let flood = vec![b'x'; 1 << 20];
        let text = tail([&flood[..], b"the error"].concat().as_slice(), 100);
        assert_eq!(text.len(), 100);
        assert!(text.ends_with("the error"));
    }

    /// The networked phase (the fetch) cannot reach the host's unix
    /// sockets — abstract ones included, which a network namespace of its
    /// own would hide — while socket pairs, which reach nothing, still work.
    #[test]
    fn a_networked_phase_cannot_open_unix_sockets() {
        let (Ok(bwrap), python) = (probe(), Path::new("/usr/bin/python3")) else {
            eprintln!("skipped a_networked_phase_cannot_open_unix_sockets: bubblewrap does not work here");
            return;
        };
        if !python.is_file() {
            eprintln!("skipped a_networked_phase_cannot_open_unix_sockets: it needs /usr/bin/python3");
            return;
        }
        let script = "import socket\n\
                      try:\n    socket.socket(socket.AF_UNIX); print('unix-opened')\n\
                      except OSError as e:\n    print('unix-refused', e.errno)\n\
                      socket.socketpair(); print('pair-opened')\n";
        let mut space = BuildSpace::new(Launcher::Sandboxed(bwrap.clone()));
        for (network, expected) in [(true, "unix-refused"), (false, "unix-opened")] {
            space.set_network(network);
            let command = space.command(python, &["-c".into(), script.into()], Path::new("/")).unwrap();
            let ran = run(command, "python3").unwrap();
            assert!(ran.success, "{}", ran.stderr);
            assert!(
                ran.stdout.contains(expected) && ran.stdout.contains("pair-opened"),
                "network {network}: {}",
                ran.stdout
            );
        }
    }

    #[test]
    fn registry_tokens_stay_behind() {
        assert!(kept_variable("https_proxy") && kept_variable("CARGO_REGISTRIES_MINE_INDEX"));
        assert!(!kept_variable("CARGO_REGISTRIES_MINE_TOKEN") && !kept_variable("CARGO_REGISTRY_TOKEN"));
        assert!(!kept_variable("DAYTONA_API_KEY") && !kept_variable("LD_PRELOAD"));
        assert!(kept_variable("CC_wasm32_wasip2") && !kept_variable("CARGO_BUILD_RUSTC_WRAPPER"));
    }
}
