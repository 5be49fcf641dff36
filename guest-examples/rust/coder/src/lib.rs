//! `coder`: the seed's AI agent as a wasm component.
//!
//! A setup harness prepares a small project in the sandbox; a second
//! harness, with its working directory in the project, hands the payload's
//! `prompt` to a model, which works there with tools (read, write, edit,
//! bash, grep, glob) in a loop the host runs. The result is the model's
//! answer and what the project looks like afterwards.
//!
//! Payload: `{"prompt": …, "model": …}`, both optional. The model defaults
//! to `anthropic/claude-sonnet-4-6` (set `ANTHROPIC_API_KEY`); e.g.
//! `openai/llama3.2` with `OPENAI_BASE_URL` runs it on a local server.

wit_bindgen::generate!({ path: "wit", world: "flue:sandbox/agent" });

use exports::flue::sandbox::run::{Context, Guest};
use flue::sandbox::harness::{self, InitOptions, SandboxSource};
use flue::sandbox::model::{PromptError, PromptOptions};
use flue::sandbox::types::{ExecOptions, MkdirOptions, SandboxError};
use serde_json::{Value, json};

struct Coder;

const PROJECT: &str = "project";
const DEFAULT_MODEL: &str = "anthropic/claude-sonnet-4-6";
const DEFAULT_PROMPT: &str = "The greeting in src/greet.sh prints the wrong name. Make it greet Ada, \
                              then run the tests with `bash test.sh` and tell me the result.";

impl Guest for Coder {
    fn run(ctx: Context) -> Result<String, String> {
        let payload: Value = serde_json::from_str(&ctx.payload).unwrap_or(Value::Null);
        let prompt = payload["prompt"].as_str().unwrap_or(DEFAULT_PROMPT).to_string();
        let model = payload["model"].as_str().unwrap_or(DEFAULT_MODEL).to_string();
        let sandbox = harness::open_sandbox(&SandboxSource::RunDefault).map_err(describe)?;

        // 1. Setup: a project with a bug and a test.
        let setup = harness::init(&sandbox, &InitOptions { cwd: None, model: None, id: Some("setup".into()) })
            .map_err(describe)?
            .session(Some("setup"))
            .map_err(describe)?;
        setup.mkdir(PROJECT, MkdirOptions { recursive: true }).map_err(describe)?;
        setup
            .write_text(&format!("{PROJECT}/AGENTS.md"), "Keep changes minimal. Run `bash test.sh` after editing.\n")
            .map_err(describe)?;
        setup.write_text(&format!("{PROJECT}/src/greet.sh"), "echo \"Hello, Bob!\"\n").map_err(describe)?;
        setup
            .write_text(
                &format!("{PROJECT}/test.sh"),
                "out=$(bash src/greet.sh)\n[ \"$out\" = \"Hello, Ada!\" ] && echo PASS || { echo \"FAIL: $out\"; exit 1; }\n",
            )
            .map_err(describe)?;

        // 2. Work: a harness in the project, with a model.
        let work = harness::init(
            &sandbox,
            &InitOptions { cwd: Some(PROJECT.into()), model: Some(model), id: Some("project".into()) },
        )
        .map_err(describe)?
        .session(Some("coder"))
        .map_err(describe)?;
        let options = PromptOptions { system: None, max_turns: Some(20), tools: None, result_schema: None };
        let answer = work.prompt(&prompt, &options).map_err(describe_prompt)?;
        let greeting = work.read_text("src/greet.sh").map_err(describe)?;
        let checks = ExecOptions { cwd: None, env: Vec::new(), timeout_ms: Some(30_000) };
        let test = work.shell("bash test.sh", &checks).map_err(describe)?;

        Ok(json!({
            "sandbox": sandbox.id(),
            "answer": answer.text,
            "model": answer.model,
            "turns": answer.turns,
            "usage": { "input": answer.usage.input_tokens, "output": answer.usage.output_tokens },
            "greeting": greeting,
            "tests": test.stdout.trim(),
        })
        .to_string())
    }
}

fn describe(err: SandboxError) -> String {
    format!("{err:?}")
}

fn describe_prompt(err: PromptError) -> String {
    match err {
        PromptError::Auth(m) => format!("auth: {m}"),
        PromptError::RateLimited(m) => format!("rate-limited: {m}"),
        PromptError::ContextOverflow(m) => format!("context-overflow: {m}"),
        PromptError::MaxTurns(m) => format!("max-turns: {m}"),
        PromptError::Provider(m) => format!("provider: {m}"),
        PromptError::InvalidInput(m) => format!("invalid-input: {m}"),
    }
}

export!(Coder);
