//! `flue new` and `flue build`: agents from source.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use super::{Failure, out, usage};
use crate::events::EventLog;
use crate::guest::{BuildIsolation, BuildOptions, Language};

/// `flue build` arguments.
#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The agent's directory (with Cargo.toml, app.py or agent.js).
    #[arg(default_value = ".")]
    pub dir: PathBuf,

    /// Where the build runs: building runs the agent's code (build scripts,
    /// procedural macros, componentize's pre-initialization). `auto` uses
    /// bubblewrap when it works here (no network — a Rust agent's
    /// dependencies are fetched before, by cargo alone — and nothing of the
    /// host writable but the build's own directory) and warns when it does
    /// not; `none` runs it on this machine, as you.
    #[arg(long, value_enum, default_value = "auto", env = "FLUE_BUILD_ISOLATION")]
    pub isolation: BuildIsolation,
}

/// `flue new` arguments.
#[derive(Args, Debug)]
pub struct NewArgs {
    /// The agent's language.
    #[arg(value_enum)]
    pub language: LanguageArg,
    /// Name of the agent, and of the directory created for it.
    pub name: String,
}

/// The languages `flue new` has templates for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LanguageArg {
    /// Rust, built with cargo.
    Rust,
    /// Python, built with componentize-py.
    Python,
    /// JavaScript, built with componentize-js.
    #[value(name = "js")]
    JavaScript,
}

impl From<LanguageArg> for Language {
    fn from(arg: LanguageArg) -> Self {
        match arg {
            LanguageArg::Rust => Language::Rust,
            LanguageArg::Python => Language::Python,
            LanguageArg::JavaScript => Language::JavaScript,
        }
    }
}

/// `flue build`: print the component's path.
pub fn build(args: BuildArgs, events: EventLog) -> Result<(), Failure> {
    let options = BuildOptions { force: true, isolation: args.isolation };
    let wasm = crate::guest::build::build_with_options(&args.dir, options, &events).map_err(usage)?;
    out!("{}", wasm.display());
    Ok(())
}

/// `flue new`: create the agent and say how to build and run it.
pub fn new(args: NewArgs) -> Result<(), Failure> {
    let dir = crate::guest::scaffold::create(args.language.into(), &args.name, Path::new(".")).map_err(usage)?;
    out!("created {}: build it with `flue build {}`, run it with `flue run {}`", dir.display(), args.name, args.name);
    Ok(())
}
