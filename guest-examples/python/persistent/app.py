"""persistent: the second Flue example, as a Python wasm component.

A setup harness prepares a project directory in the sandbox (files and a
command's output); a second harness on the same sandbox, with its working
directory set to that project, then works in it — proving the state
persisted between harnesses. Then a volume carries a file from one new
sandbox to the next (volumes outlive sandboxes, and runs).

Build and run from the repository root:  flue run python/persistent
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import harness, log
from wit_world.imports.types import CreateOptions, ExecOptions, MkdirOptions, VolumeMount

PROJECT = "project"
# The volume step 3 uses (created on first use, kept afterwards).
VOLUME = "flue-persistent-example"


def describe(error: Err) -> str:
    """A sandbox error as `kind: message`, e.g. `not-found: /x: No such file`."""
    value = error.value
    name = type(value).__name__.removeprefix("SandboxError_")
    kind = "".join("-" + c.lower() if c.isupper() else c for c in name).lstrip("-")
    return f"{kind}: {getattr(value, 'value', value)}"


def sh(cwd=None) -> ExecOptions:
    return ExecOptions(cwd=cwd, env=[], timeout_ms=None)


class Run(exports.Run):
    def run(self, context) -> str:
        try:
            return json.dumps(persistent())
        except Err as error:
            raise Err(describe(error))


def persistent() -> dict:
    sandbox = harness.open_sandbox(harness.SandboxSource_RunDefault())

    # 1. Setup, from the sandbox's workdir.
    setup = harness.init(sandbox, harness.InitOptions(cwd=None, model=None, id=None)).session("setup")
    setup.mkdir(PROJECT, MkdirOptions(recursive=True))
    setup.write_text(f"{PROJECT}/README.md", "# Demo project\n")
    setup.write_text(f"{PROJECT}/src/app.txt", "alpha\nbeta\ngamma\n")
    prepared = setup.shell("sort -r src/app.txt > sorted.txt && echo prepared", sh(PROJECT))
    log.log(log.Level.INFO, f"setup done in {setup.resolve_path(PROJECT)}")

    # 2. Work, in a second harness whose cwd is the project.
    work = harness.init(sandbox, harness.InitOptions(cwd=PROJECT, model=None, id="project")).session("work")
    pwd = work.shell("pwd", sh())
    files = work.readdir(".")
    readme = work.read_text("README.md")
    sorted_lines = work.read_text("sorted.txt").splitlines()
    lines = work.shell("wc -l < src/app.txt", sh())
    work.write_text("notes/summary.txt", f"{lines.stdout.strip()} lines\n")

    # 3. A volume: one new sandbox writes to it, the next reads it back.
    mount = f"{sandbox.workdir()}/shared"

    def with_volume():
        volume = VolumeMount(volume=VOLUME, mount_path=mount, subpath=None, create=True)
        options = CreateOptions(
            image=None, snapshot=None, env=[], labels=[], name=None,
            auto_stop_minutes=None, resources=None, volumes=[volume],
        )
        request = harness.CreateRequest(connector=None, options=options, keep=False)
        return harness.open_sandbox(harness.SandboxSource_Create(request))

    no_options = harness.InitOptions(cwd=None, model=None, id=None)
    writer = with_volume()
    harness.init(writer, no_options).session("volume").write_text(
        f"{mount}/handoff.txt", "written by the first sandbox\n"
    )
    reader = with_volume()
    handed_over = harness.init(reader, no_options).session("volume").read_text(f"{mount}/handoff.txt")

    return {
        "sandbox": sandbox.id(),
        "setupCwd": setup.cwd(),
        "workCwd": work.cwd(),
        "prepared": prepared.stdout.strip(),
        "pwd": pwd.stdout.strip(),
        "files": files,
        "readme": readme,
        "sorted": sorted_lines,
        "lineCount": int(lines.stdout.strip()),
        "summaryExists": setup.exists(f"{PROJECT}/notes/summary.txt"),
        "volume": {"handedOver": handed_over, "twoSandboxes": writer.id() != reader.id()},
    }
