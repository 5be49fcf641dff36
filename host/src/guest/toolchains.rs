//! Guest toolchains, provisioned by flue the way cargo fetches crates.
//!
//! A Python or JavaScript agent needs a pinned componentize tool; a Rust
//! agent needs the `wasm32-wasip2` target. flue finds a tool in exactly two
//! places — its own cache, or the `PATH` (at the pinned version) — never
//! beside the agent. When it is in neither, flue installs it —
//! componentize-py from PyPI with `pip --target`, componentize-js from the
//! npm registry with `npm install --prefix`, the Rust target with `rustup
//! target add` — says so on a line of its own, and fails with an error
//! naming the registry when it cannot reach it.
//!
//! Installs live in `<cache>/toolchains/<tool>-<version>/` (the cache is
//! `$FLUE_CACHE_DIR`, else `$XDG_CACHE_HOME/flue`, else `~/.cache/flue`),
//! are made under a lock (two builds at once install once), and are used
//! only while they are what was installed: the directory and everything in
//! it this user's alone ([`super::cache_dirs`]), and its files — names,
//! sizes, times — what its marker file recorded when the install completed. Anything else is
//! removed and installed again; a toolchains directory someone else can
//! write to is refused.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use super::build::AgentSourceError;
use super::cache_dirs;
use super::isolate::BuildSpace;
use crate::events::{EventLog, LogLevel};
use crate::which::find_on_path;

/// The componentize-py flue builds Python agents with.
pub const COMPONENTIZE_PY: &str = "0.25.1";
/// The componentize-js flue builds JavaScript agents with.
pub const COMPONENTIZE_JS: &str = "0.23.0";

/// The marker file an install writes last.
const MARKER: &str = ".installed";

/// Where toolchains are installed, checked; or why there is nowhere.
fn toolchains_dir() -> Result<PathBuf, AgentSourceError> {
    cache_dirs::cache_root()
        .and_then(|root| cache_dirs::private_subdir(&root, "toolchains"))
        .map_err(AgentSourceError::Cache)
}

/// How to run a tool: a program, the arguments that come first, and what a
/// build must be able to read to run it.
#[derive(Debug, Clone)]
pub struct Tool {
    /// The program.
    pub program: PathBuf,
    /// Arguments before the tool's own.
    pub leading: Vec<OsString>,
    /// Directories the tool runs from (its install, its interpreter).
    pub needs: Vec<PathBuf>,
}

/// componentize-py: flue's copy, one on the PATH at the pinned version, or
/// a fresh install.
pub fn componentize_py(events: &EventLog) -> Result<Tool, AgentSourceError> {
    let toolchains = toolchains_dir()?;
    let dir = toolchains.join(format!("componentize-py-{COMPONENTIZE_PY}"));
    let python = find_on_path("python3").ok_or_else(|| {
        AgentSourceError::Toolchain(format!(
            "componentize-py is not installed, and flue cannot install it: python3 is not on the PATH \
             (install Python 3, or componentize-py {COMPONENTIZE_PY} yourself)"
        ))
    })?;
    let interpreter = Interpreter::of(&python, &toolchains);
    // flue's copy is a plain package directory; run its entry point.
    let own = Tool {
        program: interpreter.executable.clone(),
        leading: vec![
            "-c".into(),
            format!(
                "import sys; sys.path.insert(0, {:?}); from componentize_py import script; \
                 sys.argv[0] = 'componentize-py'; sys.exit(script())",
                dir.join("site").display().to_string()
            )
            .into(),
        ],
        needs: [dir.clone()].into_iter().chain(interpreter.prefixes.iter().cloned()).collect(),
    };
    let identity = format!("componentize-py {COMPONENTIZE_PY}");
    if verified(&dir, &identity, events) {
        return Ok(own);
    }
    if let Some(found) = find_on_path("componentize-py")
        && version_of(&found, &toolchains).is_some_and(|v| v.contains(COMPONENTIZE_PY))
    {
        return Ok(Tool { program: found, leading: Vec::new(), needs: Vec::new() });
    }
    let index = std::env::var("PIP_INDEX_URL").unwrap_or_else(|_| "https://pypi.org/simple".into());
    let what = format!("componentize-py {COMPONENTIZE_PY} from PyPI ({index})");
    install(&dir, &identity, &what, events, |dir| {
        let mut pip = Command::new(&interpreter.executable);
        pip.args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-warn-script-location"])
            .arg("--target")
            .arg(dir.join("site"))
            .arg(format!("componentize-py=={COMPONENTIZE_PY}"));
        pip
    })?;
    Ok(own)
}

