//! Python and JavaScript agents: built with componentize-py and
//! componentize-js, isolated as every build is ([`super::isolate`]) — both
//! run the agent's code while they pre-initialize it.
//!
//! The WIT is the agent's own `wit/` when it has one (as `flue new` makes),
//! else flue's, which the builder provides: an agent builds wherever it is.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::build::{AgentSourceError, BuildOptions, BuildPaths, embedded_wit, readable_log, stale};
use super::isolate::{BuildSpace, launcher};
use super::toolchains::{self, Tool};
use crate::events::EventLog;

/// A componentize toolchain: what it is called, how to get it, and its
/// arguments given the WIT directory and the output path.
pub(crate) struct Componentizer {
    tool: &'static str,
    provision: fn(&EventLog) -> Result<Tool, AgentSourceError>,
    args: fn(&Path, &Path) -> Vec<OsString>,
}

pub(crate) const PYTHON: Componentizer = Componentizer {
    tool: "componentize-py",
    provision: toolchains::componentize_py,
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

pub(crate) const JAVASCRIPT: Componentizer = Componentizer {
    tool: "componentize-js",
    provision: toolchains::componentize_js,
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

/// Build `dir` (canonical) with a componentize toolchain, unless its
/// component is newer than every source (`force` is cargo's business: these
/// tools see nothing but the agent's directory and the WIT).
pub(crate) fn build(
    dir: &Path,
    toolchain: &Componentizer,
    options: BuildOptions,
    events: &EventLog,
) -> Result<PathBuf, AgentSourceError> {
    let paths = BuildPaths::new(dir, dir)?;
    let own_wit = dir.join("wit").is_dir();
    let provided_wit = if own_wit { None } else { Some(embedded_wit()?) };
    let inputs: Vec<PathBuf> = [dir.to_path_buf()].into_iter().chain(provided_wit.clone()).collect();
    if !stale(&paths.output, &inputs) {
        return Ok(paths.output);
    }
    let mut space = BuildSpace::new(launcher(options.isolation, events)?);
    let tool = (toolchain.provision)(events)?;
    let _lock = paths.lock()?;
    if !stale(&paths.output, &inputs) {
        return Ok(paths.output); // built by another build while this one waited
    }
    for needed in &tool.needs {
        space.read_only(needed.clone());
    }
    let visible = paths.prepare(&mut space)?;
    let wit = match provided_wit {
        Some(wit) => {
            space.read_only(wit.clone());
            wit
        }
        None => visible.join("wit"),
    };
    let partial = paths.work.join("component.wasm.partial");
    // A previous build may have left anything here, a link included.
    let _ = std::fs::remove_file(&partial);
    let mut args = tool.leading.clone();
    args.extend((toolchain.args)(&wit, &partial));
    let _progress = events.progress(format!("building {} ({})", dir.display(), toolchain.tool));
    let ran = super::isolate::run(space.command(&tool.program, &args, &visible)?, toolchain.tool)?;
    if !ran.success {
        let log = if ran.stderr.trim().is_empty() { ran.stdout } else { ran.stderr };
        return Err(AgentSourceError::BuildFailed { dir: dir.into(), log: readable_log(&log) });
    }
    paths.publish(&partial)
}
