//! `session.prompt`: the model loop ([`crate::model`]), run by the host for
//! the agent on its session. The provider's key comes from the user's
//! configuration and never reaches the agent.

use wasmtime::component::Resource;

use super::imports::AgentState;
use crate::bindings::agent::flue::sandbox::model as wit;
use crate::bindings::handles::AgentSession;
use crate::model::{self, PromptOptions, provider::Provider};

impl AgentState {
    /// Run one prompt in the session's conversation.
    pub(crate) async fn prompt_session(
        &mut self,
        this: &Resource<AgentSession>,
        text: String,
        options: wit::PromptOptions,
    ) -> wasmtime::Result<Result<wit::PromptResult, wit::PromptError>> {
        let entry = self.base.table.get_mut(this)?;
        let session = entry.session.clone();
        let chosen = entry.model.clone().or_else(|| self.sandboxes.config().get("FLUE_MODEL").cloned());
        let Some(model_name) = chosen.filter(|m| !m.trim().is_empty()) else {
            return Ok(Err(wit::PromptError::InvalidInput(format!(
                "no model for harness {}: name one in init (model: \"anthropic/claude-sonnet-4-6\") or set FLUE_MODEL",
                entry.harness
            ))));
        };
        let provider = match Provider::from_config(&model_name, self.sandboxes.config()) {
            Ok(provider) => provider,
            Err(err) => return Ok(Err(err.into())),
        };
        let mut conversation = std::mem::take(&mut entry.conversation);
        let options = PromptOptions::from(options);
        let events = self.sandboxes.events.clone();
        let journal = self.journal.clone();
        let answer = model::prompt(&provider, &session, &mut conversation, text, &options, &events, journal.as_deref())
            .await
            .map_err(wasmtime::Error::new)?;
        let entry = self.base.table.get_mut(this)?;
        // A prompt replayed from the journal saved its conversation when it
        // first ran; saving it again would undo what later prompts kept.
        let replaying = journal.as_ref().is_some_and(|journal| journal.replaying());
        if let Some(kept) = self.conversations.as_ref().filter(|_| !replaying) {
            kept.keep(&entry.harness, &entry.name, &conversation, &events);
        }
        entry.conversation = conversation;
        Ok(answer.map(Into::into).map_err(Into::into))
    }
}
