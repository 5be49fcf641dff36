//! The `flue:sandbox@0.1.0` agent world, from its frozen WIT
//! (`host/wit-compat/v0_1_0`), and its types' conversions to flue's. The
//! host serves these imports in `run::compat`.

use std::time::Duration;

use super::convert::{agent_requests, same_fields};
use crate::sandbox::SandboxSource;
use crate::sandbox::error::{ErrorKind, SandboxError};
use crate::sandbox::session::ExecOptions;
use crate::sandbox::{CreateOptions, ExecOutput, FileStat, Resources};
use generated::flue::sandbox::{harness, types};

/// The 0.1.0 agent world, from its frozen WIT.
#[allow(missing_docs, reason = "generated; the WIT carries the documentation")]
mod generated {
    wasmtime::component::bindgen!({
        path: "wit-compat/v0_1_0",
        world: "flue:sandbox/agent",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "flue:sandbox/sandbox-api.sandbox": crate::bindings::handles::AgentSandbox,
            "flue:sandbox/harness.harness": crate::bindings::handles::AgentHarness,
            "flue:sandbox/harness.session": crate::bindings::handles::AgentSession,
        },
    });
}

pub use generated::*;

impl From<SandboxError> for types::SandboxError {
    fn from(err: SandboxError) -> Self {
        use types::SandboxError as Old;
        let m = err.message;
        match err.kind {
            ErrorKind::NotFound => Old::NotFound(m),
            ErrorKind::PermissionDenied => Old::PermissionDenied(m),
            ErrorKind::AlreadyExists => Old::AlreadyExists(m),
            ErrorKind::NotADirectory => Old::NotADirectory(m),
            ErrorKind::IsADirectory => Old::IsADirectory(m),
            ErrorKind::Timeout => Old::Timeout(m),
            // 0.1.0 has no `too-large`: the nearest is a refused argument.
            ErrorKind::TooLarge | ErrorKind::InvalidInput => Old::InvalidInput(m),
            ErrorKind::Unsupported => Old::Unsupported(m),
            ErrorKind::Auth => Old::Auth(m),
            ErrorKind::Unavailable => Old::Unavailable(m),
            ErrorKind::SandboxDied => Old::SandboxDied(m),
            ErrorKind::Other => Old::Other(m),
        }
    }
}

same_fields!(FileStat, types::FileStat, { is_file, is_directory, is_symlink, size, mtime_ms, mode });
same_fields!(Resources, types::Resources, { cpu, memory_gib, disk_gib, gpu });

impl From<ExecOutput> for types::ExecResult {
    fn from(o: ExecOutput) -> Self {
        types::ExecResult { stdout: o.stdout, stderr: o.stderr, exit_code: o.exit_code }
    }
}

impl From<types::CreateOptions> for CreateOptions {
    fn from(o: types::CreateOptions) -> Self {
        CreateOptions {
            image: o.image,
            snapshot: o.snapshot,
            env: o.env,
            labels: o.labels,
            name: o.name,
            auto_stop_minutes: o.auto_stop_minutes,
            resources: o.resources.map(Into::into),
            volumes: Vec::new(),
        }
    }
}

agent_requests!(types, harness);
