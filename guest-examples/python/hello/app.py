"""hello: the first Flue example, as a Python wasm component.

Opens the run's sandbox, runs `uname -a`, writes a file, reads it back and
lists the directory, then returns all of it as JSON.

Payload (optional): {"name": "Ada"} — who to greet in the file.

Build and run from the repository root:  flue run python/hello
(flue runs `componentize-py -d wit -w agent componentize app -o ...` for you.)
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import harness, log
from wit_world.imports.types import ExecOptions


def describe(error: Err) -> str:
    """A sandbox error as `kind: message`, e.g. `not-found: /x: No such file`."""
    value = error.value
    name = type(value).__name__.removeprefix("SandboxError_")
    kind = "".join("-" + c.lower() if c.isupper() else c for c in name).lstrip("-")
    return f"{kind}: {getattr(value, 'value', value)}"


class Run(exports.Run):
    def run(self, context) -> str:
        try:
            return json.dumps(hello(context))
        except Err as error:
            raise Err(describe(error))


def hello(context) -> dict:
    payload = json.loads(context.payload) or {}
    name = payload.get("name", "world")

    sandbox = harness.open_sandbox(harness.SandboxSource_RunDefault())
    session = harness.init(sandbox, harness.InitOptions(cwd=None, model=None, id=None)).session(None)
    log.log(log.Level.INFO, f"hello agent in sandbox {sandbox.id()} at {session.cwd()}")

    uname = session.shell("uname -a", ExecOptions(cwd=None, env=[], timeout_ms=None))
    greeting = f"Hello, {name}! (run {context.run_id})\n"
    session.write_text("hello.txt", greeting)
    read_back = session.read_text("hello.txt")

    return {
        "sandbox": sandbox.id(),
        "cwd": session.cwd(),
        "uname": {"stdout": uname.stdout.rstrip("\n"), "exitCode": uname.exit_code},
        "wrote": "hello.txt",
        "readBack": read_back,
        "roundTrip": read_back == greeting,
        "files": session.readdir("."),
    }
