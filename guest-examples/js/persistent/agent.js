// persistent: the second Flue example, as a JavaScript wasm component.
//
// A setup harness prepares a project directory in the sandbox (files and a
// command's output); a second harness on the same sandbox, with its working
// directory set to that project, then works in it — proving the state
// persisted between harnesses. Then a volume carries a file from one new
// sandbox to the next (volumes outlive sandboxes, and runs).
//
// Build and run from the repository root:  flue run js/persistent

import { openSandbox, init } from "flue:sandbox/harness@0.2.1";
import { log } from "flue:sandbox/log@0.2.1";

const PROJECT = "project";
// The volume step 3 uses (created on first use, kept afterwards).
const VOLUME = "flue-persistent-example";

/** A sandbox error as `kind: message`, e.g. `not-found: /x: No such file`. */
function describe(error) {
  const payload = error?.payload;
  return payload?.tag ? `${payload.tag}: ${payload.val}` : String(error);
}

const sh = (cwd) => ({ cwd, env: [], timeoutMs: undefined });

function persistent() {
  const sandbox = openSandbox({ tag: "run-default" });

  // 1. Setup, from the sandbox's workdir.
  const setup = init(sandbox, { cwd: undefined }).session("setup");
  setup.mkdir(PROJECT, { recursive: true });
  setup.writeText(`${PROJECT}/README.md`, "# Demo project\n");
  setup.writeText(`${PROJECT}/src/app.txt`, "alpha\nbeta\ngamma\n");
  const prepared = setup.shell("sort -r src/app.txt > sorted.txt && echo prepared", sh(PROJECT));
  log("info", `setup done in ${setup.resolvePath(PROJECT)}`);

  // 2. Work, in a second harness whose cwd is the project.
  const work = init(sandbox, { cwd: PROJECT }).session("work");
  const pwd = work.shell("pwd", sh());
  const files = work.readdir(".");
  const readme = work.readText("README.md");
  const sorted = work.readText("sorted.txt").trimEnd().split("\n");
  const lines = work.shell("wc -l < src/app.txt", sh());
  work.writeText("notes/summary.txt", `${lines.stdout.trim()} lines\n`);

  // 3. A volume: one new sandbox writes to it, the next reads it back.
  const mount = `${sandbox.workdir()}/shared`;
  const withVolume = () =>
    openSandbox({
      tag: "create",
      val: {
        connector: undefined,
        options: {
          image: undefined,
          snapshot: undefined,
          env: [],
          labels: [],
          name: undefined,
          autoStopMinutes: undefined,
          resources: undefined,
          volumes: [{ volume: VOLUME, mountPath: mount, subpath: undefined, create: true }],
        },
        keep: false,
      },
    });
  const writer = withVolume();
  init(writer, { cwd: undefined }).session("volume").writeText(`${mount}/handoff.txt`, "written by the first sandbox\n");
  const reader = withVolume();
  const handedOver = init(reader, { cwd: undefined }).session("volume").readText(`${mount}/handoff.txt`);

  return {
    sandbox: sandbox.id(),
    setupCwd: setup.cwd(),
    workCwd: work.cwd(),
    prepared: prepared.stdout.trim(),
    pwd: pwd.stdout.trim(),
    files,
    readme,
    sorted,
    lineCount: Number(lines.stdout.trim()),
    summaryExists: setup.exists(`${PROJECT}/notes/summary.txt`),
    volume: { handedOver, twoSandboxes: writer.id() !== reader.id() },
  };
}

export const run = {
  run(context) {
    try {
      return JSON.stringify(persistent());
    } catch (error) {
      throw describe(error);
    }
  },
};
