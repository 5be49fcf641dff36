//! Guest toolchains, provisioned by flue the way cargo fetches crates.
//!
//! A Python or JavaScript agent needs a pinned componentize tool; a Rust
//! agent needs the `wasm32-wasip2` target. When one is missing, flue installs
//! it — componentize-py from PyPI into its own cache with `pip --target`,
//! componentize-js from the npm registry with `npm install --prefix`, the
//! Rust target with `rustup target add` — says so on a line of its own, and
//! fails with an error naming the registry when it cannot reach it.
//!
//! Installs live in `<cache>/toolchains/<tool>-<version>/` (the cache is
//! `$FLUE_CACHE_DIR`, else `$XDG_CACHE_HOME/flue`, else `~/.cache/flue`), are
//! made under a lock (two builds at once install once) and count only once
//! complete (a marker file written last).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::build::AgentSourceError;
use super::which::find_on_path;
use crate::events::EventLog;
use crate::runtime::cache::ComponentCache;

/// The componentize-py flue builds Python agents with.
pub const COMPONENTIZE_PY: &str = "0.25.1";
/// The componentize-js flue builds JavaScript agents with.
pub const COMPONENTIZE_JS: &str = "0.23.0";

/// Where toolchains are installed, or why there is nowhere.
fn toolchains_dir() -> Result<PathBuf, AgentSourceError> {
    ComponentCache::default_dir().map(|dir| dir.join("toolchains")).ok_or_else(|| {
        AgentSourceError::Toolchain("no cache directory for toolchains: set FLUE_CACHE_DIR or HOME".into())
    })
}

/// How to run a tool: a program and the arguments that come first.
#[derive(Debug, Clone)]
pub struct Tool {
    /// The program.
    pub program: PathBuf,
    /// Arguments before the tool's own.
    pub leading: Vec<String>,
}

impl Tool {
    /// A command that runs the tool.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.leading);
        command
    }
}

/// componentize-py: flue's own copy, one on the PATH at the pinned version,
/// or a fresh install.
pub fn componentize_py(events: &EventLog) -> Result<Tool, AgentSourceError> {
    let dir = toolchains_dir()?.join(format!("componentize-py-{COMPONENTIZE_PY}"));
    let python = find_on_path("python3").ok_or_else(|| {
        AgentSourceError::Toolchain(format!(
            "componentize-py is not installed, and flue cannot install it: python3 is not on the PATH \
             (install Python 3, or componentize-py {COMPONENTIZE_PY} yourself)"
        ))
    })?;
    // flue's copy is a plain package directory; run its entry point.
    let own = Tool {
        program: python.clone(),
        leading: vec![
            "-c".into(),
            format!(
                "import sys; sys.path.insert(0, {:?}); from componentize_py import script; \
                 sys.argv[0] = 'componentize-py'; sys.exit(script())",
                dir.join("site").display().to_string()
            ),
        ],
    };
    if installed(&dir) {
        return Ok(own);
    }
    if let Some(found) = find_on_path("componentize-py")
        && version_of(&found).is_some_and(|v| v.contains(COMPONENTIZE_PY))
    {
        return Ok(Tool { program: found, leading: Vec::new() });
    }
    let index = std::env::var("PIP_INDEX_URL").unwrap_or_else(|_| "https://pypi.org/simple".into());
    install(&dir, &format!("componentize-py {COMPONENTIZE_PY} from PyPI ({index})"), events, |dir| {
        let mut pip = Command::new(&python);
        pip.args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-warn-script-location"])
            .arg("--target")
            .arg(dir.join("site"))
            .arg(format!("componentize-py=={COMPONENTIZE_PY}"));
        pip
    })?;
    Ok(own)
}

