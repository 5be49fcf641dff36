//! The bounds on what a model — which flue treats as hostile, like every
//! server it talks to — can make flue hold, run or write. Each is checked
//! where the data arrives; a breach by the provider is a `provider` error
//! that names the cap, a breach by a tool call is an error result the model
//! reads. None of them is ever a reason to buffer more.

use std::time::Duration;

/// Text in one answer.
pub const MAX_ANSWER_TEXT: usize = 1024 * 1024;
/// Tool calls in one answer.
pub const MAX_TOOL_CALLS: usize = 64;
/// Tool-call ids, names and arguments in one answer, all calls together.
pub const MAX_TOOL_ARGUMENTS: usize = 1024 * 1024;
/// One server-sent event while flue waits for its end.
pub const MAX_SSE_EVENT: usize = 4 * 1024 * 1024;
/// Server-sent events in one answer (empty ones and pings count): a stream
/// that never ends stops here rather than at the run's deadline. A real
/// answer, at most [`MAX_OUTPUT_TOKENS`] tokens, has far fewer.
pub const MAX_STREAM_EVENTS: usize = 100_000;
/// Bytes of one streamed answer, all events together.
pub const MAX_STREAM_BYTES: usize = 32 * 1024 * 1024;
/// One answer as a single (not streamed) JSON body.
pub const MAX_PLAIN_BODY: usize = 8 * 1024 * 1024;
/// What flue reads of an error answer's body, for its message.
pub const MAX_ERROR_BODY: usize = 64 * 1024;
/// The longest provider error message passed on (after redaction).
pub const MAX_ERROR_MESSAGE: usize = 1000;
/// Output tokens asked for per turn.
pub const MAX_OUTPUT_TOKENS: u64 = 8192;

/// The longest pause between attempts, whatever `retry-after` asks for (the
/// run's deadline still ends the run first).
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The conversation (system prompt, prompts, answers, tool calls and
/// results) before each turn: past it the prompt ends as `context-overflow`.
pub const MAX_CONVERSATION: usize = 8 * 1024 * 1024;
/// The most one tool result carries to the model.
pub const MAX_RESULT_BYTES: usize = 50 * 1024;
/// The largest file `edit` reads, and the largest `write` or `edit` writes.
pub const MAX_TOOL_FILE: usize = 8 * 1024 * 1024;
/// The longest `bash` timeout a model may ask for.
pub const MAX_BASH_TIMEOUT: Duration = Duration::from_secs(3600);
/// Patterns one `glob` may expand its braces into (`{a,b}{c,d}`: 4).
pub const MAX_GLOB_PATTERNS: usize = 64;
