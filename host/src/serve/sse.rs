//! Server-sent events: a run's events as `event: event`, then `event:
//! result` or `event: error` — live from the run on this server (the
//! caller of a streamed `POST`), or followed through the store from any
//! server ([`follow`], `GET /runs/<id>/events`).
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
use super::store::RunStore;

/// How often a follower asks the store for a run's new events (which a run
/// writes every 250 ms): it lags behind the run by at most about twice this.
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_millis(250);
/// The most events a follower takes from the store at once.
const FOLLOW_BATCH: usize = 256;

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
        let frame = event_frame(event);
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
        self.lock().last = Some(last_frame(&self.run_id, outcome));
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

fn event_frame(event: &Value) -> Bytes {
    Bytes::from(format!("event: event\ndata: {event}\n\n"))
}

fn last_frame(run_id: &str, outcome: Result<&Value, &Value>) -> Bytes {
    Bytes::from(match outcome {
        Ok(result) => format!("event: result\ndata: {}\n\n", json!({"result": result, "runId": run_id})),
        Err(error) => format!("event: error\ndata: {}\n\n", json!({"error": error, "runId": run_id})),
    })
}

/// A follower of a run through the store.
struct Follower {
    store: Arc<RunStore>,
    run_id: String,
    /// Events sent so far.
    sent: usize,
    frames: VecDeque<Bytes>,
    over: bool,
}

impl Follower {
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(frame) = self.frames.pop_front() {
                return Some(frame);
            }
            if self.over {
                return None;
            }
            let (run_id, sent) = (self.run_id.clone(), self.sent);
            let read = self
                .store
                .off_thread(move |store| {
                    let events = store.events_after(&run_id, sent, FOLLOW_BATCH);
                    // Only when nothing is new: a run that ended has its events
                    // in its record (and none in the table any more).
                    let ended = if events.is_empty() {
                        match store.status(&run_id).as_deref() {
                            Some("queued" | "running") => None,
                            _ => Some(store.get(&run_id)),
                        }
                    } else {
                        None
                    };
                    (events, ended)
                })
                .await;
            let Some((events, ended)) = read else {
                self.over = true;
                continue;
            };
            self.sent += events.len();
            self.frames.extend(events.iter().map(event_frame));
            match ended {
                Some(Some(record)) => {
                    let events = record["events"].as_array().cloned().unwrap_or_default();
                    self.frames.extend(events.iter().skip(self.sent).map(event_frame));
                    let outcome = match record["status"].as_str() {
                        Some("succeeded") => Ok(&record["result"]),
                        _ => Err(&record["error"]),
                    };
                    self.frames.push_back(last_frame(&self.run_id, outcome));
                    self.over = true;
                }
                Some(None) => {
                    let error = json!({"kind": "not-found", "message": "the run is no longer in the store"});
                    self.frames.push_back(last_frame(&self.run_id, Err(&error)));
                    self.over = true;
                }
                None if self.frames.is_empty() => tokio::time::sleep(FOLLOW_POLL).await,
                None => {}
            }
        }
    }
}

/// The `text/event-stream` answer following run `run_id` through the store:
/// its events so far and as they come, wherever it runs (lagging about
/// half a second at most), then its `result` or `error`.
pub fn follow(store: Arc<RunStore>, run_id: String) -> Response {
    let follower = Follower { store, run_id, sent: 0, frames: VecDeque::new(), over: false };
    event_stream(futures_util::stream::unfold(follower, |mut follower| async move {
        let frame = follower.next().await?;
        Some((Ok::<_, std::convert::Infallible>(frame), follower))
    }))
}

/// A `text/event-stream` answer sending the frames of `stream`.
fn event_stream(
    stream: impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send + 'static,
) -> Response {
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(stream))
        .expect("a static response")
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
    event_stream(futures_util::stream::unfold(Reader(feed), |reader| async move {
        let frame = reader.0.next().await?;
        Some((Ok::<_, std::convert::Infallible>(frame), reader))
    }))
}
