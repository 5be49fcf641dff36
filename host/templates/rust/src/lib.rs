//! {{name}}: a flue agent. It runs in a sandbox chosen at run time
//! (`--sandbox local` by default, or `--sandbox daytona`).

wit_bindgen::generate!({ path: "wit", world: "flue:sandbox/agent" });

use exports::flue::sandbox::run::{Context, Guest};
use flue::sandbox::harness::{self, InitOptions, SandboxSource};
use flue::sandbox::types::{ExecOptions, SandboxError};
use serde_json::json;

struct Agent;

impl Guest for Agent {
    fn run(ctx: Context) -> Result<String, String> {
        let sandbox = harness::open_sandbox(&SandboxSource::RunDefault).map_err(describe)?;
        let session = harness::init(&sandbox, &InitOptions { cwd: None, model: None, id: None })
            .map_err(describe)?
            .session(None)
            .map_err(describe)?;

        session.write_text("notes/hello.txt", "written by {{name}}\n").map_err(describe)?;
        let listing = session
            .shell("ls -R notes", &ExecOptions { cwd: None, env: Vec::new(), timeout_ms: Some(10_000) })
            .map_err(describe)?;

        Ok(json!({
            "agent": "{{name}}",
            "id": ctx.id,
            "payload": serde_json::from_str::<serde_json::Value>(&ctx.payload).unwrap_or_default(),
            "sandbox": sandbox.id(),
            "listing": listing.stdout,
            "exitCode": listing.exit_code,
        })
        .to_string())
    }
}

fn describe(err: SandboxError) -> String {
    format!("{err:?}")
}

export!(Agent);
