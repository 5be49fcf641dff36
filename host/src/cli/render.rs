//! How events look on stderr: readable lines (coloured on a terminal), JSON
//! lines, or nothing; and a spinner for long work when stderr is a terminal.
//!
//! Text from guests (log lines, error messages, a connector's description)
//! is escaped before it reaches the terminal: control characters (ESC, CR,
//! backspace, C1 controls) and bidirectional overrides are shown as escapes,
//! so a guest can neither recolour the terminal nor rewrite or forge a line
//! of flue's own. A guest's multi-line log message becomes several lines,
//! each under its `[source level]` tag.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::events::{Event, EventFormat, EventSink, LogLevel, one_line};
use crate::terminal::{escape, escape_json};

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
                let target = escape(&one_line(target, 60));
                match error {
                    None => {
                        let detail = escape(detail.as_deref().unwrap_or(""));
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
                            &format!("{duration_ms:>5} ms  {}: {}", err.kind, escape(&one_line(&err.message, 200)))
                        )
                    ),
                }
            }
            Event::Sandbox { action, connector, id, detail } => {
                format!(
                    "{} sandbox {} {action} ({}{}{})",
                    self.paint("36", "▸"),
                    escape(id),
                    escape(connector),
                    if detail.is_empty() { "" } else { ", " },
                    escape(detail)
                )
            }
            Event::Log { source, level, message } => {
                let code = match level {
                    LogLevel::Error => "31",
                    LogLevel::Warn => "33",
                    LogLevel::Trace | LogLevel::Debug | LogLevel::Info => "2",
                };
                let tag = self.paint(code, &format!("[{} {}]", escape(source), level.as_str()));
                let lines: Vec<&str> = message.trim_end().split('\n').collect();
                lines.iter().map(|line| format!("  {tag} {}", escape(line))).collect::<Vec<_>>().join("\n")
            }
            // Streamed text is for JSON consumers; the turn line sums it up.
            Event::ModelText { .. } => String::new(),
            Event::ModelTurn { model, turn, duration_ms, input_tokens, output_tokens, tool_calls } => format!(
                "{} {} turn {turn}: {} {}",
                self.paint("35", "◆"),
                escape(model),
                if *tool_calls == 0 { "answered".to_string() } else { format!("{tool_calls} tool call(s)") },
                self.paint("2", &format!("{duration_ms} ms, {input_tokens} in / {output_tokens} out tokens"))
            ),
            Event::ToolCall { tool, arguments, result_bytes, is_error, duration_ms, .. } => format!(
                "  {} {tool:<7} {:<60} {}",
                if *is_error { self.paint("31", "✗") } else { self.paint("35", "⚒") },
                escape(&one_line(arguments, 60)),
                self.paint("2", &format!("{duration_ms:>5} ms  {result_bytes} B back"))
            ),
            Event::TaskStarted { task, agent, description, model, depth } => format!(
                "{}{} {task} → {}{} {}",
                "  ".repeat(*depth as usize),
                self.paint("35", "↳"),
                escape(agent),
                if description.is_empty() {
                    String::new()
                } else {
                    format!(": {}", escape(&one_line(description, 60)))
                },
                self.paint("2", &format!("({})", escape(model)))
            ),
            Event::TaskFinished { task, ok, turns, duration_ms, depth } => format!(
                "{}{} {task} {} {}",
                "  ".repeat(*depth as usize),
                self.paint("35", "↲"),
                if *ok { self.paint("32", "answered") } else { self.paint("31", "failed") },
                self.paint("2", &format!("{turns} turn(s), {duration_ms} ms"))
            ),
            Event::RunStarted { run_id, agent } => {
                format!("{} run {run_id}: {}", self.paint("36", "▸"), escape(agent))
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
            EventFormat::Text if matches!(event, Event::ModelText { .. }) => return,
            EventFormat::Json => escape_json(serde_json::to_string(event).unwrap_or_default()),
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

/// A duration as a list shows an age: `42s`, `5m`, `3h`, `2d`.
pub(crate) fn short_age(age: std::time::Duration) -> String {
    let s = age.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_log_line_cannot_pass_for_a_line_of_flues() {
        let sink = StderrSink { format: EventFormat::Text, color: false, spinners: false, state: Mutex::default() };
        let event = Event::Log {
            source: "agent".into(),
            level: LogLevel::Info,
            message: "hello\n▸ run ok in 1 ms\r\x1b[2Kerror: forged".into(),
        };
        let text = sink.render_text(&event);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines, ["  [agent info] hello", "  [agent info] ▸ run ok in 1 ms\\x0d\\x1b[2Kerror: forged"]);
    }
}
