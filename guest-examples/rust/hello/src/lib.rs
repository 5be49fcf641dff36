//! `hello`: the first Flue example as a wasm component.
//!
//! Opens the run's sandbox, runs `uname -a`, writes a file, reads it back and
//! lists the directory, then returns all of it as JSON.
//!
//! Payload (optional): `{"name": "Ada"}` — who to greet in the file.

wit_bindgen::generate!({ path: "wit", world: "flue:sandbox/agent" });

use exports::flue::sandbox::run::{Context, Guest};
use flue::sandbox::harness::{self, InitOptions, SandboxSource};
use flue::sandbox::log::{Level, log};
use flue::sandbox::types::{ExecOptions, SandboxError};
use serde_json::{Value, json};

struct Hello;

impl Guest for Hello {
    fn run(ctx: Context) -> Result<String, String> {
        let payload: Value = serde_json::from_str(&ctx.payload).map_err(|e| format!("bad payload: {e}"))?;
        let name = payload.get("name").and_then(Value::as_str).unwrap_or("world");

        let sandbox = harness::open_sandbox(&SandboxSource::RunDefault).map_err(describe)?;
        let harness = harness::init(&sandbox, &InitOptions { cwd: None, model: None, id: None }).map_err(describe)?;
        let session = harness.session(None).map_err(describe)?;
        log(Level::Info, &format!("hello agent in sandbox {} at {}", sandbox.id(), session.cwd()));

        let uname = session.shell("uname -a", &no_options()).map_err(describe)?;
        let greeting = format!("Hello, {name}! (run {})\n", ctx.run_id);
        session.write_text("hello.txt", &greeting).map_err(describe)?;
        let read_back = session.read_text("hello.txt").map_err(describe)?;
        let files = session.readdir(".").map_err(describe)?;

        let result = json!({
            "sandbox": sandbox.id(),
            "cwd": session.cwd(),
            "uname": { "stdout": uname.stdout.trim_end(), "exitCode": uname.exit_code },
            "wrote": "hello.txt",
            "readBack": read_back,
            "roundTrip": read_back == greeting,
            "files": files,
        });
        Ok(result.to_string())
    }
}

fn no_options() -> ExecOptions {
    ExecOptions { cwd: None, env: Vec::new(), timeout_ms: None }
}

fn describe(err: SandboxError) -> String {
    let (kind, message) = match err {
        SandboxError::NotFound(m) => ("not-found", m),
        SandboxError::PermissionDenied(m) => ("permission-denied", m),
        SandboxError::AlreadyExists(m) => ("already-exists", m),
        SandboxError::NotADirectory(m) => ("not-a-directory", m),
        SandboxError::IsADirectory(m) => ("is-a-directory", m),
        SandboxError::Timeout(m) => ("timeout", m),
        SandboxError::TooLarge(m) => ("too-large", m),
        SandboxError::Unsupported(m) => ("unsupported", m),
        SandboxError::Auth(m) => ("auth", m),
        SandboxError::Unavailable(m) => ("unavailable", m),
        SandboxError::SandboxDied(m) => ("sandbox-died", m),
        SandboxError::InvalidInput(m) => ("invalid-input", m),
        SandboxError::Other(m) => ("other", m),
    };
    format!("{kind}: {message}")
}

export!(Hello);
