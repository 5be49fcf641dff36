//! A fault the tests can ask for, in debug builds only: with
//! `FLUE_TEST_HOOKS=panic`, an agent's command of exactly `flue-test-panic`
//! makes the host panic in the middle of a run, with a sandbox open — so
//! the tests can prove that a bug in flue ends that run as failed, deletes
//! its sandboxes and releases what it held, in `flue run` and in the server.
//! Release builds have no such hook.

/// The command that panics.
pub const PANIC_COMMAND: &str = "flue-test-panic";

/// Panic if the tests asked for it and `command` is [`PANIC_COMMAND`].
pub fn before_command(command: &str) {
    if command == PANIC_COMMAND && std::env::var("FLUE_TEST_HOOKS").is_ok_and(|hooks| hooks == "panic") {
        panic!("flue test hook: panicking mid-run, as FLUE_TEST_HOOKS=panic asked");
    }
}
