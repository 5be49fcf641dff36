//! A guest's stdout/stderr, routed into the run's events.
//!
//! Complete lines become `log` events as they are written, within the run's
//! log budget ([`EventLog::with_log_budget`]). Output past it is accepted and
//! dropped (never an error: a failing write makes Rust's `println!` panic),
//! and the last lines are kept so that a trap can be explained with the
//! guest's own last words (e.g. a panic message).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use crate::events::{EventLog, LogLevel, MAX_LOG_LINE};

/// Last lines remembered for error messages.
const TAIL_LINES: usize = 20;

/// One guest output stream (stdout or stderr), as a WASI output.
#[derive(Clone)]
pub struct GuestOutput {
    state: Arc<Mutex<OutputState>>,
}

struct OutputState {
    source: String,
    level: LogLevel,
    events: EventLog,
    pending: Vec<u8>,
    tail: VecDeque<String>,
}

impl GuestOutput {
    /// Lines become `log` events from `source` at `level`.
    pub fn new(source: &str, level: LogLevel, events: EventLog) -> Self {
        GuestOutput {
            state: Arc::new(Mutex::new(OutputState {
                source: source.to_string(),
                level,
                events,
                pending: Vec::new(),
                tail: VecDeque::new(),
            })),
        }
    }

    /// Emit any unterminated last line.
    pub fn finish(&self) {
        let mut state = self.state.lock().expect("output lock");
        if !state.pending.is_empty() {
            let line = std::mem::take(&mut state.pending);
            state.emit(&line);
        }
    }

    /// The last lines written, oldest first.
    pub fn tail(&self) -> Vec<String> {
        let state = self.state.lock().expect("output lock");
        let mut lines: Vec<String> = state.tail.iter().cloned().collect();
        if !state.pending.is_empty() {
            lines.push(String::from_utf8_lossy(&state.pending).into_owned());
        }
        lines
    }

    /// Split `bytes` into lines of at most [`MAX_LOG_LINE`] bytes, looking
    /// at each byte once.
    fn write(&self, mut bytes: &[u8]) {
        let mut state = self.state.lock().expect("output lock");
        while !bytes.is_empty() {
            let room = MAX_LOG_LINE - state.pending.len();
            let window = &bytes[..bytes.len().min(room)];
            let end = match memchr::memchr(b'\n', window) {
                Some(newline) => newline + 1,
                None if window.len() == room => room,
                None => {
                    state.pending.extend_from_slice(window);
                    return;
                }
            };
            state.pending.extend_from_slice(&bytes[..end]);
            bytes = &bytes[end..];
            let line = std::mem::take(&mut state.pending);
            state.emit(&line);
        }
    }
}

impl OutputState {
    fn emit(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line).trim_end_matches(['\n', '\r']).to_string();
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(text.clone());
        self.events.log(&self.source, self.level, text);
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for GuestOutput {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
