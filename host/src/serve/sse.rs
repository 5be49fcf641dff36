//! Server-sent events: a run's events as `event: event`, then `event:
//! result` or `event: error`.
//!
//! Between the run and the client sits a [`LiveFeed`], a buffer bounded in
//! bytes. The run never waits on it: a reader that falls more than
//! [`FEED_BUDGET`] behind is dropped — its buffer freed at once, the drop
//! counted in `/metrics` — and its stream ends with an `error` event saying
//! where the run's record is. The run goes on.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::response::Response;
use serde_json::{Value, json};

use super::metrics::Metrics;

/// The most bytes a stream's buffer holds before its reader counts as
/// fallen behind.
pub const FEED_BUDGET: usize = 256 * 1024;

/// One run's events on their way to one SSE client.
pub struct LiveFeed {
    state: Mutex<FeedState>,
    wake: tokio::sync::Notify,
    run_id: String,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct FeedState {
    frames: VecDeque<Bytes>,
    bytes: usize,
    /// The run's last frame (`result` or `error`), once it ended.
    last: Option<Bytes>,
    /// The reader fell behind and was dropped.
    dropped: bool,
    /// Nobody reads any more: the client went away, or its stream is over.
    gone: bool,
    /// The stream's last frame was handed out.
    over: bool,
}

impl LiveFeed {
    /// An empty feed for run `run_id`.
    pub fn new(run_id: &str, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(LiveFeed {
            state: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            run_id: run_id.to_string(),
            metrics,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FeedState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue one run event; never waits.
    pub fn push(&self, event: &Value) {
        let frame = Bytes::from(format!("event: event\ndata: {event}\n\n"));
        let mut state = self.lock();
        if state.dropped || state.gone || state.last.is_some() {
            return;
        }
        if state.bytes + frame.len() > FEED_BUDGET {
            // Free what it did not read now, not when the connection ends.
            state.frames = VecDeque::new();
            state.bytes = 0;
            state.dropped = true;
            self.metrics.readers_dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            state.bytes += frame.len();
            state.frames.push_back(frame);
        }
        drop(state);
        self.wake.notify_one();
    }

    /// The run ended: `result` or `error` follows the events.
    pub fn finish(&self, outcome: Result<&Value, &Value>) {
        let frame = match outcome {
            Ok(result) => format!("event: result\ndata: {}\n\n", json!({"result": result, "runId": self.run_id})),
            Err(error) => format!("event: error\ndata: {}\n\n", json!({"error": error, "runId": self.run_id})),
        };
        self.lock().last = Some(Bytes::from(frame));
        self.wake.notify_one();
    }

    /// The next frame for the client; `None` once the stream is over.
    async fn next(&self) -> Option<Bytes> {
        loop {
            {
                let mut state = self.lock();
                if state.over {
                    return None;
                }
                if state.dropped {
                    (state.over, state.gone) = (true, true);
                    let error = json!({
                        "kind": "reader-too-slow",
                        "message": format!(
                            "this stream fell more than {} KiB behind the run and was dropped; the run goes on: \
                             GET /runs/{}",
                            FEED_BUDGET / 1024,
                            self.run_id
                        ),
                    });
                    let frame = format!("event: error\ndata: {}\n\n", json!({"error": error, "runId": self.run_id}));
                    return Some(Bytes::from(frame));
                }
                if let Some(frame) = state.frames.pop_front() {
                    state.bytes -= frame.len();
                    return Some(frame);
                }
                if let Some(last) = state.last.take() {
                    (state.over, state.gone) = (true, true);
                    return Some(last);
                }
            }
            // `notify_one` keeps a permit when nobody waits: no wake-up is lost.
            self.wake.notified().await;
        }
    }
}

/// Marks the feed abandoned when the response body is dropped (the client
/// went away), so that the run stops queueing for it.
struct Reader(Arc<LiveFeed>);

impl Drop for Reader {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.gone = true;
        state.frames = VecDeque::new();
        state.bytes = 0;
    }
}

/// The `text/event-stream` answer reading `feed`.
pub fn response(feed: Arc<LiveFeed>) -> Response {
    let stream = futures_util::stream::unfold(Reader(feed), |reader| async move {
        let frame = reader.0.next().await?;
        Some((Ok::<_, std::convert::Infallible>(frame), reader))
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(stream))
        .expect("a static response")
}
