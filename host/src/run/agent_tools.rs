//! The agent's own tools, run by its `tools` export in an instance of the
//! agent of its own. The component model forbids entering an instance
//! that is waiting on the host (the agent's `run` is, inside `prompt`), so
//! the host makes a second instance of the same component, in a store of
//! its own, on the first call of a run, and keeps it for the run's later
//! calls. It has the run's sandboxes and the same limits and deadline; its
//! host calls are not journaled (a resumed run replays the tool's result,
//! not how the handler got it), and it cannot give tools of its own.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::Store;
use wasmtime_wasi::WasiCtxBuilder;

use super::imports::AgentState;
use super::sandboxes::RunSandboxes;
use crate::bindings::agent_with_tools::{AgentWithTools, AgentWithToolsPre};
use crate::events::LogLevel;
use crate::model::ToolHandler;
use crate::model::agent_tools::Handled;
use crate::runtime::guest_output::GuestOutput;
use crate::runtime::{StoreLimitsConfig, engine::arm_deadline, new_store};

/// What the store is called in deadline errors.
const WHAT: &str = "the agent's tool handler";

/// Everything a tool-handler instance is made from, and the instance once
/// made.
pub(crate) struct AgentToolsHost {
    pre: AgentWithToolsPre<AgentState>,
    engine: wasmtime::Engine,
    limits: StoreLimitsConfig,
    deadline: Instant,
    sandboxes: Arc<RunSandboxes>,
    live: Option<(Store<AgentState>, AgentWithTools)>,
}

impl AgentToolsHost {
    /// A host for the tools of an agent that exports them (`pre`, found
    /// once when the agent was prepared).
    pub(crate) fn new(
        pre: AgentWithToolsPre<AgentState>,
        limits: StoreLimitsConfig,
        deadline: Instant,
        sandboxes: Arc<RunSandboxes>,
    ) -> Self {
        let engine = pre.engine().clone();
        AgentToolsHost { pre, engine, limits, deadline, sandboxes, live: None }
    }

    fn remaining(&self) -> std::time::Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// The instance, made on first use.
    async fn instance(&mut self) -> wasmtime::Result<&mut (Store<AgentState>, AgentWithTools)> {
        if self.live.is_none() {
            let events = &self.sandboxes.events;
            let stdout = GuestOutput::new("agent tools stdout", LogLevel::Info, events.clone());
            let stderr = GuestOutput::new("agent tools stderr", LogLevel::Warn, events.clone());
            // The same secure defaults as the agent's own store: output only.
            let wasi = WasiCtxBuilder::new().stdout(stdout).stderr(stderr).build();
            let sandboxes = self.sandboxes.clone();
            let mut store = new_store(&self.engine, &self.limits, WHAT, self.remaining(), |base| AgentState {
                wasi,
                base,
                sandboxes,
                conversations: None,
                journal: None,
                agent_tools: None,
            });
            let instance = self.pre.instantiate_async(&mut store).await?;
            self.live = Some((store, instance));
        }
        Ok(self.live.as_mut().expect("made above"))
    }
}

impl ToolHandler for AgentToolsHost {
    fn call<'a>(&'a mut self, name: &'a str, input: &'a str) -> Handled<'a> {
        Box::pin(async move {
            let remaining = self.remaining();
            let (store, instance) = self.instance().await?;
            arm_deadline(store, WHAT, remaining);
            instance.flue_sandbox_tools().call_call(&mut *store, name, input).await
        })
    }
}
