"""{{name}}: a flue agent. It runs in a sandbox chosen at run time
(`--sandbox local` by default, or `--sandbox daytona`)."""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import harness
from wit_world.imports.types import ExecOptions


class Run(exports.Run):
    def run(self, context) -> str:
        try:
            return json.dumps(agent(context))
        except Err as error:
            raise Err(f"{type(error.value).__name__}: {getattr(error.value, 'value', '')}")


def agent(context) -> dict:
    sandbox = harness.open_sandbox(harness.SandboxSource_RunDefault())
    session = harness.init(sandbox, harness.InitOptions(cwd=None, model=None, id=None)).session(None)

    session.write_text("notes/hello.txt", "written by {{name}}\n")
    listing = session.shell("ls -R notes", ExecOptions(cwd=None, env=[], timeout_ms=10_000))

    return {
        "agent": "{{name}}",
        "id": context.id,
        "payload": json.loads(context.payload),
        "sandbox": sandbox.id(),
        "listing": listing.stdout,
        "exitCode": listing.exit_code,
    }
