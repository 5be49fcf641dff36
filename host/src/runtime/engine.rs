//! The one wasmtime [`Engine`], and the deadlines stores run under.
//!
//! A narrow wrapper: each engine knob is set here, with its reason.

use std::time::{Duration, Instant};

use wasmtime::{Config, Engine, OptLevel, Store, UpdateDeadline};

/// How often the epoch advances. Deadlines are checked at this granularity;
/// 10 ms (as in Spin) costs nothing measurable and stops a runaway guest
/// promptly.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Raised (as a trap) when a store passes its wall-clock deadline.
#[derive(Debug, thiserror::Error)]
#[error("deadline exceeded: {what} ran longer than {limit:?}")]
pub struct DeadlineExceeded {
    /// Who ran too long, e.g. "the agent" or "connector daytona (exec)".
    pub what: String,
    /// The deadline it was given.
    pub limit: Duration,
}

/// Sizes of the pooling instance allocator (for servers, which instantiate
/// the same components again and again, many at once).
#[derive(Clone, Copy, Debug)]
pub struct Pooling {
    /// Runs at once; each may hold an agent and a few connector instances.
    pub runs: u32,
}

/// Component instances pooled per run (the agent and its connectors).
const INSTANCES_PER_RUN: u32 = 8;

/// Create the engine and start its epoch ticker: with the pooling allocator
/// when asked for and the machine grants its virtual memory reservations,
/// else the default on-demand allocator. Whether it pooled comes back too.
pub fn new_engine(pooling: Option<Pooling>) -> anyhow::Result<(Engine, bool)> {
    if let Some(pooling) = pooling {
        let mut config = base_config();
        let instances = pooling.runs.max(1).saturating_mul(INSTANCES_PER_RUN);
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_component_instances(instances)
            .total_core_instances(instances.saturating_mul(16))
            .total_memories(instances.saturating_mul(2))
            .total_tables(instances.saturating_mul(4))
            .total_stacks(instances)
            // wasm32's largest memory: the store limiter, not the pool, caps each one.
            .max_memory_size(4 << 30);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        match Engine::new(&config) {
            Ok(engine) => {
                start_epoch_ticker(&engine);
                return Ok((engine, true));
            }
            Err(err) => tracing::warn!(
                "the pooling allocator is not available here ({err:#}); instances are allocated on demand instead"
            ),
        }
    }
    let engine = Engine::new(&base_config()).map_err(wasm_error)?;
    start_epoch_ticker(&engine);
    Ok((engine, false))
}

fn base_config() -> Config {
    let mut config = Config::new();
    // Epoch interruption is how deadlines stop CPU-bound guests; tokio
    // timeouts alone cannot pre-empt wasm.
    config.epoch_interruption(true);
    // Component-model async is unused; leaving it on makes every component
    // call ~4x slower (wasmtime PR #14189).
    config.concurrency_support(false);
    config.cranelift_opt_level(OptLevel::Speed);
    config
}

/// Advance the engine's epoch every [`EPOCH_TICK`] on a thread that holds only
/// a weak reference, so the thread ends when the engine is dropped.
fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("flue-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawn epoch thread");
}

/// Arm `store` to trap with [`DeadlineExceeded`] once `limit` has passed, and
/// to yield to the async runtime at every tick until then (so other tasks and
/// timeouts keep running while a guest computes).
///
/// Deadlines are relative to now: a connector's store is re-armed before
/// every call.
pub fn arm_deadline<T: 'static>(store: &mut Store<T>, what: &str, limit: Duration) {
    // A limit too far away to be an Instant is no limit (callers bound
    // what users give; this only keeps arithmetic from panicking).
    let deadline = Instant::now().checked_add(limit);
    let what = what.to_string();
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            Err(wasmtime::Error::new(DeadlineExceeded { what: what.clone(), limit }))
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
}

/// `wasmtime::Error` is its own type since wasmtime 42; bring it into anyhow
/// with its whole chain of causes.
pub fn wasm_error(err: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{err:#}")
}
