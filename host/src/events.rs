//! Run events: every sandbox operation, log line and lifecycle step.
//!
//! The host records events through an [`EventLog`]; sinks render them (the
//! CLI's progress view or JSON lines on stderr, or a collector in tests).
//! Events carry only what the sandbox saw (operation, target, duration,
//! outcome): never environment values or secrets. A log can carry secrets
//! to redact ([`EventLog::redacting`]): then every text field of every event
//! recorded through it is redacted on the way to the sink, the one place all
//! events pass. This module is data only: presentation lives in
//! `cli::render`.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::secrets::Secrets;

/// The most characters of a tool's result a [`Event::ToolCall`] carries.
pub const TOOL_RESULT_SHOWN: usize = 1000;

/// Something that happened during a run.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Event {
    /// One sandbox operation, recorded when it finished.
    Operation {
        /// The sandbox's id.
        sandbox: String,
        /// `exec`, `read`, `write`, …
        op: &'static str,
        /// The path or command.
        target: String,
        /// How long it took.
        duration_ms: u64,
        /// Short result summary, e.g. `exit 0` or `12 B`.
        #[serde(skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        /// Why it failed, when it did.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<EventError>,
    },
    /// A sandbox was created, connected to, deleted, kept, or left to the
    /// process a run went on in.
    Sandbox {
        /// `created`, `connected`, `deleted`, `kept` or `left`.
        action: &'static str,
        /// The connector that serves it.
        connector: String,
        /// The sandbox's id.
        id: String,
        /// More about it (workdir, time taken, how to reuse it).
        detail: String,
    },
    /// A log line from the agent or a connector, or what the agent printed.
    Log {
        /// Who wrote it: `agent`, `agent stdout`, `connector NAME`, `flue`.
        source: String,
        /// How much it matters.
        level: LogLevel,
        /// The line, as written (renderers escape it for terminals).
        message: String,
    },
    /// Text the model streamed (a delta).
    ModelText {
        /// The new text.
        text: String,
    },
    /// One model turn ended.
    ModelTurn {
        /// `provider/model`.
        model: String,
        /// Its number in the prompt, from 1.
        turn: u32,
        /// How long the provider took.
        duration_ms: u64,
        /// Tokens in.
        input_tokens: u64,
        /// Tokens out.
        output_tokens: u64,
        /// Tool calls the model asked for.
        tool_calls: usize,
    },
    /// A tool call the model made, run by the host.
    ToolCall {
        /// `read`, `bash`, …
        tool: String,
        /// Its arguments as JSON, cut short.
        arguments: String,
        /// The size of the result the model got back.
        result_bytes: usize,
        /// Its start (at most [`TOOL_RESULT_SHOWN`] characters).
        result: String,
        /// Whether it failed (the model got the error).
        is_error: bool,
        /// How long it took.
        duration_ms: u64,
    },
    /// A sub-agent began (the model's `task` tool, or `session.task`):
    /// the events until its `task-finished` are its.
    TaskStarted {
        /// Its id in the prompt (`task-1`, …).
        task: String,
        /// The sub-agent, by name (`general`, or one of `.agents/agents/`).
        agent: String,
        /// What the model said it is for.
        description: String,
        /// Its model.
        model: String,
        /// How deep it is (a sub-agent's sub-agent is 2).
        depth: u32,
    },
    /// A sub-agent ended.
    TaskFinished {
        /// Its id.
        task: String,
        /// Whether it answered.
        ok: bool,
        /// Model turns it took (its own sub-agents' included).
        turns: u32,
        /// How long it took.
        duration_ms: u64,
        /// How deep it was.
        depth: u32,
    },
    /// A run began.
    RunStarted {
        /// The run's id.
        run_id: String,
        /// The agent, as given to `flue run`.
        agent: String,
    },
    /// A run ended.
    RunFinished {
        /// The run's id.
        run_id: String,
        /// Whether it produced a result.
        ok: bool,
        /// How long it took.
        duration_ms: u64,
    },
}

