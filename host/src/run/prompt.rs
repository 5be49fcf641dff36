//! `session.prompt`, `prompt-with` and `task`: the model loop
//! ([`crate::model`]), run by the host for the agent on its session. The
//! provider's key comes from the user's configuration and never reaches the
//! agent; the agent's own tools run in its `tools` export
//! ([`super::agent_tools`]).

use wasmtime::component::Resource;

use super::imports::AgentState;
use crate::bindings::handles::AgentSession;
use crate::model::{
    self, ModelError, NoHandler, PromptAnswer, PromptRequest, Prompting, TaskRequest, ToolHandler, agent_tools,
    provider::Provider,
};
use crate::sandbox::session::Session;

impl AgentState {
    /// The session's state and its provider: `model`, else the harness's,
    /// else `FLUE_MODEL`.
    fn prompt_parts(
        &self,
        this: &Resource<AgentSession>,
        model: Option<String>,
    ) -> wasmtime::Result<Result<(Session, Provider), ModelError>> {
        let entry = self.base.table.get(this)?;
        let chosen =
            model.or_else(|| entry.model.clone()).or_else(|| self.sandboxes.config().get("FLUE_MODEL").cloned());
        let Some(name) = chosen.filter(|m| !m.trim().is_empty()) else {
            return Ok(Err(ModelError::InvalidInput(format!(
                "no model for harness {}: name one in init (model: \"anthropic/claude-sonnet-4-6\") or set FLUE_MODEL",
                entry.harness
            ))));
        };
        Ok(Provider::from_config(&name, self.sandboxes.config()).map(|provider| (entry.session.clone(), provider)))
    }

    /// Run one prompt in the session's conversation.
    pub(crate) async fn prompt_session(
        &mut self,
        this: &Resource<AgentSession>,
        request: PromptRequest,
    ) -> wasmtime::Result<Result<PromptAnswer, ModelError>> {
        let PromptRequest { text, model, mut options, tool_definitions } = request;
        let (session, provider) = match self.prompt_parts(this, model)? {
            Ok(parts) => parts,
            Err(err) => return Ok(Err(err)),
        };
        options.agent_tools = match self.checked_tools(tool_definitions) {
            Ok(tools) => tools,
            Err(err) => return Ok(Err(err)),
        };
        let entry = self.base.table.get_mut(this)?;
        let mut conversation = std::mem::take(&mut entry.conversation);
        let (sandboxes, journal) = (self.sandboxes.clone(), self.journal.clone());
        let mut tools = self.agent_tools.take();
        let handler: &mut dyn ToolHandler = match tools.as_mut() {
            Some(tools) => tools,
            None => &mut NoHandler,
        };
        let ctx = Prompting {
            provider: &provider,
            config: sandboxes.config(),
            session: &session,
            events: &sandboxes.events,
            journal: journal.as_deref(),
            handler,
        };
        let answer = model::prompt(ctx, &mut conversation, text, &options).await;
        self.agent_tools = tools;
        let answer = answer?;
        let entry = self.base.table.get_mut(this)?;
        // A prompt replayed from the journal saved its conversation when it
        // first ran; saving it again would undo what later prompts kept.
        let replaying = journal.as_ref().is_some_and(|journal| journal.replaying());
        if let Some(kept) = self.conversations.as_ref().filter(|_| !replaying) {
            kept.keep(&entry.harness, &entry.name, &conversation, &sandboxes.events);
        }
        entry.conversation = conversation;
        Ok(answer)
    }

    /// Run a sub-agent on the session's sandbox, apart from its conversation.
    pub(crate) async fn task_in_session(
        &mut self,
        this: &Resource<AgentSession>,
        request: TaskRequest,
    ) -> wasmtime::Result<Result<PromptAnswer, ModelError>> {
        let (session, provider) = match self.prompt_parts(this, request.model.clone())? {
            Ok(parts) => parts,
            Err(err) => return Ok(Err(err)),
        };
        let (sandboxes, journal) = (self.sandboxes.clone(), self.journal.clone());
        let ctx = Prompting {
            provider: &provider,
            config: sandboxes.config(),
            session: &session,
            events: &sandboxes.events,
            journal: journal.as_deref(),
            handler: &mut NoHandler,
        };
        model::task(ctx, &request).await
    }

    /// The agent's tool definitions, checked, when it can run them.
    fn checked_tools(&self, definitions: Vec<(String, String, String)>) -> Result<Vec<model::AgentTool>, ModelError> {
        if !definitions.is_empty() && self.agent_tools.is_none() {
            return Err(ModelError::InvalidInput(
                "the prompt gives agent tools, but nothing here runs them: an agent that gives tools exports \
                 `tools` (build it for the agent-with-tools world), and a tool handler gives none of its own"
                    .into(),
            ));
        }
        agent_tools::checked(definitions)
    }
}