/// componentize-js: from the agent's own `node_modules`, flue's copy, one on
/// the PATH at the pinned version, or a fresh install.
pub fn componentize_js(agent: &Path, events: &EventLog) -> Result<Tool, AgentSourceError> {
    if let Some(local) = agent.ancestors().map(|d| d.join("node_modules/.bin/componentize-js")).find(|p| p.is_file()) {
        return Ok(Tool { program: local, leading: Vec::new() });
    }
    let dir = toolchains_dir()?.join(format!("componentize-js-{COMPONENTIZE_JS}"));
    let own = Tool { program: dir.join("node_modules/.bin/componentize-js"), leading: Vec::new() };
    if installed(&dir) {
        return Ok(own);
    }
    if let Some(found) = find_on_path("componentize-js")
        && version_of(&found).is_some_and(|v| v.trim() == COMPONENTIZE_JS)
    {
        return Ok(Tool { program: found, leading: Vec::new() });
    }
    let npm = find_on_path("npm").ok_or_else(|| {
        AgentSourceError::Toolchain(format!(
            "componentize-js is not installed, and flue cannot install it: npm is not on the PATH \
             (install Node.js, or @bytecodealliance/componentize-js@{COMPONENTIZE_JS} yourself)"
        ))
    })?;
    let registry = std::env::var("npm_config_registry").unwrap_or_else(|_| "https://registry.npmjs.org/".into());
    install(&dir, &format!("componentize-js {COMPONENTIZE_JS} from the npm registry ({registry})"), events, |dir| {
        let mut command = Command::new(&npm);
        command
            .args(["install", "--no-save", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"])
            .arg(dir)
            .arg(format!("@bytecodealliance/componentize-js@{COMPONENTIZE_JS}"));
        command
    })?;
    Ok(own)
}

/// The `wasm32-wasip2` target, for the Rust toolchain that builds in `dir`
/// (its `rust-toolchain.toml` applies): added with rustup when missing.
pub fn ensure_wasm_target(dir: &Path, events: &EventLog) -> Result<(), AgentSourceError> {
    const TARGET: &str = "wasm32-wasip2";
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc).args(["--print", "sysroot"]).current_dir(dir).stderr(Stdio::null()).output();
    let sysroot = match sysroot {
        Ok(out) if out.status.success() => PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()),
        _ => {
            return Err(AgentSourceError::Toolchain("cannot run rustc: install Rust from https://rustup.rs".into()));
        }
    };
    if sysroot.join("lib/rustlib").join(TARGET).is_dir() {
        return Ok(());
    }
    let Some(rustup) = find_on_path("rustup") else {
        return Err(AgentSourceError::Toolchain(format!(
            "the Rust target {TARGET} is not installed, and without rustup flue cannot add it: \
             install it for {}",
            sysroot.display()
        )));
    };
    // One install at a time (builds run in parallel); look again once locked.
    let dir = toolchains_dir()?;
    std::fs::create_dir_all(&dir).map_err(|err| AgentSourceError::Toolchain(format!("{}: {err}", dir.display())))?;
    let lock = std::fs::File::create(dir.join("rust-target.lock"))
        .map_err(|err| AgentSourceError::Toolchain(format!("{}: {err}", dir.display())))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|err| AgentSourceError::Toolchain(format!("cannot lock {}: {err}", dir.display())))?;
    if sysroot.join("lib/rustlib").join(TARGET).is_dir() {
        return Ok(());
    }
    events.log("flue", "info", format!("installing the Rust target {TARGET} (rustup)…"));
    let _progress = events.progress(format!("installing the Rust target {TARGET}"));
    let out = Command::new(rustup)
        .args(["target", "add", TARGET])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|err| AgentSourceError::Toolchain(format!("cannot run rustup: {err}")))?;
    if !out.status.success() {
        return Err(AgentSourceError::Toolchain(format!(
            "could not add the Rust target {TARGET} from rustup's channel: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// A complete install: its marker exists.
fn installed(dir: &Path) -> bool {
    dir.join(".installed").is_file()
}

/// What `tool --version` prints.
fn version_of(tool: &Path) -> Option<String> {
    let out = Command::new(tool).arg("--version").stdin(Stdio::null()).stderr(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Install into `dir` with the command `installer` gives, once, under a
/// lock; `what` names the tool and its registry for the progress line and
/// for errors.
fn install(
    dir: &Path,
    what: &str,
    events: &EventLog,
    installer: impl FnOnce(&Path) -> Command,
) -> Result<(), AgentSourceError> {
    let fail = |reason: String| AgentSourceError::Toolchain(format!("could not install {what}: {reason}"));
    let parent = dir.parent().expect("toolchain directories have a parent");
    std::fs::create_dir_all(parent).map_err(|err| fail(format!("cannot create {}: {err}", parent.display())))?;
    let lock_path = dir.with_extension("lock");
    let lock = std::fs::File::create(&lock_path).map_err(|err| fail(format!("{}: {err}", lock_path.display())))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|err| fail(format!("cannot lock {}: {err}", lock_path.display())))?;
    if installed(dir) {
        return Ok(()); // another build installed it while this one waited
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|err| fail(format!("cannot create {}: {err}", dir.display())))?;
    events.log("flue", "info", format!("installing {what} into {}…", dir.display()));
    let _progress = events.progress(format!("installing {what}"));
    let out =
        installer(dir).stdin(Stdio::null()).output().map_err(|err| fail(format!("cannot run the installer: {err}")))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(dir);
        let log = String::from_utf8_lossy(&out.stderr);
        let last: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = last[last.len().saturating_sub(6)..].join("\n");
        return Err(fail(format!("the registry could not be reached or refused it (are you offline?):\n{tail}")));
    }
    std::fs::write(dir.join(".installed"), what).map_err(|err| fail(err.to_string()))?;
    Ok(())
}
