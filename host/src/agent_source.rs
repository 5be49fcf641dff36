//! Turning the `<agent>` argument of `flue run` into component bytes.
//!
//! `<agent>` is a `.wasm` file, a directory holding an agent's source, or the
//! name of an example (`hello` → `guest-examples/rust/hello`). Sources are
//! built with their language's toolchain; Rust agents with
//! `cargo build --release --target wasm32-wasip2`.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::progress;

#[derive(Debug, thiserror::Error)]
pub enum AgentSourceError {
    #[error("no agent {arg:?}: not a .wasm file, an agent directory, or an example name (examples: {examples})")]
    NotFound { arg: String, examples: String },
    #[error("{}: no Cargo.toml here; an agent directory needs the source of a wasm component", dir.display())]
    UnknownLanguage { dir: PathBuf },
    #[error("building {} failed:\n{log}", dir.display())]
    BuildFailed { dir: PathBuf, log: String },
    #[error("{0}")]
    Toolchain(String),
    #[error("cannot read {}: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
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

fn example_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for language in ["rust", "python", "js"] {
        if let Ok(entries) = std::fs::read_dir(root.join("guest-examples").join(language)) {
            for entry in entries.flatten() {
                if entry.path().is_dir() && entry.file_name() != "target" {
                    dirs.push(entry.path());
                }
            }
        }
    }
    dirs.sort();
    dirs
}

/// Resolve `<agent>` to a `.wasm` path, building it when it is source.
pub fn resolve(arg: &str) -> Result<PathBuf, AgentSourceError> {
    let path = Path::new(arg);
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    if path.is_dir() {
        return build(path);
    }
    let root = project_root();
    let examples = example_dirs(&root);
    // `hello` or `rust/hello`.
    let found = examples.iter().find(|dir| {
        dir.file_name().is_some_and(|n| n == arg)
            || dir.strip_prefix(root.join("guest-examples")).is_ok_and(|rel| rel == Path::new(arg))
    });
    match found {
        Some(dir) => build(dir),
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

/// Build the agent in `dir` and return its component.
pub fn build(dir: &Path) -> Result<PathBuf, AgentSourceError> {
    if dir.join("Cargo.toml").is_file() {
        return build_rust(dir);
    }
    Err(AgentSourceError::UnknownLanguage { dir: dir.into() })
}

/// `cargo build --release --target wasm32-wasip2`, returning the `.wasm` of
/// the package's cdylib.
pub fn build_rust(dir: &Path) -> Result<PathBuf, AgentSourceError> {
    let _spinner = progress::spinner(format!("building {}", dir.display()));
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
