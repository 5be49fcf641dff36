//! `session.prompt`: the model loop, run by the host for the agent.

use wasmtime::component::Resource;

use super::imports::{AgentSession, AgentState};
use crate::runtime::bindings::agent::flue::sandbox::model;

impl AgentState {
    /// Run one prompt in the session's conversation.
    pub(crate) async fn prompt_session(
        &mut self,
        this: &Resource<AgentSession>,
        _text: String,
        _options: model::PromptOptions,
    ) -> wasmtime::Result<Result<model::PromptResult, model::PromptError>> {
        let session = self.base.table.get(this)?;
        let model = session.model.as_deref().unwrap_or("no model given in init");
        Ok(Err(model::PromptError::InvalidInput(format!(
            "session.prompt (harness {}, model {model}) is not available in this build of flue: \
             it runs shell and file calls only",
            session.harness
        ))))
    }
}
