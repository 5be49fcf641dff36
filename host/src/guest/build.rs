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
//! A build runs the agent's code, so it runs isolated ([`super::isolate`]),
//! in a copy of the agent's workspace, and writes only into flue's cache:
//! `<cache>/builds/<key>/` (the copy, cargo's target directory) and the
//! component, `<cache>/built/<key>.wasm`, keyed by the agent directory's
//! path. A component is rebuilt only when a source file (or the manifest,
//! or the WIT) is newer: a warm `flue run` starts no toolchain at all.
//! Missing toolchains are installed by [`super::toolchains`].

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::cache_dirs;
use super::isolate::{BuildIsolation, BuildSpace};
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
    /// flue's cache cannot be used (why, and what to do).
    #[error("{0}")]
    Cache(String),
    /// `flue serve` runs prebuilt components, and this agent has none.
    #[error(
        "{} has not been built, and `flue serve` runs only prebuilt components: run `flue build {}` first, \
         or start the server with --build",
        dir.display(), dir.display()
    )]
    NotBuilt {
        /// The agent's directory.
        dir: PathBuf,
    },
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

/// The flue source checkout the current directory is in (an ancestor with
/// `guest-examples/` and `connectors/`), if any: `flue add` builds its
/// connectors from there, so that edits show.
pub fn checkout_root() -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok()?;
    cwd.ancestors()
        .find(|dir| dir.join("guest-examples").is_dir() && dir.join("connectors").is_dir())
        .map(Path::to_path_buf)
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

