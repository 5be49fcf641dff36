//! `flue:sandbox@0.1.0` agents: no streaming file I/O, no `prompt`, and a
//! `session` that cannot fail (a refused name traps, with the reason).

use wasmtime::component::Resource;

use crate::bindings::handles::{AgentHarness, AgentSandbox, AgentSession};
use crate::bindings::v0_1_0::flue::sandbox::{harness, log, sandbox_api, types};
use crate::run::imports::{AgentState, file_methods, sandbox_methods, session_methods};
use crate::sandbox::SandboxSource;
use crate::sandbox::error::SandboxResult;

type WitResult<T> = wasmtime::Result<Result<T, types::SandboxError>>;

fn wit<T>(result: wasmtime::Result<SandboxResult<T>>) -> WitResult<T> {
    result.map(|inner| inner.map_err(Into::into))
}

impl types::Host for AgentState {}
impl sandbox_api::Host for AgentState {}

impl sandbox_api::HostSandbox for AgentState {
    sandbox_methods!();

    async fn drop(&mut self, this: Resource<AgentSandbox>) -> wasmtime::Result<()> {
        self.drop_handle(this)
    }
}

impl harness::Host for AgentState {
    async fn open_sandbox(&mut self, source: harness::SandboxSource) -> WitResult<Resource<AgentSandbox>> {
        wit(self.open(SandboxSource::from(source)).await)
    }

    async fn init(
        &mut self,
        sandbox: Resource<AgentSandbox>,
        options: harness::InitOptions,
    ) -> WitResult<Resource<AgentHarness>> {
        wit(self.init_harness(&sandbox, options.cwd, None, None).await)
    }
}

impl harness::HostHarness for AgentState {
    async fn cwd(&mut self, this: Resource<AgentHarness>) -> wasmtime::Result<String> {
        self.harness_cwd(&this)
    }

    async fn session(
        &mut self,
        this: Resource<AgentHarness>,
        name: Option<String>,
    ) -> wasmtime::Result<Resource<AgentSession>> {
        // This version's `session` cannot return an error: a refusal traps.
        self.new_session(&this, name)?.map_err(|err| wasmtime::Error::msg(err.message))
    }

    async fn drop(&mut self, this: Resource<AgentHarness>) -> wasmtime::Result<()> {
        self.drop_handle(this)
    }
}

impl harness::HostSession for AgentState {
    session_methods!();

    async fn drop(&mut self, this: Resource<AgentSession>) -> wasmtime::Result<()> {
        self.drop_handle(this)
    }
}

impl log::Host for AgentState {
    async fn log(&mut self, level: log::Level, message: String) -> wasmtime::Result<()> {
        use crate::events::LogLevel;
        let level = match level {
            log::Level::Trace => LogLevel::Trace,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Info => LogLevel::Info,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Error => LogLevel::Error,
        };
        self.sandboxes.events.log("agent", level, message);
        Ok(())
    }
}
