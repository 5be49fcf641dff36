"""coder: the seed's AI agent, as a Python wasm component.

A setup harness prepares a small project in the sandbox; a second harness,
with its working directory in the project, hands the payload's `prompt` to a
model, which works there with tools (read, write, edit, bash, grep, glob) in a
loop the host runs. The result is the model's answer and what the project
looks like afterwards.

Payload: {"prompt": ..., "model": ...}, both optional. The model defaults to
anthropic/claude-sonnet-4-6 (set ANTHROPIC_API_KEY).

Build and run from the repository root:  flue run python/coder
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import harness
from wit_world.imports.model import PromptOptions
from wit_world.imports.types import ExecOptions, MkdirOptions

PROJECT = "project"
DEFAULT_MODEL = "anthropic/claude-sonnet-4-6"
DEFAULT_PROMPT = (
    "The greeting in src/greet.sh prints the wrong name. Make it greet Ada, "
    "then run the tests with `bash test.sh` and tell me the result."
)


def describe(error: Err) -> str:
    """An error as `kind: message`, e.g. `auth: ANTHROPIC_API_KEY is not set`."""
    value = error.value
    name = type(value).__name__.split("_", 1)[-1]
    kind = "".join("-" + c.lower() if c.isupper() else c for c in name).lstrip("-")
    return f"{kind}: {getattr(value, 'value', value)}"


class Run(exports.Run):
    def run(self, context) -> str:
        try:
            return json.dumps(coder(json.loads(context.payload or "null") or {}))
        except Err as error:
            raise Err(describe(error))


def coder(payload: dict) -> dict:
    prompt = payload.get("prompt") or DEFAULT_PROMPT
    model = payload.get("model") or DEFAULT_MODEL
    sandbox = harness.open_sandbox(harness.SandboxSource_RunDefault())

    # 1. Setup: a project with a bug and a test.
    setup = harness.init(sandbox, harness.InitOptions(cwd=None, model=None, id="setup")).session("setup")
    setup.mkdir(PROJECT, MkdirOptions(recursive=True))
    setup.write_text(f"{PROJECT}/AGENTS.md", "Keep changes minimal. Run `bash test.sh` after editing.\n")
    setup.write_text(f"{PROJECT}/src/greet.sh", 'echo "Hello, Bob!"\n')
    setup.write_text(
        f"{PROJECT}/test.sh",
        'out=$(bash src/greet.sh)\n[ "$out" = "Hello, Ada!" ] && echo PASS || { echo "FAIL: $out"; exit 1; }\n',
    )

    # 2. Work: a harness in the project, with a model.
    work = harness.init(sandbox, harness.InitOptions(cwd=PROJECT, model=model, id="project")).session("coder")
    answer = work.prompt(prompt, PromptOptions(system=None, max_turns=20, tools=None, result_schema=None))
    greeting = work.read_text("src/greet.sh")
    test = work.shell("bash test.sh", ExecOptions(cwd=None, env=[], timeout_ms=30_000))

    return {
        "sandbox": sandbox.id(),
        "answer": answer.text,
        "model": answer.model,
        "turns": answer.turns,
        "usage": {"input": answer.usage.input_tokens, "output": answer.usage.output_tokens},
        "greeting": greeting,
        "tests": test.stdout.strip(),
    }
