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

/// A componentize toolchain: what it is called, how to get it, the source
/// file it starts from, how to tell whether the agent exports `tools`, and
/// its arguments given the WIT directory, the world and the output path.
pub(crate) struct Componentizer {
    tool: &'static str,
    provision: fn(&EventLog) -> Result<Tool, AgentSourceError>,
    source: &'static str,
    exports_tools: fn(&str) -> bool,
    args: fn(&Path, &str, &Path) -> Vec<OsString>,
}

/// The world an agent is built for: `agent-with-tools` when its source
/// exports a tool handler, else `agent`.
const WORLDS: [&str; 2] = ["agent", "agent-with-tools"];

/// Whether JavaScript `source` exports `tools` (`export const tools = …`,
/// or `tools` in an `export { … }` list).
fn javascript_exports_tools(source: &str) -> bool {
    source.match_indices("export").any(|(at, word)| {
        let rest = source[at + word.len()..].trim_start();
        let declared = ["const", "let", "var"].iter().any(|kw| {
            rest.strip_prefix(kw).is_some_and(|r| r.trim_start().starts_with("tools") && is_word_end(r.trim_start(), 5))
        });
        let listed = rest
            .strip_prefix('{')
            .and_then(|r| r.split_once('}'))
            .is_some_and(|(list, _)| list.split(',').any(|item| item.split_whitespace().last() == Some("tools")));
        declared || listed
    })
}

fn is_word_end(text: &str, at: usize) -> bool {
    text[at..].chars().next().is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '$'))
}

pub(crate) const PYTHON: Componentizer = Componentizer {
    tool: "componentize-py",
    provision: toolchains::componentize_py,
    source: "app.py",
    // componentize-py wants a class per exported interface: `class Tools(exports.Tools)`.
    exports_tools: |source| source.contains("exports.Tools"),
    args: |wit, world, out| {
        [
            "-d".as_ref(),
            wit.as_os_str(),
            "-w".as_ref(),
            world.as_ref(),
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
    source: "agent.js",
    exports_tools: javascript_exports_tools,
    // Agents get no HTTP: leave out the runtime's fetch and http features so
    // the component imports nothing the host does not grant.
    args: |wit, world, out| {
        let args: [&std::ffi::OsStr; 11] = [
            "agent.js".as_ref(),
            "--wit".as_ref(),
            wit.as_os_str(),
            "--world-name".as_ref(),
            world.as_ref(),
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

/// The first MiB of `path` as text (empty when it cannot be read).
fn read_start(path: &Path) -> String {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    if let Ok(file) = std::fs::File::open(path) {
        let _ = file.take(1 << 20).read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

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
    // The start of the source says which world (and, for JavaScript, which
    // release of the WIT) the agent is built for.
    let source = read_start(&dir.join(toolchain.source));
    let world = WORLDS[usize::from((toolchain.exports_tools)(&source))];
    let files = if toolchain.source == "agent.js" { super::wit::for_javascript(&source) } else { super::wit::FILES };
    let provided_wit = if own_wit { None } else { Some(embedded_wit(files)?) };
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
    args.extend((toolchain.args)(&wit, world, &partial));
    let _progress = events.progress(format!("building {} ({})", dir.display(), toolchain.tool));
    let ran = super::isolate::run(space.command(&tool.program, &args, &visible)?, toolchain.tool)?;
    if !ran.success {
        let log = if ran.stderr.trim().is_empty() { ran.stdout } else { ran.stderr };
        return Err(AgentSourceError::BuildFailed { dir: dir.into(), log: readable_log(&log) });
    }
    paths.publish(&partial)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_javascript_tool_handler_is_found_however_it_is_exported() {
        assert!(javascript_exports_tools("export const tools = { call(name, input) {} };"));
        assert!(javascript_exports_tools("const tools = {};\nexport { run, tools };"));
        assert!(javascript_exports_tools("export {\n  run,\n  helpers as tools\n}"));
        assert!(!javascript_exports_tools("export const toolsList = [];"));
        assert!(!javascript_exports_tools("export const run = {}; // tools"));
    }
}