/// componentize-js: flue's copy, one on the PATH at the pinned version, or
/// a fresh install.
pub fn componentize_js(events: &EventLog) -> Result<Tool, AgentSourceError> {
    let toolchains = toolchains_dir()?;
    let dir = toolchains.join(format!("componentize-js-{COMPONENTIZE_JS}"));
    let own =
        Tool { program: dir.join("node_modules/.bin/componentize-js"), leading: Vec::new(), needs: vec![dir.clone()] };
    let identity = format!("componentize-js {COMPONENTIZE_JS}");
    if verified(&dir, &identity, events) {
        return Ok(own);
    }
    if let Some(found) = find_on_path("componentize-js")
        && version_of(&found, &toolchains).is_some_and(|v| v.trim() == COMPONENTIZE_JS)
    {
        return Ok(Tool { program: found, leading: Vec::new(), needs: Vec::new() });
    }
    let npm = find_on_path("npm").ok_or_else(|| {
        AgentSourceError::Toolchain(format!(
            "componentize-js is not installed, and flue cannot install it: npm is not on the PATH \
             (install Node.js, or @bytecodealliance/componentize-js@{COMPONENTIZE_JS} yourself)"
        ))
    })?;
    let registry = std::env::var("npm_config_registry").unwrap_or_else(|_| "https://registry.npmjs.org/".into());
    let what = format!("componentize-js {COMPONENTIZE_JS} from the npm registry ({registry})");
    install(&dir, &identity, &what, events, |dir| {
        let mut command = Command::new(&npm);
        command
            .args(["install", "--no-save", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"])
            .arg(dir)
            .arg(format!("@bytecodealliance/componentize-js@{COMPONENTIZE_JS}"));
        command
    })?;
    Ok(own)
}

/// The Python a `python3` on the PATH really is (a pyenv shim or a venv's
/// link resolves to an interpreter elsewhere), and the prefixes it loads
/// its library from: what a sandboxed build must see to run it.
struct Interpreter {
    executable: PathBuf,
    prefixes: Vec<PathBuf>,
}

impl Interpreter {
    /// Ask `python` itself, from `neutral` (a shim may read the working
    /// directory, which must not be the agent's).
    fn of(python: &Path, neutral: &Path) -> Interpreter {
        let asked = Command::new(python)
            .args(["-c", "import sys; print(sys.executable); print(sys.prefix); print(sys.base_prefix)"])
            .current_dir(neutral)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output();
        let lines: Vec<PathBuf> = match asked {
            Ok(out) if out.status.success() => {
                String::from_utf8_lossy(&out.stdout).lines().map(PathBuf::from).filter(|p| p.is_absolute()).collect()
            }
            _ => Vec::new(),
        };
        match lines.as_slice() {
            [executable, prefixes @ ..] if executable.is_file() => Interpreter {
                executable: executable.clone(),
                prefixes: prefixes.iter().filter_map(|p| p.canonicalize().ok()).collect(),
            },
            _ => Interpreter { executable: python.to_path_buf(), prefixes: Vec::new() },
        }
    }
}

/// The target Rust agents are built for.
pub(crate) const WASM_TARGET: &str = "wasm32-wasip2";

/// The Rust toolchain flue itself builds and tests with (its source tree's
/// `rust-toolchain.toml`).
fn pinned_rust_channel() -> Option<String> {
    let pin: toml::Table = toml::from_str(include_str!("../../../rust-toolchain.toml")).ok()?;
    Some(pin.get("toolchain")?.get("channel")?.as_str()?.to_string())
}

/// The toolchains rustup has installed (`rustup toolchain list`, asked on
/// this machine from flue's cache, so that no `rust-toolchain.toml` of an
/// agent's applies), each with whether it is the default; asked once.
fn installed_rust_toolchains() -> &'static [(String, bool)] {
    static INSTALLED: OnceLock<Vec<(String, bool)>> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let (Some(rustup), Ok(neutral)) = (find_on_path("rustup"), toolchains_dir()) else { return Vec::new() };
        let listed = Command::new(rustup)
            .args(["toolchain", "list"])
            .current_dir(neutral)
            .env_remove("RUSTUP_TOOLCHAIN")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output();
        match listed {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|line| {
                    let mut words = line.split_whitespace();
                    let name = words.next()?;
                    Some((name.to_string(), words.any(|word| word.contains("default"))))
                })
                .collect(),
            _ => Vec::new(),
        }
    })
}