impl Event {
    /// Every text field of the event (for redaction).
    fn text_fields(&mut self) -> Vec<&mut String> {
        match self {
            Event::Operation { sandbox, target, detail, error, .. } => {
                let mut fields = vec![sandbox, target];
                fields.extend(detail.as_mut());
                fields.extend(error.as_mut().map(|e| &mut e.message));
                fields
            }
            Event::Sandbox { connector, id, detail, .. } => vec![connector, id, detail],
            Event::Log { source, message, .. } => vec![source, message],
            Event::ModelText { text } => vec![text],
            Event::ModelTurn { model, .. } => vec![model],
            Event::ToolCall { tool, arguments, result, .. } => vec![tool, arguments, result],
            Event::TaskStarted { task, agent, description, model, .. } => vec![task, agent, description, model],
            Event::TaskFinished { task, .. } => vec![task],
            Event::RunStarted { run_id, agent } => vec![run_id, agent],
            Event::RunFinished { run_id, .. } => vec![run_id],
        }
    }
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

/// How much a log line matters; events carry it as its lowercase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Finest detail.
    Trace,
    /// Detail for whoever debugs the agent.
    Debug,
    /// Normal progress (and what the agent printed to stdout).
    Info,
    /// Something to look at (and what a guest printed to stderr).
    Warn,
    /// A failure.
    Error,
}

impl LogLevel {
    /// Its name, as events and terminals show it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// A failed operation's error, as events carry it.
#[derive(Clone, Debug, Serialize)]
pub struct EventError {
    /// The `sandbox-error` case, e.g. `not-found`.
    pub kind: &'static str,
    /// The message.
    pub message: String,
}

/// Where events go.
pub trait EventSink: Send + Sync {
    /// Take one event.
    fn record(&self, event: &Event);

    /// Long work began (compiling a component, building an agent, creating
    /// a sandbox); `id` matches the later [`EventSink::progress_finished`].
    /// Sinks that show no progress ignore it.
    fn progress_started(&self, _id: u64, _task: &str) {}

    /// The work `id` ended.
    fn progress_finished(&self, _id: u64) {}
}

/// A cheap, cloneable handle the host records events through.
#[derive(Clone)]
pub struct EventLog {
    sink: Arc<dyn EventSink>,
    /// Log bytes guests may still write; `None`: unlimited.
    log_budget: Option<Arc<LogBudget>>,
    /// Secrets no event recorded through this log may carry.
    redact: Vec<Arc<Secrets>>,
}

/// How much guests may log in one run (agent `log` calls, its stdout and
/// stderr, connector logs): a guest must not be able to flood the host's
/// terminal, or a server's run store.
struct LogBudget {
    limit: usize,
    left: AtomicUsize,
    exhausted: AtomicBool,
}

/// The longest log line kept; longer ones are cut with a marker.
pub const MAX_LOG_LINE: usize = 16 * 1024;

impl EventLog {
    /// An event log writing to `sink`.
    pub fn new(sink: Arc<dyn EventSink>) -> Self {
        EventLog { sink, log_budget: None, redact: Vec::new() }
    }

    /// The same log, with guests' log lines limited to `bytes` in all
    /// (counted from now, shared by every clone of the returned log).
    pub fn with_log_budget(&self, bytes: usize) -> Self {
        let budget = LogBudget { limit: bytes, left: AtomicUsize::new(bytes), exhausted: AtomicBool::new(false) };
        EventLog { sink: self.sink.clone(), log_budget: Some(Arc::new(budget)), redact: self.redact.clone() }
    }

    /// The same log (and budget), redacting `secrets` — as is and encoded —
    /// from every text field of every event recorded through it.
    pub fn redacting(&self, secrets: Secrets) -> Self {
        let mut log = self.clone();
        if !secrets.is_empty() {
            log.redact.push(Arc::new(secrets));
        }
        log
    }

    /// `text` without the secrets this log redacts. Whoever cuts text short
    /// for an event redacts it first: a cut secret is no longer found.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut text = Cow::Borrowed(text);
        for secrets in &self.redact {
            if secrets.appear_in_any_form(text.as_bytes()) {
                text = Cow::Owned(secrets.redact(&text));
            }
        }
        text
    }

    /// An event log that drops everything.
    pub fn discard() -> Self {
        struct Discard;
        impl EventSink for Discard {
            fn record(&self, _: &Event) {}
        }
        EventLog::new(Arc::new(Discard))
    }

    /// Record an event (redacted, when this log redacts).
    pub fn record(&self, mut event: Event) {
        if !self.redact.is_empty() {
            for field in event.text_fields() {
                if let Cow::Owned(redacted) = self.redact(field) {
                    *field = redacted;
                }
            }
        }
        self.sink.record(&event);
    }

