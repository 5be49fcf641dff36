//! How events look on stderr: readable lines (coloured on a terminal), JSON
//! lines, or nothing; and a spinner for long work when stderr is a terminal.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::events::{Event, EventSink, one_line};

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
    spinners: bool,
    state: Mutex<HashMap<u64, ProgressBar>>,
}

impl StderrSink {
    /// A sink writing `format` to stderr. Colour and spinners only when
    /// stderr is a terminal (and `NO_COLOR` is unset, for colour).
    pub fn new(format: EventFormat) -> Self {
        let terminal = std::io::stderr().is_terminal();
        StderrSink {
            format,
            color: terminal && std::env::var_os("NO_COLOR").is_none(),
            spinners: terminal && format == EventFormat::Text,
            state: Mutex::default(),
        }
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
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // Print above any running spinner rather than through it.
        match state.values().next() {
            Some(bar) => bar.suspend(|| writeln!(std::io::stderr().lock(), "{line}")),
            None => writeln!(std::io::stderr().lock(), "{line}"),
        }
        .ok();
    }

    fn progress_started(&self, id: u64, task: &str) {
        if !self.spinners {
            return;
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("valid template"));
        bar.set_message(task.to_string());
        bar.enable_steady_tick(Duration::from_millis(100));
        self.state.lock().unwrap_or_else(|e| e.into_inner()).insert(id, bar);
    }

    fn progress_finished(&self, id: u64) {
        if let Some(bar) = self.state.lock().unwrap_or_else(|e| e.into_inner()).remove(&id) {
            bar.finish_and_clear();
        }
    }
}