/// The toolchain a build's fetch phase runs cargo with, decided on this
/// machine, never by the agent: `$RUSTUP_TOOLCHAIN` when you set it, else
/// flue's pinned Rust when rustup has it, else rustup's default; `None`
/// without rustup (the cargo on the `PATH` is then the only one).
pub(crate) fn trusted_rust_toolchain() -> Option<String> {
    if let Some(chosen) = std::env::var("RUSTUP_TOOLCHAIN").ok().filter(|t| !t.is_empty()) {
        return Some(chosen);
    }
    let installed = installed_rust_toolchains();
    let pinned = pinned_rust_channel().and_then(|pin| {
        installed
            .iter()
            .find(|(name, _)| *name == pin || name.strip_prefix(&pin).is_some_and(|rest| rest.starts_with('-')))
    });
    pinned.or_else(|| installed.iter().find(|(_, default)| *default)).map(|(name, _)| name.clone())
}

/// Whether `name` is the name of an official toolchain rustup could add a
/// target to: a channel (`stable`, `beta`, `nightly`) or a version, with an
/// optional date and host, in the characters such names have.
fn official_toolchain_name(name: &str) -> bool {
    let channel = ["stable", "beta", "nightly"].iter().any(|c| name == *c || name.starts_with(&format!("{c}-")))
        || name.starts_with(|c: char| c.is_ascii_digit());
    channel && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// The rustup toolchain whose sysroot is `sysroot`, when it is one of
/// rustup's installed official toolchains; `None` for anything else (a
/// build's `rustc` answers what it likes: its toolchain file may name a
/// directory of the agent's).
fn installed_toolchain_at(sysroot: &Path) -> Option<String> {
    let toolchains = super::isolate::rustup_home()?.join("toolchains").canonicalize().ok()?;
    let name = sysroot.file_name()?.to_str()?;
    let located = sysroot.parent().and_then(|parent| parent.canonicalize().ok()).is_some_and(|p| p == toolchains);
    let installed = installed_rust_toolchains().iter().any(|(installed, _)| installed == name);
    (located && installed && official_toolchain_name(name)).then(|| name.to_string())
}

/// The `wasm32-wasip2` target, for the Rust toolchain a build in `cwd`
/// (as `space` sees it) uses — its `rust-toolchain.toml` applies, so it is
/// asked inside the build's sandbox — added with rustup when missing, and
/// only to one of rustup's installed official toolchains.
pub(crate) fn ensure_wasm_target(space: &BuildSpace, cwd: &Path, events: &EventLog) -> Result<(), AgentSourceError> {
    const TARGET: &str = WASM_TARGET;
    let no_rustc = || AgentSourceError::Toolchain("cannot run rustc: install Rust from https://rustup.rs".into());
    let rustc = match std::env::var_os("RUSTC").map(PathBuf::from) {
        Some(rustc) if rustc.is_absolute() => rustc,
        _ => find_on_path("rustc").ok_or_else(no_rustc)?,
    };
    let asked = super::isolate::run(space.command(&rustc, &["--print".into(), "sysroot".into()], cwd)?, "rustc")?;
    if !asked.success {
        return Err(AgentSourceError::Toolchain(format!("cannot run rustc: {}", asked.stderr.trim())));
    }
    let sysroot = PathBuf::from(asked.stdout.trim());
    if sysroot.join("lib/rustlib").join(TARGET).is_dir() {
        return Ok(());
    }
    let install_for = || {
        AgentSourceError::Toolchain(format!(
            "the Rust target {TARGET} is not installed, and flue cannot add it: install it for {:?}",
            sysroot.display().to_string()
        ))
    };
    let rustup = find_on_path("rustup").ok_or_else(install_for)?;
    // The name comes from the build's answer: acted on only when it is one
    // of rustup's own official toolchains, in rustup's own directory.
    let toolchain = installed_toolchain_at(&sysroot).ok_or_else(|| {
        AgentSourceError::Toolchain(format!(
            "the Rust target {TARGET} is missing from the toolchain this agent builds with ({:?}), which is not \
             one of rustup's installed official toolchains: flue adds targets only to those; install it yourself",
            sysroot.display().to_string()
        ))
    })?;
    // One install at a time (builds run in parallel); look again once locked.
    let dir = toolchains_dir()?;
    let _lock = cache_dirs::lock(&dir.join("rust-target.lock")).map_err(AgentSourceError::Cache)?;
    if sysroot.join("lib/rustlib").join(TARGET).is_dir() {
        return Ok(());
    }
    events.log("flue", LogLevel::Info, format!("installing the Rust target {TARGET} for {toolchain} (rustup)…"));
    let _progress = events.progress(format!("installing the Rust target {TARGET}"));
    let out = Command::new(rustup)
        .args(["target", "add", TARGET, "--toolchain"])
        .arg(&toolchain)
        .current_dir(&dir)
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

/// What an install's marker says: the tool and the digest of what was
/// installed.
fn marker_text(identity: &str, digest: &str) -> String {
    format!("{identity}\nsha256 {digest}\n")
}

/// Whether `dir` holds a complete install of `identity` that is still what
/// was installed. A directory that exists but is not is reported (it is
/// about to be installed afresh). Checked once per process.
fn verified(dir: &Path, identity: &str, events: &EventLog) -> bool {
    static VERIFIED: OnceLock<Mutex<Vec<PathBuf>>> = OnceLock::new();
    let memo = VERIFIED.get_or_init(Default::default);
    if memo.lock().unwrap_or_else(|e| e.into_inner()).iter().any(|d| d == dir) {
        return true;
    }
    if std::fs::symlink_metadata(dir).is_err() {
        return false;
    }
    match check_install(dir, identity) {
        Ok(()) => {
            memo.lock().unwrap_or_else(|e| e.into_inner()).push(dir.to_path_buf());
            true
        }
        Err(why) => {
            events.log(
                "flue",
                LogLevel::Warn,
                format!("not using {}: {why}; installing {identity} afresh", dir.display()),
            );
            false
        }
    }
}

fn check_install(dir: &Path, identity: &str) -> Result<(), String> {
    cache_dirs::check_private(dir)?;
    let recorded = read_marker(&dir.join(MARKER)).ok_or("the install is incomplete (no marker)")?;
    let digest = cache_dirs::tree_digest(dir, MARKER)?;
    if recorded != marker_text(identity, &digest) {
        return Err("its files are not what was installed".into());
    }
    Ok(())
}

/// The marker's text: a small regular file of ours, not a link.
fn read_marker(path: &Path) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path).ok()?;
    let mut text = String::new();
    file.take(4096).read_to_string(&mut text).ok()?;
    Some(text)
}

