//! What a trap means, in words a person can act on — one classification for
//! agents and connectors alike.
//!
//! Two traps say "out of stack": wasmtime's own `StackOverflow` (the VM's
//! stack, e.g. recursion in wasm locals), and the guest's *shadow* stack —
//! the part of linear memory where languages like Rust and C keep frames —
//! running below address 0, which wasm reports as an out-of-bounds memory
//! access. The second is told apart by its backtrace: the trap comes from
//! deep inside one function calling itself.

use wasmtime::{Trap, WasmBacktrace};

/// Frames of one function in a row that make an out-of-bounds access a
/// shadow-stack overflow rather than a stray pointer. wasmtime keeps the
/// innermost 20 frames of a backtrace.
const RECURSION_FRAMES: usize = 16;

/// What is said when a guest ran out of stack.
pub const OUT_OF_STACK: &str = "it ran out of stack (recursion too deep)";

/// The trap `err` carries, described; `None` when `err` is not a trap (an
/// error a host function raised).
pub fn describe(err: &wasmtime::Error) -> Option<String> {
    let trap = err.downcast_ref::<Trap>()?;
    Some(match trap {
        Trap::StackOverflow => OUT_OF_STACK.to_string(),
        Trap::MemoryOutOfBounds if deep_recursion(err.downcast_ref::<WasmBacktrace>()) => {
            format!("{OUT_OF_STACK}: its stack in linear memory overflowed")
        }
        other => other.to_string(),
    })
}

/// Whether, at or just below the innermost frame (a `memset` may be the one
/// that faulted), one function calls itself many times in a row.
fn deep_recursion(backtrace: Option<&WasmBacktrace>) -> bool {
    let Some(backtrace) = backtrace else { return false };
    let key = |frame: &wasmtime::FrameInfo| (frame.func_index(), frame.module().name().map(str::to_string));
    let frames: Vec<_> = backtrace.frames().iter().map(key).collect();
    (0..frames.len().min(4))
        .any(|start| frames[start..].iter().take_while(|frame| **frame == frames[start]).count() >= RECURSION_FRAMES)
}