    /// Report long work until the returned guard is dropped.
    pub fn progress(&self, task: impl Into<String>) -> Progress {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        self.sink.progress_started(id, &self.redact(&task.into()));
        Progress { sink: self.sink.clone(), id }
    }

    /// Record a finished sandbox operation.
    pub fn operation<T, E>(
        &self,
        sandbox: &str,
        op: &'static str,
        target: &str,
        started: Instant,
        result: &Result<T, E>,
        detail: impl FnOnce(&T) -> Option<String>,
    ) where
        EventError: for<'a> From<&'a E>,
    {
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

    /// Record a log line. Lines from guests (any source but `flue`) count
    /// against the log budget; past it they are dropped, after one marker.
    pub fn log(&self, source: &str, level: LogLevel, message: impl Into<String>) {
        let mut message = message.into();
        if let Cow::Owned(redacted) = self.redact(&message) {
            message = redacted;
        }
        if let Some(budget) = self.log_budget.as_ref().filter(|_| source != "flue") {
            if message.len() > MAX_LOG_LINE {
                let cut = (0..=MAX_LOG_LINE).rev().find(|&i| message.is_char_boundary(i)).unwrap_or(0);
                let dropped = message.len() - cut;
                message.truncate(cut);
                message.push_str(&format!(" [flue: line cut, {dropped} more bytes dropped]"));
            }
            let taken =
                budget.left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| left.checked_sub(message.len()));
            if taken.is_err() {
                budget.left.store(0, Ordering::Relaxed);
                if !budget.exhausted.swap(true, Ordering::Relaxed) {
                    self.record(Event::Log {
                        source: "flue".into(),
                        level: LogLevel::Warn,
                        message: format!(
                            "[flue: the run's log output reached its limit of {} bytes; further lines are dropped]",
                            budget.limit
                        ),
                    });
                }
                return;
            }
        }
        self.record(Event::Log { source: source.into(), level, message });
    }
}

/// Long work in progress; reported finished when dropped.
pub struct Progress {
    sink: Arc<dyn EventSink>,
    id: u64,
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.sink.progress_finished(self.id);
    }
}

/// Now, in milliseconds since the Unix epoch (as stores and labels keep
/// times).
pub fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// How long ago `then_ms` (milliseconds since the Unix epoch) was.
pub fn age_of(then_ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(unix_millis().saturating_sub(then_ms)).unwrap_or(0))
}

/// A duration in whole milliseconds, as events carry it.
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
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

/// Today's date (UTC) as `YYYY-MM-DD`.
pub fn today_utc() -> String {
    let days =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() / 86_400).unwrap_or(0)
            as i64;
    date_of_day(days)
}

/// The date `days` after 1970-01-01.
fn date_of_day(days: i64) -> String {
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[derive(Default)]
    struct Collect(Mutex<Vec<Event>>);

    impl EventSink for Collect {
        fn record(&self, event: &Event) {
            self.0.lock().unwrap().push(event.clone());
        }
    }

    fn messages(sink: &Collect) -> Vec<String> {
        let events = sink.0.lock().unwrap();
        events
            .iter()
            .filter_map(|e| if let Event::Log { message, .. } = e { Some(message.clone()) } else { None })
            .collect()
    }

    #[test]
    fn guests_log_within_a_budget_and_long_lines_are_cut() {
        let sink = Arc::new(Collect::default());
        // Room for three cut lines (each a little over MAX_LOG_LINE), not four.
        let events = EventLog::new(sink.clone()).with_log_budget(4 * MAX_LOG_LINE);
        for _ in 0..100 {
            events.log("agent", LogLevel::Info, "x".repeat(1024 * 1024));
        }
        events.log("flue", LogLevel::Error, "flue's own lines are never dropped");
        let logged = messages(&sink);
        assert_eq!(logged.len(), 3 + 1 + 1, "{:?}", logged.iter().map(|m| m.len()).collect::<Vec<_>>());
        assert!(logged[0].len() < MAX_LOG_LINE + 100 && logged[0].ends_with("more bytes dropped]"));
        assert!(logged[3].contains("reached its limit"), "{}", logged[3]);
        assert_eq!(logged[4], "flue's own lines are never dropped");
    }

    #[test]
    fn days_since_the_epoch_become_calendar_dates() {
        assert_eq!(date_of_day(0), "1970-01-01");
        assert_eq!(date_of_day(11_016), "2000-02-29");
        assert_eq!(date_of_day(20_000), "2024-10-04");
        assert_eq!(today_utc().len(), 10);
    }
}
