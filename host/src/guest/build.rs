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
//! Components are written to `<dir>/target/flue/` and rebuilt only when a
//! source file (or the manifest, or the WIT) is newer: a warm `flue run`
//! starts no toolchain at all. Missing toolchains are installed by
//! [`super::toolchains`].

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
    build_with(dir, false, events)
}

/// [`build`]; with `force`, a Rust agent is handed to cargo even when its
/// sources look unchanged (cargo sees changes outside the crate too).
pub fn build_with(dir: &Path, force: bool, events: &EventLog) -> Result<PathBuf, AgentSourceError> {
    // Toolchains run inside `dir`: every path handed to them must be absolute.
    let dir =
        &dir.canonicalize().map_err(|err| AgentSourceError::Read { path: dir.into(), reason: err.to_string() })?;
    match detect(dir) {
        Some(Language::Rust) => super::rust::build_with(dir, force, events),
        Some(Language::Python) => super::componentize::build(dir, &super::componentize::PYTHON, events),
        Some(Language::JavaScript) => super::componentize::build(dir, &super::componentize::JAVASCRIPT, events),
        None => Err(AgentSourceError::UnknownLanguage { dir: dir.into() }),
    }
}

/// The WIT an agent builds against: its own `wit/` (as `flue new` makes),
/// else this project's.
pub(crate) fn wit_dir(dir: &Path) -> PathBuf {
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

/// Whether `output` is missing or older than any of `inputs` (files, or
/// directories searched as [`newest_source`] does).
pub(crate) fn stale(output: &Path, inputs: &[PathBuf]) -> bool {
    let Ok(built) = std::fs::metadata(output).and_then(|m| m.modified()) else { return true };
    inputs
        .iter()
        .filter_map(|input| match std::fs::metadata(input) {
            Ok(meta) if meta.is_dir() => newest_source(input),
            Ok(meta) => meta.modified().ok(),
            Err(_) => None,
        })
        .any(|source| source > built)
}

/// Run a guest toolchain in `dir`, turning failures into readable errors.
pub(crate) fn run_tool(
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
pub(crate) fn readable_log(log: &str) -> String {
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
pub(crate) fn partial_output(output: &Path) -> PathBuf {
    output.with_extension(format!("wasm.partial-{}", std::process::id()))
}

pub(crate) fn publish(partial: &Path, output: &Path) -> Result<PathBuf, AgentSourceError> {
    std::fs::rename(partial, output)
        .map_err(|err| AgentSourceError::Read { path: output.into(), reason: err.to_string() })?;
    Ok(output.to_path_buf())
}
