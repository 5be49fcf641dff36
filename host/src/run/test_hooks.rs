//! A fault the tests can ask for, in debug builds only: with
//! `FLUE_TEST_ONLY_PANIC_RUN=<id>`, a run invoked with that id (`flue run
//! --id <id>`, or `POST /agents/<name>/<id>`) panics inside flue right
//! after its first sandbox is created — so the tests can prove that a bug
//! in flue ends that run as failed, deletes its sandboxes and releases what
//! it held, in `flue run` and in the server. No known real input panics a
//! run; release builds have no such hook.

/// Panic if the tests asked for it for this run.
pub fn after_sandbox_created(invocation: &str) {
    if std::env::var("FLUE_TEST_ONLY_PANIC_RUN").is_ok_and(|id| id == invocation) {
        panic!("FLUE_TEST_ONLY_PANIC_RUN: run {invocation} panics on purpose");
    }
}