/// What `tool --version` prints (run from `neutral`, not the agent's
/// directory).
fn version_of(tool: &Path, neutral: &Path) -> Option<String> {
    let out = Command::new(tool)
        .arg("--version")
        .current_dir(neutral)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Install `identity` into `dir` with the command `installer` gives, once,
/// under a lock, and record its digest; `what` names the tool and its
/// registry for the progress line and for errors.
fn install(
    dir: &Path,
    identity: &str,
    what: &str,
    events: &EventLog,
    installer: impl FnOnce(&Path) -> Command,
) -> Result<(), AgentSourceError> {
    use std::os::unix::fs::DirBuilderExt;
    let fail = |reason: String| AgentSourceError::Toolchain(format!("could not install {what}: {reason}"));
    let parent = dir.parent().expect("toolchain directories have a parent");
    let name = dir.file_name().expect("toolchain directories have a name").to_string_lossy();
    let _lock = cache_dirs::lock(&parent.join(format!("{name}.lock"))).map_err(AgentSourceError::Cache)?;
    if check_install(dir, identity).is_ok() {
        return Ok(()); // another build installed it while this one waited
    }
    if std::fs::symlink_metadata(dir).is_ok() {
        std::fs::remove_dir_all(dir).map_err(|err| fail(format!("cannot remove {}: {err}", dir.display())))?;
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|err| fail(format!("cannot create {}: {err}", dir.display())))?;
    events.log("flue", LogLevel::Info, format!("installing {what} into {}…", dir.display()));
    let _progress = events.progress(format!("installing {what}"));
    let out = installer(dir)
        .current_dir(parent)
        .stdin(Stdio::null())
        .output()
        .map_err(|err| fail(format!("cannot run the installer: {err}")))?;
    if !out.status.success() {
        let _ = std::fs::remove_dir_all(dir);
        let log = String::from_utf8_lossy(&out.stderr);
        let last: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = last[last.len().saturating_sub(6)..].join("\n");
        return Err(fail(format!("the registry could not be reached or refused it (are you offline?):\n{tail}")));
    }
    cache_dirs::make_private(dir).map_err(|err| fail(format!("cannot make {} private: {err}", dir.display())))?;
    let digest = cache_dirs::tree_digest(dir, MARKER).map_err(fail)?;
    std::fs::write(dir.join(MARKER), marker_text(identity, &digest)).map_err(|err| fail(err.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_official_toolchain_names_go_to_rustup() {
        for official in
            ["stable", "1.95.0-x86_64-unknown-linux-gnu", "nightly-2026-01-01-x86_64-unknown-linux-gnu", "beta"]
        {
            assert!(official_toolchain_name(official), "{official}");
        }
        for other in ["--help", "my-toolchain", "stable/../../x", "1.95 ; rm", "", "stablex"] {
            assert!(!official_toolchain_name(other), "{other}");
        }
        assert!(pinned_rust_channel().is_some_and(|channel| official_toolchain_name(&channel)));
    }
}
