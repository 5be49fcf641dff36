//! Turning the `<agent>` argument of `flue run` into component bytes.
//!
//! `<agent>` is a `.wasm` file, a directory holding an agent's source, or the
//! name of an example (`hello` → `guest-examples/rust/hello`,
//! `python/hello`, `js/hello`). Sources are built with their language's
//! toolchain, detected from the directory:
//!
//! | marker       | language   | toolchain                                        |
//! |--------------|------------|--------------------------------------------------|
//! | `Cargo.toml` | Rust       | `cargo build --release --target wasm32-wasip2`   |
//! | `app.py`     | Python     | `componentize-py … componentize app`             |
//! | `agent.js`   | JavaScript | `componentize-js agent.js …`                     |
//!
//! Python and JavaScript components are written to `<dir>/target/flue/` and
//! rebuilt only when a source file (or the WIT) is newer; cargo tracks
//! staleness for Rust itself.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::events::EventLog;

/// Why an agent could not be found or built.
#[derive(Debug, thiserror::Error)]
pub enum AgentSourceError {
    /// The argument names nothing.
    #[error("no agent {arg:?}: not a .wasm file, an agent directory, or an example name (examples: {examples})")]
    NotFound {
        /// What was given.
        arg: String,
        /// The example names.
        examples: String,
    },
    /// A directory without a known marker file.
    #[error("{}: no agent source here (expected Cargo.toml for Rust, app.py for Python or agent.js for JavaScript; `flue new` makes one)", dir.display())]
    UnknownLanguage {
        /// The directory.
        dir: PathBuf,
    },
    /// The toolchain ran and failed.
    #[error("building {} failed:\n{log}", dir.display())]
    BuildFailed {
        /// The agent's directory.
        dir: PathBuf,
        /// The toolchain's output.
        log: String,
    },
    /// The toolchain is missing or cannot run.
    #[error("{0}")]
    Toolchain(String),
    /// A file could not be read or written.
    #[error("cannot read {}: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS's reason.
        reason: String,
    },
}

