//! Rust agents (and connectors): `cargo build --release --target
//! wasm32-wasip2`, the component copied to `<dir>/target/flue/component.wasm`.
//!
//! `flue run` rebuilds only when a file under the crate, its workspace's
//! `Cargo.toml`/`Cargo.lock` or the WIT is newer than that copy, without
//! starting cargo. `flue build` always asks cargo, which also notices
//! changes elsewhere (a path dependency outside the crate).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::build::{AgentSourceError, partial_output, publish, stale, wit_dir};
use crate::events::EventLog;

/// Build the crate in `dir` when its sources changed, or always with `force`.
pub fn build_with(dir: &Path, force: bool, events: &EventLog) -> Result<PathBuf, AgentSourceError> {
    let output = dir.join("target/flue/component.wasm");
    if !force && !stale(&output, &inputs(dir)) {
        return Ok(output);
    }
    super::toolchains::ensure_wasm_target(dir, events)?;
    let artifact = cargo_build(dir, events)?;
    std::fs::create_dir_all(dir.join("target/flue"))
        .map_err(|err| AgentSourceError::Read { path: dir.join("target"), reason: err.to_string() })?;
    let partial = partial_output(&output);
    std::fs::copy(&artifact, &partial)
        .map_err(|err| AgentSourceError::Read { path: artifact.clone(), reason: err.to_string() })?;
    publish(&partial, &output)
}

/// [`build_with`], rebuilding only when stale.
pub fn build(dir: &Path, events: &EventLog) -> Result<PathBuf, AgentSourceError> {
    build_with(dir, false, events)
}

/// What a Rust build depends on: the crate, its workspace's manifest and
/// lock file, and the WIT.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut inputs = vec![dir.to_path_buf(), wit_dir(dir)];
    let own_workspace = std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|t| t.contains("[workspace]"));
    if !own_workspace
        && let Some(root) = dir
            .ancestors()
            .skip(1)
            .find(|d| std::fs::read_to_string(d.join("Cargo.toml")).is_ok_and(|t| t.contains("[workspace]")))
    {
        inputs.extend([root.join("Cargo.toml"), root.join("Cargo.lock")]);
    }
    inputs
}

/// `cargo build --release --target wasm32-wasip2`, returning the `.wasm` of
/// the package's cdylib where cargo wrote it.
fn cargo_build(dir: &Path, events: &EventLog) -> Result<PathBuf, AgentSourceError> {
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
