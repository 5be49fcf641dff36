//! Fault injection knobs, adjustable while the server runs.
//!
//! Rates are random per request; the `next_*` counters hit exactly the next
//! N requests, for deterministic tests.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

#[derive(Default)]
pub struct Faults {
    latency_ms: AtomicU64,
    /// Per million.
    rate_503: AtomicU32,
    rate_429: AtomicU32,
    rate_drop: AtomicU32,
    next_503: AtomicU32,
    next_429: AtomicU32,
    next_drop: AtomicU32,
    /// Faults for the next polls of a creating sandbox only.
    poll_503: AtomicU32,
    poll_429: AtomicU32,
    /// 0 = never.
    die_after_calls: AtomicU64,
    /// Polls before `creating` becomes `started`.
    start_polls: AtomicU32,
    fail_start: Mutex<Option<String>>,
    fail_auth: AtomicBool,
    omit_toolbox_url: AtomicBool,
    toolbox_url_override: Mutex<Option<String>>,
    echo_credentials: AtomicBool,
    rng: AtomicU64,
}

/// What to do to one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Injected {
    None,
    ServiceUnavailable,
    RateLimited,
    Drop,
}

fn per_million(rate: f64) -> u32 {
    (rate.clamp(0.0, 1.0) * 1_000_000.0) as u32
}

fn take(counter: &AtomicU32) -> bool {
    counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
}

impl Faults {
    pub fn set_latency_ms(&self, ms: u64) {
        self.latency_ms.store(ms, Ordering::SeqCst);
    }

    pub fn latency_ms(&self) -> u64 {
        self.latency_ms.load(Ordering::SeqCst)
    }

    /// Fractions (0..1) of requests answered 503, 429, or dropped.
    pub fn set_rates(&self, error: f64, rate_limit: f64, drop: f64) {
        self.rate_503.store(per_million(error), Ordering::SeqCst);
        self.rate_429.store(per_million(rate_limit), Ordering::SeqCst);
        self.rate_drop.store(per_million(drop), Ordering::SeqCst);
    }

    /// The next `n` requests get 503 / 429 / a dropped connection.
    pub fn fail_next(&self, n503: u32, n429: u32, ndrop: u32) {
        self.next_503.store(n503, Ordering::SeqCst);
        self.next_429.store(n429, Ordering::SeqCst);
        self.next_drop.store(ndrop, Ordering::SeqCst);
    }

    pub fn set_die_after_calls(&self, calls: Option<u64>) {
        self.die_after_calls.store(calls.unwrap_or(0), Ordering::SeqCst);
    }

    pub fn die_after_calls(&self) -> Option<u64> {
        Some(self.die_after_calls.load(Ordering::SeqCst)).filter(|n| *n > 0)
    }

    pub fn set_start_polls(&self, polls: u32) {
        self.start_polls.store(polls, Ordering::SeqCst);
    }

    pub fn start_polls(&self) -> u32 {
        self.start_polls.load(Ordering::SeqCst)
    }

    pub fn set_fail_start(&self, reason: Option<String>) {
        *self.fail_start.lock().expect("faults lock") = reason;
    }

    pub fn fail_start(&self) -> Option<String> {
        self.fail_start.lock().expect("faults lock").clone()
    }

    pub fn set_fail_auth(&self, on: bool) {
        self.fail_auth.store(on, Ordering::SeqCst);
    }

    pub fn fail_auth(&self) -> bool {
        self.fail_auth.load(Ordering::SeqCst)
    }

    /// Leave `toolboxProxyUrl` out of sandbox DTOs (clients must ask for it).
    pub fn set_omit_toolbox_url(&self, on: bool) {
        self.omit_toolbox_url.store(on, Ordering::SeqCst);
    }

    pub fn omit_toolbox_url(&self) -> bool {
        self.omit_toolbox_url.load(Ordering::SeqCst)
    }

    /// Hand out this toolbox proxy URL instead of the server's own (to test
    /// that clients refuse hosts outside their allowlist).
    pub fn set_toolbox_url_override(&self, url: Option<String>) {
        *self.toolbox_url_override.lock().expect("faults lock") = url;
    }

    pub fn toolbox_url_override(&self) -> Option<String> {
        self.toolbox_url_override.lock().expect("faults lock").clone()
    }

    /// A careless server: 401 bodies quote the Authorization header received.
    pub fn set_echo_credentials(&self, on: bool) {
        self.echo_credentials.store(on, Ordering::SeqCst);
    }

    pub fn echo_credentials(&self) -> bool {
        self.echo_credentials.load(Ordering::SeqCst)
    }

    fn roll(&self, per_million: u32) -> bool {
        if per_million == 0 {
            return false;
        }
        // xorshift64*, seeded lazily.
        let mut x = self.rng.load(Ordering::Relaxed);
        if x == 0 {
            x = 0x2545_F491_4F6C_DD1D;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.store(x, Ordering::Relaxed);
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) % 1_000_000) < u64::from(per_million)
    }

    /// Answer the next `n503` polls of a sandbox that is still creating
    /// with 503, then `n429` with 429 (the SDK does not retry these).
    pub fn fail_next_polls(&self, n503: u32, n429: u32) {
        self.poll_503.store(n503, Ordering::SeqCst);
        self.poll_429.store(n429, Ordering::SeqCst);
    }

    /// The fault (if any) for this poll of a creating sandbox.
    pub fn next_poll(&self) -> Injected {
        if take(&self.poll_503) {
            Injected::ServiceUnavailable
        } else if take(&self.poll_429) {
            Injected::RateLimited
        } else {
            Injected::None
        }
    }

    /// Decide the fault (if any) for the next request.
    pub fn next(&self) -> Injected {
        if take(&self.next_503) {
            Injected::ServiceUnavailable
        } else if take(&self.next_429) {
            Injected::RateLimited
        } else if take(&self.next_drop) {
            Injected::Drop
        } else if self.roll(self.rate_503.load(Ordering::SeqCst)) {
            Injected::ServiceUnavailable
        } else if self.roll(self.rate_429.load(Ordering::SeqCst)) {
            Injected::RateLimited
        } else if self.roll(self.rate_drop.load(Ordering::SeqCst)) {
            Injected::Drop
        } else {
            Injected::None
        }
    }
}