/// Where examples are looked up: the nearest ancestor of the current
/// directory that has `guest-examples/`, else the source tree flue was built from.
pub fn project_root() -> PathBuf {
    if let Ok(cwd) = std::env::current_dir() {
        for dir in cwd.ancestors() {
            if dir.join("guest-examples").is_dir() {
                return dir.to_path_buf();
            }
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Example agent directories, Rust first: a bare name like `hello` means
/// the Rust example.
fn example_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for language in ["rust", "python", "js"] {
        let mut found: Vec<PathBuf> = std::fs::read_dir(root.join("guest-examples").join(language))
            .map(|entries| entries.flatten().map(|e| e.path()).filter(|p| p.is_dir() && detect(p).is_some()).collect())
            .unwrap_or_default();
        found.sort();
        dirs.extend(found);
    }
    dirs
}

/// Resolve `<agent>` to a `.wasm` path, building it when it is source.
pub fn resolve(arg: &str, events: &EventLog) -> Result<PathBuf, AgentSourceError> {
    let path = Path::new(arg);
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    if path.is_dir() {
        return build(path, events);
    }
    let root = project_root();
    let examples = example_dirs(&root);
    // `hello` or `rust/hello`.
    let found = examples.iter().find(|dir| {
        dir.file_name().is_some_and(|n| n == arg)
            || dir.strip_prefix(root.join("guest-examples")).is_ok_and(|rel| rel == Path::new(arg))
    });
    match found {
        Some(dir) => build(dir, events),
        None => Err(AgentSourceError::NotFound {
            arg: arg.into(),
            examples: examples
                .iter()
                .filter_map(|d| d.strip_prefix(root.join("guest-examples")).ok())
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Languages flue can build agents from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Language {
    /// `Cargo.toml`, built with cargo for wasm32-wasip2.
    Rust,
    /// `app.py`, built with componentize-py.
    Python,
    /// `agent.js`, built with componentize-js.
    JavaScript,
}

/// The language of the agent source in `dir`, from its marker file.
pub fn detect(dir: &Path) -> Option<Language> {
    if dir.join("Cargo.toml").is_file() {
        Some(Language::Rust)
    } else if dir.join("app.py").is_file() {
        Some(Language::Python)
    } else if dir.join("agent.js").is_file() {
        Some(Language::JavaScript)
    } else {
        None
    }
}

/// Build the agent in `dir` (if stale) and return its component.
pub fn build(dir: &Path, events: &EventLog) -> Result<PathBuf, AgentSourceError> {
    // Toolchains run inside `dir`: every path handed to them must be absolute.
    let dir =
        &dir.canonicalize().map_err(|err| AgentSourceError::Read { path: dir.into(), reason: err.to_string() })?;
    match detect(dir) {
        Some(Language::Rust) => build_rust(dir, events),
        Some(Language::Python) => componentize(dir, &PYTHON, events),
        Some(Language::JavaScript) => componentize(dir, &JAVASCRIPT, events),
        None => Err(AgentSourceError::UnknownLanguage { dir: dir.into() }),
    }
}

/// The WIT an agent builds against: its own `wit/` (as `flue new` makes),
/// else this project's.
fn wit_dir(dir: &Path) -> PathBuf {
    let own = dir.join("wit");
    if own.is_dir() { own } else { project_root().join("wit") }
}

/// The newest modification time of the files under `dir`, skipping build
/// outputs and dependencies.
fn newest_source(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).ok()?.flatten() {
            let name = entry.file_name();
            if matches!(name.to_str(), Some("target" | "node_modules" | "__pycache__" | ".git")) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                pending.push(entry.path());
            } else if let Ok(modified) = meta.modified() {
                newest = newest.max(Some(modified));
            }
        }
    }
    newest
}

/// Whether `output` is missing or older than the sources in `dir` or the WIT.
fn stale(output: &Path, dir: &Path, wit: &Path) -> bool {
    let Ok(built) = std::fs::metadata(output).and_then(|m| m.modified()) else { return true };
    [newest_source(dir), newest_source(wit)].into_iter().flatten().any(|source| source > built)
}

/// A tool from `node_modules/.bin` of `dir` or an ancestor, else the PATH.
fn find_tool(name: &str, dir: &Path) -> Option<PathBuf> {
    let local = dir.ancestors().map(|d| d.join("node_modules/.bin").join(name)).find(|p| p.is_file());
    local.or_else(|| super::which::find_on_path(name))
}

/// Run a guest toolchain in `dir`, turning failures into readable errors.
fn run_tool(
    mut command: std::process::Command,
    dir: &Path,
    what: &str,
    events: &EventLog,
) -> Result<(), AgentSourceError> {
    let _progress = events.progress(format!("building {} ({what})", dir.display()));
    let output = command
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|err| AgentSourceError::Toolchain(format!("cannot run {what}: {err}")))?;
    if output.status.success() {
        return Ok(());
    }
    let mut log = String::from_utf8_lossy(&output.stderr).into_owned();
    if log.trim().is_empty() {
        log = String::from_utf8_lossy(&output.stdout).into_owned();
    }
    Err(AgentSourceError::BuildFailed { dir: dir.into(), log: readable_log(&log) })
}

/// A toolchain's failure output without its own internal stack trace, and
/// not longer than a screen.
fn readable_log(log: &str) -> String {
    const MAX_LINES: usize = 40;
    let log = log.split("\nStack backtrace:").next().unwrap_or(log).trim_end();
    let lines: Vec<&str> = log.lines().collect();
    if lines.len() <= MAX_LINES {
        return log.to_string();
    }
    format!("[… {} lines …]\n{}", lines.len() - MAX_LINES, lines[lines.len() - MAX_LINES..].join("\n"))
}

/// Where a build writes before it is published: never a half-written
/// component at the final path, even with two builds at once.
fn partial_output(output: &Path) -> PathBuf {
    output.with_extension(format!("wasm.partial-{}", std::process::id()))
}

fn publish(partial: &Path, output: &Path) -> Result<PathBuf, AgentSourceError> {
    std::fs::rename(partial, output)
        .map_err(|err| AgentSourceError::Read { path: output.into(), reason: err.to_string() })?;
    Ok(output.to_path_buf())
}

/// A componentize toolchain: what it is called, how to install it, and its
/// arguments given the WIT directory and the output path.
struct Componentizer {
    tool: &'static str,
    install: &'static str,
    args: fn(&Path, &Path) -> Vec<std::ffi::OsString>,
}

const PYTHON: Componentizer = Componentizer {
    tool: "componentize-py",
    install: "`pip install componentize-py==0.25.1`",
    args: |wit, out| {
        [
            "-d".as_ref(),
            wit.as_os_str(),
            "-w".as_ref(),
            "agent".as_ref(),
            "componentize".as_ref(),
            "app".as_ref(),
            "-o".as_ref(),
            out.as_os_str(),
        ]
        .map(std::ffi::OsStr::to_os_string)
        .to_vec()
    },
};

const JAVASCRIPT: Componentizer = Componentizer {
    tool: "componentize-js",
    install: "`npm install -g @bytecodealliance/componentize-js@0.23.0` (or `npm install` in the agent's directory)",
    // Agents get no HTTP: leave out the runtime's fetch and http features so
    // the component imports nothing the host does not grant.
    args: |wit, out| {
        let args: [&std::ffi::OsStr; 11] = [
            "agent.js".as_ref(),
            "--wit".as_ref(),
            wit.as_os_str(),
            "--world-name".as_ref(),
            "agent".as_ref(),
            "-d".as_ref(),
            "http".as_ref(),
            "-d".as_ref(),
            "fetch-event".as_ref(),
            "-o".as_ref(),
            out.as_os_str(),
        ];
        args.map(std::ffi::OsStr::to_os_string).to_vec()
    },
};

/// Build `dir` with a componentize toolchain into `target/flue/agent.wasm`,
/// unless that is newer than every source.
fn componentize(dir: &Path, toolchain: &Componentizer, events: &EventLog) -> Result<PathBuf, AgentSourceError> {
    let output = dir.join("target/flue/agent.wasm");
    let wit = wit_dir(dir);
    if !stale(&output, dir, &wit) {
        return Ok(output);
    }
    let tool = find_tool(toolchain.tool, dir).ok_or_else(|| {
        AgentSourceError::Toolchain(format!(
            "{} is not installed; install it with {}",
            toolchain.tool, toolchain.install
        ))
    })?;
    std::fs::create_dir_all(dir.join("target/flue"))
        .map_err(|err| AgentSourceError::Read { path: dir.join("target"), reason: err.to_string() })?;
    let partial = partial_output(&output);
    let mut command = std::process::Command::new(tool);
    command.args((toolchain.args)(&wit, &partial));
    run_tool(command, dir, toolchain.tool, events)?;
    publish(&partial, &output)
}

/// `cargo build --release --target wasm32-wasip2`, returning the `.wasm` of
/// the package's cdylib.
pub fn build_rust(dir: &Path, events: &EventLog) -> Result<PathBuf, AgentSourceError> {
    let _progress = events.progress(format!("building {}", dir.display()));
    let output = std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["build", "--release", "--target", "wasm32-wasip2", "--message-format=json-render-diagnostics"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|err| {
            AgentSourceError::Toolchain(format!("cannot run cargo ({err}): install Rust from https://rustup.rs"))
        })?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        if stderr.contains("wasm32-wasip2")
            && (stderr.contains("target may not be installed") || stderr.contains("can't find crate for `core`"))
        {
            return Err(AgentSourceError::Toolchain(
                "the Rust target wasm32-wasip2 is not installed: run `rustup target add wasm32-wasip2`".into(),
            ));
        }
        return Err(AgentSourceError::BuildFailed { dir: dir.into(), log: stderr.trim_end().to_string() });
    }
    // The last cdylib artifact of the package in `dir` is the component.
    let manifest = dir
        .join("Cargo.toml")
        .canonicalize()
        .map_err(|err| AgentSourceError::Read { path: dir.join("Cargo.toml"), reason: err.to_string() })?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let wasm = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact")
        .filter(|msg| msg["manifest_path"].as_str().is_some_and(|p| Path::new(p) == manifest))
        .filter_map(|msg| msg["filenames"].as_array().cloned())
        .flatten()
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .rfind(|f| f.extension().is_some_and(|e| e == "wasm"));
    wasm.ok_or_else(|| AgentSourceError::BuildFailed {
        dir: dir.into(),
        log: "cargo built no .wasm: the package needs `[lib] crate-type = [\"cdylib\"]`".into(),
    })
}
