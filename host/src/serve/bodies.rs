//! Request bodies: read whole (a payload is JSON), at most `--max-body-kib`
//! each, within `--body-timeout`, and all together within one memory budget
//! (`--body-memory-mib`).
//!
//! Bodies are read before a run is admitted (a body that is not JSON is no
//! run), so without the budget every open connection could hold a body at
//! its limit for the whole body timeout: `--max-connections` ×
//! `--max-body-kib`. The budget counts the memory a body holds (what was
//! allocated for it, not what was declared: a client must send the bytes it
//! makes the server keep), and a body that does not fit is refused at once
//! (`503 server-busy`, `Retry-After`) rather than waited for.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::HeaderMap;
use futures_util::StreamExt;
use tokio::sync::{Semaphore, SemaphorePermit};

use super::errors::{ApiError, ErrorKind};
use super::metrics::Metrics;

/// The memory all bodies being read may hold.
pub struct BodyBudget {
    bytes: Semaphore,
    total: usize,
}

impl BodyBudget {
    /// A budget of `total` bytes.
    pub fn new(total: usize) -> Self {
        BodyBudget { bytes: Semaphore::new(total.min(Semaphore::MAX_PERMITS)), total }
    }
}

/// A body read whole, with its share of the budget (given back when dropped).
pub struct ReadBody<'a> {
    pub bytes: Bytes,
    _held: SemaphorePermit<'a>,
}

/// Read the request body: at most `limit` bytes, within `timeout`, its
/// memory taken from `budget`.
pub async fn read<'a>(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
    budget: &'a BodyBudget,
    metrics: &Metrics,
) -> Result<ReadBody<'a>, ApiError> {
    let too_large = || {
        ApiError::new(ErrorKind::BodyTooLarge, format!("the body is larger than {} KiB (--max-body-kib)", limit / 1024))
    };
    let busy = || {
        metrics.bodies_refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ApiError::new(
            ErrorKind::ServerBusy,
            format!(
                "the server is receiving too many request bodies at once ({} MiB, --body-memory-mib); retry later",
                budget.total >> 20
            ),
        )
    };
    let declared = headers.get("content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    let read = async {
        let mut held = budget.bytes.try_acquire_many(0).map_err(|_| busy())?;
        let mut stream = body.into_data_stream();
        let mut bytes: Vec<u8> = Vec::new();
        // The bytes taken from the budget: what `bytes` was given room for.
        let mut paid = 0;
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|err| ApiError::new(ErrorKind::BadRequest, format!("cannot read the body: {err}")))?;
            let needed = bytes.len() + chunk.len();
            if needed > limit {
                return Err(too_large());
            }
            if needed > paid {
                // Grow as a Vec would (doubling), but within the limit and
                // paid for before the memory is taken.
                let grown = needed.max(paid.saturating_mul(2)).min(limit);
                let more = u32::try_from(grown - paid).map_err(|_| too_large())?;
                held.merge(budget.bytes.try_acquire_many(more).map_err(|_| busy())?);
                bytes.reserve_exact(grown - bytes.len());
                paid = grown;
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(ReadBody { bytes: Bytes::from(bytes), _held: held })
    };
    tokio::time::timeout(timeout, read).await.unwrap_or_else(|_| {
        Err(ApiError::new(
            ErrorKind::BodyTimeout,
            format!("the body did not arrive within {} s (--body-timeout)", timeout.as_secs()),
        ))
    })
}
