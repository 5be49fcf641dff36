//! Python and JavaScript agents: built with componentize-py and
//! componentize-js into `<dir>/target/flue/agent.wasm`.

use std::path::{Path, PathBuf};

use super::build::{AgentSourceError, partial_output, publish, run_tool, stale, wit_dir};
use super::toolchains::{self, Tool};
use crate::events::EventLog;

/// A componentize toolchain: what it is called, how to get it, and its
/// arguments given the WIT directory and the output path.
pub(crate) struct Componentizer {
    tool: &'static str,
    provision: fn(&Path, &EventLog) -> Result<Tool, AgentSourceError>,
    args: fn(&Path, &Path) -> Vec<std::ffi::OsString>,
}

pub(crate) const PYTHON: Componentizer = Componentizer {
    tool: "componentize-py",
    provision: |_, events| toolchains::componentize_py(events),
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

/// Build `dir` with a componentize toolchain into `target/flue/agent.wasm`,
/// unless that is newer than every source.
pub(crate) fn build(dir: &Path, toolchain: &Componentizer, events: &EventLog) -> Result<PathBuf, AgentSourceError> {
    let output = dir.join("target/flue/agent.wasm");
    let wit = wit_dir(dir);
    if !stale(&output, &[dir.to_path_buf(), wit.clone()]) {
        return Ok(output);
    }
    let tool = (toolchain.provision)(dir, events)?;
    std::fs::create_dir_all(dir.join("target/flue"))
        .map_err(|err| AgentSourceError::Read { path: dir.join("target"), reason: err.to_string() })?;
    let partial = partial_output(&output);
    let mut command = tool.command();
    command.args((toolchain.args)(&wit, &partial));
    run_tool(command, dir, toolchain.tool, events)?;
    publish(&partial, &output)
}