/// Whether `dir` is a project's root: where `flue.toml` or `agents/` is.
/// A build never takes in anything above it.
pub(crate) fn is_project_root(dir: &Path) -> bool {
    dir.join("flue.toml").is_file() || dir.join("agents").is_dir()
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

/// How to build: always, or only when stale; and how isolated.
#[derive(Clone, Copy, Debug, Default)]
pub struct BuildOptions {
    /// Hand the sources to the toolchain even when they look unchanged
    /// (cargo sees changes outside the crate too).
    pub force: bool,
    /// Where the build runs.
    pub isolation: BuildIsolation,
}

/// Build the agent in `dir` (if stale) and return its component.
pub fn build(dir: &Path, events: &EventLog) -> Result<PathBuf, AgentSourceError> {
    build_with(dir, false, events)
}

/// [`build`]; with `force`, a Rust agent is handed to cargo even when its
/// sources look unchanged. Isolated as `FLUE_BUILD_ISOLATION` says.
pub fn build_with(dir: &Path, force: bool, events: &EventLog) -> Result<PathBuf, AgentSourceError> {
    build_with_options(dir, BuildOptions { force, isolation: BuildIsolation::from_env()? }, events)
}

/// Build the agent in `dir` as `options` say and return its component.
pub fn build_with_options(dir: &Path, options: BuildOptions, events: &EventLog) -> Result<PathBuf, AgentSourceError> {
    let dir = &canonical(dir)?;
    match detect(dir) {
        Some(Language::Rust) => super::rust::build_agent(dir, options, events),
        Some(Language::Python) => super::componentize::build(dir, &super::componentize::PYTHON, options, events),
        Some(Language::JavaScript) => {
            super::componentize::build(dir, &super::componentize::JAVASCRIPT, options, events)
        }
        None => Err(AgentSourceError::UnknownLanguage { dir: dir.into() }),
    }
}

/// `dir` as an absolute path without links: toolchains run elsewhere, and
/// builds are keyed by it.
fn canonical(dir: &Path) -> Result<PathBuf, AgentSourceError> {
    dir.canonicalize().map_err(|err| AgentSourceError::Read { path: dir.into(), reason: err.to_string() })
}

/// The component flue built before for the agent in `dir`, if there is one
/// (whether or not its sources changed since).
pub fn built_component(dir: &Path) -> Result<Option<PathBuf>, AgentSourceError> {
    let dir = canonical(dir)?;
    let built = cache_dirs::cache_root()
        .and_then(|root| cache_dirs::private_subdir(&root, "built"))
        .map_err(AgentSourceError::Cache)?;
    let output = built.join(format!("{}.wasm", key(&dir)));
    Ok(output.is_file().then_some(output))
}

/// Whether the component built for `dir` is older than its sources.
pub(crate) fn sources_changed_since(dir: &Path, built: &Path) -> bool {
    stale(built, &[dir.to_path_buf()])
}

/// A short, stable name for a path.
fn key(path: &Path) -> String {
    hex::encode(&Sha256::digest(path.as_os_str().as_encoded_bytes())[..12])
}

/// Where one agent's build happens and what it produces: the agent's
/// directory and the workspace it builds in (a Rust workspace, else the
/// agent's directory), the build's own directory in flue's cache, and the
/// component.
pub(crate) struct BuildPaths {
    /// The workspace: what the build sees a copy of.
    pub root: PathBuf,
    /// The build's directory (`<cache>/builds/<key>`): its copy of the
    /// workspace, its target directory, its partial output.
    pub work: PathBuf,
    /// The component (`<cache>/built/<key>.wasm`).
    pub output: PathBuf,
    builds: PathBuf,
    /// The agent's directory: where its declaration is read from.
    agent: PathBuf,
}

impl BuildPaths {
    /// The paths for building the agent in `agent`, part of the workspace
    /// `root` (both canonical); the cache's directories are created private.
    pub(crate) fn new(agent: &Path, root: &Path) -> Result<Self, AgentSourceError> {
        let prepare = || -> Result<Self, String> {
            let cache = cache_dirs::cache_root()?;
            let builds = cache_dirs::private_subdir(&cache, "builds")?;
            let built = cache_dirs::private_subdir(&cache, "built")?;
            Ok(BuildPaths {
                root: root.to_path_buf(),
                work: builds.join(key(root)),
                output: built.join(format!("{}.wasm", key(agent))),
                builds,
                agent: agent.to_path_buf(),
            })
        };
        prepare().map_err(AgentSourceError::Cache)
    }

    /// Hold the workspace's build lock (one build of it at a time) and
    /// make sure its directory exists, private.
    pub(crate) fn lock(&self) -> Result<std::fs::File, AgentSourceError> {
        let name = self.work.file_name().expect("a key").to_string_lossy().into_owned();
        let lock = cache_dirs::lock(&self.builds.join(format!("{name}.lock"))).map_err(AgentSourceError::Cache)?;
        cache_dirs::private_subdir(&self.builds, &name).map_err(AgentSourceError::Cache)?;
        Ok(lock)
    }

    /// Set up `space` to build the workspace, and return where the build
    /// sees it. Isolated, that is a fresh copy, shown where the original is
    /// (or at the copy's own path when a read-only directory is in the
    /// way), with the build's directory writable; unisolated, the original.
    pub(crate) fn prepare(&self, space: &mut BuildSpace) -> Result<PathBuf, AgentSourceError> {
        if !space.is_sandboxed() {
            return Ok(self.root.clone());
        }
        let copy = self.work.join("src");
        super::source_copy::copy_workspace(&self.root, &copy)
            .map_err(|reason| AgentSourceError::Read { path: self.root.clone(), reason })?;
        space.writable(self.work.clone(), self.work.clone());
        if space.under_read_only(&self.root) {
            return Ok(copy);
        }
        space.writable(copy, self.root.clone());
        Ok(self.root.clone())
    }

    /// The build's target directory (`<work>/target`), a real directory:
    /// a previous build could have left a link in its place.
    pub(crate) fn target_dir(&self) -> Result<PathBuf, AgentSourceError> {
        let target = self.work.join("target");
        let fail = |err: std::io::Error| AgentSourceError::Read { path: target.clone(), reason: err.to_string() };
        match std::fs::symlink_metadata(&target) {
            Ok(meta) if meta.is_dir() => return Ok(target),
            Ok(_) => std::fs::remove_file(&target).map_err(fail)?,
            Err(_) => {}
        }
        std::fs::create_dir(&target).map_err(fail)?;
        Ok(target)
    }

    /// Publish what the build wrote at `built` (in its directory) as the
    /// component. The build could have left anything there, so it is opened
    /// beneath the build's directory, following no link out of it
    /// (`openat2(RESOLVE_BENEATH)`: a `target/…/release` made a link to a
    /// host directory is refused), must be a regular file of a sane size,
    /// and is copied, not moved.
    pub(crate) fn publish(&self, built: &Path) -> Result<PathBuf, AgentSourceError> {
        const MAX_COMPONENT: u64 = 1 << 30;
        let fail = |reason: String| AgentSourceError::Read { path: built.into(), reason };
        let relative = built
            .strip_prefix(&self.work)
            .ok()
            .filter(|rel| rel.components().all(|c| matches!(c, std::path::Component::Normal(_))))
            .and_then(Path::to_str)
            .ok_or_else(|| fail("not in the build's directory".into()))?;
        let file = crate::sandbox::local::ConfinedRoot::open(&self.work)
            .and_then(|work| work.open_read(relative, 0))
            .map_err(|err| fail(err.to_string()))?;
        let meta = file.metadata().map_err(|err| fail(err.to_string()))?;
        if !meta.is_file() || meta.len() > MAX_COMPONENT {
            return Err(fail(format!("not a component: a regular file of at most {} GiB", MAX_COMPONENT >> 30)));
        }
        let dir = self.output.parent().expect("components live in a directory");
        let mut partial = tempfile::NamedTempFile::new_in(dir).map_err(|err| fail(err.to_string()))?;
        std::io::copy(&mut file.take(MAX_COMPONENT), partial.as_file_mut()).map_err(|err| fail(err.to_string()))?;
        // What the agent declares of itself travels inside its component.
        let declared = super::declaration::from_source(&self.agent)
            .map_err(|err| AgentSourceError::BuildFailed { dir: self.agent.clone(), log: err.to_string() })?;
        if let Some(declared) = declared {
            use std::io::Write as _;
            let section = super::declaration::section(&declared);
            partial.as_file_mut().write_all(&section).map_err(|err| fail(err.to_string()))?;
        }
        partial.persist(&self.output).map_err(|err| fail(err.error.to_string()))?;
        Ok(self.output.clone())
    }
}

/// flue's WIT, written once into the cache (`<cache>/wit-<digest>/`), for
/// agents that carry none of their own.
pub(crate) fn embedded_wit(files: &[(&str, &str)]) -> Result<PathBuf, AgentSourceError> {
    let fail = |reason: String| AgentSourceError::Cache(reason);
    let cache = cache_dirs::cache_root().map_err(fail)?;
    let mut digest = Sha256::new();
    for (name, content) in files {
        digest.update(name.as_bytes());
        digest.update([0]);
        digest.update(content.as_bytes());
        digest.update([0]);
    }
    let name = format!("wit-{}", &hex::encode(digest.finalize())[..16]);
    let dir = cache.join(&name);
    if std::fs::symlink_metadata(&dir).is_err() {
        let partial = tempfile::Builder::new().prefix(".wit-").tempdir_in(&cache).map_err(|e| fail(e.to_string()))?;
        super::wit::write_into(partial.path(), files)
            .map_err(|err| fail(format!("{}: {err}", partial.path().display())))?;
        // Another process may have won the race: its copy is as good.
        if let Err(err) = std::fs::rename(partial.path(), &dir)
            && std::fs::symlink_metadata(&dir).is_err()
        {
            return Err(fail(format!("{}: {err}", dir.display())));
        }
    }
    cache_dirs::check_private(&dir).map_err(fail)?;
    Ok(dir)
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
