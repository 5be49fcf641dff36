//! Conversations that outlive a run: a session's model messages, kept per
//! agent, invocation id, harness and session name, so that the next run
//! invoked with the same id continues where the last one stopped (the
//! model sees the earlier turns).
//!
//! A stored conversation is bounded: when its JSON is over the limit, its
//! oldest whole turns (a prompt with everything the model and the tools
//! said in answer) are dropped until it fits, and the run's events say so.
//! A turn is never cut in half, so what is stored is always a conversation
//! a provider accepts. Whatever storage keeps them implements
//! [`ConversationStore`] (the server's and the project's SQLite run store).

use std::sync::Arc;

use crate::events::{EventLog, LogLevel};
use crate::model::Message;

/// The bound on one stored conversation, in KiB (`--conversation-kib`):
/// at most what the model loop takes in (`model::caps::MAX_CONVERSATION`).
pub const CONVERSATION_KIB: std::ops::RangeInclusive<u64> = 1..=8 * 1024;

/// Which conversation: the agent, the id it was invoked with, the
/// harness's name and the session's name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConversationKey {
    /// The agent, as the run names it.
    pub agent: String,
    /// The invocation id (`POST /agents/<name>/<id>`, `flue run --id`).
    pub id: String,
    /// The harness's name (`default` when none was given).
    pub harness: String,
    /// The session's name (`default` when none was given).
    pub session: String,
}

/// Why a conversation could not be read or kept.
#[derive(Debug, thiserror::Error)]
#[error("the conversation store failed: {source}")]
pub struct ConversationStoreError {
    /// The storage's own error.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

/// Where conversations are kept between runs.
pub trait ConversationStore: Send + Sync {
    /// The stored messages of `key` (empty if there are none).
    fn load(&self, key: &ConversationKey) -> Result<Vec<Message>, ConversationStoreError>;
    /// Replace the stored messages of `key`.
    fn save(&self, key: &ConversationKey, messages: &[Message]) -> Result<(), ConversationStoreError>;
}

/// A run's view of the conversation store: which agent and id it runs for,
/// and the bound on what it keeps.
#[derive(Clone)]
pub struct Conversations {
    store: Arc<dyn ConversationStore>,
    limit: usize,
}

impl Conversations {
    /// Keep conversations in `store`, each at most `limit` bytes of JSON.
    pub fn new(store: Arc<dyn ConversationStore>, limit: usize) -> Self {
        Conversations { store, limit }
    }

    /// The conversation stored under `key`; a store that fails is a warning
    /// and a fresh conversation, not a failed run.
    pub fn load(&self, key: &ConversationKey, events: &EventLog) -> Vec<Message> {
        self.store.load(key).unwrap_or_else(|err| {
            events.log("flue", LogLevel::Warn, format!("session {}: starting a new conversation: {err}", key.session));
            Vec::new()
        })
    }

    /// Keep `messages` under `key`, its oldest turns dropped to fit the bound.
    pub fn save(&self, key: &ConversationKey, messages: &[Message], events: &EventLog) {
        let (kept, dropped) = newest_turns_within(messages, self.limit);
        if dropped > 0 {
            events.log(
                "flue",
                LogLevel::Warn,
                format!(
                    "session {}: the conversation is over its bound of {} KiB: its {dropped} oldest turn(s) will not \
                     be seen by the next run",
                    key.session,
                    self.limit / 1024
                ),
            );
        }
        if let Err(err) = self.store.save(key, kept) {
            events.log(
                "flue",
                LogLevel::Warn,
                format!("session {}: the conversation was not kept: {err}", key.session),
            );
        }
    }
}

/// The newest whole turns of `messages` whose JSON fits in `limit` bytes,
/// and how many turns were dropped. A turn starts at a user message; an
/// answer is never kept without its prompt.
pub fn newest_turns_within(messages: &[Message], limit: usize) -> (&[Message], usize) {
    let starts: Vec<usize> = messages
        .iter()
        .enumerate()
        .filter(|(_, message)| matches!(message, Message::User(_)))
        .map(|(index, _)| index)
        .collect();
    // Each message is measured once: `[a,b]` is 1 + each message and its
    // separator.
    let mut from_here = vec![0usize; messages.len() + 1];
    for (index, message) in messages.iter().enumerate().rev() {
        let size = serde_json::to_vec(message).map(|json| json.len()).unwrap_or(usize::MAX);
        from_here[index] = from_here[index + 1].saturating_add(size).saturating_add(1);
    }
    for (dropped, &start) in starts.iter().enumerate() {
        if from_here[start].saturating_add(1) <= limit {
            return (&messages[start..], dropped);
        }
    }
    (&[], starts.len())
}

/// The conversations of one run: its agent and invocation id, bound to
/// the store.
pub(crate) struct RunConversations {
    pub(crate) store: Conversations,
    pub(crate) agent: String,
    pub(crate) id: String,
}

impl RunConversations {
    /// The conversation `harness`'s session `session` continues (the
    /// events say so when there is one).
    pub(crate) fn resume(&self, harness: &str, session: &str, events: &EventLog) -> Vec<Message> {
        let conversation = self.store.load(&self.key(harness, session), events);
        if !conversation.is_empty() {
            let turns = conversation.iter().filter(|m| matches!(m, Message::User(_))).count();
            events.log(
                "flue",
                LogLevel::Info,
                format!("session {session} continues the conversation of id {} ({turns} earlier turn(s))", self.id),
            );
        }
        conversation
    }

