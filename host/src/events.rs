//! Run events: every sandbox operation, log line and lifecycle step.
//!
//! The host records events through an [`EventLog`]; sinks render them (a
//! readable progress view or JSON lines on stderr, or a collector in tests).
//! Events carry only what the sandbox saw (operation, target, duration,
//! outcome): never environment values or secrets.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::SandboxError;

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Event {
    /// One sandbox operation, recorded when it finished.
    Operation {
        sandbox: String,
        op: &'static str,
        target: String,
        duration_ms: u64,
        /// Short result summary, e.g. `exit 0` or `12 B`.
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<EventError>,
    },
    /// A sandbox was created, connected to, deleted or kept.
    Sandbox {
        action: &'static str,
        connector: String,
        id: String,
        detail: String,
    },
    /// A log line from the agent or a connector, or what the agent printed.
    Log {
        source: String,
        level: String,
        message: String,
    },
    RunStarted {
        run_id: String,
        agent: String,
    },
    RunFinished {
        run_id: String,
        ok: bool,
        duration_ms: u64,
    },
}

#[derive(Clone, Debug, Serialize)]
pub struct EventError {
    pub kind: &'static str,
    pub message: String,
}

impl From<&SandboxError> for EventError {
    fn from(err: &SandboxError) -> Self {
        EventError { kind: err.kind.as_str(), message: err.message.clone() }
    }
}

/// Where events go.
pub trait EventSink: Send + Sync {
    fn record(&self, event: &Event);
}

/// A cheap, cloneable handle the host records events through.
#[derive(Clone)]
pub struct EventLog {
    sink: Arc<dyn EventSink>,
}

impl EventLog {
    pub fn new(sink: Arc<dyn EventSink>) -> Self {
        EventLog { sink }
    }

    /// An event log that drops everything.
    pub fn discard() -> Self {
        struct Discard;
        impl EventSink for Discard {
            fn record(&self, _: &Event) {}
        }
        EventLog::new(Arc::new(Discard))
    }

    pub fn record(&self, event: Event) {
        self.sink.record(&event);
    }

    /// Record a finished sandbox operation.
    pub fn operation<T>(
        &self,
        sandbox: &str,
        op: &'static str,
        target: &str,
        started: Instant,
        result: &Result<T, SandboxError>,
        detail: impl FnOnce(&T) -> Option<String>,
    ) {
        let (detail, error) = match result {
            Ok(value) => (detail(value), None),
            Err(err) => (None, Some(EventError::from(err))),
        };
        self.record(Event::Operation {
            sandbox: sandbox.to_string(),
            op,
            target: target.to_string(),
            duration_ms: millis(started.elapsed()),
            detail,
            error,
        });
    }

    pub fn log(&self, source: &str, level: &str, message: impl Into<String>) {
        self.record(Event::Log { source: source.into(), level: level.into(), message: message.into() });
    }
}

pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Output format of events on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EventFormat {
    /// Readable progress lines.
    Text,
    /// One JSON object per line, for tools.
    Json,
    /// Nothing.
    None,
}

/// Renders events on stderr.
pub struct StderrSink {
    format: EventFormat,
    color: bool,
    lock: Mutex<()>,
}

impl StderrSink {
    pub fn new(format: EventFormat) -> Self {
        let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        StderrSink { format, color, lock: Mutex::new(()) }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_string() }
    }

    fn render_text(&self, event: &Event) -> String {
        match event {
            Event::Operation { op, target, duration_ms, detail, error, .. } => {
                let target = one_line(target, 60);
                match error {
                    None => {
                        let detail = detail.as_deref().unwrap_or("");
                        format!(
                            "  {} {op:<7} {target:<60} {}",
                            self.paint("32", "✓"),
                            self.paint("2", &format!("{duration_ms:>5} ms  {detail}"))
                        )
                    }
                    Some(err) => format!(
                        "  {} {op:<7} {target:<60} {}",
                        self.paint("31", "✗"),
                        self.paint(
                            "31",
                            &format!("{duration_ms:>5} ms  {}: {}", err.kind, one_line(&err.message, 200))
                        )
                    ),
                }
            }
            Event::Sandbox { action, connector, id, detail } => {
                format!(
                    "{} sandbox {id} {action} ({connector}{}{detail})",
                    self.paint("36", "▸"),
                    if detail.is_empty() { "" } else { ", " }
                )
            }
            Event::Log { source, level, message } => {
                let code = match level.as_str() {
                    "error" => "31",
                    "warn" => "33",
                    _ => "2",
                };
                format!("  {} {}", self.paint(code, &format!("[{source} {level}]")), message.trim_end())
            }
            Event::RunStarted { run_id, agent } => {
                format!("{} run {run_id}: {agent}", self.paint("36", "▸"))
            }
            Event::RunFinished { ok, duration_ms, .. } => {
                let status = if *ok { self.paint("32", "ok") } else { self.paint("31", "failed") };
                format!("{} run {status} in {duration_ms} ms", self.paint("36", "▸"))
            }
        }
    }
}

impl EventSink for StderrSink {
    fn record(&self, event: &Event) {
        let line = match self.format {
            EventFormat::None => return,
            EventFormat::Json => serde_json::to_string(event).unwrap_or_default(),
            EventFormat::Text => self.render_text(event),
        };
        let _guard = self.lock.lock();
        let _ = writeln!(std::io::stderr().lock(), "{line}");
    }
}

/// First line of `text`, at most `max` characters, with `…` when cut.
pub fn one_line(text: &str, max: usize) -> String {
    let first = text.lines().next().unwrap_or("");
    let cut = first.chars().count() > max || text.lines().nth(1).is_some();
    let mut out: String = first.chars().take(max).collect();
    if cut {
        out.push('…');
    }
    out
}
