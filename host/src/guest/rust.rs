//! Rust agents (and connectors): `cargo build --release --target
//! wasm32-wasip2`, isolated as every build is ([`super::isolate`]), the
//! component copied into flue's cache.
//!
//! `flue run` rebuilds only when a file under the crate, its workspace's
//! `Cargo.toml`/`Cargo.lock` or the WIT is newer than that copy, without
//! starting cargo. `flue build` always asks cargo, which also notices
//! changes elsewhere.
//!
//! An isolated build has a target directory of its own (a shared one would
//! let one agent's build scripts tamper with another's dependencies). Its
//! dependencies are fetched first, with network, by cargo alone; then it
//! builds offline, without any network, with a cargo home of its own
//! ([`super::cargo_fetch`]).
//!
//! The workspace a crate builds in is the nearest directory at or above it
//! whose `Cargo.toml` has a `[workspace]` table, but never above the
//! project around the agent (a directory with `flue.toml` or `agents/`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::build::{AgentSourceError, BuildOptions, BuildPaths, is_project_root, readable_log, stale};
use super::isolate::{BuildSpace, launcher};
use crate::events::{EventLog, LogLevel};

/// Build the crate in `dir` when its sources changed, or always with `force`.
pub fn build_with(dir: &Path, force: bool, events: &EventLog) -> Result<PathBuf, AgentSourceError> {
    super::build::build_with(dir, force, events)
}

/// [`build_with`], rebuilding only when stale.
pub fn build(dir: &Path, events: &EventLog) -> Result<PathBuf, AgentSourceError> {
    build_with(dir, false, events)
}

/// Build the crate in `dir` (canonical) as `options` say.
pub(crate) fn build_agent(dir: &Path, options: BuildOptions, events: &EventLog) -> Result<PathBuf, AgentSourceError> {
    let root = workspace_root(dir);
    let paths = BuildPaths::new(dir, &root)?;
    if !options.force && !stale(&paths.output, &inputs(dir, &root)) {
        return Ok(paths.output);
    }
    let mut space = BuildSpace::new(launcher(options.isolation, events)?);
    let _lock = paths.lock()?;
    if !options.force && !stale(&paths.output, &inputs(dir, &root)) {
        return Ok(paths.output); // built by another build while this one waited
    }
    let visible_root = paths.prepare(&mut space)?;
    let visible_crate = visible_root.join(dir.strip_prefix(&root).unwrap_or(Path::new("")));
    let target = paths.target_dir()?;
    space.set_env("CARGO_TARGET_DIR", &target);
    let mut fetch_failed = None;
    if space.is_sandboxed() {
        fetch_failed = super::cargo_fetch::fetch(&space, &visible_crate.join("Cargo.toml"), events)?;
        super::cargo_fetch::offline_home(&mut space, &paths.work)?;
    }
    super::toolchains::ensure_wasm_target(&space, &visible_crate, events)?;
    let artifact = match cargo_build(&space, &visible_crate, &target, events) {
        Err(AgentSourceError::BuildFailed { dir, log }) if let Some(fetch_log) = fetch_failed => {
            return Err(AgentSourceError::BuildFailed {
                dir,
                log: format!("fetching its dependencies failed:\n{fetch_log}\n\nthen building offline failed:\n{log}"),
            });
        }
        other => other?,
    };
    if let Some(fetch_log) = fetch_failed {
        events.log(
            "flue",
            LogLevel::Warn,
            format!(
                "could not fetch the dependencies of {} (built from those fetched before): {fetch_log}",
                dir.display()
            ),
        );
    }
    paths.publish(&artifact)
}

/// The workspace `dir` belongs to: the nearest directory at or above it
/// whose `Cargo.toml` has a `[workspace]` table — at most the project
/// around it — else `dir` itself.
fn workspace_root(dir: &Path) -> PathBuf {
    for candidate in dir.ancestors() {
        if declares_workspace(&candidate.join("Cargo.toml")) {
            return candidate.to_path_buf();
        }
        if is_project_root(candidate) {
            break;
        }
    }
    dir.to_path_buf()
}

/// Whether the manifest at `path` has a `[workspace]` table (read as TOML,
/// up to a sane size).
fn declares_workspace(path: &Path) -> bool {
    use std::io::Read;
    const MAX_MANIFEST: u64 = 4 << 20;
    let Ok(file) = std::fs::File::open(path) else { return false };
    let mut text = String::new();
    if file.take(MAX_MANIFEST).read_to_string(&mut text).is_err() {
        return false;
    }
    toml::from_str::<toml::Table>(&text)
        .is_ok_and(|manifest| manifest.get("workspace").is_some_and(toml::Value::is_table))
}

/// What a Rust build depends on: the crate, its workspace's manifest and
/// lock file, and flue's WIT (which in-tree guests refer to).
fn inputs(dir: &Path, root: &Path) -> Vec<PathBuf> {
    let mut inputs = vec![dir.to_path_buf(), root.join("Cargo.toml"), root.join("Cargo.lock")];
    inputs.extend(super::isolate::flue_source_tree().map(|tree| tree.join("wit")));
    inputs
}

/// `cargo build --release --target wasm32-wasip2` in `dir` (as `space`
/// sees it), returning the `.wasm` of the package's cdylib in `target`.
fn cargo_build(space: &BuildSpace, dir: &Path, target: &Path, events: &EventLog) -> Result<PathBuf, AgentSourceError> {
    let cargo = super::cargo_fetch::cargo()?;
    let mut args: Vec<OsString> =
        ["build", "--release", "--target", "wasm32-wasip2", "--message-format=json-render-diagnostics"]
            .map(OsString::from)
            .to_vec();
    if space.is_sandboxed() {
        args.push("--offline".into()); // its dependencies were fetched before
    }
    let _progress = events.progress(format!("building {}", dir.display()));
    let ran = super::isolate::run(space.command(&cargo, &args, dir)?, "cargo")?;
    if !ran.success {
        let stderr = ran.stderr;
        if stderr.contains("wasm32-wasip2")
            && (stderr.contains("target may not be installed") || stderr.contains("can't find crate for `core`"))
        {
            return Err(AgentSourceError::Toolchain(
                "the Rust target wasm32-wasip2 is not installed: run `rustup target add wasm32-wasip2`".into(),
            ));
        }
        return Err(AgentSourceError::BuildFailed { dir: dir.into(), log: readable_log(&stderr) });
    }
    // The last cdylib artifact of the package in `dir` is the component;
    // anything else printed there (a build could print lines that look
    // like cargo's) must at least be a file in the build's target directory.
    let manifest = dir.join("Cargo.toml");
    let wasm = ran
        .stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact")
        .filter(|msg| msg["manifest_path"].as_str().is_some_and(|p| Path::new(p) == manifest))
        .filter_map(|msg| msg["filenames"].as_array().cloned())
        .flatten()
        .filter_map(|f| f.as_str().map(PathBuf::from))
        .rfind(|f| f.extension().is_some_and(|e| e == "wasm"));
    match wasm {
        Some(wasm) if wasm.starts_with(target) && !wasm.components().any(|c| c == std::path::Component::ParentDir) => {
            Ok(wasm)
        }
        Some(wasm) => Err(AgentSourceError::BuildFailed {
            dir: dir.into(),
            log: format!("cargo named {} as the component, outside the build's target directory", wasm.display()),
        }),
        None => Err(AgentSourceError::BuildFailed {
            dir: dir.into(),
            log: "cargo built no .wasm: the package needs `[lib] crate-type = [\"cdylib\"]`".into(),
        }),
    }
}