    /// Keep `harness`'s session `session` at `messages`.
    pub(crate) fn keep(&self, harness: &str, session: &str, messages: &[Message], events: &EventLog) {
        self.store.save(&self.key(harness, session), messages, events);
    }

    fn key(&self, harness: &str, session: &str) -> ConversationKey {
        ConversationKey {
            agent: self.agent.clone(),
            id: self.id.clone(),
            harness: harness.to_string(),
            session: session.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ToolCall, ToolResult};

    fn turn(prompt: &str, answer: &str) -> Vec<Message> {
        vec![
            Message::User(prompt.into()),
            Message::Assistant {
                text: String::new(),
                calls: vec![ToolCall {
                    id: "c1".into(),
                    name: "bash".into(),
                    input: serde_json::json!({"command": "ls"}),
                }],
                reasoning: vec![],
            },
            Message::Results(vec![ToolResult { id: "c1".into(), content: "a\nb".into(), is_error: false }]),
            Message::Assistant { text: answer.into(), calls: vec![], reasoning: vec![] },
        ]
    }

    #[test]
    fn a_conversation_within_its_bound_is_kept_whole() {
        let messages = [turn("one", "1"), turn("two", "2")].concat();
        let (kept, dropped) = newest_turns_within(&messages, 1 << 20);
        assert_eq!((kept, dropped), (&messages[..], 0));
    }

    #[test]
    fn the_oldest_whole_turns_go_first() {
        let messages = [turn(&"x".repeat(400), "1"), turn("two", "2"), turn("three", "3")].concat();
        let last_two = serde_json::to_vec(&messages[4..]).unwrap().len();
        let (kept, dropped) = newest_turns_within(&messages, last_two);
        assert_eq!(dropped, 1);
        assert_eq!(kept.first(), Some(&Message::User("two".into())), "a kept conversation starts with a prompt");
        assert_eq!(kept.len(), 8);
    }

    #[test]
    fn sizes_are_those_of_the_stored_json() {
        let messages = [turn("one", "1"), turn("two", "2")].concat();
        let exact = serde_json::to_vec(&messages).unwrap().len();
        assert_eq!(newest_turns_within(&messages, exact).1, 0);
        assert_eq!(newest_turns_within(&messages, exact - 1).1, 1);
    }

    #[test]
    fn a_newest_turn_over_the_bound_keeps_nothing() {
        let messages = [turn("one", "1"), turn(&"y".repeat(5000), "2")].concat();
        assert_eq!(newest_turns_within(&messages, 1000), (&[][..], 2));
    }

    #[test]
    fn messages_round_trip_through_json() {
        let messages = turn("one", "1");
        let json = serde_json::to_string(&messages).unwrap();
        assert!(json.starts_with(r#"[{"role":"user","content":"one"}"#), "{json}");
        assert_eq!(serde_json::from_str::<Vec<Message>>(&json).unwrap(), messages);
    }
}
