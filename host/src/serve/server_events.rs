//! What the server says on stderr with `--events text|json` (`none`:
//! nothing): one line per request (method, path, status, run id, duration)
//! and per run (start; finish with outcome, error kind, duration), agent
//! rebuilds and build failures (with the compiler's whole output, which
//! callers never see), and `flue dev`'s reloads and configuration errors.
//! What clients and compilers wrote is escaped, as every event is.

use std::time::Duration;

use serde_json::{Value, json};

use super::errors::ApiError;
use crate::events::EventFormat;
use crate::events::{millis, one_line};
use crate::run::IdSandbox;
use crate::terminal::{escape, escape_block, escape_json};

/// The server's event lines.
pub struct ServerEvents {
    format: EventFormat,
}

impl ServerEvents {
    /// Lines in `format` on stderr.
    pub fn new(format: EventFormat) -> Self {
        ServerEvents { format }
    }

    fn emit(&self, text: impl FnOnce() -> String, json: impl FnOnce() -> Value) {
        let line = match self.format {
            EventFormat::None => return,
            EventFormat::Text => text(),
            EventFormat::Json => escape_json(json().to_string()),
        };
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }

    /// A request was answered.
    pub fn request(&self, method: &str, path: &str, status: u16, run_id: Option<&str>, took: Duration) {
        let path = one_line(path, 200);
        self.emit(
            || {
                let run = run_id.map(|id| format!(" {id}")).unwrap_or_default();
                format!("{method} {} {status}{run} {} ms", escape(&path), millis(took))
            },
            || {
                json!({"type": "request", "method": method, "path": path, "status": status, "runId": run_id,
                       "durationMs": millis(took)})
            },
        );
    }

    /// A run started (it had waited for a slot until now).
    pub fn run_started(&self, run_id: &str, agent: &str, invocation: &str) {
        self.emit(
            || format!("run {run_id} {}/{} started", escape(agent), escape(invocation)),
            || json!({"type": "run-started", "runId": run_id, "agent": agent, "id": invocation}),
        );
    }

    /// Runs of servers whose lease ran out were taken over.
    pub fn taken_over(&self, resumed: usize, failed: usize, released: usize) {
        self.emit(
            || {
                format!(
                    "took over the runs of a server that stopped answering: {resumed} to resume from their \
                     journals, {failed} failed (no journal), {released} not started, queued again"
                )
            },
            || json!({"type": "runs-taken-over", "resumed": resumed, "failed": failed, "released": released}),
        );
    }

    /// A run ended.
    pub fn run_finished(&self, run_id: &str, agent: &str, outcome: Result<(), &ApiError>, took: Duration) {
        self.emit(
            || match outcome {
                Ok(()) => format!("run {run_id} {} succeeded in {} ms", escape(agent), millis(took)),
                Err(err) => format!(
                    "run {run_id} {} {} in {} ms: {}: {}",
                    escape(agent),
                    err.kind.run_status(),
                    millis(took),
                    err.kind.as_str(),
                    escape(&one_line(&err.message, 300))
                ),
            },
            || {
                json!({"type": "run-finished", "runId": run_id, "agent": agent,
                       "outcome": outcome.map_or_else(|err| err.kind.run_status(), |()| "succeeded"),
                       "error": outcome.err().map(ApiError::to_json), "durationMs": millis(took)})
            },
        );
    }

    /// An agent's source changed and it is being built.
    pub fn rebuilding(&self, agent: &str) {
        self.emit(
            || format!("agent {}: source changed, rebuilding", escape(agent)),
            || json!({"type": "build", "agent": agent, "phase": "started"}),
        );
    }

    /// The build ended.
    pub fn rebuilt(&self, agent: &str, took: Duration) {
        self.emit(
            || format!("agent {}: rebuilt in {} ms", escape(agent), millis(took)),
            || json!({"type": "build", "agent": agent, "phase": "finished", "durationMs": millis(took)}),
        );
    }

    /// The build failed; `log` is everything the toolchain said.
    pub fn build_failed(&self, agent: &str, log: &str) {
        self.emit(
            || format!("agent {}: build failed:\n  {}", escape(agent), escape_block(log)),
            || json!({"type": "build", "agent": agent, "phase": "failed", "log": log}),
        );
    }

    /// `flue dev` read the configuration again.
    pub fn reloaded(&self, what: &str) {
        self.emit(
            || format!("flue: {what} changed: reloaded"),
            || json!({"type": "config", "status": "reloaded", "what": what}),
        );
    }

    /// `flue dev`: the configuration is broken; requests answer 503 until it
    /// is fixed.
    pub fn config_broken(&self, message: &str) {
        self.emit(
            || {
                format!(
                    "flue: the configuration is broken, webhooks answer 503 until it is fixed:\n  {}",
                    escape_block(message)
                )
            },
            || json!({"type": "config", "status": "broken", "error": message}),
        );
    }

    /// `flue dev`: the configuration works again.
    pub fn config_fixed(&self) {
        self.emit(
            || "flue: the configuration is fixed: serving again".to_string(),
            || json!({"type": "config", "status": "fixed"}),
        );
    }

    /// An id's sandbox went unused past its idle time: deleted, or not
    /// (`failed`: why; it is tried again at the next sweep).
    pub fn idle_sandbox_deleted(&self, sandbox: &IdSandbox, failed: Option<&String>) {
        let IdSandbox { agent, id, connector, sandbox_id, .. } = sandbox;
        self.emit(
            || match failed {
                None => format!(
                    "agent {} id {}: its {} sandbox {} was idle past its time: deleted",
                    escape(agent),
                    escape(id),
                    escape(connector),
                    escape(sandbox_id)
                ),
                Some(why) => format!(
                    "agent {} id {}: its idle {} sandbox {} could not be deleted (tried again in a minute): {}",
                    escape(agent),
                    escape(id),
                    escape(connector),
                    escape(sandbox_id),
                    escape(why)
                ),
            },
            || {
                json!({"type": "idle-sandbox", "agent": agent, "id": id, "connector": connector,
                       "sandbox": sandbox_id, "deleted": failed.is_none(), "error": failed})
            },
        );
    }

    /// `flue dev`/`flue serve` will not serve an agent.
    pub fn agent_refused(&self, agent: &str, why: &str) {
        self.emit(
            || format!("agent {}: not served: {}", escape(agent), escape(why)),
            || json!({"type": "agent-refused", "agent": agent, "reason": why}),
        );
    }
}
